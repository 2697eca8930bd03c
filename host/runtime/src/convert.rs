//! Between the proxy's views/actions and the WIT types. Only the headers and body bytes a
//! binding selected cross the boundary; plugin output is validated here (header names and
//! values, statuses), so the proxy only ever applies well-formed actions.

use crate::bindings::wasmgate::plugin::types as wit;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use smallvec::SmallVec;
use std::time::UNIX_EPOCH;
use wasmgate_proxy::policy::*;

/// Header lines a binding selected, borrowed from the proxy's map. A value that is not
/// UTF-8 (obsolete `obs-text`) is passed as empty rather than copied into a lossy string.
fn headers<'a>(map: &'a HeaderMap, sel: &'a HeaderSelection, out: &mut HeaderLines<'a>) {
    let pair = |n: &'a HeaderName, v: &'a HeaderValue| (n.as_str(), v.to_str().unwrap_or(""));
    match sel {
        HeaderSelection::None => {}
        HeaderSelection::All => out.extend(map.iter().map(|(n, v)| pair(n, v))),
        HeaderSelection::Only(names) => {
            for n in names {
                out.extend(map.get_all(n).iter().map(|v| pair(n, v)));
            }
        }
    }
}

fn body(bytes: Option<&[u8]>, need: BodyNeed) -> Option<&[u8]> {
    let n = match need {
        BodyNeed::None => return None,
        BodyNeed::Prefix(n) | BodyNeed::Full(n) => n as usize,
    };
    bytes.map(|b| &b[..b.len().min(n)])
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// Header lines lowered into a call. Inline up to 8 (a binding selects a few headers, and
/// a request has a dozen or so), so a call allocates no list for them on the host.
pub type HeaderLines<'a> = SmallVec<[(&'a str, &'a str); 8]>;

/// What one binding selected of the request: fields, headers and body.
pub struct RequestSelection {
    pub fields: wit::RequestFields,
    pub headers: HeaderSelection,
    pub body: BodyNeed,
}

/// The lists and the one formatted string a `wit::Request` borrows; everything else is
/// borrowed from the proxy's view directly.
#[derive(Default)]
pub struct RequestParts<'a> {
    headers: HeaderLines<'a>,
    path_params: Vec<(&'a str, &'a str)>,
    context: Vec<(&'a str, &'a str)>,
    client_ip: String,
}

impl<'a> RequestParts<'a> {
    pub fn new(v: &RequestView<'a>, sel: &'a RequestSelection) -> Self {
        use wit::RequestFields as F;
        let mut parts = RequestParts::default();
        headers(v.headers, &sel.headers, &mut parts.headers);
        if sel.fields.contains(F::PATH_PARAMS) {
            parts.path_params = pairs(v.path_params);
        }
        if sel.fields.contains(F::CONTEXT) {
            parts.context = pairs(v.context);
        }
        if sel.fields.contains(F::CLIENT_IP) {
            parts.client_ip = v.client_ip.to_string();
        }
        parts
    }

    pub fn request<'b>(&'b self, v: &'b RequestView<'a>, sel: &RequestSelection) -> wit::Request<'b> {
        use wit::RequestFields as F;
        let has = |f: F| sel.fields.contains(f);
        let method = match *v.method {
            http::Method::GET => wit::Method::Get,
            http::Method::HEAD => wit::Method::Head,
            http::Method::POST => wit::Method::Post,
            http::Method::PUT => wit::Method::Put,
            http::Method::DELETE => wit::Method::Delete,
            http::Method::OPTIONS => wit::Method::Options,
            http::Method::PATCH => wit::Method::Patch,
            ref other => wit::Method::Other(other.as_str()),
        };
        wit::Request {
            method,
            scheme: if v.scheme == "https" { wit::Scheme::Https } else { wit::Scheme::Http },
            headers: &self.headers[..],
            request_id: has(F::REQUEST_ID).then_some(v.request_id),
            route: has(F::ROUTE).then(|| wit::RouteInfo {
                api_id: &v.route.api_id,
                group_id: &v.route.group_id,
                environment: &v.route.environment,
            }),
            host: has(F::HOST).then_some(v.host),
            path: has(F::PATH).then_some(v.path),
            query: has(F::QUERY).then_some(v.query),
            path_params: has(F::PATH_PARAMS).then_some(&self.path_params[..]),
            client_ip: has(F::CLIENT_IP).then_some(&self.client_ip[..]),
            identity: has(F::IDENTITY).then_some(wit::IdentityParam {
                app_id: v.identity.app_id.as_deref(),
                user: v.identity.user.as_deref(),
            }),
            context: has(F::CONTEXT).then_some(&self.context[..]),
            body: body(v.body, sel.body),
        }
    }
}

