//! Transport-facing types shared by the sans-IO core and the socket edges
//! (RFC 3261 §18). TLS is one more [`TransportKind`].

use bytes::Bytes;
use std::net::SocketAddr;

/// A SIP transport; in configuration files spelt `udp`, `tcp`, `tls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
}

impl TransportKind {
    /// Reliable transports get no retransmissions (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, TransportKind::Udp)
    }

    /// Token used in Via and in `;transport=`.
    pub fn via_token(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
        }
    }

    /// The transport a [`TransportKind::label`] names, in any case.
    pub fn from_label(s: &str) -> Option<TransportKind> {
        [TransportKind::Udp, TransportKind::Tcp, TransportKind::Tls]
            .into_iter()
            .find(|t| t.label().eq_ignore_ascii_case(s))
    }
}

/// Identifies one stream connection held by the transport edge.
pub type ConnId = u64;

/// Where a message came from or goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub transport: TransportKind,
    /// The listening address the message arrived on / leaves from.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// For stream transports: the connection to use, when one exists.
    pub conn: Option<ConnId>,
}

/// Bytes the edge must send.
#[derive(Clone, Debug)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: Bytes,
}

/// RFC 3261 §18.1.1: a request over UDP larger than this (path MTU 1500
/// minus 200) should go over a congestion-controlled transport.
pub const UDP_MTU_LIMIT: usize = 1300;

/// IPv4-mapped IPv6 addresses are the IPv4 hosts they map (a dual-stack
/// socket reports both forms for one peer).
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// What per-source limits count by: an IPv4 host, or an IPv6 /64 (one host
/// may hold a whole /64 and rotate through it).
pub fn source_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match canonical_ip(ip) {
        std::net::IpAddr::V6(v6) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
        v4 => v4,
    }
}
