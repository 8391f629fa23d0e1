//! The redirect listener kind (`redirect_http_from`): every request gets a 308 to
//! the same URL over HTTPS, except ACME http-01 validation requests, which are
//! answered here.

use super::counted::Counted;
use super::http::drive_h1;
use crate::proxy::ProxyContext;
use crate::proxy::body::ProxyBody;
use crate::proxy::headers as hdr;
use crate::proxy::pipeline::accept::acme_http01;
use crate::proxy::respond;
use crate::snapshot::router::normalize_host;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub(super) async fn serve(
    proxy: Arc<ProxyContext>,
    stream: Counted<TcpStream>,
    https_port: u16,
    stop: &CancellationToken,
) {
    let header_read_timeout = proxy.snapshot.load().limits.header_read_timeout;
    let svc = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(redirect(&proxy, req, https_port)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    drive_h1(
        builder.serve_connection(TokioIo::new(stream), svc),
        stop,
        None,
    )
    .await;
}

fn redirect(proxy: &ProxyContext, req: Request<Incoming>, https_port: u16) -> Response<ProxyBody> {
    if let Some(r) = acme_http01(proxy, req.uri().path()) {
        return r;
    }
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| normalize_host(h).into_owned())
        })
        .unwrap_or_default();
    let id = hdr::generate_request_id();
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return respond::error(StatusCode::BAD_REQUEST, &id, "missing or invalid Host");
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{target}");
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
