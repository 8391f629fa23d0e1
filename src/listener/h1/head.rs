//! Reading a request head in place and deciding whether the fast path serves
//! it: only the plainest requests qualify (see the module above for why
//! everything else goes to hyper).

use crate::proxy::headers::HeadFacts;
use crate::upstream::body::{Inbound, REPLAY_LIMIT};
use crate::upstream::h1::response::decimal;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use std::ops::Range;

/// hyper's own bound on the number of header fields; more goes to hyper,
/// which answers as it does today.
pub(crate) const MAX_HEADERS: usize = 100;

/// The longest body the fast path reads whole before the request goes on.
/// Form posts and JSON API calls fit; the bound is the one under which the
/// pipeline already keeps a body to send it again, so a connection holds no
/// more memory for a body here than a retried request did. Longer bodies
/// stream through hyper.
pub(crate) const MAX_BUFFERED_BODY: u64 = REPLAY_LIMIT as u64;

/// Where the parts of a complete head lie in the buffer it was read into.
pub(crate) struct Layout {
    /// Bytes the head takes, leading empty lines and the final empty line included.
    pub(crate) len: usize,
    pub(crate) method: Range<usize>,
    pub(crate) target: Range<usize>,
    /// Name and value of each field, in order.
    pub(crate) fields: Vec<(Range<usize>, Range<usize>)>,
    /// The client asked to close after this request (`Connection: close`).
    pub(crate) close: bool,
    /// The client accepts trailers (`TE: trailers`).
    pub(crate) trailers: bool,
    /// The body's length, from its one `Content-Length` (0: no body).
    pub(crate) body: u64,
}

/// What to do with the bytes read so far.
pub(crate) enum Decision {
    /// The head is not complete yet and still within the limits.
    Partial,
    /// Not a request the fast path serves: hyper gets the connection.
    HandOver,
    /// A head the fast path serves.
    Serve(Layout),
}

/// Decides on the bytes read so far (`buf` starts at a request's first byte,
/// or at the empty lines before it). `max_head`: `limits.max_header_bytes`;
/// `max_body`: `limits.max_body_bytes`.
pub(crate) fn decide(buf: &[u8], max_head: usize, max_body: Option<u64>) -> Decision {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        // The guard's limits (431, 414) are hyper's side: anything near them goes there.
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Decision::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Decision::HandOver,
    };
    if len > max_head || req.version != Some(1) || has_bare_lf(&buf[..len]) {
        return Decision::HandOver;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Decision::HandOver;
    };
    if method == "CONNECT" {
        return Decision::HandOver;
    }
    let mut layout = Layout {
        len,
        method: range_of(buf, method.as_bytes()),
        target: range_of(buf, target.as_bytes()),
        fields: Vec::with_capacity(req.headers.len()),
        close: false,
        trailers: false,
        body: 0,
    };
    let body_bound = max_body.map_or(MAX_BUFFERED_BODY, |m| m.min(MAX_BUFFERED_BODY));
    let mut lengths = 0;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // One plain length within the bound; a repeated, odd or larger
            // one is hyper's (and the guard's) to answer as before.
            lengths += 1;
            match decimal(h.value) {
                Some(n) if lengths == 1 && n <= body_bound => layout.body = n,
                _ => return Decision::HandOver,
            }
        }
        // Chunked framing, upgrades and expectations are hyper's business,
        // with the guard.
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Decision::HandOver;
        }
        layout
            .fields
            .push((range_of(buf, name), range_of(buf, h.value)));
    }
    for (name, value) in req.headers.iter().map(|h| (h.name.as_bytes(), h.value)) {
        if name.eq_ignore_ascii_case(b"connection") && has_token(value, b"close") {
            layout.close = true;
        } else if name.eq_ignore_ascii_case(b"te") && has_token(value, b"trailers") {
            layout.trailers = true;
        }
    }
    Decision::Serve(layout)
}

