#![no_std]
#![no_main]
//! XDP fast path of the RTP relay.
//!
//! `relay` looks at Ethernet → IPv4 (no options, not fragmented) → UDP
//! frames. When the destination address and port match a [`RelayKey`] in
//! `RELAY_RULES`, it rewrites the frame to the other leg (IPs, ports, MACs,
//! checksums updated incrementally, RFC 1624), counts it in `LEG_COUNTERS`
//! and sends it out with `XDP_TX` or `bpf_redirect`. Everything else, and
//! anything it does not fully understand, is `XDP_PASS`ed to the kernel so
//! the userspace relay handles it: the fast path fails open.
//!
//! On the SIP port it is a guard instead, when userspace turned it on
//! (`SIP_GUARD`): a datagram from a denied network (`SIP_DENY`) is
//! dropped, one from a trusted network (`SIP_TRUSTED`, the trunks) passes,
//! and any other is metered per source (GCRA in `SIP_SOURCES`, an LRU
//! per-CPU map) and dropped over its rate; all counted in `SIP_COUNTERS`.
//! What is not IPv4 UDP to the SIP port is untouched by the guard.
//!
//! All header fields are read and written as 16-bit words in wire order
//! (Ethernet starts 2-byte aligned in XDP and every field used here sits at
//! an even offset). The one's-complement checksum arithmetic is byte-order
//! independent (RFC 1071 §2(B)), so no byte swapping is needed except to
//! interpret lengths and the ethertype.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_ktime_get_ns, bpf_redirect},
    macros::{map, xdp},
    maps::{
        Array, HashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap,
        lpm_trie::{Key, LpmTrie},
    },
    programs::XdpContext,
};
use media_common::{
    FLAG_CHECK_PEER, FLAG_DROP, FLAG_IPV6, FLAG_REDIRECT, FLAG_ZERO_UDP_CSUM, LegCounters, MAX_LEGS,
    MAX_SIP_NETS, MAX_SIP_SOURCES, RelayKey, RelayRule, SipCounters, SipGuard, SipSource,
};

// The map names must equal `media_common::RELAY_RULES` / `LEG_COUNTERS`
// (the loader test checks it); the macro needs a literal.
#[map(name = "RELAY_RULES")]
static RELAY_RULES: HashMap<RelayKey, RelayRule> = HashMap::with_max_entries(MAX_LEGS, 0);

#[map(name = "LEG_COUNTERS")]
static LEG_COUNTERS: PerCpuHashMap<RelayKey, LegCounters> =
    PerCpuHashMap::with_max_entries(MAX_LEGS, 0);

#[map(name = "SIP_GUARD")]
static SIP_GUARD: Array<SipGuard> = Array::with_max_entries(1, 0);

#[map(name = "SIP_SOURCES")]
static SIP_SOURCES: LruPerCpuHashMap<u32, SipSource> =
    LruPerCpuHashMap::with_max_entries(MAX_SIP_SOURCES, 0);

#[map(name = "SIP_DENY")]
static SIP_DENY: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_SIP_NETS, 0);

#[map(name = "SIP_TRUSTED")]
static SIP_TRUSTED: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_SIP_NETS, 0);

#[map(name = "SIP_COUNTERS")]
static SIP_COUNTERS: PerCpuArray<SipCounters> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Ethernet + option-less IPv4 + UDP.
const HDRS_LEN: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN;

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
/// MF flag and fragment offset bits of the IPv4 `frag_off` field.
const IP_MF_OFFSET_MASK: u16 = 0x3fff;

// Frame offsets (Ethernet at 0, IPv4 at 14, UDP at 34).
const OFF_ETH_DST: usize = 0;
const OFF_ETH_SRC: usize = 6;
const OFF_ETH_PROTO: usize = 12;
const OFF_IP_VER_IHL: usize = ETH_HLEN;
const OFF_IP_TOT_LEN: usize = ETH_HLEN + 2;
const OFF_IP_FRAG: usize = ETH_HLEN + 6;
const OFF_IP_PROTO: usize = ETH_HLEN + 9;
const OFF_IP_CSUM: usize = ETH_HLEN + 10;
const OFF_IP_SRC: usize = ETH_HLEN + 12;
const OFF_IP_DST: usize = ETH_HLEN + 16;
const OFF_UDP_SPORT: usize = ETH_HLEN + IPV4_HLEN;
const OFF_UDP_DPORT: usize = OFF_UDP_SPORT + 2;
const OFF_UDP_LEN: usize = OFF_UDP_SPORT + 4;
const OFF_UDP_CSUM: usize = OFF_UDP_SPORT + 6;

#[xdp]
pub fn relay(ctx: XdpContext) -> u32 {
    try_relay(&ctx).unwrap_or(XDP_PASS)
}

