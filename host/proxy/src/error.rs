//! Errors the gateway itself answers with. Every one maps to a status and a code in
//! [`GatewayError::status_and_code`], the single table that `docs/errors.md` mirrors.

use crate::body::GatewayBody;
use http::{HeaderValue, Response, StatusCode, header};

/// What the gateway answers when it cannot (or may not) give the backend's response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("no API matches this host, method and path")]
    RouteNotFound,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
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
            BadRequest(_) => (StatusCode::BAD_REQUEST, "APIG.0201"),
            BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "APIG.0204"),
            Misdirected => (StatusCode::MISDIRECTED_REQUEST, "APIG.0205"),
            BackendUnavailable => (StatusCode::BAD_GATEWAY, "APIG.0202"),
            BackendTimeout => (StatusCode::GATEWAY_TIMEOUT, "APIG.0203"),
            NoHealthyMember { .. } => (StatusCode::BAD_GATEWAY, "APIG.0206"),
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
        resp
    }
}
