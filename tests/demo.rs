//! `fulcrum demo` runs as advertised: it serves, a backend leaves the rotation and
//! comes back, `/failover` moves to its backup and returns, the self-generated
//! traffic sees no errors, and each strategy route behaves as its strategy promises.

use bytes::Bytes;
use http_body_util::Full;
use std::collections::HashMap;
use std::net::SocketAddr;
use testkit::{Fulcrum, TempDir, client, free_addr};

/// Starts the demo on free ports; returns it with its proxy and admin addresses.
fn start_demo(fail_every: &str, fail_for: &str) -> (Fulcrum, SocketAddr, SocketAddr) {
    let (listen, admin) = (free_addr(), free_addr());
    let (l, a) = (listen.to_string(), admin.to_string());
    let f = Fulcrum::spawn(
        TempDir::new("demo"),
        std::path::PathBuf::new(),
        &[
            "--log-format",
            "json",
            "demo",
            "--listen",
            &l,
            "--admin",
            &a,
            "--fail-every",
            fail_every,
            "--fail-for",
            fail_for,
        ],
    );
    f.stdout.wait_for("the banner", |line| {
        line.contains(&format!("proxy:     http://{listen}/"))
    });
    f.stdout
        .wait_for("the end of the banner", |line| line.contains("Ctrl-C"));
    (f, listen, admin)
}

async fn who(proxy: SocketAddr, path: &str) -> String {
    let r = client::get(proxy, path).await;
    assert_eq!(r.status, http::StatusCode::OK, "{path}: {}", r.text());
    r.header("x-backend").expect("x-backend")
}

async fn who_for_client(proxy: SocketAddr, path: &str, ip: &str) -> String {
    let req = http::Request::get(path)
        .header("host", "localhost")
        .header("x-forwarded-for", ip)
        .body(Full::new(Bytes::new()))
        .unwrap();
    client::send(proxy, req)
        .await
        .header("x-backend")
        .expect("x-backend")
}

async fn sequence(proxy: SocketAddr, path: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(who(proxy, path).await);
    }
    out
}

fn counts(names: &[String]) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.as_str()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_a_backend_leaving_and_rejoining_and_a_failover() {
    let (f, proxy, admin) = start_demo("6s", "3s");
    let r = client::get(proxy, "/").await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert!(r.text().starts_with("Hello from backend-"), "{}", r.text());
    let page = client::get(admin, "/").await;
    assert!(page.text().contains("<title>Fulcrum</title>"));
    // Before the first crash, /failover is served by its primary only.
    for name in sequence(proxy, "/failover", 5).await {
        assert_eq!(name, "backend-2");
    }
    f.stdout
        .wait_for("the crash", |l| l.contains("backend-2 crashed"));
    testkit::eventually("/failover on the backup", || async {
        (who(proxy, "/failover").await == "backup").then_some(())
    })
    .await;
    f.stdout.wait_for("the failover event", |l| {
        l.contains("/failover: backend-2 is down, traffic moved to backup")
    });
    f.stdout
        .wait_for("leaving", |l| l.contains("backend-2 left the rotation"));
    f.stdout
        .wait_for("the restart", |l| l.contains("backend-2 restarted"));
    f.stdout.wait_for("rejoining", |l| {
        l.contains("backend-2 rejoined the rotation")
    });
    testkit::eventually("/failover back on its primary", || async {
        (who(proxy, "/failover").await == "backend-2").then_some(())
    })
    .await;
    f.stdout.wait_for("the recovery event", |l| {
        l.contains("/failover: backend-2 is back, traffic returned to it")
    });
    testkit::eventually("traffic summaries", || async {
        (f.stdout.count(|l| l.starts_with("[traffic] /failover")) >= 2).then_some(())
    })
    .await;
    let lines = f.stdout.all();
    let traffic: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("[traffic]"))
        .collect();
    assert!(
        traffic.iter().all(|l| l.ends_with("errors=0")),
        "{traffic:?}"
    );
    assert!(
        traffic
            .iter()
            .any(|l| l.starts_with("[traffic] /failover") && l.contains("backup=")),
        "{traffic:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_routes_behave_as_their_strategies_promise() {
    let (f, proxy, admin) = start_demo("1h", "1s");
    for route in [
        "/balanced ",
        "/balanced-weighted",
        "/balanced-random",
        "/balanced-least",
        "/balanced-ip",
        "/balanced-p2c",
        "/failover ",
    ] {
        assert!(
            f.stdout.count(|l| l.trim_start().starts_with(route)) == 1,
            "banner line for {route}"
        );
    }
    assert_eq!(
        f.stdout.count(|l| l.contains("curl -s")),
        7,
        "a curl loop per route"
    );

    // Round robin: each backend in turn.
    let rr = sequence(proxy, "/balanced", 6).await;
    assert!(rr.windows(2).all(|w| w[0] != w[1]), "{rr:?}");
    assert!(counts(&rr).values().all(|&c| c == 2), "{rr:?}");

    // Weighted 3:1:1, smoothly: any 10 in a row are 6:2:2.
    let weighted = sequence(proxy, "/balanced-weighted", 10).await;
    let w = counts(&weighted);
    assert_eq!(
        (w["backend-1"], w["backend-2"], w["backend-3"]),
        (6, 2, 2),
        "{w:?}"
    );

    // Random: no fixed order, every answer from a demo backend.
    let r = sequence(proxy, "/balanced-random", 30).await;
    assert!(counts(&r).len() >= 2, "{r:?}");

    // IP hash: one client, one backend; different clients spread.
    let mut seen = Vec::new();
    for i in 1..=12 {
        let ip = format!("203.0.113.{i}");
        let first = who_for_client(proxy, "/balanced-ip", &ip).await;
        for _ in 0..2 {
            assert_eq!(who_for_client(proxy, "/balanced-ip", &ip).await, first);
        }
        seen.push(first);
    }
    assert!(counts(&seen).len() >= 2, "{seen:?}");

    // Least connections: with two slow requests in flight, the third goes to the idle backend.
    let in_flight = || async move {
        let pool = client::get(admin, "/api/v1/pools/balanced-least")
            .await
            .json();
        pool["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["in_flight"].as_u64().unwrap())
            .sum::<u64>()
    };
    let slow1 = tokio::spawn(async move { who(proxy, "/balanced-least?delay=2000").await });
    testkit::eventually("one slow request in flight", || async {
        (in_flight().await == 1).then_some(())
    })
    .await;
    let slow2 = tokio::spawn(async move { who(proxy, "/balanced-least?delay=2000").await });
    testkit::eventually("two slow requests in flight", || async {
        (in_flight().await == 2).then_some(())
    })
    .await;
    let fast = who(proxy, "/balanced-least").await;
    let (slow1, slow2) = (slow1.await.unwrap(), slow2.await.unwrap());
    assert!(
        slow1 != slow2 && fast != slow1 && fast != slow2,
        "{slow1} {slow2} {fast}"
    );

    // Power of two choices by latency: the slow backend-3 is rarely picked.
    let p2c = sequence(proxy, "/balanced-p2c", 30).await;
    let p = counts(&p2c);
    assert!(p.get("backend-3").copied().unwrap_or(0) <= 5, "{p:?}");
}
