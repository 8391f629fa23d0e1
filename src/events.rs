//! Notable things that happened (a backend went down, a reload, a failover): kept in
//! a bounded history for the API and dashboard, and broadcast to live listeners.
//! Events are rare, so a mutex here is fine; the request path never waits on it.

use serde::{Serialize, Serializer};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::broadcast;

const HISTORY: usize = 500;

/// What happened. Shown to users (API, dashboard, webhooks) as the dotted word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    BackendUp,
    BackendDown,
    /// Taken out by passive health.
    BackendEjected,
    BackendDraining,
    BackendDisabled,
    /// Enabled by an operator, waiting for a passing check.
    BackendEnabling,
    /// Back in rotation after being enabled.
    BackendEnabled,
    BackendAdded,
    BackendRemoved,
    ConfigApplied,
    /// A new config was refused; the previous one keeps serving.
    ConfigRejected,
    /// A backend taken out by passive health is back in rotation.
    BackendReturned,
    FailoverActivated,
    FailoverRecovered,
    /// An operator moved traffic (or handed control back).
    FailoverManual,
    /// A dry run: nothing moved.
    FailoverTest,
    ClusterRole,
    CertificateIssued,
    CertificateFailed,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::BackendUp => "backend.up",
            EventKind::BackendDown => "backend.down",
            EventKind::BackendEjected => "backend.ejected",
            EventKind::BackendDraining => "backend.draining",
            EventKind::BackendDisabled => "backend.disabled",
            EventKind::BackendEnabling => "backend.enabling",
            EventKind::BackendEnabled => "backend.enabled",
            EventKind::BackendAdded => "backend.added",
            EventKind::BackendRemoved => "backend.removed",
            EventKind::ConfigApplied => "config.applied",
            EventKind::ConfigRejected => "config.rejected",
            EventKind::BackendReturned => "backend.returned",
            EventKind::FailoverActivated => "failover.activated",
            EventKind::FailoverRecovered => "failover.recovered",
            EventKind::FailoverManual => "failover.manual",
            EventKind::FailoverTest => "failover.test",
            EventKind::ClusterRole => "cluster.role",
            EventKind::CertificateIssued => "certificate.issued",
            EventKind::CertificateFailed => "certificate.failed",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Event {
    pub(crate) id: u64,
    /// Seconds since the Unix epoch.
    pub(crate) ts: f64,
    pub(crate) kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backend: Option<String>,
    pub(crate) message: String,
}

pub(crate) struct Events {
    next_id: AtomicU64,
    history: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            next_id: AtomicU64::new(1),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            live: broadcast::channel(256).0,
        }
    }
}

impl Events {
    pub(crate) fn record(
        &self,
        kind: EventKind,
        pool: Option<&str>,
        backend: Option<&str>,
        message: impl Into<String>,
    ) {
        let e = Event {
            id: self.next_id.fetch_add(1, Relaxed),
            ts: crate::clock::unix_secs_f64(),
            kind,
            pool: pool.map(str::to_string),
            backend: backend.map(str::to_string),
            message: message.into(),
        };
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(e.clone());
        }
        let _ = self.live.send(e);
    }

    /// The most recent events, oldest first.
    pub(crate) fn recent(&self, limit: usize) -> Vec<Event> {
        match self.history.lock() {
            Ok(h) => h
                .iter()
                .skip(h.len().saturating_sub(limit))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_kinds_read_as_words() {
        let ev = Events::default();
        for i in 0..(HISTORY + 5) {
            ev.record(EventKind::BackendUp, Some("p"), None, format!("{i}"));
        }
        let recent = ev.recent(usize::MAX);
        assert_eq!(recent.len(), HISTORY);
        assert_eq!(recent[0].message, "5");
        let v = serde_json::to_value(&recent[0]).unwrap();
        assert_eq!(v["kind"], "backend.up");
        assert!(v.get("backend").is_none());
    }
}
