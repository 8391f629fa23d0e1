//! Listening sockets and client connections.
//!
//! A listener is identified by its configured address. A reload that keeps the
//! address keeps the socket and every open connection (WebSockets included); only
//! its settings are swapped. HTTP/1.1 and HTTP/2 with prior knowledge (h2c) share
//! a plain listener: the first bytes tell them apart.

use super::counted::Counted;
use super::guard::{GuardState, Guarded, Scanner};
use super::handler::{ConnCtx, handle};
use super::headers::{PeerInfo, TlsInfo};
use crate::app::App;
use crate::config::ListenerConfig;
use crate::telemetry::ListenerStats;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a listening socket is for.
#[derive(Clone, Debug, PartialEq)]
pub enum Role {
    /// Proxies requests (plain, or TLS when the config has `tls`).
    Proxy,
    /// `redirect_http_from`: answers 308 to the HTTPS listener on this port (and
    /// ACME http-01 challenges).
    Redirect { https_port: u16 },
}

/// Everything a listener needs to serve a new connection; swapped on reload.
#[derive(Clone)]
pub struct ListenerSpec {
    pub config: ListenerConfig,
    pub role: Role,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A running listener.
pub struct ListenerHandle {
    pub local_addr: SocketAddr,
    pub settings: Arc<ArcSwap<ListenerSpec>>,
    connection_limit: Arc<Semaphore>,
    limit: usize,
    stop: CancellationToken,
    /// Kept for the life of the listener so its counters stay reported.
    _stats: Arc<ListenerStats>,
}

impl ListenerHandle {
    /// Applies a new spec for the same address without touching the socket:
    /// open connections keep theirs, new ones get the new one (new certificates
    /// included).
    pub fn update(&mut self, spec: ListenerSpec, max_connections: usize) {
        self.settings.store(Arc::new(spec));
        if max_connections > self.limit {
            self.connection_limit
                .add_permits(max_connections - self.limit);
        } else if max_connections < self.limit {
            self.connection_limit
                .forget_permits(self.limit - max_connections);
        }
        self.limit = max_connections;
    }

