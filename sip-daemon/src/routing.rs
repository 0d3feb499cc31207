//! The in-memory routing table the signalling core decides with: trunks by
//! source network, numbers by most specific pattern, blocked callers, SIP
//! users and the operator's denied networks. Built from store rows; the store is the source of truth and the
//! table is rebuilt whenever it changes.

use domain::model::{BlockedNumber, DeniedSource, Number, SipUser, Trunk};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

pub use domain::e164::{Pattern, normalize_e164};

#[derive(Clone, Debug)]
pub struct TrunkEntry {
    pub trunk: Trunk,
    pub nets: Vec<IpNet>,
}

impl TrunkEntry {
    /// The transport its outbound requests take (`None`: not one we speak).
    pub fn transport(&self) -> Option<crate::sip::transport::TransportKind> {
        crate::sip::transport::TransportKind::from_label(&self.trunk.transport)
    }

    /// Where its outbound requests go: `IP:port`, or an IP with the
    /// transport's default port (5061 for TLS, RFC 3261 §19.1.2).
    pub fn outbound_addr(&self) -> Option<std::net::SocketAddr> {
        let addr = self.trunk.outbound_address.as_deref()?;
        let addr = addr.trim_start_matches("sips:").trim_start_matches("sip:");
        let port = if self.transport() == Some(crate::sip::transport::TransportKind::Tls) {
            5061
        } else {
            5060
        };
        addr.parse().ok().or_else(|| {
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, port))
        })
    }

    /// How a TLS connection to it is made.
    pub fn tls_profile(&self) -> crate::tls::ClientProfile {
        let t = &self.trunk.tls;
        crate::tls::ClientProfile {
            server_name: t.server_name.clone(),
            ca_file: t.ca_file.as_ref().map(Into::into),
            client_cert: t
                .client_cert_file
                .as_ref()
                .zip(t.client_key_file.as_ref())
                .map(|(c, k)| (c.into(), k.into())),
        }
    }
}

/// A network whose SIP is dropped before the parse: an operator's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeniedNet {
    pub net: IpNet,
    /// Unix ms; `None`: until deleted.
    pub expires_at_ms: Option<i64>,
}

impl DeniedNet {
    /// When the entry lapses on the monotonic clock, given that `now` is
    /// `now_ms` on the wall clock.
    pub fn until(&self, now: std::time::Instant, now_ms: i64) -> Option<std::time::Instant> {
        self.expires_at_ms.map(|at| {
            let ms = u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0);
            now.checked_add(std::time::Duration::from_millis(ms))
                .unwrap_or(now + std::time::Duration::from_secs(86_400 * 365))
        })
    }
}

/// A number row whose pattern is no E.164 number or prefix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid number pattern {0:?}")]
pub struct InvalidPattern(pub String);

/// Most-specific-match table of numbers.
#[derive(Clone, Debug, Default)]
pub struct NumberTable {
    exact: HashMap<String, Number>,
    prefixes: HashMap<String, Number>,
}

impl NumberTable {
    pub fn insert(&mut self, n: Number) -> Result<(), InvalidPattern> {
        match Pattern::parse(&n.pattern) {
            Some(Pattern::Exact(e)) => {
                self.exact.insert(e, n);
            }
            Some(Pattern::Prefix(p)) => {
                self.prefixes.insert(p, n);
            }
            None => return Err(InvalidPattern(n.pattern)),
        }
        Ok(())
    }

    /// Exact DID first, then the longest matching prefix.
    pub fn lookup(&self, e164: &str) -> Option<&Number> {
        if let Some(n) = self.exact.get(e164) {
            return Some(n);
        }
        (0..=e164.len())
            .rev()
            .filter(|i| e164.is_char_boundary(*i))
            .find_map(|i| self.prefixes.get(&e164[..i]))
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, Default)]
pub struct RoutingTable {
    trunks: Vec<TrunkEntry>,
    numbers: NumberTable,
    blocked: crate::blocklist::BlockList,
    users: HashMap<String, SipUser>,
    denied: Vec<DeniedNet>,
}

