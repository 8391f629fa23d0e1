//! Load balancing, health checks, retries, hedging and splits, end to end.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::backend::{Handler, TestBackend, full};
use testkit::client;
use testkit::{DEADLINE, Fulcrum};

fn listener() -> &'static str {
    "listeners:\n  - address: \"127.0.0.1:0\"\naccess_log: { enabled: false }\n"
}

/// A pool `app` over `backends` with extra pool keys, and a catch-all route.
fn pool_config(backends: &[String], pool_extra: &str) -> String {
    let list: String = backends.iter().map(|b| format!("      - {b}\n")).collect();
    format!(
        "{}pools:\n  - name: app\n    backends:\n{list}{pool_extra}routes:\n  - {{ path_prefix: /, pool: app }}\n",
        listener()
    )
}

fn addr_list(bs: &[&TestBackend]) -> Vec<String> {
    bs.iter().map(|b| format!("\"{}\"", b.addr)).collect()
}

/// Sends `n` sequential GETs; counts answers per backend name.
async fn spread(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = client::get(addr, "/").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        *counts.entry(r.header("x-backend").unwrap()).or_insert(0) += 1;
    }
    counts
}

fn assert_near(counts: &HashMap<String, usize>, name: &str, ideal: f64) {
    let got = *counts.get(name).unwrap_or(&0) as f64;
    assert!(
        (got - ideal).abs() <= ideal * 0.10,
        "{name}: {got} vs ideal {ideal} (±10%); all: {counts:?}"
    );
}

