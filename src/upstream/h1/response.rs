//! An answer's head, parsed in place, and how its body is framed.

use super::Error;
use super::chunked::Decoder;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use std::mem::MaybeUninit;

/// Most header fields in an answer's head.
pub const MAX_HEADERS: usize = 100;
/// Largest answer head accepted (hyper's default read buffer limit).
pub const MAX_HEAD: usize = 8192 + 4096 * 100;

/// How an answer's body ends.
#[derive(Debug)]
pub enum Framing {
    /// This many bytes (none for HEAD, 204, 304).
    Length(u64),
    Chunked(Decoder),
    /// When the backend closes the connection.
    Close,
}

/// An answer's head; header values are slices of the head's bytes.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// Empty when the fields were left in their raw form (`raw`).
    pub headers: HeaderMap,
    /// The fields as they came, when the caller asked for them so.
    pub raw: Option<Box<RawHead>>,
}

/// Where a header field's name and value lie in the head (offsets fit: a
/// head is at most [`MAX_HEAD`] bytes), and, in a raw head, which name it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    name: (u32, u32),
    value: (u32, u32),
    pub known: Known,
}

impl Field {
    /// No field: an empty name, told apart from every real one.
    pub const NONE: Field = Field {
        name: (0, 0),
        value: (0, 0),
        known: Known::Other,
    };
}

/// The names the response rules and the writer look at, and common ones
/// whose lowercase spelling is then at hand; told once per field of a raw
/// head, so that every later look is a byte compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    Other,
    Connection,
    KeepAlive,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    ProxyAuthorization,
    ProxyConnection,
    Http2Settings,
    ContentLength,
    ProxyAuthenticate,
    ProxyAuthenticationInfo,
    XRequestId,
    SetCookie,
    Date,
    Server,
    ContentType,
    CacheControl,
    Etag,
    LastModified,
    Vary,
    Expires,
    Location,
    AcceptRanges,
    Age,
}

impl Known {
    #[cfg(test)]
    pub(crate) const ALL: [Known; 25] = [
        Known::Connection,
        Known::KeepAlive,
        Known::Te,
        Known::Trailer,
        Known::TransferEncoding,
        Known::Upgrade,
        Known::ProxyAuthorization,
        Known::ProxyConnection,
        Known::Http2Settings,
        Known::ContentLength,
        Known::ProxyAuthenticate,
        Known::ProxyAuthenticationInfo,
        Known::XRequestId,
        Known::SetCookie,
        Known::Date,
        Known::Server,
        Known::ContentType,
        Known::CacheControl,
        Known::Etag,
        Known::LastModified,
        Known::Vary,
        Known::Expires,
        Known::Location,
        Known::AcceptRanges,
        Known::Age,
    ];

    /// Which name `name` is, whatever its case.
    pub fn of(name: &[u8]) -> Known {
        // The length first: most names are then told by one comparison, of
        // the name lowercased a word at a time into a zeroed buffer.
        let candidates: &[Known] = match name.len() {
            2 => &[Known::Te],
            3 => &[Known::Age],
            4 => &[Known::Date, Known::Etag, Known::Vary],
            6 => &[Known::Server],
            7 => &[Known::Trailer, Known::Upgrade, Known::Expires],
            8 => &[Known::Location],
            10 => &[Known::Connection, Known::KeepAlive, Known::SetCookie],
            12 => &[Known::XRequestId, Known::ContentType],
            13 => &[
                Known::CacheControl,
                Known::LastModified,
                Known::AcceptRanges,
            ],
            14 => &[Known::ContentLength, Known::Http2Settings],
            16 => &[Known::ProxyConnection],
            17 => &[Known::TransferEncoding],
            18 => &[Known::ProxyAuthenticate],
            19 => &[Known::ProxyAuthorization],
            25 => &[Known::ProxyAuthenticationInfo],
            _ => return Known::Other,
        };
        let mut lower = [0u8; 32];
        lower[..name.len()].copy_from_slice(name);
        lowercase_words(&mut lower);
        candidates
            .iter()
            .copied()
            .find(|&k| lower == PADDED[k as usize])
            .unwrap_or(Known::Other)
    }

