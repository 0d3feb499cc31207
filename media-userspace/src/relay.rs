//! The userspace relay for bridged legs (forwarded and transferred calls):
//! RTP and RTCP that arrive on one side's sockets leave from the other
//! side's sockets toward that side's peer. Sans-IO: the worker feeds
//! datagrams and sends what this returns.
//!
//! Each side latches its peer (symmetric RTP, RFC 4961) and is the place
//! the XDP fast path takes over once both sides are latched: a packet for
//! side `s`'s local port goes to the other side's peer from the other
//! side's local port, which is exactly one kernel rule per direction.
//! Payloads pass untouched when both sides use the same codec (only the
//! payload type is mapped when they numbered it or telephone-event
//! differently). When a re-INVITE left the sides on different codecs, the
//! audio is transcoded here ([`Transcoder`]), and such a pair never moves
//! to the kernel.

use crate::control::LegMedia;
use crate::echo::LegCounters;
use crate::latch::{Latch, LatchDecision};
use crate::rtp::{self, RtpHeader};
use crate::transcode::Transcoder;
use std::net::SocketAddr;
use std::time::Instant;

/// One of the two bridged legs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

#[derive(Debug)]
struct RelaySide {
    media: LegMedia,
    latch: Latch,
    /// Where the peer's RTCP comes from, once it has.
    rtcp_peer: Option<SocketAddr>,
    counters: LegCounters,
    /// This side's audio into the other side's codec, when they differ.
    transcoder: Option<Transcoder>,
}

impl RelaySide {
    fn new(media: &LegMedia) -> RelaySide {
        RelaySide {
            media: *media,
            latch: Latch::new(media.remote),
            rtcp_peer: None,
            counters: LegCounters::default(),
            transcoder: None,
        }
    }

    fn rtcp_target(&self) -> Option<SocketAddr> {
        self.rtcp_peer.or_else(|| {
            let mut a = self.latch.target()?;
            a.set_port(a.port().checked_add(1)?);
            Some(a)
        })
    }
}

/// Counters of the relay beyond the per-side ones.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayCounters {
    /// Packets dropped because the other side has no address yet or is on
    /// hold toward us.
    pub no_target: u64,
    /// Telephone-events dropped because the other side did not negotiate
    /// telephone-event.
    pub dropped_events: u64,
    /// Audio packets converted between the sides' codecs.
    pub transcoded: u64,
    /// Audio packets dropped because they could not be converted.
    pub transcode_failures: u64,
}

#[derive(Debug)]
pub struct RelayPair {
    a: RelaySide,
    b: RelaySide,
    pub counters: RelayCounters,
}

impl RelayPair {
    pub fn new(a: &LegMedia, b: &LegMedia) -> RelayPair {
        let mut pair = RelayPair {
            a: RelaySide::new(a),
            b: RelaySide::new(b),
            counters: RelayCounters::default(),
        };
        pair.set_transcoders();
        pair
    }

    /// Transcoders for both directions exactly when the codecs differ.
    fn set_transcoders(&mut self) {
        let (a, b) = (self.a.media.codec, self.b.media.codec);
        let same = a == b;
        let keep =
            |t: &Option<Transcoder>, from, to| t.as_ref().is_some_and(|t| t.codecs() == (from, to));
        if same {
            self.a.transcoder = None;
            self.b.transcoder = None;
            return;
        }
        if !keep(&self.a.transcoder, a, b) {
            self.a.transcoder = Some(Transcoder::new(a, b));
        }
        if !keep(&self.b.transcoder, b, a) {
            self.b.transcoder = Some(Transcoder::new(b, a));
        }
    }

