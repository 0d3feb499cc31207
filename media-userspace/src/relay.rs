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
//!
//! SRTP (RFC 3711) is handled per side: what arrives on an SRTP side is
//! authenticated before the latch sees it, and what leaves toward an SRTP
//! side is protected under the key we declared there. When the keys are
//! shared end to end (what side A's peer sends under is what we declared
//! to side B's peer, and back), ciphertext passes untouched, as plain RTP
//! does, and the pair may move to the kernel; a packet from the latched
//! peer is then forwarded as the kernel would forward it, unverified
//! (its receiver authenticates it), while any other source must
//! authenticate to be heard. A packet the relay must change (renumbered,
//! transcoded) under a shared key leaves under the relay's own SSRC,
//! never the sender's, so no keystream is used twice.

use crate::control::LegMedia;
use crate::echo::LegCounters;
use crate::latch::{Latch, LatchDecision};
use crate::rtp::{self, RtpHeader};
use crate::srtp::{LegSrtp, SrtpCounters};
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
    srtp: LegSrtp,
    /// The stream the relay sends toward this side when it protects a
    /// packet itself: its own SSRC and its own gapless sequence, so no
    /// (key, SSRC, index) it uses can be one another sender used (the key
    /// may be borrowed from the other side's party) or one it used before
    /// (a sender restarting or thinning its sequence).
    own_ssrc: Option<u32>,
    own_seq: u16,
}

impl RelaySide {
    fn new(media: &LegMedia) -> RelaySide {
        RelaySide {
            media: *media,
            latch: Latch::new(media.remote),
            rtcp_peer: None,
            counters: LegCounters::default(),
            transcoder: None,
            srtp: LegSrtp::new(media.srtp),
            own_ssrc: None,
            own_seq: 0,
        }
    }

