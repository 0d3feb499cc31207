#![no_std]
//! Shapes shared by the XDP relay program (`media-ebpf/xdp`) and its
//! userspace loader (`media-userspace::xdp`): BPF map names, keys, values and
//! flags. Defined once here so both sides agree byte for byte.
//!
//! Every type is `#[repr(C)]` with explicit padding fields, so there are no
//! implicit padding bytes: BPF hash maps compare keys as raw bytes, and a
//! stray non-zero padding byte would make a lookup miss. The constructors
//! zero every padding field; build keys through them.
//!
//! # Byte order
//!
//! Addresses and ports are stored **exactly as they appear on the wire**
//! (network byte order), so the XDP program can compare and copy them without
//! swapping. An address is a 16-byte array; an IPv4 address is stored
//! IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), i.e. bytes 10..12 are
//! `0xff` and bytes 12..16 hold the IPv4 address. A port is a `u16` whose
//! in-memory bytes are the wire bytes: its value is `port.to_be()` (the
//! constructors take host-order ports; [`RelayKey::port`],
//! [`RelayRule::remote_port_host`] and [`RelayRule::src_port_host`] read them
//! back in host order). Everything else (`family`, `ifindex`, `flags`,
//! counters) is in host byte order.
//!
//! With the `user` feature these types implement `aya::Pod` for the loader.

use core::mem::size_of;

/// Name of the rule map (`BPF_MAP_TYPE_HASH`, [`RelayKey`] → [`RelayRule`]).
pub const RELAY_RULES: &str = "RELAY_RULES";
/// Name of the counter map (`BPF_MAP_TYPE_PERCPU_HASH`, [`RelayKey`] →
/// [`LegCounters`], one value per possible CPU).
pub const LEG_COUNTERS: &str = "LEG_COUNTERS";
/// Name of the XDP program (the function name in the object file).
pub const PROGRAM_NAME: &str = "relay";

/// `max_entries` of [`RELAY_RULES`] and [`LEG_COUNTERS`]: one entry per
/// relayed leg (two per bridged call), so 32,768 calls (about 7 MB of
/// rules at 100 bytes an entry, plus the per-CPU counters).
pub const MAX_LEGS: u32 = 65_536;

/// [`RelayKey::family`] of an IPv4 key.
pub const FAMILY_V4: u8 = 4;
/// [`RelayKey::family`] of an IPv6 key (not matched by the fast path yet).
pub const FAMILY_V6: u8 = 6;

/// The rewritten packet is IPv6 (reserved: the fast path only handles IPv4
/// and never matches an IPv6 key today).
pub const FLAG_IPV6: u32 = 1 << 0;
/// Write a zero UDP checksum ("no checksum", IPv4 only) instead of
/// incrementally updating it.
pub const FLAG_ZERO_UDP_CSUM: u32 = 1 << 1;
/// Send the rewritten packet with `bpf_redirect(rule.ifindex)` instead of
/// `XDP_TX` (back out of the receiving interface).
pub const FLAG_REDIRECT: u32 = 1 << 2;
/// All flags this version knows.
/// Forward only packets whose source is the rule's `peer_ip:peer_port`
/// (the latched peer); any other source is passed to userspace, which
/// decides whether the leg moved (re-latching) or the packet is forged.
pub const FLAG_CHECK_PEER: u32 = 1 << 3;
/// Count and drop (`XDP_DROP`) instead of forwarding: a leg being flooded,
/// or a sink in benchmarks. The rewrite fields are ignored.
pub const FLAG_DROP: u32 = 1 << 4;
pub const FLAGS_KNOWN: u32 =
    FLAG_IPV6 | FLAG_ZERO_UDP_CSUM | FLAG_REDIRECT | FLAG_CHECK_PEER | FLAG_DROP;

/// `::ffff:a.b.c.d` for an IPv4 address given in wire order.
#[inline(always)]
pub const fn ipv4_mapped(ip: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ip[0], ip[1], ip[2], ip[3],
    ]
}

/// The IPv4 address of an IPv4-mapped 16-byte address, `None` otherwise.
#[inline(always)]
pub const fn ipv4_unmapped(ip: &[u8; 16]) -> Option<[u8; 4]> {
    if ip[0] == 0
        && ip[1] == 0
        && ip[2] == 0
        && ip[3] == 0
        && ip[4] == 0
        && ip[5] == 0
        && ip[6] == 0
        && ip[7] == 0
        && ip[8] == 0
        && ip[9] == 0
        && ip[10] == 0xff
        && ip[11] == 0xff
    {
        Some([ip[12], ip[13], ip[14], ip[15]])
    } else {
        None
    }
}

