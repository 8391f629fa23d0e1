//! The one renderer: finished answers to a commented YAML config. Output depends
//! on the answers alone (no dates, no paths of the machine it ran on), so equal
//! answers give byte-identical files.

use super::answers::{Answers, LETS_ENCRYPT, Server, TlsMode};
use super::checks::quoted;
use std::fmt::Write;

pub(crate) const POOL: &str = "app";

/// One line per balancing algorithm, shown in the dialogue and in the file.
pub(crate) const ALGORITHMS: [(&str, &str); 8] = [
    (
        "round_robin",
        "each server in turn: servers alike, requests short",
    ),
    (
        "weighted_round_robin",
        "in turn, in proportion to each server's weight (smoothly, no bursts)",
    ),
    ("random", "a server at random for each request"),
    (
        "least_conn",
        "the server with the fewest requests in flight: requests of uneven length (uploads, WebSockets)",
    ),
    (
        "ip_hash",
        "the same client IP always reaches the same server: sessions kept in server memory",
    ),
    (
        "hash",
        "the same key (header, cookie, path or query parameter) always reaches the same server",
    ),
    (
        "p2c_ewma",
        "the better of two random servers by recent latency and load: servers of uneven speed",
    ),
    (
        "failover",
        "strict priority: everything to the first available server in the list",
    ),
];

pub(crate) const STRATEGIES: [(&str, &str); 3] = [
    (
        "immediate",
        "move traffic to the backups as soon as the servers are down",
    ),
    (
        "graceful",
        "like immediate, but traffic returns step by step over a ramp, so no side is flooded",
    ),
    (
        "delayed",
        "move only after the servers have been down for a delay: rides out short blips",
    ),
];

/// The one-line explanation of an algorithm or a failover strategy.
pub(crate) fn explain(name: &str) -> &'static str {
    ALGORITHMS
        .iter()
        .chain(STRATEGIES.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, e)| *e)
        .unwrap_or("")
}

/// The config text for finished answers (see `Answers::finish`).
pub(crate) fn render(a: &Answers) -> String {
    let mut y = String::new();
    y.push_str(
        "# Fulcrum configuration, written by `fulcrum init`.\n\
         # Check it:  fulcrum validate -c THIS_FILE\n\
         # Start it:  fulcrum run -c THIS_FILE   (SIGHUP or saving the file reloads it)\n\
         # Durations are written 250ms, 5s, 2m, 1h. Every key is described in the README.\n\n",
    );
    listeners(&mut y, a);
    admin(&mut y, a);
    pools(&mut y, a);
    routes(&mut y, a);
    failover(&mut y, a);
    y
}

fn listeners(y: &mut String, a: &Answers) {
    let listen = a.listen_or_default();
    y.push_str("listeners:\n");
    match a.tls.mode {
        TlsMode::None => {
            let _ = writeln!(y, "  - address: {}", quoted(&listen));
        }
        TlsMode::Files => {
            let _ = writeln!(y, "  - address: {}", quoted(&listen));
            y.push_str("    tls:\n      certificates:            # PEM files, re-read on reload\n");
            let _ = writeln!(
                y,
                "        - cert: {}\n          key: {}",
                quoted(a.tls.cert.as_deref().unwrap_or_default()),
                quoted(a.tls.key.as_deref().unwrap_or_default())
            );
            redirect(y, a);
        }
        TlsMode::Acme => {
            let _ = writeln!(y, "  - address: {}", quoted(&listen));
            y.push_str(
                "    tls:\n      acme:                    # certificates for every host of the routes,\n                               # renewed 30 days before they expire\n",
            );
            let _ = writeln!(
                y,
                "        directory: {}\n        email: {}\n        storage: \"acme\"           # account key and certificates, next to this file",
                quoted(a.tls.acme_directory.as_deref().unwrap_or(LETS_ENCRYPT)),
                quoted(a.tls.acme_email.as_deref().unwrap_or_default())
            );
            redirect(y, a);
        }
    }
    y.push('\n');
}

fn redirect(y: &mut String, a: &Answers) {
    let _ = writeln!(
        y,
        "    redirect_http_from: {}   # plain HTTP: 308 to https (and ACME http-01 challenges)",
        quoted(a.tls.redirect_http_from.as_deref().unwrap_or("0.0.0.0:80"))
    );
}

fn admin(y: &mut String, a: &Answers) {
    y.push_str(
        "# The admin API, metrics and dashboard. Every call needs the header\n\
         # `Authorization: Bearer TOKEN`; `fulcrum ctl --token TOKEN ...` sends it.\n",
    );
    let _ = writeln!(
        y,
        "admin:\n  address: {}\n  token: {}\n",
        quoted(&a.admin.address),
        quoted(a.admin.token.as_deref().unwrap_or_default())
    );
}

