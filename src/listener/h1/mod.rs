//! HTTP/1.1 client connections served without hyper for the plainest requests.
//!
//! The connection holds no buffer while it waits for a request: it waits for
//! readability, then reads into a buffer from a small per-thread free list,
//! and gives it back once the response is written and nothing pipelined is
//! left. A complete head is parsed in place; the request handed to the
//! pipeline shares the head's bytes (target and header values are slices).
//!
//! # What is served here, and why handing over is safe
//!
//! Only HTTP/1.1 requests without `Transfer-Encoding`, `Upgrade` or `Expect`,
//! not CONNECT, with every line ending in CRLF, a head within
//! `limits.max_header_bytes`, nothing `httparse` refuses, and either no
//! `Content-Length` or exactly one whose value is plain ASCII digits, at most
//! [`MAX_BUFFERED_BODY`] and `limits.max_body_bytes`. Such a request's body
//! (if any) is framed one way only, by that one number, so the next byte
//! after it starts the next request: there is no framing for two parsers to
//! read differently, which is what the smuggling guard exists to catch.
//!
//! Anything else (a chunked, repeated, odd or larger length, an upgrade,
//! HTTP/1.0, a bad or oversized head, a bare LF) hands the whole connection
//! to hyper behind the guard, as every connection was served before: the
//! bytes read so far are replayed first (they were only looked at, never
//! consumed), through a fresh guard scanner whose request count starts at the
//! hand-over, with a connection context of its own. hyper and the guard
//! therefore see exactly the byte stream they would have seen from that
//! request on, and answer it as they always did (400, 413, 414, 431, 501,
//! smuggling refusals, hyper's own errors and their counters). Requests
//! already served here were complete, their bodies included, so nothing of
//! them is left in the stream.
//!
//! # Bodies that came with their head
//!
//! A request with a body is served here only when the whole body is already
//! in the bytes read with its head, as a small POST from a form or an API
//! client usually is. Waiting for the rest here would hold the body back from
//! the backend until it is whole, and bodies stream (a route that wants them
//! whole says so with `buffer_request_body`); so a body still on its way
//! hands the connection over like anything else, and hyper streams it. A
//! body taken here goes on as one `Bytes` (`Inbound::Full`), which the
//! backend side writes together with the head and which a retry can send
//! again without having kept a copy.

mod block;
mod head;
mod write;

use block::InBlock;
use head::FieldPlace;
pub(crate) use head::{Decision, MAX_BUFFERED_BODY, decide, request, take_body};

use super::counted::Counted;
use crate::proxy::body::ProxyBody;
use crate::proxy::headers::HeadFacts;
use crate::proxy::pipeline::{ConnCtx, handle_with};
use crate::upstream::body::Inbound;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, Method};
use http_body::Body;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, timeout_at};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use write::{Answering, Framing};

/// The first read's size; a head that needs more grows the buffer.
const FIRST_READ: usize = 4096;
/// Buffers kept per thread for the next connection that has something to read.
const KEEP_FREE: usize = 64;
/// The most field places a kept read buffer keeps room for (a browser's head
/// has about twenty fields).
const KEEP_PLACES: usize = 32;
/// How long a closing connection waits for its last bytes to leave.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The connection as the fast path gave it up: hyper serves the rest,
/// starting with `replay`, the bytes already read.
pub(super) struct HandOver<I> {
    pub(super) io: I,
    pub(super) replay: Bytes,
}

/// A connection that can tell it has something to read without reading it,
/// so an idle connection needs no buffer.
pub(super) trait Readiness {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Writes `bufs` at once if the connection is known to have room,
    /// without polling for it (the task's budget, a waker kept); `None`: it
    /// has none, or cannot tell, and the caller polls.
    fn try_write_now(&mut self, bufs: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
        let _ = bufs;
        None
    }
}

impl Readiness for Counted<TcpStream> {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }

    fn try_write_now(&mut self, bufs: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
        match self.try_write_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }
}

