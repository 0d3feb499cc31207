//! Adaptive jitter buffer for one inbound RTP stream. Sans-IO: fed with
//! packets and the current time, it hands back packets in sequence order
//! and tells the caller when to come back.
//!
//! The buffer adds no delay while packets arrive in order: a packet that
//! is the next expected one plays at once. Only a gap holds playout, for
//! at most the adaptive wait (a few times the interarrival jitter of
//! RFC 3550 §6.4.1, bounded by `min_wait..=max_wait`); then the missing
//! packets are reported lost so the caller can conceal them, and playout
//! resumes. Late and duplicate packets are dropped and counted; a jump or
//! a new SSRC restarts the stream.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct JitterConfig {
    /// Shortest time a gap is held open for a reordered packet.
    pub min_wait: Duration,
    /// Longest time a gap is held open (the bound on added delay).
    pub max_wait: Duration,
    /// Packets held at most; beyond this the oldest gap is given up.
    pub max_packets: usize,
    /// A sequence jump larger than this (either way) restarts the stream
    /// (RFC 3550 appendix A.1 MAX_DROPOUT, scaled to voice).
    pub max_jump: u16,
    /// Lost packets reported for one gap at most; a longer gap is skipped.
    pub max_conceal: u16,
    /// RTP clock rate, for the jitter estimate.
    pub clock_rate: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_wait: Duration::from_millis(20),
            max_wait: Duration::from_millis(200),
            max_packets: 32,
            max_jump: 200,
            max_conceal: 10,
            clock_rate: 8000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterCounters {
    pub received: u64,
    pub played: u64,
    /// Arrived after their slot was played or concealed.
    pub late: u64,
    pub duplicate: u64,
    /// Slots reported lost.
    pub lost: u64,
    /// Restarts on a jump or SSRC change.
    pub resets: u64,
}

/// A packet the buffer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitterPacket {
    pub sequence: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// What playout gets next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout {
    Packet(JitterPacket),
    /// The packet with this sequence number never came in time.
    Lost {
        sequence: u16,
    },
}

#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    ssrc: Option<u32>,
    /// Extended sequence number of the next slot to play.
    next: Option<u64>,
    /// Highest extended sequence number seen.
    highest: u64,
    held: BTreeMap<u64, JitterPacket>,
    /// When playout first waited on the current gap.
    gap_since: Option<Instant>,
    /// Recently played slots (bit i: `next - 1 - i`), to tell duplicates
    /// from late packets.
    history: u64,
    /// RFC 3550 interarrival jitter, in RTP clock units ×16.
    jitter_q4: u64,
    last_transit: Option<i64>,
    epoch: Option<Instant>,
    pub counters: JitterCounters,
}

impl JitterBuffer {
    pub fn new(cfg: JitterConfig) -> JitterBuffer {
        JitterBuffer {
            cfg,
            ssrc: None,
            next: None,
            highest: 0,
            held: BTreeMap::new(),
            gap_since: None,
            history: 0,
            jitter_q4: 0,
            last_transit: None,
            epoch: None,
            counters: JitterCounters::default(),
        }
    }

    /// Interarrival jitter estimate (RFC 3550 §6.4.1) in RTP clock units.
    pub fn jitter(&self) -> u32 {
        (self.jitter_q4 >> 4) as u32
    }

    /// Extended highest sequence number received (for RTCP reports).
    pub fn highest_sequence(&self) -> u64 {
        self.highest
    }

    /// How long a gap is held now.
    pub fn wait(&self) -> Duration {
        let jitter = Duration::from_micros(
            u64::from(self.jitter()) * 1_000_000 / u64::from(self.cfg.clock_rate.max(1)),
        );
        (jitter * 3).clamp(self.cfg.min_wait, self.cfg.max_wait)
    }

    fn extend(&self, seq: u16) -> u64 {
        let Some(next) = self.next else {
            return (1 << 16) + u64::from(seq);
        };
        // The candidate nearest to `next`.
        let base = next & !0xffff;
        [base.wrapping_sub(1 << 16), base, base + (1 << 16)]
            .into_iter()
            .map(|b| b + u64::from(seq))
            .min_by_key(|&c| c.abs_diff(next))
            .unwrap_or(base + u64::from(seq))
    }

