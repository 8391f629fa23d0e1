//! The running node: the one place that knows every module. It builds the
//! narrow handles each part works with (the request path, health checks,
//! failover controllers, ACME managers, the admin API, the cluster), owns the
//! reload pipeline (config layers → compile → swap → reconcile), and executes
//! commands. Only the command line imports it.
//!
//! - `reload`: the pipeline that turns a new base config or layer into a running
//!   snapshot, or rejects it and changes nothing.
//! - `execute`: what each command does on this node.
//! - `listeners`: the listening sockets a config asks for.
//! - `acme`: starting and stopping ACME managers.
//! - `cluster`: wiring to the cluster (replication, role, preemption checks).
//! - `discovery`: starting the container watcher and applying what it finds.

mod acme;
mod cluster;
mod discovery;
mod execute;
mod listeners;
mod reload;

use crate::admin::{AdminContext, AdminServer, NodeStatus};
use crate::command::{CommandError, CommandSink};
use crate::config::{Config, Loaded, layers::Layer};
use crate::events::{Event, Events};
use crate::failover::controller::{self, Controllers};
use crate::failover::notify::Notifier;
use crate::health::HealthChecks;
use crate::listener::{Cores, ListenerHandle};
use crate::proxy::access_log::AccessLog;
use crate::proxy::{ProxyContext, Switched};
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use reload::ReloadOutcome;

pub struct Supervisor {
    proxy: Arc<ProxyContext>,
    admin: Arc<AdminContext>,
    notifier: Arc<Notifier>,
    /// Client connections (each finishes its in-flight requests on shutdown).
    connections: TaskTracker,
    /// The runtimes listeners accept on.
    cores: Cores,
    /// Cancelled on shutdown: listeners stop accepting, connections wind down.
    shutdown: CancellationToken,
    config_path: Option<PathBuf>,
    /// Set when `cluster:` is configured (fixed for the life of the process).
    cluster: OnceLock<Arc<crate::cluster::Cluster>>,
    /// Whether this node may order ACME certificates (standalone, or primary).
    may_order: watch::Sender<bool>,
    /// This supervisor, for the tasks and sinks it hands out.
    me: Weak<Supervisor>,
    state: tokio::sync::Mutex<ReloadState>,
    /// What discovery found, as a layer; the applier task composes it in.
    discovered: watch::Sender<Layer>,
}

/// What only the reload pipeline touches (one change at a time).
struct ReloadState {
    listeners: HashMap<SocketAddr, ListenerHandle>,
    /// ACME managers by storage directory.
    acme: HashMap<PathBuf, acme::Manager>,
    health: HealthChecks,
    failover: Controllers,
    admin_server: Option<AdminServer>,
    /// The file's config, or the last one PUT through the API.
    base: Config,
    /// Changes made through the admin API, re-applied on top of every base.
    admin_layer: Layer,
    /// What discovery found (node-local), composed after the admin layer.
    discovery_layer: Layer,
    /// The running container watcher, if `discovery.docker` is configured.
    discovery: Option<crate::discovery::Watcher>,
    /// The base's source text, to tell a reload that changes nothing.
    text: String,
    generation: u64,
    /// In a cluster, once a config came through Raft: the file then only
    /// provides the node-local keys.
    replicated: bool,
}

impl Supervisor {
    /// Builds the node and starts its listeners, admin API and background work.
    /// Fails if a listener cannot be bound or the access log cannot be opened.
    pub async fn start(loaded: Loaded) -> Result<Arc<Supervisor>, String> {
        Self::start_on(loaded, Cores::default()).await
    }

    /// Like [`Supervisor::start`], with listeners accepting on `cores`.
    pub(crate) async fn start_on(loaded: Loaded, cores: Cores) -> Result<Arc<Supervisor>, String> {
        let config = loaded.config;
        let access_log = AccessLog::open(&config.access_log)
            .map_err(|e| format!("cannot open the access log: {e}"))?;
        let otlp = match &config.tracing {
            Some(t) => Some(Arc::new(crate::otlp::Otlp::start(t)?)),
            None => None,
        };
        let snapshot = Snapshot::compile(Arc::new(config.clone()), 1, None)?;
        let events = Arc::new(Events::default());
        let proxy = Arc::new(ProxyContext {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            access_log: Switched::new(access_log.map(Arc::new)),
            otlp: Switched::new(otlp),
            telemetry: Arc::new(Telemetry::default()),
            acme: Arc::new(ArcSwap::from_pointee(Vec::new())),
            events: events.clone(),
            tunnels: TaskTracker::new(),
        });
        let notifier = Arc::new(Notifier::default());
        let shutdown = CancellationToken::new();
        let failover_handles = controller::Handles {
            snapshot: proxy.snapshot.clone(),
            events: events.clone(),
            notifier: notifier.clone(),
        };
        let sup = Arc::new_cyclic(|me: &Weak<Supervisor>| Supervisor {
            admin: Arc::new(AdminContext {
                proxy: proxy.clone(),
                commands: Arc::new(execute::Submitter(me.clone())),
                status: ArcSwap::from_pointee(NodeStatus::default()),
                cluster: OnceLock::new(),
                notifier: notifier.clone(),
                history: Default::default(),
                discovery: Default::default(),
                token: ArcSwapOption::empty(),
                read_token: ArcSwapOption::empty(),
                started: Instant::now(),
                shutdown: shutdown.clone(),
            }),
            proxy,
            notifier,
            connections: TaskTracker::new(),
            cores,
            shutdown,
            config_path: loaded.path,
            cluster: OnceLock::new(),
            may_order: watch::Sender::new(config.cluster.is_none()),
            me: me.clone(),
            discovered: watch::Sender::new(Layer::default()),
            state: tokio::sync::Mutex::new(ReloadState {
                listeners: HashMap::new(),
                acme: HashMap::new(),
                health: HealthChecks::new(events.clone()),
                failover: Controllers::new(failover_handles),
                admin_server: None,
                base: config.clone(),
                admin_layer: Layer::new("api", Default::default()),
                discovery_layer: Layer::new("docker", Default::default()),
                discovery: None,
                text: loaded.text,
                generation: 1,
                replicated: false,
            }),
        });
        // Subscribed before the watcher starts, so its first layer is not missed.
        discovery::spawn_applier(&sup);
        sup.bring_up(&config).await?;
        tokio::spawn(crate::health::ejections::watch(
            sup.proxy.snapshot.clone(),
            sup.proxy.events.clone(),
            sup.shutdown.clone(),
        ));
        if let Some(c) = &config.cluster {
            let cluster = cluster::start(&sup, c.clone()).await?;
            let _ = sup.cluster.set(cluster.clone());
            let _ = sup.admin.cluster.set(cluster);
        }
        Ok(sup)
    }

