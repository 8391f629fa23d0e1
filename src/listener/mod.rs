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

mod cores;
mod counted;
pub(crate) mod h1;
pub(crate) mod http;
mod per_client;
pub(crate) mod redirect;

use crate::config::ListenerConfig;
use crate::proxy::ProxyContext;
use crate::telemetry::ListenerStats;
use arc_swap::ArcSwap;
pub(crate) use cores::{CoreThreads, Cores};
use counted::Counted;
use per_client::PerClient;
use std::future::Future;
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
    /// Which runtimes accept.
    pub(crate) cores: Cores,
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

/// Starts accepting on already bound sockets (one per entry of
/// `shared.cores`, see [`Cores::sockets`]). `stop` ends this listener (a child of
/// the process's shutdown token).
pub(crate) fn start(
    shared: &Shared,
    sockets: Vec<std::net::TcpListener>,
    spec: ListenerSpec,
    max_connections: usize,
    stop: CancellationToken,
) -> io::Result<ListenerHandle> {
    let local_addr = match sockets.first() {
        Some(s) => s.local_addr()?,
        None => return Err(io::Error::other("no socket to listen on")),
    };
    let settings = Arc::new(ArcSwap::from_pointee(spec));
    let connection_limit = Arc::new(Semaphore::new(max_connections));
    // A block of counters per socket, so per worker thread.
    let stats = Arc::new(ListenerStats::new(local_addr.to_string(), sockets.len()));
    let accept = Accept {
        shared: shared.clone(),
        settings: settings.clone(),
        limit: connection_limit.clone(),
        // Shared by every socket of the listener: the cap is per listener.
        clients: Arc::new(PerClient::default()),
        stop: stop.clone(),
        stats: stats.clone(),
        worker: 0,
    };
    for (i, sock) in sockets.into_iter().enumerate() {
        // Registered with, and accepted on, the runtime that will serve its
        // connections.
        let _on = shared.cores.handle(i).map(|h| h.enter());
        match TcpListener::from_std(sock) {
            Ok(listener) => {
                // A token of its own per socket, so per worker thread: its
                // connections check and wait for the stop under their
                // thread's lock, not one every thread takes per request.
                let mut on_socket = accept.clone();
                on_socket.stop = stop.child_token();
                // Its connections count into this worker's block.
                on_socket.worker = i;
                tokio::spawn(on_socket.run(listener));
            }
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        }
    }
    shared.proxy.telemetry.add_listener(&stats);
    Ok(ListenerHandle {
        local_addr,
        settings,
        connection_limit,
        limit: max_connections,
        stop,
        _stats: stats,
    })
}

/// What every accept loop of one listener shares.
#[derive(Clone)]
struct Accept {
    shared: Shared,
    settings: Arc<ArcSwap<ListenerSpec>>,
    limit: Arc<Semaphore>,
    clients: Arc<PerClient>,
    stop: CancellationToken,
    stats: Arc<ListenerStats>,
    /// The socket's index, so its worker's: its block of `stats`.
    worker: usize,
}

impl Accept {
    async fn run(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = self.stop.cancelled() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Beyond max_connections this one waits here, and those after it in
            // the kernel's backlog. Accepting before taking a place keeps places
            // from being held by the accept loops of idle sockets.
            let permit = tokio::select! {
                p = self.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = self.stop.cancelled() => return,
            };
            let cap = self
                .shared
                .proxy
                .snapshot
                .load()
                .limits
                .max_connections_per_client;
            let slot = match cap {
                Some(cap) => match self.clients.take(peer.ip(), cap) {
                    Some(slot) => Some(slot),
                    None => {
                        // Closed at once: this address holds its share already.
                        self.stats.refused_per_client.fetch_add(1, Relaxed);
                        tracing::debug!(%peer, cap, "connection refused: limits.max_connections_per_client");
                        continue;
                    }
                },
                None => None,
            };
            let spec = self.settings.load_full();
            let proxy = self.shared.proxy.clone();
            let stop = self.stop.clone();
            let stream = Counted::new(stream, self.stats.clone(), self.worker);
            let place = Place {
                _permit: permit,
                _slot: slot,
            };
            // On this thread's runtime: the connection never moves.
            self.shared
                .connections
                .spawn(serve(place, proxy, stream, peer, spec, stop));
        }
    }
}

/// A connection's place under `max_connections` (and its client's under
/// `max_connections_per_client`), given back when the connection ends.
struct Place {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _slot: Option<per_client::ClientSlot>,
}

/// One accepted connection, for its whole life. Spawned as it is, so this
/// future is every connection's task size, and most idle connections never
/// send anything: it holds the connection's parts and the wait for its first
/// bytes, and boxes what each kind sets up after that.
///
/// A plain function returning an `async` block: the block keeps what it
/// captures once, where an `async fn` would also keep a moved copy of its
/// arguments.
fn serve(
    place: Place,
    proxy: Arc<ProxyContext>,
    stream: Counted<TcpStream>,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send {
    let _ = stream.get_ref().set_nodelay(true);
    async move {
        // Held, not moved: a moved copy would take room of its own.
        let _held = &place;
        match spec.kind {
            Kind::Redirect { https_port } => {
                Box::pin(redirect::serve(proxy, stream, https_port, &stop)).await
            }
            Kind::Http => {
                // Like hyper's: the first bytes must come within header_read_timeout.
                let timeout = proxy.snapshot.load().limits.header_read_timeout;
                let deadline = tokio::time::Instant::now() + timeout;
                let Ok(Ok(first)) = http::first_bytes(&stream, &spec, deadline).await else {
                    return;
                };
                http::serve(proxy, stream, peer, &spec, stop, first, deadline).await
            }
        }
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

#[cfg(test)]
mod tests {
    /// The size of the future a function returns, without calling it.
    fn future_size6<A, B, C, D, E, G, Fut, F: FnOnce(A, B, C, D, E, G) -> Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }
    fn future_size4<A, B, C, D, Fut, F: FnOnce(A, B, C, D) -> Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every connection's task is this future's size, and most idle
    /// connections never send anything (it was 1.8 KB with the HTTP kinds
    /// inline; a task takes 128-byte steps).
    #[test]
    fn a_connection_waiting_for_its_first_bytes_is_small() {
        let size = future_size6(super::serve);
        assert!(size <= 400, "{size} bytes");
    }

    /// What a served HTTP/1.1 connection keeps while it idles, boxed; the state
    /// of a request in flight is boxed apart (it was 1.3 KB).
    #[test]
    fn an_idle_http1_connection_is_small() {
        type Stream = super::Counted<tokio::net::TcpStream>;
        let size = future_size4(super::h1::serve::<Stream>);
        assert!(size <= 480, "{size} bytes");
    }
}
