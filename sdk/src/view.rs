//! The request, response and log entry a phase reads, decoded in place from the packed input
//! the host passes (layout: `wit/plugin.wit`, interface `policy`). Nothing is copied: every
//! string borrows from the input, and header lists are scanned only when a header is read.

/// The request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'a> {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other(&'a str),
}

impl<'a> Method<'a> {
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other(m) => m,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where the request was routed.
#[derive(Debug, Clone, Copy)]
pub struct RouteInfo<'a> {
    pub api_id: &'a str,
    pub group_id: &'a str,
    pub environment: &'a str,
}

/// The caller as established by an earlier authentication policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub app_id: Option<&'a str>,
    pub user: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOutcome {
    /// The backend answered (any status).
    Responded,
    TimedOut,
    /// Connection refused, reset or otherwise failed.
    Failed,
    /// A mock backend or a plugin produced the response.
    NotCalled,
}

/// Name/value pairs (header lines, path parameters, context), read where they lie.
#[derive(Clone, Copy)]
pub struct Pairs<'a> {
    count: u32,
    /// The pairs' bytes, after the count.
    bytes: &'a [u8],
}

impl<'a> Pairs<'a> {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pairs in order (header lines in wire order, names lower-case).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut r = Reader(self.bytes);
        (0..self.count).map(move |_| (r.str(), r.str()))
    }

    /// The first value under `name`, compared as given.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.find(|n| n == name.as_bytes())
    }

    /// The first value under `name`, compared without regard to ASCII case.
    pub fn get_ignore_case(&self, name: &str) -> Option<&'a str> {
        self.find(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Names are compared as bytes, so only the value found is checked as UTF-8.
    fn find(&self, matches: impl Fn(&[u8]) -> bool) -> Option<&'a str> {
        let mut r = Reader(self.bytes);
        for _ in 0..self.count {
            let (name, value) = (r.bytes(), r.bytes());
            if matches(name) {
                return Some(utf8(value));
            }
        }
        None
    }
}

impl std::fmt::Debug for Pairs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The request. Fields the binding did not select in `BindingInfo::request_fields` are
/// absent: their accessors panic, naming the field (a bug in the plugin, reported loudly).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: Method<'a>,
    pub scheme: Scheme,
    /// Only the headers the binding selected.
    pub headers: Pairs<'a>,
    /// Present when the binding declared a `request_body` need and the request had one.
    pub body: Option<&'a [u8]>,
    request_id: Option<&'a str>,
    route: Option<RouteInfo<'a>>,
    host: Option<&'a str>,
    path: Option<&'a str>,
    query: Option<&'a str>,
    path_params: Option<Pairs<'a>>,
    client_ip: Option<&'a str>,
    identity: Option<Caller<'a>>,
    context: Option<Pairs<'a>>,
}

/// The response as the host passed it.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: u16,
    /// Only the headers the binding selected.
    pub headers: Pairs<'a>,
    pub outcome: BackendOutcome,
    pub backend_latency_ms: u32,
    pub body: Option<&'a [u8]>,
}

/// What the log phase reads: the request and response, and the exchange's figures.
#[derive(Debug, Clone, Copy)]
pub struct LogEntry<'a> {
    pub request: Request<'a>,
    pub response: Response<'a>,
    /// Unix time in milliseconds when the request arrived.
    pub start_time_ms: u64,
    pub total_latency_ms: u32,
    pub request_size: u64,
    pub response_size: u64,
    pub request_body_truncated: bool,
    pub response_body_truncated: bool,
}

/// A field the binding did not select: a bug in the plugin, reported loudly.
#[track_caller]
fn unselected(field: &str) -> ! {
    panic!("request field `{field}` was not selected: add it to BindingInfo::request_fields")
}

impl<'a> Request<'a> {
    /// The first value of header `name` (case-insensitive), if the binding selected it.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get_ignore_case(name)
    }

    #[track_caller]
    pub fn request_id(&self) -> &'a str {
        self.request_id.unwrap_or_else(|| unselected("request-id"))
    }

    #[track_caller]
    pub fn route(&self) -> RouteInfo<'a> {
        self.route.unwrap_or_else(|| unselected("route"))
    }

    #[track_caller]
    pub fn host(&self) -> &'a str {
        self.host.unwrap_or_else(|| unselected("host"))
    }

    #[track_caller]
    pub fn path(&self) -> &'a str {
        self.path.unwrap_or_else(|| unselected("path"))
    }

    #[track_caller]
    pub fn query(&self) -> &'a str {
        self.query.unwrap_or_else(|| unselected("query"))
    }

    /// The query's `key=value` pairs as they arrived (not percent-decoded); a key without
    /// `=` has an empty value. Needs the `query` field.
    #[track_caller]
    pub fn query_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.query().split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
    }

    /// The first value of query parameter `key`. Needs the `query` field.
    #[track_caller]
    pub fn query_param(&self, key: &str) -> Option<&'a str> {
        self.query_pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// A `{name}` or `{name+}` parameter of the route's path template.
    #[track_caller]
    pub fn path_param(&self, name: &str) -> Option<&'a str> {
        self.path_params.unwrap_or_else(|| unselected("path-params")).get(name)
    }

    #[track_caller]
    pub fn client_ip(&self) -> &'a str {
        self.client_ip.unwrap_or_else(|| unselected("client-ip"))
    }

    #[track_caller]
    pub fn identity(&self) -> Caller<'a> {
        self.identity.unwrap_or_else(|| unselected("identity"))
    }

    /// A value set in the request context by an earlier policy, or by the gateway
    /// (see [`crate::CLIENT_CERT_SUBJECT`]).
    #[track_caller]
    pub fn context(&self, key: &str) -> Option<&'a str> {
        self.context.unwrap_or_else(|| unselected("context")).get(key)
    }

    /// The verified client certificate's subject (`CN=app, O=Example`) when the request
    /// came over mutual TLS. Needs the `context` field.
    #[track_caller]
    pub fn client_cert_subject(&self) -> Option<&'a str> {
        self.context(crate::CLIENT_CERT_SUBJECT)
    }
}

