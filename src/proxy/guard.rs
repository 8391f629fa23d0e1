//! Request-smuggling guard for HTTP/1.1 connections.
//!
//! hyper accepts a request carrying both `Content-Length` and `Transfer-Encoding`
//! (it drops the length, as RFC 9112 6.1 allows), but by then the evidence is gone.
//! Fulcrum rejects such requests with 400 instead, so this wrapper watches the bytes
//! hyper reads: it follows message framing just enough to find every request head,
//! and records the first head it refuses (a [`Verdict`]): framing headers that
//! conflict, a transfer coding other than one `chunked`, a head or request target
//! over `limits.max_header_bytes`. The handler then answers that request (400,
//! 501, 431 or 414) and closes the connection. On the way it reads `HTTP/1.2` to
//! `HTTP/1.9` as HTTP/1.1, which hyper would refuse. It costs one scan of each
//! head (body bytes are skipped by count, not looked at, except chunk-size lines).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const NONE: u64 = u64::MAX;

/// Why the scanner refuses a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Both lengths given, or two different lengths: a smuggling attempt (400).
    Conflict = 1,
    /// A transfer coding other than `chunked` (501, as nginx answers).
    UnknownCoding = 2,
    /// `chunked` applied more than once (400, RFC 9112 6.1).
    ChunkedTwice = 3,
    /// The head is over `limits.max_header_bytes` (431).
    HeadTooLarge = 4,
    /// The request line alone is over the limit (414).
    TargetTooLong = 5,
}

impl Verdict {
    fn from_u8(v: u8) -> Option<Verdict> {
        Some(match v {
            1 => Verdict::Conflict,
            2 => Verdict::UnknownCoding,
            3 => Verdict::ChunkedTwice,
            4 => Verdict::HeadTooLarge,
            5 => Verdict::TargetTooLong,
            _ => return None,
        })
    }
}

/// What the scanner found, read by the request handler.
pub struct GuardState {
    /// The first refused request: its index (0-based, in connection order)
    /// shifted left by 8, and its [`Verdict`] in the low byte; one word, so the
    /// handler never sees one without the other.
    bad_request: AtomicU64,
}

impl GuardState {
    pub fn new() -> Self {
        GuardState {
            bad_request: AtomicU64::new(NONE),
        }
    }

    /// The verdict on request `index`, if the scanner refused it.
    pub fn verdict(&self, index: u64) -> Option<Verdict> {
        let v = self.bad_request.load(Relaxed);
        if v == NONE || v >> 8 != index {
            return None;
        }
        Verdict::from_u8(v as u8)
    }

