//! A listen-only copy of a relayed call's audio for a WebSocket (Twilio's
//! `<Start><Stream>` with both tracks, started and stopped over REST).
//! Sans-IO: the relay feeds each RTP packet it receives on either side;
//! every [`FRAME_MS`] the tap yields one frame per track (the `twilio`
//! dialect: `inbound` is side A, the party who called or was called
//! first; `outbound` is side B, the party the gateway bridged them to),
//! or one frame of both mixed (the `pcm` dialect, whose binary frames
//! carry no track). A track that sent nothing yields silence, so the two
//! stay aligned in time.
//!
//! Audio is decoded without a jitter buffer: packets are taken in arrival
//! order, which is what a passive listener (a transcriber, a recorder)
//! needs, at no added delay for the call itself.

use crate::aistream::{FRAME_MS, ToAi, Track};
use crate::control::LegMedia;
use crate::relay::Side;
use crate::resample::Resampler;
use crate::rtp::{self, RtpHeader};
use crate::transcode::Decoder;
use std::time::{Duration, Instant};

/// At most this much audio waits per track (a burst after a stall): older
/// samples go first.
const MAX_BUFFER_MS: u32 = 1000;

#[derive(Debug)]
struct TapTrack {
    payload_type: u8,
    decoder: Decoder,
    resampler: Resampler,
    pcm: Vec<i16>,
    decoded: Vec<i16>,
}

impl TapTrack {
    fn new(media: &LegMedia, rate: u32) -> TapTrack {
        TapTrack {
            payload_type: media.payload_type,
            decoder: Decoder::new(media.codec),
            resampler: Resampler::new(media.codec.sample_rate(), rate),
            pcm: Vec::new(),
            decoded: Vec::new(),
        }
    }
}

/// Counters of the tap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TapCounters {
    pub frames: u64,
    /// Samples dropped because a track's buffer was full.
    pub overflow_samples: u64,
}

#[derive(Debug)]
pub struct Tap {
    tracks: [TapTrack; 2],
    rate: u32,
    mixed: bool,
    started: Instant,
    next_frame: Instant,
    frame_index: u64,
    pub counters: TapCounters,
}

impl Tap {
    /// A tap on a relay whose sides negotiated `media`, producing audio at
    /// `rate` Hz, mixed into one track when `mixed`.
    pub fn new(media: [&LegMedia; 2], rate: u32, mixed: bool, now: Instant) -> Tap {
        Tap {
            tracks: [TapTrack::new(media[0], rate), TapTrack::new(media[1], rate)],
            rate,
            mixed,
            started: now,
            next_frame: now + Duration::from_millis(FRAME_MS.into()),
            frame_index: 0,
            counters: TapCounters::default(),
        }
    }

    /// A re-INVITE changed side `side`'s codec or payload type.
    pub fn update(&mut self, side: Side, media: &LegMedia) {
        let t = &mut self.tracks[index(side)];
        if t.payload_type != media.payload_type || t.decoder.codec() != media.codec {
            *t = TapTrack::new(media, self.rate);
        }
    }

    /// An RTP packet as side `side` sent it (before the relay renumbered or
    /// transcoded it). Only the negotiated audio payload type is taken
    /// (not telephone-events, comfort noise or RTCP).
    pub fn on_rtp(&mut self, side: Side, pkt: &[u8]) {
        if rtp::looks_like_rtcp(pkt) {
            return;
        }
        let Ok(h) = RtpHeader::parse(pkt) else {
            return;
        };
        let t = &mut self.tracks[index(side)];
        if h.payload_type != t.payload_type {
            return;
        }
        let payload = &pkt[h.payload_offset..h.payload_offset + h.payload_len];
        t.decoded.clear();
        if !t.decoder.decode(payload, &mut t.decoded) {
            return;
        }
        t.resampler.process(&t.decoded, &mut t.pcm);
        let cap = (self.rate * MAX_BUFFER_MS / 1000) as usize;
        if t.pcm.len() > cap {
            let over = t.pcm.len() - cap;
            t.pcm.drain(..over);
            self.counters.overflow_samples += over as u64;
        }
    }

    /// When the next frame is due.
    pub fn next_deadline(&self) -> Instant {
        self.next_frame
    }

    /// Appends the frames due at `now` to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<ToAi>) {
        let per_frame = (self.rate * FRAME_MS / 1000) as usize;
        while now >= self.next_frame {
            let timestamp_ms = self.frame_index * u64::from(FRAME_MS);
            let [a, b] = self
                .tracks
                .each_mut()
                .map(|t| take_frame(&mut t.pcm, per_frame));
            if self.mixed {
                let samples = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| x.saturating_add(*y))
                    .collect();
                out.push(ToAi::Audio {
                    samples,
                    timestamp_ms,
                    track: Track::Mixed,
                });
            } else {
                out.push(ToAi::Audio {
                    samples: a,
                    timestamp_ms,
                    track: Track::Inbound,
                });
                out.push(ToAi::Audio {
                    samples: b,
                    timestamp_ms,
                    track: Track::Outbound,
                });
            }
            self.counters.frames += 1;
            self.frame_index += 1;
            self.next_frame += Duration::from_millis(FRAME_MS.into());
            // A worker that stalled for long does not replay the gap.
            if now.saturating_duration_since(self.next_frame) > Duration::from_secs(1) {
                let behind =
                    now.duration_since(self.started).as_millis() as u64 / u64::from(FRAME_MS);
                self.frame_index = behind;
                self.next_frame =
                    self.started + Duration::from_millis((behind + 1) * u64::from(FRAME_MS));
            }
        }
    }
}

