//! The HTTP listener kind: TLS handshakes (ALPN h2 / http/1.1, ACME
//! tls-alpn-01), HTTP/1.1 with the framing guard, and HTTP/2 (over TLS, or with
//! prior knowledge on a plain socket: the first bytes tell them apart). Every
//! request goes through `proxy::pipeline`.

use super::counted::Counted;
use super::h1;
use super::{ListenerSpec, log_conn_end};
use crate::proxy::ProxyContext;
use crate::proxy::guard::{GuardState, Guarded, Scanner};
use crate::proxy::headers::{PeerInfo, TlsInfo};
use crate::proxy::pipeline::{ConnCtx, handle};
use crate::upstream::body::Inbound;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// How far past `limits.max_header_bytes` hyper reads a request head before
/// refusing it by itself (the guard refuses it first, with the right status).
const HEAD_ALLOWANCE: usize = 64 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a new connection turned out to be, once it sent something.
pub(super) enum First {
    /// TLS (its first bytes were not looked at: the handshake reads them).
    Tls,
    /// The HTTP/2 preface, on a plain socket.
    H2,
    /// Anything else, on a plain socket.
    H1,
}

/// Waits for a new connection's first bytes, until `deadline` (an error: it
/// closed, failed or sent nothing in time). Nothing is set up before the client
/// sends something, and this future is small: the connection's task holds it
/// for as long as the client sends nothing (a plain function, so that its
/// arguments are not kept twice).
pub(super) fn first_bytes<'a>(
    stream: &'a Counted<TcpStream>,
    spec: &'a ListenerSpec,
    deadline: tokio::time::Instant,
) -> tokio::time::Timeout<impl Future<Output = io::Result<First>> + Send + 'a> {
    let stream = stream.get_ref();
    // Polled by hand rather than with `readable()`/`peek()`: those futures
    // carry a waiter of their own, these polls use the socket's.
    let readable = || poll_fn(|cx| stream.poll_read_ready(cx));
    let first = async move {
        if spec.tls.is_some() {
            readable().await.map(|()| First::Tls)
        } else if !spec.config.http2 {
            readable().await.map(|()| First::H1)
        } else if starts_with_h2_preface(stream).await? {
            Ok(First::H2)
        } else {
            Ok(First::H1)
        }
    };
    tokio::time::timeout_at(deadline, first)
}

/// The service of a connection that has sent its first bytes (`first` says
/// what they were), boxed at its own size: the state of the other kinds (a TLS
/// handshake, hyper's connections) is not carried by a plain HTTP/1.1 one.
pub(super) fn serve(
    proxy: Arc<ProxyContext>,
    stream: Counted<TcpStream>,
    peer: SocketAddr,
    spec: &ListenerSpec,
    stop: CancellationToken,
    first: First,
    deadline: tokio::time::Instant,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let limits = proxy.snapshot.load().limits.clone();
    match (first, &spec.tls) {
        (First::Tls, Some(tls)) => Box::pin(serve_tls(
            proxy,
            stream,
            peer,
            tls.clone(),
            limits,
            deadline,
            stop,
        )),
        (First::H2, _) => Box::pin(async move {
            let ctx = context(proxy, peer, None, None, false);
            serve_h2(ctx, stream, &limits, stop).await
        }),
        _ => Box::pin(serve_h1(proxy, stream, peer, None, limits, stop)),
    }
}

async fn serve_tls(
    proxy: Arc<ProxyContext>,
    stream: Counted<TcpStream>,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    limits: crate::config::Limits,
    deadline: tokio::time::Instant,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tls_stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let session = tls_stream.get_ref().1;
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let info = TlsInfo::of(session);
    match alpn.as_deref() {
        // ACME tls-alpn-01 validation: the handshake was the whole point.
        Some(crate::tls::ACME_TLS_ALPN) => {}
        Some(b"h2") => {
            let ctx = context(proxy, peer, None, Some(info), false);
            serve_h2(ctx, tls_stream, &limits, stop).await
        }
        _ => serve_h1(proxy, tls_stream, peer, Some(info), limits, stop).await,
    }
}