    fn restart(&mut self, ssrc: u32, ext: u64) {
        if self.ssrc.is_some() {
            self.counters.resets += 1;
        }
        self.ssrc = Some(ssrc);
        self.held.clear();
        self.next = Some(ext);
        self.highest = ext;
        self.gap_since = None;
        self.history = 0;
        self.last_transit = None;
    }

    /// Takes in a packet that arrived at `now`.
    pub fn push(&mut self, now: Instant, ssrc: u32, pkt: JitterPacket) {
        self.counters.received += 1;
        self.update_jitter(now, pkt.timestamp);
        let ext = self.extend(pkt.sequence);
        let Some(next) = self.next.filter(|_| self.ssrc == Some(ssrc)) else {
            self.restart(ssrc, (1 << 16) + u64::from(pkt.sequence));
            self.insert((1 << 16) + u64::from(pkt.sequence), pkt);
            return;
        };
        if ext.abs_diff(next) > u64::from(self.cfg.max_jump) {
            self.restart(ssrc, (1 << 16) + u64::from(pkt.sequence));
            self.insert((1 << 16) + u64::from(pkt.sequence), pkt);
            return;
        }
        if ext < next {
            let back = next - 1 - ext;
            if back < 64 && self.history & (1 << back) != 0 {
                self.counters.duplicate += 1;
            } else {
                self.counters.late += 1;
            }
            return;
        }
        if self.held.contains_key(&ext) {
            self.counters.duplicate += 1;
            return;
        }
        self.insert(ext, pkt);
    }

    fn insert(&mut self, ext: u64, pkt: JitterPacket) {
        self.highest = self.highest.max(ext);
        self.held.insert(ext, pkt);
    }

    fn update_jitter(&mut self, now: Instant, ts: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = (now.duration_since(epoch).as_micros() as u64
            * u64::from(self.cfg.clock_rate)
            / 1_000_000) as i64;
        let transit = arrival - i64::from(ts);
        if let Some(last) = self.last_transit {
            // Timestamps wrap at 2^32: take the difference modulo that.
            let d = ((transit - last) as i32).unsigned_abs() as u64;
            // J += (|D| - J) / 16, kept ×16 (RFC 3550 appendix A.8).
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Moves past slot `ext`; `real` when a packet played in it.
    fn played(&mut self, ext: u64, real: bool) {
        self.history = (self.history << 1) | u64::from(real);
        self.next = Some(ext + 1);
    }

    /// The next thing to play, if it is due at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let next = self.next?;
        if let Some(pkt) = self.held.remove(&next) {
            self.gap_since = None;
            self.played(next, true);
            self.counters.played += 1;
            return Some(Playout::Packet(pkt));
        }
        let (&first, _) = self.held.first_key_value()?;
        let since = *self.gap_since.get_or_insert(now);
        let overfull = self.held.len() > self.cfg.max_packets;
        if !overfull && now < since + self.wait() {
            return None;
        }
        if first - next > u64::from(self.cfg.max_conceal) {
            // Too long to conceal: skip to what we have.
            self.counters.lost += first - next;
            self.history = 0;
            self.next = Some(first);
            return self.pop(now);
        }
        self.played(next, false);
        self.counters.lost += 1;
        // The rest of this gap is past its wait too.
        Some(Playout::Lost {
            sequence: (next & 0xffff) as u16,
        })
    }

    /// When [`pop`](Self::pop) may have something that is not there now.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.next?;
        if self.held.contains_key(&next) || self.held.is_empty() {
            return None;
        }
        self.gap_since.map(|s| s + self.wait())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> JitterPacket {
        JitterPacket {
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            payload_type: 0,
            marker: false,
            payload: vec![seq as u8; 4],
        }
    }

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<Playout> {
        std::iter::from_fn(|| jb.pop(now)).collect()
    }

    fn seqs(out: &[Playout]) -> Vec<i32> {
        out.iter()
            .map(|p| match p {
                Playout::Packet(p) => i32::from(p.sequence),
                Playout::Lost { sequence } => -i32::from(*sequence),
            })
            .collect()
    }

    #[test]
    fn in_order_packets_play_at_once() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for s in 1..=5u16 {
            let now = t0 + Duration::from_millis(20 * u64::from(s));
            jb.push(now, 7, pkt(s));
            assert_eq!(seqs(&drain(&mut jb, now)), vec![i32::from(s)]);
            assert_eq!(jb.poll_timeout(), None);
        }
        assert_eq!(jb.counters.played, 5);
        assert_eq!(jb.jitter(), 0, "perfectly paced stream has no jitter");
    }

