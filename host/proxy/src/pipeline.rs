//! One request through the gateway, phase by phase: route → size limits and declared
//! parameters → request phase → mapping → backend (retries, channel members) → response
//! phase → custom errors → send (metrics, access log, span) → log phase.

use crate::access_log::{AccessLine, RequestSpan, Served};
use crate::backend::{self, Backend, HttpBackend, Target};
use crate::body::GatewayBody;
use crate::error::ErrorInfo;
use crate::error::GatewayError;
use crate::metrics::Phase;
use crate::params::{RequestParams, SystemValues};
use crate::policy::*;
use crate::trace::{BackendTrace, Trace};
use crate::traceparent::{TRACEPARENT, TraceContext};
use crate::{Api, Connection, OnError, ProxyState, Snapshot};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};
use tracing::warn;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request as it moves through the phases. Policies see it through [`Exchange::view`].
struct Exchange {
    request_id: String,
    method: Method,
    scheme: &'static str,
    host: String,
    path: String,
    query: String,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    client_ip: std::net::IpAddr,
    identity: Identity,
    context: Vec<(String, String)>,
    body: Option<Bytes>,
    /// Set for a chunked request body: whether it passed the gateway's limit, and the limit.
    body_exceeded: Option<(Arc<AtomicBool>, u64)>,
    /// The W3C trace this request belongs to.
    trace_context: TraceContext,
}

impl Exchange {
    fn view<'a>(&'a self, route: &'a RouteInfo) -> RequestView<'a> {
        RequestView {
            request_id: &self.request_id,
            route,
            method: &self.method,
            scheme: self.scheme,
            host: &self.host,
            path: &self.path,
            query: &self.query,
            path_params: &self.params,
            headers: &self.headers,
            client_ip: self.client_ip,
            identity: &self.identity,
            context: &self.context,
            body: self.body.as_deref(),
        }
    }
}

fn request_id(headers: &HeaderMap) -> String {
    // Keep the caller's id when it is sane, so a trace spans client, gateway and backend.
    if let Some(id) = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok())
        && !id.is_empty()
        && id.len() <= 128
    {
        return id.to_string();
    }
    // 128 random bits as 32 hex digits, without the formatting machinery (this runs for
    // nearly every request).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    let mut id = String::with_capacity(32);
    for _ in 0..32 {
        id.push(HEX[(bits & 0xf) as usize] as char);
        bits >>= 4;
    }
    id
}

