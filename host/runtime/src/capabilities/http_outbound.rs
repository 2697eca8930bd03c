//! `wasmgate:plugin/http-outbound`: HTTP calls to the origins a binding declared.
//!
//! Guest calls are synchronous, so the request runs in `block_in_place` on the calling Tokio
//! worker (its other tasks move to other workers meanwhile), over one pooled client shared by
//! every plugin. The time waited is recorded on the store so the epoch deadline (the CPU
//! deadline) gives it back; the call's wall-clock cap bounds the timeout instead.
//!
//! Plain `http://` only for now: `https://` origins are refused at load.

use crate::HostState;
use crate::bindings::wasmgate::plugin::http_outbound::{Host, HttpError, OutboundRequest, OutboundResponse};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tracing::warn;

/// Larger answers are refused (`response-too-large`).
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The pooled client, made on first use (it needs a Tokio runtime).
#[derive(Default)]
pub struct Outbound {
    client: OnceLock<Client<HttpConnector, Full<Bytes>>>,
}

impl Outbound {
    fn client(&self) -> &Client<HttpConnector, Full<Bytes>> {
        self.client.get_or_init(|| {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector)
        })
    }
}

/// `scheme://host:port`, lower case, the port always written: the form grants are kept in
/// and requests are checked against.
pub fn origin(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let scheme = uri.scheme_str().ok_or("no scheme")?.to_ascii_lowercase();
    let port = match (scheme.as_str(), uri.port_u16()) {
        (_, Some(p)) => p,
        ("http", None) => 80,
        ("https", None) => return Err("https is not supported yet".into()),
        (other, None) => return Err(format!("`{other}` is not http")),
    };
    if scheme != "http" {
        return Err(format!("`{scheme}` is not supported (http only, for now)"));
    }
    let host = uri.host().ok_or("no host")?.to_ascii_lowercase();
    Ok(format!("{scheme}://{host}:{port}"))
}

impl Host for HostState {
    fn send(&mut self, r: OutboundRequest) -> Result<OutboundResponse, HttpError> {
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
        let req =
            req.body(Full::new(Bytes::from(r.body))).map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Err(HttpError::Connect("no async runtime to call from".into()));
        };
        let started = Instant::now();
        // The wall-clock cap bounds every wait in the call, this one included.
        let timeout = Duration::from_millis(r.timeout_ms.into())
            .min(self.wall_deadline.saturating_duration_since(started));
        let client = self.caps.outbound.client();
        let result = tokio::task::block_in_place(|| {
            handle.block_on(tokio::time::timeout(timeout, async {
                let resp = client.request(req).await.map_err(|e| HttpError::Connect(e.to_string()))?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                        HttpError::ResponseTooLarge
                    } else {
                        HttpError::Connect(e.to_string())
                    }
                })?;
                let headers = parts
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
                    })
                    .collect();
                Ok(OutboundResponse {
                    status: parts.status.as_u16(),
                    headers,
                    body: body.to_bytes().to_vec(),
                })
            }))
        });
        self.net_wait += started.elapsed();
        result.unwrap_or(Err(HttpError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_are_normalised_and_only_http_for_now() {
        assert_eq!(origin("http://Auth.Example:8080/check?x=1").unwrap(), "http://auth.example:8080");
        assert_eq!(origin("http://auth.example/check").unwrap(), "http://auth.example:80");
        assert!(origin("https://auth.example").is_err());
        assert!(origin("ftp://auth.example:21").is_err());
        assert!(origin("/relative").is_err());
    }
}
