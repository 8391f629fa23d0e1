//! The access log: one line per request (JSON by default), written by a dedicated
//! thread so that a slow disk never delays a request. If the writer falls behind by
//! more than a thread's buffer holds, lines are dropped and counted, never waited for.

mod batches;
mod json;

use super::finish::Completion;
use crate::config::AccessField;
use crate::config::{AccessLogConfig, LogFormat, LogTarget};
use batches::Batches;
use json::{JsonPlan, LineValues};
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct AccessLog {
    batches: Arc<Batches>,
    format: LogFormat,
    /// The JSON line of `config.fields`, compiled once.
    json: JsonPlan,
    pub config: AccessLogConfig,
    pub dropped: AtomicU64,
}

impl AccessLog {
    /// Opens the target and starts the writer thread. `None` when disabled.
    pub fn open(config: &AccessLogConfig) -> std::io::Result<Option<AccessLog>> {
        if !config.enabled {
            return Ok(None);
        }
        let out: Box<dyn Write + Send> = match &config.path {
            LogTarget::Stderr => Box::new(std::io::stderr()),
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        Ok(Some(AccessLog {
            batches: Batches::start(out)?,
            format: config.format,
            json: JsonPlan::compile(&config.fields),
            config: config.clone(),
            dropped: AtomicU64::new(0),
        }))
    }

    pub fn write(&self, c: &Completion) {
        let written = match self.format {
            LogFormat::Json => {
                let values = line_values(c);
                self.batches.append(|s| self.json.write(s, &values))
            }
            LogFormat::Text => {
                let fields = &self.config.fields;
                self.batches.append(|s| s.push_str(&text_line(c, fields)))
            }
        };
        if !written {
            self.dropped.fetch_add(1, Relaxed);
        }
    }
}

impl Drop for AccessLog {
    /// A log replaced by a reload still writes the lines it holds.
    fn drop(&mut self) {
        self.batches.close();
    }
}

fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn ms(us: f64) -> f64 {
    (us).round() / 1000.0
}

/// The value of one field, `Null` when the request has none (the JSON line
/// leaves such fields out, except the core ones that always were there).
fn field(c: &Completion, f: AccessField) -> Value {
    let header = |h: Option<&http::HeaderValue>| match h {
        Some(v) => Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        None => Value::Null,
    };
    let details = c.details.as_deref();
    let tls = details.and_then(|d| d.tls.as_ref());
    match f {
        AccessField::Time => {
            Value::from(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string())
        }
        AccessField::RequestId => Value::from(c.request_id.to_str().unwrap_or("")),
        AccessField::Client => Value::from(c.client_ip.to_string()),
        AccessField::Method => Value::from(c.method.as_str()),
        AccessField::Host => Value::from(c.host.as_deref().unwrap_or("")),
        AccessField::Path => Value::from(c.path.as_deref().unwrap_or("")),
        AccessField::Protocol => details.map_or(Value::Null, |d| protocol_name(d.protocol).into()),
        AccessField::Status => Value::from(c.status),
        AccessField::BytesIn => Value::from(
            c.bytes_in
                .as_ref()
                .map(|s| s.bytes.load(Relaxed))
                .unwrap_or(0),
        ),
        AccessField::BytesOut => Value::from(c.bytes_out),
        AccessField::DurationMs => Value::from(ms(c.duration.as_secs_f64() * 1e6)),
        AccessField::Route => Value::from(c.route_name()),
        AccessField::Pool => Value::from(c.pool_name()),
        AccessField::Backend => Value::from(c.backend_key()),
        AccessField::UpstreamMs => c.upstream_us.map_or(Value::Null, |u| ms(u as f64).into()),
        AccessField::Attempts => Value::from(c.attempts),
        AccessField::UserAgent => header(details.and_then(|d| d.user_agent.as_ref())),
        AccessField::Referer => header(details.and_then(|d| d.referer.as_ref())),
        AccessField::TlsVersion => tls.map_or(Value::Null, |t| t.version.into()),
        AccessField::Sni => tls
            .and_then(|t| t.sni.as_deref())
            .map_or(Value::Null, Value::from),
        AccessField::Variant => c.variant.map_or(Value::Null, Value::from),
        AccessField::Aborted => {
            if c.aborted {
                Value::Bool(true)
            } else {
                Value::Null
            }
        }
    }
}

/// `"name":` of every field, in the order of `AccessField::ALL` (a unit test
/// checks them against the names).
const KEYS: [&str; AccessField::ALL.len()] = [
    "\"time\":",
    "\"request_id\":",
    "\"client\":",
    "\"method\":",
    "\"host\":",
    "\"path\":",
    "\"protocol\":",
    "\"status\":",
    "\"bytes_in\":",
    "\"bytes_out\":",
    "\"duration_ms\":",
    "\"route\":",
    "\"pool\":",
    "\"backend\":",
    "\"upstream_ms\":",
    "\"attempts\":",
    "\"user_agent\":",
    "\"referer\":",
    "\"tls_version\":",
    "\"sni\":",
    "\"variant\":",
    "\"aborted\":",
];

/// A JSON string literal, escaped as serde_json escapes it.
fn json_str(s: &mut String, v: &str) {
    s.push('"');
    json_str_body(s, v);
    s.push('"');
}

/// The inside of a JSON string literal: `v` escaped as serde_json escapes it.
fn json_str_body(s: &mut String, v: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Most values need no escaping: a pass eight bytes at a time finds out.
    if !needs_escaping(v.as_bytes()) {
        s.push_str(v);
        return;
    }
    let mut start = 0;
    for (i, b) in v.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        s.push_str(&v[start..i]);
        start = i + 1;
        if esc.is_empty() {
            s.push_str("\\u00");
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 0xf) as usize] as char);
        } else {
            s.push_str(esc);
        }
    }
    s.push_str(&v[start..]);
}

