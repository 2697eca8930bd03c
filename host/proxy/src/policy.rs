//! What the proxy core knows of policies: a trait with one method per phase, in the order
//! the phases run, and plain Rust views and actions. The plugin runtime implements the trait
//! with Wasm components; the proxy never sees wasmtime.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

/// Which phases a binding runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    pub request: bool,
    pub response: bool,
    pub log: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSelection {
    None,
    All,
    /// Lower-case names.
    Only(Vec<HeaderName>),
}

impl HeaderSelection {
    /// Every header either selection selects.
    pub fn union(&self, other: &HeaderSelection) -> HeaderSelection {
        use HeaderSelection::*;
        match (self, other) {
            (All, _) | (_, All) => All,
            (None, x) | (x, None) => x.clone(),
            (Only(a), Only(b)) => {
                let mut names = a.clone();
                names.extend(b.iter().filter(|n| !a.contains(n)).cloned());
                Only(names)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyNeed {
    None,
    Prefix(u32),
    Full(u32),
}

impl BodyNeed {
    /// The larger of two needs: a chain needs what its hungriest binding needs.
    pub fn max(self, other: BodyNeed) -> BodyNeed {
        use BodyNeed::*;
        match (self, other) {
            (Full(a), Full(b)) => Full(a.max(b)),
            (Full(a), Prefix(b)) | (Prefix(b), Full(a)) => Full(a.max(b)),
            (Prefix(a), Prefix(b)) => Prefix(a.max(b)),
            (None, x) | (x, None) => x,
        }
    }
}

/// What a binding declared when its config was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingInfo {
    pub phases: Phases,
    pub request_headers: HeaderSelection,
    pub response_headers: HeaderSelection,
    pub request_body: BodyNeed,
    pub response_body: BodyNeed,
    /// Applied to every response of the API without calling the plugin.
    pub fixed_response_headers: Vec<HeaderOp>,
}

/// Where a request was routed.
#[derive(Debug, Clone, Default)]
pub struct RouteInfo {
    pub api_id: String,
    pub group_id: String,
    pub environment: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub app_id: Option<String>,
    pub user: Option<String>,
}

/// The request as policies see it (with earlier policies' changes applied).
pub struct RequestView<'a> {
    pub request_id: &'a str,
    pub route: &'a RouteInfo,
    pub method: &'a Method,
    pub scheme: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub path_params: &'a [(String, String)],
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
    pub identity: &'a Identity,
    pub context: &'a [(String, String)],
    pub body: Option<&'a [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOutcome {
    Responded,
    TimedOut,
    Failed,
    NotCalled,
}

pub struct ResponseView<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub outcome: BackendOutcome,
    pub backend_latency: Duration,
    pub body: Option<&'a [u8]>,
}

pub struct LogView<'a> {
    pub request: RequestView<'a>,
    pub response: ResponseView<'a>,
    pub start_time: SystemTime,
    pub total_latency: Duration,
    pub request_size: u64,
    pub response_size: u64,
    pub request_body_truncated: bool,
    pub response_body_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace every line with this one.
    Set(HeaderName, HeaderValue),
    /// Add another line.
    Append(HeaderName, HeaderValue),
    /// Add `, value` to the (joined) existing value, or add the header.
    AppendValue(HeaderName, HeaderValue),
    /// Add the header only if absent.
    SetIfAbsent(HeaderName, HeaderValue),
    Remove(HeaderName),
}

impl HeaderOp {
    pub fn name(&self) -> &HeaderName {
        match self {
            HeaderOp::Set(n, _)
            | HeaderOp::Append(n, _)
            | HeaderOp::AppendValue(n, _)
            | HeaderOp::SetIfAbsent(n, _)
            | HeaderOp::Remove(n) => n,
        }
    }

    pub fn value(&self) -> Option<&HeaderValue> {
        match self {
            HeaderOp::Set(_, v)
            | HeaderOp::Append(_, v)
            | HeaderOp::AppendValue(_, v)
            | HeaderOp::SetIfAbsent(_, v) => Some(v),
            HeaderOp::Remove(_) => None,
        }
    }

    pub fn apply(self, headers: &mut HeaderMap) {
        match self {
            HeaderOp::Set(n, v) => {
                headers.insert(n, v);
            }
            HeaderOp::Append(n, v) => {
                headers.append(n, v);
            }
            HeaderOp::AppendValue(n, v) => {
                let mut joined: Vec<u8> = Vec::new();
                for old in headers.get_all(&n) {
                    joined.extend_from_slice(old.as_bytes());
                    joined.extend_from_slice(b", ");
                }
                let value = if joined.is_empty() {
                    v
                } else {
                    joined.extend_from_slice(v.as_bytes());
                    // Joined valid values with ", " are a valid value.
                    HeaderValue::from_bytes(&joined).unwrap_or(v)
                };
                headers.insert(n, value);
            }
            HeaderOp::SetIfAbsent(n, v) => {
                if !headers.contains_key(&n) {
                    headers.insert(n, v);
                }
            }
            HeaderOp::Remove(n) => {
                headers.remove(n);
            }
        }
    }
}

