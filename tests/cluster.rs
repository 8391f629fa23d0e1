//! The cluster on loopback, with real `fulcrum` processes: election, replication
//! of admin writes through any node, restart from the persisted log, hand-over
//! on SIGTERM with hooks in order, a witness, preemption. (The floating VIP needs
//! network namespaces: see ha_netns.rs.)

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use testkit::cluster::{HookLog, Node, NodeSpec, Relay, agreed_primary, configure};
use testkit::free_port;
use testkit::{TempDir, backend::TestBackend, client, eventually};

const TIMING: &str = "  heartbeat_interval: 100ms\n  election_timeout: 500ms\n";
const SECRET: &str = "correct-horse-battery-staple";

fn specs(names: &[&str]) -> Vec<NodeSpec> {
    names
        .iter()
        .map(|n| NodeSpec {
            name: n.to_string(),
            port: free_port(),
            witness: n.starts_with('w'),
            extra: String::new(),
            listeners: String::new(),
        })
        .collect()
}

fn body(backend: SocketAddr) -> String {
    format!("pools:\n  - name: app\n    backends: [\"{backend}\"]\nroutes: [{{ pool: app }}]\n")
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> client::Resp {
    client::send(
        addr,
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

fn node<'a>(nodes: &'a [Node], name: &str) -> &'a Node {
    nodes.iter().find(|n| n.name == name).unwrap()
}

fn node_mut<'a>(nodes: &'a mut [Node], name: &str) -> &'a mut Node {
    nodes.iter_mut().find(|n| n.name == name).unwrap()
}

async fn wait_primary(nodes: &[Node]) -> String {
    eventually("one primary all nodes agree on", || agreed_primary(nodes)).await
}