/// Whether `v` holds a byte JSON escapes: a control character, `"` or `\\`.
fn needs_escaping(v: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero when a byte of `x` is below `n` (for `n` ≤ 0x80): a byte can
    // only borrow from the one above it after it went below zero itself.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut chunks = v.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        if below(x, 0x20) | below(quote, 1) | below(backslash, 1) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Microseconds as milliseconds with up to three decimals, the way a float is
/// written in JSON (`12.0`, `0.25`, `3.125`).
fn json_ms(s: &mut String, us: u64) {
    let (whole, frac) = (us / 1000, (us % 1000) as u16);
    push_u64(s, whole);
    let digits = [
        '.',
        char::from(b'0' + (frac / 100) as u8),
        char::from(b'0' + (frac / 10 % 10) as u8),
        char::from(b'0' + (frac % 10) as u8),
    ];
    // Trailing zeros go, but one digit always stays (`12.0`).
    let len = if frac % 100 == 0 {
        2
    } else if frac % 10 == 0 {
        3
    } else {
        4
    };
    for &d in &digits[..len] {
        s.push(d);
    }
}

/// A number in decimal, without going through `fmt`.
fn push_u64(s: &mut String, n: u64) {
    s.push_str(itoa::Buffer::new().format(n));
}

/// An address as `Display` writes it; IPv4 without going through `fmt`.
fn push_ip(s: &mut String, ip: std::net::IpAddr) {
    use std::fmt::Write as _;
    match ip {
        std::net::IpAddr::V4(a) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                push_u64(s, u64::from(o));
            }
        }
        std::net::IpAddr::V6(a) => {
            let _ = write!(s, "{a}");
        }
    }
}

/// A time in milliseconds since the Unix epoch as RFC 3339 UTC to the
/// millisecond (`2026-11-29T13:40:12.345Z`). The text up to the second is kept
/// per thread and formatted again only when the second changes.
fn push_time(s: &mut String, now: u64) {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let (secs, millis) = (now / 1000, (now % 1000) as u32);
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs || cached.1.is_empty() {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            // `2026-11-29T13:40:12Z`: keep everything before the `Z`.
            cached.1 = text.trim_end_matches('Z').to_string();
            cached.0 = secs;
        }
        s.push_str(&cached.1);
    });
    let digits = [
        '.',
        char::from(b'0' + (millis / 100) as u8),
        char::from(b'0' + (millis / 10 % 10) as u8),
        char::from(b'0' + (millis % 10) as u8),
        'Z',
    ];
    for d in digits {
        s.push(d);
    }
}

