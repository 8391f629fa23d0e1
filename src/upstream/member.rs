//! One backend as a member of a compiled pool: the backend's live state plus
//! what the pool's config says about it.

use super::backend::Backend;
use crate::config::HealthCheckConfig;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

pub(crate) struct Member {
    pub(crate) backend: Arc<Backend>,
    pub(crate) weight: u32,
    pub(crate) level: u32,
    pub(crate) region: Option<String>,
    /// The operator's name for the backend (`name` in the config), if any.
    pub(crate) name: Option<String>,
    pub(crate) health_check: Option<HealthCheckConfig>,
    /// Stable hash of the backend's address (consistent hashing).
    pub(crate) key_hash: u64,
    /// Cap on requests in flight (0: none).
    pub(crate) max_requests: u32,
}

impl Member {
    /// Whether the member is at its cap on requests in flight.
    pub(crate) fn is_full(&self) -> bool {
        self.max_requests != 0 && self.backend.in_flight.load(Relaxed) >= self.max_requests
    }
}
