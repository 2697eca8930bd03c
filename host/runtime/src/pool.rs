//! Warm instance pools and the [`WasmPolicy`] that runs one binding's phases.

use crate::capabilities::BindingScope;
use crate::convert::Packer;
use crate::{
    EPOCH_TICK, HostState, PluginInfo, PluginRuntime, RuntimeError, async_bindings, bindings, convert,
};
use crossbeam_queue::ArrayQueue;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use wasmgate_proxy::metrics::Phase;
use wasmgate_proxy::policy::{
    BindingInfo, Call, LogView, Policy, PolicyError, RequestAction, RequestView, ResponseAction,
    ResponseView, RouteInfo,
};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;

/// Idle instances kept per pool. More than the worker threads is never needed for sync
/// calls; the rest are dropped when returned.
const IDLE_INSTANCES: usize = 64;
/// Table growth beyond this is refused (guests use a handful of entries).
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Guest time for setting an instance up: its start code and each binding's `configure`.
/// Not the phase deadline: the deadline counts wall time spent in the guest, so on a busy
/// machine a Python or JavaScript plugin's start could pass 50 ms and refuse a valid config
/// at load. Setup runs at load and once per new instance, never per request; a plugin
/// that never returns from it still fails.
const SETUP_TIME: Duration = Duration::from_secs(1);
/// [`SETUP_TIME`] in epoch ticks (+1: the deadline counts from the next tick).
const SETUP_TICKS: u64 = (SETUP_TIME.as_millis() / EPOCH_TICK.as_millis()) as u64 + 1;

/// A phase call that runs this many epoch ticks (5–10 ms of guest time) lets the other
/// requests on its Tokio worker go on without it: shorter calls, almost all, never get there
/// and pay nothing.
pub(crate) const HAND_OFF_TICKS: u64 = 2;

/// Let the other tasks of this Tokio worker go on while a long synchronous call keeps the
/// thread: tokio's `block_in_place` moves the worker's queue (its core) to another thread,
/// and this one finishes the call. A busy-looping plugin then delays only its own request,
/// not every request that happened to be queued behind it. The short sleep lets the new
/// thread pick the core up; `block_in_place` takes it back when its closure returns if it
/// is still there. Outside a multi-threaded runtime (tests' harness) nothing is handed off.
fn hand_off() {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread) {
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_micros(200)));
    }
}

/// Caps one instance's memory; records that the cap was hit so the error can say so.
pub(crate) struct Limits {
    memory_cap: usize,
    memory_exceeded: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
struct MemoryLimitExceeded(usize);

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_exceeded = true;
            // An error (not `Ok(false)`) traps at once instead of letting the guest's
            // allocator limp on.
            return Err(MemoryLimitExceeded(self.memory_cap).into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A plugin ready to instantiate, linked for synchronous calls or, if it imports
/// `http-outbound`, for async calls that suspend while waiting on the network.
pub(crate) enum Pre {
    Sync(bindings::PluginPre<HostState>),
    Async(async_bindings::PluginPre<HostState>),
}

enum Exports {
    Sync(bindings::Plugin),
    Async(async_bindings::Plugin),
}

struct Instance {
    store: Store<HostState>,
    exports: Exports,
    /// Which bindings this instance has configured.
    configured: Vec<bool>,
    /// Where a phase's input is packed; kept so packing does not allocate per call.
    input: Vec<u8>,
}

/// An input buffer larger than this (a body was passed) is not kept for the next call.
const KEPT_INPUT: usize = 64 << 10;

impl Instance {
    /// The input buffer, empty, to pack a call's input into; give it back with
    /// [`Self::keep_input`].
    fn take_input(&mut self) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        input
    }

    fn keep_input(&mut self, input: Vec<u8>) {
        if input.capacity() <= KEPT_INPUT {
            self.input = input;
        }
    }
}

/// Call a policy export of either kind on `$inst`: synchronously (host panics contained, see
/// [`guarded`]) or awaiting the async call. Errors are classified against the store.
macro_rules! call_export {
    ($inst:expr, $method:ident($($arg:expr),*)) => {{
        let Instance { exports, store, .. } = $inst;
        match exports {
            Exports::Sync(p) => guarded(|| {
                p.wasmgate_plugin_policy().$method(&mut *store, $($arg),*).map_err(|e| classify(e, store))
            }),
            Exports::Async(p) => {
                p.wasmgate_plugin_policy().$method(&mut *store, $($arg),*).await.map_err(|e| classify(e, store))
            }
        }
    }};
}

/// Poll a future once. Synchronous plugin calls are written as async functions (one code
/// path for both kinds) but never wait, so one poll finishes them.
fn now<F: Future>(f: F) -> Option<F::Output> {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

fn waited() -> PolicyError {
    PolicyError::Trap("the plugin waited on I/O where it may not (start-up or configure)".into())
}

/// Why a binding could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("{}{message}", if field.is_empty() { String::new() } else { format!("config.{field}: ") })]
    Config { field: String, message: String },
    #[error("plugin failed while checking its config: {0}")]
    Failed(PolicyError),
}

struct Slot {
    config: String,
    /// The deadline of a phase call.
    cpu_ticks: u64,
    /// Wall-clock cap of one call, network waits included.
    wall: Duration,
}

impl Slot {
    /// The deadline of setting an instance up for this binding: [`SETUP_TICKS`], or the
    /// phase deadline if larger.
    fn setup_ticks(&self) -> u64 {
        self.cpu_ticks.max(SETUP_TICKS)
    }
}

/// How long one phase call of a binding may run.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Time running guest code (epoch ticks); waiting on the network does not count.
    pub cpu: Duration,
    /// Time in all, waits included.
    pub wall: Duration,
    /// The binding's kv quota.
    pub kv: crate::capabilities::kv::KvLimits,
}