impl<'a> Response<'a> {
    /// The first value of header `name` (case-insensitive), if the binding selected it.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get_ignore_case(name)
    }
}

fn utf8(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_else(|_| malformed())
}

/// The host broke the layout: nothing sensible can follow, so the call traps.
fn malformed() -> ! {
    panic!("the host passed a malformed phase input (wasmgate:plugin@0.2 layout)")
}

/// Reads the packed layout front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        if self.0.len() < n {
            malformed();
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take(2).try_into().unwrap())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }

    fn bytes(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        self.take(n)
    }

    fn str(&mut self) -> &'a str {
        utf8(self.bytes())
    }

    /// Skips over the pairs, checking only their lengths.
    fn pairs(&mut self) -> Pairs<'a> {
        let count = self.u32();
        let start = self.0;
        for _ in 0..count * 2 {
            self.bytes();
        }
        Pairs { count, bytes: &start[..start.len() - self.0.len()] }
    }

    fn request(&mut self) -> Request<'a> {
        let method = match self.u8() {
            0 => Method::Get,
            1 => Method::Head,
            2 => Method::Post,
            3 => Method::Put,
            4 => Method::Delete,
            5 => Method::Options,
            6 => Method::Patch,
            _ => Method::Other(self.str()),
        };
        let scheme = if self.u8() == 1 { Scheme::Https } else { Scheme::Http };
        let present = self.u16();
        let mut next = 1u16;
        let mut has = || {
            let on = present & next != 0;
            next <<= 1;
            on
        };
        let request_id = has().then(|| self.str());
        let route =
            has().then(|| RouteInfo { api_id: self.str(), group_id: self.str(), environment: self.str() });
        let host = has().then(|| self.str());
        let path = has().then(|| self.str());
        let query = has().then(|| self.str());
        let path_params = has().then(|| self.pairs());
        let client_ip = has().then(|| self.str());
        let identity = has().then(|| {
            let flags = self.u8();
            let app_id = (flags & 1 != 0).then(|| self.str());
            let user = (flags & 2 != 0).then(|| self.str());
            Caller { app_id, user }
        });
        let context = has().then(|| self.pairs());
        let has_body = has();
        let headers = self.pairs();
        let body = has_body.then(|| self.bytes());
        Request {
            method,
            scheme,
            headers,
            body,
            request_id,
            route,
            host,
            path,
            query,
            path_params,
            client_ip,
            identity,
            context,
        }
    }

    fn response(&mut self) -> Response<'a> {
        let status = self.u16();
        let outcome = match self.u8() {
            0 => BackendOutcome::Responded,
            1 => BackendOutcome::TimedOut,
            2 => BackendOutcome::Failed,
            _ => BackendOutcome::NotCalled,
        };
        let backend_latency_ms = self.u32();
        let has_body = self.u8() != 0;
        let headers = self.pairs();
        let body = has_body.then(|| self.bytes());
        Response { status, headers, outcome, backend_latency_ms, body }
    }
}

impl<'a> Request<'a> {
    /// Decode an `on-request` input.
    #[doc(hidden)]
    pub fn decode(input: &'a [u8]) -> Self {
        Reader(input).request()
    }
}

/// Decode an `on-response` input: the request, then the response.
pub fn decode_exchange(input: &[u8]) -> (Request<'_>, Response<'_>) {
    let mut r = Reader(input);
    (r.request(), r.response())
}

impl<'a> LogEntry<'a> {
    /// Decode an `on-log` input.
    #[doc(hidden)]
    pub fn decode(input: &'a [u8]) -> Self {
        let mut r = Reader(input);
        let (request, response) = (r.request(), r.response());
        let (start_time_ms, total_latency_ms) = (r.u64(), r.u32());
        let (request_size, response_size) = (r.u64(), r.u64());
        let truncated = r.u8();
        LogEntry {
            request,
            response,
            start_time_ms,
            total_latency_ms,
            request_size,
            response_size,
            request_body_truncated: truncated & 1 != 0,
            response_body_truncated: truncated & 2 != 0,
        }
    }
}