fn host_of(req: &Request<Incoming>) -> String {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let without_port = match raw.rsplit_once(':') {
        // Keep IPv6 literals like [::1] whole.
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    without_port.to_ascii_lowercase()
}

/// A binding failed: log it, and with `on_error: closed` return the error response that
/// ends the request (`None`: skip the binding and go on).
fn binding_failed(
    api: &Api,
    b: &crate::Binding,
    e: &PolicyError,
    request_id: &str,
) -> Option<Response<GatewayBody>> {
    let plugin = b.policy.plugin_name();
    if b.on_error == OnError::Open {
        warn!(api = %api.route.api_id, plugin, error = %e, "plugin failed; skipped (on_error: open)");
        return None;
    }
    warn!(api = %api.route.api_id, plugin, error = %e, "plugin failed");
    let plugin = plugin.to_string();
    let error = match e {
        PolicyError::Deadline => GatewayError::PluginDeadline { plugin },
        PolicyError::Memory => GatewayError::PluginMemory { plugin },
        PolicyError::InvalidAction(detail) => {
            GatewayError::PluginInvalidAction { plugin, detail: detail.clone() }
        }
        PolicyError::Trap(_) | PolicyError::Unavailable(_) => GatewayError::PluginFailed { plugin },
    };
    Some(error.to_response(request_id))
}

/// Read up to `limit` bytes of a body. Returns what was read and the unread rest, if any.
async fn read_prefix(mut body: Incoming, limit: usize) -> Result<(Bytes, Option<Incoming>), hyper::Error> {
    let mut buf = BytesMut::new();
    while buf.len() < limit {
        match body.frame().await {
            Some(frame) => {
                if let Ok(data) = frame?.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            None => return Ok((buf.freeze(), None)),
        }
    }
    let rest = if body.is_end_stream() { None } else { Some(body) };
    Ok((buf.freeze(), rest))
}

fn rejoin(head: Bytes, rest: Option<Incoming>) -> GatewayBody {
    match rest {
        None => GatewayBody::full(head),
        Some(rest) => GatewayBody::Prefixed { head: Some(head), rest },
    }
}

/// The request-context key under which policies find the verified client certificate's
/// subject on mutual-TLS connections.
pub const CLIENT_CERT_SUBJECT: &str = "client_cert_subject";

/// Serve one request. Never fails: every error becomes a gateway error response. Records
/// the request's metrics, access log line and span once the response head is ready.
pub async fn handle(
    state: Arc<ProxyState>,
    req: Request<Incoming>,
    conn: &Connection,
) -> Response<GatewayBody> {
    let start = Instant::now();
    let snapshot = state.snapshot.load_full();
    let access = snapshot.access_log.map(|level| AccessLine::new(level, &req, conn));
    let spans = snapshot
        .spans
        .clone()
        .map(|sink| (sink, req.method().clone(), req.uri().path().to_string(), SystemTime::now()));
    let mut served = Served::default();
    let method = req.method().clone();
    let response = serve(&state, snapshot, req, conn, start, &mut served).await;
    let took = start.elapsed();
    let metrics = served.api.as_ref().map_or(&state.unmatched, |api| &api.metrics);
    metrics.finished(&method, response.status().as_u16(), took);
    if let Some(line) = access {
        line.emit(&served, &response, took);
    }
    if let Some((sink, method, path, started)) = spans {
        RequestSpan::record(&*sink, &served, &method, &path, started, &response);
    }
    response
}

/// [`handle`] without the request metrics and access log; what it finds goes in `served`.
async fn serve(
    state: &Arc<ProxyState>,
    snapshot: Arc<Snapshot>,
    req: Request<Incoming>,
    conn: &Connection,
    start: Instant,
    served: &mut Served,
) -> Response<GatewayBody> {
    let start_wall = SystemTime::now();
    let host = host_of(&req);
    let rid = request_id(req.headers());
    let Routed { path, api, params, method_matched } = match route(&snapshot, &req, &host, conn) {
        Ok(routed) => routed,
        Err(e) => return finish(e.to_response(&rid), &rid),
    };
    served.api = Some(api.clone());
    let trace = conn.trace.as_deref();
    if let Some(t) = trace {
        t.routed(&api.route.api_id, &api.route.environment, api.chain.has_log_phase);
    }
    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in `:authority`; give policies the `Host` header an HTTP/1.1
    // request would have had (signatures cover it).
    if !parts.headers.contains_key(header::HOST)
        && let Some(v) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, v);
    }
    let client_ip = conn.listener.client_ip(conn.peer.ip(), &parts.headers);
    let context = match conn.tls.as_ref().and_then(|t| t.client_subject.as_ref()) {
        Some(subject) => vec![(CLIENT_CERT_SUBJECT.to_string(), subject.clone())],
        None => Vec::new(),
    };
    let trace_context = TraceContext::of(&parts.headers);
    let mut ex = Exchange {
        request_id: rid,
        method: parts.method,
        scheme: conn.scheme(),
        host,
        path,
        query: parts.uri.query().unwrap_or("").to_string(),
        params,
        headers: parts.headers,
        client_ip,
        identity: Identity::default(),
        context,
        body: None,
        body_exceeded: None,
        trace_context,
    };
    served.trace = Some(ex.trace_context);
    let chain = &api.chain;
    // An API's own error answers, where its group has them.
    let answer = |e: GatewayError, rid: &str| {
        let response = e.to_response(rid);
        finish(
            match &api.errors {
                Some(custom) => crate::error::customize(custom, response, rid),
                None => response,
            },
            rid,
        )
    };
    let limits = snapshot.limits;
    let declared_length = match check_request(&api, &mut ex, limits) {
        Ok(length) => length,
        Err(e) => return answer(e, &ex.request_id),
    };

    let (request_body, request_body_truncated) =
        match request_body(chain.request_body, body, &mut ex, declared_length, limits).await {
            Ok(read) => read,
            Err(e) => return answer(e, &ex.request_id),
        };

    let RequestPhase { early, backend_override, response_ops } = request_phase(&api, &mut ex, trace).await;
    if early.is_none() && !method_matched {
        // An OPTIONS request routed only for its preflight, and nothing answered it.
        return answer(GatewayError::RouteNotFound, &ex.request_id);
    }

    // Backend.
    let backend_start = Instant::now();
    let (mut response, outcome) = match early {
        Some(r) => (r, BackendOutcome::NotCalled),
        None => call_backend(state, &api, &mut ex, backend_override, request_body, trace).await,
    };
    let backend_latency = backend_start.elapsed();
    if outcome != BackendOutcome::NotCalled {
        api.metrics.backend(backend_latency);
        served.backend = Some(backend_latency);
    }
    if snapshot.access_log.is_some() {
        served.app_id = ex.identity.app_id.clone();
    }
    backend::strip_hop_by_hop(response.headers_mut());
    // Header operations declared at load, then those decided in the request phase.
    if let Some(t) = trace {
        t.declared_headers(&chain.bindings);
    }
    for op in chain.fixed_response_headers.iter().cloned().chain(response_ops) {
        op.apply(response.headers_mut());
    }

    let (mut response, response_prefix, response_body_truncated) =
        match response_phase(&api, &ex, response, outcome, backend_latency, trace).await {
            Ok(phase) => phase,
            Err(e) => return answer(e, &ex.request_id),
        };

    if let Some(custom) = &api.errors {
        ErrorInfo::mark_reply(&mut response);
        response = crate::error::customize(custom, response, &ex.request_id);
    }
    let mut response = finish(response, &ex.request_id);
    if chain.has_log_phase {
        let request_size = declared_length.or_else(|| ex.body.as_ref().map(|b| b.len() as u64)).unwrap_or(0);
        let record = LogRecord {
            api: api.clone(),
            ex,
            status: response.status(),
            response_headers: response.headers().clone(),
            outcome,
            backend_latency,
            response_body: response_prefix,
            start_wall,
            start,
            request_size,
            request_body_truncated,
            response_body_truncated,
            trace: conn.trace.clone(),
        };
        let (parts, body) = response.into_parts();
        let body = body.observed(move |sent| {
            // After the last byte went out (or the client went away): off the client's path.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(record.run(sent));
            }
        });
        response = Response::from_parts(parts, body);
    }
    response
}