    #[test]
    fn reordered_packet_is_waited_for() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(t0, 7, pkt(1));
        jb.push(t0, 7, pkt(3));
        assert_eq!(seqs(&drain(&mut jb, t0)), vec![1]);
        let deadline = jb.poll_timeout().expect("waiting on the gap");
        assert_eq!(deadline, t0 + Duration::from_millis(20));
        let t1 = t0 + Duration::from_millis(5);
        jb.push(t1, 7, pkt(2));
        assert_eq!(seqs(&drain(&mut jb, t1)), vec![2, 3]);
        assert_eq!(jb.counters.lost, 0);
    }

    #[test]
    fn gap_is_concealed_after_the_wait() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(t0, 7, pkt(1));
        jb.push(t0, 7, pkt(4));
        assert_eq!(seqs(&drain(&mut jb, t0)), vec![1]);
        let d = jb.poll_timeout().unwrap();
        assert!(drain(&mut jb, d - Duration::from_millis(1)).is_empty());
        assert_eq!(seqs(&drain(&mut jb, d)), vec![-2, -3, 4]);
        assert_eq!(jb.counters.lost, 2);
        // 2 arrives after being concealed: late, dropped.
        jb.push(d, 7, pkt(2));
        assert!(drain(&mut jb, d).is_empty());
        assert_eq!(jb.counters.late, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(t0, 7, pkt(1));
        jb.push(t0, 7, pkt(3));
        jb.push(t0, 7, pkt(3));
        assert_eq!(seqs(&drain(&mut jb, t0)), vec![1]);
        jb.push(t0, 7, pkt(1));
        assert_eq!(jb.counters.duplicate, 2);
        assert_eq!(jb.counters.late, 0);
    }

    #[test]
    fn sequence_wraps_without_a_restart() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = Vec::new();
        for s in [65534u16, 65535, 1, 0, 2] {
            jb.push(t0, 7, pkt(s));
            out.extend(drain(&mut jb, t0));
        }
        assert_eq!(seqs(&out), vec![65534, 65535, 0, 1, 2]);
        assert_eq!(jb.counters.resets, 0);
    }

    #[test]
    fn jump_or_new_ssrc_restarts() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(t0, 7, pkt(10));
        jb.push(t0, 7, pkt(5000));
        jb.push(t0, 9, pkt(5001));
        jb.push(t0, 9, pkt(5002));
        let out = drain(&mut jb, t0);
        assert_eq!(seqs(&out), vec![5001, 5002]);
        assert_eq!(jb.counters.resets, 2);
    }

    #[test]
    fn long_gap_is_skipped_not_concealed_packet_by_packet() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(t0, 7, pkt(1));
        jb.push(t0, 7, pkt(100));
        drain(&mut jb, t0);
        let d = jb.poll_timeout().unwrap();
        assert_eq!(seqs(&drain(&mut jb, d)), vec![100]);
        assert_eq!(jb.counters.lost, 98);
    }

    #[test]
    fn overfull_buffer_gives_up_the_gap_at_once() {
        let t0 = Instant::now();
        let cfg = JitterConfig {
            max_packets: 4,
            ..JitterConfig::default()
        };
        let mut jb = JitterBuffer::new(cfg);
        jb.push(t0, 7, pkt(1));
        drain(&mut jb, t0);
        for s in 3..=7 {
            jb.push(t0, 7, pkt(s));
        }
        assert_eq!(seqs(&drain(&mut jb, t0)), vec![-2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn wait_adapts_to_jitter_within_bounds() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Arrivals alternate 0 and 40 ms off their 20 ms schedule.
        for s in 0..200u16 {
            let skew = if s % 2 == 0 { 0 } else { 40 };
            let now = t0 + Duration::from_millis(20 * u64::from(s) + skew);
            jb.push(now, 7, pkt(s));
            drain(&mut jb, now);
        }
        // |D| is 320 clock units (40 ms) each time: J converges there.
        assert!((300..=320).contains(&jb.jitter()), "{}", jb.jitter());
        let wait = jb.wait().as_millis();
        assert!((112..=120).contains(&wait), "{wait} ms");
        assert_eq!(jb.counters.played, 200);
    }
}