    /// The first apply: everything is new.
    async fn bring_up(self: &Arc<Self>, config: &Config) -> Result<(), String> {
        let mut state = self.state.lock().await;
        self.reconcile_acme(&mut state, config);
        for (addr, spec) in listeners::specs(config, &self.proxy.acme.load())? {
            let sock = crate::net::bind_group(addr, self.cores.sockets())
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let handle = self
                .start_listener(sock, spec, config.limits.max_connections)
                .map_err(|e| e.to_string())?;
            tracing::info!(address = %handle.local_addr, configured = %addr, "listening");
            state.listeners.insert(addr, handle);
        }
        if let Some(a) = &config.admin {
            let tls = match &a.tls {
                Some(t) => Some(crate::tls::admin_server_config(t)?),
                None => None,
            };
            let server = crate::admin::start(&self.admin, a.address, tls)
                .map_err(|e| format!("cannot start the admin API on {}: {e}", a.address))?;
            state.admin_server = Some(server);
        }
        self.store_admin_tokens(config);
        self.notifier.configure(&config.failover.notification);
        self.reconcile_discovery(&mut state, config);
        let snapshot = self.proxy.snapshot.load_full();
        state.health.reconcile(&snapshot);
        state.failover.reconcile(&snapshot);
        self.publish_status(&state);
        Ok(())
    }

    /// The current config generation.
    pub fn generation(&self) -> u64 {
        self.proxy.snapshot.load().generation
    }

    pub fn shutdown_timeout(&self) -> Duration {
        self.proxy.snapshot.load().config.shutdown_timeout
    }

    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref()
    }

    /// Addresses the listeners actually bound (useful with port 0).
    pub async fn listener_addresses(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let state = self.state.lock().await;
        let mut v: Vec<_> = state
            .listeners
            .iter()
            .map(|(k, v)| (*k, v.local_addr))
            .collect();
        v.sort();
        v
    }

    pub async fn admin_address(&self) -> Option<SocketAddr> {
        self.state
            .lock()
            .await
            .admin_server
            .as_ref()
            .map(|a| a.local_addr)
    }

    /// Follows the node's events (backends going down and up, failovers...).
    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.proxy.events.subscribe()
    }

    /// Stops accepting, lets in-flight requests and open tunnels finish for at
    /// most `timeout`, then returns.
    pub async fn shutdown(&self, timeout: Duration) {
        if let Some(c) = self.cluster.get() {
            c.leave().await;
        }
        self.shutdown.cancel();
        self.connections.close();
        self.proxy.tunnels.close();
        let wait = async {
            self.connections.wait().await;
            self.proxy.tunnels.wait().await;
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            tracing::warn!(
                connections = self.connections.len(),
                tunnels = self.proxy.tunnels.len(),
                "shutdown timeout reached; closing what is left"
            );
        }
    }

    /// What the admin API shows about this node, after every change.
    /// The admin API's tokens from `config` (none when it has no admin section).
    fn store_admin_tokens(&self, config: &Config) {
        let admin = config.admin.as_ref();
        self.admin
            .token
            .store(admin.and_then(|a| a.token.clone()).map(Arc::new));
        self.admin
            .read_token
            .store(admin.and_then(|a| a.read_token.clone()).map(Arc::new));
    }

    fn publish_status(&self, state: &ReloadState) {
        let mut listeners: Vec<_> = state
            .listeners
            .iter()
            .map(|(k, v)| (*k, v.local_addr))
            .collect();
        listeners.sort();
        self.admin.status.store(Arc::new(NodeStatus {
            config_path: self.config_path.clone(),
            listeners,
            admin: state.admin_server.as_ref().map(|a| a.local_addr),
            layers: state.admin_layer.json(),
        }));
    }

    /// The directory relative paths in an API-sent config are resolved from.
    fn base_dir(&self) -> PathBuf {
        self.config_path
            .as_ref()
            .and_then(|p| p.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// The sink that executes commands on this node (what the cluster applies each
/// committed entry with).
pub(crate) fn local_sink(sup: &Arc<Supervisor>) -> Arc<dyn CommandSink> {
    Arc::new(execute::Executor(Arc::downgrade(sup)))
}

fn gone() -> CommandError {
    CommandError::unavailable("shutting down")
}
