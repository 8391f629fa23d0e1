//! Notable things that happened (a backend went down, a reload, a failover): kept in
//! a bounded history for the API and dashboard, and broadcast to live listeners.
//! Events are rare, so a mutex here is fine; the request path never waits on it.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::broadcast;

const HISTORY: usize = 500;

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub id: u64,
    /// Seconds since the Unix epoch.
    pub ts: f64,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    pub message: String,
}

pub struct Events {
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
    pub fn record(
        &self,
        kind: &str,
        pool: Option<&str>,
        backend: Option<&str>,
        message: impl Into<String>,
    ) {
        let e = Event {
            id: self.next_id.fetch_add(1, Relaxed),
            ts: crate::clock::unix_secs_f64(),
            kind: kind.to_string(),
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
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        match self.history.lock() {
            Ok(h) => h
                .iter()
                .skip(h.len().saturating_sub(limit))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}
