//! `wasmgate:plugin/http-outbound`: HTTP calls to the origins a binding declared.
//!
//! Plugins importing this interface are called asynchronously (see `async_bindings`): while
//! the request is in flight the guest's call is suspended and its Tokio worker serves other
//! requests. One pooled client is shared by every plugin. The time waited is recorded on the
//! store so the epoch deadline (the CPU deadline) gives it back; the call's wall-clock cap
//! bounds the timeout instead.
//! `https://` goes over rustls with the system's CAs and any the gateway is configured to
//! trust (`gateway.outbound_ca`).

use crate::HostState;
use crate::async_bindings::wasmgate::plugin::http_outbound::{
    Host, HttpError, OutboundRequest, OutboundResponse,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::warn;
use wasmgate_proxy::upstream;

/// Larger answers are refused (`response-too-large`).
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The pooled client, made on first use (it needs a Tokio runtime).
#[derive(Default)]
pub struct Outbound {
    client: OnceLock<HttpsClient>,
    extra_roots: Mutex<Vec<CertificateDer<'static>>>,
    /// Answers instead of the network: the test harness's fake.
    fake: OnceLock<Box<Responder>>,
}

/// Answers a granted outbound request without the network (`Err`: the connection failed).
pub type Responder = dyn Fn(http::Request<Bytes>) -> Result<http::Response<Bytes>, String> + Send + Sync;

impl Outbound {
    /// Trust these CAs too for `https://` (set at start-up, before the first call).
    pub fn trust(&self, certs: Vec<CertificateDer<'static>>) {
        *self.extra_roots.lock().unwrap() = certs;
    }

    /// Answer every outbound request with `fake` instead of the network (test harnesses;
    /// grants are still checked). Set once, before the first call.
    pub fn fake(&self, fake: Box<Responder>) -> Result<(), String> {
        self.fake.set(fake).map_err(|_| "outbound HTTP is already faked".to_string())
    }

    fn client(&self) -> &HttpsClient {
        self.client.get_or_init(|| {
            let mut roots = upstream::system_roots();
            for ca in self.extra_roots.lock().unwrap().iter() {
                if let Err(e) = roots.add(ca.clone()) {
                    warn!(error = %e, "a configured outbound CA was not usable");
                }
            }
            let tls = upstream::tls_config(roots).with_no_client_auth();
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(upstream::connector(tls, None))
        })
    }
}

/// `scheme://host:port`, lower case, the port always written: the form grants are kept in
/// and requests are checked against.
pub fn origin(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let scheme = uri.scheme_str().ok_or("no scheme")?.to_ascii_lowercase();
    let port = match (scheme.as_str(), uri.port_u16()) {
        ("http" | "https", Some(p)) => p,
        ("http", None) => 80,
        ("https", None) => 443,
        (other, _) => return Err(format!("`{other}` is not http or https")),
    };
    let host = uri.host().ok_or("no host")?.to_ascii_lowercase();
    Ok(format!("{scheme}://{host}:{port}"))
}

/// The answer as the guest receives it, from the network or the test harness's fake.
fn response(parts: &http::response::Parts, body: &[u8]) -> OutboundResponse {
    let headers = parts.headers.iter();
    let headers =
        headers.map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()));
    OutboundResponse { status: parts.status.as_u16(), headers: headers.collect(), body: body.to_vec() }
}

/// An error and its causes, `: `-separated (hyper's own message alone says only "Connect").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Host for HostState {
    async fn send(&mut self, r: OutboundRequest) -> Result<OutboundResponse, HttpError> {
        let target = origin(&r.url).map_err(HttpError::InvalidRequest)?;
        let granted = self.scope().grants.get().is_some_and(|g| g.http.contains(&target));
        if !granted {
            let scope = self.scope();
            warn!(plugin = %scope.plugin, api = %scope.api_id, origin = %target, "outbound HTTP refused: not granted");
            return Err(HttpError::NotGranted(target));
        }
        let mut req = http::Request::builder().method(r.method.as_str()).uri(&r.url);
        for (name, value) in &r.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let body = Bytes::from(r.body);
        if let Some(fake) = self.caps.outbound.fake.get() {
            let req = req.body(body).map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
            let resp = fake(req).map_err(HttpError::Connect)?;
            let (parts, body) = resp.into_parts();
            return Ok(response(&parts, &body));
        }
        let req = req.body(Full::new(body)).map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        let started = Instant::now();
        // The wall-clock cap bounds every wait in the call, this one included.
        let timeout = Duration::from_millis(r.timeout_ms.into())
            .min(self.wall_deadline.saturating_duration_since(started));
        let client = self.caps.outbound.client();
        let result = tokio::time::timeout(timeout, async {
            let resp = client.request(req).await.map_err(|e| HttpError::Connect(chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    HttpError::ResponseTooLarge
                } else {
                    HttpError::Connect(e.to_string())
                }
            })?;
            Ok(response(&parts, &body.to_bytes()))
        })
        .await;
        self.net_wait += started.elapsed();
        result.unwrap_or(Err(HttpError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_are_normalised_with_their_port() {
        assert_eq!(origin("http://Auth.Example:8080/check?x=1").unwrap(), "http://auth.example:8080");
        assert_eq!(origin("http://auth.example/check").unwrap(), "http://auth.example:80");
        assert_eq!(origin("https://auth.example").unwrap(), "https://auth.example:443");
        assert!(origin("ftp://auth.example:21").is_err());
        assert!(origin("/relative").is_err());
    }
}
