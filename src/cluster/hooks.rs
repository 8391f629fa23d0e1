//! Role-change hooks: the notify script (`SCRIPT ROLE TERM NODE_ID`, one run at a
//! time, in order, killed after `notify_timeout`) and the webhook (JSON
//! `{node, from, to, term, reason, ts}`, also in order). Each has its own queue
//! and task, so neither can delay the role change itself.

use crate::config::ClusterHooks;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub node: String,
    pub from: &'static str,
    pub to: &'static str,
    pub term: u64,
    pub reason: String,
    pub ts: String,
}

pub struct Hooks {
    script: Option<mpsc::UnboundedSender<Transition>>,
    webhook: Option<mpsc::UnboundedSender<Transition>>,
}

impl Hooks {
    pub fn start(cfg: &ClusterHooks) -> Hooks {
        let script = cfg.notify.clone().map(|path| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_scripts(path, cfg.notify_timeout, rx));
            tx
        });
        let webhook = cfg.webhook.clone().map(|url| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(post_webhooks(url, rx));
            tx
        });
        Hooks { script, webhook }
    }

    pub fn notify(&self, t: &Transition) {
        if let Some(q) = &self.script {
            let _ = q.send(t.clone());
        }
        if let Some(q) = &self.webhook {
            let _ = q.send(t.clone());
        }
    }
}

async fn run_scripts(
    path: PathBuf,
    timeout: Duration,
    mut rx: mpsc::UnboundedReceiver<Transition>,
) {
    while let Some(t) = rx.recv().await {
        let mut cmd = tokio::process::Command::new(&path);
        cmd.arg(t.to)
            .arg(t.term.to_string())
            .arg(&t.node)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(script = %path.display(), error = %e, "cannot run the notify hook");
                continue;
            }
        };
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) if out.status.success() => {
                tracing::info!(script = %path.display(), role = t.to, "notify hook done");
            }
            Ok(Ok(out)) => tracing::warn!(
                script = %path.display(),
                status = %out.status,
                "notify hook failed"
            ),
            Ok(Err(e)) => {
                tracing::warn!(script = %path.display(), error = %e, "notify hook failed")
            }
            // Dropping the future kills the child (kill_on_drop).
            Err(_) => tracing::warn!(
                script = %path.display(),
                timeout = ?timeout,
                "notify hook timed out and was killed"
            ),
        }
    }
}

async fn post_webhooks(url: String, mut rx: mpsc::UnboundedReceiver<Transition>) {
    while let Some(t) = rx.recv().await {
        let body = serde_json::to_vec(&t).unwrap_or_default();
        match crate::net::post_json(&url, body, Duration::from_secs(10)).await {
            Ok(s) if s.is_success() => {}
            Ok(s) => tracing::warn!(status = %s, "cluster webhook refused"),
            Err(e) => tracing::warn!(error = %e, "cluster webhook failed"),
        }
    }
}
