//! Which interfaces carry media: read from the kernel's IPv4 routing
//! table (`/proc/net/route`).

use std::net::IpAddr;

/// The interfaces whose IPv4 routes cover `bind_ip` (every routed one for
/// 0.0.0.0), loopback excepted, so a loopback-only setup never touches a
/// NIC. Sorted, without duplicates; none for an IPv6 address.
pub fn media_interfaces(bind_ip: IpAddr) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    covering(&table, bind_ip)
}

/// [`media_interfaces`] over `table`, the text of `/proc/net/route`
/// (destination and mask in the kernel's hex, in network byte order).
fn covering(table: &str, bind_ip: IpAddr) -> Vec<String> {
    let ip = match bind_ip {
        IpAddr::V4(ip) => u32::from(ip),
        IpAddr::V6(_) => return Vec::new(),
    };
    let hex = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
    };
    let mut out: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dest, mask) = (hex(f.get(1)?)?, hex(f.get(7)?)?);
            let covers = ip == 0 || (ip & mask == dest && mask != 0);
            (covers && f[0] != "lo").then(|| f[0].to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    const TABLE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t0012A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0
";

    #[test]
    #[cfg(target_endian = "little")]
    fn the_interfaces_whose_routes_cover_the_media_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(covering(TABLE, ip("10.0.0.5")), ["eth0"]);
        assert_eq!(covering(TABLE, ip("192.168.18.9")), ["eth1"]);
        assert_eq!(covering(TABLE, ip("0.0.0.0")), ["eth0", "eth1"]);
        // Loopback stays in userspace; the default route (mask 0) covers
        // only the unspecified address.
        assert!(covering(TABLE, ip("127.0.0.1")).is_empty());
        assert!(covering(TABLE, ip("203.0.113.1")).is_empty());
        assert!(covering(TABLE, ip("::1")).is_empty());
    }
}