impl Readiness for tokio_rustls::server::TlsStream<Counted<TcpStream>> {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (io, tls) = self.get_mut();
        // Records already received may hold plaintext the socket will not
        // announce again.
        match tls.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed() => {
                io.get_ref().poll_read_ready(cx)
            }
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// Serves requests on `io` until it closes (`None`) or a request needs hyper.
///
/// A plain function returning a block, which keeps what it captures once (an
/// `async fn` would also keep moved copies of its arguments): this is the state
/// a served connection keeps while it idles.
pub(super) fn serve<'a, I>(
    ctx: &'a ConnCtx,
    mut io: I,
    limits: &'a crate::config::Limits,
    stop: &'a CancellationToken,
) -> impl Future<Output = Option<HandOver<I>>> + 'a
where
    I: AsyncRead + AsyncWrite + Readiness + Unpin + 'a,
{
    let mut buf: Option<Box<Reading>> = None;
    let mut deadline = Deadline::default();
    let mut stopping = StopWatch::default();
    // Whether the pipeline will insert the forwarding fields into the map
    // rather than write them after the head (a trusted peer's are extended):
    // a hint for the map's size only, so a reload that changes the trusted
    // proxies costs at most a grow of the map.
    let snapshot = ctx.proxy.snapshot.load();
    let inserts = !snapshot.trusted_proxies.is_empty() && snapshot.is_trusted(ctx.peer.ip);
    drop(snapshot);
    async move {
        loop {
            // Like hyper: the wait for a head (an idle keep-alive connection's too)
            // lasts at most `header_read_timeout`, by the coarse clock: a tick
            // either way does not matter to a wait of seconds.
            deadline.at = Some(crate::clock::coarse_instant() + limits.header_read_timeout);
            let layout = match read_head(
                &mut io,
                &mut buf,
                &mut deadline,
                limits,
                stop,
                &mut stopping,
            )
            .await
            {
                Read::Head(l) => l,
                Read::Closed => return None,
                Read::HandOver => {
                    let replay = buf.take().map(|r| r.bytes.freeze()).unwrap_or_default();
                    return Some(HandOver { io, replay });
                }
            };
            let reading = buf.as_deref_mut()?;
            let pending = &mut reading.bytes;
            let head = pending.split_to(layout.len).freeze();
            let body_len = usize::try_from(layout.body).ok()?;
            // A body is taken only when it came with its head: waiting for the
            // rest would hold the whole body back from the backend, and bodies
            // stream (a route asks for `buffer_request_body` to have them
            // whole). hyper streams it from here, the bytes read replayed.
            if pending.len() < body_len {
                return Some(hand_over(io, &head, pending));
            }
            let head = ServedHead {
                bytes: head,
                layout,
            };
            // Apart, all of it: the request, the pipeline's state, the wait
            // for the answer and its writing are not carried by the
            // connection while it idles. The request is built in the block,
            // where the pipeline borrows it.
            let exchanged =
                InBlock::new(|| exchange(ctx, head, inserts, &mut io, reading, stop, &stopping))
                    .await;
            let keep = match exchanged {
                Exchanged::Answered(keep) => keep,
                // The client left: dropping the pipeline's future is how it learns.
                Exchanged::Left => return None,
                Exchanged::Unconverted(head) => {
                    return Some(hand_over(io, &head, &reading.bytes));
                }
            };
            if !keep || stopping.stopped(stop) {
                // Boxed: the timer exists only while closing.
                let _ = Box::pin(timeout_at(Instant::now() + CLOSE_GRACE, io.shutdown())).await;
                return None;
            }
            if reading.bytes.is_empty()
                && let Some(b) = buf.take()
            {
                give_back(b);
            }
        }
    }
}

/// The connection as hyper gets it from a head the fast path does not serve
/// after all: the head's bytes and those read after it are replayed.
fn hand_over<I>(io: I, head: &[u8], pending: &BytesMut) -> HandOver<I> {
    let mut replay = BytesMut::with_capacity(head.len() + pending.len());
    replay.extend_from_slice(head);
    replay.extend_from_slice(pending);
    HandOver {
        io,
        replay: replay.freeze(),
    }
}

