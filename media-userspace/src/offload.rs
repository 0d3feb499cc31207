//! Whether, and how, a relay pair moves to the XDP fast path: the one
//! place this is decided. Sans-IO: fed the pair's state and a snapshot of
//! the host's routes, neighbours, interfaces and local addresses
//! ([`HostNet`]); returns the two kernel rules, or why the pair stays in
//! userspace.
//!
//! A pair is offloaded only when the kernel would do exactly what the
//! userspace relay does: both sides latched (the rules carry the latched
//! peer, [`crate::xdp::FLAG_CHECK_PEER`]), both sending, and payload types
//! numbered the same on both sides (the program does not rewrite RTP).
//! Legs that need re-encryption or transcoding stay in userspace: different
//! codecs ([`PairView::same_numbering`]) and SRTP with different keys on the
//! two sides ([`PairView::srtp`]); SRTP with the keys shared end to end passes
//! through the kernel untouched, like plain RTP. RTCP (port + 1) always
//! stays in userspace, at a few packets per second.

use crate::xdp::{FLAG_REDIRECT, FLAG_ZERO_UDP_CSUM, RelayKey, RelayRule};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Why a pair stays in userspace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StayInUserspace {
    #[error("a side has not latched its peer yet")]
    NotLatched,
    #[error("a side is on hold")]
    OnHold,
    #[error("the sides number the codec or telephone-event differently")]
    PayloadTypeMapping,
    #[error("the sides encrypt differently (SRTP must be re-encrypted)")]
    SrtpReencrypt,
    #[error("IPv6 leg (the fast path handles IPv4)")]
    Ipv6,
    #[error("no IPv4 media address to key the rules on")]
    NoLocalAddress,
    #[error("peer {0} is on this host")]
    LocalPeer(Ipv4Addr),
    #[error("no route to {0}")]
    NoRoute(Ipv4Addr),
    #[error("no neighbour entry for next hop {0}")]
    NoNeighbour(Ipv4Addr),
    #[error("interface {0} is not known or not attached")]
    Interface(String),
}

/// What the relay knows of its two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairView {
    /// Latched peers (None until a side latched).
    pub peers: [Option<SocketAddr>; 2],
    /// Whether each side may be sent to (not on hold).
    pub sending: [bool; 2],
    /// The same codec on both sides, with payload types (codec and
    /// telephone-event) numbered alike: the kernel forwards payloads
    /// untouched, so it takes no pair that transcodes or renumbers.
    pub same_numbering: bool,
    /// How the pair's media is protected. The kernel forwards ciphertext
    /// as it is, so both sides plain or keys shared end to end may be
    /// offloaded; anything else needs decrypting and encrypting again in
    /// userspace.
    pub srtp: PairSrtp,
}

/// How a relay pair's media is protected, as the kernel would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairSrtp {
    /// Plain RTP on both sides.
    Plain,
    /// SRTP with the keys shared end to end: each side's peer sends under
    /// the key we declared to the other side's peer.
    SharedKeys,
    /// SRTP on one side only, or different keys: decrypted and protected
    /// again in userspace.
    Reencrypt,
}

/// A network interface the fast path may send from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

#[derive(Debug, Clone)]
struct Route {
    dest: u32,
    mask: u32,
    gateway: Ipv4Addr,
    iface: String,
    metric: u32,
}

/// A snapshot of the host's IPv4 routing: main-table routes
/// (`/proc/net/route`), complete neighbour entries (`/proc/net/arp`),
/// local addresses (`/proc/net/fib_trie`) and interfaces (`/sys/class/net`).
#[derive(Debug, Clone, Default)]
pub struct HostNet {
    routes: Vec<Route>,
    neighbours: HashMap<(Ipv4Addr, String), [u8; 6]>,
    local: HashSet<Ipv4Addr>,
    interfaces: HashMap<String, Interface>,
}

