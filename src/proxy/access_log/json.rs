//! The JSON line, compiled once per configuration: the keys, separators and
//! quotes between consecutive fields are merged into one constant text each,
//! so a line is a short run of (text, value) steps with no dispatch on the
//! field's kind. The fields left out when empty are settled by compiling a
//! line for each set of them a request can have: a line picks its steps by
//! the set it has, and no step decides anything.
//!
//! A line is written into room known to be large enough beforehand (the plan
//! knows the most each field can take; strings count six bytes for each of
//! theirs, the most escaping makes of one): a constant text is copied as one
//! block of [`TEXT`] bytes whatever its length, numbers are written digit by
//! digit where they go, and no write checks for capacity.

use super::KEYS;
use crate::config::AccessField;
use http::HeaderValue;
use std::net::IpAddr;
use std::time::Duration;

/// The values a line can hold, read once from the request.
pub(super) struct LineValues<'a> {
    pub now_ms: u64,
    pub request_id: &'a HeaderValue,
    pub client_ip: IpAddr,
    pub method: &'a str,
    /// Written as `HeaderValue::to_str` reads it (empty when it does not).
    pub host: Option<&'a HeaderValue>,
    pub path: &'a str,
    /// `None` when the request's details were not kept (`null` in the line).
    pub protocol: Option<&'static str>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub route: &'a str,
    pub pool: &'a str,
    pub backend: &'a str,
    pub upstream_us: Option<u64>,
    pub attempts: u32,
    pub user_agent: Option<&'a HeaderValue>,
    pub referer: Option<&'a HeaderValue>,
    pub tls_version: Option<&'static str>,
    pub sni: Option<&'a str>,
    pub variant: Option<usize>,
    pub aborted: bool,
}

impl LineValues<'_> {
    /// The length of all the strings a line may hold, each counted once.
    fn strings_len(&self) -> usize {
        let header = |h: Option<&HeaderValue>| h.map_or(0, |h| h.len());
        self.request_id.len()
            + self.method.len()
            + header(self.host)
            + self.path.len()
            + self.route.len()
            + self.pool.len()
            + self.backend.len()
            + header(self.user_agent)
            + header(self.referer)
            + self.tls_version.map_or(0, str::len)
            + self.sni.map_or(0, str::len)
    }
}

/// The size of the block a constant text is copied as: more than the
/// longest text the plan makes (a quote, a comma, the longest key, a quote).
const TEXT: usize = 32;

/// A constant text, copied as a whole block; only its `len` bytes count.
struct Text {
    bytes: [u8; TEXT],
    len: u8,
}

impl Text {
    fn new(s: &str) -> Text {
        // The keys are constants: no configuration makes a longer text.
        assert!(
            s.len() <= TEXT,
            "a JSON plan text longer than {TEXT} bytes: {s:?}"
        );
        let mut bytes = [0; TEXT];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Text {
            bytes,
            len: s.len() as u8,
        }
    }
}

/// The second of the last line's time, and its text up to the second
/// (`2026-11-29T13:40:12`): formatted again only when the second changes.
pub(super) struct Second {
    secs: u64,
    text: [u8; 24],
    len: u8,
}

impl Second {
    pub(super) const fn new() -> Second {
        Second {
            secs: u64::MAX,
            text: [0; 24],
            len: 0,
        }
    }
}