/// What a connection reads into while it has something to read, from the
/// per-thread free list: the bytes, and the room for the places of a head's
/// fields ([`head::decide_into`]), which the request's map is filled from.
/// Boxed: the connection keeps a pointer, `None` while it idles, and the
/// free list moves pointers.
struct Reading {
    bytes: BytesMut,
    places: Vec<FieldPlace>,
}

/// A head the fast path serves: its bytes, cut from the buffer and frozen,
/// and where its parts lie in them.
struct ServedHead {
    bytes: Bytes,
    layout: head::Layout,
}

/// How one request on the fast path ended.
enum Exchanged {
    /// Answered; whether the connection can serve another request.
    Answered(bool),
    /// The client left before its answer.
    Left,
    /// A part of the head did not convert: hyper gets the connection, the
    /// head's bytes replayed.
    Unconverted(Bytes),
}

/// Builds the request from its head and takes its body, runs it through the
/// pipeline, waits for the answer and writes it. `inserts`: see `serve`.
///
/// The request is a local here, in the box this future is built in, and the
/// pipeline borrows it: built apart and moved into the pipeline's own box,
/// the request was copied four times and that future twice.
async fn exchange<I>(
    ctx: &ConnCtx,
    head: ServedHead,
    inserts: bool,
    io: &mut I,
    reading: &mut Reading,
    stop: &CancellationToken,
    stopping: &StopWatch,
) -> Exchanged
where
    I: AsyncRead + AsyncWrite + Readiness + Unpin,
{
    let ServedHead { bytes, mut layout } = head;
    let Reading {
        bytes: pending,
        places,
    } = reading;
    // The answer stays where the pipeline's poll put it, and is written from
    // there: returned up through this wait and moved into `respond`, it was
    // copied at each step.
    let mut resp = None;
    let head_method;
    // The request goes at the end of this block, after the pipeline's state,
    // as when that owned it (dropped in place: `drop` moved it first).
    {
        let mut facts = HeadFacts::default();
        let mut parts = head::blank_parts();
        if head::fill(&bytes, &layout, inserts, &mut facts, &mut parts).is_none() {
            return Exchanged::Unconverted(bytes);
        }
        drop(bytes);
        // The places' room goes back to the connection's reading for the next head.
        *places = std::mem::take(&mut layout.fields);
        // The body came whole with its head (`serve` saw to that).
        let mut body = head::take_body(pending, &layout).unwrap_or(Inbound::Empty);
        head_method = parts.method == Method::HEAD;
        let mut answer = pin!(handle_with(ctx, &mut parts, &mut body, facts));
        poll_fn(|cx| {
            if let Poll::Ready(r) = answer.as_mut().poll(cx) {
                resp = Some(r);
                return Poll::Ready(());
            }
            if client_gone(io, pending, cx) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
    let Some(resp) = resp.as_mut() else {
        return Exchanged::Left;
    };
    let answering = Answering {
        head_method,
        close: layout.close || stopping.stopped(stop),
    };
    Exchanged::Answered(respond(io, resp, &answering, layout.trailers, pending).await)
}

/// The connection's one timer for reading heads (and bodies). Moving the
/// deadline later (every request does) only stores it; the timer is re-armed
/// when it fires early, so a busy connection does not register a timer per
/// request.
#[derive(Default)]
struct Deadline {
    at: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The timer was polled and has not fired since: it holds the waker of
    /// this connection's task, the only one that polls it.
    watched: bool,
}

impl Deadline {
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        // A timer that holds the task's waker and is due no later than `at`
        // wakes the task when it fires: polling it again (each request does)
        // would only register the same waker again.
        if self.watched
            && let Some(sleep) = &self.sleep
            && !sleep.is_elapsed()
            && sleep.deadline() <= at
        {
            return Poll::Pending;
        }
        // An earlier deadline than the armed one (a body's wait shorter than a
        // head's) re-arms at once.
        let expired = crate::clock::poll_deadline(&mut self.sleep, at, cx);
        self.watched = expired.is_pending();
        expired
    }
}

/// The connection's wait for a stop: one registration with the stop token,
/// made at the first idle wait and kept for the connection's life, instead
/// of one registered and removed per request. Boxed: it exists only for
/// connections that were served, and an idle one keeps its future small.
///
/// Once registered, a stop is seen through a flag that the registration's
/// wake-up sets (`StopFlag`), not through the token's state, which is read
/// under its lock (about 40 instructions, two to four times a request): the
/// token is asked only after that wake-up.
#[derive(Default)]
struct StopWatch {
    registered: Option<(Arc<StopFlag>, Pin<Box<WaitForCancellationFutureOwned>>)>,
}

/// The waker the stop registration holds: it notes the wake-up, then wakes
/// the connection's task.
struct StopFlag {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for StopFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Release);
        self.task.wake_by_ref();
    }
}