/// What a line can hold, read from the request once, outside the buffer's lock.
fn line_values(c: &Completion) -> LineValues<'_> {
    let details = c.details.as_deref();
    let tls = details.and_then(|d| d.tls.as_ref());
    LineValues {
        // The coarse clock: a log line's time may be a tick (1 to 4 ms) early,
        // as with nginx's cached time; reading it costs a sixth of the precise one.
        now_ms: crate::clock::unix_ms_coarse(),
        request_id: &c.request_id,
        client_ip: c.client_ip,
        method: c.method.as_str(),
        host: c.host.as_deref().unwrap_or(""),
        path: c.path.as_deref().unwrap_or(""),
        protocol: details.map(|d| protocol_name(d.protocol)),
        status: c.status,
        bytes_in: c.bytes_in.as_ref().map_or(0, |b| b.bytes.load(Relaxed)),
        bytes_out: c.bytes_out,
        duration: c.duration,
        route: c.route_name(),
        pool: c.pool_name(),
        backend: c.backend_key(),
        upstream_us: c.upstream_us,
        attempts: c.attempts,
        user_agent: details.and_then(|d| d.user_agent.as_ref()),
        referer: details.and_then(|d| d.referer.as_ref()),
        tls_version: tls.map(|t| t.version),
        sni: tls.and_then(|t| t.sni.as_deref()),
        variant: c.variant,
        aborted: c.aborted,
    }
}

/// logfmt: `key=value` pairs, values quoted when they hold a space, a quote or
/// `=`, empty ones left out.
fn text_line(c: &Completion, fields: &[AccessField]) -> String {
    let mut out = String::with_capacity(256);
    for &f in fields {
        let text = match field(c, f) {
            Value::Null => continue,
            Value::String(s) if s.is_empty() => continue,
            Value::String(s) => s,
            other => other.to_string(),
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(f.name());
        out.push('=');
        if text.is_empty()
            || text.contains([' ', '"', '=', '\\'])
            || text.chars().any(char::is_control)
        {
            out.push_str(&Value::from(text).to_string());
        } else {
            out.push_str(&text);
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let mut s = String::new();
            json_str(&mut s, v);
            assert_eq!(s, serde_json::to_string(v).unwrap(), "{v:?}");
        }
    }

    #[test]
    fn the_word_at_a_time_check_finds_every_byte_json_escapes() {
        let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    // Neighbours that sit close to the special bytes.
                    let mut v = vec![b'!'; len];
                    v[at] = b;
                    if at + 1 < len {
                        v[at + 1] = 0x21;
                    }
                    assert_eq!(needs_escaping(&v), escaped(b), "{v:?}");
                    v.fill(0xff);
                    v[at] = b;
                    assert_eq!(needs_escaping(&v), escaped(b), "{v:?}");
                }
            }
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
        ] {
            let mut s = String::new();
            json_ms(&mut s, us);
            let expected = serde_json::to_string(&((us as f64).round() / 1000.0)).unwrap();
            assert_eq!(s, expected, "{us}");
        }
    }

    #[test]
    fn keys_match_the_field_names() {
        for (i, (name, _)) in AccessField::ALL.iter().enumerate() {
            assert_eq!(KEYS[i], format!("\"{name}\":"));
        }
    }

    #[test]
    fn addresses_as_display_writes_them() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.10.0.9",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn numbers_in_decimal() {
        for n in [0u64, 7, 10, 99, 1000, 65_535, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn the_time_is_rfc3339_to_the_millisecond() {
        let mut s = String::new();
        push_time(&mut s, crate::clock::unix_ms_coarse());
        push_time(&mut s, crate::clock::unix_ms_coarse());
        let (a, b) = s.split_at(24);
        for t in [a, b] {
            assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
            assert!(humantime::parse_rfc3339(t).is_ok(), "{t}");
        }
    }
}