impl RoutingTable {
    /// Builds the table; rows that do not parse are skipped and reported so
    /// one bad row never takes the gateway down.
    pub fn build(
        trunks: Vec<Trunk>,
        numbers: Vec<Number>,
        blocked: Vec<BlockedNumber>,
        users: Vec<SipUser>,
    ) -> (RoutingTable, Vec<String>) {
        let mut problems = Vec::new();
        let mut t = RoutingTable::default();
        for trunk in trunks {
            let mut nets = Vec::new();
            for c in &trunk.source_cidrs {
                match parse_net(c) {
                    Some(n) => nets.push(n),
                    None => problems.push(format!("trunk {}: invalid CIDR {c:?}", trunk.name)),
                }
            }
            t.trunks.push(TrunkEntry { trunk, nets });
        }
        // Most specific network first, so overlapping trunks resolve
        // deterministically.
        t.trunks.sort_by_key(|e| {
            std::cmp::Reverse(e.nets.iter().map(|n| n.prefix_len()).max().unwrap_or(0))
        });
        for n in numbers {
            if let Err(e) = t.numbers.insert(n) {
                problems.push(e.to_string());
            }
        }
        for b in blocked {
            let caller = match Pattern::parse(&b.caller_pattern) {
                Some(p) => p,
                None => {
                    problems.push(format!(
                        "blocked {}: invalid caller pattern {:?}",
                        b.id, b.caller_pattern
                    ));
                    continue;
                }
            };
            let number = match &b.number_pattern {
                None => None,
                Some(p) => match Pattern::parse(p) {
                    Some(p) => Some(p),
                    None => {
                        problems.push(format!("blocked {}: invalid number pattern {p:?}", b.id));
                        continue;
                    }
                },
            };
            t.blocked.insert(&b.account_id, number, caller);
        }
        for u in users {
            t.users.insert(u.username.clone(), u);
        }
        (t, problems)
    }

    /// The trunk whose source networks contain `ip`.
    /// The trunk whose network containing `ip` is the most specific (the
    /// longest prefix among the networks that contain it, whatever other
    /// networks a trunk lists).
    pub fn trunk_for_source(&self, ip: IpAddr) -> Option<&TrunkEntry> {
        let ip = canonical_ip(ip);
        self.trunks
            .iter()
            .filter_map(|e| {
                e.nets
                    .iter()
                    .filter(|n| n.contains(&ip))
                    .map(|n| n.prefix_len())
                    .max()
                    .map(|len| (len, e))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, e)| e)
    }

    /// Every trunk, most specific network first.
    pub fn trunks(&self) -> impl Iterator<Item = &TrunkEntry> {
        self.trunks.iter()
    }

    pub fn trunk(&self, name: &str) -> Option<&TrunkEntry> {
        self.trunks.iter().find(|e| e.trunk.name == name)
    }

    pub fn number(&self, e164: &str) -> Option<&Number> {
        self.numbers.lookup(e164)
    }

    /// Whether `caller` is blocked for `number` of `account`.
    pub fn is_blocked(&self, account: &str, number_pattern: &str, caller: &str) -> bool {
        if !self.blocked.has_account(account) {
            return false;
        }
        let number = Pattern::parse(number_pattern).map(|p| p.to_string());
        self.blocked
            .is_blocked(account, number.as_deref().unwrap_or(number_pattern), caller)
    }

    pub fn user(&self, username: &str) -> Option<&SipUser> {
        self.users.get(username)
    }

    pub fn number_count(&self) -> usize {
        self.numbers.len()
    }

    /// Takes the deny set's entries still in force at `now_ms`; rows that
    /// do not parse are skipped and reported.
    pub fn set_denied(&mut self, rows: Vec<DeniedSource>, now_ms: i64) -> Vec<String> {
        let mut problems = Vec::new();
        self.denied = rows
            .into_iter()
            .filter(|d| d.in_force(now_ms))
            .filter_map(
                |d| match api::v1::denied_sources::parse_network(&d.network) {
                    Ok(net) => Some(DeniedNet {
                        net,
                        expires_at_ms: d.expires_at,
                    }),
                    Err(e) => {
                        problems.push(format!("denied source {}: {e}", d.id));
                        None
                    }
                },
            )
            .collect();
        problems
    }

    /// The operator's denied networks.
    pub fn denied(&self) -> &[DeniedNet] {
        &self.denied
    }
}

