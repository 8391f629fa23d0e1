//! The reload pipeline: base config + layers → compose → compile → swap →
//! reconcile. Everything that can fail (certificate files, sockets, the access
//! log, the compile) is done before the swap, so a rejected change leaves the
//! running node exactly as it was.

use super::{ReloadState, Supervisor, listeners};
use crate::admin::AdminServer;
use crate::command::CommandError;
use crate::config::{self, Config, layers::Layer};
use crate::events::EventKind;
use crate::listener::ListenerSpec;
use crate::otlp::Otlp;
use crate::proxy::access_log::AccessLog;
use crate::snapshot::Snapshot;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

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

/// What a change needs that may fail, made ready before anything is swapped.
struct Prepared {
    snapshot: Snapshot,
    specs: Vec<(SocketAddr, ListenerSpec)>,
    /// Newly bound sockets, not serving yet.
    bound: Vec<(SocketAddr, ListenerSpec, Vec<std::net::TcpListener>)>,
    /// `Some(new)` when the admin listener changes (`Some(None)`: it goes away).
    admin: Option<Option<AdminServer>>,
    /// The admin API's HTTPS settings, read again from the files.
    admin_tls: Option<Arc<rustls::ServerConfig>>,
    access_log: Option<Option<AccessLog>>,
    otlp: Option<Option<Arc<Otlp>>>,
}

pub(super) fn invalid(errors: config::ConfigErrors) -> CommandError {
    CommandError::invalid("invalid config").with_details(errors.lines())
}

impl Supervisor {
    /// Re-reads the config file and applies it. With `force`, a file that did not
    /// change still produces a new generation (SIGHUP); without, it is a no-op
    /// (file watch).
    pub(crate) async fn reload_from_file(
        self: &Arc<Self>,
        force: bool,
    ) -> Result<ReloadOutcome, CommandError> {
        let source = match &self.config_path {
            Some(p) => format!("reload of {}", p.display()),
            None => "reload".to_string(),
        };
        let r = self.reload_file_once(force).await;
        self.record_reload(&source, &r);
        r
    }

    async fn reload_file_once(
        self: &Arc<Self>,
        force: bool,
    ) -> Result<ReloadOutcome, CommandError> {
        let Some(path) = &self.config_path else {
            return Err(CommandError::conflict("no config file to reload from"));
        };
        let loaded = config::load_file(path).map_err(invalid)?;
        let mut state = self.state.lock().await;
        if !force && loaded.text == state.text {
            return Ok(ReloadOutcome::Unchanged(state.generation));
        }
        if loaded.config.cluster != state.base.cluster {
            tracing::warn!("changes to `cluster` take effect at the next restart");
        }
        let config = if state.replicated {
            // The replicated config stays the truth; the file gives this node's own keys.
            with_local_keys(state.base.clone(), &loaded.config)
        } else {
            loaded.config
        };
        let mut admin_layer = state.admin_layer.clone();
        admin_layer.absorb(&config);
        let g = self.apply_locked(&mut state, config, admin_layer).await?;
        state.text = loaded.text;
        Ok(ReloadOutcome::Applied(g))
    }

    /// `PUT /api/v1/config`: replaces the base config (and forgets the API's
    /// changes: the document sent is the new truth). With `persist`, the text is
    /// also written to the config file, atomically.
    pub(crate) async fn put_config(
        self: &Arc<Self>,
        text: &str,
        persist: bool,
    ) -> Result<u64, CommandError> {
        let r = self.put_config_once(text, persist).await;
        self.record_reload("PUT /api/v1/config", &r);
        r
    }

