//! Test a Wasmgate plugin the way the gateway runs it: the component is built from source
//! and loaded by the gateway's own runtime, a binding is configured (the plugin's config
//! schema first, then its own check), and each phase call goes through the same code the
//! proxy uses. Host capabilities are the gateway's own, with the parts a test must control
//! replaced by fakes: a clock the test sets, outbound HTTP answered by the test, log sinks
//! that keep what is published instead of sending it to Kafka.
//!
//! ```ignore
//! use wasmgate_test::{Plugin, TestRequest};
//!
//! #[test]
//! fn greets() {
//!     let plugin = Plugin::build(env!("CARGO_MANIFEST_DIR"));
//!     let hello = plugin.bind(serde_json::json!({"greeting": "hi"})).unwrap();
//!     let reply = hello.on_request(&TestRequest::get("/")).unwrap().reply();
//!     assert_eq!(reply.body, "hi");
//! }
//! ```
#![forbid(unsafe_code)]

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wasmgate_proxy::policy::{
    self, BackendOutcome, ChangeableRequest, Identity, Policy, RequestView, ResponseView, RouteInfo,
};
use wasmgate_runtime::capabilities::credentials::{App, CredentialStore};
use wasmgate_runtime::capabilities::log_sink::Published;
use wasmgate_runtime::capabilities::namespaced;
use wasmgate_runtime::{CallLimits, LoadedPlugin, PluginInfo, PluginRuntime, WasmPolicy};

pub use wasmgate_proxy::policy::{
    BindingInfo, HeaderOp, PolicyError, Reply, RequestAction, RequestChanges, ResponseAction, ResponseChanges,
};

/// The API every test binding is on.
pub const API_ID: &str = "test-api";

/// Build the plugin crate at `manifest_dir` for `wasm32-wasip2` with `cargo build --release`
/// and return the component's path (cargo rebuilds only what changed).
pub fn build(manifest_dir: &str) -> PathBuf {
    build_with_profile(manifest_dir, "release")
}

/// [`build`] with another cargo profile (Wasmgate's built-in plugins use `plugin`).
pub fn build_with_profile(manifest_dir: &str, profile: &str) -> PathBuf {
    try_build(manifest_dir, profile).unwrap_or_else(|e| panic!("{e}"))
}

/// Build the plugin crate at `manifest_dir` with cargo `profile`; the component's path, or
/// why there is none.
pub fn try_build(manifest_dir: &str, profile: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(manifest_dir).join("Cargo.toml");
    // Cargo names packages by absolute manifest path.
    let manifest = manifest.canonicalize().map_err(|e| format!("{}: {e}", manifest.display()))?;
    let out = std::process::Command::new(cargo)
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--profile",
            profile,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        // Cargo reads `.cargo/config.toml` from where it runs: the project's, as `cargo build`
        // in its directory would (a plugin project's names the target directory to share).
        .current_dir(manifest.parent().expect("a manifest is in a directory"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("building {} for wasm32-wasip2 failed (see above)", manifest.display()));
    }
    // The last artifact cargo names that is a component of this package.
    let text = String::from_utf8_lossy(&out.stdout);
    let wasm = text.lines().rev().find_map(|line| {
        let msg: serde_json::Value = serde_json::from_str(line).ok()?;
        let same = msg["manifest_path"].as_str().is_some_and(|p| Path::new(p) == manifest);
        let files = msg["filenames"].as_array().filter(|_| same && msg["reason"] == "compiler-artifact")?;
        files.iter().filter_map(|f| f.as_str()).find(|f| f.ends_with(".wasm")).map(PathBuf::from)
    });
    wasm.ok_or_else(|| format!("{} builds no component: is it a `cdylib`?", manifest.display()))
}

/// A plugin component loaded by the gateway's runtime, with its own fake host.
pub struct Plugin {
    runtime: Arc<PluginRuntime>,
    loaded: LoadedPlugin,
    name: String,
    bindings: std::sync::atomic::AtomicU32,
    /// Phase calls of plugins that wait on the network (outbound HTTP) need a runtime.
    tokio: tokio::runtime::Runtime,
}

