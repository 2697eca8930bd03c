//! Between the proxy's views/actions and the WIT types. Only the headers and body bytes a
//! binding selected cross the boundary; plugin output is validated here (header names and
//! values, statuses), so the proxy only ever applies well-formed actions.

use crate::bindings::wasmgate::plugin::types as wit;
use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::UNIX_EPOCH;
use wasmgate_proxy::policy::*;

/// What one binding selected of the request: fields, headers and body.
pub struct RequestSelection {
    fields: wit::RequestFields,
    /// `fields` as the packed request's present bits.
    field_bits: u16,
    headers: HeaderSelection,
    body: BodyNeed,
}

/// The packed request's fields, one bit each in this order; the body's bit follows.
const FIELD_ORDER: [wit::RequestFields; 9] = [
    wit::RequestFields::REQUEST_ID,
    wit::RequestFields::ROUTE,
    wit::RequestFields::HOST,
    wit::RequestFields::PATH,
    wit::RequestFields::QUERY,
    wit::RequestFields::PATH_PARAMS,
    wit::RequestFields::CLIENT_IP,
    wit::RequestFields::IDENTITY,
    wit::RequestFields::CONTEXT,
];
const BODY_BIT: u16 = 1 << FIELD_ORDER.len();

/// Writes a phase's input in the packed layout `wit/plugin.wit` documents for `policy`,
/// into a buffer the instance keeps, so packing allocates nothing once the buffer has grown.
pub struct Packer<'b>(pub &'b mut Vec<u8>);

impl Packer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        // Nothing the proxy holds reaches 4 GiB: bodies and heads are capped far below.
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// A count written before the items, patched once they are written.
    fn counted(&mut self, write: impl FnOnce(&mut Self) -> u32) {
        let at = self.0.len();
        self.u32(0);
        let n = write(self);
        self.0[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }

    fn pairs(&mut self, pairs: &[(String, String)]) {
        self.u32(pairs.len() as u32);
        for (a, b) in pairs {
            self.str(a);
            self.str(b);
        }
    }

    /// The header lines a binding selected, in wire order. A value that is not UTF-8
    /// (obsolete `obs-text`) is passed as empty rather than as a lossy copy.
    fn headers(&mut self, map: &HeaderMap, sel: &HeaderSelection) {
        let line = |p: &mut Self, n: &HeaderName, v: &HeaderValue| {
            p.str(n.as_str());
            p.str(v.to_str().unwrap_or(""));
        };
        self.counted(|p| match sel {
            HeaderSelection::None => 0,
            HeaderSelection::All => {
                map.iter().for_each(|(n, v)| line(p, n, v));
                map.len() as u32
            }
            HeaderSelection::Only(names) => {
                let mut count = 0;
                for n in names {
                    for v in map.get_all(n) {
                        line(p, n, v);
                        count += 1;
                    }
                }
                count
            }
        });
    }

    pub fn request(&mut self, v: &RequestView<'_>, sel: &RequestSelection) {
        use wit::RequestFields as F;
        let method = match *v.method {
            http::Method::GET => 0,
            http::Method::HEAD => 1,
            http::Method::POST => 2,
            http::Method::PUT => 3,
            http::Method::DELETE => 4,
            http::Method::OPTIONS => 5,
            http::Method::PATCH => 6,
            _ => 7,
        };
        self.u8(method);
        if method == 7 {
            self.str(v.method.as_str());
        }
        self.u8((v.scheme == "https") as u8);
        let body = selected_body(v.body, sel.body);
        self.u16(sel.field_bits | if body.is_some() { BODY_BIT } else { 0 });
        let has = |f: F| sel.fields.contains(f);
        if has(F::REQUEST_ID) {
            self.str(v.request_id);
        }
        if has(F::ROUTE) {
            self.str(&v.route.api_id);
            self.str(&v.route.group_id);
            self.str(&v.route.environment);
        }
        if has(F::HOST) {
            self.str(v.host);
        }
        if has(F::PATH) {
            self.str(v.path);
        }
        if has(F::QUERY) {
            self.str(v.query);
        }
        if has(F::PATH_PARAMS) {
            self.pairs(v.path_params);
        }
        if has(F::CLIENT_IP) {
            use std::io::Write;
            // Formatted in place: no `String` for the address.
            self.counted(|p| {
                let start = p.0.len();
                let _ = write!(p.0, "{}", v.client_ip);
                (p.0.len() - start) as u32
            });
        }
        if has(F::IDENTITY) {
            let (app, user) = (v.identity.app_id.as_deref(), v.identity.user.as_deref());
            self.u8(app.is_some() as u8 | (user.is_some() as u8) << 1);
            app.into_iter().chain(user).for_each(|s| self.str(s));
        }
        if has(F::CONTEXT) {
            self.pairs(v.context);
        }
        self.headers(v.headers, &sel.headers);
        if let Some(b) = body {
            self.bytes(b);
        }
    }

    pub fn response(&mut self, v: &ResponseView<'_>, headers: &HeaderSelection, need: BodyNeed) {
        self.u16(v.status.as_u16());
        self.u8(match v.outcome {
            BackendOutcome::Responded => 0,
            BackendOutcome::TimedOut => 1,
            BackendOutcome::Failed => 2,
            BackendOutcome::NotCalled => 3,
        });
        self.u32(millis(v.backend_latency));
        let body = selected_body(v.body, need);
        self.u8(body.is_some() as u8);
        self.headers(v.headers, headers);
        if let Some(b) = body {
            self.bytes(b);
        }
    }

    pub fn log_entry(&mut self, v: &LogView<'_>) {
        self.u64(v.start_time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64));
        self.u32(millis(v.total_latency));
        self.u64(v.request_size);
        self.u64(v.response_size);
        self.u8(v.request_body_truncated as u8 | (v.response_body_truncated as u8) << 1);
    }
}