async fn three() -> (TestBackend, TestBackend, TestBackend) {
    (
        TestBackend::echo("a").await,
        TestBackend::echo("b").await,
        TestBackend::echo("c").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_random_spread_evenly() {
    let (a, b, c) = three().await;
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&a, &b, &c]),
        "    algorithm: round_robin\n",
    ));
    let counts = spread(f.listener(0), 300).await;
    for n in ["a", "b", "c"] {
        assert_near(&counts, n, 100.0);
    }
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&a, &b, &c]),
        "    algorithm: random\n",
    ));
    let counts = spread(f.listener(0), 3000).await;
    for n in ["a", "b", "c"] {
        assert_near(&counts, n, 1000.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_is_smooth() {
    let (a, b, c) = three().await;
    let backends = vec![
        format!("{{ address: \"{}\", weight: 5 }}", a.addr),
        format!("{{ address: \"{}\", weight: 1 }}", b.addr),
        format!("{{ address: \"{}\", weight: 1 }}", c.addr),
    ];
    let f = Fulcrum::start(&pool_config(
        &backends,
        "    algorithm: weighted_round_robin\n",
    ));
    let mut seq = Vec::new();
    for _ in 0..350 {
        seq.push(
            client::get(f.listener(0), "/")
                .await
                .header("x-backend")
                .unwrap(),
        );
    }
    let count = |n: &str| seq.iter().filter(|s| *s == n).count() as f64;
    assert!((count("a") - 250.0).abs() <= 25.0, "{seq:?}");
    assert!(
        (count("b") - 50.0).abs() <= 5.0 && (count("c") - 50.0).abs() <= 5.0,
        "{seq:?}"
    );
    // Smooth: never five of the heavy backend in a row (nginx's a a b a c a a).
    assert!(
        !seq.windows(5).any(|w| w.iter().all(|s| s == "a")),
        "burst of 5 in {seq:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_avoids_a_backend_held_by_slow_requests() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let held = |name: &'static str, gate: Arc<tokio::sync::Notify>| -> Handler {
        Arc::new(move |req: Request<Incoming>| {
            let gate = gate.clone();
            Box::pin(async move {
                if req.uri().path() == "/slow" {
                    gate.notified().await;
                }
                Response::builder()
                    .header("x-backend", name)
                    .body(full(name))
                    .unwrap()
            })
        })
    };
    let a = TestBackend::start(held("a", gate.clone())).await;
    let b = TestBackend::start(held("b", gate.clone())).await;
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&a, &b]),
        "    algorithm: least_conn\n",
    ));
    let addr = f.listener(0);
    // Three slow requests, one at a time: least_conn puts them where they end up.
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(tokio::spawn(
            async move { client::get(addr, "/slow").await },
        ));
        let expected = slow.len();
        testkit::eventually("the slow request to arrive", || async {
            (a.hits() + b.hits() == expected).then_some(())
        })
        .await;
    }
    // One backend now holds 2 and the other 1, or one holds all: the other gets
    // every fast request while they are held.
    let (busy, idle) = if a.hits() >= b.hits() {
        ("a", "b")
    } else {
        ("b", "a")
    };
    let counts = spread(addr, 30).await;
    assert_eq!(
        counts.get(idle).copied().unwrap_or(0),
        30,
        "fast requests went to the busy backend {busy}: {counts:?}"
    );
    gate.notify_waiters();
    for _ in 0..3 {
        gate.notify_waiters();
    }
    for s in slow {
        tokio::time::timeout(DEADLINE, async {
            loop {
                gate.notify_waiters();
                if s.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_and_hash_are_stable_and_consistent() {
    let (a, b, c) = three().await;
    let trusted = "trusted_proxies: [\"127.0.0.0/8\"]\n";
    let f = Fulcrum::start(&format!(
        "{trusted}{}",
        pool_config(&addr_list(&[&a, &b, &c]), "    algorithm: ip_hash\n")
    ));
    let addr = f.listener(0);
    let mut owner = HashMap::new();
    for i in 0..150 {
        let ip = format!("10.0.{}.{}", i / 200, i % 200 + 1);
        for _ in 0..2 {
            let r = client::send(
                addr,
                Request::get("/")
                    .header("host", "x")
                    .header("x-forwarded-for", ip.as_str())
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
            let who = r.header("x-backend").unwrap();
            assert_eq!(
                owner.entry(ip.clone()).or_insert_with(|| who.clone()),
                &who,
                "ip_hash moved {ip}"
            );
        }
    }
    let per: HashMap<&String, usize> = owner.values().fold(HashMap::new(), |mut m, v| {
        *m.entry(v).or_insert(0) += 1;
        m
    });
    assert_eq!(
        per.len(),
        3,
        "every backend should own some clients: {per:?}"
    );

    // hash on a header, then remove backend c: only c's keys move.
    let cfg = |bs: &[&TestBackend]| {
        pool_config(
            &addr_list(bs),
            "    algorithm: hash\n    hash_key: \"header:X-User\"\n",
        )
    };
    let f = Fulcrum::start(&cfg(&[&a, &b, &c]));
    let addr = f.listener(0);
    let user = |u: String| {
        Request::get("/")
            .header("host", "x")
            .header("x-user", u)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mut before = HashMap::new();
    for i in 0..200 {
        let r = client::send(addr, user(format!("user-{i}"))).await;
        before.insert(i, r.header("x-backend").unwrap());
    }
    let on = |n: &str| before.values().filter(|v| *v == n).count();
    for n in ["a", "b", "c"] {
        assert!(
            on(n) > 40,
            "uneven hash split: a={} b={} c={}",
            on("a"),
            on("b"),
            on("c")
        );
    }
    f.rewrite_config(&cfg(&[&a, &b]));
    f.signal(libc::SIGHUP);
    f.stderr
        .wait_for("reload", |l| l.contains("configuration applied"));
    for i in 0..200 {
        let now = client::send(addr, user(format!("user-{i}")))
            .await
            .header("x-backend")
            .unwrap();
        if before[&i] != "c" {
            assert_eq!(
                now, before[&i],
                "key user-{i} moved although its backend stayed"
            );
        } else {
            assert_ne!(now, "c");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_prefers_the_fast_backend() {
    let slow = TestBackend::delayed("slow", Duration::from_millis(40)).await;
    let fast = TestBackend::echo("fast").await;
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&slow, &fast]),
        "    algorithm: p2c_ewma\n",
    ));
    let counts = spread(f.listener(0), 200).await;
    assert!(
        counts.get("fast").copied().unwrap_or(0) >= 180,
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_override_and_failover_algorithm() {
    let (a, b, _c) = three().await;
    let cfg = format!(
        "{}pools:\n  - name: app\n    backends: [\"{}\", \"{}\"]\nroutes:\n  - {{ path_prefix: /, pool: app }}\n  - {{ path_prefix: /primary, pool: app, load_balancing: {{ method: failover }} }}\n",
        listener(),
        a.addr,
        b.addr
    );
    let f = Fulcrum::start(&cfg);
    let addr = f.listener(0);
    let mut primary = HashMap::new();
    for _ in 0..20 {
        *primary
            .entry(
                client::get(addr, "/primary")
                    .await
                    .header("x-backend")
                    .unwrap(),
            )
            .or_insert(0) += 1;
    }
    assert_eq!(
        primary.get("a"),
        Some(&20),
        "failover sends everything to the first backend: {primary:?}"
    );
    let rr = spread(addr, 20).await;
    assert_eq!((rr.get("a"), rr.get("b")), (Some(&10), Some(&10)));
}

/// A backend whose /health answers 200 or 503 as the test flips it.
async fn switchable(name: &'static str) -> (TestBackend, Arc<AtomicBool>) {
    TestBackend::switchable(name, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_check_removes_and_returns_a_backend() {
    let (a, a_ok) = switchable("a").await;
    let (b, _) = switchable("b").await;
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&a, &b]),
        "    health_check: { path: /health, interval: 200ms, timeout: 150ms, unhealthy_threshold: 2, healthy_threshold: 1 }\n",
    ));
    let addr = f.listener(0);
    a_ok.store(false, Ordering::SeqCst);
    let t0 = Instant::now();
    f.stderr
        .wait_for("backend down", |l| l.contains("backend is down"));
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(200 * 2) + Duration::from_secs(3),
        "took {took:?}"
    );
    let counts = spread(addr, 20).await;
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");
    a_ok.store(true, Ordering::SeqCst);
    f.stderr
        .wait_for("backend up", |l| l.contains("backend is up"));
    let counts = spread(addr, 20).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&10), Some(&10)),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_backend_health_check_override_like_the_seed() {
    let (a, a_ok) = switchable("a").await;
    let (b, _) = switchable("b").await;
    let backends = vec![
        format!(
            "{{ address: \"{}\", health_check: {{ path: /health, interval: 150ms, timeout: 100ms, unhealthy_threshold: 1 }} }}",
            a.addr
        ),
        format!("{{ address: \"{}\" }}", b.addr),
    ];
    let f = Fulcrum::start(&pool_config(&backends, ""));
    a_ok.store(false, Ordering::SeqCst);
    f.stderr.wait_for("backend down", |l| {
        l.contains("backend is down") && l.contains(&a.addr.to_string())
    });
    let counts = spread(f.listener(0), 10).await;
    assert_eq!(counts.get("b"), Some(&10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_and_its_expiry() {
    let broken = Arc::new(AtomicBool::new(true));
    let br = broken.clone();
    let a = TestBackend::start(Arc::new(move |_req| {
        let br = br.clone();
        Box::pin(async move {
            let status = if br.load(Ordering::SeqCst) { 500 } else { 200 };
            Response::builder()
                .status(status)
                .header("x-backend", "a")
                .body(full("a"))
                .unwrap()
        })
    }))
    .await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&a, &b]),
        "    passive_health: { max_fails: 2, fail_duration: 1s, unhealthy_status: [\"5xx\"] }\n",
    ));
    let addr = f.listener(0);
    // Round-robin: a answers 500 twice, then is out.
    for _ in 0..4 {
        client::get(addr, "/").await;
    }
    f.stderr
        .wait_for("ejection", |l| l.contains("backend taken out"));
    let hits = a.hits();
    let counts = spread(addr, 10).await;
    assert_eq!(counts.get("b"), Some(&10));
    assert_eq!(a.hits(), hits, "an ejected backend got traffic");
    broken.store(false, Ordering::SeqCst);
    // After fail_duration it takes traffic again.
    testkit::eventually("a back after fail_duration", || async {
        (client::get(addr, "/").await.header("x-backend").as_deref() == Some("a")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_causes_no_client_errors() {
    let b = TestBackend::echo("b").await;
    let dead = testkit::free_addr();
    let f = Fulcrum::start(&pool_config(
        &[format!("\"{dead}\""), format!("\"{}\"", b.addr)],
        "    passive_health: { max_fails: 1000000 }\n",
    ));
    let addr = f.listener(0);
    for i in 0..100 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let r = client::send(
            addr,
            Request::builder()
                .method(method)
                .uri("/")
                .header("host", "x")
                .body(Full::new(Bytes::from_static(b"payload")))
                .unwrap(),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "request {i} ({method}) failed: {}",
            r.text()
        );
        assert_eq!(r.json()["body_len"], 7);
    }
    assert_eq!(b.hits(), 100);
}

/// A raw backend that reads one request (head and Content-Length body) and then
/// closes the connection without answering.
async fn reads_then_drops() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = s2.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            seen.fetch_add(1, Ordering::SeqCst);
                            return; // drop: connection reset without a response
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A failover pool of a backend that reads each request and drops it, then
/// an echo backend; returns the proxy, the dropper's count and the echo.
async fn dropper_then_echo() -> (Fulcrum, Arc<AtomicUsize>, TestBackend) {
    let (dropper, seen) = reads_then_drops().await;
    let b = TestBackend::echo("b").await;
    let f = Fulcrum::start(&pool_config(
        &[format!("\"{dropper}\""), format!("\"{}\"", b.addr)],
        "    algorithm: failover\n    passive_health: { max_fails: 1000000 }\n",
    ));
    (f, seen, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried_after_the_backend_read_it_but_put_is() {
    let (f, seen, b) = dropper_then_echo().await;
    let addr = f.listener(0);
    let body = Bytes::from(vec![b'x'; 10_000]);
    let r = client::send(
        addr,
        Request::post("/")
            .header("host", "x")
            .body(Full::new(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(b.hits(), 0, "a POST was sent twice");
    // PUT is idempotent: retried on the next backend with the body replayed intact.
    let r = client::send(
        addr,
        Request::put("/")
            .header("host", "x")
            .body(Full::new(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["body_len"], 10_000);
    assert_eq!(r.json()["body_sum"], testkit::backend::checksum(&body));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

/// A bodiless GET that a backend read and dropped goes to the next backend
/// as it was first sent: the same request ID and forwarding fields, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_retried_after_the_backend_read_it_is_sent_whole_again() {
    let (f, seen, b) = dropper_then_echo().await;
    let addr = f.listener(0);
    for i in 1..=3 {
        let r = client::get_host(addr, "x", "/again").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(seen.load(Ordering::SeqCst), i);
        let last = b.last();
        assert_eq!(last.uri, "/again");
        last.has_each_once(
            &[
                ("host", "x".to_string()),
                ("x-forwarded-for", "127.0.0.1".to_string()),
                ("forwarded", "for=127.0.0.1;proto=http;host=x".to_string()),
                ("via", "1.1 fulcrum".to_string()),
                ("x-request-id", r.header("x-request-id").expect("an ID")),
            ],
            "retried",
        );
    }
    assert_eq!(b.hits(), 3);
}

/// A small PUT, whose head is encoded once with its body's length, is sent
/// again as it was: the same fields once each, and the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_put_retried_after_the_backend_read_it_is_sent_whole_again() {
    let (f, seen, b) = dropper_then_echo().await;
    let addr = f.listener(0);
    let body = Bytes::from_static(b"{\"small\":true}");
    for i in 1..=3 {
        let r = client::send(
            addr,
            Request::put("/again")
                .header("host", "x")
                .body(Full::new(body.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["body_len"], body.len());
        assert_eq!(r.json()["body_sum"], testkit::backend::checksum(&body));
        assert_eq!(seen.load(Ordering::SeqCst), i);
        let last = b.last();
        last.has_each_once(
            &[
                ("host", "x".to_string()),
                ("content-length", body.len().to_string()),
                ("x-forwarded-for", "127.0.0.1".to_string()),
                ("forwarded", "for=127.0.0.1;proto=http;host=x".to_string()),
                ("via", "1.1 fulcrum".to_string()),
                ("x-request-id", r.header("x-request-id").expect("an ID")),
            ],
            "retried",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_spreads_over_backends_that_all_look_down() {
    let (a, a_ok) = switchable("a").await;
    let (b, b_ok) = switchable("b").await;
    a_ok.store(false, Ordering::SeqCst);
    b_ok.store(false, Ordering::SeqCst);
    let hc = "    health_check: { path: /health, interval: 100ms, timeout: 90ms, unhealthy_threshold: 1 }\n    retries: { try_duration: 0s }\n";
    let open = Fulcrum::start(&pool_config(
        &addr_list(&[&a, &b]),
        &format!("{hc}    fail_open: true\n"),
    ));
    let closed = Fulcrum::start(&pool_config(&addr_list(&[&a, &b]), hc));
    for f in [&open, &closed] {
        testkit::eventually("both down", || async {
            (f.stderr.count(|l| l.contains("backend is down")) == 2).then_some(())
        })
        .await;
    }
    assert_eq!(
        client::get(closed.listener(0), "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let counts = spread(open.listener(0), 10).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&5), Some(&5)),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_returning_backend() {
    let (a, a_ok) = switchable("a").await;
    let (b, _) = switchable("b").await;
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&a, &b]),
        "    slow_start: 4s\n    health_check: { path: /health, interval: 100ms, timeout: 90ms, unhealthy_threshold: 1 }\n",
    ));
    let addr = f.listener(0);
    a_ok.store(false, Ordering::SeqCst);
    f.stderr.wait_for("down", |l| l.contains("backend is down"));
    a_ok.store(true, Ordering::SeqCst);
    f.stderr.wait_for("up", |l| l.contains("backend is up"));
    let early = Instant::now();
    let first = spread(addr, 100).await;
    let early_share = first.get("a").copied().unwrap_or(0);
    if early.elapsed() < Duration::from_secs(1) {
        // Less than a quarter of the ramp: a share far below the even 50.
        assert!(
            early_share < 30,
            "no ramp: a got {early_share}/100 right after returning"
        );
    }
    testkit::eventually("the ramp to end", || async {
        let c = spread(addr, 100).await;
        let share = c.get("a").copied().unwrap_or(0);
        (40..=60).contains(&share).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_ratio_and_stickiness() {
    let v1 = TestBackend::echo("v1").await;
    let v2 = TestBackend::echo("v2").await;
    let cfg = format!(
        "{}pools:\n  - {{ name: app-v1, backends: [\"{}\"] }}\n  - {{ name: app-v2, backends: [\"{}\"] }}\nroutes:\n  - path_prefix: /\n    split:\n      - {{ pool: app-v1, weight: 80 }}\n      - {{ pool: app-v2, weight: 20 }}\n  - path_prefix: /sticky\n    sticky: true\n    split:\n      - {{ pool: app-v1, weight: 50 }}\n      - {{ pool: app-v2, weight: 50 }}\n",
        listener(),
        v1.addr,
        v2.addr
    );
    let f = Fulcrum::start(&cfg);
    let addr = f.listener(0);
    let counts = spread(addr, 1000).await;
    let v1n = counts.get("v1").copied().unwrap_or(0) as i64;
    assert!((v1n - 800).abs() <= 50, "80/20 split gave {counts:?}");

    let first = client::get(addr, "/sticky").await;
    let cookie = first
        .header("set-cookie")
        .expect("sticky split sets a cookie");
    let pair = cookie.split(';').next().unwrap().to_string();
    let variant = first.header("x-backend").unwrap();
    for _ in 0..30 {
        let r = client::send(
            addr,
            Request::get("/sticky")
                .header("host", "x")
                .header("cookie", pair.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
        assert_eq!(
            r.header("x-backend").unwrap(),
            variant,
            "the cookie did not keep the client on its variant"
        );
        assert!(r.header("set-cookie").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedged_request_is_answered_by_the_fast_backend() {
    let slow = TestBackend::delayed("slow", Duration::from_secs(3)).await;
    let fast = TestBackend::echo("fast").await;
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&slow, &fast]),
        "    algorithm: failover\n    retries: { hedge_after: 100ms }\n    passive_health: { max_fails: 1000 }\n",
    ));
    // failover sends the first request to `slow`; the hedge to `fast` wins. While
    // `slow` sits on that request without answering, the next ones are steered to
    // `fast` directly.
    for _ in 0..3 {
        let r = client::get(f.listener(0), "/").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-backend").as_deref(), Some("fast"));
    }
    assert_eq!((slow.hits(), fast.hits()), (1, 3));
    // The losing attempt is still waiting on `slow` (it answers after 3 s): it
    // still counts as in flight there, which is what least_conn and p2c read.
    let pool = client::get(f.admin(), "/api/v1/pools/app").await.json();
    let slow_member = pool["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"].as_str() == Some(slow.addr.to_string().as_str()))
        .cloned()
        .unwrap();
    assert_eq!(slow_member["in_flight"], 1, "{pool}");
}

/// A backend that counts the requests it holds at once and answers each only
/// when the test adds a permit to `gate`.
fn gated(
    name: &'static str,
    gate: Arc<tokio::sync::Semaphore>,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> Handler {
    Arc::new(move |_req: Request<Incoming>| {
        let (gate, now, peak) = (gate.clone(), now.clone(), peak.clone());
        Box::pin(async move {
            let held = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(held, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            now.fetch_sub(1, Ordering::SeqCst);
            Response::builder()
                .header("x-backend", name)
                .body(full(name))
                .unwrap()
        })
    })
}

async fn queue_waiting(f: &Fulcrum) -> u64 {
    let pool = client::get(f.admin(), "/api/v1/pools/app").await.json();
    pool["queue"]["waiting"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_caps_a_backend_and_the_queue_holds_the_rest() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let a = TestBackend::start(gated("a", gate.clone(), now.clone(), peak.clone())).await;
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&a]),
        "    max_requests: 2\n    queue: { size: 3, timeout: 60s }\n",
    ));
    let addr = f.listener(0);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(tokio::spawn(async move { client::get(addr, "/").await }));
    }
    testkit::eventually("two requests at the backend and three queued", || async {
        (now.load(Ordering::SeqCst) == 2 && queue_waiting(&f).await == 3).then_some(())
    })
    .await;
    // The queue is full: one more is refused at once, with a 503.
    let refused = client::get(addr, "/").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused.text().contains("queue is full"),
        "{}",
        refused.text()
    );
    // Releasing the backend lets the queued requests through, two at a time.
    gate.add_permits(5);
    for h in held {
        let r = h.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "the backend held more than its cap"
    );
    assert_eq!(a.hits(), 5);
    assert_eq!(queue_waiting(&f).await, 0);
    let metrics = client::get(f.admin(), "/metrics").await.text();
    assert!(
        metrics.contains("fulcrum_queue_rejected_total{pool=\"app\"} 1"),
        "{metrics}"
    );
    // A burst of concurrent requests (the queue holds 3 of them, the rest get
    // 503): whatever the interleaving, the cap is never passed.
    gate.add_permits(1000);
    let burst: Vec<_> = (0..40)
        .map(|_| tokio::spawn(async move { client::get(addr, "/").await.status }))
        .collect();
    for b in burst {
        let status = b.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2, "a burst went past the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_past_the_queue_timeout_gets_a_503() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let a = TestBackend::start(gated("a", gate.clone(), now.clone(), peak)).await;
    let f = Fulcrum::start(&pool_config(
        &addr_list(&[&a]),
        "    max_requests: 1\n    queue: { size: 10, timeout: 300ms }\n",
    ));
    let addr = f.listener(0);
    let first = tokio::spawn(async move { client::get(addr, "/").await });
    testkit::eventually("the first request at the backend", || async {
        (now.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let started = Instant::now();
    let late = client::get(addr, "/").await;
    assert_eq!(
        late.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        late.text()
    );
    assert!(late.text().contains("queue timeout"), "{}", late.text());
    assert!(started.elapsed() >= Duration::from_millis(300));
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(a.hits(), 1, "the timed-out request reached the backend");
}
