//! A connection of our own to a plain `http://` backend: one bodyless request
//! written with one write, the answer's head read into the connection's buffer,
//! and the answer's body read from the connection by whoever polls it.

use super::Error;
use super::chunked::{Decoded, Decoder};
use super::response::{self, Framing};
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
            home,
        })
    }

    /// Whether an idle connection can still carry a request: the backend has
    /// neither closed it nor sent anything unasked. Without a system call
    /// unless the socket has something to read.
    pub fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
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

    /// Writes the request head `head` and reads the answer's head, skipping
    /// interim (1xx) answers. `head_request`: the request's method is HEAD.
    pub async fn exchange(
        mut self: Box<Self>,
        head: &[u8],
        head_request: bool,
    ) -> Result<Response<OwnBody>, Failure> {
        let mut sent = 0;
        while sent < head.len() {
            match self.io.write(&head[sent..]).await {
                Ok(0) => return Err(written(sent, io::ErrorKind::WriteZero.into())),
                Ok(n) => sent += n,
                Err(e) => return Err(written(sent, e)),
            }
        }
        let heard = self.received;
        let head = loop {
            match response::parse(&mut self.buf, &mut self.scratch) {
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
            let e = match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) => Error::Incomplete,
                Ok(_) => continue,
                Err(e) => Error::Io(e),
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

/// The head of a bodyless request in HTTP/1.1 form: request line (origin-form
/// target) and header fields.
pub fn encode_request<B>(req: &Request<B>) -> Vec<u8> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(req.method().as_str().len() + target.len() + fields + 40);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A method that defines a meaning for content says there is none
    // (RFC 9110 8.6).
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        && !req.headers().contains_key(CONTENT_LENGTH)
    {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
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
}

impl OwnBody {
    /// The connection, when the body was read to its end and the connection may
    /// carry another request.
    pub fn reusable(&mut self) -> Option<Box<Conn>> {
        if !matches!(self.state, State::Done) || !self.reuse {
            return None;
        }
        // Bytes after the end of the answer: the backend is out of step.
        self.conn.take().filter(|c| c.buf.is_empty())
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
