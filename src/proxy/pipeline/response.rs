//! Phase 5: the response rules. The backend's answer feeds passive health and
//! latency estimates, loses its hop-by-hop headers, gets the route's header
//! edits, the request ID and a split's cookie, and streams to the client; the
//! end of its body finishes the request. On a caching route the body is stored
//! while it streams (see `cache::Admit`). How an answer counts for the backend
//! (`forward::account`) sits with the other attempt bookkeeping.

use super::cache::{Admit, CACHE_STATUS};
use super::forward::{Won, account};
use super::route::Routed;
use super::{ConnCtx, RequestCtx, tunnel};
use crate::proxy::body::{ProxyBody, UpstreamStream};
use crate::proxy::headers::{self as hdr, X_REQUEST_ID};
use crate::proxy::spliced;
use crate::upstream::client::Answered;
use http::{Response, StatusCode, header};

pub(super) fn respond(
    conn: &ConnCtx,
    mut rc: RequestCtx,
    routed: &Routed<'_>,
    won: Won,
    answer: Answered,
    admit: Option<Admit>,
) -> Response<ProxyBody> {
    let Won {
        attempt,
        client_upgrade,
        client_version,
    } = won;
    let (mut resp, lease) = answer;
    let status = resp.status();
    account(conn, &mut rc, routed, attempt, status);
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_up) = client_upgrade
    {
        let upstream_up = hyper::upgrade::on(&mut resp);
        return tunnel::open(conn, resp, client_up, upstream_up, rc, routed.route);
    }
    let (mut parts, mut body) = resp.into_parts();
    // An answer whose fields were left raw (asked for in `request::prepare`
    // exactly when nothing below needs the map) gets the same rules over
    // them; else they become the map first.
    let spliceable = admit.is_none() && routed.route.headers.response.is_empty();
    if spliceable && let Some(head) = body.raw_head_mut() {
        spliced::splice(head, rc.request_id, routed.set_cookie.clone());
        parts.version = client_version;
        let stream = UpstreamStream::new(body, lease, rc.done, routed.pool.timeouts.idle);
        return Response::from_parts(parts, ProxyBody::Upstream(Box::new(stream)));
    }
    if let Some(head) = body.take_raw_head() {
        parts.headers = head.to_map();
    }
    // Transfer-Encoding frames the body when both are given (RFC 9112 6.3): the
    // length is dropped with it, and the client's side frames the body anew.
    // A look at the few names rather than a hash of one.
    if parts.headers.keys().any(|n| n == header::TRANSFER_ENCODING) {
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
