//! Phase 5: the response rules. The backend's answer feeds passive health and
//! latency estimates, loses its hop-by-hop headers, gets the route's header
//! edits, the request ID and a split's cookie, and streams to the client; the
//! end of its body finishes the request. On a caching route the body is stored
//! while it streams (see `cache::Admit`).

use super::attempt::Attempt;
use super::cache::{Admit, CACHE_STATUS};
use super::forward::{Won, ejected};
use super::route::Routed;
use super::{ConnCtx, RequestCtx, tunnel};
use crate::proxy::body::{ProxyBody, UpstreamStream};
use crate::proxy::headers::{self as hdr, X_REQUEST_ID};
use http::{Response, StatusCode, header};

/// Counts the answer of an attempt: latency estimates, passive health, and the
/// finish record (backend, in-flight slot, status).
pub(super) fn account(
    conn: &ConnCtx,
    rc: &mut RequestCtx,
    routed: &Routed<'_>,
    attempt: Attempt,
    status: StatusCode,
) {
    let pool = routed.pool;
    let backend = &attempt.backend;
    let upstream_us = attempt.sent_at.elapsed().as_micros() as u64;
    backend.observe_latency(upstream_us as f64);
    pool.state.observe_latency(upstream_us as f64);
    if pool.passive.unhealthy_status.matches(status.as_u16())
        && backend.record_failure(&pool.passive)
    {
        ejected(conn, pool, backend, &format!("status {}", status.as_u16()));
    }
    rc.done.backend = Some(attempt.backend);
    rc.done.in_flight = Some(attempt.guard);
    rc.done.upstream_us = Some(upstream_us);
    rc.done.status = status.as_u16();
}

pub(super) fn respond(
    conn: &ConnCtx,
    mut rc: RequestCtx,
    routed: &Routed<'_>,
    won: Won,
    admit: Option<Admit>,
) -> Response<ProxyBody> {
    let Won {
        attempt,
        response: mut resp,
        lease,
        client_upgrade,
        client_version,
    } = won;
    let status = resp.status();
    account(conn, &mut rc, routed, attempt, status);
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_up) = client_upgrade
    {
        let upstream_up = hyper::upgrade::on(&mut resp);
        return tunnel::open(conn, resp, client_up, upstream_up, rc, routed.route);
    }
    let (mut parts, body) = resp.into_parts();
    // Transfer-Encoding frames the body when both are given (RFC 9112 6.3): the
    // length is dropped with it, and the client's side frames the body anew.
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    hdr::remove_hop_by_hop(&mut parts.headers, false);
    hdr::remove_proxy_auth(&mut parts.headers);
    let (admission, cache_status) = match admit {
        Some(a) => a.begin(status, &parts.headers),
        None => (None, None),
    };
    hdr::apply_ops(&mut parts.headers, &routed.route.headers.response);
    parts.headers.insert(X_REQUEST_ID.clone(), rc.request_id);
    if let Some(c) = routed.set_cookie.clone() {
        parts.headers.append(header::SET_COOKIE, c);
    }
    if let Some(v) = cache_status {
        parts.headers.insert(CACHE_STATUS.clone(), v);
    }
    parts.version = client_version;
    let mut stream = UpstreamStream::new(body, lease, rc.done, routed.pool.timeouts.idle);
    stream.admission = admission;
    Response::from_parts(parts, ProxyBody::Upstream(Box::new(stream)))
}
