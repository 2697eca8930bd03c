//! Backends: an HTTP(S) upstream (one host, or a load-balance channel's members; pooled
//! connections, timeouts, retries) or a mock response.

use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::policy::{BackendOutcome, Reply};
use crate::trace::{BackendTrace, Trace};
use crate::upstream::{Channel, UpstreamClient};
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use http_body::Body as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub enum Backend {
    Http(HttpBackend),
    Mock(Reply),
}

#[derive(Clone)]
pub struct HttpBackend {
    scheme: Scheme,
    pub target: Target,
    /// Base path from the URL, without trailing `/`.
    base_path: String,
    /// Backend path template; `None` appends the request path to `base_path`.
    path_template: Option<String>,
    /// Per attempt.
    pub timeout: Duration,
    /// More attempts after a connection failure or timeout, for idempotent requests whose
    /// body can be sent again.
    pub retries: u32,
    pub client: Arc<UpstreamClient>,
    /// Access key and secret the gateway signs backend requests with.
    signature_key: Option<(String, String)>,
}

/// Where an HTTP backend's requests go.
#[derive(Clone)]
pub enum Target {
    Host(Authority),
    Channel(Arc<Channel>),
}

#[derive(Debug, thiserror::Error)]
#[error("`{url}`: {reason}")]
pub struct BackendUrlError {
    url: String,
    reason: &'static str,
}

