//! `fulcrum demo` runs as advertised: it serves, a backend leaves the rotation and
//! comes back, and the self-generated traffic sees no errors.

mod common;

use common::{Fulcrum, TempDir, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_a_backend_leaving_and_rejoining() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TempDir::new("demo");
    let listen = free.to_string();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let f = Fulcrum::spawn(
        dir,
        std::path::PathBuf::new(),
        &[
            "--log-format",
            "json",
            "demo",
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--fail-every",
            "2s",
            "--fail-for",
            "2s",
        ],
    );
    f.stdout.wait_for("the banner", |l| {
        l.contains(&format!("proxy:     http://{listen}/"))
    });
    let r = client::get(free, "/").await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert!(r.text().starts_with("Hello from backend-"), "{}", r.text());
    f.stdout.wait_for("the dashboard URL", |l| {
        l.contains(&format!("dashboard: http://{admin}/"))
    });
    let page = client::get(admin.parse().unwrap(), "/").await;
    assert!(page.text().contains("<title>Fulcrum</title>"));
    f.stdout
        .wait_for("the crash", |l| l.contains("backend-2 crashed"));
    f.stdout
        .wait_for("leaving", |l| l.contains("backend-2 left the rotation"));
    f.stdout
        .wait_for("the restart", |l| l.contains("backend-2 restarted"));
    f.stdout.wait_for("rejoining", |l| {
        l.contains("backend-2 rejoined the rotation")
    });
    common::eventually("two traffic summaries", || async {
        (f.stdout.count(|l| l.starts_with("[traffic]")) >= 2).then_some(())
    })
    .await;
    let summaries = f.stdout.all();
    let traffic: Vec<&String> = summaries
        .iter()
        .filter(|l| l.starts_with("[traffic]"))
        .collect();
    assert!(!traffic.is_empty());
    assert!(
        traffic.iter().all(|l| l.ends_with("errors=0")),
        "{traffic:?}"
    );
}
