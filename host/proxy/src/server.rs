//! Listeners: HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on one port, graceful drain.

use crate::pipeline::handle;
use crate::{ListenerSettings, ProxyState};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// Accept and serve connections until `shutdown` turns true, then let in-flight requests
/// finish for up to `drain` before closing what is left.
pub async fn serve(
    listener_settings: Arc<ListenerSettings>,
    listener: TcpListener,
    state: Arc<ProxyState>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
                let (state, settings) = (state.clone(), listener_settings.clone());
                let service = service_fn(move |req| {
                    let (state, settings) = (state.clone(), settings.clone());
                    async move { Ok::<_, Infallible>(handle(state, req, peer, &settings).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
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
