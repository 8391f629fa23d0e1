//! `fulcrum init`: a guided setup. A terminal dialogue (or flags, or an answers
//! file, for scripts) fills one `Answers`; one renderer writes the commented YAML,
//! which is loaded back with the config loader before it is written.

mod answers;
mod checks;
mod dialogue;
mod probe;
mod render;

use crate::config;
use answers::{Answers, Email, TlsMode, Webhook, parse_server_flag};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct InitArgs {
    /// Where to write the config [default: $FULCRUM_CONFIG, then ./fulcrum.yaml]
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Overwrite FILE if it exists
    #[arg(long)]
    force: bool,
    /// Ask nothing: every answer comes from the flags below and/or --answers
    #[arg(long)]
    non_interactive: bool,
    /// Read the answers from a YAML/JSON file (as --save-answers writes); implies --non-interactive
    #[arg(long, value_name = "FILE")]
    answers: Option<PathBuf>,
    /// Also write the answers to FILE, to replay them with --answers
    #[arg(long, value_name = "FILE")]
    save_answers: Option<PathBuf>,
    /// Print a systemd unit that runs the new config
    #[arg(long)]
    systemd: bool,
    /// Non-interactive: check each server's health now and say what it answered
    #[arg(long)]
    probe: bool,
    /// Non-interactive: send a test event to the webhook and a test e-mail
    #[arg(long)]
    test_notifications: bool,
    #[command(flatten)]
    flags: AnswerFlags,
}

/// Answers given as flags (they override an --answers file key by key).
#[derive(clap::Args, Default)]
#[command(next_help_heading = "Answers (with --non-interactive or --answers)")]
struct AnswerFlags {
    /// Host name of the site (repeat for several; none: any host)
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Address to serve on [default: 0.0.0.0:8080, with TLS 0.0.0.0:443]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Application server (repeat for several)
    #[arg(long = "server", value_name = "ADDR[,weight=N][,region=R]")]
    servers: Vec<String>,
    /// Backup server, used while every server below its level is down (repeat)
    #[arg(long = "backup", value_name = "ADDR[,level=N][,region=R][,weight=N]")]
    backups: Vec<String>,
    /// Balancing algorithm [default: round_robin, weighted_round_robin with weights]
    #[arg(long, value_name = "ALGO")]
    lb: Option<String>,
    /// For --lb hash: header:NAME, cookie:NAME, path or query:NAME
    #[arg(long, value_name = "KEY")]
    hash_key: Option<String>,
    /// Health check path [default: /health]
    #[arg(long, value_name = "PATH")]
    health_path: Option<String>,
    /// Health check interval [default: 5s]
    #[arg(long, value_name = "DURATION")]
    health_interval: Option<String>,
    /// Health check timeout [default: 2s]
    #[arg(long, value_name = "DURATION")]
    health_timeout: Option<String>,
    /// Healthy status: 200, 2xx or a comma list [default: 2xx]
    #[arg(long, value_name = "STATUS")]
    expected_status: Option<String>,
    /// Failed checks in a row that take a server out [default: 2]
    #[arg(long, value_name = "N")]
    unhealthy_threshold: Option<String>,
    /// Passed checks in a row that put it back [default: 1]
    #[arg(long, value_name = "N")]
    healthy_threshold: Option<String>,
    /// immediate | graceful | delayed [default: immediate]
    #[arg(long, value_name = "STRATEGY")]
    failover_strategy: Option<String>,
    /// How long the servers must be healthy before traffic returns [default: 10s]
    #[arg(long, value_name = "DURATION")]
    recovery_interval: Option<String>,
    /// delayed: how long the servers must be down before traffic moves
    #[arg(long, value_name = "DURATION")]
    failover_delay: Option<String>,
    /// graceful: how long traffic takes to move back
    #[arg(long, value_name = "DURATION")]
    failover_ramp: Option<String>,
    /// Post each failover to this URL
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// json | slack | discord [default: json]
    #[arg(long, value_name = "FORMAT")]
    webhook_format: Option<String>,
    /// Send an e-mail on each failover through this SMTP server
    #[arg(long, value_name = "HOST")]
    smtp_server: Option<String>,
    /// [default: 587]
    #[arg(long, value_name = "PORT")]
    smtp_port: Option<String>,
    #[arg(long, value_name = "USER")]
    smtp_user: Option<String>,
    #[arg(long, value_name = "PASSWORD")]
    smtp_password: Option<String>,
    /// Sender address [default: fulcrum@HOSTNAME]
    #[arg(long, value_name = "ADDRESS")]
    email_from: Option<String>,
    /// Recipient (repeat for several)
    #[arg(long, value_name = "ADDRESS")]
    email_to: Vec<String>,
    /// none | files | acme [default: none]
    #[arg(long, value_name = "MODE")]
    tls: Option<String>,
    /// --tls files: certificate (PEM)
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// --tls files: private key (PEM)
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
    /// --tls acme: e-mail of the ACME account
    #[arg(long, value_name = "ADDRESS")]
    acme_email: Option<String>,
    /// --tls acme: directory URL [default: Let's Encrypt]
    #[arg(long, value_name = "URL")]
    acme_directory: Option<String>,
    /// With TLS: plain HTTP address redirecting to https [default: 0.0.0.0:80]
    #[arg(long, value_name = "ADDR")]
    redirect_http_from: Option<String>,
    /// Admin API and dashboard address [default: 127.0.0.1:9000]
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Admin API token [default: generated]
    #[arg(long, value_name = "TOKEN")]
    admin_token: Option<String>,
}

