//! Support for Fulcrum's integration tests (`tests/*.rs`): the real `fulcrum`
//! binary started with a config, real backend servers on 127.0.0.1 ephemeral
//! ports, and small HTTP/WebSocket clients. A crate of its own, not a module
//! each test binary compiles and uses in part: the compiler and clippy check it
//! once, with no dead-code allow. An item is public only when a test uses it,
//! so the compiler reports the rest when it falls out of use.

pub mod backend;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod docker;
pub mod netns;
pub mod pebble;
pub mod smtp;
pub mod tls;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Generous deadline for anything we poll for. A passing test never waits it
/// out; it is long because a 2-core CI machine running eight three-node
/// clusters at once (debug builds, TLS on every peer link) can take well over
/// the usual few seconds to elect, and a slow machine must not fail a test.
pub const DEADLINE: Duration = Duration::from_secs(45);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "fulcrum-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The `fulcrum` binary cargo built for the integration tests. Cargo names it
/// in `CARGO_BIN_EXE_fulcrum` while it runs a test; a test binary started by
/// hand finds it where cargo puts it: test binaries live in
/// `target/PROFILE/deps/`, the binary in `target/PROFILE/`.
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("CARGO_BIN_EXE_fulcrum") {
            return path;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let path = exe
            .parent()
            .and_then(Path::parent)
            .map(|profile| profile.join("fulcrum"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no fulcrum binary next to {}: run the tests with cargo test",
                    exe.display()
                )
            });
        path.to_str().expect("utf-8 path").to_string()
    })
}

/// Scratch space that outlives a test run (`target/tmp`, what cargo calls
/// `CARGO_TARGET_TMPDIR` when it compiles an integration test).
pub(crate) fn target_tmp() -> PathBuf {
    let profile = Path::new(bin()).parent().expect("target/PROFILE");
    profile.parent().expect("target").join("tmp")
}

/// Log lines of a child process, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Lines {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Lines {
    pub fn all(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().clone()
    }

    /// Waits until a line satisfies `pred`; returns it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        let (lock, cv) = &*self.inner;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out waiting for {what}; log so far:\n{}",
                    lines.join("\n")
                );
            }
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.inner
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| pred(l))
            .count()
    }

    fn push(&self, line: String) {
        let (lock, cv) = &*self.inner;
        lock.lock().unwrap().push(line);
        cv.notify_all();
    }

    fn spawn_reader(&self, r: impl std::io::Read + Send + 'static) {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
        });
    }
}

/// A running `fulcrum` process.
pub struct Fulcrum {
    pub child: Child,
    pub stderr: Lines,
    pub stdout: Lines,
    dir: TempDir,
    config: PathBuf,
}

impl Fulcrum {
    /// Writes `config` to a temp dir and runs `fulcrum run` on it; waits until
    /// every listener is up.
    pub fn start(config: &str) -> Fulcrum {
        let dir = TempDir::new("run");
        let path = dir.write("fulcrum.yaml", &with_test_admin(config));
        let p = path.to_str().unwrap().to_string();
        Self::spawn(dir, path, &["--log-format", "json", "run", "-c", &p])
    }

    /// Like [`Fulcrum::start`], with `--workers N` (the default is one worker
    /// per CPU, which differs between machines).
    pub fn start_workers(config: &str, workers: usize) -> Fulcrum {
        let dir = TempDir::new("run");
        let path = dir.write("fulcrum.yaml", &with_test_admin(config));
        let p = path.to_str().unwrap().to_string();
        let n = workers.to_string();
        let args = ["--log-format", "json", "run", "-c", &p, "--workers", &n];
        Self::spawn(dir, path, &args)
    }

    pub fn spawn(dir: TempDir, config: PathBuf, args: &[&str]) -> Fulcrum {
        Self::spawn_until(dir, config, args, "fulcrum started")
    }

    /// Spawns and waits for a log line containing `ready` (or an error).
    pub(crate) fn spawn_until(
        dir: TempDir,
        config: PathBuf,
        args: &[&str],
        ready: &str,
    ) -> Fulcrum {
        Self::spawn_program(dir, config, bin(), args, ready)
    }