async fn backend_state(n: &Node, pool: &str, addr: &str) -> Option<String> {
    let r = call(
        n.admin(),
        "GET",
        &format!("/api/v1/pools/{pool}/backends/{addr}"),
        "",
    )
    .await;
    r.status
        .is_success()
        .then(|| r.json()["state"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_on_any_node_reach_every_node_and_survive_a_restart() {
    let app = TestBackend::echo("app").await;
    let cached = format!(
        "pools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: app }}\n  - {{ pool: app, path_prefix: /cached, cache: {{ default_ttl: 1h }} }}\n",
        app.addr
    );
    let mut nodes = configure(&specs(&["a", "b", "c"]), &cached, TIMING);
    for n in nodes.iter_mut() {
        n.start();
    }
    let primary = wait_primary(&nodes).await;
    let secondaries: Vec<String> = nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| *n != primary)
        .collect();

    // Every node proxies (the VIP decides which one clients reach).
    for n in &nodes {
        let r = client::get(n.proc().listener(0), "/x").await;
        assert_eq!(r.status, StatusCode::OK);
    }

    // A backend added through a secondary is forwarded, committed and applied
    // everywhere; the answer comes back once this node has applied it too.
    let s0 = node(&nodes, &secondaries[0]);
    let r = call(
        s0.admin(),
        "POST",
        "/api/v1/pools/app/backends",
        r#"{"address":"127.0.0.1:9","weight":2}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        backend_state(s0, "app", "127.0.0.1:9").await.as_deref(),
        Some("up")
    );
    for n in &nodes {
        eventually("the added backend on every node", || async {
            backend_state(n, "app", "127.0.0.1:9").await
        })
        .await;
    }
    // Drain through the other secondary.
    let s1 = node(&nodes, &secondaries[1]);
    let r = call(
        s1.admin(),
        "POST",
        "/api/v1/pools/app/backends/127.0.0.1:9/drain",
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for n in &nodes {
        eventually("draining on every node", || async {
            (backend_state(n, "app", "127.0.0.1:9").await.as_deref() == Some("draining"))
                .then_some(())
        })
        .await;
    }
    // A cache purge through one node empties that URL prefix on every node.
    let entries = |n: &Node| {
        let admin = n.admin();
        async move {
            call(admin, "GET", "/api/v1/cache", "").await.json()["routes"][0]["entries"]
                .as_u64()
                .unwrap_or(u64::MAX)
        }
    };
    for n in &nodes {
        for _ in 0..2 {
            client::get(n.proc().listener(0), "/cached/page").await;
        }
        assert_eq!(entries(n).await, 1, "node {}", n.name);
    }
    let r = call(
        s1.admin(),
        "POST",
        "/api/v1/cache/purge",
        r#"{"prefix": "/cached/"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for n in &nodes {
        eventually("the purge on every node", || async {
            (entries(n).await == 0).then_some(())
        })
        .await;
    }

    // A rejected change is refused on every node alike (it is applied in order
    // everywhere and fails the same way).
    let r = call(
        s1.admin(),
        "POST",
        "/api/v1/pools/nope/backends",
        r#"{"address":"127.0.0.1:10"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());

    // A new config through a secondary: the shared part replicates, every node
    // keeps its own listeners, admin and cluster keys.
    let new_config = format!(
        "pools:\n  - name: app\n    backends: [\"{}\"]\n  - name: extra\n    backends: [\"127.0.0.1:11\"]\nroutes: [{{ pool: app }}]\n",
        app.addr
    );
    let r = call(s0.admin(), "PUT", "/api/v1/config", &new_config).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for n in &nodes {
        let mine = n.proc().listener(0);
        eventually("the replicated config on every node", || async {
            let c = call(n.admin(), "GET", "/api/v1/config", "").await.json();
            let pools: Vec<&str> = c["config"]["pools"]
                .as_array()?
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            let listener = c["config"]["listeners"][0]["address"].as_str()?.to_string();
            let node_id = c["config"]["cluster"]["node_id"].as_str()?.to_string();
            (pools == ["app", "extra"] && listener == "127.0.0.1:0" && node_id == n.name)
                .then_some(())
        })
        .await;
        // Still serving on its own listener.
        assert_eq!(client::get(mine, "/y").await.status, StatusCode::OK);
    }
    // An invalid config is refused before it is proposed.
    let r = call(
        s1.admin(),
        "PUT",
        "/api/v1/config",
        "pools: [{ name: a, algorithm: fastest }]",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // Persisting to one node's file makes no sense in a cluster.
    let r = call(
        s1.admin(),
        "PUT",
        "/api/v1/config?persist=true",
        &new_config,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());

    // Metrics and status.
    let p = node(&nodes, &primary);
    let m = call(p.admin(), "GET", "/metrics", "").await.text();
    assert!(
        m.contains(&format!("fulcrum_cluster_role{{node=\"{primary}\"}} 1")),
        "{m}"
    );
    assert!(
        m.contains(&format!("fulcrum_cluster_term{{node=\"{primary}\"}} ")),
        "{m}"
    );
    // At least one transition (to primary); a loaded machine may have seen an
    // extra election before the cluster settled, so the exact count is not fixed.
    let transitions = format!("fulcrum_cluster_transitions_total{{node=\"{primary}\"}} ");
    let count: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix(&transitions))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(count >= 1, "{m}");
    let m = call(s0.admin(), "GET", "/metrics", "").await.text();
    assert!(
        m.contains(&format!("fulcrum_cluster_role{{node=\"{}\"}} 0", s0.name)),
        "{m}"
    );
    let st = call(s0.admin(), "GET", "/api/v1/status", "").await.json();
    assert_eq!(st["cluster_role"], "secondary");
    let out = std::process::Command::new(testkit::bin())
        .args([
            "ctl",
            "--admin",
            &format!("http://{}", s0.admin()),
            "cluster",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("leader {primary}")), "{text}");
    assert!(text.contains("(this node)"), "{text}");

    // A secondary restarted from its state_dir replays the log: same changes,
    // and it comes back as a secondary.
    let name = secondaries[0].clone();
    let n = node_mut(&mut nodes, &name);
    n.proc.as_mut().unwrap().signal(libc::SIGTERM);
    assert_eq!(n.proc.as_mut().unwrap().wait_exit(), 0);
    n.start();
    let n = node(&nodes, &name);
    eventually("the restarted node has replayed the log", || async {
        let c = call(n.admin(), "GET", "/api/v1/config", "").await.json();
        let has_extra = c["config"]["pools"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == "extra");
        has_extra.then_some(())
    })
    .await;
    assert_eq!(wait_primary(&nodes).await, primary);
    assert_eq!(n.roles_logged(), ["secondary"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_primary_hands_over_and_hooks_run_in_order() {
    let app = TestBackend::echo("app").await;
    let hooks = TempDir::new("hooks");
    let script = hooks.write(
        "hook.sh",
        &format!(
            "#!/bin/sh\necho \"$1 $2 $3\" >> {}/\"$3\".log\n",
            hooks.0.display()
        ),
    );
    std::process::Command::new("chmod")
        .args(["+x", script.to_str().unwrap()])
        .status()
        .unwrap();
    let mut specs = specs(&["a", "b", "c"]);
    for s in specs.iter_mut() {
        s.extra = format!("  hooks: {{ notify: {} }}\n", script.display());
    }
    let mut nodes = configure(&specs, &body(app.addr), TIMING);
    for n in nodes.iter_mut() {
        n.start();
    }
    let old = wait_primary(&nodes).await;
    let started = Instant::now();
    let n = node_mut(&mut nodes, &old);
    n.proc.as_mut().unwrap().signal(libc::SIGTERM);
    assert_eq!(n.proc.as_mut().unwrap().wait_exit(), 0);
    let roles = n.roles_logged();
    assert_eq!(roles, ["secondary", "primary", "secondary"], "{roles:?}");
    let log = n.proc().stderr.all().join("\n");
    assert!(log.contains("handed the role over"), "{log}");
    n.proc = None;
    let new = wait_primary(&nodes).await;
    assert_ne!(new, old);
    eprintln!("hand-over to {new} in {:?}", started.elapsed());

    // The script ran once per transition, in order, with ROLE TERM NODE_ID.
    let read = |name: &str| -> Vec<String> {
        std::fs::read_to_string(hooks.path(&format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let old_lines = eventually("the old primary's hooks", || async {
        let l = read(&old);
        (l.len() == 3).then_some(l)
    })
    .await;
    let words: Vec<&str> = old_lines
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(words, ["secondary", "primary", "secondary"]);
    assert!(old_lines.iter().all(|l| l.ends_with(&format!(" {old}"))));
    let new_node = node(&nodes, &new);
    let new_lines = eventually("the new primary's hooks", || async {
        let l = read(&new);
        l.last()
            .is_some_and(|x| x.starts_with("primary "))
            .then_some(l)
    })
    .await;
    let logged = new_node.roles_logged();
    let words: Vec<String> = new_lines
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(words, logged, "hooks and transitions in the same order");
    // The term passed to the hook is the new term.
    let term: u64 = new_lines
        .last()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let st = new_node.status().await.unwrap();
    assert_eq!(st["term"].as_u64(), Some(term));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_and_a_witness_survive_the_loss_of_the_primary() {
    let app = TestBackend::echo("app").await;
    // With a cluster secret: the witness proves it like any node.
    let mut specs = specs(&["a", "b", "w"]);
    for s in specs.iter_mut() {
        s.extra = format!("  secret: {SECRET}\n");
    }
    let mut nodes = configure(&specs, &body(app.addr), TIMING);
    for n in nodes.iter_mut() {
        n.start();
    }
    let first = wait_primary(&nodes).await;
    assert_ne!(first, "w");
    let killed = Instant::now();
    let n = node_mut(&mut nodes, &first);
    n.proc.as_mut().unwrap().signal(libc::SIGKILL);
    n.proc.as_mut().unwrap().wait_exit();
    n.proc = None;
    // The survivor and the witness are a majority of three.
    let second = wait_primary(&nodes).await;
    assert_ne!(second, first);
    eprintln!("new primary after kill -9 in {:?}", killed.elapsed());
    let w = node(&nodes, "w");
    let log = w.proc().stderr.all().join("\n");
    assert_eq!(w.roles_logged(), ["witness"], "{log}");

    // The killed node comes back as secondary; the primary stays.
    node_mut(&mut nodes, &first).start();
    eventually("the old primary rejoins", || async {
        (node(&nodes, &first).role().await.as_deref() == Some("secondary")).then_some(())
    })
    .await;
    assert_eq!(wait_primary(&nodes).await, second);
    // A witness takes part in votes but serves nothing: no listener, no admin.
    assert!(
        !log.contains("\"message\":\"listening\""),
        "a witness must not listen: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_higher_priority_node_preempts_after_its_delay() {
    let app = TestBackend::echo("app").await;
    let mut specs = specs(&["hi", "lo1", "lo2"]);
    for s in specs.iter_mut() {
        s.extra = if s.name == "hi" {
            "  priority: 200\n  preempt: true\n  preempt_delay: 2s\n".into()
        } else {
            "  priority: 100\n  preempt_delay: 2s\n".into()
        };
    }
    let mut nodes = configure(&specs, &body(app.addr), TIMING);
    node_mut(&mut nodes, "lo1").start();
    node_mut(&mut nodes, "lo2").start();
    let first = eventually("a primary among the low-priority nodes", || async {
        let mut p = None;
        for n in nodes.iter().filter(|n| n.running()) {
            if n.role().await.as_deref() == Some("primary") {
                p = Some(n.name.clone());
            }
        }
        p
    })
    .await;
    let t0 = Instant::now();
    node_mut(&mut nodes, "hi").start();
    // It first rejoins as a secondary...
    eventually("hi is a secondary", || async {
        (node(&nodes, "hi").role().await.as_deref() == Some("secondary")).then_some(())
    })
    .await;
    // ...and takes over only after preempt_delay of passing checks.
    eventually("hi becomes primary", || async {
        (node(&nodes, "hi").role().await.as_deref() == Some("primary")).then_some(())
    })
    .await;
    assert!(t0.elapsed() >= Duration::from_secs(2));
    assert_eq!(wait_primary(&nodes).await, "hi");
    let log = node(&nodes, &first).proc().stderr.all().join("\n");
    assert!(log.contains("handed the role over"), "{log}");
    // Then it stays: no flapping back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node(&nodes, "hi").roles_logged(), ["secondary", "primary"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_cluster_secret_is_kept_out() {
    let app = TestBackend::echo("app").await;
    let mut specs = specs(&["a", "b", "c"]);
    for s in specs.iter_mut() {
        let secret = if s.name == "c" {
            "not-the-cluster-secret"
        } else {
            SECRET
        };
        s.extra = format!("  secret: {secret}\n");
    }
    let mut nodes = configure(&specs, &body(app.addr), TIMING);
    for n in nodes.iter_mut() {
        n.start();
    }
    // a and b are a majority of three: they elect a primary between them.
    let primary = eventually("a primary agreed by a and b", || {
        agreed_primary(&nodes[..2])
    })
    .await;
    assert_ne!(primary, "c");
    // c's connections are refused by both (and theirs by c)...
    for name in ["a", "b", "c"] {
        let n = node(&nodes, name);
        n.proc().stderr.wait_for("a refused handshake", |l| {
            l.contains("refused a cluster connection")
        });
    }
    // ...so c never hears of the primary, and the others never hear from c.
    let c = node(&nodes, "c")
        .status()
        .await
        .expect("c answers its admin API");
    assert!(c["leader"].is_null(), "{c}");
    assert_eq!(c["role"], "secondary", "{c}");
    let a = node(&nodes, "a").status().await.expect("a answers");
    let seen_c = a["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "c")
        .cloned()
        .unwrap();
    assert!(seen_c["last_contact_ms"].is_null(), "{a}");
    // The secret never leaves the node through the admin API.
    let config = call(node(&nodes, "a").admin(), "GET", "/api/v1/config", "")
        .await
        .text();
    assert!(!config.contains(SECRET), "{config}");
    assert!(config.contains("\"secret\":\"<redacted>\""), "{config}");
}

/// Across crashes, restarts and hand-overs, the term each node's notify hook is
/// given never goes back: a restarted node reports the term it had reached, and
/// a step-down reports the current term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_terms_never_go_back_across_transitions() {
    let app = TestBackend::echo("app").await;
    let hooks = HookLog::create();
    let mut specs = specs(&["a", "b", "c"]);
    for s in specs.iter_mut() {
        s.extra = format!("  hooks: {{ notify: {} }}\n", hooks.script.display());
    }
    let mut nodes = configure(&specs, &body(app.addr), TIMING);
    for n in nodes.iter_mut() {
        n.start();
    }
    // Three rounds: kill -9 the primary, SIGTERM the next, kill -9 the third;
    // each is restarted once another primary is agreed.
    for sig in [libc::SIGKILL, libc::SIGTERM, libc::SIGKILL] {
        let old = wait_primary(&nodes).await;
        eventually("the primary's hook ran", || async {
            (hooks.lines(&old).last().map(|(r, _)| r.as_str()) == Some("primary")).then_some(())
        })
        .await;
        let n = node_mut(&mut nodes, &old);
        n.proc.as_mut().unwrap().signal(sig);
        n.proc.as_mut().unwrap().wait_exit();
        n.proc = None;
        let new = wait_primary(&nodes).await;
        assert_ne!(new, old);
        node_mut(&mut nodes, &old).start();
        eventually("the old primary rejoins", || async {
            (node(&nodes, &old).role().await.as_deref() == Some("secondary")).then_some(())
        })
        .await;
    }
    wait_primary(&nodes).await;
    let mut total = 0;
    for name in ["a", "b", "c"] {
        let lines = hooks.lines(name);
        total += lines.len();
        for w in lines.windows(2) {
            assert!(
                w[1].1 >= w[0].1,
                "{name}: the hook's term went back: {lines:?}"
            );
        }
        // Every start after the first reports a term already reached.
        assert!(
            lines.iter().skip(1).all(|(_, t)| *t > 0),
            "{name}: {lines:?}"
        );
    }
    // 3 starts + 3 restarts + at least 4 promotions + 1 hand-over step-down.
    assert!(total >= 11, "too few hook runs: {total}");
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every peer connection goes through a relay that keeps a copy of the bytes:
/// a config change carrying a private key and a marked value replicates to
/// every node, and the capture holds neither, nor the cluster secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_traffic_is_encrypted_on_the_wire() {
    let app = TestBackend::echo("app").await;
    let mut specs = specs(&["a", "b", "c"]);
    for s in specs.iter_mut() {
        s.extra = format!("  secret: {SECRET}\n");
    }
    let mut nodes = configure(&specs, &body(app.addr), TIMING);
    // Each node reaches the others through relays only.
    let mut relays = Vec::new();
    for s in &specs {
        relays.push(Relay::start(s.port).await);
    }
    for n in nodes.iter() {
        let mut text = std::fs::read_to_string(&n.config).unwrap();
        for (s, r) in specs.iter().zip(&relays) {
            text = text.replace(
                &format!("address: \"127.0.0.1:{}\"", s.port),
                &format!("address: \"127.0.0.1:{}\"", r.port),
            );
        }
        std::fs::write(&n.config, text).unwrap();
    }
    for n in nodes.iter_mut() {
        n.start();
    }
    let primary = wait_primary(&nodes).await;
    let key = "-----BEGIN PRIVATE KEY-----";
    let marker = "wire-marker-7c1e";
    let new_config = format!(
        "# {key}\n# MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n# -----END PRIVATE KEY-----\npools:\n  - name: {marker}\n    backends: [\"{}\"]\nroutes: [{{ pool: {marker} }}]\n",
        app.addr
    );
    let r = call(
        node(&nodes, &primary).admin(),
        "PUT",
        "/api/v1/config",
        &new_config,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for n in &nodes {
        eventually("the config on every node", || async {
            let c = call(n.admin(), "GET", "/api/v1/config", "").await.text();
            c.contains(marker).then_some(())
        })
        .await;
    }
    let wire: Vec<u8> = relays.iter().flat_map(|r| r.bytes()).collect();
    assert!(wire.len() > 1000, "the relays saw {} bytes", wire.len());
    // TLS records (application data, TLS 1.2 record version as 1.3 sends it).
    assert!(wire.windows(3).any(|w| w == [0x17, 0x03, 0x03]));
    for clear in [key, "PRIVATE KEY", marker, SECRET, "append", "vote"] {
        assert!(
            !contains(&wire, clear),
            "`{clear}` crossed the wire in clear"
        );
    }
}

/// A node away while 1,000 admin changes are made catches up from a snapshot
/// (the log it missed is compacted away), and restarts from its own saved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_for_1000_changes_catches_up_from_a_snapshot() {
    let app = TestBackend::echo("app").await;
    let mut nodes = configure(&specs(&["a", "b", "c"]), &body(app.addr), TIMING);
    for n in nodes.iter_mut() {
        n.start();
    }
    let primary = wait_primary(&nodes).await;
    let away = nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != primary)
        .unwrap();
    let n = node_mut(&mut nodes, &away);
    n.proc.as_mut().unwrap().signal(libc::SIGTERM);
    assert_eq!(n.proc.as_mut().unwrap().wait_exit(), 0);
    n.proc = None;

    // 1,000 changes on the primary: drain and enable the backend in turn, from
    // four clients at once.
    let admin = node(&nodes, &primary).admin();
    let backend = app.addr.to_string();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let action = if (w + i) % 2 == 0 { "drain" } else { "enable" };
                let path = format!("/api/v1/pools/app/backends/{backend}/{action}");
                let r = call(admin, "POST", &path, "").await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Then one change to look for, and the backend left draining.
    let r = call(
        admin,
        "POST",
        "/api/v1/pools/app/backends",
        r#"{"address":"127.0.0.1:9"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let path = format!("/api/v1/pools/app/backends/{backend}/drain");
    assert_eq!(call(admin, "POST", &path, "").await.status, StatusCode::OK);
    let p = node(&nodes, &primary);
    p.proc()
        .stderr
        .wait_for("a snapshot", |l| l.contains("snapshot taken"));
    let lines = |n: &Node| {
        std::fs::read_to_string(n.dir.path("state").join("raft-log.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    // The log is compacted behind the snapshot.
    eventually("the primary's log compacted", || async {
        (lines(p) < 700).then_some(())
    })
    .await;

    // The returning node gets the snapshot, then the log after it.
    node_mut(&mut nodes, &away).start();
    let n = node(&nodes, &away);
    n.proc().stderr.wait_for("the snapshot installed", |l| {
        l.contains("installing a snapshot from the primary")
    });
    eventually("the added backend on the returning node", || async {
        backend_state(n, "app", "127.0.0.1:9").await
    })
    .await;
    eventually("the backend draining on the returning node", || async {
        (backend_state(n, "app", &backend).await.as_deref() == Some("draining")).then_some(())
    })
    .await;
    assert!(lines(n) < 700, "{} log lines", lines(n));

    // Restarted, it starts from its saved snapshot and the log after it.
    let n = node_mut(&mut nodes, &away);
    n.proc.as_mut().unwrap().signal(libc::SIGTERM);
    assert_eq!(n.proc.as_mut().unwrap().wait_exit(), 0);
    n.start();
    let n = node(&nodes, &away);
    n.proc().stderr.wait_for("the saved snapshot", |l| {
        l.contains("applying the saved snapshot")
    });
    eventually("the added backend after a restart", || async {
        backend_state(n, "app", "127.0.0.1:9").await
    })
    .await;
    assert_eq!(
        backend_state(n, "app", &backend).await.as_deref(),
        Some("draining")
    );
}
