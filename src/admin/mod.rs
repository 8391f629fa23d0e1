//! The admin listener: JSON API, Prometheus metrics, the live dashboard.
//!
//! It runs apart from the proxy listeners and reads the same state through
//! [`AdminContext`]; every change it asks for is a typed command handed to the
//! command sink (executed here, or replicated first in a cluster).

mod api;
mod audit;
mod dashboard;
mod failover;
pub(crate) mod history;
mod metrics;
mod process;

#[doc(hidden)]
pub(crate) use api::add_backend_command;
pub(crate) use api::member_json;

use crate::cluster::Cluster;
use crate::command::{CommandError, CommandSink, ErrorKind};
use crate::failover::notify::Notifier;
use crate::proxy::ProxyContext;
use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) type AdminBody = BoxBody<Bytes, Infallible>;

/// What the supervisor tells the admin API about the node, republished after
/// every change.
#[derive(Default)]
pub(crate) struct NodeStatus {
    pub(crate) config_path: Option<PathBuf>,
    /// (configured, bound) address of every listener.
    pub(crate) listeners: Vec<(SocketAddr, SocketAddr)>,
    pub(crate) admin: Option<SocketAddr>,
    /// The changes made on top of the config file (API, discovery), as JSON.
    pub(crate) layers: serde_json::Value,
}

/// What the admin API reads and where it sends changes.
pub(crate) struct AdminContext {
    /// The request path's state, read only: snapshot, counters, access log, ACME.
    pub(crate) proxy: Arc<ProxyContext>,
    pub(crate) commands: Arc<dyn CommandSink>,
    pub(crate) status: ArcSwap<NodeStatus>,
    pub(crate) cluster: OnceLock<Arc<Cluster>>,
    pub(crate) notifier: Arc<Notifier>,
    /// The last 15 minutes of rates, for the dashboard's graphs.
    pub(crate) history: Arc<history::History>,
    /// What container discovery sees (written by its watcher).
    pub(crate) discovery: Arc<crate::discovery::Shared>,
    pub(crate) token: ArcSwapOption<String>,
    /// `admin.read_token`: GET and HEAD only.
    pub(crate) read_token: ArcSwapOption<String>,
    pub(crate) started: Instant,
    /// Cancelled on shutdown (ends event streams).
    pub(crate) shutdown: CancellationToken,
}

/// A running admin listener.
pub(crate) struct AdminServer {
    pub(crate) configured: SocketAddr,
    pub(crate) local_addr: SocketAddr,
    /// The HTTPS settings of an API served over TLS; swapped on reload.
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    stop: CancellationToken,
}

impl AdminServer {
    /// Whether this server can serve `address` as it is (same address, and
    /// HTTPS either way or plain either way).
    pub(crate) fn can_keep(&self, address: SocketAddr, tls: bool) -> bool {
        address == self.configured && self.tls.is_some() == tls
    }

    /// New connections get this certificate (a reload read the files again).
    pub(crate) fn set_tls(&self, tls: Arc<rustls::ServerConfig>) {
        if let Some(t) = &self.tls {
            t.store(tls);
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Binds and starts serving (over TLS with `tls`). Not async on purpose: the
/// API can itself trigger an apply that restarts this listener.
pub(crate) fn start(
    ctx: &Arc<AdminContext>,
    address: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<AdminServer> {
    let std_listener = crate::net::bind(address)?;
    let listener = TcpListener::from_std(std_listener)?;
    let local_addr = listener.local_addr()?;
    let stop = ctx.shutdown.child_token();
    history::History::ensure_running(ctx);
    let weak = Arc::downgrade(ctx);
    let stop2 = stop.clone();
    let tls = tls.map(|t| Arc::new(ArcSwap::new(t)));
    let tls2 = tls.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop2.cancelled() => return,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            let Some(ctx) = weak.upgrade() else { return };
            let stop3 = stop2.clone();
            let tls = tls2.as_ref().map(|t| t.load_full());
            tokio::spawn(async move {
                match tls {
                    None => serve_conn(ctx, stream, peer, stop3).await,
                    Some(cfg) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                        let handshake = tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            acceptor.accept(stream),
                        );
                        match handshake.await {
                            Ok(Ok(s)) => serve_conn(ctx, s, peer, stop3).await,
                            _ => tracing::debug!(%peer, "admin API: TLS handshake failed"),
                        }
                    }
                }
            });
        }
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %local_addr, configured = %address, scheme, "admin API listening");
    Ok(AdminServer {
        configured: address,
        local_addr,
        tls,
        stop,
    })
}

