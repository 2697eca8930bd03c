//! The access log: one structured event per request (target `access`), emitted when the
//! response head goes out, with fields like the Kafka log's system fields. The binary's
//! subscriber writes them as JSON lines (or text); only snapshots that enable the log pay
//! for collecting the fields.

use crate::body::GatewayBody;
use crate::error::ErrorInfo;
use crate::traceparent::TraceContext;
use crate::{Api, Connection};
use http::{Method, Request, Response, header};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::Level;

/// What serving a request found out, for its metrics and access log line.
#[derive(Default)]
pub struct Served {
    pub api: Option<Arc<Api>>,
    /// Only collected with the access log on.
    pub app_id: Option<String>,
    pub backend: Option<Duration>,
    /// The W3C trace (none when no API matched).
    pub trace: Option<TraceContext>,
}

/// Where the gateway's spans go (an OTLP exporter): one per routed request, when its response
/// head goes out.
pub trait SpanSink: Send + Sync {
    fn record(&self, span: RequestSpan<'_>);
}

/// The gateway's span of one request.
pub struct RequestSpan<'a> {
    pub trace: TraceContext,
    pub method: &'a Method,
    pub path: &'a str,
    pub api: &'a str,
    pub environment: &'a str,
    pub status: u16,
    pub error_code: &'a str,
    pub start: SystemTime,
    pub end: SystemTime,
}

impl RequestSpan<'_> {
    /// Record the span of a request served as `served` describes, if it was routed.
    pub fn record(
        sink: &dyn SpanSink,
        served: &Served,
        method: &Method,
        path: &str,
        start: SystemTime,
        response: &Response<GatewayBody>,
    ) {
        let (Some(trace), Some(api)) = (served.trace, &served.api) else { return };
        sink.record(RequestSpan {
            trace,
            method,
            path,
            api: &api.route.api_id,
            environment: &api.route.environment,
            status: response.status().as_u16(),
            error_code: response.extensions().get::<ErrorInfo>().map_or("", |e| e.code.as_str()),
            start,
            end: SystemTime::now(),
        });
    }
}

/// The request's side of an access log line, taken before the request is served.
pub struct AccessLine {
    level: Level,
    method: Method,
    host: String,
    path: String,
    query: String,
    client_ip: IpAddr,
    user_agent: String,
    request_size: u64,
}

impl AccessLine {
    pub fn new<B>(level: Level, req: &Request<B>, conn: &Connection) -> AccessLine {
        let h = req.headers();
        let text = |name| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        AccessLine {
            level,
            method: req.method().clone(),
            host: req.uri().host().map(str::to_string).unwrap_or_else(|| text(header::HOST)),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or("").to_string(),
            client_ip: conn.listener.client_ip(conn.peer.ip(), h),
            user_agent: text(header::USER_AGENT),
            request_size: text(header::CONTENT_LENGTH).parse().unwrap_or(0),
        }
    }

    pub fn emit(self, served: &Served, response: &Response<GatewayBody>, took: Duration) {
        let h = response.headers();
        let request_id = h.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
        let response_size: u64 =
            h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let error_code = response.extensions().get::<ErrorInfo>().map_or("", |e| e.code.as_str());
        let (api, environment, group) = served.api.as_ref().map_or(("", "", ""), |a| {
            (a.route.api_id.as_str(), a.route.environment.as_str(), a.route.group_id.as_str())
        });
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "access",
                    $level,
                    request_id,
                                        trace_id = %format_args!("{:032x}", served.trace.map_or(0, |t| t.trace_id)),
                    client_ip = %self.client_ip,
                    method = %self.method,
                    host = %self.host,
                    path = %self.path,
                    query = %self.query,
                    status = response.status().as_u16(),
                    error_code,
                    api,
                    group,
                    environment,
                    app_id = served.app_id.as_deref().unwrap_or(""),
                    latency_ms = ms(took),
                    backend_latency_ms = served.backend.map_or(-1.0, ms),
                    request_size = self.request_size,
                    response_size,
                    user_agent = %self.user_agent,
                )
            };
        }
        // The level is fixed per event site, hence one site per level.
        match self.level {
            Level::ERROR => line!(Level::ERROR),
            Level::WARN => line!(Level::WARN),
            Level::INFO => line!(Level::INFO),
            Level::DEBUG => line!(Level::DEBUG),
            Level::TRACE => line!(Level::TRACE),
        }
    }
}
