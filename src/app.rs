//! The running instance: the current snapshot, the listeners, and the procedures
//! that change them (reload, admin changes, shutdown).
//!
//! The running config is the *base* config (from the file, or the last
//! `PUT /api/v1/config`) plus the *runtime changes* made through the admin API
//! (backends added or removed). Every apply recompiles base + changes, so runtime
//! changes survive a reload of the file; a change the file now contains itself is
//! absorbed into it, and a change whose pool disappeared is dropped.

use crate::admin::AdminServer;
use crate::admin::command::{self, AdminCommand, Outcome};
use crate::cluster::Cluster;
use crate::cluster::consensus::{Applier, BoxFut};
use crate::config::{self, BackendConfig, Config, ConfigErrors, Loaded};
use crate::events::Events;
use crate::failover::controller::Controllers;
use crate::failover::notify::Notifier;
use crate::proxy::access_log::AccessLog;
use crate::proxy::listener::{self, ListenerHandle};
use crate::runtime::Runtime;
use crate::telemetry::Telemetry;
use crate::tls::acme::AcmeState;
use crate::upstream::backend::{AdminState, Backend};
use arc_swap::{ArcSwap, ArcSwapOption};
use http::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct App {
    /// What the request path reads: replaced whole on every apply.
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
    pub events: Events,
    pub notifier: Notifier,
    pub admin_token: ArcSwapOption<String>,
    /// Trace export, when `tracing:` is configured.
    pub otlp: ArcSwapOption<crate::otlp::Otlp>,
    /// ACME state of every manager (challenge answers, issued certificates).
    pub acme: ArcSwap<Vec<Arc<AcmeState>>>,
    /// Set when `cluster:` is configured (fixed for the life of the process).
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    state: tokio::sync::Mutex<ReloadState>,
}

/// Changes made through the admin API, re-applied on top of every base config.
#[derive(Default, Clone)]
struct Overlay {
    added: Vec<(String, BackendConfig)>,
    removed: Vec<(String, String)>,
}

impl Overlay {
    fn apply(&self, base: &Config) -> Config {
        let mut c = base.clone();
        for p in c.pools.iter_mut() {
            p.backends.retain(|b| {
                !self
                    .removed
                    .iter()
                    .any(|(pool, key)| *pool == p.name && *key == b.address.key)
            });
            for (pool, b) in &self.added {
                if *pool == p.name && !p.backends.iter().any(|x| x.address.key == b.address.key) {
                    p.backends.push(b.clone());
                }
            }
        }
        c
    }

    /// Drops changes the base already contains, or that no longer apply.
    fn absorb(&mut self, base: &Config) {
        let has = |pool: &str, key: &str| {
            base.pools
                .iter()
                .find(|p| p.name == pool)
                .map(|p| p.backends.iter().any(|b| b.address.key == key))
        };
        self.added
            .retain(|(pool, b)| has(pool, &b.address.key) == Some(false));
        self.removed
            .retain(|(pool, key)| has(pool, key) == Some(true));
    }

    fn json(&self) -> Value {
        json!({
            "added_backends": self.added.iter().map(|(p, b)| json!({"pool": p, "backend": config::serialize::backend(b)})).collect::<Vec<_>>(),
            "removed_backends": self.removed.iter().map(|(p, k)| json!({"pool": p, "address": k})).collect::<Vec<_>>(),
        })
    }
}

struct ReloadState {
    listeners: HashMap<SocketAddr, ListenerHandle>,
    /// ACME managers by storage directory.
    acme: HashMap<PathBuf, AcmeManager>,
    health: crate::health::HealthChecks,
    failover: Controllers,
    admin: Option<AdminServer>,
    base: Config,
    overlay: Overlay,
    text: String,
    generation: u64,
    /// In a cluster, once a config came through Raft: the file then only
    /// provides the node-local keys.
    replicated: bool,
}

/// An error for the admin API: status, message, and config errors if any.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub errors: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub enum ReloadError {
    Invalid(ConfigErrors),
    Apply(String),
}

