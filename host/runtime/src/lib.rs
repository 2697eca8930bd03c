//! The Wasmgate plugin runtime: compiles plugin components once (and caches the result on
//! disk), keeps warm instances per plugin, and runs binding phases under CPU and memory
//! limits. It implements the proxy's [`wasmgate_proxy::policy::Policy`] trait, so the proxy
//! core never touches wasmtime.
//!
//! Instance model: one pool of warm instances per (plugin, memory cap) in a snapshot. A
//! phase call takes an idle instance (or instantiates one), configures the binding on it
//! if that instance has not seen the binding yet, makes one synchronous call, and puts the
//! instance back. A trap, deadline or memory overrun discards the instance, never the
//! process. Instances never run two calls at once, so guests need no locking.

pub mod capabilities;
mod convert;
pub mod manifest;
mod pool;
mod stats;

pub use capabilities::Capabilities;
pub use manifest::PluginInfo;
pub use pool::{CallLimits, PluginPool, PoolBuilder, WasmPolicy};
pub use stats::{Crossings, PhaseTotals};

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plugin",
        // Phase inputs are lowered straight from the proxy's borrowed request data, without
        // first copying every string into an owned `String`.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

/// The same world for plugins that import `http-outbound`: their calls are async so a
/// request waiting on the network suspends the call instead of holding a thread. Everything
/// but the policy export and `http-outbound` is shared with the synchronous bindings.
pub(crate) mod async_bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plugin",
        ownership: Borrowing { duplicate_if_necessary: true },
        imports: { "wasmgate:plugin/http-outbound.send": async },
        exports: { default: async },
        with: {
            "wasmgate:plugin/types": crate::bindings::wasmgate::plugin::types,
            "wasmgate:plugin/log": crate::bindings::wasmgate::plugin::log,
            "wasmgate:plugin/clock": crate::bindings::wasmgate::plugin::clock,
            "wasmgate:plugin/counters": crate::bindings::wasmgate::plugin::counters,
            "wasmgate:plugin/kv": crate::bindings::wasmgate::plugin::kv,
            "wasmgate:plugin/credentials": crate::bindings::wasmgate::plugin::credentials,
                        "wasmgate:plugin/log-sink": crate::bindings::wasmgate::plugin::log_sink,
            "wasmgate:plugin/metrics": crate::bindings::wasmgate::plugin::metrics,
            "wasmgate:plugin/crypto": crate::bindings::wasmgate::plugin::crypto,
        },
    });
}

/// The contract plugins are built against, and the versions of it this gateway runs:
/// `0.2.x` (for `0.y` versions, a new `y` may break plugins; a new patch level may not).
/// 0.1 plugins are refused with a message saying to rebuild them: 0.2 changed how every
/// phase's input is passed, and an adapter would implement every import twice for plugins
/// whose rebuild is one command.
const CONTRACT: &str = "wasmgate:plugin/";
const CONTRACT_MAJOR: (u64, u64) = (0, 2);

/// What the fuzz targets (`tests/fuzz`) reach of the runtime: plugin output as the host
/// reads it, without a component to produce it.
#[doc(hidden)]
pub mod fuzzing {
    /// Header changes in the packed `header-ops` layout: how many were kept, or why refused.
    pub fn header_ops(buf: &[u8]) -> Result<usize, String> {
        crate::convert::packed_ops(buf.to_vec()).map(|ops| ops.len()).map_err(|e| e.to_string())
    }
}

/// Compiling a large component (an interpreter: tens of MiB of code) has Cranelift allocate
/// hundreds of MiB on the compile threads, and glibc keeps what they free in its per-thread
/// arenas: one 20 MB upload left a gateway at 500 MiB RSS. Hand the free pages back.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Refuse a component built against a version of the contract this gateway does not run,
/// or one that is no plugin at all, saying which; `names` are its imports and exports.
fn check_contract<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut policy = false;
    for name in names {
        let Some(rest) = name.strip_prefix(CONTRACT) else { continue };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let mut parts = version.split('.').map(|p| p.parse::<u64>());
        let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
            return Err(format!("`{name}` names no version of the plugin contract"));
        };
        if (major, minor) != CONTRACT_MAJOR {
            let (m, n) = CONTRACT_MAJOR;
            return Err(format!(
                "built against wasmgate:plugin@{version}; this gateway runs plugins built against {m}.{n}.x: rebuild it with this gateway's SDK"
            ));
        }
        policy |= interface == "policy";
    }
    if !policy {
        return Err("exports no wasmgate:plugin/policy: not a Wasmgate plugin".into());
    }
    Ok(())
}

