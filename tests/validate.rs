//! `fulcrum validate` on good and bad configs: every error, with FILE:LINE:COL.

use testkit::validate;

fn assert_errors(config: &str, expected: &[&str]) {
    let (code, out, err) = validate(config);
    assert_eq!(code, 1, "expected failure; stdout={out} stderr={err}");
    for e in expected {
        assert!(
            err.lines().any(|l| l.starts_with("CFG:") && l.contains(e)),
            "missing `{e}` in:\n{err}"
        );
    }
}

#[test]
fn good_config_is_ok() {
    let (code, out, err) = validate(
        "
listeners:
  - address: \"0.0.0.0:8080\"
  - \":8081\"
access_log: { enabled: true, format: json, path: stderr }
limits: { max_header_bytes: 64KiB, max_body_bytes: 10MB, header_read_timeout: 10s, max_connections: 100 }
trusted_proxies: [\"10.0.0.0/8\", \"192.168.1.1\"]
shutdown_timeout: 30s
pools:
  - name: app
    algorithm: round_robin
    backends:
      - address: \"10.0.0.11:80\"
      - address: \"http://10.0.0.12:8080\"
        weight: 3
      - \"h2c://10.0.0.13:9000\"
    timeouts: { connect: 5s, response_header: 60s, idle: 90s }
routes:
  - host: app.example.com
    path_prefix: /
    pool: app
    strip_prefix: false
    headers:
      request: { set: { X-Env: prod }, remove: [X-Debug] }
      response: { set: {}, remove: [Server] }
  - host: \"*.example.com\"
    pool: app
  - pool: app
",
    );
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
}

#[test]
fn json_config_is_ok() {
    let (code, out, err) = validate(
        r#"{"listeners": [{"address": "127.0.0.1:8080"}], "pools": [{"name": "a", "backends": ["127.0.0.1:9"]}], "routes": [{"pool": "a"}]}"#,
    );
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
}

#[test]
fn unknown_keys_with_position_and_suggestion() {
    assert_errors(
        "pools:\n  - name: a\n    algoritm: round_robin\n    backends: [\"127.0.0.1:1\"]\nroutes:\n  - pool: a\n    pathprefix: /x\nbogus: 1\n",
        &[
            "CFG:3:5: unknown key `algoritm` in a pool (did you mean `algorithm`?)",
            "CFG:7:5: unknown key `pathprefix`",
            "CFG:8:1: unknown key `bogus`",
        ],
    );
}

#[test]
fn bad_types_durations_and_sizes() {
    assert_errors(
        "shutdown_timeout: 5x\nlimits:\n  max_header_bytes: lots\n  max_connections: many\n  header_read_timeout: 10\npools:\n  - name: a\n    backends: \"127.0.0.1:1\"\n    timeouts: { connect: -1s }\nroutes: []\n",
        &[
            "CFG:1:19: shutdown_timeout: unknown unit `x`",
            "CFG:3:21: max_header_bytes",
            "CFG:4:20: max_connections must be an integer",
            "CFG:5:24: header_read_timeout: duration `10` needs a unit",
            "CFG:8:15: backends must be a list",
            "CFG:9:26: connect",
        ],
    );
}

#[test]
fn duplicate_names_and_unknown_pools() {
    assert_errors(
        "pools:\n  - name: a\n    backends: [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n  - name: a\n    backends: []\nroutes:\n  - { pool: b }\n  - { host: x.com, pool: a }\n  - { host: x.com, pool: a }\n",
        &[
            "CFG:4:11: duplicate pool name `a`",
            "duplicate backend 127.0.0.1:1 in pool `a`",
            "CFG:7:13: route refers to unknown pool `b`",
            "CFG:9:5: duplicate route",
        ],
    );
}

#[test]
fn bad_addresses() {
    assert_errors(
        "listeners:\n  - address: \"999.1.1.1:80\"\n  - address: \"localhost\"\npools:\n  - name: a\n    backends: [\"ftp://x:1\", \"host:notaport\", \"::1:80\"]\nroutes: [{ pool: a }]\ntrusted_proxies: [\"10.0.0.0/99\"]\n",
        &[
            "CFG:2:14: invalid listen address `999.1.1.1:80`",
            "CFG:3:14: invalid listen address `localhost`",
            "unsupported scheme in backend address `ftp://x:1`",
            "bad port `notaport`",
            "IPv6 addresses must be written in brackets",
            "CFG:8:19: invalid trusted proxy",
        ],
    );
}

#[test]
fn a_queue_needs_a_cap_and_caps_are_checked() {
    assert_errors(
        "pools:\n  - name: a\n    backends: [\"127.0.0.1:1\"]\n    queue: { size: 10 }\n  - name: b\n    max_requests: -1\n    backends:\n      - { address: \"127.0.0.1:2\", max_requests: many }\nroutes: [{ pool: a }]\n",
        &[
            "CFG:4:5: `queue` needs `max_requests`",
            "CFG:6:19: max_requests must be between 0 and 1000000",
            "CFG:8:49: max_requests must be an integer",
        ],
    );
    let (code, out, err) = validate(
        "pools:\n  - name: a\n    max_requests: 8\n    queue: { size: 100, timeout: 2s }\n    backends:\n      - \"127.0.0.1:1\"\n      - { address: \"127.0.0.1:2\", max_requests: 2 }\nroutes: [{ pool: a }]\n",
    );
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
}

#[test]
fn syntax_error_has_a_position() {
    assert_errors("pools:\n  - name: [a\n  b: 1\n", &["CFG:3:4: "]);
}

#[test]
fn cache_errors_have_positions() {
    assert_errors(
        "pools: [{ name: p, backends: [\"127.0.0.1:1\"] }]\nroutes:\n  - { pool: p, cache: { ttl: 10s } }\n",
        &["CFG:3:25: unknown key `ttl` in cache (known keys: enabled, max_size"],
    );
}

#[test]
fn discovery_errors_have_positions() {
    assert_errors(
        "discovery:\n  docker:\n    endpoint: \"ssh://host\"\n    read: [traefik, kubernetes]\npools: []\nroutes: []\n",
        &[
            "CFG:3:15: endpoint `ssh://host` must be unix:///path/to.sock or tcp://host:port",
            "CFG:4:21: read: unknown convention `kubernetes` (nginx-proxy | traefik | fulcrum)",
        ],
    );
}

#[test]
fn cluster_section_errors_have_positions() {
    assert_errors(
        "cluster:
  node_id: \"n 1\"
  bind: \"0.0.0.0:7946\"
  peers:
    - { id: n2, address: \"10.0.0.12\" }
    - { id: n2, address: \"10.0.0.13:7946\" }
  heartbeat_interval: 500ms
  election_timeout: 1s
  preempt_delay: soon
  vip: { address: \"10.0.0.300/24\", interface: eth0 }
  hooks: { notify: /nonexistent/hook.sh, webhook: \"ftp://x\" }
  colour: blue
  secret: short
pools: []
routes: []
",
        &[
            "CFG:2:12: node_id `n 1`",
            "CFG:3:9: cluster bind `0.0.0.0:7946`: give the address the other nodes reach",
            "CFG:5:26: peer address `10.0.0.12`: expected host:port",
            "CFG:6:7: node id `n2` is used twice (also at line 5)",
            "CFG:8:21: election_timeout (1s) must be at least 3 × heartbeat_interval (500ms)",
            "CFG:9:18:",
            "CFG:10:19: invalid vip address `10.0.0.300/24`",
            "notify script `/nonexistent/hook.sh` does not exist",
            "webhook `ftp://x` must start with http:// or https://",
            "CFG:12:3: unknown key `colour`",
            "CFG:13:11: cluster secret: use at least 16 characters",
        ],
    );
    assert_errors(
        "cluster: { bind: \"10.0.0.1:7946\" }\npools: []\nroutes: []\n",
        &["missing `node_id`", "missing `peers`"],
    );
}

#[test]
fn a_cluster_config_validates() {
    let (code, out, err) = validate(
        "cluster:
  node_id: n1
  bind: \"10.0.0.11:7946\"
  peers:
    - { id: n2, address: \"10.0.0.12:7946\" }
    - { id: w, address: \"witness.internal:7946\", witness: true }
  state_dir: /var/lib/fulcrum
  heartbeat_interval: 300ms
  election_timeout: 1500ms
  priority: 150
  preempt: true
  preempt_delay: 300s
  vip: { address: \"10.0.0.10/24\", interface: eth0, garp_count: 5 }
pools: []
routes: []
",
    );
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
}

#[test]
fn env_interpolation() {
    let (code, _, err) = testkit::validate_env(
        "pools:\n  - name: a\n    backends: [\"${FULCRUM_TEST_BACKEND}\"]\nroutes: [{ pool: a }]\n",
        &[("FULCRUM_TEST_BACKEND", "127.0.0.1:4321")],
    );
    assert_eq!(code, 0, "{err}");
    assert_errors(
        "pools:\n  - name: a\n    backends: [\"${UNSET_FULCRUM_VAR_X}\"]\nroutes: [{ pool: a }]\n",
        &["CFG:3:16: backend address `` has no host"],
    );
}

#[test]
fn shipped_examples_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut files = vec![format!("{root}/fulcrum.yaml")];
    for e in std::fs::read_dir(format!("{root}/cluster")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            files.push(p.display().to_string());
        }
    }
    assert!(files.len() >= 7, "{files:?}");
    for path in files {
        // The cluster examples take their secret from the environment, as they
        // should in production.
        let out = std::process::Command::new(testkit::bin())
            .args(["validate", "-c", &path])
            .env("FULCRUM_CLUSTER_SECRET", "an-example-secret-for-the-test")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn operator_friendly_values_and_warnings() {
    // Header values written as numbers or booleans are the text they show.
    let (code, out, err) = validate(
        "pools:\n  - name: app\n    backends:\n      - { address: \"10.0.0.1:80\", name: app-1, region: eu }\nroutes:\n  - pool: app\n    headers:\n      request: { set: { X-Version: 2, X-Debug: true, X-Ratio: 0.5 } }\naccess_log: { fields: [time, status, user_agent, sni] }\n",
    );
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
    assert!(err.is_empty(), "{err}");
    // No routes: valid, but said.
    let (code, out, err) = validate("pools: []\n");
    assert_eq!((code, out.as_str()), (0, "ok\n"));
    assert!(err.contains("warning: no routes"), "{err}");
    // Names and fields are checked.
    assert_errors(
        "pools:\n  - name: app\n    backends:\n      - { address: \"10.0.0.1:80\", name: x }\n      - { address: \"10.0.0.2:80\", name: x }\nroutes:\n  - pool: app\naccess_log: { fields: [status, colour] }\n",
        &[
            "duplicate backend name `x`",
            "unknown access log field `colour`",
        ],
    );
    assert_errors(
        "pools:\n  - name: app\n    backends: [\"http://bad host:80\"]\nroutes:\n  - pool: app\n",
        &["neither an IP address nor a host name"],
    );
}

#[test]
fn run_without_a_config_file_says_what_to_do() {
    let dir = testkit::TempDir::new("no-config");
    let out = std::process::Command::new(testkit::bin())
        .arg("run")
        .current_dir(&dir.0)
        .env_remove("FULCRUM_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fulcrum run -c FILE") && err.contains("fulcrum demo"),
        "{err}"
    );
}
