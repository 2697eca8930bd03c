//! Listeners: HTTP/1.1 and HTTP/2 on one port (h2c by prior knowledge on plain listeners,
//! ALPN on TLS ones), graceful drain.

use crate::pipeline::handle;
use crate::tls::TlsSession;
use crate::{Connection, ListenerSettings, ProxyState};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

/// hyper's own cap on a request head (it answers a bare 431 past it).
const MAX_HEAD: usize = (1 << 20) + (64 << 10);

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept and serve connections until `shutdown` turns true, then let in-flight requests
/// finish for up to `drain` before closing what is left.
pub async fn serve(
    settings: Arc<ListenerSettings>,
    listener: TcpListener,
    state: Arc<ProxyState>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Above the largest `gateway.max_header_bytes`, so the pipeline refuses large headers
    // itself, with the gateway's JSON error and code.
    builder.http1().max_buf_size(MAX_HEAD);
    builder.http2().max_header_list_size(MAX_HEAD as u32);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (state, settings, builder) = (state.clone(), settings.clone(), builder.clone());
                // Taken now, so a drain that starts during the TLS handshake still waits for
                // this connection and then closes it gracefully.
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    if settings.tls.is_none() {
                        let conn = Connection { peer, listener: settings, tls: None, trace: None };
                        return serve_connection(&builder, watcher, stream, state, conn).await;
                    }
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_tls(&state, &settings, stream)).await {
                        Ok(Ok((stream, session))) => {
                            let conn = Connection { peer, listener: settings, tls: Some(session), trace: None };
                            serve_connection(&builder, watcher, stream, state, conn).await
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    info!("draining in-flight requests");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        warn!("drain timeout reached; closing remaining connections");
    }
}

/// Read the ClientHello, pick the certificate of the domain it names from the current
/// snapshot, and finish the handshake.
async fn accept_tls(
    state: &ProxyState,
    settings: &ListenerSettings,
    stream: TcpStream,
) -> std::io::Result<(TlsStream<TcpStream>, TlsSession)> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let hello = start.client_hello();
    let default = settings.tls.as_ref().and_then(|t| t.default_certificate.as_deref());
    let Some(config) = state.snapshot.load().tls.config_for(hello.server_name(), default) else {
        let name = hello.server_name().unwrap_or("(none)").to_string();
        return Err(std::io::Error::other(format!("no certificate for server name {name}")));
    };
    let stream = start.into_stream(config).await?;
    let session = TlsSession::of(stream.get_ref().1);
    Ok((stream, session))
}

/// The pipeline as a hyper service for the requests of one connection.
pub(crate) fn service(
    state: Arc<ProxyState>,
    conn: Connection,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::body::GatewayBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<crate::body::GatewayBody>, Infallible>> + Send,
> + Clone {
    let conn = Arc::new(conn);
    service_fn(move |req| {
        let (state, conn) = (state.clone(), conn.clone());
        async move { Ok::<_, Infallible>(handle(state, req, &conn).await) }
    })
}

async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    stream: S,
    state: Arc<ProxyState>,
    conn: Connection,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let serving = builder.serve_connection(TokioIo::new(stream), service(state, conn)).into_owned();
    if let Err(e) = watcher.watch(serving).await {
        debug!(error = %e, "connection ended with an error");
    }
}
