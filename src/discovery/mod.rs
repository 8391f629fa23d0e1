//! Docker discovery: watches a container engine (Docker, or Podman's
//! Docker-compatible socket) and publishes what its running containers declare
//! as a node-local config layer (`Precedence::Yields`: the file's routes win).
//! The supervisor composes that layer and recompiles the snapshot; nothing here
//! touches the request path.
//!
//! - `engine`: the engine client (version negotiation, list, inspect, events).
//! - `container`: a container as read from the engine's inspect answer.
//! - `labels`: the three conventions (nginx-proxy, Traefik, Fulcrum) → declarations.
//! - `rule`: Traefik router rules → host and path prefix pairs.
//! - `build`: containers → the layer and the status (pure).
//! - `watch`: the task: initial list, event stream, debounce, resync, reconnect.

pub(crate) mod build;
pub(crate) mod container;
pub(crate) mod engine;
mod labels;
mod rule;
mod watch;

pub(crate) use build::ContainerStatus;
pub(crate) use watch::Watcher;

use arc_swap::ArcSwapOption;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;

/// What discovery last saw, for the admin API and metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct Status {
    pub(crate) endpoint: String,
    pub(crate) connected: bool,
    pub(crate) api_version: Option<String>,
    /// Unix seconds of the last event received.
    pub(crate) last_event: Option<f64>,
    pub(crate) last_error: Option<String>,
    pub(crate) containers: Vec<ContainerStatus>,
    /// Discovered pools by name.
    pub(crate) pools: HashSet<String>,
    /// Discovered backends: (pool, `host:port`) → (container id, name).
    pub(crate) backends: HashMap<(String, String), (String, String)>,
}

impl Status {
    /// `GET /api/v1/discovery`.
    pub(crate) fn json(&self) -> Value {
        json!({
            "engine": {
                "endpoint": self.endpoint,
                "connected": self.connected,
                "api_version": self.api_version,
                "last_event": self.last_event.map(crate::clock::rfc3339),
                "last_error": self.last_error,
            },
            "containers": self.containers.iter().map(ContainerStatus::json).collect::<Vec<_>>(),
        })
    }

    /// The container behind a discovered backend.
    pub(crate) fn container_of(&self, pool: &str, key: &str) -> Option<&(String, String)> {
        self.backends.get(&(pool.to_string(), key.to_string()))
    }

    /// Containers by state, for the metrics.
    pub(crate) fn counts(&self) -> Vec<(&'static str, u64)> {
        let states = [
            "eligible",
            "starting",
            "unhealthy",
            "paused",
            "draining",
            "skipped",
        ];
        states
            .iter()
            .map(|s| {
                let n = self.containers.iter().filter(|c| c.state == *s).count();
                (*s, n as u64)
            })
            .collect()
    }
}

/// Shared between the watcher (writes) and the admin API (reads).
#[derive(Default)]
pub(crate) struct Shared {
    /// `None` while discovery is off.
    pub(crate) status: ArcSwapOption<Status>,
    pub(crate) events_total: AtomicU64,
}
