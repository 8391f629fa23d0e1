//! Sending one request to one backend over a pooled connection.

use super::backend::Backend;
use super::body::{Answer, BodyStats, UpstreamBody};
use super::connpool::{Alpn, H1Sender, H2Sender};
use super::h1;
use super::io::{Tallied, Tally, UpstreamIo, connect, connect_tls};
use crate::config::{Scheme, Timeouts};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Why a request to a backend failed, in the terms retries care about.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing was sent, any method may be retried.
    Connect(io::Error),
    /// The backend did not send response headers in time (the request was sent).
    Timeout,
    /// The exchange failed after the request was (possibly) sent.
    Exchange(ExchangeError),
    /// A reused pooled connection was closed (or reset) by the backend after the
    /// request went out and before any byte of an answer: what a connection the
    /// backend had just timed out looks like (RFC 9112 9.3.1). The caller may send
    /// the request once more on a new connection ([`Conn::New`]) when sending it
    /// twice is harmless; the backend is not to blame.
    Closed(ExchangeError),
}

/// A failed exchange, from whichever HTTP/1.1 client (or hyper's HTTP/2 one).
#[derive(Debug)]
pub enum ExchangeError {
    Hyper(hyper::Error),
    Own(h1::Error),
}

impl ExchangeError {
    /// The backend's answer was not HTTP.
    pub fn is_parse(&self) -> bool {
        match self {
            ExchangeError::Hyper(e) => e.is_parse(),
            ExchangeError::Own(e) => e.is_parse(),
        }
    }
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ExchangeError::Hyper(e) => {
                write!(f, "{e}")?;
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    write!(f, ": {s}")?;
                    src = s.source();
                }
                Ok(())
            }
            ExchangeError::Own(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// The head of an HTTP/1.1 request without a body, or with one already whole
/// whose length it states ([`states_length`]), encoded once by the proxy for
/// every send of it on a connection of our own. The fields in `appended`
/// (the proxy's forwarding fields and request ID) are in these bytes only,
/// not in the request's map: written straight into the head, they cost no
/// map insertions and no place in the copy kept for retries; hyper's clients
/// get them inserted into the map. Empty: the head is encoded from the
/// request at each send.
#[derive(Clone, Default)]
pub struct EncodedHead {
    bytes: Bytes,
    appended: std::ops::Range<usize>,
    /// An answer read on a connection of our own keeps its fields in their
    /// raw form (`h1::response::RawHead`, carried by the body) instead of a
    /// map: set only where every reader of the answer understands that form.
    pub raw_answer: bool,
}

impl EncodedHead {
    /// `bytes`, a complete head whose `appended` lines are fields the
    /// request's map does not hold.
    pub fn new(bytes: Vec<u8>, appended: std::ops::Range<usize>) -> Self {
        EncodedHead {
            bytes: Bytes::from(bytes),
            appended,
            raw_answer: false,
        }
    }

    /// Whether there is a head (else it is encoded from the request).
    pub fn is_encoded(&self) -> bool {
        !self.bytes.is_empty()
    }

    /// The fields only the bytes hold.
    fn appended(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        let lines = self.bytes.get(self.appended.clone()).unwrap_or_default();
        lines.split(|&b| b == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r")?;
            let colon = memchr::memchr(b':', line)?;
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
            Some((name, value))
        })
    }
}

/// Which HTTP/1.1 connection a request may go out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// An idle pooled connection when there is one, else a new one.
    Pooled,
    /// A new connection: for a request sent again after [`SendError::Closed`].
    New,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Timeout => f.write_str("timed out waiting for response headers"),
            SendError::Exchange(e) => write!(f, "{e}"),
            SendError::Closed(e) => write!(f, "pooled connection closed by the backend: {e}"),
        }
    }
}

/// The connection a response came over; given back to the pool when its body ends.
/// A connection of our own travels inside its body instead (see [`release`]).
pub enum Lease {
    H1(H1Sender),
    None,
}

/// Gives the connection of an answer whose body ended cleanly back to
/// `backend`'s pool.
pub fn release(backend: &Backend, lease: Lease, body: &mut Answer) {
    if let Lease::H1(sender) = lease {
        backend.conns.put_idle(sender);
    }
    if let Some(conn) = body.reusable() {
        backend.conns.put_idle_own(conn);
    }
}

