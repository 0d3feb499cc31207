//! Transport-facing types shared by the sans-IO core and the socket edges
//! (RFC 3261 §18). TLS is one more [`TransportKind`].

use bytes::Bytes;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
