//! Encoding a response head and its body framing the way hyper's HTTP/1
//! server does, so that a client sees the same bytes whichever path served it.

use super::head::has_token;
use crate::proxy::body::ProxyBody;
use crate::upstream::h1::response::{Known, Line, RawHead, decimal};
use http::header::{self, HeaderName};
use http::{HeaderMap, StatusCode, Version};
use http_body::Body;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the body follows the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (0: no body at all).
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 response of unknown length).
    UntilClose,
}

/// The head as written, and what it decided.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) framing: Framing,
    /// The connection closes after this response.
    pub(crate) close: bool,
    /// The trailer fields the response announced (sent only when the client
    /// asked for trailers and the body is chunked).
    pub(crate) trailer_names: Vec<HeaderName>,
}

/// A response head hyper would refuse to write (the connection then closes).
#[derive(Debug)]
pub(crate) struct BadHead;

/// What the response is answering.
pub(crate) struct Answering {
    /// The request was a HEAD: no body, whatever the headers say.
    pub(crate) head_method: bool,
    /// The connection closes after this response (the client's `Connection:
    /// close`, or a stop): the response says so.
    pub(crate) close: bool,
}

/// Writes the status line and the headers of `status`/`headers` into `out`:
/// a backend's fields left raw (`ProxyBody::raw_head`, already through the
/// response rules) first, then those of the map (empty then).
pub(crate) fn encode_head(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    body: &ProxyBody,
    req: &Answering,
    out: &mut Vec<u8>,
) -> Result<Encoded, BadHead> {
    encode_parts(version, status, headers, body.raw_head(), body, req, out)
}

/// [`encode_head`] with the raw fields given apart from the body.
fn encode_parts(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    raw: Option<&RawHead>,
    body: &ProxyBody,
    req: &Answering,
    out: &mut Vec<u8>,
) -> Result<Encoded, BadHead> {
    if status.is_informational() {
        // Only a 101 after an upgrade is legitimate, and upgrades go to hyper.
        return Err(BadHead);
    }
    let known = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    status_line(version, status, out);
    let can_chunk = !req.head_method
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        && version != Version::HTTP_10;
    let mut w = Fields {
        known,
        head_method: req.head_method,
        can_chunk,
        framing: None,
        close: req.close,
        said_close: false,
        wrote_date: false,
        trailer_names: Vec::new(),
        te_values: Vec::new(),
        head: &[],
        run: (0, 0),
    };
    if let Some(raw) = raw {
        w.head = raw.bytes();
        for line in &raw.lines {
            match line {
                // Most of a backend's lines: copied as they are, in runs.
                Line::Backend(f) if f.plain && !f.known.is_read_by_the_writer() => {
                    w.wrote_date |= f.known == Known::Date;
                    w.copy_line(f.line(), out);
                }
                // The length, as it usually comes: read here, without the
                // call and the look at the name that `field` takes.
                Line::Backend(f) if f.plain && f.known == Known::ContentLength => {
                    if w.content_length(raw.value(f))? {
                        w.copy_line(f.line(), out);
                    }
                }
                Line::Backend(f) => {
                    let line = f.plain.then(|| f.line());
                    w.field(Name::Raw(f.known, line), raw.name(f), raw.value(f), out)?;
                }
                Line::RequestId => {
                    if let Some(v) = &raw.request_id {
                        w.ours(b"x-request-id: ", v.as_bytes(), out);
                    }
                }
                Line::SetCookie => {
                    if let Some(v) = &raw.set_cookie {
                        w.ours(b"set-cookie: ", v.as_bytes(), out);
                    }
                }
            }
        }
    }
    for (name, value) in headers {
        let n = name.as_str().as_bytes();
        w.field(Name::Map(name), n, value.as_bytes(), out)?;
    }
    w.finish(status, version, out)
}

/// A field's name as the writer gets it: from a map, or from a backend's
/// head (both lowercase).
#[derive(Clone, Copy)]
enum Name<'a> {
    Map(&'a HeaderName),
    /// Which name it is, and where the field's whole line lies in the head
    /// when it is spelled there as it is written (`Field::plain`).
    Raw(Known, Option<(usize, usize)>),
}