/// What becomes of the request of a failed send.
pub enum Returned {
    /// Consumed: its body was (or may have been) read, or hyper kept it.
    Lost,
    /// Certainly not sent: a retry can send it as is.
    Unsent(Request<UpstreamBody>),
    /// Sent, and without a body: it can go out again as is where sending it
    /// twice is harmless, instead of a copy kept for that.
    Sent(Request<UpstreamBody>),
}

pub type Failed = (SendError, Returned);
pub type SendResult = Result<(Response<Answer>, Lease), Failed>;

/// What became of the request of a failed [`send_in`]: it stays in its slot
/// unless it was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Consumed (the slot is empty): its body was (or may have been) read,
    /// or hyper kept it.
    Lost,
    /// Certainly not sent: a retry can send it as is.
    Unsent,
    /// Sent, and without a body: it can go out again as is where sending it
    /// twice is harmless.
    Sent,
}

/// A backend's answer and the connection it came over.
pub type Answered = (Response<Answer>, Lease);

/// How a [`send_in`] ended: answered (the answer is in the place it was
/// given), or failed, with what became of the request.
pub type SlotResult = Result<(), (SendError, Fate)>;

/// What a failed [`send_in`] from `slot` gives back: the request it left
/// there, moved out.
pub fn give_back(fate: Fate, slot: &mut Option<Request<UpstreamBody>>) -> Returned {
    match (fate, slot.take()) {
        (Fate::Unsent, Some(r)) => Returned::Unsent(r),
        (Fate::Sent, Some(r)) => Returned::Sent(r),
        _ => Returned::Lost,
    }
}

/// Back into the slot, the request of a failed send that gave it back.
fn keep(failed: Failed, slot: &mut Option<Request<UpstreamBody>>) -> (SendError, Fate) {
    match failed {
        (e, Returned::Lost) => (e, Fate::Lost),
        (e, Returned::Unsent(r)) => {
            *slot = Some(r);
            (e, Fate::Unsent)
        }
        (e, Returned::Sent(r)) => {
            *slot = Some(r);
            (e, Fate::Sent)
        }
    }
}

/// Sends `req` to `backend` over `conn`; `encoded`, when not empty, is its
/// head. The URI must already be in the form the backend's protocol needs
/// (origin-form for HTTP/1.1, absolute for HTTP/2).
pub async fn send(
    backend: &Arc<Backend>,
    req: Request<UpstreamBody>,
    encoded: &EncodedHead,
    timeouts: &Timeouts,
    conn: Conn,
) -> SendResult {
    let mut slot = Some(req);
    let mut answer = None;
    match send_in(backend, &mut slot, &mut answer, encoded, timeouts, conn).await {
        Ok(()) => answer.ok_or_else(unanswered),
        Err((e, fate)) => Err((e, give_back(fate, &mut slot))),
    }
}

/// A send that said it was answered and left no answer: not one of ours.
pub fn unanswered() -> Failed {
    debug_assert!(false, "a send answered without an answer");
    let e = io::Error::other("no answer");
    (
        SendError::Exchange(ExchangeError::Own(h1::Error::Io(e))),
        Returned::Lost,
    )
}

/// [`send`] for the request in `slot`, which stays there (unless hyper's
/// clients take it): a request is large, and each layer it was moved through
/// on its way to the connection copied it. The answer goes into `answer`
/// (empty) for the same reason, rather than returned up through the layers.
pub async fn send_in(
    backend: &Arc<Backend>,
    slot: &mut Option<Request<UpstreamBody>>,
    answer: &mut Option<Answered>,
    encoded: &EncodedHead,
    timeouts: &Timeouts,
    conn: Conn,
) -> SlotResult {
    // Out of the slot only for hyper's clients, which take it.
    let Some(mut req) = slot.take_if(|req| !own_path(backend, req)) else {
        let Some(req) = slot.as_mut() else {
            let e = io::Error::other("no request to send");
            return Err((SendError::Connect(e), Fate::Lost));
        };
        return send_own(backend, req, answer, encoded, timeouts, conn).await;
    };
    // Boxed: hyper's side is the larger future by far, and every request's
    // future would carry its size.
    if encoded.appended.is_empty() {
        let result = Box::pin(send_hyper(backend, req, timeouts, conn)).await;
        return answer_in(result, slot, answer);
    }
    for (name, value) in encoded.appended() {
        req.headers_mut().insert(name, value);
    }
    let mut result = Box::pin(send_hyper(backend, req, timeouts, conn)).await;
    // Given back unsent, it may go to a connection of our own next, whose
    // head holds the fields already.
    if let Err((_, Returned::Unsent(req))) = &mut result {
        for (name, _) in encoded.appended() {
            req.headers_mut().remove(name);
        }
    }
    answer_in(result, slot, answer)
}

