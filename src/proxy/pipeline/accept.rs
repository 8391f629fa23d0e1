//! Phase 1: a request arrives. It gets its request ID and its finish record;
//! framing problems the connection's guard saw, a missing Host, and ACME
//! http-01 validations are answered here.

use super::{ConnCtx, Refusal, RequestCtx};
use crate::proxy::ProxyContext;
use crate::proxy::body::ProxyBody;
use crate::proxy::finish::Completion;
use crate::proxy::guard::Verdict;
use crate::proxy::headers::{self as hdr, HeadFacts, Present, X_FORWARDED_FOR, X_REQUEST_ID};
use crate::snapshot::Snapshot;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Version, header};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

pub(crate) const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The request's context, written into `place` (empty) rather than returned:
/// it is large, and a returned one was copied into the caller's future and
/// out of the `Result` again. Or the answer when the request is settled here.
///
/// `facts`: what the head holds (see `HeadFacts`); its Host is taken from
/// there, and fields it says are absent are not looked up.
pub(super) fn accept<'p>(
    conn: &ConnCtx,
    parts: &Parts,
    facts: HeadFacts,
    snapshot: &Arc<Snapshot>,
    place: &'p mut Option<RequestCtx>,
) -> Result<&'p mut RequestCtx, Box<Response<ProxyBody>>> {
    debug_assert!(place.is_none(), "accept fills an empty place");
    let started = Instant::now();
    let index = conn.served.fetch_add(1, Relaxed);
    if let Some(answer) = acme_http01(&conn.proxy, parts.uri.path()) {
        return Err(Box::new(answer));
    }
    let present = facts.present;
    let request_id = match present
        .request_id
        .then(|| parts.headers.get(&X_REQUEST_ID))
        .flatten()
    {
        Some(v) if hdr::acceptable_request_id(v) => v.clone(),
        _ => hdr::generate_request_id(),
    };
    let client = client_ip(conn, snapshot, &parts.headers, present);
    let repeated_host = facts.hosts > 1;
    // An absolute-form target (or HTTP/2's :authority) names the host; a Host
    // field then only has to be valid (RFC 9112 3.2.2, RFC 9113 8.3.1).
    let (host, host_field) = match parts.uri.authority() {
        Some(a) => (
            HeaderValue::from_str(a.as_str()).ok(),
            HostField::Beside(facts.host),
        ),
        None => (facts.host, HostField::IsTheHost),
    };
    // Built where it stays (the place is empty, so nothing is dropped
    // first), its finish record included, and then filled in there.
    let rc = place.get_or_insert_with(|| RequestCtx {
        done: Completion::new(
            conn.proxy.clone(),
            snapshot.clone(),
            started,
            parts.method.clone(),
            request_id.clone(),
            client,
        ),
        request_id,
        client,
        host,
        traceparent: None,
        present,
        start_is_now: true,
    });
    // 499 (nginx's "client closed request") unless a response is produced.
    rc.done.status = 499;
    if conn.proxy.access_log.is_on() {
        rc.done.host = rc.host.clone();
        rc.done.path = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        rc.done.protocol = Some(parts.version);
        rc.done.details = crate::proxy::finish::RequestDetails::capture(parts, &conn.peer, present);
    }
    if let Some(why) = conn.guard.as_ref().and_then(|g| g.verdict(index)) {
        let (status, detail) = match why {
            Verdict::Conflict => (
                StatusCode::BAD_REQUEST,
                "conflicting Content-Length and Transfer-Encoding",
            ),
            Verdict::UnknownCoding => (
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding other than chunked",
            ),
            Verdict::ChunkedTwice => (StatusCode::BAD_REQUEST, "chunked applied more than once"),
            Verdict::HeadTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head larger than limits.max_header_bytes",
            ),
            Verdict::TargetTooLong => (
                StatusCode::URI_TOO_LONG,
                "request target larger than limits.max_header_bytes",
            ),
        };
        return Err(Box::new(rc.refuse(Refusal::closing(status, detail))));
    }
    if let Some(detail) = head_verdict(parts, &host_field, repeated_host, rc.host.as_ref()) {
        return Err(Box::new(
            rc.refuse(Refusal::new(StatusCode::BAD_REQUEST, detail)),
        ));
    }
    Ok(rc)
}

/// Where a request's Host field is, as `head_verdict` checks it.
enum HostField {
    /// The target names no authority: the field (if any) is the host.
    IsTheHost,
    /// The target's authority is the host; the first Host field, if any.
    Beside(Option<HeaderValue>),
}

/// What RFC 9112 3.2 and RFC 9113 8.2 refuse in a request head that the HTTP
/// libraries let through: a missing, repeated or invalid Host, an invalid
/// authority in the target, and (HTTP/2) a field value padded with whitespace.
fn head_verdict(
    parts: &Parts,
    host_field: &HostField,
    repeated_host: bool,
    host: Option<&HeaderValue>,
) -> Option<&'static str> {
    if repeated_host {
        return Some("more than one Host header");
    }
    let field = match host_field {
        HostField::IsTheHost => host,
        HostField::Beside(field) => field.as_ref(),
    };
    if field.is_some_and(|h| !hdr::valid_host(h.as_bytes())) {
        return Some("invalid Host header");
    }
    match host {
        None if parts.version == Version::HTTP_11 => return Some("missing Host header"),
        // The same bytes as the Host field, valid by now: not scanned twice.
        Some(h) if field != Some(h) && !hdr::valid_host(h.as_bytes()) => {
            return Some("invalid authority");
        }
        _ => {}
    }
    if parts.version == Version::HTTP_2 && hdr::has_padded_value(&parts.headers) {
        return Some("header value with leading or trailing whitespace");
    }
    None
}

/// The answer to an ACME http-01 validation request, if an order waits on it.
pub(crate) fn acme_http01(proxy: &ProxyContext, path: &str) -> Option<Response<ProxyBody>> {
    let token = path.strip_prefix(ACME_CHALLENGE_PREFIX)?;
    let answer = crate::tls::acme_state::http01_answer(&proxy.acme.load(), token)?;
    let mut resp = Response::new(ProxyBody::text(answer));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

/// The client as the access log and `ip_hash` see it: behind trusted proxies, the
/// right-most X-Forwarded-For entry that is not itself a trusted proxy.
fn client_ip(conn: &ConnCtx, snapshot: &Snapshot, headers: &HeaderMap, present: Present) -> IpAddr {
    let peer = conn.peer.ip;
    if !present.added || !conn.peer_trusted(snapshot) {
        return peer;
    }
    let mut ip = peer;
    for v in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(a) => {
                    ip = a;
                    if !snapshot.is_trusted(a) {
                        return a;
                    }
                }
                Err(_) => return ip,
            }
        }
    }
    ip
}