    /// Renumbers the RTP packet in `pkt` into the relay's own stream
    /// toward this side (SSRC and sequence), before it is protected.
    fn own_stream(&mut self, pkt: &mut [u8], sender: u32) {
        let ssrc = *self.own_ssrc.get_or_insert(relay_ssrc(sender));
        rtp::set_ssrc(pkt, ssrc);
        pkt[2..4].copy_from_slice(&self.own_seq.to_be_bytes());
        self.own_seq = self.own_seq.wrapping_add(1);
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
    /// SRTP passed through untouched (keys shared end to end).
    pub srtp_passed: u64,
    /// SRTP decrypted on one side and protected again for the other (or
    /// to or from plain RTP).
    pub srtp_reprotected: u64,
}

/// The SSRC the relay protects under toward a side: never the sender's
/// (under a key shared end to end, that keystream is the sender's).
pub fn relay_ssrc(sender: u32) -> u32 {
    sender ^ 0x5f3d_9a61
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

    /// A re-INVITE on one side changed its stream (new address, hold,
    /// keys).
    pub fn update(&mut self, s: Side, media: &LegMedia) {
        let side = self.side_mut(s);
        side.latch.reset(media.remote);
        side.media = *media;
        side.srtp.update(media.srtp);
        self.set_transcoders();
    }

    /// What side `s`'s SRTP counted.
    pub fn srtp_counters(&self, s: Side) -> SrtpCounters {
        self.side(s).srtp.counters()
    }

    /// Whether what arrives on side `s` may leave toward the other side
    /// as it came: both plain, or the key its peer sends under is the one
    /// we declared to the other side's peer.
    fn passes_through(&self, s: Side) -> bool {
        let (i, o) = (&self.side(s).media.srtp, &self.side(s.other()).media.srtp);
        match (i, o) {
            (None, None) => true,
            (Some(i), Some(o)) => i.suite == o.suite && i.rx == o.tx,
            _ => false,
        }
    }

    /// How the pair's media is protected, for the offload decision.
    fn srtp_path(&self) -> crate::offload::PairSrtp {
        use crate::offload::PairSrtp;
        match (&self.a.media.srtp, &self.b.media.srtp) {
            (None, None) => PairSrtp::Plain,
            _ if self.passes_through(Side::A) && self.passes_through(Side::B) => {
                PairSrtp::SharedKeys
            }
            _ => PairSrtp::Reencrypt,
        }
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
            srtp: self.srtp_path(),
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

    /// An RTP datagram on side `s`'s socket, in `buf[..len]` (`buf` has
    /// room for an SRTP tag). Returns where the other side's socket sends
    /// it and its length; the packet is rewritten in place. `tap`, when
    /// given, gets the packet in the clear as its side sent it, if the
    /// relay accepts it.
    pub fn on_rtp(
        &mut self,
        s: Side,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
        tap: Option<&mut Vec<u8>>,
    ) -> Option<(SocketAddr, usize)> {
        let len = len.min(buf.len());
        let passes = self.passes_through(s);
        let inbound = self.side_mut(s);
        inbound.counters.rx_packets += 1;
        inbound.counters.rx_bytes += len as u64;
        if rtp::looks_like_rtcp(&buf[..len]) {
            // RTCP multiplexed on the RTP port goes the same way, from the
            // latched peer only.
            if !inbound.latch.is_peer_rtcp(from, &buf[..len]) {
                inbound.counters.rejected_source += 1;
                return None;
            }
            let (to, out) = self.relay_rtcp(s, &buf[..len])?;
            let n = match out {
                None => len,
                Some(p) => {
                    let dst = buf.get_mut(..p.len())?;
                    dst.copy_from_slice(&p);
                    p.len()
                }
            };
            return Some((to, n));
        }
        let parsed = if inbound.srtp.is_plain() {
            RtpHeader::parse(&buf[..len])
        } else {
            RtpHeader::parse_protected(&buf[..len])
        };
        let Ok(mut h) = parsed else {
            inbound.counters.malformed += 1;
            return None;
        };
        // SRTP is authenticated before the latch sees the packet, also
        // ciphertext that then passes through untouched: the receive
        // state stays current, so a packet the relay must change, a tap
        // or a re-latch after hours still authenticates.
        let mut clear = None;
        if !inbound.srtp.is_plain() {
            clear = Some(inbound.srtp.open_rtp(&buf[..len]).ok()??);
        }
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
        let transcode = h.payload_type == in_pt && self.side(s).transcoder.is_some();
        if let Some(t) = tap {
            t.clear();
            t.extend_from_slice(clear.as_deref().unwrap_or(&buf[..len]));
        }
        let in_srtp = !self.side(s).srtp.is_plain();
        if passes && in_srtp && pt == h.payload_type && !transcode {
            // Ciphertext under the key the far side expects: untouched.
            self.counters.srtp_passed += 1;
            return Some((to, self.count_tx(s.other(), len)));
        }
        // The packet in the clear in buf[..n] (an SRTP side's was opened
        // above).
        let mut n = len;
        if let Some(c) = clear.take() {
            n = c.len();
            buf.get_mut(..n)?.copy_from_slice(&c);
            h = RtpHeader::parse(&buf[..n]).ok()?;
        }
        if transcode && let Some(t) = self.side_mut(s).transcoder.as_mut() {
            let payload = &mut buf[h.payload_offset..(h.payload_offset + h.payload_len).min(n)];
            if !t.convert(payload) {
                self.counters.transcode_failures += 1;
                return None;
            }
            self.counters.transcoded += 1;
        }
        if pt != h.payload_type {
            buf[1] = (buf[1] & 0x80) | (pt & 0x7f);
        }
        let out = self.side_mut(s.other());
        if !out.srtp.is_plain() {
            out.own_stream(&mut buf[..n], h.ssrc);
            n = out.srtp.outbound_rtp(buf, n).ok()?;
        }
        if !out.srtp.is_plain() || in_srtp {
            self.counters.srtp_reprotected += 1;
        }
        Some((to, self.count_tx(s.other(), n)))
    }

    fn count_tx(&mut self, s: Side, len: usize) -> usize {
        let out = self.side_mut(s);
        out.counters.tx_packets += 1;
        out.counters.tx_bytes += len as u64;
        len
    }

    /// RTCP from side `s`'s latched peer toward the other side's RTCP
    /// peer: where, and the packet to send (`None`: as it came).
    fn relay_rtcp(&mut self, s: Side, pkt: &[u8]) -> Option<(SocketAddr, Option<Vec<u8>>)> {
        let passes = self.passes_through(s);
        let clear = self.side_mut(s).srtp.inbound_rtcp(pkt).ok()?;
        let out_plain = self.side(s.other()).srtp.is_plain();
        let packet = match clear {
            // Plain on both sides, or SRTCP under a shared key.
            _ if passes => None,
            std::borrow::Cow::Borrowed(_) if out_plain => None,
            c if out_plain => Some(c.into_owned()),
            c => {
                // Reports leave from the relay's own stream (its SSRC
                // keys the SRTCP keystream, as for RTP).
                let mut c = c.into_owned();
                let out = self.side_mut(s.other());
                if let Some(sender) = c.get(4..8) {
                    let sender = u32::from_be_bytes([sender[0], sender[1], sender[2], sender[3]]);
                    let own = *out.own_ssrc.get_or_insert(relay_ssrc(sender));
                    c[4..8].copy_from_slice(&own.to_be_bytes());
                }
                Some(out.srtp.outbound_rtcp(&c).ok()?)
            }
        };
        let out = self.side_mut(s.other());
        let to = out.rtcp_target()?;
        out.counters.tx_packets += 1;
        out.counters.tx_bytes += packet.as_ref().map_or(pkt.len(), Vec::len) as u64;
        Some((to, packet))
    }

    /// A datagram on side `s`'s RTCP socket: forwarded to the other
    /// side's RTCP peer (from the other side's RTCP socket), protected as
    /// that side needs; `None` for the packet means as it came.
    pub fn on_rtcp(
        &mut self,
        s: Side,
        from: SocketAddr,
        pkt: &[u8],
    ) -> Option<(SocketAddr, Option<Vec<u8>>)> {
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
        let r = self.relay_rtcp(s, pkt)?;
        self.side_mut(s).rtcp_peer = Some(from);
        Some(r)
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
            srtp: None,
        }
    }

    fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0u8; 12 + 160];
        rtp::write_header(&mut p, false, pt, seq, u32::from(seq) * 160, ssrc);
        p[12..].fill(0x55);
        p
    }

    /// The relay fed a packet as the worker feeds it (a buffer with room
    /// for a tag); where it goes, `p` rewritten to what is sent.
    fn on(
        r: &mut RelayPair,
        s: Side,
        t: Instant,
        from: SocketAddr,
        p: &mut Vec<u8>,
    ) -> Option<SocketAddr> {
        let len = p.len();
        p.resize(len + 64, 0);
        let out = r.on_rtp(s, t, from, p, len, None);
        p.truncate(out.map_or(len, |(_, n)| n));
        out.map(|(to, _)| to)
    }

    /// RTCP as the worker feeds it; where it goes (the packet is plain
    /// here, so it leaves as it came).
    fn on_rtcp(r: &mut RelayPair, s: Side, from: SocketAddr, p: &[u8]) -> Option<SocketAddr> {
        r.on_rtcp(s, from, p).map(|(to, out)| {
            assert!(out.is_none(), "plain RTCP leaves as it came");
            to
        })
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
            on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut p),
            Some(CALLEE.parse().unwrap())
        );
        assert_eq!(p, orig, "payload, SSRC, sequence and timestamp kept");
        // The callee answers from behind a NAT: latched there after a run
        // of in-sequence packets, none relayed before.
        let nat: SocketAddr = "192.0.2.9:6000".parse().unwrap();
        let latch_at = u16::from(crate::latch::LATCH_PACKETS);
        for seq in 1..latch_at {
            assert_eq!(on(&mut r, Side::B, t, nat, &mut rtp(0, seq, 9)), None);
        }
        let mut q = rtp(0, latch_at, 9);
        assert_eq!(
            on(&mut r, Side::B, t, nat, &mut q),
            Some(CALLER.parse().unwrap())
        );
        let mut p2 = rtp(0, 2, 7);
        assert_eq!(
            on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut p2),
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
        on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut ev).unwrap();
        assert_eq!(ev[1], 0x80 | 96, "telephone-event renumbered, marker kept");
        // A side without telephone-event gets no events.
        let mut r = RelayPair::new(&media(0, Some(101), CALLER), &media(0, None, CALLEE));
        let mut ev = rtp(101, 1, 7);
        assert_eq!(
            on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut ev),
            None
        );
        assert_eq!(r.counters.dropped_events, 1);
    }

    #[test]
    fn hold_unknown_target_garbage_and_strangers_are_not_forwarded() {
        let t = Instant::now();
        let mut held = media(0, None, CALLEE);
        held.send = false;
        let mut r = RelayPair::new(&media(0, None, CALLER), &held);
        let mut p = rtp(0, 1, 7);
        assert_eq!(
            on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut p),
            None
        );
        assert_eq!(r.counters.no_target, 1);
        assert_eq!(
            on(
                &mut r,
                Side::A,
                t,
                CALLER.parse().unwrap(),
                &mut vec![1, 2, 3]
            ),
            None
        );
        assert_eq!(r.counters(Side::A).malformed, 1);
        // Another source while the caller is live: rejected.
        let mut s = rtp(0, 2, 7);
        r.update(Side::B, &media(0, None, CALLEE));
        assert_eq!(
            on(&mut r, Side::A, t, "10.9.9.9:1".parse().unwrap(), &mut s),
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
            on_rtcp(&mut r, Side::A, "10.0.0.1:4001".parse().unwrap(), &rr),
            None
        );
        for (side, from) in [(Side::A, CALLER), (Side::B, CALLEE)] {
            on(&mut r, side, t, from.parse().unwrap(), &mut rtp(0, 1, 7));
        }
        assert_eq!(
            on_rtcp(&mut r, Side::A, "10.0.0.1:4001".parse().unwrap(), &rr),
            Some("10.0.0.2:5001".parse().unwrap())
        );
        // Another host's RTCP, and another port of the caller's host that
        // does not name the caller's SSRC (7).
        assert_eq!(
            on_rtcp(&mut r, Side::A, "10.9.9.9:4001".parse().unwrap(), &rr),
            None
        );
        let stranger = [0x80, 201, 0, 1, 0, 0, 0x0b, 0xad];
        assert_eq!(
            on_rtcp(&mut r, Side::A, "10.0.0.1:4003".parse().unwrap(), &stranger),
            None
        );
        // The callee's RTCP comes from another port of its host: used.
        on_rtcp(&mut r, Side::B, "10.0.0.2:7777".parse().unwrap(), &rr);
        assert_eq!(
            on_rtcp(&mut r, Side::A, "10.0.0.1:4001".parse().unwrap(), &rr),
            Some("10.0.0.2:7777".parse().unwrap())
        );
        // RTCP multiplexed on the RTP port is relayed the same way.
        let mut mux = rr.to_vec();
        assert_eq!(
            on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut mux),
            Some("10.0.0.2:7777".parse().unwrap())
        );
        // ... and from the latched peer only.
        assert_eq!(
            on(
                &mut r,
                Side::A,
                t,
                "10.0.0.1:4009".parse().unwrap(),
                &mut stranger.to_vec()
            ),
            None
        );
        assert_eq!(
            on_rtcp(&mut r, Side::A, "10.0.0.1:4001".parse().unwrap(), &[0x80]),
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
        let to = on(&mut pair, Side::A, t0, CALLER.parse().unwrap(), &mut p);
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
        assert!(on(&mut pair, Side::A, t0, CALLER.parse().unwrap(), &mut ev).is_some());
        assert_eq!(ev, before);
        assert_eq!(pair.counters.transcoded, 1);
        // A re-INVITE puts side B on PCMU too: payloads pass untouched.
        pair.update(Side::B, &media(0, Some(101), CALLEE));
        let mut p = rtp(0, 3, 7);
        let before = p.clone();
        on(&mut pair, Side::A, t0, CALLER.parse().unwrap(), &mut p);
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
        on(&mut pair, Side::A, t0, CALLER.parse().unwrap(), &mut p);
        assert_eq!((p.len(), p[1] & 0x7f), (172, 9));
        assert_eq!(pair.counters.transcoded, 2);
    }

    mod srtp {
        use super::*;
        use crate::offload::PairSrtp;
        use crate::srtp::{SrtpKey, SrtpKeys, SrtpSession, SrtpSuite};

        const SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;

        fn key(b: u8) -> SrtpKey {
            SrtpKey::new(SUITE, &[b; 30]).unwrap()
        }

        fn keys(tx: u8, rx: u8) -> SrtpKeys {
            SrtpKeys {
                suite: SUITE,
                tx: key(tx),
                rx: key(rx),
                replay_window: 64,
            }
        }

        fn secure(remote: &str, k: SrtpKeys) -> LegMedia {
            LegMedia {
                srtp: Some(k),
                ..media(0, Some(101), remote)
            }
        }

        /// A phone's SRTP session: sends under `tx`, expects `rx`.
        fn phone(tx: u8, rx: u8) -> SrtpSession {
            SrtpSession::new(keys(tx, rx)).unwrap()
        }

        #[test]
        fn srtp_to_plain_decrypts_one_way_and_protects_the_other() {
            let t = Instant::now();
            // Side A: the caller sends under key 1, we send it under key 2.
            let mut r = RelayPair::new(&secure(CALLER, keys(2, 1)), &media(0, Some(101), CALLEE));
            assert_eq!(r.offload_view().srtp, PairSrtp::Reencrypt);
            let mut caller = phone(1, 2);
            let plain = rtp(0, 1, 7);
            let mut p = caller.protect_rtp(&plain).unwrap().to_vec();
            assert_eq!(
                on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut p),
                Some(CALLEE.parse().unwrap())
            );
            assert_eq!(p, plain, "the plain side gets the clear packet");
            let mut back = rtp(0, 1, 9);
            assert_eq!(
                on(&mut r, Side::B, t, CALLEE.parse().unwrap(), &mut back),
                Some(CALLER.parse().unwrap())
            );
            assert_eq!(back.len(), plain.len() + SUITE.rtp_overhead());
            assert_ne!(
                &back[12..172],
                &rtp(0, 1, 9)[12..],
                "the SRTP side gets ciphertext"
            );
            let n = caller.unprotect_rtp(&mut back).unwrap();
            assert_eq!(&back[12..n], &rtp(0, 1, 9)[12..], "the payload");
            let h = RtpHeader::parse(&back[..n]).unwrap();
            assert_eq!((h.ssrc, h.sequence), (relay_ssrc(9), 0), "our own stream");
            // A spoofer without the key, from the caller's own address even,
            // is refused before the latch and never reaches side B.
            let mut forged = rtp(0, 2, 7);
            forged.extend_from_slice(&[0; 10]);
            assert_eq!(
                on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut forged),
                None
            );
            assert_eq!(r.srtp_counters(Side::A).auth_failed, 1);
            assert_eq!(r.counters.srtp_reprotected, 2);
        }

        #[test]
        fn shared_keys_pass_ciphertext_untouched_and_may_be_offloaded() {
            let t = Instant::now();
            // The caller sends under 1, the callee under 2; we declared 2 to
            // the caller and 1 to the callee: keys shared end to end.
            let mut r = RelayPair::new(&secure(CALLER, keys(2, 1)), &secure(CALLEE, keys(1, 2)));
            assert_eq!(r.offload_view().srtp, PairSrtp::SharedKeys);
            let (mut caller, mut callee) = (phone(1, 2), phone(2, 1));
            for seq in 1..4 {
                let wire = caller.protect_rtp(&rtp(0, seq, 7)).unwrap().to_vec();
                let mut p = wire.clone();
                assert_eq!(
                    on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut p),
                    Some(CALLEE.parse().unwrap())
                );
                assert_eq!(p, wire, "untouched");
                let n = callee.unprotect_rtp(&mut p).unwrap();
                assert_eq!(&p[..n], &rtp(0, seq, 7)[..]);
            }
            assert_eq!(r.counters.srtp_passed, 3);
            // Another source must authenticate to be heard, even while the
            // caller's own packets pass unverified.
            let mut stranger = caller.protect_rtp(&rtp(0, 9, 7)).unwrap().to_vec();
            stranger[14] ^= 0xff;
            assert_eq!(
                on(
                    &mut r,
                    Side::A,
                    t,
                    "10.9.9.9:1".parse().unwrap(),
                    &mut stranger
                ),
                None
            );
            assert_eq!(r.srtp_counters(Side::A).auth_failed, 1);
        }

        #[test]
        fn a_changed_packet_under_a_shared_key_leaves_under_the_relays_ssrc() {
            let t = Instant::now();
            // Shared keys, but the callee numbers telephone-event 96.
            let b = LegMedia {
                srtp: Some(keys(1, 2)),
                ..media(0, Some(96), CALLEE)
            };
            let mut r = RelayPair::new(&secure(CALLER, keys(2, 1)), &b);
            let (mut caller, mut callee) = (phone(1, 2), phone(2, 1));
            let mut ev = caller.protect_rtp(&rtp(101, 1, 7)).unwrap().to_vec();
            assert!(on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut ev).is_some());
            let n = callee.unprotect_rtp(&mut ev).unwrap();
            let h = RtpHeader::parse(&ev[..n]).unwrap();
            assert_eq!(h.payload_type, 96);
            assert_eq!(h.ssrc, relay_ssrc(7), "not the sender's keystream");
            assert_ne!(h.ssrc, 7);
            // The relay numbers its own stream without gaps, whatever the
            // sender's sequence did in between (here: a restart).
            let mut ev = caller.protect_rtp(&rtp(101, 2, 7)).unwrap().to_vec();
            assert!(on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut ev).is_some());
            let n = callee.unprotect_rtp(&mut ev).unwrap();
            assert_eq!(RtpHeader::parse(&ev[..n]).unwrap().sequence, 1);
        }

        #[test]
        fn different_keys_are_reencrypted_and_srtcp_follows() {
            let t = Instant::now();
            let mut r = RelayPair::new(&secure(CALLER, keys(2, 1)), &secure(CALLEE, keys(3, 4)));
            assert_eq!(r.offload_view().srtp, PairSrtp::Reencrypt);
            let (mut caller, mut callee) = (phone(1, 2), phone(4, 3));
            let mut p = caller.protect_rtp(&rtp(0, 1, 7)).unwrap().to_vec();
            assert!(on(&mut r, Side::A, t, CALLER.parse().unwrap(), &mut p).is_some());
            let n = callee.unprotect_rtp(&mut p).unwrap();
            assert_eq!(&p[12..n], &rtp(0, 1, 7)[12..]);
            assert_eq!(RtpHeader::parse(&p[..n]).unwrap().ssrc, relay_ssrc(7));
            // Latch the callee, then SRTCP goes each way re-protected.
            let mut q = callee.protect_rtp(&rtp(0, 1, 9)).unwrap().to_vec();
            assert!(on(&mut r, Side::B, t, CALLEE.parse().unwrap(), &mut q).is_some());
            let rr = [0x80, 201, 0, 1, 0, 0, 0, 7];
            let srtcp = caller.protect_rtcp(&rr).unwrap();
            let (to, out) = r
                .on_rtcp(Side::A, "10.0.0.1:4001".parse().unwrap(), &srtcp)
                .unwrap();
            assert_eq!(to, "10.0.0.2:5001".parse().unwrap());
            let got = callee.unprotect_rtcp(&out.unwrap()).unwrap();
            assert_eq!(&got[..4], &rr[..4]);
            assert_eq!(
                &got[4..8],
                &relay_ssrc(7).to_be_bytes(),
                "from our own stream"
            );
            // Forged SRTCP is dropped.
            let mut bad = srtcp.to_vec();
            bad[9] ^= 1;
            assert_eq!(
                r.on_rtcp(Side::A, "10.0.0.1:4001".parse().unwrap(), &bad),
                None
            );
        }
    }
}
