//! `tracing:` — OpenTelemetry trace export over OTLP/HTTP.

use super::decode::Decoder;
use super::tree::{Node, Value};
use serde_json::{Value as Json, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Protobuf,
    Json,
}

/// OpenTelemetry trace export over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Collector base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` is added).
    pub otlp_endpoint: String,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    /// Share of new traces recorded (a client's sampled flag is always followed).
    pub sample_ratio: f64,
}

const KEYS: &[&str] = &[
    "otlp_endpoint",
    "protocol",
    "service_name",
    "sample_ratio",
    "enabled",
];

/// `tracing:` (absent or `enabled: false`: no export).
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>) -> Option<TracingConfig> {
    let m = d.map(n?, "tracing", KEYS)?;
    if m.get("enabled").and_then(|v| d.boolean(v, "enabled")) == Some(false) {
        return None;
    }
    let Some(e) = m.get("otlp_endpoint") else {
        d.error(
            m.loc,
            "tracing needs `otlp_endpoint` (e.g. http://127.0.0.1:4318)",
        );
        return None;
    };
    let endpoint = d.string(e, "otlp_endpoint")?;
    if !endpoint.starts_with("http://") {
        d.error(
            e.loc,
            "otlp_endpoint must be an http:// URL (OTLP/HTTP without TLS)",
        );
    }
    let protocol = m
        .get("protocol")
        .and_then(|v| {
            d.choice(
                v,
                "protocol",
                &[
                    ("http/protobuf", OtlpProtocol::Protobuf),
                    ("http/json", OtlpProtocol::Json),
                ],
            )
        })
        .unwrap_or(OtlpProtocol::Protobuf);
    let service_name = m
        .get("service_name")
        .and_then(|v| d.string(v, "service_name"))
        .unwrap_or_else(|| "fulcrum".into());
    let sample_ratio = match m.get("sample_ratio") {
        Some(v) => match &v.value {
            Value::Float(f) if (0.0..=1.0).contains(f) => *f,
            Value::Int(i) if (0..=1).contains(i) => *i as f64,
            _ => {
                d.error(v.loc, "sample_ratio must be a number from 0 to 1");
                1.0
            }
        },
        None => 1.0,
    };
    Some(TracingConfig {
        otlp_endpoint: endpoint,
        protocol,
        service_name,
        sample_ratio,
    })
}

pub(crate) fn serialize(t: &TracingConfig) -> Json {
    json!({
        "otlp_endpoint": t.otlp_endpoint,
        "protocol": match t.protocol { OtlpProtocol::Protobuf => "http/protobuf", OtlpProtocol::Json => "http/json" },
        "service_name": t.service_name,
        "sample_ratio": t.sample_ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        let c = load(
            "tracing: { otlp_endpoint: \"http://127.0.0.1:4318\", protocol: http/json, sample_ratio: 0.5 }\n",
        );
        let t = c.tracing.as_ref().expect("tracing");
        assert_eq!(t.protocol, OtlpProtocol::Json);
        assert_eq!(t.service_name, "fulcrum");
        let json = round_trip(&c);
        assert_eq!(json["tracing"]["sample_ratio"], 0.5);
        assert_eq!(json["tracing"]["protocol"], "http/json");
        assert!(
            load("tracing: { otlp_endpoint: x, enabled: false }\n")
                .tracing
                .is_none()
        );
    }

    #[test]
    fn rejects_a_bad_ratio_with_its_position() {
        assert_eq!(
            errors("tracing:\n  otlp_endpoint: \"http://c:4318\"\n  sample_ratio: 2\n"),
            ["CFG:3:17: sample_ratio must be a number from 0 to 1"]
        );
    }
}
