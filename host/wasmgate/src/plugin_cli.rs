//! `wasmgate plugin ...`: what a plugin developer runs. `new` writes a Rust plugin project
//! from the template in `templates/plugin/` (with this binary's SDK and contract, so nothing
//! else is needed), `build` turns one into a component and prints a config that serves it,
//! `test` runs its test cases (`plugin_test.rs`), `precompile` fills the plugin cache ahead
//! of a start, `inspect` prints what any component (Rust, Python, JavaScript) says about
//! itself.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use wasmgate_runtime::{PluginInfo, PluginRuntime};

#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Create a Rust plugin project NAME (a folder of that name, or `--dir`): a policy, its
    /// config schema, test cases and a README, with this gateway's SDK and contract.
    New {
        name: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Use the SDK of this Wasmgate checkout instead, and add Rust tests with its test
        /// harness (`cargo test`; it compiles the gateway's runtime, so builds in the
        /// checkout's target directory).
        #[arg(long, value_name = "DIR")]
        checkout: Option<PathBuf>,
    },
    /// Build the Rust plugin project in DIR to a wasm32-wasip2 component, check that this
    /// gateway runs it, and print a config that serves it.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The listener address in the printed config.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Also compile it for this gateway into its plugin cache, so the first start that
        /// loads it does not wait for the compiler.
        #[arg(long)]
        precompile: bool,
        /// The plugin cache `--precompile` fills (default: the gateway's default).
        #[arg(long, value_name = "DIR", requires = "precompile")]
        cache_dir: Option<PathBuf>,
    },
    /// Run a plugin's test cases (PATH: a test file, or a project folder with tests.yaml) in
    /// this gateway's runtime. The component is the file's `plugin`, `--component`, or the
    /// project built first.
    Test {
        #[arg(default_value = ".")]
        path: PathBuf,
        #[arg(long, value_name = "FILE")]
        component: Option<PathBuf>,
    },
    /// Compile components (any language) for this gateway into its plugin cache, so a start
    /// that loads them does not wait for the compiler (an interpreter takes a minute or more).
    Precompile {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The plugin cache to fill (default: the gateway's default; a config's
        /// `gateway.plugin_cache_dir` must name the same folder).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
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
        PluginCommand::Build { dir, listen, precompile, cache_dir } => {
            let cache = if precompile { Some(precompile_cache(cache_dir)?) } else { None };
            build(&dir, &listen, cache)
        }
        PluginCommand::Test { path, component } => crate::plugin_test::run(&path, component.as_deref()),
        PluginCommand::Precompile { files, cache_dir } => {
            let cache = precompile_cache(cache_dir)?;
            let runtime = PluginRuntime::new(Some(cache.clone()))?;
            for file in &files {
                let loaded = runtime.load(file)?;
                println!("{}: {} (in {})", file.display(), describe(&loaded.info), cache.display());
            }
            Ok(())
        }
        PluginCommand::Inspect { file, config } => inspect(&file, config.as_deref()),
    }
}

/// The project template: (file, text) with `{{...}}` placeholders.
const TEMPLATE: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/plugin/Cargo.toml.tmpl")),
    ("schema.json", include_str!("../templates/plugin/schema.json.tmpl")),
    ("src/lib.rs", include_str!("../templates/plugin/lib.rs.tmpl")),
    ("tests.yaml", include_str!("../templates/plugin/tests.yaml.tmpl")),
    ("README.md", include_str!("../templates/plugin/README.md.tmpl")),
    (".gitignore", "/target\n"),
];

/// What a project made without a checkout gets: the SDK (its manifest is a template) and the
/// contract as this binary was built with them, and the lock file its tests passed with.
const SDK_MANIFEST: (&str, &str) =
    ("sdk/Cargo.toml", include_str!("../templates/plugin/sdk.Cargo.toml.tmpl"));
const VENDORED: &[(&str, &str)] = &[
    ("sdk/src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("sdk/src/view.rs", include_str!("../../../sdk/src/view.rs")),
    ("wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
    ("Cargo.lock", include_str!("../../../Cargo.lock")),
];

/// What a project made with `--checkout` gets: the Rust harness's tests.
const HARNESS: &[(&str, &str)] = &[
    (".cargo/config.toml", include_str!("../templates/plugin/config.toml.tmpl")),
    ("tests/policy.rs", include_str!("../templates/plugin/test.rs.tmpl")),
];

fn new(name: &str, dir: Option<PathBuf>, checkout: Option<PathBuf>) -> Result<()> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        bail!("plugin name `{name}`: use lower-case letters, digits and `-`, starting with a letter");
    }
    let checkout = match checkout {
        None => None,
        Some(c) => {
            Some(c.canonicalize().ok().filter(|c| c.join("sdk/testing/Cargo.toml").is_file()).with_context(
                || format!("--checkout {}: not a Wasmgate checkout (no sdk/testing)", c.display()),
            )?)
        }
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} already exists and is not empty", dir.display());
    }
    let code = name.to_ascii_uppercase().replace('-', "_") + ".0001";
    let checkout_text = checkout.as_ref().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
    let (sdk, harness, more, templates, copies): (_, _, _, Vec<_>, _) = match &checkout {
        None => (
            "sdk".to_string(),
            String::new(),
            "- `sdk/`, `wit/`: the Rust SDK and the plugin contract of the gateway that created it.\n",
            vec![SDK_MANIFEST],
            VENDORED,
        ),
        Some(c) => (
            format!("{}/sdk", c.display()),
            format!("\n{}", include_str!("../templates/plugin/harness.toml.tmpl")),
            "- `tests/policy.rs`: Rust tests with the `wasmgate-test` harness (`cargo test`), which\n  runs the plugin in the runtime of the checkout the project names.\n",
            HARNESS.to_vec(),
            &[][..],
        ),
    };
    let fill = |text: &str| {
        text.replace("{{harness}}", &harness)
            .replace("{{more}}", more)
            .replace("{{sdk}}", &sdk)
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{code}}", &code)
            .replace("{{checkout}}", &checkout_text)
    };
    // Templates are filled in; the SDK's own files are written as they are.
    let filled = TEMPLATE.iter().chain(&templates).map(|(file, text)| (*file, fill(text)));
    for (file, text) in filled.chain(copies.iter().map(|(file, text)| (*file, text.to_string()))) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("in the project"))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(c) = &checkout {
        // The gateway's own lock file: the same dependency versions, so the project's tests
        // reuse what the checkout has compiled.
        let _ = std::fs::copy(c.join("Cargo.lock"), dir.join("Cargo.lock"));
    }
    println!("created {} ({name}): a policy, its config schema, test cases and a README", dir.display());
    println!("next:\n  cd {}\n  wasmgate plugin build\n  wasmgate plugin test", dir.display());
    Ok(())
}