/// Where a line is written: room the plan sized (`JsonPlan::room`), how
/// much of it holds the line so far, and the thread's time text.
pub(super) struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
    second: &'a mut Second,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a mut [u8], second: &'a mut Second) -> Self {
        Cursor {
            buf,
            pos: 0,
            second,
        }
    }

    /// The line written so far.
    pub(super) fn written(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    fn bytes(&mut self, b: &[u8]) {
        let end = self.pos + b.len();
        self.buf[self.pos..end].copy_from_slice(b);
        self.pos = end;
    }

    fn byte(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    /// A constant text: the whole block is copied, `len` bytes of it kept.
    fn text(&mut self, t: &Text) {
        self.buf[self.pos..self.pos + TEXT].copy_from_slice(&t.bytes);
        self.pos += usize::from(t.len);
    }

    /// A number in decimal (at most 20 bytes).
    fn u64(&mut self, mut n: u64) {
        // Most numbers of a line are one digit (attempts, a body's bytes,
        // the whole milliseconds): no count of the digits for them.
        if n < 10 {
            self.byte(b'0' + n as u8);
            return;
        }
        let len = n.checked_ilog10().map_or(1, |d| d as usize + 1);
        let end = self.pos + len;
        for b in self.buf[self.pos..end].iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.pos = end;
    }

    /// A byte's value in decimal (at most 3 bytes, written as a block of
    /// 4): the three digits, shifted past the leading zeros.
    fn octet(&mut self, n: u8) {
        let digits = [b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10, 0];
        let skip = if n >= 100 {
            0
        } else if n >= 10 {
            1
        } else {
            2
        };
        let word = u32::from_le_bytes(digits) >> (8 * skip);
        self.buf[self.pos..self.pos + 4].copy_from_slice(&word.to_le_bytes());
        self.pos += 3 - skip;
    }

    /// Microseconds as milliseconds with up to three decimals, the way a
    /// float is written in JSON (`12.0`, `0.25`, `3.125`): at most 24 bytes.
    fn ms(&mut self, us: u64) {
        self.u64(us / 1000);
        let frac = (us % 1000) as u16;
        let (d1, d2, d3) = (
            (frac / 100) as u8,
            (frac / 10 % 10) as u8,
            (frac % 10) as u8,
        );
        let digits = [b'.', b'0' + d1, b'0' + d2, b'0' + d3];
        // Trailing zeros go, but one digit always stays (`12.0`).
        let len = if d3 != 0 {
            4
        } else if d2 != 0 {
            3
        } else {
            2
        };
        self.buf[self.pos..self.pos + 4].copy_from_slice(&digits);
        self.pos += len;
    }

    /// Copies `v` where the line goes on if no byte of it is one `bad`
    /// (eight at a time) and `byte_bad` find; else leaves the line as it
    /// was and returns false. The copy and the check are one pass: whole
    /// words, the last one overlapping the one before (the room holds at
    /// least `v`).
    #[inline(always)]
    fn copy_unless(
        &mut self,
        v: &[u8],
        bad: impl Fn(u64) -> u64,
        byte_bad: impl Fn(u8) -> bool,
    ) -> bool {
        let n = v.len();
        let out = &mut self.buf[self.pos..self.pos + n];
        if n < 4 {
            for (o, &b) in out.iter_mut().zip(v) {
                if byte_bad(b) {
                    return false;
                }
                *o = b;
            }
        } else if n < 8 {
            // The first four bytes and the last four, overlapping.
            let half = |b: &[u8]| u32::from_ne_bytes(b.try_into().unwrap_or([0; 4]));
            let (head, tail) = (half(&v[..4]), half(&v[n - 4..]));
            if bad(u64::from(head) | u64::from(tail) << 32) != 0 {
                return false;
            }
            out[..4].copy_from_slice(&head.to_ne_bytes());
            out[n - 4..].copy_from_slice(&tail.to_ne_bytes());
        } else {
            let mut found = 0;
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
            for (o, c) in out.chunks_exact_mut(8).zip(v.chunks_exact(8)) {
                let w = word(c);
                found |= bad(w);
                o.copy_from_slice(&w.to_ne_bytes());
            }
            if !n.is_multiple_of(8) {
                let w = word(&v[n - 8..]);
                found |= bad(w);
                out[n - 8..].copy_from_slice(&w.to_ne_bytes());
            }
            if found != 0 {
                return false;
            }
        }
        self.pos += n;
        true
    }

    /// The inside of a JSON string literal: `v` escaped as serde_json
    /// escapes it (at most six bytes for each of `v`'s).
    fn str_body(&mut self, v: &str) {
        // Most values need no escaping: they are copied and checked at once.
        if !self.copy_unless(v.as_bytes(), escaped_word, escaped) {
            self.escape(v.as_bytes());
        }
    }

    #[cold]
    fn escape(&mut self, v: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in v {
            match b {
                b'"' => self.bytes(b"\\\""),
                b'\\' => self.bytes(b"\\\\"),
                b'\n' => self.bytes(b"\\n"),
                b'\r' => self.bytes(b"\\r"),
                b'\t' => self.bytes(b"\\t"),
                0x08 => self.bytes(b"\\b"),
                0x0c => self.bytes(b"\\f"),
                0..=0x1f => {
                    self.bytes(b"\\u00");
                    self.byte(HEX[usize::from(b >> 4)]);
                    self.byte(HEX[usize::from(b & 0xf)]);
                }
                _ => self.byte(b),
            }
        }
    }

    /// A JSON string literal (two bytes more than its inside).
    #[cfg(test)]
    fn str(&mut self, v: &str) {
        self.byte(b'"');
        self.str_body(v);
        self.byte(b'"');
    }

    /// The inside of a header's value as a JSON string literal, its bytes
    /// read as UTF-8 with the replacement character for what is not (three
    /// bytes for each byte replaced, fewer than escaping's six).
    fn header_body(&mut self, h: &HeaderValue) {
        self.str_body(&String::from_utf8_lossy(h.as_bytes()));
    }

    /// A value's text as `HeaderValue::to_str` gives it (empty when it has
    /// a byte that is not visible ASCII), escaped. Request IDs and hosts are
    /// printable ASCII with no quote or backslash, almost always: one pass
    /// copies and checks them.
    fn visible_text(&mut self, h: &HeaderValue) {
        if !self.copy_unless(h.as_bytes(), not_plain_word, |b| !is_plain(b)) {
            self.str_body(h.to_str().unwrap_or(""));
        }
    }

    /// An address as `Display` writes it (at most 45 bytes); IPv4 without
    /// going through `fmt`.
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                let [a, b, c, d] = a.octets();
                self.octet(a);
                for o in [b, c, d] {
                    self.byte(b'.');
                    self.octet(o);
                }
            }
            IpAddr::V6(a) => {
                use std::io::Write as _;
                let mut text = [0u8; 45];
                let mut rest = &mut text[..];
                let _ = write!(rest, "{a}");
                let len = 45 - rest.len();
                self.bytes(&text[..len]);
            }
        }
    }

    /// A time in milliseconds since the Unix epoch as RFC 3339 UTC to the
    /// millisecond (`2026-11-29T13:40:12.345Z`, at most 48 bytes with the
    /// block the text up to the second is copied as).
    fn time(&mut self, now: u64) {
        let (secs, millis) = (now / 1000, (now % 1000) as u16);
        if self.second.secs != secs || self.second.len == 0 {
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            // `2026-11-29T13:40:12Z`: everything before the `Z` is kept.
            let text = text.trim_end_matches('Z').as_bytes();
            let len = text.len().min(self.second.text.len());
            self.second.text[..len].copy_from_slice(&text[..len]);
            self.second.len = len as u8;
            self.second.secs = secs;
        }
        let len = usize::from(self.second.len);
        self.buf[self.pos..self.pos + 24].copy_from_slice(&self.second.text);
        self.pos += len;
        let digits = [
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ];
        self.bytes(&digits);
    }
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// Nonzero when a byte of `x` is below `n` (for `n` ≤ 0x80): a byte can only
/// borrow from the one above it after it went below zero itself.
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH
}