impl PluginInfo {
    /// Whether this gateway runs a component built against its contract version.
    pub fn runs_here(&self) -> Result<(), String> {
        check_contract(self.imports.iter().chain(&self.exports).map(String::as_str))
    }
}

/// Plugins importing this interface get the async linker (see [`async_bindings`]).
const HTTP_OUTBOUND: &str = "wasmgate:plugin/http-outbound@";

/// How often the epoch advances. CPU deadlines are rounded up to whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// The largest memory cap a binding may ask for; the pool reserves slots this large.
pub const MAX_MEMORY_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read plugin {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid plugin component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot start the plugin runtime: {0}")]
    Engine(String),
    #[error("cannot keep uploaded plugin components: {0}")]
    Uploads(String),
}

/// Per-store state: WASI (no files, sockets, env or args), limits, and who is calling.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: pool::Limits,
    current: u32,
    scopes: Arc<[capabilities::BindingScope]>,
    /// Reused for building counter keys, so a counter check allocates nothing on the host.
    key_buf: String,
    /// The API and group of the request being served (for credential authorisation).
    route_api: String,
    route_group: String,
    caps: Arc<Capabilities>,
    /// Time this call has spent waiting on the network (outbound HTTP), not yet given back
    /// to the CPU deadline.
    net_wait: Duration,
    /// When this call must be over, waits included.
    wall_deadline: std::time::Instant,
    /// Ticks of the call's CPU budget not armed yet: a call first runs to
    /// [`pool::HAND_OFF_TICKS`], and one that gets there is given the rest once it has let
    /// its worker's other tasks go on (`pool::hand_off`).
    deferred_ticks: u64,
    /// Whether calls are synchronous (they hand the worker off) or async (they yield).
    sync_calls: bool,
    /// Boundary crossings since the current call began (counted only with call stats on).
    crossings: stats::Crossings,
}

impl HostState {
    fn scope(&self) -> &capabilities::BindingScope {
        &self.scopes[self.current as usize]
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A compiled plugin and what it says about itself.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub component: Component,
    pub info: Arc<PluginInfo>,
}

/// Compiled components by content hash, each with what the pools using it hold.
type CompiledByHash = HashMap<[u8; 32], (Component, std::sync::Weak<PluginInfo>)>;

/// Owns the engine, the linkers and compiled components. One per gateway process.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    async_linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    /// Compiled components by content hash, while a pool uses them (its `PluginInfo` is
    /// alive). One that nothing uses any more (replaced by an upload, removed from the
    /// config) is dropped at the next load instead of being kept for the process's life: a
    /// compiled interpreter is 36 MB.
    compiled: Mutex<CompiledByHash>,
    caps: Arc<Capabilities>,
    stats: stats::CallStats,
}

