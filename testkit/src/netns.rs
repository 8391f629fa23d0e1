//! Test hosts in network namespaces: each host has an `eth0` (a veth) plugged
//! into a bridge that lives in its own "switch" namespace, so nothing touches
//! the machine's own network. Cutting a host's cable is setting its switch port
//! down. Code runs "on" a host from a thread that has entered its namespace
//! (sockets belong to the namespace of the thread that creates them).

use crate::{Fulcrum, TempDir, bin};
use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `ip ARGS`; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Lab {
    prefix: String,
    switch: String,
    hosts: Vec<(String, String)>,
}

static LABS: AtomicU64 = AtomicU64::new(0);

impl Lab {
    /// Creates a switch and one namespace per `(host, ip/prefix)`.
    pub fn new(hosts: &[(&str, &str)]) -> Lab {
        let prefix = format!(
            "fl{}x{}",
            std::process::id() % 100_000,
            LABS.fetch_add(1, Relaxed)
        );
        let switch = format!("{prefix}-sw");
        let lab = Lab {
            prefix: prefix.clone(),
            switch: switch.clone(),
            hosts: hosts
                .iter()
                .map(|(h, a)| (h.to_string(), a.to_string()))
                .collect(),
        };
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for (i, (h, addr)) in lab.hosts.iter().enumerate() {
            let ns = lab.ns(h);
            let port = format!("p{i}");
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &port, "up"]);
            if addr.contains(':') {
                // IPv6: usable at once, without duplicate address detection.
                ip(&["-n", &ns, "addr", "add", addr, "dev", "eth0", "nodad"]);
            } else {
                ip(&["-n", &ns, "addr", "add", addr, "dev", "eth0"]);
            }
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub fn switch(&self) -> &str {
        &self.switch
    }

    fn port(&self, host: &str) -> String {
        let i = self
            .hosts
            .iter()
            .position(|(h, _)| h == host)
            .expect("known host");
        format!("p{i}")
    }

    /// Pulls the host's cable: its switch port goes down.
    pub fn cut(&self, host: &str) {
        ip(&["-n", &self.switch, "link", "set", &self.port(host), "down"]);
    }

    pub fn heal(&self, host: &str) {
        ip(&["-n", &self.switch, "link", "set", &self.port(host), "up"]);
    }

    /// Whether `addr` (an IP) is configured on the host's eth0.
    pub fn has_addr(&self, host: &str, addr: &str) -> bool {
        let (family, word) = if addr.contains(':') {
            ("-6", "inet6")
        } else {
            ("-4", "inet")
        };
        self.ip_on(host, &[family, "-o", "addr", "show", "dev", "eth0"])
            .contains(&format!("{word} {addr}/"))
    }

    /// The MAC address of the host's eth0.
    pub fn mac(&self, host: &str) -> String {
        word_after(
            &self.ip_on(host, &["-o", "link", "show", "dev", "eth0"]),
            "link/ether",
        )
        .unwrap_or_default()
    }

    /// The link-layer address the host's neighbour table has for `addr`, if any.
    pub fn neighbour(&self, host: &str, addr: &str) -> Option<String> {
        word_after(
            &self.ip_on(host, &["neigh", "show", addr, "dev", "eth0"]),
            "lladdr",
        )
    }

    /// What `ip ARGS` prints inside the host's namespace.
    fn ip_on(&self, host: &str, args: &[&str]) -> String {
        let ns = self.ns(host);
        let out = Command::new("ip")
            .args(["-n", ns.as_str()])
            .args(args)
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Starts `fulcrum ARGS` inside the host's namespace; waits for `ready`.
    pub fn fulcrum(&self, host: &str, config: PathBuf, args: &[&str], ready: &str) -> Fulcrum {
        let ns = self.ns(host);
        let mut full = vec!["netns", "exec", ns.as_str(), bin()];
        full.extend_from_slice(args);
        Fulcrum::spawn_program(TempDir::new("netns-node"), config, "ip", &full, ready)
    }
}

/// The whitespace-separated word that follows `key` in `text`.
fn word_after(text: &str, key: &str) -> Option<String> {
    text.split_whitespace()
        .skip_while(|w| *w != key)
        .nth(1)
        .map(str::to_string)
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (h, _) in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(h)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .status();
    }
}

