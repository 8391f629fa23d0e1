//! `fulcrum demo`: the proxy, three demo backends and a backup in one process.
//!
//! One route per balancing strategy (`/balanced`, `/balanced-weighted`,
//! `/balanced-random`, `/balanced-least`, `/balanced-ip`, `/balanced-p2c`) and
//! `/failover`, whose primary is backend-2 and whose backup is `backup`. Every
//! cycle backend-2 crashes and comes back: a newcomer watches it leave the rotation
//! and rejoin, and `/failover` move to the backup and return, while the demo's own
//! traffic sees no errors.

use crate::config::tree::Loc;
use crate::config::units::format_duration;
use crate::config::{
    AccessLogConfig, Algorithm, BackendAddress, BackendConfig, Config, FailoverOverride,
    FailoverStrategy, HealthCheckOverride, ListenerConfig, Loaded, PassiveHealthConfig, PoolConfig,
    RouteConfig, RouteTarget,
};
use crate::events::EventKind;
use crate::supervisor::Supervisor;
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

/// backend-3 is the demo's slower machine: every answer takes this long, which
/// `/balanced-p2c` learns to avoid.
const SLOW_BACKEND: &str = "backend-3";
const SLOW_BY: Duration = Duration::from_millis(60);
/// `?delay=MS` is capped so a typo cannot hold a connection for long.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// The routes that show one strategy each: path, algorithm, what the user sees.
const STRATEGY_ROUTES: [(&str, Algorithm, &str); 6] = [
    (
        "/balanced",
        Algorithm::RoundRobin,
        "round robin: each backend in turn",
    ),
    (
        "/balanced-weighted",
        Algorithm::WeightedRoundRobin,
        "weighted round robin: backend-1 (weight 3) gets 3 of every 5",
    ),
    (
        "/balanced-random",
        Algorithm::Random,
        "random: any backend, no order",
    ),
    (
        "/balanced-least",
        Algorithm::LeastConn,
        "least connections: the backend with the fewest requests in flight",
    ),
    (
        "/balanced-ip",
        Algorithm::IpHash,
        "IP hash: one client IP, one backend (X-Forwarded-For from 127.0.0.1 is trusted here)",
    ),
    (
        "/balanced-p2c",
        Algorithm::P2cEwma,
        "power of two choices by latency: rarely the slow backend-3",
    ),
];

