//! Response bodies returned to clients: a backend's streamed body (with the
//! bookkeeping that runs when it ends), or a short body Fulcrum wrote itself.

use super::finish::Completion;
use crate::upstream::body::{Answer, BoxError};
use crate::upstream::client::{self, Lease};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Box<UpstreamStream>),
}

impl ProxyBody {
    /// A backend's fields left raw, when the answer was asked for so (its
    /// response's map then holds none of them; see `proxy::spliced`).
    pub fn raw_head(&self) -> Option<&crate::upstream::h1::response::RawHead> {
        match self {
            ProxyBody::Full(_) => None,
            ProxyBody::Upstream(s) => s.inner.raw_head(),
        }
    }

    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    pub fn text(s: impl Into<Bytes>) -> Self {
        let b: Bytes = s.into();
        if b.is_empty() {
            ProxyBody::Full(None)
        } else {
            ProxyBody::Full(Some(b))
        }
    }
}

/// A backend's response body on its way to the client.
pub struct UpstreamStream {
    inner: Answer,
    /// The connection it arrives on: back to the pool once the body ended cleanly.
    lease: Lease,
    completion: Completion,
    /// Longest pause allowed between two pieces of the body.
    idle: Duration,
    idle_timer: Option<Pin<Box<Sleep>>>,
    idle_armed: bool,
    finished: bool,
    /// On a caching route: the body being stored as it streams.
    pub(crate) admission: Option<Box<crate::cache::Admission>>,
}

impl UpstreamStream {
    pub fn new(inner: Answer, lease: Lease, completion: Completion, idle: Duration) -> Self {
        UpstreamStream {
            inner,
            lease,
            completion,
            idle,
            idle_timer: None,
            idle_armed: false,
            finished: false,
            admission: None,
        }
    }

    fn finish(&mut self, clean: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        // Stored only when the whole body arrived.
        if let Some(a) = self.admission.take()
            && clean
        {
            a.commit();
        }
        let lease = std::mem::replace(&mut self.lease, Lease::None);
        if clean && let Some(b) = &self.completion.backend {
            client::release(b, lease, &mut self.inner);
        }
        if !clean {
            self.completion.aborted = true;
        }
        self.completion.finish();
    }
}

impl Drop for UpstreamStream {
    fn drop(&mut self) {
        // A body with nothing left (e.g. 204, or read to the end) counts as clean.
        let clean = self.inner.is_end_stream();
        self.finish(clean);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream(s) => {
                let s = &mut **s;
                match Pin::new(&mut s.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        s.idle_armed = false;
                        if let Some(d) = frame.data_ref() {
                            s.completion.bytes_out += d.len() as u64;
                            if let Some(a) = &mut s.admission
                                && !a.data(d)
                            {
                                // Too large to keep: streamed through only.
                                s.admission = None;
                            }
                        }
                        if s.inner.is_end_stream() {
                            s.finish(true);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        s.finish(false);
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Poll::Ready(None) => {
                        s.finish(true);
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        // The idle timer exists only for bodies that actually wait.
                        let deadline = tokio::time::Instant::now() + s.idle;
                        if !s.idle_armed {
                            s.idle_armed = true;
                            match &mut s.idle_timer {
                                Some(t) => t.as_mut().reset(deadline),
                                None => {
                                    s.idle_timer =
                                        Some(Box::pin(tokio::time::sleep_until(deadline)))
                                }
                            }
                        }
                        if let Some(t) = &mut s.idle_timer
                            && t.as_mut().poll(cx).is_ready()
                        {
                            s.finish(false);
                            return Poll::Ready(Some(Err(
                                "backend sent nothing for timeouts.idle".into(),
                            )));
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(s) => s.inner.size_hint(),
        }
    }
}

use std::future::Future;
