//! The daemon's side of the XDP SIP guard (`media_userspace::xdp_sip`):
//! turned on for the SIP UDP port when the XDP program is attached, it
//! trusts the trunks' IPv4 networks and denies the operator's denied IPv4
//! networks (both kept in step with routing reloads), and denies sources
//! the registrar locked out, for the lockout's length. (IPv6 is denied in
//! userspace only: the kernel guard reads IPv4.)
//! Everything here fails open: an error is logged and counted, and the
//! userspace checks stay in force.

use crate::routing::RoutingTable;
use ipnet::Ipv4Net;
use media_userspace::offload::XdpPath;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct KernelGuard {
    path: Arc<XdpPath>,
    trusted: HashSet<Ipv4Net>,
    /// Locked-out sources and when their lockout ends.
    denied: HashMap<Ipv4Addr, Instant>,
    /// The operator's denied networks in the map, until when.
    operator: HashMap<Ipv4Net, Option<Instant>>,
}

impl KernelGuard {
    /// Enables the guard on `port` at `rate_per_sec` per source with
    /// bursts of `burst`; `None` (logged) when the maps refuse.
    pub fn enable(path: Arc<XdpPath>, port: u16, rate_per_sec: u32, burst: u32) -> Option<Self> {
        match path.sip_guard(|g| g.enable(port, rate_per_sec, burst)) {
            Ok(()) => {
                tracing::info!(port, rate_per_sec, burst, "XDP SIP guard on");
                Some(KernelGuard {
                    path,
                    trusted: HashSet::new(),
                    denied: HashMap::new(),
                    operator: HashMap::new(),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "XDP SIP guard unavailable; SIP is metered in userspace only");
                None
            }
        }
    }

    /// Trusts exactly the trunks' IPv4 networks of `routing`.
    pub fn set_trunks(&mut self, routing: &RoutingTable) {
        let want: HashSet<Ipv4Net> = routing
            .trunks()
            .flat_map(|e| e.nets.iter())
            .filter_map(|n| match n {
                ipnet::IpNet::V4(v4) => Some(v4.trunc()),
                ipnet::IpNet::V6(_) => None,
            })
            .collect();
        for gone in self.trusted.difference(&want) {
            let _ = self
                .path
                .sip_guard(|g| g.untrust(gone.network(), gone.prefix_len()));
        }
        let mut trusted: HashSet<Ipv4Net> = self.trusted.intersection(&want).copied().collect();
        for new in want.difference(&self.trusted) {
            match self
                .path
                .sip_guard(|g| g.trust(new.network(), new.prefix_len()))
            {
                Ok(()) => {
                    trusted.insert(*new);
                }
                // Retried at the next routing change.
                Err(e) => {
                    tracing::warn!(net = %new, error = %e, "XDP SIP guard: cannot trust a trunk network")
                }
            }
        }
        self.trusted = trusted;
    }

    /// Denies exactly the operator's IPv4 networks of `routing` (`now` is
    /// `now_ms` on the wall clock, to place their expiries).
    pub fn set_denied(&mut self, routing: &RoutingTable, now: Instant, now_ms: i64) {
        let want: HashMap<Ipv4Net, Option<Instant>> = routing
            .denied()
            .iter()
            .filter_map(|d| match d.net {
                ipnet::IpNet::V4(v4) => Some((v4.trunc(), d.until(now, now_ms))),
                ipnet::IpNet::V6(_) => None,
            })
            .filter(|(_, until)| until.is_none_or(|t| t > now))
            .collect();
        let gone: Vec<Ipv4Net> = self
            .operator
            .keys()
            .filter(|n| !want.contains_key(n))
            .copied()
            .collect();
        for n in gone {
            self.operator.remove(&n);
            self.lift(n);
        }
        for (n, until) in want {
            if let Some(u) = self.operator.get_mut(&n) {
                *u = until;
                continue;
            }
            match self.path.sip_guard(|g| g.deny(n.network(), n.prefix_len())) {
                Ok(()) => {
                    self.operator.insert(n, until);
                }
                // Denied in userspace all the same; retried at the next
                // routing change.
                Err(e) => {
                    tracing::warn!(net = %n, error = %e, "XDP SIP guard: cannot deny a network")
                }
            }
        }
    }

    /// Takes `net` out of the kernel's deny set unless a lockout or an
    /// operator's entry still holds the same key.
    fn lift(&mut self, net: Ipv4Net) {
        let held = self.operator.contains_key(&net)
            || (net.prefix_len() == 32 && self.denied.contains_key(&net.network()));
        if !held {
            let _ = self
                .path
                .sip_guard(|g| g.undeny(net.network(), net.prefix_len()));
        }
    }

    /// Drops SIP from `source` in the kernel for `secs`.
    pub fn deny(&mut self, now: Instant, source: IpAddr, secs: u64) {
        let IpAddr::V4(v4) = crate::sip::transport::canonical_ip(source) else {
            return;
        };
        match self.path.sip_guard(|g| g.deny(v4, 32)) {
            Ok(()) => {
                let until = now
                    .checked_add(Duration::from_secs(secs))
                    .unwrap_or(now + Duration::from_secs(86_400 * 365));
                self.denied.insert(v4, until);
            }
            Err(e) => tracing::warn!(%v4, error = %e, "XDP SIP guard: cannot deny a source"),
        }
    }

    /// Lifts the denials whose time is up; the next deadline.
    pub fn expire(&mut self, now: Instant) -> Option<Instant> {
        let ended: Vec<Ipv4Addr> = self
            .denied
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ended {
            self.denied.remove(&ip);
            self.lift(Ipv4Net::from(ip));
        }
        let lapsed: Vec<Ipv4Net> = self
            .operator
            .iter()
            .filter(|(_, until)| until.is_some_and(|t| t <= now))
            .map(|(n, _)| *n)
            .collect();
        for n in lapsed {
            self.operator.remove(&n);
            self.lift(n);
        }
        self.denied
            .values()
            .copied()
            .chain(self.operator.values().flatten().copied())
            .min()
    }
}
