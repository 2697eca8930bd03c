//! Prometheus metrics. Each API and binding gets its handles (atomic counters and
//! histograms) when the snapshot is built, so a request updates atomics and takes no lock
//! and builds no label set; an API's response counters by method and status are resolved
//! the first time each pair is seen, then read without a lock. Labels are bounded by the
//! configuration (API ids, environments, plugin names and phases, channel members) or by
//! HTTP itself (the standard methods, else `OTHER`; statuses 100-599); never request paths.

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use std::sync::Arc;
use std::time::Duration;

/// Request latency buckets, in seconds: 0.5 ms to 10 s.
const LATENCY: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Plugin call buckets: 10 µs to 100 ms.
const CALL: [f64; 9] = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.01, 0.1];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    backend_duration: HistogramVec,
    plugin_calls: IntCounterVec,
    plugin_errors: IntCounterVec,
    plugin_duration: HistogramVec,
    rejections: IntCounterVec,
    /// Set at each scrape from their sources (channels, log sinks).
    pub gauges: IntGaugeVecs,
}

/// Gauges and totals read from elsewhere when scraped.
pub struct IntGaugeVecs {
    pub member_up: IntGaugeVec,
    pub sink_buffered: IntGaugeVec,
    pub sink_delivered: IntGaugeVec,
    pub sink_dropped: IntGaugeVec,
    /// Set only with `gateway.plugin_stats` on.
    pub stat_calls: IntGaugeVec,
    pub crossings: IntGaugeVec,
}

/// One API's handles; none when metrics are off (`gateway.metrics_enabled: false`).
#[derive(Clone)]
pub struct ApiMetrics(Option<ApiHandles>);

#[derive(Clone)]
struct ApiHandles {
    responses: Arc<Responses>,
    duration: Histogram,
    backend: Histogram,
}

/// One API's response counters by method and status: the few pairs an API answers with,
/// each resolved once (a label lookup under the registry's lock) and read lock-free after.
struct Responses {
    vec: IntCounterVec,
    api: String,
    environment: String,
    seen: ArcSwap<Vec<(u8, u16, IntCounter)>>,
}

/// The `method` label's values; anything else counts as `OTHER`.
const METHODS: [&str; 10] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"];

impl Responses {
    fn inc(&self, method: &http::Method, status: u16) {
        let m = METHODS.iter().position(|n| *n == method.as_str()).unwrap_or(METHODS.len() - 1) as u8;
        if let Some((.., c)) = self.seen.load().iter().find(|(sm, ss, _)| *sm == m && *ss == status) {
            c.inc();
            return;
        }
        let code = status.to_string();
        let c = self.vec.with_label_values(&[&self.api, &self.environment, METHODS[m as usize], &code]);
        c.inc();
        self.seen.rcu(|seen| {
            let mut seen = Vec::clone(seen);
            if !seen.iter().any(|(sm, ss, _)| *sm == m && *ss == status) {
                seen.push((m, status, c.clone()));
            }
            seen
        });
    }
}

/// One binding's handles, per phase (request, response, log); none when metrics are off.
#[derive(Clone)]
pub struct BindingMetrics(Option<BindingHandles>);

#[derive(Clone)]
struct BindingHandles {
    calls: [IntCounter; 3],
    errors: [IntCounter; 3],
    duration: [Histogram; 3],
    rejections: IntCounterVec,
    plugin: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Request = 0,
    Response = 1,
    Log = 2,
}