/// Reads the wire-order word at `off`. Caller has bounds-checked it.
#[inline(always)]
unsafe fn rd16(data: usize, off: usize) -> u16 {
    unsafe { core::ptr::read((data + off) as *const u16) }
}

/// Writes the wire-order word at `off`. Caller has bounds-checked it.
#[inline(always)]
unsafe fn wr16(data: usize, off: usize, v: u16) {
    unsafe { core::ptr::write((data + off) as *mut u16, v) }
}

/// Reads the byte at `off`. Caller has bounds-checked it.
#[inline(always)]
unsafe fn rd8(data: usize, off: usize) -> u8 {
    unsafe { core::ptr::read((data + off) as *const u8) }
}

/// A wire-order word of a byte array at an even index.
#[inline(always)]
fn word(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}

/// One's-complement "subtract `old`, add `new`" term of RFC 1624 eqn. 3.
#[inline(always)]
fn csum_replace(acc: u32, old: u16, new: u16) -> u32 {
    acc + u32::from(!old) + u32::from(new)
}

/// Folds a 32-bit accumulator into a 16-bit one's-complement sum.
#[inline(always)]
fn csum_fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

#[inline(always)]
fn try_relay(ctx: &XdpContext) -> Option<u32> {
    let data = ctx.data();
    let data_end = ctx.data_end();

    // Ethernet: only untagged IPv4.
    if data + ETH_HLEN > data_end {
        return None;
    }
    if u16::from_be(unsafe { rd16(data, OFF_ETH_PROTO) }) != ETH_P_IP {
        return None;
    }

    // IPv4 without options, then UDP: all fixed offsets.
    if data + HDRS_LEN > data_end {
        return None;
    }
    // version 4, IHL 5 (no options).
    if unsafe { rd8(data, OFF_IP_VER_IHL) } != 0x45 {
        return None;
    }
    // Not a fragment: MF clear and offset 0 (DF may be set).
    if u16::from_be(unsafe { rd16(data, OFF_IP_FRAG) }) & IP_MF_OFFSET_MASK != 0 {
        return None;
    }
    if unsafe { rd8(data, OFF_IP_PROTO) } != IPPROTO_UDP {
        return None;
    }
    // Lengths must be consistent with each other and with the frame (the
    // frame may be longer: Ethernet padding).
    let tot_len = usize::from(u16::from_be(unsafe { rd16(data, OFF_IP_TOT_LEN) }));
    if tot_len < IPV4_HLEN + UDP_HLEN || data + ETH_HLEN + tot_len > data_end {
        return None;
    }
    let udp_len = usize::from(u16::from_be(unsafe { rd16(data, OFF_UDP_LEN) }));
    if udp_len != tot_len - IPV4_HLEN {
        return None;
    }

    if let Some(g) = SIP_GUARD.get(0)
        && g.enabled != 0
        && unsafe { rd16(data, OFF_UDP_DPORT) } == g.port
    {
        let src = unsafe {
            [
                rd8(data, OFF_IP_SRC),
                rd8(data, OFF_IP_SRC + 1),
                rd8(data, OFF_IP_SRC + 2),
                rd8(data, OFF_IP_SRC + 3),
            ]
        };
        return Some(sip_guard(g, src));
    }

    let dst_ip = unsafe {
        [
            rd8(data, OFF_IP_DST),
            rd8(data, OFF_IP_DST + 1),
            rd8(data, OFF_IP_DST + 2),
            rd8(data, OFF_IP_DST + 3),
        ]
    };
    let key = RelayKey::from_wire_v4(dst_ip, unsafe { rd16(data, OFF_UDP_DPORT) });
    let rule: &RelayRule = unsafe { RELAY_RULES.get(&key) }?;
    let flags = rule.flags;
    if flags & FLAG_IPV6 != 0 {
        // v4 → v6 translation is not a fast-path job.
        return None;
    }

    // Old and new words: IP src (2), IP dst (2), UDP sport, UDP dport.
    // A source other than the latched peer goes to userspace: the leg may
    // have moved (re-latch there) or the packet is forged (rejected there).
    if flags & FLAG_CHECK_PEER != 0 {
        let (s0, s1, sport) = unsafe {
            (
                rd16(data, OFF_IP_SRC),
                rd16(data, OFF_IP_SRC + 2),
                rd16(data, OFF_UDP_SPORT),
            )
        };
        if s0 != word(&rule.peer_ip, 12) || s1 != word(&rule.peer_ip, 14) || sport != rule.peer_port
        {
            return None;
        }
    }

    if flags & FLAG_DROP != 0 {
        count(&key, (ETH_HLEN + tot_len) as u64);
        return Some(XDP_DROP);
    }

    let old = unsafe {
        [
            rd16(data, OFF_IP_SRC),
            rd16(data, OFF_IP_SRC + 2),
            rd16(data, OFF_IP_DST),
            rd16(data, OFF_IP_DST + 2),
            rd16(data, OFF_UDP_SPORT),
            rd16(data, OFF_UDP_DPORT),
        ]
    };
    let new = [
        word(&rule.src_ip, 12),
        word(&rule.src_ip, 14),
        word(&rule.remote_ip, 12),
        word(&rule.remote_ip, 14),
        rule.src_port,
        rule.remote_port,
    ];

    // IPv4 header checksum: only the addresses change.
    let mut ip_acc = u32::from(!unsafe { rd16(data, OFF_IP_CSUM) });
    let mut i = 0;
    while i < 4 {
        ip_acc = csum_replace(ip_acc, old[i], new[i]);
        i += 1;
    }
    let ip_csum = !csum_fold(ip_acc);

    // UDP checksum: pseudo-header addresses and both ports change. Zero
    // means "no checksum" (IPv4): keep it zero.
    let old_udp_csum = unsafe { rd16(data, OFF_UDP_CSUM) };
    let udp_csum = if flags & FLAG_ZERO_UDP_CSUM != 0 || old_udp_csum == 0 {
        0
    } else {
        let mut acc = u32::from(!old_udp_csum);
        let mut i = 0;
        while i < 6 {
            acc = csum_replace(acc, old[i], new[i]);
            i += 1;
        }
        match !csum_fold(acc) {
            // A computed zero is sent as all ones (RFC 768).
            0 => 0xffff,
            c => c,
        }
    };

    unsafe {
        wr16(data, OFF_IP_SRC, new[0]);
        wr16(data, OFF_IP_SRC + 2, new[1]);
        wr16(data, OFF_IP_DST, new[2]);
        wr16(data, OFF_IP_DST + 2, new[3]);
        wr16(data, OFF_IP_CSUM, ip_csum);
        wr16(data, OFF_UDP_SPORT, new[4]);
        wr16(data, OFF_UDP_DPORT, new[5]);
        wr16(data, OFF_UDP_CSUM, udp_csum);
        let mut j = 0;
        while j < 6 {
            wr16(data, OFF_ETH_DST + j, word(&rule.dst_mac, j));
            wr16(data, OFF_ETH_SRC + j, word(&rule.src_mac, j));
            j += 2;
        }
    }

    count(&key, (ETH_HLEN + tot_len) as u64);

    if flags & FLAG_REDIRECT != 0 {
        // XDP_REDIRECT on success, XDP_ABORTED (flags' low bits) on failure.
        Some(unsafe { bpf_redirect(rule.ifindex, 0) } as u32)
    } else {
        Some(XDP_TX)
    }
}

