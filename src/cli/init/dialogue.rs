//! The interactive dialogue: asks for every answer in a terminal, checks each one
//! as it is typed (the same checks as the non-interactive mode), probes servers
//! as they are entered, and returns the same `Answers` the flags would give.

use super::answers::{Answers, Email, Server, TlsMode, Webhook, generate_token};
use super::{checks, probe, render};
use inquire::validator::Validation;
use inquire::{Confirm, InquireError, Password, PasswordDisplayMode, Select, Text};
use std::fmt;
use tokio::runtime::Runtime;

/// Why the dialogue stopped without answers.
pub(crate) enum Stop {
    Cancelled,
    NoTerminal,
    Failed(String),
}

impl From<InquireError> for Stop {
    fn from(e: InquireError) -> Self {
        match e {
            InquireError::OperationCanceled | InquireError::OperationInterrupted => Stop::Cancelled,
            InquireError::NotTTY => Stop::NoTerminal,
            other => Stop::Failed(other.to_string()),
        }
    }
}

type Asked<T> = Result<T, Stop>;

/// What the dialogue decided besides the answers.
pub(crate) struct Extras {
    pub systemd: bool,
}

/// A text prompt whose answer must pass `check`; a refused answer stays on the
/// line, with the message under it, to be corrected.
fn ask<T>(
    message: &str,
    default: Option<&str>,
    help: &str,
    check: impl Fn(&str) -> Result<T, String> + Clone + 'static,
) -> Asked<T> {
    let c = check.clone();
    let mut prompt = Text::new(message).with_validator(move |s: &str| {
        Ok(match c(s) {
            Ok(_) => Validation::Valid,
            Err(e) => Validation::Invalid(e.into()),
        })
    });
    if let Some(d) = default {
        prompt = prompt.with_default(d);
    }
    if !help.is_empty() {
        prompt = prompt.with_help_message(help);
    }
    let text = prompt.prompt()?;
    check(&text).map_err(Stop::Failed)
}

fn confirm(message: &str, default: bool, help: &str) -> Asked<bool> {
    let mut prompt = Confirm::new(message).with_default(default);
    if !help.is_empty() {
        prompt = prompt.with_help_message(help);
    }
    Ok(prompt.prompt()?)
}

/// A choice among named options, each shown with its one-line explanation.
struct Choice {
    name: &'static str,
    text: &'static str,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:<21} {}", self.name, self.text)
    }
}

fn choose(message: &str, options: &[(&'static str, &'static str)], default: &str) -> Asked<String> {
    let items: Vec<Choice> = options
        .iter()
        .map(|&(name, text)| Choice { name, text })
        .collect();
    let start = options.iter().position(|(n, _)| *n == default).unwrap_or(0);
    let picked = Select::new(message, items)
        .with_starting_cursor(start)
        .with_page_size(options.len())
        .with_help_message("↑↓ to move, type to filter, Enter to choose")
        .with_formatter(&|o| o.value.name.to_string())
        .prompt()?;
    Ok(picked.name.to_string())
}

pub(crate) fn run(rt: &Runtime, mut a: Answers) -> Asked<(Answers, Extras)> {
    eprintln!(
        "Fulcrum init: a config for Fulcrum in front of your application.\n\
         Enter accepts the [default]; Esc stops without writing anything.\n"
    );
    a.hosts = ask(
        "Host names of the site (comma-separated; empty: any host)",
        None,
        "e.g. app.example.com, www.example.com",
        |s| {
            s.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(checks::host)
                .collect::<Result<Vec<_>, _>>()
        },
    )?;
    health(&mut a)?;
    eprintln!("\nYour application servers. Each is checked now, as Fulcrum will check it.");
    servers(rt, &mut a, false)?;
    eprintln!(
        "\nBackup servers take traffic only while every application server is down\n\
         (e.g. a standby machine, another region, or a maintenance page)."
    );
    servers(rt, &mut a, true)?;
    let algorithm = choose(
        "How should requests be spread over the servers?",
        &render::ALGORITHMS,
        &a.algorithm_or_default(),
    )?;
    if algorithm == "hash" {
        a.hash_key = Some(ask(
            "Hash on what?",
            Some("cookie:session"),
            "header:NAME, cookie:NAME, path or query:NAME",
            checks::hash_key,
        )?);
    }
    a.algorithm = Some(algorithm);
    if !a.backups.is_empty() {
        failover(&mut a)?;
        notifications(rt, &mut a)?;
    }
    tls(&mut a)?;
    let listen_default = a.listen_or_default();
    a.listen = Some(ask(
        "Address to serve on",
        Some(&listen_default),
        "IP:PORT; 0.0.0.0 means every interface",
        checks::listen_address,
    )?);
    let listen = a.listen.clone().unwrap_or_default();
    a.admin.address = ask(
        "Admin API and dashboard address",
        Some(&a.admin.address.clone()),
        "keep it on 127.0.0.1 unless you reach it through a trusted network",
        move |s| checks::admin_address(s, &listen),
    )?;
    if a.admin.token.is_none() {
        a.admin.token = Some(generate_token());
    }
    let systemd = confirm(
        "Show a systemd unit to run it as a service?",
        false,
        "printed at the end, with where to put it",
    )?;
    Ok((a, Extras { systemd }))
}