/// A by-value result put into the places of [`send_in`].
fn answer_in(
    result: SendResult,
    slot: &mut Option<Request<UpstreamBody>>,
    answer: &mut Option<Answered>,
) -> SlotResult {
    match result {
        Ok(a) => {
            *answer = Some(a);
            Ok(())
        }
        Err(failed) => Err(keep(failed, slot)),
    }
}

/// Sends `req` through hyper's clients.
async fn send_hyper(
    backend: &Arc<Backend>,
    mut req: Request<UpstreamBody>,
    timeouts: &Timeouts,
    conn: Conn,
) -> SendResult {
    if backend.address.scheme == Scheme::H2c {
        return match h2_sender(backend, timeouts).await {
            Ok(sender) => send_h2(backend, sender, req, timeouts).await,
            Err(e) => Err((e, Returned::Unsent(req))),
        };
    }
    // An https:// backend speaks HTTP/2 when it chose h2 by ALPN (upgrades need
    // HTTP/1.1: RFC 8441 is not spoken to backends).
    let mut fresh = None;
    if backend.address.scheme == Scheme::Https && !req.headers().contains_key(http::header::UPGRADE)
    {
        if let Some(sender) = backend.conns.shared_h2() {
            return send_h2(backend, sender, into_h2(req, backend), timeouts).await;
        }
        if backend.conns.alpn() != Alpn::Http1 {
            match negotiate(backend, timeouts).await {
                Ok(Negotiated::H2(sender)) => {
                    return send_h2(backend, sender, into_h2(req, backend), timeouts).await;
                }
                Ok(Negotiated::H1(sender)) => fresh = sender,
                Err(e) => return Err((e, Returned::Unsent(req))),
            }
        }
    }
    let max_idle_ms = timeouts.idle.as_millis() as u64;
    // A pooled connection may have been closed by the backend just now; hyper then
    // hands the request back unsent and we try another one.
    for _ in 0..4 {
        let idle = match fresh.take() {
            Some(s) => Some((s, false)),
            None if conn == Conn::New => None,
            None => backend.conns.take_idle(max_idle_ms).map(|s| (s, true)),
        };
        let (mut sender, reused) = match idle {
            Some(pair) => pair,
            None => match h1_connect(backend, timeouts.connect).await {
                Ok(s) => (s, false),
                Err(e) => return Err((e, Returned::Unsent(req))),
            },
        };
        if !sender.is_ready() {
            match tokio::time::timeout(timeouts.connect, sender.ready()).await {
                Ok(Ok(())) => {}
                _ if reused => continue,
                Ok(Err(e)) => {
                    return Err((
                        SendError::Exchange(ExchangeError::Hyper(e)),
                        Returned::Unsent(req),
                    ));
                }
                Err(_) => {
                    return Err((
                        SendError::Connect(io::ErrorKind::TimedOut.into()),
                        Returned::Unsent(req),
                    ));
                }
            }
        }
        let body = req.body().streaming();
        let heard = sender.received();
        let fut = sender.try_send_request(req);
        return match BodyStats::answer_within(body.as_deref(), timeouts.response_header, fut).await
        {
            Some(Ok(resp)) => Ok((resp.map(Answer::Hyper), Lease::H1(sender))),
            Some(Err(mut e)) => match e.take_message() {
                Some(unsent) if reused => {
                    req = unsent;
                    continue;
                }
                Some(unsent) => Err((
                    SendError::Exchange(ExchangeError::Hyper(e.into_error())),
                    Returned::Unsent(unsent),
                )),
                None => {
                    let e = e.into_error();
                    if reused && sender.received() == heard && closed_unanswered(&e) {
                        Err((SendError::Closed(ExchangeError::Hyper(e)), Returned::Lost))
                    } else {
                        Err((SendError::Exchange(ExchangeError::Hyper(e)), Returned::Lost))
                    }
                }
            },
            None => Err((SendError::Timeout, Returned::Lost)),
        };
    }
    Err((
        SendError::Connect(io::Error::other("pooled connections kept closing")),
        Returned::Unsent(req),
    ))
}

