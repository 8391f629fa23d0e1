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
    /// The field's line in the head is exactly `name: value` and CRLF, as a
    /// writer would spell it: it can be copied whole ([`Field::line`]).
    pub plain: bool,
    /// For a `Connection` field, which usual lone token its value is.
    pub lone: Lone,
}

/// A `Connection` value that is one of the usual tokens alone (any case),
/// told once per field: it needs no split into a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lone {
    No,
    KeepAlive,
    Close,
    Upgrade,
}

impl Lone {
    pub fn of(v: &[u8]) -> Lone {
        const KEEP_ALIVE: Key = key("keep-alive");
        const CLOSE: Key = key("close");
        const UPGRADE: Key = key("upgrade");
        // The value's words lowercased in a copy: a value is not changed.
        let n = v.len();
        let word = |at: usize, len: usize| {
            let mut w = [0u8; 8];
            w[..len].copy_from_slice(&v[at..at + len]);
            lower_word(u64::from_le_bytes(w))
        };
        match n {
            5 | 7 => match (word(0, 4) | word(n - 4, 4) << 32, 0) {
                k if k == CLOSE && n == 5 => Lone::Close,
                k if k == UPGRADE && n == 7 => Lone::Upgrade,
                _ => Lone::No,
            },
            10 if (word(0, 8), word(2, 8)) == KEEP_ALIVE => Lone::KeepAlive,
            _ => Lone::No,
        }
    }
}

impl Field {
    /// No field: an empty name, told apart from every real one.
    pub const NONE: Field = Field {
        name: (0, 0),
        value: (0, 0),
        known: Known::Other,
        plain: false,
        lone: Lone::No,
    };

    /// Where the field's line lies in the head, its CRLF included; only
    /// meaningful for a `plain` field.
    pub fn line(&self) -> (usize, usize) {
        let end = self.value.0 as usize + self.value.1 as usize + 2;
        (self.name.0 as usize, end)
    }
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
        let mut lower = [0u8; 32];
        let Some(room) = lower.get_mut(..name.len()) else {
            return Known::Other;
        };
        room.copy_from_slice(name);
        lowercase_words(room);
        Known::of_lowercase(room)
    }

    /// Lowercases `name` in place and tells which name it is. A name of 4 to
    /// 16 ASCII bytes (most names) is read as two words, its first and last
    /// eight bytes (four below eight), lowercased in registers; the words and
    /// the length pick the one known name they can be ([`SLOTS`]), and one
    /// compare tells whether they are it.
    #[inline]
    pub fn lowercase_and_tell(name: &mut [u8]) -> Known {
        let n = name.len();
        let key = match n {
            4..=7 => lower_ends::<4>(name).map(|(first, last)| (first | last << 32, 0)),
            8..=16 => lower_ends::<8>(name),
            _ => None,
        };
        let Some(key) = key else {
            return lowercase_long(name);
        };
        let slot = &SLOTS[slot_of(key, n)];
        if slot.key == key && usize::from(slot.len) == n {
            slot.known
        } else {
            Known::Other
        }
    }

    /// Which name `name`, in lowercase already, is: the length, then one
    /// compare of a few words for most names.
    pub fn of_lowercase(name: &[u8]) -> Known {
        match name.len() {
            2 if name == b"te" => Known::Te,
            3 if name == b"age" => Known::Age,
            4 => match name {
                b"date" => Known::Date,
                b"etag" => Known::Etag,
                b"vary" => Known::Vary,
                _ => Known::Other,
            },
            6 if name == b"server" => Known::Server,
            7 => match name {
                b"trailer" => Known::Trailer,
                b"upgrade" => Known::Upgrade,
                b"expires" => Known::Expires,
                _ => Known::Other,
            },
            8 if name == b"location" => Known::Location,
            10 => match name {
                b"connection" => Known::Connection,
                b"keep-alive" => Known::KeepAlive,
                b"set-cookie" => Known::SetCookie,
                _ => Known::Other,
            },
            12 => match name {
                b"content-type" => Known::ContentType,
                b"x-request-id" => Known::XRequestId,
                _ => Known::Other,
            },
            13 => match name {
                b"cache-control" => Known::CacheControl,
                b"last-modified" => Known::LastModified,
                b"accept-ranges" => Known::AcceptRanges,
                _ => Known::Other,
            },
            14 => match name {
                b"content-length" => Known::ContentLength,
                b"http2-settings" => Known::Http2Settings,
                _ => Known::Other,
            },
            16 if name == b"proxy-connection" => Known::ProxyConnection,
            17 if name == b"transfer-encoding" => Known::TransferEncoding,
            18 if name == b"proxy-authenticate" => Known::ProxyAuthenticate,
            19 if name == b"proxy-authorization" => Known::ProxyAuthorization,
            25 if name == b"proxy-authentication-info" => Known::ProxyAuthenticationInfo,
            _ => Known::Other,
        }
    }

    /// Its bit in [`RawHead::names`].
    pub fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The name in lowercase (empty for `Other`).
    #[cfg(test)]
    pub(crate) fn lowercase(self) -> &'static str {
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
/// field, and the map's hashing. Names are lowercased in the head's bytes, as
/// a map would hold them, so that a writer can copy whole lines.
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
    /// came that may be the same: told by their lengths and last bytes).
    pub repeats: bool,
    pub request_id: Option<HeaderValue>,
    pub set_cookie: Option<HeaderValue>,
    /// What [`framing`] reads in the backend's fields, gathered by
    /// `classify` as it tells the names: no second pass over the lines.
    framing: FramingFields,
}