/// The response's selected header lines, borrowed.
pub fn response_headers<'a>(v: &ResponseView<'a>, sel: &'a HeaderSelection) -> HeaderLines<'a> {
    let mut out = HeaderLines::new();
    headers(v.headers, sel, &mut out);
    out
}

pub fn response<'a>(
    v: &ResponseView<'a>,
    headers: &'a [(&'a str, &'a str)],
    need: BodyNeed,
) -> wit::Response<'a> {
    wit::Response {
        status: v.status.as_u16(),
        headers,
        outcome: match v.outcome {
            BackendOutcome::Responded => wit::BackendOutcome::Responded,
            BackendOutcome::TimedOut => wit::BackendOutcome::TimedOut,
            BackendOutcome::Failed => wit::BackendOutcome::Failed,
            BackendOutcome::NotCalled => wit::BackendOutcome::NotCalled,
        },
        backend_latency_ms: v.backend_latency.as_millis().min(u32::MAX as u128) as u32,
        body: body(v.body, need),
    }
}

pub fn log_entry<'a>(
    v: &LogView<'_>,
    request: wit::Request<'a>,
    response: wit::Response<'a>,
) -> wit::LogEntry<'a> {
    wit::LogEntry {
        request,
        response,
        start_time_ms: v.start_time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        total_latency_ms: v.total_latency.as_millis().min(u32::MAX as u128) as u32,
        request_size: v.request_size,
        response_size: v.response_size,
        request_body_truncated: v.request_body_truncated,
        response_body_truncated: v.response_body_truncated,
    }
}

fn invalid(what: impl std::fmt::Display) -> PolicyError {
    PolicyError::InvalidAction(what.to_string())
}

/// Header names that are not among the standard ones allocate when parsed; plugins send the
/// same few again and again (`x-ratelimit-remaining`), so each thread keeps the ones it has
/// seen (up to a bound) and clones them, which only bumps a reference count.
fn header_name(n: &str) -> Result<HeaderName, PolicyError> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    const MAX_CACHED: usize = 256;
    thread_local! {
        static SEEN: RefCell<HashMap<Box<str>, HeaderName>> = RefCell::new(HashMap::new());
    }
    SEEN.with_borrow_mut(|seen| {
        if let Some(name) = seen.get(n) {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| invalid(format_args!("`{n}` is not a header name")))?;
        if seen.len() < MAX_CACHED {
            seen.insert(n.into(), name.clone());
        }
        Ok(name)
    })
}

fn header_pair((n, v): (String, String)) -> Result<(HeaderName, HeaderValue), PolicyError> {
    // The lifted `String` becomes the value's storage: validated, not copied.
    let value = HeaderValue::from_maybe_shared(Bytes::from(v))
        .map_err(|_| invalid(format_args!("header `{n}` has an invalid value")))?;
    Ok((header_name(&n)?, value))
}

fn header_ops(ops: Vec<wit::HeaderOp>) -> Result<Vec<HeaderOp>, PolicyError> {
    ops.into_iter()
        .map(|op| {
            Ok(match op {
                wit::HeaderOp::Remove(n) => HeaderOp::Remove(header_name(&n)?),
                wit::HeaderOp::Set(p) => header_pair(p).map(|(n, v)| HeaderOp::Set(n, v))?,
                wit::HeaderOp::Append(p) => header_pair(p).map(|(n, v)| HeaderOp::Append(n, v))?,
                wit::HeaderOp::AppendValue(p) => header_pair(p).map(|(n, v)| HeaderOp::AppendValue(n, v))?,
                wit::HeaderOp::SetIfAbsent(p) => header_pair(p).map(|(n, v)| HeaderOp::SetIfAbsent(n, v))?,
            })
        })
        .collect()
}