    /// Counts a new base config's fate for the metrics and the dashboard: a
    /// rejection is logged once per error and becomes a `config.rejected` event.
    pub(super) fn record_reload<T>(&self, source: &str, r: &Result<T, CommandError>) {
        let reload = &self.proxy.telemetry.reload;
        match r {
            Ok(_) => reload.succeeded(),
            Err(e) => {
                let lines = if e.details.is_empty() {
                    vec![e.message.clone()]
                } else {
                    e.details.clone()
                };
                for line in &lines {
                    tracing::error!(source, error = %line, "reload rejected; the previous configuration keeps serving");
                }
                reload.rejected(&self.proxy.events, source, &lines);
            }
        }
    }

    async fn put_config_once(
        self: &Arc<Self>,
        text: &str,
        persist: bool,
    ) -> Result<u64, CommandError> {
        let config = config::load_str(text, "api", &self.base_dir()).map_err(invalid)?;
        if persist && self.config_path.is_none() {
            return Err(CommandError::conflict(
                "no config file to persist to (started without one)",
            ));
        }
        let mut state = self.state.lock().await;
        let clustered = self.cluster.get().is_some() || state.base.cluster.is_some();
        let config = if clustered {
            with_local_keys(config, &state.base)
        } else {
            config
        };
        let fresh = Layer::new("api", Default::default());
        let g = self.apply_locked(&mut state, config, fresh).await?;
        state.text = text.to_string();
        state.replicated = clustered;
        if persist && let Some(path) = &self.config_path {
            let tmp = path.with_extension("tmp-fulcrum");
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| {
                    CommandError::failed(format!(
                        "applied, but writing {} failed: {e}",
                        path.display()
                    ))
                })?;
        }
        Ok(g)
    }

    /// Applies the current base with a new admin layer.
    pub(super) async fn apply_layer(
        self: &Arc<Self>,
        admin_layer: Layer,
    ) -> Result<u64, CommandError> {
        let mut state = self.state.lock().await;
        let base = state.base.clone();
        self.apply_locked(&mut state, base, admin_layer).await
    }

    /// Composes base + layers, prepares everything that may fail, then swaps the
    /// snapshot in and reconciles the listeners and background tasks. In-flight
    /// requests keep the snapshot they started with.
    pub(super) async fn apply_locked(
        self: &Arc<Self>,
        state: &mut ReloadState,
        base: Config,
        admin_layer: Layer,
    ) -> Result<u64, CommandError> {
        if base.discovery.docker.is_none() {
            state.discovery_layer = Layer::new("docker", Default::default());
        }
        let composed = config::layers::compose(&base, &[&admin_layer, &state.discovery_layer]);
        for w in &composed.warnings {
            tracing::warn!("{w}");
        }
        let generation = state.generation + 1;
        let prepared = self.prepare(state, composed.config, generation)?;
        self.commit(state, prepared);
        state.base = base;
        state.admin_layer = admin_layer;
        state.generation = generation;
        self.publish_status(state);
        tracing::info!(generation, "configuration applied");
        self.proxy.events.record(
            EventKind::ConfigApplied,
            None,
            None,
            format!("configuration generation {generation} applied"),
        );
        Ok(generation)
    }

    fn prepare(
        self: &Arc<Self>,
        state: &ReloadState,
        config: Config,
        generation: u64,
    ) -> Result<Prepared, CommandError> {
        let failed = |m: String| CommandError::conflict(m);
        // Certificates are read and TLS configs built before anything changes, so
        // a broken certificate file fails the reload instead of a listener.
        let acme_preview = self.acme_states_for(state, &config);
        let specs = listeners::specs(&config, &acme_preview).map_err(failed)?;
        let mut bound = Vec::new();
        for (addr, spec) in &specs {
            if !state.listeners.contains_key(addr) {
                let sock = crate::net::bind_group(*addr, self.cores.sockets())
                    .map_err(|e| failed(format!("cannot listen on {addr}: {e}")))?;
                bound.push((*addr, spec.clone(), sock));
            }
        }
        let admin_tls = match config.admin.as_ref().and_then(|a| a.tls.as_ref()) {
            Some(t) => Some(crate::tls::admin_server_config(t).map_err(failed)?),
            None => None,
        };
        let admin_addr = config.admin.as_ref().map(|a| a.address);
        let have = state.admin_server.as_ref();
        let admin = match (admin_addr, have) {
            (Some(want), Some(have)) if have.can_keep(want, admin_tls.is_some()) => None,
            (Some(want), _) => Some(Some(
                crate::admin::start(&self.admin, want, admin_tls.clone())
                    .map_err(|e| failed(format!("cannot start the admin API on {want}: {e}")))?,
            )),
            (None, Some(_)) => Some(None),
            (None, None) => None,
        };
        let current_log = self.proxy.access_log.load_full();
        let access_log = if current_log.as_ref().map(|l| &l.config) == Some(&config.access_log)
            || (current_log.is_none() && !config.access_log.enabled)
        {
            None
        } else {
            Some(
                AccessLog::open(&config.access_log)
                    .map_err(|e| failed(format!("cannot open the access log: {e}")))?,
            )
        };
        let current_otlp = self.proxy.otlp.load_full();
        let otlp = if current_otlp.as_ref().map(|o| &o.config) == config.tracing.as_ref() {
            None
        } else {
            Some(match &config.tracing {
                Some(t) => Some(Arc::new(Otlp::start(t).map_err(failed)?)),
                None => None,
            })
        };
        let prev = self.proxy.snapshot.load_full();
        let snapshot =
            Snapshot::compile(Arc::new(config), generation, Some(&prev)).map_err(failed)?;
        Ok(Prepared {
            snapshot,
            specs,
            bound,
            admin,
            admin_tls,
            access_log,
            otlp,
        })
    }

    /// Swaps in what `prepare` made ready. Nothing here can refuse the change.
    fn commit(self: &Arc<Self>, state: &mut ReloadState, p: Prepared) {
        let snapshot = Arc::new(p.snapshot);
        let config = snapshot.config.clone();
        self.proxy.snapshot.store(snapshot.clone());
        if let Some(log) = p.access_log {
            self.proxy.access_log.store(log.map(Arc::new));
        }
        if let Some(otlp) = p.otlp {
            self.proxy.otlp.store(otlp);
        }
        self.store_admin_tokens(&config);
        match p.admin {
            Some(admin) => state.admin_server = admin,
            None => {
                if let (Some(server), Some(tls)) = (&state.admin_server, p.admin_tls) {
                    server.set_tls(tls);
                }
            }
        }
        self.reconcile_acme(state, &config);
        let max = config.limits.max_connections;
        for (addr, spec, sock) in p.bound {
            match self.start_listener(sock, spec, max) {
                Ok(handle) => {
                    tracing::info!(address = %handle.local_addr, configured = %addr, "listening");
                    state.listeners.insert(addr, handle);
                }
                Err(e) => tracing::error!(address = %addr, error = %e, "cannot start listener"),
            }
        }
        let wanted: HashMap<SocketAddr, ListenerSpec> = p.specs.into_iter().collect();
        state
            .listeners
            .retain(|addr, handle| match wanted.get(addr) {
                Some(spec) => {
                    handle.update(spec.clone(), max);
                    true
                }
                None => {
                    tracing::info!(address = %handle.local_addr, "listener removed");
                    handle.stop();
                    false
                }
            });
        self.notifier.configure(&config.failover.notification);
        self.reconcile_discovery(state, &config);
        state.health.reconcile(&snapshot);
        state.failover.reconcile(&snapshot);
    }
}

/// `shared` (a replicated config) with this node's own `listeners`, `admin`,
/// `cluster` and `discovery` taken from `local`: those are never replicated.
pub(super) fn with_local_keys(mut shared: Config, local: &Config) -> Config {
    shared.discovery = local.discovery.clone();
    shared.listeners = local.listeners.clone();
    shared.admin = local.admin.clone();
    shared.cluster = local.cluster.clone();
    shared
}
