//! Header rules of the request path: hop-by-hop removal, forwarding headers, the
//! request ID, and the user's set/remove rules.

use crate::config::HeaderOps;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub static PROXY_AUTHENTICATION_INFO: HeaderName =
    HeaderName::from_static("proxy-authentication-info");
pub static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::TE
        || n == header::TRAILER
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
        || n == header::PROXY_AUTHORIZATION
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
        || n == HTTP2_SETTINGS
}

/// Which of the fields the phases look up a request head holds: a phase
/// skips its lookup (a hash of the name) or its scan of the names when the
/// field is not there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Present {
    /// `X-Request-Id`.
    pub request_id: bool,
    /// A hop-by-hop field (the fixed set of [`remove_hop_by_hop`], `Connection`
    /// and `Upgrade` among them): without one there is nothing to remove and
    /// no upgrade asked for.
    pub hop_by_hop: bool,
    /// A field the proxy adds itself (forwarding fields, `Via`, the request
    /// ID, `traceparent`).
    pub added: bool,
    /// `User-Agent` and `Referer`, for the access log.
    pub user_agent: bool,
    pub referer: bool,
}

/// What `accept` needs of a request head's `Host` fields, and which looked-up
/// fields the head holds, noted in one pass over its fields: by the HTTP/1.1
/// fast path while it builds the head's map, for any other request from its
/// map ([`HeadFacts::of`]); both through [`HeadFacts::note`]. The pipeline
/// only removes fields before it adds its own, so a field `present` says is
/// absent stays absent until then.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeadFacts {
    /// The first `Host` field's value.
    pub host: Option<HeaderValue>,
    /// How many `Host` fields there are (2 stands for "more than one").
    pub hosts: u8,
    pub present: Present,
}

impl HeadFacts {
    /// The facts of a head that is already a map.
    pub fn of(h: &HeaderMap) -> HeadFacts {
        let mut facts = HeadFacts::default();
        for (name, value) in h {
            facts.note(name, value);
        }
        facts
    }

