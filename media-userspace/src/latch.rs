//! Symmetric RTP (RFC 4961) with latching: media is sent to where the
//! peer's packets really come from, which behind NAT differs from the SDP
//! address. Sans-IO.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the latched source must be silent before another source may
/// take over with the same SSRC.
pub const RELATCH_SILENCE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchDecision {
    /// From the latched source.
    Accept,
    /// A new source was latched (first packet, new SSRC, or takeover).
    Latched,
    /// From somewhere else while the latched source is live: dropped.
    Reject,
}

#[derive(Debug, Clone)]
pub struct Latch {
    /// Where to send: the SDP address until something is latched.
    target: Option<SocketAddr>,
    latched: bool,
    ssrc: Option<u32>,
    last_rx: Option<Instant>,
}

impl Latch {
    pub fn new(sdp_remote: Option<SocketAddr>) -> Latch {
        Latch {
            target: sdp_remote,
            latched: false,
            ssrc: None,
            last_rx: None,
        }
    }

    /// Decides about a packet from `from` carrying `ssrc`.
    pub fn on_packet(&mut self, now: Instant, from: SocketAddr, ssrc: u32) -> LatchDecision {
        let decision = if !self.latched {
            LatchDecision::Latched
        } else if Some(from) == self.target {
            LatchDecision::Accept
        } else if self.ssrc.is_some_and(|s| s != ssrc)
            || self
                .last_rx
                .is_none_or(|t| now.duration_since(t) >= RELATCH_SILENCE)
        {
            LatchDecision::Latched
        } else {
            return LatchDecision::Reject;
        };
        if decision == LatchDecision::Latched {
            self.target = Some(from);
            self.latched = true;
        }
        self.ssrc = Some(ssrc);
        self.last_rx = Some(now);
        decision
    }

    /// Starts latched to `peer`, live at `at`: a relay taken over from a
    /// previous run, whose kernel rule already sends there. The SSRC is
    /// learnt from the peer's next packet; until then another source
    /// takes over only after [`RELATCH_SILENCE`].
    pub fn adopt(&mut self, peer: SocketAddr, at: Instant) {
        self.target = Some(peer);
        self.latched = true;
        self.ssrc = None;
        self.last_rx = Some(at);
    }

    /// A re-INVITE changed the SDP address: latch afresh.
    pub fn reset(&mut self, sdp_remote: Option<SocketAddr>) {
        if sdp_remote.is_some() && sdp_remote != self.target {
            self.target = sdp_remote;
            self.latched = false;
        }
    }

    /// The peer's packets reached us another way (the kernel fast path
    /// forwarded them) up to `at`: the source is live, not silent.
    pub fn note_rx(&mut self, at: Instant) {
        if self.latched && self.last_rx.is_none_or(|t| t < at) {
            self.last_rx = Some(at);
        }
    }

    pub fn target(&self) -> Option<SocketAddr> {
        self.target
    }

    pub fn is_latched(&self) -> bool {
        self.latched
    }

    pub fn last_rx(&self) -> Option<Instant> {
        self.last_rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latches_first_source_and_rejects_others() {
        let t0 = Instant::now();
        let sdp: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let nat: SocketAddr = "198.51.100.7:61000".parse().unwrap();
        let evil: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let mut l = Latch::new(Some(sdp));
        assert_eq!(l.target(), Some(sdp));
        assert_eq!(l.on_packet(t0, nat, 1), LatchDecision::Latched);
        assert_eq!(l.target(), Some(nat));
        assert_eq!(
            l.on_packet(t0 + Duration::from_millis(20), nat, 1),
            LatchDecision::Accept
        );
        // Same SSRC from elsewhere while the source is live: injection.
        assert_eq!(
            l.on_packet(t0 + Duration::from_millis(30), evil, 1),
            LatchDecision::Reject
        );
        assert_eq!(l.target(), Some(nat));
        // A new SSRC (new stream after a re-INVITE or failover) takes over.
        assert_eq!(
            l.on_packet(t0 + Duration::from_millis(40), evil, 2),
            LatchDecision::Latched
        );
        assert_eq!(l.target(), Some(evil));
    }

    #[test]
    fn adopted_latch_keeps_its_peer_until_it_falls_silent() {
        let t0 = Instant::now();
        let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let other: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let mut l = Latch::new(None);
        l.adopt(peer, t0);
        assert!(l.is_latched());
        assert_eq!(l.target(), Some(peer));
        // No SSRC known yet: another source is not a new stream.
        assert_eq!(
            l.on_packet(t0 + Duration::from_millis(100), other, 9),
            LatchDecision::Reject
        );
        assert_eq!(
            l.on_packet(t0 + Duration::from_millis(120), peer, 7),
            LatchDecision::Accept
        );
        // Now the SSRC is known: a new one takes over as usual.
        assert_eq!(
            l.on_packet(t0 + Duration::from_millis(140), other, 9),
            LatchDecision::Latched
        );
        let mut l = Latch::new(None);
        l.adopt(peer, t0);
        assert_eq!(
            l.on_packet(t0 + RELATCH_SILENCE, other, 9),
            LatchDecision::Latched
        );
    }

    #[test]
    fn silent_source_can_be_replaced() {
        let t0 = Instant::now();
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:4002".parse().unwrap();
        let mut l = Latch::new(None);
        l.on_packet(t0, a, 7);
        assert_eq!(
            l.on_packet(t0 + Duration::from_millis(100), b, 7),
            LatchDecision::Reject
        );
        assert_eq!(
            l.on_packet(t0 + Duration::from_millis(700), b, 7),
            LatchDecision::Latched
        );
        l.reset(Some(a));
        assert!(!l.is_latched());
    }
}