/// Where a request goes: its normalised path, the API, the parameters the route captured,
/// and whether the method matched (else only the API's CORS preflight may answer).
struct Routed {
    path: String,
    api: Arc<Api>,
    params: Vec<(String, String)>,
    method_matched: bool,
}

fn route(
    snapshot: &Snapshot,
    req: &Request<Incoming>,
    host: &str,
    conn: &Connection,
) -> Result<Routed, GatewayError> {
    // Owned here anyway (the exchange keeps it); not a second allocation.
    let path = crate::path::normalize(req.uri().path(), snapshot.limits.encoded_slashes)
        .map_err(GatewayError::BadPath)?
        .into_owned();
    let found = snapshot.router(req.headers()).and_then(|r| r.find(host, req.method(), &path));
    let found = found.ok_or(GatewayError::RouteNotFound)?;
    // A mutual-TLS domain is only served on a connection whose handshake named it: otherwise
    // a client could shake hands as another domain and skip the certificate check.
    if snapshot.tls.requires_client_certificate(host)
        && conn.tls.as_ref().and_then(|t| t.server_name.as_deref()) != Some(host)
    {
        return Err(GatewayError::Misdirected);
    }
    let (api, method_matched) = (found.value.clone(), found.method_matched);
    Ok(Routed { path, api, params: found.params, method_matched })
}