    /// Notes one field of the head, in the head's order.
    #[inline]
    pub fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if name == header::HOST {
            if self.hosts == 0 {
                self.host = Some(value.clone());
            }
            self.hosts = self.hosts.saturating_add(1).min(2);
        } else if name == header::USER_AGENT {
            self.present.user_agent = true;
        } else if name == header::REFERER {
            self.present.referer = true;
        } else if is_added_name(name) {
            self.present.added = true;
            self.present.request_id |= name == X_REQUEST_ID;
        } else if is_hop_by_hop(name) {
            self.present.hop_by_hop = true;
        }
    }
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1): the fixed set and any named in
/// `Connection`. With `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is
/// set again, for a protocol switch that must reach the other side.
pub fn remove_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry none of these, and a
    // lookup per name would hash each one.
    let mut present: [Option<HeaderName>; 9] = Default::default();
    let mut n = 0;
    for name in h.keys() {
        if n < present.len() && is_hop_by_hop(name) && !(keep_upgrade && name == header::UPGRADE) {
            present[n] = Some(name.clone());
            n += 1;
        }
    }
    if n > 0 {
        let mut named: Vec<HeaderName> = Vec::new();
        for conn in h.get_all(header::CONNECTION) {
            let v = conn.as_bytes();
            if v.contains(&b',') || !is_standard_connection_token(v) {
                named.extend(
                    conn.to_str()
                        .unwrap_or("")
                        .split(',')
                        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                        .filter(|n| !(keep_upgrade && n == header::UPGRADE)),
                );
            }
        }
        for name in named {
            h.remove(name);
        }
        for name in present.iter().take(n).flatten() {
            h.remove(name);
        }
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The bytes of an RFC 3986 reg-name (unreserved, sub-delims, `%`), as a table:
/// one load per byte of every request's `Host`, where a search of the 17
/// punctuation bytes cost ~450 instructions per request.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punct = b"-._~%!$&'()*+,;=";
    let mut i = 0;
    while i < punct.len() {
        t[punct[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether a `Host` value (or an absolute target's authority) is `host [":" port]`
/// as RFC 3986 writes it (RFC 9112 3.2): a registered name or IPv4 address of
/// unreserved, sub-delim and percent-encoded characters, or a bracketed IPv6
/// literal, then digits for a port. Rejects `/`, `@`, spaces and controls, so
/// nothing else can ride into `Host`, `X-Forwarded-Host` or `Forwarded`.
pub fn valid_host(v: &[u8]) -> bool {
    let port = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(end) = memchr::memchr(b']', rest) else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        {
            return false;
        }
        match &rest[end + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return false,
        }
    } else {
        // A plain search from the end: a host is a few bytes long, and
        // `memrchr` cost ~70 instructions a call for one.
        let (name, port) = match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        };
        if !name.iter().all(|&b| REG_NAME[b as usize]) {
            return false;
        }
        port
    };
    port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// Whether an `Upgrade` header asks for h2c (RFC 7540's cleartext upgrade, gone
/// from RFC 9113): never passed on, since a backend that accepts it would turn
/// the connection into a tunnel past the routes.
pub fn upgrade_is_h2c(h: &HeaderMap) -> bool {
    h.get_all(header::UPGRADE).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"))
    })
}

/// Response headers that speak to the proxy's own client only (RFC 9110
/// 11.7.1): a backend's proxy challenge is not passed on.
pub fn remove_proxy_auth(h: &mut HeaderMap) {
    // A look at the names first: answers rarely carry these, and each removal
    // hashes its name.
    if h.keys()
        .any(|n| n == header::PROXY_AUTHENTICATE || n == PROXY_AUTHENTICATION_INFO)
    {
        h.remove(header::PROXY_AUTHENTICATE);
        h.remove(&PROXY_AUTHENTICATION_INFO);
    }
}

/// An HTTP/2 field value that starts or ends with whitespace: malformed (RFC
/// 9113 8.2.1), though the h2 library lets it through.
pub fn has_padded_value(h: &HeaderMap) -> bool {
    h.values().any(|v| {
        let b = v.as_bytes();
        matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
    })
}

/// A header value built in a buffer that becomes the value without a copy.
fn value_from(buf: Vec<u8>) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(buf)).ok()
}

fn is_standard_connection_token(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"keep-alive")
        || v.eq_ignore_ascii_case(b"close")
        || v.eq_ignore_ascii_case(b"upgrade")
}

/// Whether an HTTP/1.1 request asks to switch protocols (WebSocket and the like).
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

pub fn apply_ops(h: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        h.remove(name);
    }
    for (name, value) in &ops.set {
        h.insert(name.clone(), value.clone());
    }
}

/// A request ID the client sent that is safe to pass on and log.
pub fn acceptable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

/// 32 lowercase hex characters, like nginx's `$request_id`.
pub fn generate_request_id() -> HeaderValue {
    // IDs are made 64 at a time into one shared buffer, and each is a slice of
    // it: no allocation per request, and passing the value on (upstream
    // request, response, access log) only counts a reference.
    const PER_BLOCK: usize = 64;
    thread_local! {
        static IDS: std::cell::RefCell<(bytes::Bytes, usize)> =
            const { std::cell::RefCell::new((bytes::Bytes::new(), 0)) };
    }
    IDS.with_borrow_mut(|(block, next)| {
        if *next >= block.len() {
            *block = request_id_block(PER_BLOCK);
            *next = 0;
        }
        let id = block.slice(*next..*next + 32);
        *next += 32;
        debug_assert!(id.iter().all(u8::is_ascii_hexdigit));
        // SAFETY: hex digits only (ASCII, so UTF-8, all the function asks
        // for), which `HeaderValue` accepts: a check of each would cost more
        // than making the ID (debug builds check it still).
        unsafe { HeaderValue::from_maybe_shared_unchecked(id) }
    })
}

/// Each byte as two lowercase hex digits, the high nibble first.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    t
};

