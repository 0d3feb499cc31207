//! The echo leg (route `echo`): every RTP packet from the caller goes back
//! to the caller under our own SSRC. Sans-IO: the worker feeds packets and
//! sends what this returns.

use crate::control::LegMedia;
use crate::latch::{Latch, LatchDecision};
use crate::rtp::{self, RtpHeader};
use std::net::SocketAddr;
use std::time::Instant;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LegCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Not RTP, or RTCP on the RTP port.
    pub malformed: u64,
    /// From a source other than the latched one.
    pub rejected_source: u64,
}

#[derive(Debug)]
pub struct EchoLeg {
    latch: Latch,
    ssrc: u32,
    /// Our own gapless sequence: under SRTP our key stays across
    /// re-INVITEs, so a caller that restarts its numbering must not make
    /// us send an index twice.
    seq: u16,
    send: bool,
    pub counters: LegCounters,
}

impl EchoLeg {
    pub fn new(media: &LegMedia, ssrc: u32) -> EchoLeg {
        EchoLeg {
            latch: Latch::new(media.remote),
            ssrc,
            seq: 0,
            send: media.send,
            counters: LegCounters::default(),
        }
    }

    /// A re-INVITE changed the stream.
    pub fn update(&mut self, media: &LegMedia) {
        self.latch.reset(media.remote);
        self.send = media.send;
    }

    /// Handles a datagram; returns where to send the (rewritten) packet.
    pub fn on_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        pkt: &mut [u8],
    ) -> Option<SocketAddr> {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += pkt.len() as u64;
        if rtp::looks_like_rtcp(pkt) {
            self.counters.malformed += 1;
            return None;
        }
        let Ok(h) = RtpHeader::parse(pkt) else {
            self.counters.malformed += 1;
            return None;
        };
        if self.latch.on_packet(now, from, h.ssrc, h.sequence) == LatchDecision::Reject {
            self.counters.rejected_source += 1;
            return None;
        }
        if !self.send {
            return None;
        }
        rtp::set_ssrc(pkt, self.ssrc);
        pkt[2..4].copy_from_slice(&self.seq.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        self.counters.tx_packets += 1;
        self.counters.tx_bytes += pkt.len() as u64;
        self.latch.target()
    }

    pub fn last_rx(&self) -> Option<Instant> {
        self.latch.last_rx()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    fn media(remote: Option<SocketAddr>, send: bool) -> LegMedia {
        LegMedia {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: None,
            ptime_ms: 20,
            remote,
            send,
            srtp: None,
        }
    }

    #[test]
    fn echoes_to_latched_source_with_own_ssrc() {
        let t0 = Instant::now();
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut leg = EchoLeg::new(&media(Some("127.0.0.1:6000".parse().unwrap()), true), 99);
        let packet = |seq: u16| {
            let mut pkt = vec![0u8; 172];
            rtp::write_header(&mut pkt, false, 0, seq, 160 * u32::from(seq), 5);
            pkt[12..].fill(0x55);
            pkt
        };
        // Not the SDP address (NAT): latched after a run of in-sequence
        // packets, none echoed before.
        let latch_at = u16::from(crate::latch::LATCH_PACKETS);
        for seq in 1..latch_at {
            assert_eq!(leg.on_datagram(t0, from, &mut packet(seq)), None);
            assert_eq!(leg.counters.rejected_source, u64::from(seq));
        }
        let mut pkt = packet(latch_at);
        let original_payload = pkt[12..].to_vec();
        assert_eq!(leg.on_datagram(t0, from, &mut pkt), Some(from));
        let h = RtpHeader::parse(&pkt).unwrap();
        assert_eq!(
            (h.ssrc, h.sequence, h.timestamp),
            (99, 0, 160 * u32::from(latch_at)),
            "our SSRC and sequence, the caller's timestamp"
        );
        assert_eq!(&pkt[12..], &original_payload[..], "payload untouched");
        assert_eq!(leg.counters.tx_packets, 1);
        // A spoofer's packet is neither echoed nor takes the leg.
        let evil: SocketAddr = "127.0.0.9:1".parse().unwrap();
        assert_eq!(leg.on_datagram(t0, evil, &mut packet(9)), None);
        assert_eq!(
            leg.on_datagram(t0, from, &mut packet(latch_at + 1)),
            Some(from)
        );
    }

    #[test]
    fn drops_garbage_rtcp_and_held_audio() {
        let t0 = Instant::now();
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut leg = EchoLeg::new(&media(Some(from), true), 1);
        assert_eq!(leg.on_datagram(t0, from, &mut [1, 2, 3]), None);
        assert_eq!(
            leg.on_datagram(t0, from, &mut [0x80, 200, 0, 6, 0, 0, 0, 1]),
            None
        );
        assert_eq!(leg.counters.malformed, 2);
        leg.update(&media(Some(from), false));
        let mut pkt = vec![0u8; 20];
        rtp::write_header(&mut pkt, false, 0, 1, 160, 5);
        assert_eq!(
            leg.on_datagram(t0, from, &mut pkt),
            None,
            "on hold: receive only"
        );
        assert_eq!(leg.last_rx(), Some(t0));
    }
}
