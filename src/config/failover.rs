//! `failover:` — how pools switch between backend levels and back (global
//! settings, and a pool's own `failover:` block that overrides them key by key),
//! and the notification channels told about each switch.

use super::decode::{Decoder, MapView};
use super::serialize::{duration, secret};
use super::tree::Node;
use serde_json::{Map, Value, json};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverStrategy {
    Immediate,
    Graceful,
    Delayed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailoverSettings {
    pub enabled: bool,
    pub strategy: FailoverStrategy,
    pub check_interval: Duration,
    pub recovery_interval: Duration,
    pub delay: Duration,
    pub ramp: Duration,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        FailoverSettings {
            enabled: true,
            strategy: FailoverStrategy::Immediate,
            check_interval: Duration::from_secs(5),
            recovery_interval: Duration::from_secs(10),
            delay: Duration::from_secs(10),
            ramp: Duration::from_secs(30),
        }
    }
}

/// A pool's `failover:` block: overrides the global one key by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailoverOverride {
    pub enabled: Option<bool>,
    pub strategy: Option<FailoverStrategy>,
    pub check_interval: Option<Duration>,
    pub recovery_interval: Option<Duration>,
    pub delay: Option<Duration>,
    pub ramp: Option<Duration>,
}

impl FailoverOverride {
    pub fn apply_to(&self, base: &FailoverSettings) -> FailoverSettings {
        FailoverSettings {
            enabled: self.enabled.unwrap_or(base.enabled),
            strategy: self.strategy.unwrap_or(base.strategy),
            check_interval: self.check_interval.unwrap_or(base.check_interval),
            recovery_interval: self.recovery_interval.unwrap_or(base.recovery_interval),
            delay: self.delay.unwrap_or(base.delay),
            ramp: self.ramp.unwrap_or(base.ramp),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Json,
    Slack,
    Discord,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NotificationChannel {
    Log {
        level: LogLevel,
    },
    Webhook {
        url: String,
        format: WebhookFormat,
    },
    Email {
        smtp_server: String,
        smtp_port: u16,
        smtp_user: Option<String>,
        smtp_password: Option<String>,
        from: Option<String>,
        recipients: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationConfig {
    pub enabled: bool,
    pub channels: Vec<NotificationChannel>,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        NotificationConfig {
            enabled: true,
            channels: vec![NotificationChannel::Log {
                level: LogLevel::Warning,
            }],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailoverConfig {
    pub settings: FailoverSettings,
    pub notification: NotificationConfig,
}

const SETTING_KEYS: &[&str] = &[
    "enabled",
    "strategy",
    "check_interval",
    "recovery_interval",
    "delay",
    "ramp",
];

/// The global `failover:` (absent: the defaults).
pub(crate) fn decode(d: &mut Decoder, n: Option<&Node>) -> FailoverConfig {
    let mut keys = SETTING_KEYS.to_vec();
    keys.push("notification");
    let mut f = FailoverConfig::default();
    let Some(m) = n.and_then(|n| d.map(n, "failover", &keys)) else {
        return f;
    };
    f.settings = settings_from(d, &m).apply_to(&f.settings);
    if let Some(v) = m.get("notification") {
        f.notification = notification(d, v);
    }
    f
}

/// A pool's `failover:` block; `what` names it in errors.
pub(crate) fn decode_override(d: &mut Decoder, n: &Node, what: &str) -> FailoverOverride {
    match d.map(n, what, SETTING_KEYS) {
        Some(m) => settings_from(d, &m),
        None => FailoverOverride::default(),
    }
}

fn settings_from(d: &mut Decoder, m: &MapView) -> FailoverOverride {
    let mut o = FailoverOverride {
        enabled: m.get("enabled").and_then(|v| d.boolean(v, "enabled")),
        strategy: m.get("strategy").and_then(|v| {
            d.choice(
                v,
                "strategy",
                &[
                    ("immediate", FailoverStrategy::Immediate),
                    ("graceful", FailoverStrategy::Graceful),
                    ("delayed", FailoverStrategy::Delayed),
                ],
            )
        }),
        ..Default::default()
    };
    for (key, slot) in [
        ("check_interval", &mut o.check_interval),
        ("recovery_interval", &mut o.recovery_interval),
        ("delay", &mut o.delay),
        ("ramp", &mut o.ramp),
    ] {
        *slot = m.get(key).and_then(|v| d.duration(v, key));
    }
    if o.check_interval == Some(Duration::ZERO) {
        d.error(
            m.get("check_interval").map(|n| n.loc).unwrap_or(m.loc),
            "check_interval must be more than 0",
        );
    }
    o
}

fn notification(d: &mut Decoder, n: &Node) -> NotificationConfig {
    let mut out = NotificationConfig::default();
    let Some(m) = d.map(n, "notification", &["enabled", "channels"]) else {
        return out;
    };
    if let Some(v) = m.get("enabled").and_then(|v| d.boolean(v, "enabled")) {
        out.enabled = v;
    }
    if let Some(v) = m.get("channels") {
        out.channels = d
            .seq(v, "channels")
            .iter()
            .filter_map(|c| channel(d, c))
            .collect();
    }
    out
}

#[derive(Clone, Copy)]
enum ChannelKind {
    Log,
    Webhook,
    Email,
}

/// Every key a channel may have, whatever its type.
const CHANNEL_KEYS: &[&str] = &[
    "type",
    "level",
    "url",
    "format",
    "smtp_server",
    "smtp_port",
    "smtp_user",
    "smtp_password",
    "from",
    "recipients",
];

fn channel(d: &mut Decoder, n: &Node) -> Option<NotificationChannel> {
    let m = d.map(n, "a notification channel", CHANNEL_KEYS)?;
    let Some(t) = m.get("type") else {
        d.error(
            m.loc,
            "a notification channel needs a `type` (log, webhook or email)",
        );
        return None;
    };
    let kind = d.choice(
        t,
        "type",
        &[
            ("log", ChannelKind::Log),
            ("webhook", ChannelKind::Webhook),
            ("email", ChannelKind::Email),
        ],
    )?;
    let allowed: &[&str] = match kind {
        ChannelKind::Log => &["type", "level"],
        ChannelKind::Webhook => &["type", "url", "format"],
        ChannelKind::Email => &[
            "type",
            "smtp_server",
            "smtp_port",
            "smtp_user",
            "smtp_password",
            "from",
            "recipients",
        ],
    };
    for &key in &CHANNEL_KEYS[1..] {
        if m.get_raw(key).is_some() && !allowed.contains(&key) {
            d.error(
                m.key_loc(key).unwrap_or(m.loc),
                format!("`{key}` does not apply to this channel type"),
            );
        }
    }
    match kind {
        ChannelKind::Log => Some(log_channel(d, &m)),
        ChannelKind::Webhook => webhook_channel(d, &m),
        ChannelKind::Email => email_channel(d, &m),
    }
}

fn log_channel(d: &mut Decoder, m: &MapView) -> NotificationChannel {
    let level = m
        .get("level")
        .and_then(|v| {
            d.choice(
                v,
                "level",
                &[
                    ("error", LogLevel::Error),
                    ("warning", LogLevel::Warning),
                    ("warn", LogLevel::Warning),
                    ("info", LogLevel::Info),
                    ("debug", LogLevel::Debug),
                ],
            )
        })
        .unwrap_or(LogLevel::Warning);
    NotificationChannel::Log { level }
}

fn webhook_channel(d: &mut Decoder, m: &MapView) -> Option<NotificationChannel> {
    let Some(u) = m.get("url") else {
        d.error(m.loc, "a webhook channel needs a `url`");
        return None;
    };
    let url = d.string(u, "url")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        d.error(
            u.loc,
            format!("webhook url `{url}` must start with http:// or https://"),
        );
    }
    let format = m
        .get("format")
        .and_then(|v| {
            d.choice(
                v,
                "format",
                &[
                    ("json", WebhookFormat::Json),
                    ("slack", WebhookFormat::Slack),
                    ("discord", WebhookFormat::Discord),
                ],
            )
        })
        .unwrap_or(WebhookFormat::Json);
    Some(NotificationChannel::Webhook { url, format })
}

fn email_channel(d: &mut Decoder, m: &MapView) -> Option<NotificationChannel> {
    let Some(server) = m.get("smtp_server") else {
        d.error(m.loc, "an email channel needs `smtp_server`");
        return None;
    };
    let smtp_server = d.string(server, "smtp_server")?;
    let smtp_port = m
        .get("smtp_port")
        .and_then(|v| d.int(v, "smtp_port", 1, 65535))
        .unwrap_or(587) as u16;
    let smtp_user = m
        .get("smtp_user")
        .and_then(|v| d.string(v, "smtp_user"))
        .filter(|s| !s.is_empty());
    let smtp_password = m
        .get("smtp_password")
        .and_then(|v| d.scalar_string(v, "smtp_password"))
        .filter(|s| !s.is_empty());
    let from = m.get("from").and_then(|v| d.string(v, "from"));
    if let (Some(f), Some(v)) = (&from, m.get("from"))
        && let Err(msg) = super::units::check_email(f)
    {
        d.error(v.loc, msg);
    }
    let recipients: Vec<String> = m
        .get("recipients")
        .map(|v| {
            d.string_list(v, "recipients")
                .into_iter()
                .filter_map(|(s, loc)| match super::units::check_email(&s) {
                    Ok(()) => Some(s),
                    Err(msg) => {
                        d.error(loc, msg);
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if recipients.is_empty() {
        d.error(m.loc, "an email channel needs at least one of `recipients`");
    }
    Some(NotificationChannel::Email {
        smtp_server,
        smtp_port,
        smtp_user,
        smtp_password,
        from,
        recipients,
    })
}

pub(crate) fn strategy_name(s: FailoverStrategy) -> &'static str {
    match s {
        FailoverStrategy::Immediate => "immediate",
        FailoverStrategy::Graceful => "graceful",
        FailoverStrategy::Delayed => "delayed",
    }
}

/// The global `failover:`. With `redact`, webhook URLs and SMTP passwords are
/// replaced by `<redacted>`.
pub(crate) fn serialize(f: &FailoverConfig, redact: bool) -> Value {
    json!({
        "enabled": f.settings.enabled,
        "strategy": strategy_name(f.settings.strategy),
        "check_interval": duration(f.settings.check_interval),
        "recovery_interval": duration(f.settings.recovery_interval),
        "delay": duration(f.settings.delay),
        "ramp": duration(f.settings.ramp),
        "notification": {
            "enabled": f.notification.enabled,
            "channels": f.notification.channels.iter().map(|ch| channel_json(ch, redact)).collect::<Vec<_>>(),
        },
    })
}

/// A pool's `failover:` block: only the keys it sets.
pub(crate) fn serialize_override(f: &FailoverOverride) -> Value {
    let mut m = Map::new();
    if let Some(v) = f.enabled {
        m.insert("enabled".into(), Value::Bool(v));
    }
    if let Some(v) = f.strategy {
        m.insert("strategy".into(), Value::String(strategy_name(v).into()));
    }
    for (k, v) in [
        ("check_interval", f.check_interval),
        ("recovery_interval", f.recovery_interval),
        ("delay", f.delay),
        ("ramp", f.ramp),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), duration(v));
        }
    }
    Value::Object(m)
}

fn channel_json(c: &NotificationChannel, redact: bool) -> Value {
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
            "url": secret(url, redact),
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
                v["smtp_password"] = secret(p, redact);
            }
            if let Some(f) = from {
                v["from"] = Value::String(f.clone());
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, load, round_trip};
    use super::*;

    const SNIPPET: &str = "failover:
  strategy: delayed
  delay: 3s
  notification:
    channels:
      - { type: log, level: info }
      - { type: webhook, url: \"https://hooks.example/t0ken\", format: slack }
      - { type: email, smtp_server: smtp.example, smtp_password: pw, recipients: [ops@example] }
pools:
  - name: a
    backends: [\"127.0.0.1:1\"]
    failover: { strategy: graceful, ramp: 1m }
";

    #[test]
    fn decodes_and_round_trips() {
        let c = load(SNIPPET);
        assert_eq!(c.failover.settings.strategy, FailoverStrategy::Delayed);
        assert_eq!(c.failover.settings.delay, Duration::from_secs(3));
        assert_eq!(c.failover.notification.channels.len(), 3);
        let pool = c.pools[0].failover.apply_to(&c.failover.settings);
        assert_eq!(pool.strategy, FailoverStrategy::Graceful);
        assert_eq!(pool.delay, Duration::from_secs(3));
        let json = round_trip(&c);
        assert_eq!(json["failover"]["strategy"], "delayed");
        assert_eq!(
            json["pools"][0]["failover"],
            json!({"strategy": "graceful", "ramp": "1m"})
        );
        let redacted = serialize(&c.failover, true);
        let channels = &redacted["notification"]["channels"];
        assert_eq!(channels[1]["url"], "<redacted>");
        assert_eq!(channels[2]["smtp_password"], "<redacted>");
        assert_eq!(
            json["failover"]["notification"]["channels"][1]["url"],
            "https://hooks.example/t0ken"
        );
    }

    #[test]
    fn rejects_a_key_of_another_channel_type() {
        assert_eq!(
            errors(
                "failover:\n  notification:\n    channels:\n      - { type: log, url: \"http://x\" }\n"
            ),
            ["CFG:4:22: `url` does not apply to this channel type"]
        );
    }
}
