//! A request's trace: each policy that ran, in order, with its decision and time, and the
//! backend request as it was sent. Only requests on a traced [`crate::Connection`] (the
//! admin API's debug calls, `debug.rs`) record one; every other request pays one branch per
//! step, so the lock here is never on the serving path.

use crate::policy::{BackendOutcome, HeaderOp, PolicyError, RequestAction, ResponseAction};
use crate::{Binding, OnError};
use http::{HeaderMap, Method, StatusCode, Uri};
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Trace {
    record: Mutex<TraceRecord>,
    log_done: Notify,
}

/// What a traced request did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TraceRecord {
    /// The API the request was routed to (`None`: no route matched).
    pub api: Option<String>,
    pub environment: Option<String>,
    pub steps: Vec<Step>,
    pub backend: BackendTrace,
    /// Whether log phases run after the response (the trace is complete only then).
    #[serde(skip)]
    pub log_phase: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub plugin: String,
    /// What the binding was granted (outbound origins, log sinks, backend overrides).
    pub grants: String,
    pub phase: Phase,
    pub decision: Decision,
    /// What the policy changed, one line each (`set header x-a: 1`, `path → /v2/x`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// The status of the response the policy answered with or set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Applied by the gateway from what the binding declared at load (fixed response
    /// headers): the plugin was not called.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub declared: bool,
    pub micros: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Request,
    Response,
    Log,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Went on, with the changes listed.
    Continue,
    /// Answered the request itself (the backend was not called).
    Respond,
    /// Replaced the response.
    Replace,
    /// Failed, and the request got an error response (`on_error: closed`).
    Failed,
    /// Failed and was skipped (`on_error: open`).
    Skipped,
}

#[derive(Debug, Default, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendTrace {
    /// A policy answered first, or the request was refused before the backend.
    #[default]
    NotCalled,
    /// The API's backend is a fixed response.
    Mock { status: u16 },
    /// The request as sent to the backend, and how it answered.
    Http {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        outcome: &'static str,
        micros: u64,
        /// 1, or more when earlier attempts failed and were retried (this is the last).
        attempt: u32,
    },
}

