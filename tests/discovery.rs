//! Docker discovery against the real engine: containers built from a test image
//! (a static std-only server in a `FROM scratch` image) are routed, balanced,
//! drained and removed as they start, get healthy, stop and go. Each test skips
//! with a line saying so when no engine answers.

use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use testkit::client::{self, Resp};
use testkit::docker::{Scope, docker};
use testkit::{Fulcrum, eventually};

fn config(docker: &str) -> String {
    format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\naccess_log: {{ enabled: false }}\ndiscovery:\n  docker:\n{docker}"
    )
}

async fn get(f: SocketAddr, host: &str, path: &str) -> Resp {
    client::get_host(f, host, path).await
}

async fn api(f: &Fulcrum, path: &str) -> Value {
    client::get(f.admin(), path).await.json()
}

/// Waits until `host` answers with `status` (and, if given, a body starting
/// with `body`).
async fn until(f: SocketAddr, host: &str, path: &str, status: u16, body: Option<&str>) -> Resp {
    eventually(
        &format!("{host}{path} to answer {status} {body:?}"),
        || async {
            let r = get(f, host, path).await;
            (r.status.as_u16() == status && body.is_none_or(|b| r.text().starts_with(b)))
                .then_some(r)
        },
    )
    .await
}

/// The names that answer `n` requests.
async fn names(f: SocketAddr, host: &str, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        let r = get(f, host, "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        seen.insert(r.text().split(' ').next().unwrap_or_default().to_string());
    }
    seen
}

