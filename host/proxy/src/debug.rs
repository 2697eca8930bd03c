//! One request through a snapshot, traced, without a socket: the admin API's debug call.
//! The request goes over an in-memory HTTP/1.1 connection into the same pipeline that
//! serves clients, so what it reports is what a client would get.

use crate::trace::{Trace, TraceRecord};
use crate::{Connection, ListenerSettings, ProxyState};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Response bodies are reported up to this size.
pub const MAX_BODY: usize = 1 << 20;
/// How long a debug call waits for its log phases after the response.
const LOG_PHASE_WAIT: Duration = Duration::from_secs(5);

pub struct DebugResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body was longer than [`MAX_BODY`]; `body` is its start.
    pub body_truncated: bool,
    pub trace: TraceRecord,
    pub elapsed: Duration,
}

/// Serve `request` (origin-form URI, with its `Host` header) as if `client` had sent it.
pub async fn call(
    state: Arc<ProxyState>,
    request: Request<Full<Bytes>>,
    client: SocketAddr,
) -> Result<DebugResponse, hyper::Error> {
    let trace = Arc::new(Trace::default());
    let conn = Connection {
        peer: client,
        listener: Arc::new(ListenerSettings::default()),
        tls: None,
        trace: Some(trace.clone()),
    };
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(server_io), crate::server::service(state, conn, Default::default()));
    tokio::spawn(server);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client_io)).await?;
    tokio::spawn(connection);

    let start = Instant::now();
    let response = sender.send_request(request).await?;
    let (parts, mut body) = response.into_parts();
    let mut read = BytesMut::new();
    let mut body_truncated = false;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let room = MAX_BODY - read.len();
            body_truncated |= data.len() > room;
            read.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    let elapsed = start.elapsed();
    trace.complete(LOG_PHASE_WAIT).await;
    Ok(DebugResponse {
        status: parts.status,
        headers: parts.headers,
        body: read.freeze(),
        body_truncated,
        trace: trace.record(),
        elapsed,
    })
}