    fn side(&self, s: Side) -> &RelaySide {
        match s {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn side_mut(&mut self, s: Side) -> &mut RelaySide {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// A re-INVITE on one side changed its stream (new address, hold).
    pub fn update(&mut self, s: Side, media: &LegMedia) {
        let side = self.side_mut(s);
        side.latch.reset(media.remote);
        side.media = *media;
        self.set_transcoders();
    }

    pub fn counters(&self, s: Side) -> &LegCounters {
        &self.side(s).counters
    }

    /// What side `s` negotiated.
    pub fn media(&self, s: Side) -> &LegMedia {
        &self.side(s).media
    }

    pub fn last_rx(&self, s: Side) -> Option<Instant> {
        self.side(s).latch.last_rx()
    }

    /// The latest packet from either side.
    pub fn last_rx_any(&self) -> Option<Instant> {
        self.a.latch.last_rx().max(self.b.latch.last_rx())
    }

    /// The peer of side `s` once latched: what an offload rule sends to.
    pub fn latched_peer(&self, s: Side) -> Option<SocketAddr> {
        let side = self.side(s);
        side.latch
            .is_latched()
            .then(|| side.latch.target())
            .flatten()
    }

    /// What the offload decision needs ([`crate::offload::plan`]).
    pub fn offload_view(&self) -> crate::offload::PairView {
        let (a, b) = (&self.a.media, &self.b.media);
        crate::offload::PairView {
            peers: [self.latched_peer(Side::A), self.latched_peer(Side::B)],
            sending: [a.send, b.send],
            same_numbering: a.codec == b.codec
                && a.payload_type == b.payload_type
                && a.telephone_event == b.telephone_event,
            // Relayed legs are plain RTP until SRTP arrives (the security
            // issue); its keys will be reported here.
            srtp: [None, None],
        }
    }

    /// Side `s`'s peer was last heard at `at` by the kernel fast path.
    pub fn note_rx(&mut self, s: Side, at: Instant) {
        self.side_mut(s).latch.note_rx(at);
    }

    /// Starts both sides latched to `peers` (A, B), live at `at`: a relay
    /// taken over from a previous run ([`Latch::adopt`]).
    pub fn adopt(&mut self, peers: [SocketAddr; 2], at: Instant) {
        self.a.latch.adopt(peers[0], at);
        self.b.latch.adopt(peers[1], at);
    }

    /// Counts packets the kernel forwarded while the pair was offloaded:
    /// `packets`/`bytes` arrived on side `s` and left from the other side.
    pub fn add_offloaded(&mut self, s: Side, packets: u64, bytes: u64) {
        let inbound = self.side_mut(s);
        inbound.counters.rx_packets += packets;
        inbound.counters.rx_bytes += bytes;
        let out = self.side_mut(s.other());
        out.counters.tx_packets += packets;
        out.counters.tx_bytes += bytes;
    }

    /// An RTP datagram on side `s`'s socket. Returns where the other
    /// side's socket sends it; the packet is rewritten in place.
    pub fn on_rtp(
        &mut self,
        s: Side,
        now: Instant,
        from: SocketAddr,
        pkt: &mut [u8],
    ) -> Option<SocketAddr> {
        let inbound = self.side_mut(s);
        inbound.counters.rx_packets += 1;
        inbound.counters.rx_bytes += pkt.len() as u64;
        if rtp::looks_like_rtcp(pkt) {
            // RTCP multiplexed on the RTP port goes the same way, from the
            // latched peer only.
            if !inbound.latch.is_peer_rtcp(from, pkt) {
                inbound.counters.rejected_source += 1;
                return None;
            }
            return self.forward_rtcp(s, pkt.len());
        }
        let Ok(h) = RtpHeader::parse(pkt) else {
            inbound.counters.malformed += 1;
            return None;
        };
        if inbound.latch.on_packet(now, from, h.ssrc, h.sequence) == LatchDecision::Reject {
            inbound.counters.rejected_source += 1;
            return None;
        }
        let (in_pt, in_te) = (inbound.media.payload_type, inbound.media.telephone_event);
        let outbound = self.side(s.other());
        let pt = if h.payload_type == in_pt {
            outbound.media.payload_type
        } else if Some(h.payload_type) == in_te {
            let Some(te) = outbound.media.telephone_event else {
                self.counters.dropped_events += 1;
                return None;
            };
            te
        } else {
            h.payload_type
        };
        let Some(to) = outbound.latch.target().filter(|_| outbound.media.send) else {
            self.counters.no_target += 1;
            return None;
        };
        if h.payload_type == in_pt
            && let Some(t) = self.side_mut(s).transcoder.as_mut()
        {
            let payload = &mut pkt[h.payload_offset..h.payload_offset + h.payload_len];
            if !t.convert(payload) {
                self.counters.transcode_failures += 1;
                return None;
            }
            self.counters.transcoded += 1;
        }
        if pt != h.payload_type {
            pkt[1] = (pkt[1] & 0x80) | (pt & 0x7f);
        }
        let out = self.side_mut(s.other());
        out.counters.tx_packets += 1;
        out.counters.tx_bytes += pkt.len() as u64;
        Some(to)
    }

    fn forward_rtcp(&mut self, s: Side, len: usize) -> Option<SocketAddr> {
        let out = self.side_mut(s.other());
        let to = out.rtcp_target()?;
        out.counters.tx_packets += 1;
        out.counters.tx_bytes += len as u64;
        Some(to)
    }

    /// A datagram on side `s`'s RTCP socket: forwarded unchanged to the
    /// other side's RTCP peer (from the other side's RTCP socket).
    pub fn on_rtcp(&mut self, s: Side, from: SocketAddr, pkt: &[u8]) -> Option<SocketAddr> {
        let inbound = self.side_mut(s);
        inbound.counters.rx_packets += 1;
        inbound.counters.rx_bytes += pkt.len() as u64;
        if pkt.len() < 8 || pkt[0] >> 6 != 2 {
            inbound.counters.malformed += 1;
            return None;
        }
        // Only the latched peer's RTCP is taken; where it comes from is
        // where ours goes.
        if !inbound.latch.is_peer_rtcp(from, pkt) {
            inbound.counters.rejected_source += 1;
            return None;
        }
        inbound.rtcp_peer = Some(from);
        self.forward_rtcp(s, pkt.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    fn media(pt: u8, te: Option<u8>, remote: &str) -> LegMedia {
        LegMedia {
            codec: Codec::Pcmu,
            payload_type: pt,
            telephone_event: te,
            ptime_ms: 20,
            remote: Some(remote.parse().unwrap()),
            send: true,
        }
    }

    fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0u8; 12 + 160];
        rtp::write_header(&mut p, false, pt, seq, u32::from(seq) * 160, ssrc);
        p[12..].fill(0x55);
        p
    }

    const CALLER: &str = "10.0.0.1:4000";
    const CALLEE: &str = "10.0.0.2:5000";

    #[test]
    fn both_directions_forward_untouched_to_the_latched_peers() {
        let t = Instant::now();
        let mut r = RelayPair::new(&media(0, Some(101), CALLER), &media(0, Some(101), CALLEE));
        let mut p = rtp(0, 1, 7);
        let orig = p.clone();
        assert_eq!(
            r.on_rtp(Side::A, t, CALLER.parse().unwrap(), &mut p),
            Some(CALLEE.parse().unwrap())
        );
        assert_eq!(p, orig, "payload, SSRC, sequence and timestamp kept");
        // The callee answers from behind a NAT: latched there after a run
        // of in-sequence packets, none relayed before.
        let nat: SocketAddr = "192.0.2.9:6000".parse().unwrap();
        let latch_at = u16::from(crate::latch::LATCH_PACKETS);
        for seq in 1..latch_at {
            assert_eq!(r.on_rtp(Side::B, t, nat, &mut rtp(0, seq, 9)), None);
        }
        let mut q = rtp(0, latch_at, 9);
        assert_eq!(
            r.on_rtp(Side::B, t, nat, &mut q),
            Some(CALLER.parse().unwrap())
        );
        let mut p2 = rtp(0, 2, 7);
        assert_eq!(
            r.on_rtp(Side::A, t, CALLER.parse().unwrap(), &mut p2),
            Some(nat)
        );
        assert_eq!(r.latched_peer(Side::B), Some(nat));
        assert_eq!(r.counters(Side::A).rx_packets, 2);
        assert_eq!(r.counters(Side::B).tx_packets, 2);
        assert_eq!(r.counters(Side::B).rejected_source, u64::from(latch_at - 1));
    }

    #[test]
    fn payload_types_are_mapped_between_the_sides_numbering() {
        let t = Instant::now();
        let mut r = RelayPair::new(&media(0, Some(101), CALLER), &media(0, Some(96), CALLEE));
        let mut ev = rtp(101, 1, 7);
        ev[1] |= 0x80;
        r.on_rtp(Side::A, t, CALLER.parse().unwrap(), &mut ev)
            .unwrap();
        assert_eq!(ev[1], 0x80 | 96, "telephone-event renumbered, marker kept");
        // A side without telephone-event gets no events.
        let mut r = RelayPair::new(&media(0, Some(101), CALLER), &media(0, None, CALLEE));
        let mut ev = rtp(101, 1, 7);
        assert_eq!(r.on_rtp(Side::A, t, CALLER.parse().unwrap(), &mut ev), None);
        assert_eq!(r.counters.dropped_events, 1);
    }

    #[test]
    fn hold_unknown_target_garbage_and_strangers_are_not_forwarded() {
        let t = Instant::now();
        let mut held = media(0, None, CALLEE);
        held.send = false;
        let mut r = RelayPair::new(&media(0, None, CALLER), &held);
        let mut p = rtp(0, 1, 7);
        assert_eq!(r.on_rtp(Side::A, t, CALLER.parse().unwrap(), &mut p), None);
        assert_eq!(r.counters.no_target, 1);
        assert_eq!(
            r.on_rtp(Side::A, t, CALLER.parse().unwrap(), &mut [1, 2, 3]),
            None
        );
        assert_eq!(r.counters(Side::A).malformed, 1);
        // Another source while the caller is live: rejected.
        let mut s = rtp(0, 2, 7);
        r.update(Side::B, &media(0, None, CALLEE));
        assert_eq!(
            r.on_rtp(Side::A, t, "10.9.9.9:1".parse().unwrap(), &mut s),
            None
        );
        assert_eq!(r.counters(Side::A).rejected_source, 1);
    }

    #[test]
    fn rtcp_goes_to_the_other_sides_rtcp_port() {
        let t = Instant::now();
        let mut r = RelayPair::new(&media(0, None, CALLER), &media(0, None, CALLEE));
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 7];
        // Before its RTP latched, nobody's RTCP is relayed.
        assert_eq!(
            r.on_rtcp(Side::A, "10.0.0.1:4001".parse().unwrap(), &rr),
            None
        );
        for (side, from) in [(Side::A, CALLER), (Side::B, CALLEE)] {
            r.on_rtp(side, t, from.parse().unwrap(), &mut rtp(0, 1, 7));
        }
        assert_eq!(
            r.on_rtcp(Side::A, "10.0.0.1:4001".parse().unwrap(), &rr),
            Some("10.0.0.2:5001".parse().unwrap())
        );
        // Another host's RTCP, and another port of the caller's host that
        // does not name the caller's SSRC (7).
        assert_eq!(
            r.on_rtcp(Side::A, "10.9.9.9:4001".parse().unwrap(), &rr),
            None
        );
        let stranger = [0x80, 201, 0, 1, 0, 0, 0x0b, 0xad];
        assert_eq!(
            r.on_rtcp(Side::A, "10.0.0.1:4003".parse().unwrap(), &stranger),
            None
        );
        // The callee's RTCP comes from another port of its host: used.
        r.on_rtcp(Side::B, "10.0.0.2:7777".parse().unwrap(), &rr);
        assert_eq!(
            r.on_rtcp(Side::A, "10.0.0.1:4001".parse().unwrap(), &rr),
            Some("10.0.0.2:7777".parse().unwrap())
        );
        // RTCP multiplexed on the RTP port is relayed the same way.
        let mut mux = rr.to_vec();
        assert_eq!(
            r.on_rtp(Side::A, t, CALLER.parse().unwrap(), &mut mux),
            Some("10.0.0.2:7777".parse().unwrap())
        );
        // ... and from the latched peer only.
        assert_eq!(
            r.on_rtp(
                Side::A,
                t,
                "10.0.0.1:4009".parse().unwrap(),
                &mut stranger.to_vec()
            ),
            None
        );
        assert_eq!(
            r.on_rtcp(Side::A, "10.0.0.1:4001".parse().unwrap(), &[0x80]),
            None
        );
    }

    #[test]
    fn sides_on_different_codecs_are_transcoded_and_never_offloaded() {
        let t0 = Instant::now();
        let a = media(0, Some(101), CALLER);
        let b = LegMedia {
            codec: Codec::Pcma,
            payload_type: 8,
            ..media(8, Some(101), CALLEE)
        };
        let mut pair = RelayPair::new(&a, &b);
        assert!(!pair.offload_view().same_numbering);
        let ulaw: Vec<u8> = (0..160)
            .map(|i| crate::g711::ulaw_encode(i * 50 - 4000))
            .collect();
        let mut p = rtp(0, 1, 7);
        p[12..].copy_from_slice(&ulaw);
        let to = pair.on_rtp(Side::A, t0, CALLER.parse().unwrap(), &mut p);
        assert_eq!(to, Some(CALLEE.parse().unwrap()));
        assert_eq!(p[1] & 0x7f, 8, "A-law's payload type");
        let want: Vec<u8> = ulaw
            .iter()
            .map(|&c| crate::g711::alaw_encode(crate::g711::ulaw_decode(c)))
            .collect();
        assert_eq!(&p[12..], &want[..], "G.711 to G.711 is exact");
        assert_eq!(
            &p[2..12],
            &rtp(0, 1, 7)[2..12],
            "sequence, timestamp, SSRC kept"
        );
        // Telephone-events pass untouched (same numbering here).
        let mut ev = rtp(101, 2, 7);
        let before = ev.clone();
        assert!(
            pair.on_rtp(Side::A, t0, CALLER.parse().unwrap(), &mut ev)
                .is_some()
        );
        assert_eq!(ev, before);
        assert_eq!(pair.counters.transcoded, 1);
        // A re-INVITE puts side B on PCMU too: payloads pass untouched.
        pair.update(Side::B, &media(0, Some(101), CALLEE));
        let mut p = rtp(0, 3, 7);
        let before = p.clone();
        pair.on_rtp(Side::A, t0, CALLER.parse().unwrap(), &mut p);
        assert_eq!(p, before);
        assert_eq!(pair.counters.transcoded, 1);
        assert!(pair.offload_view().same_numbering);
        // And G.722 on one side: 160 bytes stay 160 bytes.
        let g722 = LegMedia {
            codec: Codec::G722,
            payload_type: 9,
            ..media(9, Some(101), CALLEE)
        };
        pair.update(Side::B, &g722);
        let mut p = rtp(0, 4, 7);
        pair.on_rtp(Side::A, t0, CALLER.parse().unwrap(), &mut p);
        assert_eq!((p.len(), p[1] & 0x7f), (172, 9));
        assert_eq!(pair.counters.transcoded, 2);
    }
}
