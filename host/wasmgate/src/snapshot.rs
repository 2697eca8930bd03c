//! Config → ready-to-serve [`Snapshot`]: resolve and compile plugins, let each plugin check
//! its bindings' configs, build the router. All or nothing: the first error is returned with
//! the file and place it is about, and nothing is served from a half-built snapshot.

use crate::components::{self, Builtins};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmgate_config::{self as config, ConfigError, GatewayConfig};
use wasmgate_proxy::access_log::SpanSink;
use wasmgate_proxy::backend::{Backend, HttpBackend};
use wasmgate_proxy::error::{CustomError, CustomErrors};
use wasmgate_proxy::metrics::{ApiMetrics, BindingMetrics, Metrics, Phase};
use wasmgate_proxy::params;
use wasmgate_proxy::policy::{Policy, Reply, RouteInfo};
use wasmgate_proxy::router::Router;
use wasmgate_proxy::tls::{ClientCa, LoadedCertificate, TlsStore};
use wasmgate_proxy::upstream::{self, ClientSettings, Upstreams};
use wasmgate_proxy::{Api, Binding, OnError, PolicyChain, ProxyState, Snapshot};
use wasmgate_runtime::capabilities::GrantCap;
use wasmgate_runtime::capabilities::http_outbound::origin;
use wasmgate_runtime::capabilities::kv::{KvLimits, KvMetrics};
use wasmgate_runtime::{CallLimits, PluginRuntime, PoolBuilder};

/// What snapshots are built with, kept for the process: plugins are compiled by the
/// runtime, backend clients and channels come from (and stay in) `upstreams`.
#[derive(Clone)]
pub struct Builder {
    pub runtime: Arc<PluginRuntime>,
    pub builtins: Builtins,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    /// Reloads by result (`applied`, `rejected`), and when the served config was loaded.
    pub reloads: prometheus::IntCounterVec,
    pub loaded_at: prometheus::IntGauge,
    /// Where spans are exported (`gateway.otlp`, set at start-up).
    pub spans: Option<Arc<dyn SpanSink>>,
}

impl Builder {
    pub fn new(
        runtime: Arc<PluginRuntime>,
        builtins: Builtins,
        probes: Option<tokio::runtime::Handle>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        metrics.register(Box::new(runtime.capabilities().gauges.gauges.clone()));
        metrics.register(Box::new(KvMetrics::new(runtime.capabilities().kv.clone())));
        metrics.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        let opts = prometheus::Opts::new;
        let build = prometheus::IntGaugeVec::new(
            opts("wasmgate_build_info", "The running build: version, commit and plugin contract (always 1)."),
            &["version", "commit", "contract"],
        )
        .expect("valid metric");
        let this = [env!("CARGO_PKG_VERSION"), env!("WASMGATE_COMMIT"), env!("WASMGATE_CONTRACT")];
        build.with_label_values(&this).set(1);
        metrics.register(Box::new(build));
        let reloads = prometheus::IntCounterVec::new(
            opts("wasmgate_config_reloads_total", "Configuration reloads by result: applied or rejected."),
            &["result"],
        )
        .expect("valid metric");
        metrics.register(Box::new(reloads.clone()));
        let loaded_at = prometheus::IntGauge::with_opts(opts(
            "wasmgate_config_loaded_timestamp_seconds",
            "When the configuration being served was loaded (start-up or the last applied reload), Unix time.",
        ))
        .expect("valid metric");
        metrics.register(Box::new(loaded_at.clone()));
        Builder {
            runtime,
            builtins,
            upstreams: Arc::new(Upstreams::new(probes)),
            metrics,
            reloads,
            loaded_at,
            spans: None,
        }
    }

    pub fn build(&self, cfg: &GatewayConfig, file: &Path) -> Result<Snapshot, ConfigError> {
        build(cfg, file, self, None)
    }