fn health(a: &mut Answers) -> Asked<()> {
    eprintln!("How Fulcrum tells a healthy server: it asks each one for a page, regularly.");
    let h = &mut a.health;
    h.path = ask(
        "Health check path",
        Some(&h.path.clone()),
        "a cheap page that answers 200 when the application works",
        checks::health_path,
    )?;
    h.expected_status = ask(
        "Status that counts as healthy",
        Some(&h.expected_status.clone()),
        "a code (200), a class (2xx) or a comma list",
        checks::expected_status,
    )?;
    h.interval = ask(
        "Check every",
        Some(&h.interval.clone()),
        "250ms, 5s, 1m...",
        |s| checks::health_duration("interval", s),
    )?;
    h.timeout = ask(
        "Timeout of one check",
        Some(&h.timeout.clone()),
        "a server slower than this fails the check",
        |s| checks::health_duration("timeout", s),
    )?;
    h.unhealthy_threshold = ask(
        "Failed checks in a row before a server is taken out",
        Some(&h.unhealthy_threshold.to_string()),
        "1 reacts fastest; 2 or 3 ride out a single lost check",
        |s| checks::threshold("unhealthy_threshold", s),
    )?;
    h.healthy_threshold = ask(
        "Passed checks in a row before it is put back",
        Some(&h.healthy_threshold.to_string()),
        "",
        |s| checks::threshold("healthy_threshold", s),
    )?;
    Ok(())
}

/// Asks for servers (or backups) one by one until an empty answer, probing each.
fn servers(rt: &Runtime, a: &mut Answers, backup: bool) -> Asked<()> {
    loop {
        let taken: Vec<String> = a
            .servers
            .iter()
            .chain(&a.backups)
            .filter_map(|s| crate::config::BackendAddress::parse(&s.address).ok())
            .map(|b| b.key)
            .collect();
        let first = !backup && a.servers.is_empty();
        let message = match (backup, first) {
            (false, true) => {
                "Application server (host:port, http://host:port or https://host:port)"
            }
            (false, false) => "Another application server (empty when done)",
            (true, _) if a.backups.is_empty() => "Backup server (empty for none)",
            (true, _) => "Another backup server (empty when done)",
        };
        let address = ask(message, None, "e.g. 10.0.0.11:8080", move |s| {
            if s.trim().is_empty() {
                return if first {
                    Err("at least one application server is needed".into())
                } else {
                    Ok(String::new())
                };
            }
            let address = checks::backend_address(s)?;
            let key = crate::config::BackendAddress::parse(&address)
                .map(|b| b.key)
                .unwrap_or_default();
            if taken.contains(&key) {
                return Err(format!("{key} is already in the list"));
            }
            Ok(address)
        })?;
        if address.is_empty() {
            return Ok(());
        }
        let report = rt.block_on(probe::probe(&address, &a.health));
        let mark = if report.healthy { "✔" } else { "✘" };
        eprintln!("  {mark} {address}: GET {} {}", a.health.path, report.said);
        if !report.healthy
            && !confirm(
                &format!("Keep {address} anyway?"),
                true,
                "it gets traffic once it passes its health check",
            )?
        {
            continue;
        }
        let mut s = Server {
            address: address.clone(),
            weight: 1,
            level: None,
            region: None,
        };
        if backup {
            s.level = Some(ask(
                &format!("Level of {address}"),
                Some("1"),
                "1: first backup; 2: used only when level 1 is down too...",
                checks::backup_level,
            )?);
            s.region = ask(
                &format!("Region of {address} (optional)"),
                None,
                "a label shown in the status and metrics, e.g. eu-west",
                checks::region,
            )?;
        } else {
            s.weight = ask(
                &format!("Weight of {address}"),
                Some("1"),
                "its share of traffic relative to the others: 2 gets twice as much as 1",
                checks::weight,
            )?;
        }
        if backup {
            a.backups.push(s);
        } else {
            a.servers.push(s);
        }
    }
}

fn failover(a: &mut Answers) -> Asked<()> {
    let f = &mut a.failover;
    f.strategy = choose(
        "When the application servers are down, how should traffic move to the backups?",
        &render::STRATEGIES,
        &f.strategy,
    )?;
    f.recovery_interval = ask(
        "Recovery interval",
        Some(&f.recovery_interval.clone()),
        "the servers must be healthy this long before traffic returns to them",
        |s| checks::failover_duration("recovery_interval", s),
    )?;
    f.delay = None;
    f.ramp = None;
    if f.strategy == "delayed" {
        f.delay = Some(ask(
            "Delay before failing over",
            Some("10s"),
            "an outage shorter than this moves no traffic",
            |s| checks::failover_duration("delay", s),
        )?);
    }
    if f.strategy == "graceful" {
        f.ramp = Some(ask(
            "Ramp (how long traffic takes to move back)",
            Some("30s"),
            "traffic returns in ten steps over this long",
            |s| checks::failover_duration("ramp", s),
        )?);
    }
    Ok(())
}