/// Whether `req` goes out on a connection of our own: a plain `http://`
/// backend, no `Upgrade`, no `Transfer-Encoding`, and either no body (nor a
/// length announcing one) or a body already whole, whose length the head
/// then states.
pub fn own_path(backend: &Backend, req: &Request<UpstreamBody>) -> bool {
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
    let whole = match req.body() {
        UpstreamBody::Empty => false,
        UpstreamBody::Full(_) => true,
        _ => return false,
    };
    // One look at the few names rather than three hashed lookups.
    backend.address.scheme == Scheme::Http
        && req.headers().iter().all(|(n, v)| {
            n != UPGRADE
                && n != TRANSFER_ENCODING
                && (whole || n != CONTENT_LENGTH || v.as_bytes() == b"0")
        })
}

/// Sends a request without a body, or with one already whole, over a
/// connection of our own, driven from this task: the head and the body in one
/// write, the answer's head read here, its body read by whoever polls it.
async fn send_own(
    backend: &Arc<Backend>,
    req: &mut Request<UpstreamBody>,
    answer: &mut Option<Answered>,
    encoded: &EncodedHead,
    timeouts: &Timeouts,
    conn: Conn,
) -> SlotResult {
    let body = match req.body() {
        UpstreamBody::Full(b) => b.clone(),
        _ => bytes::Bytes::new(),
    };
    // A head encoded ahead states the length of the body it goes with, which
    // is this one: the request phase encodes it only then (`EncodedHead`).
    let stated =
        body.is_empty() || encoded.is_encoded() || states_length(req.headers(), body.len());
    if !stated {
        // The length of the bytes sent, stated once, whatever the fields said.
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, body.len().into());
    }
    // A head encoded ahead (`EncodedHead`) is of a request without a body or
    // with one whose length it states.
    let encoded_now;
    let head = if encoded.is_encoded() && stated {
        &encoded.bytes[..]
    } else {
        encoded_now = h1::conn::encode_request(req);
        &encoded_now[..]
    };
    let head_request = req.method() == http::Method::HEAD;
    let max_idle_ms = timeouts.idle.as_millis() as u64;
    // A pooled connection may have been closed by the backend just now; when
    // nothing of the request could be written on it, another one is tried.
    for _ in 0..4 {
        let idle = match conn {
            Conn::Pooled => backend.conns.take_idle_own(max_idle_ms),
            Conn::New => None,
        };
        let reused = idle.is_some();
        let c = match idle {
            Some(c) => c,
            None => match connect(&backend.address, timeouts.connect).await {
                Ok(UpstreamIo::Plain(tcp)) => {
                    backend.conns.count_open();
                    h1::conn::Conn::new(tcp, backend.conns.here())
                }
                Ok(UpstreamIo::Tls(_)) => {
                    let e = io::Error::other("TLS where plain TCP was asked for");
                    return Err((SendError::Connect(e), Fate::Unsent));
                }
                Err(e) => return Err((SendError::Connect(e), Fate::Unsent)),
            },
        };
        // The exchange keeps its own time (a timer per connection, not per request).
        let exchange = c.exchange(
            head,
            &body,
            head_request,
            encoded.raw_answer,
            timeouts.response_header,
        );
        return match exchange.await {
            Ok(resp) => {
                *answer = Some((resp.map(Answer::Own), Lease::None));
                Ok(())
            }
            Err(h1::conn::Failure::Unsent(_)) if reused => continue,
            Err(h1::conn::Failure::Unsent(e)) => {
                Err((SendError::Exchange(ExchangeError::Own(e)), Fate::Unsent))
            }
            Err(h1::conn::Failure::Unanswered(e)) if reused => {
                Err((SendError::Closed(ExchangeError::Own(e)), Fate::Sent))
            }
            Err(h1::conn::Failure::Unanswered(e) | h1::conn::Failure::Failed(e)) => {
                Err((SendError::Exchange(ExchangeError::Own(e)), Fate::Sent))
            }
            Err(h1::conn::Failure::TimedOut) => Err((SendError::Timeout, Fate::Sent)),
        };
    }
    Err((
        SendError::Connect(io::Error::other("pooled connections kept closing")),
        Fate::Unsent,
    ))
}

/// Whether `headers` hold exactly one `Content-Length`, of `len`: what the
/// client's head said when the fast path read its body, so nothing is
/// rewritten on the common path.
pub fn states_length(headers: &http::HeaderMap, len: usize) -> bool {
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first = lengths
        .next()
        .and_then(|v| h1::response::decimal(v.as_bytes()));
    first == Some(len as u64) && lengths.next().is_none()
}

