//! `limits.max_connections_per_client`: how many connections one client
//! address holds open on one listener. Counted at accept, in a table split in
//! shards (each taken only for one increment or decrement) whose entries go
//! away with a client's last connection, so its size is bounded by the open
//! connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 32;

#[derive(Default)]
pub(crate) struct PerClient {
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

/// One counted connection; uncounted when dropped.
pub(crate) struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(*v4) as u64,
            IpAddr::V6(v6) => (u128::from(*v6) ^ (u128::from(*v6) >> 64)) as u64,
        };
        &self.shards[(crate::rand::mix(h) as usize) % SHARDS]
    }

    /// Counts one more connection of `ip`, or `None` when it already holds `cap`.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr, cap: u32) -> Option<ClientSlot> {
        let mut map = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self
            .table
            .shard(&self.ip)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_one_address_and_forgets_it_when_it_leaves() {
        let t = Arc::new(PerClient::default());
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "::1".parse().expect("ip");
        let s1 = t.take(a, 2).expect("first");
        let s2 = t.take(a, 2).expect("second");
        assert!(t.take(a, 2).is_none());
        let s3 = t.take(b, 2).expect("another address");
        drop(s1);
        let s4 = t.take(a, 2).expect("room again");
        drop((s2, s3, s4));
        assert_eq!(t.entries(), 0);
    }
}
