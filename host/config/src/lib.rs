//! Wasmgate's declarative configuration.
//!
//! The YAML file is read into the serde structs below (unknown fields are refused), then
//! [`GatewayConfig::validate`] checks what serde cannot: ids, ranges, URLs. Everything that
//! needs the proxy or the plugin runtime (path templates, plugin configs) is checked when the
//! gateway builds a snapshot from this config; errors there name the same places.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Built-in plugins bundled with the gateway; any other name must be in `plugins:`.
pub const BUILTIN_PLUGINS: &[&str] = &[
    "cors",
    "response-headers",
    "throttling",
    "request-throttling",
    "credential-quota",
    "app-auth",
    "access-control",
    "kafka-log",
    "circuit-breaker",
    "authorizer",
];

/// A config that could not be loaded: which file, where in it, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// A readable path to the offending item, e.g. ``group `demo` > api `hello` > policies[0]``.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.location.is_empty() {
            write!(f, ": {}", self.location)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The whole gateway configuration (one YAML file).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default = "default_listeners")]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// Custom plugins by name; the built-in ones need no entry.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSource>,
    /// Named policies, bound to APIs with `{policy: NAME}`. One named policy bound to several
    /// APIs is one binding: its state (counters, kv) is shared by those APIs.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyBinding>,
    /// Apps that authenticate to APIs (AK/SK, AppCode, Basic).
    #[serde(default)]
    pub credentials: Vec<Credential>,
    /// Server certificates for HTTPS listeners, bound to domains by name.
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    #[serde(default)]
    pub groups: Vec<ApiGroup>,
    /// Environments and their variables. The default one (`gateway.environment`, `RELEASE`)
    /// exists without being listed; list it to give it variables.
    #[serde(default)]
    pub environments: Vec<Environment>,
    /// Load-balance channels by name: a backend URL whose host is a channel's name goes to
    /// the channel's members (as with Kong's upstreams).
    #[serde(default)]
    pub channels: BTreeMap<String, Channel>,
}

/// Several upstream members behind one name, with weights, health checks and ejection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// 1 to 100 members.
    pub members: Vec<ChannelMember>,
    #[serde(default)]
    pub balance: Balance,
    /// For `consistent_hash`: the client's IP (`source_ip`, default) or a request header's
    /// value (`header`, named by `hash_on_header`; a request without it goes round robin).
    #[serde(default)]
    pub hash_on: HashOn,
    #[serde(default)]
    pub hash_on_header: Option<String>,
    /// Probes each member; an unhealthy member gets no requests until it is healthy again.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Takes a member out after consecutive failed requests (connection errors, timeouts,
    /// 502/503/504).
    #[serde(default)]
    pub passive: Option<PassiveCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMember {
    /// `host:port`.
    pub address: String,
    /// 1 to 100; requests are shared in proportion.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted round robin, interleaved.
    #[default]
    RoundRobin,
    /// The same key goes to the same member while it is available.
    ConsistentHash,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    #[default]
    SourceIp,
    Header,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "root_path")]
    pub path: String,
    /// Probe over HTTPS (trusting the system's CAs and `gateway.outbound_ca`).
    #[serde(default)]
    pub https: bool,
    #[serde(default = "default_probe_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_probe_timeout")]
    pub timeout_ms: u64,
    /// Consecutive good probes (2xx or 3xx) that bring a member back.
    #[serde(default = "two")]
    pub healthy_threshold: u32,
    /// Consecutive failed probes that take a member out.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
}

fn root_path() -> String {
    "/".into()
}
fn default_probe_interval() -> u64 {
    5_000
}
fn default_probe_timeout() -> u64 {
    1_000
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveCheck {
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    /// Without a health check, an ejected member comes back after this long; with one, when
    /// the probes find it healthy.
    #[serde(default = "default_eject")]
    pub eject_ms: u64,
}

fn five() -> u32 {
    5
}
fn default_eject() -> u64 {
    30_000
}

impl Channel {
    /// Errors name the field under `channels.NAME`.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |at: &str, m: String| Err((at.to_string(), m));
        if !(1..=100).contains(&self.members.len()) {
            return err(".members", format!("{} members; 1 to 100 are allowed", self.members.len()));
        }
        let mut seen = HashSet::new();
        for (i, m) in self.members.iter().enumerate() {
            let at = format!(".members[{i}]");
            match m.address.parse::<http::uri::Authority>() {
                Ok(a) if a.port_u16().is_some() && a.as_str() == m.address => {}
                _ => return err(&at, format!("`{}` is not host:port", m.address)),
            }
            if !seen.insert(m.address.as_str()) {
                return err(&at, format!("`{}` is listed twice", m.address));
            }
            if !(1..=100).contains(&m.weight) {
                return err(&format!("{at}.weight"), format!("{} is outside 1..=100", m.weight));
            }
        }
        match (self.hash_on, &self.hash_on_header) {
            (HashOn::Header, None) => return err(".hash_on_header", "`hash_on: header` needs it".into()),
            (HashOn::SourceIp, Some(_)) => {
                return err(".hash_on_header", "only with `hash_on: header`".into());
            }
            (HashOn::Header, Some(h)) if http::HeaderName::from_bytes(h.as_bytes()).is_err() => {
                return err(".hash_on_header", format!("`{h}` is not a header name"));
            }
            _ => {}
        }
        if let Some(h) = &self.health_check {
            if !h.path.starts_with('/') {
                return err(".health_check.path", format!("`{}` must start with /", h.path));
            }
            if !(100..=300_000).contains(&h.interval_ms) {
                return err(
                    ".health_check.interval_ms",
                    format!("{} is outside 100..=300000", h.interval_ms),
                );
            }
            if !(1..=60_000).contains(&h.timeout_ms) {
                return err(".health_check.timeout_ms", format!("{} is outside 1..=60000", h.timeout_ms));
            }
            for (name, n) in
                [("healthy_threshold", h.healthy_threshold), ("unhealthy_threshold", h.unhealthy_threshold)]
            {
                if !(1..=10).contains(&n) {
                    return err(&format!(".health_check.{name}"), format!("{n} is outside 1..=10"));
                }
            }
        }
        if let Some(p) = &self.passive {
            if !(1..=100).contains(&p.consecutive_failures) {
                return err(
                    ".passive.consecutive_failures",
                    format!("{} is outside 1..=100", p.consecutive_failures),
                );
            }
            if !(1..=3_600_000).contains(&p.eject_ms) {
                return err(".passive.eject_ms", format!("{} is outside 1..=3600000", p.eject_ms));
            }
        }
        Ok(())
    }
}

/// An environment APIs are published in; clients pick one other than the default with
/// `X-Stage: NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: String,
    /// Values for `#{NAME}` in backend URLs, backend paths and mock headers of the APIs
    /// served in this environment.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

/// One API as served in one environment, its variables filled in.
pub struct Deployment<'a> {
    pub group: &'a ApiGroup,
    pub environment: &'a str,
    pub api: Cow<'a, Api>,
}

/// A server certificate and its private key, in PEM files (re-read on every reload).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub name: String,
    /// The chain, leaf first. Relative paths are resolved against the config file's folder.
    pub cert: PathBuf,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key.
    pub key: PathBuf,
}