impl From<ReloadError> for ApiError {
    fn from(e: ReloadError) -> Self {
        match e {
            ReloadError::Invalid(errors) => ApiError {
                status: StatusCode::BAD_REQUEST,
                message: "invalid config".into(),
                errors: errors.lines(),
            },
            ReloadError::Apply(m) => ApiError::new(StatusCode::CONFLICT, m),
        }
    }
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

impl ReloadOutcome {
    pub fn generation(&self) -> u64 {
        match self {
            ReloadOutcome::Applied(g) | ReloadOutcome::Unchanged(g) => *g,
        }
    }
}

impl App {
    /// Builds the instance and starts its listeners. Fails if a listener cannot be
    /// bound or the access log cannot be opened.
    pub async fn start(loaded: Loaded) -> Result<Arc<App>, String> {
        let config = Arc::new(loaded.config);
        let access_log = AccessLog::open(&config.access_log)
            .map_err(|e| format!("cannot open the access log: {e}"))?;
        let runtime = Runtime::compile(config.clone(), 1, None)?;
        let app = Arc::new(App {
            runtime: ArcSwap::from_pointee(runtime),
            access_log: ArcSwapOption::from(access_log.map(Arc::new)),
            telemetry: Telemetry::default(),
            started: Instant::now(),
            connections: TaskTracker::new(),
            tunnels: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            config_path: loaded.path,
            events: Events::default(),
            notifier: Notifier::default(),
            admin_token: ArcSwapOption::from(
                config
                    .admin
                    .as_ref()
                    .and_then(|a| a.token.clone())
                    .map(Arc::new),
            ),
            otlp: ArcSwapOption::from(match &config.tracing {
                Some(t) => Some(Arc::new(crate::otlp::Otlp::start(t)?)),
                None => None,
            }),
            acme: ArcSwap::from_pointee(Vec::new()),
            state: tokio::sync::Mutex::new(ReloadState {
                acme: HashMap::new(),
                listeners: HashMap::new(),
                health: Default::default(),
                failover: Default::default(),
                admin: None,
                base: (*config).clone(),
                overlay: Overlay::default(),
                text: loaded.text,
                generation: 1,
                replicated: false,
            }),
            cluster: std::sync::OnceLock::new(),
        });
        let mut state = app.state.lock().await;
        app.reconcile_acme(&mut state, &config);
        for (addr, spec) in listener_specs(&config, &app.acme.load())? {
            let sock = listener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let handle = listener::start(&app, sock, spec, config.limits.max_connections)
                .map_err(|e| e.to_string())?;
            tracing::info!(address = %handle.local_addr, configured = %addr, "listening");
            state.listeners.insert(addr, handle);
        }
        if let Some(a) = &config.admin {
            let server = crate::admin::start(&app, a.address)
                .map_err(|e| format!("cannot start the admin API on {}: {e}", a.address))?;
            state.admin = Some(server);
        }
        app.notifier.configure(&config.failover.notification);
        state.health.reconcile(&app);
        state.failover.reconcile(&app);
        drop(state);
        if let Some(c) = &config.cluster {
            let cluster = Cluster::start(
                c.clone(),
                false,
                Arc::new(AppApplier(Arc::downgrade(&app))),
                event_sink(&app),
                preempt_checks(&app),
            )
            .await?;
            let _ = app.cluster.set(cluster);
        }
        Ok(app)
    }

    /// The cluster this node belongs to, if `cluster:` is configured.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Carries out an admin write: at once on a standalone node, through Raft
    /// (on every node) in a cluster. An invalid config is refused before it is
    /// proposed.
    pub async fn execute(self: &Arc<Self>, cmd: AdminCommand) -> Outcome {
        let Some(cluster) = self.cluster() else {
            return command::execute_local(self, &cmd).await;
        };
        if let AdminCommand::PutConfig { text } = &cmd
            && let Err(e) = config::load_str(text, "api", &self.base_dir())
        {
            return ApiError::from(ReloadError::Invalid(e)).into();
        }
        cluster.submit(cmd).await
    }

