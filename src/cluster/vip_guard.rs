//! The VIP guard: a small child process (`fulcrum vip-guard`, started by a node
//! with a `vip`) that removes the floating address when the node stops renewing
//! its lease. A primary frozen by SIGSTOP (or stalled as a whole) cannot remove
//! the address itself; its guard, still running, does so when the lease the node
//! last reported runs out, the same instant a running node would have let go,
//! and so before any other node can be elected.
//!
//! The node writes lines to the guard's stdin: `hold MS` (the lease ends at MS,
//! CLOCK_MONOTONIC milliseconds, shared by every process) and `release`. The
//! guard writes `dropped` to its stdout when it removed the address, so a node
//! that was only slow takes it again once its lease is renewed. When the node
//! exits (its end of the pipe closes), the guard waits out the lease it was
//! given, removes the address if it was held, and exits.

use super::vip::Vip;
use crate::config::VipConfig;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// How often the guard looks at the clock.
const TICK: Duration = Duration::from_millis(10);

/// CLOCK_MONOTONIC in milliseconds (what `Instant` counts on Linux, but
/// comparable across processes).
fn mono_now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// `t` as CLOCK_MONOTONIC milliseconds.
fn mono_ms_at(t: Instant) -> u64 {
    let (now, base) = (Instant::now(), mono_now_ms());
    if t >= now {
        base + (t - now).as_millis() as u64
    } else {
        base.saturating_sub((now - t).as_millis() as u64)
    }
}

/// The node's side: the guard process and what it reported.
pub struct Guard {
    stdin: tokio::sync::Mutex<tokio::process::ChildStdin>,
    /// Set when the guard removed the address (the node must take it again).
    pub dropped: Arc<AtomicBool>,
    /// A failed write was logged (once: the role task writes at every tick).
    broken: AtomicBool,
    _child: tokio::process::Child,
}

impl Guard {
    /// Starts `fulcrum vip-guard` for `vip`.
    pub fn spawn(vip: &VipConfig) -> Result<Guard, String> {
        let exe = std::env::current_exe().map_err(|e| format!("VIP guard: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("vip-guard")
            .arg("--interface")
            .arg(&vip.interface)
            .arg("--address")
            .arg(format!("{}/{}", vip.address, vip.prefix_len))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the VIP guard: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("VIP guard: no pipes".into());
        };
        let dropped = Arc::new(AtomicBool::new(false));
        let d = dropped.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if l.trim() == "dropped" {
                    tracing::warn!(
                        "the VIP guard removed the VIP: this process did not renew its lease in time"
                    );
                    d.store(true, Relaxed);
                }
            }
        });
        Ok(Guard {
            stdin: tokio::sync::Mutex::new(stdin),
            dropped,
            broken: AtomicBool::new(false),
            _child: child,
        })
    }

    async fn send(&self, line: String) {
        let mut w = self.stdin.lock().await;
        let write = async {
            w.write_all(line.as_bytes()).await?;
            w.flush().await
        };
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(100), write).await
            && !self.broken.swap(true, Relaxed)
        {
            tracing::error!(error = %e, "the VIP guard is gone: a frozen primary would keep the VIP");
        }
    }

    /// The address is held until `until` unless renewed.
    pub async fn hold(&self, until: Instant) {
        self.send(format!("hold {}\n", mono_ms_at(until))).await;
    }

    pub async fn release(&self) {
        self.send("release\n".into()).await;
    }
}

/// The guard process itself (`fulcrum vip-guard`).
pub fn run(config: VipConfig) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let vip = Vip::open(&config).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // Blocking reads on a thread; the channel closes at EOF.
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut until: Option<u64> = None;
        let mut open = true;
        loop {
            if open {
                match tokio::time::timeout(TICK, rx.recv()).await {
                    Ok(Some(line)) => match line.split_once(' ') {
                        Some(("hold", ms)) => until = ms.trim().parse().ok(),
                        _ if line.trim() == "release" => until = None,
                        _ => {}
                    },
                    Ok(None) => open = false,
                    Err(_) => {}
                }
            } else {
                tokio::time::sleep(TICK).await;
            }
            if until.is_some_and(|u| mono_now_ms() >= u) {
                until = None;
                if let Ok(true) = vip.release().await {
                    use std::io::Write;
                    let mut out = std::io::stdout();
                    let _ = writeln!(out, "dropped").and_then(|_| out.flush());
                }
            }
            if !open && until.is_none() {
                return Ok(());
            }
        }
    })
}