/// Collects a pool's bindings before the pool is built.
pub struct PoolBuilder {
    runtime: Arc<PluginRuntime>,
    plugin: Arc<str>,
    info: Arc<PluginInfo>,
    pre: Pre,
    memory_cap: usize,
    slots: Vec<Slot>,
    scopes: Vec<BindingScope>,
    cap: Option<Arc<crate::capabilities::GrantCap>>,
}

impl PoolBuilder {
    pub(crate) fn new(
        runtime: Arc<PluginRuntime>,
        plugin: &str,
        info: Arc<PluginInfo>,
        pre: Pre,
        memory_cap: usize,
    ) -> Self {
        PoolBuilder {
            runtime,
            plugin: plugin.into(),
            info,
            pre,
            memory_cap,
            slots: Vec::new(),
            scopes: Vec::new(),
            cap: None,
        }
    }

    /// Cap what this plugin's bindings may declare (a custom plugin: the operator's
    /// `plugins.NAME.grants`). Without one, a binding gets what it declares (built-ins).
    pub fn cap(mut self, cap: crate::capabilities::GrantCap) -> Self {
        self.cap = Some(Arc::new(cap));
        self
    }

    /// Add a binding; returns its number in this pool.
    pub fn add(&mut self, namespace: String, api_id: String, config_json: String, limits: CallLimits) -> u32 {
        let ticks = limits.cpu.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64;
        // +1: the deadline counts from the next tick, which may be almost due.
        self.slots.push(Slot { config: config_json, cpu_ticks: ticks + 1, wall: limits.wall });
        let kv = self.runtime.capabilities().kv.space(&namespace, &api_id, &self.plugin);
        self.scopes.push(BindingScope {
            namespace,
            api_id,
            plugin: self.plugin.clone(),
            kv,
            kv_limits: limits.kv,
            grants: Default::default(),
        });
        (self.slots.len() - 1) as u32
    }

    /// Configure every binding on a first instance (this is where plugins validate their
    /// configs, after the plugin's config schema if it declares one) and return the pool with
    /// each binding's policy or error, in `add` order.
    pub fn build(self) -> Result<Vec<Result<WasmPolicy, BindingError>>, RuntimeError> {
        let mut schema_errors: Vec<Option<BindingError>> =
            self.slots.iter().map(|s| self.check_schema(&s.config)).collect();
        let pool = Arc::new(PluginPool {
            stats: self.runtime.stats.for_plugin(&self.plugin),
            cap: self.cap,
            runtime: self.runtime,
            plugin: self.plugin,
            pre: self.pre,
            memory_cap: self.memory_cap,
            scopes: self.scopes.into(),
            slots: self.slots,
            idle: ArrayQueue::new(IDLE_INSTANCES),
            _info: self.info.clone(),
        });
        let instantiate = || {
            now(pool.instantiate()).unwrap_or_else(|| Err(waited())).map_err(|e| RuntimeError::Invalid {
                path: pool.plugin.to_string().into(),
                reason: e.to_string(),
            })
        };
        let mut inst = instantiate()?;
        let mut out = Vec::with_capacity(pool.slots.len());
        let mut healthy = true;
        for binding in 0..pool.slots.len() as u32 {
            if !healthy {
                inst = instantiate()?;
                healthy = true;
            }
            if let Some(e) = schema_errors[binding as usize].take() {
                out.push(Err(e));
                continue;
            }
            out.push(match now(pool.configure(&mut inst, binding)).unwrap_or_else(|| Err(waited())) {
                Ok(Ok((info, request, declared))) => pool.grant(binding, declared).map(|()| WasmPolicy {
                    pool: pool.clone(),
                    binding,
                    info,
                    request,
                }),
                Ok(Err(e)) => Err(BindingError::Config { field: e.field, message: e.message }),
                Err(e) => {
                    healthy = false;
                    Err(BindingError::Failed(e))
                }
            });
        }
        if healthy {
            let _ = pool.idle.push(inst);
        }
        Ok(out)
    }

