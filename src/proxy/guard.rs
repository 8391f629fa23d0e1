//! Request-smuggling guard for HTTP/1.1 connections.
//!
//! hyper accepts a request carrying both `Content-Length` and `Transfer-Encoding`
//! (it drops the length, as RFC 9112 6.1 allows), but by then the evidence is gone.
//! Fulcrum rejects such requests with 400 instead, so this wrapper watches the bytes
//! hyper reads: it follows message framing just enough to find every request head,
//! and records the first head whose framing headers conflict. The handler then
//! answers that request with 400 and closes the connection. It costs one scan of
//! each head (body bytes are skipped by count, not looked at, except chunk-size
//! lines).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const NONE: u64 = u64::MAX;

/// What the scanner found, read by the request handler.
pub struct GuardState {
    /// Index (0-based, in connection order) of the first request with conflicting
    /// framing headers.
    bad_request: AtomicU64,
}

impl GuardState {
    pub fn new() -> Self {
        GuardState {
            bad_request: AtomicU64::new(NONE),
        }
    }

    pub fn is_bad(&self, index: u64) -> bool {
        self.bad_request.load(Relaxed) == index
    }
}

impl Default for GuardState {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// Reading a chunk-size line; `digits` counted so far.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    Data(u64),
    /// After chunk data: skip the CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one. `line` = bytes in the
    /// current line before CR.
    Trailer {
        line: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Head,
    Body(u64),
    Chunked(Chunk),
    /// Nothing more is checked (HTTP/2, an upgrade, or bytes we could not follow;
    /// hyper's own checks still apply).
    Opaque,
}

pub struct Scanner {
    phase: Phase,
    head: Vec<u8>,
    index: u64,
    max_head: usize,
    /// Switch to Opaque after the current message (an upgrade or CONNECT).
    opaque_after: bool,
    state: Arc<GuardState>,
}

impl Scanner {
    pub fn new(state: Arc<GuardState>, max_head: usize) -> Self {
        Scanner {
            phase: Phase::Head,
            head: Vec::new(),
            index: 0,
            max_head,
            opaque_after: false,
            state,
        }
    }

    fn message_done(&mut self) {
        self.phase = if self.opaque_after {
            Phase::Opaque
        } else {
            Phase::Head
        };
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.phase {
                Phase::Opaque => return,
                Phase::Head => {
                    if self.head.is_empty() {
                        // Empty lines before a request line are allowed (RFC 9112 2.2).
                        let skip = data
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let prev = self.head.len();
                    let search_from = prev.saturating_sub(3);
                    let take = data.len().min(self.max_head + 4 - prev.min(self.max_head));
                    self.head.extend_from_slice(&data[..take]);
                    match memchr::memmem::find(&self.head[search_from..], b"\r\n\r\n") {
                        Some(pos) => {
                            let end = search_from + pos + 4;
                            let consumed = end - prev;
                            self.analyze_head(end);
                            self.head.clear();
                            data = &data[consumed..];
                        }
                        None => {
                            if self.head.len() > self.max_head {
                                self.phase = Phase::Opaque;
                            }
                            return;
                        }
                    }
                }
                Phase::Body(n) => {
                    let k = (data.len() as u64).min(n);
                    data = &data[k as usize..];
                    if n - k == 0 {
                        self.message_done();
                    } else {
                        self.phase = Phase::Body(n - k);
                    }
                }
                Phase::Chunked(c) => {
                    let (used, next) = step_chunked(c, data);
                    data = &data[used..];
                    match next {
                        Some(c) => self.phase = Phase::Chunked(c),
                        None => self.message_done(),
                    }
                }
            }
        }
    }

    fn analyze_head(&mut self, end: usize) {
        let index = self.index;
        self.index += 1;
        match framing(&self.head[..end]) {
            Some(f) if f.conflict => {
                let _ = self
                    .state
                    .bad_request
                    .compare_exchange(NONE, index, Relaxed, Relaxed);
                self.phase = Phase::Opaque;
            }
            Some(f) => {
                self.opaque_after = f.upgrade;
                self.phase = match (f.transfer_encoding, f.chunked_last, f.content_length) {
                    (true, true, _) => Phase::Chunked(Chunk::Size {
                        size: 0,
                        digits: 0,
                        ext: false,
                    }),
                    (true, false, _) => Phase::Opaque,
                    (false, _, Some(n)) if n > 0 => Phase::Body(n),
                    _ if f.upgrade => Phase::Opaque,
                    _ => Phase::Head,
                };
            }
            // Not a head hyper would accept either (or HTTP/2's preface): stop
            // following; hyper's own checks reject it.
            None => self.phase = Phase::Opaque,
        }
    }
}

/// What a request head says about the message framing.
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked_last: bool,
    upgrade: bool,
    /// Both lengths given, or two different lengths: a smuggling attempt.
    conflict: bool,
}