/// Whether JSON escapes `b`: a control character, `"` or `\\`.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Nonzero when a byte of `x` is one JSON escapes.
fn escaped_word(x: u64) -> u64 {
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    below(x, 0x20) | below(quote, 1) | below(backslash, 1)
}

/// Whether `b` is visible ASCII or a space, other than `"` and `\\`: text
/// `HeaderValue::to_str` accepts and JSON does not escape.
fn is_plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Nonzero when a byte of `x` is not plain: one JSON escapes, DEL (0x7f) or
/// any from 0x80 up.
fn not_plain_word(x: u64) -> u64 {
    escaped_word(x) | below(x ^ (ONES * 0x7f), 1) | (x & HIGH)
}

type Writer = fn(&mut Cursor, &LineValues);

struct Step {
    /// The end of the previous value, the comma, the key and the opening
    /// quote of a string value.
    text: Text,
    write: Writer,
}

/// The steps of one line, for one set of the fields left out when empty:
/// which fields are there and where the commas go is settled, so a line is
/// a copy and a call per field with nothing decided per step.
struct Line {
    steps: Box<[Step]>,
    end: Text,
    /// The most the texts and the values other than strings can take, and
    /// the block the last text is copied as.
    fixed_room: usize,
}

pub(super) struct JsonPlan {
    /// One line for each set of the fields left out when empty (their
    /// [`optional_bit`]s) that the list holds; the other places are empty.
    lines: Box<[Line]>,
    /// The bits of the fields left out when empty that the list holds.
    listed: usize,
    /// The most times one field is listed (strings are counted that often).
    repeats: usize,
}

