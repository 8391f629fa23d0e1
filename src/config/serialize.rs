//! The config as JSON, in the same shape as the YAML it was read from, so that
//! `GET /api/v1/config` can be edited and sent back with `PUT`. Secrets can be
//! redacted.

use super::model::*;
use super::units::format_duration;
use serde_json::{Map, Value, json};
use std::time::Duration;

const REDACTED: &str = "<redacted>";

fn d(v: Duration) -> Value {
    Value::String(format_duration(v))
}

fn status(m: &StatusMatcher) -> Value {
    let items: Vec<Value> = m
        .ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                Value::from(lo)
            } else {
                Value::String(format!("{}xx", lo / 100))
            }
        })
        .collect();
    match items.len() {
        1 => items.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Array(items),
    }
}

fn address(a: &BackendAddress) -> String {
    match a.scheme {
        Scheme::Http => a.key.clone(),
        Scheme::Https => format!("https://{}", a.key),
        Scheme::H2c => format!("h2c://{}", a.key),
    }
}

fn health(h: &HealthCheckOverride) -> Value {
    let mut m = Map::new();
    if let Some(v) = &h.path {
        m.insert("path".into(), Value::String(v.clone()));
    }
    if let Some(v) = h.interval {
        m.insert("interval".into(), d(v));
    }
    if let Some(v) = h.down_interval {
        m.insert("down_interval".into(), d(v));
    }
    if let Some(v) = h.timeout {
        m.insert("timeout".into(), d(v));
    }
    if let Some(v) = &h.expected_status {
        m.insert("expected_status".into(), status(v));
    }
    if let Some(v) = h.unhealthy_threshold {
        m.insert("unhealthy_threshold".into(), Value::from(v));
    }
    if let Some(v) = h.healthy_threshold {
        m.insert("healthy_threshold".into(), Value::from(v));
    }
    Value::Object(m)
}

pub fn backend(b: &BackendConfig) -> Value {
    let mut m = Map::new();
    m.insert("address".into(), Value::String(address(&b.address)));
    m.insert("weight".into(), Value::from(b.weight));
    m.insert("failover_level".into(), Value::from(b.failover_level));
    if let Some(r) = &b.region {
        m.insert("region".into(), Value::String(r.clone()));
    }
    if let Some(n) = &b.name {
        m.insert("name".into(), Value::String(n.clone()));
    }
    if let Some(h) = &b.health_check {
        m.insert("health_check".into(), health(h));
    }
    if let Some(v) = b.max_requests {
        m.insert("max_requests".into(), Value::from(v));
    }
    Value::Object(m)
}

fn failover_override(f: &FailoverOverride) -> Value {
    let mut m = Map::new();
    if let Some(v) = f.enabled {
        m.insert("enabled".into(), Value::Bool(v));
    }
    if let Some(v) = f.strategy {
        m.insert("strategy".into(), Value::String(strategy(v).into()));
    }
    for (k, v) in [
        ("check_interval", f.check_interval),
        ("recovery_interval", f.recovery_interval),
        ("delay", f.delay),
        ("ramp", f.ramp),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), d(v));
        }
    }
    Value::Object(m)
}

pub fn strategy(s: FailoverStrategy) -> &'static str {
    match s {
        FailoverStrategy::Immediate => "immediate",
        FailoverStrategy::Graceful => "graceful",
        FailoverStrategy::Delayed => "delayed",
    }
}

fn pool(p: &PoolConfig) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), Value::String(p.name.clone()));
    m.insert("algorithm".into(), Value::String(p.algorithm.name().into()));
    if let Some(k) = &p.hash_key {
        let text = match k {
            HashKey::Header(h) => format!("header:{h}"),
            HashKey::Cookie(c) => format!("cookie:{c}"),
            HashKey::Path => "path".into(),
            HashKey::Query(q) => format!("query:{q}"),
        };
        m.insert("hash_key".into(), Value::String(text));
    }
    m.insert(
        "backends".into(),
        Value::Array(p.backends.iter().map(backend).collect()),
    );
    if let Some(h) = &p.health_check {
        m.insert("health_check".into(), health(h));
    }
    if p.upstream_tls != UpstreamTls::default() {
        let t = &p.upstream_tls;
        m.insert(
            "tls".into(),
            json!({
                "ca": t.ca.as_ref().map(|c| c.display().to_string()),
                "server_name": t.server_name,
                "insecure_skip_verify": t.insecure_skip_verify,
                "http2": t.http2,
            }),
        );
    }
    m.insert(
        "passive_health".into(),
        json!({
            "max_fails": p.passive_health.max_fails,
            "fail_duration": d(p.passive_health.fail_duration),
            "unhealthy_status": match status(&p.passive_health.unhealthy_status) {
                Value::Array(a) => Value::Array(a),
                Value::Null => Value::Array(vec![]),
                one => Value::Array(vec![one]),
            },
        }),
    );
    let mut retries = json!({
        "try_duration": d(p.retries.try_duration),
        "try_interval": d(p.retries.try_interval),
        "methods": p.retries.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
    });
    retries["hedge_after"] = match p.retries.hedge_after {
        None => Value::String("off".into()),
        Some(HedgeDelay::Auto) => Value::String("auto".into()),
        Some(HedgeDelay::Fixed(v)) => d(v),
    };
    m.insert("retries".into(), retries);
    m.insert(
        "timeouts".into(),
        json!({"connect": d(p.timeouts.connect), "response_header": d(p.timeouts.response_header), "idle": d(p.timeouts.idle)}),
    );
    if p.failover != FailoverOverride::default() {
        m.insert("failover".into(), failover_override(&p.failover));
    }
    m.insert("fail_open".into(), Value::Bool(p.fail_open));
    m.insert("slow_start".into(), d(p.slow_start));
    if p.max_requests > 0 || p.backends.iter().any(|b| b.max_requests.is_some()) {
        m.insert("max_requests".into(), Value::from(p.max_requests));
        m.insert(
            "queue".into(),
            json!({"size": p.queue.size, "timeout": d(p.queue.timeout)}),
        );
    }
    Value::Object(m)
}