impl StopWatch {
    /// Whether `stop` was cancelled; if not, the task is woken when it is.
    /// The registration holds the waker of this connection's task, the only
    /// one that polls it, so later calls only read the flag.
    fn poll_stopped(&mut self, stop: &CancellationToken, cx: &mut Context<'_>) -> bool {
        match &mut self.registered {
            Some((flag, _)) if !flag.task.will_wake(cx.waker()) => self.register(stop, cx),
            Some((flag, _)) if !flag.woken.load(Acquire) => false,
            Some((flag, wait)) => {
                // Woken: stopped, or (never seen) a wake-up without a stop,
                // after which the poll registers again.
                flag.woken.store(false, Relaxed);
                let waker = Waker::from(flag.clone());
                wait.as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready()
            }
            None => self.register(stop, cx),
        }
    }

    #[cold]
    fn register(&mut self, stop: &CancellationToken, cx: &mut Context<'_>) -> bool {
        let flag = Arc::new(StopFlag {
            woken: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let mut wait = Box::pin(stop.clone().cancelled_owned());
        let waker = Waker::from(flag.clone());
        let stopped = wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        self.registered = Some((flag, wait));
        stopped
    }

    /// Whether `stop` was cancelled, without registering: the flag when
    /// registered, else the token.
    fn stopped(&self, stop: &CancellationToken) -> bool {
        match &self.registered {
            Some((flag, _)) => flag.woken.load(Acquire) && stop.is_cancelled(),
            None => stop.is_cancelled(),
        }
    }
}

enum Read {
    Head(head::Layout),
    HandOver,
    Closed,
}

/// Reads until `buf` holds a complete head the fast path serves.
async fn read_head<I>(
    io: &mut I,
    buf: &mut Option<Box<Reading>>,
    deadline: &mut Deadline,
    limits: &crate::config::Limits,
    stop: &CancellationToken,
    stopping: &mut StopWatch,
) -> Read
where
    I: AsyncRead + Readiness + Unpin,
{
    loop {
        if let Some(r) = buf.as_deref_mut().filter(|r| !r.bytes.is_empty()) {
            let (max_head, max_body) = (limits.max_header_bytes, limits.max_body_bytes);
            match head::decide_into(&r.bytes, max_head, max_body, &mut r.places) {
                Decision::Partial => {}
                Decision::HandOver => return Read::HandOver,
                Decision::Serve(l) => return Read::Head(l),
            }
        } else {
            // Idle: nothing allocated until the client sends something; a stop
            // closes at once, before what the client sent.
            // Once woken, the read below polls the readiness itself (a wake
            // by the deadline's timer finds nothing to read and comes back
            // here, where the deadline is looked at).
            let mut waited = false;
            let ready = poll_fn(|cx| {
                if stopping.poll_stopped(stop, cx) {
                    return Poll::Ready(false);
                }
                if waited {
                    return Poll::Ready(true);
                }
                match io.poll_readable(cx) {
                    Poll::Ready(r) => Poll::Ready(r.is_ok()),
                    Poll::Pending => {
                        waited = true;
                        deadline.poll_expired(cx).map(|()| false)
                    }
                }
            });
            if !ready.await {
                return Read::Closed;
            }
        }
        let b = &mut buf.get_or_insert_with(take_buf).bytes;
        if b.capacity() - b.len() < FIRST_READ / 4 {
            b.reserve(b.len().max(FIRST_READ));
        }
        let read = if b.is_empty() {
            // Readiness can be stale (nothing read since it was last seen): a
            // read that would block gives the buffer back and waits again.
            match poll_fn(|cx| Poll::Ready(read_into(io, b, cx))).await {
                Poll::Ready(r) => Ok(r),
                Poll::Pending => {
                    if let Some(b) = buf.take() {
                        give_back(b);
                    }
                    continue;
                }
            }
        } else {
            poll_fn(|cx| match read_into(io, b, cx) {
                Poll::Ready(r) => Poll::Ready(Ok(r)),
                Poll::Pending => deadline.poll_expired(cx).map(Err),
            })
            .await
        };
        match read {
            Ok(Ok(0)) => {
                // A partial head then EOF: hyper reports it as it does today.
                return if buf.as_ref().is_none_or(|r| r.bytes.is_empty()) {
                    Read::Closed
                } else {
                    Read::HandOver
                };
            }
            Ok(Ok(_)) => {}
            // A head not complete in time: closed without an answer, as hyper does.
            Ok(Err(_)) | Err(_) => return Read::Closed,
        }
    }
}

/// Reads what is there into `buf`'s spare room; `Ok(0)` at the end of the stream.
fn read_into<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    // The future keeps no state of its own: polling a fresh one each time is a
    // plain read into the uninitialized room, without zeroing it first.
    std::pin::pin!(io.read_buf(buf)).poll(cx)
}

/// While a request is answered, whether the client went away. Like hyper, it
/// reads only when nothing is buffered: bytes read are the next request.
fn client_gone<I: AsyncRead + Unpin>(
    io: &mut I,
    pending: &mut BytesMut,
    cx: &mut Context<'_>,
) -> bool {
    if !pending.is_empty() {
        return false;
    }
    if pending.capacity() < FIRST_READ / 4 {
        pending.reserve(FIRST_READ);
    }
    matches!(read_into(io, pending, cx), Poll::Ready(Ok(0) | Err(_)))
}

/// Writes `resp` (borrowed: moved, it was copied); whether the connection
/// can serve another request. Its body is taken; the rest is left empty.
async fn respond<I>(
    io: &mut I,
    resp: &mut http::Response<ProxyBody>,
    answering: &Answering,
    trailers_wanted: bool,
    pending: &mut BytesMut,
) -> bool
where
    I: AsyncRead + AsyncWrite + Readiness + Unpin,
{
    let mut body = std::mem::replace(resp.body_mut(), ProxyBody::empty());
    let mut out = take_out();
    let encoded = write::encode_head(
        resp.version(),
        resp.status(),
        resp.headers(),
        &body,
        answering,
        &mut out,
    );
    // The head is written: its fields and extensions go now, as they did
    // when the answer was split into its parts here.
    drop(std::mem::take(resp.headers_mut()));
    drop(std::mem::take(resp.extensions_mut()));
    let Ok(encoded) = encoded else {
        give_back_out(out);
        return false;
    };
    let mut send = Send {
        out,
        sent: 0,
        data: Bytes::new(),
        tail: b"",
        framing: encoded.framing,
        done: encoded.framing == Framing::Length(0),
        trailers: None,
        trailer_names: if trailers_wanted {
            encoded.trailer_names
        } else {
            Vec::new()
        },
        written: false,
    };
    if send.done {
        // Nothing of the body is sent (HEAD, 204, 304, an empty body): it ends
        // before the head goes out, so that its end (the backend connection
        // back in the pool, the request's record) happens before the client
        // can see the answer and send the next request.
        drop(std::mem::replace(&mut body, ProxyBody::empty()));
    }
    let sent = poll_fn(|cx| {
        if let Poll::Ready(r) = send.poll(io, &mut body, cx) {
            return Poll::Ready(r.is_ok());
        }
        if client_gone(io, pending, cx) {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await;
    // The body goes first: its end (clean or not) finishes the request's record.
    drop(body);
    give_back_out(send.out);
    sent && !encoded.close
}

/// A response body on its way out, with the framing bytes it needs.
struct Send {
    /// Bytes to send before `data` (the head, a chunk-size line); `sent` of
    /// them are gone.
    out: Vec<u8>,
    sent: usize,
    data: Bytes,
    tail: &'static [u8],
    framing: Framing,
    /// The body has ended (or the framing says no more of it is sent).
    done: bool,
    trailers: Option<HeaderMap>,
    trailer_names: Vec<HeaderName>,
    /// A write was tried (see `poll`).
    written: bool,
}

impl Send {
    fn poll<I: AsyncWrite + Readiness + Unpin>(
        &mut self,
        io: &mut I,
        body: &mut ProxyBody,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.data.is_empty() && self.tail.is_empty() && !self.done {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(d) => self.stage(d)?,
                        Err(frame) => self.trailers = frame.into_trailers().ok(),
                    },
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                    Poll::Ready(None) => self.end()?,
                    Poll::Pending => {
                        if self.sent == self.out.len() {
                            ready!(Pin::new(&mut *io).poll_flush(cx))?;
                            return Poll::Pending;
                        }
                    }
                }
            }
            if self.sent < self.out.len() || !self.data.is_empty() || !self.tail.is_empty() {
                let bufs = [
                    IoSlice::new(&self.out[self.sent..]),
                    IoSlice::new(&self.data),
                    IoSlice::new(self.tail),
                ];
                // The first write of an answer goes out without a readiness
                // poll: the connection sent everything before it read this
                // request, so it has room unless the client stopped reading.
                // Later writes poll (tokio notes a short write as no room).
                let now = match self.written {
                    false => io.try_write_now(&bufs),
                    true => None,
                };
                self.written = true;
                let n = match now {
                    Some(r) => r?,
                    None => ready!(Pin::new(&mut *io).poll_write_vectored(cx, &bufs))?,
                };
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.advance(n);
                continue;
            }
            if self.done {
                return Pin::new(&mut *io).poll_flush(cx);
            }
        }
    }

    fn stage(&mut self, d: Bytes) -> io::Result<()> {
        if d.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            Framing::Length(left) => {
                let Some(rest) = left.checked_sub(d.len() as u64) else {
                    return Err(io::Error::other("body longer than its Content-Length"));
                };
                *left = rest;
                self.done = rest == 0;
            }
            Framing::Chunked => {
                write::chunk_line(d.len(), &mut self.out);
                self.tail = b"\r\n";
            }
            Framing::UntilClose => {}
        }
        self.data = d;
        Ok(())
    }

