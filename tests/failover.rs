//! Failover between backend levels, with real notification sinks: a webhook
//! receiver and an SMTP server in the test.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::backend::{TestBackend, full};
use testkit::client::{self, Resp};
use testkit::smtp::SmtpSink;
use testkit::{DEADLINE, Fulcrum, eventually};

/// A backend that can be made to fail (every answer 503, health included).
async fn level_backend(name: &'static str) -> (TestBackend, Arc<AtomicBool>) {
    TestBackend::switchable(name, false).await
}

/// Receives webhook posts; keeps (arrival time, JSON body).
struct Hook {
    backend: TestBackend,
    got: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Hook {
    async fn start() -> Hook {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let backend = TestBackend::start(Arc::new(move |req: Request<Incoming>| {
            let g = g.clone();
            Box::pin(async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    g.lock().unwrap().push((Instant::now(), v));
                }
                Response::new(full("ok"))
            })
        }))
        .await;
        Hook { backend, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.backend.addr)
    }

    async fn wait(&self, event: &str, n: usize) -> (Instant, Value) {
        eventually(&format!("webhook {event} #{n}"), || async {
            let got = self.got.lock().unwrap();
            got.iter()
                .filter(|(_, v)| v["event"] == event)
                .nth(n - 1)
                .cloned()
        })
        .await
    }

    fn count(&self, event: &str) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| v["event"] == event)
            .count()
    }
}