pub use crate::sip::transport::canonical_ip;

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::model::RouteKind;

    fn number(p: &str, route: RouteKind) -> Number {
        Number {
            pattern: p.into(),
            account_id: "acc".into(),
            route,
            target: None,
            dialect: None,
            params: None,
            trunk: None,
            max_calls: None,
            fallback: None,
            voice_webhook: None,
            sms_webhook: None,
            status_webhook: None,
            webhook_format: Default::default(),
            media_security: Default::default(),
        }
    }

    #[test]
    fn e164_normalisation() {
        assert_eq!(
            normalize_e164("+1 (555) 000-1234").as_deref(),
            Some("+15550001234")
        );
        assert_eq!(normalize_e164("0044207").as_deref(), Some("+44207"));
        assert_eq!(
            normalize_e164("15550001234").as_deref(),
            Some("+15550001234")
        );
        assert_eq!(normalize_e164("alice"), None);
        assert_eq!(normalize_e164(""), None);
    }

    #[test]
    fn most_specific_number_wins() {
        let (t, problems) = RoutingTable::build(
            vec![],
            vec![
                number("+1555000*", RouteKind::Echo),
                number("+15550000002", RouteKind::Forward),
                number("+1*", RouteKind::Stream),
                number("*", RouteKind::Stream),
                number("bogus", RouteKind::Echo),
            ],
            vec![],
            vec![],
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(t.number("+15550000002").unwrap().route, RouteKind::Forward);
        assert_eq!(t.number("+15550000003").unwrap().route, RouteKind::Echo);
        assert_eq!(t.number("+15551111111").unwrap().pattern, "+1*");
        assert_eq!(t.number("+44123").unwrap().pattern, "*");
    }

    #[test]
    fn the_most_specific_network_wins_across_trunks() {
        let trunk = |name: &str, cidrs: &[&str]| Trunk {
            name: name.into(),
            source_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            outbound_address: None,
            transport: "udp".into(),
            username: None,
            password: None,
            max_calls: None,
            transfer: None,
            account_id: None,
            requests_per_sec: None,
            tls: Default::default(),
            media_security: Default::default(),
            srtp_cleartext_keying: false,
        };
        // "wide" also lists an IPv6 /128, which must not make its IPv4 /8
        // beat another trunk's /32.
        let (t, _) = RoutingTable::build(
            vec![
                trunk("wide", &["127.0.0.0/8", "::1/128"]),
                trunk("exact", &["127.0.0.1/32"]),
            ],
            vec![],
            vec![],
            vec![],
        );
        let name = |ip: &str| {
            t.trunk_for_source(ip.parse().unwrap())
                .map(|e| e.trunk.name.clone())
        };
        assert_eq!(name("127.0.0.1").as_deref(), Some("exact"));
        assert_eq!(name("127.0.0.2").as_deref(), Some("wide"));
        assert_eq!(name("::1").as_deref(), Some("wide"));
        assert_eq!(name("192.0.2.1"), None);
    }

    #[test]
    fn trunks_by_source_and_blocking() {
        let trunk = Trunk {
            name: "local".into(),
            source_cidrs: vec!["127.0.0.0/8".into(), "::1".into(), "nonsense".into()],
            outbound_address: None,
            transport: "udp".into(),
            username: None,
            password: None,
            max_calls: None,
            transfer: None,
            account_id: None,
            requests_per_sec: None,
            tls: Default::default(),
            media_security: Default::default(),
            srtp_cleartext_keying: false,
        };
        let (t, problems) = RoutingTable::build(
            vec![trunk],
            vec![],
            vec![
                BlockedNumber {
                    id: "b1".into(),
                    account_id: "acc".into(),
                    number_pattern: None,
                    caller_pattern: "+1900*".into(),
                },
                BlockedNumber {
                    id: "b2".into(),
                    account_id: "acc".into(),
                    number_pattern: Some("+15550001".into()),
                    caller_pattern: "+15551234567".into(),
                },
            ],
            vec![],
        );
        assert_eq!(problems.len(), 1);
        assert!(t.trunk_for_source("127.0.0.5".parse().unwrap()).is_some());
        assert!(
            t.trunk_for_source("::ffff:127.0.0.1".parse().unwrap())
                .is_some()
        );
        assert!(t.trunk_for_source("::1".parse().unwrap()).is_some());
        assert!(t.trunk_for_source("10.0.0.1".parse().unwrap()).is_none());
        assert!(t.is_blocked("acc", "+1555*", "19005550000"));
        assert!(t.is_blocked("acc", "+15550001", "+1 555 123 4567"));
        assert!(!t.is_blocked("acc", "+15550002", "+15551234567"));
        assert!(!t.is_blocked("other", "+15550001", "+19005550000"));
    }
}