    fn base_dir(&self) -> PathBuf {
        self.config_path
            .as_ref()
            .and_then(|p| p.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    pub fn generation(&self) -> u64 {
        self.runtime.load().generation
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
        self.state.lock().await.admin.as_ref().map(|a| a.local_addr)
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

    /// Swaps in a new base config. See [`App::apply_locked`].
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
        if config.cluster != state.base.cluster {
            tracing::warn!("changes to `cluster` take effect at the next restart");
        }
        let config = if state.replicated {
            // The replicated config stays the truth; the file gives this node's own keys.
            with_local_keys(state.base.clone(), &config)
        } else {
            config
        };
        let mut overlay = state.overlay.clone();
        overlay.absorb(&config);
        let g = self.apply_locked(&mut state, config, overlay).await?;
        state.text = text;
        Ok(ReloadOutcome::Applied(g))
    }

    /// Compiles base + overlay and swaps it in: binds new listeners first (so a
    /// failure changes nothing), then replaces the snapshot atomically, then
    /// retires listeners that are gone and reconciles the background tasks.
    /// In-flight requests keep the snapshot they started with.
    async fn apply_locked(
        self: &Arc<Self>,
        state: &mut ReloadState,
        base: Config,
        overlay: Overlay,
    ) -> Result<u64, ReloadError> {
        let config = overlay.apply(&base);
        // Certificates are read and TLS configs built before anything changes, so
        // a broken certificate file fails the reload instead of a listener.
        let acme_preview = self.acme_states_for(state, &config);
        let specs = listener_specs(&config, &acme_preview).map_err(ReloadError::Apply)?;
        let mut bound = Vec::new();
        for (addr, spec) in &specs {
            if !state.listeners.contains_key(addr) {
                let sock = listener::bind(*addr)
                    .map_err(|e| ReloadError::Apply(format!("cannot listen on {addr}: {e}")))?;
                bound.push((*addr, spec.clone(), sock));
            }
        }
        let admin_addr = config.admin.as_ref().map(|a| a.address);
        let new_admin = match (admin_addr, state.admin.as_ref().map(|a| a.configured)) {
            (Some(want), Some(have)) if want == have => None,
            (Some(want), _) => Some(Some(crate::admin::start(self, want).map_err(|e| {
                ReloadError::Apply(format!("cannot start the admin API on {want}: {e}"))
            })?)),
            (None, Some(_)) => Some(None),
            (None, None) => None,
        };
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

        let current_otlp = self.otlp.load_full();
        let new_otlp = if current_otlp.as_ref().map(|o| &o.config) == config.tracing.as_ref() {
            None
        } else {
            Some(match &config.tracing {
                Some(t) => Some(Arc::new(
                    crate::otlp::Otlp::start(t).map_err(ReloadError::Apply)?,
                )),
                None => None,
            })
        };
        let generation = state.generation + 1;
        let config = Arc::new(config);
        let prev = self.runtime.load_full();
        let runtime = Runtime::compile(config.clone(), generation, Some(&prev))
            .map_err(ReloadError::Apply)?;
        self.runtime.store(Arc::new(runtime));
        if let Some(log) = new_log {
            self.access_log.store(log.map(Arc::new));
        }
        if let Some(otlp) = new_otlp {
            self.otlp.store(otlp);
        }
        self.admin_token.store(
            config
                .admin
                .as_ref()
                .and_then(|a| a.token.clone())
                .map(Arc::new),
        );
        if let Some(admin) = new_admin {
            state.admin = admin;
        }
        self.reconcile_acme(state, &config);
        for (addr, spec, sock) in bound {
            match listener::start(self, sock, spec, config.limits.max_connections) {
                Ok(handle) => {
                    tracing::info!(address = %handle.local_addr, configured = %addr, "listening");
                    state.listeners.insert(addr, handle);
                }
                Err(e) => tracing::error!(address = %addr, error = %e, "cannot start listener"),
            }
        }
        let wanted: HashMap<SocketAddr, listener::ListenerSpec> = specs.into_iter().collect();
        state
            .listeners
            .retain(|addr, handle| match wanted.get(addr) {
                Some(spec) => {
                    handle.update(spec.clone(), config.limits.max_connections);
                    true
                }
                None => {
                    tracing::info!(address = %handle.local_addr, "listener removed");
                    handle.stop();
                    false
                }
            });
        self.notifier.configure(&config.failover.notification);
        state.health.reconcile(self);
        state.failover.reconcile(self);
        state.base = base;
        state.overlay = overlay;
        state.generation = generation;
        tracing::info!(generation, "configuration applied");
        self.events.record(
            "config.applied",
            None,
            None,
            format!("configuration generation {generation} applied"),
        );
        Ok(generation)
    }

    /// `PUT /api/v1/config`: replaces the base config (and forgets runtime
    /// changes: the document sent is the new truth). With `persist`, the text is
    /// also written to the config file, atomically.
    pub async fn put_config(self: &Arc<Self>, text: &str, persist: bool) -> Result<u64, ApiError> {
        let config = config::load_str(text, "api", &self.base_dir())
            .map_err(|e| ApiError::from(ReloadError::Invalid(e)))?;
        if persist && self.config_path.is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no config file to persist to (started without one)",
            ));
        }
        let mut state = self.state.lock().await;
        let clustered = self.cluster().is_some() || state.base.cluster.is_some();
        let config = if clustered {
            with_local_keys(config, &state.base)
        } else {
            config
        };
        let g = self
            .apply_locked(&mut state, config, Overlay::default())
            .await
            .map_err(ApiError::from)?;
        state.text = text.to_string();
        state.replicated = clustered;
        if persist && let Some(path) = &self.config_path {
            let tmp = path.with_extension("tmp-fulcrum");
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("applied, but writing {} failed: {e}", path.display()),
                    )
                })?;
        }
        Ok(g)
    }

    pub async fn add_backend(
        self: &Arc<Self>,
        pool: &str,
        backend: BackendConfig,
    ) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        let current = self.runtime.load_full();
        let Some(p) = current.config.pools.iter().find(|p| p.name == pool) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no pool named `{pool}`"),
            ));
        };
        if p.backends
            .iter()
            .any(|b| b.address.key == backend.address.key)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("pool `{pool}` already has backend {}", backend.address.key),
            ));
        }
        let mut overlay = state.overlay.clone();
        overlay
            .removed
            .retain(|(p, k)| !(p == pool && *k == backend.address.key));
        overlay.added.push((pool.to_string(), backend.clone()));
        self.apply_overlay(&mut state, overlay).await?;
        self.events.record(
            "backend.added",
            Some(pool),
            Some(&backend.address.key),
            "added through the admin API",
        );
        Ok(())
    }

    /// Applies the file config with a new set of runtime changes.
    async fn apply_overlay(
        self: &Arc<Self>,
        state: &mut ReloadState,
        overlay: Overlay,
    ) -> Result<(), ApiError> {
        let base = state.base.clone();
        self.apply_locked(state, base, overlay)
            .await
            .map(|_| ())
            .map_err(ApiError::from)
    }

    pub async fn remove_backend(self: &Arc<Self>, pool: &str, key: &str) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        let current = self.runtime.load_full();
        let Some(p) = current.config.pools.iter().find(|p| p.name == pool) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no pool named `{pool}`"),
            ));
        };
        if !p.backends.iter().any(|b| b.address.key == key) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("pool `{pool}` has no backend {key}"),
            ));
        }
        let mut overlay = state.overlay.clone();
        let was_added = overlay.added.len();
        overlay
            .added
            .retain(|(p, b)| !(p == pool && b.address.key == key));
        if overlay.added.len() == was_added {
            overlay.removed.push((pool.to_string(), key.to_string()));
        }
        self.apply_overlay(&mut state, overlay).await?;
        self.events.record(
            "backend.removed",
            Some(pool),
            Some(key),
            "removed through the admin API",
        );
        Ok(())
    }

    pub fn find_backend(&self, pool: &str, key: &str) -> Option<Arc<Backend>> {
        let rt = self.runtime.load();
        let p = rt.pool(pool)?;
        p.members
            .iter()
            .find(|m| m.backend.key() == key)
            .map(|m| m.backend.clone())
    }

    /// Drain, disable or enable. Enabling waits for a passing health check (or a
    /// successful connection when the backend has no check) before traffic returns.
    pub async fn set_backend_state(
        self: &Arc<Self>,
        pool: &str,
        key: &str,
        state: AdminState,
    ) -> Result<(), ApiError> {
        let rt = self.runtime.load_full();
        let Some(p) = rt.pool(pool) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no pool named `{pool}`"),
            ));
        };
        let Some(m) = p.members.iter().find(|m| m.backend.key() == key) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("pool `{pool}` has no backend {key}"),
            ));
        };
        let backend = m.backend.clone();
        let previous = backend.admin_state();
        if state == AdminState::Enabling && previous == AdminState::Active {
            return Ok(());
        }
        backend.set_admin_state(state);
        let (kind, msg) = match state {
            AdminState::Draining => (
                "backend.draining",
                "draining: no new requests, in-flight ones finish",
            ),
            AdminState::Disabled => ("backend.disabled", "disabled by the operator"),
            _ => (
                "backend.enabling",
                "enabled: waiting for a passing health check",
            ),
        };
        self.events.record(kind, Some(pool), Some(key), msg);
        if state == AdminState::Enabling && m.health_check.is_none() {
            tokio::spawn(confirm_reachable(
                Arc::downgrade(self),
                backend,
                p.timeouts.connect,
            ));
        }
        Ok(())
    }

    /// `GET /api/v1/config`: the running config (secrets redacted) and the runtime
    /// changes it includes.
    pub async fn config_json(&self) -> Value {
        let state = self.state.lock().await;
        let rt = self.runtime.load();
        let mut states = Vec::new();
        for (p, m) in rt.backends() {
            let s = m.backend.admin_state();
            if s != AdminState::Active {
                states.push(json!({"pool": p.name, "address": m.backend.key(), "state": format!("{s:?}").to_lowercase()}));
            }
        }
        let mut changes = state.overlay.json();
        changes["backend_states"] = Value::Array(states);
        json!({
            "generation": state.generation,
            "source": self.config_path.as_ref().map(|p| p.display().to_string()),
            "config": config::serialize::config(&rt.config, true),
            "runtime_changes": changes,
        })
    }

    /// Every certificate served: static ones from the TLS listeners' files, and
    /// those issued by ACME.
    pub fn certificates(&self) -> Vec<crate::tls::certs::CertInfo> {
        let rt = self.runtime.load();
        let mut out = Vec::new();
        for l in &rt.config.listeners {
            for c in l.tls.iter().flat_map(|t| &t.certificates) {
                if let Ok(loaded) = crate::tls::certs::from_files(&c.cert, &c.key) {
                    out.push(loaded.info);
                }
            }
        }
        for a in self.acme.load().iter() {
            out.extend(a.infos());
        }
        out
    }

    pub fn certificates_json(&self) -> Value {
        serde_json::to_value(
            self.certificates()
                .into_iter()
                .map(|c| {
                    json!({
                        "names": c.names,
                        "issuer": c.issuer,
                        "not_after": crate::failover::rfc3339(c.not_after as f64),
                        "source": c.source,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .unwrap_or(Value::Null)
    }

    /// The ACME states a config would use: running managers whose settings did not
    /// change, fresh ones otherwise (not started yet).
    fn acme_states_for(&self, state: &ReloadState, config: &Config) -> Vec<Arc<AcmeState>> {
        acme_wanted(config)
            .into_iter()
            .map(|(cfg, domains)| match state.acme.get(&cfg.storage) {
                Some(m) if m.state.config == cfg && m.state.domains == domains => m.state.clone(),
                _ => Arc::new(AcmeState::new(cfg, domains)),
            })
            .collect()
    }

    /// Starts, keeps or stops ACME managers to match the config.
    fn reconcile_acme(self: &Arc<Self>, state: &mut ReloadState, config: &Config) {
        let wanted = acme_wanted(config);
        let keys: Vec<PathBuf> = wanted.iter().map(|(c, _)| c.storage.clone()).collect();
        state.acme.retain(|k, m| {
            let keep = keys.contains(k);
            if !keep {
                m.stop.cancel();
            }
            keep
        });
        for (cfg, domains) in wanted {
            let same = state
                .acme
                .get(&cfg.storage)
                .is_some_and(|m| m.state.config == cfg && m.state.domains == domains);
            if same {
                continue;
            }
            if let Some(old) = state.acme.remove(&cfg.storage) {
                old.stop.cancel();
            }
            if domains.is_empty() {
                tracing::warn!(storage = %cfg.storage.display(), "ACME is configured but there is no domain to order (no `domains`, no exact route host)");
            }
            let st = Arc::new(AcmeState::new(cfg.clone(), domains));
            let stop = self.shutdown.child_token();
            tokio::spawn(crate::tls::acme::run(
                st.clone(),
                Arc::downgrade(self),
                stop.clone(),
            ));
            state
                .acme
                .insert(cfg.storage.clone(), AcmeManager { state: st, stop });
        }
        self.acme.store(Arc::new(
            state.acme.values().map(|m| m.state.clone()).collect(),
        ));
    }

    /// Stops accepting, lets in-flight requests and open tunnels finish for at most
    /// `timeout`, then returns.
    pub async fn shutdown(&self, timeout: Duration) {
        if let Some(c) = self.cluster() {
            c.leave().await;
        }
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

/// `shared` (a replicated config) with this node's own `listeners`, `admin` and
/// `cluster` taken from `local`: those are never replicated.
fn with_local_keys(mut shared: Config, local: &Config) -> Config {
    shared.listeners = local.listeners.clone();
    shared.admin = local.admin.clone();
    shared.cluster = local.cluster.clone();
    shared
}

/// Committed admin commands run here, on the proxy.
struct AppApplier(std::sync::Weak<App>);

impl Applier for AppApplier {
    fn apply(&self, cmd: AdminCommand) -> BoxFut<'static, Outcome> {
        let app = self.0.upgrade();
        Box::pin(async move {
            match app {
                Some(app) => command::execute_local(&app, &cmd).await,
                None => Outcome::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            }
        })
    }
}

fn event_sink(app: &Arc<App>) -> crate::cluster::EventSink {
    let weak = Arc::downgrade(app);
    Arc::new(move |kind: &str, message: String| {
        if let Some(app) = weak.upgrade() {
            app.events.record(kind, None, None, message);
        }
    })
}

/// What a returning node must pass before it may take the primary role back:
/// its listeners are up (they are, or it would not have started) and every pool
/// has an available backend.
fn preempt_checks(app: &Arc<App>) -> crate::cluster::Checks {
    let weak = Arc::downgrade(app);
    Arc::new(move || {
        let app = weak.upgrade().ok_or("shutting down")?;
        if app.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        let rt = app.runtime.load();
        let now = crate::clock::now_ms();
        for p in rt.pools.iter() {
            if !p.members.is_empty() && !p.members.iter().any(|m| m.backend.available(now)) {
                return Err(format!("pool `{}` has no available backend", p.name));
            }
        }
        Ok(())
    })
}

struct AcmeManager {
    state: Arc<AcmeState>,
    stop: CancellationToken,
}

/// ACME configs by storage directory, with the domains each should cover: its
/// `domains`, or every exact host of the routes.
fn acme_wanted(config: &Config) -> Vec<(config::AcmeConfig, Vec<String>)> {
    let mut out: Vec<(config::AcmeConfig, Vec<String>)> = Vec::new();
    for l in &config.listeners {
        let Some(a) = l.tls.as_ref().and_then(|t| t.acme.as_ref()) else {
            continue;
        };
        if out.iter().any(|(c, _)| c.storage == a.storage) {
            continue;
        }
        let mut domains = if a.domains.is_empty() {
            config
                .routes
                .iter()
                .filter_map(|r| match &r.host {
                    Some(config::HostMatch::Exact(h)) if h.parse::<std::net::IpAddr>().is_err() => {
                        Some(h.clone())
                    }
                    _ => None,
                })
                .collect()
        } else {
            a.domains.clone()
        };
        domains.sort();
        domains.dedup();
        out.push((a.clone(), domains));
    }
    out
}

/// Every socket the config asks for: its listeners (with their TLS configs, which
/// reads the certificate files) and the `redirect_http_from` ones.
fn listener_specs(
    config: &Config,
    acme: &[Arc<AcmeState>],
) -> Result<Vec<(SocketAddr, listener::ListenerSpec)>, String> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let tls = match &l.tls {
            Some(t) => {
                let state = t
                    .acme
                    .as_ref()
                    .and_then(|a| acme.iter().find(|s| s.config.storage == a.storage).cloned());
                Some(
                    crate::tls::server_config(l, state)
                        .map_err(|e| format!("listener {}: {e}", l.address))?,
                )
            }
            None => None,
        };
        out.push((
            l.address,
            listener::ListenerSpec {
                config: l.clone(),
                role: listener::Role::Proxy,
                tls,
            },
        ));
        if let Some(r) = l.redirect_http_from {
            out.push((
                r,
                listener::ListenerSpec {
                    config: config::ListenerConfig::plain(r),
                    role: listener::Role::Redirect {
                        https_port: l.address.port(),
                    },
                    tls: None,
                },
            ));
        }
    }
    Ok(out)
}

/// Enabling a backend without a health check: wait until it accepts a connection.
async fn confirm_reachable(app: std::sync::Weak<App>, backend: Arc<Backend>, timeout: Duration) {
    loop {
        if backend.admin_state() != AdminState::Enabling {
            return;
        }
        let ok = crate::upstream::io::connect(&backend.address, timeout)
            .await
            .is_ok();
        if ok {
            if backend.admin_state() == AdminState::Enabling {
                backend.set_admin_state(AdminState::Active);
                backend
                    .up_since_ms
                    .store(crate::clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
                if let Some(app) = app.upgrade() {
                    app.events.record(
                        "backend.enabled",
                        Some(&backend.pool),
                        Some(backend.key()),
                        "reachable again: back in rotation",
                    );
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
