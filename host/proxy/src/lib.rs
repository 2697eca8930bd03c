//! The Wasmgate proxy core: listeners, routing, backends and the policy chain.
//!
//! This crate knows policies only through the [`policy::Policy`] trait; it does not depend
//! on wasmtime. The routing table and every API's policy chain form one immutable
//! [`Snapshot`], swapped atomically on reload; a request keeps the snapshot it started with.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod backend;
pub mod body;
pub mod debug;
pub mod error;
pub mod metrics;
pub mod params;
pub mod path;
pub mod pipeline;
pub mod policy;
pub mod router;
pub mod server;
pub mod tls;
pub mod trace;
pub mod traceparent;
pub mod upstream;

use arc_swap::ArcSwap;
use backend::Backend;
use policy::{BodyNeed, HeaderSelection, Policy, RouteInfo};
use router::Router;
use std::collections::HashMap;
use std::sync::Arc;

pub use error::GatewayError;

/// What a listener tells the pipeline about the connections it accepts.
#[derive(Debug, Clone, Default)]
pub struct ListenerSettings {
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Present on HTTPS listeners.
    pub tls: Option<ListenerTls>,
    pub limits: ListenerLimits,
}

/// What one client may hold of a listener (`listeners[].limits`).
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub header_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub http2_max_concurrent_streams: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 10_000,
            header_timeout: std::time::Duration::from_secs(60),
            idle_timeout: std::time::Duration::from_secs(75),
            http2_max_concurrent_streams: 128,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListenerTls {
    /// The certificate (by name) for handshakes that name no known domain.
    pub default_certificate: Option<String>,
}

/// One accepted connection, as the requests on it see it.
pub struct Connection {
    pub peer: std::net::SocketAddr,
    pub listener: Arc<ListenerSettings>,
    pub tls: Option<tls::TlsSession>,
    /// Set on the admin API's debug calls: the requests on it record what they did.
    pub trace: Option<Arc<trace::Trace>>,
}

impl Connection {
    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

impl ListenerSettings {
    /// The client's address: the peer's, unless the peer is a trusted proxy; then the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy itself (entries further
    /// left were written by whoever the first untrusted hop was, so they prove nothing).
    pub fn client_ip(&self, peer: std::net::IpAddr, headers: &http::HeaderMap) -> std::net::IpAddr {
        let trusted = |ip: &std::net::IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        let hops: Vec<std::net::IpAddr> = hops.filter_map(|h| h.trim().parse().ok()).collect();
        for hop in hops.into_iter().rev() {
            client = hop;
            if !trusted(&hop) {
                break;
            }
        }
        client
    }
}

/// What a failing binding does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Closed,
    Open,
}

pub struct Binding {
    pub policy: Arc<dyn Policy>,
    pub on_error: OnError,
    pub metrics: metrics::BindingMetrics,
}

/// An API's bindings in order, with what the chain as a whole needs worked out once.
pub struct PolicyChain {
    pub bindings: Vec<Binding>,
    pub request_body: BodyNeed,
    pub response_body: BodyNeed,
    pub has_response_phase: bool,
    pub has_log_phase: bool,
    /// The request headers response and log phases read; these are kept when the rest
    /// go to the backend.
    pub later_request_headers: HeaderSelection,
    /// Every binding's fixed response headers, in binding order.
    pub fixed_response_headers: Vec<policy::HeaderOp>,
}

impl PolicyChain {
    pub fn new(bindings: Vec<Binding>) -> Self {
        let mut chain = PolicyChain {
            bindings: Vec::new(),
            request_body: BodyNeed::None,
            response_body: BodyNeed::None,
            has_response_phase: false,
            has_log_phase: false,
            later_request_headers: HeaderSelection::None,
            fixed_response_headers: Vec::new(),
        };
        for b in &bindings {
            let info = b.policy.info();
            if info.phases.request || info.phases.log {
                chain.request_body = chain.request_body.max(info.request_body);
            }
            if info.phases.response || info.phases.log {
                chain.response_body = chain.response_body.max(info.response_body);
            }
            chain.fixed_response_headers.extend(info.fixed_response_headers.iter().cloned());
            chain.has_response_phase |= info.phases.response;
            chain.has_log_phase |= info.phases.log;
            if info.phases.response || info.phases.log {
                chain.later_request_headers = chain.later_request_headers.union(&info.request_headers);
            }
        }
        // A log phase reads the response body from the response phase's buffer.
        chain.has_response_phase |= chain.has_log_phase && chain.response_body != BodyNeed::None;
        chain.bindings = bindings;
        chain
    }
}