/// The names the writer looks at.
#[derive(PartialEq, Eq)]
enum Kind {
    ContentLength,
    TransferEncoding,
    Connection,
    Date,
    Trailer,
    Other,
}

impl Name<'_> {
    // Inlined: a call copied the name to the stack for each field.
    #[inline(always)]
    fn kind(self) -> Kind {
        match self {
            Name::Map(n) => match *n {
                header::CONTENT_LENGTH => Kind::ContentLength,
                header::TRANSFER_ENCODING => Kind::TransferEncoding,
                header::CONNECTION => Kind::Connection,
                header::DATE => Kind::Date,
                header::TRAILER => Kind::Trailer,
                _ => Kind::Other,
            },
            Name::Raw(known, _) => match known {
                Known::ContentLength => Kind::ContentLength,
                Known::TransferEncoding => Kind::TransferEncoding,
                Known::Connection => Kind::Connection,
                Known::Date => Kind::Date,
                Known::Trailer => Kind::Trailer,
                _ => Kind::Other,
            },
        }
    }
}

impl Known {
    /// A name whose value the writer reads (see [`Kind`]); a `Date` is
    /// only noted.
    fn is_read_by_the_writer(self) -> bool {
        matches!(
            self,
            Known::ContentLength | Known::TransferEncoding | Known::Connection | Known::Trailer
        )
    }
}

/// The fields as they are written, and what they decide.
struct Fields<'a> {
    /// The body's length when it is known.
    known: Option<u64>,
    head_method: bool,
    can_chunk: bool,
    framing: Option<Framing>,
    close: bool,
    said_close: bool,
    wrote_date: bool,
    trailer_names: Vec<HeaderName>,
    te_values: Vec<&'a [u8]>,
    /// The backend's head (empty without one), and its lines waiting to be
    /// copied, as one range: lines that follow one another in it go out as
    /// one copy.
    head: &'a [u8],
    run: (usize, usize),
}

impl<'a> Fields<'a> {
    /// A backend's line, copied as it is.
    #[inline(always)]
    fn copy_line(&mut self, (start, end): (usize, usize), out: &mut Vec<u8>) {
        if start != self.run.1 {
            copy(self.head, self.run, out);
            self.run.0 = start;
        }
        self.run.1 = end;
    }

    /// One of the proxy's own fields (`name` with its colon and space).
    fn ours(&mut self, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
        copy(self.head, std::mem::take(&mut self.run), out);
        out.extend_from_slice(name);
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }

    /// A `Content-Length` field with `value`: the framing it sets, and
    /// whether it is written.
    #[inline(always)]
    fn content_length(&mut self, value: &[u8]) -> Result<bool, BadHead> {
        let Some(n) = content_length(value) else {
            return Err(BadHead);
        };
        match self.framing {
            Some(Framing::Length(prev)) if prev == n => return Ok(false),
            Some(_) => return Err(BadHead),
            None => {}
        }
        // An empty body drops the header (a HEAD keeps it: it describes the GET).
        if self.known == Some(0) && !self.head_method {
            return Ok(false);
        }
        self.framing = Some(Framing::Length(self.known.unwrap_or(n)));
        Ok(true)
    }