    /// Its bit in [`RawHead::names`].
    pub fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The name in lowercase (empty for `Other`).
    pub fn lowercase(self) -> &'static str {
        match self {
            Known::Other => "",
            Known::Connection => "connection",
            Known::KeepAlive => "keep-alive",
            Known::Te => "te",
            Known::Trailer => "trailer",
            Known::TransferEncoding => "transfer-encoding",
            Known::Upgrade => "upgrade",
            Known::ProxyAuthorization => "proxy-authorization",
            Known::ProxyConnection => "proxy-connection",
            Known::Http2Settings => "http2-settings",
            Known::ContentLength => "content-length",
            Known::ProxyAuthenticate => "proxy-authenticate",
            Known::ProxyAuthenticationInfo => "proxy-authentication-info",
            Known::XRequestId => "x-request-id",
            Known::SetCookie => "set-cookie",
            Known::Date => "date",
            Known::Server => "server",
            Known::ContentType => "content-type",
            Known::CacheControl => "cache-control",
            Known::Etag => "etag",
            Known::LastModified => "last-modified",
            Known::Vary => "vary",
            Known::Expires => "expires",
            Known::Location => "location",
            Known::AcceptRanges => "accept-ranges",
            Known::Age => "age",
        }
    }

    /// A hop-by-hop name (`proxy::headers::is_hop_by_hop`'s set).
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Known::Connection
                | Known::Te
                | Known::Trailer
                | Known::TransferEncoding
                | Known::Upgrade
                | Known::ProxyAuthorization
                | Known::KeepAlive
                | Known::ProxyConnection
                | Known::Http2Settings
        )
    }
}

/// One line of an answer's head as it goes to the client: a backend's field,
/// or one of the two fields the proxy adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Backend(Field),
    /// `x-request-id: ` [`RawHead::request_id`].
    RequestId,
    /// `set-cookie: ` [`RawHead::set_cookie`].
    SetCookie,
}

/// An answer's header fields left in the bytes they came in, for a reader
/// that writes them out again (the client side's own HTTP/1.1 path) and so
/// needs no map: building one costs a `HeaderName` and a `HeaderValue` per
/// field, and the map's hashing. Names keep the backend's spelling; whoever
/// writes them lowercases them as a map would have.
///
/// Only answers asked for this way have it, and the response rules then
/// edit `lines` (see `proxy::spliced`) instead of the map.
pub struct RawHead {
    head: Bytes,
    /// Backend fields in the order they came, until the response rules put
    /// them in the order they are written in.
    pub lines: Vec<Line>,
    /// The names among the backend's fields, a bit per [`Known`] (`Other`
    /// too): a name not there needs no look.
    pub names: u32,
    /// Some name may come more than once (a known one did, or two others
    /// came, which may be the same).
    pub repeats: bool,
    pub request_id: Option<HeaderValue>,
    pub set_cookie: Option<HeaderValue>,
}

impl RawHead {
    /// The name of `f`, spelled as the backend sent it.
    pub fn name(&self, f: &Field) -> &[u8] {
        slice(&self.head, f.name)
    }

    pub fn value(&self, f: &Field) -> &[u8] {
        slice(&self.head, f.value)
    }

    /// The backend's fields among `lines`, in their order.
    pub fn fields(&self) -> impl Iterator<Item = &Field> {
        self.lines.iter().filter_map(|l| match l {
            Line::Backend(f) => Some(f),
            _ => None,
        })
    }

    /// Whether `a` and `b` have the same name, whatever its case.
    pub fn same_name(&self, a: &Field, b: &Field) -> bool {
        a.known == b.known
            && (a.known != Known::Other || self.name(a).eq_ignore_ascii_case(self.name(b)))
    }

    /// Whether `f` is called `name` (told by [`Known::of`] as `known`).
    pub fn is_named(&self, f: &Field, name: &[u8], known: Known) -> bool {
        f.known == known && (known != Known::Other || self.name(f).eq_ignore_ascii_case(name))
    }

    /// The lines as a map, as `parse` builds it for everyone else: for a
    /// reader that needs one after all.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.lines.len());
        for line in &self.lines {
            let (name, value) = match line {
                Line::Backend(f) => {
                    // Checked by `parse` as the map's types check them.
                    let Ok(name) = HeaderName::from_bytes(self.name(f)) else {
                        continue;
                    };
                    let Ok(value) = HeaderValue::from_maybe_shared(part(&self.head, f.value))
                    else {
                        continue;
                    };
                    (name, value)
                }
                Line::RequestId => match &self.request_id {
                    Some(v) => (HeaderName::from_static("x-request-id"), v.clone()),
                    None => continue,
                },
                Line::SetCookie => match &self.set_cookie {
                    Some(v) => (http::header::SET_COOKIE, v.clone()),
                    None => continue,
                },
            };
            map.append(name, value);
        }
        map
    }
}

