//! Phase 2c: `buffer_request_body`. A route that asks for it has the request
//! body read whole (up to its bound) before a backend is picked, so a slow
//! upload ties up only the proxy, never a backend's worker. A body longer than
//! the bound is sent as what was held followed by the rest, streamed.

use super::route::Routed;
use super::{ConnCtx, Refusal};
use crate::snapshot::Snapshot;
use crate::upstream::body::{Held, Inbound};
use http::request::Parts;
use http::{StatusCode, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::sync::atomic::Ordering::Relaxed;

/// Whether [`hold`] has anything to do: the caller skips it otherwise, which
/// spares moving the body into its future and back on nearly every request.
pub(super) fn wanted(routed: &Routed<'_>, body: &Inbound) -> bool {
    routed.route.buffer_request_body != 0 && !body.is_end_stream()
}

pub(super) async fn hold(
    conn: &ConnCtx,
    routed: &Routed<'_>,
    snapshot: &Snapshot,
    parts: &Parts,
    body: Inbound,
) -> Result<Inbound, Refusal> {
    if !wanted(routed, &body) {
        return Ok(body);
    }
    let bound = routed.route.buffer_request_body;
    let max_body = snapshot.limits.max_body_bytes.unwrap_or(u64::MAX);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        // Refused unread by the request rules.
        return Ok(body);
    }
    let Inbound::Hyper(mut rest) = body else {
        return Ok(body);
    };
    let mut held = Held::default();
    while held.len() < bound {
        let next = tokio::time::timeout(snapshot.limits.body_read_timeout, rest.frame()).await;
        let frame = match next {
            Err(_) => {
                conn.proxy
                    .telemetry
                    .body_read_timeouts
                    .fetch_add(1, Relaxed);
                return Err(Refusal::closing(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body stalled for limits.body_read_timeout",
                ));
            }
            Ok(None) => return Ok(Inbound::Held(Box::new(held))),
            Ok(Some(Err(_))) => {
                return Err(Refusal::closing(
                    StatusCode::BAD_REQUEST,
                    "could not read the request body",
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                held.push(data);
                if held.len() > max_body {
                    return Err(Refusal::closing(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body larger than limits.max_body_bytes",
                    ));
                }
            }
            Err(frame) => {
                held.trailers = frame.into_trailers().ok();
                return Ok(Inbound::Held(Box::new(held)));
            }
        }
    }
    held.rest = Some(rest);
    Ok(Inbound::Held(Box::new(held)))
}
