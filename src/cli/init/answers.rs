//! Everything `fulcrum init` asks, in one struct: the dialogue fills it, the
//! flags and the answers file fill it, and one renderer turns it into YAML.

use super::checks;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Answers {
    /// Host names the site answers to; empty: any host.
    pub hosts: Vec<String>,
    /// Where the proxy serves: default 0.0.0.0:8080, or 0.0.0.0:443 with TLS.
    pub listen: Option<String>,
    /// The application servers (failover level 0).
    pub servers: Vec<Server>,
    /// Backup servers (level 1 and up), used only while the levels below are down.
    pub backups: Vec<Server>,
    /// Default: weighted_round_robin when weights differ, else round_robin.
    pub algorithm: Option<String>,
    pub hash_key: Option<String>,
    pub health: Health,
    pub failover: Failover,
    pub notify: Notify,
    pub tls: Tls,
    pub admin: Admin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub address: String,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
    /// For backups: 1 (default) or more. Servers are level 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Health {
    pub path: String,
    pub interval: String,
    pub timeout: String,
    pub expected_status: String,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/health".into(),
            interval: "5s".into(),
            timeout: "2s".into(),
            expected_status: "2xx".into(),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Failover {
    pub strategy: String,
    pub recovery_interval: String,
    /// `delayed`: how long the primary level must be down before traffic moves.
    pub delay: Option<String>,
    /// `graceful`: how long traffic takes to move back.
    pub ramp: Option<String>,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            strategy: "immediate".into(),
            recovery_interval: "10s".into(),
            delay: None,
            ramp: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Notify {
    pub webhook: Option<Webhook>,
    pub email: Option<Email>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Webhook {
    pub url: String,
    #[serde(default = "json")]
    pub format: String,
}

fn json() -> String {
    "json".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Email {
    pub smtp_server: String,
    #[serde(default = "submission_port")]
    pub smtp_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub recipients: Vec<String>,
}

fn submission_port() -> u16 {
    587
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TlsMode {
    #[default]
    None,
    Files,
    Acme,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Tls {
    pub mode: TlsMode,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub acme_email: Option<String>,
    /// Default: Let's Encrypt.
    pub acme_directory: Option<String>,
    /// Plain HTTP address answering 308 to https (and ACME http-01): default 0.0.0.0:80.
    pub redirect_http_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Admin {
    pub address: String,
    /// Generated when not given.
    pub token: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: "127.0.0.1:9000".into(),
            token: None,
        }
    }
}

pub(crate) const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Answers {
    pub fn listen_or_default(&self) -> String {
        self.listen.clone().unwrap_or_else(|| {
            if self.tls.mode == TlsMode::None {
                "0.0.0.0:8080".into()
            } else {
                "0.0.0.0:443".into()
            }
        })
    }

    /// The balancing algorithm when none was chosen: weights only mean something
    /// to weighted round robin.
    pub fn algorithm_or_default(&self) -> String {
        self.algorithm.clone().unwrap_or_else(|| {
            if self
                .servers
                .iter()
                .chain(&self.backups)
                .any(|s| s.weight != 1)
            {
                "weighted_round_robin".into()
            } else {
                "round_robin".into()
            }
        })
    }

    /// Checks every answer with the same checks as the dialogue, fills in the
    /// defaults that depend on other answers, and normalises what is written
    /// (durations, host case) so that equal answers give byte-identical files.
    pub fn finish(mut self) -> Result<Answers, Vec<String>> {
        let mut errors = Vec::new();
        let mut note = |label: &str, r: Result<(), String>| {
            if let Err(e) = r {
                errors.push(format!("{label}: {e}"));
            }
        };
        let mut hosts = Vec::new();
        for h in &self.hosts {
            match checks::host(h) {
                Ok(h) if hosts.contains(&h) => note("host", Err(format!("`{h}` is given twice"))),
                Ok(h) => hosts.push(h),
                Err(e) => note("host", Err(e)),
            }
        }
        self.hosts = hosts;
        if self.servers.is_empty() {
            note(
                "servers",
                Err("at least one application server is needed".into()),
            );
        }
        let mut seen: Vec<String> = Vec::new();
        for (label, list, backup) in [
            ("server", &mut self.servers, false),
            ("backup", &mut self.backups, true),
        ] {
            for s in list.iter_mut() {
                match checks::backend_address(&s.address) {
                    Ok(a) => {
                        let key = crate::config::BackendAddress::parse(&a)
                            .map(|b| b.key)
                            .unwrap_or_default();
                        if seen.contains(&key) {
                            note(label, Err(format!("{key} is listed twice")));
                        }
                        seen.push(key);
                        s.address = a;
                    }
                    Err(e) => note(label, Err(e)),
                }
                note(label, checks::weight(&s.weight.to_string()).map(|_| ()));
                match (backup, s.level) {
                    (false, Some(l)) if l != 0 => note(
                        label,
                        Err(format!(
                            "{} has level {l}: list it as a backup instead",
                            s.address
                        )),
                    ),
                    (false, _) => s.level = None,
                    (true, l) => {
                        let l = l.unwrap_or(1);
                        note(label, checks::backup_level(&l.to_string()).map(|_| ()));
                        s.level = Some(l);
                    }
                }
                if let Some(r) = &s.region {
                    match checks::region(r) {
                        Ok(r) => s.region = r,
                        Err(e) => note(label, Err(e)),
                    }
                }
            }
        }
        let algorithm = self.algorithm_or_default();
        match checks::algorithm(&algorithm) {
            Ok(a) => self.algorithm = Some(a),
            Err(e) => note("algorithm", Err(e)),
        }
        match (self.algorithm.as_deref(), &self.hash_key) {
            (Some("hash"), None) => note(
                "hash_key",
                Err("algorithm hash needs a hash key (header:NAME, cookie:NAME, path or query:NAME)".into()),
            ),
            (Some("hash"), Some(k)) => match checks::hash_key(k) {
                Ok(k) => self.hash_key = Some(k),
                Err(e) => note("hash_key", Err(e)),
            },
            (_, Some(_)) => note(
                "hash_key",
                Err("hash_key only applies to algorithm hash".into()),
            ),
            _ => {}
        }
        if self.backups.is_empty() {
            if self.failover != Failover::default() {
                note(
                    "failover",
                    Err("failover settings need at least one backup server".into()),
                );
            }
            if self.notify != Notify::default() {
                note(
                    "notifications",
                    Err(
                        "notifications are sent on failover: they need at least one backup server"
                            .into(),
                    ),
                );
            }
        }
        self.finish_health(&mut note);
        self.finish_failover(&mut note);
        self.finish_notify(&mut note);
        self.finish_tls(&mut note);
        match self.listen.as_deref().map(checks::listen_address) {
            Some(Ok(a)) => self.listen = Some(a),
            Some(Err(e)) => note("listen", Err(e)),
            None => {}
        }
        match checks::admin_address(&self.admin.address, &self.listen_or_default()) {
            Ok(a) => self.admin.address = a,
            Err(e) => note("admin", Err(e)),
        }
        match &self.admin.token {
            Some(t) if t.is_empty() || t.contains(char::is_whitespace) => note(
                "admin token",
                Err("the token must be non-empty and without spaces".into()),
            ),
            Some(_) => {}
            None => self.admin.token = Some(generate_token()),
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }

    fn finish_health(&mut self, note: &mut impl FnMut(&str, Result<(), String>)) {
        let h = &mut self.health;
        match checks::health_path(&h.path) {
            Ok(p) => h.path = p,
            Err(e) => note("health path", Err(e)),
        }
        for (key, slot) in [("interval", &mut h.interval), ("timeout", &mut h.timeout)] {
            match checks::health_duration(key, slot) {
                Ok(v) => *slot = v,
                Err(e) => note("health", Err(e)),
            }
        }
        match checks::expected_status(&h.expected_status) {
            Ok(v) => h.expected_status = v,
            Err(e) => note("health", Err(e)),
        }
        for (key, v) in [
            ("unhealthy_threshold", h.unhealthy_threshold),
            ("healthy_threshold", h.healthy_threshold),
        ] {
            note("health", checks::threshold(key, &v.to_string()).map(|_| ()));
        }
    }

    fn finish_failover(&mut self, note: &mut impl FnMut(&str, Result<(), String>)) {
        let f = &mut self.failover;
        match checks::strategy(&f.strategy) {
            Ok(s) => f.strategy = s,
            Err(e) => note("failover", Err(e)),
        }
        match checks::failover_duration("recovery_interval", &f.recovery_interval) {
            Ok(v) => f.recovery_interval = v,
            Err(e) => note("failover", Err(e)),
        }
        for (key, slot) in [("delay", &mut f.delay), ("ramp", &mut f.ramp)] {
            if let Some(v) = slot.as_deref() {
                match checks::failover_duration(key, v) {
                    Ok(v) => *slot = Some(v),
                    Err(e) => note("failover", Err(e)),
                }
            }
        }
    }

    fn finish_notify(&mut self, note: &mut impl FnMut(&str, Result<(), String>)) {
        if let Some(w) = &mut self.notify.webhook {
            match checks::webhook_url(&w.url) {
                Ok(u) => w.url = u,
                Err(e) => note("webhook", Err(e)),
            }
            note("webhook", checks::webhook_format(&w.format).map(|_| ()));
        }
        if let Some(m) = &mut self.notify.email {
            match checks::smtp_server(&m.smtp_server) {
                Ok(s) => m.smtp_server = s,
                Err(e) => note("email", Err(e)),
            }
            note(
                "email",
                checks::smtp_port(&m.smtp_port.to_string()).map(|_| ()),
            );
            if let Some(f) = &m.from {
                note("email from", checks::email(f).map(|_| ()));
            }
            match checks::recipients(&m.recipients.join(",")) {
                Ok(r) => m.recipients = r,
                Err(e) => note("email recipients", Err(e)),
            }
            m.smtp_user = m.smtp_user.take().filter(|s| !s.is_empty());
            m.smtp_password = m.smtp_password.take().filter(|s| !s.is_empty());
        }
    }

    fn finish_tls(&mut self, note: &mut impl FnMut(&str, Result<(), String>)) {
        let has_exact_host = self.hosts.iter().any(|h| !h.starts_with("*."));
        let t = &mut self.tls;
        match t.mode {
            TlsMode::None => {
                if t.cert.is_some() || t.key.is_some() || t.acme_email.is_some() {
                    note(
                        "tls",
                        Err(
                            "certificate or ACME settings given without a TLS mode (files or acme)"
                                .into(),
                        ),
                    );
                }
                return;
            }
            TlsMode::Files => {
                for (key, slot) in [("cert", &mut t.cert), ("key", &mut t.key)] {
                    match slot.as_deref().map(|v| checks::existing_file(key, v)) {
                        Some(Ok(p)) => *slot = Some(p),
                        Some(Err(e)) => note("tls", Err(e)),
                        None => note("tls", Err(format!("missing `{key}` (a PEM file)"))),
                    }
                }
            }
            TlsMode::Acme => {
                match t.acme_email.as_deref().map(checks::email) {
                    Some(Ok(e)) => t.acme_email = Some(e),
                    Some(Err(e)) => note("acme email", Err(e)),
                    None => note(
                        "acme email",
                        Err("ACME needs an e-mail address for the account".into()),
                    ),
                }
                if !has_exact_host {
                    note(
                        "acme",
                        Err("ACME certificates are for host names: give at least one (not a wildcard)".into()),
                    );
                }
                if let Some(d) = &t.acme_directory
                    && !(d.starts_with("https://") || d.starts_with("http://"))
                {
                    note("acme", Err("acme directory must be a URL".into()));
                }
            }
        }
        let redirect = t
            .redirect_http_from
            .clone()
            .unwrap_or_else(|| "0.0.0.0:80".into());
        match checks::listen_address(&redirect) {
            Ok(a) => t.redirect_http_from = Some(a),
            Err(e) => note("redirect_http_from", Err(e)),
        }
    }
}

/// 32 random bytes from the system's secure generator, as 64 hex digits.
pub(crate) fn generate_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No system randomness at all: fall back to the process generator rather
        // than refuse to write a config.
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&crate::rand::u64().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `ADDR[,weight=N][,level=N][,region=NAME]`, the form of `--server` and `--backup`.
pub(crate) fn parse_server_flag(text: &str, backup: bool) -> Result<Server, String> {
    let mut parts = text.split(',');
    let address = parts.next().unwrap_or_default().trim().to_string();
    let mut s = Server {
        address,
        weight: 1,
        level: None,
        region: None,
    };
    for part in parts {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            format!("`{part}` in `{text}`: expected key=value (weight, level, region)")
        })?;
        match k.trim() {
            "weight" => s.weight = checks::weight(v)?,
            "level" if backup => s.level = Some(checks::backup_level(v)?),
            "region" => s.region = checks::region(v)?,
            other => {
                let keys = if backup {
                    "weight, level, region"
                } else {
                    "weight, region"
                };
                return Err(format!("unknown `{other}` in `{text}` (known: {keys})"));
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_fills_defaults_and_collects_every_error() {
        let a = Answers {
            servers: vec![parse_server_flag("127.0.0.1:9001,weight=3", false).unwrap()],
            backups: vec![parse_server_flag("127.0.0.1:9002,region=eu", true).unwrap()],
            ..Answers::default()
        }
        .finish()
        .unwrap();
        assert_eq!(a.algorithm.as_deref(), Some("weighted_round_robin"));
        assert_eq!(a.backups[0].level, Some(1));
        assert_eq!(a.admin.token.as_ref().map(|t| t.len()), Some(64));

        let mut bad = Answers::default();
        bad.servers.push(Server {
            address: "10.0.0.1:99999".into(),
            weight: 1,
            level: None,
            region: None,
        });
        bad.health.interval = "5".into();
        bad.tls.mode = TlsMode::Acme;
        let errors = bad.finish().unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("bad port"));
    }

    #[test]
    fn server_flags() {
        assert!(parse_server_flag("a:1,level=2", false).is_err());
        let b = parse_server_flag("a:1,level=2,weight=5", true).unwrap();
        assert_eq!((b.level, b.weight), (Some(2), 5));
        assert!(
            parse_server_flag("a:1,weigth=2", false)
                .unwrap_err()
                .contains("unknown")
        );
    }
}
