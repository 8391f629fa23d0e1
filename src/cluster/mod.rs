//! High availability of the proxy itself (SPEC §6): nodes elect a primary with
//! Raft, the primary holds the floating VIP, admin changes replicate to every
//! node.
//!
//! - `consensus`: the seam to the Raft library; `raft/` implements it.
//! - `transport`: TCP between nodes.
//! - `role`: who is primary, by the leader lease (see the timing model there).
//! - `vip`: netlink and gratuitous ARP. `hooks`: notify script and webhook.
//!
//! A role task watches the consensus state and a short tick; it alone moves the
//! VIP and fires hooks, so transitions are ordered. Nothing here touches the
//! request path: proxies serve on every node, the VIP decides where clients go.

pub mod auth;
pub mod consensus;
pub mod hooks;
mod raft;
#[doc(hidden)]
pub(crate) use raft::decode_rpc;
pub mod role;
pub mod transport;
pub mod vip;

use crate::command::{Command, CommandError, CommandSink, Outcome};
use crate::config::ClusterConfig;
use crate::events::{EventKind, Events};
use consensus::{Consensus, ConsensusView, ProposeError};
use hooks::{Hooks, Transition};
use role::{Preempt, Role};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use transport::{Contacts, Peer, Request, Response};
use vip::Vip;

/// How long a forwarded admin write may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Local checks a returning node must pass before it may preempt (the proxy
/// provides them: its listeners are up, its pools have healthy backends).
pub type Checks = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub struct Cluster {
    pub config: ClusterConfig,
    pub witness: bool,
    consensus: OnceLock<Arc<dyn Consensus>>,
    peers: HashMap<String, Arc<Peer>>,
    contacts: Arc<Contacts>,
    role: AtomicU8,
    term: AtomicU64,
    transitions: AtomicU64,
    role_since: Mutex<Instant>,
    handing_over: AtomicBool,
    vip: Option<Vip>,
    hooks: Hooks,
    events: Arc<Events>,
    /// Every role change, for whoever acts on it (ACME orders only on the primary).
    roles: tokio::sync::watch::Sender<Role>,
    checks: Checks,
    stop: CancellationToken,
    lease: Duration,
}

