//! The chunked transfer coding (RFC 9112 7.1), decoded as bytes arrive. Chunk
//! extensions are skipped; trailer fields are read and dropped.

use super::Error;
use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (with extensions) and longest trailer line.
const MAX_LINE: usize = 4096;
/// Most bytes of trailer fields taken before the answer is refused.
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to the empty one.
    Trailers,
    Done,
}

/// What one step of decoding gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer ends before the next piece.
    NeedMore,
    /// The last chunk and the trailers were read.
    Done,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
    trailer_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            state: State::Size,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece of the body off the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        if !self.settle(buf)? {
            return Ok(if self.state == State::Done {
                Decoded::Done
            } else {
                Decoded::NeedMore
            });
        }
        let State::Data(left) = self.state else {
            return Ok(Decoded::NeedMore);
        };
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let data = buf.split_to(n).freeze();
        let left = left - n as u64;
        self.state = if left == 0 {
            State::DataEnd
        } else {
            State::Data(left)
        };
        Ok(Decoded::Data(data))
    }

    /// Reads framing (sizes, CRLFs, trailers) off `buf` until chunk data is
    /// next; true when there is chunk data in `buf` to take. Called after a
    /// piece of data too, so that a body whose end is already buffered is
    /// known to have ended.
    pub fn settle(&mut self, buf: &mut BytesMut) -> Result<bool, Error> {
        loop {
            match self.state {
                State::Data(_) => return Ok(!buf.is_empty()),
                State::Done => return Ok(false),
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(false);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Parse("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(false);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(false);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    } else {
                        self.trailer_bytes += line.len() + 2;
                        if self.trailer_bytes > MAX_TRAILERS {
                            return Err(Error::Parse("trailer fields too large"));
                        }
                    }
                }
            }
        }
    }
}

/// The line at the front of `buf` without its CRLF, taken off `buf`; `None`
/// while the line is incomplete.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        // One more byte may be the line's CR: a line of exactly MAX_LINE
        // stays acceptable however it was split.
        if buf.len() > MAX_LINE + 1 {
            return Err(Error::Parse("chunk line too long"));
        }
        return Ok(None);
    };
    if end > MAX_LINE {
        return Err(Error::Parse("chunk line too long"));
    }
    let line = buf.split_to(end);
    buf.advance(2);
    Ok(Some(line))
}

/// The size of a chunk-size line: hex digits, then optionally whitespace and
/// extensions after `;`.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Error::Parse("chunk size is not hexadecimal"));
    }
    let mut size: u64 = 0;
    for b in &line[..digits] {
        let d = u64::from(char::from(*b).to_digit(16).unwrap_or(0));
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or(Error::Parse("chunk size too large"))?;
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if !ext.is_empty() && ext[0] != b';' {
        return Err(Error::Parse("invalid chunk size line"));
    }
    if ext.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return Err(Error::Parse("invalid chunk extension"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes: the body, and whether it ended.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), Error> {
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf)? {
                    Decoded::Data(b) => out.extend_from_slice(&b),
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers_in_any_pieces() {
        let input = b"5\r\nhello\r\n6 ;ext=1\r\n world\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..input.len() + 1 {
            let (body, done) = decode_in_steps(input, step).unwrap();
            assert_eq!(body, b"hello world0123456789", "step {step}");
            assert!(done, "step {step}");
        }
    }

    #[test]
    fn the_end_is_known_once_buffered_after_the_last_data() {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"ok"))
        );
        assert!(!d.settle(&mut buf).unwrap());
        assert!(d.is_done());
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"5 x\r\nhello\r\n",
            b"11111111111111111\r\n",
            b"\r\n",
        ] {
            assert!(decode_in_steps(bad, bad.len()).is_err(), "{bad:?}");
        }
        let long = vec![b'1'; MAX_LINE + 2];
        assert!(decode_in_steps(&long, long.len()).is_err());
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let (body, done) = decode_in_steps(b"5\r\nhel", 3).unwrap();
        assert_eq!(body, b"hel");
        assert!(!done);
    }
}