    /// [`Self::build`], and what each binding of a custom plugin, or one that reaches out
    /// (outbound HTTP, log sinks), was granted: `location: grants` (`wasmgate validate`).
    pub fn build_with_grants(
        &self,
        cfg: &GatewayConfig,
        file: &Path,
    ) -> Result<(Snapshot, Vec<String>), ConfigError> {
        let mut grants = Vec::new();
        build(cfg, file, self, Some(&mut grants)).map(|s| (s, grants))
    }

    /// What serves requests with `snapshot`.
    pub fn proxy(&self, snapshot: Snapshot) -> ProxyState {
        let client = self.upstreams.client(&Default::default()).expect("the default client reads no files");
        ProxyState::new(snapshot, client, &self.metrics)
    }

    /// The metrics, with the gauges read from their sources now.
    pub fn metrics_text(&self) -> String {
        let g = &self.metrics.gauges;
        g.member_up.reset();
        for channel in self.upstreams.channels() {
            for (member, up) in channel.health() {
                g.member_up.with_label_values(&[&channel.name, member.as_str()]).set(i64::from(up));
            }
        }
        for s in self.runtime.capabilities().log_sinks.stats() {
            g.sink_buffered.with_label_values(&[&s.brokers]).set(s.buffered as i64);
            g.sink_delivered.with_label_values(&[&s.brokers]).set(s.delivered as i64);
            g.sink_dropped.with_label_values(&[&s.brokers]).set(s.dropped as i64);
        }
        for (plugin, phases) in self.runtime.call_stats() {
            for (phase, t) in Phase::NAMES.iter().zip(phases).filter(|(_, t)| t.calls > 0) {
                g.stat_calls.with_label_values(&[plugin.as_str(), phase]).set(t.calls as i64);
                let crossings = [("guest", t.crossings.into_guest), ("host", t.crossings.into_host)];
                for (direction, n) in crossings {
                    g.crossings.with_label_values(&[plugin.as_str(), phase, direction]).set(n as i64);
                }
            }
        }
        self.metrics.render()
    }
}

