//! Request bodies sent to backends: streamed from the client (with the size limit and
//! byte count applied on the way), replayable for retries, or small fixed ones.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Shared between a streamed request body and the handler: bytes seen, and whether
/// the size limit stopped the body.
#[derive(Default)]
pub struct BodyStats {
    pub bytes: AtomicU64,
    pub too_large: AtomicBool,
    /// Reading the client's body failed (the client went away or sent bad framing).
    pub client_error: AtomicBool,
}

#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("request body larger than limits.max_body_bytes")
    }
}

impl std::error::Error for BodyTooLarge {}

/// A request body as it arrived from a client, whatever carried it. The request
/// path is typed on this, not on one server library's body: another source (a
/// body already read whole, HTTP/3) is one more variant.
pub(crate) enum Inbound {
    Hyper(Incoming),
    /// No body (a request Fulcrum makes itself, e.g. a cache refresh).
    Empty,
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Inbound::Hyper(b) => Pin::new(b).poll_frame(cx),
            Inbound::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Hyper(b) => b.is_end_stream(),
            Inbound::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::Hyper(b) => b.size_hint(),
            Inbound::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The client's body, streamed with the limit enforced chunk by chunk.
pub struct ClientBody {
    inner: Inbound,
    limit: u64,
    seen: u64,
    stats: Option<Arc<BodyStats>>,
}

impl ClientBody {
    pub(crate) fn new(inner: Inbound, limit: Option<u64>, stats: Option<Arc<BodyStats>>) -> Self {
        ClientBody {
            inner,
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            stats,
        }
    }

    fn poll_frame_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if let Some(s) = &self.stats {
                        s.bytes.fetch_add(data.len() as u64, Relaxed);
                    }
                    if self.seen > self.limit {
                        if let Some(s) = &self.stats {
                            s.too_large.store(true, Relaxed);
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(s) = &self.stats {
                    s.client_error.store(true, Relaxed);
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Upper bound of the body bytes kept to replay a request on another backend. A body
/// that grows past it is still streamed, but the request is then no longer retried
/// once any of it was sent.
pub const REPLAY_LIMIT: usize = 64 * 1024;

struct ReplayState {
    source: Option<ClientBody>,
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    stored: usize,
    /// More than REPLAY_LIMIT bytes passed: the stored prefix is incomplete.
    overflowed: bool,
    done: bool,
    /// Cursor that currently pulls from the source (only one attempt at a time).
    pulling: u64,
}

/// A request body that can be sent again to another backend, as long as it fit in
/// [`REPLAY_LIMIT`].
#[derive(Clone)]
pub struct Replay {
    state: Arc<Mutex<ReplayState>>,
}

impl Replay {
    pub fn new(source: ClientBody) -> Self {
        Replay {
            state: Arc::new(Mutex::new(ReplayState {
                source: Some(source),
                chunks: Vec::new(),
                trailers: None,
                stored: 0,
                overflowed: false,
                done: false,
                pulling: 0,
            })),
        }
    }

    /// A fresh reader from the first byte.
    pub fn reader(&self, attempt: u64) -> ReplayReader {
        ReplayReader {
            state: self.state.clone(),
            pos: 0,
            attempt,
            trailers_sent: false,
        }
    }

    /// Whether a new attempt can still send the whole body.
    pub fn replayable(&self) -> bool {
        match self.state.lock() {
            Ok(s) => !s.overflowed,
            Err(_) => false,
        }
    }
}

pub struct ReplayReader {
    state: Arc<Mutex<ReplayState>>,
    pos: usize,
    attempt: u64,
    trailers_sent: bool,
}

impl ReplayReader {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Ok(mut s) = self.state.lock() else {
            return Poll::Ready(Some(Err("replay buffer poisoned".into())));
        };
        if self.pos < s.chunks.len() {
            let chunk = s.chunks[self.pos].clone();
            self.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.done {
            if !self.trailers_sent {
                self.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        if s.overflowed && self.pos < usize::MAX && s.pulling != self.attempt {
            // An earlier attempt consumed bytes that were not kept.
            return Poll::Ready(Some(Err("request body can no longer be replayed".into())));
        }
        s.pulling = self.attempt;
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        match source.poll_frame_inner(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_data() {
                    let data = frame.into_data().unwrap_or_default();
                    if !s.overflowed && s.stored + data.len() <= REPLAY_LIMIT {
                        s.stored += data.len();
                        s.chunks.push(data.clone());
                        self.pos = s.chunks.len();
                    } else {
                        s.overflowed = true;
                        self.pos = usize::MAX;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                } else {
                    let trailers = frame.into_trailers().ok();
                    s.trailers = trailers.clone();
                    s.done = true;
                    s.source = None;
                    self.trailers_sent = true;
                    match trailers {
                        Some(t) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                        None => Poll::Ready(None),
                    }
                }
            }
            Poll::Ready(None) => {
                s.done = true;
                s.source = None;
                self.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Every kind of body Fulcrum sends to a backend.
pub enum UpstreamBody {
    Empty,
    Client(ClientBody),
    Replay(ReplayReader),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Client(b) => b.poll_frame_inner(cx),
            UpstreamBody::Replay(r) => r.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Client(b) => b.inner.is_end_stream(),
            UpstreamBody::Replay(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Client(b) => b.inner.size_hint(),
            UpstreamBody::Replay(r) => match r.state.lock() {
                Ok(s) => match &s.source {
                    Some(src) => {
                        // Same total as the client's body: stored prefix + what is left.
                        let rest = src.inner.size_hint();
                        match rest.exact() {
                            Some(n) => SizeHint::with_exact(s.stored as u64 + n),
                            None => SizeHint::default(),
                        }
                    }
                    None if !s.overflowed => SizeHint::with_exact(s.stored as u64),
                    None => SizeHint::default(),
                },
                Err(_) => SizeHint::default(),
            },
        }
    }
}
