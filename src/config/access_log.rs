//! `access_log:` — one line per request, with a choice of fields.

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
    /// The fields of a line, in order (extension; default: all).
    pub fields: Vec<AccessField>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: LogFormat::Json,
            path: LogTarget::Stderr,
            fields: AccessField::defaults(),
        }
    }
}

const KEYS: &[&str] = &["enabled", "format", "path", "fields"];

/// `access_log:` (absent: the defaults). A relative file path is taken from `base_dir`.
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>, base_dir: &Path) -> AccessLogConfig {
    let mut a = AccessLogConfig::default();
    let Some(m) = n.and_then(|n| d.map(n, "access_log", KEYS)) else {
        return a;
    };
    if let Some(v) = m.get("fields").and_then(|v| decode_fields(d, v)) {
        a.fields = v;
    }
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
        "fields": serialize_fields(&a.fields),
    })
}

/// One field of an access-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessField {
    Time,
    RequestId,
    Client,
    Method,
    Host,
    Path,
    Protocol,
    Status,
    BytesIn,
    BytesOut,
    DurationMs,
    Route,
    Pool,
    Backend,
    UpstreamMs,
    Attempts,
    UserAgent,
    Referer,
    TlsVersion,
    Sni,
    Variant,
    Aborted,
}

impl AccessField {
    /// Every field, in the default order, with its name in the config and logs.
    pub const ALL: [(&'static str, AccessField); 22] = [
        ("time", AccessField::Time),
        ("request_id", AccessField::RequestId),
        ("client", AccessField::Client),
        ("method", AccessField::Method),
        ("host", AccessField::Host),
        ("path", AccessField::Path),
        ("protocol", AccessField::Protocol),
        ("status", AccessField::Status),
        ("bytes_in", AccessField::BytesIn),
        ("bytes_out", AccessField::BytesOut),
        ("duration_ms", AccessField::DurationMs),
        ("route", AccessField::Route),
        ("pool", AccessField::Pool),
        ("backend", AccessField::Backend),
        ("upstream_ms", AccessField::UpstreamMs),
        ("attempts", AccessField::Attempts),
        ("user_agent", AccessField::UserAgent),
        ("referer", AccessField::Referer),
        ("tls_version", AccessField::TlsVersion),
        ("sni", AccessField::Sni),
        ("variant", AccessField::Variant),
        ("aborted", AccessField::Aborted),
    ];

    pub fn name(self) -> &'static str {
        // `ALL` lists the variants in declaration order (a unit test checks it).
        Self::ALL[self as usize].0
    }

    /// The fields a line has when `fields` is not set: all of them.
    pub fn defaults() -> Vec<AccessField> {
        Self::ALL.iter().map(|(_, f)| *f).collect()
    }
}

/// Decodes `fields: [status, path, ...]`: known names, each once, at least one.
fn decode_fields(d: &mut Decoder, n: &Node) -> Option<Vec<AccessField>> {
    let mut out = Vec::new();
    for (name, loc) in d.string_list(n, "fields") {
        match AccessField::ALL.iter().find(|(k, _)| *k == name) {
            Some((_, f)) if out.contains(f) => {
                d.error(loc, format!("field `{name}` is listed twice"))
            }
            Some((_, f)) => out.push(*f),
            None => d.error(
                loc,
                format!(
                    "unknown access log field `{name}` (one of: {})",
                    AccessField::ALL.map(|(k, _)| k).join(", ")
                ),
            ),
        }
    }
    if out.is_empty() {
        d.error(n.loc, "fields must name at least one field");
        return None;
    }
    Some(out)
}

fn serialize_fields(fields: &[AccessField]) -> serde_json::Value {
    serde_json::Value::from(fields.iter().map(|f| f.name()).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn all_lists_the_fields_in_declaration_order() {
        for (i, (_, f)) in AccessField::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
    }

    #[test]
    fn decodes_and_round_trips() {
        let c = load("access_log: { enabled: false, format: text, path: stdout }\n");
        assert_eq!(
            c.access_log,
            AccessLogConfig {
                enabled: false,
                format: LogFormat::Text,
                path: LogTarget::Stdout,
                fields: AccessField::defaults(),
            }
        );
        let json = round_trip(&c);
        assert_eq!(
            json["access_log"],
            json!({"enabled": false, "format": "text", "path": "stdout", "fields": serialize_fields(&AccessField::defaults())})
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