impl RawHead {
    /// The name of `f`, in lowercase.
    pub fn name(&self, f: &Field) -> &[u8] {
        slice(&self.head, f.name)
    }

    pub fn value(&self, f: &Field) -> &[u8] {
        slice(&self.head, f.value)
    }

    /// The head's bytes (the status line, the fields as [`Field::line`]
    /// places them, the blank line).
    pub fn bytes(&self) -> &[u8] {
        &self.head
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
                framing: FramingFields::default(),
            })
        });
        let lines = &mut raw.lines;
        lines.clear();
        // Room for the proxy's two fields and for the rules to reorder in place.
        lines.reserve(2 * resp.headers.len() + 2);
        // httparse admits exactly the bytes `HeaderName` and `HeaderValue` do
        // (token characters; tab, visible ASCII and obs-text): only the
        // name's length bound is left to check, in the same pass.
        let mut longest = 0;
        lines.extend(resp.headers.iter().map(|h| {
            longest = longest.max(h.name.len());
            Line::Backend(Field {
                name: offset(h.name.as_bytes()),
                value: offset(h.value),
                known: Known::Other,
                plain: false,
                lone: Lone::No,
            })
        }));
        if longest > MAX_NAME {
            scratch.1 = Some(raw);
            return Err(Error::Parse("invalid header name"));
        }
        // A kept box holds the previous answer's facts.
        raw.framing = FramingFields::default();
        (raw.names, raw.repeats) = classify(&mut buf[..len], lines, &mut raw.framing);
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
        plain: false,
        lone: Lone::No,
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

/// Lowercases the names of a raw head's fields in `head` (the head's bytes)
/// and tells each which name it is and whether its line is plain; the
/// names seen ([`RawHead::names`]), and whether one may repeat. The framing
/// fields are read into `framing` as they are told, in the order they came.
fn classify(head: &mut [u8], lines: &mut [Line], framing: &mut FramingFields) -> (u32, bool) {
    let (mut names, mut repeats, mut others) = (0u32, false, 0u32);
    for line in lines {
        let Line::Backend(f) = line else { continue };
        let (start, len) = (f.name.0 as usize, f.name.1 as usize);
        let Some(name) = head.get_mut(start..start + len) else {
            continue;
        };
        f.known = Known::lowercase_and_tell(name);
        if f.known == Known::Other {
            // Names not known that share a bit may be the same.
            let last = name.last().map_or(0, |&b| u32::from(b));
            let bit = 1 << ((len as u32).wrapping_mul(7).wrapping_add(last) % 32);
            repeats |= others & bit != 0;
            others |= bit;
        } else {
            repeats |= names & f.known.bit() != 0;
        }
        names |= f.known.bit();
        let name_end = start + len;
        let value_end = f.value.0 as usize + f.value.1 as usize;
        f.plain = f.value.0 as usize == name_end + 2
            && head.get(name_end..name_end + 2) == Some(&b": "[..])
            && head.get(value_end..value_end + 2) == Some(&b"\r\n"[..]);
        let value = || head.get(f.value.0 as usize..value_end).unwrap_or_default();
        match f.known {
            Known::Connection => {
                f.lone = Lone::of(value());
                framing.connection(value(), f.lone);
            }
            Known::ContentLength => framing.content_length(value()),
            Known::TransferEncoding => framing.transfer_encoding(value()),
            _ => {}
        }
    }
    (names, repeats)
}