impl Trace {
    pub fn record(&self) -> TraceRecord {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TraceRecord> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn routed(&self, api: &str, environment: &str, log_phase: bool) {
        let mut r = self.lock();
        r.api = Some(api.to_string());
        r.environment = Some(environment.to_string());
        r.log_phase = log_phase;
    }

    pub(crate) fn request_step(
        &self,
        b: &Binding,
        result: &Result<RequestAction, PolicyError>,
        took: Duration,
    ) {
        let mut step = Step::new(b, Phase::Request, took);
        match result {
            Ok(RequestAction::Continue(c)) => {
                step.changes.extend(c.headers.iter().map(|op| describe(op, "")));
                step.changes.extend(c.path.iter().map(|p| format!("path → {p}")));
                step.changes.extend(c.query.iter().map(|q| format!("query → {q}")));
                if let Some(id) = &c.identity {
                    let who = [("app", &id.app_id), ("user", &id.user)];
                    for (what, v) in who.iter().filter_map(|(w, v)| Some((w, v.as_ref()?))) {
                        step.changes.push(format!("identity {what} = {v}"));
                    }
                }
                step.changes.extend(c.context.iter().map(|(k, v)| format!("context {k} = {v}")));
                step.changes.extend(c.backend.iter().map(|t| format!("backend → {}", t.url)));
                step.changes.extend(c.response_headers.iter().map(|op| describe(op, "response ")));
            }
            Ok(RequestAction::Respond(reply)) => {
                step.decision = Decision::Respond;
                step.status = Some(reply.status.as_u16());
            }
            Err(e) => step.failed(b, e),
        }
        self.lock().steps.push(step);
    }

    pub(crate) fn response_step(
        &self,
        b: &Binding,
        result: &Result<ResponseAction, PolicyError>,
        took: Duration,
    ) {
        let mut step = Step::new(b, Phase::Response, took);
        match result {
            Ok(ResponseAction::Continue(c)) => {
                step.status = c.status.map(|s| s.as_u16());
                step.changes.extend(c.headers.iter().map(|op| describe(op, "")));
            }
            Ok(ResponseAction::Replace(reply)) => {
                step.decision = Decision::Replace;
                step.status = Some(reply.status.as_u16());
            }
            Err(e) => step.failed(b, e),
        }
        self.lock().steps.push(step);
    }

    /// The response headers bindings declared at load, applied without calling them.
    pub(crate) fn declared_headers(&self, bindings: &[Binding]) {
        let mut r = self.lock();
        for b in bindings {
            let ops = &b.policy.info().fixed_response_headers;
            if !ops.is_empty() {
                let mut step = Step::new(b, Phase::Response, Duration::ZERO);
                step.declared = true;
                step.changes = ops.iter().map(|op| describe(op, "")).collect();
                r.steps.push(step);
            }
        }
    }

    pub(crate) fn log_step(&self, b: &Binding, result: &Result<(), PolicyError>, took: Duration) {
        let mut step = Step::new(b, Phase::Log, took);
        if let Err(e) = result {
            // A log phase cannot change the response: a failure only skips this binding.
            step.decision = Decision::Skipped;
            step.error = Some(e.to_string());
        }
        self.lock().steps.push(step);
    }

    pub(crate) fn backend(&self, backend: BackendTrace) {
        self.lock().backend = backend;
    }

    pub(crate) fn backend_sent(&self, method: &Method, uri: &Uri, headers: &HeaderMap, attempt: u32) {
        self.backend(BackendTrace::Http {
            method: method.to_string(),
            url: uri.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            status: None,
            outcome: "sent",
            micros: 0,
            attempt,
        });
    }

    pub(crate) fn backend_answered(
        &self,
        answer: Option<StatusCode>,
        outcome: BackendOutcome,
        took: Duration,
    ) {
        if let BackendTrace::Http { status, outcome: o, micros, .. } = &mut self.lock().backend {
            *status = answer.map(|s| s.as_u16());
            *o = match outcome {
                BackendOutcome::Responded => "responded",
                BackendOutcome::TimedOut => "timed out",
                BackendOutcome::Failed => "failed",
                BackendOutcome::NotCalled => "not called",
            };
            *micros = took.as_micros() as u64;
        }
    }

    pub(crate) fn log_finished(&self) {
        self.log_done.notify_one();
    }

    /// Wait until the log phases have run (if the API has any), at most `limit`.
    pub async fn complete(&self, limit: Duration) {
        if self.lock().log_phase {
            let _ = tokio::time::timeout(limit, self.log_done.notified()).await;
        }
    }
}

impl Step {
    fn new(b: &Binding, phase: Phase, took: Duration) -> Step {
        Step {
            plugin: b.policy.plugin_name().to_string(),
            grants: b.policy.grants(),
            phase,
            decision: Decision::Continue,
            changes: Vec::new(),
            status: None,
            error: None,
            declared: false,
            micros: took.as_micros() as u64,
        }
    }

    fn failed(&mut self, b: &Binding, e: &PolicyError) {
        self.decision = if b.on_error == OnError::Open { Decision::Skipped } else { Decision::Failed };
        self.error = Some(e.to_string());
    }
}

fn describe(op: &HeaderOp, on: &str) -> String {
    let value = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    match op {
        HeaderOp::Set(n, v) => format!("set {on}header {n}: {}", value(v)),
        HeaderOp::Append(n, v) => format!("add {on}header {n}: {}", value(v)),
        HeaderOp::AppendValue(n, v) => format!("append to {on}header {n}: {}", value(v)),
        HeaderOp::SetIfAbsent(n, v) => format!("set {on}header {n} if absent: {}", value(v)),
        HeaderOp::Remove(n) => format!("remove {on}header {n}"),
    }
}
