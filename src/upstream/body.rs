//! Request bodies sent to backends: streamed from the client (with the size limit and
//! byte count applied on the way), replayable for retries, or small fixed ones.
//!
//! A streamed body also keeps the clock that decides who is slow: while it waits
//! on the client, the backend's `response_header` timeout does not run (see
//! [`BodyStats::answer_within`]); a client that sends nothing for
//! `limits.body_read_timeout` ends the body with [`BodyStalled`].

use super::client::ExchangeError;
use super::h1::conn::{Conn as OwnConn, OwnBody};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `BodyStats::progress_ms` while the body waits for the client.
const WAITING_ON_CLIENT: u64 = u64::MAX;

/// Shared between a streamed request body and the handler: bytes seen, whether
/// the size limit or the client stopped the body, and when the backend's side of
/// the exchange last had something to do.
pub struct BodyStats {
    pub bytes: AtomicU64,
    pub too_large: AtomicBool,
    /// Reading the client's body failed (the client went away or sent bad framing).
    pub client_error: AtomicBool,
    /// The client sent nothing for `limits.body_read_timeout`.
    pub stalled: AtomicBool,
    /// `clock::now_ms` of the last time the body handed something on (or
    /// ended): the backend is responsible from there. [`WAITING_ON_CLIENT`] while
    /// the body waits for the client's next bytes.
    progress_ms: AtomicU64,
    /// Woken when the body stops waiting on the client.
    resumed: tokio::sync::Notify,
}

impl Default for BodyStats {
    fn default() -> Self {
        BodyStats {
            bytes: AtomicU64::new(0),
            too_large: AtomicBool::new(false),
            client_error: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            progress_ms: AtomicU64::new(crate::clock::now_ms()),
            resumed: tokio::sync::Notify::new(),
        }
    }
}

impl BodyStats {
    fn waiting_on_client(&self) {
        if self.progress_ms.load(Relaxed) != WAITING_ON_CLIENT {
            self.progress_ms.store(WAITING_ON_CLIENT, Relaxed);
        }
    }

    fn progressed(&self) {
        let before = self.progress_ms.swap(crate::clock::now_ms(), Relaxed);
        if before == WAITING_ON_CLIENT {
            self.resumed.notify_one();
        }
    }