/// The plugin cache to precompile into: `--cache-dir`, else the gateway's default.
fn precompile_cache(cache_dir: Option<PathBuf>) -> Result<PathBuf> {
    cache_dir
        .or_else(crate::default_cache_dir)
        .context("no plugin cache to precompile into: pass --cache-dir")
}

/// `cache`: where to keep the compiled component (`--precompile`), if anywhere.
fn build(dir: &Path, listen: &str, cache: Option<PathBuf>) -> Result<()> {
    let wasm = wasmgate_test::try_build(&dir.to_string_lossy(), "release").map_err(anyhow::Error::msg)?;
    // What `run` would do with it: compile, link against what this gateway provides, and
    // find the policy export (a `RuntimeError` says which failed).
    let runtime = PluginRuntime::new(cache.clone())?;
    let loaded = runtime.load(&wasm)?;
    let name = loaded.info.name.clone().unwrap_or_else(|| "my-plugin".into());
    runtime.pool_builder(&name, &loaded, 16 << 20)?;
    let size = std::fs::metadata(&wasm)?.len();
    let path = wasm.canonicalize()?;
    println!("built {} ({} KB): {}", path.display(), size.div_ceil(1024), describe(&loaded.info));
    if let Some(cache) = &cache {
        println!("precompiled for this gateway into {}", cache.display());
    }
    let (config, missing) = example_config(loaded.info.config_schema.as_ref());
    let config_line = serde_json::to_string(&config)?;
    println!("\nA gateway config that serves it (wasmgate run -c FILE):\n");
    println!("---");
    println!("listeners: [{{address: '{listen}'}}]");
    println!("plugins:\n  {name}: {{path: '{}'}}", path.display());
    println!(
        "groups:\n  - id: {name}-demo\n    apis:\n      - id: {name}-demo\n        path: /\n        match: prefix"
    );
    println!("        backend: {{mock: {{status: 200, body: 'passed {name}'}}}}");
    println!("        policies:\n          - plugin: {name}\n            config: {config_line}");
    if !missing.is_empty() {
        println!("            # set: {} (the schema gives no default or example)", missing.join(", "));
    }
    println!("...");
    println!("\nor upload it to a running gateway: wasmgate admin upload-plugin {name} {}", path.display());
    Ok(())
}

/// A config for the printed example: each required field's `default`, else its first
/// `examples` entry; the names of those with neither.
fn example_config(schema: Option<&serde_json::Value>) -> (serde_json::Value, Vec<String>) {
    let mut config = serde_json::Map::new();
    let mut missing = Vec::new();
    let Some(schema) = schema else { return (config.into(), missing) };
    for field in schema["required"].as_array().into_iter().flatten().filter_map(|f| f.as_str()) {
        let property = &schema["properties"][field];
        match property.get("default").or_else(|| property["examples"].get(0)) {
            Some(v) => {
                config.insert(field.to_string(), v.clone());
            }
            None => missing.push(field.to_string()),
        }
    }
    (config.into(), missing)
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

#[cfg(test)]
mod tests {
    use super::SDK_MANIFEST;

    /// The SDK written into projects asks for exactly the dependencies, at the versions, that
    /// the workspace builds and tests it with.
    #[test]
    fn the_vendored_sdk_has_the_workspace_dependencies() {
        let workspace = include_str!("../../../Cargo.toml");
        let sdk = include_str!("../../../sdk/Cargo.toml");
        let deps = |manifest: &'static str| manifest.split_once("[dependencies]\n").expect("dependencies").1;
        let vendored: Vec<&str> = deps(SDK_MANIFEST.1).lines().filter(|l| l.contains(" = ")).collect();
        for line in &vendored {
            assert!(workspace.lines().any(|w| w == *line), "`{line}` is not as the workspace has it");
        }
        let names: Vec<&str> = vendored.iter().filter_map(|l| l.split_once(" = ")).map(|(n, _)| n).collect();
        let sdk_names: Vec<&str> =
            deps(sdk).lines().filter_map(|l| l.split_once(".workspace")).map(|(n, _)| n).collect();
        assert_eq!(names, sdk_names, "sdk/Cargo.toml's dependencies");
    }
}