/// Waits for the first bytes of a connection and tells whether they are the HTTP/2
/// preface. Leaves the bytes in the socket.
async fn starts_with_h2_preface(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            stream.poll_peek(cx, &mut rb)
        })
        .await?;
        if n == 0 {
            return Ok(false);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: wait a moment for the rest (the socket stays
        // readable, so waiting for that would spin). Boxed: a timer inline
        // would make every connection's wait larger, and this one is rare.
        Box::pin(tokio::time::sleep(Duration::from_millis(1))).await;
    }
}

/// `tls`: the handshake's details on an HTTPS connection, `None` on plain HTTP.
/// `raw_answers`: the connection's answers are written by `h1`'s own writer.
fn context(
    proxy: Arc<ProxyContext>,
    peer: SocketAddr,
    guard: Option<Arc<GuardState>>,
    tls: Option<TlsInfo>,
    raw_answers: bool,
) -> Arc<ConnCtx> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut peer = PeerInfo::new(peer.ip());
    peer.tls = tls;
    Arc::new(ConnCtx {
        proxy,
        peer,
        scheme,
        guard,
        served: AtomicU64::new(0),
        raw_answers,
        trusted: Default::default(),
    })
}

/// An HTTP/1.1 connection: served by `h1` while its requests are the plain
/// kind, then (if ever) by hyper behind the guard for the rest of it.
fn serve_h1<I>(
    proxy: Arc<ProxyContext>,
    io: I,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
    limits: crate::config::Limits,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + h1::Readiness + Unpin + Send + 'static,
{
    // A plain function returning a block: the block keeps its captures once,
    // an `async fn` would also keep moved copies of its arguments.
    let ctx = context(proxy.clone(), peer, None, tls.clone(), true);
    async move {
        let Some(rest) = h1::serve(&ctx, io, &limits, &stop).await else {
            return;
        };
        drop(ctx);
        // Boxed: hyper's connection state exists only on connections handed over.
        Box::pin(serve_hyper_h1(
            proxy,
            h1::Rewind::new(rest),
            peer,
            tls,
            &limits,
            stop,
        ))
        .await;
    }
}

/// hyper's HTTP/1 server with the smuggling guard on every byte it reads; the
/// guard's request count starts with this connection (or the hand-over).
async fn serve_hyper_h1<I>(
    proxy: Arc<ProxyContext>,
    io: I,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
    limits: &crate::config::Limits,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let guard = Arc::new(GuardState::new());
    let telemetry = proxy.telemetry.clone();
    let ctx = context(proxy, peer, Some(guard.clone()), tls, false);
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req.map(Inbound::Hyper)).await) }
    });
    let io = Guarded::new(io, Some(Scanner::new(guard, limits.max_header_bytes)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's own bound leaves room past the configured one, so that the
        // guard's verdict (414 for a long target, 431 for a large head) is the
        // answer; hyper's 414 still covers targets over 64 KiB.
        .max_header_size(limits.max_header_bytes + HEAD_ALLOWANCE)
        .max_buf_size((limits.max_header_bytes + HEAD_ALLOWANCE + 8192).max(400 * 1024));
    drive_h1(
        builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
        &stop,
        Some(&telemetry),
    )
    .await;
}

/// Serves an HTTP/1 connection until it ends; on stop, lets the request in
/// flight finish and closes.
/// `telemetry`: where to count the requests hyper refuses by itself.
pub(super) async fn drive_h1<F>(
    conn: F,
    stop: &CancellationToken,
    telemetry: Option<&crate::telemetry::Telemetry>,
) where
    F: std::future::Future<Output = Result<(), hyper::Error>> + GracefulConn,
{
    let mut conn = pin!(conn);
    tokio::select! {
        biased;
        r = conn.as_mut() => { log_conn_end(r.err(), telemetry); return; }
        _ = stop.cancelled() => {}
    }
    conn.as_mut().graceful();
    log_conn_end(conn.await.err(), telemetry);
}

/// The graceful-shutdown call of hyper's different connection types.
pub(super) trait GracefulConn {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConn for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> GracefulConn for hyper::server::conn::http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

async fn serve_h2<I>(
    ctx: Arc<ConnCtx>,
    io: I,
    limits: &crate::config::Limits,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req.map(Inbound::Hyper)).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = pin!(conn);
    tokio::select! {
        biased;
        r = conn.as_mut() => { log_conn_end(r.err(), None); return; }
        _ = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    log_conn_end(conn.await.err(), None);
}