    fn check_schema(&self, config: &str) -> Option<BindingError> {
        self.info.validator.as_ref()?;
        let parsed = match serde_json::from_str(config) {
            Ok(v) => v,
            Err(e) => {
                return Some(BindingError::Config {
                    field: String::new(),
                    message: format!("not JSON: {e}"),
                });
            }
        };
        let (field, message) = self.info.check_config(&parsed).err()?;
        Some(BindingError::Config { field, message: format!("{message} (the plugin's config schema)") })
    }
}

/// Warm instances of one plugin (at one memory cap), shared by the bindings added to it.
pub struct PluginPool {
    runtime: Arc<PluginRuntime>,
    plugin: Arc<str>,
    pre: Pre,
    memory_cap: usize,
    scopes: Arc<[BindingScope]>,
    slots: Vec<Slot>,
    idle: ArrayQueue<Instance>,
    /// Where calls' boundary crossings are added up, when counted.
    stats: Option<Arc<crate::stats::PluginStats>>,
    /// Held so the runtime keeps the compiled component for reuse while this pool lives.
    _info: Arc<PluginInfo>,
    /// The operator's cap on its bindings' grants; `None` for built-ins.
    cap: Option<Arc<crate::capabilities::GrantCap>>,
}

/// Run a call into the guest, containing host panics.
///
/// wasmtime-wasi's synchronous stream, poll and filesystem functions enter a Tokio runtime to
/// block, which panics on a Tokio worker thread. A plugin reaches them only by writing to
/// stdout/stderr, sleeping or touching files, none of which plugins may do (the SDK routes
/// panic messages through the `log` import instead). The panic unwinds out of the guest
/// through wasmtime; the caller then drops the instance, so no half-finished state is reused.
fn guarded<R>(f: impl FnOnce() -> Result<R, PolicyError>) -> Result<R, PolicyError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(PolicyError::Trap(
            "the plugin made a blocking WASI call (stdout, stderr, files or sleep); plugins must log through wasmgate:plugin/log".into(),
        ))
    })
}

fn classify(err: wasmtime::Error, store: &Store<HostState>) -> PolicyError {
    if store.data().limits.memory_exceeded {
        PolicyError::Memory
    } else if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        PolicyError::Deadline
    } else {
        PolicyError::Trap(format!("{err:#}"))
    }
}

impl PluginPool {
    /// Give `binding` what it declared: producers for its log sinks, its outbound origins.
    fn grant(&self, binding: u32, declared: convert::Declared) -> Result<(), BindingError> {
        let refuse = |message: String| BindingError::Config { field: String::new(), message };
        let sinks = declared.log_sinks.iter().map(|d| {
            let granted = self.runtime.caps.log_sinks.grant(d);
            granted.map_err(|m| refuse(format!("log sink `{}`: {m}", d.name)))
        });
        let sinks = sinks.collect::<Result<Vec<_>, _>>()?;
        let http = declared.http_grants.iter().map(|o| {
            crate::capabilities::http_outbound::origin(o)
                .map_err(|m| refuse(format!("http grant `{o}`: {m}")))
        });
        let http = http.collect::<Result<Vec<_>, _>>()?;
        if let Some(cap) = &self.cap {
            cap.check(&http, &declared.log_sinks).map_err(refuse)?;
        }
        let _ = self.scopes[binding as usize].grants.set(crate::capabilities::Grants { sinks, http });
        Ok(())
    }