/// An app: its keys and the APIs (or whole groups) it may call.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Access key (AK).
    pub key: String,
    /// Secret key (SK). Never logged.
    pub secret: String,
    /// For simple authentication (`X-Apig-AppCode`). Never logged.
    #[serde(default)]
    pub app_code: Option<String>,
    /// API ids this app is authorised for.
    #[serde(default)]
    pub apis: Vec<String>,
    /// Group ids: every API of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .field("app_code", &self.app_code.as_ref().map(|_| "<redacted>"))
            .field("apis", &self.apis)
            .field("groups", &self.groups)
            .finish()
    }
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        address: SocketAddr::from(([127, 0, 0, 1], 8080)),
        trusted_proxies: Vec::new(),
        tls: None,
        limits: ListenerLimits::default(),
    }]
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: SocketAddr,
    /// Proxies in front of the gateway whose `X-Forwarded-For` is believed: when the peer is
    /// one of these, the client IP is the right-most address in `X-Forwarded-For` that is
    /// not. Empty (the default): the peer address is the client IP.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Present: the listener speaks HTTPS (TLS 1.2 and 1.3, HTTP/2 by ALPN), with the
    /// certificate of the domain the client names (SNI).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// What one client may hold of this listener; defaults like nginx's.
    #[serde(default)]
    pub limits: ListenerLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerLimits {
    /// Open connections; beyond it new ones wait in the kernel's backlog (nginx's
    /// `worker_connections`).
    pub max_connections: u32,
    /// Time for a request head to arrive, counted from when the connection is ready for
    /// one (nginx's `client_header_timeout`); on HTTP/1.1 that includes waiting idle for
    /// the next request, so a connection that sends nothing, or a byte now and then, is
    /// closed.
    pub header_timeout_ms: u64,
    /// A connection with no request in flight and no bytes either way for this long is
    /// closed (nginx's `keepalive_timeout`; HTTP/2 too).
    pub idle_timeout_ms: u64,
    /// Streams one HTTP/2 connection may have open (nginx's `http2_max_concurrent_streams`).
    pub http2_max_concurrent_streams: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 10_000,
            header_timeout_ms: 60_000,
            idle_timeout_ms: 75_000,
            http2_max_concurrent_streams: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Served to clients that name no domain, or one without a certificate of its own;
    /// unset, such handshakes are refused.
    #[serde(default)]
    pub default_certificate: Option<String>,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// How long SIGTERM waits for in-flight requests before closing connections.
    pub drain_timeout_ms: u64,
    /// Where compiled plugins are cached; default `$XDG_CACHE_HOME/wasmgate` or
    /// `~/.cache/wasmgate`.
    pub plugin_cache_dir: Option<PathBuf>,
    /// The default environment: where APIs that name none are published, and what requests
    /// without `X-Stage` are served from (`RELEASE` unless set).
    pub environment: String,
    /// Redis for cluster-wide counters (`consistency: cluster`, throttling's `counter`
    /// algorithm). Without it, every node counts alone.
    pub redis: Option<RedisSettings>,
    /// What each Kafka producer holds while its brokers are unreachable (oldest dropped
    /// first beyond it). Read at start-up.
    pub log_buffer: LogBuffer,
    /// PEM file of CAs plugins' outbound HTTPS trusts besides the system's. Read at start-up.
    pub outbound_ca: Option<PathBuf>,
    /// Shifts the clock plugins read (`wasmgate:plugin/clock`, counter windows), for drills
    /// and tests of day-long windows. Leave at 0 in production.
    pub clock_offset_ms: i64,
    /// Where `GET /metrics` (Prometheus) is served, without authentication; none by default
    /// (a gateway serving from the store also has it on the admin API). Read at start-up.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Record metrics (default); off saves their cost per request and plugin call.
    pub metrics_enabled: bool,
    /// Count each plugin's boundary crossings per phase (`wasmgate_plugin_crossings_total`),
    /// for measuring what a plugin costs; off by default (a hook call per crossing). Applies
    /// to plugins loaded from then on.
    pub plugin_stats: bool,
    /// One line per request on stderr (target `access`), off unless enabled.
    pub access_log: AccessLog,
    /// Export the gateway's spans over OTLP/HTTP (JSON); none by default. Read at start-up.
    pub otlp: Option<Otlp>,
    /// Requests whose header lines (names and values) add up to more get 431 `APIG.0209`.
    pub max_header_bytes: usize,
    /// Requests with a larger body get 413 `APIG.0210` (announced by `Content-Length`, or
    /// counted as a chunked body streams).
    pub max_body_bytes: u64,
    /// Paths with `%2F` or `%5C`: refused with 400 `APIG.0201` (default), or routed and
    /// forwarded as they are, never decoded (`keep`: for APIs whose ids hold slashes, behind
    /// backends that do not decode them into separators).
    pub encoded_slashes: EncodedSlashes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodedSlashes {
    #[default]
    Reject,
    Keep,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            drain_timeout_ms: 10_000,
            plugin_cache_dir: None,
            environment: "RELEASE".into(),
            redis: None,
            log_buffer: LogBuffer::default(),
            outbound_ca: None,
            clock_offset_ms: 0,
            metrics_listen: None,
            metrics_enabled: true,
            plugin_stats: false,
            access_log: AccessLog::default(),
            otlp: None,
            max_header_bytes: 32 << 10,
            max_body_bytes: 12 << 20,
            encoded_slashes: EncodedSlashes::Reject,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// The collector's traces URL, `http://collector:4318/v1/traces`.
    pub endpoint: String,
    /// Spans are sent in batches at least this often.
    #[serde(default = "default_otlp_flush")]
    pub flush_ms: u64,
}

fn default_otlp_flush() -> u64 {
    5_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    pub enabled: bool,
    /// The level the lines are logged at.
    pub level: LogLevel,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, the fields at the top level.
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// How long a counter check waits for Redis before counting locally instead.
    #[serde(default = "default_redis_timeout")]
    pub timeout_ms: u64,
}

fn default_redis_timeout() -> u64 {
    50
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogBuffer {
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer { max_messages: 10_000, max_bytes: 64 << 20 }
    }
}

/// A custom plugin: a Wasm component on disk (`path`), or one uploaded through the admin
/// API (`sha256`: kept in the store, copied by each gateway into its plugin cache).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSource {
    /// Relative paths are resolved against the config file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The uploaded component's SHA-256, 64 lower-case hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What the plugin's bindings may be granted (a custom plugin declares its own
    /// capabilities when its config is accepted; this is the operator's cap on them).
    /// Nothing by default.
    #[serde(default, skip_serializing_if = "PluginGrants::is_empty")]
    pub grants: PluginGrants,
}

/// The most a custom plugin's bindings may declare; anything beyond is refused at load,
/// naming it. Built-in plugins need none: what they reach is what their binding's config
/// (the operator's) says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginGrants {
    /// Origins (`scheme://host[:port]`) its outbound HTTP may be granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<String>,
    /// Kafka sinks it may publish to: every broker it names must be in one entry's
    /// `brokers`, and its topic among that entry's `topics`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_sinks: Vec<SinkGrant>,
    /// Origins a request's backend may be switched to (`changes.backend`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
}

impl PluginGrants {
    pub fn is_empty(&self) -> bool {
        self.outbound.is_empty() && self.log_sinks.is_empty() && self.backends.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkGrant {
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
}

/// A set of APIs served on its own domains.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiGroup {
    pub id: String,
    /// Host names this group answers on; empty or `*` answers on any host that no other
    /// group claims. Each is a name, or `{name, certificate, client_ca}` for HTTPS.
    #[serde(default, deserialize_with = "domains")]
    pub domains: Vec<Domain>,
    /// The group's own answers to gateway and policy errors, by error code (`APIG.0308`);
    /// errors not listed keep the default JSON.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_responses: BTreeMap<String, ErrorResponse>,
    #[serde(default)]
    pub apis: Vec<Api>,
}

/// A custom error response: `$context.error.code`, `$context.error.message` and
/// `$context.requestId` in the body are replaced by the error's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    /// Default: the error's own status.
    #[serde(default)]
    pub status: Option<u16>,
    pub body: String,
    #[serde(default = "json_type")]
    pub content_type: String,
}

