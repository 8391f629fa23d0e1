//! `fulcrum ctl`: the admin API from the command line, with tables for people and
//! `--json` for scripts.

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CtlArgs {
    /// Admin API base URL
    #[arg(long, env = "FULCRUM_ADMIN", default_value = "http://127.0.0.1:9000")]
    admin: String,
    /// Bearer token for the admin API
    #[arg(long, env = "FULCRUM_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of tables
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(clap::Subcommand)]
enum CtlCommand {
    /// Version, uptime, config generation, listeners
    Status,
    /// Pools and their backends (state, health, in-flight, latency)
    Pools { pool: Option<String> },
    /// The running config (secrets redacted) and runtime changes
    Config,
    /// Replace the running config with a file (YAML or JSON)
    Apply {
        file: std::path::PathBuf,
        /// Also write it to the server's config file
        #[arg(long)]
        persist: bool,
    },
    /// Reload the server's config file
    Reload,
    /// Add a backend to a pool at run time
    Add {
        pool: String,
        address: String,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long)]
        level: Option<u32>,
    },
    /// Remove a backend from a pool at run time
    Remove { pool: String, address: String },
    /// Stop sending new requests to a backend; in-flight ones finish
    Drain { pool: String, backend: String },
    /// Take a backend out of rotation
    Disable { pool: String, backend: String },
    /// Put a backend back (after it passes its health check)
    Enable { pool: String, backend: String },
    /// Recent events
    Events {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Manual failover: activate | deactivate | status | test
    Failover {
        #[arg(value_parser = ["activate", "deactivate", "status", "test"])]
        action: String,
        pool: Option<String>,
    },
    /// Cluster nodes, roles and the virtual IP holder
    Cluster,
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
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fulcrum ctl: {e}");
                ExitCode::FAILURE
            }
        }
    })
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

async fn execute(a: &CtlArgs) -> Result<(), String> {
    use CtlCommand::*;
    let (method, path, body): (Method, String, Option<Vec<u8>>) = match &a.command {
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
        } => {
            let mut v = serde_json::json!({ "address": address });
            if let Some(w) = weight {
                v["weight"] = (*w).into();
            }
            if let Some(l) = level {
                v["failover_level"] = (*l).into();
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
            let action = match &a.command {
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
        Cluster => (Method::GET, "/api/v1/cluster".into(), None),
    };
    let (status, v) = call(&a.admin, a.token.as_deref(), method, &path, body).await?;
    if !status.is_success() {
        let mut msg = format!(
            "{} {}",
            status.as_u16(),
            v.get("error").and_then(Value::as_str).unwrap_or("error")
        );
        if let Some(errs) = v.get("errors").and_then(Value::as_array) {
            for e in errs {
                msg.push_str(&format!("\n  {}", e.as_str().unwrap_or("")));
            }
        }
        return Err(msg);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    print_human(&a.command, &v);
    Ok(())
}

async fn call(
    base: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(http::StatusCode, Value), String> {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .ok_or("--admin must be an http:// URL")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot reach the admin API at {base}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority)
        .header(
            header::USER_AGENT,
            concat!("fulcrum-ctl/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(t) = token {
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

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
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

fn print_pool(p: &Value) {
    println!(
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
        println!(
            "queue: {} waiting of {}, {} refused",
            s(&p["queue"]["waiting"]),
            s(&p["queue"]["size"]),
            s(&p["queue"]["rejected"])
        );
    }
    let rows = p["backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    vec![
                        s(&b["address"]),
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
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "backend",
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

fn print_human(cmd: &CtlCommand, v: &Value) {
    use CtlCommand::*;
    match cmd {
        Status => {
            println!(
                "fulcrum {}  up {}s  generation {}",
                s(&v["version"]),
                s(&v["uptime_seconds"]),
                s(&v["generation"])
            );
            println!(
                "role {}  requests {}",
                s(&v["cluster_role"]),
                s(&v["requests_total"])
            );
            println!(
                "backends available {}/{}",
                s(&v["backends"]["available"]),
                s(&v["backends"]["total"])
            );
            for l in v["listeners"].as_array().into_iter().flatten() {
                println!("listening on {}", s(&l["address"]));
            }
        }
        Pools { pool: None } => {
            for p in v.as_array().into_iter().flatten() {
                print_pool(p);
                println!();
            }
        }
        Pools { pool: Some(_) } => print_pool(v),
        Add { .. } | Drain { .. } | Disable { .. } | Enable { .. } => {
            println!(
                "{} {} {}",
                s(&v["address"]),
                s(&v["state"]),
                v.get("admin_state").map(s).unwrap_or_default()
            );
        }
        Remove { pool, address } => println!("removed {address} from {pool}"),
        Reload | Apply { .. } => println!("applied: generation {}", s(&v["generation"])),
        Events { .. } => {
            let rows = v
                .as_array()
                .map(|es| {
                    es.iter()
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
                        .collect()
                })
                .unwrap_or_default();
            table(&["time", "event", "pool", "backend", "message"], rows);
        }
        Failover { .. } => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            for f in items {
                if f.get("backups").is_some() {
                    println!(
                        "test of pool {}: ready={} (no traffic moved)",
                        s(&f["pool"]),
                        s(&f["ready"])
                    );
                    for b in f["backups"].as_array().into_iter().flatten() {
                        println!(
                            "  level {} {} healthy={} {}",
                            s(&b["level"]),
                            s(&b["address"]),
                            s(&b["healthy"]),
                            b.get("error").map(s).unwrap_or_default()
                        );
                    }
                } else {
                    println!(
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
        Cluster => {
            println!(
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
            table(&["node", "address", "role", "last contact"], rows);
        }
        Config => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
}
