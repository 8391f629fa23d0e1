//! The access log: one line per request (JSON by default), written by a dedicated
//! thread so that a slow disk never delays a request. If the writer falls behind by
//! more than a thread's buffer holds, lines are dropped and counted, never waited for.

mod batches;
mod json;

use super::finish::Completion;
use crate::config::AccessField;
use crate::config::{AccessLogConfig, LogFormat, LogTarget};
use batches::Batches;
use json::{Cursor, JsonPlan, LineValues, Second};
use serde_json::Value;
use std::cell::RefCell;
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
            LogFormat::Json => self.write_json(&line_values(c)),
            LogFormat::Text => {
                let fields = &self.config.fields;
                self.batches
                    .append(|s| s.extend_from_slice(text_line(c, fields).as_bytes()))
            }
        };
        if !written {
            self.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// The most room a thread keeps for its lines: a longer line (a long URL or
/// user agent) gets room of its own, let go after.
const KEEP_ROOM: usize = 16 << 10;

thread_local! {
    /// This thread's room for a line, and the text of its last second.
    static ROOM: RefCell<(Vec<u8>, Second)> = const { RefCell::new((Vec::new(), Second::new())) };
}

impl AccessLog {
    /// Writes the line in this thread's room, outside the buffer's lock, and
    /// appends it: the lock is held for one copy.
    fn write_json(&self, values: &LineValues) -> bool {
        ROOM.with_borrow_mut(|(room, second)| {
            let plan = self.json.line(values);
            let need = plan.room(values);
            if room.len() < need {
                room.resize(need, 0);
            }
            let mut line = Cursor::new(room, second);
            plan.write(&mut line, values);
            let written = self.batches.append(|s| s.extend_from_slice(line.written()));
            if room.len() > KEEP_ROOM {
                *room = Vec::new();
            }
            written
        })
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

/// The host's text, empty when it is not visible ASCII.
fn host_text(c: &Completion) -> &str {
    c.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("")
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
        AccessField::Host => Value::from(host_text(c)),
        AccessField::Path => Value::from(c.path.as_ref().map_or("", |p| p.as_str())),
        AccessField::Protocol => c.protocol.map_or(Value::Null, |p| protocol_name(p).into()),
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
        host: c.host.as_ref(),
        path: c.path.as_ref().map_or("", |p| p.as_str()),
        protocol: c.protocol.map(protocol_name),
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
    fn keys_match_the_field_names() {
        for (i, (name, _)) in AccessField::ALL.iter().enumerate() {
            assert_eq!(KEYS[i], format!("\"{name}\":"));
        }
    }
}