    fn refuse(&self, index: u64, why: Verdict) {
        let _ =
            self.bad_request
                .compare_exchange(NONE, (index << 8) | why as u64, Relaxed, Relaxed);
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
    /// The current head's request line has ended.
    line_done: bool,
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
            line_done: false,
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

    /// Follows the bytes hyper is about to read. It may change one byte: an
    /// HTTP/1 minor version above 1 is read as 1.1 (RFC 9112 2.3).
    pub fn feed(&mut self, mut data: &mut [u8]) {
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
                        data = &mut data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let prev = self.head.len();
                    let search_from = prev.saturating_sub(3);
                    let take = data.len().min(self.max_head + 4 - prev.min(self.max_head));
                    self.head.extend_from_slice(&data[..take]);
                    if !self.line_done
                        && let Some(nl) = memchr::memchr(b'\n', &data[..take])
                    {
                        self.line_done = true;
                        self.fix_minor_version(prev + nl, &mut data[..take], prev);
                    }
                    match memchr::memmem::find(&self.head[search_from..], b"\r\n\r\n") {
                        Some(pos) => {
                            let end = search_from + pos + 4;
                            let consumed = end - prev;
                            self.analyze_head(end);
                            self.head.clear();
                            self.line_done = false;
                            data = &mut data[consumed..];
                        }
                        None => {
                            if self.head.len() > self.max_head {
                                let why = if self.line_done {
                                    Verdict::HeadTooLarge
                                } else {
                                    Verdict::TargetTooLong
                                };
                                self.state.refuse(self.index, why);
                                self.phase = Phase::Opaque;
                            }
                            return;
                        }
                    }
                }
                Phase::Body(n) => {
                    let k = (data.len() as u64).min(n);
                    data = &mut data[k as usize..];
                    if n - k == 0 {
                        self.message_done();
                    } else {
                        self.phase = Phase::Body(n - k);
                    }
                }
                Phase::Chunked(c) => {
                    let (used, next) = step_chunked(c, data);
                    data = &mut data[used..];
                    match next {
                        Some(c) => self.phase = Phase::Chunked(c),
                        None => self.message_done(),
                    }
                }
            }
        }
    }

    /// The request line ends at `nl` (an index into the head so far): when it
    /// says `HTTP/1.2` to `HTTP/1.9`, the digit becomes 1, in `data` too when it
    /// is there (`data` holds the head from index `data_start`).
    fn fix_minor_version(&mut self, nl: usize, data: &mut [u8], data_start: usize) {
        let line = &self.head[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(digit) = line.len().checked_sub(1) else {
            return;
        };
        if !line[..digit].ends_with(b" HTTP/1.") || !(b'2'..=b'9').contains(&line[digit]) {
            return;
        }
        self.head[digit] = b'1';
        if let Some(i) = digit.checked_sub(data_start) {
            data[i] = b'1';
        }
    }

    fn analyze_head(&mut self, end: usize) {
        let index = self.index;
        self.index += 1;
        match framing(&self.head[..end]) {
            Some(f) if f.refused.is_some() => {
                if let Some(why) = f.refused {
                    self.state.refuse(index, why);
                }
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
    /// Why the head is refused, if it is.
    refused: Option<Verdict>,
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
        refused: None,
    };
    let mut chunked = 0u32;
    let mut other_coding = false;
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
                    (_, None) => f.refused = Some(Verdict::Conflict),
                    (Some(prev), Some(n)) if prev != n => f.refused = Some(Verdict::Conflict),
                    (_, Some(n)) => f.content_length = Some(n),
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                f.transfer_encoding = true;
                for t in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if t.eq_ignore_ascii_case(b"chunked") {
                        chunked += 1;
                        f.chunked_last = true;
                    } else if !t.is_empty() {
                        other_coding = true;
                        f.chunked_last = false;
                    }
                }
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => f.upgrade = true,
            _ => {}
        }
    }
    if f.transfer_encoding && f.content_length.is_some() {
        f.refused = Some(Verdict::Conflict);
    } else if f.refused.is_none() && f.transfer_encoding {
        // Only `chunked`, once: another coding would reach the backend decoded
        // without a word about it, and chunked twice frames nothing sane.
        if chunked > 1 {
            f.refused = Some(Verdict::ChunkedTwice);
        } else if other_coding && f.chunked_last {
            f.refused = Some(Verdict::UnknownCoding);
        }
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
            s.feed(&mut buf.filled_mut()[before..]);
            if s.phase == Phase::Opaque {
                this.scanner = None;
            }
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    crate::passthrough::write_through!(io);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> (Arc<GuardState>, Scanner) {
        let st = Arc::new(GuardState::new());
        let mut s = Scanner::new(st.clone(), 65536);
        for c in chunks {
            s.feed(&mut c.to_vec());
        }
        (st, s)
    }

    #[test]
    fn flags_cl_and_te_together() {
        let (st, _) = scan(&[b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]);
        assert_eq!(st.verdict(0), Some(Verdict::Conflict));
    }

    #[test]
    fn flags_the_right_pipelined_request() {
        let (st, _) = scan(&[
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
            b"GET /d HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ]);
        assert!(st.verdict(0).is_none() && st.verdict(1).is_none() && st.verdict(2).is_none());
        assert_eq!(st.verdict(3), Some(Verdict::Conflict));
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
        assert!(st.verdict(0).is_none() && st.verdict(1).is_none());
    }

    #[test]
    fn body_text_that_looks_like_headers_is_ignored() {
        let (st, s) = scan(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\n\r\n",
            b"\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n",
        ]);
        assert_eq!(s.requests_seen(), 1);
        assert!(st.verdict(0).is_none() && st.verdict(1).is_none());
    }

    #[test]
    fn transfer_codings_other_than_one_chunked() {
        let (st, _) = scan(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert_eq!(st.verdict(0), Some(Verdict::UnknownCoding));
        let (st, _) = scan(&[b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]);
        assert_eq!(st.verdict(0), Some(Verdict::ChunkedTwice));
        let (st, s) =
            scan(&[b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"]);
        assert_eq!(st.verdict(0), None);
        assert_eq!(s.phase, Phase::Head);
    }

    #[test]
    fn minor_versions_above_one_read_as_1_1() {
        let st = Arc::new(GuardState::new());
        let mut s = Scanner::new(st, 65536);
        let mut a = b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec();
        s.feed(&mut a);
        assert!(a.starts_with(b"GET / HTTP/1.1\r\n"));
        // The line split across reads: fixed in the read that holds the digit
        // and the line's end.
        let mut b = b"GET /x HTTP/1.".to_vec();
        let mut c = b"3\r\nHost: a\r\n\r\n".to_vec();
        s.feed(&mut b);
        s.feed(&mut c);
        assert!(c.starts_with(b"1\r\n"));
        let mut d = b"GET / HTTP/2.0\r\nHost: a\r\n\r\n".to_vec();
        s.feed(&mut d);
        assert!(d.starts_with(b"GET / HTTP/2.0"));
    }

    #[test]
    fn oversized_heads_and_targets() {
        let st = Arc::new(GuardState::new());
        let mut s = Scanner::new(st.clone(), 1024);
        let mut line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000)).into_bytes();
        s.feed(&mut line);
        assert_eq!(st.verdict(0), Some(Verdict::TargetTooLong));
        let st = Arc::new(GuardState::new());
        let mut s = Scanner::new(st.clone(), 1024);
        let mut head = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000)).into_bytes();
        s.feed(&mut head);
        assert_eq!(st.verdict(0), Some(Verdict::HeadTooLarge));
    }

    #[test]
    fn upgrade_goes_opaque() {
        let (_, s) = scan(&[b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"]);
        assert_eq!(s.phase, Phase::Opaque);
    }
}
