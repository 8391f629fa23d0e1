//! Phase 2b: admission. A route's `rate_limit` takes one token from the
//! client's bucket (by address, header or cookie) or answers 429 with
//! `Retry-After`, before anything is read of the body or sent to a backend.

use super::route::Routed;
use super::{Refusal, RequestCtx};
use crate::config::RateKey;
use crate::proxy::headers as hdr;
use http::StatusCode;
use http::request::Parts;
use std::net::IpAddr;

pub(super) fn admit(rc: &RequestCtx, routed: &Routed, parts: &Parts) -> Result<(), Refusal> {
    let Some(limiter) = routed.route.rate_limit.as_deref() else {
        return Ok(());
    };
    let by_value = match &limiter.config.key {
        RateKey::ClientIp => None,
        RateKey::Header(name) => parts.headers.get(name).map(|v| v.as_bytes()),
        RateKey::Cookie(name) => hdr::cookie(&parts.headers, name).map(str::as_bytes),
    };
    // A value and an address never share a bucket: their kinds differ. Nothing
    // waited since the request's start, so its reading is now to within the
    // proxy's own work (a bucket takes a time older than one it has seen).
    let now = crate::clock::us_of(rc.done.started.into());
    let outcome = match by_value {
        Some(v) => limiter.check(b'v', v, now),
        None => {
            let mut buf = [0u8; 16];
            limiter.check(b'a', ip_key(rc.client, &mut buf), now)
        }
    };
    outcome.map_err(|wait| {
        let mut r = Refusal::new(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        r.retry_after = Some(crate::ratelimit::retry_after_secs(wait));
        r
    })
}

fn ip_key(ip: IpAddr, buf: &mut [u8; 16]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            &buf[..4]
        }
        IpAddr::V6(v6) => {
            buf.copy_from_slice(&v6.octets());
            &buf[..]
        }
    }
}
