//! The access log: one line per request (JSON by default), written by a dedicated
//! thread so that a slow disk never delays a request. If the writer falls behind by
//! more than the queue holds, lines are dropped and counted, never waited for.

use super::finish::Completion;
use crate::config::AccessField;
use crate::config::{AccessLogConfig, LogFormat, LogTarget};
use serde_json::Value;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

const QUEUE: usize = 16 * 1024;

pub struct AccessLog {
    tx: SyncSender<String>,
    format: LogFormat,
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
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out))?;
        Ok(Some(AccessLog {
            tx,
            format: config.format,
            config: config.clone(),
            dropped: AtomicU64::new(0),
        }))
    }

    pub fn write(&self, c: &Completion) {
        let line = match self.format {
            LogFormat::Json => json_line(c, &self.config.fields),
            LogFormat::Text => text_line(c, &self.config.fields),
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

fn writer(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        // Drain what is queued, then flush once.
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
    }
}

/// What the access log wants from a request beyond what the handler keeps
/// anyway; captured only while the access log is on.
pub struct RequestDetails {
    pub protocol: http::Version,
    pub user_agent: Option<http::HeaderValue>,
    pub referer: Option<http::HeaderValue>,
    pub tls: Option<super::headers::TlsInfo>,
}

impl RequestDetails {
    pub fn capture(req: &http::request::Parts, peer: &super::headers::PeerInfo) -> Self {
        RequestDetails {
            protocol: req.version,
            user_agent: req.headers.get(http::header::USER_AGENT).cloned(),
            referer: req.headers.get(http::header::REFERER).cloned(),
            tls: peer.tls.clone(),
        }
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
        AccessField::DurationMs => Value::from(ms(c.started.elapsed().as_secs_f64() * 1e6)),
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

/// Fields left out of a line when they have no value (the others are always
/// there, `null` when empty, as they always were).
fn omitted_when_empty(f: AccessField) -> bool {
    matches!(
        f,
        AccessField::UserAgent
            | AccessField::Referer
            | AccessField::TlsVersion
            | AccessField::Sni
            | AccessField::Variant
            | AccessField::Aborted
    )
}

/// One JSON object, its keys in the order of `fields`.
fn json_line(c: &Completion, fields: &[AccessField]) -> String {
    let mut s = String::with_capacity(64 + 24 * fields.len());
    s.push('{');
    for &f in fields {
        let v = field(c, f);
        if v.is_null() && omitted_when_empty(f) {
            continue;
        }
        if s.len() > 1 {
            s.push(',');
        }
        s.push('"');
        s.push_str(f.name());
        s.push_str("\":");
        s.push_str(&v.to_string());
    }
    s.push_str("}\n");
    s
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
