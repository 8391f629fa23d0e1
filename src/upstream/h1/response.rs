//! An answer's head, parsed in place, and how its body is framed.

use super::Error;
use super::chunked::Decoder;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use std::mem::MaybeUninit;

/// Most header fields in an answer's head.
const MAX_HEADERS: usize = 100;
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
    pub headers: HeaderMap,
}

/// Where a header field's name and value lie in the head.
#[derive(Clone, Copy)]
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// Room for the places of one head's header fields, kept by a connection so
/// that parsing neither allocates nor clears a large array per answer.
#[derive(Default)]
pub struct Scratch(Vec<Field>);

/// Parses the head at the front of `buf` and takes it off; `None` while it is
/// incomplete. Obsolete line folding is refused (RFC 9112 5.2 allows either).
pub fn parse(buf: &mut BytesMut, scratch: &mut Scratch) -> Result<Option<Head>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut raw = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| ((s.as_ptr() as usize).wrapping_sub(base), s.len());
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut raw);
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
    let fields = &mut scratch.0;
    fields.clear();
    fields.extend(resp.headers.iter().map(|h| Field {
        name: offset(h.name.as_bytes()),
        value: offset(h.value),
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
    }))
}

fn slice(head: &Bytes, (start, len): (usize, usize)) -> &[u8] {
    head.get(start..start.saturating_add(len))
        .unwrap_or_default()
}

/// The same bytes as [`slice`], sharing the head's memory.
fn part(head: &Bytes, (start, len): (usize, usize)) -> Bytes {
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
        Version::HTTP_10 => has_token(&head.headers, CONNECTION, "keep-alive"),
        _ => !has_token(&head.headers, CONNECTION, "close"),
    };
    let status = head.status;
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    let lengths = head.headers.get_all(CONTENT_LENGTH);
    if head.headers.contains_key(TRANSFER_ENCODING) {
        let last = head
            .headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|c| c.trim_ascii())
            .rfind(|c| !c.is_empty());
        // A length next to the coding hints at smuggling: used once only.
        let reuse = keep_alive && lengths.iter().next().is_none();
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => {
                (Framing::Chunked(Decoder::new()), reuse)
            }
            _ => (Framing::Close, false),
        });
    }
    let mut length = None;
    let mut values = 0;
    for v in lengths.iter() {
        for part in v.as_bytes().split(|b| *b == b',') {
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

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        let mut buf = BytesMut::from(text.as_bytes());
        parse(&mut buf, &mut Scratch::default()).unwrap().unwrap()
    }

    fn framed(text: &str, head_request: bool) -> Result<(Framing, bool), Error> {
        framing(&head(text), head_request)
    }

    #[test]
    fn parses_a_head_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabc"[..],
        );
        let h = parse(&mut buf, &mut Scratch::default()).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(h.version, Version::HTTP_11);
        let a: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(&buf[..], b"abc");
    }

    #[test]
    fn partial_heads_wait_and_bad_ones_are_refused() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"[..]);
        assert!(parse(&mut buf, &mut Scratch::default()).unwrap().is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "hello\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad.as_bytes());
            assert!(parse(&mut buf, &mut Scratch::default()).is_err(), "{bad:?}");
        }
        let mut huge = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        while huge.len() <= MAX_HEAD {
            huge.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert!(parse(&mut huge, &mut Scratch::default()).is_err());
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