/// How [`Known::lowercase_and_tell`] compares a name of 4 to 16 bytes: its
/// first and last eight bytes as little-endian words (for a shorter name,
/// its first and last four in one word), overlapping below 16 bytes.
type Key = (u64, u64);

const fn key(name: &str) -> Key {
    const fn word(b: &[u8], at: usize, n: usize) -> u64 {
        let mut w = 0;
        let mut i = 0;
        while i < n {
            w |= (b[at + i] as u64) << (8 * i);
            i += 1;
        }
        w
    }
    let (b, n) = (name.as_bytes(), name.len());
    if n < 8 {
        (word(b, 0, 4) | word(b, n - 4, 4) << 32, 0)
    } else {
        (word(b, 0, 8), word(b, n - 8, 8))
    }
}

/// A known name of 4 to 16 bytes, in the slot its key and length pick.
#[derive(Clone, Copy)]
struct Slot {
    key: Key,
    /// 0 for an empty slot: no name of 4 to 16 bytes matches it.
    len: u8,
    known: Known,
}

/// The known names of 4 to 16 bytes, each in its own slot ([`slot_of`]).
const SLOTS: [Slot; 32] = slots(&[
    ("date", Known::Date),
    ("etag", Known::Etag),
    ("vary", Known::Vary),
    ("server", Known::Server),
    ("trailer", Known::Trailer),
    ("upgrade", Known::Upgrade),
    ("expires", Known::Expires),
    ("location", Known::Location),
    ("connection", Known::Connection),
    ("keep-alive", Known::KeepAlive),
    ("set-cookie", Known::SetCookie),
    ("content-type", Known::ContentType),
    ("x-request-id", Known::XRequestId),
    ("cache-control", Known::CacheControl),
    ("last-modified", Known::LastModified),
    ("accept-ranges", Known::AcceptRanges),
    ("content-length", Known::ContentLength),
    ("http2-settings", Known::Http2Settings),
    ("proxy-connection", Known::ProxyConnection),
]);

/// Which of [`SLOTS`] a name of `n` bytes with `key` can only be: a
/// multiplier chosen so that the known names fall in distinct slots (checked
/// when the table is built: a clash does not compile).
const fn slot_of(key: Key, n: usize) -> usize {
    const MULTIPLIER: u64 = 0xc360_b3b7_1251_310b;
    ((key.0 ^ key.1 ^ n as u64).wrapping_mul(MULTIPLIER) >> 59) as usize
}

const fn slots(names: &[(&str, Known)]) -> [Slot; 32] {
    let mut table = [Slot {
        key: (0, 0),
        len: 0,
        known: Known::Other,
    }; 32];
    let mut i = 0;
    while i < names.len() {
        let (name, known) = names[i];
        let at = slot_of(key(name), name.len());
        assert!(table[at].len == 0, "two known names in one slot");
        table[at] = Slot {
            key: key(name),
            len: name.len() as u8,
            known,
        };
        i += 1;
    }
    table
}

/// [`Known::lowercase_and_tell`] for names under 4 or over 16 bytes, or not
/// ASCII; apart, so that its loop does not weigh on the common case.
#[inline(never)]
fn lowercase_long(name: &mut [u8]) -> Known {
    lowercase_words(name);
    Known::of_lowercase(name)
}

/// The top bit of each byte: set in a byte that is not ASCII.
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The `N` (4 or 8) bytes of `name` at `at`, as a little-endian word.
#[inline(always)]
fn word_at<const N: usize>(name: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(bytes) = name.get(at..at + N) {
        word[..N].copy_from_slice(bytes);
    }
    u64::from_le_bytes(word)
}

/// The first and last `N` (4 or 8) bytes of `name` (at least `N` long) as
/// words, lowercased, and written back lowercased; `None`, and `name` left
/// as it is, when a byte of them is not ASCII.
#[inline(always)]
fn lower_ends<const N: usize>(name: &mut [u8]) -> Option<(u64, u64)> {
    let at_last = name.len() - N;
    let (first, last) = (word_at::<N>(name, 0), word_at::<N>(name, at_last));
    if (first | last) & HIGH_BITS != 0 {
        return None;
    }
    let (first, last) = (lower_ascii(first), lower_ascii(last));
    put_word::<N>(name, 0, first);
    put_word::<N>(name, at_last, last);
    Some((first, last))
}

