//! Circuit breaker: counts failed backend calls per API (or across every API bound to a
//! named policy) and, past a threshold, stops calling the backend for `recovery_time`
//! seconds, answering with a fallback instead. Then one probe call at a time is let
//! through (half-open): success closes the breaker, failure opens it again.
//!
//! State lives in the host's key-value store, shared by every instance of the binding on
//! the node and changed only by compare-and-swap, so concurrent calls on several threads
//! count each outcome once and only one of them becomes the probe.

mod state;

use serde::Deserialize;
use state::{Phase, State};
use std::collections::BTreeMap;
use wasmgate_param_rules::{Matcher, ParameterConfig, Parameters, WhenConfig};
use wasmgate_sdk::BackendTarget;
use wasmgate_sdk::host::{clock, kv, log, metrics};
use wasmgate_sdk::prelude::*;

/// Set on responses the breaker's fallback produced (and on its own 503).
const CIRCUIT_HEADER: &str = "x-wasmgate-circuit";
/// Request-context keys telling the response phase what the request phase decided.
const PROBE: &str = "circuit.probe";
const FALLBACK: &str = "circuit.fallback";
const MAX_RULES: usize = 30;

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum BreakerType {
    /// Backend timeouts (and connections that fail) are failures.
    Timeout,
    /// Responses with a listed status, or slower than `latency_ms`, are failures.
    Condition,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mechanism {
    /// `threshold` failures within `time_window` seconds.
    Count,
    /// At least `percentage`% failures among at least `threshold` calls within `time_window`.
    Percentage,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct MockConfig {
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

fn ok() -> u16 {
    200
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct BackendConfig {
    url: String,
    timeout_ms: Option<u32>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Fallback {
    Mock(MockConfig),
    Backend(BackendConfig),
    /// Keep calling the original backend (the breaker only reports).
    Passthrough,
}

/// A breaker's settings; in a rule, what is not given is taken from the default breaker.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct BreakerConfig {
    r#type: Option<BreakerType>,
    status_codes: Option<Vec<u16>>,
    latency_ms: Option<u32>,
    mechanism: Option<Mechanism>,
    threshold: Option<u32>,
    percentage: Option<u32>,
    time_window: Option<u64>,
    recovery_time: Option<u64>,
    fallback: Option<Fallback>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    /// For the people reading the config; rules are told apart by position.
    #[serde(default)]
    #[allow(dead_code)]
    name: String,
    when: WhenConfig,
    breaker: BreakerConfig,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
enum Scope {
    /// Each API bound to the policy has its own breaker.
    #[default]
    Api,
    /// One breaker for every API bound to the (named) policy.
    Shared,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    breaker: BreakerConfig,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    parameters: Vec<ParameterConfig>,
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

/// What a failure is.
enum Failure {
    Timeout,
    Condition { status_codes: Vec<u16>, latency_ms: Option<u32> },
}

enum Trip {
    Count { failures: u32 },
    Percentage { min_calls: u32, percentage: u32 },
}

/// What an open breaker answers with.
enum Answer {
    Mock(Reply),
    Backend(BackendTarget),
    Passthrough,
    Refuse,
}

struct Breaker {
    failure: Failure,
    trip: Trip,
    window_ms: u64,
    recovery_ms: u64,
    answer: Answer,
}

struct CircuitBreaker {
    scope: Scope,
    params: Parameters,
    rules: Vec<(Matcher, Breaker)>,
    default: Breaker,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

fn in_range(field: &str, v: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, ConfigError> {
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(err(field, format!("{v} is outside {}..={}", range.start(), range.end())))
    }
}

impl BreakerConfig {
    /// This rule's settings over the default breaker's.
    fn over(self, d: &BreakerConfig) -> BreakerConfig {
        BreakerConfig {
            r#type: self.r#type.or(d.r#type),
            status_codes: self.status_codes.or_else(|| d.status_codes.clone()),
            latency_ms: self.latency_ms.or(d.latency_ms),
            mechanism: self.mechanism.or(d.mechanism),
            threshold: self.threshold.or(d.threshold),
            percentage: self.percentage.or(d.percentage),
            time_window: self.time_window.or(d.time_window),
            recovery_time: self.recovery_time.or(d.recovery_time),
            fallback: self.fallback.or_else(|| d.fallback.clone()),
        }
    }

    fn compile(self, at: &str) -> Result<Breaker, ConfigError> {
        let f = |name: &str| format!("{at}.{name}");
        let failure = match self.r#type.unwrap_or(BreakerType::Timeout) {
            BreakerType::Timeout => {
                if self.status_codes.is_some() || self.latency_ms.is_some() {
                    return Err(err(f("type"), "status_codes and latency_ms need `type: condition`"));
                }
                Failure::Timeout
            }
            BreakerType::Condition => {
                let status_codes = self.status_codes.unwrap_or_default();
                if status_codes.is_empty() && self.latency_ms.is_none() {
                    return Err(err(
                        f("status_codes"),
                        "a condition breaker needs status_codes, latency_ms or both",
                    ));
                }
                if let Some(bad) = status_codes.iter().find(|s| !(100..=599).contains(*s)) {
                    return Err(err(f("status_codes"), format!("{bad} is not an HTTP status")));
                }
                if let Some(ms) = self.latency_ms {
                    in_range(&f("latency_ms"), ms as u64, 1..=600_000)?;
                }
                Failure::Condition { status_codes, latency_ms: self.latency_ms }
            }
        };
        let threshold = in_range(&f("threshold"), self.threshold.unwrap_or(5) as u64, 1..=1_000_000)? as u32;
        let trip = match self.mechanism.unwrap_or(Mechanism::Count) {
            Mechanism::Count => {
                if self.percentage.is_some() {
                    return Err(err(f("percentage"), "only with `mechanism: percentage`"));
                }
                Trip::Count { failures: threshold }
            }
            Mechanism::Percentage => {
                let p = self
                    .percentage
                    .ok_or_else(|| err(f("percentage"), "needed with `mechanism: percentage`"))?;
                Trip::Percentage {
                    min_calls: threshold,
                    percentage: in_range(&f("percentage"), p as u64, 1..=100)? as u32,
                }
            }
        };
        let window_ms = in_range(&f("time_window"), self.time_window.unwrap_or(60), 1..=3600)? * 1000;
        let recovery_ms = in_range(&f("recovery_time"), self.recovery_time.unwrap_or(30), 1..=3600)? * 1000;
        let answer = match self.fallback {
            None => Answer::Refuse,
            Some(Fallback::Passthrough) => Answer::Passthrough,
            Some(Fallback::Mock(m)) => {
                in_range(&f("fallback.mock.status"), m.status as u64, 100..=599)?;
                let mut headers: Vec<(String, String)> =
                    m.headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
                headers.push((CIRCUIT_HEADER.into(), "open".into()));
                Answer::Mock(Reply { status: m.status, headers, body: m.body.into_bytes() })
            }
            Some(Fallback::Backend(b)) => {
                if !b.url.starts_with("http://") || b.url.len() <= "http://".len() {
                    return Err(err(f("fallback.backend.url"), format!("`{}` is not an http:// URL", b.url)));
                }
                if let Some(ms) = b.timeout_ms {
                    in_range(&f("fallback.backend.timeout_ms"), ms as u64, 1..=600_000)?;
                }
                Answer::Backend(BackendTarget { url: b.url, timeout_ms: b.timeout_ms })
            }
        };
        Ok(Breaker { failure, trip, window_ms, recovery_ms, answer })
    }
}

impl Policy for CircuitBreaker {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let c: Config = parse_config(config)?;
        let mut info = BindingInfo::new(Phases::REQUEST | Phases::RESPONSE);
        info.request_fields = RequestFields::REQUEST_ID | RequestFields::ROUTE | RequestFields::CONTEXT;
        let params = Parameters::compile(&c.parameters, "parameters", &mut info)?;
        if c.rules.len() > MAX_RULES {
            return Err(err("rules", format!("{} given, at most {MAX_RULES}", c.rules.len())));
        }
        let mut rules = Vec::with_capacity(c.rules.len());
        for (i, r) in c.rules.into_iter().enumerate() {
            let matcher = params.matcher(r.when, &format!("rules[{i}].when"))?;
            rules.push((matcher, r.breaker.over(&c.breaker).compile(&format!("rules[{i}].breaker"))?));
        }
        let default = c.breaker.compile("breaker")?;
        Ok((CircuitBreaker { scope: c.scope, params, rules, default }, info))
    }

    fn on_request(&self, req: &Request) -> RequestAction {
        let (index, breaker) = self.breaker(req);
        let key = self.key(req, index);
        loop {
            let stored = kv::get(&key);
            let state = State::decode(stored.as_deref());
            // Until when the backend is left alone: the open period, or a probe's time to
            // report back (after that it must have been lost).
            let rest_until = match state.phase {
                Phase::Closed => return RequestAction::Continue(RequestChanges::default()),
                Phase::Open { until } => until,
                Phase::HalfOpen { since } => since + breaker.recovery_ms,
            };
            let now = clock::now_ms();
            if now < rest_until {
                return self.answer(req, breaker);
            }
            let probing = State { phase: Phase::HalfOpen { since: now }, ..state };
            if kv::compare_and_swap(&key, stored.as_deref(), &probing.encode(), None) {
                note(req, index, &probing.phase, "half-open: letting one probe call through");
                return RequestAction::Continue(RequestChanges {
                    context: vec![(PROBE.into(), "1".into())],
                    ..Default::default()
                });
            }
            // Another call changed the state first: look again.
        }
    }

    fn on_response(&self, req: &Request, resp: &Response) -> ResponseAction {
        let done = ResponseAction::Continue(ResponseChanges::default());
        // Fallback traffic, replies and mock backends say nothing about the backend.
        if req.context(FALLBACK).is_some() || resp.outcome == BackendOutcome::NotCalled {
            return done;
        }
        let (index, breaker) = self.breaker(req);
        let failed = breaker.failed(resp);
        let probe = req.context(PROBE).is_some();
        // Counting failures only, a success changes nothing: no state to read or write.
        if !failed && !probe && matches!(breaker.trip, Trip::Count { .. }) {
            return done;
        }
        let key = self.key(req, index);
        let now = clock::now_ms();
        loop {
            let stored = kv::get(&key);
            let state = State::decode(stored.as_deref());
            let (next, event) = match (state.phase, probe) {
                (Phase::HalfOpen { .. }, true) if failed => {
                    (State::open(now + breaker.recovery_ms), Some("probe failed: open again".to_string()))
                }
                (Phase::HalfOpen { .. }, true) => {
                    (State::closed(now), Some("probe succeeded: closed".to_string()))
                }
                (Phase::Closed, false) => {
                    let mut s = if now >= state.window_start + breaker.window_ms {
                        State::closed(now)
                    } else {
                        state
                    };
                    s.calls += 1;
                    s.failures += u32::from(failed);
                    if breaker.trips(&s) {
                        let why = match breaker.trip {
                            Trip::Count { .. } => {
                                format!("opened: {} failures in the time window", s.failures)
                            }
                            Trip::Percentage { .. } => {
                                format!("opened: {} failures in {} calls", s.failures, s.calls)
                            }
                        };
                        (State::open(now + breaker.recovery_ms), Some(why))
                    } else {
                        (s, None)
                    }
                }
                // Calls that started before the breaker changed state do not count.
                _ => return done,
            };
            if kv::compare_and_swap(&key, stored.as_deref(), &next.encode(), None) {
                if let Some(event) = event {
                    note(req, index, &next.phase, &event);
                }
                return done;
            }
        }
    }
}

/// A state change: logged, and reported as gauge `circuit_breaker_{index}_state` (0 closed,
/// 1 open, 2 half-open).
fn note(req: &Request, index: usize, phase: &Phase, what: &str) {
    log::write(log::Level::Warn, &format!("circuit breaker {index} of API {}: {what}", req.route().api_id));
    let value = match phase {
        Phase::Closed => 0,
        Phase::Open { .. } => 1,
        Phase::HalfOpen { .. } => 2,
    };
    metrics::set_gauge(&format!("circuit_breaker_{index}_state"), value);
}

impl Breaker {
    fn failed(&self, resp: &Response) -> bool {
        match &self.failure {
            Failure::Timeout => matches!(resp.outcome, BackendOutcome::TimedOut | BackendOutcome::Failed),
            Failure::Condition { status_codes, latency_ms } => {
                status_codes.contains(&resp.status)
                    || latency_ms.is_some_and(|ms| resp.backend_latency_ms > ms)
            }
        }
    }

    fn trips(&self, s: &State) -> bool {
        match self.trip {
            Trip::Count { failures } => s.failures >= failures,
            Trip::Percentage { min_calls, percentage } => {
                s.calls >= min_calls && s.failures as u64 * 100 >= percentage as u64 * s.calls as u64
            }
        }
    }
}

impl CircuitBreaker {
    /// The first rule's breaker that matches, else the default (numbered after the rules).
    fn breaker(&self, req: &Request) -> (usize, &Breaker) {
        match self.rules.iter().position(|(m, _)| self.params.matches(m, req)) {
            Some(i) => (i, &self.rules[i].1),
            None => (self.rules.len(), &self.default),
        }
    }

    fn key(&self, req: &Request, index: usize) -> String {
        match self.scope {
            Scope::Api => format!("breaker|{index}|{}", req.route().api_id),
            Scope::Shared => format!("breaker|{index}"),
        }
    }

    fn answer(&self, req: &Request, breaker: &Breaker) -> RequestAction {
        let marked = || RequestChanges {
            context: vec![(FALLBACK.into(), "1".into())],
            response_headers: vec![HeaderOp::Set((CIRCUIT_HEADER.into(), "open".into()))],
            ..Default::default()
        };
        match &breaker.answer {
            Answer::Mock(reply) => RequestAction::Respond(reply.clone()),
            Answer::Backend(target) => {
                RequestAction::Continue(RequestChanges { backend: Some(target.clone()), ..marked() })
            }
            Answer::Passthrough => RequestAction::Continue(marked()),
            Answer::Refuse => {
                let mut reply = Reply::error(
                    503,
                    "APIG.0206",
                    "The circuit breaker is open: the backend is not called",
                    req.request_id(),
                );
                reply.headers.push((CIRCUIT_HEADER.into(), "open".into()));
                RequestAction::Respond(reply)
            }
        }
    }
}

wasmgate_sdk::export_policy!(CircuitBreaker);
