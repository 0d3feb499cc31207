//! Symmetric RTP (RFC 4961) with latching: media is sent to where the
//! peer's packets really come from, which behind NAT differs from the SDP
//! address. Sans-IO.
//!
//! A media port is open to the whole network, so the latch moves only on
//! evidence a spoofer cannot give cheaply:
//! - a packet from the address the SDP signalled latches at once (the
//!   signalling named it; a spoofer using it only sends our audio there);
//! - any other source must send [`LATCH_PACKETS`] consecutive in-sequence
//!   packets (same SSRC, each sequence number one more than the last), and
//!   may do so only while nothing is latched yet (the start) or once the
//!   latched source has been silent for [`RELATCH_SILENCE`];
//! - a new SSRC alone never moves it: from the latched source it is that
//!   peer's new stream, from anywhere else it is just another sender.
//!
//! Packets from a source that is not latched are rejected (not played, not
//! relayed), also while it builds its run, so a spoofer gets neither the
//! call's audio nor a voice in it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the latched source must be silent before another source may
/// take over.
pub const RELATCH_SILENCE: Duration = Duration::from_millis(500);

/// Consecutive in-sequence packets a source other than the signalled one
/// sends before it is latched (80 ms of 20 ms audio).
pub const LATCH_PACKETS: u8 = 4;

/// Sources tracked at once while they build their runs: a spoofer's
/// packets interleaved with the real peer's do not break the peer's run.
const CANDIDATES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchDecision {
    /// From the latched source.
    Accept,
    /// A new source was latched (the signalled address, or a source that
    /// earned it with a run of in-sequence packets).
    Latched,
    /// From somewhere else: dropped.
    Reject,
}

/// A source building its run of in-sequence packets.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    from: SocketAddr,
    ssrc: u32,
    seq: u16,
    run: u8,
    seen: Instant,
}

#[derive(Debug, Clone)]
pub struct Latch {
    /// The address the SDP signalled.
    signalled: Option<SocketAddr>,
    /// Where to send: the SDP address until something is latched.
    target: Option<SocketAddr>,
    latched: bool,
    last_rx: Option<Instant>,
    /// The latched peer's SSRC (its latest stream): what its RTCP names.
    ssrc: Option<u32>,
    /// Allocated only once a source other than the peer shows up.
    candidates: Option<Box<[Option<Candidate>; CANDIDATES]>>,
}

impl Latch {
    pub fn new(sdp_remote: Option<SocketAddr>) -> Latch {
        Latch {
            signalled: sdp_remote,
            target: sdp_remote,
            latched: false,
            last_rx: None,
            ssrc: None,
            candidates: None,
        }
    }

