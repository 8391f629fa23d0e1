//! A connection of our own to a plain `http://` backend: one request (its
//! head, and its body when it has one already whole) written with one
//! vectored write, the answer's head read into the connection's buffer,
//! and the answer's body read from the connection by whoever polls it.

use super::Error;
use super::chunked::{Decoded, Decoder};
use super::response::{self, Framing};
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Room made in the buffer before a read when less than [`MIN_SPACE`] is left.
const READ_SPACE: usize = 16 * 1024;
const MIN_SPACE: usize = 2048;

/// An HTTP/1.1 connection to a backend, between exchanges or during one.
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet used.
    buf: BytesMut,
    /// Bytes the backend has sent on this connection so far: an exchange that
    /// ends with it unchanged got nothing back.
    received: u64,
    scratch: response::Scratch,
    /// The wait for an answer's head is bounded by one timer kept across
    /// exchanges: moving its deadline later only stores it, and the timer is
    /// re-armed when it fires early, instead of a timer registered and
    /// removed per request.
    timer: Option<Pin<Box<Sleep>>>,
    /// The set of idle connections it belongs to (`ConnPool::here` where it
    /// was opened).
    pub home: usize,
}

/// How an exchange failed, in the terms retries care about.
pub enum Failure {
    /// Nothing of the request was written.
    Unsent(Error),
    /// The request went out and the connection ended (closed or reset) before
    /// any byte of an answer.
    Unanswered(Error),
    Failed(Error),
    /// No answer's head within the time given.
    TimedOut,
}

impl Conn {
    /// Boxed once for its whole life, so that the answer body that carries
    /// it (and everything that carries the body) stays small.
    pub fn new(io: TcpStream, home: usize) -> Box<Self> {
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
            received: 0,
            scratch: response::Scratch::default(),
            timer: None,
            home,
        })
    }

    /// Whether an idle connection can still carry a request: the backend has
    /// neither closed it nor sent anything unasked. Without a system call
    /// unless the socket has something to read: `try_read` reads only when
    /// the socket's known readiness says it may, and registers no waker (a
    /// poll for readiness would, under the waiters' lock, and take from the
    /// task's budget).
    pub fn still_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads what the backend has sent into the buffer; `Ok(0)` when it closed
    /// the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_SPACE {
            self.buf.reserve(READ_SPACE);
        }
        // Through `AsyncRead`, which clears the socket's readiness after a
        // short read (on epoll): `still_open` then needs no system call to
        // tell that the idle connection has nothing to read.
        let n = ready!(std::pin::pin!(self.io.read_buf(&mut self.buf)).poll(cx))?;
        self.received += n as u64;
        Poll::Ready(Ok(n))
    }

    /// Writes the request head `head` and its body `body` (empty for none)
    /// and reads the answer's head, skipping interim (1xx) answers, within
    /// `limit`. `head_request`: the request's method is HEAD. `raw_answer`:
    /// the answer's fields stay in their raw form, carried by the body
    /// ([`OwnBody::raw_head`]), and the response's map is empty.
    pub async fn exchange(
        mut self: Box<Self>,
        head: &[u8],
        body: &[u8],
        head_request: bool,
        raw_answer: bool,
        limit: Duration,
    ) -> Result<Response<OwnBody>, Failure> {
        // By the coarse clock: a tick either way does not matter to the answer's
        // timeout, and this is once per request.
        let at = crate::clock::coarse_instant() + limit;
        let total = head.len() + body.len();
        // The socket is writable (a connection between exchanges has sent
        // everything) unless the backend stopped reading: the first write is
        // tried at once, without polling for readiness first (the task's
        // budget, the readiness bits: about 50 instructions). On
        // `WouldBlock` the loop below waits for room, as for the rest.
        let first = if body.is_empty() {
            self.io.try_write(head)
        } else {
            self.io
                .try_write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
        };
        let mut sent = match first {
            Ok(0) if total > 0 => return Err(written(0, io::ErrorKind::WriteZero.into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(written(0, e)),
        };
        while sent < total {
            let Conn { io, timer, .. } = &mut *self;
            let written_now = poll_fn(|cx| {
                let io = Pin::new(&mut *io);
                let r = if sent >= head.len() {
                    io.poll_write(cx, &body[sent - head.len()..])
                } else if body.is_empty() {
                    io.poll_write(cx, &head[sent..])
                } else {
                    // Head and body leave together: one system call for a small request.
                    let parts = [IoSlice::new(&head[sent..]), IoSlice::new(body)];
                    io.poll_write_vectored(cx, &parts)
                };
                match r {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    Poll::Pending => crate::clock::poll_deadline(timer, at, cx).map(|()| None),
                }
            })
            .await;
            match written_now {
                None => return Err(Failure::TimedOut),
                Some(Ok(0)) => return Err(written(sent, io::ErrorKind::WriteZero.into())),
                Some(Ok(n)) => sent += n,
                Some(Err(e)) => return Err(written(sent, e)),
            }
        }
        let heard = self.received;
        let head = loop {
            match response::parse(&mut self.buf, &mut self.scratch, raw_answer) {
                Ok(Some(h)) if h.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(Failure::Failed(Error::Parse(
                        "101 Switching Protocols to a request without Upgrade",
                    )));
                }
                Ok(Some(h)) if h.status.is_informational() => continue,
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => return Err(Failure::Failed(e)),
            }
            let filled = poll_fn(|cx| match self.poll_fill(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending => {
                    crate::clock::poll_deadline(&mut self.timer, at, cx).map(|()| None)
                }
            })
            .await;
            let e = match filled {
                None => return Err(Failure::TimedOut),
                Some(Ok(0)) => Error::Incomplete,
                Some(Ok(_)) => continue,
                Some(Err(e)) => Error::Io(e),
            };
            return Err(if self.received == heard && e.is_closed() {
                Failure::Unanswered(e)
            } else {
                Failure::Failed(e)
            });
        };
        let (framing, reuse) = response::framing(&head, head_request).map_err(Failure::Failed)?;
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked(d) => State::Chunked(d),
            Framing::Close => State::Close,
        };
        let mut resp = Response::new(OwnBody {
            conn: Some(self),
            state,
            reuse,
            raw: head.raw,
        });
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }
}

