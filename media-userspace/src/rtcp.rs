//! RTCP sender and receiver reports (RFC 3550 §6.4) for one leg. Sans-IO:
//! fed with the RTP we receive and send and with RTCP from the peer, it
//! builds compound reports (SR or RR, then SDES CNAME, §6.1) when they are
//! due and keeps what the peer reports about our stream.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Reporting interval (§6.2: 5 s minimum for a two-party session),
/// randomised between 0.5 and 1.5 times (§6.3.1).
pub const INTERVAL: Duration = Duration::from_secs(5);

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;

/// Statistics of the stream we receive (RFC 3550 appendix A.1, A.3).
#[derive(Debug, Clone, Default)]
struct Reception {
    ssrc: Option<u32>,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
}

impl Reception {
    fn on_rtp(&mut self, ssrc: u32, seq: u16) {
        if self.ssrc != Some(ssrc) {
            *self = Reception {
                ssrc: Some(ssrc),
                base_seq: u32::from(seq),
                max_seq: seq,
                ..Reception::default()
            };
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles += 1 << 16;
                }
                self.max_seq = seq;
            }
        }
        self.received += 1;
    }

    fn extended_max(&self) -> u64 {
        u64::from(self.cycles) + u64::from(self.max_seq)
    }

    fn expected(&self) -> u64 {
        (self.extended_max() + 1).saturating_sub(u64::from(self.base_seq))
    }

    fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Fraction lost since the last report, ×256 (§6.4.1), and rolls the
    /// interval over.
    fn fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let exp_int = expected - self.expected_prior.min(expected);
        let rec_int = self.received - self.received_prior.min(self.received);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost = exp_int as i64 - rec_int as i64;
        if exp_int == 0 || lost <= 0 {
            0
        } else {
            ((lost << 8) / exp_int as i64).min(255) as u8
        }
    }
}

/// What the peer last reported about our stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerReport {
    pub fraction_lost: u8,
    pub cumulative_lost: i32,
    /// Interarrival jitter in RTP clock units.
    pub jitter: u32,
    /// Round trip from LSR/DLSR (§6.4.1), when the peer echoed our SR.
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpCounters {
    pub sent: u64,
    pub received: u64,
    pub malformed: u64,
    pub byes: u64,
}

/// Maps the monotonic time the cores are fed to wall-clock time, for the
/// NTP timestamps of sender reports. The edge reads both clocks once, when
/// a leg starts; the cores never read a clock.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    pub at: Instant,
    pub wall: SystemTime,
}

impl WallClock {
    pub fn wall_at(&self, now: Instant) -> SystemTime {
        self.wall + now.saturating_duration_since(self.at)
    }
}

/// NTP timestamp (§4) of a wall-clock time.
fn ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

#[derive(Debug)]
pub struct RtcpSession {
    ssrc: u32,
    cname: String,
    clock_rate: u32,
    rx: Reception,
    /// Middle 32 bits of the last SR's NTP time, and when it came.
    last_sr: Option<(u32, Instant)>,
    /// Our SRs by their middle NTP bits, for RTT.
    sent_srs: Vec<(u32, Instant)>,
    tx_packets: u32,
    tx_octets: u32,
    /// RTP timestamp of our last sent packet and when it left.
    last_tx: Option<(u32, Instant)>,
    next_report: Option<Instant>,
    pub peer: Option<PeerReport>,
    pub counters: RtcpCounters,
}

impl RtcpSession {
    pub fn new(ssrc: u32, cname: String, clock_rate: u32) -> RtcpSession {
        RtcpSession {
            ssrc,
            cname,
            clock_rate: clock_rate.max(1),
            rx: Reception::default(),
            last_sr: None,
            sent_srs: Vec::new(),
            tx_packets: 0,
            tx_octets: 0,
            last_tx: None,
            next_report: None,
            peer: None,
            counters: RtcpCounters::default(),
        }
    }

    /// An RTP packet from the peer.
    pub fn on_rtp_received(&mut self, now: Instant, ssrc: u32, seq: u16) {
        self.rx.on_rtp(ssrc, seq);
        self.schedule(now);
    }

    /// An RTP packet we sent, with its payload length.
    pub fn on_rtp_sent(&mut self, now: Instant, timestamp: u32, payload_len: usize) {
        self.tx_packets = self.tx_packets.wrapping_add(1);
        self.tx_octets = self.tx_octets.wrapping_add(payload_len as u32);
        self.last_tx = Some((timestamp, now));
        self.schedule(now);
    }

