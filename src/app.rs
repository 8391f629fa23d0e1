//! The running instance: the current snapshot, the listeners, and the reload and
//! shutdown procedures that change them.

use crate::config::{self, Config, ConfigErrors, Loaded};
use crate::proxy::access_log::AccessLog;
use crate::proxy::listener::{self, ListenerHandle};
use crate::runtime::Runtime;
use crate::telemetry::Telemetry;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct App {
    /// What the request path reads: replaced whole on reload.
    pub runtime: ArcSwap<Runtime>,
    pub access_log: ArcSwapOption<AccessLog>,
    pub telemetry: Telemetry,
    pub started: Instant,
    /// Client connections (each finishes its in-flight requests on shutdown).
    pub connections: TaskTracker,
    /// Upgraded connections (WebSockets), which outlive their HTTP connection.
    pub tunnels: TaskTracker,
    /// Cancelled on shutdown: listeners stop accepting, connections wind down.
    pub shutdown: CancellationToken,
    pub config_path: Option<PathBuf>,
    pub events: crate::events::Events,
    state: tokio::sync::Mutex<ReloadState>,
}

struct ReloadState {
    listeners: HashMap<SocketAddr, ListenerHandle>,
    health: crate::health::HealthChecks,
    text: String,
    generation: u64,
}

#[derive(Debug)]
pub enum ReloadError {
    Invalid(ConfigErrors),
    Apply(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(e) => write!(f, "{e}"),
            ReloadError::Apply(e) => f.write_str(e),
        }
    }
}

pub enum ReloadOutcome {
    Applied(u64),
    Unchanged(u64),
}

impl App {
    /// Builds the instance and starts its listeners. Fails if a listener cannot be
    /// bound or the access log cannot be opened.
    pub async fn start(loaded: Loaded) -> Result<Arc<App>, String> {
        let config = Arc::new(loaded.config);
        let access_log = AccessLog::open(&config.access_log)
            .map_err(|e| format!("cannot open the access log: {e}"))?;
        let runtime = Runtime::compile(config.clone(), 1, None);
        let app = Arc::new(App {
            runtime: ArcSwap::from_pointee(runtime),
            access_log: ArcSwapOption::from(access_log.map(Arc::new)),
            telemetry: Telemetry::default(),
            started: Instant::now(),
            connections: TaskTracker::new(),
            tunnels: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            config_path: loaded.path,
            events: crate::events::Events::default(),
            state: tokio::sync::Mutex::new(ReloadState {
                listeners: HashMap::new(),
                health: crate::health::HealthChecks::default(),
                text: loaded.text,
                generation: 1,
            }),
        });
        let mut state = app.state.lock().await;
        for l in &config.listeners {
            let sock = listener::bind(l.address)
                .map_err(|e| format!("cannot listen on {}: {e}", l.address))?;
            let handle = listener::start(&app, sock, l.clone(), config.limits.max_connections)
                .map_err(|e| e.to_string())?;
            tracing::info!(address = %handle.local_addr, configured = %l.address, "listening");
            state.listeners.insert(l.address, handle);
        }
        state.health.reconcile(&app);
        drop(state);
        Ok(app)
    }

    pub fn generation(&self) -> u64 {
        self.runtime.load().generation
    }

    /// Addresses the listeners actually bound (useful with port 0).
    pub async fn listener_addresses(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let state = self.state.lock().await;
        state
            .listeners
            .iter()
            .map(|(k, v)| (*k, v.local_addr))
            .collect()
    }

    /// Re-reads the config file and applies it. With `force`, a file that did not
    /// change still produces a new generation (SIGHUP); without, it is a no-op
    /// (file watch).
    pub async fn reload_from_file(
        self: &Arc<Self>,
        force: bool,
    ) -> Result<ReloadOutcome, ReloadError> {
        let Some(path) = &self.config_path else {
            return Err(ReloadError::Apply("no config file to reload from".into()));
        };
        let loaded = config::load_file(path).map_err(ReloadError::Invalid)?;
        self.apply(loaded.config, loaded.text, force).await
    }

    /// Swaps in a new config: binds new listeners first (so a failure changes
    /// nothing), then replaces the snapshot atomically, then retires listeners
    /// that are gone. In-flight requests keep the snapshot they started with.
    pub async fn apply(
        self: &Arc<Self>,
        config: Config,
        text: String,
        force: bool,
    ) -> Result<ReloadOutcome, ReloadError> {
        let mut state = self.state.lock().await;
        if !force && text == state.text {
            return Ok(ReloadOutcome::Unchanged(state.generation));
        }
        let mut bound = Vec::new();
        for l in &config.listeners {
            if !state.listeners.contains_key(&l.address) {
                let sock = listener::bind(l.address).map_err(|e| {
                    ReloadError::Apply(format!("cannot listen on {}: {e}", l.address))
                })?;
                bound.push((l.clone(), sock));
            }
        }
        let current_log = self.access_log.load_full();
        let new_log = if current_log.as_ref().map(|l| &l.config) == Some(&config.access_log)
            || (current_log.is_none() && !config.access_log.enabled)
        {
            None
        } else {
            Some(
                AccessLog::open(&config.access_log)
                    .map_err(|e| ReloadError::Apply(format!("cannot open the access log: {e}")))?,
            )
        };

        let generation = state.generation + 1;
        let config = Arc::new(config);
        let prev = self.runtime.load_full();
        let runtime = Runtime::compile(config.clone(), generation, Some(&prev));
        self.runtime.store(Arc::new(runtime));
        if let Some(log) = new_log {
            self.access_log.store(log.map(Arc::new));
        }

        for (cfg, sock) in bound {
            match listener::start(self, sock, cfg.clone(), config.limits.max_connections) {
                Ok(handle) => {
                    tracing::info!(address = %handle.local_addr, configured = %cfg.address, "listening");
                    state.listeners.insert(cfg.address, handle);
                }
                Err(e) => {
                    tracing::error!(address = %cfg.address, error = %e, "cannot start listener")
                }
            }
        }
        let wanted: HashMap<SocketAddr, &config::ListenerConfig> =
            config.listeners.iter().map(|l| (l.address, l)).collect();
        state
            .listeners
            .retain(|addr, handle| match wanted.get(addr) {
                Some(cfg) => {
                    handle.update((*cfg).clone(), config.limits.max_connections);
                    true
                }
                None => {
                    tracing::info!(address = %handle.local_addr, "listener removed");
                    handle.stop();
                    false
                }
            });
        state.health.reconcile(self);
        state.text = text;
        state.generation = generation;
        tracing::info!(generation, "configuration applied");
        self.events.record(
            "config.applied",
            None,
            None,
            format!("configuration generation {generation} applied"),
        );
        Ok(ReloadOutcome::Applied(generation))
    }

    /// Stops accepting, lets in-flight requests and open tunnels finish for at most
    /// `timeout`, then returns.
    pub async fn shutdown(&self, timeout: Duration) {
        self.shutdown.cancel();
        self.connections.close();
        self.tunnels.close();
        let wait = async {
            self.connections.wait().await;
            self.tunnels.wait().await;
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            tracing::warn!(
                connections = self.connections.len(),
                tunnels = self.tunnels.len(),
                "shutdown timeout reached; closing what is left"
            );
        }
    }
}
