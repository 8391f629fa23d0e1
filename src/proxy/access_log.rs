//! The access log: one line per request (JSON by default), written by a dedicated
//! thread so that a slow disk never delays a request. If the writer falls behind by
//! more than the queue holds, lines are dropped and counted, never waited for.

use super::finish::Completion;
use crate::config::{AccessLogConfig, LogFormat, LogTarget};
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
            LogFormat::Json => json_line(c),
            LogFormat::Text => text_line(c),
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

fn json_line(c: &Completion) -> String {
    let duration_ms = c.started.elapsed().as_secs_f64() * 1000.0;
    let mut v = serde_json::json!({
        "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "request_id": c.request_id.to_str().unwrap_or(""),
        "client": c.client_ip.to_string(),
        "method": c.method.as_str(),
        "host": c.host.as_deref().unwrap_or(""),
        "path": c.path.as_deref().unwrap_or(""),
        "status": c.status,
        "bytes_in": c.bytes_in.as_ref().map(|s| s.bytes.load(Relaxed)).unwrap_or(0),
        "bytes_out": c.bytes_out,
        "duration_ms": (duration_ms * 1000.0).round() / 1000.0,
        "route": c.route_name(),
        "pool": c.pool_name(),
        "backend": c.backend_key(),
        "upstream_ms": c.upstream_us.map(|u| (u as f64 / 1000.0 * 1000.0).round() / 1000.0),
        "attempts": c.attempts,
    });
    if let Some(i) = c.variant {
        v["variant"] = serde_json::Value::from(i);
    }
    if c.aborted {
        v["aborted"] = serde_json::Value::Bool(true);
    }
    let mut s = v.to_string();
    s.push('\n');
    s
}

fn text_line(c: &Completion) -> String {
    format!(
        "{} {} {} {} {}{} {} {}B {:.1}ms pool={} backend={} attempts={}\n",
        humantime::format_rfc3339_millis(std::time::SystemTime::now()),
        c.request_id.to_str().unwrap_or("-"),
        c.client_ip,
        c.method,
        c.host.as_deref().unwrap_or(""),
        c.path.as_deref().unwrap_or(""),
        c.status,
        c.bytes_out,
        c.started.elapsed().as_secs_f64() * 1000.0,
        c.pool_name(),
        c.backend_key(),
        c.attempts,
    )
}