/// The part of a body a binding asked for.
fn selected_body(bytes: Option<&[u8]>, need: BodyNeed) -> Option<&[u8]> {
    let n = match need {
        BodyNeed::None => return None,
        BodyNeed::Prefix(n) | BodyNeed::Full(n) => n as usize,
    };
    bytes.map(|b| &b[..b.len().min(n)])
}

fn millis(d: std::time::Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

fn invalid(what: impl std::fmt::Display) -> PolicyError {
    PolicyError::InvalidAction(what.to_string())
}

/// The most a header value from a plugin may hold, and all of one answer's header changes
/// together (names and values): nginx's default header buffers (`large_client_header_buffers
/// 4 8k`), so whatever a plugin adds still fits the clients and backends on the path.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Headers the host writes itself: the message's framing (its length and coding) and the
/// connection's hop-by-hop headers. A plugin's value for one of them would describe a body
/// or connection other than the one hyper sends (a length that does not match the body hangs
/// the client; two lengths split a keep-alive connection's responses), so plugins' changes
/// to them are dropped, as Envoy's header mutation rules do, and the host frames the
/// message from the body it actually sends.
pub fn host_owned(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// The statuses a plugin may answer or replace a response with: a final response that is
/// not a protocol switch (1xx are interim responses the host's HTTP stack owns; 101 would
/// promise an upgrade nobody performs) and is a real status class.
fn status(s: u16) -> Result<StatusCode, PolicyError> {
    match s {
        200..=599 => Ok(StatusCode::from_u16(s).expect("200..=599 are valid status codes")),
        _ => Err(invalid(format_args!("status {s} is not one a policy may answer with (200–599)"))),
    }
}

/// Header changes' size against [`MAX_HEADER_VALUE`] and [`MAX_HEADER_BYTES`].
#[derive(Default)]
struct HeaderBudget(usize);

impl HeaderBudget {
    fn take(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), PolicyError> {
        if value.len() > MAX_HEADER_VALUE {
            return Err(invalid(format_args!(
                "header `{name}` is {} bytes; a value from a policy may have {MAX_HEADER_VALUE}",
                value.len()
            )));
        }
        self.0 += name.as_str().len() + value.len();
        if self.0 > MAX_HEADER_BYTES {
            return Err(invalid(format_args!(
                "the header changes exceed {MAX_HEADER_BYTES} bytes (at `{name}`)"
            )));
        }
        Ok(())
    }
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

/// The response headers a binding declares at load: one naming a header the host owns is
/// refused here, where the operator sees it, rather than dropped on every response.
fn fixed_header_ops(ops: Vec<wit::HeaderOp>) -> Result<Vec<HeaderOp>, PolicyError> {
    let ops: Vec<HeaderOp> = ops
        .into_iter()
        .map(|op| {
            Ok(match op {
                wit::HeaderOp::Remove(n) => HeaderOp::Remove(header_name(&n)?),
                wit::HeaderOp::Set(p) => header_pair(p).map(|(n, v)| HeaderOp::Set(n, v))?,
                wit::HeaderOp::Append(p) => header_pair(p).map(|(n, v)| HeaderOp::Append(n, v))?,
                wit::HeaderOp::AppendValue(p) => header_pair(p).map(|(n, v)| HeaderOp::AppendValue(n, v))?,
                wit::HeaderOp::SetIfAbsent(p) => header_pair(p).map(|(n, v)| HeaderOp::SetIfAbsent(n, v))?,
            })
        })
        .collect::<Result<_, PolicyError>>()?;
    let mut budget = HeaderBudget::default();
    for op in &ops {
        let name = op.name();
        if host_owned(name) {
            return Err(invalid(format_args!(
                "header `{name}` is written by the gateway (framing or hop-by-hop); a policy cannot set it"
            )));
        }
        budget.take(name, op.value().map_or(&[][..], |v| v.as_bytes()))?;
    }
    Ok(ops)
}

/// Header changes from a phase's answer, packed as `header-ops` (wit/plugin.wit). Values
/// are slices of the lifted buffer, so a change costs no allocation of its own.
pub(crate) fn packed_ops(buf: Vec<u8>) -> Result<Vec<HeaderOp>, PolicyError> {
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let len = buf.len();
    let mut rest = Bytes::from(buf);
    let malformed =
        |rest: &Bytes| invalid(format_args!("header changes are malformed at byte {}", len - rest.len()));
    let take = |rest: &mut Bytes| -> Result<Bytes, PolicyError> {
        if rest.remaining() < 4 {
            return Err(malformed(rest));
        }
        let n = rest.get_u32_le() as usize;
        if rest.remaining() < n {
            return Err(malformed(rest));
        }
        Ok(rest.split_to(n))
    };
    let mut ops = Vec::new();
    let mut budget = HeaderBudget::default();
    while rest.has_remaining() {
        let op = rest.get_u8();
        let name = take(&mut rest)?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| invalid("a header name is not UTF-8"))
            .and_then(header_name)?;
        if op == 4 {
            if !host_owned(&name) {
                ops.push(HeaderOp::Remove(name));
            }
            continue;
        }
        let value = take(&mut rest)?;
        budget.take(&name, &value)?;
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| invalid(format_args!("header `{name}` has an invalid value")))?;
        let owned = host_owned(&name);
        let op = match op {
            0 => HeaderOp::Set(name, value),
            1 => HeaderOp::Append(name, value),
            2 => HeaderOp::AppendValue(name, value),
            3 => HeaderOp::SetIfAbsent(name, value),
            _ => return Err(invalid(format_args!("{op} is not a header operation"))),
        };
        if !owned {
            ops.push(op);
        }
    }
    Ok(ops)
}

fn reply(r: wit::Reply) -> Result<Reply, PolicyError> {
    let mut budget = HeaderBudget::default();
    let mut headers = Vec::with_capacity(r.headers.len());
    for pair in r.headers {
        let (name, value) = header_pair(pair)?;
        budget.take(&name, value.as_bytes())?;
        if !host_owned(&name) {
            headers.push((name, value));
        }
    }
    Ok(Reply { status: status(r.status)?, headers, body: Bytes::from(r.body) })
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
                headers: packed_ops(c.headers)?,
                response_headers: packed_ops(c.response_headers)?,
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
            headers: packed_ops(c.headers)?,
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
    let field_bits = FIELD_ORDER
        .iter()
        .enumerate()
        .filter(|(_, f)| i.request_fields.contains(**f))
        .fold(0, |bits, (n, _)| bits | 1 << n);
    let request = RequestSelection {
        fields: i.request_fields,
        field_bits,
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
        fixed_response_headers: fixed_header_ops(i.fixed_response_headers)?,
    };
    Ok((info, request, Declared { log_sinks: i.log_sinks, http_grants: i.http_grants }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(out: &mut Vec<u8>, code: u8, strings: &[&str]) {
        out.push(code);
        for s in strings {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }

    #[test]
    fn packed_header_ops_are_read_in_order_and_bad_ones_named() {
        let mut buf = Vec::new();
        op(&mut buf, 0, &["x-a", "1"]);
        op(&mut buf, 1, &["x-b", "2"]);
        op(&mut buf, 2, &["vary", "origin"]);
        op(&mut buf, 3, &["x-c", ""]);
        op(&mut buf, 4, &["server"]);
        let ops = packed_ops(buf.clone()).unwrap();
        let v = |s: &'static str| HeaderValue::from_static(s);
        let n = |s: &'static str| HeaderName::from_static(s);
        assert_eq!(
            ops,
            [
                HeaderOp::Set(n("x-a"), v("1")),
                HeaderOp::Append(n("x-b"), v("2")),
                HeaderOp::AppendValue(n("vary"), v("origin")),
                HeaderOp::SetIfAbsent(n("x-c"), v("")),
                HeaderOp::Remove(n("server")),
            ]
        );
        assert_eq!(packed_ops(Vec::new()).unwrap(), []);

        let err = |buf: Vec<u8>| packed_ops(buf).unwrap_err().to_string();
        // Cut inside the last name: the length says 6 bytes, 3 are there.
        assert!(
            err(buf[..buf.len() - 3].to_vec()).contains("malformed at byte"),
            "{}",
            err(buf[..buf.len() - 3].to_vec())
        );
        let mut bad = Vec::new();
        op(&mut bad, 9, &["x-a", "1"]);
        assert!(err(bad).contains("9 is not a header operation"));
        let mut bad = Vec::new();
        op(&mut bad, 0, &["bad name", "1"]);
        assert!(err(bad).contains("`bad name` is not a header name"));
        let mut bad = Vec::new();
        op(&mut bad, 0, &["x-a", "line\nbreak"]);
        assert!(err(bad).contains("header `x-a` has an invalid value"));
    }

    #[test]
    fn framing_and_hop_by_hop_changes_are_dropped_and_sizes_capped() {
        let mut buf = Vec::new();
        op(&mut buf, 0, &["content-length", "1000"]);
        op(&mut buf, 1, &["Transfer-Encoding", "chunked"]);
        op(&mut buf, 4, &["connection"]);
        op(&mut buf, 0, &["x-kept", "1"]);
        op(&mut buf, 1, &["upgrade", "websocket"]);
        let ops = packed_ops(buf).unwrap();
        assert_eq!(ops, [HeaderOp::Set(HeaderName::from_static("x-kept"), HeaderValue::from_static("1"))]);

        let mut big = Vec::new();
        op(&mut big, 0, &["x-big", &"a".repeat(MAX_HEADER_VALUE + 1)]);
        let e = packed_ops(big).unwrap_err().to_string();
        assert!(e.contains("header `x-big` is 8193 bytes"), "{e}");
        let mut many = Vec::new();
        for i in 0..5 {
            op(&mut many, 1, &[&format!("x-{i}"), &"a".repeat(MAX_HEADER_VALUE)]);
        }
        let e = packed_ops(many).unwrap_err().to_string();
        assert!(e.contains("exceed 32768 bytes (at `x-3`)"), "{e}");
    }

    #[test]
    fn a_policy_answers_with_final_statuses_only() {
        for ok in [200, 204, 418, 599] {
            assert_eq!(status(ok).unwrap().as_u16(), ok);
        }
        for bad in [0, 100, 101, 199, 600, 999] {
            let e = status(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("status {bad} is not one a policy may answer with")), "{e}");
        }
    }
}
