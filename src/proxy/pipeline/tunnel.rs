//! Upgrades (WebSocket and other `Upgrade`s): the client gets the backend's 101
//! and the two upgraded connections are joined. The request stays in flight (and
//! counted on its backend) until the tunnel closes.

use super::{ConnCtx, RequestCtx};
use crate::proxy::body::ProxyBody;
use crate::proxy::headers::{self as hdr, X_REQUEST_ID};
use crate::snapshot::Route;
use crate::upstream::body::Answer;
use http::Response;
use std::sync::atomic::Ordering::Relaxed;

pub(super) fn open(
    conn: &ConnCtx,
    resp: Response<Answer>,
    client_up: hyper::upgrade::OnUpgrade,
    upstream_up: hyper::upgrade::OnUpgrade,
    rc: RequestCtx,
    route: &Route,
) -> Response<ProxyBody> {
    let (mut parts, _) = resp.into_parts();
    hdr::remove_hop_by_hop(&mut parts.headers, true);
    hdr::apply_ops(&mut parts.headers, &route.headers.response);
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), rc.request_id.clone());
    let done = rc.done;
    conn.proxy.tunnels.spawn(async move {
        let mut done = done;
        let (c, u) = match tokio::try_join!(client_up, upstream_up) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                done.aborted = true;
                return;
            }
        };
        let mut c = hyper_util::rt::TokioIo::new(c);
        let mut u = hyper_util::rt::TokioIo::new(u);
        match tokio::io::copy_bidirectional(&mut c, &mut u).await {
            Ok((to_up, to_client)) => {
                done.bytes_out = to_client;
                if let Some(s) = &done.bytes_in {
                    s.bytes.fetch_add(to_up, Relaxed);
                }
            }
            Err(_) => done.aborted = true,
        }
    });
    Response::from_parts(parts, ProxyBody::empty())
}
