//! `fulcrum ctl` as a shell user meets it: flags in any position, an admin
//! address with or without `http://`, a closed pipe, empty answers, the same
//! address for `add` and `remove`, file names in `apply` errors; and
//! `fulcrum proxy --admin`.

use std::process::{Command, Stdio};
use testkit::backend::TestBackend;
use testkit::{Fulcrum, TempDir, client, ctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_flags_anywhere_and_friendly_answers() {
    let a = TestBackend::echo("a").await;
    let f = Fulcrum::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\", token: tok-123 }}\nlisteners: [\"127.0.0.1:0\"]\naccess_log: {{ enabled: false }}\npools:\n  - name: web\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: web }}\n",
        a.addr
    ));
    let url = format!("http://{}", f.admin());
    let bare = f.admin().to_string();
    // Every position of --admin/--token/--json, with and without the scheme.
    for args in [
        vec!["--admin", &url, "--token", "tok-123", "--json", "pools"],
        vec!["pools", "--admin", &url, "--token", "tok-123", "--json"],
        vec![
            "--json",
            "pools",
            "web",
            "--admin",
            &bare,
            "--token=tok-123",
        ],
        vec![
            "--token", "tok-123", "pools", "--json", "web", "--admin", &bare,
        ],
    ] {
        let o = ctl(&args);
        assert!(o.ok, "{args:?}: {}", o.stderr);
        let v: serde_json::Value = serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", o.stdout));
        let pool = if v.is_array() { &v[0] } else { &v };
        assert_eq!(pool["name"], "web", "{args:?}");
    }
    let auth = ["--admin", bare.as_str(), "--token", "tok-123"];
    let with = |rest: &[&str]| {
        let mut v: Vec<&str> = rest.to_vec();
        v.extend_from_slice(&auth);
        ctl(&v)
    };

    // No pool has backups: say so instead of printing nothing.
    let o = with(&["failover", "status"]);
    assert!(
        o.ok && o.stdout.contains("no pool has backup servers"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = with(&["cluster"]);
    assert!(o.ok && o.stdout.contains("standalone"), "{}", o.stdout);
    // A membership change needs a cluster.
    let o = with(&["cluster", "add", "n4", "10.0.0.14:7946", "--witness"]);
    assert!(
        !o.ok && o.stderr.contains("409") && o.stderr.contains("standalone"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = with(&["cluster", "remove", "n4"]);
    assert!(!o.ok && o.stderr.contains("standalone"), "{}", o.stderr);

    // `add` and `remove` agree on what an address is.
    let o = with(&["add", "web", "not-an-address", "--name", "spare"]);
    assert!(
        o.ok && o.stdout.contains("not-an-address:80"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = with(&["drain", "web", "spare"]);
    assert!(
        o.ok && o.stdout.contains("draining"),
        "by name: {}{}",
        o.stdout,
        o.stderr
    );
    let o = with(&["remove", "web", "not-an-address"]);
    assert!(
        o.ok && o.stdout.contains("removed not-an-address:80"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = with(&["add", "web", "http://bad address"]);
    assert!(!o.ok && o.stderr.contains("400"), "{}", o.stderr);

    // `apply` names the file in its errors.
    let dir = TempDir::new("ctl-apply");
    let file = dir.write("site.yaml", "pools: []\nroutes:\n  - { pool: nowhere }\n");
    let o = with(&["apply", file.to_str().unwrap()]);
    assert!(!o.ok, "{}", o.stdout);
    assert!(
        o.stderr.contains(&format!("{}:3:", file.display())) && !o.stderr.contains("api:"),
        "{}",
        o.stderr
    );

    // A reader that goes away: no panic, a quiet exit.
    let mut child = Command::new(testkit::bin())
        .args(["ctl", "config"])
        .args(auth)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0) && !stderr.contains("panicked"),
        "exit {:?}: {stderr}",
        out.status.code()
    );

    // HTTPS to an API that speaks plain HTTP, a scheme it never speaks, and a
    // wrong token.
    let o = ctl(&[
        "status",
        "--admin",
        &format!("https://{bare}"),
        "--insecure",
    ]);
    assert!(!o.ok && o.stderr.contains("TLS"), "{}", o.stderr);
    let o = ctl(&["status", "--admin", &format!("ftp://{bare}")]);
    assert!(!o.ok && o.stderr.contains("not ftp://"), "{}", o.stderr);
    let o = ctl(&["status", "--admin", &bare]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("401"), "{}", o.stderr);
}

#[test]
fn ctl_help_describes_every_argument() {
    for sub in [
        vec!["ctl", "--help"],
        vec!["ctl", "add", "--help"],
        vec!["ctl", "drain", "--help"],
        vec!["ctl", "failover", "--help"],
        vec!["ctl", "pools", "--help"],
        vec!["ctl", "apply", "--help"],
        vec!["ctl", "remove", "--help"],
    ] {
        let out = Command::new(testkit::bin()).args(&sub).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub:?}");
        // clap prints an argument line with nothing after the name when it
        // has no help text.
        let section = text
            .split("Arguments:")
            .nth(1)
            .map(|s| s.split("Options:").next().unwrap_or(""))
            .unwrap_or("");
        for line in section.lines().filter(|l| !l.trim().is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(
                words.len() > 1,
                "{sub:?}: argument without help: {line:?}\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_one_liner_serves_admin_metrics_and_dashboard() {
    let a = TestBackend::echo("a").await;
    let dir = TempDir::new("proxy-admin");
    let to = format!("http://{}", a.addr);
    let f = Fulcrum::spawn(
        dir,
        std::path::PathBuf::new(),
        &[
            "--log-format",
            "json",
            "proxy",
            "--from",
            "127.0.0.1:0",
            "--to",
            &to,
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let admin = f.admin();
    let r = client::get(f.listener(0), "/").await;
    assert_eq!(r.status, http::StatusCode::OK);
    let metrics = client::get(admin, "/metrics").await.text();
    assert!(
        metrics.contains("fulcrum_requests_total{route=\"default\""),
        "{metrics}"
    );
    let page = client::get(admin, "/").await;
    assert!(page.text().contains("<title>Fulcrum</title>"));
    let pools = client::get(admin, "/api/v1/pools").await.json();
    assert_eq!(pools[0]["backends"][0]["address"], a.addr.to_string());
    // A public address needs a token.
    let out = Command::new(testkit::bin())
        .args([
            "proxy",
            "--from",
            "127.0.0.1:0",
            "--to",
            &to,
            "--admin",
            "0.0.0.0:0",
        ])
        .env_remove("FULCRUM_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-token"));
}
