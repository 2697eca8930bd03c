//! The JSON log message (layout in `docs/kafka-log.md`): a struct serialised in one pass,
//! fields borrowed from the log entry, so a message costs one string and a few small
//! allocations rather than a map of owned values.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use std::borrow::Cow;
use wasmgate_sdk::prelude::*;

/// A logged body is cut here (`body_truncated`).
pub const BODY_LIMIT: usize = 1024;
/// The whole message is kept under this by cutting fields.
pub const MESSAGE_LIMIT: usize = 4096;

/// The system fields, all on unless switched off.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Field {
    StartTime,
    RequestId,
    ClientIp,
    ApiId,
    GroupId,
    Environment,
    AppId,
    User,
    AuthType,
    Method,
    Scheme,
    Host,
    Uri,
    UserAgent,
    Status,
    RequestSize,
    ResponseSize,
    TotalLatencyMs,
    BackendLatencyMs,
    BackendOutcome,
}

/// Each field with its name in the message and in the config, in message order.
pub const FIELDS: [(Field, &str); 20] = [
    (Field::StartTime, "start_time"),
    (Field::RequestId, "request_id"),
    (Field::ClientIp, "client_ip"),
    (Field::ApiId, "api_id"),
    (Field::GroupId, "group_id"),
    (Field::Environment, "environment"),
    (Field::AppId, "app_id"),
    (Field::User, "user"),
    (Field::AuthType, "auth_type"),
    (Field::Method, "method"),
    (Field::Scheme, "scheme"),
    (Field::Host, "host"),
    (Field::Uri, "uri"),
    (Field::UserAgent, "user_agent"),
    (Field::Status, "status"),
    (Field::RequestSize, "request_size"),
    (Field::ResponseSize, "response_size"),
    (Field::TotalLatencyMs, "total_latency_ms"),
    (Field::BackendLatencyMs, "backend_latency_ms"),
    (Field::BackendOutcome, "backend_outcome"),
];

/// Name/value pairs written as a JSON object.
#[derive(Default)]
pub struct Pairs<'a>(pub Vec<(&'a str, Cow<'a, str>)>);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Absent fields (`None`) are left out; `Some(None)` is written as `null`.
#[derive(Serialize, Default)]
pub struct Message<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_id: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheme: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uri: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_latency_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_latency_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<Pairs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_strings: Option<Pairs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_truncated: Option<bool>,
}

/// The first [`BODY_LIMIT`] bytes, invalid UTF-8 replaced.
pub fn body_text(body: Option<&[u8]>) -> Cow<'_, str> {
    let b = body.unwrap_or_default();
    String::from_utf8_lossy(&b[..b.len().min(BODY_LIMIT)])
}

impl<'a> Message<'a> {
    /// Every system field of `entry`.
    pub fn system(entry: &LogEntry<'a>) -> Self {
        let (req, resp) = (&entry.request, &entry.response);
        let (route, identity) = (req.route(), req.identity());
        let query = req.query();
        Message {
            start_time: Some(entry.start_time_ms),
            request_id: Some(req.request_id()),
            client_ip: Some(req.client_ip()),
            api_id: Some(route.api_id),
            group_id: Some(route.group_id),
            environment: Some(route.environment),
            app_id: Some(identity.app_id),
            user: Some(identity.user),
            auth_type: Some(req.context("auth_type").unwrap_or("none")),
            method: Some(req.method.as_str()),
            scheme: Some(if matches!(req.scheme, wasmgate_sdk::Scheme::Https) { "https" } else { "http" }),
            host: Some(req.host()),
            uri: Some(if query.is_empty() {
                Cow::Borrowed(req.path())
            } else {
                Cow::Owned(format!("{}?{query}", req.path()))
            }),
            user_agent: Some(Cow::Borrowed(req.header("user-agent").unwrap_or(""))),
            status: Some(resp.status),
            request_size: Some(entry.request_size),
            response_size: Some(entry.response_size),
            total_latency_ms: Some(entry.total_latency_ms),
            backend_latency_ms: Some(resp.backend_latency_ms),
            backend_outcome: Some(match resp.outcome {
                BackendOutcome::Responded => "responded",
                BackendOutcome::TimedOut => "timed-out",
                BackendOutcome::Failed => "failed",
                BackendOutcome::NotCalled => "not-called",
            }),
            ..Default::default()
        }
    }

