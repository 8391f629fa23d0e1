//! `fulcrum demo`: the proxy and three demo backends in one process. One backend
//! crashes and comes back every ~20 s so a newcomer can watch it leave and rejoin
//! the rotation while traffic keeps flowing without errors.

use crate::app::App;
use crate::config::tree::Loc;
use crate::config::{
    AccessLogConfig, BackendAddress, BackendConfig, Config, HealthCheckOverride, ListenerConfig,
    Loaded, PassiveHealthConfig, PoolConfig, RouteConfig, RouteTarget,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Proxy address [default: 127.0.0.1:8080, or a free port if taken]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin API and dashboard address [default: 127.0.0.1:9000, or a free port if taken]
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// How long backend-2 runs before each crash
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    fail_every: Duration,
    /// How long backend-2 stays down
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    fail_for: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::units::parse_duration(s)
}

/// A demo backend: answers `/` with its name and `/health` with 200; `stop` makes it
/// vanish like a crashed process (connections refused) until `start` again.
struct DemoBackend {
    name: String,
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    tasks: Option<JoinSet<()>>,
}

impl DemoBackend {
    async fn bind(name: &str) -> std::io::Result<DemoBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut b = DemoBackend {
            name: name.to_string(),
            addr: listener.local_addr()?,
            served: Arc::new(AtomicU64::new(0)),
            tasks: None,
        };
        b.serve(listener);
        Ok(b)
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let (name, served) = (self.name.clone(), self.served.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (name, served) = (name.clone(), served.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = if req.uri().path() == "/health" {
                        "ok\n".to_string()
                    } else {
                        served.fetch_add(1, Relaxed);
                        format!("Hello from {name} ({})\n", req.uri().path())
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    if let Ok(v) = http::HeaderValue::from_str(&name) {
                        resp.headers_mut().insert("x-backend", v);
                    }
                    async move { Ok::<_, Infallible>(resp) }
                });
                conns.spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        self.tasks = Some(tasks);
    }

    fn stop(&mut self) {
        // Dropping the task set closes the listener and every connection.
        self.tasks = None;
    }