impl Phase {
    /// In index order.
    pub const NAMES: [&str; 3] = ["request", "response", "log"];
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("registered once");
            h
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        Metrics {
            requests: counter(
                "wasmgate_requests_total",
                "Requests by API, environment, method and status code.",
                &["api", "environment", "method", "code"],
            ),
            duration: histogram(
                "wasmgate_request_duration_seconds",
                "Time to the response head, by API.",
                &["api", "environment"],
                &LATENCY,
            ),
            backend_duration: histogram(
                "wasmgate_backend_duration_seconds",
                "Backend calls (all attempts) to the response head, by API.",
                &["api", "environment"],
                &LATENCY,
            ),
            plugin_calls: counter(
                "wasmgate_plugin_calls_total",
                "Plugin calls by plugin and phase.",
                &["plugin", "phase"],
            ),
            plugin_errors: counter(
                "wasmgate_plugin_errors_total",
                "Plugin calls that failed (trap, deadline, memory, invalid action).",
                &["plugin", "phase"],
            ),
            plugin_duration: histogram(
                "wasmgate_plugin_call_duration_seconds",
                "Plugin call time by plugin and phase.",
                &["plugin", "phase"],
                &CALL,
            ),
            rejections: counter(
                "wasmgate_policy_rejections_total",
                "Requests a policy answered with an error (throttled, unauthorised, breaker open, ...), by plugin, status and error code (empty when the reply has none).",
                &["plugin", "status", "code"],
            ),
            gauges: IntGaugeVecs {
                member_up: gauge(
                    "wasmgate_upstream_member_up",
                    "1 while a channel member takes requests (healthy, not ejected).",
                    &["channel", "member"],
                ),
                sink_buffered: gauge(
                    "wasmgate_log_sink_buffered_messages",
                    "Messages a Kafka producer holds, waiting or in flight.",
                    &["brokers"],
                ),
                sink_delivered: gauge(
                    "wasmgate_log_sink_delivered_total",
                    "Messages a Kafka producer delivered.",
                    &["brokers"],
                ),
                sink_dropped: gauge(
                    "wasmgate_log_sink_dropped_total",
                    "Messages a Kafka producer dropped (buffer full, rejected).",
                    &["brokers"],
                ),
                stat_calls: gauge(
                    "wasmgate_plugin_counted_calls_total",
                    "Plugin calls whose boundary crossings were counted (gateway.plugin_stats), by plugin and phase.",
                    &["plugin", "phase"],
                ),
                crossings: gauge(
                    "wasmgate_plugin_crossings_total",
                    "Boundary crossings of counted calls: into the guest (export, realloc, post-return) or the host (imports).",
                    &["plugin", "phase", "direction"],
                ),
            },
            registry,
        }
    }

    pub fn api(&self, api: &str, environment: &str) -> ApiMetrics {
        ApiMetrics(Some(ApiHandles {
            responses: Arc::new(Responses {
                vec: self.requests.clone(),
                api: api.to_string(),
                environment: environment.to_string(),
                seen: ArcSwap::from_pointee(Vec::new()),
            }),
            duration: self.duration.with_label_values(&[api, environment]),
            backend: self.backend_duration.with_label_values(&[api, environment]),
        }))
    }

    /// Requests no API matched.
    pub fn unmatched(&self) -> ApiMetrics {
        self.api("", "")
    }

    pub fn binding(&self, plugin: &str) -> BindingMetrics {
        let by_phase = |v: &IntCounterVec| Phase::NAMES.map(|p| v.with_label_values(&[plugin, p]));
        BindingMetrics(Some(BindingHandles {
            calls: by_phase(&self.plugin_calls),
            errors: by_phase(&self.plugin_errors),
            duration: Phase::NAMES.map(|p| self.plugin_duration.with_label_values(&[plugin, p])),
            rejections: self.rejections.clone(),
            plugin: plugin.to_string(),
        }))
    }

    /// Add metrics kept elsewhere (the plugins' gauges) to what is rendered.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::warn!(error = %e, "metrics not registered");
        }
    }

    /// Everything, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl ApiMetrics {
    pub fn off() -> ApiMetrics {
        ApiMetrics(None)
    }

    pub fn finished(&self, method: &http::Method, status: u16, took: Duration) {
        if let Some(m) = &self.0 {
            m.responses.inc(method, status);
            m.duration.observe(took.as_secs_f64());
        }
    }

    pub fn backend(&self, took: Duration) {
        if let Some(m) = &self.0 {
            m.backend.observe(took.as_secs_f64());
        }
    }
}

impl BindingMetrics {
    pub fn off() -> BindingMetrics {
        BindingMetrics(None)
    }

    /// Whether calls are timed for these metrics.
    pub fn on(&self) -> bool {
        self.0.is_some()
    }

    pub fn call(&self, phase: Phase, took: Duration, failed: bool) {
        if let Some(m) = &self.0 {
            let p = phase as usize;
            m.calls[p].inc();
            m.duration[p].observe(took.as_secs_f64());
            if failed {
                m.errors[p].inc();
            }
        }
    }

    /// The binding answered with an error reply: its status, and its error code if it has
    /// one. (Rare: labels resolved here.)
    pub fn rejected(&self, status: http::StatusCode, code: Option<&str>) {
        if let Some(m) = &self.0 {
            m.rejections.with_label_values(&[&m.plugin, status.as_str(), code.unwrap_or("")]).inc();
        }
    }
}
