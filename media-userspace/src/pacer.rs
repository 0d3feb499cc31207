//! Outbound pacing toward the caller. Sans-IO.
//!
//! The AI sends audio in bursts of any length, usually faster than real
//! time; the pacer queues it and releases one packet interval of samples
//! every `ptime`, filling gaps with silence so the caller's RTP stream
//! stays continuous: sequence numbers step by one per packet and
//! timestamps by the samples each packet covers, across silence, `clear`,
//! DTMF and codec changes (RFC 3550 §5.1). The first packet of each
//! talkspurt carries the marker bit (RFC 3551 §4.1).
//!
//! Marks sit at a position in the queue and are reported once the audio
//! before them has been sent; `clear` drops the queue and reports every
//! pending mark at once, as Twilio Media Streams do.

use crate::dtmf::{DtmfTone, EventPacket};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct PacerConfig {
    pub ptime: Duration,
    /// Samples per packet of the decoded signal (160 at 8 kHz / 20 ms).
    pub frame_samples: usize,
    /// RTP clock units per packet (160 for 20 ms at 8000 Hz).
    pub frame_clock: u32,
    /// Samples the queue holds at most; older audio is dropped beyond.
    pub max_queue_samples: usize,
}

impl PacerConfig {
    /// Codec-independent defaults for `sample_rate` and `ptime`.
    pub fn new(sample_rate: u32, clock_rate: u32, ptime: Duration) -> PacerConfig {
        let ms = ptime.as_millis().max(10) as u32;
        PacerConfig {
            ptime: Duration::from_millis(u64::from(ms)),
            frame_samples: (sample_rate * ms / 1000) as usize,
            frame_clock: clock_rate * ms / 1000,
            // Two minutes of speech queued ahead is far beyond any reply.
            max_queue_samples: sample_rate as usize * 120,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacerCounters {
    pub audio_packets: u64,
    pub silence_packets: u64,
    pub event_packets: u64,
    /// Samples dropped because the queue was full.
    pub overflow_samples: u64,
    /// Samples dropped by `clear`.
    pub cleared_samples: u64,
    /// Ticks that came more than a packet late (the worker was starved).
    pub late_ticks: u64,
}

/// What one tick puts on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub body: OutgoingBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutgoingBody {
    /// One packet interval of audio at the codec's sampling rate
    /// (silence when the AI sent nothing).
    Audio { samples: Vec<i16>, silence: bool },
    /// A telephone-event packet (RFC 4733).
    Event(EventPacket),
}

#[derive(Debug)]
pub struct Pacer {
    cfg: PacerConfig,
    queue: VecDeque<i16>,
    /// Samples ever queued / ever sent (mark positions use these).
    queued_total: u64,
    sent_total: u64,
    marks: VecDeque<(u64, String)>,
    played_marks: VecDeque<String>,
    tones: VecDeque<DtmfTone>,
    tone: Option<(DtmfTone, u32)>,
    sequence: u16,
    timestamp: u32,
    talking: bool,
    /// Audio arrived since the last tick (a short tail waits one tick).
    fed: bool,
    next_due: Option<Instant>,
    pub counters: PacerCounters,
}

impl Pacer {
    pub fn new(cfg: PacerConfig, first_sequence: u16, first_timestamp: u32) -> Pacer {
        Pacer {
            cfg,
            queue: VecDeque::new(),
            queued_total: 0,
            sent_total: 0,
            marks: VecDeque::new(),
            played_marks: VecDeque::new(),
            tones: VecDeque::new(),
            tone: None,
            sequence: first_sequence,
            timestamp: first_timestamp,
            talking: false,
            fed: false,
            next_due: None,
            counters: PacerCounters::default(),
        }
    }

    /// A new codec or packet interval (re-INVITE): sequence and timestamp
    /// carry on; queued audio must already be at the new sampling rate.
    pub fn reconfigure(&mut self, cfg: PacerConfig) {
        self.cfg = cfg;
    }

    /// Converts the queued audio (a codec change to another sampling
    /// rate); pending marks keep their place in the audio.
    pub fn convert_queue(&mut self, convert: impl FnOnce(&[i16]) -> Vec<i16>) {
        let old: Vec<i16> = self.queue.drain(..).collect();
        let new = convert(&old);
        let (n, m) = (old.len() as u64, new.len() as u64);
        for (pos, _) in &mut self.marks {
            let offset = pos.saturating_sub(self.sent_total);
            *pos = self.sent_total + (offset * m).checked_div(n).unwrap_or(0);
        }
        self.queued_total = self.sent_total + m;
        self.queue.extend(new);
    }

    pub fn config(&self) -> &PacerConfig {
        &self.cfg
    }

    /// Samples waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn push_audio(&mut self, samples: &[i16]) {
        self.queue.extend(samples);
        self.queued_total += samples.len() as u64;
        self.fed |= !samples.is_empty();
        let over = self.queue.len().saturating_sub(self.cfg.max_queue_samples);
        if over > 0 {
            self.queue.drain(..over);
            self.sent_total += over as u64;
            self.counters.overflow_samples += over as u64;
            self.release_marks();
        }
    }

    /// A mark after the audio queued so far; reported at once if nothing
    /// is queued.
    pub fn mark(&mut self, name: String) {
        self.marks.push_back((self.queued_total, name));
        self.release_marks();
    }

    /// Drops queued audio; every pending mark is reported now.
    pub fn clear(&mut self) {
        self.counters.cleared_samples += self.queue.len() as u64;
        self.sent_total += self.queue.len() as u64;
        self.queue.clear();
        self.release_marks();
    }

    /// Drops everything queued (audio, tones, marks, played marks not yet
    /// told) without telling any: another AI takes the stream over.
    pub fn reset(&mut self) {
        self.counters.cleared_samples += self.queue.len() as u64;
        self.sent_total += self.queue.len() as u64;
        self.queue.clear();
        self.marks.clear();
        self.played_marks.clear();
        self.tones.clear();
    }

    /// Sends `digit` toward the caller after any digits already queued.
    pub fn queue_dtmf(&mut self, tone: DtmfTone) {
        self.tones.push_back(tone);
    }

    fn release_marks(&mut self) {
        while let Some((pos, _)) = self.marks.front() {
            if *pos > self.sent_total {
                break;
            }
            if let Some((_, name)) = self.marks.pop_front() {
                self.played_marks.push_back(name);
            }
        }
    }

    /// A mark whose audio has been sent.
    pub fn poll_mark(&mut self) -> Option<String> {
        self.played_marks.pop_front()
    }

    /// New speech after silence goes out at once instead of waiting for
    /// the next tick (up to a packet interval of delay before the first
    /// word); the clock re-anchors there. The talkspurt's marker bit lets
    /// the receiver re-align its playout (RFC 3551 §4.1).
    pub fn expedite(&mut self, now: Instant) {
        if !self.talking
            && self.tone.is_none()
            && self.queue.len() >= self.cfg.frame_samples
            && let Some(due) = self.next_due
            && due > now
        {
            self.next_due = Some(now);
        }
    }

    /// Starts the clock: the first packet is due at `now`.
    pub fn start(&mut self, now: Instant) {
        self.next_due.get_or_insert(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_due
    }

    /// The packet due at `now`, if one is.
    pub fn poll_packet(&mut self, now: Instant) -> Option<Outgoing> {
        let due = self.next_due?;
        if now < due {
            return None;
        }
        let behind = now.duration_since(due);
        if behind > self.cfg.ptime * 3 {
            // Starved for several intervals: skip them, but let the
            // timestamp tell the caller how much time passed.
            let skipped = (behind.as_micros() / self.cfg.ptime.as_micros().max(1)) as u32;
            self.timestamp = self
                .timestamp
                .wrapping_add(skipped.saturating_mul(self.cfg.frame_clock));
            self.counters.late_ticks += 1;
            self.next_due = Some(now + self.cfg.ptime);
        } else {
            self.next_due = Some(due + self.cfg.ptime);
        }
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        if let Some((event, timestamp)) = self.next_event() {
            self.counters.event_packets += 1;
            self.talking = false;
            return Some(Outgoing {
                sequence,
                timestamp,
                marker: event.first,
                body: OutgoingBody::Event(event),
            });
        }
        let n = self.cfg.frame_samples;
        let have = self.queue.len();
        let fed = std::mem::take(&mut self.fed);
        let speak = have >= n || (have > 0 && !fed);
        let timestamp = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(self.cfg.frame_clock);
        let (samples, silence) = if speak {
            let take = have.min(n);
            let mut s: Vec<i16> = self.queue.drain(..take).collect();
            s.resize(n, 0);
            self.sent_total += take as u64;
            self.release_marks();
            self.counters.audio_packets += 1;
            (s, false)
        } else {
            self.counters.silence_packets += 1;
            (vec![0; n], true)
        };
        let marker = speak && !self.talking;
        self.talking = speak;
        Some(Outgoing {
            sequence,
            timestamp,
            marker,
            body: OutgoingBody::Audio { samples, silence },
        })
    }

    /// The next event packet while a digit is being sent, with the
    /// event's timestamp (its start, §2.5.1.2).
    fn next_event(&mut self) -> Option<(EventPacket, u32)> {
        if self.tone.is_none() {
            let tone = self.tones.pop_front()?;
            self.tone = Some((tone, self.timestamp));
        }
        let (tone, start) = self.tone.as_mut()?;
        let start = *start;
        let p = tone.next_packet(self.cfg.frame_clock)?;
        if tone.is_done() {
            // Audio resumes at the time the last end packet covers.
            let ticks = tone.packets() * self.cfg.frame_clock;
            self.timestamp = start.wrapping_add(ticks.max(tone.length()));
            self.tone = None;
        }
        Some((p, start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PT: Duration = Duration::from_millis(20);

    fn pacer() -> Pacer {
        Pacer::new(PacerConfig::new(8000, 8000, PT), 1000, 5000)
    }

    fn tick(p: &mut Pacer, now: Instant) -> Outgoing {
        p.poll_packet(now).expect("a packet is due")
    }

    #[test]
    fn silence_then_talkspurt_with_marker_and_continuous_numbering() {
        let t0 = Instant::now();
        let mut p = pacer();
        assert_eq!(p.poll_packet(t0), None, "not started");
        p.start(t0);
        let a = tick(&mut p, t0);
        assert!(matches!(a.body, OutgoingBody::Audio { silence: true, .. }));
        assert!(!a.marker);
        assert_eq!(p.poll_packet(t0 + Duration::from_millis(19)), None);
        p.push_audio(&[7; 320]);
        let b = tick(&mut p, t0 + PT);
        let c = tick(&mut p, t0 + PT * 2);
        let d = tick(&mut p, t0 + PT * 3);
        assert!(b.marker && !c.marker && !d.marker);
        assert_eq!(
            (b.sequence, c.sequence, d.sequence),
            (a.sequence + 1, a.sequence + 2, a.sequence + 3)
        );
        assert_eq!(
            [a.timestamp, b.timestamp, c.timestamp, d.timestamp],
            [5000, 5160, 5320, 5480]
        );
        assert!(
            matches!(&c.body, OutgoingBody::Audio { samples, silence: false } if samples[159] == 7)
        );
        assert!(matches!(d.body, OutgoingBody::Audio { silence: true, .. }));
        assert_eq!(p.poll_timeout(), Some(t0 + PT * 4));
    }

    #[test]
    fn speech_after_silence_goes_out_at_once_and_re_anchors_the_clock() {
        let t0 = Instant::now();
        let mut p = pacer();
        p.start(t0);
        let a = tick(&mut p, t0);
        let t1 = t0 + Duration::from_millis(7);
        p.push_audio(&[4; 480]);
        p.expedite(t1);
        assert_eq!(p.poll_timeout(), Some(t1));
        let b = tick(&mut p, t1);
        assert!(b.marker);
        assert_eq!(b.sequence, a.sequence + 1);
        assert_eq!(b.timestamp, a.timestamp + 160);
        assert_eq!(p.poll_timeout(), Some(t1 + PT));
        // While talking, new audio waits for the clock.
        p.push_audio(&[4; 160]);
        p.expedite(t1 + Duration::from_millis(1));
        assert_eq!(p.poll_timeout(), Some(t1 + PT));
    }

    #[test]
    fn short_tail_waits_one_tick_for_more_then_is_padded() {
        let t0 = Instant::now();
        let mut p = pacer();
        p.start(t0);
        p.push_audio(&[1; 100]);
        let a = tick(&mut p, t0);
        assert!(matches!(a.body, OutgoingBody::Audio { silence: true, .. }));
        p.push_audio(&[2; 100]);
        let b = tick(&mut p, t0 + PT);
        match b.body {
            OutgoingBody::Audio { samples, silence } => {
                assert!(!silence);
                assert_eq!(&samples[..100], &[1; 100][..]);
                assert_eq!(&samples[100..], &[2; 60][..]);
            }
            other => panic!("{other:?}"),
        }
        let c = tick(&mut p, t0 + PT * 2);
        match c.body {
            OutgoingBody::Audio { samples, .. } => {
                assert_eq!(&samples[..40], &[2; 40][..]);
                assert!(samples[40..].iter().all(|&s| s == 0), "padded");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn marks_fire_when_their_audio_has_gone() {
        let t0 = Instant::now();
        let mut p = pacer();
        p.start(t0);
        p.mark("empty".into());
        assert_eq!(p.poll_mark().as_deref(), Some("empty"), "nothing queued");
        p.push_audio(&[1; 320]);
        p.mark("first".into());
        p.push_audio(&[1; 160]);
        p.mark("second".into());
        tick(&mut p, t0);
        assert_eq!(p.poll_mark(), None);
        tick(&mut p, t0 + PT);
        assert_eq!(p.poll_mark().as_deref(), Some("first"));
        assert_eq!(p.poll_mark(), None);
        tick(&mut p, t0 + PT * 2);
        assert_eq!(p.poll_mark().as_deref(), Some("second"));
    }

    #[test]
    fn reset_drops_audio_and_marks_without_telling_them() {
        let t0 = Instant::now();
        let mut p = pacer();
        p.start(t0);
        p.push_audio(&[9; 1600]);
        p.mark("old".into());
        let first = tick(&mut p, t0);
        p.reset();
        assert_eq!(
            p.poll_mark(),
            None,
            "the old AI's mark is not the new one's"
        );
        let next = tick(&mut p, t0 + PT);
        assert!(matches!(
            next.body,
            OutgoingBody::Audio { silence: true, .. }
        ));
        assert_eq!(
            next.sequence,
            first.sequence + 1,
            "the caller's RTP runs on"
        );
        p.mark("new".into());
        assert_eq!(p.poll_mark().as_deref(), Some("new"));
    }

    #[test]
    fn clear_drops_audio_on_the_next_frame_and_releases_marks() {
        let t0 = Instant::now();
        let mut p = pacer();
        p.start(t0);
        p.push_audio(&[9; 1600]);
        p.mark("a".into());
        p.push_audio(&[9; 1600]);
        p.mark("b".into());
        let first = tick(&mut p, t0);
        assert!(first.marker);
        p.clear();
        assert_eq!(p.poll_mark().as_deref(), Some("a"));
        assert_eq!(p.poll_mark().as_deref(), Some("b"));
        let next = tick(&mut p, t0 + PT);
        assert!(matches!(
            next.body,
            OutgoingBody::Audio { silence: true, .. }
        ));
        assert_eq!(next.sequence, first.sequence + 1);
        assert_eq!(next.timestamp, first.timestamp + 160);
        assert_eq!(p.counters.cleared_samples, 3200 - 160);
        // New speech after clear starts a talkspurt.
        p.push_audio(&[3; 160]);
        assert!(tick(&mut p, t0 + PT * 2).marker);
    }

    #[test]
    fn converted_queue_keeps_marks_in_place() {
        let t0 = Instant::now();
        let mut p = pacer();
        p.start(t0);
        p.push_audio(&[1; 160]);
        p.mark("half".into());
        p.push_audio(&[2; 160]);
        p.mark("end".into());
        // Twice the rate: every sample doubled.
        p.convert_queue(|s| s.iter().flat_map(|&x| [x, x]).collect());
        p.reconfigure(PacerConfig::new(16000, 8000, PT));
        assert_eq!(p.queued(), 640);
        tick(&mut p, t0);
        assert_eq!(p.poll_mark().as_deref(), Some("half"));
        assert_eq!(p.poll_mark(), None);
        tick(&mut p, t0 + PT);
        assert_eq!(p.poll_mark().as_deref(), Some("end"));
    }

    #[test]
    fn full_queue_drops_the_oldest_audio() {
        let t0 = Instant::now();
        let mut cfg = PacerConfig::new(8000, 8000, PT);
        cfg.max_queue_samples = 320;
        let mut p = Pacer::new(cfg, 0, 0);
        p.start(t0);
        p.push_audio(&[1; 160]);
        p.mark("gone".into());
        p.push_audio(&[2; 320]);
        assert_eq!(p.counters.overflow_samples, 160);
        assert_eq!(p.poll_mark().as_deref(), Some("gone"));
        match tick(&mut p, t0).body {
            OutgoingBody::Audio { samples, .. } => assert_eq!(samples[0], 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dtmf_interrupts_audio_with_one_event_timestamp() {
        let t0 = Instant::now();
        let mut p = pacer();
        p.start(t0);
        p.push_audio(&[5; 1600]);
        let a = tick(&mut p, t0);
        p.queue_dtmf(DtmfTone::new('1', Duration::from_millis(60), 8000).unwrap());
        let mut events = Vec::new();
        let mut t = t0;
        let after = loop {
            t += PT;
            let o = tick(&mut p, t);
            match o.body {
                OutgoingBody::Event(_) => events.push(o),
                _ => break o,
            }
        };
        // 60 ms: two updates, then the end packet three times.
        assert_eq!(events.len(), 5);
        assert!(events[0].marker && events[1..].iter().all(|e| !e.marker));
        assert!(events.iter().all(|e| e.timestamp == a.timestamp + 160));
        let seqs: Vec<u16> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (1..=5).map(|i| a.sequence + i).collect::<Vec<_>>());
        assert_eq!(after.sequence, a.sequence + 6);
        // Audio resumes after the five packet intervals the event took;
        // the next talkspurt is marked.
        assert_eq!(after.timestamp, a.timestamp + 160 + 5 * 160);
        assert!(after.marker);
    }

    #[test]
    fn starved_worker_skips_intervals_but_time_moves_on() {
        let t0 = Instant::now();
        let mut p = pacer();
        p.start(t0);
        let a = tick(&mut p, t0);
        let b = tick(&mut p, t0 + PT * 10);
        assert_eq!(b.sequence, a.sequence + 1);
        assert_eq!(b.timestamp, a.timestamp + 160 * 10);
        assert_eq!(p.poll_timeout(), Some(t0 + PT * 11));
        assert_eq!(p.counters.late_ticks, 1);
    }
}