/// A complete response produced by a policy.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// Another HTTP backend for this request (a circuit breaker's fallback).
#[derive(Debug, Clone)]
pub struct BackendTarget {
    pub url: String,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct RequestChanges {
    pub headers: Vec<HeaderOp>,
    /// Applied to this request's response before the response phases.
    pub response_headers: Vec<HeaderOp>,
    pub path: Option<String>,
    pub query: Option<String>,
    pub identity: Option<Identity>,
    pub context: Vec<(String, String)>,
    pub backend: Option<BackendTarget>,
}

/// The parts of a request a policy's `continue` may change, as the next policy and phase
/// see them.
pub struct ChangeableRequest<'a> {
    pub headers: &'a mut HeaderMap,
    pub path: &'a mut String,
    pub query: &'a mut String,
    pub identity: &'a mut Identity,
    pub context: &'a mut Vec<(String, String)>,
}

impl RequestChanges {
    /// Apply the changes to the request itself (headers, path, query, identity; a context
    /// key set again replaces its value), moving them out; the backend and response headers
    /// stay for the caller.
    pub fn apply_to(&mut self, request: ChangeableRequest<'_>) {
        for op in self.headers.drain(..) {
            op.apply(request.headers);
        }
        if let Some(p) = self.path.take() {
            *request.path = p;
        }
        if let Some(q) = self.query.take() {
            *request.query = q;
        }
        if let Some(id) = self.identity.take() {
            *request.identity = id;
        }
        for (k, v) in self.context.drain(..) {
            match request.context.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => request.context.push((k, v)),
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum RequestAction {
    Continue(RequestChanges),
    Respond(Reply),
}

#[derive(Debug, Clone, Default)]
pub struct ResponseChanges {
    pub status: Option<StatusCode>,
    pub headers: Vec<HeaderOp>,
}

#[derive(Debug, Clone)]
pub enum ResponseAction {
    Continue(ResponseChanges),
    Replace(Reply),
}

/// Why a policy call failed. The instance that failed has been discarded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("trapped: {0}")]
    Trap(String),
    #[error("CPU deadline exceeded")]
    Deadline,
    #[error("memory limit exceeded")]
    Memory,
    #[error("invalid action: {0}")]
    InvalidAction(String),
    #[error("no instance available: {0}")]
    Unavailable(String),
}

/// A phase call's outcome: there at once for policies that never wait, or a future for
/// those that wait on the network (outbound HTTP). Awaiting either is the same to the
/// caller; the ready case costs no allocation.
pub enum Call<'a, T> {
    Ready(Option<Result<T, PolicyError>>),
    Waiting(Pin<Box<dyn Future<Output = Result<T, PolicyError>> + Send + 'a>>),
}

impl<T: Unpin> Future for Call<'_, T> {
    type Output = Result<T, PolicyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Call::Ready(r) => Poll::Ready(r.take().expect("a ready call is polled once")),
            Call::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

impl<T: Unpin> Call<'_, T> {
    /// The outcome if it needs no waiting (for benchmarks and callers without a runtime).
    pub fn now_or_never(mut self) -> Option<Result<T, PolicyError>> {
        match Pin::new(&mut self).poll(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }
}

/// A configured policy on one API. Methods are listed in the order the phases run; each is
/// only called if [`BindingInfo::phases`] says so.
pub trait Policy: Send + Sync {
    /// The plugin's name, for errors and logs.
    fn plugin_name(&self) -> &str;

    /// What the binding declared at load.
    fn info(&self) -> &BindingInfo;

    /// What the binding was granted beyond its own state (outbound origins, log sinks,
    /// backend overrides), in words: for `wasmgate validate` and traces.
    fn grants(&self) -> String {
        "none".into()
    }

    /// Before the backend is called; may change the request or answer it.
    fn on_request<'a>(&'a self, request: &'a RequestView<'_>) -> Call<'a, RequestAction>;

    /// After the backend answered (or failed, or a policy replied); may change or replace
    /// the response.
    fn on_response<'a>(
        &'a self,
        request: &'a RequestView<'_>,
        response: &'a ResponseView<'_>,
    ) -> Call<'a, ResponseAction>;

    /// After the response was sent, off the client's path.
    fn on_log<'a>(&'a self, entry: &'a LogView<'_>) -> Call<'a, ()>;
}
