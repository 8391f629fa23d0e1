//! Failover between backend levels (primary, backups).
//!
//! The request path only reads [`PoolFailoverState`]; the controller task writes it.

use crate::upstream::pool::Pool;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// "No controller decision": traffic follows health alone.
const UNMANAGED: u32 = u32::MAX;

/// What the failover controller decided for one pool, read on every request.
pub struct PoolFailoverState {
    /// The level traffic goes to, or UNMANAGED.
    serving_level: AtomicU32,
    /// While traffic moves gradually: the level it is moving to...
    ramp_level: AtomicU32,
    /// ...and the share of requests (per mille) that already go there.
    ramp_permille: AtomicU32,
}

impl Default for PoolFailoverState {
    fn default() -> Self {
        PoolFailoverState {
            serving_level: AtomicU32::new(UNMANAGED),
            ramp_level: AtomicU32::new(UNMANAGED),
            ramp_permille: AtomicU32::new(0),
        }
    }
}

impl PoolFailoverState {
    /// The level a new request should go to.
    pub fn route_level(&self, pool: &Pool, now: u64) -> u32 {
        let serving = self.serving_level.load(Relaxed);
        if serving == UNMANAGED {
            return pool.healthy_level(now).unwrap_or(0);
        }
        let ramp = self.ramp_level.load(Relaxed);
        if ramp != UNMANAGED {
            let share = self.ramp_permille.load(Relaxed) as u64;
            if crate::rand::below(1000) < share {
                return ramp;
            }
        }
        serving
    }
}