impl AnswerFlags {
    fn any(&self) -> bool {
        let f = self;
        !(f.hosts.is_empty()
            && f.servers.is_empty()
            && f.backups.is_empty()
            && f.email_to.is_empty())
            || [
                &f.listen,
                &f.lb,
                &f.hash_key,
                &f.health_path,
                &f.health_interval,
                &f.health_timeout,
                &f.expected_status,
                &f.unhealthy_threshold,
                &f.healthy_threshold,
                &f.failover_strategy,
                &f.recovery_interval,
                &f.failover_delay,
                &f.failover_ramp,
                &f.webhook,
                &f.webhook_format,
                &f.smtp_server,
                &f.smtp_port,
                &f.smtp_user,
                &f.smtp_password,
                &f.email_from,
                &f.tls,
                &f.tls_cert,
                &f.tls_key,
                &f.acme_email,
                &f.acme_directory,
                &f.redirect_http_from,
                &f.admin,
                &f.admin_token,
            ]
            .iter()
            .any(|v| v.is_some())
    }

    /// Lays the flags over `a`. Values are checked later, with everything else.
    fn apply(self, a: &mut Answers) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let f = self;
        if !f.hosts.is_empty() {
            a.hosts = f.hosts;
        }
        set(&mut a.listen, f.listen.map(Some));
        for (list, flags, backup) in [
            (&mut a.servers, f.servers, false),
            (&mut a.backups, f.backups, true),
        ] {
            if flags.is_empty() {
                continue;
            }
            list.clear();
            for s in flags {
                match parse_server_flag(&s, backup) {
                    Ok(s) => list.push(s),
                    Err(e) => errors.push(format!(
                        "--{}: {e}",
                        if backup { "backup" } else { "server" }
                    )),
                }
            }
        }
        set(&mut a.algorithm, f.lb.map(Some));
        set(&mut a.hash_key, f.hash_key.map(Some));
        let h = &mut a.health;
        set(&mut h.path, f.health_path);
        set(&mut h.interval, f.health_interval);
        set(&mut h.timeout, f.health_timeout);
        set(&mut h.expected_status, f.expected_status);
        for (key, slot, v) in [
            (
                "unhealthy_threshold",
                &mut h.unhealthy_threshold,
                f.unhealthy_threshold,
            ),
            (
                "healthy_threshold",
                &mut h.healthy_threshold,
                f.healthy_threshold,
            ),
        ] {
            if let Some(v) = v {
                match checks::threshold(key, &v) {
                    Ok(n) => *slot = n,
                    Err(e) => errors.push(format!("--{}: {e}", key.replace('_', "-"))),
                }
            }
        }
        let fo = &mut a.failover;
        set(&mut fo.strategy, f.failover_strategy);
        set(&mut fo.recovery_interval, f.recovery_interval);
        set(&mut fo.delay, f.failover_delay.map(Some));
        set(&mut fo.ramp, f.failover_ramp.map(Some));
        if let Some(url) = f.webhook {
            a.notify.webhook = Some(Webhook {
                url,
                format: "json".into(),
            });
        }
        if let Some(format) = f.webhook_format {
            match &mut a.notify.webhook {
                Some(w) => w.format = format,
                None => errors.push("--webhook-format: needs --webhook".into()),
            }
        }
        if let Some(smtp_server) = f.smtp_server {
            a.notify.email = Some(Email {
                smtp_server,
                smtp_port: 587,
                smtp_user: None,
                smtp_password: None,
                from: None,
                recipients: Vec::new(),
            });
        }
        let email_flags = f.smtp_port.is_some()
            || f.smtp_user.is_some()
            || f.smtp_password.is_some()
            || f.email_from.is_some()
            || !f.email_to.is_empty();
        match &mut a.notify.email {
            Some(m) => {
                if let Some(p) = f.smtp_port {
                    match checks::smtp_port(&p) {
                        Ok(p) => m.smtp_port = p,
                        Err(e) => errors.push(format!("--smtp-port: {e}")),
                    }
                }
                set(&mut m.smtp_user, f.smtp_user.map(Some));
                set(&mut m.smtp_password, f.smtp_password.map(Some));
                set(&mut m.from, f.email_from.map(Some));
                if !f.email_to.is_empty() {
                    m.recipients = f.email_to;
                }
            }
            None if email_flags => errors.push("e-mail settings need --smtp-server".into()),
            None => {}
        }
        if let Some(mode) = f.tls {
            match mode.as_str() {
                "none" => a.tls.mode = TlsMode::None,
                "files" => a.tls.mode = TlsMode::Files,
                "acme" => a.tls.mode = TlsMode::Acme,
                other => errors.push(format!(
                    "--tls must be one of none | files | acme, found `{other}`"
                )),
            }
        }
        set(&mut a.tls.cert, f.tls_cert.map(Some));
        set(&mut a.tls.key, f.tls_key.map(Some));
        set(&mut a.tls.acme_email, f.acme_email.map(Some));
        set(&mut a.tls.acme_directory, f.acme_directory.map(Some));
        set(
            &mut a.tls.redirect_http_from,
            f.redirect_http_from.map(Some),
        );
        set(&mut a.admin.address, f.admin);
        set(&mut a.admin.token, f.admin_token.map(Some));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn fail(lines: &[String]) -> ExitCode {
    for l in lines {
        eprintln!("fulcrum init: {l}");
    }
    ExitCode::FAILURE
}

pub fn run(args: InitArgs) -> ExitCode {
    let path = args.output.clone().unwrap_or_else(config::default_path);
    if path.exists() && !args.force {
        return fail(&[format!(
            "{} already exists: use --force to overwrite it, or -o FILE to write elsewhere",
            path.display()
        )]);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&[format!("cannot start the runtime: {e}")]),
    };
    let interactive = !args.non_interactive && args.answers.is_none();
    let mut base = Answers::default();
    if let Some(file) = &args.answers {
        match read_answers(file) {
            Ok(a) => base = a,
            Err(e) => return fail(&[e]),
        }
    }
    let (answers, systemd) = if interactive {
        if args.flags.any() {
            return fail(&[
                "answer flags are for scripts: add --non-interactive (or --answers FILE)".into(),
            ]);
        }
        match dialogue::run(&rt, base) {
            Ok((a, extras)) => (a, args.systemd || extras.systemd),
            Err(dialogue::Stop::Cancelled) => {
                return fail(&["cancelled; nothing was written".into()]);
            }
            Err(dialogue::Stop::NoTerminal) => {
                return fail(&[
                    "no terminal to ask on: use --non-interactive with flags, or --answers FILE (see fulcrum init --help)".into(),
                ]);
            }
            Err(dialogue::Stop::Failed(e)) => return fail(&[e]),
        }
    } else {
        if let Err(mut errors) = args.flags.apply(&mut base) {
            // Report the other answers' problems too, all in one go.
            if let Err(more) = base.finish() {
                errors.extend(more);
            }
            return fail(&errors);
        }
        (base, args.systemd)
    };
    let answers = match answers.finish() {
        Ok(a) => a,
        Err(errors) => return fail(&errors),
    };
    if !interactive {
        non_interactive_checks(&rt, &answers, args.probe, args.test_notifications);
    }
    let text = render::render(&answers);
    // The proof that `fulcrum validate` accepts it: the loader itself.
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Err(e) = config::load_str(&text, &path.display().to_string(), base_dir) {
        let mut lines = vec!["the generated config does not load (a bug in fulcrum init):".into()];
        lines.extend(e.lines());
        return fail(&lines);
    }
    if let Err(e) = write_private(&path, &text, args.force) {
        return fail(&[format!("cannot write {}: {e}", path.display())]);
    }
    if let Some(file) = &args.save_answers {
        let saved = serde_json::to_string_pretty(&answers).unwrap_or_default() + "\n";
        if let Err(e) = write_private(file, &saved, true) {
            return fail(&[format!("cannot write {}: {e}", file.display())]);
        }
    }
    print!("{}", summary(&answers, &path));
    if systemd {
        print!("{}", systemd_unit(&answers, &path));
    }
    ExitCode::SUCCESS
}