/// `n` request IDs of 32 lowercase hex characters, one after the other: a
/// byte's two digits at a time from a table (a word's 16 at once with shifts
/// and masks cost more).
fn request_id_block(n: usize) -> bytes::Bytes {
    let mut buf = vec![0u8; n * 32];
    for id in buf.chunks_exact_mut(32) {
        let bits = (u128::from(crate::rand::u64()) << 64) | u128::from(crate::rand::u64());
        id.copy_from_slice(&hex32(bits));
    }
    bytes::Bytes::from(buf)
}

/// `x` as 32 lowercase hex digits (`format!("{x:032x}")`).
#[inline]
fn hex32(x: u128) -> [u8; 32] {
    let mut out = [0; 32];
    for (pair, byte) in out.chunks_exact_mut(2).zip(x.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    out
}

/// Precomputed per connection: what the forwarding headers say about the peer.
pub struct PeerInfo {
    pub ip: IpAddr,
    /// The peer as an `X-Forwarded-For` element.
    pub xff: HeaderValue,
    /// The peer as a `Forwarded` `for=` value (IPv6 quoted and bracketed).
    pub forwarded_for: String,
    /// On an HTTPS connection: what the handshake settled.
    pub tls: Option<TlsInfo>,
    /// The last `Forwarded` value built without a previous one, and the
    /// forwarding fields written as lines of a head: they depend only on the
    /// connection, the Host and the client's version, which rarely change on
    /// one connection.
    forwarded: std::sync::Mutex<Option<ForwardedCache>>,
}

struct ForwardedCache {
    scheme: &'static str,
    host: Option<HeaderValue>,
    value: Option<HeaderValue>,
    /// The lines [`append_forwarding`] writes before the request ID's
    /// value, for `via` (empty: not written yet).
    lines: Vec<u8>,
    via: &'static str,
}

/// The TLS version and the server name (SNI) a client connected with.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    pub version: &'static str,
    pub sni: Option<std::sync::Arc<str>>,
}

impl TlsInfo {
    pub fn of(session: &rustls::ServerConnection) -> TlsInfo {
        let version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            Some(_) => "other",
            None => "",
        };
        TlsInfo {
            version,
            sni: session.server_name().map(std::sync::Arc::from),
        }
    }
}

impl PeerInfo {
    pub fn new(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let text = ip.to_string();
        let forwarded_for = match ip {
            IpAddr::V4(_) => text.clone(),
            IpAddr::V6(_) => format!("\"[{text}]\""),
        };
        PeerInfo {
            ip,
            xff: HeaderValue::from_str(&text)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            forwarded_for,
            tls: None,
            forwarded: std::sync::Mutex::new(None),
        }
    }

    /// The `Forwarded` element for this peer and a request to `host`, from the
    /// connection's cache when the scheme and host are those of the last one.
    fn forwarded_element(
        &self,
        scheme: &'static str,
        host: Option<&HeaderValue>,
    ) -> Option<HeaderValue> {
        self.with_cache(scheme, host, |c| c.value.clone())
    }

    /// Calls `f` with the forwarding fields (`X-Forwarded-For`, `-Proto`,
    /// `-Host`, `Forwarded`, `Via`) for this peer and a request to `host`,
    /// as lines of a head, and the request ID's name after them: from the
    /// connection's cache when the scheme, host and `via` are those of the
    /// last request, so that a request's head takes them with one copy.
    fn with_forwarding_lines<R>(
        &self,
        scheme: &'static str,
        host: Option<&HeaderValue>,
        via: &'static str,
        f: impl FnOnce(&[u8]) -> R,
    ) -> R {
        self.with_cache(scheme, host, |c| {
            // The same literal each time, in practice: told by its address
            // first.
            if c.lines.is_empty() || !(std::ptr::eq(c.via, via) || c.via == via) {
                c.lines.clear();
                write_forwarding_lines(&mut c.lines, self, scheme, host, c.value.as_ref(), via);
                c.via = via;
            }
            f(&c.lines)
        })
    }