/// Writes the low `N` bytes of `word` over `name` at `at`.
#[inline(always)]
fn put_word<const N: usize>(name: &mut [u8], at: usize, word: u64) {
    if let Some(bytes) = name.get_mut(at..at + N) {
        bytes.copy_from_slice(&word.to_le_bytes()[..N]);
    }
}

/// [`lower_word`] for a word of ASCII bytes only: with no byte above 0x7f,
/// adding 0x3f sets a byte's top bit from 'A' on and adding 0x25 from past
/// 'Z' on, without a carry into the next byte; the two differ for capitals.
#[inline(always)]
fn lower_ascii(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let from_a = x.wrapping_add((0x80 - u64::from(b'A')) * ONES);
    let past_z = x.wrapping_add((0x80 - u64::from(b'Z') - 1) * ONES);
    x | ((from_a ^ past_z) & HIGH_BITS) >> 2
}

/// ASCII letters to lowercase in a word, in bytes below 0x80 (a name's
/// token characters); others are left as they are.
fn lower_word(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // 0x80 in each byte that is at least 'A' and not above 'Z' (below
    // 0x80, no carry crosses into the next byte).
    let heptets = x & (0x7f * ONES);
    let at_least_a = heptets + (0x80 - u64::from(b'A')) * ONES;
    let above_z = heptets + (0x80 - u64::from(b'Z') - 1) * ONES;
    let upper = at_least_a & !above_z & !x & (0x80 * ONES);
    x | (upper >> 2)
}

/// ASCII letters to lowercase, eight bytes at a time, in bytes below 0x80
/// (a name's token characters); others are left as they are.
pub fn lowercase_words(bytes: &mut [u8]) {
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let lower = lower_word(u64::from_le_bytes(word));
        chunk.copy_from_slice(&lower.to_le_bytes());
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
    let mapped;
    let read = match &head.raw {
        Some(raw) => &raw.framing,
        None => {
            mapped = FramingFields::of_map(&head.headers);
            &mapped
        }
    };
    let keep_alive = match head.version {
        Version::HTTP_10 => read.keep_alive,
        _ => !read.close,
    };
    let status = head.status;
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    if read.coded {
        // A length next to the coding hints at smuggling: used once only.
        let reuse = keep_alive && !read.length_field;
        return Ok(match read.chunked {
            true => (Framing::Chunked(Decoder::new()), reuse),
            false => (Framing::Close, false),
        });
    }
    if let Some(fault) = read.length_fault {
        return Err(Error::Parse(fault));
    }
    Ok(match read.length {
        Some(n) => (Framing::Length(n), keep_alive && read.lengths == 1),
        None => (Framing::Close, false),
    })
}

/// What [`framing`] reads in a head's `Connection`, `Transfer-Encoding` and
/// `Content-Length` fields, taken in the order they came.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FramingFields {
    /// `Connection` lists `close`; lists `keep-alive`.
    close: bool,
    keep_alive: bool,
    /// A `Transfer-Encoding` field came; the last coding listed (of any
    /// field) is `chunked`, in any case.
    coded: bool,
    chunked: bool,
    /// A `Content-Length` field came; its value, how many values there were
    /// (a list counts each), until the first fault.
    length_field: bool,
    length: Option<u64>,
    lengths: u32,
    length_fault: Option<&'static str>,
}

impl FramingFields {
    fn of_map(headers: &HeaderMap) -> Self {
        let mut read = FramingFields::default();
        for v in headers.get_all(CONNECTION) {
            read.connection(v.as_bytes(), Lone::of(v.as_bytes()));
        }
        for v in headers.get_all(TRANSFER_ENCODING) {
            read.transfer_encoding(v.as_bytes());
        }
        for v in headers.get_all(CONTENT_LENGTH) {
            read.content_length(v.as_bytes());
        }
        read
    }

    /// One pass over the lines, none for a head without the three names:
    /// how the facts were read before `classify` gathered them, kept to
    /// check that against.
    #[cfg(test)]
    fn of_raw(raw: &RawHead) -> Self {
        const FRAMING: u32 = (1 << Known::Connection as u32)
            | (1 << Known::TransferEncoding as u32)
            | (1 << Known::ContentLength as u32);
        let mut read = FramingFields::default();
        if raw.names & FRAMING == 0 {
            return read;
        }
        for f in raw.fields() {
            match f.known {
                Known::Connection => read.connection(raw.value(f), f.lone),
                Known::TransferEncoding => read.transfer_encoding(raw.value(f)),
                Known::ContentLength => read.content_length(raw.value(f)),
                _ => {}
            }
        }
        read
    }