    fn schedule(&mut self, now: Instant) {
        if self.next_report.is_none() {
            // The first report goes out after half an interval (§6.2).
            self.next_report = Some(now + INTERVAL / 2);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_report
    }

    /// The compound report due at `now`, if one is. `jitter` is the
    /// receive jitter in clock units (from the jitter buffer).
    pub fn poll_report(&mut self, now: Instant, wall: SystemTime, jitter: u32) -> Option<Vec<u8>> {
        if self.next_report.is_none_or(|t| now < t) {
            return None;
        }
        let factor = 0.5 + rand::random::<f64>();
        self.next_report = Some(now + INTERVAL.mul_f64(factor));
        let mut out = Vec::with_capacity(128);
        let block = self.rx.ssrc.map(|src| self.report_block(src, now, jitter));
        let count = u8::from(block.is_some());
        let sender = self.last_tx.is_some();
        let words_after_header = 1 + if sender { 5 } else { 0 } + 6 * usize::from(count);
        out.push(0x80 | count);
        out.push(if sender { PT_SR } else { PT_RR });
        out.extend_from_slice(&(words_after_header as u16).to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        if let Some((rtp_ts, at)) = self.last_tx {
            let n = ntp(wall);
            // The RTP time of this instant, extrapolated from the last
            // packet sent (§6.4.1).
            let since = now.saturating_duration_since(at);
            let ts = rtp_ts.wrapping_add(
                (since.as_micros() as u64 * u64::from(self.clock_rate) / 1_000_000) as u32,
            );
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&self.tx_packets.to_be_bytes());
            out.extend_from_slice(&self.tx_octets.to_be_bytes());
            let mid = (n >> 16) as u32;
            self.sent_srs.push((mid, now));
            if self.sent_srs.len() > 8 {
                self.sent_srs.remove(0);
            }
        }
        if let Some(b) = block {
            out.extend_from_slice(&b);
        }
        // SDES with one chunk: our SSRC and CNAME, null-terminated and
        // padded to a word (§6.5).
        let cname = &self.cname.as_bytes()[..self.cname.len().min(255)];
        let item_len = 2 + cname.len();
        let chunk_len = (4 + item_len + 1).div_ceil(4) * 4;
        out.push(0x81);
        out.push(PT_SDES);
        out.extend_from_slice(&((chunk_len / 4) as u16).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.push(1); // CNAME
        out.push(cname.len() as u8);
        out.extend_from_slice(cname);
        out.resize(start + chunk_len, 0);
        self.counters.sent += 1;
        Some(out)
    }

    fn report_block(&mut self, src: u32, now: Instant, jitter: u32) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&src.to_be_bytes());
        b[4] = self.rx.fraction_lost();
        let cum = self.rx.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff) as i32;
        b[5..8].copy_from_slice(&cum.to_be_bytes()[1..4]);
        b[8..12].copy_from_slice(&(self.rx.extended_max() as u32).to_be_bytes());
        b[12..16].copy_from_slice(&jitter.to_be_bytes());
        if let Some((lsr, at)) = self.last_sr {
            let dlsr =
                (now.saturating_duration_since(at).as_micros() as u64 * 65536 / 1_000_000) as u32;
            b[16..20].copy_from_slice(&lsr.to_be_bytes());
            b[20..24].copy_from_slice(&dlsr.to_be_bytes());
        }
        b
    }

    /// A compound RTCP packet from the peer. Returns true if it carried a
    /// BYE for the stream we receive.
    pub fn on_rtcp(&mut self, now: Instant, pkt: &[u8]) -> bool {
        let mut rest = pkt;
        let mut bye = false;
        let mut any = false;
        while rest.len() >= 4 {
            if rest[0] >> 6 != 2 {
                self.counters.malformed += 1;
                return bye;
            }
            let count = usize::from(rest[0] & 0x1f);
            let pt = rest[1];
            let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
            let Some(body) = rest.get(..len) else {
                self.counters.malformed += 1;
                return bye;
            };
            any = true;
            match pt {
                PT_SR if body.len() >= 28 => {
                    let mid = u32::from_be_bytes([body[10], body[11], body[12], body[13]]);
                    self.last_sr = Some((mid, now));
                    self.read_blocks(now, &body[28..], count);
                }
                PT_RR if body.len() >= 8 => self.read_blocks(now, &body[8..], count),
                PT_BYE => {
                    bye |= body.get(4..4 + 4 * count).is_some_and(|s| {
                        s.chunks_exact(4).any(|c| {
                            Some(u32::from_be_bytes([c[0], c[1], c[2], c[3]])) == self.rx.ssrc
                        })
                    });
                    self.counters.byes += 1;
                }
                _ => {}
            }
            rest = &rest[len..];
        }
        if any {
            self.counters.received += 1;
        } else {
            self.counters.malformed += 1;
        }
        bye
    }

    fn read_blocks(&mut self, now: Instant, blocks: &[u8], count: usize) {
        for b in blocks.chunks_exact(24).take(count) {
            if u32::from_be_bytes([b[0], b[1], b[2], b[3]]) != self.ssrc {
                continue;
            }
            let cum = i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8;
            let lsr = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
            let dlsr = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
            let rtt = self
                .sent_srs
                .iter()
                .find(|(mid, _)| *mid == lsr && lsr != 0)
                .map(|&(_, sent)| {
                    let held = Duration::from_micros(u64::from(dlsr) * 1_000_000 / 65536);
                    now.saturating_duration_since(sent).saturating_sub(held)
                });
            self.peer = Some(PeerReport {
                fraction_lost: b[4],
                cumulative_lost: cum,
                jitter: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
                rtt,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(p: &[u8]) -> (u8, u8, usize) {
        (
            p[0] & 0x1f,
            p[1],
            (usize::from(u16::from_be_bytes([p[2], p[3]])) + 1) * 4,
        )
    }

    #[test]
    fn receiver_report_counts_loss_and_wraps() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(1, "gw@test".into(), 8000);
        // 65530..=65535, 0..=9 with 3 and 4 lost: 14 received of 16.
        for seq in (65530u16..=65535).chain((0..10).filter(|&q| q != 3 && q != 4)) {
            s.on_rtp_received(t0, 0xabc, seq);
        }
        assert_eq!(s.poll_report(t0, SystemTime::now(), 0), None, "not due yet");
        let due = s.poll_timeout().unwrap();
        assert_eq!(due, t0 + INTERVAL / 2);
        let r = s.poll_report(due, SystemTime::now(), 77).unwrap();
        let (count, pt, len) = header(&r);
        assert_eq!(
            (count, pt, len),
            (1, PT_RR, 32),
            "RR, no SR: we sent nothing"
        );
        let b = &r[8..32];
        assert_eq!(u32::from_be_bytes(b[0..4].try_into().unwrap()), 0xabc);
        assert_eq!(b[4], (2 * 256 / 16) as u8, "2 of 16 lost");
        assert_eq!(i32::from_be_bytes([0, b[5], b[6], b[7]]), 2);
        assert_eq!(u32::from_be_bytes(b[8..12].try_into().unwrap()), 65536 + 9);
        assert_eq!(u32::from_be_bytes(b[12..16].try_into().unwrap()), 77);
        // Then SDES CNAME.
        let (c, pt, sdes_len) = header(&r[32..]);
        assert_eq!((c, pt), (1, PT_SDES));
        assert_eq!(r.len(), 32 + sdes_len);
        assert_eq!(&r[32 + 10..32 + 17], b"gw@test");
        assert!(s.poll_timeout().unwrap() >= due + INTERVAL / 2);
    }

    #[test]
    fn sender_report_round_trip_gives_rtt_and_peer_loss() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = RtcpSession::new(0x1111, "a".into(), 8000);
        let mut b = RtcpSession::new(0x2222, "b".into(), 8000);
        for i in 0..50u16 {
            a.on_rtp_sent(t0, u32::from(i) * 160, 160);
            b.on_rtp_received(t0, 0x1111, i + (i / 10));
        }
        let due = a.poll_timeout().unwrap();
        let sr = a.poll_report(due, wall, 0).unwrap();
        assert_eq!(header(&sr).1, PT_SR);
        assert_eq!(
            u32::from_be_bytes(sr[20..24].try_into().unwrap()),
            50,
            "packet count"
        );
        assert_eq!(
            u32::from_be_bytes(sr[24..28].try_into().unwrap()),
            8000,
            "octet count"
        );
        // B gets the SR 10 ms later and reports 100 ms after that.
        assert!(!b.on_rtcp(due + Duration::from_millis(10), &sr));
        let rr = b
            .poll_report(due + Duration::from_millis(110), wall, 5)
            .unwrap();
        a.on_rtcp(due + Duration::from_millis(120), &rr);
        let peer = a.peer.expect("B reported on our stream");
        assert!(peer.cumulative_lost > 0, "{peer:?}");
        let rtt = peer.rtt.unwrap();
        assert!(
            rtt >= Duration::from_millis(19) && rtt <= Duration::from_millis(21),
            "{rtt:?}"
        );
    }

    #[test]
    fn malformed_and_bye_packets() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(1, "x".into(), 8000);
        s.on_rtp_received(t0, 9, 1);
        s.on_rtcp(t0, &[0x00, 200, 0, 6]);
        s.on_rtcp(t0, &[0x80, 200, 0, 60, 1, 2]);
        s.on_rtcp(t0, &[]);
        assert_eq!(s.counters.malformed, 3);
        assert!(s.on_rtcp(t0, &[0x81, PT_BYE, 0, 1, 0, 0, 0, 9]));
        assert_eq!(s.counters.byes, 1);
    }
}
