//! Admission before the parse: which queue a SIP message from an address
//! goes to, or whether it is dropped because its source is over its rate.
//!
//! Sans-IO: fed the source and the current time. Trunks (by their source
//! networks) share one token bucket per trunk when the trunk has a
//! `requests_per_sec`, and their messages go to the trunk queue the core
//! serves first; every other address has its own bucket
//! (`sip.source_requests_per_sec`). The per-address table is bounded in two
//! generations: when the current one is full it becomes the previous one
//! and the older is forgotten, so memory stays bounded under a flood of
//! spoofed addresses and a new client always gets a fresh bucket (a
//! forgotten bucket was at worst partly spent).
//!
//! The operator's denied networks come first: their messages are dropped
//! whatever their rate, trunk or not (as in the XDP guard).

use crate::sip::transport::{canonical_ip, source_key};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// From a trunk's network, within the trunk's rate: the trunk queue.
    Trunk,
    /// From any other address within its rate: the shared queue.
    Source,
    /// Over its rate: dropped unparsed, counted.
    OverRate,
    /// From a denied network: dropped unparsed, counted.
    Denied,
}

/// A rate in tokens per second with a burst (the bucket's depth).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

impl Rate {
    /// `per_sec` with a burst of twice that (at least one message).
    pub fn with_double_burst(per_sec: u32) -> Rate {
        Rate {
            per_sec: f64::from(per_sec),
            burst: (2.0 * f64::from(per_sec)).max(1.0),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Refills for the time since the last message, then spends one token.
    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A trunk's networks and its shared bucket.
#[derive(Debug)]
struct TrunkLimit {
    nets: Vec<IpNet>,
    rate: Option<Rate>,
    bucket: Option<Bucket>,
}

/// The admission state: trunk networks and per-address buckets.
#[derive(Debug)]
pub struct SourceAdmission {
    source_rate: Option<Rate>,
    /// Addresses tracked per generation.
    capacity: usize,
    trunks: Vec<TrunkLimit>,
    current: HashMap<IpAddr, Bucket>,
    previous: HashMap<IpAddr, Bucket>,
    denied: DenySet,
}

/// Denied networks, looked up by each prefix length in use (a handful),
/// so a long list costs a few hash lookups per message, not a scan.
#[derive(Debug, Default)]
struct DenySet {
    nets: HashMap<IpNet, Option<Instant>>,
    /// (IPv6, prefix length) of the networks, without repeats.
    lens: Vec<(bool, u8)>,
}

impl DenySet {
    fn new(nets: impl IntoIterator<Item = (IpNet, Option<Instant>)>) -> DenySet {
        let nets: HashMap<IpNet, Option<Instant>> =
            nets.into_iter().map(|(n, t)| (n.trunc(), t)).collect();
        let mut lens: Vec<(bool, u8)> = nets
            .keys()
            .map(|n| (matches!(n, IpNet::V6(_)), n.prefix_len()))
            .collect();
        lens.sort_unstable();
        lens.dedup();
        DenySet { nets, lens }
    }

    fn denies(&self, ip: IpAddr, now: Instant) -> bool {
        if self.nets.is_empty() {
            return false;
        }
        self.lens
            .iter()
            .filter(|(v6, _)| *v6 == ip.is_ipv6())
            .filter_map(|(_, len)| IpNet::new(ip, *len).ok())
            .any(|n| {
                self.nets
                    .get(&n.trunc())
                    .is_some_and(|until| until.is_none_or(|t| now < t))
            })
    }
}

impl SourceAdmission {
    /// `source_rate`: each non-trunk address's rate (`None`: unlimited);
    /// `capacity`: addresses remembered per generation.
    pub fn new(source_rate: Option<Rate>, capacity: usize) -> SourceAdmission {
        SourceAdmission {
            source_rate,
            capacity: capacity.max(1),
            trunks: Vec::new(),
            current: HashMap::new(),
            previous: HashMap::new(),
            denied: DenySet::default(),
        }
    }

    /// Replaces the denied networks, each until its instant (`None`:
    /// until replaced).
    pub fn set_denied(&mut self, nets: impl IntoIterator<Item = (IpNet, Option<Instant>)>) {
        self.denied = DenySet::new(nets);
    }

    /// Replaces the trunks (after a routing change): each trunk's networks
    /// and its rate. A trunk keeps its spent bucket when its rate did not
    /// change, so a reload is no way around the limit.
    pub fn set_trunks(&mut self, trunks: impl IntoIterator<Item = (Vec<IpNet>, Option<Rate>)>) {
        let mut old: Vec<TrunkLimit> = std::mem::take(&mut self.trunks);
        for (nets, rate) in trunks {
            let bucket = old
                .iter_mut()
                .find(|t| t.nets == nets && t.rate == rate)
                .and_then(|t| t.bucket.take());
            self.trunks.push(TrunkLimit { nets, rate, bucket });
        }
    }

    /// Takes the trunks and the denied networks of a routing table; `now`
    /// and `now_ms` are the same moment, to place the entries' expiries.
    pub fn set_routing(
        &mut self,
        routing: &crate::routing::RoutingTable,
        now: Instant,
        now_ms: i64,
    ) {
        self.set_trunks(routing.trunks().map(|e| {
            (
                e.nets.clone(),
                e.trunk.requests_per_sec.map(Rate::with_double_burst),
            )
        }));
        self.set_denied(
            routing
                .denied()
                .iter()
                .map(|d| (d.net, d.until(now, now_ms))),
        );
    }

    /// Decides for one message (or connection) from `ip` at `now`.
    pub fn admit(&mut self, now: Instant, ip: IpAddr) -> Admission {
        let ip = canonical_ip(ip);
        if self.denied.denies(ip, now) {
            return Admission::Denied;
        }
        if let Some(t) = self.trunk_of(ip) {
            let Some(rate) = t.rate else {
                return Admission::Trunk;
            };
            let bucket = t.bucket.get_or_insert_with(|| Bucket::full(rate, now));
            return if bucket.take(rate, now) {
                Admission::Trunk
            } else {
                Admission::OverRate
            };
        }
        let Some(rate) = self.source_rate else {
            return Admission::Source;
        };
        let ip = source_key(ip);
        let bucket = match self.current.get_mut(&ip) {
            Some(b) => b,
            None => {
                if self.current.len() >= self.capacity {
                    self.previous = std::mem::take(&mut self.current);
                }
                let b = self
                    .previous
                    .remove(&ip)
                    .unwrap_or_else(|| Bucket::full(rate, now));
                self.current.entry(ip).or_insert(b)
            }
        };
        if bucket.take(rate, now) {
            Admission::Source
        } else {
            Admission::OverRate
        }
    }

    /// The trunk with the most specific network containing `ip`.
    fn trunk_of(&mut self, ip: IpAddr) -> Option<&mut TrunkLimit> {
        let mut best: Option<(usize, u8)> = None;
        for (i, t) in self.trunks.iter().enumerate() {
            for n in &t.nets {
                if n.contains(&ip) && best.is_none_or(|(_, len)| n.prefix_len() > len) {
                    best = Some((i, n.prefix_len()));
                }
            }
        }
        best.map(|(i, _)| &mut self.trunks[i])
    }

    /// Addresses with a bucket now (both generations).
    pub fn tracked(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// How long a bucket takes to refill from empty (for documentation and
/// tests: an address idle this long is as good as new).
pub fn refill_time(rate: Rate) -> Duration {
    Duration::from_secs_f64(rate.burst / rate.per_sec.max(f64::MIN_POSITIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn admitted(a: &mut SourceAdmission, now: Instant, from: &str, n: usize) -> usize {
        (0..n)
            .filter(|_| a.admit(now, ip(from)) != Admission::OverRate)
            .count()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut a = SourceAdmission::new(Some(Rate::with_double_burst(10)), 1024);
        assert_eq!(a.admit(t0, ip("203.0.113.5")), Admission::Source);
        assert_eq!(admitted(&mut a, t0, "203.0.113.5", 100), 19);
        // Half a second refills five tokens, no more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(admitted(&mut a, t1, "203.0.113.5", 100), 5);
        // Another address is untouched by the first one's flood.
        assert_eq!(admitted(&mut a, t1, "203.0.113.6", 100), 20);
        // Idle for the refill time: a full burst again, never more.
        let t2 = t1 + refill_time(Rate::with_double_burst(10)) * 3;
        assert_eq!(admitted(&mut a, t2, "203.0.113.5", 100), 20);
    }

    #[test]
    fn mapped_ipv4_shares_the_ipv4_bucket() {
        let t0 = Instant::now();
        let mut a = SourceAdmission::new(Some(Rate::with_double_burst(1)), 1024);
        assert_eq!(admitted(&mut a, t0, "203.0.113.5", 1), 1);
        assert_eq!(admitted(&mut a, t0, "::ffff:203.0.113.5", 5), 1);
        assert_eq!(admitted(&mut a, t0, "::ffff:203.0.113.5", 5), 0);
    }

    #[test]
    fn an_ipv6_host_shares_one_bucket_across_its_slash_64() {
        let t0 = Instant::now();
        let mut a = SourceAdmission::new(Some(Rate::with_double_burst(1)), 1024);
        assert_eq!(admitted(&mut a, t0, "2001:db8:1:2::1", 5), 2);
        assert_eq!(admitted(&mut a, t0, "2001:db8:1:2:aaaa::7", 5), 0);
        assert_eq!(admitted(&mut a, t0, "2001:db8:1:3::1", 5), 2);
    }

    #[test]
    fn trunks_have_their_queue_and_their_own_rate() {
        let t0 = Instant::now();
        let mut a = SourceAdmission::new(Some(Rate::with_double_burst(1)), 1024);
        a.set_trunks([
            (vec![net("192.0.2.0/24")], None),
            (
                vec![net("198.51.100.0/24"), net("2001:db8::/32")],
                Some(Rate::with_double_burst(50)),
            ),
        ]);
        // Unlimited trunk: everything goes to the trunk queue.
        for _ in 0..10_000 {
            assert_eq!(a.admit(t0, ip("192.0.2.9")), Admission::Trunk);
        }
        // A limited trunk's networks share one bucket of 100.
        let from_v4 = admitted(&mut a, t0, "198.51.100.1", 80);
        let from_v6 = admitted(&mut a, t0, "2001:db8::1", 80);
        assert_eq!(from_v4 + from_v6, 100);
        assert_eq!(a.admit(t0, ip("198.51.100.1")), Admission::OverRate);
        // Trunk traffic takes no per-address buckets.
        assert_eq!(a.tracked(), 0);
    }

    #[test]
    fn the_most_specific_trunk_network_decides() {
        let t0 = Instant::now();
        let mut a = SourceAdmission::new(None, 16);
        a.set_trunks([
            (vec![net("10.0.0.0/8")], Some(Rate::with_double_burst(1))),
            (vec![net("10.1.2.3/32")], None),
        ]);
        assert_eq!(admitted(&mut a, t0, "10.1.2.3", 50), 50);
        assert_eq!(admitted(&mut a, t0, "10.9.9.9", 50), 2);
        // No per-source limit configured: other addresses pass.
        assert_eq!(a.admit(t0, ip("203.0.113.1")), Admission::Source);
    }

    #[test]
    fn a_reload_keeps_a_spent_trunk_bucket() {
        let t0 = Instant::now();
        let mut a = SourceAdmission::new(None, 16);
        let trunks = || [(vec![net("192.0.2.0/24")], Some(Rate::with_double_burst(5)))];
        a.set_trunks(trunks());
        assert_eq!(admitted(&mut a, t0, "192.0.2.1", 50), 10);
        a.set_trunks(trunks());
        assert_eq!(admitted(&mut a, t0, "192.0.2.1", 50), 0);
        // A new rate starts a new bucket.
        a.set_trunks([(vec![net("192.0.2.0/24")], Some(Rate::with_double_burst(6)))]);
        assert_eq!(admitted(&mut a, t0, "192.0.2.1", 50), 12);
    }

    #[test]
    fn a_flood_of_spoofed_sources_stays_bounded_and_locks_nobody_out() {
        let t0 = Instant::now();
        let mut a = SourceAdmission::new(Some(Rate::with_double_burst(1)), 1000);
        // The real client spends its bucket.
        assert_eq!(admitted(&mut a, t0, "203.0.113.200", 10), 2);
        for i in 0..100_000u32 {
            let spoofed = IpAddr::from((0xC612_0000u32 + i).to_be_bytes());
            a.admit(t0, spoofed);
            assert!(a.tracked() <= 2000);
        }
        // A new client still gets its burst while the table churns.
        assert_eq!(admitted(&mut a, t0, "203.0.113.201", 10), 2);
    }

    #[test]
    fn an_address_moving_between_generations_keeps_its_spent_bucket() {
        let t0 = Instant::now();
        let mut a = SourceAdmission::new(Some(Rate::with_double_burst(1)), 2);
        assert_eq!(admitted(&mut a, t0, "203.0.113.1", 5), 2);
        // Two more addresses rotate the generation: .1 is now previous.
        a.admit(t0, ip("203.0.113.2"));
        a.admit(t0, ip("203.0.113.3"));
        assert_eq!(admitted(&mut a, t0, "203.0.113.1", 5), 0);
    }

    #[test]
    fn denied_networks_drop_everything_until_they_lapse() {
        let t0 = Instant::now();
        let mut a = SourceAdmission::new(None, 100);
        a.set_trunks([(vec![net("198.51.100.0/24")], None)]);
        a.set_denied([
            (net("203.0.113.0/24"), None),
            (net("198.51.100.7/32"), Some(t0 + Duration::from_secs(60))),
            (net("2001:db8:bad::/48"), None),
        ]);
        assert_eq!(a.admit(t0, ip("203.0.113.200")), Admission::Denied);
        assert_eq!(a.admit(t0, ip("::ffff:203.0.113.1")), Admission::Denied);
        assert_eq!(a.admit(t0, ip("203.0.114.1")), Admission::Source);
        // Over a trunk's network, as in the kernel.
        assert_eq!(a.admit(t0, ip("198.51.100.7")), Admission::Denied);
        assert_eq!(a.admit(t0, ip("198.51.100.8")), Admission::Trunk);
        assert_eq!(a.admit(t0, ip("2001:db8:bad:1::5")), Admission::Denied);
        assert_eq!(a.admit(t0, ip("2001:db8:bae::5")), Admission::Source);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(a.admit(later, ip("198.51.100.7")), Admission::Trunk);
        assert_eq!(a.admit(later, ip("203.0.113.200")), Admission::Denied);
        a.set_denied([]);
        assert_eq!(a.admit(later, ip("203.0.113.200")), Admission::Source);
    }

    #[test]
    fn a_routing_table_places_expiries_on_the_monotonic_clock() {
        let t0 = Instant::now();
        let (mut table, _) = crate::routing::RoutingTable::build(vec![], vec![], vec![], vec![]);
        let row = |id: &str, network: &str, expires_at| domain::model::DeniedSource {
            id: id.into(),
            network: network.into(),
            reason: None,
            created_at: 0,
            expires_at,
        };
        let problems = table.set_denied(
            vec![
                row("a", "203.0.113.9/32", Some(1_030_000)),
                row("b", "203.0.113.10/32", Some(999_000)),
                row("c", "not a network", None),
            ],
            1_000_000,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(table.denied().len(), 1, "the lapsed row is left out");
        let mut a = SourceAdmission::new(None, 100);
        a.set_routing(&table, t0, 1_000_000);
        assert_eq!(a.admit(t0, ip("203.0.113.9")), Admission::Denied);
        assert_eq!(a.admit(t0, ip("203.0.113.10")), Admission::Source);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(a.admit(at(29), ip("203.0.113.9")), Admission::Denied);
        assert_eq!(a.admit(at(30), ip("203.0.113.9")), Admission::Source);
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut a = SourceAdmission::new(Some(Rate::with_double_burst(1)), 16);
        assert_eq!(admitted(&mut a, t0, "203.0.113.1", 5), 2);
        assert_eq!(
            admitted(&mut a, t0 - Duration::from_secs(5), "203.0.113.1", 5),
            0
        );
    }
}