    /// Stops accepting and asks every connection of this listener to finish
    /// its in-flight requests and close.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Binds a listening socket (SO_REUSEADDR, a deep backlog; IP_FREEBIND so an
/// address that is not (yet) on this host, like a floating VIP, can be bound).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
        let _ = socket.set_freebind_v6(true);
    } else {
        let _ = socket.set_freebind_v4(true);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Starts accepting on an already bound socket.
pub fn start(
    app: &Arc<App>,
    std_listener: std::net::TcpListener,
    spec: ListenerSpec,
    max_connections: usize,
) -> io::Result<ListenerHandle> {
    let listener = TcpListener::from_std(std_listener)?;
    let local_addr = listener.local_addr()?;
    let settings = Arc::new(ArcSwap::from_pointee(spec));
    let connection_limit = Arc::new(Semaphore::new(max_connections));
    let stop = app.shutdown.child_token();
    let stats = Arc::new(ListenerStats::new(local_addr.to_string()));
    app.telemetry.add_listener(&stats);
    tokio::spawn(accept_loop(
        app.clone(),
        listener,
        settings.clone(),
        connection_limit.clone(),
        stop.clone(),
        stats.clone(),
    ));
    Ok(ListenerHandle {
        local_addr,
        settings,
        connection_limit,
        limit: max_connections,
        stop,
        _stats: stats,
    })
}

async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    settings: Arc<ArcSwap<ListenerSpec>>,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
    stats: Arc<ListenerStats>,
) {
    loop {
        // Beyond max_connections, new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let spec = settings.load_full();
                let app2 = app.clone();
                let stop2 = stop.clone();
                let stats = stats.clone();
                app.connections.spawn(async move {
                    let _permit = permit;
                    serve(app2, stream, peer, spec, stop2, stats).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits for the first bytes of a connection and tells whether they are the HTTP/2
/// preface. Leaves the bytes in the socket.
async fn starts_with_h2_preface(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: wait a moment for the rest.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn serve(
    app: Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    stop: CancellationToken,
    stats: Arc<ListenerStats>,
) {
    let _ = stream.set_nodelay(true);
    let limits = app.runtime.load().limits.clone();
    if let Role::Redirect { https_port } = spec.role {
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(super::handler::redirect(&app, req, https_port)) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let io = TokioIo::new(Counted::new(stream, stats));
        drive_h1(builder.serve_connection(io, svc), &stop, None).await;
        return;
    }
    if let Some(tls) = &spec.tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
        let stream = Counted::new(stream, stats);
        let tls_stream =
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
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
            Some(crate::tls::ACME_TLS_ALPN) => return,
            Some(b"h2") => {
                let ctx = context(app, peer, "https", None, Some(info));
                serve_h2(ctx, tls_stream, &limits, stop).await
            }
            _ => serve_h1(app, tls_stream, peer, Some(info), &limits, stop).await,
        }
        return;
    }
    let h2 = if spec.config.http2 {
        match tokio::time::timeout(limits.header_read_timeout, starts_with_h2_preface(&stream))
            .await
        {
            Ok(Ok(h2)) => h2,
            _ => return,
        }
    } else {
        false
    };
    let stream = Counted::new(stream, stats);
    if h2 {
        let ctx = context(app, peer, "http", None, None);
        serve_h2(ctx, stream, &limits, stop).await;
    } else {
        serve_h1(app, stream, peer, None, &limits, stop).await;
    }
}

fn context(
    app: Arc<App>,
    peer: SocketAddr,
    scheme: &'static str,
    guard: Option<Arc<GuardState>>,
    tls: Option<TlsInfo>,
) -> Arc<ConnCtx> {
    let mut peer = PeerInfo::new(peer.ip());
    peer.tls = tls;
    Arc::new(ConnCtx {
        app,
        peer,
        scheme,
        guard,
        served: AtomicU64::new(0),
    })
}

/// `tls`: the handshake's details on an HTTPS connection, `None` on plain HTTP.
async fn serve_h1<I>(
    app: Arc<App>,
    io: I,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
    limits: &crate::config::Limits,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let guard = Arc::new(GuardState::new());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let telemetry_app = app.clone();
    let ctx = context(app, peer, scheme, Some(guard.clone()), tls);
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
    });
    let io = Guarded::new(io, Some(Scanner::new(guard, limits.max_header_bytes)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size((limits.max_header_bytes + 8192).max(400 * 1024));
    drive_h1(
        builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
        &stop,
        Some(&telemetry_app),
    )
    .await;
}

/// `app`: where to count the requests hyper refuses by itself.
async fn drive_h1<F>(conn: F, stop: &CancellationToken, app: Option<&App>)
where
    F: std::future::Future<Output = Result<(), hyper::Error>> + GracefulConn,
{
    let mut conn = pin!(conn);
    tokio::select! {
        biased;
        r = conn.as_mut() => { log_conn_end(r.err(), app); return; }
        _ = stop.cancelled() => {}
    }
    conn.as_mut().graceful();
    log_conn_end(conn.await.err(), app);
}

/// The graceful-shutdown call of hyper's different connection types.
trait GracefulConn {
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
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
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

fn log_conn_end(err: Option<hyper::Error>, app: Option<&App>) {
    if let Some(e) = err {
        tracing::debug!(error = %e, "client connection ended with an error");
        if let (Some(app), Some(status)) = (app, refused_status(&e)) {
            app.telemetry.request_refused(status);
        }
    }
}

/// The status hyper answered by itself for a request head it could not accept
/// (see hyper's `Server::on_error`), if it answered one.
fn refused_status(e: &hyper::Error) -> Option<u16> {
    if e.is_parse_too_large() {
        // hyper reports both "head too large" and "URI too long" this way.
        return Some(if e.to_string().contains("URI too long") {
            414
        } else {
            431
        });
    }
    let answered = e.is_parse() && !e.is_parse_version_h2() && !e.is_parse_status();
    (answered && !e.to_string().contains("internal")).then_some(400)
}