/// Key of both maps: the local address a leg's packets arrive on, i.e. the
/// destination IP and UDP port of the packet the XDP program sees.
///
/// Layout (20 bytes, align 2):
///
/// | offset | field        | byte order                          |
/// |--------|--------------|-------------------------------------|
/// | 0      | `local_ip`   | network (IPv4-mapped for IPv4)      |
/// | 16     | `local_port` | network (wire bytes)                |
/// | 18     | `family`     | n/a ([`FAMILY_V4`] / [`FAMILY_V6`]) |
/// | 19     | `_pad`       | must be 0                           |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayKey {
    /// Destination address of the incoming packet, wire order; IPv4 is
    /// stored IPv4-mapped.
    pub local_ip: [u8; 16],
    /// Destination UDP port of the incoming packet, wire order (value is
    /// `port.to_be()`).
    pub local_port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`]; part of the key so a v4 and a v6
    /// leg can never collide.
    pub family: u8,
    /// Explicit padding, always 0 (keys are compared as raw bytes).
    pub _pad: u8,
}

const _: () = assert!(size_of::<RelayKey>() == 20);
const _: () = assert!(core::mem::align_of::<RelayKey>() == 2);

impl RelayKey {
    /// Key for IPv4 `ip` (wire order, e.g. `Ipv4Addr::octets()`) and
    /// `port` in **host** order.
    #[inline(always)]
    pub const fn v4(ip: [u8; 4], port: u16) -> Self {
        Self {
            local_ip: ipv4_mapped(ip),
            local_port: port.to_be(),
            family: FAMILY_V4,
            _pad: 0,
        }
    }

    /// Key for IPv6 `ip` (wire order, e.g. `Ipv6Addr::octets()`) and
    /// `port` in **host** order. Not matched by the fast path yet.
    #[inline(always)]
    pub const fn v6(ip: [u8; 16], port: u16) -> Self {
        Self {
            local_ip: ip,
            local_port: port.to_be(),
            family: FAMILY_V6,
            _pad: 0,
        }
    }

    /// Key as the XDP program builds it from a packet: `ip` and `port` are
    /// the raw wire bytes of the IPv4 destination and UDP destination port.
    #[inline(always)]
    pub const fn from_wire_v4(ip: [u8; 4], port_wire: u16) -> Self {
        Self {
            local_ip: ipv4_mapped(ip),
            local_port: port_wire,
            family: FAMILY_V4,
            _pad: 0,
        }
    }

    /// `local_port` in host order.
    #[inline(always)]
    pub const fn port(&self) -> u16 {
        u16::from_be(self.local_port)
    }
}

/// Value of [`RELAY_RULES`]: how to rewrite a packet that matched a
/// [`RelayKey`] and where to send it.
///
/// Layout (76 bytes, align 4):
///
/// | offset | field         | byte order                      |
/// |--------|---------------|---------------------------------|
/// | 0      | `remote_ip`   | network (IPv4-mapped for IPv4)  |
/// | 16     | `src_ip`      | network (IPv4-mapped for IPv4)  |
/// | 32     | `remote_port` | network (wire bytes)            |
/// | 34     | `src_port`    | network (wire bytes)            |
/// | 36     | `dst_mac`     | wire order                      |
/// | 42     | `src_mac`     | wire order                      |
/// | 48     | `ifindex`     | host                            |
/// | 52     | `flags`       | host (`FLAG_*` bits)            |
/// | 56     | `peer_ip`     | network (IPv4-mapped for IPv4)  |
/// | 72     | `peer_port`   | network (wire bytes)            |
/// | 74     | `_pad`        | must be 0                       |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayRule {
    /// New destination address (the other leg's peer), wire order;
    /// IPv4-mapped for IPv4.
    pub remote_ip: [u8; 16],
    /// New source address (our address on the other leg), wire order;
    /// IPv4-mapped for IPv4.
    pub src_ip: [u8; 16],
    /// New destination UDP port, wire order (value is `port.to_be()`).
    pub remote_port: u16,
    /// New source UDP port, wire order (value is `port.to_be()`).
    pub src_port: u16,
    /// New destination MAC (next hop towards `remote_ip`).
    pub dst_mac: [u8; 6],
    /// New source MAC (the egress interface's address).
    pub src_mac: [u8; 6],
    /// Egress interface for [`FLAG_REDIRECT`], host order; ignored for
    /// `XDP_TX`.
    pub ifindex: u32,
    /// `FLAG_*` bits, host order.
    pub flags: u32,
    /// With [`FLAG_CHECK_PEER`]: the only source forwarded (the latched
    /// peer of the receiving leg), wire order; IPv4-mapped for IPv4.
    pub peer_ip: [u8; 16],
    /// With [`FLAG_CHECK_PEER`]: the only source port forwarded, wire order.
    pub peer_port: u16,
    /// Explicit padding, always 0.
    pub _pad: [u8; 2],
}

const _: () = assert!(size_of::<RelayRule>() == 76);
const _: () = assert!(core::mem::align_of::<RelayRule>() == 4);

impl RelayRule {
    /// IPv4 rule: rewrite to `src_ip:src_port → remote_ip:remote_port`
    /// (addresses in wire order, ports in **host** order) with the given
    /// MACs; `XDP_TX` unless `flags` has [`FLAG_REDIRECT`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub const fn v4(
        src_ip: [u8; 4],
        src_port: u16,
        remote_ip: [u8; 4],
        remote_port: u16,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        ifindex: u32,
        flags: u32,
    ) -> Self {
        Self {
            remote_ip: ipv4_mapped(remote_ip),
            src_ip: ipv4_mapped(src_ip),
            remote_port: remote_port.to_be(),
            src_port: src_port.to_be(),
            dst_mac,
            src_mac,
            ifindex,
            flags,
            peer_ip: [0; 16],
            peer_port: 0,
            _pad: [0; 2],
        }
    }

    /// Forward only packets from `peer_ip:peer_port` (wire-order address,
    /// host-order port): sets [`FLAG_CHECK_PEER`].
    #[inline(always)]
    pub const fn from_peer_v4(mut self, peer_ip: [u8; 4], peer_port: u16) -> Self {
        self.peer_ip = ipv4_mapped(peer_ip);
        self.peer_port = peer_port.to_be();
        self.flags |= FLAG_CHECK_PEER;
        self
    }

    /// `remote_port` in host order.
    #[inline(always)]
    pub const fn remote_port_host(&self) -> u16 {
        u16::from_be(self.remote_port)
    }

    /// `src_port` in host order.
    #[inline(always)]
    pub const fn src_port_host(&self) -> u16 {
        u16::from_be(self.src_port)
    }
}

/// Value of [`LEG_COUNTERS`] (per CPU): what the fast path forwarded for a
/// leg. All fields host order.
///
/// Layout (24 bytes, align 8): `packets` @0, `bytes` @8, `last_seen_ns` @16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LegCounters {
    /// Packets rewritten and sent.
    pub packets: u64,
    /// Bytes of those packets: Ethernet header plus IPv4 total length
    /// (no Ethernet padding or FCS).
    pub bytes: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last such packet.
    pub last_seen_ns: u64,
}

const _: () = assert!(size_of::<LegCounters>() == 24);
const _: () = assert!(core::mem::align_of::<LegCounters>() == 8);

impl LegCounters {
    /// Sum of per-CPU values: packets and bytes add up, `last_seen_ns` is
    /// the latest.
    #[inline]
    pub const fn merge(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
            last_seen_ns: if other.last_seen_ns > self.last_seen_ns {
                other.last_seen_ns
            } else {
                self.last_seen_ns
            },
        }
    }
}

// SAFETY: all three are `#[repr(C)]`, `Copy`, made only of integers and
// byte arrays, with no implicit padding (asserted above), so every bit
// pattern is valid and every byte is initialised.
/// Name of the SIP guard's settings (`BPF_MAP_TYPE_ARRAY`, one
/// [`SipGuard`] at index 0; all zero: the guard is off).
pub const SIP_GUARD: &str = "SIP_GUARD";
/// Name of the per-source state of the SIP guard
/// (`BPF_MAP_TYPE_LRU_PERCPU_HASH`, IPv4 source in wire order →
/// [`SipSource`]): each CPU meters the sources it sees, and the least
/// recently seen are evicted when it is full.
pub const SIP_SOURCES: &str = "SIP_SOURCES";
/// Name of the deny set (`BPF_MAP_TYPE_LPM_TRIE`, IPv4 prefix → `u8`):
/// SIP datagrams from these networks are dropped.
pub const SIP_DENY: &str = "SIP_DENY";
/// Name of the trusted set (`BPF_MAP_TYPE_LPM_TRIE`, IPv4 prefix → `u8`):
/// trunks' networks, never metered.
pub const SIP_TRUSTED: &str = "SIP_TRUSTED";
/// Name of the guard's counters (`BPF_MAP_TYPE_PERCPU_ARRAY`, one
/// [`SipCounters`] at index 0).
pub const SIP_COUNTERS: &str = "SIP_COUNTERS";
/// `max_entries` of [`SIP_SOURCES`] (per CPU).
pub const MAX_SIP_SOURCES: u32 = 65_536;
/// `max_entries` of [`SIP_DENY`] and [`SIP_TRUSTED`].
pub const MAX_SIP_NETS: u32 = 16_384;