impl HttpBackend {
    /// A backend at `url` (`http://` or `https://`), reached through `client`.
    pub fn parse(
        url: &str,
        path_template: Option<&str>,
        timeout: Duration,
        client: Arc<UpstreamClient>,
    ) -> Result<Self, BackendUrlError> {
        let err = |reason| BackendUrlError { url: url.into(), reason };
        let uri: Uri = url.parse().map_err(|_| err("not a valid URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| err("needs http:// or https://"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(err("only http:// and https:// backends are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| err("needs a host"))?;
        Ok(HttpBackend {
            scheme,
            target: Target::Host(authority),
            base_path: uri.path().trim_end_matches('/').to_string(),
            path_template: path_template.map(String::from),
            timeout,
            retries: 0,
            client,
            signature_key: None,
        })
    }

    /// Send to the members of `channel` (the URL's host named it) instead.
    pub fn with_channel(mut self, channel: Arc<Channel>) -> Self {
        self.target = Target::Channel(channel);
        self
    }

    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sign every request to this backend with `key` and `secret` (see [`HttpBackend::sign`]).
    pub fn with_signature_key(mut self, key: String, secret: String) -> Self {
        self.signature_key = Some((key, secret));
        self
    }

    /// Add `Host`, `X-Sdk-Date`, `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD` and an
    /// `SDK-HMAC-SHA256` `Authorization` over them, when this backend has a signature key.
    /// The body is not hashed, so it still streams. Replaces any `Authorization` the client
    /// sent: the backend checks the gateway, not the client.
    pub fn sign(&self, method: &http::Method, uri: &Uri, headers: &mut HeaderMap) {
        use wasmgate_apig_signature as sig;
        let Some((key, secret)) = &self.signature_key else { return };
        let unix_secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        const UNSIGNED: &str = "UNSIGNED-PAYLOAD";
        const SIGNED: [&str; 3] = ["host", "x-sdk-content-sha256", "x-sdk-date"];
        let date = sig::format_sdk_date(unix_secs);
        let host = uri.authority().map_or("", |a| a.as_str());
        let canonical = sig::canonical_request(
            method.as_str(),
            uri.path(),
            uri.query().unwrap_or(""),
            &SIGNED,
            |name| match name {
                "host" => Some(host),
                "x-sdk-content-sha256" => Some(UNSIGNED),
                _ => Some(date.as_str()),
            },
            UNSIGNED,
        )
        .expect("every signed header has a value");
        let signature =
            sig::sign(&sig::Native, secret, &sig::string_to_sign(&sig::Native, &date, &canonical));
        let authorization = sig::authorization(key, &SIGNED, &signature);
        for (name, value) in [
            (header::HOST, host.to_string()),
            (HeaderName::from_static("x-sdk-date"), date.clone()),
            (HeaderName::from_static("x-sdk-content-sha256"), UNSIGNED.to_string()),
            (header::AUTHORIZATION, authorization),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }

    /// The upstream path and query for a request path (after policies' changes) and its
    /// parameters.
    pub fn path_and_query(
        &self,
        path: &str,
        params: &[(String, String)],
        query: &str,
    ) -> Result<PathAndQuery, http::uri::InvalidUri> {
        let mut pq = String::with_capacity(self.base_path.len() + path.len() + query.len() + 2);
        match &self.path_template {
            None => {
                pq.push_str(&self.base_path);
                pq.push_str(path);
            }
            Some(t) => {
                pq.push_str(&self.base_path);
                pq.push_str(&substitute(t, params));
            }
        }
        if pq.is_empty() {
            pq.push('/');
        }
        if !query.is_empty() {
            pq.push('?');
            pq.push_str(query);
        }
        pq.parse()
    }

    /// The URI of one attempt, at `authority` (the host, or the member picked).
    pub fn uri(&self, authority: &Authority, pq: &PathAndQuery) -> Uri {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority.clone())
            .path_and_query(pq.clone())
            .build()
            .expect("scheme, authority and path are valid")
    }

    /// Send `out` to this backend (a channel's member: each attempt another), again while it
    /// fails, up to `retries` times, if it can be sent again: an idempotent method and a body
    /// that is empty or was read in full. The answer, or the last failure as a gateway error.
    pub async fn send(
        &self,
        out: Outgoing<'_>,
        trace: Option<&Trace>,
    ) -> (http::Response<GatewayBody>, BackendOutcome) {
        // Another attempt needs an idempotent method and a body that can be sent again: none,
        // or one read in full.
        let idempotent = matches!(
            *out.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        );
        let replay = match &out.body {
            _ if self.retries == 0 || !idempotent => None,
            GatewayBody::Empty => Some(Bytes::new()),
            GatewayBody::Full(Some(b)) => Some(b.clone()),
            GatewayBody::Incoming(b) if b.is_end_stream() => Some(Bytes::new()),
            _ => None,
        };
        let attempts = if replay.is_some() { self.retries + 1 } else { 1 };
        let mut body = Some(out.body);
        let mut headers = out.headers;
        let mut tried: u128 = 0;
        let mut failure = None;
        for attempt in 0..attempts {
            let (authority, member) = match &self.target {
                Target::Host(a) => (a, None),
                Target::Channel(c) => match c.pick(out.hash_key, tried) {
                    Some(i) => (&c.members[i].authority, Some((c, i))),
                    None if attempt == 0 => {
                        let err = GatewayError::NoHealthyMember { channel: c.name.clone() };
                        if let Some(t) = trace {
                            t.backend(BackendTrace::NotCalled);
                        }
                        return (err.to_response(out.request_id), BackendOutcome::Failed);
                    }
                    // Every member was tried: the last failure stands.
                    None => break,
                },
            };
            let uri = self.uri(authority, out.path_and_query);
            let mut upstream = http::Request::new(match (body.take(), &replay) {
                (Some(b), _) => b,
                (None, Some(again)) => GatewayBody::full(again.clone()),
                (None, None) => unreachable!("one attempt without a replayable body"),
            });
            *upstream.method_mut() = out.method.clone();
            *upstream.headers_mut() =
                if attempt + 1 < attempts { headers.clone() } else { std::mem::take(&mut headers) };
            self.sign(out.method, &uri, upstream.headers_mut());
            *upstream.uri_mut() = uri;
            let traced = trace.map(|t| {
                t.backend_sent(upstream.method(), upstream.uri(), upstream.headers(), attempt + 1);
                (t, Instant::now())
            });

            let sent = tokio::time::timeout(self.timeout, self.client.request(upstream)).await;
            let (response, outcome) = match sent {
                Ok(Ok(resp)) => (resp.map(GatewayBody::Incoming), BackendOutcome::Responded),
                Ok(Err(_))
                    if let Some((exceeded, limit)) = out.body_exceeded
                        && exceeded.load(Ordering::Relaxed) =>
                {
                    let e = GatewayError::RequestTooLarge(*limit);
                    return (e.to_response(out.request_id), BackendOutcome::NotCalled);
                }
                Ok(Err(e)) => {
                    tracing::warn!(api = %out.api_id, backend = %authority, error = %e, "backend request failed");
                    (GatewayError::BackendUnavailable.to_response(out.request_id), BackendOutcome::Failed)
                }
                Err(_) => {
                    (GatewayError::BackendTimeout.to_response(out.request_id), BackendOutcome::TimedOut)
                }
            };
            if let Some((t, at)) = traced {
                let answer = (outcome == BackendOutcome::Responded).then(|| response.status());
                t.backend_answered(answer, outcome, at.elapsed());
            }
            let ok = outcome == BackendOutcome::Responded;
            if let Some((c, i)) = member {
                let status = response.status().as_u16();
                c.report(i, ok && !matches!(status, 502..=504));
                tried |= 1 << i;
            }
            if ok {
                return (response, outcome);
            }
            failure = Some((response, outcome));
        }
        failure.expect("at least one attempt")
    }
}

/// A request as it goes to the backend: everything but where.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a PathAndQuery,
    pub headers: HeaderMap,
    pub body: GatewayBody,
    /// What a consistent-hash channel picks its member by.
    pub hash_key: Option<u64>,
    /// Set once a streamed request body went past its limit (which fails the send).
    pub body_exceeded: Option<&'a (Arc<AtomicBool>, u64)>,
    pub request_id: &'a str,
    pub api_id: &'a str,
}

/// Replace `{name}` and `{name+}` in a backend path template with the captured parameters.
fn substitute(template: &str, params: &[(String, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let name = rest[start + 1..start + end].trim_end_matches('+');
        if let Some((_, v)) = params.iter().find(|(n, _)| n == name) {
            out.push_str(v);
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

impl Backend {
    pub fn mock_response(reply: &Reply) -> http::Response<GatewayBody> {
        let mut resp = http::Response::new(GatewayBody::full(reply.body.clone()));
        *resp.status_mut() = reply.status;
        let h = resp.headers_mut();
        for (n, v) in &reply.headers {
            h.append(n.clone(), v.clone());
        }
        resp
    }
}

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Drop hop-by-hop headers (the fixed list and any named in `Connection`). `Upgrade` goes
/// too: the proxy does not tunnel protocol upgrades.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// `X-Forwarded-For` gets the client appended; `-Proto` and `-Host` are set unless a
/// trusted hop already set them (no hop is trusted yet, so they are always ours).
pub fn add_forwarded(headers: &mut HeaderMap, client_ip: IpAddr, scheme: &str, host: &str) {
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    // Written on the stack and copied once into the header: this runs for every backend
    // request, and formatting the address into `String`s would cost two allocations more.
    let mut buf = [0u8; 256];
    let mut w = &mut buf[..];
    let prev = headers.get(&XFF).filter(|v| !v.is_empty());
    let written = match prev {
        Some(prev) => w.write_all(prev.as_bytes()).and_then(|()| write!(w, ", {client_ip}")),
        None => write!(w, "{client_ip}"),
    };
    let xff = match written {
        Ok(()) => {
            let left = w.len();
            HeaderValue::from_bytes(&buf[..buf.len() - left])
        }
        // A chain longer than the buffer: rare enough to format.
        Err(_) => {
            let prev = String::from_utf8_lossy(prev.map_or(&[][..], |p| p.as_bytes()));
            HeaderValue::from_str(&format!("{prev}, {client_ip}"))
        }
    };
    if let Ok(v) = xff {
        headers.insert(XFF.clone(), v);
    }
    headers.insert(XFP.clone(), HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(XFH.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_path_is_appended_to_the_base_or_mapped_by_template() {
        let client = Arc::new(crate::upstream::client(&Default::default()).unwrap());
        let uri = |b: &HttpBackend, path, params: &[(String, String)], query| {
            let Target::Host(authority) = &b.target else { unreachable!() };
            b.uri(authority, &b.path_and_query(path, params, query).unwrap()).to_string()
        };
        let b = HttpBackend::parse("http://127.0.0.1:9/base/", None, Duration::from_secs(1), client.clone())
            .unwrap();
        assert_eq!(uri(&b, "/a/b", &[], "x=1"), "http://127.0.0.1:9/base/a/b?x=1");
        let t =
            HttpBackend::parse("https://h:1", Some("/v2/{id}/files/{rest+}"), Duration::from_secs(1), client)
                .unwrap();
        let params = [("id".to_string(), "7".to_string()), ("rest".to_string(), "a/b".to_string())];
        assert_eq!(uri(&t, "/ignored", &params, ""), "https://h:1/v2/7/files/a/b");
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_named_in_connection() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap(), "http", "api.example");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example");
        // A chain longer than the stack buffer still gets the client appended.
        let long = vec!["10.0.0.1"; 40].join(", ");
        h.insert("x-forwarded-for", HeaderValue::from_str(&long).unwrap());
        add_forwarded(&mut h, "::1".parse().unwrap(), "https", "api.example");
        assert_eq!(h["x-forwarded-for"], format!("{long}, ::1").as_str());
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