fn header_ops(o: &HeaderOps) -> Value {
    let set: Map<String, Value> = o
        .set
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    json!({"set": set, "remove": o.remove.iter().map(|h| h.as_str()).collect::<Vec<_>>()})
}

fn route(r: &RouteConfig) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), Value::String(r.name.clone()));
    match &r.host {
        Some(HostMatch::Exact(h)) => {
            m.insert("host".into(), Value::String(h.clone()));
        }
        Some(HostMatch::Wildcard(s)) => {
            m.insert("host".into(), Value::String(format!("*.{s}")));
        }
        None => {}
    }
    m.insert("path_prefix".into(), Value::String(r.path_prefix.clone()));
    match &r.target {
        RouteTarget::Pool { name, .. } => {
            m.insert("pool".into(), Value::String(name.clone()));
        }
        RouteTarget::Split(vs) => {
            m.insert(
                "split".into(),
                Value::Array(
                    vs.iter()
                        .map(|v| json!({"pool": v.pool, "weight": v.weight}))
                        .collect(),
                ),
            );
            m.insert("sticky".into(), Value::Bool(r.sticky));
        }
    }
    if let Some(a) = r.load_balancing {
        m.insert("load_balancing".into(), json!({"method": a.name()}));
    }
    m.insert("strip_prefix".into(), Value::Bool(r.strip_prefix));
    if !(r.headers.request.is_empty() && r.headers.response.is_empty()) {
        m.insert(
            "headers".into(),
            json!({"request": header_ops(&r.headers.request), "response": header_ops(&r.headers.response)}),
        );
    }
    Value::Object(m)
}

fn channel(c: &NotificationChannel, redact: bool) -> Value {
    match c {
        NotificationChannel::Log { level } => json!({"type": "log", "level": match level {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }}),
        NotificationChannel::Webhook { url, format } => json!({
            "type": "webhook",
            // Webhook URLs often carry a secret token in their path.
            "url": if redact { REDACTED.to_string() } else { url.clone() },
            "format": match format { WebhookFormat::Json => "json", WebhookFormat::Slack => "slack", WebhookFormat::Discord => "discord" },
        }),
        NotificationChannel::Email {
            smtp_server,
            smtp_port,
            smtp_user,
            smtp_password,
            from,
            recipients,
        } => {
            let mut v = json!({
                "type": "email",
                "smtp_server": smtp_server,
                "smtp_port": smtp_port,
                "recipients": recipients,
            });
            if let Some(u) = smtp_user {
                v["smtp_user"] = Value::String(u.clone());
            }
            if let Some(p) = smtp_password {
                v["smtp_password"] =
                    Value::String(if redact { REDACTED.into() } else { p.clone() });
            }
            if let Some(f) = from {
                v["from"] = Value::String(f.clone());
            }
            v
        }
    }
}