impl Cluster {
    /// Binds the peer port, removes a stale VIP, starts Raft and the role task.
    /// The node starts as secondary (or witness).
    pub async fn start(
        config: ClusterConfig,
        witness: bool,
        applier: Arc<dyn CommandSink>,
        events: Arc<Events>,
        checks: Checks,
    ) -> Result<Arc<Cluster>, String> {
        if witness && config.vip.is_some() {
            tracing::info!("witness: the vip section is ignored (a witness never holds it)");
        }
        let vip = match (&config.vip, witness) {
            (Some(v), false) => Some(Vip::open(v).await?),
            _ => None,
        };
        if let Some(v) = &vip
            && v.release().await?
        {
            tracing::warn!(vip = %v.config.address, "removed a stale VIP left from an earlier run");
        }
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| format!("cannot listen for cluster peers on {}: {e}", config.bind))?;
        let names = std::iter::once(config.node_id.clone())
            .chain(config.peers.iter().map(|p| p.id.clone()));
        let contacts = Arc::new(Contacts::new(names));
        let secret = config
            .secret
            .as_deref()
            .map(|s| Arc::new(auth::Secret::new(s)));
        if secret.is_none() && !config.bind.ip().is_loopback() {
            tracing::warn!(
                bind = %config.bind,
                "cluster.secret is not set: anything that reaches this address can send Raft messages and admin writes; set a secret or keep the peer network private"
            );
        }
        let peers: HashMap<String, Arc<Peer>> = config
            .peers
            .iter()
            .map(|p| {
                (
                    p.id.clone(),
                    Arc::new(Peer::new(
                        &config.node_id,
                        &p.id,
                        &p.address,
                        contacts.clone(),
                        secret.clone(),
                    )),
                )
            })
            .collect();
        let initial = if witness {
            Role::Witness
        } else {
            Role::Secondary
        };
        let cluster = Arc::new(Cluster {
            lease: role::lease(config.election_timeout),
            hooks: Hooks::start(&config.hooks),
            config,
            witness,
            consensus: OnceLock::new(),
            peers,
            contacts: contacts.clone(),
            role: AtomicU8::new(initial.code()),
            term: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            role_since: Mutex::new(Instant::now()),
            handing_over: AtomicBool::new(false),
            vip,
            events,
            roles: tokio::sync::watch::Sender::new(initial),
            checks,
            stop: CancellationToken::new(),
        });
        transport::serve(
            listener,
            cluster.clone(),
            contacts,
            secret,
            cluster.stop.clone(),
        );
        let consensus =
            raft::RaftConsensus::start(&cluster.config, witness, applier, &cluster.peers).await?;
        let _ = cluster.consensus.set(consensus);
        tracing::info!(
            node = %cluster.config.node_id,
            bind = %cluster.config.bind,
            peers = cluster.peers.len(),
            role = initial.word(),
            "cluster node started"
        );
        cluster.announce(Role::Secondary, initial, "starting".into(), 0);
        tokio::spawn(cluster.clone().run_roles());
        Ok(cluster)
    }

    fn consensus(&self) -> Option<&Arc<dyn Consensus>> {
        self.consensus.get()
    }

    /// Follows this node's role as it changes.
    pub(crate) fn watch_role(&self) -> tokio::sync::watch::Receiver<Role> {
        self.roles.subscribe()
    }

    pub fn role(&self) -> Role {
        Role::from_code(self.role.load(Relaxed))
    }

    pub fn term(&self) -> u64 {
        self.term.load(Relaxed)
    }

    pub fn transitions(&self) -> u64 {
        self.transitions.load(Relaxed)
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    fn view(&self) -> ConsensusView {
        self.consensus()
            .map(|c| c.view().borrow().clone())
            .unwrap_or_else(ConsensusView::initial)
    }

    /// Reports a transition: log, event, hooks. The VIP has already moved.
    fn announce(&self, from: Role, to: Role, reason: String, term: u64) {
        let from_word = if reason == "starting" {
            "starting"
        } else {
            from.word()
        };
        tracing::info!(from = from_word, to = to.word(), term, %reason, "cluster role");
        self.events.record(
            EventKind::ClusterRole,
            None,
            None,
            format!("{} → {}: {reason}", from_word, to.word()),
        );
        self.roles.send_replace(to);
        self.hooks.notify(&Transition {
            node: self.config.node_id.clone(),
            from: from_word,
            to: to.word(),
            term,
            reason,
            ts: crate::clock::rfc3339(crate::clock::unix_secs_f64()),
        });
    }

    /// The role task: decides the role from the consensus state at every change
    /// and every tick, moves the VIP, runs preemption.
    async fn run_roles(self: Arc<Self>) {
        let Some(consensus) = self.consensus().cloned() else {
            return;
        };
        let mut rx = consensus.view();
        let tick = (self.config.heartbeat_interval / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(50));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut preempt = Preempt::default();
        let mut vip_ok = true;
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = ticker.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            let view = rx.borrow().clone();
            self.term.store(view.term, Relaxed);
            let now = Instant::now();
            let current = self.role();
            let want = role::decide(self.witness, &view, now, self.lease);
            if want != current {
                let reason = role::reason(
                    current,
                    want,
                    &view,
                    &self.config.node_id,
                    self.handing_over.load(Relaxed),
                );
                if current == Role::Primary {
                    self.release_vip().await;
                }
                self.role.store(want.code(), Relaxed);
                *self.role_since.lock().unwrap_or_else(|p| p.into_inner()) = now;
                self.transitions.fetch_add(1, Relaxed);
                if want == Role::Primary {
                    vip_ok = self.acquire_vip().await;
                }
                self.announce(current, want, reason, view.term);
                preempt.reset();
            } else if want == Role::Primary && !vip_ok {
                vip_ok = self.acquire_vip().await;
            }
            if want == Role::Secondary && self.config.preempt {
                self.maybe_preempt(&view, &mut preempt, now);
            }
        }
    }

    async fn acquire_vip(&self) -> bool {
        let Some(v) = &self.vip else {
            return true;
        };
        match v.acquire().await {
            Ok(()) => {
                tracing::info!(vip = %v.config.address, interface = %v.config.interface, "VIP added, gratuitous ARPs sent");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot take the VIP; retrying");
                false
            }
        }
    }

    async fn release_vip(&self) {
        if let Some(v) = &self.vip {
            match v.release().await {
                Ok(_) => tracing::info!(vip = %v.config.address, "VIP released"),
                Err(e) => tracing::error!(error = %e, "cannot remove the VIP"),
            }
        }
    }

    fn maybe_preempt(&self, view: &ConsensusView, preempt: &mut Preempt, now: Instant) {
        let Some(leader) = view.leader.clone().filter(|l| *l != self.config.node_id) else {
            preempt.reset();
            return;
        };
        let caught_up = view.last_log.is_some() && view.last_applied == view.last_log;
        let passing = caught_up && (self.checks)().is_ok();
        let retry = self.config.preempt_delay.max(Duration::from_secs(5));
        if !preempt.update(passing, now, self.config.preempt_delay, retry) {
            return;
        }
        let Some(peer) = self.peers.get(&leader).cloned() else {
            return;
        };
        let priority = self.config.priority;
        tokio::spawn(async move {
            match peer
                .call(Request::Yield { priority }, Duration::from_secs(5))
                .await
            {
                Ok(Response::Ok) => {
                    tracing::info!(primary = %peer.name, "preempting: the primary hands over")
                }
                Ok(Response::Refused(why)) => {
                    tracing::info!(primary = %peer.name, %why, "preemption declined")
                }
                Ok(other) => tracing::warn!(?other, "unexpected answer to a preemption request"),
                Err(e) => tracing::warn!(error = %e, "cannot reach the primary to preempt"),
            }
        });
    }

    /// The leader's side of a hand-over: stop heartbeats and elections, tell the
    /// target to campaign once the followers' lease has run out, keep the VIP
    /// until our own lease ends (the role task drops it), then wait for the new
    /// leader. Returns whether one was seen.
    async fn hand_over(&self, target: Option<String>) -> bool {
        let Some(consensus) = self.consensus().cloned() else {
            return false;
        };
        if self.role() != Role::Primary || self.handing_over.swap(true, Relaxed) {
            return false;
        }
        let view = self.view();
        let target = target.or_else(|| {
            // The caught-up voter heard from most recently.
            let mut best: Option<(String, u64)> = None;
            for p in self.config.peers.iter().filter(|p| !p.witness) {
                let matched = view
                    .matched
                    .iter()
                    .find(|(n, _)| *n == p.id)
                    .and_then(|(_, m)| *m);
                if matched.is_none() || matched < view.last_log {
                    continue;
                }
                let ago = self.contacts.since(&p.id).unwrap_or(u64::MAX);
                if best.as_ref().is_none_or(|(_, b)| ago < *b) {
                    best = Some((p.id.clone(), ago));
                }
            }
            best.map(|(n, _)| n)
        });
        tracing::info!(
            target = target.as_deref().unwrap_or("-"),
            "handing the primary role over"
        );
        consensus.set_active(false, false);
        if let Some(t) = &target
            && let Some(peer) = self.peers.get(t)
            && let Err(e) = peer.call(Request::TakeOver, Duration::from_secs(2)).await
        {
            tracing::warn!(target = %t, error = %e, "cannot reach the hand-over target");
        }
        let deadline = Instant::now() + self.config.election_timeout * 6;
        let mut rx = consensus.view();
        let mut handed = false;
        while Instant::now() < deadline {
            {
                let v = rx.borrow_and_update();
                if v.leader.as_ref().is_some_and(|l| *l != self.config.node_id) {
                    handed = true;
                    break;
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
        handed
    }

    /// Target side: campaign once the others' lease on the old leader is over.
    async fn take_over(self: Arc<Self>, from: String) {
        let Some(consensus) = self.consensus().cloned() else {
            return;
        };
        if self.witness {
            return;
        }
        let et = self.config.election_timeout;
        tokio::time::sleep(et * 2).await;
        let deadline = Instant::now() + et * 4;
        while Instant::now() < deadline {
            let v = self.view();
            if v.is_leader || v.leader.as_ref().is_some_and(|l| *l != from) {
                return;
            }
            consensus.campaign().await;
            tokio::time::sleep(self.config.heartbeat_interval.max(et / 2)).await;
        }
    }

    /// Replicates an admin write: proposed here when this node leads, else
    /// forwarded to the primary. Answers once this node has applied it too.
    pub(crate) async fn submit(&self, cmd: Command) -> Outcome {
        if self.witness {
            return Err(CommandError::conflict("a witness takes no admin changes"));
        }
        if self.handing_over.load(Relaxed) {
            return Err(CommandError::unavailable(
                "this node is handing the primary role over; retry in a moment",
            ));
        }
        let Some(consensus) = self.consensus() else {
            return Err(CommandError::unavailable("the cluster is starting"));
        };
        match consensus.propose(cmd.clone()).await {
            Ok((o, _)) => o,
            Err(ProposeError::NotLeader(Some(leader))) if leader != self.config.node_id => {
                let Some(peer) = self.peers.get(&leader) else {
                    return Err(CommandError::unavailable(format!(
                        "the primary `{leader}` is not a configured peer"
                    )));
                };
                match peer.call(Request::Forward(cmd), FORWARD_TIMEOUT).await {
                    Ok(Response::Applied { outcome, index }) => {
                        self.wait_applied(index).await;
                        outcome
                    }
                    Ok(Response::Refused(why)) | Ok(Response::Error(why)) => {
                        Err(CommandError::unavailable(why))
                    }
                    Ok(other) => Err(CommandError::failed(format!(
                        "unexpected answer from the primary: {other:?}"
                    ))),
                    Err(e) => Err(CommandError::unavailable(format!(
                        "the primary `{leader}` cannot be reached: {e}"
                    ))),
                }
            }
            Err(ProposeError::NotLeader(_)) => Err(CommandError::unavailable(
                "no primary is elected right now; retry in a moment",
            )),
            Err(ProposeError::Failed(e)) => Err(CommandError::unavailable(format!(
                "the change was not replicated: {e}"
            ))),
        }
    }

    /// Waits (briefly) until this node has applied log `index`, so a client
    /// reads its own write from the node it wrote to.
    async fn wait_applied(&self, index: u64) {
        let Some(c) = self.consensus() else {
            return;
        };
        let mut rx = c.view();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|v| v.last_applied.is_some_and(|a| a >= index)),
        )
        .await;
    }

    /// On SIGTERM: a primary hands over and releases the VIP; then Raft stops.
    pub async fn leave(&self) {
        if self.role() == Role::Primary {
            let handed = self.hand_over(None).await;
            tracing::info!(handed, "left the primary role");
        }
        let was = self.role();
        self.stop.cancel();
        if was == Role::Primary || self.vip.is_some() {
            self.release_vip().await;
        }
        if was == Role::Primary {
            self.role.store(Role::Secondary.code(), Relaxed);
            self.transitions.fetch_add(1, Relaxed);
            self.announce(
                Role::Primary,
                Role::Secondary,
                "shutting down".into(),
                self.term(),
            );
        }
        if let Some(c) = self.consensus() {
            c.shutdown().await;
        }
    }

    /// `GET /api/v1/cluster`.
    pub fn status_json(&self) -> Value {
        let view = self.view();
        let role = self.role();
        let me = &self.config.node_id;
        let vip_holder = if role == Role::Primary {
            Some(me.clone())
        } else {
            view.leader.clone()
        };
        let mut nodes = vec![json!({
            "id": me,
            "address": self.config.bind.to_string(),
            "role": role.word(),
            "last_contact_ms": 0,
            "self": true,
        })];
        for p in &self.config.peers {
            let role = if p.witness {
                "witness"
            } else if view.leader.as_deref() == Some(p.id.as_str()) {
                "primary"
            } else {
                "secondary"
            };
            nodes.push(json!({
                "id": p.id,
                "address": p.address,
                "role": role,
                "last_contact_ms": self.contacts.since(&p.id),
            }));
        }
        let since = self
            .role_since
            .lock()
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        json!({
            "node_id": me,
            "role": role.word(),
            "term": view.term,
            "leader": view.leader,
            "vip_holder": vip_holder,
            "vip": self.config.vip.as_ref().map(|v| format!("{}/{}", v.address, v.prefix_len)),
            "priority": self.config.priority,
            "in_role_seconds": since,
            "transitions": self.transitions(),
            "last_log_index": view.last_log,
            "last_applied_index": view.last_applied,
            "nodes": nodes,
        })
    }
}