fn backend(y: &mut String, s: &Server) {
    let _ = writeln!(y, "      - address: {}", quoted(&s.address));
    if s.weight != 1 {
        let _ = writeln!(y, "        weight: {}", s.weight);
    }
    if let Some(l) = s.level {
        let _ = writeln!(y, "        failover_level: {l}");
    }
    if let Some(r) = &s.region {
        let _ = writeln!(y, "        region: {}", quoted(r));
    }
}

fn pools(y: &mut String, a: &Answers) {
    let algorithm = a.algorithm_or_default();
    let _ = writeln!(
        y,
        "pools:\n  - name: {POOL}\n    # {}\n    algorithm: {algorithm}",
        explain(&algorithm)
    );
    if let Some(k) = &a.hash_key {
        let _ = writeln!(y, "    hash_key: {}", quoted(k));
    }
    y.push_str("    backends:\n");
    if !a.backups.is_empty() {
        y.push_str("      # Level 0: the application servers, balanced among themselves.\n");
    }
    for s in &a.servers {
        backend(y, s);
    }
    if !a.backups.is_empty() {
        y.push_str(
            "      # Backups: a level takes traffic only while every server of the\n      # levels below it is down.\n",
        );
    }
    for s in &a.backups {
        backend(y, s);
    }
    let h = &a.health;
    let status = if h.expected_status.contains(',') {
        let items: Vec<String> = h
            .expected_status
            .split(", ")
            .map(|s| match s.parse::<u16>() {
                Ok(code) => code.to_string(),
                Err(_) => quoted(s),
            })
            .collect();
        format!("[{}]", items.join(", "))
    } else {
        match h.expected_status.parse::<u16>() {
            Ok(code) => code.to_string(),
            Err(_) => quoted(&h.expected_status),
        }
    };
    let _ = writeln!(
        y,
        "    health_check:              # Fulcrum asks every server for this page\n      \
         path: {}\n      \
         interval: {}\n      \
         timeout: {}\n      \
         expected_status: {status}\n      \
         unhealthy_threshold: {}     # failed checks in a row before a server leaves the rotation\n      \
         healthy_threshold: {}       # passed checks in a row before it comes back\n    \
         # A request that fails on one server is retried on another (for up to 2s),\n    \
         # and one that fails 3 requests within 10s is set aside for 10s (passive health).\n",
        quoted(&h.path),
        h.interval,
        h.timeout,
        h.unhealthy_threshold,
        h.healthy_threshold
    );
}

fn routes(y: &mut String, a: &Answers) {
    y.push_str("routes:\n");
    if a.hosts.is_empty() {
        let _ = writeln!(
            y,
            "  - path_prefix: \"/\"           # any host name\n    pool: {POOL}"
        );
    }
    for h in &a.hosts {
        let _ = writeln!(
            y,
            "  - host: {}\n    path_prefix: \"/\"\n    pool: {POOL}",
            quoted(h)
        );
    }
    y.push('\n');
}

fn failover(y: &mut String, a: &Answers) {
    let f = &a.failover;
    if a.backups.is_empty() {
        y.push_str(
            "# No backup servers: failover has nothing to switch to. Add backends with\n\
             # `failover_level: 1` to the pool to use it.\n\
             failover:\n  enabled: false\n",
        );
        return;
    }
    let _ = writeln!(
        y,
        "failover:\n  enabled: true\n  # {}\n  strategy: {}\n  \
         recovery_interval: {}     # servers must stay healthy this long before traffic returns",
        explain(&f.strategy),
        f.strategy,
        f.recovery_interval
    );
    if let Some(d) = &f.delay {
        let _ = writeln!(y, "  delay: {d}");
    }
    if let Some(r) = &f.ramp {
        let _ = writeln!(y, "  ramp: {r}");
    }
    y.push_str(
        "  notification:              # every failover and recovery, on every channel\n    \
         enabled: true\n    channels:\n      - type: log\n        level: warning\n",
    );
    if let Some(w) = &a.notify.webhook {
        let _ = writeln!(
            y,
            "      - type: webhook\n        url: {}\n        format: {}",
            quoted(&w.url),
            w.format
        );
    }
    if let Some(m) = &a.notify.email {
        let _ = writeln!(
            y,
            "      - type: email\n        smtp_server: {}\n        smtp_port: {}",
            quoted(&m.smtp_server),
            m.smtp_port
        );
        if let Some(u) = &m.smtp_user {
            let _ = writeln!(y, "        smtp_user: {}", quoted(u));
        }
        if let Some(p) = &m.smtp_password {
            let _ = writeln!(y, "        smtp_password: {}", quoted(p));
        }
        if let Some(f) = &m.from {
            let _ = writeln!(y, "        from: {}", quoted(f));
        }
        let list: Vec<String> = m.recipients.iter().map(|r| quoted(r)).collect();
        let _ = writeln!(y, "        recipients: [{}]", list.join(", "));
    }
}