/// Room for the places of one head's header fields, kept by a connection so
/// that parsing neither allocates nor clears a large array per answer; and
/// the raw head of the previous answer, given back (`Scratch::give_back`)
/// once its body ended, to be filled again.
#[derive(Default)]
pub struct Scratch(Vec<Field>, Option<Box<RawHead>>);

impl Scratch {
    /// Keeps `raw` for the next answer; its bytes are let go at once, so
    /// that the connection's buffer can use their room again.
    pub fn give_back(&mut self, mut raw: Box<RawHead>) {
        raw.head = Bytes::new();
        raw.lines.clear();
        raw.names = 0;
        raw.repeats = false;
        raw.request_id = None;
        raw.set_cookie = None;
        self.1 = Some(raw);
    }
}

/// Parses the head at the front of `buf` and takes it off; `None` while it is
/// incomplete. Obsolete line folding is refused (RFC 9112 5.2 allows either).
/// `raw`: the fields are left in their raw form (`Head::raw`) instead of a
/// map; what is refused is the same either way.
pub fn parse(buf: &mut BytesMut, scratch: &mut Scratch, raw: bool) -> Result<Option<Head>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let base = buf.as_ptr() as usize;
    // Within the head, at most `MAX_HEAD` bytes, once it is complete.
    let offset = |s: &[u8]| {
        let at = (s.as_ptr() as usize).wrapping_sub(base);
        (at as u32, s.len() as u32)
    };
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(Error::Parse("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Parse("too many header fields")),
        Err(_) => return Err(Error::Parse("malformed response head")),
    };
    if len > MAX_HEAD {
        return Err(Error::Parse("response head too large"));
    }
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Parse("invalid status code"))?;
    if raw {
        // httparse admits exactly the bytes `HeaderName` and `HeaderValue` do
        // (token characters; tab, visible ASCII and obs-text): only the
        // name's length bound is left to check.
        if resp.headers.iter().any(|h| h.name.len() > MAX_NAME) {
            return Err(Error::Parse("invalid header name"));
        }
        // Boxed, and the box kept by the connection from one answer to the
        // next: a response carrying it stays small to move.
        let mut raw = scratch.1.take().unwrap_or_else(|| {
            Box::new(RawHead {
                head: Bytes::new(),
                lines: Vec::new(),
                names: 0,
                repeats: false,
                request_id: None,
                set_cookie: None,
            })
        });
        let lines = &mut raw.lines;
        lines.clear();
        // Room for the proxy's two fields and for the rules to reorder in place.
        lines.reserve(2 * resp.headers.len() + 2);
        let (mut names, mut repeats) = (0u32, false);
        lines.extend(resp.headers.iter().map(|h| {
            let known = Known::of(h.name.as_bytes());
            repeats |= names & known.bit() != 0;
            names |= known.bit();
            Line::Backend(Field {
                name: offset(h.name.as_bytes()),
                value: offset(h.value),
                known,
            })
        }));
        raw.names = names;
        raw.repeats = repeats;
        raw.head = buf.split_to(len).freeze();
        return Ok(Some(Head {
            status,
            version,
            headers: HeaderMap::new(),
            raw: Some(raw),
        }));
    }
    let fields = &mut scratch.0;
    fields.clear();
    fields.extend(resp.headers.iter().map(|h| Field {
        name: offset(h.name.as_bytes()),
        value: offset(h.value),
        known: Known::Other,
    }));
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for f in fields.iter() {
        let name = HeaderName::from_bytes(slice(&head, f.name))
            .map_err(|_| Error::Parse("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(part(&head, f.value))
            .map_err(|_| Error::Parse("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        raw: None,
    }))
}

/// Each [`Known`] name in a zeroed 32-byte buffer, as [`Known::of`] compares it.
const PADDED: [[u8; 32]; 26] = {
    const NAMES: [&str; 26] = [
        "",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "http2-settings",
        "content-length",
        "proxy-authenticate",
        "proxy-authentication-info",
        "x-request-id",
        "set-cookie",
        "date",
        "server",
        "content-type",
        "cache-control",
        "etag",
        "last-modified",
        "vary",
        "expires",
        "location",
        "accept-ranges",
        "age",
    ];
    let mut out = [[0u8; 32]; 26];
    let mut k = 0;
    while k < NAMES.len() {
        let name = NAMES[k].as_bytes();
        let mut i = 0;
        while i < name.len() {
            out[k][i] = name[i];
            i += 1;
        }
        k += 1;
    }
    out
};

/// ASCII letters to lowercase, eight bytes at a time, in bytes below 0x80
/// (a name's token characters); others are left as they are.
pub fn lowercase_words(bytes: &mut [u8]) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // 0x80 in each byte that is at least 'A' and not above 'Z' (below
        // 0x80, no carry crosses into the next byte).
        let heptets = x & (0x7f * ONES);
        let at_least_a = heptets + (0x80 - u64::from(b'A')) * ONES;
        let above_z = heptets + (0x80 - u64::from(b'Z') - 1) * ONES;
        let upper = at_least_a & !above_z & !x & (0x80 * ONES);
        chunk.copy_from_slice(&(x | (upper >> 2)).to_le_bytes());
    }
    chunks.into_remainder().make_ascii_lowercase();
}