    fn connection(&mut self, v: &[u8], lone: Lone) {
        match lone {
            Lone::KeepAlive => self.keep_alive = true,
            Lone::Close => self.close = true,
            Lone::Upgrade => {}
            Lone::No => self.connection_list(v),
        }
    }

    fn connection_list(&mut self, v: &[u8]) {
        for t in v.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            self.close |= t.eq_ignore_ascii_case(b"close");
            self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
        }
    }

    fn transfer_encoding(&mut self, v: &[u8]) {
        self.coded = true;
        let mut codings = v.split(|b| *b == b',').map(<[u8]>::trim_ascii);
        if let Some(c) = codings.rfind(|c| !c.is_empty()) {
            self.chunked = c.eq_ignore_ascii_case(b"chunked");
        }
    }

    fn content_length(&mut self, v: &[u8]) {
        self.length_field = true;
        if self.length_fault.is_some() {
            return;
        }
        // Plain digits, the usual value, are a list of one.
        if let Some(n) = decimal(v) {
            self.length_value(n);
            return;
        }
        for part in v.split(|b| *b == b',') {
            let Some(n) = decimal(part.trim_ascii()) else {
                self.length_fault = Some("invalid Content-Length");
                return;
            };
            if !self.length_value(n) {
                return;
            }
        }
    }

    /// One value of a `Content-Length` list; false at a conflict.
    fn length_value(&mut self, n: u64) -> bool {
        if self.length.is_some_and(|l| l != n) {
            self.length_fault = Some("conflicting Content-Length values");
            return false;
        }
        self.length = Some(n);
        self.lengths += 1;
        true
    }
}

/// A length as plain ASCII digits (no sign, no spaces, no list) that fits
/// in a `u64`. Inlined: the writer reads the length too.
#[inline]
pub(crate) fn decimal(s: &[u8]) -> Option<u64> {
    // Up to 19 digits cannot overflow: one pass without checked arithmetic.
    if s.is_empty() || s.len() > 19 {
        return decimal_long(s);
    }
    let mut n = 0u64;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    Some(n)
}