fn json_type() -> String {
    "application/json".into()
}

/// A domain a group answers on, with its HTTPS settings: a host name, or
/// `{name, certificate, client_ca}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub name: String,
    /// The certificate (by name) served when a client asks for this domain by SNI.
    #[serde(default)]
    pub certificate: Option<String>,
    /// PEM file of the CAs whose client certificates this domain accepts: mutual TLS.
    /// Clients without a certificate signed by one of them are refused at the handshake.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// A bare name or the full record; an untagged enum would hide which field is wrong.
fn domains<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Domain>, D::Error> {
    struct OneDomain(Domain);
    impl<'de> Deserialize<'de> for OneDomain {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(DomainVisitor).map(OneDomain)
        }
    }
    struct DomainVisitor;
    impl<'de> serde::de::Visitor<'de> for DomainVisitor {
        type Value = Domain;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a host name, or {name, certificate, client_ca}")
        }
        fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Domain, E> {
            Ok(Domain { name: name.into(), certificate: None, client_ca: None })
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Domain, A::Error> {
            Domain::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    Ok(Vec::<OneDomain>::deserialize(d)?.into_iter().map(|d| d.0).collect())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// One method, a list, or `ANY`.
    #[serde(default)]
    pub method: Methods,
    /// `/users/{id}`, `/files/{path+}`.
    pub path: String,
    #[serde(default, rename = "match")]
    pub match_mode: MatchMode,
    /// Where this API is published; unset: the default environment only.
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    /// `{http: {...}}` or `{mock: {...}}`.
    #[serde(with = "serde_norway::with::singleton_map")]
    pub backend: Backend,
    /// Applied in order.
    #[serde(default)]
    pub policies: Vec<PolicyBinding>,
    /// Checked right after routing, before any policy: a request that breaks one gets 400
    /// `APIG.0207` naming the parameter; absent ones with a default get it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    /// What the backend request carries besides the client's: request parameters moved or
    /// renamed, constants and system values; applied in order after the request phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mapping: Vec<Mapping>,
}

/// A declared request parameter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    #[serde(rename = "in")]
    pub location: ParamLocation,
    #[serde(default, rename = "type")]
    pub kind: ParamKind,
    #[serde(default)]
    pub required: bool,
    #[serde(default, deserialize_with = "scalar", skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, rename = "enum", deserialize_with = "scalars", skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// Numbers: the value; strings: the length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// A regular expression the value must match (somewhere, unless anchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamLocation {
    Path,
    Query,
    Header,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
}

/// A parameter by location and name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParamRef {
    #[serde(rename = "in")]
    pub location: ParamLocation,
    pub name: String,
}

/// One backend parameter: `to` gets the value of exactly one of `from` (a request
/// parameter, moved), `constant` or `system`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub to: ParamRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ParamRef>,
    #[serde(default, deserialize_with = "scalar", skip_serializing_if = "Option::is_none")]
    pub constant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemParam>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemParam {
    ClientIp,
    RequestId,
    AppId,
    ApiId,
}

/// A YAML scalar (`20`, `true`, `abc`) as the string a request would carry.
fn scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| s.0))
}

fn scalars<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<Scalar>::deserialize(d)?.into_iter().map(|s| s.0).collect())
}

struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        Ok(Scalar(
            match Any::deserialize(d)
                .map_err(|_| serde::de::Error::custom("expected a string, number or boolean"))?
            {
                Any::S(s) => s,
                Any::I(i) => i.to_string(),
                Any::F(f) => f.to_string(),
                Any::B(b) => b.to_string(),
            },
        ))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Methods {
    One(String),
    List(Vec<String>),
}

impl Default for Methods {
    fn default() -> Self {
        Methods::One("ANY".into())
    }
}

impl Methods {
    /// The listed methods upper-cased; empty means any method.
    pub fn normalized(&self) -> Vec<String> {
        let list: Vec<&String> = match self {
            Methods::One(m) => vec![m],
            Methods::List(v) => v.iter().collect(),
        };
        let list: Vec<String> = list.into_iter().map(|m| m.trim().to_ascii_uppercase()).collect();
        if list.iter().any(|m| m == "ANY") { Vec::new() } else { list }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    #[default]
    Exact,
    Prefix,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Backend {
    Http(HttpBackend),
    Mock(MockBackend),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBackend {
    /// `http(s)://host:port[/base]`; a host that names a channel load-balances over its
    /// members.
    pub url: String,
    /// Backend path template (`/v2/items/{id}`); default: the request path appended to the
    /// URL's base path.
    #[serde(default)]
    pub path: Option<String>,
    /// The whole exchange with the backend, per attempt (1 ms to 60 s).
    #[serde(default = "default_backend_timeout")]
    pub timeout_ms: u64,
    /// Establishing the connection (TCP and TLS), per attempt.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// 0 to 10 more attempts, on another member when there is one, for idempotent methods
    /// (GET, HEAD, OPTIONS, PUT, DELETE) whose request body can be sent again, after a
    /// connection failure or a timeout.
    #[serde(default)]
    pub retries: u32,
    /// For `https://`: more CAs to trust (besides the system's and `gateway.outbound_ca`)
    /// and a client certificate to present.
    #[serde(default)]
    pub tls: Option<BackendTls>,
    /// Sign requests to this backend (SDK-HMAC-SHA256) so it can check they came through
    /// the gateway.
    #[serde(default)]
    pub signature_key: Option<SignatureKey>,
}

#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureKey {
    pub key: String,
    /// Never logged.
    pub secret: String,
}

impl fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureKey").field("key", &self.key).field("secret", &"<redacted>").finish()
    }
}

fn default_backend_timeout() -> u64 {
    5_000
}

fn default_connect_timeout() -> u64 {
    5_000
}

/// PEM files, re-read on every reload; relative paths are resolved against the config
/// file's folder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockBackend {
    #[serde(default = "default_mock_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn default_mock_status() -> u16 {
    200
}

/// One use of a plugin on one API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBinding {
    #[serde(default)]
    pub plugin: String,
    /// Bind the named policy from the top-level `policies:` instead (and set nothing else).
    /// After loading, a binding that named a policy carries that policy's fields too.
    #[serde(default)]
    pub policy: Option<String>,
    /// Handed to the plugin as JSON; the plugin validates it at load.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub limits: PluginLimits,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// What a request gets when this plugin fails (trap, deadline, memory cap).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Answer 500 with the gateway error code.
    #[default]
    Closed,
    /// Skip the plugin and go on.
    Open,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// CPU deadline per call (time running guest code).
    pub cpu_ms: u64,
    /// Linear memory cap per instance.
    pub memory_mib: u32,
    /// Wall-clock cap per call, time waiting on outbound HTTP included.
    pub wall_ms: u64,
    /// The binding's kv state on this node: bytes in all (keys, values and 64 bytes per
    /// entry), entries, and the largest value. Entries with a TTL are evicted (least
    /// recently used first) to make room; entries without one never are.
    pub kv_mib: u32,
    pub kv_entries: u32,
    pub kv_value_kib: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            cpu_ms: 50,
            memory_mib: 16,
            wall_ms: 30_000,
            kv_mib: 4,
            kv_entries: 10_000,
            kv_value_kib: 64,
        }
    }
}

/// Ids and names of everything the admin API addresses by URL (`/apis/ID`): 1 to 128 of
/// `A-Z a-z 0-9 . _ -`, starting with a letter or digit, so an id is always one clean path
/// segment (no `/`, `%`, `..` or spaces), in URLs, logs, metric labels and file names alike.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a valid id: 1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        ))
    }
}

/// How deep `{`/`[` collections may nest in a YAML document.
pub const MAX_YAML_NESTING: usize = 64;

