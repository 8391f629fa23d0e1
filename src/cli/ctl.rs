//! `fulcrum ctl`: the admin API from the command line, with tables for people and
//! `--json` for scripts.

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::fmt::Write as _;
use std::process::ExitCode;

/// The flags are global: `fulcrum ctl --json pools` and `fulcrum ctl pools --json`
/// are the same.
#[derive(clap::Args)]
pub struct CtlArgs {
    /// Admin API address: http://HOST:PORT, https://HOST:PORT, or HOST:PORT
    #[arg(
        long,
        global = true,
        env = "FULCRUM_ADMIN",
        default_value = "http://127.0.0.1:9000"
    )]
    admin: String,
    /// Bearer token for the admin API
    #[arg(
        long,
        global = true,
        env = "FULCRUM_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// With https://: trust this CA certificate (PEM) instead of the system roots
    #[arg(long, global = true, env = "FULCRUM_ADMIN_CA")]
    ca: Option<std::path::PathBuf>,
    /// With https://: accept any certificate (for a first look only: anyone on
    /// the path can then read the token)
    #[arg(long, global = true)]
    insecure: bool,
    /// Print the API's JSON instead of tables
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

/// One variant per subcommand; each maps to one API request in [`request`]
/// and one way of printing its answer in [`print_human`].
#[derive(clap::Subcommand)]
enum CtlCommand {
    /// Version, uptime, config generation, listeners
    Status,
    /// Pools and their backends (state, health, in-flight, latency)
    Pools {
        /// Only this pool
        pool: Option<String>,
    },
    /// The running config (secrets redacted) and runtime changes
    Config,
    /// Replace the running config with a file (YAML or JSON)
    Apply {
        /// The config file to send
        file: std::path::PathBuf,
        /// Also write it to the server's config file
        #[arg(long)]
        persist: bool,
    },
    /// Reload the server's config file
    Reload,
    /// Add a backend to a pool at run time
    Add {
        /// Pool name
        pool: String,
        /// Backend address: host:port, http://host:port, https://host:port (port 80/443 if left out)
        address: String,
        /// Weight (default 1)
        #[arg(long)]
        weight: Option<u32>,
        /// Failover level: 0 primary, 1 first backup... (default 0)
        #[arg(long)]
        level: Option<u32>,
        /// A label for the backend's location, shown in status and metrics
        #[arg(long)]
        region: Option<String>,
        /// A name for people, shown in the API, dashboard and metrics
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a backend from a pool at run time
    Remove {
        /// Pool name
        pool: String,
        /// Backend address (as `add` took it) or name
        address: String,
    },
    /// Stop sending new requests to a backend; in-flight ones finish
    Drain {
        /// Pool name
        pool: String,
        /// Backend address (host:port) or name
        backend: String,
    },
    /// Take a backend out of rotation
    Disable {
        /// Pool name
        pool: String,
        /// Backend address (host:port) or name
        backend: String,
    },
    /// Put a backend back (after it passes its health check)
    Enable {
        /// Pool name
        pool: String,
        /// Backend address (host:port) or name
        backend: String,
    },
    /// Recent events
    Events {
        /// How many of the most recent events
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Manual failover: activate | deactivate | status | test
    Failover {
        /// activate: force traffic to the backups; deactivate: back to automatic;
        /// status: where traffic goes; test: check the backups and notifications, move nothing
        #[arg(value_parser = ["activate", "deactivate", "status", "test"])]
        action: String,
        /// Pool name (optional for status: every pool with backups)
        pool: Option<String>,
    },
    /// Cluster nodes, roles and the virtual IP holder; `add` / `remove` change
    /// the membership
    Cluster {
        #[command(subcommand)]
        change: Option<ClusterChange>,
    },
    /// The response cache: `status` (per caching route), or `purge` one of
    /// --url, --prefix or --tag (on every node of a cluster)
    Cache {
        #[arg(value_parser = ["status", "purge"])]
        action: String,
        /// A URL (`http://host/path?query`, or `/path?query` for any host)
        #[arg(long)]
        url: Option<String>,
        /// Every URL starting with this (`http://host/prefix` or `/prefix`)
        #[arg(long)]
        prefix: Option<String>,
        /// Every response tagged so (`Cache-Tag` or `Surrogate-Key`)
        #[arg(long)]
        tag: Option<String>,
    },
    /// Container discovery: the engine connection and each container's verdict
    Discovery,
}

/// Membership changes, made through any node (forwarded to the primary).
#[derive(clap::Subcommand)]
enum ClusterChange {
    /// Add a node: it joins as a learner, catches up, then becomes a voter
    Add {
        /// The new node's `node_id`
        id: String,
        /// Its peer address (its `cluster.bind`), host:port
        address: String,
        /// The node is a witness (votes, serves no traffic)
        #[arg(long)]
        witness: bool,
    },
    /// Remove a node (the primary hands its role over first)
    Remove {
        /// The node's `node_id`
        id: String,
    },
}

pub fn run(args: CtlArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fulcrum ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match execute(&args).await {
            Ok(text) => emit(&text),
            Err(e) => {
                eprintln!("fulcrum ctl: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Writes the output; a reader that went away (`ctl status | head -1`) is not
/// an error: exit quietly, as `cat` does.
fn emit(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulcrum ctl: cannot write the output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type ApiRequest = (Method, String, Option<Vec<u8>>);

/// The API request a subcommand makes.
fn request(command: &CtlCommand) -> Result<ApiRequest, String> {
    use CtlCommand::*;
    Ok(match command {
        Status => (Method::GET, "/api/v1/status".into(), None),
        Pools { pool: None } => (Method::GET, "/api/v1/pools".into(), None),
        Pools { pool: Some(p) } => (Method::GET, format!("/api/v1/pools/{}", enc(p)), None),
        Config => (Method::GET, "/api/v1/config".into(), None),
        Apply { file, persist } => {
            let text =
                std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let q = if *persist { "?persist=true" } else { "" };
            (Method::PUT, format!("/api/v1/config{q}"), Some(text))
        }
        Reload => (Method::POST, "/api/v1/reload".into(), None),
        Add {
            pool,
            address,
            weight,
            level,
            region,
            name,
        } => {
            let mut v = serde_json::json!({ "address": address });
            if let Some(w) = weight {
                v["weight"] = (*w).into();
            }
            if let Some(l) = level {
                v["failover_level"] = (*l).into();
            }
            if let Some(r) = region {
                v["region"] = r.as_str().into();
            }
            if let Some(n) = name {
                v["name"] = n.as_str().into();
            }
            (
                Method::POST,
                format!("/api/v1/pools/{}/backends", enc(pool)),
                Some(v.to_string().into_bytes()),
            )
        }
        Remove { pool, address } => (
            Method::DELETE,
            format!("/api/v1/pools/{}/backends/{}", enc(pool), enc(address)),
            None,
        ),
        Drain { pool, backend } | Disable { pool, backend } | Enable { pool, backend } => {
            let action = match command {
                Drain { .. } => "drain",
                Disable { .. } => "disable",
                _ => "enable",
            };
            (
                Method::POST,
                format!(
                    "/api/v1/pools/{}/backends/{}/{action}",
                    enc(pool),
                    enc(backend)
                ),
                None,
            )
        }
        Events { limit } => (Method::GET, format!("/api/v1/events?limit={limit}"), None),
        Failover { action, pool } => {
            let q = pool
                .as_ref()
                .map(|p| format!("?pool={}", enc(p)))
                .unwrap_or_default();
            let m = if action == "status" {
                Method::GET
            } else {
                Method::POST
            };
            if pool.is_none() && action != "status" {
                return Err(format!("failover {action} needs a POOL"));
            }
            (m, format!("/api/v1/failover/{action}{q}"), None)
        }
        Cluster { change: None } => (Method::GET, "/api/v1/cluster".into(), None),
        Discovery => (Method::GET, "/api/v1/discovery".into(), None),
        Cluster {
            change:
                Some(ClusterChange::Add {
                    id,
                    address,
                    witness,
                }),
        } => (
            Method::POST,
            "/api/v1/cluster/nodes".into(),
            Some(
                serde_json::json!({ "id": id, "address": address, "witness": witness })
                    .to_string()
                    .into_bytes(),
            ),
        ),
        Cluster {
            change: Some(ClusterChange::Remove { id }),
        } => (
            Method::DELETE,
            format!("/api/v1/cluster/nodes/{}", enc(id)),
            None,
        ),
        Cache { action, .. } if action == "status" => (Method::GET, "/api/v1/cache".into(), None),
        Cache {
            url, prefix, tag, ..
        } => {
            let given: Vec<(&str, &String)> = [("url", url), ("prefix", prefix), ("tag", tag)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                .collect();
            let [(kind, value)] = given.as_slice() else {
                return Err("cache purge needs exactly one of --url, --prefix or --tag".into());
            };
            let body = serde_json::json!({ *kind: value }).to_string().into_bytes();
            (Method::POST, "/api/v1/cache/purge".into(), Some(body))
        }
    })
}

/// Runs the subcommand; returns what to print.
async fn execute(a: &CtlArgs) -> Result<String, String> {
    let (method, path, body) = request(&a.command)?;
    let (status, v) = call(a, method, &path, body).await?;
    if !status.is_success() {
        let mut msg = format!(
            "{} {}",
            status.as_u16(),
            v.get("error").and_then(Value::as_str).unwrap_or("error")
        );
        if let Some(errs) = v.get("errors").and_then(Value::as_array) {
            for e in errs {
                let line = e.as_str().unwrap_or("");
                msg.push_str(&format!("\n  {}", with_file_name(&a.command, line)));
            }
        }
        return Err(msg);
    }
    if a.json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
    }
    let mut out = String::new();
    print_human(&a.command, &v, &mut out);
    Ok(out)
}

/// The server names a config sent to it `api`; for `apply FILE`, an error line
/// `api:LINE:COL: ...` is about FILE.
fn with_file_name(command: &CtlCommand, line: &str) -> String {
    match (command, line.strip_prefix("api:")) {
        (CtlCommand::Apply { file, .. }, Some(rest)) => format!("{}:{rest}", file.display()),
        _ => line.to_string(),
    }
}

/// `http://host:port[/]`, `https://host:port[/]` or `host:port`: whether to
/// speak TLS, and the `host:port` to connect to.
fn admin_authority(base: &str) -> Result<(bool, &str), String> {
    let base = base.trim();
    let (tls, rest) = match base.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        Some((scheme, _)) => {
            return Err(format!(
                "--admin {base}: use http://HOST:PORT, https://HOST:PORT or HOST:PORT (not {scheme}://)"
            ));
        }
        None => (false, base),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.is_empty() {
        return Err(format!("--admin {base}: no host:port"));
    }
    Ok((tls, authority))
}

/// The TLS client for an https:// admin API: `--ca`, else the system roots;
/// `--insecure` checks nothing.
fn tls_connector(a: &CtlArgs) -> Result<tokio_rustls::TlsConnector, String> {
    let settings = crate::config::UpstreamTls {
        ca: a.ca.clone(),
        insecure_skip_verify: a.insecure,
        ..Default::default()
    };
    let cfg = crate::tls::upstream_client_config(&settings).map_err(|e| format!("--ca: {e}"))?;
    Ok(tokio_rustls::TlsConnector::from(cfg))
}

/// The host of `host:port` as TLS names it (a DNS name or an IP address).
fn server_name(authority: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("--admin: {host}: {e}"))
}

async fn call(
    a: &CtlArgs,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(http::StatusCode, Value), String> {
    let base = a.admin.as_str();
    let (tls, authority) = admin_authority(base)?;
    if (a.ca.is_some() || a.insecure) && !tls {
        return Err(format!(
            "--ca and --insecure are for an https:// admin API; --admin is {base}"
        ));
    }
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot reach the admin API at {base}: {e}"))?;
    let mut sender = if tls {
        let name = server_name(authority)?;
        let stream = tls_connector(a)?
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS with the admin API at {base}: {e}"))?;
        handshake(stream).await?
    } else {
        handshake(stream).await?
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority)
        .header(
            header::USER_AGENT,
            concat!("fulcrum-ctl/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(t) = a.token.as_deref() {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, v))
}

/// HTTP/1.1 over `io`, its connection driven in the background.
async fn handshake<I>(io: I) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

fn table(out: &mut String, headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_pool(out: &mut String, p: &Value) {
    let _ = writeln!(
        out,
        "pool {} ({}){}",
        s(&p["name"]),
        s(&p["algorithm"]),
        if p["failover"]["active"] == Value::Bool(true) {
            format!("  FAILOVER ACTIVE: level {}", s(&p["failover"]["level"]))
        } else {
            String::new()
        }
    );
    if p["queue"].is_object() {
        let _ = writeln!(
            out,
            "queue: {} waiting of {}, {} refused",
            s(&p["queue"]["waiting"]),
            s(&p["queue"]["size"]),
            s(&p["queue"]["rejected"])
        );
    }
    let backends = p["backends"].as_array().cloned().unwrap_or_default();
    if backends.is_empty() {
        let _ = writeln!(
            out,
            "no backends (add one with `fulcrum ctl add POOL ADDRESS`)"
        );
        return;
    }
    let rows = backends
        .iter()
        .map(|b| {
            vec![
                s(&b["address"]),
                b.get("name").map(s).unwrap_or_default(),
                s(&b["state"]),
                s(&b["failover_level"]),
                s(&b["weight"]),
                match b["max_requests"].as_u64() {
                    Some(cap) => format!("{}/{cap}", s(&b["in_flight"])),
                    None => s(&b["in_flight"]),
                },
                s(&b["requests"]),
                s(&b["failures"]),
                s(&b["latency_ms"]),
            ]
        })
        .collect();
    table(
        out,
        &[
            "backend",
            "name",
            "state",
            "level",
            "weight",
            "in_flight",
            "requests",
            "failures",
            "latency_ms",
        ],
        rows,
    );
}

fn print_failover(out: &mut String, v: &Value) {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    if items.is_empty() {
        let _ = writeln!(
            out,
            "no pool has backup servers: failover applies to pools with a backend at failover_level 1 or more"
        );
        return;
    }
    for f in items {
        if f.get("backups").is_some() {
            let _ = writeln!(
                out,
                "test of pool {}: ready={} (no traffic moved)",
                s(&f["pool"]),
                s(&f["ready"])
            );
            for b in f["backups"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  level {} {} healthy={} {}",
                    s(&b["level"]),
                    s(&b["address"]),
                    s(&b["healthy"]),
                    b.get("error").map(s).unwrap_or_default()
                );
            }
        } else {
            let _ = writeln!(
                out,
                "pool {}: active={} level={} mode={} since={}",
                s(&f["pool"]),
                s(&f["active"]),
                s(&f["level"]),
                s(&f["mode"]),
                s(&f["since"])
            );
        }
    }
}

fn print_events(out: &mut String, v: &Value) {
    let events = v.as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        let _ = writeln!(out, "no events yet");
        return;
    }
    let rows = events
        .iter()
        .map(|e| {
            let t = e["ts"].as_f64().unwrap_or(0.0);
            vec![
                crate::clock::rfc3339(t),
                s(&e["kind"]),
                e.get("pool").map(s).unwrap_or_default(),
                e.get("backend").map(s).unwrap_or_default(),
                s(&e["message"]),
            ]
        })
        .collect();
    table(out, &["time", "event", "pool", "backend", "message"], rows);
}

fn print_cluster(out: &mut String, v: &Value) {
    if v["role"] == "standalone" {
        let _ = writeln!(
            out,
            "standalone: no `cluster` section in this node's config"
        );
        return;
    }
    let _ = writeln!(
        out,
        "node {}  role {}  term {}  leader {}  vip {} on {}",
        s(&v["node_id"]),
        s(&v["role"]),
        s(&v["term"]),
        s(&v["leader"]),
        s(&v["vip"]),
        s(&v["vip_holder"])
    );
    let rows = v["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .map(|n| {
                    vec![
                        s(&n["id"]),
                        s(&n["address"]),
                        s(&n["role"]),
                        if n["self"].as_bool() == Some(true) {
                            "(this node)".to_string()
                        } else {
                            match n["last_contact_ms"].as_u64() {
                                Some(ms) => format!("{ms} ms ago"),
                                None => "never".to_string(),
                            }
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(out, &["node", "address", "role", "last contact"], rows);
}

/// The membership after a change.
fn print_members(out: &mut String, v: &Value) {
    let rows = v["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let kind = match (m["voter"].as_bool(), m["witness"].as_bool()) {
                        (Some(true), Some(true)) => "witness",
                        (Some(true), _) => "voter",
                        _ => "learner",
                    };
                    vec![s(&m["id"]), s(&m["address"]), kind.to_string()]
                })
                .collect()
        })
        .unwrap_or_default();
    table(out, &["node", "address", "member as"], rows);
}

fn print_discovery(out: &mut String, v: &Value) {
    let e = &v["engine"];
    let _ = writeln!(
        out,
        "engine {}  {}  api {}  last event {}",
        s(&e["endpoint"]),
        if e["connected"] == Value::Bool(true) {
            "connected".to_string()
        } else {
            format!("DISCONNECTED ({})", s(&e["last_error"]))
        },
        s(&e["api_version"]),
        s(&e["last_event"])
    );
    let rows = v["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let routes: Vec<String> = c["routes"]
                        .as_array()
                        .map(|r| r.iter().map(s).collect())
                        .unwrap_or_default();
                    let id = s(&c["id"]);
                    vec![
                        s(&c["name"]),
                        id.chars().take(12).collect(),
                        s(&c["state"]),
                        s(&c["address"]),
                        if routes.is_empty() {
                            s(&c["reason"])
                        } else {
                            routes.join(" ")
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        out,
        &["container", "id", "state", "address", "routes / reason"],
        rows,
    );
}

fn print_status(out: &mut String, v: &Value) {
    let _ = writeln!(
        out,
        "fulcrum {}  up {}s  generation {}",
        s(&v["version"]),
        s(&v["uptime_seconds"]),
        s(&v["generation"])
    );
    let _ = writeln!(
        out,
        "role {}  requests {}",
        s(&v["cluster_role"]),
        s(&v["requests_total"])
    );
    let _ = writeln!(
        out,
        "backends available {}/{}",
        s(&v["backends"]["available"]),
        s(&v["backends"]["total"])
    );
    if v["config_reload"]["last_successful"] == Value::Bool(false) {
        let _ = writeln!(
            out,
            "last reload REJECTED: {}",
            s(&v["config_reload"]["last_error"])
        );
    }
    let listeners = v["listeners"].as_array().cloned().unwrap_or_default();
    if listeners.is_empty() {
        let _ = writeln!(out, "no listeners");
    }
    for l in listeners {
        let _ = writeln!(out, "listening on {}", s(&l["address"]));
    }
}

fn print_cache(out: &mut String, v: &Value) {
    let routes = v["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        let _ = writeln!(out, "no route has a cache");
        return;
    }
    let rows = routes
        .iter()
        .map(|r| {
            vec![
                s(&r["route"]),
                s(&r["entries"]),
                format!("{}/{}", s(&r["bytes"]), s(&r["max_size"])),
                format!("{:.1}%", r["hit_ratio"].as_f64().unwrap_or(0.0) * 100.0),
                s(&r["evictions"]),
            ]
        })
        .collect();
    table(
        out,
        &["ROUTE", "ENTRIES", "BYTES", "HIT RATIO", "EVICTIONS"],
        rows,
    );
}

fn print_human(cmd: &CtlCommand, v: &Value, out: &mut String) {
    use CtlCommand::*;
    match cmd {
        Status => print_status(out, v),
        Pools { pool: None } => {
            let pools = v.as_array().cloned().unwrap_or_default();
            if pools.is_empty() {
                let _ = writeln!(out, "no pools configured");
            }
            for p in pools {
                print_pool(out, &p);
                out.push('\n');
            }
        }
        Pools { pool: Some(_) } => print_pool(out, v),
        Add { .. } | Drain { .. } | Disable { .. } | Enable { .. } => {
            let _ = writeln!(
                out,
                "{} {} {}",
                s(&v["address"]),
                s(&v["state"]),
                v.get("admin_state").map(s).unwrap_or_default()
            );
        }
        Remove { pool, .. } => {
            let _ = writeln!(out, "removed {} from {pool}", s(&v["removed"]));
        }
        Reload | Apply { .. } => {
            let _ = writeln!(out, "applied: generation {}", s(&v["generation"]));
        }
        Events { .. } => print_events(out, v),
        Failover { .. } => print_failover(out, v),
        Cluster { change: None } => print_cluster(out, v),
        Discovery => print_discovery(out, v),
        Cluster { change: Some(_) } => print_members(out, v),
        Cache { action, .. } if action == "purge" => {
            let _ = writeln!(out, "purged {} keys", s(&v["purged"]));
        }
        Cache { .. } => print_cache(out, v),
        Config => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(v).unwrap_or_default()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_address_with_or_without_scheme() {
        assert_eq!(
            admin_authority("http://127.0.0.1:9000/").unwrap(),
            (false, "127.0.0.1:9000")
        );
        assert_eq!(
            admin_authority("127.0.0.1:9000").unwrap(),
            (false, "127.0.0.1:9000")
        );
        assert_eq!(
            admin_authority("[::1]:9000").unwrap(),
            (false, "[::1]:9000")
        );
        assert_eq!(admin_authority("https://x:1").unwrap(), (true, "x:1"));
        assert!(admin_authority("ftp://x:1").is_err());
        assert!(admin_authority("http://").is_err());
        assert!(server_name("[::1]:9000").is_ok());
        assert!(server_name("admin.example:9000").is_ok());
    }

    #[test]
    fn cluster_add_and_remove_map_to_the_membership_api() {
        let add = CtlCommand::Cluster {
            change: Some(ClusterChange::Add {
                id: "n4".into(),
                address: "10.0.0.14:7946".into(),
                witness: true,
            }),
        };
        let (m, path, body) = request(&add).unwrap();
        assert_eq!((m, path.as_str()), (Method::POST, "/api/v1/cluster/nodes"));
        let v: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "n4", "address": "10.0.0.14:7946", "witness": true})
        );
        let remove = CtlCommand::Cluster {
            change: Some(ClusterChange::Remove { id: "n 2".into() }),
        };
        let (m, path, _) = request(&remove).unwrap();
        assert_eq!(
            (m, path.as_str()),
            (Method::DELETE, "/api/v1/cluster/nodes/n%202")
        );
    }

    #[test]
    fn apply_errors_name_the_file() {
        let apply = CtlCommand::Apply {
            file: "site.yaml".into(),
            persist: false,
        };
        assert_eq!(
            with_file_name(&apply, "api:6:18: unknown pool `x`"),
            "site.yaml:6:18: unknown pool `x`"
        );
        assert_eq!(
            with_file_name(&CtlCommand::Reload, "api:1:1: x"),
            "api:1:1: x"
        );
    }
}
