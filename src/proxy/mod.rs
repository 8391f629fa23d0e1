//! The HTTP request path: from a parsed request to the response sent back.
//!
//! A request goes through named phases (see [`pipeline`]): accept → route →
//! request rules → forward (pick, queue, retry, hedge) → response rules →
//! finish. Each phase is a plain function over the request's context; what a
//! phase needs from the rest of the process comes through [`ProxyContext`], a set
//! of narrow read handles the supervisor provides.

pub(crate) mod access_log;
pub(crate) mod body;
pub(crate) mod finish;
pub(crate) mod guard;
pub(crate) mod headers;
pub(crate) mod pipeline;
pub(crate) mod respond;
pub(crate) mod spliced;

use crate::events::Events;
use crate::otlp::Otlp;
use crate::snapshot::Current;
use crate::telemetry::Telemetry;
use crate::tls::acme_state::AcmeStates;
use access_log::AccessLog;
use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::task::TaskTracker;

/// What the request path reads from the rest of the process. Built once by the
/// supervisor and shared by every connection.
pub(crate) struct ProxyContext {
    /// Routes, pools, limits: swapped whole on every config change.
    pub(crate) snapshot: Current,
    pub(crate) access_log: Switched<AccessLog>,
    /// Trace export, when `tracing:` is configured.
    pub(crate) otlp: Switched<Otlp>,
    pub(crate) telemetry: Arc<Telemetry>,
    /// ACME challenge answers (http-01 is answered on the request path).
    pub(crate) acme: Arc<ArcSwap<AcmeStates>>,
    /// Where backend ejections are reported.
    pub(crate) events: Arc<Events>,
    /// Upgraded connections (WebSockets), which outlive their HTTP connection.
    pub(crate) tunnels: TaskTracker,
}

/// An optional part a reload switches on, off or replaces (the access log,
/// trace export), asked about by every request. An `ArcSwapOption` costs
/// ~100 instructions to ask even when it holds nothing (a debt slot taken
/// and given back); the flag beside it answers "off" with one load.
pub(crate) struct Switched<T> {
    on: AtomicBool,
    value: ArcSwapOption<T>,
}

impl<T> Switched<T> {
    pub(crate) fn new(value: Option<Arc<T>>) -> Self {
        Switched {
            on: AtomicBool::new(value.is_some()),
            value: ArcSwapOption::new(value),
        }
    }

    /// What is switched on now. A request that asks while a reload switches
    /// it sees the old state or the new one, as with the value alone.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Option<Arc<T>>> {
        match self.on.load(Ordering::Acquire) {
            true => self.value.load(),
            false => Guard::default(),
        }
    }

    /// Whether something is switched on now, without loading it.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    pub(crate) fn load_full(&self) -> Option<Arc<T>> {
        self.value.load_full()
    }

    pub(crate) fn store(&self, value: Option<Arc<T>>) {
        let on = value.is_some();
        // Switched off: the flag first, so no request goes on to ask the
        // value; switched on: the value first, so one that sees the flag
        // finds it.
        if !on {
            self.on.store(false, Ordering::Release);
        }
        self.value.store(value);
        if on {
            self.on.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switched_answers_what_was_stored() {
        let s = Switched::new(None::<Arc<u32>>);
        assert!(s.load().is_none() && s.load_full().is_none());
        s.store(Some(Arc::new(7)));
        assert_eq!(s.load().as_deref(), Some(&7));
        assert_eq!(s.load_full().as_deref(), Some(&7));
        s.store(Some(Arc::new(8)));
        assert_eq!(s.load().as_deref(), Some(&8));
        s.store(None);
        assert!(s.load().is_none() && s.load_full().is_none());
        assert_eq!(Switched::new(Some(Arc::new(1))).load().as_deref(), Some(&1));
    }
}