/// The longest name `HeaderName` takes.
const MAX_NAME: usize = (1 << 16) - 1;

fn slice(head: &Bytes, (start, len): (u32, u32)) -> &[u8] {
    let start = start as usize;
    head.get(start..start.saturating_add(len as usize))
        .unwrap_or_default()
}

/// The same bytes as [`slice`], sharing the head's memory.
fn part(head: &Bytes, (start, len): (u32, u32)) -> Bytes {
    let (start, len) = (start as usize, len as usize);
    match start.checked_add(len) {
        Some(end) if end <= head.len() && len > 0 => head.slice(start..end),
        _ => Bytes::new(),
    }
}

/// How the body of an answer with `head` to a request (a HEAD request when
/// `head_request`) is framed (RFC 9112 6.3), and whether the connection may
/// carry another request after it.
pub fn framing(head: &Head, head_request: bool) -> Result<(Framing, bool), Error> {
    let keep_alive = match head.version {
        Version::HTTP_10 => has_token(head, &CONNECTION, "keep-alive"),
        _ => !has_token(head, &CONNECTION, "close"),
    };
    let status = head.status;
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    if field_values(head, &TRANSFER_ENCODING).next().is_some() {
        let last = field_values(head, &TRANSFER_ENCODING)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(|c| c.trim_ascii())
            .filter(|c| !c.is_empty())
            .last();
        // A length next to the coding hints at smuggling: used once only.
        let reuse = keep_alive && field_values(head, &CONTENT_LENGTH).next().is_none();
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => {
                (Framing::Chunked(Decoder::new()), reuse)
            }
            _ => (Framing::Close, false),
        });
    }
    let mut length = None;
    let mut values = 0;
    for v in field_values(head, &CONTENT_LENGTH) {
        for part in v.split(|b| *b == b',') {
            let n = decimal(part.trim_ascii()).ok_or(Error::Parse("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Parse("conflicting Content-Length values"));
            }
            length = Some(n);
            values += 1;
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive && values == 1),
        None => (Framing::Close, false),
    })
}

/// A length as plain ASCII digits (no sign, no spaces, no list) that fits
/// in a `u64`.
pub(crate) fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The values of the fields called `name`, in order, whichever form the head
/// keeps them in.
fn field_values<'a>(head: &'a Head, name: &HeaderName) -> Values<'a> {
    match &head.raw {
        Some(raw) => {
            let known = match *name {
                CONNECTION => Known::Connection,
                CONTENT_LENGTH => Known::ContentLength,
                TRANSFER_ENCODING => Known::TransferEncoding,
                _ => Known::of(name.as_str().as_bytes()),
            };
            Values::Raw(raw, raw.lines.iter(), known)
        }
        None => Values::Map(head.headers.get_all(name).iter()),
    }
}

enum Values<'a> {
    Map(http::header::ValueIter<'a, HeaderValue>),
    Raw(&'a RawHead, std::slice::Iter<'a, Line>, Known),
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(values) => values.next().map(HeaderValue::as_bytes),
            Values::Raw(raw, lines, known) => lines.find_map(|l| match l {
                Line::Backend(f) if f.known == *known => Some(raw.value(f)),
                _ => None,
            }),
        }
    }
}