/// A sample's value (the first line of that name without labels).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The discovery API's entry for one container.
async fn container(f: &Fulcrum, name: &str) -> Option<Value> {
    let v = api(f, "/api/v1/discovery").await;
    v["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_proxy_variables_route_balance_and_remove() {
    if !testkit::docker::engine_or_skip() {
        return;
    }
    let s = Scope::new("nginx");
    let (h1, h2, h3) = (s.host("one"), s.host("two"), s.host("three"));
    let vhost = format!("VIRTUAL_HOST={h1}, ,{h2}");
    let img = s.images.plain.clone();
    // One replica predates Fulcrum.
    let env = [
        "-e",
        &vhost,
        "-e",
        "PORTS=8080,9000",
        "-e",
        "VIRTUAL_PORT=9000",
    ];
    s.run("r1", &env, &img);
    let f = Fulcrum::start(&config("    resync_interval: 30s\n"));
    let addr = f.listener(0);
    let r = until(addr, &h1, "/", 200, None).await;
    assert_eq!(r.text(), "r1 9000 /", "VIRTUAL_PORT picks the port");
    s.run("r2", &env, &img);
    s.run("r3", &env, &img);
    // Three replicas of one host share its pool; the second host of the list too.
    eventually("three replicas in the pool", || async {
        (names(addr, &h1, 12).await.len() == 3).then_some(())
    })
    .await;
    assert_eq!(names(addr, &h2, 9).await.len(), 3);
    // VIRTUAL_PATH + VIRTUAL_DEST: the path prefix is replaced by `/`.
    let path_env = format!("VIRTUAL_HOST={h3}");
    s.run(
        "p",
        &[
            "-e",
            &path_env,
            "-e",
            "VIRTUAL_PATH=/api",
            "-e",
            "VIRTUAL_DEST=/",
        ],
        &img,
    );
    let r = until(addr, &h3, "/api/items", 200, None).await;
    assert_eq!(r.text(), "p 8080 /items");
    assert_eq!(get(addr, &h3, "/other").await.status, 404);
    // The admin API tells discovered pools and backends apart.
    let pools = api(&f, "/api/v1/pools").await;
    let pool = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == format!("docker-{h1}"))
        .expect("the discovered pool")
        .clone();
    assert_eq!(pool["source"], "docker");
    let b = &pool["backends"][0];
    assert_eq!(b["source"], "docker");
    assert!(
        b["container"]["name"]
            .as_str()
            .unwrap()
            .starts_with(&s.name)
    );
    assert_eq!(b["container"]["id"].as_str().unwrap().len(), 64);
    let c = container(&f, &format!("{}-r1", s.name)).await.unwrap();
    assert_eq!(c["verdict"], "routed");
    assert_eq!(c["state"], "eligible");
    let d = api(&f, "/api/v1/discovery").await;
    assert_eq!(d["engine"]["connected"], true);
    assert!(
        d["engine"]["api_version"]
            .as_str()
            .unwrap()
            .starts_with("1.")
    );
    let m = client::get(f.admin(), "/metrics").await.text();
    assert_eq!(metric(&m, "fulcrum_discovery_connected"), Some(1.0), "{m}");
    assert!(metric(&m, "fulcrum_discovery_events_total").unwrap() > 0.0);
    // Once no container runs, the hosts are gone.
    for n in ["r1", "r2", "r3"] {
        docker(&["rm", "-f", &format!("{}-{n}", s.name)]);
    }
    until(addr, &h1, "/", 404, None).await;
    until(addr, &h2, "/", 404, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthchecks_gate_traffic_and_a_stop_loses_no_request() {
    if !testkit::docker::engine_or_skip() {
        return;
    }
    let s = Scope::new("health");
    let h = s.host("app");
    let vhost = format!("VIRTUAL_HOST={h}");
    let f = Fulcrum::start(&config("    resync_interval: 30s\n"));
    let addr = f.listener(0);
    // Declared but starting (its HEALTHCHECK has not passed): 503, not 404.
    let a = s.run(
        "a",
        &[
            "-e",
            &vhost,
            "-e",
            "START_SICK=1",
            "-e",
            "STOP_GRACE_MS=3000",
            "--health-start-period=60s",
        ],
        &s.images.checked,
    );
    until(addr, &h, "/", 503, None).await;
    assert_eq!(container(&f, &a).await.unwrap()["state"], "starting");
    docker(&["exec", &a, "/srv", "heal"]);
    until(addr, &h, "/", 200, Some("a ")).await;
    let b = s.run(
        "b",
        &["-e", &vhost, "-e", "STOP_GRACE_MS=3000", "--no-healthcheck"],
        &s.images.plain,
    );
    eventually("both serving", || async {
        (names(addr, &h, 6).await.len() == 2).then_some(())
    })
    .await;
    // Unhealthy: out of the pool.
    docker(&["exec", &a, "/srv", "sick"]);
    eventually("a unhealthy", || async {
        let st = container(&f, &a).await?;
        (st["state"] == "unhealthy").then_some(())
    })
    .await;
    assert_eq!(names(addr, &h, 6).await, HashSet::from(["b".to_string()]));
    docker(&["exec", &a, "/srv", "heal"]);
    eventually("both serving again", || async {
        (names(addr, &h, 6).await.len() == 2).then_some(())
    })
    .await;
    // `docker stop` of one replica under continuous load: no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, failed, ok, h) = (stop.clone(), failed.clone(), ok.clone(), h.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client::try_send(addr, req(&h)).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || docker(&["stop", "-t", "10", &b2]))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during docker stop"
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    assert_eq!(names(addr, &h, 4).await, HashSet::from(["a".to_string()]));
    // The last one stopped: gone.
    docker(&["rm", "-f", &a]);
    until(addr, &h, "/", 404, None).await;
}

fn req(host: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::get("/")
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_labels_compose_pools_and_failover_levels() {
    if !testkit::docker::engine_or_skip() {
        return;
    }
    let s = Scope::new("traefik");
    let (h, lv) = (s.host("t"), s.host("levels"));
    let file_host = s.host("file");
    let f = Fulcrum::start(&format!(
        "{}pools:\n  - {{ name: file, backends: [\"127.0.0.1:9\"] }}\nroutes:\n  - {{ host: {file_host}, pool: file }}\n",
        config("    resync_interval: 30s\n")
    ));
    let addr = f.listener(0);
    // A file route wins over a container declaring the same host.
    let env = format!("VIRTUAL_HOST={file_host}");
    s.run("shadowed", &["-e", &env], &s.images.plain);
    f.stderr.wait_for("the file route wins", |l| {
        l.contains(&format!("route {file_host}/")) && l.contains("which wins")
    });
    let rule = format!("traefik.http.routers.web.rule=Host(`{h}`) && PathPrefix(`/t`)");
    let project = format!("com.docker.compose.project={}", s.name);
    for n in ["w1", "w2"] {
        s.run(
            n,
            &[
                "-l",
                &rule,
                "-l",
                "traefik.http.services.web.loadbalancer.server.port=9000",
                "-l",
                &project,
                "-l",
                "com.docker.compose.service=web",
                "-e",
                "PORTS=8080,9000",
            ],
            &s.images.plain,
        );
    }
    until(addr, &h, "/t/x", 200, None).await;
    assert_eq!(get(addr, &h, "/").await.status, 404, "only /t is routed");
    let pool = format!("docker-{}-web", s.name);
    eventually("both replicas in the compose service's pool", || async {
        let p = api(&f, &format!("/api/v1/pools/{pool}")).await;
        (p["backends"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let r = get(addr, &h, "/t/x").await;
    assert!(r.text().ends_with(" 9000 /t/x"), "{}", r.text());
    // fulcrum.level: the backup gets traffic only once the primary is gone.
    let host = format!("fulcrum.host={lv}");
    let primary = s.run("primary", &["-l", &host], &s.images.plain);
    s.run(
        "backup",
        &["-l", &host, "-l", "fulcrum.level=1"],
        &s.images.plain,
    );
    until(addr, &lv, "/", 200, None).await;
    eventually("backup discovered", || async {
        let p = api(&f, &format!("/api/v1/pools/docker-{lv}")).await;
        (p["backends"].as_array()?.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        names(addr, &lv, 6).await,
        HashSet::from(["primary".to_string()])
    );
    docker(&["rm", "-f", &primary]);
    until(addr, &lv, "/", 200, Some("backup ")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_in_and_the_configured_network_survive_a_restart() {
    if !testkit::docker::engine_or_skip() {
        return;
    }
    let s = Scope::new("net");
    let (front, back) = (s.network("front"), s.network("back"));
    let (h_on, h_off) = (s.host("on"), s.host("off"));
    let f = Fulcrum::start(&config(&format!(
        "    exposed_by_default: false\n    network: {back}\n"
    )));
    let addr = f.listener(0);
    let on_env = format!("VIRTUAL_HOST={h_on}");
    let off_env = format!("VIRTUAL_HOST={h_off}");
    let on = s.run(
        "on",
        &[
            "-e",
            &on_env,
            "-l",
            "fulcrum.enable=true",
            "--network",
            &front,
        ],
        &s.images.plain,
    );
    docker(&["network", "connect", &back, &on]);
    let off = s.run(
        "off",
        &["-e", &off_env, "--network", &back],
        &s.images.plain,
    );
    until(addr, &h_on, "/", 200, Some("on ")).await;
    let st = container(&f, &on).await.unwrap();
    assert_eq!(st["address"], format!("{}:8080", s.ip(&on, &back)));
    let st = eventually("the opted-out container listed", || container(&f, &off)).await;
    assert_eq!(st["verdict"], "skipped");
    assert!(
        st["reason"]
            .as_str()
            .unwrap()
            .contains("exposed_by_default")
    );
    assert_eq!(get(addr, &h_off, "/").await.status, 404);
    docker(&["restart", "-t", "0", &on]);
    let ip = s.ip(&on, &back);
    eventually("routed again at its address after the restart", || async {
        let st = container(&f, &on).await?;
        (st["address"] == format!("{ip}:8080") && st["state"] == "eligible").then_some(())
    })
    .await;
    until(addr, &h_on, "/", 200, Some("on ")).await;
    // Paused: still declared, so 503 rather than 404; unpaused: served again.
    // (No request is sent until discovery saw the pause: one sent to a paused
    // process would wait for its response timeout.)
    docker(&["pause", &on]);
    eventually("the pause seen", || async {
        let st = container(&f, &on).await?;
        (st["state"] == "paused").then_some(())
    })
    .await;
    until(addr, &h_on, "/", 503, None).await;
    docker(&["unpause", &on]);
    until(addr, &h_on, "/", 200, Some("on ")).await;
}

/// A Unix socket that forwards to the engine's, and can be cut and resumed.
struct Forwarder {
    path: std::path::PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Forwarder {
    fn start(path: std::path::PathBuf) -> Forwarder {
        let mut f = Forwarder { path, task: None };
        f.resume();
        f
    }

    /// Stops accepting and closes every forwarded connection.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    fn resume(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = tokio::net::UnixListener::bind(&self.path).expect("bind forwarder");
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut a, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut b) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
            }
        }));
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_event_stream_is_resumed_and_resynced() {
    if !testkit::docker::engine_or_skip() {
        return;
    }
    if !std::path::Path::new("/var/run/docker.sock").exists() {
        eprintln!("skipped: the engine is not at /var/run/docker.sock");
        return;
    }
    let s = Scope::new("cut");
    let dir = testkit::TempDir::new("docker-fwd");
    let sock = dir.path("engine.sock");
    let mut fwd = Forwarder::start(sock.clone());
    let (h1, h2) = (s.host("before"), s.host("during"));
    let f = Fulcrum::start(&config(&format!(
        "    endpoint: \"unix://{}\"\n    resync_interval: 30s\n",
        sock.display()
    )));
    let addr = f.listener(0);
    let e1 = format!("VIRTUAL_HOST={h1}");
    let first = s.run("first", &["-e", &e1], &s.images.plain);
    until(addr, &h1, "/", 200, None).await;
    fwd.cut();
    eventually("the engine reported disconnected", || async {
        let d = api(&f, "/api/v1/discovery").await;
        (d["engine"]["connected"] == false).then_some(())
    })
    .await;
    let m = client::get(f.admin(), "/metrics").await.text();
    assert_eq!(metric(&m, "fulcrum_discovery_connected"), Some(0.0), "{m}");
    // While cut: what was known keeps serving; changes wait for the re-list.
    assert_eq!(get(addr, &h1, "/").await.status, 200);
    let e2 = format!("VIRTUAL_HOST={h2}");
    s.run("second", &["-e", &e2], &s.images.plain);
    docker(&["rm", "-f", &first]);
    fwd.resume();
    until(addr, &h2, "/", 200, None).await;
    until(addr, &h1, "/", 404, None).await;
    let d = api(&f, "/api/v1/discovery").await;
    assert_eq!(d["engine"]["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_host_from_a_container_gets_a_certificate() {
    if !testkit::docker::engine_or_skip() {
        return;
    }
    let s = Scope::new("acme");
    let pebble = testkit::pebble::Pebble::start().await;
    let storage = testkit::TempDir::new("docker-acme");
    let h = s.host("secure");
    // `domains` are listed: the container's host joins them.
    let f = Fulcrum::start(&format!(
        "listeners:\n  - address: \"127.0.0.1:{}\"\n  - address: \"127.0.0.1:0\"\n    tls:\n      acme:\n        directory: \"{}\"\n        storage: \"{}\"\n        ca_bundle: \"{}\"\n        challenge: http-01\n        domains: [listed.test]\naccess_log: {{ enabled: false }}\ndiscovery:\n  docker: {{}}\n",
        pebble.http_port,
        pebble.directory,
        storage.0.display(),
        pebble.ca_pem_path.display(),
    ));
    let env = format!("VIRTUAL_HOST={h}");
    let acme = format!("LETSENCRYPT_HOST={h}");
    s.run("secure", &["-e", &env, "-e", &acme], &s.images.plain);
    let deadline = std::time::Instant::now() + testkit::DEADLINE * 3;
    loop {
        let st = api(&f, "/api/v1/status").await;
        let issued = st["certificates"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["issuer"].as_str().unwrap_or("").contains("Pebble")
                    && c["names"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|n| n == h.as_str()))
            })
        });
        if issued {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no certificate for {h}: {st}\n{}",
            f.stderr.all().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
