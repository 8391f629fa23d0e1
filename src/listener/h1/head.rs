//! Reading a request head in place and deciding whether the fast path serves
//! it: only the plainest requests qualify (see the module above for why
//! everything else goes to hyper).

use crate::proxy::headers::{self as hdr, HeadFacts};
use crate::upstream::body::{Inbound, REPLAY_LIMIT};
use crate::upstream::h1::response::decimal;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use std::mem::MaybeUninit;
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
    pub(crate) fields: Vec<FieldPlace>,
    /// The client asked to close after this request (`Connection: close`).
    pub(crate) close: bool,
    /// The client accepts trailers (`TE: trailers`).
    pub(crate) trailers: bool,
    /// The body's length, from its one `Content-Length` (0: no body).
    pub(crate) body: u64,
}

/// Where a field's name and value lie in its head.
pub(crate) type FieldPlace = (Range<usize>, Range<usize>);

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
    decide_into(buf, max_head, max_body, &mut Vec::new())
}

/// [`decide`], the fields' places written into `places` (emptied first),
/// which a served head's layout takes; a connection gives them back after
/// the request is built, so that their room is allocated once, not per head.
pub(crate) fn decide_into(
    buf: &[u8],
    max_head: usize,
    max_body: Option<u64>,
    places: &mut Vec<FieldPlace>,
) -> Decision {
    // Left uninitialized: httparse writes the fields it finds and hands back
    // only those (an array of 100 empty fields cost ~300 instructions a
    // request to fill, for a head of one or two fields).
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        // The guard's limits (431, 414) are hyper's side: anything near them goes there.
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Decision::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Decision::HandOver,
    };
    if len > max_head || req.version != Some(1) {
        return Decision::HandOver;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Decision::HandOver;
    };
    let crlf = lines_end_in_crlf(&buf[..len], method, req.headers);
    // The tests and the fuzz targets search for a bare LF as well.
    debug_assert_eq!(crlf, !has_bare_lf(&buf[..len]));
    if method == "CONNECT" || !crlf {
        return Decision::HandOver;
    }
    places.clear();
    places.reserve(req.headers.len());
    let (mut close, mut trailers, mut body) = (false, false, 0);
    let body_bound = max_body.map_or(MAX_BUFFERED_BODY, |m| m.min(MAX_BUFFERED_BODY));
    let mut lengths = 0;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // One look per field: the names asked about differ in length.
        match Framing::of(name) {
            Framing::ContentLength => {
                // One plain length within the bound; a repeated, odd or
                // larger one is hyper's (and the guard's) to answer as before.
                lengths += 1;
                match decimal(h.value) {
                    Some(n) if lengths == 1 && n <= body_bound => body = n,
                    _ => return Decision::HandOver,
                }
            }
            // Chunked framing, upgrades and expectations are hyper's
            // business, with the guard.
            Framing::HyperOnly => return Decision::HandOver,
            Framing::Connection => close |= has_token(h.value, b"close"),
            Framing::Te => trailers |= has_token(h.value, b"trailers"),
            Framing::Other => {}
        }
        places.push((range_of(buf, name), range_of(buf, h.value)));
    }
    Decision::Serve(Layout {
        len,
        method: range_of(buf, method.as_bytes()),
        target: range_of(buf, target.as_bytes()),
        fields: std::mem::take(places),
        close,
        trailers,
        body,
    })
}

/// What a field's name means to [`decide`].
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    ContentLength,
    /// `Transfer-Encoding`, `Upgrade`, `Expect`.
    HyperOnly,
    Connection,
    Te,
    Other,
}

impl Framing {
    fn of(name: &[u8]) -> Framing {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            14 if is(b"content-length") => Framing::ContentLength,
            17 if is(b"transfer-encoding") => Framing::HyperOnly,
            7 if is(b"upgrade") => Framing::HyperOnly,
            6 if is(b"expect") => Framing::HyperOnly,
            10 if is(b"connection") => Framing::Connection,
            2 if is(b"te") => Framing::Te,
            _ => Framing::Other,
        }
    }
}

/// The request the pipeline gets, its parts shared with `head` (the frozen
/// bytes `layout` describes), without a body; see [`fill`]. `None` when a
/// part does not convert.
pub(crate) fn request(
    head: &Bytes,
    layout: &Layout,
    inserts: bool,
    facts: &mut HeadFacts,
) -> Option<Request<Inbound>> {
    let mut parts = blank_parts();
    fill(head, layout, inserts, facts, &mut parts)?;
    Some(Request::from_parts(parts, Inbound::Empty))
}