fn index(s: Side) -> usize {
    match s {
        Side::A => 0,
        Side::B => 1,
    }
}

/// The oldest `n` samples of `pcm`, padded with silence.
fn take_frame(pcm: &mut Vec<i16>, n: usize) -> Vec<i16> {
    let k = n.min(pcm.len());
    let mut frame: Vec<i16> = pcm.drain(..k).collect();
    frame.resize(n, 0);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::g711;

    fn media(codec: Codec, pt: u8) -> LegMedia {
        LegMedia {
            codec,
            payload_type: pt,
            telephone_event: Some(101),
            ptime_ms: 20,
            remote: None,
            send: true,
            srtp: None,
        }
    }

    fn packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        rtp::write_header(&mut p, false, pt, seq, u32::from(seq) * 160, 7);
        p.extend_from_slice(payload);
        p
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn each_track_gets_its_side_and_a_silent_side_pads_with_zeros() {
        let t0 = Instant::now();
        let (a, b) = (media(Codec::Pcmu, 0), media(Codec::Pcma, 8));
        let mut tap = Tap::new([&a, &b], 8000, false, t0);
        tap.on_rtp(Side::A, &packet(0, 1, &[g711::ulaw_encode(1000); 160]));
        let mut out = Vec::new();
        tap.poll(t0 + ms(19), &mut out);
        assert!(out.is_empty(), "nothing before the first 20 ms");
        tap.poll(t0 + ms(20), &mut out);
        match &out[..] {
            [
                ToAi::Audio {
                    samples: sa,
                    track: Track::Inbound,
                    timestamp_ms: 0,
                },
                ToAi::Audio {
                    samples: sb,
                    track: Track::Outbound,
                    timestamp_ms: 0,
                },
            ] => {
                assert_eq!(sa.len(), 160);
                assert!(sa.iter().all(|&s| (s - 1000).abs() < 40), "{sa:?}");
                assert_eq!(sb, &vec![0i16; 160], "side B sent nothing: silence");
            }
            other => panic!("{other:?}"),
        }
        // A-law from side B reaches the outbound track; the wrong payload
        // type (a telephone-event) and garbage are ignored.
        tap.on_rtp(Side::B, &packet(8, 1, &[g711::alaw_encode(-2000); 160]));
        tap.on_rtp(Side::B, &packet(101, 2, &[1, 2, 3, 4]));
        tap.on_rtp(Side::B, &[0x80, 8, 0]);
        out.clear();
        tap.poll(t0 + ms(40), &mut out);
        match &out[1] {
            ToAi::Audio {
                samples,
                track: Track::Outbound,
                timestamp_ms: 20,
            } => assert!(samples.iter().all(|&s| (s + 2000).abs() < 80)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mixed_taps_sum_both_sides_at_the_dialect_rate() {
        let t0 = Instant::now();
        let (a, b) = (media(Codec::Pcmu, 0), media(Codec::Pcmu, 0));
        let mut tap = Tap::new([&a, &b], 16000, true, t0);
        tap.on_rtp(Side::A, &packet(0, 1, &[g711::ulaw_encode(1000); 160]));
        tap.on_rtp(Side::B, &packet(0, 1, &[g711::ulaw_encode(500); 160]));
        let mut out = Vec::new();
        tap.poll(t0 + ms(20), &mut out);
        match &out[..] {
            [
                ToAi::Audio {
                    samples,
                    track: Track::Mixed,
                    ..
                },
            ] => {
                assert_eq!(samples.len(), 320, "20 ms at 16 kHz");
                let mid = &samples[40..280];
                assert!(mid.iter().all(|&s| (s - 1500).abs() < 100), "{mid:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_burst_is_bounded_and_a_stall_does_not_replay_the_gap() {
        let t0 = Instant::now();
        let a = media(Codec::Pcmu, 0);
        let mut tap = Tap::new([&a, &a], 8000, false, t0);
        for seq in 0..100 {
            tap.on_rtp(Side::A, &packet(0, seq, &[0xff; 160]));
        }
        assert_eq!(tap.counters.overflow_samples, 100 * 160 - 8000);
        let mut out = Vec::new();
        tap.poll(t0 + ms(10_000), &mut out);
        assert_eq!(out.len(), 2, "one frame per track, not the 10 s gap");
        assert!(tap.next_deadline() > t0 + ms(10_000));
        assert!(tap.next_deadline() <= t0 + ms(10_020));
    }
}