/// `/proc/net/route` prints addresses as native-endian hex of the
/// network-order value.
fn proc_ipv4(hex: &str) -> Option<u32> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(u32::from_be_bytes(v.to_ne_bytes()))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl HostNet {
    /// Builds the snapshot from the text of `/proc/net/route`,
    /// `/proc/net/arp` and `/proc/net/fib_trie` and the interfaces.
    /// Malformed lines are skipped.
    pub fn parse(route: &str, arp: &str, fib_trie: &str, interfaces: Vec<Interface>) -> HostNet {
        let routes = route
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 8 {
                    return None;
                }
                let flags = u32::from_str_radix(f[3], 16).ok()?;
                // RTF_UP
                if flags & 1 == 0 {
                    return None;
                }
                Some(Route {
                    iface: f[0].to_string(),
                    dest: proc_ipv4(f[1])?,
                    gateway: Ipv4Addr::from(proc_ipv4(f[2])?),
                    metric: f[6].parse().ok()?,
                    mask: proc_ipv4(f[7])?,
                })
            })
            .collect();
        let neighbours = arp
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 6 {
                    return None;
                }
                let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
                // ATF_COM: the entry is resolved.
                if flags & 0x2 == 0 {
                    return None;
                }
                Some(((f[0].parse().ok()?, f[5].to_string()), parse_mac(f[3])?))
            })
            .collect();
        let mut local = HashSet::new();
        let mut last: Option<Ipv4Addr> = None;
        for l in fib_trie.lines() {
            let t = l.trim_start_matches([' ', '|', '+', '-', '`']).trim();
            if let Ok(ip) = t.parse::<Ipv4Addr>() {
                last = Some(ip);
            } else if t.starts_with("/32 host LOCAL")
                && let Some(ip) = last
            {
                local.insert(ip);
            }
        }
        HostNet {
            routes,
            neighbours,
            local,
            interfaces: interfaces
                .into_iter()
                .map(|i| (i.name.clone(), i))
                .collect(),
        }
    }

    /// Reads the snapshot of the network namespace this thread is in
    /// (`/proc/thread-self`: a worker may run in another namespace than the
    /// process's first thread), keeping only the interfaces in `attached`
    /// (where the program runs).
    pub fn read(attached: &[String]) -> std::io::Result<HostNet> {
        let route = std::fs::read_to_string("/proc/thread-self/net/route")?;
        let arp = std::fs::read_to_string("/proc/thread-self/net/arp")?;
        let fib = std::fs::read_to_string("/proc/thread-self/net/fib_trie")?;
        let ifs = attached
            .iter()
            .filter_map(|name| interface(name).ok())
            .collect();
        Ok(HostNet::parse(&route, &arp, &fib, ifs))
    }

    /// The interface toward `ip` and the MAC of the next hop (§ longest
    /// prefix, then lowest metric).
    pub fn next_hop(&self, ip: Ipv4Addr) -> Result<(&Interface, [u8; 6]), StayInUserspace> {
        if ip.is_loopback() || ip.is_unspecified() || self.local.contains(&ip) {
            return Err(StayInUserspace::LocalPeer(ip));
        }
        let a = u32::from(ip);
        let route = self
            .routes
            .iter()
            .filter(|r| a & r.mask == r.dest)
            .max_by_key(|r| (r.mask.count_ones(), u32::MAX - r.metric))
            .ok_or(StayInUserspace::NoRoute(ip))?;
        let iface = self
            .interfaces
            .get(&route.iface)
            .ok_or_else(|| StayInUserspace::Interface(route.iface.clone()))?;
        let hop = if route.gateway.is_unspecified() {
            ip
        } else {
            route.gateway
        };
        let mac = self
            .neighbours
            .get(&(hop, route.iface.clone()))
            .copied()
            .ok_or(StayInUserspace::NoNeighbour(hop))?;
        Ok((iface, mac))
    }
}

/// The two kernel rules of a pair: packets to side A's port go to side B's
/// peer from side B's port, and the reverse.
pub type PairRules = [(RelayKey, RelayRule); 2];