    fn end(&mut self) -> io::Result<()> {
        self.done = true;
        match self.framing {
            Framing::Length(0) | Framing::UntilClose => Ok(()),
            Framing::Length(_) => Err(io::Error::other("body shorter than its Content-Length")),
            Framing::Chunked => {
                write::last_chunk(self.trailers.as_ref(), &self.trailer_names, &mut self.out);
                Ok(())
            }
        }
    }

    fn advance(&mut self, mut n: usize) {
        let head = (self.out.len() - self.sent).min(n);
        self.sent += head;
        n -= head;
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        let data = self.data.len().min(n);
        self.data.advance(data);
        n -= data;
        self.tail = &self.tail[n.min(self.tail.len())..];
    }
}

thread_local! {
    // Boxes: a connection holds its `Reading` by pointer (see there), and
    // taking one from here or giving it back moves only that pointer.
    #[allow(clippy::vec_box)]
    static FREE_READ: RefCell<Vec<Box<Reading>>> = const { RefCell::new(Vec::new()) };
    static FREE_OUT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buf() -> Box<Reading> {
    FREE_READ.with(|f| f.borrow_mut().pop()).unwrap_or_else(|| {
        Box::new(Reading {
            bytes: BytesMut::with_capacity(FIRST_READ),
            places: Vec::new(),
        })
    })
}

/// Keeps an empty read buffer for the next request, when the heads cut from
/// it are gone (the pipeline shares them) and it is not oversized; the
/// places' room with it, unless a head of many fields grew it.
fn give_back(mut b: Box<Reading>) {
    b.bytes.clear();
    if !b.bytes.try_reclaim(FIRST_READ) || b.bytes.capacity() > 4 * FIRST_READ {
        return;
    }
    b.places.clear();
    if b.places.capacity() > KEEP_PLACES {
        b.places = Vec::new();
    }
    FREE_READ.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEEP_FREE {
            f.push(b);
        }
    });
}

