//! Shared set-up for the benchmarks: load a built plugin into a one-binding pool.
#![forbid(unsafe_code)]

use http::{HeaderMap, HeaderValue, Method};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmgate_proxy::policy::{Identity, RequestView, RouteInfo};
use wasmgate_proxy::router::Router;
use wasmgate_runtime::{CallLimits, PluginRuntime, WasmPolicy};

/// Where `scripts/build-plugins` puts the components.
pub fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin")
}

/// `n` bindings of plugin `name` (a built-in, or a test fixture as `fixture:NAME`) with
/// `config` (JSON), configured on one instance.
pub fn bindings(runtime: &Arc<PluginRuntime>, name: &str, config: &str, n: usize) -> Vec<WasmPolicy> {
    let file = match name.strip_prefix("fixture:") {
        Some(f) => format!("wasmgate_fixture_{}.wasm", f.replace('-', "_")),
        None => format!("wasmgate_plugin_{}.wasm", name.replace('-', "_")),
    };
    bindings_of(runtime, &plugin_dir().join(file), name, config, n, 16 << 20)
}

/// `n` bindings of the component at `path` with `config`, each instance capped at
/// `memory` bytes.
pub fn bindings_of(
    runtime: &Arc<PluginRuntime>,
    path: &Path,
    name: &str,
    config: &str,
    n: usize,
    memory: usize,
) -> Vec<WasmPolicy> {
    let loaded = runtime.load(path).unwrap_or_else(|e| panic!("{e} (run scripts/build-plugins)"));
    let mut pool = runtime.pool_builder(name, &loaded, memory).expect("links");
    for i in 0..n {
        let limits = CallLimits {
            cpu: Duration::from_millis(50),
            wall: Duration::from_secs(30),
            kv: Default::default(),
        };
        pool.add(format!("bench:{name}#{i}"), "bench".into(), config.into(), limits);
    }
    pool.build().expect("instantiates").into_iter().map(|b| b.expect("config accepted")).collect()
}

/// A warm binding of built-in plugin `name` with `config` (JSON).
pub fn binding(runtime: &Arc<PluginRuntime>, name: &str, config: &str) -> WasmPolicy {
    bindings(runtime, name, config, 1).pop().expect("one binding")
}

/// What a benchmark request is made of (a `RequestView` borrows it all).
pub struct SampleRequest {
    pub route: RouteInfo,
    pub headers: HeaderMap,
    pub identity: Identity,
}

impl SampleRequest {
    /// `GET /users/42` on `api.example.com` with these headers.
    pub fn new(headers: &[(&'static str, &'static str)]) -> SampleRequest {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.insert(*n, HeaderValue::from_static(v));
        }
        let route =
            RouteInfo { api_id: "api".into(), group_id: "group".into(), environment: "RELEASE".into() };
        SampleRequest { route, headers: map, identity: Identity::default() }
    }

    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            request_id: "0123456789abcdef0123456789abcdef",
            route: &self.route,
            method: &Method::GET,
            scheme: "http",
            host: "api.example.com",
            path: "/users/42",
            query: "",
            path_params: &[],
            headers: &self.headers,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            identity: &self.identity,
            context: &[],
            body: None,
        }
    }
}

/// A router with `n` routes in the shapes APIs use: static, templated, catch-all, prefix.
pub fn router_with_routes(n: usize) -> Router<usize> {
    let mut r = Router::new();
    for i in 0..n {
        let (path, prefix) = match i % 4 {
            0 => (format!("/svc{i}/items"), false),
            1 => (format!("/svc{i}/items/{{id}}"), false),
            2 => (format!("/svc{i}/files/{{path+}}"), false),
            _ => (format!("/svc{i}"), true),
        };
        r.insert(&[], None, &path, prefix, i).expect("distinct routes");
    }
    r
}