/// Runs `f` on a thread inside namespace `ns`.
pub fn on_host<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a descriptor we hold; it changes this thread only.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Runs an async block to completion inside namespace `ns`.
pub fn block_on_host<T: Send + 'static, F>(ns: &str, f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
{
    on_host(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .expect("host thread")
}

type Samples = Arc<Mutex<Vec<(Instant, Vec<String>)>>>;

/// Who holds the VIP, sampled every 50 ms: (when, holders).
pub struct VipSampler {
    pub samples: Samples,
    /// Hosts that count as gone (a dead host's address is gone with it).
    pub dead: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VipSampler {
    pub fn start(lab: &Lab, hosts: &[&str], vip: &str) -> VipSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let dead = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let hosts: Vec<(String, String)> =
            hosts.iter().map(|h| (h.to_string(), lab.ns(h))).collect();
        let (s, d, st, vip) = (samples.clone(), dead.clone(), stop.clone(), vip.to_string());
        let thread = std::thread::spawn(move || {
            while !st.load(Relaxed) {
                let t = Instant::now();
                let mut holders = Vec::new();
                for (h, ns) in &hosts {
                    if d.lock().unwrap().contains(h) {
                        continue;
                    }
                    let out = Command::new("ip")
                        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"])
                        .output();
                    if let Ok(out) = out
                        && String::from_utf8_lossy(&out.stdout).contains(&format!("inet {vip}/"))
                    {
                        holders.push(h.clone());
                    }
                }
                s.lock().unwrap().push((t, holders));
                std::thread::sleep(Duration::from_millis(50).saturating_sub(t.elapsed()));
            }
        });
        VipSampler {
            samples,
            dead,
            stop,
            thread: Some(thread),
        }
    }

    /// The current holder(s) per the latest sample.
    pub fn holders(&self) -> Vec<String> {
        self.samples
            .lock()
            .unwrap()
            .last()
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    }

    /// The longest stretch (first to last sample) with two or more holders,
    /// among samples taken after `from`.
    pub fn longest_double(&self, from: Instant) -> Duration {
        let s = self.samples.lock().unwrap();
        let mut longest = Duration::ZERO;
        let mut start: Option<Instant> = None;
        for (t, h) in s.iter().filter(|(t, _)| *t >= from) {
            if h.len() >= 2 {
                let st = *start.get_or_insert(*t);
                // A single sample counts as one sampling period.
                longest = longest.max(t.duration_since(st) + Duration::from_millis(50));
            } else {
                start = None;
            }
        }
        longest
    }

    /// When the VIP was first seen on `host` after `from`.
    pub fn first_held_by(&self, host: &str, from: Instant) -> Option<Instant> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .find(|(t, h)| *t >= from && h.iter().any(|x| x == host))
            .map(|(t, _)| *t)
    }
}

impl Drop for VipSampler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Requests to `url_addr` from inside a host, every 20 ms: (when, succeeded).
pub struct ClientLoop {
    pub results: Arc<Mutex<Vec<(Instant, bool)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientLoop {
    pub fn start(ns: &str, target: std::net::SocketAddr) -> ClientLoop {
        let results = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (results.clone(), stop.clone());
        let thread = on_host(ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                while !st.load(Relaxed) {
                    let t = Instant::now();
                    let req = http::Request::get("/")
                        .header("host", "app")
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .expect("request");
                    let ok = matches!(
                        tokio::time::timeout(
                            Duration::from_millis(500),
                            crate::client::try_send(target, req)
                        )
                        .await,
                        Ok(Ok(resp)) if resp.status.is_success()
                    );
                    r.lock().unwrap().push((t, ok));
                    tokio::time::sleep(Duration::from_millis(20).saturating_sub(t.elapsed())).await;
                }
            });
        });
        ClientLoop {
            results,
            stop,
            thread: Some(thread),
        }
    }

    /// The first success after `from`.
    pub fn first_success_after(&self, from: Instant) -> Option<Instant> {
        self.results
            .lock()
            .unwrap()
            .iter()
            .find(|(t, ok)| *t >= from && *ok)
            .map(|(t, _)| *t)
    }

    /// Failed requests after `from`.
    pub fn failures_after(&self, from: Instant) -> usize {
        self.results
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, ok)| *t >= from && !ok)
            .count()
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
