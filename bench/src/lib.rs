//! Shared set-up for the benchmarks: load a built plugin into a one-binding pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmgate_runtime::{PluginRuntime, WasmPolicy};

/// Where `scripts/build-plugins` puts the components.
pub fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin")
}

/// A warm binding of built-in plugin `name` with `config` (JSON).
pub fn binding(runtime: &Arc<PluginRuntime>, name: &str, config: &str) -> WasmPolicy {
    let path = plugin_dir().join(format!("wasmgate_plugin_{}.wasm", name.replace('-', "_")));
    let component = runtime.load(&path).unwrap_or_else(|e| panic!("{e} (run scripts/build-plugins)"));
    let mut pool = runtime.pool_builder(name, &component, 16 << 20).expect("links");
    pool.add(format!("bench:{name}"), "bench".into(), config.into(), Duration::from_millis(50));
    pool.build().expect("instantiates").pop().expect("one binding").expect("config accepted")
}
