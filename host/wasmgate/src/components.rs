//! Where plugin components come from: the built-ins embedded in this binary (or a folder
//! that replaces them), a file the config names, or an upload; and loading the ones a
//! configuration needs, in parallel, since compiling is most of a cold start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmgate_config::{BUILTIN_PLUGINS, GatewayConfig};
use wasmgate_runtime::{LoadedPlugin, PluginRuntime};

include!(concat!(env!("OUT_DIR"), "/builtin_components.rs"));

/// Where the built-in plugins come from.
#[derive(Clone, Debug)]
pub enum Builtins {
    /// The components built with this binary and embedded in it.
    Embedded,
    /// A folder of `wasmgate_plugin_NAME.wasm` files that replaces them (`--plugin-dir` or
    /// `WASMGATE_PLUGIN_DIR`): to try a rebuilt built-in without rebuilding the gateway.
    Dir(PathBuf),
}

impl Builtins {
    /// The file a built-in plugin is built to (`cors` → `wasmgate_plugin_cors.wasm`).
    pub fn file_name(name: &str) -> String {
        format!("wasmgate_plugin_{}.wasm", name.replace('-', "_"))
    }

    fn load(&self, runtime: &PluginRuntime, name: &str) -> Result<LoadedPlugin, String> {
        match self {
            Builtins::Embedded => {
                let (_, bytes) = BUILTIN_COMPONENTS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .ok_or_else(|| format!("the built-in plugin `{name}` is not in this binary"))?;
                runtime.load_bytes(Path::new(&format!("built-in {name}")), bytes).map_err(|e| e.to_string())
            }
            Builtins::Dir(dir) => runtime.load(&dir.join(Self::file_name(name))).map_err(|e| {
                format!(
                    "{e} (the built-in plugins' folder, set by --plugin-dir or WASMGATE_PLUGIN_DIR; \
                     without either, the binary's own built-ins are used)"
                )
            }),
        }
    }
}

/// Load every plugin `names` (the config's bindings') refers to, the slow ones (compiles)
/// side by side. A plugin that fails is kept as its error, for the first binding that uses
/// it to report in its place.
pub fn load_all<'a>(
    cfg: &GatewayConfig,
    runtime: &PluginRuntime,
    builtins: &Builtins,
    names: impl IntoIterator<Item = &'a str>,
) -> HashMap<String, Result<LoadedPlugin, String>> {
    let mut wanted: Vec<&str> = names.into_iter().collect();
    wanted.sort_unstable();
    wanted.dedup();
    let load = |name: &str| {
        if BUILTIN_PLUGINS.contains(&name) {
            return builtins.load(runtime, name);
        }
        let source = &cfg.plugins[name];
        let path = match (&source.path, &source.sha256) {
            (Some(path), _) => path.clone(),
            (None, Some(sha256)) => runtime.uploaded_path(sha256).map_err(|e| e.to_string())?,
            (None, None) => unreachable!("the config's validation requires one"),
        };
        runtime.load(&path).map_err(|e| e.to_string())
    };
    let next = AtomicUsize::new(0);
    let loaded = Mutex::new(HashMap::with_capacity(wanted.len()));
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(wanted.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(name) = wanted.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let result = load(name);
                    loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), result);
                }
            });
        }
    });
    loaded.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_plugin_is_embedded() {
        let embedded: Vec<&str> = BUILTIN_COMPONENTS.iter().map(|(n, _)| *n).collect();
        let mut known = BUILTIN_PLUGINS.to_vec();
        known.sort_unstable();
        assert_eq!(embedded, known, "plugins/ and wasmgate_config::BUILTIN_PLUGINS disagree");
        for (name, bytes) in BUILTIN_COMPONENTS {
            let info = wasmgate_runtime::PluginInfo::read(bytes).unwrap();
            let package = format!("wasmgate-plugin-{name}");
            assert_eq!(info.name, Some(package), "the component embedded as `{name}`");
        }
    }
}