/// One published API, ready to serve.
pub struct Api {
    pub route: RouteInfo,
    pub backend: Backend,
    pub chain: PolicyChain,
    /// Checked after routing, before the policies.
    pub parameters: Vec<params::ParamRule>,
    /// Applied to the backend request.
    pub mapping: Vec<params::MapRule>,
    /// The group's custom error responses, if it has any.
    pub errors: Option<Arc<error::CustomErrors>>,
    pub metrics: metrics::ApiMetrics,
}

/// Everything a request needs to be routed and processed, built and validated as a whole.
pub struct Snapshot {
    /// One router per environment that has APIs.
    pub routers: HashMap<String, Router<Arc<Api>>>,
    /// Serves requests without `X-Stage`.
    pub default_environment: String,
    /// Certificates by domain, for HTTPS listeners.
    pub tls: tls::TlsStore,
    pub limits: RequestLimits,
    /// One access log event per request at this level; `None`: no access log.
    pub access_log: Option<tracing::Level>,
    /// Where the gateway's spans are exported, if anywhere.
    pub spans: Option<Arc<dyn access_log::SpanSink>>,
}

/// What a request may bring.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Header names and values, added up.
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub encoded_slashes: path::EncodedSlashes,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_header_bytes: 32 << 10,
            max_body_bytes: 12 << 20,
            encoded_slashes: path::EncodedSlashes::Reject,
        }
    }
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot {
            routers: HashMap::new(),
            default_environment: "RELEASE".into(),
            tls: tls::TlsStore::default(),
            limits: RequestLimits::default(),
            access_log: None,
            spans: None,
        }
    }

    /// The router of the environment a request names with `X-Stage`, else the default's.
    pub fn router(&self, headers: &http::HeaderMap) -> Option<&Router<Arc<Api>>> {
        let stage =
            headers.get(X_STAGE).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());
        self.routers.get(stage.unwrap_or(&self.default_environment))
    }
}

/// Names the environment a request is for, when not the default.
pub const X_STAGE: &str = "x-stage";

/// Shared by every connection: the current snapshot, and the client for backends a policy
/// names at request time (a circuit breaker's fallback).
pub struct ProxyState {
    pub snapshot: ArcSwap<Snapshot>,
    pub client: Arc<upstream::UpstreamClient>,
    /// Counts the requests no API matched.
    pub unmatched: metrics::ApiMetrics,
}

impl ProxyState {
    pub fn new(
        snapshot: Snapshot,
        client: Arc<upstream::UpstreamClient>,
        metrics: &metrics::Metrics,
    ) -> Self {
        ProxyState { snapshot: ArcSwap::from_pointee(snapshot), client, unmatched: metrics.unmatched() }
    }

    /// Make `snapshot` the one new requests see. Requests in flight keep theirs.
    pub fn swap(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_hop_behind_a_trusted_proxy() {
        let settings = ListenerSettings {
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.9, 203.0.113.5, 10.0.0.2".parse().unwrap());
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(settings.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.5"));
        // An untrusted peer's header is ignored.
        assert_eq!(settings.client_ip(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        // Only trusted hops, or no header: the left-most hop, or the peer.
        h.insert("x-forwarded-for", "10.0.0.3, 10.0.0.2".parse().unwrap());
        assert_eq!(settings.client_ip(ip("127.0.0.1"), &h), ip("10.0.0.3"));
        assert_eq!(settings.client_ip(ip("127.0.0.1"), &http::HeaderMap::new()), ip("127.0.0.1"));
    }
}