async fn serve_conn<I>(ctx: Arc<AdminContext>, io: I, peer: SocketAddr, stop: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle_audited(ctx, req, peer).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        _ = conn => {}
        _ = stop.cancelled() => {}
    }
}

pub(crate) fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<AdminBody> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Response<AdminBody> {
    full(status, "application/json", v.to_string())
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response<AdminBody> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from
/// response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a caller's bearer token lets it do.
#[derive(PartialEq)]
enum Access {
    Full,
    /// `admin.read_token`: GET and HEAD.
    Read,
    Denied,
}

fn access(ctx: &AdminContext, req: &Request<Incoming>) -> Access {
    let token = ctx.token.load();
    let Some(token) = token.as_deref() else {
        return Access::Full;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().as_bytes());
    let Some(given) = given else {
        return Access::Denied;
    };
    if same(given, token.as_bytes()) {
        return Access::Full;
    }
    match ctx.read_token.load().as_deref() {
        Some(read) if same(given, read.as_bytes()) => Access::Read,
        _ => Access::Denied,
    }
}

/// Serves a request; a write (anything but GET/HEAD) also gets its audit line.
async fn handle_audited(
    ctx: Arc<AdminContext>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    if !audit::is_write(req.method()) {
        return handle(ctx, req).await;
    }
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let who = audit::Who::new(peer, header(header::AUTHORIZATION).as_deref());
    let user_agent = header(header::USER_AGENT);
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let resp = handle(ctx, req).await;
    audit::record(&who, &method, &target, user_agent.as_deref(), resp).await
}

async fn handle(ctx: Arc<AdminContext>, req: Request<Incoming>) -> Response<AdminBody> {
    let path = req.uri().path().to_string();
    // The dashboard page itself holds no data; its API calls carry the token.
    if req.method() == http::Method::GET && (path == "/" || path == "/dashboard") {
        return dashboard::page();
    }
    match access(&ctx, &req) {
        Access::Full => {}
        Access::Read if audit::is_write(req.method()) => {
            return error(
                StatusCode::FORBIDDEN,
                "this token (admin.read_token) may only read",
            );
        }
        Access::Read => {}
        Access::Denied => {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if path == "/metrics" {
        if req.method() != http::Method::GET {
            return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        let format = metrics::Format::negotiate(
            req.headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        );
        return full(
            StatusCode::OK,
            format.content_type(),
            metrics::render(&ctx, format),
        );
    }
    match path.strip_prefix("/api/v1") {
        Some(rest) => api::route(&ctx, req, rest.to_string()).await,
        None => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// The answer to an executed command: its JSON, or its error with the status
/// its kind calls for.
pub(crate) fn outcome(o: crate::command::Outcome, success: StatusCode) -> Response<AdminBody> {
    match o {
        Ok(v) => json(success, &v),
        Err(e) => command_error(&e),
    }
}

pub(crate) fn command_error(e: &CommandError) -> Response<AdminBody> {
    let status = match e.kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut v = serde_json::json!({ "error": e.message });
    if !e.details.is_empty() {
        v["errors"] = serde_json::Value::from(e.details.clone());
    }
    json(status, &v)
}

/// Reads a request body, bounded.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Response<AdminBody>> {
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    match limited.collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )),
    }
}