fn status(s: u16) -> Result<StatusCode, PolicyError> {
    StatusCode::from_u16(s).map_err(|_| invalid(format_args!("{s} is not an HTTP status")))
}

fn reply(r: wit::Reply) -> Result<Reply, PolicyError> {
    Ok(Reply {
        status: status(r.status)?,
        headers: r.headers.into_iter().map(header_pair).collect::<Result<_, _>>()?,
        body: Bytes::from(r.body),
    })
}

pub fn request_action(a: wit::RequestAction) -> Result<RequestAction, PolicyError> {
    Ok(match a {
        wit::RequestAction::Continue(c) => {
            if let Some(p) = &c.path
                && !p.starts_with('/')
            {
                return Err(invalid(format_args!("path `{p}` does not start with /")));
            }
            RequestAction::Continue(RequestChanges {
                headers: header_ops(c.headers)?,
                response_headers: header_ops(c.response_headers)?,
                path: c.path,
                query: c.query,
                identity: c.identity.map(|i| Identity { app_id: i.app_id, user: i.user }),
                context: c.context,
                backend: c.backend.map(|b| BackendTarget {
                    url: b.url,
                    timeout: b.timeout_ms.map(|ms| std::time::Duration::from_millis(ms as u64)),
                }),
            })
        }
        wit::RequestAction::Respond(r) => RequestAction::Respond(reply(r)?),
    })
}

pub fn response_action(a: wit::ResponseAction) -> Result<ResponseAction, PolicyError> {
    Ok(match a {
        wit::ResponseAction::Continue(c) => ResponseAction::Continue(ResponseChanges {
            status: c.status.map(status).transpose()?,
            headers: header_ops(c.headers)?,
        }),
        wit::ResponseAction::Replace(r) => ResponseAction::Replace(reply(r)?),
    })
}

fn selection(s: wit::HeaderSelection) -> Result<HeaderSelection, PolicyError> {
    Ok(match s {
        wit::HeaderSelection::None => HeaderSelection::None,
        wit::HeaderSelection::All => HeaderSelection::All,
        wit::HeaderSelection::Only(names) => HeaderSelection::Only(
            names.iter().map(|n| header_name(&n.to_ascii_lowercase())).collect::<Result<_, _>>()?,
        ),
    })
}

fn body_need(b: wit::BodyNeed) -> BodyNeed {
    match b {
        wit::BodyNeed::None => BodyNeed::None,
        wit::BodyNeed::Prefix(n) => BodyNeed::Prefix(n),
        wit::BodyNeed::Full(n) => BodyNeed::Full(n),
    }
}

/// The proxy's part of what a binding declared, and the request selection the runtime keeps.
/// The capabilities a binding asks for in its `binding-info`.
pub struct Declared {
    pub log_sinks: Vec<wit::LogSinkDecl>,
    pub http_grants: Vec<String>,
}

/// The host's view of a binding's declarations, and the capabilities it asks for.
pub type Accepted = (BindingInfo, RequestSelection, Declared);

pub fn binding_info(i: wit::BindingInfo) -> Result<Accepted, PolicyError> {
    let request = RequestSelection {
        fields: i.request_fields,
        headers: selection(i.request_headers.clone())?,
        body: body_need(i.request_body),
    };
    let info = BindingInfo {
        phases: Phases {
            request: i.phases.contains(wit::Phases::REQUEST),
            response: i.phases.contains(wit::Phases::RESPONSE),
            log: i.phases.contains(wit::Phases::LOG),
        },
        request_headers: selection(i.request_headers)?,
        response_headers: selection(i.response_headers)?,
        request_body: body_need(i.request_body),
        response_body: body_need(i.response_body),
        fixed_response_headers: header_ops(i.fixed_response_headers)?,
    };
    Ok((info, request, Declared { log_sinks: i.log_sinks, http_grants: i.http_grants }))
}