/// The request the pipeline gets, its parts shared with `head` (the frozen
/// bytes `layout` describes); the facts of its head are noted into `facts`
/// on the way (a place of the caller's: returned with the request, they
/// cost it a copy). `inserts`: the pipeline is expected to insert the
/// forwarding fields into the map (a trusted peer's). `None` when a part
/// does not convert; hyper then gets the connection and answers as it does
/// today.
pub(crate) fn request(
    head: &Bytes,
    layout: &Layout,
    inserts: bool,
    facts: &mut HeadFacts,
) -> Option<Request<Inbound>> {
    let method = Method::from_bytes(&head[layout.method.clone()]).ok()?;
    let uri = Uri::from_maybe_shared(head.slice(layout.target.clone())).ok()?;
    // A bodiless request's head is usually encoded for the backends with the
    // proxy's fields written after its own, not inserted into this map: the
    // map is made for its own fields. A request with a body, or from a
    // trusted peer, gets room for the forwarding fields the pipeline
    // inserts, so they cause no rehash.
    let room = if layout.body == 0 && !inserts { 0 } else { 8 };
    let mut headers = HeaderMap::with_capacity(layout.fields.len() + room);
    for (name, value) in &layout.fields {
        let name = &head[name.clone()];
        // Every request names its host: that name is known without the walk
        // of `from_bytes` through its table of names.
        let name = match name.eq_ignore_ascii_case(b"host") {
            true => header::HOST,
            false => HeaderName::from_bytes(name).ok()?,
        };
        let value = head.slice(value.clone());
        let value = if value.is_ascii() {
            // SAFETY: ASCII is UTF-8, which is all the function asks for.
            // httparse took every byte of a field value from HTAB, SP and
            // VCHAR here (obs-text aside), a subset of what `HeaderValue`
            // accepts (any byte but DEL and the controls other than HTAB):
            // the value is not checked a second time (debug builds still do).
            unsafe { HeaderValue::from_maybe_shared_unchecked(value) }
        } else {
            HeaderValue::from_maybe_shared(value).ok()?
        };
        facts.note(&name, &value);
        headers.append(name, value);
    }
    let mut req = Request::new(Inbound::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// The request's body, cut from the bytes read after its head: `Empty`
/// without one, else exactly `layout.body` bytes, whole; `None` while fewer
/// have arrived. What follows the body stays in `pending`.
pub(crate) fn take_body(pending: &mut BytesMut, layout: &Layout) -> Option<Inbound> {
    let len = usize::try_from(layout.body).ok()?;
    if len == 0 {
        return Some(Inbound::Empty);
    }
    (pending.len() >= len).then(|| Inbound::Full(pending.split_to(len).freeze()))
}

/// `part`'s place in `buf` (`part` is a slice of `buf`).
fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

/// A line ending in LF alone: hyper and the guard read those, so they decide.
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// `value` is a comma-separated list holding `token` (any case).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(head: &[u8]) -> Layout {
        match decide(head, 1024, None) {
            Decision::Serve(l) => l,
            Decision::Partial => panic!("partial: {:?}", String::from_utf8_lossy(head)),
            Decision::HandOver => panic!("handed over: {:?}", String::from_utf8_lossy(head)),
        }
    }

    /// The request and the facts noted while it was built.
    fn built(head: &Bytes, layout: &Layout) -> (Request<Inbound>, HeadFacts) {
        let mut facts = HeadFacts::default();
        let req = request(head, layout, false, &mut facts).expect("converts");
        (req, facts)
    }

    fn handed_over(head: &[u8]) -> bool {
        matches!(decide(head, 1024, None), Decision::HandOver)
    }

    #[test]
    fn a_plain_get_is_served_and_shares_the_head() {
        let head = Bytes::from_static(
            b"\r\nGET /a?b=c HTTP/1.1\r\nHost: example.test\r\nX-Two: 1\r\nx-two: 2\r\nConnection: keep-alive, Close\r\n\r\nGET /next",
        );
        let layout = serve(&head);
        assert_eq!(&head[layout.len..], b"GET /next");
        assert!(layout.close && !layout.trailers);
        let mut facts = HeadFacts::default();
        let req = request(&head.slice(..layout.len), &layout, false, &mut facts).expect("converts");
        assert_eq!(facts, HeadFacts::of(req.headers()));
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "example.test");
        let two: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(two, ["1", "2"]);
    }

    #[test]
    fn partial_heads_wait_within_the_limit() {
        assert!(matches!(
            decide(b"GET / HTTP/1.1\r\nHost: a\r\n", 1024, None),
            Decision::Partial
        ));
        assert!(matches!(decide(b"", 1024, None), Decision::Partial));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000));
        assert!(handed_over(long.as_bytes()));
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(1000)
        );
        assert!(handed_over(big.as_bytes()));
    }

    #[test]
    fn anything_with_a_body_or_a_special_meaning_goes_to_hyper() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\n\r\n",
        ] {
            assert!(handed_over(head), "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn one_plain_length_is_served_and_its_body_taken_exactly() {
        let buf =
            b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
        let layout = serve(buf);
        assert_eq!(layout.body, 5);
        let mut pending = BytesMut::from(&buf[layout.len..]);
        let Some(Inbound::Full(body)) = take_body(&mut pending, &layout) else {
            panic!("no whole body");
        };
        assert_eq!(&body[..], b"hello");
        assert_eq!(&pending[..], b"GET / HTTP/1.1\r\n");
        // Not all of it yet: nothing is taken.
        let mut short = BytesMut::from(&b"hell"[..]);
        assert!(take_body(&mut short, &layout).is_none());
        assert_eq!(&short[..], b"hell");
        // A zero length is no body at all.
        let zero = serve(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 000\r\n\r\n");
        assert_eq!(zero.body, 0);
        let mut none = BytesMut::from(&b"GET"[..]);
        assert!(matches!(take_body(&mut none, &zero), Some(Inbound::Empty)));
        assert_eq!(&none[..], b"GET");
        // The bound itself is served.
        let at =
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {MAX_BUFFERED_BODY}\r\n\r\n");
        assert_eq!(serve(at.as_bytes()).body, MAX_BUFFERED_BODY);
        assert!(matches!(
            decide(
                b"POST / HTTP/1.1\r\nContent-Length: 7\r\n\r\n",
                1024,
                Some(7)
            ),
            Decision::Serve(_)
        ));
    }

    #[test]
    fn odd_repeated_or_large_lengths_go_to_hyper() {
        let over = MAX_BUFFERED_BODY + 1;
        for value in [
            "+5",
            "-5",
            "5 5",
            "5,5",
            "0x5",
            "5;",
            "\u{b5}",
            "18446744073709551616",
            &over.to_string(),
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n");
            assert!(handed_over(head.as_bytes()), "{value:?}");
        }
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
        ] {
            assert!(handed_over(head), "{:?}", String::from_utf8_lossy(head));
        }
        // Over `limits.max_body_bytes`: hyper's path answers 413.
        assert!(matches!(
            decide(
                b"POST / HTTP/1.1\r\nContent-Length: 8\r\n\r\n",
                1024,
                Some(7)
            ),
            Decision::HandOver
        ));
    }

    #[test]
    fn too_many_fields_go_to_hyper() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("x{i}: 1\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(matches!(decide(&head, 64 * 1024, None), Decision::HandOver));
    }

    #[test]
    fn the_facts_noted_are_those_of_the_map() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\nHOST: c\r\n\r\n",
            b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Request-Id: r1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host, x-hop\r\nX-Hop: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Authorization: Basic x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.0 edge\r\nTraceparent: 00\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=x\r\n\r\n",
            b"GET / HTTP/1.1\r\nUser-Agent: t/1\r\nReferer: http://r/\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-Other: \xe9t\xe9\r\n\r\nok",
        ] {
            let layout = serve(head);
            let (req, facts) = built(&Bytes::copy_from_slice(&head[..layout.len]), &layout);
            assert_eq!(
                facts,
                HeadFacts::of(req.headers()),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        let many = serve(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: x\r\n\r\n");
        let head =
            Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: x\r\n\r\n");
        let (_, facts) = built(&head, &many);
        assert_eq!(
            (facts.host.as_ref().map(|h| h.as_bytes()), facts.hosts),
            (Some(&b"a"[..]), 2)
        );
        assert!(facts.present.hop_by_hop && !facts.present.added && !facts.present.request_id);
        // Values outside ASCII are checked as before.
        let odd = serve(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x80\xff\r\n\r\n");
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x80\xff\r\n\r\n");
        let (req, _) = built(&head, &odd);
        assert_eq!(req.headers()["x"].as_bytes(), b"\x80\xff");
    }

    #[test]
    fn te_trailers_is_noticed() {
        let layout = serve(b"GET / HTTP/1.1\r\nHost: a\r\nTE: gzip, trailers\r\n\r\n");
        assert!(layout.trailers && !layout.close);
    }
}
