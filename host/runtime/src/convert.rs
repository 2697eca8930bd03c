//! Between the proxy's views/actions and the WIT types. Only the headers and body bytes a
//! binding selected cross the boundary; plugin output is validated here (header names and
//! values, statuses), so the proxy only ever applies well-formed actions.

use crate::bindings::wasmgate::plugin::types as wit;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::UNIX_EPOCH;
use wasmgate_proxy::policy::*;

fn headers(map: &HeaderMap, sel: &HeaderSelection) -> Vec<(String, String)> {
    let pair = |n: &HeaderName, v: &HeaderValue| {
        (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    match sel {
        HeaderSelection::None => Vec::new(),
        HeaderSelection::All => map.iter().map(|(n, v)| pair(n, v)).collect(),
        HeaderSelection::Only(names) => {
            names.iter().flat_map(|n| map.get_all(n).iter().map(move |v| pair(n, v))).collect()
        }
    }
}

fn body(bytes: Option<&[u8]>, need: BodyNeed) -> Option<Vec<u8>> {
    let n = match need {
        BodyNeed::None => return None,
        BodyNeed::Prefix(n) | BodyNeed::Full(n) => n as usize,
    };
    bytes.map(|b| b[..b.len().min(n)].to_vec())
}

fn identity(i: &Identity) -> wit::Identity {
    wit::Identity { app_id: i.app_id.clone(), user: i.user.clone() }
}

/// What one binding selected of the request: fields, headers and body.
pub struct RequestSelection {
    pub fields: wit::RequestFields,
    pub headers: HeaderSelection,
    pub body: BodyNeed,
}

pub fn request(v: &RequestView<'_>, sel: &RequestSelection) -> wit::Request {
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
        ref other => wit::Method::Other(other.as_str().to_string()),
    };
    wit::Request {
        method,
        scheme: if v.scheme == "https" { wit::Scheme::Https } else { wit::Scheme::Http },
        headers: headers(v.headers, &sel.headers),
        request_id: has(F::REQUEST_ID).then(|| v.request_id.to_string()),
        route: has(F::ROUTE).then(|| wit::RouteInfo {
            api_id: v.route.api_id.clone(),
            group_id: v.route.group_id.clone(),
            environment: v.route.environment.clone(),
        }),
        host: has(F::HOST).then(|| v.host.to_string()),
        path: has(F::PATH).then(|| v.path.to_string()),
        query: has(F::QUERY).then(|| v.query.to_string()),
        path_params: has(F::PATH_PARAMS).then(|| v.path_params.to_vec()),
        client_ip: has(F::CLIENT_IP).then(|| v.client_ip.to_string()),
        identity: has(F::IDENTITY).then(|| identity(v.identity)),
        context: has(F::CONTEXT).then(|| v.context.to_vec()),
        body: body(v.body, sel.body),
    }
}

pub fn response(v: &ResponseView<'_>, sel: &HeaderSelection, need: BodyNeed) -> wit::Response {
    wit::Response {
        status: v.status.as_u16(),
        headers: headers(v.headers, sel),
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

pub fn log_entry(v: &LogView<'_>, req: &RequestSelection, info: &BindingInfo) -> wit::LogEntry {
    wit::LogEntry {
        request: request(&v.request, req),
        response: response(&v.response, &info.response_headers, info.response_body),
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

fn header_name(n: &str) -> Result<HeaderName, PolicyError> {
    HeaderName::from_bytes(n.as_bytes()).map_err(|_| invalid(format_args!("`{n}` is not a header name")))
}

fn header_pair((n, v): (String, String)) -> Result<(HeaderName, HeaderValue), PolicyError> {
    let value =
        HeaderValue::from_str(&v).map_err(|_| invalid(format_args!("header `{n}` has an invalid value")))?;
    Ok((header_name(&n)?, value))
}

fn header_ops(ops: Vec<wit::HeaderOp>) -> Result<Vec<HeaderOp>, PolicyError> {
    ops.into_iter()
        .map(|op| {
            Ok(match op {
                wit::HeaderOp::Set(p) => {
                    let (n, v) = header_pair(p)?;
                    HeaderOp::Set(n, v)
                }
                wit::HeaderOp::Append(p) => {
                    let (n, v) = header_pair(p)?;
                    HeaderOp::Append(n, v)
                }
                wit::HeaderOp::Remove(n) => HeaderOp::Remove(header_name(&n)?),
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
pub fn binding_info(i: wit::BindingInfo) -> Result<(BindingInfo, RequestSelection), PolicyError> {
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
    };
    Ok((info, request))
}