fn build(
    cfg: &GatewayConfig,
    file: &Path,
    builder: &Builder,
    grants: Option<&mut Vec<String>>,
) -> Result<Snapshot, ConfigError> {
    let Builder { runtime, builtins, upstreams, metrics, spans, .. } = builder;
    let record = cfg.gateway.metrics_enabled;
    runtime.count_crossings(cfg.gateway.plugin_stats);
    runtime.capabilities().kv.report(record);
    let err = |location: String, message: String| ConfigError { file: file.into(), location, message };
    // Certificates first: reading files is cheaper than compiling plugins.
    let tls = tls_store(cfg, file)?;

    // Every plugin the bindings use, loaded (compiled on a cold start) side by side.
    let deployments = cfg.deployments().map_err(|(location, message)| err(location, message))?;
    let loaded = components::load_all(
        cfg,
        runtime,
        builtins,
        deployments.iter().flat_map(|d| d.api.policies.iter().map(|b| b.plugin.as_str())),
    );

    // Pass 1: every binding joins the pool of its (plugin, memory cap).
    let mut pools: HashMap<(String, u32), PoolBuilder> = HashMap::new();
    let mut pool_order: Vec<(String, u32)> = Vec::new();
    let mut placed: Vec<((String, u32), u32, String)> = Vec::new(); // (pool, number, location)
    // A named policy is one binding however many APIs bind it.
    let mut named: HashMap<&str, ((String, u32), u32)> = HashMap::new();
    // Each API once per environment it is published in.
    for d in &deployments {
        let (group, api) = (d.group, &d.api);
        for (i, b) in api.policies.iter().enumerate() {
            let location = match &b.policy {
                Some(name) => format!("policies.{name} ({})", b.plugin),
                None => format!("group `{}` > api `{}` > policies[{i}] ({})", group.id, api.id, b.plugin),
            };
            if let Some((key, number)) = b.policy.as_deref().and_then(|n| named.get(n)) {
                placed.push((key.clone(), *number, location));
                continue;
            }
            let key = (b.plugin.clone(), b.limits.memory_mib);
            if !pools.contains_key(&key) {
                let plugin = loaded.get(&b.plugin).expect("every binding's plugin was loaded").as_ref();
                let plugin = plugin.map_err(|e| err(location.clone(), e.clone()))?;
                let mut builder = runtime
                    .pool_builder(&b.plugin, plugin, (b.limits.memory_mib as usize) << 20)
                    .map_err(|e| err(location.clone(), e.to_string()))?;
                if let Some(source) = cfg.plugins.get(&b.plugin) {
                    builder =
                        builder.cap(grant_cap(&b.plugin, &source.grants).map_err(|(at, m)| err(at, m))?);
                }
                pools.insert(key.clone(), builder);
                pool_order.push(key.clone());
            }
            // State (counters, kv) is per API and environment; the default environment's
            // namespaces predate environments and stay as they were.
            let namespace = match &b.policy {
                Some(name) => format!("policy:{name}"),
                None if d.environment == cfg.gateway.environment => format!("{}#{i}:{}", api.id, b.plugin),
                None => format!("{}/{}#{i}:{}", d.environment, api.id, b.plugin),
            };
            let number = pools.get_mut(&key).expect("inserted above").add(
                namespace,
                api.id.clone(),
                b.config.to_string(),
                CallLimits {
                    cpu: Duration::from_millis(b.limits.cpu_ms),
                    wall: Duration::from_millis(b.limits.wall_ms),
                    kv: KvLimits {
                        max_bytes: (b.limits.kv_mib as usize) << 20,
                        max_entries: b.limits.kv_entries as usize,
                        max_value_bytes: (b.limits.kv_value_kib as usize) << 10,
                    },
                },
            );
            if let Some(name) = &b.policy {
                named.insert(name, (key.clone(), number));
            }
            placed.push((key, number, location));
        }
    }

    // Pass 2: plugins check their configs.
    let mut policies: HashMap<(String, u32), Vec<Arc<wasmgate_runtime::WasmPolicy>>> = HashMap::new();
    for key in pool_order {
        let builder = pools.remove(&key).expect("every key has a builder");
        let results = builder.build().map_err(|e| err(format!("plugin `{}`", key.0), e.to_string()))?;
        let mut ok = Vec::with_capacity(results.len());
        for (number, r) in results.into_iter().enumerate() {
            match r {
                Ok(p) => ok.push(Arc::new(p)),
                Err(e) => {
                    let (_, _, location) = placed
                        .iter()
                        .find(|(k, n, _)| *k == key && *n as usize == number)
                        .expect("placed binding");
                    return Err(err(location.clone(), e.to_string()));
                }
            }
        }
        policies.insert(key, ok);
    }

    // Only `validate` asks; a reload does not describe what it will not print.
    if let Some(grants) = grants {
        for (key, number, location) in &placed {
            let policy = &policies[key][*number as usize];
            let (http, sinks) = policy.granted();
            if cfg.plugins.contains_key(&key.0) || !http.is_empty() || !sinks.is_empty() {
                grants.push(format!("{location}: {}", policy.grants()));
            }
        }
    }

    // Pass 3: APIs and routes.
    let outbound_ca = match &cfg.gateway.outbound_ca {
        Some(ca) => vec![read(ca).map_err(|m| err("gateway.outbound_ca".into(), m))?],
        None => Vec::new(),
    };
    let mut placed = placed.into_iter();
    let mut routers: HashMap<String, Router<Arc<Api>>> = HashMap::new();
    let mut group_errors: HashMap<&str, Option<Arc<CustomErrors>>> = HashMap::new();
    for g in &cfg.groups {
        let errors = custom_errors(g).map_err(|(at, m)| err(format!("group `{}` > {at}", g.id), m))?;
        group_errors.insert(&g.id, errors);
    }
    for d in &deployments {
        let (group, api) = (d.group, &d.api);
        let domains: Vec<&str> = group.domains.iter().map(|d| d.name.as_str()).collect();
        let location = format!("group `{}` > api `{}`", group.id, api.id);
        let mut bindings = Vec::with_capacity(api.policies.len());
        for b in &api.policies {
            let (key, number, _) = placed.next().expect("one placement per binding");
            let policy = policies[&key][number as usize].clone();
            let on_error = match b.on_error {
                config::OnError::Closed => OnError::Closed,
                config::OnError::Open => OnError::Open,
            };
            let metrics = if record { metrics.binding(&b.plugin) } else { BindingMetrics::off() };
            bindings.push(Binding { policy, on_error, metrics });
        }
        let backend = match &api.backend {
            config::Backend::Http(h) => {
                let at = |field: &str| format!("{location} > backend.http.{field}");
                let client = upstreams
                    .client(&client_settings(h, &outbound_ca).map_err(|m| err(at("tls"), m))?)
                    .map_err(|e| err(at("tls"), e.to_string()))?;
                let timeout = Duration::from_millis(h.timeout_ms);
                let mut backend = HttpBackend::parse(&h.url, h.path.as_deref(), timeout, client)
                    .map_err(|e| err(at("url"), e.to_string()))?
                    .with_retries(h.retries);
                if let Some((name, channel)) = channel_named(cfg, &h.url) {
                    let spec = channel_spec(channel, &outbound_ca);
                    let channel = upstreams
                        .channel(name, spec)
                        .map_err(|e| err(format!("channels.{name}"), e.to_string()))?;
                    backend = backend.with_channel(channel);
                }
                Backend::Http(match &h.signature_key {
                    Some(sk) => backend.with_signature_key(sk.key.clone(), sk.secret.clone()),
                    None => backend,
                })
            }
            config::Backend::Mock(m) => Backend::Mock(Reply {
                status: http::StatusCode::from_u16(m.status).expect("validated at load"),
                headers: m
                    .headers
                    .iter()
                    .map(|(n, v)| Ok((n.to_ascii_lowercase().parse()?, v.parse()?)))
                    .collect::<Result<_, Box<dyn std::error::Error>>>()
                    .map_err(|e| err(format!("{location} > backend.mock.headers"), e.to_string()))?,
                body: bytes::Bytes::from(m.body.clone()),
            }),
        };
        let methods = api.method.normalized();
        let methods = if methods.is_empty() {
            None
        } else {
            Some(methods.iter().map(|m| m.parse().expect("validated method")).collect())
        };
        let entry = Arc::new(Api {
            route: RouteInfo {
                api_id: api.id.clone(),
                group_id: group.id.clone(),
                environment: d.environment.to_string(),
            },
            backend,
            chain: PolicyChain::new(bindings),
            parameters: parameter_rules(&api.parameters)
                .map_err(|(at, m)| err(format!("{location} > {at}"), m))?,
            mapping: api.mapping.iter().map(map_rule).collect(),
            errors: group_errors[group.id.as_str()].clone(),
            metrics: if record { metrics.api(&api.id, d.environment) } else { ApiMetrics::off() },
        });
        routers
            .entry(d.environment.to_string())
            .or_default()
            .insert(&domains, methods, &api.path, api.match_mode == config::MatchMode::Prefix, entry)
            .map_err(|e| err(format!("{location} > path"), e.to_string()))?;
    }
    let limits = wasmgate_proxy::RequestLimits {
        max_header_bytes: cfg.gateway.max_header_bytes,
        max_body_bytes: cfg.gateway.max_body_bytes,
        encoded_slashes: match cfg.gateway.encoded_slashes {
            config::EncodedSlashes::Reject => wasmgate_proxy::path::EncodedSlashes::Reject,
            config::EncodedSlashes::Keep => wasmgate_proxy::path::EncodedSlashes::Keep,
        },
    };
    let a = cfg.gateway.access_log;
    let access_log = a.enabled.then_some(match a.level {
        config::LogLevel::Error => tracing::Level::ERROR,
        config::LogLevel::Warn => tracing::Level::WARN,
        config::LogLevel::Info => tracing::Level::INFO,
        config::LogLevel::Debug => tracing::Level::DEBUG,
        config::LogLevel::Trace => tracing::Level::TRACE,
    });
    Ok(Snapshot {
        routers,
        default_environment: cfg.gateway.environment.clone(),
        tls,
        limits,
        access_log,
        spans: spans.clone(),
    })
}