    /// Calls `f` with the connection's cache, made afresh unless its scheme
    /// and host are `scheme` and `host`. The lock is the connection's own:
    /// only the streams of one HTTP/2 connection share it.
    fn with_cache<R>(
        &self,
        scheme: &'static str,
        host: Option<&HeaderValue>,
        f: impl FnOnce(&mut ForwardedCache) -> R,
    ) -> R {
        // A panic while it was held left at worst a stale entry: it is checked
        // as any other.
        let mut cache = self
            .forwarded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cache = match &mut *cache {
            Some(c)
                if (std::ptr::eq(c.scheme, scheme) || c.scheme == scheme)
                    && c.host.as_ref().map(HeaderValue::as_bytes)
                        == host.map(HeaderValue::as_bytes) =>
            {
                c
            }
            slot => slot.insert(ForwardedCache {
                scheme,
                // A copy: the request's value may be a slice of the buffer its
                // head was read into, which the connection would then keep
                // while idle.
                host: host.and_then(|h| HeaderValue::from_bytes(h.as_bytes()).ok()),
                value: forwarded_value(None, self, scheme, host),
                lines: Vec::new(),
                via: "",
            }),
        };
        f(cache)
    }
}

/// A `Forwarded` value (RFC 7239): `prev` extended with this hop's element.
fn forwarded_value(
    prev: Option<&[u8]>,
    peer: &PeerInfo,
    scheme: &'static str,
    host: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    let mut fwd: Vec<u8> = Vec::with_capacity(96);
    if let Some(prev) = prev {
        fwd.extend_from_slice(prev);
        fwd.extend_from_slice(b", ");
    }
    fwd.extend_from_slice(b"for=");
    fwd.extend_from_slice(peer.forwarded_for.as_bytes());
    fwd.extend_from_slice(b";proto=");
    fwd.extend_from_slice(scheme.as_bytes());
    if let Some(host) = host.map(|v| v.as_bytes())
        && !host.is_empty()
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(b))
    {
        fwd.extend_from_slice(b";host=");
        if host.contains(&b':') {
            fwd.push(b'"');
            fwd.extend_from_slice(host);
            fwd.push(b'"');
        } else {
            fwd.extend_from_slice(host);
        }
    }
    value_from(fwd)
}

/// Adds X-Forwarded-For/Proto/Host, Forwarded and Via. A trusted peer's own
/// forwarding headers are kept and extended; anyone else's are replaced.
///
/// `may_hold_added`: whether `h` may hold one of the names the proxy adds (see
/// [`Present::added`]); without, none is looked up: each lookup hashes its
/// name, and a trusted peer's request paid five of them for nothing.
pub fn add_forwarding(
    h: &mut HeaderMap,
    peer: &PeerInfo,
    trusted: bool,
    scheme: &'static str,
    host: Option<&HeaderValue>,
    via: &'static str,
    may_hold_added: bool,
) {
    // What the request holds of a field the proxy adds (not looked up when
    // it holds none).
    fn held<'h>(h: &'h HeaderMap, name: &HeaderName, look: bool) -> Option<&'h HeaderValue> {
        look.then(|| h.get(name)).flatten()
    }
    // X-Forwarded-For: an untrusted peer's own is replaced without a look.
    match trusted
        .then(|| held(h, &X_FORWARDED_FOR, may_hold_added))
        .flatten()
    {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + peer.xff.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer.xff.as_bytes());
            if let Some(v) = value_from(v) {
                h.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        None => {
            h.insert(X_FORWARDED_FOR.clone(), peer.xff.clone());
        }
    }
    if !(trusted && held(h, &X_FORWARDED_PROTO, may_hold_added).is_some()) {
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    }
    if !(trusted && held(h, &X_FORWARDED_HOST, may_hold_added).is_some()) {
        match host {
            Some(v) => {
                h.insert(X_FORWARDED_HOST.clone(), v.clone());
            }
            None if may_hold_added => {
                h.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
    }
    // Forwarded (RFC 7239)
    let fwd = match trusted
        .then(|| held(h, &FORWARDED, may_hold_added))
        .flatten()
    {
        Some(prev) => forwarded_value(Some(prev.as_bytes()), peer, scheme, host),
        None => peer.forwarded_element(scheme, host),
    };
    if let Some(v) = fwd {
        h.insert(FORWARDED.clone(), v);
    }
    // Via
    match held(h, &header::VIA, may_hold_added) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + via.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(via.as_bytes());
            if let Some(v) = value_from(v) {
                h.insert(header::VIA, v);
            }
        }
        None => {
            h.insert(header::VIA, HeaderValue::from_static(via));
        }
    }
}