    /// Decides about an RTP packet from `from` carrying `ssrc` and
    /// sequence number `seq`.
    pub fn on_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ssrc: u32,
        seq: u16,
    ) -> LatchDecision {
        if self.latched && Some(from) == self.target {
            self.last_rx = Some(now);
            self.ssrc = Some(ssrc);
            return LatchDecision::Accept;
        }
        if Some(from) == self.signalled {
            return self.latch_to(now, from, ssrc);
        }
        let open = !self.latched
            || self
                .last_rx
                .is_none_or(|t| now.saturating_duration_since(t) >= RELATCH_SILENCE);
        if !open {
            // A run cannot start while the peer is live, so a spoofer
            // cannot have one ready for the moment the peer pauses.
            return LatchDecision::Reject;
        }
        if self.extend_run(now, from, ssrc, seq) >= LATCH_PACKETS {
            return self.latch_to(now, from, ssrc);
        }
        LatchDecision::Reject
    }

    fn latch_to(&mut self, now: Instant, from: SocketAddr, ssrc: u32) -> LatchDecision {
        self.target = Some(from);
        self.latched = true;
        self.last_rx = Some(now);
        self.ssrc = Some(ssrc);
        self.candidates = None;
        LatchDecision::Latched
    }

    /// Adds the packet to its source's run; the run's length.
    fn extend_run(&mut self, now: Instant, from: SocketAddr, ssrc: u32, seq: u16) -> u8 {
        let candidates = self
            .candidates
            .get_or_insert_with(|| Box::new([None; CANDIDATES]));
        let slot = candidates
            .iter()
            .position(|c| c.is_some_and(|c| c.from == from))
            .or_else(|| candidates.iter().position(Option::is_none))
            .unwrap_or_else(|| {
                // Replace the source heard from longest ago.
                (0..CANDIDATES)
                    .min_by_key(|&i| candidates[i].map(|c| c.seen))
                    .unwrap_or(0)
            });
        let run = match candidates[slot] {
            Some(c) if c.from == from && c.ssrc == ssrc && seq == c.seq.wrapping_add(1) => {
                c.run.saturating_add(1)
            }
            _ => 1,
        };
        candidates[slot] = Some(Candidate {
            from,
            ssrc,
            seq,
            run,
            seen: now,
        });
        run
    }

    /// Starts latched to `peer`, live at `at`: a relay taken over from a
    /// previous run, whose kernel rule already sends there. Another source
    /// takes over only as from any latched peer: after [`RELATCH_SILENCE`]
    /// and a run of in-sequence packets.
    pub fn adopt(&mut self, peer: SocketAddr, at: Instant) {
        self.target = Some(peer);
        self.latched = true;
        self.last_rx = Some(at);
        self.ssrc = None;
        self.candidates = None;
    }

    /// A re-INVITE changed the SDP address: latch afresh.
    pub fn reset(&mut self, sdp_remote: Option<SocketAddr>) {
        if sdp_remote.is_some() && sdp_remote != self.signalled {
            self.signalled = sdp_remote;
            if sdp_remote != self.target {
                self.target = sdp_remote;
                self.latched = false;
                self.candidates = None;
            }
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

    /// Whether `from` is the latched peer itself.
    pub fn is_peer(&self, from: SocketAddr) -> bool {
        self.latched && Some(from) == self.target
    }

    /// Whether RTCP packet `pkt` from `from` is the latched peer's: from
    /// its RTP address (RFC 5761 multiplexing), from the next port (RFC
    /// 3550 §11), or from another port of its host (NAT) when its sender
    /// SSRC is the peer's own, which an off-path sender does not know. RTCP
    /// carries no sequence to earn a latch with.
    pub fn is_peer_rtcp(&self, from: SocketAddr, pkt: &[u8]) -> bool {
        let Some(t) = self.target.filter(|_| self.latched) else {
            return false;
        };
        let sender_ssrc = crate::rtp::rtcp_sender_ssrc(pkt);
        from == t
            || (from.ip() == t.ip() && t.port().checked_add(1) == Some(from.port()))
            || (from.ip() == t.ip() && sender_ssrc.is_some() && sender_ssrc == self.ssrc)
    }

    pub fn last_rx(&self) -> Option<Instant> {
        self.last_rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "192.0.2.1:4000";
    const NAT: &str = "198.51.100.7:61000";
    const EVIL: &str = "203.0.113.9:5000";

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `count` in-sequence packets from `from`, 20 ms apart from `start`;
    /// the decisions.
    fn run(
        l: &mut Latch,
        t0: Instant,
        start: u64,
        from: &str,
        ssrc: u32,
        seq: u16,
        count: u16,
    ) -> Vec<LatchDecision> {
        (0..count)
            .map(|i| l.on_packet(t0 + ms(start + 20 * u64::from(i)), a(from), ssrc, seq + i))
            .collect()
    }

    #[test]
    fn the_signalled_address_latches_at_once() {
        let t0 = Instant::now();
        let mut l = Latch::new(Some(a(SDP)));
        assert_eq!(l.on_packet(t0, a(SDP), 1, 10), LatchDecision::Latched);
        assert_eq!(
            l.on_packet(t0 + ms(20), a(SDP), 1, 11),
            LatchDecision::Accept
        );
        // A new SSRC from the latched peer is its new stream.
        assert_eq!(
            l.on_packet(t0 + ms(40), a(SDP), 9, 500),
            LatchDecision::Accept
        );
    }

    #[test]
    fn behind_nat_the_peer_latches_after_a_run_of_in_sequence_packets() {
        let t0 = Instant::now();
        let mut l = Latch::new(Some(a(SDP)));
        let d = run(&mut l, t0, 0, NAT, 1, 100, LATCH_PACKETS.into());
        assert!(
            d[..d.len() - 1].iter().all(|d| *d == LatchDecision::Reject),
            "{d:?}"
        );
        assert_eq!(d.last(), Some(&LatchDecision::Latched));
        assert_eq!(l.target(), Some(a(NAT)));
        // A gap in the sequence restarts the run.
        let mut l = Latch::new(Some(a(SDP)));
        for (i, seq) in [1u16, 2, 4, 5, 6].into_iter().enumerate() {
            assert_eq!(
                l.on_packet(t0 + ms(20 * i as u64), a(NAT), 1, seq),
                LatchDecision::Reject
            );
        }
        assert_eq!(
            l.on_packet(t0 + ms(100), a(NAT), 1, 7),
            LatchDecision::Latched
        );
    }

    #[test]
    fn a_spoofer_never_takes_a_live_peer_over_not_even_with_a_new_ssrc() {
        let t0 = Instant::now();
        let mut l = Latch::new(Some(a(SDP)));
        l.on_packet(t0, a(SDP), 1, 1);
        for i in 1..200u16 {
            let t = u64::from(i) * 20;
            assert_eq!(
                l.on_packet(t0 + ms(t), a(SDP), 1, 1 + i),
                LatchDecision::Accept
            );
            // Interleaved: a perfect in-sequence stream, new SSRC, from
            // elsewhere.
            assert_eq!(
                l.on_packet(t0 + ms(t + 5), a(EVIL), 0xbad, 1000 + i),
                LatchDecision::Reject
            );
        }
        assert_eq!(l.target(), Some(a(SDP)));
    }

    #[test]
    fn another_source_takes_over_only_after_the_peer_fell_silent() {
        let t0 = Instant::now();
        let mut l = Latch::new(Some(a(SDP)));
        l.on_packet(t0, a(SDP), 1, 1);
        // Silent for less than RELATCH_SILENCE: refused however long the run.
        let d = run(&mut l, t0, 100, NAT, 2, 50, 10);
        assert!(d.iter().all(|d| *d == LatchDecision::Reject), "{d:?}");
        // Silent long enough (the run had to start after the silence).
        let start = 100 + 200 + RELATCH_SILENCE.as_millis() as u64;
        let d = run(&mut l, t0, start, NAT, 2, 70, LATCH_PACKETS.into());
        assert_eq!(d.last(), Some(&LatchDecision::Latched), "{d:?}");
        assert_eq!(l.target(), Some(a(NAT)));
        // The signalled address still latches back at once.
        assert_eq!(
            l.on_packet(t0 + ms(5000), a(SDP), 1, 2),
            LatchDecision::Latched
        );
    }

    #[test]
    fn interleaved_spoofing_does_not_break_the_peers_run() {
        let t0 = Instant::now();
        let mut l = Latch::new(Some(a(SDP)));
        let mut last = LatchDecision::Reject;
        for i in 0..u16::from(LATCH_PACKETS) {
            let t = u64::from(i) * 20;
            l.on_packet(t0 + ms(t + 1), a(EVIL), 7, 999);
            last = l.on_packet(t0 + ms(t), a(NAT), 1, 100 + i);
        }
        assert_eq!(last, LatchDecision::Latched);
        assert_eq!(l.target(), Some(a(NAT)));
    }

    #[test]
    fn adopted_latch_keeps_its_peer_until_it_falls_silent() {
        let t0 = Instant::now();
        let mut l = Latch::new(None);
        l.adopt(a(SDP), t0);
        assert!(l.is_latched() && l.is_peer(a(SDP)));
        let d = run(&mut l, t0, 100, EVIL, 9, 1, 10);
        assert!(d.iter().all(|d| *d == LatchDecision::Reject));
        assert_eq!(
            l.on_packet(t0 + ms(320), a(SDP), 7, 1),
            LatchDecision::Accept
        );
        let mut l = Latch::new(None);
        l.adopt(a(SDP), t0);
        let start = RELATCH_SILENCE.as_millis() as u64;
        let d = run(&mut l, t0, start, EVIL, 9, 1, LATCH_PACKETS.into());
        assert_eq!(d.last(), Some(&LatchDecision::Latched));
    }

    #[test]
    fn a_reinvite_to_a_new_address_latches_afresh() {
        let t0 = Instant::now();
        let mut l = Latch::new(Some(a(SDP)));
        l.on_packet(t0, a(SDP), 1, 1);
        l.reset(Some(a(SDP)));
        assert!(l.is_latched(), "same address: nothing changes");
        l.reset(Some(a(NAT)));
        assert!(!l.is_latched());
        assert_eq!(l.target(), Some(a(NAT)));
        assert_eq!(
            l.on_packet(t0 + ms(20), a(NAT), 3, 1),
            LatchDecision::Latched
        );
        assert!(!l.is_peer(a("198.51.100.7:61001")));
    }

    /// A receiver report naming `ssrc` as its sender.
    fn rr(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p
    }

    #[test]
    fn rtcp_is_taken_from_the_latched_peer_only() {
        let t0 = Instant::now();
        let mut l = Latch::new(Some(a(SDP)));
        assert!(
            !l.is_peer_rtcp(a("192.0.2.1:4001"), &rr(1)),
            "nothing latched"
        );
        l.on_packet(t0, a(SDP), 0x1234, 1);
        assert!(l.is_peer_rtcp(a(SDP), &[0x80, 201, 0, 0]), "multiplexed");
        assert!(
            l.is_peer_rtcp(a("192.0.2.1:4001"), &[0x80, 201, 0, 0]),
            "the next port"
        );
        // Another port of the host: only naming the peer's SSRC.
        assert!(l.is_peer_rtcp(a("192.0.2.1:7777"), &rr(0x1234)));
        assert!(!l.is_peer_rtcp(a("192.0.2.1:7777"), &rr(0xbad)));
        assert!(!l.is_peer_rtcp(a("192.0.2.1:7777"), &[0x80, 201, 0, 0]));
        assert!(
            !l.is_peer_rtcp(a("192.0.2.9:4001"), &rr(0x1234)),
            "another host"
        );
    }
}
