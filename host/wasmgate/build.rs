//! Builds the built-in plugins (`plugins/*` component crates) for `wasm32-wasip2` and embeds
//! them, so the binary alone serves every built-in: no path of the build machine is compiled
//! in. Also records the commit and the plugin contract's version for `--version`.
//!
//! The plugins are built by a nested cargo into this build's own target directory with the
//! same profile and target as `scripts/build-plugins`, so a checkout builds them once for
//! both (cargo finds them fresh) and `cargo install` builds them in its own target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.join("../..");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));

    for watched in ["plugins", "sdk/src", "sdk/Cargo.toml", "wit", "Cargo.lock", "Cargo.toml"] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }
    let plugins = builtin_crates(&root.join("plugins"));
    let target_dir = target_dir(&out);
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&root)
        .args(["build", "--quiet", "--target", "wasm32-wasip2", "--profile", "plugin", "--target-dir"])
        .arg(&target_dir);
    for (package, _) in &plugins {
        cargo.args(["-p", package]);
    }
    // The flags cargo passes to this script are for the native build, not for wasm.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR"] {
        cargo.env_remove(var);
    }
    let status = cargo.status().expect("cannot run cargo to build the built-in plugins");
    if !status.success() {
        panic!(
            "building the built-in plugins for wasm32-wasip2 failed (see above); \
             if the target is missing: rustup target add wasm32-wasip2"
        );
    }

    let wasm_dir = target_dir.join("wasm32-wasip2/plugin");
    let mut table = String::from("/// The built-in plugins, by name, as built with this binary.\n");
    table.push_str("pub static BUILTIN_COMPONENTS: &[(&str, &[u8])] = &[\n");
    for (package, name) in &plugins {
        let file = wasm_dir.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(file.is_file(), "cargo built {package} but {} is missing", file.display());
        table.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", file.display().to_string()));
    }
    table.push_str("];\n");
    std::fs::write(out.join("builtin_components.rs"), table).expect("OUT_DIR is writable");

    println!("cargo::rustc-env=WASMGATE_COMMIT={}", commit(&root));
    let wit = std::fs::read_to_string(root.join("wit/plugin.wit")).expect("wit/plugin.wit is readable");
    let contract = wit.lines().find_map(|l| l.strip_prefix("package ")?.strip_suffix(';'));
    println!("cargo::rustc-env=WASMGATE_CONTRACT={}", contract.expect("wit/plugin.wit names its package"));
    println!("cargo::rerun-if-env-changed=WASMGATE_COMMIT");
}

/// `(package, plugin name)` of each component crate under `plugins/` (`cdylib`; the shared
/// libraries there are not plugins), sorted by name.
fn builtin_crates(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("plugins/ is readable") {
        let manifest = entry.expect("plugins/ is readable").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        if !text.contains("cdylib") {
            continue;
        }
        let package = text
            .lines()
            .find_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{} names no package", manifest.display()))
            .to_string();
        let name = package.strip_prefix("wasmgate-plugin-").unwrap_or(&package).to_string();
        found.push((package, name));
    }
    found.sort();
    found
}

/// The target directory of this build: the nearest ancestor of `OUT_DIR` that cargo marked
/// as one (`CACHEDIR.TAG`), else a folder of this script's own.
fn target_dir(out: &Path) -> PathBuf {
    out.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.join("plugins-target"))
}

/// The commit this is built from: `WASMGATE_COMMIT` if set (a source archive has no git),
/// else git's, else `unknown`.
fn commit(root: &Path) -> String {
    if let Ok(c) = std::env::var("WASMGATE_COMMIT") {
        return c;
    }
    let git = |args: &[&str]| {
        let out = Command::new("git").current_dir(root).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else { return "unknown".into() };
    // Rebuild when HEAD moves: HEAD itself, and the branch it points to (a loose ref, or
    // packed-refs once git has packed it). Only files that exist: cargo reruns a script
    // that watches a missing file on every build.
    let branch = git(&["rev-parse", "--symbolic-full-name", "HEAD"]);
    let watched = ["HEAD".to_string(), branch.unwrap_or_default(), "packed-refs".into()];
    for name in watched.iter().filter(|n| !n.is_empty()) {
        if let Some(path) = git(&["rev-parse", "--git-path", name]).map(|p| root.join(p))
            && path.is_file()
        {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
    commit
}
