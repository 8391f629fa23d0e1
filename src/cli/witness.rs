//! `fulcrum witness -c FILE`: a Raft voter that serves no traffic and never holds
//! the VIP; it lets two proxy nodes keep a majority when one of them is down.
//! Only the file's `cluster` section is used.

use crate::cluster::Cluster;
use crate::command::{BoxFut, Command, CommandSink, Outcome};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// A witness keeps the log but has no proxy to apply it to.
struct Nothing;

impl CommandSink for Nothing {
    fn submit(&self, _cmd: Command) -> BoxFut<'static, Outcome> {
        Box::pin(async { Ok(json!({ "witness": true })) })
    }
}

pub fn run(path: Option<PathBuf>) -> ExitCode {
    let Some(loaded) = super::load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let Some(cluster) = loaded.config.cluster else {
        eprintln!(
            "{}: a witness needs a `cluster` section (node_id, bind, peers)",
            loaded
                .path
                .as_deref()
                .unwrap_or(std::path::Path::new("-"))
                .display()
        );
        return ExitCode::FAILURE;
    };
    let rt = match super::tokio_runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mut signals = match super::run::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fulcrum: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let events = Arc::new(crate::events::Events::default());
        let checks: crate::cluster::Checks = Arc::new(|| Err("a witness never preempts".into()));
        let node = match Cluster::start(cluster, true, Arc::new(Nothing), events, checks).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("fulcrum: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(node = %node.node_id(), "witness started");
        signals.wait_for_stop().await;
        node.leave().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}