/// `plugins.NAME.grants` as the runtime checks it, origins normalised.
fn grant_cap(plugin: &str, g: &config::PluginGrants) -> Result<GrantCap, (String, String)> {
    let origins = |field: &str, list: &[String]| {
        list.iter()
            .enumerate()
            .map(|(i, o)| origin(o).map_err(|m| (format!("plugins.{plugin}.grants.{field}[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(GrantCap {
        plugin: plugin.to_string(),
        outbound: origins("outbound", &g.outbound)?,
        log_sinks: g.log_sinks.iter().map(|s| (s.brokers.clone(), s.topics.clone())).collect(),
        backends: origins("backends", &g.backends)?,
    })
}

fn location(l: config::ParamLocation) -> params::Location {
    match l {
        config::ParamLocation::Path => params::Location::Path,
        config::ParamLocation::Query => params::Location::Query,
        config::ParamLocation::Header => params::Location::Header,
    }
}

/// The declared parameters as the pipeline checks them; a pattern that does not compile or
/// a default the parameter's own rules refuse is an error here, at load.
fn parameter_rules(declared: &[config::Parameter]) -> Result<Vec<params::ParamRule>, (String, String)> {
    declared
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = |field: &str| format!("parameters[{i}] ({}){field}", p.name);
            let pattern = p
                .pattern
                .as_deref()
                .map(regex::Regex::new)
                .transpose()
                .map_err(|e| (at(".pattern"), e.to_string()))?;
            let rule = params::ParamRule {
                // Header names are matched lower-case, as `http` stores them.
                name: if p.location == config::ParamLocation::Header {
                    p.name.to_ascii_lowercase()
                } else {
                    p.name.clone()
                },
                location: location(p.location),
                kind: match p.kind {
                    config::ParamKind::String => params::ParamType::String,
                    config::ParamKind::Integer => params::ParamType::Integer,
                    config::ParamKind::Number => params::ParamType::Number,
                    config::ParamKind::Boolean => params::ParamType::Boolean,
                },
                required: p.required,
                default: p.default.clone(),
                allowed: p.allowed.clone(),
                min: p.min,
                max: p.max,
                pattern,
            };
            for value in rule.default.iter().chain(&rule.allowed) {
                rule.check(value).map_err(|m| (at(""), format!("`{value}` breaks its own rules: {m}")))?;
            }
            Ok(rule)
        })
        .collect()
}

fn map_rule(m: &config::Mapping) -> params::MapRule {
    let lower = |r: &config::ParamRef| {
        let name = if r.location == config::ParamLocation::Header {
            r.name.to_ascii_lowercase()
        } else {
            r.name.clone()
        };
        (location(r.location), name)
    };
    let source = match (&m.from, &m.constant, m.system) {
        (Some(from), ..) => {
            let (l, n) = lower(from);
            params::Source::Param(l, n)
        }
        (None, Some(c), _) => params::Source::Constant(c.clone()),
        (None, None, Some(s)) => params::Source::System(match s {
            config::SystemParam::ClientIp => params::SystemValue::ClientIp,
            config::SystemParam::RequestId => params::SystemValue::RequestId,
            config::SystemParam::AppId => params::SystemValue::AppId,
            config::SystemParam::ApiId => params::SystemValue::ApiId,
        }),
        (None, None, None) => unreachable!("the config's validation requires one source"),
    };
    params::MapRule { to: lower(&m.to), source }
}

fn custom_errors(g: &config::ApiGroup) -> Result<Option<Arc<CustomErrors>>, (String, String)> {
    if g.error_responses.is_empty() {
        return Ok(None);
    }
    let mut errors = CustomErrors::new();
    for (code, r) in &g.error_responses {
        let at = format!("error_responses.{code}");
        let status =
            r.status.map(http::StatusCode::from_u16).transpose().map_err(|e| (at.clone(), e.to_string()))?;
        let content_type =
            r.content_type.parse().map_err(|_| (at, "content_type is not a header value".to_string()))?;
        errors.insert(code.clone(), CustomError { status, body: r.body.clone(), content_type });
    }
    Ok(Some(Arc::new(errors)))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// How connections to this backend are made: its connect timeout, the CAs it trusts
/// besides the system's, and its client certificate.
fn client_settings(h: &config::HttpBackend, outbound_ca: &[Vec<u8>]) -> Result<ClientSettings, String> {
    let mut settings = ClientSettings {
        connect_timeout: Duration::from_millis(h.connect_timeout_ms),
        extra_cas: outbound_ca.to_vec(),
        identity: None,
    };
    if let Some(tls) = &h.tls {
        if let Some(ca) = &tls.ca {
            settings.extra_cas.push(read(ca)?);
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
            settings.identity = Some((read(cert)?, read(key)?));
        }
    }
    Ok(settings)
}

/// The channel a backend URL names by its host (`http://users/v1`: channel `users`).
fn channel_named<'a>(cfg: &'a GatewayConfig, url: &str) -> Option<(&'a str, &'a config::Channel)> {
    let uri: http::Uri = url.parse().ok()?;
    let authority = uri.authority()?;
    if authority.port().is_some() {
        return None;
    }
    cfg.channels.get_key_value(authority.host()).map(|(n, c)| (n.as_str(), c))
}

fn channel_spec(c: &config::Channel, outbound_ca: &[Vec<u8>]) -> upstream::ChannelSpec {
    upstream::ChannelSpec {
        members: c
            .members
            .iter()
            .map(|m| (m.address.parse().expect("validated at load"), m.weight))
            .collect(),
        balance: match (c.balance, &c.hash_on_header) {
            (config::Balance::RoundRobin, _) => upstream::Balance::RoundRobin,
            (config::Balance::ConsistentHash, None) => upstream::Balance::HashSourceIp,
            (config::Balance::ConsistentHash, Some(h)) => {
                upstream::Balance::HashHeader(h.parse().expect("validated at load"))
            }
        },
        health: c.health_check.as_ref().map(|h| upstream::HealthSpec {
            path: h.path.clone(),
            https: h.https,
            interval: Duration::from_millis(h.interval_ms),
            timeout: Duration::from_millis(h.timeout_ms),
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
        }),
        passive: c.passive.as_ref().map(|p| upstream::PassiveSpec {
            consecutive_failures: p.consecutive_failures,
            eject: Duration::from_millis(p.eject_ms),
        }),
        probe_client: ClientSettings {
            connect_timeout: Duration::from_millis(c.health_check.as_ref().map_or(1_000, |h| h.timeout_ms)),
            extra_cas: outbound_ca.to_vec(),
            identity: None,
        },
    }
}

/// Read every certificate, key and client CA the config names; a bad file fails the whole
/// snapshot, so a reload with a broken certificate keeps serving the previous ones.
fn tls_store(cfg: &GatewayConfig, file: &Path) -> Result<TlsStore, ConfigError> {
    let err = |location: String, message: String| ConfigError { file: file.into(), location, message };
    let mut store = TlsStore::default();
    let mut loaded = HashMap::new();
    for (i, c) in cfg.certificates.iter().enumerate() {
        let location = format!("certificates[{i}] ({})", c.name);
        let cert =
            LoadedCertificate::load(&c.cert, &c.key).map_err(|e| err(location.clone(), e.to_string()))?;
        store.add_certificate(&c.name, &cert).map_err(|e| err(location, e.to_string()))?;
        loaded.insert(c.name.as_str(), cert);
    }
    for group in &cfg.groups {
        for (i, d) in group.domains.iter().enumerate() {
            let Some(name) = &d.certificate else { continue };
            let location = format!("group `{}` > domains[{i}] ({})", group.id, d.name);
            let ca = d.client_ca.as_deref().map(ClientCa::load).transpose();
            let ca = ca.map_err(|e| err(format!("{location} > client_ca"), e.to_string()))?;
            store
                .bind_domain(&d.name, name, &loaded[name.as_str()], ca.as_ref())
                .map_err(|e| err(location, e.to_string()))?;
        }
    }
    Ok(store)
}
