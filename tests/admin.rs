//! The admin API, metrics and `fulcrum ctl` against the real binary.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use testkit::backend::{TestBackend, full};
use testkit::client::{self, Resp};
use testkit::{Fulcrum, eventually};

async fn call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Resp {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    client::send(
        admin,
        req.body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .unwrap(),
    )
    .await
}

fn base(pools: &str, routes: &str) -> String {
    format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\naccess_log: {{ enabled: false }}\npools:\n{pools}routes:\n{routes}"
    )
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_config_pools_and_errors() {
    let a = TestBackend::echo("a").await;
    let f = Fulcrum::start(&base(
        &format!("  - name: web\n    backends: [\"{}\"]\n", a.addr),
        "  - { host: shop.test, pool: web }\n",
    ));
    let admin = f.admin();
    let s = call(admin, "GET", "/api/v1/status", None, None).await;
    assert_eq!(s.status, StatusCode::OK);
    let v = s.json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["generation"], 1);
    assert_eq!(v["cluster_role"], "standalone");
    assert_eq!(v["listeners"][0]["address"], f.listener(0).to_string());

    let c = call(admin, "GET", "/api/v1/config", None, None)
        .await
        .json();
    assert_eq!(c["config"]["pools"][0]["name"], "web");
    assert_eq!(c["config"]["routes"][0]["host"], "shop.test");

    let pools = call(admin, "GET", "/api/v1/pools", None, None).await.json();
    let b = &pools[0]["backends"][0];
    assert_eq!(b["address"], a.addr.to_string());
    assert_eq!(b["state"], "up");
    for k in [
        "healthy",
        "failover_level",
        "weight",
        "in_flight",
        "requests",
        "failures",
        "latency_ms",
    ] {
        assert!(b.get(k).is_some(), "backend JSON lacks {k}: {b}");
    }
    assert_eq!(
        call(admin, "GET", "/api/v1/pools/web", None, None)
            .await
            .json()["name"],
        "web"
    );

    for (method, path, code) in [
        ("GET", "/api/v1/pools/nope", 404),
        ("POST", "/api/v1/pools/nope/backends/1.2.3.4:5/drain", 404),
        ("POST", "/api/v1/pools/web/backends/9.9.9.9:9/drain", 404),
        ("DELETE", "/api/v1/pools/web/backends/9.9.9.9:9", 404),
        ("GET", "/api/v1/nothing", 404),
        ("DELETE", "/api/v1/status", 405),
    ] {
        let r = call(admin, method, path, None, None).await;
        assert_eq!(r.status.as_u16(), code, "{method} {path}: {}", r.text());
        assert!(
            r.json()["error"].is_string(),
            "errors are JSON: {}",
            r.text()
        );
    }
    let bad = call(
        admin,
        "POST",
        "/api/v1/pools/web/backends",
        None,
        Some("{not json"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = call(
        admin,
        "POST",
        "/api/v1/pools/web/backends",
        None,
        Some(r#"{"address": "nope:port"}"#),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let dup = call(
        admin,
        "POST",
        "/api/v1/pools/web/backends",
        None,
        Some(&format!(r#"{{"address": "{}"}}"#, a.addr)),
    )
    .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth() {
    let a = TestBackend::echo("a").await;
    let cfg = format!(
        "admin: {{ address: \"127.0.0.1:0\", token: \"s3cret\" }}\n{}",
        base(
            &format!("  - name: web\n    backends: [\"{}\"]\n", a.addr),
            "  - { pool: web }\n"
        )
    );
    let f = Fulcrum::start(&cfg);
    let admin = f.admin();
    for path in ["/api/v1/status", "/api/v1/pools", "/metrics"] {
        assert_eq!(
            call(admin, "GET", path, None, None).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            call(admin, "GET", path, Some("wrong"), None).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            call(admin, "GET", path, Some("s3cret"), None).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    // The page itself holds no data; its API calls need the token.
    assert_eq!(
        call(admin, "GET", "/", None, None).await.status,
        StatusCode::OK
    );
    // Secrets are redacted from GET /config.
    let c = call(admin, "GET", "/api/v1/config", Some("s3cret"), None).await;
    assert!(!c.text().contains("s3cret"), "{}", c.text());
    assert_eq!(c.json()["config"]["admin"]["token"], "<redacted>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_config_applies_or_rejects_with_all_errors() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&base(
        &format!("  - name: web\n    backends: [\"{}\"]\n", a.addr),
        "  - { pool: web }\n",
    ));
    let (admin, addr) = (f.admin(), f.listener(0));
    // Invalid: 400 with every error, traffic unaffected.
    let bad = format!(
        "{}pools:\n  - name: web\n    backends: [\"{}\"]\n    bogus: 1\nroutes:\n  - {{ pool: missing }}\n",
        "admin: { address: \"127.0.0.1:0\" }\nlisteners: [\"127.0.0.1:0\"]\n", b.addr
    );
    let r = call(admin, "PUT", "/api/v1/config", None, Some(&bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let errors: Vec<String> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("api:6:5: unknown key `bogus`")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("unknown pool `missing`")),
        "{errors:?}"
    );
    assert_eq!(
        client::get(addr, "/").await.header("x-backend").as_deref(),
        Some("a")
    );
    let r = call(admin, "PUT", "/api/v1/config", None, Some("pools: [\n")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Valid YAML: applied atomically.
    let good = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners: [\"127.0.0.1:0\"]\naccess_log: {{ enabled: false }}\npools:\n  - name: web\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: web }}\n",
        b.addr
    );
    let r = call(admin, "PUT", "/api/v1/config", None, Some(&good)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["generation"], 2);
    assert_eq!(
        client::get(addr, "/").await.header("x-backend").as_deref(),
        Some("b")
    );
    // Valid JSON too.
    let json = format!(
        r#"{{"admin": {{"address": "127.0.0.1:0"}}, "listeners": ["127.0.0.1:0"], "pools": [{{"name": "web", "backends": ["{}"]}}], "routes": [{{"pool": "web"}}]}}"#,
        a.addr
    );
    let r = call(admin, "PUT", "/api/v1/config", None, Some(&json)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        client::get(addr, "/").await.header("x-backend").as_deref(),
        Some("a")
    );
    // POST /reload goes back to the file.
    f.rewrite_config(&base(
        &format!("  - name: web\n    backends: [\"{}\"]\n", b.addr),
        "  - { pool: web }\n",
    ));
    let r = call(admin, "POST", "/api/v1/reload", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        client::get(addr, "/").await.header("x-backend").as_deref(),
        Some("b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_backends_under_traffic() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&base(
        &format!("  - name: web\n    backends: [\"{}\"]\n", a.addr),
        "  - { pool: web }\n",
    ));
    let (admin, addr) = (f.admin(), f.listener(0));
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let load = tokio::spawn(async move {
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..20_000 {
            if s2.load(Ordering::SeqCst) {
                break;
            }
            match client::try_send(
                addr,
                Request::get("/")
                    .header("host", "x")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            {
                Ok(r) if r.status == StatusCode::OK => ok += 1,
                _ => bad += 1,
            }
        }
        (ok, bad)
    });
    let r = call(
        admin,
        "POST",
        "/api/v1/pools/web/backends",
        None,
        Some(&format!(r#"{{"address": "{}", "weight": 2}}"#, b.addr)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["weight"], 2);
    eventually("b to get traffic", || async {
        (b.hits() > 0).then_some(())
    })
    .await;
    // A runtime change survives a reload of the unchanged file, and says so.
    f.signal(libc::SIGHUP);
    f.stderr.wait_for("reload", |l| {
        l.contains("configuration applied") && l.contains("\"generation\":3")
    });
    let c = call(admin, "GET", "/api/v1/config", None, None)
        .await
        .json();
    assert_eq!(
        c["runtime_changes"]["added_backends"][0]["backend"]["address"],
        b.addr.to_string()
    );
    assert_eq!(
        c["config"]["pools"][0]["backends"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = call(
        admin,
        "DELETE",
        &format!("/api/v1/pools/web/backends/{}", a.addr),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let before = a.hits();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, bad) = load.await.unwrap();
    assert!(ok > 0);
    assert_eq!(
        bad, 0,
        "requests failed while backends were added and removed"
    );
    assert!(
        a.hits() <= before + 1,
        "a removed backend kept getting traffic"
    );
    let pools = call(admin, "GET", "/api/v1/pools/web", None, None)
        .await
        .json();
    assert_eq!(pools["backends"].as_array().unwrap().len(), 1);
}

/// A backend whose `/slow` waits for the test and whose `/health` can be failed.
async fn controllable(
    name: &'static str,
) -> (TestBackend, Arc<tokio::sync::Notify>, Arc<AtomicBool>) {
    let gate = Arc::new(tokio::sync::Notify::new());
    let healthy = Arc::new(AtomicBool::new(true));
    let (g, h) = (gate.clone(), healthy.clone());
    let be = TestBackend::start(Arc::new(move |req: Request<Incoming>| {
        let (g, h) = (g.clone(), h.clone());
        Box::pin(async move {
            if req.uri().path() == "/slow" {
                g.notified().await;
            }
            let status = if req.uri().path() == "/health" && !h.load(Ordering::SeqCst) {
                503
            } else {
                200
            };
            Response::builder()
                .status(status)
                .header("x-backend", name)
                .body(full(name))
                .unwrap()
        })
    }))
    .await;
    (be, gate, healthy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_in_flight_and_enable_needs_a_passing_check() {
    let (a, gate, a_ok) = controllable("a").await;
    let (b, _, _) = controllable("b").await;
    let f = Fulcrum::start(&base(
        &format!(
            "  - name: web\n    algorithm: failover\n    backends: [\"{}\", \"{}\"]\n    health_check: {{ path: /health, interval: 100ms, timeout: 90ms }}\n",
            a.addr, b.addr
        ),
        "  - { pool: web }\n",
    ));
    let (admin, addr) = (f.admin(), f.listener(0));
    let slow = tokio::spawn(async move { client::get(addr, "/slow").await });
    eventually("the slow request on a", || async {
        (a.saw("/slow") >= 1).then_some(())
    })
    .await;
    let r = call(
        admin,
        "POST",
        &format!("/api/v1/pools/web/backends/{}/drain", a.addr),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "draining");
    assert_eq!(
        r.json()["in_flight"],
        1,
        "the API shows what is still in flight"
    );
    // New requests avoid the draining backend.
    for _ in 0..5 {
        assert_eq!(
            client::get(addr, "/").await.header("x-backend").as_deref(),
            Some("b")
        );
    }
    gate.notify_one();
    let done = slow.await.unwrap();
    assert_eq!(
        done.status,
        StatusCode::OK,
        "the in-flight request finished"
    );
    let pool = call(admin, "GET", "/api/v1/pools/web", None, None)
        .await
        .json();
    assert_eq!(pool["backends"][0]["in_flight"], 0);

    // Enable while its check fails: it stays out until the check passes.
    a_ok.store(false, Ordering::SeqCst);
    f.stderr
        .wait_for("a down", |l| l.contains("backend is down"));
    let r = call(
        admin,
        "POST",
        &format!("/api/v1/pools/web/backends/{}/enable", a.addr),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["state"], "down");
    assert_eq!(
        client::get(addr, "/").await.header("x-backend").as_deref(),
        Some("b")
    );
    a_ok.store(true, Ordering::SeqCst);
    eventually("a back in rotation", || async {
        (client::get(addr, "/").await.header("x-backend").as_deref() == Some("a")).then_some(())
    })
    .await;
    let pool = call(admin, "GET", "/api/v1/pools/web", None, None)
        .await
        .json();
    assert_eq!(pool["backends"][0]["state"], "up");

    // Disable takes it out at once.
    call(
        admin,
        "POST",
        &format!("/api/v1/pools/web/backends/{}/disable", a.addr),
        None,
        None,
    )
    .await;
    assert_eq!(
        client::get(addr, "/").await.header("x-backend").as_deref(),
        Some("b")
    );
    let events = call(admin, "GET", "/api/v1/events", None, None)
        .await
        .json();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "backend.draining",
        "backend.enabling",
        "backend.enabled",
        "backend.disabled",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_traffic_sent() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&base(
        &format!(
            "  - name: web\n    backends: [\"{}\"]\n  - name: api\n    backends: [\"{}\"]\n",
            a.addr, b.addr
        ),
        "  - { name: site, pool: web }\n  - { name: rest, path_prefix: /api, pool: api }\n",
    ));
    let (admin, addr) = (f.admin(), f.listener(0));
    for _ in 0..7 {
        client::get(addr, "/").await;
    }
    for _ in 0..3 {
        client::get(addr, "/api/x").await;
    }
    let text = call(admin, "GET", "/metrics", None, None).await.text();
    let a_label = a.addr.to_string();
    let b_label = b.addr.to_string();
    assert_eq!(
        metric(
            &text,
            "fulcrum_requests_total",
            &[
                ("route", "site"),
                ("pool", "web"),
                ("backend", &a_label),
                ("code", "200")
            ]
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "fulcrum_requests_total",
            &[("route", "rest"), ("backend", &b_label)]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "fulcrum_request_duration_seconds_count",
            &[("route", "site")]
        ),
        Some(7.0)
    );
    assert_eq!(
        metric(
            &text,
            "fulcrum_backend_up",
            &[("pool", "web"), ("backend", &a_label)]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "fulcrum_backend_in_flight", &[("backend", &a_label)]),
        Some(0.0)
    );
    assert!(
        text.contains("fulcrum_retries_total{pool=\"web\"} 0"),
        "{text}"
    );
    assert!(text.contains("# TYPE fulcrum_health_check_failures_total counter"));
    // A removed backend's label sets disappear.
    call(
        admin,
        "DELETE",
        &format!("/api/v1/pools/api/backends/{b_label}"),
        None,
        None,
    )
    .await;
    let text = call(admin, "GET", "/metrics", None, None).await.text();
    assert!(!text.contains(&b_label), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drives_every_endpoint() {
    let a = TestBackend::echo("a").await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&base(
        &format!("  - name: web\n    backends: [\"{}\"]\n", a.addr),
        "  - { pool: web }\n",
    ));
    let admin = format!("http://{}", f.admin());
    let ctl = |args: &[&str]| {
        let out = testkit::ctl(&[&["--admin", admin.as_str()], args].concat());
        (out.ok, out.stdout, out.stderr)
    };
    let (ok, out, err) = ctl(&["status"]);
    assert!(ok && out.contains("generation 1"), "{out}{err}");
    let (ok, out, _) = ctl(&["pools"]);
    assert!(
        ok && out.contains(&a.addr.to_string()) && out.contains("STATE"),
        "{out}"
    );
    let (ok, out, err) = ctl(&["add", "web", &b.addr.to_string(), "--weight", "3"]);
    assert!(ok && out.contains(&b.addr.to_string()), "{out}{err}");
    let (ok, out, _) = ctl(&["drain", "web", &b.addr.to_string()]);
    assert!(ok && out.contains("draining"), "{out}");
    let (ok, out, _) = ctl(&["--json", "pools", "web"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && v["backends"][1]["state"] == "draining", "{out}");
    let (ok, _, _) = ctl(&["enable", "web", &b.addr.to_string()]);
    assert!(ok);
    let (ok, _, _) = ctl(&["remove", "web", &b.addr.to_string()]);
    assert!(ok);
    let (ok, out, _) = ctl(&["events"]);
    assert!(ok && out.contains("backend.removed"), "{out}");
    let (ok, out, _) = ctl(&["reload"]);
    assert!(ok && out.contains("generation"), "{out}");
    let (ok, out, _) = ctl(&["config"]);
    assert!(ok && out.contains("runtime_changes"), "{out}");
    let (ok, _, err) = ctl(&["drain", "web", "10.9.9.9:1"]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = ctl(&["failover", "activate", "web"]);
    assert!(!ok && err.contains("no backup level"), "{err}");
}
