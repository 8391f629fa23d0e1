//! `access_log.fields`: which fields an access-log line carries, in which order.

use super::decode::Decoder;
use super::tree::Node;

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
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(n, _)| n)
    }

    /// The fields a line has when `fields` is not set: all of them.
    pub fn defaults() -> Vec<AccessField> {
        Self::ALL.iter().map(|(_, f)| *f).collect()
    }
}

/// Decodes `fields: [status, path, ...]`: known names, each once, at least one.
pub fn decode_fields(d: &mut Decoder, n: &Node) -> Option<Vec<AccessField>> {
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

pub fn serialize_fields(fields: &[AccessField]) -> serde_json::Value {
    serde_json::Value::from(fields.iter().map(|f| f.name()).collect::<Vec<_>>())
}