/// The request's size limits, and its declared parameters (checked, defaults filled in).
/// Returns the body length it declares.
fn check_request(
    api: &Api,
    ex: &mut Exchange,
    limits: crate::RequestLimits,
) -> Result<Option<u64>, GatewayError> {
    let header_bytes: usize = ex.headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if header_bytes > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge(limits.max_header_bytes));
    }
    // Read now: the headers go to the backend before the log phase runs.
    let declared_length =
        ex.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared_length.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(GatewayError::RequestTooLarge(limits.max_body_bytes));
    }
    if !api.parameters.is_empty() {
        let mut params =
            RequestParams { path: &mut ex.params, query: &mut ex.query, headers: &mut ex.headers };
        params.validate(&api.parameters).map_err(GatewayError::InvalidParameter)?;
    }
    Ok(declared_length)
}

/// Read as much of the request body as the chain's bindings asked for (none: it streams
/// untouched), into `ex.body`; a body of unknown length is counted as it streams and cut off
/// past the limit. The body to send on, and whether the bindings saw only part of it.
async fn request_body(
    need: BodyNeed,
    body: Incoming,
    ex: &mut Exchange,
    declared_length: Option<u64>,
    limits: crate::RequestLimits,
) -> Result<(GatewayBody, bool), GatewayError> {
    let mut truncated = false;
    let body = if let BodyNeed::Prefix(n) | BodyNeed::Full(n) = need {
        let full = matches!(need, BodyNeed::Full(_));
        // One byte more than a `full` cap tells a body at the cap from one over it.
        let (head, rest) = read_prefix(body, n as usize + usize::from(full))
            .await
            .map_err(|_| GatewayError::BadRequest("the request body could not be read"))?;
        if full && head.len() > n as usize {
            return Err(GatewayError::BodyTooLarge);
        }
        truncated = rest.is_some() || head.len() > n as usize;
        ex.body = Some(head.slice(..head.len().min(n as usize)));
        rejoin(head, rest)
    } else {
        GatewayBody::Incoming(body)
    };
    if declared_length.is_none() && !body.is_end_stream() {
        let exceeded = Arc::new(AtomicBool::new(false));
        ex.body_exceeded = Some((exceeded.clone(), limits.max_body_bytes));
        return Ok((body.limited(limits.max_body_bytes, exceeded), truncated));
    }
    Ok((body, truncated))
}

/// What the request phase decided.
struct RequestPhase {
    /// A binding's reply (or failure), which ends the phase and replaces the backend.
    early: Option<Response<GatewayBody>>,
    /// The backend a binding switched to.
    backend_override: Option<BackendTarget>,
    /// Response headers bindings set now, applied when the response comes.
    response_ops: Vec<HeaderOp>,
}

/// Each binding's request phase in order; a `continue` changes the request for the next.
async fn request_phase(api: &Api, ex: &mut Exchange, trace: Option<&Trace>) -> RequestPhase {
    let mut phase = RequestPhase { early: None, backend_override: None, response_ops: Vec::new() };
    for b in api.chain.bindings.iter().filter(|b| b.policy.info().phases.request) {
        // Timed for the metrics or a debug trace only.
        let called = (b.metrics.on() || trace.is_some()).then(Instant::now);
        let result = b.policy.on_request(&ex.view(&api.route)).await;
        let took = called.map_or(Duration::ZERO, |c| c.elapsed());
        b.metrics.call(Phase::Request, took, result.is_err());
        if let Some(t) = trace {
            t.request_step(b, &result, took);
        }
        match result {
            Ok(RequestAction::Continue(mut changes)) => {
                changes.apply_to(ChangeableRequest {
                    headers: &mut ex.headers,
                    path: &mut ex.path,
                    query: &mut ex.query,
                    identity: &mut ex.identity,
                    context: &mut ex.context,
                });
                if changes.backend.is_some() {
                    phase.backend_override = changes.backend;
                }
                phase.response_ops.extend(changes.response_headers);
            }
            Ok(RequestAction::Respond(reply)) => {
                let mut response = Backend::mock_response(&reply);
                if reply.status.as_u16() >= 400 {
                    ErrorInfo::mark_reply(&mut response);
                    let code = response.extensions().get::<ErrorInfo>().map(|e| e.code.as_str());
                    b.metrics.rejected(reply.status, code);
                }
                phase.early = Some(response);
                break;
            }
            Err(e) => {
                if let Some(r) = binding_failed(api, b, &e, &ex.request_id) {
                    phase.early = Some(r);
                    break;
                }
            }
        }
    }
    phase
}