/// A write error after `sent` bytes of the request head.
fn written(sent: usize, e: io::Error) -> Failure {
    if sent == 0 {
        Failure::Unsent(Error::Io(e))
    } else {
        Failure::Failed(Error::Io(e))
    }
}

/// The head of a request in HTTP/1.1 form: request line (origin-form target)
/// and header fields (a body's `Content-Length` among them).
pub fn encode_request<B>(req: &Request<B>) -> Vec<u8> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (out, _) = encode_head(req.method(), target, req.headers(), 0, |_| {});
    out
}

/// The head of a bodiless request: request line, `headers`, then what
/// `append` writes (`append_len` bytes of whole field lines); with where
/// those lines lie in it. Its capacity is its length when `append_len` is
/// exact: a `Bytes` made of it then takes the buffer as it is, without an
/// allocation of its own.
pub fn encode_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    append_len: usize,
    append: impl FnOnce(&mut Vec<u8>),
) -> (Vec<u8>, Range<usize>) {
    const VERSION: &[u8] = b" HTTP/1.1\r\n";
    const NO_CONTENT: &[u8] = b"content-length: 0\r\n";
    // A method that defines a meaning for content says there is none
    // (RFC 9110 8.6).
    let no_content = matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        && !headers.contains_key(CONTENT_LENGTH);
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let len = method.as_str().len()
        + 1
        + target.len()
        + VERSION.len()
        + fields
        + append_len
        + if no_content { NO_CONTENT.len() } else { 0 }
        + 2;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(VERSION);
    for (name, value) in headers {
        put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    let start = out.len();
    append(&mut out);
    let appended = start..out.len();
    if no_content {
        out.extend_from_slice(NO_CONTENT);
    }
    out.extend_from_slice(b"\r\n");
    (out, appended)
}

/// One `name: value` line of a head.
#[inline]
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Where an answer's body stands.
enum State {
    Length(u64),
    Chunked(Decoder),
    Close,
    /// Read to its end.
    Done,
    /// Ended by an error; the connection is closed.
    Failed,
}

/// An answer's body, read from its connection as it is polled.
pub struct OwnBody {
    conn: Option<Box<Conn>>,
    state: State,
    /// The connection may carry another request once the body ended.
    reuse: bool,
    /// The answer's fields, when they were asked for in their raw form.
    raw: Option<Box<response::RawHead>>,
}

impl OwnBody {
    /// The answer's fields in their raw form, when they were asked for so
    /// (the response's map is then empty).
    pub fn raw_head(&self) -> Option<&response::RawHead> {
        self.raw.as_deref()
    }

    pub fn raw_head_mut(&mut self) -> Option<&mut response::RawHead> {
        self.raw.as_deref_mut()
    }

    /// Takes the raw fields out, for a reader that turns them into a map.
    pub fn take_raw_head(&mut self) -> Option<Box<response::RawHead>> {
        self.raw.take()
    }

    /// The connection, when the body was read to its end and the connection may
    /// carry another request.
    pub fn reusable(&mut self) -> Option<Box<Conn>> {
        if !matches!(self.state, State::Done) || !self.reuse {
            return None;
        }
        // Bytes after the end of the answer: the backend is out of step.
        let mut conn = self.conn.take().filter(|c| c.buf.is_empty())?;
        if let Some(raw) = self.raw.take() {
            conn.scratch.give_back(raw);
        }
        Some(conn)
    }

    fn fail(&mut self, e: Error) -> Error {
        self.state = State::Failed;
        self.conn = None;
        e
    }
}

impl Body for OwnBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done | State::Failed => return Poll::Ready(None),
                State::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = conn
                            .buf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        let data = conn.buf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            this.state = State::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(d) => match d.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => {
                        // The end may be buffered already; a framing error
                        // there shows at the next poll.
                        if d.settle(&mut conn.buf).is_ok() && d.is_done() {
                            this.state = State::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Decoded::Done) => {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
                },
                State::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::Close) => {
                    this.state = State::Done;
                    this.reuse = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(this.fail(Error::Incomplete)))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(this.fail(Error::Io(e))))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Conn, encode_request};
    use http::Request;
    use std::io::Write;

    /// A connection of our own to a local listener, and the backend's end.
    fn pair(rt: &tokio::runtime::Runtime) -> (Box<Conn>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let s =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let peer = listener.accept().expect("accept").0;
        s.set_nonblocking(true).expect("nonblocking");
        let _rt = rt.enter();
        let io = tokio::net::TcpStream::from_std(s).expect("register");
        (Conn::new(io, 0), peer)
    }

    /// An idle connection is open until the backend closes it or sends
    /// something unasked, also when its readiness is stale (readable, with
    /// everything read already).
    #[test]
    fn still_open_until_closed_or_sent_to() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let (mut conn, _peer) = pair(&rt);
        assert!(conn.still_open());
        assert!(conn.still_open());

        let (mut conn, mut peer) = pair(&rt);
        peer.write_all(b"x").expect("write");
        rt.block_on(conn.io.readable()).expect("readable");
        assert!(!conn.still_open());

        let (mut conn, peer) = pair(&rt);
        drop(peer);
        rt.block_on(conn.io.readable()).expect("readable");
        assert!(!conn.still_open());

        let (mut conn, mut peer) = pair(&rt);
        peer.write_all(b"xy").expect("write");
        rt.block_on(conn.io.readable()).expect("readable");
        let mut two = [0u8; 2];
        assert_eq!(conn.io.try_read(&mut two).expect("read"), 2);
        assert!(conn.still_open(), "stale readiness, nothing to read");
        assert!(conn.still_open());
        peer.write_all(b"z").expect("write");
        rt.block_on(conn.io.readable()).expect("readable");
        assert!(!conn.still_open());
    }

    #[test]
    fn heads_in_http1_form() {
        let req = Request::post("/p?q=1")
            .header("host", "a")
            .header("content-length", "99")
            .header("x-a", "1")
            .body(())
            .unwrap();
        assert_eq!(
            encode_request(&req),
            b"POST /p?q=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 99\r\nx-a: 1\r\n\r\n"
        );
        let bare = Request::put("/").body(()).unwrap();
        assert_eq!(
            encode_request(&bare),
            b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
        let get = Request::get("/g").header("host", "a").body(()).unwrap();
        assert_eq!(encode_request(&get), b"GET /g HTTP/1.1\r\nhost: a\r\n\r\n");
        // The room made is the head's length: a `Bytes` takes it as it is.
        for head in [
            encode_request(&req),
            encode_request(&bare),
            encode_request(&get),
        ] {
            assert_eq!(head.len(), head.capacity());
        }
    }

    #[test]
    fn appended_lines_go_before_the_blank_line() {
        let req = Request::patch("/x").header("host", "a").body(()).unwrap();
        let lines = b"via: 1.1 fulcrum\r\n";
        let (head, at) =
            super::encode_head(req.method(), "/x", req.headers(), lines.len(), |out| {
                out.extend_from_slice(lines)
            });
        assert_eq!(
            head,
            b"PATCH /x HTTP/1.1\r\nhost: a\r\nvia: 1.1 fulcrum\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(&head[at], lines);
        assert_eq!(head.len(), head.capacity());
    }
}