impl Plugin {
    /// [`build`] the plugin crate at `manifest_dir` and load it.
    pub fn build(manifest_dir: &str) -> Plugin {
        Plugin::load(build(manifest_dir))
    }

    /// Load a component file; panics with the runtime's reason if it is not a plugin.
    pub fn load(path: impl AsRef<Path>) -> Plugin {
        Plugin::try_load(path.as_ref()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Load a component file, or say why it is not a plugin this gateway runs.
    pub fn try_load(path: &Path) -> Result<Plugin, String> {
        Plugin::try_load_cached(path, None)
    }

    /// [`Self::try_load`], with compiled components kept in `cache_dir` (a plugin cache, as
    /// the gateway's): an interpreter compiles once, not at every run.
    pub fn try_load_cached(path: &Path, cache_dir: Option<PathBuf>) -> Result<Plugin, String> {
        let runtime = PluginRuntime::new(cache_dir).map_err(|e| e.to_string())?;
        let loaded = runtime.load(path).map_err(|e| e.to_string())?;
        runtime.capabilities().log_sinks.capture();
        let name =
            loaded.info.name.clone().unwrap_or_else(|| path.file_stem().unwrap().to_string_lossy().into());
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        Ok(Plugin { runtime, loaded, name, bindings: Default::default(), tokio })
    }

    /// What the component says about itself (name, version, config schema, imports).
    pub fn info(&self) -> &PluginInfo {
        &self.loaded.info
    }

    /// Bind the plugin with `config`, as the gateway would on an API: the config schema is
    /// checked, then the plugin's `configure`. The error is what the gateway would print
    /// (`config.field: message`). Limits are the gateway's defaults.
    pub fn bind(&self, config: serde_json::Value) -> Result<Binding<'_>, String> {
        let mut pool =
            self.runtime.pool_builder(&self.name, &self.loaded, 16 << 20).map_err(|e| e.to_string())?;
        let number = self.bindings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let namespace = format!("{API_ID}#{number}:{}", self.name);
        let limits = CallLimits {
            cpu: Duration::from_millis(50),
            wall: Duration::from_secs(30),
            kv: Default::default(),
        };
        pool.add(namespace.clone(), API_ID.into(), config.to_string(), limits);
        let policy = pool.build().map_err(|e| e.to_string())?.pop().expect("one binding");
        let policy = policy.map_err(|e| e.to_string())?;
        Ok(Binding { plugin: self, policy, namespace })
    }

    /// Stop the plugin's clock at `ms` since the Unix epoch (it runs until first set).
    pub fn set_now_ms(&self, ms: u64) {
        self.runtime.capabilities().clock.freeze_at(Some(ms));
    }

    /// Let the plugin's clock run again (the wall clock).
    pub fn run_clock(&self) {
        self.runtime.capabilities().clock.freeze_at(None);
    }

    /// Move the stopped clock on.
    pub fn advance(&self, by: Duration) {
        let clock = &self.runtime.capabilities().clock;
        clock.freeze_at(Some(clock.now_ms() + by.as_millis() as u64));
    }

    /// Answer the plugin's outbound HTTP requests (to origins its binding was granted) with
    /// `answer`; `Err(message)` is a failed connection. Set once, before the first call.
    pub fn answer_outbound(
        &self,
        answer: impl Fn(http::Request<Bytes>) -> Result<http::Response<Bytes>, String> + Send + Sync + 'static,
    ) {
        self.runtime.capabilities().outbound.fake(Box::new(answer)).expect("outbound answered once");
    }

    /// What the plugin published to its log sinks since the last call.
    pub fn published(&self) -> Vec<Published> {
        self.runtime.capabilities().log_sinks.take_captured()
    }

    /// Give the plugin these credentials (`credentials.by-key`, `by-app-code`): app id,
    /// access key, secret and AppCode, authorised for [`API_ID`].
    pub fn set_credentials(&self, apps: &[(&str, &str, &str, Option<&str>)]) {
        let mut store = CredentialStore::default();
        for (id, key, secret, code) in apps {
            let app = App {
                id: id.to_string(),
                secret: secret.to_string(),
                apis: vec![API_ID.into()],
                groups: vec![],
            };
            store.insert(key.to_string(), code.map(str::to_string), app);
        }
        self.runtime.capabilities().credentials.store(Arc::new(store));
    }
}

/// One configured use of a plugin, as on one API.
pub struct Binding<'p> {
    plugin: &'p Plugin,
    policy: WasmPolicy,
    namespace: String,
}