/// The whole config. With `redact`, secrets (admin token, SMTP password, webhook
/// URLs) are replaced by `<redacted>`.
pub fn config(c: &Config, redact: bool) -> Value {
    let mut m = Map::new();
    m.insert(
        "listeners".into(),
        Value::Array(
            c.listeners
                .iter()
                .map(|l| {
                    let mut v = json!({"address": l.address.to_string(), "http2": l.http2});
                    if let Some(r) = l.redirect_http_from {
                        v["redirect_http_from"] = Value::String(r.to_string());
                    }
                    if let Some(t) = &l.tls {
                        let mut tv = json!({
                            "certificates": t.certificates.iter().map(|c| json!({"cert": c.cert.display().to_string(), "key": c.key.display().to_string()})).collect::<Vec<_>>(),
                        });
                        if let Some(a) = &t.acme {
                            tv["acme"] = json!({
                                "directory": a.directory,
                                "email": a.email,
                                "domains": a.domains,
                                "storage": a.storage.display().to_string(),
                                "ca_bundle": a.ca_bundle.as_ref().map(|p| p.display().to_string()),
                                "challenge": match a.challenge { AcmeChallenge::Http01 => "http-01", AcmeChallenge::TlsAlpn01 => "tls-alpn-01" },
                            });
                        }
                        v["tls"] = tv;
                    }
                    v
                })
                .collect(),
        ),
    );
    m.insert(
        "admin".into(),
        match &c.admin {
            None => json!({"enabled": false}),
            Some(a) => {
                let mut v = json!({"address": a.address.to_string()});
                if a.token.is_some() {
                    v["token"] = Value::String(if redact {
                        REDACTED.into()
                    } else {
                        a.token.clone().unwrap_or_default()
                    });
                }
                v
            }
        },
    );
    m.insert(
        "access_log".into(),
        json!({
            "enabled": c.access_log.enabled,
            "format": match c.access_log.format { LogFormat::Json => "json", LogFormat::Text => "text" },
            "path": match &c.access_log.path { LogTarget::Stderr => "stderr".to_string(), LogTarget::Stdout => "stdout".to_string(), LogTarget::File(p) => p.display().to_string() },
            "fields": super::access_log::serialize_fields(&c.access_log.fields),
        }),
    );
    m.insert(
        "limits".into(),
        json!({
            "max_header_bytes": c.limits.max_header_bytes,
            "max_body_bytes": c.limits.max_body_bytes,
            "header_read_timeout": d(c.limits.header_read_timeout),
            "max_connections": c.limits.max_connections,
        }),
    );
    m.insert(
        "trusted_proxies".into(),
        Value::Array(
            c.trusted_proxies
                .iter()
                .map(|n| Value::String(n.to_string()))
                .collect(),
        ),
    );
    m.insert("shutdown_timeout".into(), d(c.shutdown_timeout));
    m.insert(
        "pools".into(),
        Value::Array(c.pools.iter().map(pool).collect()),
    );
    m.insert(
        "routes".into(),
        Value::Array(c.routes.iter().map(route).collect()),
    );
    let f = &c.failover;
    m.insert(
        "failover".into(),
        json!({
            "enabled": f.settings.enabled,
            "strategy": strategy(f.settings.strategy),
            "check_interval": d(f.settings.check_interval),
            "recovery_interval": d(f.settings.recovery_interval),
            "delay": d(f.settings.delay),
            "ramp": d(f.settings.ramp),
            "notification": {
                "enabled": f.notification.enabled,
                "channels": f.notification.channels.iter().map(|ch| channel(ch, redact)).collect::<Vec<_>>(),
            },
        }),
    );
    if let Some(t) = &c.tracing {
        m.insert(
            "tracing".into(),
            json!({
                "otlp_endpoint": t.otlp_endpoint,
                "protocol": match t.protocol { OtlpProtocol::Protobuf => "http/protobuf", OtlpProtocol::Json => "http/json" },
                "service_name": t.service_name,
                "sample_ratio": t.sample_ratio,
            }),
        );
    }
    if let Some(c) = &c.cluster {
        let ms = |d: std::time::Duration| humantime::format_duration(d).to_string();
        m.insert(
            "cluster".into(),
            json!({
                "node_id": c.node_id,
                "bind": c.bind.to_string(),
                "peers": c.peers.iter().map(|p| json!({"id": p.id, "address": p.address, "witness": p.witness})).collect::<Vec<_>>(),
                "state_dir": c.state_dir.display().to_string(),
                "heartbeat_interval": ms(c.heartbeat_interval),
                "election_timeout": ms(c.election_timeout),
                "priority": c.priority,
                "preempt": c.preempt,
                "preempt_delay": ms(c.preempt_delay),
                "vip": c.vip.as_ref().map(|v| json!({
                    "address": format!("{}/{}", v.address, v.prefix_len),
                    "interface": v.interface,
                    "garp_count": v.garp_count,
                })),
                "hooks": {
                    "notify": c.hooks.notify.as_ref().map(|p| p.display().to_string()),
                    "notify_timeout": ms(c.hooks.notify_timeout),
                    "webhook": c.hooks.webhook.as_ref().map(|w| if redact { REDACTED.to_string() } else { w.clone() }),
                },
                "secret": c.secret.as_ref().map(|s| if redact { REDACTED.to_string() } else { s.clone() }),
            }),
        );
    }
    Value::Object(m)
}