impl PluginRuntime {
    /// `cache_dir`: where precompiled components are kept across restarts (`None`: no disk
    /// cache).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, RuntimeError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Traps are reported by kind; guest backtraces cost time on every trap and say little
        // without debug info.
        config.wasm_backtrace_max_frames(None);
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(1000)
            .total_core_instances(5000)
            .total_memories(1000)
            .total_tables(2000)
            .max_memory_size(MAX_MEMORY_BYTES)
            // Keeping a little memory resident makes reinstantiation cheaper without holding
            // on to whole heaps of discarded instances.
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let engine_error = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        // Synchronous plugins: every import but `http-outbound`, which only the async linker
        // has (a plugin importing it is always instantiated there).
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        {
            use bindings::wasmgate::plugin::*;
            type Data = wasmtime::component::HasSelf<HostState>;
            let l = &mut linker;
            fn get(s: &mut HostState) -> &mut HostState {
                s
            }
            types::add_to_linker::<HostState, Data>(l, get).map_err(engine_error)?;
            log::add_to_linker::<HostState, Data>(l, get).map_err(engine_error)?;
            clock::add_to_linker::<HostState, Data>(l, get).map_err(engine_error)?;
            counters::add_to_linker::<HostState, Data>(l, get).map_err(engine_error)?;
            kv::add_to_linker::<HostState, Data>(l, get).map_err(engine_error)?;
            credentials::add_to_linker::<HostState, Data>(l, get).map_err(engine_error)?;
            log_sink::add_to_linker::<HostState, Data>(l, get).map_err(engine_error)?;
            metrics::add_to_linker::<HostState, Data>(l, get).map_err(engine_error)?;
            crypto::add_to_linker::<HostState, Data>(l, get).map_err(engine_error)?;
        }
        let mut async_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut async_linker).map_err(engine_error)?;
        async_bindings::Plugin::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut async_linker,
            |s| s,
        )
        .map_err(engine_error)?;

        // The epoch ticker: deadlines are counted in its ticks. It holds only a weak
        // reference so the thread ends with the engine.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;

        if let Some(dir) = &cache_dir {
            // A missing cache only costs compile time; do not refuse to start over it.
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "plugin cache unavailable");
            }
        }
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            async_linker,
            cache_dir,
            compiled: Mutex::new(HashMap::new()),
            caps: Arc::new(Capabilities::default()),
            stats: stats::CallStats::default(),
        }))
    }

    pub fn capabilities(&self) -> &Arc<Capabilities> {
        &self.caps
    }

    /// Count boundary crossings per plugin and phase (`gateway.plugin_stats`) in pools built
    /// from now on. It adds a hook call to every crossing, so it is off by default.
    pub fn count_crossings(&self, on: bool) {
        self.stats.set_on(on);
    }

    /// What [`Self::count_crossings`] counted: by plugin, per phase (request, response, log).
    pub fn call_stats(&self) -> Vec<(String, [PhaseTotals; 3])> {
        self.stats.totals()
    }

    /// Load a plugin component from disk: see [`Self::load_bytes`].
    pub fn load(&self, path: &Path) -> Result<LoadedPlugin, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read { path: path.into(), source })?;
        self.load_bytes(path, &bytes)
    }

    /// Load a plugin component (`origin` names it in errors and the log: its file, or
    /// `built-in NAME`): from memory if this content was seen before, from the precompiled
    /// cache if this wasmtime compiled it before, else compile it. Safe to call from several
    /// threads at once: compiling is what takes long.
    pub fn load_bytes(&self, origin: &Path, bytes: &[u8]) -> Result<LoadedPlugin, RuntimeError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if let Some((component, info)) = self.compiled.lock().unwrap_or_else(|e| e.into_inner()).get(&digest)
            && let Some(info) = info.upgrade()
        {
            return Ok(LoadedPlugin { component: component.clone(), info });
        }
        // Read before compiling: a bad manifest is cheaper to report than to compile.
        let info = PluginInfo::read(bytes)
            .map_err(|reason| RuntimeError::Invalid { path: origin.into(), reason })?;
        let cached = self.cache_dir.as_ref().map(|dir| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut h);
            dir.join(format!("{}-{:016x}.cwasm", hex::encode(digest), h.finish()))
        });
        let started = std::time::Instant::now();
        let kb = bytes.len().div_ceil(1024);
        let mut precompiled = false;
        let component = match cached.as_ref().filter(|p| p.exists()) {
            // SAFETY: files in the cache are written only by this function, from
            // `Component::serialize` of the same engine configuration (the file name
            // carries the engine's compatibility hash).
            Some(p) => match unsafe { Component::deserialize_file(&self.engine, p) } {
                Ok(c) => {
                    precompiled = true;
                    c
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "stale plugin cache entry; recompiling");
                    self.compile(origin, bytes, cached.as_deref())?
                }
            },
            None => {
                // A large component (an interpreter) takes a while: say so before, not only after.
                tracing::info!(plugin = %origin.display(), kb, "compiling plugin");
                self.compile(origin, bytes, cached.as_deref())?
            }
        };
        tracing::info!(
            plugin = %origin.display(),
            kb,
            ms = started.elapsed().as_millis() as u64,
            precompiled,
            "plugin loaded"
        );
        let loaded = LoadedPlugin { component, info: Arc::new(info) };
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        compiled.retain(|_, (_, info)| info.strong_count() > 0);
        compiled.insert(digest, (loaded.component.clone(), Arc::downgrade(&loaded.info)));
        Ok(loaded)
    }

    fn compile(
        &self,
        path: &Path,
        bytes: &[u8],
        cache_file: Option<&Path>,
    ) -> Result<Component, RuntimeError> {
        let component = Component::new(&self.engine, bytes);
        release_freed_memory();
        let component =
            component.map_err(|e| RuntimeError::Invalid { path: path.into(), reason: format!("{e:#}") })?;
        if let Some(file) = cache_file
            && let Ok(serialized) = component.serialize()
        {
            // Write then rename, so a concurrent start never reads half a file.
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, serialized).and_then(|_| std::fs::rename(&tmp, file)).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(component)
    }

    /// Where this node keeps a component uploaded through the admin API, named by its
    /// SHA-256 (hex): in the plugin cache, beside the precompiled files.
    pub fn uploaded_path(&self, sha256: &str) -> Result<PathBuf, RuntimeError> {
        let Some(dir) = &self.cache_dir else {
            return Err(RuntimeError::Uploads(
                "no plugin cache directory: set gateway.plugin_cache_dir".into(),
            ));
        };
        Ok(dir.join("uploaded").join(format!("{sha256}.wasm")))
    }

    /// Keep an uploaded component at [`Self::uploaded_path`] once it has proved to be a
    /// plugin this gateway can run: it compiles, imports nothing the gateway does not
    /// provide and exports the policy interface. Returns its SHA-256.
    pub fn install(self: &Arc<Self>, bytes: &[u8]) -> Result<String, RuntimeError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let path = self.uploaded_path(&sha256)?;
        if path.exists() {
            return Ok(sha256);
        }
        let failed = |e: std::io::Error| RuntimeError::Uploads(format!("{}: {e}", path.display()));
        std::fs::create_dir_all(path.parent().expect("in a folder")).map_err(failed)?;
        // Checked under a temporary name and renamed: a file at the final path is always
        // whole and valid.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(failed)?;
        const UPLOADED: &str = "the uploaded component";
        let checked = self.load(&tmp).and_then(|c| self.pool_builder(UPLOADED, &c, 1 << 20).map(drop));
        let checked = checked.map_err(|e| match e {
            RuntimeError::Invalid { reason, .. } => RuntimeError::Invalid { path: UPLOADED.into(), reason },
            e => e,
        });
        let kept = checked.and_then(|()| std::fs::rename(&tmp, &path).map_err(failed));
        if kept.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        kept.map(|()| sha256)
    }

    /// Start a pool for one plugin component and memory cap; add its bindings, then build.
    pub fn pool_builder(
        self: &Arc<Self>,
        plugin: &str,
        loaded: &LoadedPlugin,
        memory_cap: usize,
    ) -> Result<PoolBuilder, RuntimeError> {
        let component = &loaded.component;
        let invalid = |what: &str, e: wasmtime::Error| RuntimeError::Invalid {
            path: PathBuf::from(plugin),
            reason: format!("{what}: {e:#}"),
        };
        let info = &loaded.info;
        info.runs_here().map_err(|reason| RuntimeError::Invalid { path: PathBuf::from(plugin), reason })?;
        let waits = info.imports.iter().any(|name| name.starts_with(HTTP_OUTBOUND));
        let linker = if waits { &self.async_linker } else { &self.linker };
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| invalid("imports something the gateway does not provide", e))?;
        let no_policy = "does not export wasmgate:plugin/policy as this gateway defines it";
        let pre = if waits {
            pool::Pre::Async(async_bindings::PluginPre::new(pre).map_err(|e| invalid(no_policy, e))?)
        } else {
            pool::Pre::Sync(bindings::PluginPre::new(pre).map_err(|e| invalid(no_policy, e))?)
        };
        Ok(PoolBuilder::new(self.clone(), plugin, loaded.info.clone(), pre, memory_cap.min(MAX_MEMORY_BYTES)))
    }
}

#[cfg(test)]
mod tests {
    use super::check_contract;

    #[test]
    fn plugins_for_0_2_x_are_run_and_other_versions_refused_by_name() {
        let built_for = |v: &str| {
            let names = [
                format!("wasmgate:plugin/log@{v}"),
                format!("wasmgate:plugin/policy@{v}"),
                "wasi:io/streams@0.2.6".into(),
            ];
            check_contract(names.iter().map(String::as_str))
        };
        assert_eq!(built_for("0.2.0"), Ok(()));
        assert_eq!(built_for("0.2.7"), Ok(()), "a later patch level of the contract");
        for other in ["0.1.0", "0.3.0", "1.0.0", "0.0.9"] {
            let e = built_for(other).unwrap_err();
            assert!(
                e.contains(&format!("built against wasmgate:plugin@{other}")) && e.contains("0.2.x"),
                "{e}"
            );
        }
        let e = check_contract(["wasi:cli/run@0.2.6"].into_iter()).unwrap_err();
        assert_eq!(e, "exports no wasmgate:plugin/policy: not a Wasmgate plugin");
        assert!(
            check_contract(["wasmgate:plugin/policy"].into_iter()).unwrap_err().contains("names no version")
        );
    }
}