impl Binding<'_> {
    /// What the binding declared when its config was accepted.
    pub fn info(&self) -> &BindingInfo {
        self.policy.info()
    }

    pub fn on_request(&self, request: &TestRequest) -> Result<RequestAction, PolicyError> {
        self.plugin.tokio.block_on(self.policy.on_request(&request.view()))
    }

    pub fn on_response(
        &self,
        request: &TestRequest,
        response: &TestResponse,
    ) -> Result<ResponseAction, PolicyError> {
        self.plugin.tokio.block_on(self.policy.on_response(&request.view(), &response.view()))
    }

    pub fn on_log(&self, request: &TestRequest, response: &TestResponse) -> Result<(), PolicyError> {
        let entry = policy::LogView {
            request: request.view(),
            response: response.view(),
            start_time: SystemTime::now(),
            total_latency: response.latency,
            request_size: request.body.as_ref().map_or(0, |b| b.len() as u64),
            response_size: response.body.as_ref().map_or(0, |b| b.len() as u64),
            request_body_truncated: false,
            response_body_truncated: false,
        };
        self.plugin.tokio.block_on(self.policy.on_log(&entry))
    }

    /// The binding's counter `key` in its window at the plugin's clock (0 if never counted).
    pub fn counter(&self, key: &str) -> u64 {
        let caps = self.plugin.runtime.capabilities();
        caps.counters.count(&namespaced(&self.namespace, key), caps.clock.now_ms())
    }

    /// The binding's kv value at `key`.
    pub fn kv(&self, key: &str) -> Option<Vec<u8>> {
        self.plugin.runtime.capabilities().kv.get_space(&self.namespace)?.get(key)
    }

    /// The binding's gauge `name` (`metrics.set-gauge`), 0 if never set.
    pub fn gauge(&self, name: &str) -> i64 {
        let gauges = &self.plugin.runtime.capabilities().gauges.gauges;
        gauges.with_label_values(&[API_ID, &self.plugin.name, name]).get()
    }
}

/// A request as a binding sees it. Every field is filled; the runtime passes the plugin
/// only what its binding selected, as in the gateway.
#[derive(Clone)]
pub struct TestRequest {
    pub method: Method,
    pub scheme: &'static str,
    pub host: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub client_ip: IpAddr,
    pub identity: Identity,
    pub context: Vec<(String, String)>,
    pub path_params: Vec<(String, String)>,
    pub body: Option<Bytes>,
    route: RouteInfo,
}

impl TestRequest {
    pub fn new(method: Method, path_and_query: &str) -> TestRequest {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        TestRequest {
            method,
            scheme: "http",
            host: "api.example.com".into(),
            path: path.into(),
            query: query.into(),
            headers: HeaderMap::new(),
            client_ip: IpAddr::from([192, 0, 2, 1]),
            identity: Identity::default(),
            context: Vec::new(),
            path_params: Vec::new(),
            body: None,
            route: RouteInfo {
                api_id: API_ID.into(),
                group_id: "test-group".into(),
                environment: "RELEASE".into(),
            },
        }
    }

    pub fn get(path_and_query: &str) -> TestRequest {
        TestRequest::new(Method::GET, path_and_query)
    }

    pub fn post(path_and_query: &str, body: impl Into<Bytes>) -> TestRequest {
        TestRequest { body: Some(body.into()), ..TestRequest::new(Method::POST, path_and_query) }
    }