/// The SIP guard's settings. A GCRA meter per source: a datagram at `now`
/// passes when the source's theoretical arrival time is at most
/// `burst_ns` ahead of `now`, and moves it `interval_ns` on (the loader
/// computes both from a rate and a burst, so the program never divides).
///
/// Layout (24 bytes, align 8): `interval_ns` u64, `burst_ns` u64,
/// `port` u16 (wire order), `enabled` u8, `_pad` [u8; 5] (zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SipGuard {
    /// Nanoseconds per datagram at the allowed rate.
    pub interval_ns: u64,
    /// How far ahead the arrival time may run: (burst − 1) × interval.
    pub burst_ns: u64,
    /// The SIP UDP port, wire order (value is `port.to_be()`).
    pub port: u16,
    /// 0: the guard is off and every datagram goes on as before.
    pub enabled: u8,
    pub _pad: [u8; 5],
}

const _: () = assert!(size_of::<SipGuard>() == 24);

impl SipGuard {
    /// The guard on UDP `port` (host order) at `rate_per_sec` datagrams
    /// per source (per CPU), with bursts of `burst`.
    pub const fn new(port: u16, rate_per_sec: u32, burst: u32) -> Self {
        let rate = if rate_per_sec == 0 {
            1
        } else {
            rate_per_sec as u64
        };
        let interval_ns = 1_000_000_000 / rate;
        let burst = if burst == 0 { 1 } else { burst as u64 };
        Self {
            interval_ns,
            burst_ns: (burst - 1) * interval_ns,
            port: port.to_be(),
            enabled: 1,
            _pad: [0; 5],
        }
    }
}