    /// Like [`Fulcrum::spawn_until`], through another program (e.g. `ip netns
    /// exec NS fulcrum ...`, which execs, so the PID is fulcrum's).
    pub(crate) fn spawn_program(
        dir: TempDir,
        config: PathBuf,
        program: &str,
        args: &[&str],
        ready: &str,
    ) -> Fulcrum {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fulcrum");
        let stderr = Lines::default();
        stderr.spawn_reader(child.stderr.take().unwrap());
        let stdout = Lines::default();
        stdout.spawn_reader(child.stdout.take().unwrap());
        let f = Fulcrum {
            child,
            stderr,
            stdout,
            dir,
            config,
        };
        f.stderr.wait_for("startup", |l| {
            l.contains(ready) || l.contains("\"level\":\"ERROR\"")
        });
        f
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The bound address of the listener configured as `configured` (e.g.
    /// "127.0.0.1:0" appears once per listener; `nth` picks among equal ones).
    pub fn listener(&self, nth: usize) -> SocketAddr {
        let lines: Vec<String> = self
            .stderr
            .all()
            .into_iter()
            .filter(|l| l.contains("\"message\":\"listening\""))
            .collect();
        let line = lines.get(nth).unwrap_or_else(|| {
            panic!("no listener #{nth}; log:\n{}", self.stderr.all().join("\n"))
        });
        let v: serde_json::Value = serde_json::from_str(line).expect("json log line");
        v["address"].as_str().unwrap().parse().unwrap()
    }

    /// The admin API's bound address.
    pub fn admin(&self) -> SocketAddr {
        self.logged_addr("admin API listening")
    }

    /// The address a named log field reported in a line with `message`.
    fn logged_addr(&self, message: &str) -> SocketAddr {
        let line = self.stderr.wait_for(message, |l| {
            l.contains(&format!("\"message\":\"{message}\""))
        });
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        v["address"].as_str().unwrap().parse().unwrap()
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn rewrite_config(&self, text: &str) {
        // Write atomically so a file watcher never sees half a file.
        let tmp = self.dir.path("next.yaml");
        std::fs::write(&tmp, with_test_admin(text)).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                panic!(
                    "fulcrum did not exit; log:\n{}",
                    self.stderr.all().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Access-log lines (JSON objects that carry a request_id).
    pub fn access_lines(&self) -> Vec<serde_json::Value> {
        self.stderr
            .all()
            .iter()
            .filter(|l| l.contains("\"request_id\"") && l.contains("\"status\""))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Fulcrum {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every test instance gets its admin API on an ephemeral port (the default,
/// 127.0.0.1:9000, would collide between tests running in parallel).
fn with_test_admin(config: &str) -> String {
    if config.starts_with("admin:") || config.contains("\nadmin:") {
        config.to_string()
    } else {
        format!("admin: {{ address: \"127.0.0.1:0\" }}\n{config}")
    }
}

/// An address on 127.0.0.1 where nothing listens: bound, then released. For
/// configs that name a port before their process starts, and for a backend
/// that refuses connections.
///
/// The port comes from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), which the kernel never hands out on its
/// own: between the release here and the bind by the process under test, no
/// outgoing connection and no `bind(:0)` elsewhere on the machine (another
/// test's clients, a benchmark) can take it. A port from `bind(:0)` could be
/// taken in that window, and a test once failed with "Address already in use"
/// that way. Ports are tried in turn from a place that differs per process, so
/// tests of one binary running at once do not pick the same one.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = below_ephemeral_range();
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let n = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = low + (n % span) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("local address");
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Ports `[low, high)` below the kernel's ephemeral range: 10000 up to its
/// start (32768 by default), or the ports above it when it starts too low.
fn below_ephemeral_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    match range {
        Some((first, _)) if first > 12_000 => (10_000, first),
        Some((_, last)) if last < 60_000 => (last + 1, 65_000),
        _ => (10_000, 32_768),
    }
}

/// The port of [`free_addr`].
pub fn free_port() -> u16 {
    free_addr().port()
}

/// What `fulcrum ctl` printed and how it ended.
pub struct CtlOutput {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `fulcrum ctl ARGS` without the admin settings of the environment
/// (`FULCRUM_ADMIN`, `FULCRUM_ADMIN_TOKEN`, `FULCRUM_ADMIN_CA`): only ARGS count.
pub fn ctl(args: &[&str]) -> CtlOutput {
    let out = Command::new(bin())
        .arg("ctl")
        .args(args)
        .env_remove("FULCRUM_ADMIN")
        .env_remove("FULCRUM_ADMIN_TOKEN")
        .env_remove("FULCRUM_ADMIN_CA")
        .output()
        .expect("run fulcrum ctl");
    CtlOutput {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Runs `fulcrum validate` on a config text; returns (exit code, stdout, stderr).
pub fn validate(config: &str) -> (i32, String, String) {
    validate_env(config, &[])
}

pub fn validate_env(config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = TempDir::new("validate");
    let path = dir.write("fulcrum.yaml", config);
    let out = Command::new(bin())
        .args(["validate", "-c", path.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .expect("run validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "CFG"),
    )
}

/// Polls `f` until it returns Some, or panics after DEADLINE.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