    async fn instantiate(&self) -> Result<Instance, PolicyError> {
        let wasi =
            WasiCtxBuilder::new().allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits: Limits { memory_cap: self.memory_cap, memory_exceeded: false },
            current: 0,
            scopes: self.scopes.clone(),
            key_buf: String::new(),
            route_api: String::new(),
            route_group: String::new(),
            caps: self.runtime.caps.clone(),
            net_wait: Duration::ZERO,
            wall_deadline: std::time::Instant::now(),
            deferred_ticks: 0,
            sync_calls: matches!(self.pre, Pre::Sync(_)),
            crossings: Default::default(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        if self.stats.is_some() {
            store.call_hook(|mut ctx, hook| {
                ctx.data_mut().crossings.count(hook);
                Ok(())
            });
        }
        // The deadline counts guest time: time a host import spent waiting on the network
        // is given back, as long as the call's wall-clock cap allows.
        // A call first runs to HAND_OFF_TICKS; past that, what it waited is given back, then
        // the rest of its budget, after handing its worker off.
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            let credit = s.net_wait.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64;
            s.net_wait = Duration::ZERO;
            // Setup (start code, configure) has nothing to credit or defer: its deadline is final.
            if std::time::Instant::now() >= s.wall_deadline {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            if credit > 0 {
                return Ok(wasmtime::UpdateDeadline::Continue(credit));
            }
            if s.deferred_ticks == 0 {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            // A long call: let the worker's other requests go on, then run on.
            let rest = std::mem::take(&mut s.deferred_ticks);
            if s.sync_calls {
                hand_off();
                return Ok(wasmtime::UpdateDeadline::Continue(rest));
            }
            Ok(wasmtime::UpdateDeadline::Yield(rest))
        });
        // Instantiation runs the guest's start code (a language runtime's, for some).
        store.set_epoch_deadline(self.slots.iter().map(Slot::setup_ticks).max().unwrap_or(SETUP_TICKS));
        let exports = match &self.pre {
            Pre::Sync(pre) => {
                guarded(|| pre.instantiate(&mut store).map(Exports::Sync).map_err(|e| classify(e, &store)))
            }
            Pre::Async(pre) => {
                pre.instantiate_async(&mut store).await.map(Exports::Async).map_err(|e| classify(e, &store))
            }
        };
        let exports = exports.map_err(|e| match e {
            PolicyError::Trap(m) => PolicyError::Unavailable(m),
            other => other,
        })?;
        Ok(Instance { store, exports, configured: vec![false; self.slots.len()], input: Vec::new() })
    }

    async fn configure(
        &self,
        inst: &mut Instance,
        binding: u32,
    ) -> Result<Result<convert::Accepted, crate::bindings::wasmgate::plugin::types::ConfigError>, PolicyError>
    {
        let slot = &self.slots[binding as usize];
        inst.store.set_epoch_deadline(slot.setup_ticks());
        inst.store.data_mut().current = binding;
        // Setup's deadline is its own; nothing left over from an earlier call.
        inst.store.data_mut().deferred_ticks = 0;
        let r = call_export!(&mut *inst, call_configure(binding, &slot.config))?;
        match r {
            Ok(info) => {
                inst.configured[binding as usize] = true;
                convert::binding_info(info).map(Ok)
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// A warm instance with `binding` configured and its deadline set, for one call. Give
    /// it back with [`Self::checkin`] if the call succeeded; a failed instance is dropped and
    /// the next call gets a fresh one.
    async fn checkout(&self, binding: u32, route: &RouteInfo) -> Result<Instance, PolicyError> {
        let mut inst = match self.idle.pop() {
            Some(i) => i,
            None => self.instantiate().await?,
        };
        if !inst.configured[binding as usize] {
            match self.configure(&mut inst, binding).await? {
                Ok(_) => {}
                // Accepted at load, refused now: the plugin is not deterministic.
                Err(e) => {
                    return Err(PolicyError::Trap(format!(
                        "config refused on a new instance: {}",
                        e.message
                    )));
                }
            }
        }
        let slot = &self.slots[binding as usize];
        let first = slot.cpu_ticks.min(HAND_OFF_TICKS);
        inst.store.set_epoch_deadline(first);
        let data = inst.store.data_mut();
        data.deferred_ticks = slot.cpu_ticks - first;
        data.current = binding;
        data.net_wait = Duration::ZERO;
        data.wall_deadline = std::time::Instant::now() + slot.wall;
        data.crossings = Default::default();
        // Reused buffers: a named policy serves several APIs, so the route is per call.
        data.route_api.clear();
        data.route_api.push_str(&route.api_id);
        data.route_group.clear();
        data.route_group.push_str(&route.group_id);
        Ok(inst)
    }

    /// Take back an instance whose `phase` call succeeded.
    fn checkin(&self, inst: Instance, phase: Phase) {
        if let Some(stats) = &self.stats {
            stats.record(phase, inst.store.data().crossings);
        }
        let _ = self.idle.push(inst);
    }
}

/// One binding of a plugin: the proxy's view of a Wasm policy.
pub struct WasmPolicy {
    pool: Arc<PluginPool>,
    binding: u32,
    info: BindingInfo,
    request: convert::RequestSelection,
}

impl WasmPolicy {
    /// The outbound origins and log sinks (`name (topic t)`) this binding was granted.
    pub fn granted(&self) -> (Vec<String>, Vec<String>) {
        let granted = self.pool.scopes[self.binding as usize].grants.get();
        let http = granted.map(|g| g.http.clone()).unwrap_or_default();
        let sinks =
            granted.map(|g| g.sinks.iter().map(|s| format!("{} (topic {})", s.name, s.topic)).collect());
        (http, sinks.unwrap_or_default())
    }

    /// Instantiate a fresh instance of this binding's plugin and drop it: what a request would
    /// pay without warm instances. For benchmarks.
    pub fn instantiate_fresh(&self) -> Result<(), PolicyError> {
        now(self.pool.instantiate()).unwrap_or_else(|| Err(waited())).map(drop)
    }

    /// Hand a phase call to the proxy: finished at once for a synchronous plugin, boxed to
    /// be awaited for one that may wait on the network.
    fn call<'a, T: Unpin>(
        &self,
        call: impl Future<Output = Result<T, PolicyError>> + Send + 'a,
    ) -> Call<'a, T> {
        match self.pool.pre {
            Pre::Sync(_) => Call::Ready(Some(now(call).unwrap_or_else(|| Err(waited())))),
            Pre::Async(_) => Call::Waiting(Box::pin(call)),
        }
    }

    async fn request(&self, request: &RequestView<'_>) -> Result<RequestAction, PolicyError> {
        let mut inst = self.pool.checkout(self.binding, request.route).await?;
        let mut input = inst.take_input();
        Packer(&mut input).request(request, &self.request);
        let action = call_export!(&mut inst, call_on_request(self.binding, &input))?;
        inst.keep_input(input);
        self.pool.checkin(inst, Phase::Request);
        let action = convert::request_action(action)?;
        if let (
            Some(cap),
            RequestAction::Continue(wasmgate_proxy::policy::RequestChanges { backend: Some(target), .. }),
        ) = (&self.pool.cap, &action)
        {
            cap.allows_backend(&target.url).map_err(PolicyError::InvalidAction)?;
        }
        Ok(action)
    }

    async fn response(
        &self,
        request: &RequestView<'_>,
        response: &ResponseView<'_>,
    ) -> Result<ResponseAction, PolicyError> {
        let mut inst = self.pool.checkout(self.binding, request.route).await?;
        let mut input = inst.take_input();
        let mut p = Packer(&mut input);
        p.request(request, &self.request);
        p.response(response, &self.info.response_headers, self.info.response_body);
        let action = call_export!(&mut inst, call_on_response(self.binding, &input))?;
        inst.keep_input(input);
        self.pool.checkin(inst, Phase::Response);
        convert::response_action(action)
    }

    async fn log(&self, entry: &LogView<'_>) -> Result<(), PolicyError> {
        let mut inst = self.pool.checkout(self.binding, entry.request.route).await?;
        let mut input = inst.take_input();
        let mut p = Packer(&mut input);
        p.request(&entry.request, &self.request);
        p.response(&entry.response, &self.info.response_headers, self.info.response_body);
        p.log_entry(entry);
        call_export!(&mut inst, call_on_log(self.binding, &input))?;
        inst.keep_input(input);
        self.pool.checkin(inst, Phase::Log);
        Ok(())
    }
}

impl Policy for WasmPolicy {
    fn plugin_name(&self) -> &str {
        &self.pool.plugin
    }

    fn info(&self) -> &BindingInfo {
        &self.info
    }

    fn grants(&self) -> String {
        let list = |items: Vec<String>| if items.is_empty() { "none".to_string() } else { items.join(", ") };
        let (http, sinks) = self.granted();
        let backends = match &self.pool.cap {
            None => "as its config says (built in)".to_string(),
            Some(cap) => list(cap.backends.clone()),
        };
        format!("outbound {}; log sinks {}; backend overrides {backends}", list(http), list(sinks))
    }

    fn on_request<'a>(&'a self, request: &'a RequestView<'_>) -> Call<'a, RequestAction> {
        self.call(self.request(request))
    }

    fn on_response<'a>(
        &'a self,
        request: &'a RequestView<'_>,
        response: &'a ResponseView<'_>,
    ) -> Call<'a, ResponseAction> {
        self.call(self.response(request, response))
    }

    fn on_log<'a>(&'a self, entry: &'a LogView<'_>) -> Call<'a, ()> {
        self.call(self.log(entry))
    }
}