    /// Add a header line (names are lower-cased, as the gateway passes them).
    pub fn header(self, name: &str, value: &str) -> TestRequest {
        self.try_header(name, value).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::header`], or why `name: value` is not a header.
    pub fn try_header(mut self, name: &str, value: &str) -> Result<TestRequest, String> {
        let (name, value) = header_line(name, value)?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// What the gateway does with a binding's `continue` before the next policy and phase:
    /// headers, path, query, identity and context changed.
    pub fn apply(&mut self, changes: &RequestChanges) {
        changes.clone().apply_to(ChangeableRequest {
            headers: &mut self.headers,
            path: &mut self.path,
            query: &mut self.query,
            identity: &mut self.identity,
            context: &mut self.context,
        });
    }

    pub fn client_ip(mut self, ip: &str) -> TestRequest {
        self.client_ip = ip.parse().expect("an IP address");
        self
    }

    pub fn app_id(mut self, app: &str) -> TestRequest {
        self.identity.app_id = Some(app.into());
        self
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            request_id: "test-request",
            route: &self.route,
            method: &self.method,
            scheme: self.scheme,
            host: &self.host,
            path: &self.path,
            query: &self.query,
            path_params: &self.path_params,
            headers: &self.headers,
            client_ip: self.client_ip,
            identity: &self.identity,
            context: &self.context,
            body: self.body.as_deref(),
        }
    }
}

/// A response as a binding sees it (the backend's, by default a 200 after 5 ms).
#[derive(Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub outcome: BackendOutcome,
    pub latency: Duration,
    pub body: Option<Bytes>,
}

impl TestResponse {
    pub fn new(status: u16) -> TestResponse {
        TestResponse::try_new(status).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::new`], or why `status` is not a status code.
    pub fn try_new(status: u16) -> Result<TestResponse, String> {
        let status = StatusCode::from_u16(status).map_err(|_| format!("{status} is not a status code"))?;
        Ok(TestResponse {
            status,
            headers: HeaderMap::new(),
            outcome: BackendOutcome::Responded,
            latency: Duration::from_millis(5),
            body: None,
        })
    }

    /// The backend did not answer in time (the gateway answers 504).
    pub fn timed_out() -> TestResponse {
        TestResponse { outcome: BackendOutcome::TimedOut, ..TestResponse::new(504) }
    }

    pub fn header(self, name: &str, value: &str) -> TestResponse {
        self.try_header(name, value).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::header`], or why `name: value` is not a header.
    pub fn try_header(mut self, name: &str, value: &str) -> Result<TestResponse, String> {
        let (name, value) = header_line(name, value)?;
        self.headers.append(name, value);
        Ok(self)
    }

    fn view(&self) -> ResponseView<'_> {
        ResponseView {
            status: self.status,
            headers: &self.headers,
            outcome: self.outcome,
            backend_latency: self.latency,
            body: self.body.as_deref(),
        }
    }
}

/// A header line as the gateway passes it (lower-case name), or why it is not one.
fn header_line(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("`{name}` is not a header name"))?;
    let value = HeaderValue::from_str(value).map_err(|_| format!("{value:?} is not a header value"))?;
    Ok((name, value))
}

/// Reading actions in tests.
pub trait RequestActionExt {
    /// The changes of a `continue`; panics on a reply.
    fn changes(self) -> RequestChanges;
    /// The reply of a `respond`; panics on a `continue`.
    fn reply(self) -> Reply;
}

impl RequestActionExt for RequestAction {
    #[track_caller]
    fn changes(self) -> RequestChanges {
        match self {
            RequestAction::Continue(c) => c,
            RequestAction::Respond(r) => {
                panic!("expected the request to go on, got a {} reply: {:?}", r.status, r.body)
            }
        }
    }

    #[track_caller]
    fn reply(self) -> Reply {
        match self {
            RequestAction::Respond(r) => r,
            RequestAction::Continue(c) => panic!("expected a reply, the request went on with {c:?}"),
        }
    }
}

/// The value a list of header operations sets for `name` (`set`, `append`, `set-if-absent`),
/// as a test reads the headers a binding adds.
pub fn header_set<'a>(ops: &'a [HeaderOp], name: &str) -> Option<&'a str> {
    ops.iter().rev().find_map(|op| match op {
        HeaderOp::Set(n, v) | HeaderOp::Append(n, v) | HeaderOp::SetIfAbsent(n, v) if n.as_str() == name => {
            v.to_str().ok()
        }
        _ => None,
    })
}