/// One source's meter: its theoretical arrival time (ktime ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SipSource {
    pub tat_ns: u64,
}

const _: () = assert!(size_of::<SipSource>() == 8);

/// What the guard did, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SipCounters {
    /// Metered and within the rate: passed to the kernel.
    pub passed: u64,
    /// From a trusted network: passed without a meter.
    pub trusted: u64,
    /// Over the source's rate: dropped.
    pub rate_dropped: u64,
    /// From a denied network: dropped.
    pub denied: u64,
}

const _: () = assert!(size_of::<SipCounters>() == 32);

impl SipCounters {
    pub const fn merge(self, o: Self) -> Self {
        Self {
            passed: self.passed + o.passed,
            trusted: self.trusted + o.trusted,
            rate_dropped: self.rate_dropped + o.rate_dropped,
            denied: self.denied + o.denied,
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SipGuard {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for SipSource {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for SipCounters {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for RelayKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for RelayRule {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for LegCounters {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of};

    #[test]
    fn relay_key_layout() {
        assert_eq!(size_of::<RelayKey>(), 20);
        assert_eq!(align_of::<RelayKey>(), 2);
        assert_eq!(offset_of!(RelayKey, local_ip), 0);
        assert_eq!(offset_of!(RelayKey, local_port), 16);
        assert_eq!(offset_of!(RelayKey, family), 18);
        assert_eq!(offset_of!(RelayKey, _pad), 19);
    }

    #[test]
    fn relay_rule_layout() {
        assert_eq!(size_of::<RelayRule>(), 76);
        assert_eq!(align_of::<RelayRule>(), 4);
        assert_eq!(offset_of!(RelayRule, remote_ip), 0);
        assert_eq!(offset_of!(RelayRule, src_ip), 16);
        assert_eq!(offset_of!(RelayRule, remote_port), 32);
        assert_eq!(offset_of!(RelayRule, src_port), 34);
        assert_eq!(offset_of!(RelayRule, dst_mac), 36);
        assert_eq!(offset_of!(RelayRule, src_mac), 42);
        assert_eq!(offset_of!(RelayRule, ifindex), 48);
        assert_eq!(offset_of!(RelayRule, flags), 52);
        assert_eq!(offset_of!(RelayRule, peer_ip), 56);
        assert_eq!(offset_of!(RelayRule, peer_port), 72);
        assert_eq!(offset_of!(RelayRule, _pad), 74);
    }

    #[test]
    fn leg_counters_layout() {
        assert_eq!(size_of::<LegCounters>(), 24);
        assert_eq!(align_of::<LegCounters>(), 8);
        assert_eq!(offset_of!(LegCounters, packets), 0);
        assert_eq!(offset_of!(LegCounters, bytes), 8);
        assert_eq!(offset_of!(LegCounters, last_seen_ns), 16);
    }

    fn bytes_of<T>(v: &T) -> &[u8] {
        // SAFETY: test-only view of a padding-free repr(C) value.
        unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
    }

    #[test]
    fn key_bytes_are_wire_order() {
        let k = RelayKey::v4([192, 0, 2, 10], 30_000);
        let b = bytes_of(&k);
        assert_eq!(&b[..10], &[0; 10]);
        assert_eq!(&b[10..12], &[0xff, 0xff]);
        assert_eq!(&b[12..16], &[192, 0, 2, 10]);
        // 30000 = 0x7530, big-endian on the wire.
        assert_eq!(&b[16..18], &[0x75, 0x30]);
        assert_eq!(b[18], FAMILY_V4);
        assert_eq!(b[19], 0);
        assert_eq!(k.port(), 30_000);
        // What the XDP program builds from the raw packet bytes.
        let from_wire = RelayKey::from_wire_v4([192, 0, 2, 10], u16::from_ne_bytes([0x75, 0x30]));
        assert_eq!(k, from_wire);
        assert_ne!(
            RelayKey::v4([192, 0, 2, 10], 1),
            RelayKey::v6(ipv4_mapped([192, 0, 2, 10]), 1)
        );
    }

    #[test]
    fn rule_bytes_are_wire_order() {
        let r = RelayRule::v4(
            [10, 0, 0, 1],
            40_000,
            [198, 51, 100, 7],
            5004,
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            3,
            FLAG_REDIRECT,
        );
        let b = bytes_of(&r);
        assert_eq!(&b[12..16], &[198, 51, 100, 7]);
        assert_eq!(&b[28..32], &[10, 0, 0, 1]);
        assert_eq!(&b[32..34], &5004u16.to_be_bytes());
        assert_eq!(&b[34..36], &40_000u16.to_be_bytes());
        assert_eq!(&b[36..42], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&b[42..48], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&b[48..52], &3u32.to_ne_bytes());
        assert_eq!(&b[52..56], &FLAG_REDIRECT.to_ne_bytes());
        assert_eq!(r.remote_port_host(), 5004);
        assert_eq!(r.src_port_host(), 40_000);
        assert_eq!(&b[56..76], &[0; 20], "no peer check unless asked");
        let r = r.from_peer_v4([203, 0, 113, 5], 6000);
        let b = bytes_of(&r);
        assert_eq!(&b[66..72], &[0xff, 0xff, 203, 0, 113, 5]);
        assert_eq!(&b[72..74], &6000u16.to_be_bytes());
        assert_eq!(r.flags, FLAG_REDIRECT | FLAG_CHECK_PEER);
    }

    #[test]
    fn mapped_roundtrip() {
        let m = ipv4_mapped([1, 2, 3, 4]);
        assert_eq!(ipv4_unmapped(&m), Some([1, 2, 3, 4]));
        let mut v6 = m;
        v6[0] = 0x20;
        assert_eq!(ipv4_unmapped(&v6), None);
    }

    #[test]
    fn counters_merge() {
        let a = LegCounters {
            packets: 2,
            bytes: 200,
            last_seen_ns: 50,
        };
        let b = LegCounters {
            packets: 3,
            bytes: 300,
            last_seen_ns: 40,
        };
        assert_eq!(
            a.merge(b),
            LegCounters {
                packets: 5,
                bytes: 500,
                last_seen_ns: 50
            }
        );
        assert_eq!(LegCounters::default().merge(a), a);
        let flags_are_disjoint = FLAG_IPV6 & FLAG_ZERO_UDP_CSUM == 0
            && FLAG_IPV6 & FLAG_REDIRECT == 0
            && FLAG_ZERO_UDP_CSUM & FLAG_REDIRECT == 0;
        assert!(flags_are_disjoint);
    }
}