impl JsonPlan {
    pub fn compile(fields: &[AccessField]) -> JsonPlan {
        let listed = fields
            .iter()
            .filter_map(|&f| optional_bit(f))
            .fold(0, |a, b| a | b);
        let lines = (0..=ALL_OPTIONAL)
            .map(|present| {
                if present & !listed != 0 {
                    // Never looked up: `line` masks with `listed`.
                    return Line::compile(&[]);
                }
                let there: Vec<AccessField> = fields
                    .iter()
                    .copied()
                    .filter(|&f| optional_bit(f).is_none_or(|b| present & b != 0))
                    .collect();
                Line::compile(&there)
            })
            .collect();
        let repeats = fields
            .iter()
            .map(|&f| fields.iter().filter(|&&g| g == f).count())
            .max()
            .unwrap_or(1);
        JsonPlan {
            lines,
            listed,
            repeats,
        }
    }

    /// The line for the fields `v` has a value for.
    pub fn line(&self, v: &LineValues) -> LinePlan<'_> {
        LinePlan {
            line: &self.lines[present_bits(v) & self.listed],
            repeats: self.repeats,
        }
    }
}

/// The line of one request's values (`JsonPlan::line`).
pub(super) struct LinePlan<'a> {
    line: &'a Line,
    repeats: usize,
}

impl LinePlan<'_> {
    /// Room enough for the line of `v`: the cursor's buffer must hold it.
    pub fn room(&self, v: &LineValues) -> usize {
        self.line.fixed_room + 6 * self.repeats * v.strings_len()
    }

    /// Writes the line of `v` at `c`, which has [`LinePlan::room`] for it.
    pub fn write(&self, c: &mut Cursor, v: &LineValues) {
        for step in self.line.steps.iter() {
            c.text(&step.text);
            (step.write)(c, v);
        }
        c.text(&self.line.end);
    }
}

impl Line {
    /// The steps of a line that has every field of `fields`.
    fn compile(fields: &[AccessField]) -> Line {
        let mut steps = Vec::with_capacity(fields.len());
        let mut pending = "{";
        let mut fixed_room = TEXT;
        for (i, &f) in fields.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            let (write, quoted) = writer(f);
            let open = if quoted { "\"" } else { "" };
            let text = format!("{pending}{comma}{}{open}", KEYS[f as usize]);
            fixed_room += text.len() + most_of(f);
            steps.push(Step {
                text: Text::new(&text),
                write,
            });
            pending = if quoted { "\"" } else { "" };
        }
        let end = format!("{pending}}}\n");
        Line {
            steps: steps.into(),
            end: Text::new(&end),
            fixed_room: fixed_room + end.len(),
        }
    }
}

/// A duration in whole microseconds, rounded half up: the low 64 bits of
/// `(nanoseconds + 500) / 1000`, without dividing 128-bit numbers.
fn rounded_us(d: Duration) -> u64 {
    let part = (u64::from(d.subsec_nanos()) + 500) / 1000;
    d.as_secs().wrapping_mul(1_000_000).wrapping_add(part)
}

/// The bits of every field left out when empty.
const ALL_OPTIONAL: usize = (1 << 6) - 1;

/// A bit for each field left out of the line when the request has no value
/// for it; `None` for the fields always there (`null` when empty).
fn optional_bit(f: AccessField) -> Option<usize> {
    Some(match f {
        AccessField::UserAgent => 1,
        AccessField::Referer => 2,
        AccessField::TlsVersion => 4,
        AccessField::Sni => 8,
        AccessField::Variant => 16,
        AccessField::Aborted => 32,
        _ => return None,
    })
}

/// The [`optional_bit`]s of the fields `v` has a value for.
fn present_bits(v: &LineValues) -> usize {
    usize::from(v.user_agent.is_some())
        | usize::from(v.referer.is_some()) << 1
        | usize::from(v.tls_version.is_some()) << 2
        | usize::from(v.sni.is_some()) << 3
        | usize::from(v.variant.is_some()) << 4
        | usize::from(v.aborted) << 5
}

/// The most a field's value takes in the line besides its strings' own
/// bytes (numbers, the time, addresses, `null`).
fn most_of(f: AccessField) -> usize {
    match f {
        AccessField::Time => 48,
        AccessField::Client => 45,
        AccessField::Protocol => 10,
        AccessField::Status => 5,
        AccessField::BytesIn | AccessField::BytesOut | AccessField::Variant => 20,
        AccessField::DurationMs | AccessField::UpstreamMs => 24,
        AccessField::Attempts => 10,
        AccessField::Aborted => 4,
        AccessField::RequestId
        | AccessField::Method
        | AccessField::Host
        | AccessField::Path
        | AccessField::Route
        | AccessField::Pool
        | AccessField::Backend
        | AccessField::UserAgent
        | AccessField::Referer
        | AccessField::TlsVersion
        | AccessField::Sni => 0,
    }
}