/// The names of the fields the proxy adds to a forwarded request.
fn is_added_name(n: &HeaderName) -> bool {
    n == X_FORWARDED_FOR
        || n == X_FORWARDED_PROTO
        || n == X_FORWARDED_HOST
        || n == FORWARDED
        || n == header::VIA
        || n == X_REQUEST_ID
        || n == TRACEPARENT
}

/// Whether the fields the proxy adds can be written after the request's own
/// without going through its map (see `EncodedHead`): from an untrusted peer
/// nothing of the client's is extended, so with none of their names in the
/// request and none in the route's edits (which would otherwise run after
/// them), writing them last writes what inserting them would.
///
/// `may_hold_added`: whether the request's head had one of those names (see
/// [`Present::added`]); without, its names are not looked at.
pub fn can_append(h: &HeaderMap, trusted: bool, ops: &HeaderOps, may_hold_added: bool) -> bool {
    !trusted
        && ops.set.is_empty()
        && !ops.remove.iter().any(is_added_name)
        && (!may_hold_added || !h.keys().any(is_added_name))
}

/// Writes the fields [`add_forwarding`], the request ID and the traceparent
/// would put into a request that [`can_append`] allows, in the same order,
/// as lines of a head; calls `f` with them.
pub fn append_forwarding<R>(
    peer: &PeerInfo,
    scheme: &'static str,
    host: Option<&HeaderValue>,
    via: &'static str,
    request_id: &HeaderValue,
    traceparent: Option<&HeaderValue>,
    f: impl FnOnce(&Appended<'_>) -> R,
) -> R {
    peer.with_forwarding_lines(scheme, host, via, |forwarding| {
        f(&Appended {
            forwarding,
            request_id: request_id.as_bytes(),
            traceparent: traceparent.map(HeaderValue::as_bytes),
        })
    })
}

/// The lines [`append_forwarding`] writes, as the connection's cache holds
/// the forwarding ones: each a copy.
pub struct Appended<'a> {
    forwarding: &'a [u8],
    request_id: &'a [u8],
    traceparent: Option<&'a [u8]>,
}

impl Appended<'_> {
    /// How many bytes [`Appended::write`] writes.
    pub fn len(&self) -> usize {
        const TP: usize = "traceparent: \r\n".len();
        self.forwarding.len()
            + self.request_id.len()
            + 2
            + self.traceparent.map_or(0, |t| TP + t.len())
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        use crate::upstream::h1::conn::put_field;
        // The forwarding lines end with the request ID's name.
        out.extend_from_slice(self.forwarding);
        out.extend_from_slice(self.request_id);
        out.extend_from_slice(b"\r\n");
        if let Some(tp) = self.traceparent {
            put_field(out, b"traceparent", tp);
        }
    }
}

/// The forwarding fields of [`append_forwarding`], then the request ID's
/// name; `forwarded`: this hop's `Forwarded` element.
fn write_forwarding_lines(
    out: &mut Vec<u8>,
    peer: &PeerInfo,
    scheme: &'static str,
    host: Option<&HeaderValue>,
    forwarded: Option<&HeaderValue>,
    via: &'static str,
) {
    use crate::upstream::h1::conn::put_field;
    put_field(out, b"x-forwarded-for", peer.xff.as_bytes());
    put_field(out, b"x-forwarded-proto", scheme.as_bytes());
    if let Some(v) = host {
        put_field(out, b"x-forwarded-host", v.as_bytes());
    }
    if let Some(v) = forwarded {
        put_field(out, b"forwarded", v.as_bytes());
    }
    put_field(out, b"via", via.as_bytes());
    out.extend_from_slice(b"x-request-id: ");
}

