//! Entry points for the coverage-guided fuzzers in `fuzz/` (not a public API:
//! hidden from the docs, and nothing else uses it). Each takes arbitrary bytes,
//! feeds them to one parser that sees untrusted input, and must never panic.
//!
//! | target | input | what it reaches |
//! | --- | --- | --- |
//! | `config` | YAML or JSON text | the config loader: decoding, every section's checks, serialization |
//! | `request_head` | bytes a client sends | the HTTP/1 smuggling guard (heads, lengths, chunk-size lines) |
//! | `h1_request` | bytes a client sends | the HTTP/1.1 fast path's head parser, its serve-or-hand-over decision and the `Content-Length` body it takes |
//! | `chunked` | a chunked body | the guard after a chunked head |
//! | `header_rules` | header lines | hop-by-hop removal, forwarding headers, cookies, query parameters |
//! | `admin_body` | a request body | `POST /api/v1/pools/{pool}/backends` bodies |
//! | `peer_frame` | a frame from a peer | the cluster transport's frame length and envelope, Raft RPCs |
//! | `docker_engine` | a container engine's answer | the event stream, `/version`, the container list, inspect answers → the discovered routes |
//! | `cache_control` | a request and a response head | Cache-Control / CDN-Cache-Control, dates, `Vary`, storability, freshness, reuse, 304s |
//! | `h1_response` | bytes a backend sends | the HTTP/1.1 client's answer head parsing, body framing and chunked decoding |

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

/// The HTTP/1.1 fast path's decision on `data`: a head it serves frames its
/// body by exactly one plain `Content-Length` (or has none) and never by
/// `Transfer-Encoding`, the body taken is exactly that many bytes, and the
/// request built from it holds what a second parse reads.
pub fn h1_request(data: &[u8]) {
    use crate::listener::h1::{Decision, MAX_BUFFERED_BODY, decide, request, take_body};
    use crate::upstream::body::Inbound;
    let Decision::Serve(layout) = decide(data, 8 * 1024, None) else {
        return;
    };
    let head = bytes::Bytes::copy_from_slice(&data[..layout.len]);
    assert!(
        memchr::memchr_iter(b'\n', &head).all(|i| i > 0 && head[i - 1] == b'\r'),
        "a served head with a bare LF"
    );
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut again = httparse::Request::new(&mut fields);
    assert_eq!(
        again.parse(&head).ok(),
        Some(httparse::Status::Complete(head.len()))
    );
    assert_eq!(again.version, Some(1));
    let lengths: Vec<&[u8]> = again
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    match lengths[..] {
        [] => assert_eq!(layout.body, 0),
        [value] => {
            assert!(
                !value.is_empty() && value.iter().all(u8::is_ascii_digit),
                "served with Content-Length {value:?}"
            );
            let n = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            assert_eq!(n, Some(layout.body));
        }
        _ => panic!("served with {} Content-Length fields", lengths.len()),
    }
    assert!(layout.body <= MAX_BUFFERED_BODY);
    if layout.body > 0 {
        // `limits.max_body_bytes` bounds what is read here too.
        assert!(matches!(
            decide(data, 8 * 1024, Some(layout.body - 1)),
            Decision::HandOver
        ));
        assert!(matches!(
            decide(data, 8 * 1024, Some(layout.body)),
            Decision::Serve(_)
        ));
    }
    let after = &data[layout.len..];
    let mut pending = bytes::BytesMut::from(after);
    let len = usize::try_from(layout.body).unwrap_or(usize::MAX);
    match take_body(&mut pending, &layout) {
        None => assert!(after.len() < len, "a whole body not taken"),
        Some(Inbound::Empty) => {
            assert_eq!(len, 0);
            assert_eq!(&pending[..], after);
        }
        Some(Inbound::Full(body)) => {
            assert_eq!(&body[..], &after[..len], "the body is not its bytes");
            assert_eq!(&pending[..], &after[len..], "bytes after the body lost");
        }
        Some(_) => panic!("a body of another kind"),
    }
    let mut facts = crate::proxy::headers::HeadFacts::default();
    let Some(req) = request(&head, &layout, false, &mut facts) else {
        return;
    };
    // The size hint changes nothing but the map's room.
    let mut again_facts = crate::proxy::headers::HeadFacts::default();
    let roomy = request(&head, &layout, true, &mut again_facts).expect("converted once");
    assert_eq!((roomy.headers(), &again_facts), (req.headers(), &facts));
    // What the fast path noted is what a look at the map finds.
    assert_eq!(facts, crate::proxy::headers::HeadFacts::of(req.headers()));
    assert_eq!(Some(req.method().as_str()), again.method);
    assert_ne!(req.method(), http::Method::CONNECT);
    assert_eq!(req.headers().len(), again.headers.len());
    for h in again.headers.iter() {
        for framing in ["transfer-encoding", "upgrade", "expect"] {
            assert!(
                !h.name.eq_ignore_ascii_case(framing),
                "served with {framing}"
            );
        }
        assert!(
            req.headers()
                .get_all(h.name)
                .iter()
                .any(|v| v.as_bytes() == h.value),
            "field {} lost its value",
            h.name
        );
    }
    let target = again.path.unwrap_or_default();
    assert_eq!(
        req.uri(),
        &http::Uri::try_from(target).ok().unwrap_or_default()
    );
}

