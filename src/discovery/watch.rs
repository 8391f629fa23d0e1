//! The discovery task: connects to the engine, subscribes to its events, lists
//! and inspects the running containers, then follows events (re-inspecting the
//! one container each names, a few at a time after a short debounce) with a
//! periodic full re-list as a safety net. A lost connection is retried with
//! backoff; what was known keeps serving meanwhile.

use super::build::{self, ContainerStatus, Tracked};
use super::container::Container;
use super::engine::{self, Endpoint, Engine};
use super::{Shared, Status};
use crate::config::DockerConfig;
use crate::config::layers::Layer;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long events are gathered before the containers they name are re-inspected.
const DEBOUNCE: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A running watcher; dropping it stops the task.
pub(crate) struct Watcher {
    pub(crate) config: DockerConfig,
    stop: CancellationToken,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Watcher {
    /// Starts watching; every change of the discovered layer is sent to `publish`.
    pub(crate) fn start(
        config: DockerConfig,
        shared: Arc<Shared>,
        publish: watch::Sender<Layer>,
        stop: CancellationToken,
    ) -> Watcher {
        let mut run = Run {
            cfg: config.clone(),
            shared,
            publish,
            tracked: BTreeMap::new(),
            own_networks: Vec::new(),
            status: Status::default(),
        };
        let token = stop.clone();
        tokio::spawn(async move { run.main(token).await });
        Watcher { config, stop }
    }
}

struct Run {
    cfg: DockerConfig,
    shared: Arc<Shared>,
    publish: watch::Sender<Layer>,
    tracked: BTreeMap<String, Tracked>,
    own_networks: Vec<String>,
    status: Status,
}

impl Run {
    async fn main(&mut self, stop: CancellationToken) {
        let endpoint = match Endpoint::resolve(self.cfg.endpoint.as_deref()) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("discovery: {e}");
                self.status.last_error = Some(e);
                self.store_status();
                return;
            }
        };
        self.status.endpoint = endpoint.text();
        self.store_status();
        let mut backoff = BACKOFF_MIN;
        loop {
            let connected_before = Instant::now();
            let r = tokio::select! {
                r = self.session(endpoint.clone()) => r,
                _ = stop.cancelled() => return,
            };
            let e = match r {
                Ok(()) => "the engine closed the event stream".to_string(),
                Err(e) => e,
            };
            if self.status.connected || self.status.last_error.as_ref() != Some(&e) {
                tracing::warn!(endpoint = %self.status.endpoint, error = %e, "discovery: engine connection lost; retrying");
            }
            self.status.connected = false;
            self.status.last_error = Some(e);
            self.store_status();
            if connected_before.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection: subscribe, re-list, then follow events until the stream
    /// ends or fails.
    async fn session(&mut self, endpoint: Endpoint) -> Result<(), String> {
        let engine = Engine::negotiate(endpoint).await?;
        // Subscribed before listing, so nothing between the two is missed.
        let mut events = engine.events().await?;
        self.own_networks = own_networks(&engine).await;
        self.resync(&engine).await?;
        if !self.status.connected {
            tracing::info!(endpoint = %self.status.endpoint, api_version = %engine.version, containers = self.tracked.len(), "discovery: connected to the engine");
        }
        self.status.connected = true;
        self.status.api_version = Some(engine.version.clone());
        self.status.last_error = None;
        self.rebuild();
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut due = Instant::now();
        let mut resync = tokio::time::interval(self.cfg.resync_interval);
        resync.tick().await;
        loop {
            tokio::select! {
                e = events.next() => {
                    let Some(e) = e? else { return Ok(()) };
                    self.shared.events_total.fetch_add(1, Relaxed);
                    self.status.last_event = Some(crate::clock::unix_secs_f64());
                    let Some((id, stopping)) = engine::event_target(&e) else { continue };
                    if stopping && let Some(t) = self.tracked.get_mut(&id) {
                        // Drained at once: no debounce, no round trip.
                        t.stopping = Some(t.container.started_at.clone());
                        self.rebuild();
                    }
                    if dirty.is_empty() {
                        due = Instant::now() + DEBOUNCE;
                    }
                    dirty.insert(id);
                }
                _ = tokio::time::sleep_until(due), if !dirty.is_empty() => {
                    for id in std::mem::take(&mut dirty) {
                        self.refresh(&engine, &id).await?;
                    }
                    self.rebuild();
                }
                _ = resync.tick() => {
                    self.resync(&engine).await?;
                    self.rebuild();
                }
            }
        }
    }

    /// Re-lists the running containers and inspects each.
    async fn resync(&mut self, engine: &Engine) -> Result<(), String> {
        let ids = engine.list().await?;
        let mut next = BTreeMap::new();
        for id in ids {
            if let Some(c) = inspect(engine, &id).await? {
                let stopping = self.tracked.get(&id).and_then(|t| t.stopping.clone());
                next.insert(
                    id,
                    Tracked {
                        container: c,
                        stopping,
                    },
                );
            }
        }
        self.tracked = next;
        Ok(())
    }

    /// Re-inspects one container: updated while it runs, forgotten once it does not.
    async fn refresh(&mut self, engine: &Engine, id: &str) -> Result<(), String> {
        match inspect(engine, id).await? {
            Some(c) => {
                let stopping = self.tracked.get(id).and_then(|t| t.stopping.clone());
                self.tracked.insert(
                    id.to_string(),
                    Tracked {
                        container: c,
                        stopping,
                    },
                );
            }
            None => {
                self.tracked.remove(id);
            }
        }
        Ok(())
    }

    /// Builds the layer and status from what is known, and publishes both.
    fn rebuild(&mut self) {
        let built = build::build(&self.cfg, &self.tracked, &self.own_networks);
        log_changes(&self.status.containers, &built.containers);
        self.status.containers = built.containers;
        self.status.pools = built.layer.pools.iter().map(|p| p.name.clone()).collect();
        self.status.backends = built.backends;
        self.store_status();
        self.publish.send_if_modified(|l| {
            if *l == built.layer {
                false
            } else {
                *l = built.layer;
                true
            }
        });
    }

    fn store_status(&self) {
        self.shared
            .status
            .store(Some(Arc::new(self.status.clone())));
    }
}

/// Logs what changed for each container since the last pass: its verdict and
/// state, and warnings it did not have before (so they are not repeated).
fn log_changes(before: &[ContainerStatus], after: &[ContainerStatus]) {
    for c in after {
        let prev = before.iter().find(|p| p.id == c.id);
        if prev.map(|p| (p.verdict, p.state, &p.routes)) != Some((c.verdict, c.state, &c.routes)) {
            match &c.reason {
                Some(why) => {
                    tracing::info!(container = %c.name, reason = %why, "discovery: container skipped")
                }
                None => {
                    tracing::info!(container = %c.name, state = c.state, address = ?c.address, routes = ?c.routes, "discovery: container routed")
                }
            }
        }
        for w in &c.warnings {
            if !prev.is_some_and(|p| p.warnings.contains(w)) {
                tracing::warn!(container = %c.name, "discovery: {w}");
            }
        }
    }
    for p in before {
        if !after.iter().any(|c| c.id == p.id) {
            tracing::info!(container = %p.name, "discovery: container gone");
        }
    }
}

/// One running container, or `None` (gone, or not running).
async fn inspect(engine: &Engine, id: &str) -> Result<Option<Container>, String> {
    let v = engine.inspect(id).await?;
    Ok(v.as_ref()
        .and_then(Container::from_inspect)
        .filter(|c| c.running))
}

/// When Fulcrum itself runs in a container: that container's networks.
async fn own_networks(engine: &Engine) -> Vec<String> {
    if !std::path::Path::new("/.dockerenv").exists() {
        return Vec::new();
    }
    let Ok(host) = std::fs::read_to_string("/etc/hostname") else {
        return Vec::new();
    };
    match engine.inspect(host.trim()).await {
        Ok(Some(v)) => Container::from_inspect(&v)
            .map(|c| c.networks.into_keys().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