/// The backend closed (or reset) the connection without an answer: what a
/// pooled connection it had just timed out looks like (RFC 9112 9.3.1).
fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            );
        }
        src = s.source();
    }
    false
}

/// Sends over a shared HTTP/2 connection; the request is already in HTTP/2 form.
async fn send_h2(
    backend: &Arc<Backend>,
    mut sender: H2Sender,
    req: Request<UpstreamBody>,
    timeouts: &Timeouts,
) -> SendResult {
    let body = req.body().streaming();
    let fut = sender.send_request(req);
    match BodyStats::answer_within(body.as_deref(), timeouts.response_header, fut).await {
        Some(Ok(resp)) => Ok((resp.map(Answer::Hyper), Lease::None)),
        Some(Err(e)) => {
            if e.is_canceled() || sender.is_closed() {
                backend.conns.set_h2(None);
            }
            Err((SendError::Exchange(ExchangeError::Hyper(e)), Returned::Lost))
        }
        None => Err((SendError::Timeout, Returned::Lost)),
    }
}

/// Turns a request shaped for HTTP/1.1 (origin-form, `Host`) into HTTP/2 form
/// (`https://authority/path`, no `Host`).
fn into_h2(mut req: Request<UpstreamBody>, backend: &Backend) -> Request<UpstreamBody> {
    let authority = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .or_else(|| http::uri::Authority::try_from(backend.address.key.as_str()).ok());
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTPS);
    parts.authority = authority;
    parts.path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_2;
    req
}

/// What an https:// backend chose by ALPN on a new connection.
enum Negotiated {
    H2(H2Sender),
    /// HTTP/1.1; the new connection when this call opened one.
    H1(Option<H1Sender>),
}

