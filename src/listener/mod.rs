//! Listening sockets and the connections they accept, by kind:
//!
//! - [`http`]: proxies requests (HTTP/1.1 and h2c on plain sockets; TLS with
//!   ALPN h2 and http/1.1), through the request pipeline in `proxy`.
//! - [`redirect`]: `redirect_http_from`, answering 308 to the HTTPS listener
//!   (and ACME http-01 challenges).
//!
//! A listener is identified by its configured address. A reload that keeps the
//! address keeps the socket and every open connection (WebSockets included); only
//! its settings are swapped. A new kind (TCP, UDP, QUIC) is one more module here
//! and one more [`Kind`], over the same upstream layer.

mod counted;
pub(crate) mod h1;
pub(crate) mod http;
mod per_client;
pub(crate) mod redirect;

use crate::config::ListenerConfig;
use crate::proxy::ProxyContext;
use crate::telemetry::ListenerStats;
use arc_swap::ArcSwap;
use counted::Counted;
use per_client::PerClient;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a listening socket is for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    /// Proxies requests (plain, or TLS when the config has `tls`).
    Http,
    /// `redirect_http_from`: answers 308 to the HTTPS listener on this port.
    Redirect { https_port: u16 },
}

/// Everything a listener needs to serve a new connection; swapped on reload.
#[derive(Clone)]
pub(crate) struct ListenerSpec {
    pub(crate) config: ListenerConfig,
    pub(crate) kind: Kind,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

/// What every listener shares with the process.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) proxy: Arc<ProxyContext>,
    /// Client connections (each finishes its in-flight requests on shutdown).
    pub(crate) connections: TaskTracker,
}

/// A running listener.
pub(crate) struct ListenerHandle {
    pub(crate) local_addr: SocketAddr,
    settings: Arc<ArcSwap<ListenerSpec>>,
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
    pub(crate) fn update(&mut self, spec: ListenerSpec, max_connections: usize) {
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
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }
}

/// Starts accepting on an already bound socket. `stop` ends this listener (a
/// child of the process's shutdown token).
pub(crate) fn start(
    shared: &Shared,
    std_listener: std::net::TcpListener,
    spec: ListenerSpec,
    max_connections: usize,
    stop: CancellationToken,
) -> io::Result<ListenerHandle> {
    let listener = TcpListener::from_std(std_listener)?;
    let local_addr = listener.local_addr()?;
    let settings = Arc::new(ArcSwap::from_pointee(spec));
    let connection_limit = Arc::new(Semaphore::new(max_connections));
    let stats = Arc::new(ListenerStats::new(local_addr.to_string()));
    shared.proxy.telemetry.add_listener(&stats);
    tokio::spawn(accept_loop(
        shared.clone(),
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
    shared: Shared,
    listener: TcpListener,
    settings: Arc<ArcSwap<ListenerSpec>>,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
    stats: Arc<ListenerStats>,
) {
    let clients = Arc::new(PerClient::default());
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
                let cap = shared
                    .proxy
                    .snapshot
                    .load()
                    .limits
                    .max_connections_per_client;
                let slot = match cap {
                    Some(cap) => match clients.take(peer.ip(), cap) {
                        Some(slot) => Some(slot),
                        None => {
                            // Closed at once: this address holds its share already.
                            stats.refused_per_client.fetch_add(1, Relaxed);
                            tracing::debug!(%peer, cap, "connection refused: limits.max_connections_per_client");
                            continue;
                        }
                    },
                    None => None,
                };
                let spec = settings.load_full();
                let proxy = shared.proxy.clone();
                let stop = stop.clone();
                let stream = Counted::new(stream, stats.clone());
                shared.connections.spawn(async move {
                    let _permit = permit;
                    let _slot = slot;
                    serve(proxy, stream, peer, spec, stop).await;
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

/// One accepted connection, handed to its kind.
async fn serve(
    proxy: Arc<ProxyContext>,
    stream: Counted<TcpStream>,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    stop: CancellationToken,
) {
    let _ = stream.get_ref().set_nodelay(true);
    match spec.kind {
        Kind::Redirect { https_port } => redirect::serve(proxy, stream, https_port, &stop).await,
        Kind::Http => http::serve(proxy, stream, peer, &spec, stop).await,
    }
}

/// Logs how a client connection ended when it was not a clean close, and
/// counts the request hyper refused by itself, if it answered one.
fn log_conn_end(err: Option<hyper::Error>, telemetry: Option<&crate::telemetry::Telemetry>) {
    if let Some(e) = err {
        tracing::debug!(error = %e, "client connection ended with an error");
        if let (Some(t), Some(status)) = (telemetry, refused_status(&e)) {
            t.request_refused(status);
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
