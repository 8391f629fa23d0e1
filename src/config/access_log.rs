//! `access_log:` — one line per request.

use super::decode::Decoder;
use super::tree::Node;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogTarget {
    Stderr,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub enabled: bool,
    pub format: LogFormat,
    pub path: LogTarget,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: LogFormat::Json,
            path: LogTarget::Stderr,
        }
    }
}

const KEYS: &[&str] = &["enabled", "format", "path"];

/// `access_log:` (absent: the defaults). A relative file path is taken from `base_dir`.
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>, base_dir: &Path) -> AccessLogConfig {
    let mut a = AccessLogConfig::default();
    let Some(m) = n.and_then(|n| d.map(n, "access_log", KEYS)) else {
        return a;
    };
    if let Some(v) = m.get("enabled").and_then(|v| d.boolean(v, "enabled")) {
        a.enabled = v;
    }
    if let Some(v) = m.get("format")
        && let Some(f) = d.choice(
            v,
            "format",
            &[("json", LogFormat::Json), ("text", LogFormat::Text)],
        )
    {
        a.format = f;
    }
    if let Some(v) = m.get("path").and_then(|v| d.string(v, "path")) {
        a.path = match v.as_str() {
            "stderr" => LogTarget::Stderr,
            "stdout" => LogTarget::Stdout,
            p => LogTarget::File(base_dir.join(p)),
        };
    }
    a
}

pub(crate) fn serialize(a: &AccessLogConfig) -> Value {
    json!({
        "enabled": a.enabled,
        "format": match a.format { LogFormat::Json => "json", LogFormat::Text => "text" },
        "path": match &a.path { LogTarget::Stderr => "stderr".to_string(), LogTarget::Stdout => "stdout".to_string(), LogTarget::File(p) => p.display().to_string() },
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load("access_log: { enabled: false, format: text, path: stdout }\n");
        assert_eq!(
            c.access_log,
            AccessLogConfig {
                enabled: false,
                format: LogFormat::Text,
                path: LogTarget::Stdout
            }
        );
        let json = round_trip(&c);
        assert_eq!(
            json["access_log"],
            json!({"enabled": false, "format": "text", "path": "stdout"})
        );
        let file = load("access_log: { path: logs/access.log }\n")
            .access_log
            .path;
        assert_eq!(
            file,
            LogTarget::File(Path::new(env!("CARGO_MANIFEST_DIR")).join("logs/access.log"))
        );
    }

    #[test]
    fn rejects_an_unknown_format_with_a_suggestion() {
        assert_eq!(
            errors("access_log:\n  format: jsn\n"),
            ["CFG:2:11: format must be one of json | text, found `jsn` (did you mean `json`?)"]
        );
    }
}
