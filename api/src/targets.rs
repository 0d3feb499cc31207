//! Where tenants may point the gateway: webhooks, AI streams and forward
//! targets are refused at loopback, private, link-local, cloud-metadata and
//! other non-public addresses unless the operator lists the network in
//! `api.allowed_target_networks`. Checked when a target is written (an IP
//! literal, `localhost`) and again when the gateway connects (what a name
//! resolved to), so a name that later resolves inward is refused too.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// Networks outside the public Internet, and why each is refused.
const REFUSED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    // IPv4-compatible (deprecated) and NAT64 forms reach IPv4 hosts.
    ("::/96", "IPv4-compatible"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "NAT64"),
    ("fc00::/7", "private (unique local, cloud metadata)"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// The operator's exceptions to the refused networks.
#[derive(Clone, Debug, Default)]
pub struct TargetPolicy {
    allowed: Vec<IpNet>,
}

/// Why a target was refused, for the error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{addr} is a {kind} address; the operator has not allowed it (api.allowed_target_networks)"
)]
pub struct Refused {
    pub addr: IpAddr,
    pub kind: &'static str,
}

impl TargetPolicy {
    /// `allowed`: networks tenants may target although refused by default.
    pub fn new(allowed: Vec<IpNet>) -> TargetPolicy {
        TargetPolicy { allowed }
    }

    /// Every address allowed (tools and tests without a daemon config).
    pub fn allow_all() -> TargetPolicy {
        // The default networks are 0.0.0.0/0 and ::/0.
        TargetPolicy::new(vec![
            IpNet::V4(Default::default()),
            IpNet::V6(Default::default()),
        ])
    }

    /// Whether the gateway may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        for (net, kind) in REFUSED {
            if net.parse::<IpNet>().is_ok_and(|n| n.contains(&ip)) {
                return Err(Refused { addr: ip, kind });
            }
        }
        Ok(())
    }

    /// Checks a host as written in a URL or URI: an IP literal (IPv6 in
    /// brackets or not) against the networks, `localhost` and its
    /// subdomains as loopback; other names pass here and are checked when
    /// they resolve.
    pub fn check_host(&self, host: &str) -> Result<(), Refused> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return self.check_ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
        Ok(())
    }

    /// Checks the host of an absolute `http(s)://` or `ws(s)://` URL (a
    /// URL that does not parse is left to the caller's own check).
    pub fn check_url(&self, url: &str) -> Result<(), Refused> {
        // The parser writes IPv4 hosts in their dotted form (`2130706433`
        // and `0x7f.1` are 127.0.0.1) and IPv6 ones in brackets.
        match reqwest::Url::parse(url) {
            Ok(u) => u.host_str().map_or(Ok(()), |h| self.check_host(h)),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inward_addresses_are_refused_and_public_ones_pass() {
        let p = TargetPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.5.5.5",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "224.0.0.1",
            "198.18.0.1",
        ] {
            assert!(p.check_ip(bad.parse().unwrap()).is_err(), "{bad}");
        }
        for good in ["8.8.8.8", "203.0.113.9", "172.32.0.1", "2001:4860::8888"] {
            assert!(p.check_ip(good.parse().unwrap()).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_operator_allows_networks() {
        let p = TargetPolicy::new(vec!["10.20.0.0/16".parse().unwrap()]);
        assert!(p.check_ip("10.20.3.4".parse().unwrap()).is_ok());
        assert!(p.check_ip("10.21.3.4".parse().unwrap()).is_err());
        let all = TargetPolicy::allow_all();
        assert!(all.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(all.check_ip("::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn urls_and_hosts() {
        let p = TargetPolicy::default();
        for bad in [
            "http://127.0.0.1:8080/hook",
            "https://[::1]/x",
            "ws://localhost:9/stream",
            "wss://api.LOCALHOST./x",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let e = p.check_url(bad).expect_err(bad);
            assert!(e.to_string().contains("allowed_target_networks"), "{e}");
        }
        for good in ["https://hooks.example.com/x", "wss://ai.example/stream"] {
            assert!(p.check_url(good).is_ok(), "{good}");
        }
        assert!(p.check_host("[::1]").is_err());
        assert!(p.check_host("10.0.0.1").is_err());
        assert!(p.check_host("carrier.example").is_ok());
    }
}