/// A pair that passed the checks needing no host state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    local: Ipv4Addr,
    peers: [std::net::SocketAddrV4; 2],
}

/// The checks of [`plan`] that need no host state: latched, sending, same
/// numbering, IPv4.
pub fn check(view: &PairView, local_ip: Option<IpAddr>) -> Result<Ready, StayInUserspace> {
    let [Some(pa), Some(pb)] = view.peers else {
        return Err(StayInUserspace::NotLatched);
    };
    if !view.sending[0] || !view.sending[1] {
        return Err(StayInUserspace::OnHold);
    }
    if !view.same_numbering {
        return Err(StayInUserspace::PayloadTypeMapping);
    }
    if view.srtp == PairSrtp::Reencrypt {
        return Err(StayInUserspace::SrtpReencrypt);
    }
    let local = match local_ip {
        Some(IpAddr::V4(ip)) if !ip.is_unspecified() => ip,
        Some(IpAddr::V6(_)) => return Err(StayInUserspace::Ipv6),
        _ => return Err(StayInUserspace::NoLocalAddress),
    };
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(StayInUserspace::Ipv6),
    };
    Ok(Ready {
        local,
        peers: [v4(pa)?, v4(pb)?],
    })
}

/// Decides whether the pair can run in the kernel and builds its rules.
/// `local_ip` is the address peers send RTP to (the SDP's), `ports` the
/// pair's local RTP ports (side A, side B).
pub fn plan(
    view: &PairView,
    local_ip: Option<IpAddr>,
    ports: [u16; 2],
    net: &HostNet,
    zero_udp_checksum: bool,
) -> Result<PairRules, StayInUserspace> {
    let Ready { local, peers } = check(view, local_ip)?;
    let hops = [net.next_hop(*peers[0].ip())?, net.next_hop(*peers[1].ip())?];
    let rule = |i: usize, o: usize| {
        let (in_if, _) = hops[i];
        let (out_if, mac) = hops[o];
        let mut flags = 0;
        if in_if.ifindex != out_if.ifindex {
            flags |= FLAG_REDIRECT;
        }
        if zero_udp_checksum {
            flags |= FLAG_ZERO_UDP_CSUM;
        }
        let key = RelayKey::v4(local.octets(), ports[i]);
        let r = RelayRule::v4(
            local.octets(),
            ports[o],
            peers[o].ip().octets(),
            peers[o].port(),
            out_if.mac,
            mac,
            out_if.ifindex,
            flags,
        )
        .from_peer_v4(peers[i].ip().octets(), peers[i].port());
        (key, r)
    };
    Ok([rule(0, 1), rule(1, 0)])
}

/// Why installing a pair's rules did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error(transparent)]
    Stay(#[from] StayInUserspace),
    #[error("reading the host's routes: {0}")]
    HostNet(#[from] std::io::Error),
    #[error(transparent)]
    Kernel(#[from] crate::xdp::XdpError),
}

/// The attached fast path as the media workers share it (the edge around
/// [`plan`]): installs and removes a pair's two rules and reads their
/// counters.
pub struct XdpPath {
    offload: std::sync::Mutex<crate::xdp::XdpOffload>,
    /// The last host snapshot and when it was read: a burst of calls
    /// shares one read of /proc (routes and neighbours change slowly; a
    /// stale one costs at most a retry).
    host: std::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<HostNet>)>>,
    interfaces: Vec<String>,
    /// The address peers send RTP to: rules are keyed on it.
    pub local_ip: Option<IpAddr>,
    pub zero_udp_checksum: bool,
}

impl StayInUserspace {
    /// Refusals that depend on the host's routes and neighbours, worth a
    /// retry later; the others are re-checked cheaply on every packet.
    pub fn needs_host_state(&self) -> bool {
        matches!(
            self,
            StayInUserspace::LocalPeer(_)
                | StayInUserspace::NoRoute(_)
                | StayInUserspace::NoNeighbour(_)
                | StayInUserspace::Interface(_)
        )
    }
}

impl std::fmt::Debug for XdpPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPath")
            .field("interfaces", &self.interfaces)
            .field("local_ip", &self.local_ip)
            .finish_non_exhaustive()
    }
}