fn read_answers(file: &Path) -> Result<Answers, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    serde_saphyr::from_str::<Answers>(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// Probes and test notifications asked for on the command line: reported, never
/// fatal (a server may be set up before its application is deployed).
fn non_interactive_checks(rt: &tokio::runtime::Runtime, a: &Answers, probe: bool, test: bool) {
    if probe {
        for s in a.servers.iter().chain(&a.backups) {
            let r = rt.block_on(probe::probe(&s.address, &a.health));
            let mark = if r.healthy { "✔" } else { "✘" };
            eprintln!("{mark} {}: GET {} {}", s.address, a.health.path, r.said);
        }
    }
    if test {
        if let Some(w) = &a.notify.webhook {
            match rt.block_on(probe::test_webhook(w)) {
                Ok(()) => eprintln!("✔ webhook: the test event was accepted"),
                Err(e) => eprintln!("✘ webhook: {e}"),
            }
        }
        if let Some(m) = &a.notify.email {
            match rt.block_on(probe::test_email(m)) {
                Ok(()) => eprintln!("✔ e-mail: the server accepted the test message"),
                Err(e) => eprintln!("✘ e-mail: {e}"),
            }
        }
    }
}

/// Writes with mode 0600 (the file holds the admin token, maybe a password);
/// without `replace`, an existing file is never touched, even one that appeared
/// while the dialogue ran.
fn write_private(path: &Path, text: &str, replace: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if replace {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// How to call this binary again: as it was called when that was a path, else
/// by name from PATH.
fn command_name() -> String {
    std::env::args()
        .next()
        .filter(|a| a.contains('/'))
        .unwrap_or_else(|| "fulcrum".into())
}

fn summary(a: &Answers, path: &Path) -> String {
    let server = |s: &answers::Server| {
        let mut extra = Vec::new();
        if s.weight != 1 {
            extra.push(format!("weight {}", s.weight));
        }
        if let Some(l) = s.level {
            extra.push(format!("level {l}"));
        }
        if let Some(r) = &s.region {
            extra.push(format!("region {r}"));
        }
        if extra.is_empty() {
            s.address.clone()
        } else {
            format!("{} ({})", s.address, extra.join(", "))
        }
    };
    let list = |v: &[answers::Server]| v.iter().map(server).collect::<Vec<_>>().join(", ");
    let algorithm = a.algorithm_or_default();
    let h = &a.health;
    let scheme = if a.tls.mode == TlsMode::None {
        "http"
    } else {
        "https"
    };
    let mut notify = vec!["log".to_string()];
    if let Some(w) = &a.notify.webhook {
        notify.push(format!("webhook {} ({})", w.url, w.format));
    }
    if let Some(m) = &a.notify.email {
        notify.push(format!(
            "e-mail to {} via {}:{}",
            m.recipients.join(", "),
            m.smtp_server,
            m.smtp_port
        ));
    }
    let token = a.admin.token.clone().unwrap_or_default();
    let mut s = format!(
        "\nWrote {path} (mode 0600: it holds the admin token). `fulcrum validate` accepts it.\n\n",
        path = path.display()
    );
    let mut row = |k: &str, v: String| s.push_str(&format!("  {k:<14}{v}\n"));
    row(
        "site",
        if a.hosts.is_empty() {
            "any host name".into()
        } else {
            a.hosts.join(", ")
        },
    );
    row("serves on", format!("{scheme}://{}", a.listen_or_default()));
    row("servers", list(&a.servers));
    row(
        "backups",
        if a.backups.is_empty() {
            "none".into()
        } else {
            list(&a.backups)
        },
    );
    row(
        "balancing",
        format!("{algorithm}: {}", render::explain(&algorithm)),
    );
    row(
        "health check",
        format!(
            "GET {} every {}, timeout {}, healthy on {}; out after {} failed, back after {} passed",
            h.path,
            h.interval,
            h.timeout,
            h.expected_status,
            h.unhealthy_threshold,
            h.healthy_threshold
        ),
    );
    if !a.backups.is_empty() {
        let f = &a.failover;
        let mut how = format!("{}; back after {} healthy", f.strategy, f.recovery_interval);
        if let Some(d) = &f.delay {
            how.push_str(&format!("; moves after {d} down"));
        }
        if let Some(r) = &f.ramp {
            how.push_str(&format!("; returns over {r}"));
        }
        row("failover", how);
        row("notifications", notify.join(", "));
    }
    row(
        "TLS",
        match a.tls.mode {
            TlsMode::None => "none".into(),
            TlsMode::Files => format!("certificate {}", a.tls.cert.as_deref().unwrap_or_default()),
            TlsMode::Acme => format!(
                "ACME ({}), account {}",
                a.tls.acme_directory.as_deref().unwrap_or("Let's Encrypt"),
                a.tls.acme_email.as_deref().unwrap_or_default()
            ),
        },
    );
    row(
        "admin",
        format!("http://{}/  token {token}", a.admin.address),
    );
    let bin = command_name();
    s.push_str(&format!(
        "\nStart it:\n  {bin} run -c {path}\nThen watch it:\n  {bin} ctl --admin http://{admin} --token {token} pools\n",
        path = path.display(),
        admin = a.admin.address
    ));
    s
}

fn systemd_unit(a: &Answers, path: &Path) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/local/bin/fulcrum".into());
    let config = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    let low_port = config::parse_listen_address(&a.listen_or_default())
        .map(|addr| addr.port() < 1024)
        .unwrap_or(false)
        || a.tls.mode != TlsMode::None;
    let caps = if low_port {
        "# Ports below 1024 without running as root:\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"
    } else {
        ""
    };
    let dir = Path::new(&config)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    format!(
        "\nA systemd unit (save as /etc/systemd/system/fulcrum.service, then\n\
         `systemctl daemon-reload && systemctl enable --now fulcrum`):\n\n\
         [Unit]\n\
         Description=Fulcrum reverse proxy\n\
         After=network-online.target\n\
         Wants=network-online.target\n\n\
         [Service]\n\
         ExecStart={exe} run -c {config}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         WorkingDirectory={dir}\n\
         Restart=always\n\
         RestartSec=1\n\
         # SIGTERM lets requests in flight finish (shutdown_timeout, 30s by default).\n\
         TimeoutStopSec=40\n\
         LimitNOFILE=65536\n\
         {caps}\
         NoNewPrivileges=true\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}