/// The verdict on a SIP datagram from `src` (wire order).
#[inline(always)]
fn sip_guard(g: &SipGuard, src: [u8; 4]) -> u32 {
    let net = Key::new(32, src);
    if SIP_DENY.get(&net).is_some() {
        sip_count(|c| c.denied += 1);
        return XDP_DROP;
    }
    if SIP_TRUSTED.get(&net).is_some() {
        sip_count(|c| c.trusted += 1);
        return XDP_PASS;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let id = u32::from_ne_bytes(src);
    match SIP_SOURCES.get_ptr_mut(&id) {
        // Per-CPU value: no other writer on this CPU while we run.
        Some(s) => {
            let tat = unsafe { (*s).tat_ns };
            let tat = if tat > now { tat } else { now };
            if tat - now > g.burst_ns {
                sip_count(|c| c.rate_dropped += 1);
                return XDP_DROP;
            }
            unsafe { (*s).tat_ns = tat + g.interval_ns };
        }
        None => {
            // A new source starts with its whole burst. Losing the entry
            // (a full map, an eviction) only ever lets a datagram through.
            let _ = SIP_SOURCES.insert(
                &id,
                &SipSource {
                    tat_ns: now + g.interval_ns,
                },
                0,
            );
        }
    }
    sip_count(|c| c.passed += 1);
    XDP_PASS
}

#[inline(always)]
fn sip_count(f: impl FnOnce(&mut SipCounters)) {
    if let Some(c) = SIP_COUNTERS.get_ptr_mut(0) {
        // Per-CPU value: no other writer on this CPU while we run.
        unsafe { f(&mut *c) }
    }
}

#[inline(always)]
fn count(key: &RelayKey, bytes: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    match LEG_COUNTERS.get_ptr_mut(key) {
        // Per-CPU value: no other writer on this CPU while we run.
        Some(c) => unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).last_seen_ns = now;
        },
        None => {
            // The loader creates the entry with the rule; recreate it if it
            // was removed in between. Losing this count on failure is fine.
            let _ = LEG_COUNTERS.insert(
                key,
                LegCounters {
                    packets: 1,
                    bytes,
                    last_seen_ns: now,
                },
                0,
            );
        }
    }
}

// The kernel needs a GPL-compatible license string for GPL-only helpers;
// the ones used here are not, but aya defaults to "GPL" without a section.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
