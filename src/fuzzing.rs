//! Entry points for the coverage-guided fuzzers in `fuzz/` (not a public API:
//! hidden from the docs, and nothing else uses it). Each takes arbitrary bytes,
//! feeds them to one parser that sees untrusted input, and must never panic.
//!
//! | target | input | what it reaches |
//! | --- | --- | --- |
//! | `config` | YAML or JSON text | the config loader: decoding, every section's checks, serialization |
//! | `request_head` | bytes a client sends | the HTTP/1 smuggling guard (heads, lengths, chunk-size lines) |
//! | `chunked` | a chunked body | the guard after a chunked head |
//! | `header_rules` | header lines | hop-by-hop removal, forwarding headers, cookies, query parameters |
//! | `admin_body` | a request body | `POST /api/v1/pools/{pool}/backends` bodies |
//! | `peer_frame` | a frame from a peer | the cluster transport's frame length and envelope, Raft RPCs |

use crate::proxy::guard::{GuardState, Scanner};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;

/// The config loader on `data`; a config that loads must also serialize, and
/// its JSON form must load again.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = std::path::Path::new("/nonexistent-fuzz-base");
    let env = |_: &str| Some("x".to_string());
    if let Ok(c) = crate::config::load_str_with_env(text, "fuzz", base, &env) {
        let json = crate::config::serialize::config(&c, false).to_string();
        let again = crate::config::load_str_with_env(&json, "fuzz-json", base, &env);
        assert!(
            again.is_ok(),
            "the JSON form of a valid config does not load: {json}"
        );
    }
}

/// Feeds the smuggling guard `data` in pieces whose sizes come from the data.
fn guard(prefix: &[u8], data: &[u8]) {
    let state = Arc::new(GuardState::new());
    let mut scanner = Scanner::new(state.clone(), 8 * 1024);
    // The scanner edits what it reads in place (an HTTP/1.x version is read as
    // 1.1), so it works on copies.
    scanner.feed(&mut prefix.to_vec());
    let (sizes, rest) = data.split_at(data.len().min(4));
    let mut rest = rest.to_vec();
    let mut rest = &mut rest[..];
    for s in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = (*s as usize % 64 + 1).min(rest.len());
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
        scanner.feed(head);
        rest = tail;
    }
    for i in 0..4 {
        let _ = state.verdict(i);
    }
}

/// The HTTP/1 guard on a stream of request bytes.
pub fn request_head(data: &[u8]) {
    guard(b"", data);
}

/// The guard's chunked-body tracking, after a valid chunked head.
pub fn chunked(data: &[u8]) {
    guard(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        data,
    );
}

/// Header lines (`name: value`) through the request header rules.
pub fn header_rules(data: &[u8]) {
    use crate::proxy::headers as hdr;
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(name, value);
    }
    let upgrade = hdr::wants_upgrade(&h);
    let host = h.get(http::header::HOST).cloned();
    let _ = hdr::cookie(&h, "session");
    if let Some(q) = h.get("x-query").and_then(|v| v.to_str().ok()) {
        let _ = hdr::query_param(q, "a");
        let _ = hdr::percent_decode(q);
    }
    let _ = h.get("x-request-id").map(hdr::acceptable_request_id);
    hdr::remove_hop_by_hop(&mut h, upgrade);
    let peer = hdr::PeerInfo::new("2001:db8::1".parse().expect("static address"));
    let trusted = data.first().is_some_and(|b| b & 1 == 1);
    hdr::add_forwarding(
        &mut h,
        &peer,
        trusted,
        "https",
        host.as_ref(),
        "1.1 fulcrum",
    );
}

/// An admin API body for adding a backend.
pub fn admin_body(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = crate::admin::add_backend_command("app", &v);
    }
}

/// A cluster peer's frame: 4 bytes of length, 8 of id, then the JSON body.
pub fn peer_frame(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let _ = crate::cluster::transport::frame_body_len(*len);
    let body = rest.get(8..).unwrap_or_default();
    if let Ok(env) = crate::cluster::transport::decode_request(body)
        && let crate::cluster::transport::Request::Raft(v) = env.body
    {
        let _ = crate::cluster::decode_rpc(v);
    }
}
