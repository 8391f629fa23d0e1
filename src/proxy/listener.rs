//! Listening sockets and client connections.
//!
//! A listener is identified by its configured address. A reload that keeps the
//! address keeps the socket and every open connection (WebSockets included); only
//! its settings are swapped. HTTP/1.1 and HTTP/2 with prior knowledge (h2c) share
//! a plain listener: the first bytes tell them apart.

use super::guard::{GuardState, Guarded, Scanner};
use super::handler::{ConnCtx, handle};
use super::headers::PeerInfo;
use crate::app::App;
use crate::config::ListenerConfig;
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

/// A running listener.
pub struct ListenerHandle {
    pub local_addr: SocketAddr,
    pub settings: Arc<ArcSwap<ListenerConfig>>,
    connection_limit: Arc<Semaphore>,
    limit: usize,
    stop: CancellationToken,
}

impl ListenerHandle {
    /// Applies a new config for the same address without touching the socket.
    pub fn update(&mut self, config: ListenerConfig, max_connections: usize) {
        self.settings.store(Arc::new(config));
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

/// Binds a listening socket (SO_REUSEADDR, a deep backlog).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
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
    config: ListenerConfig,
    max_connections: usize,
) -> io::Result<ListenerHandle> {
    let listener = TcpListener::from_std(std_listener)?;
    let local_addr = listener.local_addr()?;
    let settings = Arc::new(ArcSwap::from_pointee(config));
    let connection_limit = Arc::new(Semaphore::new(max_connections));
    let stop = app.shutdown.child_token();
    tokio::spawn(accept_loop(
        app.clone(),
        listener,
        settings.clone(),
        connection_limit.clone(),
        stop.clone(),
    ));
    Ok(ListenerHandle {
        local_addr,
        settings,
        connection_limit,
        limit: max_connections,
        stop,
    })
}

async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    settings: Arc<ArcSwap<ListenerConfig>>,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
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
                let cfg = settings.load_full();
                let app2 = app.clone();
                let stop2 = stop.clone();
                app.connections.spawn(async move {
                    let _permit = permit;
                    serve(app2, stream, peer, cfg, stop2).await;
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
    cfg: Arc<ListenerConfig>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let limits = app.runtime.load().limits.clone();
    let h2 = if cfg.http2 {
        match tokio::time::timeout(limits.header_read_timeout, starts_with_h2_preface(&stream))
            .await
        {
            Ok(Ok(h2)) => h2,
            _ => return,
        }
    } else {
        false
    };
    let guard = (!h2).then(|| Arc::new(GuardState::new()));
    let ctx = Arc::new(ConnCtx {
        app: app.clone(),
        peer: PeerInfo::new(peer.ip()),
        scheme: "http",
        guard: guard.clone(),
        served: AtomicU64::new(0),
    });
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
    });
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut conn = pin!(conn);
        tokio::select! {
            biased;
            r = conn.as_mut() => { log_conn_end(r.err()); return; }
            _ = stop.cancelled() => {}
        }
        conn.as_mut().graceful_shutdown();
        log_conn_end(conn.await.err());
    } else {
        let io = Guarded::new(
            stream,
            guard.map(|g| Scanner::new(g, limits.max_header_bytes)),
        );
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size((limits.max_header_bytes + 8192).max(400 * 1024));
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut conn = pin!(conn);
        tokio::select! {
            biased;
            r = conn.as_mut() => { log_conn_end(r.err()); return; }
            _ = stop.cancelled() => {}
        }
        conn.as_mut().graceful_shutdown();
        log_conn_end(conn.await.err());
    }
}

fn log_conn_end(err: Option<hyper::Error>) {
    if let Some(e) = err {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