/// The writer of a field, and whether its value is always a string (its
/// quotes are then part of the constant texts around it). A field left out
/// when empty is written only by a line that has its value.
fn writer(f: AccessField) -> (Writer, bool) {
    let quoted: Writer = match f {
        AccessField::Time => |c, v| c.time(v.now_ms),
        AccessField::RequestId => |c, v| c.visible_text(v.request_id),
        AccessField::Client => |c, v| c.ip(v.client_ip),
        // A method is a token: nothing in it needs escaping.
        AccessField::Method => |c, v| c.bytes(v.method.as_bytes()),
        AccessField::Host => |c, v| {
            if let Some(h) = v.host {
                c.visible_text(h);
            }
        },
        AccessField::Path => |c, v| c.str_body(v.path),
        AccessField::Route => |c, v| c.str_body(v.route),
        AccessField::Pool => |c, v| c.str_body(v.pool),
        AccessField::Backend => |c, v| c.str_body(v.backend),
        AccessField::UserAgent => |c, v| {
            if let Some(h) = v.user_agent {
                c.header_body(h);
            }
        },
        AccessField::Referer => |c, v| {
            if let Some(h) = v.referer {
                c.header_body(h);
            }
        },
        AccessField::TlsVersion => |c, v| c.str_body(v.tls_version.unwrap_or("")),
        AccessField::Sni => |c, v| c.str_body(v.sni.unwrap_or("")),
        _ => return (plain_writer(f), false),
    };
    (quoted, true)
}

