//! Listeners: HTTP/1.1 and HTTP/2 on one port (h2c by prior knowledge on plain listeners,
//! ALPN on TLS ones), graceful drain, and what one client may hold: connections, time to
//! send a request head, idle time, HTTP/2 streams and resets.

use crate::pipeline::handle;
use crate::tls::TlsSession;
use crate::{Connection, ListenerSettings, ProxyState};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

/// hyper's own cap on a request head (it answers a bare 431 past it).
const MAX_HEAD: usize = (1 << 20) + (64 << 10);

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 streams a client may open and reset before the server has seen them through: past
/// it the connection gets GOAWAY (the rapid-reset attack, CVE-2023-44487). h2's default.
const MAX_PENDING_RESETS: usize = 20;

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
    let limits = settings.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Above the largest `gateway.max_header_bytes`, so the pipeline refuses large headers
    // itself, with the gateway's JSON error and code.
    builder
        .http1()
        .max_buf_size(MAX_HEAD)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .max_header_list_size(MAX_HEAD as u32)
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS);
    // A connection holds a permit; with none left, new ones wait in the kernel's backlog.
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = async {
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                (permit, listener.accept().await)
            } => accepted,
            _ = shutdown.changed() => break,
        };
        let (permit, (stream, peer)) = match accepted {
            (permit, Ok(a)) => (permit, a),
            (_, Err(e)) => {
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
            let _permit = permit;
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

/// The pipeline as a hyper service for the requests of one connection; `activity` counts
/// the requests in flight.
pub(crate) fn service(
    state: Arc<ProxyState>,
    conn: Connection,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::body::GatewayBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<crate::body::GatewayBody>, Infallible>> + Send,
> + Clone {
    let conn = Arc::new(conn);
    service_fn(move |req| {
        let (state, conn, activity) = (state.clone(), conn.clone(), activity.clone());
        async move {
            let _in_flight = InFlight::start(&activity);
            Ok::<_, Infallible>(handle(state, req, &conn).await)
        }
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
    let idle_timeout = conn.listener.limits.idle_timeout;
    let activity = Arc::new(Activity::default());
    let stream = Counted { inner: stream, activity: activity.clone() };
    let serving =
        builder.serve_connection(TokioIo::new(stream), service(state, conn, activity.clone())).into_owned();
    tokio::select! {
        served = watcher.watch(serving) => if let Err(e) = served {
            debug!(error = %e, "connection ended with an error");
        },
        // Nothing in flight and nothing sent either way: closing it is what a keep-alive
        // client expects, and frees what an idle (or abandoned) connection holds.
        () = activity.idle_for(idle_timeout) => debug!("idle connection closed"),
    }
}

/// What one connection is doing, for its idle timeout: reads and writes on its socket, and
/// requests whose response head is not out yet. Counted with relaxed atomic adds, no clock
/// read on the request path; a timer compares the counts a few times per timeout.
#[derive(Default)]
pub(crate) struct Activity {
    io: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// Resolves once the connection has been idle for at least `timeout` (at most 1.25×).
    async fn idle_for(&self, timeout: Duration) {
        const CHECKS: u32 = 4;
        let mut quiet = 0;
        let mut seen = self.io.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(timeout / CHECKS).await;
            let now = self.io.load(Ordering::Relaxed);
            quiet = if now == seen && self.in_flight.load(Ordering::Relaxed) == 0 { quiet + 1 } else { 0 };
            seen = now;
            if quiet >= CHECKS {
                return;
            }
        }
    }
}

struct InFlight<'a>(&'a Activity);

impl<'a> InFlight<'a> {
    fn start(activity: &'a Activity) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket whose reads and writes are counted in its connection's [`Activity`].
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    fn note<T>(&self, p: Poll<T>) -> Poll<T> {
        if p.is_ready() {
            self.activity.io.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(p)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(p)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