/// A demo backend: answers `/health` with 200 and anything else with its name and
/// the path (after `?delay=MS` if asked); `stop` makes it vanish like a crashed
/// process (connections refused) until `start` again.
struct DemoBackend {
    name: String,
    addr: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl DemoBackend {
    async fn bind(name: &str) -> std::io::Result<DemoBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut b = DemoBackend {
            name: name.to_string(),
            addr: listener.local_addr()?,
            tasks: None,
        };
        b.serve(listener);
        Ok(b)
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let name: Arc<str> = Arc::from(self.name.as_str());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let name = name.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    answer(name.clone(), req)
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

async fn answer(
    name: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let body = if path == "/health" {
        "ok\n".to_string()
    } else {
        let mut wait = requested_delay(req.uri().query());
        if &*name == SLOW_BACKEND {
            wait += SLOW_BY;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        format!("Hello from {name} ({path})\n")
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&name) {
        resp.headers_mut().insert("x-backend", v);
    }
    Ok(resp)
}

fn requested_delay(query: Option<&str>) -> Duration {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("delay="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or_default()
        .min(MAX_DELAY)
}

fn demo_backend(addr: SocketAddr, weight: u32, failover_level: u32) -> BackendConfig {
    BackendConfig {
        weight,
        failover_level,
        ..BackendConfig::new(BackendAddress::parse(&addr.to_string()).expect("socket address"))
    }
}

/// A pool checked and ejected quickly, so that the demo's crash shows within a second.
fn demo_pool(name: &str, algorithm: Algorithm, backends: Vec<BackendConfig>) -> PoolConfig {
    let mut pool = PoolConfig::new(name);
    pool.algorithm = algorithm;
    pool.backends = backends;
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
    pool
}

fn route(path: &str, pool: &str) -> RouteConfig {
    RouteConfig {
        name: path.into(),
        host: None,
        path_prefix: path.into(),
        target: RouteTarget::Pool {
            name: pool.into(),
            loc: Loc::default(),
        },
        sticky: false,
        load_balancing: None,
        strip_prefix: false,
        headers: Default::default(),
        rate_limit: None,
        buffer_request_body: 0,
        cache: None,
        loc: Loc::default(),
    }
}

/// The demo's config. `backends` are backend-1..3 then the backup.
fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &[SocketAddr],
    recovery: Duration,
) -> Config {
    let (main, backup) = (&backends[..3], backends[3]);
    let plain = |weights: [u32; 3]| -> Vec<BackendConfig> {
        main.iter()
            .zip(weights)
            .map(|(a, w)| demo_backend(*a, w, 0))
            .collect()
    };
    let mut pools = vec![demo_pool("demo", Algorithm::RoundRobin, plain([1, 1, 1]))];
    let mut routes = vec![route("/", "demo")];
    for (path, algorithm, _) in STRATEGY_ROUTES {
        let weights = if algorithm == Algorithm::WeightedRoundRobin {
            [3, 1, 1]
        } else {
            [1, 1, 1]
        };
        let name = &path[1..];
        pools.push(demo_pool(name, algorithm, plain(weights)));
        routes.push(route(path, name));
    }
    // /failover: backend-2 alone at level 0, the backup at level 1.
    let mut failover = demo_pool(
        "failover",
        Algorithm::Failover,
        vec![demo_backend(main[1], 1, 0), demo_backend(backup, 1, 1)],
    );
    failover.failover = FailoverOverride {
        strategy: Some(FailoverStrategy::Immediate),
        check_interval: Some(Duration::from_millis(500)),
        recovery_interval: Some(recovery),
        ..Default::default()
    };
    pools.push(failover);
    routes.push(route("/failover", "failover"));
    Config {
        listeners: vec![ListenerConfig::plain(listen)],
        admin: Some(crate::config::AdminConfig {
            address: admin,
            ..Default::default()
        }),
        access_log: AccessLogConfig {
            enabled: false,
            ..Default::default()
        },
        // Lets a curl loop play several clients with X-Forwarded-For on /balanced-ip.
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("static network")],
        pools,
        routes,
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

/// How long /failover's primary must be healthy again before traffic returns:
/// short enough to show within each cycle.
fn recovery_for(fail_every: Duration) -> Duration {
    (fail_every / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
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
        match serve(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fulcrum demo: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn serve(args: DemoArgs) -> Result<(), String> {
    let signals = super::run::Signals::install().map_err(|e| e.to_string())?;
    let mut backends = Vec::new();
    for name in ["backend-1", "backend-2", "backend-3", "backup"] {
        let b = DemoBackend::bind(name)
            .await
            .map_err(|e| format!("cannot start a demo backend: {e}"))?;
        backends.push(b);
    }
    let listen = args
        .listen
        .unwrap_or_else(|| free_addr("127.0.0.1:8080".parse().expect("static address")));
    let admin = args
        .admin
        .unwrap_or_else(|| free_addr("127.0.0.1:9000".parse().expect("static address")));
    let recovery = recovery_for(args.fail_every);
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let config = demo_config(listen, admin, &addrs, recovery);
    let app = Supervisor::start(Loaded {
        config,
        path: None,
        text: String::new(),
    })
    .await?;
    let proxy = app
        .listener_addresses()
        .await
        .first()
        .map(|(_, a)| *a)
        .unwrap_or(listen);
    let admin = app.admin_address().await.unwrap_or(admin);
    print!("{}", banner(proxy, admin, &backends, &args, recovery));

    let names: HashMap<String, String> = backends
        .iter()
        .map(|b| (b.addr.to_string(), b.name.clone()))
        .collect();
    tokio::spawn(print_events(app.clone(), names));
    tokio::spawn(traffic(proxy));
    let mut crashing = backends.remove(1);
    let (up_for, down_for) = (args.fail_every, args.fail_for);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(up_for).await;
            crashing.stop();
            println!(
                "[demo] {} crashed (its port now refuses connections); /failover goes to its backup",
                crashing.name
            );
            tokio::time::sleep(down_for).await;
            match crashing.start().await {
                Ok(()) => println!("[demo] {} restarted", crashing.name),
                Err(e) => println!("[demo] {} could not restart: {e}", crashing.name),
            }
        }
    });
    super::run::supervise(&app, signals, false).await;
    drop(backends);
    Ok(())
}

/// What the demo prints at start: where everything is, and a curl loop per route.
fn banner(
    proxy: SocketAddr,
    admin: SocketAddr,
    backends: &[DemoBackend],
    args: &DemoArgs,
    recovery: Duration,
) -> String {
    let mut s = format!(
        "Fulcrum demo\n  \
         proxy:     http://{proxy}/        (try: curl -i http://{proxy}/)\n  \
         dashboard: http://{admin}/\n  \
         admin API: http://{admin}/api/v1/pools   (or: fulcrum ctl --admin http://{admin} pools)\n  \
         metrics:   http://{admin}/metrics\n"
    );
    for b in backends {
        s.push_str(&format!("  {}: http://{}/\n", b.name, b.addr));
    }
    s.push_str(&format!(
        "\nOne route per balancing strategy (backend-3 is the slow one: {} per answer;\n\
         add ?delay=MS to any request to make it slower):\n",
        format_duration(SLOW_BY)
    ));
    let url = |path: &str| format!("http://{proxy}{path}");
    for (path, _, what) in STRATEGY_ROUTES {
        let lp = match path {
            "/balanced-least" => format!(
                "curl -s '{u}?delay=3000' & curl -s '{u}?delay=3000' & sleep 0.5; curl -s {u}; wait",
                u = url(path)
            ),
            "/balanced-ip" => format!(
                "for ip in 203.0.113.1 203.0.113.2 203.0.113.3; do for i in 1 2; do echo \"$ip: $(curl -s -H \"X-Forwarded-For: $ip\" {})\"; done; done",
                url(path)
            ),
            "/balanced" => format!("for i in 1 2 3 4 5 6; do curl -s {}; done", url(path)),
            _ => format!("for i in $(seq 10); do curl -s {}; done", url(path)),
        };
        s.push_str(&format!("  {path:<19} {what}\n      {lp}\n"));
    }
    s.push_str(&format!(
        "  {:<19} backend-2, and backup while backend-2 is down\n      \
         while sleep 1; do echo \"$(date +%T) $(curl -s {})\"; done\n\n",
        "/failover",
        url("/failover")
    ));
    s.push_str(&format!(
        "Every {}, backend-2 crashes for {} and comes back: watch it leave and rejoin the\n\
         rotation, and /failover move to backup and return {} after backend-2 is healthy.\n\
         The demo sends itself 5 requests a second on / and on /failover and prints who\n\
         answered. Ctrl-C stops everything.\n\n",
        format_duration(args.fail_every),
        format_duration(args.fail_for),
        format_duration(recovery)
    ));
    s
}

/// Prints health events of the `/` pool and failover events of `/failover`, naming
/// backends as the demo does.
async fn print_events(app: Arc<Supervisor>, names: HashMap<String, String>) {
    let mut rx = app.subscribe_events();
    loop {
        match rx.recv().await {
            Ok(e) => {
                let who = e
                    .backend
                    .as_ref()
                    .and_then(|b| names.get(b))
                    .cloned()
                    .unwrap_or_default();
                let what = match (e.pool.as_deref(), e.kind) {
                    (Some("demo"), EventKind::BackendDown) => {
                        format!("{who} left the rotation ({})", e.message)
                    }
                    (Some("demo"), EventKind::BackendUp) => {
                        format!("{who} rejoined the rotation ({})", e.message)
                    }
                    (Some("demo"), EventKind::BackendEjected) => {
                        format!("{who} taken out by passive health ({})", e.message)
                    }
                    (Some("failover"), EventKind::FailoverActivated) => format!(
                        "/failover: backend-2 is down, traffic moved to backup ({})",
                        e.message
                    ),
                    (Some("failover"), EventKind::FailoverRecovered) => format!(
                        "/failover: backend-2 is back, traffic returned to it ({})",
                        e.message
                    ),
                    _ => continue,
                };
                println!("[fulcrum] {what}");
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        }
    }
}

/// Who answered on one path over the last period.
#[derive(Default)]
struct Tally {
    counts: HashMap<String, u64>,
    errors: u64,
}

impl Tally {
    fn add(&mut self, who: Option<String>) {
        match who {
            Some(name) => *self.counts.entry(name).or_insert(0) += 1,
            None => self.errors += 1,
        }
    }

    /// `backend-1=8 backend-2=9 errors=0`, and starts over.
    fn take(&mut self) -> String {
        let mut parts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.sort();
        parts.push(format!("errors={}", self.errors));
        *self = Tally::default();
        parts.join(" ")
    }
}

/// Light traffic through the proxy on `/` and `/failover`, summarised every 5 seconds.
async fn traffic(proxy: SocketAddr) {
    let (mut root, mut failover) = (Tally::default(), Tally::default());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        let (a, b) = tokio::join!(one_request(proxy, "/"), one_request(proxy, "/failover"));
        root.add(a);
        failover.add(b);
        n += 1;
        if n.is_multiple_of(25) {
            println!("[traffic] last 5s: {}", root.take());
            println!("[traffic] /failover last 5s: {}", failover.take());
        }
    }
}

async fn one_request(proxy: SocketAddr, path: &str) -> Option<String> {
    let stream = tokio::net::TcpStream::connect(proxy).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
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