/// Opens a TLS connection offering h2 and http/1.1 and sets the connection up for
/// whichever the backend picks. One at a time per backend: the others wait and
/// share an h2 result (or learn that the backend speaks HTTP/1.1).
async fn negotiate(backend: &Arc<Backend>, timeouts: &Timeouts) -> Result<Negotiated, SendError> {
    let _guard = backend.conns.h2_connect.lock().await;
    if let Some(s) = backend.conns.shared_h2() {
        return Ok(Negotiated::H2(s));
    }
    if backend.conns.alpn() == Alpn::Http1 {
        return Ok(Negotiated::H1(None));
    }
    let tls = backend.tls.clone();
    let offers_h2 = tls.as_deref().and_then(|t| t.config_h2.clone());
    let Some(config) = offers_h2 else {
        backend.conns.set_alpn(Alpn::Http1);
        return Ok(Negotiated::H1(None));
    };
    let tls = tls.as_deref().map(|t| super::io::TlsClient {
        config,
        config_h2: None,
        server_name: t.server_name.clone(),
    });
    let io = connect_tls(&backend.address, timeouts.connect, tls.as_ref())
        .await
        .map_err(SendError::Connect)?;
    let h2 = matches!(&io, UpstreamIo::Tls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2"));
    if !h2 {
        backend.conns.set_alpn(Alpn::Http1);
        return h1_handshake(backend, io)
            .await
            .map(|s| Negotiated::H1(Some(s)));
    }
    let sender = h2_handshake(backend, io).await?;
    backend.conns.set_alpn(Alpn::H2);
    Ok(Negotiated::H2(sender))
}

async fn h1_connect(backend: &Arc<Backend>, timeout: Duration) -> Result<H1Sender, SendError> {
    let io = if backend.address.scheme == Scheme::Https {
        let tls = backend.tls.clone();
        connect_tls(&backend.address, timeout, tls.as_deref()).await
    } else {
        connect(&backend.address, timeout).await
    }
    .map_err(SendError::Connect)?;
    h1_handshake(backend, io).await
}

async fn h1_handshake(backend: &Arc<Backend>, io: UpstreamIo) -> Result<H1Sender, SendError> {
    let tally = Arc::new(Tally {
        received: AtomicU64::new(0),
        home: backend.conns.here(),
    });
    let io = Tallied::new(io, tally.clone());
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, UpstreamBody>(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Connect(io::Error::other(e)))?;
    backend.conns.count_open();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(H1Sender::new(sender, tally))
}

async fn h2_sender(backend: &Arc<Backend>, timeouts: &Timeouts) -> Result<H2Sender, SendError> {
    if let Some(s) = backend.conns.shared_h2() {
        return Ok(s);
    }
    // One connect at a time; the others wait for it and share the result.
    let _guard = backend.conns.h2_connect.lock().await;
    if let Some(s) = backend.conns.shared_h2() {
        return Ok(s);
    }
    let io: UpstreamIo = connect(&backend.address, timeouts.connect)
        .await
        .map_err(SendError::Connect)?;
    h2_handshake(backend, io).await
}

/// Starts an HTTP/2 connection on `io` and makes it the backend's shared one.
async fn h2_handshake(backend: &Arc<Backend>, io: UpstreamIo) -> Result<H2Sender, SendError> {
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake::<_, UpstreamBody>(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Connect(io::Error::other(e)))?;
    backend.conns.count_open();
    let b = backend.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream h2 connection ended with an error");
        }
        b.conns.set_h2(None);
        // Ask again next time: the backend may have changed what it speaks.
        b.conns.set_alpn(Alpn::Unknown);
    });
    backend.conns.set_h2(Some(sender.clone()));
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Option<Request<UpstreamBody>> {
        Some(Request::new(UpstreamBody::Empty))
    }

    /// A failed send's request goes up as the send left it in its slot.
    #[test]
    fn a_failed_send_gives_back_what_its_slot_holds() {
        let mut slot = request();
        assert!(matches!(
            give_back(Fate::Unsent, &mut slot),
            Returned::Unsent(_)
        ));
        assert!(slot.is_none());
        let mut slot = request();
        assert!(matches!(
            give_back(Fate::Sent, &mut slot),
            Returned::Sent(_)
        ));
        let mut slot = None;
        assert!(matches!(give_back(Fate::Lost, &mut slot), Returned::Lost));
    }

    /// A request hyper's client gave back goes back into the slot.
    #[test]
    fn a_request_given_back_goes_back_into_its_slot() {
        let mut slot = None;
        let sent = Returned::Sent(Request::new(UpstreamBody::Empty));
        assert_eq!(keep((SendError::Timeout, sent), &mut slot).1, Fate::Sent);
        assert!(slot.is_some());
        let mut slot = None;
        let unsent = Returned::Unsent(Request::new(UpstreamBody::Empty));
        assert_eq!(
            keep((SendError::Timeout, unsent), &mut slot).1,
            Fate::Unsent
        );
        assert!(slot.is_some());
        let mut slot = None;
        assert_eq!(
            keep((SendError::Timeout, Returned::Lost), &mut slot).1,
            Fate::Lost
        );
        assert!(slot.is_none());
    }

    fn backend_at(addr: std::net::SocketAddr) -> Arc<Backend> {
        let address = crate::config::BackendAddress::parse(&format!("http://{addr}"));
        Arc::new(Backend::new("t", address.expect("address"), None))
    }

    /// A send over a connection of our own writes the answer into the
    /// place it was given and leaves the request in its slot; a failed one
    /// leaves the place empty.
    #[tokio::test]
    async fn the_answer_goes_into_its_place_and_the_request_stays() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = backend_at(listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if s.read(&mut b).await.unwrap() == 0 {
                    return;
                }
                head.push(b[0]);
            }
            let answer = b"HTTP/1.1 203 OK\r\nContent-Length: 2\r\n\r\nhi";
            s.write_all(answer).await.unwrap();
        });
        let req = Request::get("/a").header("host", "b");
        let mut slot = Some(req.body(UpstreamBody::Empty).unwrap());
        let mut answer = None;
        let (timeouts, conn) = (Timeouts::default(), Conn::New);
        let head = EncodedHead::default();
        let sent = send_in(&backend, &mut slot, &mut answer, &head, &timeouts, conn);
        assert!(sent.await.is_ok());
        let (resp, lease) = answer.expect("the answer in its place");
        assert_eq!(
            resp.status(),
            http::StatusCode::NON_AUTHORITATIVE_INFORMATION
        );
        assert!(matches!(resp.body(), Answer::Own(_)));
        assert!(matches!(lease, Lease::None));
        assert_eq!(slot.expect("the request left in its slot").uri(), "/a");

        // Nothing listens there any more: nothing answered, nothing placed.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = backend_at(closed.local_addr().unwrap());
        drop(closed);
        let mut slot = request();
        let mut answer = None;
        let sent = send_in(&backend, &mut slot, &mut answer, &head, &timeouts, conn);
        let Err((SendError::Connect(_), fate)) = sent.await else {
            panic!("a connect error");
        };
        assert_eq!(fate, Fate::Unsent);
        assert!(answer.is_none() && slot.is_some());
    }
}