/// The parts of a request not filled yet, as `Request::new` makes them.
pub(crate) fn blank_parts() -> Parts {
    Request::new(()).into_parts().0
}

/// Fills `parts` (fresh from [`blank_parts`]) with the request head, its
/// parts shared with `head` (the frozen bytes `layout` describes); the facts
/// of its head are noted into `facts` on the way (places of the caller's,
/// in the box the request is served from: a request returned was copied on
/// its way there). `inserts`: the pipeline is expected to insert the
/// forwarding fields into the map (a trusted peer's). `None` when a part
/// does not convert (`parts` then holds what did); hyper then gets the
/// connection and answers as it does today.
pub(crate) fn fill(
    head: &Bytes,
    layout: &Layout,
    inserts: bool,
    facts: &mut HeadFacts,
    parts: &mut Parts,
) -> Option<()> {
    parts.method = Method::from_bytes(&head[layout.method.clone()]).ok()?;
    let target = Uri::from_maybe_shared(head.slice(layout.target.clone())).ok()?;
    // The blank target is the static "/", which owns no memory: written
    // over, not dropped (~20 instructions for nothing).
    debug_assert_eq!(parts.uri, "/", "fill is given blank parts");
    std::mem::forget(std::mem::replace(&mut parts.uri, target));
    parts.version = Version::HTTP_11;
    // A bodiless request's head is usually encoded for the backends with the
    // proxy's fields written after its own, not inserted into this map: the
    // map is made for its own fields. A request with a body, or from a
    // trusted peer, gets room for the forwarding fields the pipeline
    // inserts, so they cause no rehash.
    let room = if layout.body == 0 && !inserts { 0 } else { 8 };
    // The fields go into the request's own map, given its room here: a map
    // made apart and moved in left the empty one `Request::new` made to be
    // dropped (~50 instructions for nothing).
    let headers = &mut parts.headers;
    headers.try_reserve(layout.fields.len() + room).ok()?;
    for (name, value) in &layout.fields {
        let name = &head[name.clone()];
        // Every request names its host: that name is known at once.
        let name = match name.eq_ignore_ascii_case(b"host") {
            true => header::HOST,
            false => match common_name(name) {
                Some(known) => {
                    // The tests and the fuzz targets make each name both ways.
                    debug_assert_eq!(Some(&known), HeaderName::from_bytes(name).ok().as_ref());
                    known
                }
                None => HeaderName::from_bytes(name).ok()?,
            },
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
    Some(())
}

static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
static SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
static SEC_FETCH_USER: HeaderName = HeaderName::from_static("sec-fetch-user");
static SEC_CH_UA: HeaderName = HeaderName::from_static("sec-ch-ua");
static SEC_CH_UA_MOBILE: HeaderName = HeaderName::from_static("sec-ch-ua-mobile");
static SEC_CH_UA_PLATFORM: HeaderName = HeaderName::from_static("sec-ch-ua-platform");
static X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static PRIORITY: HeaderName = HeaderName::from_static("priority");

/// The longest name [`common_name`] knows (`upgrade-insecure-requests`).
const LONGEST_COMMON_NAME: usize = 25;

/// The name of a field browsers, API clients and proxies commonly send, made
/// without `HeaderName::from_bytes` (which lowers the name through a table,
/// then looks for it among all the standard names, and copies a name outside
/// them into an allocation of its own); `None` for any other name, which
/// `from_bytes` then makes. The same `HeaderName` either way: a standard
/// name's constant, or a non-standard one's lowercase spelling.
pub(crate) fn common_name(name: &[u8]) -> Option<HeaderName> {
    if name.len() > LONGEST_COMMON_NAME {
        return None;
    }
    let mut buf = [0u8; LONGEST_COMMON_NAME];
    let lower = &mut buf[..name.len()];
    for (l, b) in lower.iter_mut().zip(name) {
        *l = b.to_ascii_lowercase();
    }
    let lower: &[u8] = lower;
    // By length first: each arm then compares against a few names.
    Some(match lower.len() {
        2 if lower == b"te" => header::TE,
        3 if lower == b"via" => header::VIA,
        3 if lower == b"dnt" => header::DNT,
        4 if lower == b"host" => header::HOST,
        5 if lower == b"range" => header::RANGE,
        6 => match lower {
            b"accept" => header::ACCEPT,
            b"cookie" => header::COOKIE,
            b"origin" => header::ORIGIN,
            b"pragma" => header::PRAGMA,
            _ => return None,
        },
        7 if lower == b"referer" => header::REFERER,
        8 => match lower {
            b"if-match" => header::IF_MATCH,
            b"if-range" => header::IF_RANGE,
            b"priority" => PRIORITY.clone(),
            _ => return None,
        },
        9 => match lower {
            b"forwarded" => header::FORWARDED,
            b"sec-ch-ua" => SEC_CH_UA.clone(),
            b"x-real-ip" => X_REAL_IP.clone(),
            _ => return None,
        },
        10 => match lower {
            b"user-agent" => header::USER_AGENT,
            b"connection" => header::CONNECTION,
            b"keep-alive" => hdr::KEEP_ALIVE.clone(),
            _ => return None,
        },
        11 if lower == b"traceparent" => hdr::TRACEPARENT.clone(),
        12 => match lower {
            b"content-type" => header::CONTENT_TYPE,
            b"x-request-id" => hdr::X_REQUEST_ID.clone(),
            _ => return None,
        },
        13 => match lower {
            b"authorization" => header::AUTHORIZATION,
            b"cache-control" => header::CACHE_CONTROL,
            b"if-none-match" => header::IF_NONE_MATCH,
            _ => return None,
        },
        14 => match lower {
            b"content-length" => header::CONTENT_LENGTH,
            b"accept-charset" => header::ACCEPT_CHARSET,
            b"sec-fetch-site" => SEC_FETCH_SITE.clone(),
            b"sec-fetch-mode" => SEC_FETCH_MODE.clone(),
            b"sec-fetch-dest" => SEC_FETCH_DEST.clone(),
            b"sec-fetch-user" => SEC_FETCH_USER.clone(),
            _ => return None,
        },
        15 => match lower {
            b"accept-encoding" => header::ACCEPT_ENCODING,
            b"accept-language" => header::ACCEPT_LANGUAGE,
            b"x-forwarded-for" => hdr::X_FORWARDED_FOR.clone(),
            _ => return None,
        },
        16 => match lower {
            b"content-encoding" => header::CONTENT_ENCODING,
            b"x-forwarded-host" => hdr::X_FORWARDED_HOST.clone(),
            b"sec-ch-ua-mobile" => SEC_CH_UA_MOBILE.clone(),
            b"x-requested-with" => X_REQUESTED_WITH.clone(),
            _ => return None,
        },
        17 => match lower {
            b"if-modified-since" => header::IF_MODIFIED_SINCE,
            b"x-forwarded-proto" => hdr::X_FORWARDED_PROTO.clone(),
            _ => return None,
        },
        18 if lower == b"sec-ch-ua-platform" => SEC_CH_UA_PLATFORM.clone(),
        19 if lower == b"if-unmodified-since" => header::IF_UNMODIFIED_SINCE,
        25 if lower == b"upgrade-insecure-requests" => header::UPGRADE_INSECURE_REQUESTS,
        _ => return None,
    })
}

/// Every name [`common_name`] knows, for the tests.
#[cfg(test)]
const COMMON_NAMES: &[&str] = &[
    "te",
    "via",
    "dnt",
    "host",
    "range",
    "accept",
    "cookie",
    "origin",
    "pragma",
    "referer",
    "if-match",
    "if-range",
    "priority",
    "forwarded",
    "sec-ch-ua",
    "x-real-ip",
    "user-agent",
    "connection",
    "keep-alive",
    "traceparent",
    "content-type",
    "x-request-id",
    "authorization",
    "cache-control",
    "if-none-match",
    "content-length",
    "accept-charset",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "sec-fetch-user",
    "accept-encoding",
    "accept-language",
    "x-forwarded-for",
    "content-encoding",
    "x-forwarded-host",
    "sec-ch-ua-mobile",
    "x-requested-with",
    "if-modified-since",
    "x-forwarded-proto",
    "sec-ch-ua-platform",
    "if-unmodified-since",
    "upgrade-insecure-requests",
];

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
/// What [`lines_end_in_crlf`] is checked against (debug builds, tests).
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// Whether every line of a head httparse parsed ends in CRLF (a line ending
/// in LF alone is hyper's and the guard's to read). In such a head an LF
/// only ever ends a line (httparse takes none inside a method, target,
/// version, name or value), and the lines end where the next one starts:
/// the empty lines before the request line, then the one before each
/// field's name, then the last field's (or the request line's) and the
/// final empty line at the end. A look at those places, not a search of
/// every byte: a search cost ~40 instructions per LF found.
fn lines_end_in_crlf(head: &[u8], method: &str, fields: &[httparse::Header<'_>]) -> bool {
    let start = range_of(head, method.as_bytes()).start;
    let leading = head.get(..start).unwrap_or_default();
    leading.len() % 2 == 0
        && leading.chunks_exact(2).all(|l| l == b"\r\n")
        && head.ends_with(b"\r\n\r\n")
        && fields.iter().all(|f| {
            let at = range_of(head, f.name.as_bytes()).start;
            at >= 2 && head.get(at - 2..at) == Some(&b"\r\n"[..])
        })
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

    /// The request's own map gets the room: its fields without a body, eight
    /// more for the forwarding fields with one or from a trusted peer; a
    /// head without fields leaves it unallocated.
    #[test]
    fn the_requests_map_has_its_room() {
        let get = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\n\r\n";
        let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok";
        let room = |head: &[u8], inserts: bool| {
            let layout = serve(head);
            let head = Bytes::copy_from_slice(&head[..layout.len]);
            let mut facts = HeadFacts::default();
            let req = request(&head, &layout, inserts, &mut facts).expect("converts");
            (req.headers().len(), req.headers().capacity())
        };
        let (fields, plain) = room(get, false);
        assert_eq!(fields, 3);
        assert!((3..3 + 8).contains(&plain), "{plain}");
        assert!(room(get, true).1 >= 3 + 8);
        let (fields, with_body) = room(post, false);
        assert_eq!(fields, 2);
        assert!(with_body >= 2 + 8);
        assert_eq!(room(b"GET / HTTP/1.1\r\n\r\n", false), (0, 0));
    }

    /// The parts the pipeline borrows are filled where they lie, as the
    /// request made by value is; a target `Uri` refuses (httparse took it)
    /// leaves them unfilled and the connection goes to hyper.
    #[test]
    fn the_parts_are_filled_in_place() {
        let raw = b"PUT /a?b HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nContent-Length: 2\r\n\r\n";
        let layout = serve(raw);
        let head = Bytes::copy_from_slice(&raw[..layout.len]);
        let mut facts = HeadFacts::default();
        let mut parts = blank_parts();
        assert!(fill(&head, &layout, false, &mut facts, &mut parts).is_some());
        let (req, by_value) = built(&head, &layout);
        assert_eq!(facts, by_value);
        assert_eq!(
            (&parts.method, &parts.uri, parts.version),
            (req.method(), req.uri(), req.version())
        );
        assert_eq!(&parts.headers, req.headers());
        assert_eq!(parts.headers.capacity(), req.headers().capacity());
        let raw = b"GET /a<b HTTP/1.1\r\nHost: a\r\n\r\n";
        let layout = serve(raw);
        let head = Bytes::copy_from_slice(&raw[..layout.len]);
        let mut parts = blank_parts();
        assert!(fill(&head, &layout, false, &mut HeadFacts::default(), &mut parts).is_none());
        assert!(parts.headers.is_empty());
    }

    /// The places' room a connection keeps is what a served head's layout
    /// takes, emptied of the last head's; a head not served leaves it there.
    #[test]
    fn the_places_room_is_used_again() {
        let mut places = Vec::with_capacity(8);
        places.push((0..1, 2..3));
        let room = places.as_ptr();
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n";
        let Decision::Serve(layout) = decide_into(head, 1024, None, &mut places) else {
            panic!("not served");
        };
        assert_eq!(layout.fields.as_ptr(), room);
        assert_eq!(layout.fields, [(16..20, 22..23), (25..28, 30..31)]);
        places = layout.fields;
        let partial = b"GET / HTTP/1.1\r\nHost: a\r\n";
        assert!(matches!(
            decide_into(partial, 1024, None, &mut places),
            Decision::Partial
        ));
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            decide_into(chunked, 1024, None, &mut places),
            Decision::HandOver
        ));
        assert_eq!(places.as_ptr(), room);
        assert!(places.capacity() >= 8);
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
    fn common_names_are_what_from_bytes_makes() {
        for name in COMMON_NAMES {
            let upper = name.to_ascii_uppercase();
            let mixed: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            for spelling in [name.to_string(), upper, mixed] {
                let want = HeaderName::from_bytes(spelling.as_bytes()).unwrap();
                // `HeaderName`'s equality tells a standard name from the same
                // spelling outside the standard set.
                assert_eq!(common_name(spelling.as_bytes()), Some(want), "{spelling}");
            }
            // A name one byte off, or a byte longer or shorter, is not known.
            let mut off = name.as_bytes().to_vec();
            let last = off.len() - 1;
            off[last] = if off[last] == b'x' { b'y' } else { b'x' };
            assert_eq!(common_name(&off), None, "{name}");
            // A shorter one is either not known or known as itself.
            let shorter = &name.as_bytes()[..last];
            if let Some(known) = common_name(shorter) {
                assert_eq!(known, HeaderName::from_bytes(shorter).unwrap());
            }
            assert_eq!(common_name(format!("{name}s").as_bytes()), None, "{name}");
        }
        for other in [
            "",
            "x",
            "x-other",
            "accept_encoding",
            "hostt",
            "content-lengths",
        ] {
            assert_eq!(common_name(other.as_bytes()), None, "{other}");
        }
        assert_eq!(common_name(&[b'a'; 200]), None);
        assert!(COMMON_NAMES.iter().all(|n| n.len() <= LONGEST_COMMON_NAME));
    }

    #[test]
    fn framing_names_are_told_apart_in_any_case() {
        for (name, want) in [
            ("content-length", Framing::ContentLength),
            ("Content-Length", Framing::ContentLength),
            ("TRANSFER-ENCODING", Framing::HyperOnly),
            ("Upgrade", Framing::HyperOnly),
            ("expect", Framing::HyperOnly),
            ("Connection", Framing::Connection),
            ("tE", Framing::Te),
            ("content-lengtx", Framing::Other),
            ("expects", Framing::Other),
            ("t", Framing::Other),
            ("keep-alive", Framing::Other),
        ] {
            assert_eq!(Framing::of(name.as_bytes()), want, "{name}");
        }
        // Every field's meaning counts, wherever it stands in the head.
        let layout = serve(
            b"GET / HTTP/1.1\r\nTE: trailers\r\nHost: a\r\nconnection: close\r\nTe: x\r\n\r\n",
        );
        assert!(layout.close && layout.trailers);
        assert_eq!(layout.fields.len(), 4);
    }

    /// The look at the line ends refuses exactly the heads a search for a
    /// bare LF finds one in: every mix of CRLF and LF line ends, with
    /// leading empty lines, no to three fields, and trailing whitespace.
    #[test]
    fn line_ends_are_checked_as_a_search_would() {
        let lines: [&[u8]; 4] = [b"GET / HTTP/1.1", b"Host: a", b"X: 1 \t", b"Y:"];
        for fields in 0..lines.len() {
            let parts = &lines[..=fields];
            // Two leading empty lines at most, each line, the final empty one.
            let ends = 2 + parts.len() + 1;
            for mask in 0u32..(1 << ends) {
                for leading in 0..=2 {
                    let end =
                        |i: usize| -> &[u8] { if mask & (1 << i) == 0 { b"\r\n" } else { b"\n" } };
                    let mut head = Vec::new();
                    for i in 0..leading {
                        head.extend_from_slice(end(i));
                    }
                    for (i, line) in parts.iter().enumerate() {
                        head.extend_from_slice(line);
                        head.extend_from_slice(end(2 + i));
                    }
                    head.extend_from_slice(end(ends - 1));
                    let served = matches!(decide(&head, 1024, None), Decision::Serve(_));
                    assert_eq!(
                        served,
                        !has_bare_lf(&head),
                        "{:?}",
                        String::from_utf8_lossy(&head)
                    );
                }
            }
        }
    }

    #[test]
    fn te_trailers_is_noticed() {
        let layout = serve(b"GET / HTTP/1.1\r\nHost: a\r\nTE: gzip, trailers\r\n\r\n");
        assert!(layout.trailers && !layout.close);
    }
}