/// The writer of a field whose value is a number or may be `null`.
fn plain_writer(f: AccessField) -> Writer {
    match f {
        AccessField::Protocol => |c, v| match v.protocol {
            Some(p) => {
                c.byte(b'"');
                c.bytes(p.as_bytes());
                c.byte(b'"');
            }
            None => c.bytes(b"null"),
        },
        AccessField::Status => |c, v| c.u64(u64::from(v.status)),
        AccessField::BytesIn => |c, v| c.u64(v.bytes_in),
        AccessField::BytesOut => |c, v| c.u64(v.bytes_out),
        AccessField::DurationMs => |c, v| c.ms(rounded_us(v.duration)),
        AccessField::UpstreamMs => |c, v| match v.upstream_us {
            Some(us) => c.ms(us),
            None => c.bytes(b"null"),
        },
        AccessField::Attempts => |c, v| c.u64(u64::from(v.attempts)),
        AccessField::Variant => |c, v| c.u64(v.variant.unwrap_or(0) as u64),
        AccessField::Aborted => |c, _| c.bytes(b"true"),
        // Every string field has its writer above.
        _ => |c, _| c.bytes(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JSON string literal as serde_json writes it.
    fn json(v: &str) -> String {
        serde_json::to_string(v).unwrap()
    }

    /// Microseconds as the float of milliseconds serde_json writes.
    fn ms(us: u64) -> String {
        serde_json::to_string(&((us as f64).round() / 1000.0)).unwrap()
    }

    /// The line as the generic writer built it before the plan: per field,
    /// whether it is there, a comma, its key, its value; each value as
    /// serde_json, `Display` or humantime writes it.
    fn reference_line(v: &LineValues, fields: &[AccessField]) -> String {
        let mut s = String::from("{");
        let mut first = true;
        for &f in fields {
            if !reference_has_value(v, f) {
                continue;
            }
            if !first {
                s.push(',');
            }
            first = false;
            s.push_str(KEYS[f as usize]);
            s.push_str(&reference_value(v, f));
        }
        s.push_str("}\n");
        s
    }

    fn reference_has_value(v: &LineValues, f: AccessField) -> bool {
        match f {
            AccessField::UserAgent => v.user_agent.is_some(),
            AccessField::Referer => v.referer.is_some(),
            AccessField::TlsVersion => v.tls_version.is_some(),
            AccessField::Sni => v.sni.is_some(),
            AccessField::Variant => v.variant.is_some(),
            AccessField::Aborted => v.aborted,
            _ => true,
        }
    }

    fn reference_value(v: &LineValues, f: AccessField) -> String {
        let header =
            |h: Option<&HeaderValue>| json(&String::from_utf8_lossy(h.unwrap().as_bytes()));
        match f {
            AccessField::Time => {
                let t = std::time::UNIX_EPOCH + Duration::from_millis(v.now_ms);
                json(&humantime::format_rfc3339_millis(t).to_string())
            }
            AccessField::RequestId => json(v.request_id.to_str().unwrap_or("")),
            AccessField::Client => json(&v.client_ip.to_string()),
            AccessField::Method => json(v.method),
            AccessField::Host => json(v.host.and_then(|h| h.to_str().ok()).unwrap_or("")),
            AccessField::Path => json(v.path),
            AccessField::Protocol => v.protocol.map_or("null".into(), json),
            AccessField::Status => v.status.to_string(),
            AccessField::BytesIn => v.bytes_in.to_string(),
            AccessField::BytesOut => v.bytes_out.to_string(),
            AccessField::DurationMs => ms(((v.duration.as_nanos() + 500) / 1000) as u64),
            AccessField::Route => json(v.route),
            AccessField::Pool => json(v.pool),
            AccessField::Backend => json(v.backend),
            AccessField::UpstreamMs => v.upstream_us.map_or("null".into(), ms),
            AccessField::Attempts => v.attempts.to_string(),
            AccessField::UserAgent => header(v.user_agent),
            AccessField::Referer => header(v.referer),
            AccessField::TlsVersion => json(v.tls_version.unwrap()),
            AccessField::Sni => json(v.sni.unwrap()),
            AccessField::Variant => v.variant.unwrap().to_string(),
            AccessField::Aborted => "true".into(),
        }
    }

    /// Writes with a cursor over exactly `room` bytes, as the log does.
    fn with_cursor(room: usize, write: impl FnOnce(&mut Cursor)) -> String {
        let mut buf = vec![0; room];
        let mut second = Second::new();
        let mut c = Cursor::new(&mut buf, &mut second);
        write(&mut c);
        String::from_utf8(c.written().to_vec()).unwrap()
    }

    /// Values with every optional field there, or none; strings that need
    /// escaping or not.
    fn values<'a>(
        full: bool,
        id: &'a HeaderValue,
        ua: &'a HeaderValue,
        odd: &'a str,
        host: Option<&'a HeaderValue>,
    ) -> LineValues<'a> {
        LineValues {
            now_ms: 1_796_046_012_345,
            request_id: id,
            client_ip: if full {
                "2001:db8::1".parse().unwrap()
            } else {
                "10.0.0.7".parse().unwrap()
            },
            method: "GET",
            host,
            path: if full { "/a\"b" } else { "" },
            protocol: full.then_some("HTTP/1.1"),
            status: 502,
            bytes_in: 12,
            bytes_out: 3456,
            duration: Duration::from_micros(12_345),
            route: "api",
            pool: if full { odd } else { "" },
            backend: "127.0.0.1:8080",
            upstream_us: full.then_some(1230),
            attempts: 2,
            user_agent: full.then_some(ua),
            referer: full.then_some(ua),
            tls_version: full.then_some("TLSv1.3"),
            sni: full.then_some(odd),
            variant: full.then_some(1),
            aborted: full,
        }
    }

    #[test]
    fn the_plan_writes_the_line_the_generic_writer_wrote() {
        let all: Vec<AccessField> = AccessField::ALL.iter().map(|&(_, f)| f).collect();
        let mut lists: Vec<Vec<AccessField>> = vec![vec![], all.clone()];
        lists.push(all.iter().rev().copied().collect());
        // Every field alone, and every pair in both orders (optional fields
        // first, last, next to each other, twice).
        for &a in &all {
            lists.push(vec![a]);
            for &b in &all {
                lists.push(vec![a, b]);
                lists.push(vec![a, b, a]);
            }
        }
        // Rotations of the default list: the first field an optional one.
        for r in 0..all.len() {
            let mut l = all.clone();
            l.rotate_left(r);
            lists.push(l);
        }
        let id = HeaderValue::from_static("7f3a-01");
        let bad_id = HeaderValue::from_bytes(b"id\xff").unwrap();
        let ua = HeaderValue::from_bytes(b"curl/8 \"x\" \xe9").unwrap();
        let host = HeaderValue::from_static("example.com");
        let odd_host = HeaderValue::from_static("ex\"am\\ple\t.com");
        let odd = "tab\there \\ \u{1}";
        let cases = [
            (&id, "plain", Some(&host)),
            (&bad_id, odd, Some(&odd_host)),
            // A host that is not visible ASCII is written empty, as is none.
            (&id, odd, Some(&bad_id)),
            (&id, "plain", None),
        ];
        for fields in &lists {
            let plan = JsonPlan::compile(fields);
            for full in [false, true] {
                for (id, odd, host) in cases {
                    let v = values(full, id, &ua, odd, host);
                    // The room exactly: a write past it would panic.
                    let planned = {
                        let line = plan.line(&v);
                        with_cursor(line.room(&v), |c| line.write(c, &v))
                    };
                    let reference = reference_line(&v, fields);
                    assert_eq!(planned, reference, "{fields:?} full={full}");
                    if full {
                        let line = planned.trim_end();
                        serde_json::from_str::<serde_json::Value>(line).unwrap();
                    }
                }
            }
        }
    }

    /// A line compiled for each set of the fields left out when empty: every
    /// set, with those fields first, last, between the others, or not listed.
    #[test]
    fn every_set_of_the_fields_left_out_when_empty_has_its_line() {
        let all: Vec<AccessField> = AccessField::ALL.iter().map(|&(_, f)| f).collect();
        let (optional, always): (Vec<AccessField>, Vec<AccessField>) =
            all.iter().partition(|&&f| optional_bit(f).is_some());
        let mut interleaved = Vec::new();
        for (i, &f) in always.iter().enumerate() {
            interleaved.push(f);
            interleaved.extend(optional.get(i).copied());
        }
        let lists = [
            all.clone(),
            all.iter().rev().copied().collect(),
            optional.iter().chain(&always).copied().collect(),
            interleaved,
            vec![optional[0], optional[5], AccessField::Status, optional[2]],
            always.clone(),
        ];
        let id = HeaderValue::from_static("7f3a-01");
        let ua = HeaderValue::from_bytes(b"curl/8 \"x\" \xe9").unwrap();
        let host = HeaderValue::from_static("example.com");
        for fields in &lists {
            let plan = JsonPlan::compile(fields);
            for present in 0..=ALL_OPTIONAL {
                let mut v = values(true, &id, &ua, "sni.test", Some(&host));
                let has = |bit: usize| present & bit != 0;
                v.user_agent = v.user_agent.filter(|_| has(1));
                v.referer = v.referer.filter(|_| has(2));
                v.tls_version = v.tls_version.filter(|_| has(4));
                v.sni = v.sni.filter(|_| has(8));
                v.variant = v.variant.filter(|_| has(16));
                v.aborted = has(32);
                assert_eq!(present_bits(&v), present);
                let line = plan.line(&v);
                let planned = with_cursor(line.room(&v), |c| line.write(c, &v));
                assert_eq!(
                    planned,
                    reference_line(&v, fields),
                    "{fields:?} {present:b}"
                );
            }
        }
    }

    /// The longest values of every kind: strings that escape to six bytes a
    /// byte or do not read as UTF-8, the largest numbers, the longest address.
    #[test]
    fn the_room_holds_the_longest_line() {
        let all: Vec<AccessField> = AccessField::ALL.iter().map(|&(_, f)| f).collect();
        let ctl = "\u{1}".repeat(40);
        let id = HeaderValue::from_bytes(&[b'"'; 50]).unwrap();
        let ua = HeaderValue::from_bytes(&[0xff; 60]).unwrap();
        let slashes = HeaderValue::from_bytes(&[b'\\'; 40]).unwrap();
        let v = LineValues {
            now_ms: 253_402_300_799_999,
            request_id: &id,
            client_ip: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            method: "PROPPATCH",
            host: Some(&slashes),
            path: &ctl,
            protocol: Some("HTTP/1.1"),
            status: u16::MAX,
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
            duration: Duration::from_micros(u64::MAX),
            route: &ctl,
            pool: &ctl,
            backend: &ctl,
            upstream_us: Some(u64::MAX),
            attempts: u32::MAX,
            user_agent: Some(&ua),
            referer: Some(&ua),
            tls_version: Some("TLSv1.3"),
            sni: Some(&ctl),
            variant: Some(usize::MAX),
            aborted: true,
        };
        for fields in [all.clone(), all.iter().rev().copied().collect()] {
            let plan = JsonPlan::compile(&fields);
            // The room exactly: a write past it would panic. (Past 2^53 µs,
            // 285 years, the milliseconds are not the float serde_json would
            // write, as before: the line is compared as JSON.)
            let line = {
                let line = plan.line(&v);
                with_cursor(line.room(&v), |c| line.write(c, &v))
            };
            let parsed: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
            let reference: serde_json::Value =
                serde_json::from_str(reference_line(&v, &fields).trim_end()).unwrap();
            assert_eq!(parsed, reference);
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        for v in [
            "",
            "plain",
            "quote \" and \\ backslash",
            "ctl \u{1}\u{8}\u{c}\n\r\t\u{1f} end",
            "ünïcödé ✓",
            "\u{7f}",
        ] {
            assert_eq!(with_cursor(6 * v.len() + 2, |c| c.str(v)), json(v), "{v:?}");
        }
    }

    /// The copy that checks eight bytes at a time, against serde_json and
    /// `HeaderValue::to_str`: every byte value at every place of strings of
    /// up to 19 bytes, next to bytes that sit close to the special ones.
    #[test]
    fn the_word_at_a_time_copies_find_every_byte_they_look_for() {
        for len in 1..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'!', 0x7e, 0xff] {
                        let mut v = vec![fill; len];
                        v[at] = b;
                        if fill == b'!' && at + 1 < len {
                            v[at + 1] = 0x21;
                        }
                        let text = String::from_utf8_lossy(&v);
                        let line = with_cursor(6 * text.len(), |c| c.str_body(&text));
                        let expected = json(&text);
                        assert_eq!(line, expected[1..expected.len() - 1], "{v:?}");
                        // What a header value can hold (no DEL, no controls but HTAB).
                        if let Ok(h) = HeaderValue::from_bytes(&v) {
                            let line = with_cursor(6 * len, |c| c.visible_text(&h));
                            let expected = json(h.to_str().unwrap_or(""));
                            assert_eq!(line, expected[1..expected.len() - 1], "{v:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn request_ids_as_to_str_and_serde_json_give_them() {
        let ids: [&[u8]; 5] = [
            b"7f3a-01",
            b"0123456789abcdef0123456789abcdef",
            b"a\"b\\c",
            b"tab\there",
            b"caf\xc3\xa9",
        ];
        for id in ids {
            let id = HeaderValue::from_bytes(id).unwrap();
            let line = with_cursor(6 * id.len(), |c| c.visible_text(&id));
            let expected = json(id.to_str().unwrap_or(""));
            assert_eq!(line, expected[1..expected.len() - 1], "{id:?}");
        }
    }

    #[test]
    fn milliseconds_read_as_the_float_they_were() {
        for us in [
            0u64,
            1,
            7,
            10,
            100,
            999,
            1000,
            1001,
            1230,
            12_000,
            12_345,
            99_990,
            3_600_000_001,
            999_999_999_999_999,
        ] {
            assert_eq!(with_cursor(24, |c| c.ms(us)), ms(us), "{us}");
        }
    }

    #[test]
    fn addresses_as_display_writes_them() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.10.0.9",
            "9.99.100.250",
            "10.0.0.100",
            "::1",
            "::ffff:255.255.255.255",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(with_cursor(45, |c| c.ip(ip)), ip.to_string());
        }
    }

    #[test]
    fn durations_in_microseconds_rounded_half_up() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(499),
            Duration::from_nanos(500),
            Duration::from_nanos(1_499),
            Duration::new(1, 999_999_499),
            Duration::new(1, 999_999_500),
            Duration::from_micros(12_345),
            Duration::from_micros(u64::MAX),
            Duration::MAX,
        ] {
            let wide = ((d.as_nanos() + 500) / 1000) as u64;
            assert_eq!(rounded_us(d), wide, "{d:?}");
        }
    }

    #[test]
    fn numbers_in_decimal() {
        for n in [0u64, 7, 9, 10, 99, 100, 1000, 65_535, u64::MAX] {
            assert_eq!(with_cursor(20, |c| c.u64(n)), n.to_string());
        }
    }

    #[test]
    fn the_time_is_rfc3339_to_the_millisecond() {
        let now = crate::clock::unix_ms_coarse();
        // The second's text is kept: the same second, the next, another.
        for t in [now, now + 1, now + 1000, now - 86_400_000, 0] {
            let mut buf = vec![0; 48];
            let mut second = Second::new();
            let mut c = Cursor::new(&mut buf, &mut second);
            c.time(now);
            let mut c = Cursor::new(&mut buf, &mut second);
            c.time(t);
            let text = std::str::from_utf8(c.written()).unwrap().to_string();
            let expected =
                humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(t));
            assert_eq!(text, expected.to_string());
        }
    }
}
