//! The floating address: added and removed over netlink (rtnetlink), announced
//! with gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6) on a
//! raw packet socket so switches and neighbours learn its new owner at once.

use crate::config::VipConfig;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::LinkAttribute;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Repeats of the gratuitous ARP after the first burst (from the takeover).
const GARP_REPEATS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
];

pub struct Vip {
    pub config: VipConfig,
    handle: rtnetlink::Handle,
    index: u32,
    mac: [u8; 6],
    /// Cancels the pending ARP repeats when the address is released.
    announcing: std::sync::Mutex<Option<CancellationToken>>,
}

/// Effective capabilities of this process, from /proc/self/status.
fn capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;

impl Vip {
    /// Checks the capabilities and the interface; fails with what to do.
    pub async fn open(config: &VipConfig) -> Result<Vip, String> {
        let caps = capabilities().unwrap_or(0);
        let missing: Vec<&str> = [
            (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
            (CAP_NET_RAW, "CAP_NET_RAW"),
        ]
        .into_iter()
        .filter(|(bit, _)| caps & bit == 0)
        .map(|(_, n)| n)
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "cluster.vip needs {} to move the floating address: run as root or `setcap cap_net_admin,cap_net_raw+ep $(which fulcrum)`",
                missing.join(" and ")
            ));
        }
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| format!("cannot open a netlink socket: {e}"))?;
        tokio::spawn(conn);
        let mut links = handle
            .link()
            .get()
            .match_name(config.interface.clone())
            .execute();
        let link = match links.try_next().await {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) => {
                return Err(format!(
                    "cluster.vip: no network interface named `{}`",
                    config.interface
                ));
            }
        };
        let mut mac = [0u8; 6];
        for a in &link.attributes {
            if let LinkAttribute::Address(bytes) = a
                && bytes.len() == 6
            {
                mac.copy_from_slice(bytes);
            }
        }
        Ok(Vip {
            config: config.clone(),
            handle,
            index: link.header.index,
            mac,
            announcing: std::sync::Mutex::new(None),
        })
    }

    async fn find(
        &self,
    ) -> Result<Option<rtnetlink::packet_route::address::AddressMessage>, String> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        while let Some(m) = addrs
            .try_next()
            .await
            .map_err(|e| format!("cannot list addresses: {e}"))?
        {
            let has = m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(ip) | AddressAttribute::Local(ip) if *ip == self.config.address)
            });
            if has {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Adds the address (if absent) and announces it.
    pub async fn acquire(&self) -> Result<(), String> {
        if self.find().await?.is_none() {
            let mut add =
                self.handle
                    .address()
                    .add(self.index, self.config.address, self.config.prefix_len);
            if self.config.address.is_ipv6() {
                // No duplicate address detection: it would keep the address
                // tentative (unusable) for a second or more, and the old holder
                // has let go of it already (fencing).
                let m = add.message_mut();
                m.header.flags |= AddressHeaderFlags::Nodad;
                m.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            add.execute()
                .await
                .map_err(|e| format!("cannot add {}: {e}", self.config.address))?;
        }
        self.announce();
        Ok(())
    }

    /// Removes the address (if present) and stops announcing it.
    pub async fn release(&self) -> Result<bool, String> {
        if let Some(t) = self
            .announcing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.cancel();
        }
        match self.find().await? {
            Some(m) => {
                self.handle
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(|e| format!("cannot remove {}: {e}", self.config.address))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `garp_count` gratuitous ARPs (IPv6: unsolicited neighbour advertisements)
    /// now, then one at each of +1 s, +2 s, +5 s.
    fn announce(&self) {
        let ip = self.config.address;
        let token = CancellationToken::new();
        if let Some(old) = self
            .announcing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(token.clone())
        {
            old.cancel();
        }
        let (index, mac, count) = (self.index, self.mac, self.config.garp_count);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for _ in 0..count {
                if let Err(e) = announce_once(index, mac, ip) {
                    tracing::warn!(error = %e, "cannot announce the VIP");
                    return;
                }
            }
            for at in GARP_REPEATS {
                tokio::select! {
                    _ = tokio::time::sleep_until(start + at) => {}
                    _ = token.cancelled() => return,
                }
                if let Err(e) = announce_once(index, mac, ip) {
                    tracing::warn!(error = %e, "cannot announce the VIP");
                }
            }
        });
    }
}

fn announce_once(ifindex: u32, mac: [u8; 6], ip: IpAddr) -> std::io::Result<()> {
    match ip {
        IpAddr::V4(v4) => send_garp(ifindex, mac, v4),
        IpAddr::V6(v6) => send_unsolicited_na(ifindex, mac, v6),
    }
}

/// One gratuitous ARP (an ARP request for our own address, broadcast).
fn send_garp(ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> std::io::Result<()> {
    const ETH_P_ARP: u16 = 0x0806;
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // ARP: Ethernet/IPv4, request, sender = target = the VIP.
    frame[14..16].copy_from_slice(&1u16.to_be_bytes());
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&1u16.to_be_bytes());
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    frame[32..38].copy_from_slice(&[0; 6]);
    frame[38..42].copy_from_slice(&ip.octets());
    send_frame(ifindex, ETH_P_ARP, &frame)
}

/// One unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes, with
/// the override flag: the IPv6 counterpart of a gratuitous ARP.
fn send_unsolicited_na(ifindex: u32, mac: [u8; 6], ip: Ipv6Addr) -> std::io::Result<()> {
    let frame = neighbour_advertisement(mac, ip);
    send_frame(ifindex, ETH_P_IPV6, &frame)
}

const ETH_P_IPV6: u16 = 0x86dd;

/// The Ethernet frame of an unsolicited neighbour advertisement for `ip`.
fn neighbour_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 86] {
    const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut f = [0u8; 86];
    // Ethernet: to the all-nodes multicast MAC.
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    // IPv6: payload 32 bytes of ICMPv6, hop limit 255 (receivers drop any other).
    let ip6 = &mut f[14..54];
    ip6[0] = 0x60;
    ip6[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip6[6] = 58;
    ip6[7] = 255;
    ip6[8..24].copy_from_slice(&ip.octets());
    ip6[24..40].copy_from_slice(&ALL_NODES.octets());
    // ICMPv6 neighbour advertisement: override flag, target = the VIP, and our
    // link-layer address as the target link-layer address option.
    let icmp = &mut f[54..86];
    icmp[0] = 136;
    icmp[4] = 0x20;
    icmp[8..24].copy_from_slice(&ip.octets());
    icmp[24] = 2;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    let sum = icmpv6_checksum(&ip, &ALL_NODES, &f[54..86]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum: one's complement sum over the pseudo-header and the
/// message (whose checksum field is zero).
fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map(u32::from).unwrap_or(0);
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one raw Ethernet frame (its header included) out of `ifindex`.
fn send_frame(ifindex: u32, ethertype: u16, frame: &[u8]) -> std::io::Result<()> {
    // SAFETY: plain socket calls on a descriptor we own and close; the address
    // structure is fully initialised and its size passed along.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ethertype.to_be()),
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[0..6]);
        let n = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n < 0 {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_neighbour_advertisement_checksums_to_zero() {
        let ip: Ipv6Addr = "fd77::100".parse().unwrap();
        let f = neighbour_advertisement([2, 0, 0, 0, 0, 1], ip);
        let all: Ipv6Addr = "ff02::1".parse().unwrap();
        // Summing a message with its checksum in place gives 0 (after the final
        // complement): the receiver's check.
        assert_eq!(icmpv6_checksum(&ip, &all, &f[54..86]), 0);
        assert_eq!(f[54], 136);
        assert_eq!(&f[62..78], &ip.octets());
    }
}