/// The value of a cookie in the request's Cookie headers.
pub fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    for v in h.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for pair in s.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == name
            {
                return Some(val.trim_matches('"'));
            }
        }
    }
    None
}

/// The value of a query parameter, as written (see [`percent_decode`]). The one
/// query parser: the request path (`hash_key: query:NAME`) and the admin API use it.
pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Decodes `%XX` escapes (and leaves a malformed one as it is).
pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    /// The hop-by-hop names `is_hop_by_hop` must know, listed apart from it.
    const HOP_BY_HOP: [&str; 9] = [
        "connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "keep-alive",
        "proxy-connection",
        "http2-settings",
    ];

    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("%5B%3A%3A1%5D%3A80"), "[::1]:80");
        assert_eq!(percent_decode("10.0.0.1:80"), "10.0.0.1:80");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%4"), "end%4");
        assert_eq!(percent_decode("%é1"), "%é1");
        assert_eq!(
            query_param("a=1&pool=my%20pool", "pool").map(percent_decode),
            Some("my pool".into())
        );
    }

    #[test]
    fn head_facts_note_what_the_phases_look_up() {
        let facts = |fields: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in fields {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            HeadFacts::of(&h)
        };
        assert_eq!(facts(&[]), HeadFacts::default());
        let f = facts(&[("x-other", "1"), ("host", "a"), ("Host", "b")]);
        assert_eq!(f.host, Some(HeaderValue::from_static("a")));
        assert_eq!((f.hosts, f.present), (2, Present::default()));
        assert_eq!(facts(&[("host", "a"); 5]).hosts, 2);
        let f = facts(&[("x-request-id", "r")]);
        assert!(f.present.request_id && f.present.added && !f.present.hop_by_hop);
        for added in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
            "via",
            "traceparent",
        ] {
            let f = facts(&[(added, "x")]);
            assert!(f.present.added && !f.present.request_id, "{added}");
        }
        for hop in HOP_BY_HOP {
            let f = facts(&[(hop, "x")]);
            assert!(f.present.hop_by_hop && !f.present.added, "{hop}");
        }
        let f = facts(&[("user-agent", "u"), ("referer", "r")]);
        assert!(f.present.user_agent && f.present.referer && f.host.is_none());
    }

    /// The answer's raw path (`proxy::spliced`) removes the names its parser
    /// marks hop-by-hop; they must be this set exactly.
    #[test]
    fn the_raw_answers_hop_by_hop_names_are_this_set() {
        use crate::upstream::h1::response::Known;
        for k in Known::ALL {
            let name = HeaderName::from_static(k.lowercase());
            assert_eq!(k.is_hop_by_hop(), is_hop_by_hop(&name), "{k:?}");
        }
        for name in HOP_BY_HOP {
            let n = HeaderName::from_static(name);
            assert!(is_hop_by_hop(&n), "{name}");
            assert!(Known::of(name.as_bytes()).is_hop_by_hop(), "{name}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn forwarding_untrusted_replaces() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(&FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        let peer = PeerInfo::new("10.1.2.3".parse().unwrap());
        let host = HeaderValue::from_static("example.com");
        add_forwarding(
            &mut h,
            &peer,
            false,
            "http",
            Some(&host),
            "1.1 fulcrum",
            true,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(h[&FORWARDED], "for=10.1.2.3;proto=http;host=example.com");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        assert_eq!(h[header::VIA], "1.1 fulcrum");
    }

    #[test]
    fn forwarding_trusted_appends() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(header::VIA, HeaderValue::from_static("1.1 edge"));
        let peer = PeerInfo::new("::1".parse().unwrap());
        add_forwarding(&mut h, &peer, true, "http", None, "1.1 fulcrum", true);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, ::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&FORWARDED], "for=\"[::1]\";proto=http");
        assert_eq!(h[header::VIA], "1.1 edge, 1.1 fulcrum");
    }

    #[test]
    fn forwarding_without_a_look_adds_what_looking_adds() {
        let peer = PeerInfo::new("10.1.2.3".parse().unwrap());
        let host = HeaderValue::from_static("a.example");
        for (trusted, host) in [(true, Some(&host)), (true, None), (false, Some(&host))] {
            let mut looked = HeaderMap::new();
            looked.insert(header::HOST, HeaderValue::from_static("a.example"));
            looked.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            let mut unlooked = looked.clone();
            add_forwarding(
                &mut looked,
                &peer,
                trusted,
                "http",
                host,
                "1.1 fulcrum",
                true,
            );
            add_forwarding(
                &mut unlooked,
                &peer,
                trusted,
                "http",
                host,
                "1.1 fulcrum",
                false,
            );
            // The same fields in the same order: the same bytes on the wire.
            let fields = |h: &HeaderMap| {
                h.iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                fields(&looked),
                fields(&unlooked),
                "trusted {trusted}, host {host:?}"
            );
            assert_eq!(unlooked[&X_FORWARDED_FOR], "10.1.2.3");
            assert_eq!(unlooked[header::VIA], "1.1 fulcrum");
        }
        // Told the request may hold them, a trusted peer's are extended.
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.insert(header::VIA, HeaderValue::from_static("1.1 edge"));
        add_forwarding(&mut h, &peer, true, "http", None, "1.1 fulcrum", true);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 10.1.2.3");
        assert_eq!(h[header::VIA], "1.1 edge, 1.1 fulcrum");
    }

    #[test]
    fn forwarded_follows_the_host_on_one_connection() {
        let peer = PeerInfo::new("10.1.2.3".parse().unwrap());
        let a = HeaderValue::from_static("a.example");
        let b = HeaderValue::from_static("b.example:8080");
        for (host, scheme, want) in [
            (Some(&a), "http", "for=10.1.2.3;proto=http;host=a.example"),
            (Some(&a), "http", "for=10.1.2.3;proto=http;host=a.example"),
            (
                Some(&b),
                "http",
                "for=10.1.2.3;proto=http;host=\"b.example:8080\"",
            ),
            (None, "http", "for=10.1.2.3;proto=http"),
            (Some(&a), "https", "for=10.1.2.3;proto=https;host=a.example"),
        ] {
            let mut h = HeaderMap::new();
            add_forwarding(&mut h, &peer, false, scheme, host, "1.1 fulcrum", true);
            assert_eq!(h[&FORWARDED], want);
        }
    }

    #[test]
    fn appended_forwarding_writes_what_inserting_would() {
        use crate::upstream::h1::conn::encode_head;
        // One connection's peer: its cache of the lines follows the host, the
        // scheme and the client's version from one request to the next.
        let peer = PeerInfo::new("10.1.2.3".parse().unwrap());
        let a = HeaderValue::from_static("a.example:8080");
        let b = HeaderValue::from_static("b.example");
        let id = HeaderValue::from_static("0123");
        let tp = HeaderValue::from_static("00-01-02-01");
        let none = HeaderOps::default();
        for (host, scheme, via, tp) in [
            (Some(&a), "https", "1.1 fulcrum", Some(&tp)),
            (Some(&a), "https", "1.1 fulcrum", None),
            (None, "https", "1.1 fulcrum", None),
            (Some(&a), "https", "1.1 fulcrum", None),
            (Some(&b), "https", "1.1 fulcrum", Some(&tp)),
            (Some(&b), "http", "1.1 fulcrum", None),
            (Some(&b), "http", "1.0 fulcrum", None),
            (Some(&b), "http", "2 fulcrum", None),
            (Some(&a), "http", "2 fulcrum", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("a.example:8080"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            assert!(can_append(&h, false, &none, true));
            // Twice: the second from the connection's cache.
            let mut heads = [0, 1].map(|_| {
                append_forwarding(&peer, scheme, host, via, &id, tp, |f| {
                    let (head, range) =
                        encode_head(&http::Method::GET, "/", &h, f.len(), |out| f.write(out));
                    assert_eq!(range.len(), f.len());
                    head
                })
            });
            assert_eq!(heads[0], heads[1]);
            let appended = std::mem::take(&mut heads[0]);
            assert_eq!(appended.len(), appended.capacity(), "an exact length");
            add_forwarding(&mut h, &peer, false, scheme, host, via, true);
            h.insert(&X_REQUEST_ID, id.clone());
            if let Some(tp) = tp {
                h.insert(&TRACEPARENT, tp.clone());
            }
            let (inserted, _) = encode_head(&http::Method::GET, "/", &h, 0, |_| {});
            assert_eq!(
                String::from_utf8_lossy(&appended),
                String::from_utf8_lossy(&inserted)
            );
        }
    }

    #[test]
    fn appending_only_where_it_changes_nothing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        let none = HeaderOps::default();
        assert!(can_append(&h, false, &none, true));
        assert!(
            !can_append(&h, true, &none, true),
            "a trusted peer's are extended"
        );
        let sets = HeaderOps {
            set: vec![(header::ACCEPT, HeaderValue::from_static("*/*"))],
            remove: vec![],
        };
        assert!(
            !can_append(&h, false, &sets, true),
            "edits run after the fields"
        );
        let removes = HeaderOps {
            set: vec![],
            remove: vec![X_REQUEST_ID.clone()],
        };
        assert!(!can_append(&h, false, &removes, true));
        let others = HeaderOps {
            set: vec![],
            remove: vec![header::ACCEPT],
        };
        assert!(can_append(&h, false, &others, true));
        for name in [
            &X_FORWARDED_FOR,
            &FORWARDED,
            &X_REQUEST_ID,
            &TRACEPARENT,
            &header::VIA,
        ] {
            let mut with = h.clone();
            with.insert(name, HeaderValue::from_static("x"));
            assert!(!can_append(&with, false, &none, true), "{name}");
        }
    }

    #[test]
    fn hex_digits_are_those_of_format() {
        let mut x = 0x0123_4567_89ab_cdefu64;
        for v in [0, 9, 10, 15, 16, u128::MAX, 0xa0a0_a0a0_0909_0909 << 64] {
            assert_eq!(hex32(v), format!("{v:032x}").as_bytes(), "{v:x}");
        }
        for _ in 0..10_000 {
            x = crate::rand::mix(x);
            let v = (u128::from(x) << 64) | u128::from(crate::rand::mix(!x));
            assert_eq!(hex32(v), format!("{v:032x}").as_bytes(), "{v:x}");
        }
    }

    #[test]
    fn request_ids_are_distinct_hex() {
        let ids: std::collections::HashSet<Vec<u8>> = (0..200)
            .map(|_| generate_request_id().as_bytes().to_vec())
            .collect();
        assert_eq!(ids.len(), 200);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.iter().all(|b| b"0123456789abcdef".contains(b)));
        }
    }

    #[test]
    fn host_values() {
        for ok in [
            "a.example",
            "a.example:8080",
            "127.0.0.1",
            "[::1]:80",
            "[2001:db8::1]",
            "xn--bcher-kva.example",
            "",
            ":80",
            "a:",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "127.0.0.1/evil@x",
            "a b",
            "user@a.example",
            "a.example:80x",
            "a.example:123456",
            "[::1",
            "[::1]x",
            "[zz]",
            "a\tb",
            "caf\u{e9}",
            "a:1:2",
            "a:b",
            "::1",
            "a.example:8x",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn h2c_upgrade_and_padded_values() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("foo, H2C"));
        assert!(upgrade_is_h2c(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!upgrade_is_h2c(&h));
        assert!(!has_padded_value(&h));
        h.insert("x-a", HeaderValue::from_static(" lead"));
        assert!(has_padded_value(&h));
    }

    #[test]
    fn cookies_and_queries() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; user=bob"));
        assert_eq!(cookie(&h, "user"), Some("bob"));
        assert_eq!(cookie(&h, "nope"), None);
        assert_eq!(query_param("x=1&user=al&y", "user"), Some("al"));
        assert_eq!(query_param("x=1&y", "y"), Some(""));
    }
}