/// The guard's chunked-body tracking, after a valid chunked head.
pub fn chunked(data: &[u8]) {
    guard(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        data,
    );
}

/// One `name: value` line as a header; `None` when it is not one.
fn header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|b| *b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

/// Header lines (`name: value`) through the request header rules.
pub fn header_rules(data: &[u8]) {
    use crate::proxy::headers as hdr;
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Some((name, value)) = header_line(line) {
            h.append(name, value);
        }
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
        true,
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

/// What a container engine sends discovery: the bytes as an event stream (in
/// pieces, as they come off the network), then as one JSON answer read as
/// `/version`, as the container list, and as inspect answers (an object, or a
/// list of them, which are built together so their routes meet).
pub fn docker_engine(data: &[u8]) {
    use crate::discovery::build::{self, Tracked};
    use crate::discovery::container::Container;
    use crate::discovery::engine;
    let mut stream = bytes::BytesMut::new();
    for piece in data.chunks(61) {
        stream.extend_from_slice(piece);
        while let Some(event) = engine::take_event(&mut stream) {
            if let Ok(e) = event {
                let _ = engine::event_target(&e);
            }
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = engine::negotiated_version(&v);
    let _ = engine::container_ids(&v);
    let answers = match v.as_array() {
        Some(list) => list.iter().collect(),
        None => vec![&v],
    };
    // Whether each container got a stop signal: both ways from one input bit.
    let draining = data.len() % 2 == 1;
    let tracked: std::collections::BTreeMap<String, Tracked> = answers
        .into_iter()
        .filter_map(Container::from_inspect)
        .map(|c| {
            let stopping = draining.then(|| c.started_at.clone());
            let t = Tracked {
                container: c,
                stopping,
            };
            (t.container.id.clone(), t)
        })
        .collect();
    if tracked.is_empty() {
        return;
    }
    let defaults = crate::config::DockerConfig::default();
    let strict = crate::config::DockerConfig {
        exposed_by_default: false,
        network: Some("front".into()),
        respect_healthcheck: false,
        ..crate::config::DockerConfig::default()
    };
    for (cfg, own) in [(&defaults, &[][..]), (&strict, &["back".to_string()][..])] {
        let built = build::build(cfg, &tracked, own);
        let _ = built.layer.json();
        for c in &built.containers {
            let _ = c.json();
        }
    }
}

/// Cache policy on a request and its response, written as text: a first line
/// `METHOD STATUS` (default `GET 200`), the request's header lines, a blank
/// line, the response's header lines, and optionally a blank line and the
/// header lines of a 304 that revalidates it.
pub fn cache_control(data: &[u8]) {
    use crate::cache::policy;
    use http::{Method, StatusCode, header};
    use std::time::{Duration, SystemTime};
    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next();
    let (method, status, first) = match first.and_then(method_and_status) {
        Some((m, s)) => (m, s, None),
        None => (Method::GET, StatusCode::OK, first),
    };
    let mut heads = [HeaderMap::new(), HeaderMap::new(), HeaderMap::new()];
    let mut at = 0;
    for line in first.into_iter().chain(lines) {
        if line.trim_ascii().is_empty() {
            at = (at + 1).min(heads.len() - 1);
            continue;
        }
        if let Some((name, value)) = header_line(line) {
            heads[at].append(name, value);
        }
    }
    let [req_h, resp_h, fresh_h] = heads;
    // Fixed times: the policy never reads a clock.
    let request_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let response_time = request_time + Duration::from_secs(1);
    let req = policy::request_directives(&req_h);
    let d = policy::response_directives(&resp_h);
    for ttl in [Duration::ZERO, Duration::from_secs(60)] {
        let _ = policy::not_storable(&method, status, &req_h, &req, &resp_h, &d, ttl);
        let lifetime = policy::freshness_lifetime(status, &resp_h, &d, response_time, ttl);
        let initial = policy::initial_age(&resp_h, request_time, response_time);
        let f = policy::Freshness::of(&d, lifetime);
        for held in [0, lifetime, lifetime.saturating_add(1), u64::MAX / 2] {
            let age = initial.saturating_add(held);
            let _ = policy::reuse(age, &f, &req, 5, 3600);
            let _ = policy::usable_on_error(age, &f, 5);
        }
    }
    let mut stored = resp_h.clone();
    policy::strip_for_storage(&mut stored, &d);
    for name in policy::vary_names(&resp_h).unwrap_or_default() {
        let _ = policy::vary_value(&req_h, &name);
    }
    let _ = policy::is_conditional(&req_h) && policy::not_modified(&req_h, &stored);
    let _ = policy::validators(&stored);
    let updated = policy::update_headers(&stored, &fresh_h);
    let _ = policy::response_directives(&updated);
    let _ = policy::invalidates(&method, status);
    let host = req_h.get(header::HOST).and_then(|h| h.to_str().ok());
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(v) = resp_h.get(name) {
            let _ = policy::same_origin_target(v, host);
        }
    }
    let _ = policy::tags(&resp_h);
}

/// `GET 200`: the first line of a `cache_control` input, when it is one.
fn method_and_status(line: &[u8]) -> Option<(http::Method, http::StatusCode)> {
    let text = std::str::from_utf8(line).ok()?;
    let (m, s) = text.trim().split_once(' ')?;
    let method = http::Method::from_bytes(m.as_bytes()).ok()?;
    Some((method, s.trim().parse().ok()?))
}

/// A backend's answer to the HTTP/1.1 client: its head parsed and its body's
/// framing decided; then the same bytes as a chunked body, decoded whole and
/// split in two at a point taken from the first byte. Both decode the same,
/// never to more bytes than came in.
pub fn h1_response(data: &[u8]) {
    use crate::upstream::h1::response;
    let mut buf = bytes::BytesMut::from(data);
    let mapped = response::parse(&mut buf, &mut response::Scratch::default(), false);
    // The raw form refuses and frames exactly what the map form does, and
    // holds the same fields.
    let mut raw_buf = bytes::BytesMut::from(data);
    let raw = response::parse(&mut raw_buf, &mut response::Scratch::default(), true);
    assert_eq!(buf, raw_buf, "the two forms took different bytes");
    match (&mapped, &raw) {
        (Ok(Some(m)), Ok(Some(r))) => {
            let fields = r.raw.as_deref().map(response::RawHead::to_map);
            assert_eq!(Some(&m.headers), fields.as_ref(), "the raw fields differ");
            assert_eq!((m.status, m.version), (r.status, r.version));
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        _ => panic!("one form parsed, the other did not"),
    }
    if let Ok(Some(head)) = mapped {
        assert!(buf.len() < data.len(), "a parsed head took no bytes");
        for head_request in [false, true] {
            let m = response::framing(&head, head_request);
            let r = raw
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .map(|r| response::framing(r, head_request));
            assert_eq!(format!("{m:?}"), format!("{:?}", r.expect("parsed")));
        }
    }
    let Some((&at, body)) = data.split_first() else {
        return;
    };
    let whole = decode_chunked(&[body]);
    if let Ok((out, _)) = &whole {
        assert!(out.len() <= body.len(), "decoded more than came in");
    }
    let (a, b) = body.split_at(usize::from(at) * body.len() / 255);
    assert_eq!(whole, decode_chunked(&[a, b]), "split at {}", a.len());
}

/// The body of a chunked answer arriving in `pieces`, and whether it ended.
fn decode_chunked(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
    use crate::upstream::h1::chunked::{Decoded, Decoder};
    let mut decoder = Decoder::new();
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::NeedMore => break,
                Decoded::Done => return Ok((out, true)),
            }
        }
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    /// Bytes that matter to an HTTP/1 parser: line ends, separators, a sign,
    /// a digit, control bytes, obs-text and a letter.
    const TELLING: [u8; 12] = [
        b'\n', b'\r', b' ', b'\t', b':', b',', b'+', b'9', 0, 0x7f, 0xff, b'A',
    ];

    /// `target` on each seed, on every change of one of its bytes to one of
    /// [`TELLING`], and on every prefix.
    fn on_changed_seeds(seeds: &[&[u8]], target: fn(&[u8])) {
        for seed in seeds {
            target(seed);
            for i in 0..seed.len() {
                for b in TELLING {
                    let mut changed = seed.to_vec();
                    changed[i] = b;
                    target(&changed);
                    target(&changed[..i]);
                }
            }
        }
    }

    /// The fast path's property on the seed heads and on every one-byte change
    /// of them that touches framing.
    #[test]
    fn h1_request_holds_on_changed_seed_heads() {
        on_changed_seeds(
            &[
                b"GET /a?b=c HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nhello=world!GET / HTTP/1.1\r\n\r\n",
                b"PUT /j HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTE: trailers\r\n\r\n",
                b"\r\nGET http://b.example/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                b"HEAD / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nTE: trailers\r\n\r\n",
            ],
            super::h1_request,
        );
    }

    /// Each byte of a few answer heads replaced by one that matters to a
    /// parser, and each prefix: both forms agree every time.
    #[test]
    fn h1_response_holds_on_changed_heads() {
        on_changed_seeds(
            &[
                b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\nConnection: X-A, keep-alive\r\nX-A: 1\r\n\r\nok",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\nx-a: 1\r\nX-A: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\nSet-Cookie: a=1\r\n\r\n",
            ],
            super::h1_response,
        );
    }
}