/// [`decimal`] for an empty value or one of 20 bytes or more.
#[inline(never)]
fn decimal_long(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_as_plain_digits_that_fit() {
        for v in [
            "0",
            "13",
            "0000000000000000000013",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "",
            "/",
            ":",
            "1a",
            "+1",
            " 1",
            "1 ",
            "1,1",
            "\u{661}",
        ] {
            let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            let want = digits.then(|| v.parse::<u64>().ok()).flatten();
            assert_eq!(decimal(v.as_bytes()), want, "{v:?}");
        }
    }

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
            assert_eq!(Known::of(k.lowercase().to_uppercase().as_bytes()), k);
        }
        assert_eq!(raw.to_map(), head(text, false).headers);
        let order: Vec<_> = raw.to_map().keys().map(|n| n.to_string()).collect();
        assert_eq!(order, ["x-a", "content-type", "z"]);
    }

    #[test]
    fn names_are_told_the_same_from_words_and_from_bytes() {
        let mut names: Vec<Vec<u8>> = Known::ALL
            .iter()
            .flat_map(|k| {
                let lower = k.lowercase();
                [lower.to_string(), lower.to_uppercase(), format!("{lower}s")]
            })
            .map(String::into_bytes)
            .collect();
        // Every length, and names one byte away from a known one.
        let alphabet = b"-aAzZ09_!~";
        for len in 1..=40 {
            names.push((0..len).map(|i| alphabet[i % alphabet.len()]).collect());
        }
        for k in Known::ALL {
            for at in 0..k.lowercase().len() {
                let mut near = k.lowercase().as_bytes().to_vec();
                near[at] ^= 0x01;
                names.push(near);
            }
        }
        for name in names {
            let mut lowered = name.clone();
            let told = Known::lowercase_and_tell(&mut lowered);
            assert_eq!(lowered, name.to_ascii_lowercase(), "{name:?}");
            assert_eq!(told, Known::of(&name), "{name:?}");
            assert_eq!(told, Known::of_lowercase(&lowered), "{name:?}");
        }
    }

    /// What [`Known::lowercase_and_tell`] must give: the known name the bytes
    /// spell in any case, compared byte by byte, or `Other`.
    fn told_plainly(name: &[u8]) -> Known {
        Known::ALL
            .into_iter()
            .find(|k| name.eq_ignore_ascii_case(k.lowercase().as_bytes()))
            .unwrap_or(Known::Other)
    }

    #[test]
    fn names_are_told_as_a_plain_compare_tells_them() {
        let mut names: Vec<Vec<u8>> = Vec::new();
        for k in Known::ALL {
            let lower = k.lowercase().as_bytes().to_vec();
            let title: Vec<u8> = lower
                .iter()
                .enumerate()
                .map(|(i, &b)| match i == 0 || lower[i - 1] == b'-' {
                    true => b.to_ascii_uppercase(),
                    false => b,
                })
                .collect();
            names.extend([lower.clone(), lower.to_ascii_uppercase(), title.clone()]);
            // Longer and shorter by a byte, at either end.
            names.extend([[&b"x"[..], &lower].concat(), [&lower, &b"x"[..]].concat()]);
            names.extend([lower[1..].to_vec(), lower[..lower.len() - 1].to_vec()]);
            // One byte off: a near letter, the other case's neighbour, not ASCII.
            for at in 0..lower.len() {
                for bit in [0x01, 0x02, 0x20, 0x40, 0x80] {
                    let mut near = title.clone();
                    near[at] ^= bit;
                    names.push(near);
                }
            }
        }
        // Every length from 1 to 40, of token characters and of any bytes.
        let token =
            b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut next = crate::rand::seeded(0x9e37_79b9_7f4a_7c15);
        for len in 1..=40 {
            for _ in 0..200 {
                names.push((0..len).map(|_| token[next(token.len())]).collect());
                names.push((0..len).map(|_| next(256) as u8).collect());
            }
        }
        for name in names {
            let mut lowered = name.clone();
            let told = Known::lowercase_and_tell(&mut lowered);
            assert_eq!(lowered, name.to_ascii_lowercase(), "{name:?}");
            assert_eq!(told, told_plainly(&name), "{name:?}");
            assert_eq!(Known::of(&name), told_plainly(&name), "{name:?}");
        }
    }

    #[test]
    fn lone_connection_tokens_are_told_as_compared_bytes_tell_them() {
        let mut values: Vec<Vec<u8>> = [
            "keep-alive",
            "Keep-Alive",
            "KEEP-ALIVE",
            "close",
            "Close",
            "upgrade",
            "UpGrade",
            "keep-alivE",
            "keep_alive",
            "keep-alive, close",
            "closed",
            "clos",
            "",
            "x",
        ]
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
        for token in ["keep-alive", "close", "upgrade"] {
            for at in 0..token.len() {
                for bit in [0x01, 0x20, 0x80] {
                    let mut near = token.as_bytes().to_vec();
                    near[at] ^= bit;
                    values.push(near);
                }
            }
        }
        for v in values {
            let by_bytes = if v.eq_ignore_ascii_case(b"keep-alive") {
                Lone::KeepAlive
            } else if v.eq_ignore_ascii_case(b"close") {
                Lone::Close
            } else if v.eq_ignore_ascii_case(b"upgrade") {
                Lone::Upgrade
            } else {
                Lone::No
            };
            assert_eq!(Lone::of(&v), by_bytes, "{v:?}");
        }
    }

    #[test]
    fn raw_names_are_lowercased_and_plain_lines_told() {
        let text = "HTTP/1.1 200 OK\r\nX-A: 1\r\nServer:s\r\nDATE:  d\r\nE: \r\nF:\r\nG: 7 \r\nH: 8\nVary: *\r\n\r\n";
        let h = head(text, true);
        let raw = h.raw.unwrap();
        let lines: Vec<_> = raw
            .fields()
            .map(|f| {
                let (start, end) = f.line();
                let line = f.plain.then(|| &raw.bytes()[start..end]);
                (raw.name(f), f.known, line)
            })
            .collect();
        let plain = |l: &'static str| Some(l.as_bytes());
        assert_eq!(
            lines,
            [
                (&b"x-a"[..], Known::Other, plain("x-a: 1\r\n")),
                (b"server", Known::Server, None),
                (b"date", Known::Date, None),
                (b"e", Known::Other, plain("e: \r\n")),
                (b"f", Known::Other, None),
                (b"g", Known::Other, None),
                (b"h", Known::Other, None),
                (b"vary", Known::Vary, plain("vary: *\r\n")),
            ]
        );
        assert!(
            raw.bytes()
                .starts_with(b"HTTP/1.1 200 OK\r\nx-a: 1\r\nserver:s")
        );
        // Four names not known, on four bits: none may repeat.
        assert!(!raw.repeats);
        let again = head("HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\n\r\n", true);
        assert!(again.raw.unwrap().repeats);
    }

    #[test]
    fn names_over_the_bound_are_refused_and_the_kept_head_stays() {
        let with_name = |len: usize| {
            let name = "x".repeat(len);
            BytesMut::from(format!("HTTP/1.1 200 OK\r\nA: 1\r\n{name}: v\r\n\r\n").as_bytes())
        };
        let mut scratch = Scratch::default();
        let kept = parse(&mut with_name(MAX_NAME), &mut scratch, true)
            .unwrap()
            .unwrap();
        assert_eq!(kept.raw.as_ref().unwrap().fields().count(), 2);
        scratch.give_back(kept.raw.unwrap());
        let mapped = parse(&mut with_name(MAX_NAME + 1), &mut Scratch::default(), false);
        assert!(matches!(mapped, Err(Error::Parse("invalid header name"))));
        let raw = parse(&mut with_name(MAX_NAME + 1), &mut scratch, true);
        assert!(matches!(raw, Err(Error::Parse("invalid header name"))));
        // The connection's box is not lost with the refused head.
        assert!(scratch.1.is_some());
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
    fn framing_gathered_by_classify_is_the_walk_over_the_lines() {
        const FIELDS: [(&str, &[&str]); 5] = [
            (
                "connection",
                &[
                    "close",
                    "keep-alive",
                    "Keep-Alive",
                    "CLOSE",
                    "upgrade",
                    "x-a, close",
                    "",
                ],
            ),
            (
                "transfer-encoding",
                &[
                    "chunked",
                    "Chunked",
                    "gzip, chunked",
                    "chunked, gzip",
                    ",",
                    "",
                    "gzip",
                ],
            ),
            (
                "content-length",
                &[
                    "5",
                    "6",
                    "5, 5",
                    "5,6",
                    "",
                    "-1",
                    "007",
                    "99999999999999999999",
                ],
            ),
            ("x-a", &["1"]),
            ("server", &["s"]),
        ];
        let mut next = crate::rand::seeded(0x2545_f491_4f6c_dd1d);
        for _ in 0..4000 {
            let version = ["1.0", "1.1"][next(2)];
            let status = ["200 OK", "204 No Content", "304 Not Modified"][next(3)];
            let mut text = format!("HTTP/{version} {status}\r\n");
            for _ in 0..next(7) {
                let (name, values) = FIELDS[next(FIELDS.len())];
                // Any case, byte by byte.
                let name: String = name
                    .chars()
                    .map(|c| match next(2) {
                        0 => c.to_ascii_uppercase(),
                        _ => c,
                    })
                    .collect();
                let value = values[next(values.len())];
                text.push_str(&format!("{name}: {value}\r\n"));
            }
            text.push_str("\r\n");
            let raw = head(&text, true);
            let gathered = raw.raw.as_ref().unwrap().framing;
            let walked = FramingFields::of_raw(raw.raw.as_ref().unwrap());
            assert_eq!(gathered, walked, "{text:?}");
            assert_eq!(gathered, FramingFields::of_map(&head(&text, false).headers));
            for head_request in [false, true] {
                framed(&text, head_request).ok();
            }
        }
    }

    #[test]
    fn a_kept_raw_head_forgets_the_last_framing() {
        let parse_raw = |text: &str, scratch: &mut Scratch| {
            let mut buf = BytesMut::from(text.as_bytes());
            parse(&mut buf, scratch, true).unwrap().unwrap()
        };
        let mut scratch = Scratch::default();
        let first = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n";
        let first = parse_raw(first, &mut scratch).raw.unwrap();
        assert!(first.framing.close);
        scratch.give_back(first);
        let second = parse_raw("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", &mut scratch);
        // The box is the one given back, its facts read anew.
        assert!(matches!(
            framing(&second, false),
            Ok((Framing::Length(6), true))
        ));
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
