//! Encoding a response head and its body framing the way hyper's HTTP/1
//! server does, so that a client sees the same bytes whichever path served it.

use super::head::has_token;
use crate::proxy::body::ProxyBody;
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

/// Writes the status line and the headers of `status`/`headers` into `out`.
pub(crate) fn encode_head(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
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
    let can_have_length = !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let mut framing = None;
    let mut close = req.close;
    let mut said_close = false;
    let mut wrote_date = false;
    let mut trailer_names = Vec::new();
    let mut te_values: Vec<&[u8]> = Vec::new();
    for (name, value) in headers {
        match *name {
            header::CONTENT_LENGTH => {
                let Some(n) = std::str::from_utf8(value.as_bytes())
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                else {
                    return Err(BadHead);
                };
                match framing {
                    Some(Framing::Length(prev)) if prev == n => continue,
                    Some(_) => return Err(BadHead),
                    None => {}
                }
                // An empty body drops the header (a HEAD keeps it: it describes the GET).
                if known == Some(0) && !req.head_method {
                    continue;
                }
                framing = Some(Framing::Length(known.unwrap_or(n)));
            }
            header::TRANSFER_ENCODING => {
                if matches!(framing, Some(Framing::Length(_))) {
                    return Err(BadHead);
                }
                if can_chunk {
                    framing = Some(Framing::Chunked);
                    te_values.push(value.as_bytes());
                }
                continue;
            }
            header::CONNECTION if has_token(value.as_bytes(), b"close") => {
                close = true;
                said_close = true;
            }
            header::DATE => wrote_date = true,
            header::TRAILER => {
                if !can_chunk {
                    continue;
                }
                trailer_names.extend(
                    value
                        .as_bytes()
                        .split(|&b| b == b',')
                        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok()),
                );
            }
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !te_values.is_empty() {
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
    let framing = match framing {
        Some(f) => f,
        None => match known {
            Some(0) => {
                if can_have_length && !req.head_method {
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
            None if can_chunk => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            None => Framing::UntilClose,
        },
    };
    if close && !said_close && version != Version::HTTP_10 {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let no_body = req.head_method || !can_have_length;
    let framing = if no_body { Framing::Length(0) } else { framing };
    let close = close || framing == Framing::UntilClose || version == Version::HTTP_10;
    Ok(Encoded {
        framing,
        close,
        trailer_names,
    })
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