impl XdpPath {
    /// Runs `f` on the SIP guard's maps of the loaded program.
    pub fn sip_guard<R>(&self, f: impl FnOnce(&mut crate::xdp_sip::SipGuardMaps) -> R) -> R {
        let mut o = self.offload.lock().unwrap_or_else(|p| p.into_inner());
        f(o.sip_guard())
    }

    pub fn new(
        offload: crate::xdp::XdpOffload,
        local_ip: Option<IpAddr>,
        zero_udp_checksum: bool,
    ) -> XdpPath {
        let interfaces = offload
            .interfaces()
            .iter()
            .map(|(i, _)| i.clone())
            .collect();
        XdpPath {
            offload: std::sync::Mutex::new(offload),
            host: std::sync::Mutex::new(None),
            interfaces,
            local_ip,
            zero_udp_checksum,
        }
    }

    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, crate::xdp::XdpOffload> {
        self.offload.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plans and installs the pair's rules (both or neither).
    pub fn install(&self, view: &PairView, ports: [u16; 2]) -> Result<PairRules, OffloadError> {
        // Cheap refusals first: no /proc reads for pairs not ready.
        check(view, self.local_ip)?;
        let net = self.host_net()?;
        let rules = plan(view, self.local_ip, ports, &net, self.zero_udp_checksum)?;
        let mut o = self.lock();
        o.insert_rule(rules[0].0, rules[0].1)?;
        if let Err(e) = o.insert_rule(rules[1].0, rules[1].1) {
            let _ = o.remove_rule(&rules[0].0);
            return Err(e.into());
        }
        Ok(rules)
    }

    /// How long a host snapshot is reused.
    const HOST_TTL: std::time::Duration = std::time::Duration::from_secs(1);

    fn host_net(&self) -> std::io::Result<std::sync::Arc<HostNet>> {
        let mut cached = self.host.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if let Some((at, net)) = cached.as_ref()
            && now.duration_since(*at) < Self::HOST_TTL
        {
            return Ok(net.clone());
        }
        let net = std::sync::Arc::new(HostNet::read(&self.interfaces)?);
        *cached = Some((now, net.clone()));
        Ok(net)
    }

    /// Removes the pair's rules; the kernel's final counters per side.
    pub fn remove(&self, rules: &PairRules) -> [crate::xdp::LegCounters; 2] {
        let mut o = self.lock();
        rules.map(|(k, _)| o.remove_rule(&k).ok().flatten().unwrap_or_default())
    }

    /// The kernel's counters per side (packets that arrived on that side).
    pub fn counters(&self, rules: &PairRules) -> [crate::xdp::LegCounters; 2] {
        let o = self.lock();
        rules.map(|(k, _)| o.counters(&k).ok().flatten().unwrap_or_default())
    }

    /// The kernel's id of this process's copy of the program.
    pub fn program_id(&self) -> Option<u32> {
        self.lock().program_id()
    }

    /// Every rule the kernel holds, those a previous run left included.
    pub fn rules(&self) -> Vec<(RelayKey, RelayRule)> {
        self.lock().rules()
    }

    /// Removes one leg's rule (and its counters).
    pub fn remove_key(&self, key: &RelayKey) {
        let _ = self.lock().remove_rule(key);
    }

    /// One leg's kernel counters.
    pub fn leg_counters(&self, key: &RelayKey) -> Option<crate::xdp::LegCounters> {
        self.lock().counters(key).ok().flatten()
    }
}

/// Index and MAC of interface `name` in this thread's network namespace
/// (ioctls on a socket made here: `/sys/class/net` shows the namespace
/// sysfs was mounted in, which may be another).
fn interface(name: &str) -> std::io::Result<Interface> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: socket() has no memory preconditions; the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFINDEX reads ifr_name and writes ifr_ifindex of `req`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just wrote the ifindex member.
    let ifindex = unsafe { req.ifr_ifru.ifru_ifindex } as u32;
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr of `req`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just wrote the hwaddr member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(Interface {
        name: name.to_string(),
        ifindex,
        mac,
    })
}