    async fn start(&mut self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}

fn demo_config(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) -> Config {
    let mut pool = PoolConfig::new("demo");
    for b in backends {
        pool.backends.push(BackendConfig {
            address: BackendAddress::parse(&b.to_string()).expect("socket address"),
            weight: 1,
            failover_level: 0,
            region: None,
            name: None,
            health_check: None,
            max_requests: None,
            loc: Loc::default(),
        });
    }
    pool.health_check = Some(HealthCheckOverride {
        path: Some("/health".into()),
        interval: Some(Duration::from_secs(1)),
        down_interval: Some(Duration::from_millis(500)),
        timeout: Some(Duration::from_millis(500)),
        unhealthy_threshold: Some(2),
        healthy_threshold: Some(1),
        ..Default::default()
    });
    pool.passive_health = PassiveHealthConfig {
        max_fails: 1,
        fail_duration: Duration::from_secs(2),
        ..Default::default()
    };
    Config {
        listeners: vec![ListenerConfig::plain(listen)],
        admin: Some(crate::config::AdminConfig {
            address: admin,
            token: None,
        }),
        access_log: AccessLogConfig {
            enabled: false,
            ..Default::default()
        },
        pools: vec![pool],
        routes: vec![RouteConfig {
            name: "demo".into(),
            host: None,
            path_prefix: "/".into(),
            target: RouteTarget::Pool {
                name: "demo".into(),
                loc: Loc::default(),
            },
            sticky: false,
            load_balancing: None,
            strip_prefix: false,
            headers: Default::default(),
            loc: Loc::default(),
        }],
        ..Config::default()
    }
}

/// The preferred address if it is free, else any free port on loopback.
fn free_addr(preferred: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(preferred) {
        Ok(_) => preferred,
        Err(_) => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or(preferred),
    }
}

pub fn run(args: DemoArgs) -> ExitCode {
    let rt = match super::tokio_runtime(None) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let signals = match super::run::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fulcrum demo: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut backends = Vec::new();
        for name in ["backend-1", "backend-2", "backend-3"] {
            match DemoBackend::bind(name).await {
                Ok(b) => backends.push(b),
                Err(e) => {
                    eprintln!("fulcrum demo: cannot start a demo backend: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let listen = args.listen.unwrap_or_else(|| free_addr("127.0.0.1:8080".parse().expect("static address")));
        let admin = args.admin.unwrap_or_else(|| free_addr("127.0.0.1:9000".parse().expect("static address")));
        let config = demo_config(listen, admin, &backends.iter().map(|b| b.addr).collect::<Vec<_>>());
        let app = match App::start(Loaded {
            config,
            path: None,
            text: String::new(),
        })
        .await
        {
            Ok(app) => app,
            Err(e) => {
                eprintln!("fulcrum demo: {e}");
                return ExitCode::FAILURE;
            }
        };
        let proxy = app.listener_addresses().await.first().map(|(_, a)| *a).unwrap_or(listen);
        let admin = app.admin_address().await.unwrap_or(admin);
        println!("Fulcrum demo");
        println!("  proxy:     http://{proxy}/        (try: curl -i http://{proxy}/)");
        println!("  dashboard: http://{admin}/");
        println!("  admin API: http://{admin}/api/v1/pools   (or: fulcrum ctl --admin http://{admin} pools)");
        println!("  metrics:   http://{admin}/metrics");
        for b in &backends {
            println!("  {}: http://{}/", b.name, b.addr);
        }
        println!(
            "  Every {}, backend-2 crashes for {} and comes back; watch it leave and rejoin.",
            crate::config::units::format_duration(args.fail_every),
            crate::config::units::format_duration(args.fail_for)
        );
        println!("  The demo sends itself 5 requests a second and prints who answered. Ctrl-C stops everything.");
        println!();

        let names: HashMap<String, String> = backends.iter().map(|b| (b.addr.to_string(), b.name.clone())).collect();
        tokio::spawn(print_events(app.clone(), names));
        tokio::spawn(traffic(proxy));
        let mut crashing = backends.remove(1);
        let (up_for, down_for) = (args.fail_every, args.fail_for);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(up_for).await;
                crashing.stop();
                println!("[demo] {} crashed (its port now refuses connections)", crashing.name);
                tokio::time::sleep(down_for).await;
                match crashing.start().await {
                    Ok(()) => println!("[demo] {} restarted", crashing.name),
                    Err(e) => println!("[demo] {} could not restart: {e}", crashing.name),
                }
            }
        });
        super::run::supervise(&app, signals, false).await;
        drop(backends);
        ExitCode::SUCCESS
    })
}

/// Prints health events as they happen, naming backends as the demo does.
async fn print_events(app: Arc<App>, names: HashMap<String, String>) {
    let mut rx = app.events.subscribe();
    loop {
        match rx.recv().await {
            Ok(e) => {
                let who = e
                    .backend
                    .as_ref()
                    .and_then(|b| names.get(b))
                    .cloned()
                    .unwrap_or_default();
                let what = match e.kind.as_str() {
                    "backend.down" => format!("{who} left the rotation ({})", e.message),
                    "backend.up" => format!("{who} rejoined the rotation ({})", e.message),
                    "backend.ejected" => {
                        format!("{who} taken out by passive health ({})", e.message)
                    }
                    _ => continue,
                };
                println!("[fulcrum] {what}");
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        }
    }
}

/// Light traffic through the proxy, summarised every 5 seconds.
async fn traffic(proxy: SocketAddr) {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut errors = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        match one_request(proxy).await {
            Some(name) => *counts.entry(name).or_insert(0) += 1,
            None => errors += 1,
        }
        n += 1;
        if n.is_multiple_of(25) {
            let mut parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.sort();
            println!("[traffic] last 5s: {} errors={errors}", parts.join(" "));
            counts.clear();
            errors = 0;
        }
    }
}

async fn one_request(proxy: SocketAddr) -> Option<String> {
    let stream = tokio::net::TcpStream::connect(proxy).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "demo.local")
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.headers()
        .get("x-backend")?
        .to_str()
        .ok()
        .map(str::to_string)
}
