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
        }
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

    /// Takes the trunks of a routing table.
    pub fn set_routing(&mut self, routing: &crate::routing::RoutingTable) {
        self.set_trunks(routing.trunks().map(|e| {
            (
                e.nets.clone(),
                e.trunk.requests_per_sec.map(Rate::with_double_burst),
            )
        }));
    }

    /// Decides for one message (or connection) from `ip` at `now`.
    pub fn admit(&mut self, now: Instant, ip: IpAddr) -> Admission {
        let ip = canonical_ip(ip);
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