/// Refuse a YAML document whose flow collections (`{`, `[`) nest deeper than
/// [`MAX_YAML_NESTING`] before it reaches the parser: libyaml's scanner takes time quadratic
/// in that depth (a 24 KB document of `{` took 30 s to refuse, found by fuzzing the OpenAPI
/// import), and no configuration or API description nests anywhere near it. Brackets in
/// quoted strings count too; a real document never has 64 unclosed ones.
pub fn check_yaml_nesting(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_YAML_NESTING {
                    let line = text[..i].matches('\n').count() + 1;
                    return Err(format!(
                        "collections nest deeper than {MAX_YAML_NESTING} levels (line {line})"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Nothing but blank lines, comments, document markers or a null.
fn is_empty_document(text: &str) -> bool {
    let mut content = text
        .lines()
        .map(str::trim)
        .filter(|l| !(l.is_empty() || l.starts_with('#') || *l == "---" || *l == "..."));
    matches!((content.next(), content.next()), (None, _) | (Some("~" | "null" | "Null" | "NULL"), None))
}

/// The parameter names in a path template: `{id}` and `{rest+}` (not `#{VARIABLE}`s).
fn template_names(template: &str) -> impl Iterator<Item = &str> {
    template.match_indices('{').filter_map(move |(at, _)| {
        if template[..at].ends_with('#') {
            return None;
        }
        let rest = &template[at + 1..];
        Some(rest[..rest.find('}')?].trim_end_matches('+'))
    })
}

/// A serde error's location as the other config errors name places: serde_norway starts
/// its message with the YAML path (`groups[0].apis[1].backend: unknown field ...`), which
/// becomes `group `g` > api `b` > backend` where the document gives those ids.
fn named_location(text: &str, message: &str) -> (String, String) {
    let unnamed = || (String::new(), message.to_string());
    let Some((path, rest)) = message.split_once(": ") else { return unnamed() };
    if path.is_empty() || path.contains(' ') {
        return unnamed();
    }
    let Ok(doc) = serde_norway::from_str::<serde_json::Value>(text) else { return unnamed() };
    let mut parts = Vec::new();
    let mut tail = path;
    let mut node = &doc;
    for (list, what) in [("groups", "group"), ("apis", "api")] {
        let Some(after) = tail.strip_prefix(list).and_then(|t| t.strip_prefix('[')) else { break };
        let Some((index, after)) = after.split_once(']') else { break };
        let Some(item) = index.parse::<usize>().ok().and_then(|i| node.get(list)?.get(i)) else { break };
        let Some(id) = item.get("id").and_then(serde_json::Value::as_str) else { break };
        parts.push(format!("{what} `{id}`"));
        node = item;
        tail = after.strip_prefix('.').unwrap_or(after);
    }
    if parts.is_empty() {
        return unnamed();
    }
    if !tail.is_empty() {
        parts.push(tail.to_string());
    }
    (parts.join(" > "), rest.to_string())
}

/// Bounds on limits, so one binding cannot reserve the whole machine.
pub const MAX_CPU_MS: u64 = 10_000;
pub const MAX_MEMORY_MIB: u32 = 256;
pub const MAX_WALL_MS: u64 = 120_000;
pub const MAX_KV_MIB: u32 = 1024;
pub const MAX_KV_ENTRIES: u32 = 10_000_000;

impl GatewayConfig {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.into(),
            location: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parse and validate config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config = Self::parse_declared(text, path)?;
        config.resolve_named_policies();
        Ok(config)
    }

    /// Like [`Self::parse`], but bindings that name a policy are left as written (not yet
    /// carrying the policy's fields): the form to store or export, which reads back the same.
    pub fn parse_declared(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // YAML reads an empty document as every field's default: a gateway with no APIs.
        // That is what a truncated or half-written file looks like, so it is refused rather
        // than served (an operator who wants no APIs writes `groups: []`).
        if is_empty_document(text) {
            return Err(ConfigError {
                file: path.into(),
                location: String::new(),
                message: "the document is empty (no listeners, groups or settings); \
                          write `groups: []` for a gateway with no APIs"
                    .into(),
            });
        }
        check_yaml_nesting(text).map_err(|message| ConfigError {
            file: path.into(),
            location: String::new(),
            message,
        })?;
        let mut config: GatewayConfig = serde_norway::from_str(text).map_err(|e| {
            let (location, message) = named_location(text, &e.to_string());
            ConfigError { file: path.into(), location, message }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        config.plugins.values_mut().filter_map(|source| source.path.as_mut()).for_each(anchor);
        config.gateway.plugin_cache_dir.as_mut().map(anchor);
        config.gateway.outbound_ca.as_mut().map(anchor);
        for api in config.groups.iter_mut().flat_map(|g| &mut g.apis) {
            if let Backend::Http(HttpBackend { tls: Some(tls), .. }) = &mut api.backend {
                [&mut tls.ca, &mut tls.client_cert, &mut tls.client_key]
                    .into_iter()
                    .flatten()
                    .for_each(anchor);
            }
        }
        for c in &mut config.certificates {
            anchor(&mut c.cert);
            anchor(&mut c.key);
        }
        config
            .groups
            .iter_mut()
            .flat_map(|g| &mut g.domains)
            .filter_map(|d| d.client_ca.as_mut())
            .for_each(anchor);
        config.validate().map_err(|(location, message)| ConfigError {
            file: path.into(),
            location,
            message,
        })?;
        Ok(config)
    }

    /// Every id and name a resource is addressed by, against [`check_id`].
    fn check_ids(&self) -> Result<(), (String, String)> {
        let mut ids: Vec<(String, &str)> = Vec::new();
        for (i, g) in self.groups.iter().enumerate() {
            ids.push((format!("groups[{i}].id"), &g.id));
            for (j, a) in g.apis.iter().enumerate() {
                ids.push((format!("group `{}` > apis[{j}].id", g.id), &a.id));
            }
        }
        ids.extend(
            self.credentials.iter().enumerate().map(|(i, c)| (format!("credentials[{i}].id"), c.id.as_str())),
        );
        ids.extend(
            self.certificates
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("certificates[{i}].name"), c.name.as_str())),
        );
        ids.extend(
            self.environments
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("environments[{i}].name"), e.name.as_str())),
        );
        ids.extend(self.channels.keys().map(|k| (format!("channels.{k}"), k.as_str())));
        ids.extend(self.policies.keys().map(|k| (format!("policies.{k}"), k.as_str())));
        ids.extend(self.plugins.keys().map(|k| (format!("plugins.{k}"), k.as_str())));
        ids.into_iter().try_for_each(|(at, id)| check_id(id).map_err(|m| (at, m)))
    }

    /// Checks serde cannot express. Returns (location, message) of the first problem.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |loc: String, msg: String| Err((loc, msg));
        self.check_ids()?;
        if self.listeners.is_empty() {
            return err("listeners".into(), "at least one listener is needed".into());
        }
        let mut addrs = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            // Port 0 asks the OS for a free port each time, so it can repeat.
            if l.address.port() != 0 && !addrs.insert(l.address) {
                return err(format!("listeners[{i}]"), format!("{} is listed twice", l.address));
            }
            let m = &l.limits;
            let ranges = [
                ("max_connections", m.max_connections as u64, 1, 1_000_000),
                ("header_timeout_ms", m.header_timeout_ms, 100, 3_600_000),
                ("idle_timeout_ms", m.idle_timeout_ms, 100, 86_400_000),
                ("http2_max_concurrent_streams", m.http2_max_concurrent_streams as u64, 1, 10_000),
            ];
            for (field, value, min, max) in ranges {
                if !(min..=max).contains(&value) {
                    return err(
                        format!("listeners[{i}].limits.{field}"),
                        format!("{value} is outside {min}..={max}"),
                    );
                }
            }
        }
        for (name, source) in &self.plugins {
            if BUILTIN_PLUGINS.contains(&name.as_str()) {
                return err(format!("plugins.{name}"), "this name belongs to a built-in plugin".into());
            }
            match (&source.path, &source.sha256) {
                (Some(_), None) => {}
                (None, Some(h))
                    if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {}
                (None, Some(h)) => {
                    return err(
                        format!("plugins.{name}.sha256"),
                        format!("`{h}` is not 64 lower-case hex digits"),
                    );
                }
                _ => {
                    let message =
                        "give exactly one of `path` (a component file) or `sha256` (an uploaded component)";
                    return err(format!("plugins.{name}"), message.into());
                }
            }
        }
        if let Some(o) = &self.gateway.otlp {
            if !(o.endpoint.starts_with("http://") || o.endpoint.starts_with("https://")) {
                return err(
                    "gateway.otlp.endpoint".into(),
                    format!("`{}` is not an http(s):// URL", o.endpoint),
                );
            }
            if !(10..=60_000).contains(&o.flush_ms) {
                return err("gateway.otlp.flush_ms".into(), format!("{} is outside 10..=60000", o.flush_ms));
            }
        }
        if !(1024..=1 << 20).contains(&self.gateway.max_header_bytes) {
            return err(
                "gateway.max_header_bytes".into(),
                format!("{} is outside 1024..=1048576", self.gateway.max_header_bytes),
            );
        }
        if !(1..=1 << 30).contains(&self.gateway.max_body_bytes) {
            return err(
                "gateway.max_body_bytes".into(),
                format!("{} is outside 1..=1073741824", self.gateway.max_body_bytes),
            );
        }
        if let Some(r) = &self.gateway.redis {
            if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
                return err("gateway.redis.url".into(), format!("`{}` is not a redis:// URL", r.url));
            }
            if !(1..=10_000).contains(&r.timeout_ms) {
                return err(
                    "gateway.redis.timeout_ms".into(),
                    format!("{} is outside 1..=10000", r.timeout_ms),
                );
            }
        }
        let b = self.gateway.log_buffer;
        if b.max_messages == 0 || b.max_bytes < 4096 {
            return err(
                "gateway.log_buffer".into(),
                "max_messages must be at least 1 and max_bytes at least 4096".into(),
            );
        }
        let mut cert_names = HashSet::new();
        for (i, c) in self.certificates.iter().enumerate() {
            if c.name.trim().is_empty() || !cert_names.insert(c.name.as_str()) {
                return err(
                    format!("certificates[{i}]"),
                    format!("the name `{}` is empty or used twice", c.name),
                );
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(c) = l.tls.as_ref().and_then(|t| t.default_certificate.as_ref())
                && !cert_names.contains(c.as_str())
            {
                return err(
                    format!("listeners[{i}].tls.default_certificate"),
                    format!("no certificate is named `{c}`"),
                );
            }
        }
        let mut tls_domains: HashMap<String, &Domain> = HashMap::new();
        let mut group_ids = HashSet::new();
        let mut api_ids = HashSet::new();
        let mut served = HashSet::new();
        for group in &self.groups {
            let gloc = format!("group `{}`", group.id);
            if !group_ids.insert(group.id.as_str()) {
                return err(gloc, "group id is used twice".into());
            }
            for (code, r) in &group.error_responses {
                let eloc = format!("{gloc} > error_responses.{code}");
                let well_formed = code
                    .strip_prefix("APIG.")
                    .is_some_and(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()));
                if !well_formed {
                    return err(eloc, "not an error code like APIG.0308".into());
                }
                if r.status.is_some_and(|s| !(200..=599).contains(&s)) {
                    return err(format!("{eloc}.status"), "must be 200..=599".into());
                }
                if http::HeaderValue::from_str(&r.content_type).is_err() {
                    return err(format!("{eloc}.content_type"), "not a header value".into());
                }
            }
            for (i, d) in group.domains.iter().enumerate() {
                let dloc = format!("{gloc} > domains[{i}]");
                let name = &d.name;
                if name != "*" && (name.is_empty() || name.contains(['/', ' ', ':'])) {
                    return err(dloc, format!("`{name}` is not a host name"));
                }
                if let Some(c) = &d.certificate {
                    if name == "*" {
                        return err(dloc, "a certificate is bound to a host name, not to `*`".into());
                    }
                    if !cert_names.contains(c.as_str()) {
                        return err(
                            format!("{dloc} > certificate"),
                            format!("no certificate is named `{c}`"),
                        );
                    }
                    if let Some(other) = tls_domains.insert(name.to_ascii_lowercase(), d)
                        && (&other.certificate, &other.client_ca) != (&d.certificate, &d.client_ca)
                    {
                        return err(dloc, format!("`{name}` is bound with other TLS settings elsewhere"));
                    }
                } else if d.client_ca.is_some() {
                    return err(format!("{dloc} > client_ca"), "mutual TLS needs a `certificate` too".into());
                }
            }
            for api in &group.apis {
                let aloc = format!("{gloc} > api `{}`", api.id);
                // The same API may be listed once per environment (a store serves each
                // environment's published version), never twice in one.
                let default = std::slice::from_ref(&self.gateway.environment);
                for env in api.environments.as_deref().unwrap_or(default) {
                    if !served.insert((api.id.as_str(), env.as_str())) {
                        return err(
                            aloc,
                            format!(
                                "api id is used twice in environment `{env}` (ids are unique across groups)"
                            ),
                        );
                    }
                }
                api_ids.insert(api.id.as_str());
                for (i, b) in api.policies.iter().enumerate() {
                    match &b.policy {
                        Some(name) => {
                            let ploc = format!("{aloc} > policies[{i}] (policy {name})");
                            if !self.policies.contains_key(name) {
                                return err(ploc, format!("unknown policy `{name}`: not under `policies:`"));
                            }
                            let default = PolicyBinding { policy: Some(name.clone()), ..Default::default() };
                            if b.plugin != default.plugin
                                || b.config != default.config
                                || b.on_error != default.on_error
                                || b.limits != default.limits
                            {
                                return err(
                                    ploc,
                                    "a binding that names a policy sets nothing else: plugin, config, on_error \
                                     and limits belong to the named policy"
                                        .into(),
                                );
                            }
                        }
                        None => self.check_binding(b, &format!("{aloc} > policies[{i}] ({})", b.plugin))?,
                    }
                }
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(tls) = &l.tls
                && tls.default_certificate.is_none()
                && tls_domains.is_empty()
            {
                return err(
                    format!("listeners[{i}].tls"),
                    "no domain has a `certificate` and no `default_certificate` is set: \
                     this HTTPS listener could not complete a handshake"
                        .into(),
                );
            }
        }
        let (mut ids, mut keys, mut codes) = (HashSet::new(), HashSet::new(), HashSet::new());
        for (i, c) in self.credentials.iter().enumerate() {
            let cloc = format!("credentials[{i}] ({})", c.id);
            if c.id.is_empty() || !ids.insert(c.id.as_str()) {
                return err(cloc, "the id is empty or used twice".into());
            }
            if c.key.is_empty() || !keys.insert(c.key.as_str()) {
                return err(format!("{cloc} > key"), "empty or used by another credential".into());
            }
            if c.secret.len() < 16 {
                return err(format!("{cloc} > secret"), "must be at least 16 characters".into());
            }
            if let Some(code) = &c.app_code
                && (code.len() < 16 || !codes.insert(code.as_str()))
            {
                return err(format!("{cloc} > app_code"), "shorter than 16 characters or used twice".into());
            }
            for a in &c.apis {
                if !api_ids.contains(a.as_str()) {
                    return err(format!("{cloc} > apis"), format!("no API has the id `{a}`"));
                }
            }
            for g in &c.groups {
                if !group_ids.contains(g.as_str()) {
                    return err(format!("{cloc} > groups"), format!("no group has the id `{g}`"));
                }
            }
        }
        for (name, c) in &self.channels {
            c.validate().map_err(|(at, m)| (format!("channels.{name}{at}"), m))?;
        }
        for (name, b) in &self.policies {
            let ploc = format!("policies.{name} ({})", b.plugin);
            if b.policy.is_some() {
                return err(ploc, "a named policy cannot name another policy".into());
            }
            self.check_binding(b, &ploc)?;
        }
        let mut env_names = HashSet::new();
        for (i, e) in self.environments.iter().enumerate() {
            let eloc = format!("environments[{i}]");
            if !is_name(&e.name) || !env_names.insert(e.name.as_str()) {
                return err(
                    eloc,
                    format!("`{}` is empty, used twice, or not made of A-Z a-z 0-9 _ -", e.name),
                );
            }
            if let Some(v) = e.variables.keys().find(|v| !is_name(v)) {
                return err(
                    format!("{eloc} ({}) > variables", e.name),
                    format!("`{v}` is not made of A-Z a-z 0-9 _ -"),
                );
            }
        }
        // Every API resolves in every environment it is published in, and is valid there
        // (a backend URL may be all variables until then).
        for d in self.deployments()? {
            let aloc = format!("group `{}` > api `{}`", d.group.id, d.api.id);
            d.api.validate().map_err(|(field, msg)| (format!("{aloc} > {field}"), msg))?;
        }
        Ok(())
    }

    /// Every API in every environment it is published in, with that environment's variables
    /// filled in; in config order, environments in the order each API lists them.
    pub fn deployments(&self) -> Result<Vec<Deployment<'_>>, (String, String)> {
        let default = std::slice::from_ref(&self.gateway.environment);
        let mut out = Vec::new();
        for group in &self.groups {
            for api in &group.apis {
                let aloc = format!("group `{}` > api `{}`", group.id, api.id);
                for env in api.environments.as_deref().unwrap_or(default) {
                    let variables = self.environments.iter().find(|e| e.name == *env).map(|e| &e.variables);
                    if variables.is_none() && *env != self.gateway.environment {
                        return Err((
                            format!("{aloc} > environments"),
                            format!("no environment `{env}`: list it under `environments:`"),
                        ));
                    }
                    let api =
                        api.in_environment(env, variables).map_err(|(f, m)| (format!("{aloc} > {f}"), m))?;
                    out.push(Deployment { group, environment: env, api });
                }
            }
        }
        Ok(out)
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `text` with each `#{NAME}` replaced by the variable's value.
fn substitute(text: &str, env: &str, variables: Option<&BTreeMap<String, String>>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("#{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find('}') else {
            return Err(format!("`{text}`: `#{{` without its `}}`"));
        };
        let name = &rest[start + 2..start + 2 + len];
        match variables.and_then(|v| v.get(name)) {
            Some(value) => out.push_str(value),
            None => return Err(format!("variable `{name}` is not set in environment `{env}`")),
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

impl GatewayConfig {
    /// A binding's plugin is known and its limits are in range.
    fn check_binding(&self, b: &PolicyBinding, ploc: &str) -> Result<(), (String, String)> {
        if !BUILTIN_PLUGINS.contains(&b.plugin.as_str()) && !self.plugins.contains_key(&b.plugin) {
            return Err((
                ploc.to_string(),
                format!(
                    "unknown plugin `{}`: not built in ({}) and not listed under `plugins:`",
                    b.plugin,
                    BUILTIN_PLUGINS.join(", ")
                ),
            ));
        }
        let l = b.limits;
        if !(1..=MAX_CPU_MS).contains(&l.cpu_ms) {
            return Err((
                format!("{ploc} > limits.cpu_ms"),
                format!("{} is outside 1..={MAX_CPU_MS}", l.cpu_ms),
            ));
        }
        if !(l.cpu_ms..=MAX_WALL_MS).contains(&l.wall_ms) {
            return Err((
                format!("{ploc} > limits.wall_ms"),
                format!("{} is outside cpu_ms..={MAX_WALL_MS} ({}..={MAX_WALL_MS})", l.wall_ms, l.cpu_ms),
            ));
        }
        if !(1..=MAX_MEMORY_MIB).contains(&l.memory_mib) {
            return Err((
                format!("{ploc} > limits.memory_mib"),
                format!("{} is outside 1..={MAX_MEMORY_MIB}", l.memory_mib),
            ));
        }
        let kv = [
            ("kv_mib", l.kv_mib, MAX_KV_MIB),
            ("kv_entries", l.kv_entries, MAX_KV_ENTRIES),
            ("kv_value_kib", l.kv_value_kib, l.kv_mib.saturating_mul(1024)),
        ];
        for (field, value, max) in kv {
            if !(1..=max).contains(&value) {
                return Err((format!("{ploc} > limits.{field}"), format!("{value} is outside 1..={max}")));
            }
        }
        Ok(())
    }

    /// Give every binding that names a policy that policy's plugin, config and settings.
    fn resolve_named_policies(&mut self) {
        for group in &mut self.groups {
            for api in &mut group.apis {
                for b in &mut api.policies {
                    if let Some(name) = b.policy.take() {
                        *b = PolicyBinding { policy: Some(name.clone()), ..self.policies[&name].clone() };
                    }
                }
            }
        }
    }
}

impl Default for PolicyBinding {
    fn default() -> Self {
        PolicyBinding {
            plugin: String::new(),
            policy: None,
            config: empty_object(),
            on_error: OnError::default(),
            limits: PluginLimits::default(),
        }
    }
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl Api {
    /// This API with `#{NAME}` in its backend URL, backend path and mock headers replaced by
    /// the environment's variables (borrowed when there is nothing to replace). Errors name
    /// the field.
    fn in_environment(
        &self,
        env: &str,
        variables: Option<&BTreeMap<String, String>>,
    ) -> Result<Cow<'_, Api>, (String, String)> {
        let uses = |t: &str| t.contains("#{");
        let needs = match &self.backend {
            Backend::Http(h) => uses(&h.url) || h.path.as_deref().is_some_and(uses),
            Backend::Mock(m) => m.headers.values().any(|v| uses(v)),
        };
        if !needs {
            return Ok(Cow::Borrowed(self));
        }
        let mut api = self.clone();
        let fill = |field: &str, t: &mut String| {
            *t = substitute(t, env, variables).map_err(|m| (field.to_string(), m))?;
            Ok::<_, (String, String)>(())
        };
        match &mut api.backend {
            Backend::Http(h) => {
                fill("backend.http.url", &mut h.url)?;
                if let Some(p) = &mut h.path {
                    fill("backend.http.path", p)?;
                }
            }
            Backend::Mock(m) => {
                for (name, v) in &mut m.headers {
                    fill(&format!("backend.mock.headers.{name}"), v)?;
                }
            }
        }
        Ok(Cow::Owned(api))
    }

    /// Declared parameters and the mapping: names valid and unique per place, path
    /// parameters in the path, one source per mapping. (Patterns and defaults are checked
    /// when the snapshot is built, by the code that checks requests.)
    fn validate_parameters(&self) -> Result<(), (String, String)> {
        let header_ok = |n: &str| http::HeaderName::from_bytes(n.as_bytes()).is_ok();
        if self.parameters.len() > 50 {
            return Err(("parameters".into(), format!("{} parameters; at most 50", self.parameters.len())));
        }
        let mut seen = HashSet::new();
        for (i, p) in self.parameters.iter().enumerate() {
            let at = format!("parameters[{i}] ({})", p.name);
            if p.name.is_empty() || !seen.insert((p.location, p.name.to_ascii_lowercase())) {
                return Err((at, "the name is empty or declared twice in the same place".into()));
            }
            if p.location == ParamLocation::Header && !header_ok(&p.name) {
                return Err((at, "not a header name".into()));
            }
            if p.location == ParamLocation::Path && !template_names(&self.path).any(|n| n == p.name) {
                return Err((at, format!("the path `{}` has no {{{}}}", self.path, p.name)));
            }
            if let (Some(min), Some(max)) = (p.min, p.max)
                && min > max
            {
                return Err((at, format!("min {min} is more than max {max}")));
            }
        }
        for (i, m) in self.mapping.iter().enumerate() {
            let at = format!("mapping[{i}]");
            let sources = usize::from(m.from.is_some())
                + usize::from(m.constant.is_some())
                + usize::from(m.system.is_some());
            if sources != 1 {
                return Err((at, "give exactly one of `from`, `constant` or `system`".into()));
            }
            for (what, r) in [("to", Some(&m.to)), ("from", m.from.as_ref())] {
                if let Some(r) = r
                    && (r.name.is_empty() || (r.location == ParamLocation::Header && !header_ok(&r.name)))
                {
                    return Err((
                        format!("{at}.{what}"),
                        format!("`{}` is not a {:?} parameter name", r.name, r.location).to_lowercase(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.validate_parameters()?;
        for m in self.method.normalized() {
            if !METHODS.contains(&m.as_str()) {
                return Err(("method".into(), format!("`{m}` is not one of ANY, {}", METHODS.join(", "))));
            }
        }
        if !self.path.starts_with('/') {
            return Err(("path".into(), format!("`{}` must start with /", self.path)));
        }
        match &self.backend {
            Backend::Http(h) => {
                let uri: http::Uri = h
                    .url
                    .parse()
                    .map_err(|e| ("backend.http.url".to_string(), format!("`{}`: {e}", h.url)))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                    return Err((
                        "backend.http.url".into(),
                        format!("`{}` must be an http(s)://host:port URL", h.url),
                    ));
                }
                if !(1..=60_000).contains(&h.connect_timeout_ms) {
                    return Err((
                        "backend.http.connect_timeout_ms".into(),
                        format!("{} is outside 1..=60000 ms", h.connect_timeout_ms),
                    ));
                }
                if h.retries > 10 {
                    return Err(("backend.http.retries".into(), format!("{} is more than 10", h.retries)));
                }
                if let Some(tls) = &h.tls {
                    if uri.scheme_str() != Some("https") {
                        return Err(("backend.http.tls".into(), "only for an https:// URL".into()));
                    }
                    if tls.client_cert.is_some() != tls.client_key.is_some() {
                        return Err((
                            "backend.http.tls".into(),
                            "`client_cert` and `client_key` go together".into(),
                        ));
                    }
                }
                if uri.query().is_some() {
                    return Err(("backend.http.url".into(), "must not have a query string".into()));
                }
                if !(1..=60_000).contains(&h.timeout_ms) {
                    return Err((
                        "backend.http.timeout_ms".into(),
                        format!("{} is outside 1..=60000 ms", h.timeout_ms),
                    ));
                }
                if let Some(sk) = &h.signature_key
                    && (sk.key.is_empty() || sk.secret.len() < 16)
                {
                    return Err((
                        "backend.http.signature_key".into(),
                        "needs a key and a secret of at least 16 characters".into(),
                    ));
                }
                if let Some(p) = &h.path {
                    if !p.starts_with('/') {
                        return Err(("backend.http.path".into(), format!("`{p}` must start with /")));
                    }
                    // A name nothing fills would become empty at run time, silently.
                    let mapped = |name: &str| {
                        self.mapping.iter().any(|m| m.to.location == ParamLocation::Path && m.to.name == name)
                    };
                    if let Some(name) =
                        template_names(p).find(|n| !template_names(&self.path).any(|c| c == *n) && !mapped(n))
                    {
                        return Err((
                            "backend.http.path".into(),
                            format!(
                                "`{p}` names {{{name}}}, which the API's path `{}` does not capture and no \
                                 mapping sets",
                                self.path
                            ),
                        ));
                    }
                }
            }
            Backend::Mock(m) => {
                if !(100..=599).contains(&m.status) {
                    return Err((
                        "backend.mock.status".into(),
                        format!("{} is not an HTTP status", m.status),
                    ));
                }
                for name in m.headers.keys() {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err((
                            "backend.mock.headers".into(),
                            format!("`{name}` is not a header name"),
                        ));
                    }
                }
                for (name, value) in &m.headers {
                    if http::HeaderValue::from_str(value).is_err() {
                        return Err((
                            format!("backend.mock.headers.{name}"),
                            "is not a valid header value".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::parse(yaml, Path::new("/etc/wasmgate/test.yaml"))
    }

    const API: &str = "groups:\n- id: g\n  apis:\n  - id: a\n    path: /x\n    backend: {mock: {body: hi}}\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(API).unwrap();
        assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:8080");
        let api = &c.groups[0].apis[0];
        assert_eq!(api.method.normalized(), Vec::<String>::new());
        assert_eq!(api.match_mode, MatchMode::Exact);
        assert!(matches!(&api.backend, Backend::Mock(m) if m.status == 200 && m.body == "hi"));
    }

    #[test]
    fn an_empty_document_is_refused_and_an_explicitly_empty_one_is_not() {
        for text in ["", "  \n\n", "# all commented out\n# groups: []\n", "---\n", "---\n~\n...\n", "null"] {
            let e = parse(text).expect_err(text);
            assert!(e.message.contains("the document is empty"), "{text:?}: {e}");
        }
        assert!(parse("groups: []\n").unwrap().groups.is_empty());
        assert!(parse("{}").is_ok());
    }

    #[test]
    fn deeply_nested_documents_are_refused_before_the_parser_sees_them() {
        let started = std::time::Instant::now();
        let e = parse(&format!("groups: {}", "{".repeat(20_000))).unwrap_err();
        assert!(e.message.contains("nest deeper than 64 levels (line 1)"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
        let nested = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(check_yaml_nesting(&nested).is_ok());
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let e = parse(&API.replace("path: /x", "path: /x\n    pth: /y")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/etc/wasmgate/test.yaml: "), "{msg}");
        assert!(msg.contains("group `g` > api `a`: unknown field `pth`"), "{msg}");
        assert!(msg.contains(" at line 6 column 5"), "the YAML position stays: {msg}");
        // Without ids to name them by, the index path stays.
        let e = parse("groups:\n- apis:\n  - {path: /x}\n").unwrap_err().to_string();
        assert!(e.contains("groups[0]"), "{e}");
        let e = parse(&API.replace("backend: {mock: {body: hi}}", "backend: {mock: {bdy: hi}}")).unwrap_err();
        assert!(e.to_string().contains("group `g` > api `a` > backend.mock: unknown field `bdy`"), "{e}");
    }

    #[test]
    fn unknown_plugin_names_api_and_binding() {
        let e = parse(&format!("{API}    policies:\n    - plugin: nope\n")).unwrap_err();
        assert_eq!(e.location, "group `g` > api `a` > policies[0] (nope)");
        assert!(e.message.contains("unknown plugin `nope`"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let cases = [
            (
                API.replace("{mock: {body: hi}}", "{http: {url: 'http://h:1', timeout_ms: 0}}"),
                "backend.http.timeout_ms",
            ),
            (API.replace("{mock: {body: hi}}", "{http: {url: 'ftp://h:1'}}"), "backend.http.url"),
            (
                API.replace("{mock: {body: hi}}", "{http: {url: 'http://h:1', retries: 11}}"),
                "backend.http.retries",
            ),
            (
                API.replace("{mock: {body: hi}}", "{http: {url: 'http://h:1', connect_timeout_ms: 0}}"),
                "backend.http.connect_timeout_ms",
            ),
            (
                API.replace("{mock: {body: hi}}", "{http: {url: 'http://h:1', tls: {ca: c.pem}}}"),
                "backend.http.tls",
            ),
            (
                API.replace("{mock: {body: hi}}", "{http: {url: 'https://h:1', tls: {client_cert: c.pem}}}"),
                "backend.http.tls",
            ),
            (format!("channels: {{c: {{members: []}}}}\n{API}"), "channels.c.members"),
            (format!("channels: {{c: {{members: [{{address: 'h'}}]}}}}\n{API}"), "channels.c.members[0]"),
            (
                format!("channels: {{c: {{members: [{{address: 'h:1', weight: 0}}]}}}}\n{API}"),
                "channels.c.members[0].weight",
            ),
            (
                format!(
                    "channels: {{c: {{members: [{{address: 'h:1'}}], health_check: {{interval_ms: 5}}}}}}\n{API}"
                ),
                "channels.c.health_check.interval_ms",
            ),
            (
                format!(
                    "channels: {{c: {{members: [{{address: 'h:1'}}], hash_on: header, hash_on_header: 'a b'}}}}\n{API}"
                ),
                "channels.c.hash_on_header",
            ),
            (API.replace("{mock: {body: hi}}", "{mock: {status: 700}}"), "backend.mock.status"),
            (API.replace("path: /x", "path: x"), "path"),
            (API.replace("path: /x", "path: /x\n    method: FETCH"), "method"),
            (
                format!("{API}    policies:\n    - plugin: cors\n      limits: {{cpu_ms: 0}}\n"),
                "limits.cpu_ms",
            ),
            (
                format!("{API}    policies:\n    - plugin: cors\n      limits: {{memory_mib: 4096}}\n"),
                "limits.memory_mib",
            ),
            (
                format!("{API}    policies:\n    - plugin: cors\n      limits: {{kv_mib: 0}}\n"),
                "limits.kv_mib",
            ),
            (
                format!("{API}    policies:\n    - plugin: cors\n      limits: {{kv_entries: 0}}\n"),
                "limits.kv_entries",
            ),
            (
                format!(
                    "{API}    policies:\n    - plugin: cors\n      limits: {{kv_mib: 1, kv_value_kib: 2048}}\n"
                ),
                "limits.kv_value_kib",
            ),
        ];
        for (yaml, field) in cases {
            let e = parse(&yaml).unwrap_err();
            assert!(e.location.ends_with(field), "{field}: {e}");
        }
    }

    #[test]
    fn ids_are_one_clean_path_segment() {
        for good in ["a", "get-user", "v1.2_beta", "RELEASE", &"x".repeat(128)] {
            assert_eq!(check_id(good), Ok(()), "{good}");
        }
        for bad in ["", "..%2f..%2fetc", "../x", "..", ".hidden", "-x", "a b", "a/b", "é", &"x".repeat(129)]
        {
            assert!(check_id(bad).unwrap_err().contains("is not a valid id"), "{bad}");
        }
        let e = parse(&API.replace("id: a", "id: '..%2f..%2fetc'")).unwrap_err();
        assert_eq!(e.location, "group `g` > apis[0].id");
        let e = parse(&format!("channels: {{'a b': {{members: [{{address: 'h:1'}}]}}}}\n{API}")).unwrap_err();
        assert_eq!(e.location, "channels.a b");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let yaml = format!("{API}  - id: a\n    path: /y\n    backend: {{mock: {{}}}}\n");
        assert!(parse(&yaml).unwrap_err().message.contains("used twice"));
    }

    #[test]
    fn named_policies_resolve_into_the_bindings_that_name_them() {
        let named = "policies:\n  slow: {plugin: cors, config: {max_age: 5}, limits: {cpu_ms: 7}}\n";
        let c = parse(&format!("{named}{API}    policies: [{{policy: slow}}]\n")).unwrap();
        let b = &c.groups[0].apis[0].policies[0];
        assert_eq!((b.plugin.as_str(), b.policy.as_deref(), b.limits.cpu_ms), ("cors", Some("slow"), 7));
        assert_eq!(b.config["max_age"], 5);

        let e = parse(&format!("{named}{API}    policies: [{{policy: fast}}]\n")).unwrap_err();
        assert!(e.message.contains("unknown policy `fast`"), "{e}");
        let e = parse(&format!("{named}{API}    policies: [{{policy: slow, config: {{max_age: 1}}}}]\n"))
            .unwrap_err();
        assert!(
            e.location.ends_with("policies[0] (policy slow)") && e.message.contains("sets nothing else"),
            "{e}"
        );
        let e = parse(&format!("policies:\n  p: {{plugin: nope}}\n{API}")).unwrap_err();
        assert_eq!(e.location, "policies.p (nope)");
    }

    #[test]
    fn relative_plugin_paths_resolve_against_the_config_folder() {
        let c = parse(&format!("plugins:\n  mine: {{path: p/mine.wasm}}\n{API}")).unwrap();
        assert_eq!(c.plugins["mine"].path.as_deref(), Some(Path::new("/etc/wasmgate/p/mine.wasm")));
    }

    #[test]
    fn a_custom_plugin_is_a_path_or_an_uploaded_sha256() {
        let hash = "ab".repeat(32);
        let c = parse(&format!("plugins:\n  up: {{sha256: {hash}}}\n{API}")).unwrap();
        assert_eq!((c.plugins["up"].path.as_ref(), c.plugins["up"].sha256.as_deref()), (None, Some(&*hash)));
        for (source, location, message) in [
            ("{}", "plugins.up", "exactly one of `path`"),
            (&format!("{{path: a.wasm, sha256: {hash}}}"), "plugins.up", "exactly one of `path`"),
            ("{sha256: ABC}", "plugins.up.sha256", "64 lower-case hex digits"),
        ] {
            let e = parse(&format!("plugins:\n  up: {source}\n{API}")).unwrap_err();
            assert!(e.location == location && e.message.contains(message), "{source}: {e}");
        }
    }

    #[test]
    fn domains_are_names_or_records_with_tls_paths_anchored() {
        let c = parse(
            "certificates: [{name: c, cert: c.crt, key: /k/c.key}]
groups:
- id: g
  domains: [plain.example, {name: Secure.example, certificate: c, client_ca: ca.pem}]
",
        )
        .unwrap();
        let d = &c.groups[0].domains;
        assert_eq!(d[0], Domain { name: "plain.example".into(), certificate: None, client_ca: None });
        assert_eq!(d[1].certificate.as_deref(), Some("c"));
        assert_eq!(d[1].client_ca.as_deref(), Some(Path::new("/etc/wasmgate/ca.pem")));
        assert_eq!(c.certificates[0].cert, Path::new("/etc/wasmgate/c.crt"));
        assert_eq!(c.certificates[0].key, Path::new("/k/c.key"));
        // The same name bound twice must agree (the SNI lookup is case-insensitive).
        let clash = parse(
            "certificates: [{name: c, cert: c.crt, key: c.key}, {name: d, cert: d.crt, key: d.key}]
groups:
- {id: g, domains: [{name: a.example, certificate: c}]}
- {id: h, domains: [{name: A.example, certificate: d}]}
",
        );
        assert!(
            clash
                .unwrap_err()
                .to_string()
                .contains("group `h` > domains[0]: `A.example` is bound with other")
        );
    }
}