    fn field(
        &mut self,
        name: Name<'_>,
        name_bytes: &[u8],
        value: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<(), BadHead> {
        match name.kind() {
            Kind::ContentLength => {
                if !self.content_length(value)? {
                    return Ok(());
                }
            }
            Kind::TransferEncoding => {
                if matches!(self.framing, Some(Framing::Length(_))) {
                    return Err(BadHead);
                }
                if self.can_chunk {
                    self.framing = Some(Framing::Chunked);
                    self.te_values.push(value);
                }
                return Ok(());
            }
            Kind::Connection if has_token(value, b"close") => {
                self.close = true;
                self.said_close = true;
            }
            Kind::Date => self.wrote_date = true,
            Kind::Trailer => {
                if !self.can_chunk {
                    return Ok(());
                }
                self.trailer_names.extend(
                    value
                        .split(|&b| b == b',')
                        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok()),
                );
            }
            Kind::Connection | Kind::Other => {}
        }
        if let Name::Raw(_, Some(line)) = name {
            self.copy_line(line, out);
            return Ok(());
        }
        copy(self.head, std::mem::take(&mut self.run), out);
        out.extend_from_slice(name_bytes);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The fields the writer adds, the blank line, and what was decided.
    fn finish(
        self,
        status: StatusCode,
        version: Version,
        out: &mut Vec<u8>,
    ) -> Result<Encoded, BadHead> {
        copy(self.head, self.run, out);
        if !self.te_values.is_empty() {
            transfer_encoding(&self.te_values, out);
        }
        let can_have_length = !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
        let framing = match self.framing {
            Some(f) => f,
            None => match self.known {
                Some(0) => {
                    if can_have_length && !self.head_method {
                        out.extend_from_slice(b"content-length: 0\r\n");
                    }
                    Framing::Length(0)
                }
                Some(n) => {
                    if can_have_length {
                        out.extend_from_slice(b"content-length: ");
                        push_decimal(n, out);
                        out.extend_from_slice(b"\r\n");
                        Framing::Length(n)
                    } else {
                        Framing::Length(0)
                    }
                }
                None if self.can_chunk => {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    Framing::Chunked
                }
                None => Framing::UntilClose,
            },
        };
        if self.close && !self.said_close && version != Version::HTTP_10 {
            out.extend_from_slice(b"connection: close\r\n");
        }
        if !self.wrote_date {
            out.extend_from_slice(b"date: ");
            with_date(|d| out.extend_from_slice(d));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let no_body = self.head_method || !can_have_length;
        let framing = if no_body { Framing::Length(0) } else { framing };
        let close = self.close || framing == Framing::UntilClose || version == Version::HTTP_10;
        Ok(Encoded {
            framing,
            close,
            trailer_names: self.trailer_names,
        })
    }
}

/// The `Transfer-Encoding` field of a chunked body: the backend's codings,
/// then `chunked` unless it came last.
fn transfer_encoding(te_values: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(b"transfer-encoding: ");
    for (i, v) in te_values.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v);
    }
    let last = te_values.last().map_or(&b""[..], |v| v);
    let last_coding = last.rsplit(|&b| b == b',').next().unwrap_or(b"");
    if !last_coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
        out.extend_from_slice(b", chunked");
    }
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value as hyper reads it (a `u64` after trimming
/// whitespace, a `+` allowed); plain digits without the `str` round trip.
#[inline]
fn content_length(value: &[u8]) -> Option<u64> {
    decimal(value).or_else(|| content_length_str(value))
}

/// [`content_length`] for values not of plain digits; apart, so that the
/// usual case is inlined without it.
#[inline(never)]
fn content_length_str(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// The head's bytes in `start..end`, a run of whole lines.
fn copy(head: &[u8], (start, end): (usize, usize), out: &mut Vec<u8>) {
    out.extend_from_slice(head.get(start..end).unwrap_or_default());
}

fn push_decimal(n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn status_line(version: Version, status: StatusCode, out: &mut Vec<u8>) {
    if version == Version::HTTP_11 && status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    // A reason is always written: some clients expect one.
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The line before a chunk of `len` bytes (`len` in hex, CRLF).
pub(crate) fn chunk_line(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(len >> (i * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with the announced trailer fields when they are wanted.
pub(crate) fn last_chunk(trailers: Option<&HeaderMap>, allowed: &[HeaderName], out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(t) = trailers {
        for (name, value) in t.iter().filter(|(n, _)| allowed.contains(n)) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [b' '; 29])) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut d = cell.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(now);
            let n = text.len().min(29);
            d.1[..n].copy_from_slice(&text.as_bytes()[..n]);
            d.0 = secs;
        }
        f(&d.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::h1::response::lowercase_words;
    use http::HeaderValue;

    fn encode(
        status: u16,
        headers: &[(&str, &str)],
        body: ProxyBody,
        head_method: bool,
        close: bool,
    ) -> (String, Result<Encoded, BadHead>) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        let req = Answering { head_method, close };
        let r = encode_head(
            Version::HTTP_11,
            StatusCode::from_u16(status).unwrap(),
            &map,
            &body,
            &req,
            &mut out,
        );
        (String::from_utf8(out).unwrap(), r)
    }

    fn without_date(s: &str) -> String {
        s.lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_full_body_gets_its_length_and_a_date() {
        let (s, r) = encode(200, &[("x-a", "1")], ProxyBody::text("hello"), false, false);
        let r = r.unwrap();
        assert_eq!(r.framing, Framing::Length(5));
        assert!(!r.close);
        assert!(
            s.contains("\r\ndate: ") && s.ends_with("GMT\r\n\r\n"),
            "{s}"
        );
        assert_eq!(
            without_date(&s),
            "HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 5\n"
        );
    }

    #[test]
    fn empty_bodies_and_bodiless_statuses() {
        let (s, r) = encode(404, &[], ProxyBody::empty(), false, true);
        assert_eq!(r.unwrap().framing, Framing::Length(0));
        assert_eq!(
            without_date(&s),
            "HTTP/1.1 404 Not Found\ncontent-length: 0\nconnection: close\n"
        );
        let (s, r) = encode(304, &[("etag", "\"x\"")], ProxyBody::empty(), false, false);
        assert_eq!(r.unwrap().framing, Framing::Length(0));
        assert_eq!(without_date(&s), "HTTP/1.1 304 Not Modified\netag: \"x\"\n");
        // A HEAD keeps the length of what a GET would get, and sends nothing.
        let (s, r) = encode(
            200,
            &[("content-length", "42")],
            ProxyBody::empty(),
            true,
            false,
        );
        assert_eq!(r.unwrap().framing, Framing::Length(0));
        assert!(s.contains("content-length: 42\r\n"), "{s}");
    }

    #[test]
    fn connection_close_in_the_response_closes() {
        let (s, r) = encode(
            400,
            &[("connection", "close")],
            ProxyBody::text("x"),
            false,
            false,
        );
        assert!(r.unwrap().close);
        assert_eq!(s.matches("connection").count(), 1, "{s}");
    }

    #[test]
    fn conflicting_lengths_are_refused() {
        let (_, r) = encode(
            200,
            &[("content-length", "1"), ("content-length", "2")],
            ProxyBody::text("x"),
            false,
            false,
        );
        assert!(r.is_err());
        let (_, r) = encode(100, &[], ProxyBody::empty(), false, false);
        assert!(r.is_err());
    }

    /// A head as written (dates made equal), and what the writer decided.
    type Written = (String, Option<(Framing, bool, Vec<HeaderName>)>);

    /// A backend's head written the way the map path writes it (the response
    /// rules of `pipeline::response::respond` over the map) and the way the
    /// raw path does; the bytes (dates aside) and the decisions.
    fn both_ways(
        head: &[u8],
        body: fn() -> ProxyBody,
        req: &Answering,
        cookie: Option<&str>,
    ) -> [Written; 2] {
        use crate::proxy::headers as hdr;
        use crate::upstream::h1::response::{Scratch, parse};
        let request_id = HeaderValue::from_static("ours");
        let cookie = cookie.map(|c| HeaderValue::from_str(c).unwrap());
        let decided =
            |r: Result<Encoded, BadHead>| r.ok().map(|e| (e.framing, e.close, e.trailer_names));
        let dateless = |out: Vec<u8>| {
            let s = String::from_utf8_lossy(&out).into_owned();
            s.split("\r\n")
                .map(|l| {
                    if l.starts_with("date: ") {
                        "date: -"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\r\n")
        };
        let mut buf = bytes::BytesMut::from(head);
        let mapped = parse(&mut buf, &mut Scratch::default(), false)
            .unwrap()
            .unwrap();
        let mut headers = mapped.headers;
        if headers.keys().any(|n| n == header::TRANSFER_ENCODING) {
            headers.remove(header::CONTENT_LENGTH);
        }
        hdr::remove_hop_by_hop(&mut headers, false);
        hdr::remove_proxy_auth(&mut headers);
        headers.insert(hdr::X_REQUEST_ID.clone(), request_id.clone());
        if let Some(c) = cookie.clone() {
            headers.append(header::SET_COOKIE, c);
        }
        let mut map_out = Vec::new();
        let (v, s) = (Version::HTTP_11, mapped.status);
        let from_map = encode_parts(v, s, &headers, None, &body(), req, &mut map_out);
        let mut buf = bytes::BytesMut::from(head);
        let raw = parse(&mut buf, &mut Scratch::default(), true)
            .unwrap()
            .unwrap();
        let mut raw = raw.raw.unwrap();
        crate::proxy::spliced::splice(&mut raw, request_id, cookie);
        let mut raw_out = Vec::new();
        let empty = HeaderMap::new();
        let from_raw = encode_parts(v, s, &empty, Some(&raw), &body(), req, &mut raw_out);
        // A head refused halfway is never sent (the connection closes): its
        // bytes are not compared.
        let written = |out: Vec<u8>, r: &Result<Encoded, BadHead>| match r {
            Ok(_) => dateless(out),
            Err(_) => String::new(),
        };
        [
            (written(map_out, &from_map), decided(from_map)),
            (written(raw_out, &from_raw), decided(from_raw)),
        ]
    }

    #[test]
    fn raw_fields_are_written_as_the_map_would_be() {
        let heads: [&[u8]; 25] = [
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: s\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nY: 2\r\nx-a: 3\r\nSet-Cookie: a=1\r\nZ: 4\r\nSET-COOKIE: b=2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: X-A, close\r\nX-A: 1\r\nX-B: 2\r\nKeep-Alive: timeout=5\r\nX-C: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-B: 1\r\nConnection: x-b\r\nX-C: 2\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nClose: 1\r\nX-A: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: x-a, \xc3\xa9\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 10\r\nX: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nTrailer: x-sum\r\nTransfer-Encoding: gzip, chunked\r\nB: 2\r\n\r\n",
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nWWW-Authenticate: Basic\r\nProxy-Authentication-Info: x\r\nA: 1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nX-Request-Id: theirs\r\nB: 2\r\nx-request-id: again\r\nC: 3\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nServer: old\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nA: 1\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 9\r\nDate: d\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nTE: trailers\r\nHTTP2-Settings: x\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: x\r\nA: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nA: 1\r\nB: 2\r\nC: 3\r\nKeep-Alive: t\r\nD: 4\r\nConnection: E, keep-alive\r\nE: 5\r\nF: 6\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nconnection: Close\r\nRetry-After: 1\r\nSet-Cookie: x=1\r\n\r\n",
            // Lines not spelled as they are written: each is written anew.
            b"HTTP/1.1 200 OK\r\nA:1\r\nB:  2\r\nC: 3  \r\nD:\t4\r\nE: 5\t\r\nF: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\nServer: s\nContent-Length: 5\nX-A: 1\n\n",
            b"HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\nC: 3\r\nD: 4\n\r\n",
            b"HTTP/1.1 200 OK\r\nEmpty:\r\nE2: \r\nE3:  \r\nSERVER: S\r\nX-Mixed-CASE: V\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: s\r\nDate: d\r\nContent-Type: t\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX-Request-Id: r\r\nSet-Cookie: c=1\r\nVary: v\r\n\r\n",
        ];
        let bodies: [fn() -> ProxyBody; 2] = [|| ProxyBody::text("hello"), ProxyBody::empty];
        for head in heads {
            for body in bodies {
                for (head_method, close) in [(false, false), (true, false), (false, true)] {
                    for cookie in [None, Some("split=b; Path=/")] {
                        let req = Answering { head_method, close };
                        let [map, raw] = both_ways(head, body, &req, cookie);
                        let text = String::from_utf8_lossy(head);
                        assert_eq!(
                            map, raw,
                            "{text} head_method={head_method} close={close} cookie={cookie:?}"
                        );
                    }
                }
            }
        }
        // What the comparison saw, for one head: the backend's fields minus
        // hop-by-hop ones, in the map's order (each removal moved the last
        // name into its place), and ours.
        let [(written, _), _] = both_ways(
            heads[4],
            || ProxyBody::text("hello"),
            &Answering {
                head_method: false,
                close: false,
            },
            Some("s=1"),
        );
        assert_eq!(
            written,
            "HTTP/1.1 200 OK\r\nx-b: 2\r\nx-c: 3\r\nx-request-id: ours\r\nset-cookie: s=1\r\ncontent-length: 5\r\ndate: -\r\n\r\n"
        );
    }

    #[test]
    fn raw_fields_are_written_as_the_map_would_be_whatever_the_mix() {
        // Heads made of the names the rules care about, in every kind of
        // order and repetition, from a fixed pseudo-random sequence.
        const NAMES: [&str; 16] = [
            "Connection",
            "Keep-Alive",
            "Content-Length",
            "Transfer-Encoding",
            "X-Request-Id",
            "Set-Cookie",
            "Trailer",
            "TE",
            "Upgrade",
            "Proxy-Authenticate",
            "Proxy-Authentication-Info",
            "Date",
            "X-A",
            "x-b",
            "X-C",
            "Server",
        ];
        const CONNECTION: [&str; 6] = [
            "close",
            "keep-alive",
            "X-A",
            "x-b, close",
            "Upgrade, x-c",
            "te",
        ];
        let mut next = crate::rand::seeded(0x2545_f491_4f6c_dd1d_u64);
        for _ in 0..3000 {
            let mut head = String::from(
                [
                    "HTTP/1.1 200 OK\r\n",
                    "HTTP/1.0 200 OK\r\n",
                    "HTTP/1.1 204 No Content\r\n",
                ][next(3)],
            );
            for _ in 0..next(9) {
                let name = NAMES[next(NAMES.len())];
                let value = match name {
                    "Connection" => CONNECTION[next(CONNECTION.len())].to_string(),
                    "Content-Length" => ["5", "0", "7"][next(3)].to_string(),
                    "Transfer-Encoding" => ["chunked", "gzip"][next(2)].to_string(),
                    "Trailer" => "x-sum".to_string(),
                    _ => format!("v{}", next(100)),
                };
                // Mostly as a writer spells a line, sometimes not.
                let colon = [": ", ": ", ": ", ":", ":  ", ":\t"][next(6)];
                let end = ["\r\n", "\r\n", "\r\n", " \r\n", "\n"][next(5)];
                head.push_str(&format!("{name}{colon}{value}{end}"));
            }
            head.push_str("\r\n");
            let body: fn() -> ProxyBody = [|| ProxyBody::text("hello"), ProxyBody::empty][next(2)];
            let req = Answering {
                head_method: next(4) == 0,
                close: next(4) == 0,
            };
            let cookie = [None, Some("split=a")][next(2)];
            let [map, raw] = both_ways(head.as_bytes(), body, &req, cookie);
            assert_eq!(map, raw, "{head}");
        }
    }

    #[test]
    fn names_are_lowercased_eight_bytes_at_a_time() {
        for b in 0..=255u8 {
            for len in [1, 8, 13] {
                let mut name = vec![b; len];
                lowercase_words(&mut name);
                let c = if b < 0x80 {
                    b.to_ascii_lowercase()
                } else {
                    name[0]
                };
                assert!(name.iter().all(|&x| x == c), "{b:#x} {len}");
            }
        }
        let mut name = *b"X-Custom-HEADER-@[`{";
        lowercase_words(&mut name);
        assert_eq!(&name, b"x-custom-header-@[`{");
    }

    #[test]
    fn content_lengths_are_read_as_the_str_parse_reads_them() {
        for v in [
            "0",
            "13",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "+5",
            " 5 ",
            "5 ",
            "\t5",
            "-1",
            "",
            "5,5",
            "0x5",
            "5a",
        ] {
            let by_str = std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            assert_eq!(content_length(v.as_bytes()), by_str, "{v:?}");
        }
    }

    #[test]
    fn chunk_lines_and_the_last_chunk() {
        let mut out = Vec::new();
        chunk_line(0x1a2, &mut out);
        chunk_line(1, &mut out);
        assert_eq!(out, b"1a2\r\n1\r\n");
        let mut t = HeaderMap::new();
        t.insert("x-sum", HeaderValue::from_static("7"));
        t.insert("x-other", HeaderValue::from_static("8"));
        let mut out = Vec::new();
        last_chunk(Some(&t), &[HeaderName::from_static("x-sum")], &mut out);
        assert_eq!(out, b"0\r\nx-sum: 7\r\n\r\n");
    }
}
