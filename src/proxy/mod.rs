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
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::Arc;
use tokio_util::task::TaskTracker;

/// What the request path reads from the rest of the process. Built once by the
/// supervisor and shared by every connection.
pub(crate) struct ProxyContext {
    /// Routes, pools, limits: swapped whole on every config change.
    pub(crate) snapshot: Current,
    pub(crate) access_log: ArcSwapOption<AccessLog>,
    /// Trace export, when `tracing:` is configured.
    pub(crate) otlp: ArcSwapOption<Otlp>,
    pub(crate) telemetry: Arc<Telemetry>,
    /// ACME challenge answers (http-01 is answered on the request path).
    pub(crate) acme: Arc<ArcSwap<AcmeStates>>,
    /// Where backend ejections are reported.
    pub(crate) events: Arc<Events>,
    /// Upgraded connections (WebSockets), which outlive their HTTP connection.
    pub(crate) tunnels: TaskTracker,
}