fn has_token(head: &Head, name: &HeaderName, token: &str) -> bool {
    field_values(head, name).any(|v| {
        v.split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, raw: bool) -> Head {
        let mut buf = BytesMut::from(text.as_bytes());
        parse(&mut buf, &mut Scratch::default(), raw)
            .unwrap()
            .unwrap()
    }

    /// The framing of `text`, the same from a map and from the raw fields.
    fn framed(text: &str, head_request: bool) -> Result<(Framing, bool), Error> {
        let mapped = framing(&head(text, false), head_request);
        let raw = framing(&head(text, true), head_request);
        assert_eq!(format!("{mapped:?}"), format!("{raw:?}"), "{text:?}");
        mapped
    }

    #[test]
    fn raw_fields_are_the_mapped_ones() {
        let text = "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Type: t\r\nx-a: 2\r\nZ: \r\n\r\nbody";
        let mut buf = BytesMut::from(text.as_bytes());
        let h = parse(&mut buf, &mut Scratch::default(), true)
            .unwrap()
            .unwrap();
        assert!(h.headers.is_empty());
        assert_eq!(&buf[..], b"body");
        let raw = h.raw.unwrap();
        assert_eq!(raw.fields().filter(|f| f.known == Known::Other).count(), 3);
        assert_eq!(Known::of(b"Content-TYPE"), Known::ContentType);
        for k in Known::ALL {
            assert_eq!(Known::of(k.lowercase().as_bytes()), k, "{k:?}");
            assert_eq!(
                &PADDED[k as usize][..k.lowercase().len()],
                k.lowercase().as_bytes()
            );
        }
        assert_eq!(raw.to_map(), head(text, false).headers);
        let order: Vec<_> = raw.to_map().keys().map(|n| n.to_string()).collect();
        assert_eq!(order, ["x-a", "content-type", "z"]);
    }

    #[test]
    fn parses_a_head_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabc"[..],
        );
        let h = parse(&mut buf, &mut Scratch::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(h.version, Version::HTTP_11);
        let a: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(&buf[..], b"abc");
    }

    #[test]
    fn partial_heads_wait_and_bad_ones_are_refused() {
        let buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"[..]);
        for raw in [false, true] {
            let mut buf = buf.clone();
            assert!(
                parse(&mut buf, &mut Scratch::default(), raw)
                    .unwrap()
                    .is_none()
            );
        }
        for bad in [
            "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "hello\r\n\r\n",
        ] {
            for raw in [false, true] {
                let mut buf = BytesMut::from(bad.as_bytes());
                assert!(
                    parse(&mut buf, &mut Scratch::default(), raw).is_err(),
                    "{bad:?}"
                );
            }
        }
        let mut huge = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        while huge.len() <= MAX_HEAD {
            huge.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert!(parse(&mut huge.clone(), &mut Scratch::default(), false).is_err());
        assert!(parse(&mut huge, &mut Scratch::default(), true).is_err());
    }

    #[test]
    fn framing_follows_rfc_9112_6_3() {
        let f = |t: &str, h: bool| framed(t, h).unwrap();
        assert!(matches!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            (Framing::Length(0), true)
        ));
        assert!(matches!(
            f("HTTP/1.1 204 No Content\r\n\r\n", false),
            (Framing::Length(0), true)
        ));
        assert!(matches!(
            f(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            (Framing::Length(0), true)
        ));
        assert!(matches!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            (Framing::Length(5), true)
        ));
        assert!(matches!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false),
            (Framing::Length(5), false)
        ));
        assert!(matches!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false
            ),
            (Framing::Chunked(_), true)
        ));
        assert!(matches!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            (Framing::Chunked(_), false)
        ));
        assert!(matches!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                false
            ),
            (Framing::Close, false)
        ));
        assert!(matches!(
            f("HTTP/1.1 200 OK\r\n\r\n", false),
            (Framing::Close, false)
        ));
        assert!(matches!(
            f(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            (Framing::Length(1), false)
        ));
        assert!(matches!(
            f("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            (Framing::Length(1), false)
        ));
        assert!(matches!(
            f(
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            (Framing::Length(1), true)
        ));
        for bad in ["5, 6", "-1", "0x5", "", "99999999999999999999"] {
            let t = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(framed(&t, false).is_err(), "{bad:?}");
        }
        // Repeated fields: read in order, whatever else lies between them.
        for (fields, chunked) in [
            (
                "Transfer-Encoding: gzip\r\nX-A: 1\r\nTransfer-Encoding: chunked",
                true,
            ),
            ("Transfer-Encoding: chunked\r\nTransfer-Encoding: ,", true),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
                false,
            ),
        ] {
            let t = format!("HTTP/1.1 200 OK\r\n{fields}\r\n\r\n");
            let framing = f(&t, false);
            assert_eq!(
                matches!(framing, (Framing::Chunked(_), true)),
                chunked,
                "{fields}"
            );
        }
        assert!(matches!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n",
                false
            ),
            (Framing::Length(5), false)
        ));
        assert!(
            framed(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(matches!(
            f(
                "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            (Framing::Length(1), false)
        ));
    }
}