/// Where a rule sends: the peer of the leg it forwards to.
pub fn rule_remote(rule: &RelayRule) -> SocketAddr {
    let ip = std::net::Ipv6Addr::from(rule.remote_ip);
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    SocketAddr::new(ip, rule.remote_port_host())
}

/// CLOCK_MONOTONIC in ns: the clock of the program's `last_seen_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::FLAG_CHECK_PEER;

    // Recorded from a gateway namespace with two veths (198.18.0.0/24
    // toward callers, 198.18.1.0/24 toward the far side) and a default
    // route via 198.18.1.254.
    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
gw-c\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
gw-f\t000112C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
gw-f\t00000000\tFE0112C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
    const ARP: &str = "IP address       HW type     Flags       HW address            Mask     Device\n\
198.18.0.2       0x1         0x2         02:00:00:00:0c:02     *        gw-c\n\
198.18.1.2       0x1         0x2         02:00:00:00:0f:02     *        gw-f\n\
198.18.1.254     0x1         0x2         02:00:00:00:0f:fe     *        gw-f\n\
198.18.0.9       0x1         0x0         00:00:00:00:00:00     *        gw-c\n";
    const FIB: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 198.18.0.1\n        /32 host LOCAL\n     |-- 198.18.0.0\n        /24 link UNICAST\n";

    fn net() -> HostNet {
        HostNet::parse(
            ROUTE,
            ARP,
            FIB,
            vec![
                Interface {
                    name: "gw-c".into(),
                    ifindex: 7,
                    mac: [2, 0, 0, 0, 0x0c, 1],
                },
                Interface {
                    name: "gw-f".into(),
                    ifindex: 9,
                    mac: [2, 0, 0, 0, 0x0f, 1],
                },
            ],
        )
    }

    fn view(a: &str, b: &str) -> PairView {
        PairView {
            peers: [Some(a.parse().unwrap()), Some(b.parse().unwrap())],
            sending: [true, true],
            same_numbering: true,
            srtp: PairSrtp::Plain,
        }
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));

    #[test]
    fn bridged_peers_on_two_interfaces_get_redirect_rules_both_ways() {
        let rules = plan(
            &view("198.18.0.2:4000", "198.18.1.2:6000"),
            LOCAL,
            [30000, 30002],
            &net(),
            false,
        )
        .unwrap();
        let (k, r) = rules[0];
        assert_eq!(k, RelayKey::v4([198, 18, 0, 1], 30000));
        assert_eq!(r.src_port_host(), 30002);
        assert_eq!(r.remote_port_host(), 6000);
        assert_eq!(&r.remote_ip[12..], &[198, 18, 1, 2]);
        assert_eq!(r.dst_mac, [2, 0, 0, 0, 0x0f, 2]);
        assert_eq!(r.src_mac, [2, 0, 0, 0, 0x0f, 1]);
        assert_eq!(r.ifindex, 9);
        assert_eq!(r.flags, FLAG_REDIRECT | FLAG_CHECK_PEER);
        assert_eq!(
            &r.peer_ip[12..],
            &[198, 18, 0, 2],
            "only the latched caller"
        );
        let (k, r) = rules[1];
        assert_eq!(k, RelayKey::v4([198, 18, 0, 1], 30002));
        assert_eq!(r.remote_port_host(), 4000);
        assert_eq!(r.ifindex, 7);
        assert_eq!(r.dst_mac, [2, 0, 0, 0, 0x0c, 2]);
    }

    #[test]
    fn peers_behind_the_same_interface_use_xdp_tx_and_gateways_resolve() {
        let rules = plan(
            &view("198.18.1.2:4000", "203.0.113.50:7000"),
            LOCAL,
            [30000, 30002],
            &net(),
            true,
        )
        .unwrap();
        let (_, r) = rules[0];
        assert_eq!(
            r.dst_mac,
            [2, 0, 0, 0, 0x0f, 0xfe],
            "via the default gateway"
        );
        assert_eq!(r.flags & FLAG_REDIRECT, 0, "same interface: XDP_TX");
        assert_ne!(r.flags & FLAG_ZERO_UDP_CSUM, 0);
    }

    #[test]
    fn srtp_passes_through_only_with_the_same_keys_on_both_sides() {
        let n = net();
        let p = |srtp: PairSrtp| {
            let v = PairView {
                srtp,
                ..view("198.18.0.2:4000", "198.18.1.2:6000")
            };
            plan(&v, LOCAL, [30000, 30002], &n, false).err()
        };
        assert_eq!(p(PairSrtp::Plain), None, "plain RTP");
        assert_eq!(p(PairSrtp::SharedKeys), None, "same keys end to end");
        assert_eq!(p(PairSrtp::Reencrypt), Some(StayInUserspace::SrtpReencrypt));
    }

    #[test]
    fn pairs_the_kernel_cannot_serve_stay_in_userspace() {
        let n = net();
        let p = |v: PairView, local: Option<IpAddr>| plan(&v, local, [1, 3], &n, false).err();
        let mut v = view("198.18.0.2:4000", "198.18.1.2:6000");
        v.peers[1] = None;
        assert_eq!(p(v, LOCAL), Some(StayInUserspace::NotLatched));
        let mut v = view("198.18.0.2:4000", "198.18.1.2:6000");
        v.sending[0] = false;
        assert_eq!(p(v, LOCAL), Some(StayInUserspace::OnHold));
        let mut v = view("198.18.0.2:4000", "198.18.1.2:6000");
        v.same_numbering = false;
        assert_eq!(p(v, LOCAL), Some(StayInUserspace::PayloadTypeMapping));
        assert_eq!(
            p(view("127.0.0.1:4000", "198.18.1.2:6000"), LOCAL),
            Some(StayInUserspace::LocalPeer(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            p(view("198.18.0.1:4000", "198.18.1.2:6000"), LOCAL),
            Some(StayInUserspace::LocalPeer(Ipv4Addr::new(198, 18, 0, 1))),
            "a peer on one of our own addresses"
        );
        assert_eq!(
            p(view("198.18.0.9:4000", "198.18.1.2:6000"), LOCAL),
            Some(StayInUserspace::NoNeighbour(Ipv4Addr::new(198, 18, 0, 9))),
            "incomplete ARP entry"
        );
        assert_eq!(
            p(view("[2001:db8::1]:4000", "198.18.1.2:6000"), LOCAL),
            Some(StayInUserspace::Ipv6)
        );
        assert_eq!(
            p(
                view("198.18.0.2:4000", "198.18.1.2:6000"),
                Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            ),
            Some(StayInUserspace::NoLocalAddress)
        );
        let only_one_if = HostNet::parse(ROUTE, ARP, FIB, vec![]);
        assert_eq!(
            plan(
                &view("198.18.0.2:4000", "198.18.1.2:6000"),
                LOCAL,
                [1, 3],
                &only_one_if,
                false
            )
            .err(),
            Some(StayInUserspace::Interface("gw-c".into())),
            "the program is not attached there"
        );
    }

    #[test]
    fn malformed_proc_text_is_skipped_not_fatal() {
        let n = HostNet::parse("garbage\nx y z\n", "junk\n1 2 3\n", "|-- nope\n", vec![]);
        assert_eq!(
            n.next_hop(Ipv4Addr::new(198, 18, 0, 2)).err(),
            Some(StayInUserspace::NoRoute(Ipv4Addr::new(198, 18, 0, 2)))
        );
    }
}
