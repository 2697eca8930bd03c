//! `wasmgate plugin ...`: what a plugin developer runs. `new` writes a Rust plugin project
//! from the template in `templates/plugin/`, `build` turns one into a component and says how
//! to bind it, `inspect` prints what any component (Rust, Python, JavaScript) says about
//! itself.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use wasmgate_runtime::{PluginInfo, PluginRuntime};

#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Create a Rust plugin project NAME (a folder of that name, or `--dir`): a policy, its
    /// config schema, a test and a README.
    New {
        name: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The Wasmgate checkout whose SDK and test harness the project uses (default: the
        /// one this binary was built from).
        #[arg(long, value_name = "DIR")]
        checkout: Option<PathBuf>,
    },
    /// Build the Rust plugin project in DIR to a wasm32-wasip2 component, check that this
    /// gateway runs it, and print how to bind it.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Print a component's name, version, language, contract version, config schema and the
    /// capabilities it imports.
    Inspect {
        file: PathBuf,
        /// Configure one binding with this config (JSON) and show what it declares: the
        /// outbound origins and log sinks the operator's `plugins.NAME.grants` must allow.
        #[arg(long)]
        config: Option<String>,
    },
}

pub fn run(command: PluginCommand) -> Result<()> {
    match command {
        PluginCommand::New { name, dir, checkout } => new(&name, dir, checkout),
        PluginCommand::Build { dir } => build(&dir),
        PluginCommand::Inspect { file, config } => inspect(&file, config.as_deref()),
    }
}

const TEMPLATE: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/plugin/Cargo.toml.tmpl")),
    (".cargo/config.toml", include_str!("../templates/plugin/config.toml.tmpl")),
    ("schema.json", include_str!("../templates/plugin/schema.json.tmpl")),
    ("src/lib.rs", include_str!("../templates/plugin/lib.rs.tmpl")),
    ("tests/policy.rs", include_str!("../templates/plugin/test.rs.tmpl")),
    ("README.md", include_str!("../templates/plugin/README.md.tmpl")),
    (".gitignore", "/target\n"),
];

fn new(name: &str, dir: Option<PathBuf>, checkout: Option<PathBuf>) -> Result<()> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        bail!("plugin name `{name}`: use lower-case letters, digits and `-`, starting with a letter");
    }
    let checkout = match checkout {
        Some(c) => c,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    };
    let checkout =
        checkout.canonicalize().ok().filter(|c| c.join("sdk/testing/Cargo.toml").is_file()).with_context(
            || format!("{} is not a Wasmgate checkout: pass --checkout DIR", checkout.display()),
        )?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} already exists and is not empty", dir.display());
    }
    let code = name.to_ascii_uppercase().replace('-', "_") + ".0001";
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{code}}", &code)
            .replace("{{checkout}}", &checkout.to_string_lossy())
    };
    for (file, text) in TEMPLATE {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("in the project"))?;
        std::fs::write(&path, fill(text)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The gateway's own lock file: the same dependency versions, so the project's tests
    // reuse what the checkout has compiled.
    let _ = std::fs::copy(checkout.join("Cargo.lock"), dir.join("Cargo.lock"));
    println!("created {} ({name}): a policy, its config schema, a test and a README", dir.display());
    println!("next:\n  cd {}\n  wasmgate plugin build\n  cargo test", dir.display());
    Ok(())
}