fn config(
    levels: &[(&TestBackend, u32)],
    failover: &str,
    hook: &Hook,
    smtp: Option<&SmtpSink>,
) -> String {
    let backends: String = levels
        .iter()
        .map(|(b, l)| {
            format!(
                "      - {{ address: \"{}\", failover_level: {l} }}\n",
                b.addr
            )
        })
        .collect();
    let email = smtp
        .map(|s| {
            format!(
                "      - {{ type: email, smtp_server: \"127.0.0.1\", smtp_port: {}, smtp_user: ops, smtp_password: pw, recipients: [\"admin@example.com\"] }}\n",
                s.addr.port()
            )
        })
        .unwrap_or_default();
    format!(
        "listeners: [\"127.0.0.1:0\"]
access_log: {{ enabled: false }}
pools:
  - name: app
    backends:
{backends}    health_check: {{ path: /health, interval: 100ms, timeout: 90ms, unhealthy_threshold: 1, healthy_threshold: 1 }}
    retries: {{ try_duration: 0s }}
routes:
  - {{ pool: app }}
failover:
{failover}
  notification:
    channels:
      - {{ type: log, level: warning }}
      - {{ type: webhook, url: \"{}\", format: json }}
{email}",
        hook.url()
    )
}

async fn who(addr: SocketAddr) -> String {
    client::get(addr, "/")
        .await
        .header("x-backend")
        .unwrap_or_default()
}

async fn shares(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        *m.entry(who(addr).await).or_insert(0) += 1;
    }
    m
}

async fn admin(f: &Fulcrum, method: &str, path: &str) -> Resp {
    client::send(
        f.admin(),
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "a")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains("pool=\"app\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_failover_recovers_after_recovery_interval_and_notifies() {
    let (p, p_up) = level_backend("primary").await;
    let (b, _) = level_backend("backup").await;
    let hook = Hook::start().await;
    let smtp = SmtpSink::start().await;
    let f = Fulcrum::start(&config(
        &[(&p, 0), (&b, 1)],
        "  strategy: immediate\n  check_interval: 100ms\n  recovery_interval: 2s",
        &hook,
        Some(&smtp),
    ));
    let addr = f.listener(0);
    assert_eq!(who(addr).await, "primary");

    p_up.store(false, Ordering::SeqCst);
    let (_, e) = hook.wait("failover.activated", 1).await;
    assert_eq!(
        (
            e["pool"].as_str(),
            e["from_level"].as_u64(),
            e["to_level"].as_u64()
        ),
        (Some("app"), Some(0), Some(1))
    );
    assert_eq!(e["mode"], "auto");
    for k in ["reason", "ts", "duration_seconds"] {
        assert!(e.get(k).is_some(), "event lacks {k}: {e}");
    }
    assert_eq!(shares(addr, 10).await.get("backup"), Some(&10));
    eventually("the email", || async { (smtp.count() >= 1).then_some(()) }).await;
    let mail = &smtp.all()[0];
    assert!(mail.auth.is_some(), "SMTP AUTH was not used");
    assert!(mail.data.contains("failover.activated"), "{}", mail.data);
    assert!(mail.to[0].contains("admin@example.com"));

    p_up.store(true, Ordering::SeqCst);
    f.stderr
        .wait_for("primary healthy", |l| l.contains("backend is up"));
    let healthy_at = Instant::now();
    // Not before recovery_interval: still on the backup right after.
    assert_eq!(who(addr).await, "backup");
    let (at, e) = hook.wait("failover.recovered", 1).await;
    assert!(
        at.duration_since(healthy_at) >= Duration::from_millis(1900),
        "recovered too early: {:?}",
        at.duration_since(healthy_at)
    );
    assert_eq!(
        (e["from_level"].as_u64(), e["to_level"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(e["duration_seconds"].as_f64().unwrap() >= 2.0, "{e}");
    assert_eq!(shares(addr, 10).await.get("primary"), Some(&10));

    let text = admin(&f, "GET", "/metrics").await.text();
    assert_eq!(metric(&text, "fulcrum_failover_active"), Some(0.0));
    assert_eq!(metric(&text, "fulcrum_failover_events_total"), Some(2.0));
    assert!(metric(&text, "fulcrum_failover_last_activation_timestamp_seconds").unwrap() > 1.7e9);
    assert!(metric(&text, "fulcrum_failover_duration_seconds").unwrap() >= 2.0);
    let st = admin(&f, "GET", "/api/v1/failover/status?pool=app")
        .await
        .json();
    assert_eq!(st["active"], false);
    assert_eq!(st["events"].as_array().unwrap().len(), 2);
    // One log line per event (the `log` channel's), not one more of its own.
    for event in ["failover.activated", "failover.recovered"] {
        assert_eq!(
            f.stderr
                .count(|l| l.contains(&format!("\"event\":\"{event}\""))),
            1,
            "{event} logged more than once:\n{}",
            f.stderr.all().join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_level_cascade() {
    let (l0, l0_up) = level_backend("l0").await;
    let (l1, l1_up) = level_backend("l1").await;
    let (l2, _) = level_backend("l2").await;
    let hook = Hook::start().await;
    let f = Fulcrum::start(&config(
        &[(&l0, 0), (&l1, 1), (&l2, 2)],
        "  strategy: immediate\n  check_interval: 100ms\n  recovery_interval: 300ms",
        &hook,
        None,
    ));
    let addr = f.listener(0);
    assert_eq!(who(addr).await, "l0");
    l0_up.store(false, Ordering::SeqCst);
    hook.wait("failover.activated", 1).await;
    assert_eq!(who(addr).await, "l1");
    l1_up.store(false, Ordering::SeqCst);
    let (_, e) = hook.wait("failover.activated", 2).await;
    assert_eq!(
        (e["from_level"].as_u64(), e["to_level"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(shares(addr, 6).await.get("l2"), Some(&6));
    l1_up.store(true, Ordering::SeqCst);
    let (_, e) = hook.wait("failover.recovered", 1).await;
    assert_eq!(
        (e["from_level"].as_u64(), e["to_level"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(who(addr).await, "l1");
    l0_up.store(true, Ordering::SeqCst);
    let (_, e) = hook.wait("failover.recovered", 2).await;
    assert_eq!(
        (e["from_level"].as_u64(), e["to_level"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(shares(addr, 6).await.get("l0"), Some(&6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_ignores_short_outages_and_switches_after_the_delay() {
    let (p, p_up) = level_backend("primary").await;
    let (b, _) = level_backend("backup").await;
    let hook = Hook::start().await;
    let f = Fulcrum::start(&config(
        &[(&p, 0), (&b, 1)],
        "  strategy: delayed\n  delay: 2s\n  check_interval: 100ms\n  recovery_interval: 300ms",
        &hook,
        None,
    ));
    let addr = f.listener(0);
    // Short outage: down, noticed, back within the delay.
    p_up.store(false, Ordering::SeqCst);
    f.stderr
        .wait_for("primary down", |l| l.contains("backend is down"));
    // Within the delay, traffic does not cascade to the backup on its own.
    assert_eq!(
        client::get(addr, "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    p_up.store(true, Ordering::SeqCst);
    f.stderr
        .wait_for("primary up", |l| l.contains("backend is up"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        hook.count("failover.activated"),
        0,
        "a short outage caused a failover"
    );
    assert_eq!(who(addr).await, "primary");

    // Long outage: the switch comes once the delay has passed.
    p_up.store(false, Ordering::SeqCst);
    let down_at = Instant::now();
    let (at, e) = hook.wait("failover.activated", 1).await;
    assert!(
        at.duration_since(down_at) >= Duration::from_millis(1900),
        "switched before the delay"
    );
    assert!(e["duration_seconds"].as_f64().unwrap() >= 1.9, "{e}");
    assert_eq!(who(addr).await, "backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_moves_traffic_back_in_steps() {
    let (p, p_up) = level_backend("primary").await;
    let (b, _) = level_backend("backup").await;
    let hook = Hook::start().await;
    let f = Fulcrum::start(&config(
        &[(&p, 0), (&b, 1)],
        "  strategy: graceful\n  ramp: 4s\n  check_interval: 100ms\n  recovery_interval: 300ms",
        &hook,
        None,
    ));
    let addr = f.listener(0);
    p_up.store(false, Ordering::SeqCst);
    hook.wait("failover.activated", 1).await;
    assert_eq!(who(addr).await, "backup");
    p_up.store(true, Ordering::SeqCst);
    f.stderr
        .wait_for("the ramp", |l| l.contains("traffic moving back gradually"));
    let mut seen = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = shares(addr, 40).await;
        let primary = *s.get("primary").unwrap_or(&0) as f64 / 40.0;
        seen.push(primary);
        if primary == 1.0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        seen[0] < 0.5,
        "the first step sent too much back at once: {seen:?}"
    );
    assert_eq!(*seen.last().unwrap(), 1.0, "{seen:?}");
    assert!(
        seen.iter().any(|&x| x > 0.0 && x < 1.0),
        "no intermediate step: {seen:?}"
    );
    let (_, e) = hook.wait("failover.recovered", 1).await;
    assert_eq!(e["to_level"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_activate_deactivate_status_and_test() {
    let (p, _) = level_backend("primary").await;
    let (b, b_up) = level_backend("backup").await;
    let hook = Hook::start().await;
    let f = Fulcrum::start(&config(
        &[(&p, 0), (&b, 1)],
        "  strategy: immediate\n  check_interval: 100ms\n  recovery_interval: 300ms",
        &hook,
        None,
    ));
    let addr = f.listener(0);
    let r = admin(&f, "POST", "/api/v1/failover/activate?pool=app").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        (r.json()["active"].as_bool(), r.json()["mode"].as_str()),
        (Some(true), Some("manual"))
    );
    let (_, e) = hook.wait("failover.activated", 1).await;
    assert_eq!(e["mode"], "manual");
    assert_eq!(shares(addr, 6).await.get("backup"), Some(&6));
    let r = admin(&f, "POST", "/api/v1/failover/deactivate?pool=app").await;
    assert_eq!(r.json()["active"], false);
    hook.wait("failover.recovered", 1).await;
    assert_eq!(shares(addr, 6).await.get("primary"), Some(&6));

    // Test: probes the backups and notifies, moves nothing.
    let r = admin(&f, "POST", "/api/v1/failover/test?pool=app").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["ready"], true);
    assert_eq!(v["backups"][0]["healthy"], true);
    assert_eq!(v["traffic_moved"], false);
    let (_, e) = hook.wait("failover.test", 1).await;
    assert_eq!(e["to_level"], 1);
    assert_eq!(who(addr).await, "primary");
    b_up.store(false, Ordering::SeqCst);
    let v = admin(&f, "POST", "/api/v1/failover/test?pool=app")
        .await
        .json();
    assert_eq!(v["ready"], false);
    assert_eq!(v["backups"][0]["healthy"], false);
    let st = admin(&f, "GET", "/api/v1/failover/status?pool=app")
        .await
        .json();
    assert_eq!(st["active"], false);
    assert_eq!(st["mode"], "auto");
    // Errors.
    assert_eq!(
        admin(&f, "POST", "/api/v1/failover/activate?pool=nope")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin(&f, "POST", "/api/v1/failover/activate").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin(&f, "GET", "/api/v1/failover/activate?pool=app")
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_channel_does_not_block_the_others() {
    let (p, p_up) = level_backend("primary").await;
    let (b, _) = level_backend("backup").await;
    let hook = Hook::start().await;
    // The first webhook points at a closed port; it keeps failing and retrying.
    let dead = testkit::free_addr();
    let cfg = config(
        &[(&p, 0), (&b, 1)],
        "  strategy: immediate\n  check_interval: 100ms",
        &hook,
        None,
    )
    .replace(
        "      - { type: log, level: warning }\n",
        &format!("      - {{ type: webhook, url: \"http://{dead}/x\" }}\n"),
    );
    let f = Fulcrum::start(&cfg);
    p_up.store(false, Ordering::SeqCst);
    hook.wait("failover.activated", 1).await;
    assert_eq!(who(f.listener(0)).await, "backup");
    f.stderr
        .wait_for("a retry", |l| l.contains("notification failed; will retry"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_config_validates_and_runs() {
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed-failover.yaml"
    ))
    .unwrap();
    // Unchanged, it validates.
    let (code, out, err) = testkit::validate(&seed);
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    // To run it, its backends and SMTP host become local servers (nothing else
    // changes: 5s checks, unhealthy_threshold 2, immediate, notifications).
    let (p, p_up) = level_backend("principal").await;
    let (b, _) = level_backend("backup").await;
    let smtp = SmtpSink::start().await;
    let text = seed
        .replace("servidor-principal:80", &p.addr.to_string())
        .replace("servidor-backup:80", &b.addr.to_string())
        .replace("smtp.example.com", "127.0.0.1")
        .replace(
            "smtp_port: 587",
            &format!("smtp_port: {}", smtp.addr.port()),
        );
    let f = Fulcrum::start(&format!("listeners: [\"127.0.0.1:0\"]\n{text}"));
    let addr = f.listener(0);
    let get = |addr| async move {
        client::send(
            addr,
            Request::get("/")
                .header("host", "sua-aplicacao.com")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    };
    assert_eq!(
        get(addr).await.header("x-backend").as_deref(),
        Some("principal")
    );
    p_up.store(false, Ordering::SeqCst);
    eventually("the failover email", || async {
        (smtp.count() >= 1).then_some(())
    })
    .await;
    assert!(smtp.all()[0].data.contains("failover.activated"));
    f.stderr.wait_for("the log channel", |l| {
        l.contains("failover activated on pool app-principal-pool")
    });
    assert_eq!(
        get(addr).await.header("x-backend").as_deref(),
        Some("backup")
    );
    let st = admin(&f, "GET", "/api/v1/failover/status?pool=app-principal-pool")
        .await
        .json();
    assert_eq!(
        (st["active"].as_bool(), st["level"].as_u64()),
        (Some(true), Some(1))
    );
}

/// SPEC §4, `delayed`: a primary whose checks fail for less than `delay` while it
/// still answers keeps every request; the backup sees none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_keeps_traffic_on_a_primary_that_still_answers() {
    let (p, p_health) = TestBackend::switchable("primary", true).await;
    let b = TestBackend::echo("backup").await;
    let f = Fulcrum::start(&format!(
        "listeners: [\"127.0.0.1:0\"]
access_log: {{ enabled: false }}
pools:
  - name: app
    backends:
      - {{ address: \"{}\" }}
      - {{ address: \"{}\", failover_level: 1 }}
    health_check: {{ path: /health, interval: 100ms, timeout: 90ms, unhealthy_threshold: 1, healthy_threshold: 1 }}
routes:
  - {{ pool: app }}
failover:
  strategy: delayed
  delay: 3s
  check_interval: 100ms
  recovery_interval: 300ms
",
        p.addr, b.addr
    ));
    let addr = f.listener(0);
    assert_eq!(who(addr).await, "primary");
    p_health.store(false, Ordering::SeqCst);
    f.stderr
        .wait_for("primary down", |l| l.contains("backend is down"));
    let failed_at = Instant::now();
    let mut answers = HashMap::new();
    while failed_at.elapsed() < Duration::from_millis(2500) {
        if failed_at.elapsed() >= Duration::from_millis(1200) {
            p_health.store(true, Ordering::SeqCst);
        }
        let r = client::get(addr, "/").await;
        *answers
            .entry((r.status, r.header("x-backend").unwrap_or_default()))
            .or_insert(0usize) += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.saw("/"), 0, "requests reached the backup: {answers:?}");
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(
        answers.contains_key(&(StatusCode::OK, "primary".to_string())),
        "{answers:?}"
    );
}