    /// A system field's value as text (for the message key).
    pub fn text(&self, field: Field) -> String {
        fn s(v: &Option<impl ToString>) -> String {
            v.as_ref().map(ToString::to_string).unwrap_or_default()
        }
        match field {
            Field::StartTime => s(&self.start_time),
            Field::RequestId => s(&self.request_id),
            Field::ClientIp => s(&self.client_ip),
            Field::ApiId => s(&self.api_id),
            Field::GroupId => s(&self.group_id),
            Field::Environment => s(&self.environment),
            Field::AppId => s(&self.app_id.flatten()),
            Field::User => s(&self.user.flatten()),
            Field::AuthType => s(&self.auth_type),
            Field::Method => s(&self.method),
            Field::Scheme => s(&self.scheme),
            Field::Host => s(&self.host),
            Field::Uri => s(&self.uri),
            Field::UserAgent => s(&self.user_agent),
            Field::Status => s(&self.status),
            Field::RequestSize => s(&self.request_size),
            Field::ResponseSize => s(&self.response_size),
            Field::TotalLatencyMs => s(&self.total_latency_ms),
            Field::BackendLatencyMs => s(&self.backend_latency_ms),
            Field::BackendOutcome => s(&self.backend_outcome),
        }
    }

    /// Leave `field` out of the message.
    pub fn switch_off(&mut self, field: Field) {
        match field {
            Field::StartTime => self.start_time = None,
            Field::RequestId => self.request_id = None,
            Field::ClientIp => self.client_ip = None,
            Field::ApiId => self.api_id = None,
            Field::GroupId => self.group_id = None,
            Field::Environment => self.environment = None,
            Field::AppId => self.app_id = None,
            Field::User => self.user = None,
            Field::AuthType => self.auth_type = None,
            Field::Method => self.method = None,
            Field::Scheme => self.scheme = None,
            Field::Host => self.host = None,
            Field::Uri => self.uri = None,
            Field::UserAgent => self.user_agent = None,
            Field::Status => self.status = None,
            Field::RequestSize => self.request_size = None,
            Field::ResponseSize => self.response_size = None,
            Field::TotalLatencyMs => self.total_latency_ms = None,
            Field::BackendLatencyMs => self.backend_latency_ms = None,
            Field::BackendOutcome => self.backend_outcome = None,
        }
    }

    /// The JSON text, under [`MESSAGE_LIMIT`]: when over, the response body, the request
    /// body, the logged header values (longest first; emptied entries go), the query values,
    /// the user agent and the URI are cut, in that order, and `message_truncated` is set.
    pub fn into_json(mut self) -> String {
        loop {
            let text = serde_json::to_string(&self).expect("the message serialises");
            if text.len() <= MESSAGE_LIMIT {
                return text;
            }
            // Room for the flags set below.
            let excess = text.len() - MESSAGE_LIMIT + 48;
            let cut_body =
                shorten(&mut self.response_body, excess) || shorten(&mut self.request_body, excess);
            let cut = cut_body
                || shorten_pairs(&mut self.request_headers, excess)
                || shorten_pairs(&mut self.query_strings, excess)
                || shorten(&mut self.user_agent, excess)
                || shorten(&mut self.uri, excess);
            if !cut {
                return text;
            }
            if cut_body {
                self.body_truncated = Some(true);
            }
            self.message_truncated = Some(true);
        }
    }
}

/// Cut by at least `excess` bytes, on a character boundary; false when there is nothing.
fn shorten(s: &mut Option<Cow<'_, str>>, excess: usize) -> bool {
    let Some(s) = s.as_mut().filter(|s| !s.is_empty()) else {
        return false;
    };
    let mut end = s.len().saturating_sub(excess);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.to_mut().truncate(end);
    true
}

fn shorten_pairs(pairs: &mut Option<Pairs<'_>>, excess: usize) -> bool {
    let Some(Pairs(list)) = pairs.as_mut().filter(|p| !p.0.is_empty()) else {
        return false;
    };
    let longest = (0..list.len()).max_by_key(|i| list[*i].1.len()).expect("not empty");
    let mut value = Some(std::mem::take(&mut list[longest].1));
    if shorten(&mut value, excess) {
        list[longest].1 = value.expect("kept");
    } else {
        list.remove(longest);
    }
    true
}