/// Each binding's response phase in order, after reading as much of the body as they asked
/// for. The response, the body prefix they saw, and whether it was cut short.
async fn response_phase(
    api: &Api,
    ex: &Exchange,
    mut response: Response<GatewayBody>,
    outcome: BackendOutcome,
    backend_latency: Duration,
    trace: Option<&Trace>,
) -> Result<(Response<GatewayBody>, Option<Bytes>, bool), GatewayError> {
    let chain = &api.chain;
    let mut truncated = false;
    let mut prefix: Option<Bytes> = None;
    if !chain.has_response_phase {
        return Ok((response, prefix, truncated));
    }
    if let BodyNeed::Prefix(n) | BodyNeed::Full(n) = chain.response_body {
        let (parts, body) = response.into_parts();
        let body = match body {
            GatewayBody::Incoming(b) => {
                let (head, rest) =
                    read_prefix(b, n as usize).await.map_err(|_| GatewayError::BackendUnavailable)?;
                truncated = rest.is_some() || head.len() > n as usize;
                prefix = Some(head.slice(..head.len().min(n as usize)));
                rejoin(head, rest)
            }
            GatewayBody::Full(Some(b)) => {
                prefix = Some(b.slice(..b.len().min(n as usize)));
                GatewayBody::Full(Some(b))
            }
            other => other,
        };
        response = Response::from_parts(parts, body);
    }
    for b in chain.bindings.iter().filter(|b| b.policy.info().phases.response) {
        let view = ResponseView {
            status: response.status(),
            headers: response.headers(),
            outcome,
            backend_latency,
            body: prefix.as_deref(),
        };
        let called = (b.metrics.on() || trace.is_some()).then(Instant::now);
        let result = b.policy.on_response(&ex.view(&api.route), &view).await;
        let took = called.map_or(Duration::ZERO, |c| c.elapsed());
        b.metrics.call(Phase::Response, took, result.is_err());
        if let Some(t) = trace {
            t.response_step(b, &result, took);
        }
        match result {
            Ok(ResponseAction::Continue(changes)) => {
                if let Some(s) = changes.status {
                    *response.status_mut() = s;
                }
                for op in changes.headers {
                    op.apply(response.headers_mut());
                }
            }
            Ok(ResponseAction::Replace(reply)) => {
                prefix = Some(reply.body.clone());
                response = Backend::mock_response(&reply);
            }
            Err(e) => {
                if let Some(r) = binding_failed(api, b, &e, &ex.request_id) {
                    response = r;
                    break;
                }
            }
        }
    }
    Ok((response, prefix, truncated))
}

/// Everything the log phase needs once the response has been sent.
struct LogRecord {
    api: Arc<Api>,
    ex: Exchange,
    status: StatusCode,
    response_headers: HeaderMap,
    outcome: BackendOutcome,
    backend_latency: Duration,
    response_body: Option<Bytes>,
    start_wall: SystemTime,
    start: Instant,
    request_size: u64,
    request_body_truncated: bool,
    response_body_truncated: bool,
    trace: Option<Arc<Trace>>,
}