fn notifications(rt: &Runtime, a: &mut Answers) -> Asked<()> {
    eprintln!("\nEvery failover and recovery is logged. It can also be sent to you.");
    a.notify.webhook = None;
    if confirm(
        "Post each failover to a webhook (Slack, Discord, your own)?",
        false,
        "",
    )? {
        let url = ask(
            "Webhook URL",
            None,
            "https://hooks.example.com/...",
            checks::webhook_url,
        )?;
        let format = choose(
            "Webhook body",
            &[
                ("json", "the event as JSON"),
                ("slack", "a Slack message ({\"text\": ...})"),
                ("discord", "a Discord message ({\"content\": ...})"),
            ],
            "json",
        )?;
        let w = Webhook { url, format };
        if confirm("Send a test event to it now?", true, "")? {
            report_test(rt.block_on(probe::test_webhook(&w)), "the webhook took it");
        }
        a.notify.webhook = Some(w);
    }
    a.notify.email = None;
    if confirm("Send an e-mail on each failover?", false, "")? {
        a.notify.email = email(rt)?;
    }
    Ok(())
}

fn report_test(r: Result<(), String>, ok: &str) {
    match r {
        Ok(()) => eprintln!("  ✔ {ok}"),
        Err(e) => eprintln!("  ✘ failed: {e}"),
    }
}

fn email(rt: &Runtime) -> Asked<Option<Email>> {
    let smtp_server = ask(
        "SMTP server",
        None,
        "host name or IP of your mail server, e.g. smtp.example.com",
        checks::smtp_server,
    )?;
    let smtp_port = ask(
        "SMTP port",
        Some("587"),
        "587 (submission, STARTTLS when offered), 25 or 2525",
        checks::smtp_port,
    )?;
    let user = ask("SMTP user (empty: no login)", None, "", |s| {
        Ok(s.trim().to_string())
    })?;
    let (smtp_user, smtp_password) = if user.is_empty() {
        (None, None)
    } else {
        let p = Password::new("SMTP password")
            .without_confirmation()
            .with_display_mode(PasswordDisplayMode::Masked)
            .prompt()?;
        (Some(user), Some(p).filter(|p| !p.is_empty()))
    };
    let from = ask("Sender address (empty: fulcrum@this host)", None, "", |s| {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            checks::email(s).map(Some)
        }
    })?;
    let recipients = ask(
        "Send to (comma-separated addresses)",
        None,
        "e.g. ops@example.com, oncall@example.com",
        checks::recipients,
    )?;
    let m = Email {
        smtp_server,
        smtp_port,
        smtp_user,
        smtp_password,
        from,
        recipients,
    };
    if confirm("Send a test message now?", true, "")? {
        let r = rt.block_on(probe::test_email(&m));
        let failed = r.is_err();
        report_test(r, "the server accepted the test message");
        if failed && !confirm("Keep these e-mail settings anyway?", true, "")? {
            return Ok(None);
        }
    }
    Ok(Some(m))
}

fn tls(a: &mut Answers) -> Asked<()> {
    let exact_host = a.hosts.iter().any(|h| !h.starts_with("*."));
    let mut options = vec![
        ("none", "plain HTTP (no HTTPS, or it ends before Fulcrum)"),
        ("files", "HTTPS with certificate files you have"),
    ];
    if exact_host {
        options.push(("acme", "HTTPS with automatic certificates (Let's Encrypt)"));
    }
    let mode = choose("HTTPS?", &options, "none")?;
    a.tls.mode = match mode.as_str() {
        "files" => TlsMode::Files,
        "acme" => TlsMode::Acme,
        _ => TlsMode::None,
    };
    match a.tls.mode {
        TlsMode::None => return Ok(()),
        TlsMode::Files => {
            a.tls.cert = Some(ask(
                "Certificate file (PEM, with its chain)",
                None,
                "",
                |s| checks::existing_file("cert", s),
            )?);
            a.tls.key = Some(ask("Private key file (PEM)", None, "", |s| {
                checks::existing_file("key", s)
            })?);
        }
        TlsMode::Acme => {
            a.tls.acme_email = Some(ask(
                "E-mail for the ACME account (expiry warnings)",
                None,
                "",
                checks::email,
            )?);
        }
    }
    a.tls.redirect_http_from = Some(ask(
        "Plain HTTP address that redirects to HTTPS",
        Some("0.0.0.0:80"),
        "it also answers the ACME http-01 challenges",
        checks::listen_address,
    )?);
    Ok(())
}
