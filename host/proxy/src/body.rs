//! The one body type the proxy sends and receives, so that streaming bodies pass through
//! without boxing and buffered ones (mock, plugin replies, errors) need no second type.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

pub enum GatewayBody {
    Empty,
    Full(Option<Bytes>),
    /// Streamed from the client or the backend.
    Incoming(Incoming),
    /// A body whose first bytes were read for a policy; the rest still streams.
    Prefixed {
        head: Option<Bytes>,
        rest: Incoming,
    },
    /// Counts what is sent and runs `on_end` once the body is finished or dropped.
    Observed(Box<ObservedBody>),
    /// A request body of unknown length, cut off with an error past the gateway's limit.
    Limited(Box<LimitedBody>),
}

pub struct LimitedBody {
    inner: GatewayBody,
    left: u64,
    /// Set when the limit was passed, so the backend call can answer 413 rather than 502.
    pub exceeded: Arc<AtomicBool>,
}

/// A request body passed the gateway's `max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the gateway accepts")]
pub struct TooLarge;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct ObservedBody {
    inner: GatewayBody,
    sent: u64,
    on_end: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.sent);
        }
    }
}

impl GatewayBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() { GatewayBody::Empty } else { GatewayBody::Full(Some(b)) }
    }

    /// Fail with [`TooLarge`] once more than `limit` bytes went through; `exceeded` tells.
    pub fn limited(self, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        GatewayBody::Limited(Box::new(LimitedBody { inner: self, left: limit, exceeded }))
    }

    /// Wrap `self` so `on_end(bytes_sent)` runs when the body ends or is dropped.
    pub fn observed(self, on_end: impl FnOnce(u64) + Send + 'static) -> Self {
        GatewayBody::Observed(Box::new(ObservedBody { inner: self, sent: 0, on_end: Some(Box::new(on_end)) }))
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            GatewayBody::Empty => Poll::Ready(None),
            GatewayBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            GatewayBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            GatewayBody::Prefixed { head, rest } => match head.take() {
                Some(h) => Poll::Ready(Some(Ok(Frame::data(h)))),
                None => Pin::new(rest).poll_frame(cx).map_err(Into::into),
            },
            GatewayBody::Limited(l) => {
                let polled = Pin::new(&mut l.inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    if n > l.left {
                        l.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(TooLarge.into())));
                    }
                    l.left -= n;
                }
                polled
            }
            GatewayBody::Observed(o) => {
                let polled = Pin::new(&mut o.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        o.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    Poll::Ready(None) => {
                        if let Some(f) = o.on_end.take() {
                            f(o.sent);
                        }
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Empty => true,
            GatewayBody::Full(b) => b.is_none(),
            GatewayBody::Incoming(b) => b.is_end_stream(),
            GatewayBody::Prefixed { head, rest } => head.is_none() && rest.is_end_stream(),
            // Report the end through poll_frame so `on_end` sees it.
            GatewayBody::Observed(_) => false,
            GatewayBody::Limited(l) => l.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Empty => SizeHint::with_exact(0),
            GatewayBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            GatewayBody::Incoming(b) => b.size_hint(),
            GatewayBody::Prefixed { head, rest } => {
                let h = head.as_ref().map_or(0, |b| b.len() as u64);
                let r = rest.size_hint();
                let mut s = SizeHint::new();
                s.set_lower(r.lower() + h);
                if let Some(u) = r.upper() {
                    s.set_upper(u + h);
                }
                s
            }
            GatewayBody::Observed(o) => o.inner.size_hint(),
            GatewayBody::Limited(l) => l.inner.size_hint(),
        }
    }
}
