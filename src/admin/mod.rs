//! The admin listener: JSON API, Prometheus metrics, the live dashboard.
//!
//! It runs apart from the proxy listeners and reads the same state; what it changes
//! goes through `App` (which recompiles the snapshot) or the backend atomics.

pub mod api;
mod audit;
pub mod command;
mod dashboard;
pub mod history;
pub mod metrics;
mod process;

use crate::app::App;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type AdminBody = BoxBody<Bytes, Infallible>;

/// A running admin listener.
pub struct AdminServer {
    pub configured: SocketAddr,
    pub local_addr: SocketAddr,
    stop: CancellationToken,
}

impl AdminServer {
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Binds and starts serving. Not async on purpose: the API can itself trigger an
/// apply that restarts this listener.
pub fn start(app: &Arc<App>, address: SocketAddr) -> std::io::Result<AdminServer> {
    let std_listener = crate::proxy::listener::bind(address)?;
    let listener = TcpListener::from_std(std_listener)?;
    let local_addr = listener.local_addr()?;
    let stop = app.shutdown.child_token();
    history::History::ensure_running(app, &app.telemetry.history);
    let weak = Arc::downgrade(app);
    let stop2 = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop2.cancelled() => return,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            let Some(app) = weak.upgrade() else { return };
            let stop3 = stop2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle_audited(app, req, peer).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = stop3.cancelled() => {}
                }
            });
        }
    });
    tracing::info!(address = %local_addr, configured = %address, "admin API listening");
    Ok(AdminServer {
        configured: address,
        local_addr,
        stop,
    })
}

pub fn full(
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

pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<AdminBody> {
    full(status, "application/json", v.to_string())
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response<AdminBody> {
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

fn authorized(app: &App, req: &Request<Incoming>) -> bool {
    let token = app.admin_token.load();
    let Some(token) = token.as_deref() else {
        return true;
    };
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match given.strip_prefix("Bearer ") {
        Some(t) => same(t.trim().as_bytes(), token.as_bytes()),
        None => false,
    }
}

/// Serves a request; a write (anything but GET/HEAD) also gets its audit line.
async fn handle_audited(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    if !audit::is_write(req.method()) {
        return handle(app, req).await;
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
    let resp = handle(app, req).await;
    audit::record(&who, &method, &target, user_agent.as_deref(), resp).await
}

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<AdminBody> {
    let path = req.uri().path().to_string();
    // The dashboard page itself holds no data; its API calls carry the token.
    if req.method() == http::Method::GET && (path == "/" || path == "/dashboard") {
        return dashboard::page();
    }
    if !authorized(&app, &req) {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
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
            metrics::render(&app, format),
        );
    }
    match path.strip_prefix("/api/v1") {
        Some(rest) => api::route(&app, req, rest.to_string()).await,
        None => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// Reads a request body, bounded.
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Response<AdminBody>> {
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    match limited.collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )),
    }
}