fn take_out() -> Vec<u8> {
    FREE_OUT
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(512))
}

fn give_back_out(mut out: Vec<u8>) {
    if out.capacity() > 4 * FIRST_READ {
        return;
    }
    out.clear();
    FREE_OUT.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEEP_FREE {
            f.push(out);
        }
    });
}

/// The connection as hyper reads it after a hand-over: the bytes already
/// read first, then the socket.
pub(super) struct Rewind<I> {
    replay: Bytes,
    io: I,
}

impl<I> Rewind<I> {
    pub(super) fn new(h: HandOver<I>) -> Self {
        Rewind {
            replay: h.replay,
            io: h.io,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replay.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = buf.remaining().min(this.replay.len());
        buf.put_slice(&this.replay[..n]);
        this.replay.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    crate::passthrough::write_through!(io);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls the deadline once; whether it expired. `again`: as if it had
    /// never been polled (the way before it was watched).
    fn poll_once(d: &mut Deadline, again: bool, cx: &mut Context<'_>) -> bool {
        if again {
            d.watched = false;
        }
        d.poll_expired(cx).is_ready()
    }

    /// When the deadline fires: set at `set`, moved to `moved_to` at
    /// `moved_at` while armed, on the paused clock.
    async fn fired(d: &mut Deadline, again: bool, set: u64, moved_at: u64, moved_to: u64) -> u64 {
        let start = Instant::now();
        let secs = |s| start + Duration::from_secs(s);
        d.at = Some(secs(set));
        assert!(!poll_fn(|cx| Poll::Ready(poll_once(d, again, cx))).await);
        tokio::time::sleep_until(secs(moved_at)).await;
        d.at = Some(secs(moved_to));
        poll_fn(|cx| match poll_once(d, again, cx) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        })
        .await;
        (Instant::now() - start).as_secs()
    }

    /// A deadline polled once and then only checked fires when it is due,
    /// as one polled every time does: moved later while armed (the timer
    /// fires early and is re-armed), and moved earlier while armed.
    #[tokio::test(start_paused = true)]
    async fn a_watched_deadline_fires_when_due() {
        for again in [false, true] {
            let mut d = Deadline::default();
            assert_eq!(fired(&mut d, again, 10, 5, 20).await, 20);
            assert_eq!(fired(&mut d, again, 60, 30, 40).await, 40);
        }
    }

    /// Once registered, a stop is read from the flag its wake-up sets: a
    /// wake-up without a stop is not one (and registers again), a stop sets
    /// the flag at once, before the task runs.
    #[tokio::test]
    async fn a_stop_is_seen_through_the_flag_of_its_wake_up() {
        // A waker of its own: two no-op wakers need not compare equal.
        struct Task(std::sync::atomic::AtomicUsize);
        impl Wake for Task {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Relaxed);
            }
        }
        let task = Arc::new(Task(Default::default()));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let stop = CancellationToken::new();
        let mut watch = StopWatch::default();
        assert!(!watch.stopped(&stop));
        assert!(!watch.poll_stopped(&stop, &mut cx));
        assert!(!watch.stopped(&stop));
        let flag = watch.registered.as_ref().expect("registered").0.clone();
        Waker::from(flag.clone()).wake();
        assert_eq!(task.0.load(Relaxed), 1);
        assert!(!watch.stopped(&stop), "woken without a stop");
        assert!(!watch.poll_stopped(&stop, &mut cx));
        assert!(!flag.woken.load(Acquire));
        stop.cancel();
        assert!(
            flag.woken.load(Acquire),
            "the stop woke the registration made again"
        );
        assert_eq!(task.0.load(Relaxed), 2, "and the task");
        assert!(watch.stopped(&stop));
        assert!(watch.poll_stopped(&stop, &mut cx));
        // A watch never registered asks the token.
        assert!(StopWatch::default().stopped(&stop));
    }

    /// An answer far larger than the sockets' buffers arrives whole, and
    /// every byte is counted: the first write goes out at once, the rest
    /// wait for room.
    #[tokio::test]
    async fn a_long_answer_is_written_whole_and_counted() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reader = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            // Not reading at first: the proxy's side fills its buffers.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            got
        });
        let (server, _) = listener.accept().await.expect("accept");
        let stats = Arc::new(crate::telemetry::ListenerStats::new("test".into(), 2));
        let mut io = Counted::new(server, stats.clone(), 1);
        let body: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut resp = http::Response::new(ProxyBody::text(body.clone()));
        let answering = Answering {
            head_method: false,
            close: true,
        };
        let mut pending = BytesMut::new();
        respond(&mut io, &mut resp, &answering, false, &mut pending).await;
        drop(io);
        let got = reader.await.expect("reader");
        assert!(got.ends_with(&body), "{} bytes", got.len());
        let head = String::from_utf8_lossy(&got[..got.len() - body.len()]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-length: 8388608\r\n"), "{head}");
        assert_eq!(stats.sent_bytes(), got.len() as u64);
        // All in the block of the worker that accepted it.
        assert_eq!(stats.worker(1).sent_bytes.load(Relaxed), got.len() as u64);
        assert_eq!(stats.worker(0).sent_bytes.load(Relaxed), 0);
        assert_eq!((stats.accepted(), stats.open()), (1, 0));
    }

    /// A read buffer given back keeps its room for field places for the
    /// next head read on this thread, emptied; room grown past
    /// `KEEP_PLACES` is let go.
    #[test]
    fn a_kept_buffer_keeps_the_places_room() {
        let mut reading = take_buf();
        reading.places.reserve(4);
        reading.places.push((0..1, 2..3));
        let room = reading.places.as_ptr();
        reading.bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        give_back(reading);
        let mut again = take_buf();
        assert_eq!(again.places.as_ptr(), room);
        assert!(again.places.is_empty() && again.bytes.is_empty());
        again.places.reserve(KEEP_PLACES + 1);
        give_back(again);
        assert_eq!(take_buf().places.capacity(), 0);
    }

    /// The stop registration made at the first idle wait wakes the task
    /// at a later one.
    #[tokio::test]
    async fn a_stop_is_seen_by_a_connection_registered_earlier() {
        let stop = CancellationToken::new();
        let mut watch = StopWatch::default();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(!watch.poll_stopped(&stop, &mut cx));
        assert!(!watch.poll_stopped(&stop, &mut cx));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut watch = StopWatch::default();
                let mut registered = Some(tx);
                poll_fn(|cx| {
                    let stopped = watch.poll_stopped(&stop, cx);
                    if let Some(tx) = registered.take() {
                        assert!(!stopped);
                        let _ = tx.send(());
                    }
                    if stopped {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
            })
        };
        rx.await.expect("registered");
        stop.cancel();
        waiter.await.expect("woken by the stop");
        assert!(watch.poll_stopped(&stop, &mut cx));
    }
}