impl transport::Handler for Cluster {
    fn handle(
        self: Arc<Self>,
        from: String,
        req: Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
        Box::pin(async move {
            let Some(consensus) = self.consensus().cloned() else {
                return Response::Error("starting".into());
            };
            match req {
                Request::Raft(v) => Response::Raft(consensus.handle_rpc(v).await),
                Request::Forward(cmd) => match consensus.propose(cmd).await {
                    Ok((outcome, index)) => Response::Applied { outcome, index },
                    Err(ProposeError::NotLeader(l)) => Response::Refused(format!(
                        "`{}` is no longer primary (now: {})",
                        self.config.node_id,
                        l.as_deref().unwrap_or("none")
                    )),
                    Err(ProposeError::Failed(e)) => Response::Error(e),
                },
                Request::TakeOver => {
                    tracing::info!(%from, "asked to take the primary role over");
                    tokio::spawn(self.clone().take_over(from));
                    Response::Ok
                }
                Request::Yield { priority } => self.yield_to(from, priority),
            }
        })
    }
}

impl Cluster {
    /// A preemption request from `from`: accepted only from a higher priority,
    /// caught-up node, after this node has been primary for `preempt_delay`.
    fn yield_to(self: &Arc<Self>, from: String, priority: u32) -> Response {
        if self.role() != Role::Primary {
            return Response::Refused("not primary".into());
        }
        if priority <= self.config.priority {
            return Response::Refused(format!(
                "priority {priority} is not above this node's {}",
                self.config.priority
            ));
        }
        let held = self
            .role_since
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        if held < self.config.preempt_delay {
            return Response::Refused(format!(
                "primary for only {:.0?}, less than preempt_delay",
                held
            ));
        }
        let view = self.view();
        let matched = view
            .matched
            .iter()
            .find(|(n, _)| *n == from)
            .and_then(|(_, m)| *m);
        if matched.is_none() || matched < view.last_log {
            return Response::Refused("your log is behind".into());
        }
        let me = self.clone();
        tokio::spawn(async move {
            let handed = me.hand_over(Some(from)).await;
            if let Some(c) = me.consensus() {
                c.set_active(true, !me.witness);
            }
            me.handing_over.store(false, Relaxed);
            tracing::info!(handed, "preemption finished");
        });
        Response::Ok
    }
}
