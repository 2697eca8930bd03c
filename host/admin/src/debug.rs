//! `POST /apis/{id}/debug`: call an API, published or not, and report what happened. The
//! call is described in JSON (`method`, `path` with its query, `headers`, `body` or
//! `body_base64`, `environment`, `client_ip`); the answer holds the response and the trace
//! (`wasmgate_proxy::trace`): each policy that ran, in order, with its decision and time,
//! and the backend request as sent.

use crate::ApiError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use wasmgate_proxy::debug::DebugResponse;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugCall {
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    /// Default: the gateway's default environment.
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default = "loopback")]
    pub client_ip: IpAddr,
}

fn get() -> String {
    "GET".into()
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

impl DebugCall {
    pub fn parse(body: Value) -> Result<DebugCall, ApiError> {
        let call: DebugCall = serde_path_to_error::deserialize(body).map_err(|e| {
            let at = e.path().to_string();
            ApiError::invalid(if at == "." { "" } else { &at }, e.into_inner().to_string())
        })?;
        if !call.path.starts_with('/') {
            return Err(ApiError::invalid("path", format!("`{}` must start with /", call.path)));
        }
        Ok(call)
    }

    /// The HTTP request to send; `host` unless the call names its own `Host`, and `X-Stage`
    /// naming `stage` when that is not the default environment (as a client would send it).
    pub fn request(&self, host: &str, stage: Option<&str>) -> Result<Request<Full<Bytes>>, ApiError> {
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| ApiError::invalid("method", format!("`{}` is not an HTTP method", self.method)))?;
        let body = match (&self.body, &self.body_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "body_base64",
                    "give `body` or `body_base64`, not both".into(),
                ));
            }
            (Some(text), None) => Bytes::from(text.clone()),
            (None, Some(b64)) => {
                Bytes::from(BASE64.decode(b64).map_err(|e| ApiError::invalid("body_base64", e.to_string()))?)
            }
            (None, None) => Bytes::new(),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() =
            self.path.parse().map_err(|e| ApiError::invalid("path", format!("`{}`: {e}", self.path)))?;
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            let at = format!("headers.{name}");
            let n =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| ApiError::invalid(&at, e.to_string()))?;
            let v = HeaderValue::from_str(value).map_err(|e| ApiError::invalid(&at, e.to_string()))?;
            headers.append(n, v);
        }
        if !headers.contains_key(http::header::HOST) {
            let host = HeaderValue::from_str(host).map_err(|e| ApiError::internal(e.to_string()))?;
            headers.insert(http::header::HOST, host);
        }
        if let Some(stage) = stage {
            let stage =
                HeaderValue::from_str(stage).map_err(|e| ApiError::invalid("environment", e.to_string()))?;
            headers.insert(wasmgate_proxy::X_STAGE, stage);
        }
        Ok(request)
    }
}

/// The report: the response as the client got it, and the trace.
pub fn report(environment: &str, r: &DebugResponse) -> Value {
    let headers: Vec<(&str, String)> = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let mut response = json!({
        "status": r.status.as_u16(),
        "headers": headers,
        "body_truncated": r.body_truncated,
    });
    match std::str::from_utf8(&r.body) {
        Ok(text) => response["body"] = json!(text),
        Err(_) => response["body_base64"] = json!(BASE64.encode(&r.body)),
    }
    json!({
        "environment": environment,
        "response": response,
        "trace": r.trace,
        "elapsed_micros": r.elapsed.as_micros() as u64,
    })
}
