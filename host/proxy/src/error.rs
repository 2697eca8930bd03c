//! Errors the gateway itself answers with. Every one maps to a status and a code in
//! [`GatewayError::status_and_code`], the single table that `docs/errors.md` mirrors.

use crate::body::GatewayBody;
use crate::params::ParamError;
use http::{HeaderValue, Response, StatusCode, header};
use std::collections::HashMap;

/// What the gateway answers when it cannot (or may not) give the backend's response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("no API matches this host, method and path")]
    RouteNotFound,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("bad request: {0}")]
    BadPath(crate::path::PathError),
    #[error("this domain requires a client certificate: connect with TLS, naming it (SNI)")]
    Misdirected,
    #[error("the request body is larger than a policy on this API accepts")]
    BodyTooLarge,
    #[error("the backend is unavailable")]
    BackendUnavailable,
    #[error("the backend did not answer in time")]
    BackendTimeout,
    #[error("no member of channel `{channel}` is available (all unhealthy or ejected)")]
    NoHealthyMember { channel: String },
    #[error("invalid request: {0}")]
    InvalidParameter(ParamError),
    #[error("the request's headers add up to more than the gateway accepts ({0} bytes)")]
    HeadersTooLarge(usize),
    #[error("the request body is larger than the gateway accepts ({0} bytes)")]
    RequestTooLarge(u64),
    #[error("plugin `{plugin}` failed")]
    PluginFailed { plugin: String },
    #[error("plugin `{plugin}` exceeded its CPU deadline or wall-clock cap")]
    PluginDeadline { plugin: String },
    #[error("plugin `{plugin}` exceeded its memory limit")]
    PluginMemory { plugin: String },
    #[error("plugin `{plugin}` returned an invalid action: {detail}")]
    PluginInvalidAction { plugin: String, detail: String },
    #[error("internal gateway error")]
    Internal,
}

impl GatewayError {
    /// The one place where gateway errors become HTTP statuses and error codes.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use GatewayError::*;
        match self {
            RouteNotFound => (StatusCode::NOT_FOUND, "APIG.0101"),
            BadRequest(_) | BadPath(_) => (StatusCode::BAD_REQUEST, "APIG.0201"),
            BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "APIG.0204"),
            Misdirected => (StatusCode::MISDIRECTED_REQUEST, "APIG.0205"),
            BackendUnavailable => (StatusCode::BAD_GATEWAY, "APIG.0202"),
            BackendTimeout => (StatusCode::GATEWAY_TIMEOUT, "APIG.0203"),
            NoHealthyMember { .. } => (StatusCode::BAD_GATEWAY, "APIG.0208"),
            InvalidParameter(_) => (StatusCode::BAD_REQUEST, "APIG.0207"),
            HeadersTooLarge(_) => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "APIG.0209"),
            RequestTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "APIG.0210"),
            PluginFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "APIG.0501"),
            PluginDeadline { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "APIG.0502"),
            PluginMemory { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "APIG.0503"),
            PluginInvalidAction { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "APIG.0504"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "APIG.9999"),
        }
    }

    /// `{"error_code","error_msg","request_id"}` with the mapped status.
    pub fn to_response(&self, request_id: &str) -> Response<GatewayBody> {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({
            "error_code": code,
            "error_msg": self.to_string(),
            "request_id": request_id,
        });
        let mut resp = Response::new(GatewayBody::full(body.to_string()));
        *resp.status_mut() = status;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.extensions_mut().insert(ErrorInfo { code: code.to_string(), message: self.to_string() });
        resp
    }
}

/// On a response the gateway or a policy answered with an error: what a group's custom
/// error responses match on.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

impl ErrorInfo {
    /// A policy's reply in the gateway's error shape (`{"error_code", "error_msg"}`, what
    /// the SDK's `Reply::error` makes) is an error too.
    pub fn mark_reply(response: &mut Response<GatewayBody>) {
        let GatewayBody::Full(Some(body)) = response.body() else { return };
        if response.status().as_u16() < 400 || response.extensions().get::<ErrorInfo>().is_some() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return };
        if let Some(code) = v.get("error_code").and_then(|c| c.as_str()) {
            let message = v.get("error_msg").and_then(|m| m.as_str()).unwrap_or("").to_string();
            response.extensions_mut().insert(ErrorInfo { code: code.to_string(), message });
        }
    }
}

/// A group's answer to one error code.
#[derive(Debug, Clone)]
pub struct CustomError {
    pub status: Option<StatusCode>,
    /// With `$context.error.code`, `$context.error.message` and `$context.requestId`.
    pub body: String,
    pub content_type: HeaderValue,
}

/// A group's custom error responses by error code.
pub type CustomErrors = HashMap<String, CustomError>;

/// `response` as the group answers its error, if it has an answer for it; headers other
/// policies set (CORS, request id) stay.
pub fn customize(
    errors: &CustomErrors,
    mut response: Response<GatewayBody>,
    request_id: &str,
) -> Response<GatewayBody> {
    let Some(info) = response.extensions().get::<ErrorInfo>() else { return response };
    let Some(custom) = errors.get(&info.code) else { return response };
    let json = custom.content_type.as_bytes().windows(4).any(|w| w.eq_ignore_ascii_case(b"json"));
    // In JSON, values go in as string contents: escaped, so a message cannot break out.
    let fill = |v: &str| {
        if json {
            serde_json::to_string(v).map(|q| q[1..q.len() - 1].to_string()).unwrap_or_default()
        } else {
            v.to_string()
        }
    };
    let body = custom
        .body
        .replace("$context.error.code", &fill(&info.code))
        .replace("$context.error.message", &fill(&info.message))
        .replace("$context.requestId", &fill(request_id));
    if let Some(status) = custom.status {
        *response.status_mut() = status;
    }
    response.headers_mut().insert(header::CONTENT_TYPE, custom.content_type.clone());
    response.headers_mut().remove(header::CONTENT_LENGTH);
    *response.body_mut() = GatewayBody::full(body);
    response
}