/// Reads the framing headers of a request head (request line included, ending in
/// an empty line). A plain line scan: only three header names matter here.
fn framing(head: &[u8]) -> Option<Framing> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next()?;
    let method = request_line.split(|&b| b == b' ').next()?;
    if method == b"PRI" || method.is_empty() {
        return None;
    }
    let mut f = Framing {
        content_length: None,
        transfer_encoding: false,
        chunked_last: false,
        upgrade: method == b"CONNECT",
        conflict: false,
    };
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return None; // obsolete line folding
        }
        let colon = memchr::memchr(b':', line)?;
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                match (f.content_length, n) {
                    (_, None) => f.conflict = true,
                    (Some(prev), Some(n)) if prev != n => f.conflict = true,
                    (_, Some(n)) => f.content_length = Some(n),
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                f.transfer_encoding = true;
                f.chunked_last = value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => f.upgrade = true,
            _ => {}
        }
    }
    if f.transfer_encoding && f.content_length.is_some() {
        f.conflict = true;
    }
    Some(f)
}

impl Scanner {
    #[cfg(test)]
    fn requests_seen(&self) -> u64 {
        self.index
    }
}

/// Advances the chunked-body state over `data`; returns bytes used and the next
/// state (None = message complete).
fn step_chunked(mut c: Chunk, data: &[u8]) -> (usize, Option<Chunk>) {
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        match c {
            Chunk::Size { size, digits, ext } => {
                i += 1;
                if b == b'\n' {
                    if digits == 0 {
                        // Malformed; hyper will fail the body. Stop following by
                        // pretending the message ended, then the next head fails
                        // to parse and we go opaque.
                        return (i, None);
                    }
                    c = if size == 0 {
                        Chunk::Trailer { line: 0 }
                    } else {
                        Chunk::Data(size)
                    };
                } else if ext || b == b'\r' {
                    // chunk extensions and CR are skipped until LF
                } else if b == b';' || b == b' ' || b == b'\t' {
                    c = Chunk::Size {
                        size,
                        digits,
                        ext: true,
                    };
                } else if let Some(d) = (b as char).to_digit(16) {
                    if digits >= 16 {
                        return (i, None);
                    }
                    c = Chunk::Size {
                        size: size * 16 + d as u64,
                        digits: digits + 1,
                        ext,
                    };
                } else {
                    return (i, None);
                }
            }
            Chunk::Data(n) => {
                let k = ((data.len() - i) as u64).min(n);
                i += k as usize;
                c = if n - k == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(n - k)
                };
            }
            Chunk::DataEnd => {
                i += 1;
                if b == b'\n' {
                    c = Chunk::Size {
                        size: 0,
                        digits: 0,
                        ext: false,
                    };
                }
            }
            Chunk::Trailer { line } => {
                i += 1;
                if b == b'\n' {
                    if line == 0 {
                        return (i, None);
                    }
                    c = Chunk::Trailer { line: 0 };
                } else if b != b'\r' {
                    c = Chunk::Trailer { line: line + 1 };
                }
            }
        }
    }
    (i, Some(c))
}

/// The client connection as hyper sees it, with the scanner on the read side.
pub struct Guarded<IO> {
    io: IO,
    scanner: Option<Scanner>,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, scanner: Option<Scanner>) -> Self {
        Guarded { io, scanner }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(s)) = (&r, this.scanner.as_mut()) {
            s.feed(&buf.filled()[before..]);
            if s.phase == Phase::Opaque {
                this.scanner = None;
            }
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> (Arc<GuardState>, Scanner) {
        let st = Arc::new(GuardState::new());
        let mut s = Scanner::new(st.clone(), 65536);
        for c in chunks {
            s.feed(c);
        }
        (st, s)
    }

    #[test]
    fn flags_cl_and_te_together() {
        let (st, _) = scan(&[b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]);
        assert!(st.is_bad(0));
    }

    #[test]
    fn flags_the_right_pipelined_request() {
        let (st, _) = scan(&[
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
            b"GET /d HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ]);
        assert!(!st.is_bad(0) && !st.is_bad(1) && !st.is_bad(2));
        assert!(st.is_bad(3));
    }

    #[test]
    fn follows_bodies_split_across_reads() {
        let (st, s) = scan(&[
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r",
            b"\nxy",
            b"z\r\n0\r\nX-T: 1\r\n\r\nGET / HT",
            b"TP/1.1\r\nHost: a\r\n\r\n",
        ]);
        assert_eq!(s.requests_seen(), 2);
        assert_eq!(s.phase, Phase::Head);
        assert!(!st.is_bad(0) && !st.is_bad(1));
    }

    #[test]
    fn body_text_that_looks_like_headers_is_ignored() {
        let (st, s) = scan(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\n\r\n",
            b"\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n",
        ]);
        assert_eq!(s.requests_seen(), 1);
        assert!(!st.is_bad(0) && !st.is_bad(1));
    }

    #[test]
    fn upgrade_goes_opaque() {
        let (_, s) = scan(&[b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"]);
        assert_eq!(s.phase, Phase::Opaque);
    }
}
