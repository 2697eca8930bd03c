//! Host capabilities: one module per WIT import, each holding its state and implementing the
//! generated `Host` trait. Plugins reach only these; every key they use is scoped to the
//! binding's namespace, so two bindings never see each other's counters or state.

pub mod clock;
pub mod cluster;
pub mod counters;
pub mod credentials;
pub mod crypto;
pub mod http_outbound;
pub mod kv;
pub mod log;
pub mod log_sink;
pub mod metrics;

use std::sync::Arc;

/// State shared by every instance of every plugin in this gateway process.
#[derive(Default)]
pub struct Capabilities {
    pub clock: clock::Clock,
    pub counters: counters::LocalCounters,
    /// Set once at start-up when the gateway is configured with Redis.
    pub cluster: std::sync::OnceLock<cluster::ClusterCounters>,
    /// Every binding's kv space; shared with the metrics collector.
    pub kv: Arc<kv::KvStore>,
    /// Swapped whole when a new config is accepted.
    pub credentials: arc_swap::ArcSwap<credentials::CredentialStore>,
    /// Kafka producers, kept across reloads.
    pub log_sinks: log_sink::LogSinks,
    pub outbound: http_outbound::Outbound,
    /// What plugins report through `metrics.set-gauge`.
    pub gauges: metrics::PluginGauges,
}

/// Who is calling: set on the store before each phase call.
pub struct BindingScope {
    /// Keys in counters are prefixed with this, and kv spaces found by it. Stable across reloads (API id,
    /// plugin and position), so state survives a config reload.
    pub namespace: String,
    pub api_id: String,
    pub plugin: Arc<str>,
    /// The binding's kv space (kept across reloads by namespace) and its quota.
    pub kv: Arc<kv::Space>,
    pub kv_limits: kv::KvLimits,
    /// What the binding declared, granted when its config was accepted.
    pub grants: std::sync::OnceLock<Grants>,
}

#[derive(Default)]
pub struct Grants {
    pub sinks: Vec<log_sink::GrantedSink>,
    /// Origins (`scheme://host:port`, lower case) `http-outbound.send` may reach.
    pub http: Vec<String>,
}

/// The operator's cap on what a custom plugin's bindings may declare (`plugins.NAME.grants`);
/// built-in plugins have none. Origins in [`http_outbound::origin`]'s form.
#[derive(Debug, Clone, Default)]
pub struct GrantCap {
    /// `plugins.NAME`, for the messages.
    pub plugin: String,
    pub outbound: Vec<String>,
    /// Each entry: brokers, and the topics a sink on (some of) them may name.
    pub log_sinks: Vec<(Vec<String>, Vec<String>)>,
    pub backends: Vec<String>,
}

impl GrantCap {
    /// Refuse what a binding declared beyond the cap, naming it.
    pub fn check(
        &self,
        http: &[String],
        sinks: &[crate::bindings::wasmgate::plugin::types::LogSinkDecl],
    ) -> Result<(), String> {
        let name = &self.plugin;
        if let Some(o) = http.iter().find(|o| !self.outbound.contains(o)) {
            return Err(format!("outbound origin `{o}` is not allowed by plugins.{name}.grants.outbound"));
        }
        for s in sinks {
            let k = &s.kafka;
            let allowed = self.log_sinks.iter().any(|(brokers, topics)| {
                topics.contains(&k.topic) && k.brokers.iter().all(|b| brokers.contains(b))
            });
            if !allowed {
                return Err(format!(
                    "log sink `{}` (topic `{}` on {}) is not allowed by plugins.{name}.grants.log_sinks",
                    s.name,
                    k.topic,
                    k.brokers.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Whether a request may be sent to `url` instead of the API's backend.
    pub fn allows_backend(&self, url: &str) -> Result<(), String> {
        match http_outbound::origin(url) {
            Ok(o) if self.backends.contains(&o) => Ok(()),
            _ => Err(format!("backend `{url}` is not allowed by plugins.{}.grants.backends", self.plugin)),
        }
    }
}

impl BindingScope {
    /// `key` in this binding's namespace, written into `buf` (reused across calls).
    pub(crate) fn key_into(&self, key: &str, buf: &mut String) {
        namespaced_into(&self.namespace, key, buf);
    }
}

/// The key a plugin's `key` is kept under in counters and kv, for the binding with
/// `namespace` (how a test harness reads a plugin's state).
pub fn namespaced(namespace: &str, key: &str) -> String {
    let mut k = String::with_capacity(namespace.len() + 1 + key.len());
    namespaced_into(namespace, key, &mut k);
    k
}

fn namespaced_into(namespace: &str, key: &str, buf: &mut String) {
    buf.clear();
    buf.push_str(namespace);
    buf.push('\u{1f}');
    buf.push_str(key);
}

// `types` has no functions; the generated linker still asks for its (empty) host trait.
impl crate::bindings::wasmgate::plugin::types::Host for crate::HostState {}