fn build(dir: &Path) -> Result<()> {
    let wasm = wasmgate_test::try_build(&dir.to_string_lossy(), "release").map_err(anyhow::Error::msg)?;
    // What `run` would do with it: compile, link against what this gateway provides, and
    // find the policy export (a `RuntimeError` says which failed).
    let runtime = PluginRuntime::new(None)?;
    let loaded = runtime.load(&wasm)?;
    let name = loaded.info.name.clone().unwrap_or_else(|| "my-plugin".into());
    runtime.pool_builder(&name, &loaded, 16 << 20)?;
    let size = std::fs::metadata(&wasm)?.len();
    let path = wasm.canonicalize()?;
    println!("built {} ({} KB): {}", path.display(), size.div_ceil(1024), describe(&loaded.info));
    let required = loaded.info.config_schema.as_ref().and_then(|s| s["required"].as_array().cloned());
    let required = required
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect::<Vec<_>>();
    println!(
        "\nBind it in the gateway's config:\n\nplugins:\n  {name}: {{path: {}}}\ngroups:\n  - id: ...\n    apis:\n      - id: ...\n        policies:\n          - plugin: {name}\n            config: {{}}   # required: {}\n",
        path.display(),
        if required.is_empty() { "nothing".into() } else { required.join(", ") },
    );
    println!("or upload it to a running gateway: wasmgate admin upload-plugin {name} {}", path.display());
    Ok(())
}

fn describe(info: &PluginInfo) -> String {
    format!(
        "{} {} ({}), built against wasmgate:plugin@{}",
        info.name.as_deref().unwrap_or("(unnamed)"),
        info.version.as_deref().unwrap_or("(no version)"),
        info.language.as_deref().unwrap_or("language not stated"),
        info.contract().unwrap_or("?"),
    )
}

fn inspect(file: &Path, config: Option<&str>) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let info = PluginInfo::read(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    println!("file:         {} ({} KB)", file.display(), bytes.len().div_ceil(1024));
    println!("name:         {}", info.name.as_deref().unwrap_or("(no manifest)"));
    println!("version:      {}", info.version.as_deref().unwrap_or("(no manifest)"));
    println!("language:     {}", info.language.as_deref().unwrap_or("(not stated)"));
    let runs = match info.runs_here() {
        Ok(()) => "this gateway runs it".to_string(),
        Err(e) => format!("this gateway does not run it: {e}"),
    };
    println!("contract:     wasmgate:plugin@{} ({runs})", info.contract().unwrap_or("?"));
    let caps: Vec<&str> = info.capabilities().collect();
    println!("capabilities: {}", if caps.is_empty() { "none".into() } else { caps.join(", ") });
    let wasi: Vec<&str> =
        info.imports.iter().map(String::as_str).filter(|i| i.starts_with("wasi:")).collect();
    if !wasi.is_empty() {
        // Linked, but plugins get no files, sockets, environment or arguments.
        println!("wasi:         {} (sandboxed: no files, sockets or environment)", wasi.join(", "));
    }
    match &info.config_schema {
        Some(schema) => println!("config schema:\n{}", serde_json::to_string_pretty(schema)?),
        None => println!("config schema: none (the plugin checks its config itself)"),
    }
    if let Some(config) = config {
        let (http, sinks) = declared(file, config)?;
        let list = |items: Vec<String>| if items.is_empty() { "none".to_string() } else { items.join(", ") };
        println!("with this config it declares: outbound {}; log sinks {}", list(http), list(sinks));
        println!("  (a custom plugin gets them only as far as plugins.NAME.grants allows; its backend");
        println!("   overrides only to origins in plugins.NAME.grants.backends)");
    }
    Ok(())
}

/// What one binding of the component at `file` with `config` declares (outbound origins, log
/// sinks), as the runtime grants it to a built-in: the most a cap would have to allow.
fn declared(file: &Path, config: &str) -> Result<(Vec<String>, Vec<String>)> {
    let config: serde_json::Value = serde_json::from_str(config).context("--config is not JSON")?;
    let runtime = PluginRuntime::new(None)?;
    let loaded = runtime.load(file)?;
    let mut pool = runtime.pool_builder("inspected", &loaded, 16 << 20)?;
    let limits = wasmgate_runtime::CallLimits {
        cpu: std::time::Duration::from_secs(1),
        wall: std::time::Duration::from_secs(30),
        kv: Default::default(),
    };
    pool.add("inspect".into(), "inspect".into(), config.to_string(), limits);
    let policy =
        pool.build()?.pop().expect("one binding").map_err(|e| anyhow::anyhow!("config refused: {e}"))?;
    Ok(policy.granted())
}