    /// Resolves once the backend has had `limit` of its own time: time during
    /// which the body was not waiting for the client. With a body that is
    /// already whole, that is `limit` after its last byte was taken.
    async fn backend_overdue(&self, limit: Duration) {
        loop {
            let since = self.progress_ms.load(Relaxed);
            if since == WAITING_ON_CLIENT {
                self.resumed.notified().await;
                continue;
            }
            let deadline = crate::clock::instant_of_ms(since) + limit;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Waits for `fut` (a backend's response headers) for at most `limit` of
    /// the backend's time, never counting the time spent waiting on the client
    /// for its body: a slow upload is not the backend's fault. `None`: timed
    /// out. Without a streamed body, plainly `limit` from now.
    pub async fn answer_within<F: std::future::Future>(
        body: Option<&BodyStats>,
        limit: Duration,
        fut: F,
    ) -> Option<F::Output> {
        match body {
            None => tokio::time::timeout(limit, fut).await.ok(),
            Some(b) => {
                // This attempt starts now, whatever earlier ones took.
                b.progressed();
                tokio::select! {
                    biased;
                    r = fut => Some(r),
                    _ = b.backend_overdue(limit) => None,
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the client sent nothing of its body for limits.body_read_timeout")
    }
}

impl std::error::Error for BodyStalled {}

#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("request body larger than limits.max_body_bytes")
    }
}

impl std::error::Error for BodyTooLarge {}

/// A request body as it arrived from a client, whatever carried it. The request
/// path is typed on this, not on one server library's body: another source
/// (HTTP/3) is one more variant.
pub(crate) enum Inbound {
    Hyper(Incoming),
    /// Read (partly or whole) before sending: `buffer_request_body`.
    Held(Box<Held>),
    /// A small `Content-Length` body the HTTP/1.1 fast path read whole before
    /// the request went on; never empty.
    Full(Bytes),
    /// No body (a request Fulcrum makes itself, e.g. a cache refresh).
    Empty,
}

/// The part of a body already read, then the rest still to come, if any.
#[derive(Default)]
pub(crate) struct Held {
    chunks: std::collections::VecDeque<Bytes>,
    bytes: u64,
    pub(crate) trailers: Option<HeaderMap>,
    pub(crate) rest: Option<Incoming>,
}

impl Held {
    pub(crate) fn push(&mut self, data: Bytes) {
        self.bytes += data.len() as u64;
        self.chunks.push_back(data);
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> u64 {
        self.bytes
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(data) = self.chunks.pop_front() {
            self.bytes -= data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.rest {
            None => SizeHint::with_exact(self.bytes),
            Some(rest) => {
                let r = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(self.bytes + r.lower());
                if let Some(upper) = r.upper() {
                    h.set_upper(self.bytes + upper);
                }
                h
            }
        }
    }
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
            Inbound::Held(h) => h.poll_frame(cx),
            Inbound::Full(b) => Poll::Ready(take_whole(b).map(Ok)),
            Inbound::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Hyper(b) => b.is_end_stream(),
            Inbound::Held(h) => h.is_end_stream(),
            Inbound::Full(b) => b.is_empty(),
            Inbound::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::Hyper(b) => b.size_hint(),
            Inbound::Held(h) => h.size_hint(),
            Inbound::Full(b) => SizeHint::with_exact(b.len() as u64),
            Inbound::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A whole body as its one data frame, once; then its end.
fn take_whole(b: &mut Bytes) -> Option<Frame<Bytes>> {
    (!b.is_empty()).then(|| Frame::data(std::mem::take(b)))
}

/// The client's body, streamed with the limit enforced chunk by chunk.
pub struct ClientBody {
    inner: Inbound,
    limit: u64,
    seen: u64,
    stats: Arc<BodyStats>,
    /// Longest wait for the client's next bytes (`limits.body_read_timeout`).
    stall: Duration,
    stall_timer: Option<Pin<Box<Sleep>>>,
    stall_armed: bool,
}

impl ClientBody {
    pub(crate) fn new(
        inner: Inbound,
        limit: Option<u64>,
        stats: Arc<BodyStats>,
        stall: Duration,
    ) -> Self {
        ClientBody {
            inner,
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            stats,
            stall,
            stall_timer: None,
            stall_armed: false,
        }
    }

    fn poll_frame_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.stall_armed = false;
                self.stats.progressed();
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    self.stats.bytes.fetch_add(data.len() as u64, Relaxed);
                    if self.seen > self.limit {
                        self.stats.too_large.store(true, Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.stats.client_error.store(true, Relaxed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                self.stats.progressed();
                Poll::Ready(None)
            }
            Poll::Pending => {
                self.stats.waiting_on_client();
                if self.stalled(cx) {
                    self.stats.stalled.store(true, Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyStalled))));
                }
                Poll::Pending
            }
        }
    }

    /// Arms the stall timer on the first wait after progress; true once it ran out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.stall_armed {
            self.stall_armed = true;
            let deadline = tokio::time::Instant::now() + self.stall;
            match &mut self.stall_timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.stall_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.stall_timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
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
    /// A body read whole before sending (see [`Inbound::Full`]): its length
    /// is known, and a retry sends it again from a copy of the handle.
    Full(Bytes),
}

impl UpstreamBody {
    /// The stats of a body that still streams from the client (for
    /// [`BodyStats::answer_within`]); `None` for a body that is whole already.
    pub fn streaming(&self) -> Option<Arc<BodyStats>> {
        match self {
            UpstreamBody::Empty | UpstreamBody::Full(_) => None,
            UpstreamBody::Client(b) => Some(b.stats.clone()),
            UpstreamBody::Replay(r) => r
                .state
                .lock()
                .ok()
                .and_then(|s| s.source.as_ref().map(|b| b.stats.clone())),
        }
    }
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
            UpstreamBody::Full(b) => Poll::Ready(take_whole(b).map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Client(b) => b.inner.is_end_stream(),
            UpstreamBody::Replay(_) => false,
            UpstreamBody::Full(b) => b.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Full(b) => SizeHint::with_exact(b.len() as u64),
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

/// A backend's answer body, whichever HTTP/1.1 client read the answer.
pub enum Answer {
    Hyper(Incoming),
    /// Read from a connection of our own (see `h1`).
    Own(OwnBody),
}

impl Answer {
    /// The connection of our own the body came on, when the body was read to
    /// its end and the connection may carry another request.
    pub fn reusable(&mut self) -> Option<Box<OwnConn>> {
        match self {
            Answer::Hyper(_) => None,
            Answer::Own(b) => b.reusable(),
        }
    }

    /// The answer's fields in their raw form, when they were asked for so.
    pub fn raw_head(&self) -> Option<&crate::upstream::h1::response::RawHead> {
        match self {
            Answer::Hyper(_) => None,
            Answer::Own(b) => b.raw_head(),
        }
    }

    pub fn raw_head_mut(&mut self) -> Option<&mut crate::upstream::h1::response::RawHead> {
        match self {
            Answer::Hyper(_) => None,
            Answer::Own(b) => b.raw_head_mut(),
        }
    }

    pub fn take_raw_head(&mut self) -> Option<Box<crate::upstream::h1::response::RawHead>> {
        match self {
            Answer::Hyper(_) => None,
            Answer::Own(b) => b.take_raw_head(),
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        match self.get_mut() {
            Answer::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(ExchangeError::Hyper))),
            Answer::Own(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(ExchangeError::Own))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Hyper(b) => b.is_end_stream(),
            Answer::Own(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Answer::Hyper(b) => b.size_hint(),
            Answer::Own(b) => b.size_hint(),
        }
    }
}