impl LogRecord {
    async fn run(self, response_size: u64) {
        let total_latency = self.start.elapsed();
        for b in self.api.chain.bindings.iter().filter(|b| b.policy.info().phases.log) {
            let entry = LogView {
                request: self.ex.view(&self.api.route),
                response: ResponseView {
                    status: self.status,
                    headers: &self.response_headers,
                    outcome: self.outcome,
                    backend_latency: self.backend_latency,
                    body: self.response_body.as_deref(),
                },
                start_time: self.start_wall,
                total_latency,
                request_size: self.request_size,
                response_size,
                request_body_truncated: self.request_body_truncated,
                response_body_truncated: self.response_body_truncated,
            };
            let called = (b.metrics.on() || self.trace.is_some()).then(Instant::now);
            let result = b.policy.on_log(&entry).await;
            let took = called.map_or(Duration::ZERO, |c| c.elapsed());
            b.metrics.call(Phase::Log, took, result.is_err());
            if let Some(t) = &self.trace {
                t.log_step(b, &result, took);
            }
            if let Err(e) = result {
                warn!(api = %self.api.route.api_id, plugin = b.policy.plugin_name(), error = %e, "log phase failed");
            }
        }
        if let Some(t) = &self.trace {
            t.log_finished();
        }
    }
}

/// Headers every response carries.
fn finish(mut response: Response<GatewayBody>, request_id: &str) -> Response<GatewayBody> {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    response
}

async fn call_backend(
    state: &ProxyState,
    api: &Api,
    ex: &mut Exchange,
    target: Option<BackendTarget>,
    body: GatewayBody,
    trace: Option<&Trace>,
) -> (Response<GatewayBody>, BackendOutcome) {
    let fallback;
    let http = match (&target, &api.backend) {
        (Some(t), _) => {
            let timeout = t.timeout.unwrap_or(Duration::from_secs(5));
            match HttpBackend::parse(&t.url, None, timeout, state.client.clone()) {
                Ok(b) => {
                    fallback = b;
                    &fallback
                }
                Err(e) => {
                    let err = GatewayError::PluginInvalidAction {
                        plugin: "backend override".into(),
                        detail: e.to_string(),
                    };
                    return (err.to_response(&ex.request_id), BackendOutcome::NotCalled);
                }
            }
        }
        (None, Backend::Http(h)) => h,
        (None, Backend::Mock(reply)) => {
            if let Some(t) = trace {
                t.backend(BackendTrace::Mock { status: reply.status.as_u16() });
            }
            return (Backend::mock_response(reply), BackendOutcome::NotCalled);
        }
    };
    if !api.mapping.is_empty() {
        let system = SystemValues {
            client_ip: ex.client_ip,
            request_id: &ex.request_id,
            app_id: ex.identity.app_id.as_deref(),
            api_id: &api.route.api_id,
        };
        let mut params =
            RequestParams { path: &mut ex.params, query: &mut ex.query, headers: &mut ex.headers };
        params.map(&api.mapping, &system);
    }
    let Ok(pq) = http.path_and_query(&ex.path, &ex.params, &ex.query) else {
        let err = GatewayError::BadRequest("the backend path cannot be built from this request");
        return (err.to_response(&ex.request_id), BackendOutcome::NotCalled);
    };
    let hash_key = match &http.target {
        Target::Channel(c) => c.hash_key(ex.client_ip, &ex.headers),
        Target::Host(_) => None,
    };
    // The headers go to the backend; keep back copies of only those later phases read.
    let mut headers = match &api.chain.later_request_headers {
        HeaderSelection::None => std::mem::take(&mut ex.headers),
        HeaderSelection::All => ex.headers.clone(),
        HeaderSelection::Only(names) => {
            let mut kept = HeaderMap::new();
            for n in names {
                for v in ex.headers.get_all(n) {
                    kept.append(n.clone(), v.clone());
                }
            }
            std::mem::replace(&mut ex.headers, kept)
        }
    };
    backend::strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST); // the client sets the backend's own Host from the URI
    backend::add_forwarded(&mut headers, ex.client_ip, ex.scheme, &ex.host);
    if let Ok(v) = HeaderValue::from_str(&ex.request_id) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
    headers.insert(TRACEPARENT.clone(), ex.trace_context.header());

    let out = backend::Outgoing {
        method: &ex.method,
        path_and_query: &pq,
        headers,
        body,
        hash_key,
        body_exceeded: ex.body_exceeded.as_ref(),
        request_id: &ex.request_id,
        api_id: &api.route.api_id,
    };
    http.send(out, trace).await
}
