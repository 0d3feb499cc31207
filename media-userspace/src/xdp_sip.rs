//! The SIP guard's maps in the XDP program (see `media-ebpf/xdp`): its
//! settings, the deny and trusted networks, and its counters. The program
//! is the relay's own; the guard acts only on IPv4 UDP to the SIP port,
//! and only once [`SipGuardMaps::enable`] set it (off, every datagram goes
//! on as before). Shapes from [`media_common`].

use aya::maps::{
    Array, MapData, MapError, PerCpuArray,
    lpm_trie::{Key, LpmTrie},
};
pub use media_common::{
    MAX_SIP_NETS, SIP_COUNTERS, SIP_DENY, SIP_GUARD, SIP_TRUSTED, SipCounters, SipGuard,
};
use std::net::Ipv4Addr;

use crate::xdp::XdpError;

/// The guard's maps, taken from the loaded program.
pub struct SipGuardMaps {
    guard: Array<MapData, SipGuard>,
    deny: LpmTrie<MapData, [u8; 4], u8>,
    trusted: LpmTrie<MapData, [u8; 4], u8>,
    counters: PerCpuArray<MapData, SipCounters>,
}

impl std::fmt::Debug for SipGuardMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SipGuardMaps")
    }
}

/// An IPv4 network as the tries key it.
fn key(addr: Ipv4Addr, prefix: u8) -> Key<[u8; 4]> {
    let prefix = prefix.min(32);
    let bits = u32::from(addr) & (u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
    Key::new(u32::from(prefix), Ipv4Addr::from(bits).octets())
}

fn absent(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

impl SipGuardMaps {
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, XdpError> {
        let mut map = |name: &'static str| ebpf.take_map(name).ok_or(XdpError::Missing(name));
        Ok(Self {
            guard: Array::try_from(map(SIP_GUARD)?).map_err(XdpError::Map)?,
            deny: LpmTrie::try_from(map(SIP_DENY)?).map_err(XdpError::Map)?,
            trusted: LpmTrie::try_from(map(SIP_TRUSTED)?).map_err(XdpError::Map)?,
            counters: PerCpuArray::try_from(map(SIP_COUNTERS)?).map_err(XdpError::Map)?,
        })
    }

    /// Turns the guard on for UDP `port`: each source not trusted may send
    /// `rate_per_sec` datagrams a second (per CPU that receives them), in
    /// bursts of `burst`.
    pub fn enable(&mut self, port: u16, rate_per_sec: u32, burst: u32) -> Result<(), XdpError> {
        self.guard
            .set(0, SipGuard::new(port, rate_per_sec, burst), 0)
            .map_err(XdpError::Map)
    }

    /// Turns the guard off: every datagram goes on as before.
    pub fn disable(&mut self) -> Result<(), XdpError> {
        self.guard
            .set(0, SipGuard::default(), 0)
            .map_err(XdpError::Map)
    }

    /// Drops SIP datagrams from `addr/prefix` from now on.
    pub fn deny(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<(), XdpError> {
        self.deny
            .insert(&key(addr, prefix), 1, 0)
            .map_err(XdpError::Map)
    }

    /// Lifts a [`Self::deny`]; whether the network was denied.
    pub fn undeny(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<bool, XdpError> {
        match self.deny.remove(&key(addr, prefix)) {
            Ok(()) => Ok(true),
            Err(e) if absent(&e) => Ok(false),
            Err(e) => Err(XdpError::Map(e)),
        }
    }

    /// Never meters SIP datagrams from `addr/prefix` (a trunk's network).
    pub fn trust(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<(), XdpError> {
        self.trusted
            .insert(&key(addr, prefix), 1, 0)
            .map_err(XdpError::Map)
    }

    /// Lifts a [`Self::trust`]; whether the network was trusted.
    pub fn untrust(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<bool, XdpError> {
        match self.trusted.remove(&key(addr, prefix)) {
            Ok(()) => Ok(true),
            Err(e) if absent(&e) => Ok(false),
            Err(e) => Err(XdpError::Map(e)),
        }
    }

    /// The guard's counters summed over CPUs.
    pub fn counters(&self) -> Result<SipCounters, XdpError> {
        let per_cpu = self.counters.get(&0, 0).map_err(XdpError::Map)?;
        Ok(per_cpu
            .iter()
            .fold(SipCounters::default(), |a, c| a.merge(*c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_keyed_by_their_prefix_bits() {
        let k = key(Ipv4Addr::new(203, 0, 113, 77), 24);
        let (len, data) = (k.prefix_len(), k.data());
        assert_eq!((len, data), (24, [203, 0, 113, 0]));
        let k = key(Ipv4Addr::new(203, 0, 113, 77), 0);
        let (len, data) = (k.prefix_len(), k.data());
        assert_eq!((len, data), (0, [0, 0, 0, 0]));
        let k = key(Ipv4Addr::new(203, 0, 113, 77), 40);
        let (len, data) = (k.prefix_len(), k.data());
        assert_eq!((len, data), (32, [203, 0, 113, 77]));
    }

    #[test]
    fn the_meter_is_computed_without_division_in_the_kernel() {
        let g = SipGuard::new(5060, 50, 10);
        assert_eq!(g.interval_ns, 20_000_000);
        assert_eq!(g.burst_ns, 9 * 20_000_000);
        assert_eq!(g.port, 5060u16.to_be());
        assert_eq!(g.enabled, 1);
        // A zero rate or burst still means one datagram.
        let g = SipGuard::new(5060, 0, 0);
        assert_eq!((g.interval_ns, g.burst_ns), (1_000_000_000, 0));
    }
}
