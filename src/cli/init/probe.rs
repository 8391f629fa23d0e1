//! What `fulcrum init` tries for real while it asks: a health check of each server
//! as it is entered (over the proxy's own upstream client, so TLS and h2c behave
//! as they will in service), and a test notification when asked.

use super::answers::{Email, Health, Webhook};
use super::checks;
use crate::config::{
    BackendAddress, NotificationChannel, Scheme, StatusMatcher, Timeouts, UpstreamTls,
    WebhookFormat,
};
use crate::events::EventKind;
use crate::upstream::backend::Backend;
use crate::upstream::body::UpstreamBody;
use crate::upstream::client::{self, Conn};
use crate::upstream::levels::FailoverEvent;
use http::{HeaderValue, Request, header};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a server answered to one health check.
pub(crate) struct ProbeReport {
    pub healthy: bool,
    /// One line for a person: `answered 200 OK in 3 ms` or why nothing came.
    pub said: String,
}

fn expected(h: &Health) -> StatusMatcher {
    let mut ranges = Vec::new();
    for part in h.expected_status.split(',') {
        if let Ok(r) = StatusMatcher::parse_one(part) {
            ranges.push(r);
        }
    }
    StatusMatcher { ranges }
}

/// Sends one health-check request to `address` for `h.path`, within `h.timeout`.
pub(crate) async fn probe(address: &str, h: &Health) -> ProbeReport {
    let addr = match BackendAddress::parse(address) {
        Ok(a) => a,
        Err(e) => {
            return ProbeReport {
                healthy: false,
                said: e,
            };
        }
    };
    let tls = if addr.scheme == Scheme::Https {
        match crate::tls::upstream_client_config(&UpstreamTls::default()) {
            Ok(config) => Some(Arc::new(crate::upstream::io::TlsClient {
                config,
                config_h2: None,
                server_name: None,
            })),
            Err(e) => {
                return ProbeReport {
                    healthy: false,
                    said: format!("TLS setup failed: {e}"),
                };
            }
        }
    } else {
        None
    };
    let backend = Arc::new(Backend::new("init", addr, tls));
    let timeout = checks::duration_value(&h.timeout).max(Duration::from_millis(100));
    let mut req = Request::new(UpstreamBody::Empty);
    let target = if backend.address.scheme == Scheme::H2c {
        *req.version_mut() = http::Version::HTTP_2;
        format!("http://{}{}", backend.address.key, h.path)
    } else {
        h.path.clone()
    };
    match target.parse() {
        Ok(u) => *req.uri_mut() = u,
        Err(_) => {
            return ProbeReport {
                healthy: false,
                said: format!("invalid path {}", h.path),
            };
        }
    }
    if let Ok(v) = HeaderValue::from_str(&backend.address.key) {
        req.headers_mut().insert(header::HOST, v);
    }
    req.headers_mut()
        .insert(header::USER_AGENT, HeaderValue::from_static("fulcrum-init"));
    let timeouts = Timeouts {
        connect: timeout,
        response_header: timeout,
        idle: Duration::from_secs(1),
    };
    let started = Instant::now();
    let sent = tokio::time::timeout(
        timeout,
        client::send(&backend, req, &Default::default(), &timeouts, Conn::New),
    )
    .await;
    let ms = started.elapsed().as_millis();
    match sent {
        Ok(Ok((resp, _))) => {
            let status = resp.status();
            let healthy = expected(h).matches(status.as_u16());
            ProbeReport {
                healthy,
                said: format!(
                    "answered {} {} in {ms} ms{}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or(""),
                    if healthy {
                        String::new()
                    } else {
                        format!(" (expected {})", h.expected_status)
                    }
                ),
            }
        }
        Ok(Err((e, _))) => ProbeReport {
            healthy: false,
            said: format!("did not answer: {}", plain_error(&e.to_string())),
        },
        Err(_) => ProbeReport {
            healthy: false,
            said: format!("did not answer within {}", h.timeout),
        },
    }
}

/// `connect: Connection refused (os error 111)` -> `connection refused`.
fn plain_error(e: &str) -> String {
    let e = e.strip_prefix("connect: ").unwrap_or(e);
    let e = match e.find(" (os error") {
        Some(i) => &e[..i],
        None => e,
    };
    let mut chars = e.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn test_event() -> FailoverEvent {
    FailoverEvent {
        event: EventKind::FailoverTest,
        pool: super::render::POOL.into(),
        from_level: 0,
        to_level: 1,
        reason: "test message from fulcrum init".into(),
        mode: "manual".into(),
        ts: crate::clock::rfc3339(crate::clock::unix_secs_f64()),
        duration_seconds: 0.0,
    }
}

/// Sends one test e-mail with these settings, as a failover would.
pub(crate) async fn test_email(m: &Email) -> Result<(), String> {
    let channel = NotificationChannel::Email {
        smtp_server: m.smtp_server.clone(),
        smtp_port: m.smtp_port,
        smtp_user: m.smtp_user.clone(),
        smtp_password: m.smtp_password.clone(),
        from: m.from.clone(),
        recipients: m.recipients.clone(),
    };
    crate::failover::notify::deliver_email(&channel, &test_event()).await
}

/// Posts one test event to the webhook, as a failover would.
pub(crate) async fn test_webhook(w: &Webhook) -> Result<(), String> {
    let format = match w.format.as_str() {
        "slack" => WebhookFormat::Slack,
        "discord" => WebhookFormat::Discord,
        _ => WebhookFormat::Json,
    };
    crate::failover::notify::deliver_webhook(&w.url, format, &test_event()).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_read_plainly() {
        assert_eq!(
            super::plain_error("connect: Connection refused (os error 111)"),
            "connection refused"
        );
    }
}
