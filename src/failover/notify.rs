//! Failover notifications: log, webhook, email. Each channel has its own queue and
//! task, delivers in order, and retries with backoff, so a failing channel never
//! blocks traffic or the other channels.

use crate::config::{LogLevel, NotificationChannel, NotificationConfig, WebhookFormat};
use crate::events::EventKind;
use crate::upstream::levels::FailoverEvent;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const QUEUE: usize = 256;
/// Waits between delivery attempts; the number of attempts is one more.
const BACKOFF: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

enum Channel {
    Log(LogLevel),
    Queued {
        name: String,
        tx: mpsc::Sender<FailoverEvent>,
    },
}

struct Active {
    config: NotificationConfig,
    channels: Vec<Channel>,
}

pub struct Notifier {
    active: ArcSwap<Active>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            active: ArcSwap::from_pointee(Active {
                config: NotificationConfig {
                    enabled: false,
                    channels: Vec::new(),
                },
                channels: Vec::new(),
            }),
        }
    }
}

impl Notifier {
    /// Applies the notification section of a (re)loaded config. Unchanged config
    /// keeps the running channels (and what they still have to deliver).
    pub fn configure(&self, config: &NotificationConfig) {
        if self.active.load().config == *config {
            return;
        }
        let channels = if config.enabled {
            config.channels.iter().map(start).collect()
        } else {
            Vec::new()
        };
        self.active.store(Arc::new(Active {
            config: config.clone(),
            channels,
        }));
    }

    /// Whether a `log` channel is configured (it then writes the event's line).
    pub fn logs_events(&self) -> bool {
        self.active
            .load()
            .channels
            .iter()
            .any(|c| matches!(c, Channel::Log(_)))
    }

    /// Hands the event to every channel without waiting for any.
    pub fn send(&self, event: FailoverEvent) {
        for ch in &self.active.load().channels {
            match ch {
                Channel::Log(level) => log(*level, &event),
                Channel::Queued { name, tx } => {
                    if tx.try_send(event.clone()).is_err() {
                        tracing::error!(channel = %name, "notification queue full; event dropped");
                    }
                }
            }
        }
    }
}

fn log(level: LogLevel, e: &FailoverEvent) {
    let msg = summary(e);
    match level {
        LogLevel::Error => {
            tracing::error!(target: "fulcrum::failover", event = %e.event, pool = %e.pool, "{msg}")
        }
        LogLevel::Warning => {
            tracing::warn!(target: "fulcrum::failover", event = %e.event, pool = %e.pool, "{msg}")
        }
        LogLevel::Info => {
            tracing::info!(target: "fulcrum::failover", event = %e.event, pool = %e.pool, "{msg}")
        }
        LogLevel::Debug => {
            tracing::debug!(target: "fulcrum::failover", event = %e.event, pool = %e.pool, "{msg}")
        }
    }
}

/// One human line for an event.
pub fn summary(e: &FailoverEvent) -> String {
    let what = match e.event {
        EventKind::FailoverActivated => "failover activated",
        EventKind::FailoverRecovered => "failover recovered",
        EventKind::FailoverTest => "failover TEST (no traffic moved)",
        other => other.as_str(),
    };
    format!(
        "[fulcrum] {what} on pool {}: level {} -> {} ({}, {}) at {}",
        e.pool, e.from_level, e.to_level, e.reason, e.mode, e.ts
    )
}

fn start(c: &NotificationChannel) -> Channel {
    match c {
        NotificationChannel::Log { level } => Channel::Log(*level),
        NotificationChannel::Webhook { url, format } => {
            let (tx, rx) = mpsc::channel(QUEUE);
            let (url, format) = (url.clone(), *format);
            let name = format!("webhook {}", redact_url(&url));
            tokio::spawn(worker(name.clone(), rx, move |e| {
                let url = url.clone();
                async move { deliver_webhook(&url, format, &e).await }
            }));
            Channel::Queued { name, tx }
        }
        NotificationChannel::Email { .. } => {
            let (tx, rx) = mpsc::channel(QUEUE);
            let channel = c.clone();
            let name = "email".to_string();
            tokio::spawn(worker(name.clone(), rx, move |e| {
                let channel = channel.clone();
                async move { deliver_email(&channel, &e).await }
            }));
            Channel::Queued { name, tx }
        }
    }
}

/// Scheme and host only: webhook URLs often carry a secret in their path.
fn redact_url(url: &str) -> String {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let host = rest.split('/').next().unwrap_or(rest);
            format!("{}{host}/...", &url[..i + 3])
        }
        None => "<invalid>".into(),
    }
}

async fn worker<F, Fut>(name: String, mut rx: mpsc::Receiver<FailoverEvent>, deliver: F)
where
    F: Fn(FailoverEvent) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    while let Some(e) = rx.recv().await {
        let mut attempt = 0;
        loop {
            match deliver(e.clone()).await {
                Ok(()) => {
                    tracing::debug!(channel = %name, event = %e.event, "notification sent");
                    break;
                }
                Err(err) if attempt < BACKOFF.len() => {
                    tracing::warn!(channel = %name, event = %e.event, error = %err, retry_in = ?BACKOFF[attempt], "notification failed; will retry");
                    tokio::time::sleep(BACKOFF[attempt]).await;
                    attempt += 1;
                }
                Err(err) => {
                    tracing::error!(channel = %name, event = %e.event, error = %err, "notification failed; giving up");
                    break;
                }
            }
        }
    }
}

pub(crate) async fn deliver_webhook(
    url: &str,
    format: WebhookFormat,
    e: &FailoverEvent,
) -> Result<(), String> {
    let body = match format {
        WebhookFormat::Json => serde_json::to_vec(e),
        WebhookFormat::Slack => serde_json::to_vec(&serde_json::json!({ "text": summary(e) })),
        WebhookFormat::Discord => serde_json::to_vec(&serde_json::json!({ "content": summary(e) })),
    }
    .map_err(|err| err.to_string())?;
    let status = crate::net::post_json(url, body, Duration::from_secs(10)).await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}

pub(crate) async fn deliver_email(
    c: &NotificationChannel,
    e: &FailoverEvent,
) -> Result<(), String> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let NotificationChannel::Email {
        smtp_server,
        smtp_port,
        smtp_user,
        smtp_password,
        from,
        recipients,
    } = c
    else {
        return Err("not an email channel".into());
    };
    let from = from
        .clone()
        .unwrap_or_else(|| format!("fulcrum@{}", hostname()));
    let mut msg = Message::builder()
        .from(
            from.parse()
                .map_err(|err| format!("invalid from address `{from}`: {err}"))?,
        )
        .subject(format!("[fulcrum] {} on pool {}", e.event, e.pool));
    for r in recipients {
        msg = msg.to(r
            .parse()
            .map_err(|err| format!("invalid recipient `{r}`: {err}"))?);
    }
    let text = format!(
        "{}\n\n{}\n",
        summary(e),
        serde_json::to_string_pretty(e).unwrap_or_default()
    );
    let msg = msg.body(text).map_err(|err| err.to_string())?;
    // STARTTLS when the server offers it; plain otherwise.
    let tls = TlsParameters::new(smtp_server.clone()).map_err(|err| err.to_string())?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp_server.as_str())
        .port(*smtp_port)
        .tls(Tls::Opportunistic(tls))
        .timeout(Some(Duration::from_secs(15)));
    if let (Some(u), Some(p)) = (smtp_user, smtp_password) {
        builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
    }
    builder
        .build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|err| err.to_string())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
