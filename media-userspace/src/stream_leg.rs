//! The AI stream leg (route `stream`): the caller's RTP is reordered,
//! decoded and cut into 20 ms frames for the AI; the AI's audio is paced
//! back to the caller as continuous RTP. Sans-IO: the worker feeds
//! datagrams, AI messages and the time, and drains what this returns.

use crate::aistream::{FRAME_MS, FromAi, ToAi, Track};
use crate::control::LegMedia;
use crate::dtmf::{DtmfReceiver, DtmfTone};
use crate::echo::LegCounters;
use crate::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout};
use crate::latch::{Latch, LatchDecision};
use crate::pacer::{OutgoingBody, Pacer, PacerConfig};
use crate::resample::Resampler;
use crate::rtcp::{RtcpSession, WallClock};
use crate::rtp::{self, RtpHeader};
use crate::transcode::{Decoder, Encoder};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Counters specific to stream legs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamCounters {
    /// 20 ms frames sent toward the AI.
    pub frames_to_ai: u64,
    /// Frames made up for lost packets.
    pub concealed_frames: u64,
    /// RTP with a payload type the call did not negotiate.
    pub unknown_payload: u64,
    /// Silence samples inserted for gaps in the caller's timeline.
    pub gap_samples: u64,
    pub dtmf_digits: u64,
    /// Digits the AI asked to send that the call cannot carry (no
    /// telephone-event negotiated).
    pub dtmf_refused: u64,
}

/// A gap in the caller's timestamps longer than this is a new timeline,
/// not silence to fill.
const MAX_FILL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct StreamLeg {
    media: LegMedia,
    latch: Latch,
    ssrc: u32,
    jitter: JitterBuffer,
    dtmf_rx: DtmfReceiver,
    decoder: Decoder,
    encoder: Encoder,
    ai_rate: u32,
    /// Caller audio (codec rate) → AI rate, and back.
    up: Resampler,
    down: Resampler,
    /// Resampled caller audio not yet cut into a frame.
    uplink: Vec<i16>,
    frame_len: usize,
    /// Next expected RTP timestamp of caller audio.
    expected_ts: Option<u32>,
    /// Last decoded packet, for concealment; consecutive losses.
    last_pcm: Vec<i16>,
    losses: u32,
    pacer: Pacer,
    rtcp: RtcpSession,
    clock: WallClock,
    /// Where the peer's RTCP comes from (symmetric RTCP), once it has.
    rtcp_peer: Option<SocketAddr>,
    rtcp_out: VecDeque<(SocketAddr, Vec<u8>)>,
    to_ai: VecDeque<ToAi>,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Both tracks, while the call is recorded.
    recorder: Option<crate::recorder::Recorder>,
    scratch: Vec<i16>,
    pub counters: LegCounters,
    pub stream: StreamCounters,
}

fn pacer_config(media: &LegMedia) -> PacerConfig {
    PacerConfig::new(
        media.codec.sample_rate(),
        media.codec.rtp_clock_rate(),
        Duration::from_millis(u64::from(media.ptime_ms.clamp(10, 60))),
    )
}

impl StreamLeg {
    /// `clock` maps the times this leg is fed to wall-clock time (RTCP).
    pub fn new(media: &LegMedia, ai_rate: u32, ssrc: u32, clock: WallClock) -> StreamLeg {
        // Our RTCP SDES CNAME (RFC 3550 §6.5.1).
        let cname = format!("gw-{ssrc:08x}@voice-gateway");
        let rate = media.codec.sample_rate();
        StreamLeg {
            media: *media,
            latch: Latch::new(media.remote),
            ssrc,
            jitter: JitterBuffer::new(JitterConfig {
                clock_rate: media.codec.rtp_clock_rate(),
                ..JitterConfig::default()
            }),
            dtmf_rx: DtmfReceiver::new(media.codec.rtp_clock_rate()),
            decoder: Decoder::new(media.codec),
            encoder: Encoder::new(media.codec),
            ai_rate,
            up: Resampler::new(rate, ai_rate),
            down: Resampler::new(ai_rate, rate),
            uplink: Vec::new(),
            frame_len: (ai_rate * FRAME_MS / 1000) as usize,
            expected_ts: None,
            last_pcm: Vec::new(),
            losses: 0,
            pacer: Pacer::new(pacer_config(media), rand::random(), rand::random()),
            rtcp: RtcpSession::new(ssrc, cname, media.codec.rtp_clock_rate()),
            clock,
            rtcp_peer: None,
            rtcp_out: VecDeque::new(),
            to_ai: VecDeque::new(),
            transmit: VecDeque::new(),
            recorder: None,
            scratch: Vec::new(),
            counters: LegCounters::default(),
            stream: StreamCounters::default(),
        }
    }

    /// A re-INVITE changed the stream: new address, hold, or codec. RTP
    /// numbering carries on.
    pub fn update(&mut self, media: &LegMedia) {
        self.latch.reset(media.remote);
        if media.codec != self.media.codec {
            let rate = media.codec.sample_rate();
            let old_rate = self.media.codec.sample_rate();
            if rate != old_rate {
                // A WAV has one rate: the recording ends here, whole.
                if self.recorder.take().is_some() {
                    tracing::info!("codec rate changed: the call's recording ends here");
                }
                // AI audio queued at the old rate plays at the new one.
                let mut r = Resampler::new(old_rate, rate);
                self.pacer.convert_queue(|s| {
                    let mut out = Vec::with_capacity(s.len() * rate as usize / old_rate as usize);
                    r.process(s, &mut out);
                    out
                });
            }
            self.decoder = Decoder::new(media.codec);
            self.encoder = Encoder::new(media.codec);
            self.up = Resampler::new(rate, self.ai_rate);
            self.down = Resampler::new(self.ai_rate, rate);
            self.expected_ts = None;
            self.last_pcm.clear();
        }
        self.pacer.reconfigure(pacer_config(media));
        self.media = *media;
    }

    pub fn last_rx(&self) -> Option<Instant> {
        self.latch.last_rx()
    }

    pub fn jitter(&self) -> &JitterBuffer {
        &self.jitter
    }

    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// A datagram from the caller.
    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, pkt: &[u8]) {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += pkt.len() as u64;
        if rtp::looks_like_rtcp(pkt) {
            // RTCP multiplexed on the RTP port (RFC 5761), from the latched
            // peer only.
            if self.latch.is_peer_rtcp(from, pkt) {
                self.rtcp.on_rtcp(now, pkt);
            } else {
                self.counters.rejected_source += 1;
            }
            return;
        }
        let Ok(h) = RtpHeader::parse(pkt) else {
            self.counters.malformed += 1;
            return;
        };
        if self.latch.on_packet(now, from, h.ssrc, h.sequence) == LatchDecision::Reject {
            self.counters.rejected_source += 1;
            return;
        }
        self.rtcp.on_rtp_received(now, h.ssrc, h.sequence);
        let pt = h.payload_type;
        if pt != self.media.payload_type && Some(pt) != self.media.telephone_event {
            self.stream.unknown_payload += 1;
            return;
        }
        let payload = pkt[h.payload_offset..h.payload_offset + h.payload_len].to_vec();
        self.jitter.push(
            now,
            h.ssrc,
            JitterPacket {
                sequence: h.sequence,
                timestamp: h.timestamp,
                payload_type: pt,
                marker: h.marker,
                payload,
            },
        );
        self.play(now);
    }

    /// Moves what the jitter buffer releases toward the AI.
    fn play(&mut self, now: Instant) {
        while let Some(p) = self.jitter.pop(now) {
            match p {
                Playout::Packet(p) if Some(p.payload_type) == self.media.telephone_event => {
                    for d in self.dtmf_rx.on_packet(now, p.timestamp, &p.payload) {
                        self.stream.dtmf_digits += 1;
                        self.to_ai.push_back(ToAi::Dtmf {
                            digit: d.digit,
                            duration_ms: d.duration_ms,
                        });
                    }
                }
                Playout::Packet(p) => self.on_audio(p.timestamp, &p.payload),
                Playout::Lost { .. } => self.conceal(),
            }
        }
    }

    /// Samples of decoded audio per RTP clock unit (2 for G.722).
    fn samples_per_tick(&self) -> u32 {
        (self.media.codec.sample_rate() / self.media.codec.rtp_clock_rate()).max(1)
    }

    fn on_audio(&mut self, ts: u32, payload: &[u8]) {
        let mut pcm = std::mem::take(&mut self.scratch);
        pcm.clear();
        if !self.decoder.decode(payload, &mut pcm) {
            self.stream.unknown_payload += 1;
            self.scratch = pcm;
            return;
        }
        let per_tick = self.samples_per_tick();
        if let Some(expected) = self.expected_ts {
            let gap = ts.wrapping_sub(expected) as i32;
            let max = MAX_FILL.as_millis() as i32 * self.media.codec.rtp_clock_rate() as i32 / 1000;
            if gap > 0 && gap <= max {
                // Silence suppression, DTMF or a skipped packet: keep the
                // AI's timeline in step with the caller's.
                let fill = vec![0i16; (gap as u32 * per_tick) as usize];
                self.stream.gap_samples += fill.len() as u64;
                self.feed_uplink(&fill);
            }
        }
        self.expected_ts = Some(ts.wrapping_add(pcm.len() as u32 / per_tick));
        self.feed_uplink(&pcm);
        self.losses = 0;
        self.last_pcm.clear();
        self.last_pcm.extend_from_slice(&pcm);
        self.scratch = pcm;
    }

    /// A lost packet: repeat the last one, 6 dB quieter each time, then
    /// silence (a simple packet loss concealment).
    fn conceal(&mut self) {
        if self.last_pcm.is_empty() {
            return;
        }
        self.losses += 1;
        self.stream.concealed_frames += 1;
        let shift = self.losses.min(15);
        let filler: Vec<i16> = self.last_pcm.iter().map(|&s| s >> shift).collect();
        let per_tick = self.samples_per_tick();
        if let Some(e) = &mut self.expected_ts {
            *e = e.wrapping_add(filler.len() as u32 / per_tick);
        }
        self.feed_uplink(&filler);
    }

    /// Records the caller and what the caller hears from now on, at the
    /// call's codec rate.
    pub fn record(&mut self, spec: crate::recorder::RecordingSpec, done: crate::recorder::Done) {
        let rate = self.media.codec.sample_rate();
        self.recorder = Some(crate::recorder::Recorder::start(spec, rate, done));
    }

    fn feed_uplink(&mut self, pcm: &[i16]) {
        if let Some(r) = self.recorder.as_mut() {
            r.caller(pcm);
        }
        self.up.process(pcm, &mut self.uplink);
        let mut start = 0;
        while self.uplink.len() - start >= self.frame_len {
            let samples = self.uplink[start..start + self.frame_len].to_vec();
            start += self.frame_len;
            let timestamp_ms = self.stream.frames_to_ai * u64::from(FRAME_MS);
            self.stream.frames_to_ai += 1;
            self.to_ai.push_back(ToAi::Audio {
                samples,
                timestamp_ms,
                track: Track::Inbound,
            });
        }
        self.uplink.drain(..start);
    }

    /// A message from the AI.
    pub fn on_ai(&mut self, now: Instant, msg: FromAi) {
        match msg {
            FromAi::Connected => self.pacer.start(now),
            FromAi::Audio(samples) => {
                let mut pcm = std::mem::take(&mut self.scratch);
                pcm.clear();
                self.down.process(&samples, &mut pcm);
                self.pacer.push_audio(&pcm);
                self.pacer.expedite(now);
                self.scratch = pcm;
            }
            FromAi::Mark { name } => self.pacer.mark(name),
            FromAi::Clear => self.pacer.clear(),
            FromAi::Reset => self.pacer.reset(),
            FromAi::SendDtmf {
                digits,
                duration_ms,
            } => {
                for d in digits.chars() {
                    if !self.send_dtmf(d, Duration::from_millis(u64::from(duration_ms))) {
                        self.stream.dtmf_refused += 1;
                    }
                }
            }
            // Call control: the socket task hands it to the signalling
            // core, never to the leg.
            FromAi::Transfer { .. } | FromAi::Hangup => {}
        }
        self.collect_marks();
    }

    fn collect_marks(&mut self) {
        while let Some(name) = self.pacer.poll_mark() {
            self.to_ai.push_back(ToAi::Mark { name });
        }
    }

    /// A digit from SIP INFO (application/dtmf-relay): reported like an
    /// RFC 4733 one.
    pub fn on_info_dtmf(&mut self, digit: char, duration_ms: u32) {
        self.stream.dtmf_digits += 1;
        self.to_ai.push_back(ToAi::Dtmf { digit, duration_ms });
    }

    /// Sends a digit toward the caller as RFC 4733 events; false when the
    /// call negotiated no telephone-event.
    pub fn send_dtmf(&mut self, digit: char, duration: Duration) -> bool {
        if self.media.telephone_event.is_none() {
            return false;
        }
        let Some(tone) = DtmfTone::new(digit, duration, self.media.codec.rtp_clock_rate()) else {
            return false;
        };
        self.pacer.queue_dtmf(tone);
        true
    }

    /// Timers: playout gaps, DTMF without an end, the pacing clock.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.play(now);
        if let Some(d) = self.dtmf_rx.on_timeout(now) {
            self.stream.dtmf_digits += 1;
            self.to_ai.push_back(ToAi::Dtmf {
                digit: d.digit,
                duration_ms: d.duration_ms,
            });
        }
        while let Some(out) = self.pacer.poll_packet(now) {
            let target = self.latch.target().filter(|_| self.media.send);
            // One allocation: header, then the encoded payload.
            let mut pkt = Vec::with_capacity(rtp::HEADER_LEN + self.pacer.config().frame_samples);
            pkt.resize(rtp::HEADER_LEN, 0);
            let pt = match &out.body {
                OutgoingBody::Audio { samples, .. } => {
                    if let Some(r) = self.recorder.as_mut() {
                        r.heard(samples);
                    }
                    if !self.encoder.encode(samples, &mut pkt) {
                        continue;
                    }
                    self.media.payload_type
                }
                OutgoingBody::Event(e) => {
                    // A digit's frame is silence on the recording, so the
                    // tracks stay aligned.
                    if let Some(r) = self.recorder.as_mut() {
                        r.heard(&vec![0; self.pacer.config().frame_samples]);
                    }
                    let Some(te) = self.media.telephone_event else {
                        continue;
                    };
                    pkt.extend_from_slice(&e.payload.encode());
                    te
                }
            };
            rtp::write_header(
                &mut pkt,
                out.marker,
                pt,
                out.sequence,
                out.timestamp,
                self.ssrc,
            );
            if let Some(to) = target {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += pkt.len() as u64;
                self.rtcp
                    .on_rtp_sent(now, out.timestamp, pkt.len() - rtp::HEADER_LEN);
                self.transmit.push_back((to, pkt));
            }
        }
        self.collect_marks();
        let jitter = self.jitter.jitter();
        if let Some(report) = self.rtcp.poll_report(now, self.clock.wall_at(now), jitter)
            && let Some(to) = self.rtcp_target()
        {
            self.rtcp_out.push_back((to, report));
        }
    }

    /// The peer's RTCP address: where its RTCP comes from, else the RTP
    /// address's port + 1 (RFC 3550 §11).
    fn rtcp_target(&self) -> Option<SocketAddr> {
        self.rtcp_peer.or_else(|| {
            let mut a = self.latch.target()?;
            a.set_port(a.port().checked_add(1)?);
            Some(a)
        })
    }

    /// A datagram on the leg's RTCP port.
    pub fn on_rtcp_datagram(&mut self, now: Instant, from: SocketAddr, pkt: &[u8]) {
        // Only the latched peer's RTCP is taken; where it comes from is
        // where ours goes.
        if !self.latch.is_peer_rtcp(from, pkt) {
            self.counters.rejected_source += 1;
            return;
        }
        self.rtcp_peer = Some(from);
        self.rtcp.on_rtcp(now, pkt);
    }

    /// A compound RTCP report to send from the RTCP port.
    pub fn poll_rtcp(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.rtcp_out.pop_front()
    }

    pub fn rtcp(&self) -> &RtcpSession {
        &self.rtcp
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.jitter.poll_timeout(),
            self.dtmf_rx.poll_timeout(),
            self.pacer.poll_timeout(),
            self.rtcp.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmit.pop_front()
    }

    pub fn poll_to_ai(&mut self) -> Option<ToAi> {
        self.to_ai.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::dtmf::EventPayload;
    use crate::g711;

    const CALLER: &str = "127.0.0.1:40000";

    fn clock() -> WallClock {
        WallClock {
            at: Instant::now(),
            wall: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn media(codec: Codec, pt: u8) -> LegMedia {
        LegMedia {
            codec,
            payload_type: pt,
            telephone_event: Some(101),
            ptime_ms: 20,
            remote: Some(CALLER.parse().unwrap()),
            send: true,
            srtp: None,
        }
    }

    fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        rtp::write_header(&mut p, false, pt, seq, ts, 0xabc);
        p.extend_from_slice(payload);
        p
    }

    fn audio_frames(leg: &mut StreamLeg) -> Vec<(Vec<i16>, u64)> {
        std::iter::from_fn(|| leg.poll_to_ai())
            .filter_map(|m| match m {
                ToAi::Audio {
                    samples,
                    timestamp_ms,
                    ..
                } => Some((samples, timestamp_ms)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pcma_30ms_packets_become_exact_20ms_frames() {
        let t0 = Instant::now();
        let from = CALLER.parse().unwrap();
        let mut leg = StreamLeg::new(&media(Codec::Pcma, 8), 8000, 1, clock());
        let codes: Vec<u8> = (0..=255u8).cycle().take(240 * 4).collect();
        for (i, chunk) in codes.chunks(240).enumerate() {
            let pkt = rtp(8, i as u16, 1000 + 240 * i as u32, chunk);
            leg.on_datagram(t0 + Duration::from_millis(30 * i as u64), from, &pkt);
        }
        let frames = audio_frames(&mut leg);
        assert_eq!(frames.len(), 6);
        assert_eq!(
            frames.iter().map(|f| f.1).collect::<Vec<_>>(),
            vec![0, 20, 40, 60, 80, 100]
        );
        let got: Vec<i16> = frames.into_iter().flat_map(|f| f.0).collect();
        let expect: Vec<i16> = codes.iter().map(|&c| g711::alaw_decode(c)).collect();
        assert_eq!(got, expect, "sample-exact");
    }

    #[test]
    fn a_spoofed_stream_reaches_neither_the_ai_nor_the_call() {
        let t0 = Instant::now();
        let from = CALLER.parse().unwrap();
        let evil: SocketAddr = "127.0.0.9:40000".parse().unwrap();
        let mut leg = StreamLeg::new(&media(Codec::Pcmu, 0), 8000, 1, clock());
        let caller = vec![g711::ulaw_encode(1000); 160];
        let spoof = vec![g711::ulaw_encode(-7000); 160];
        for i in 0..50u16 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            leg.on_datagram(at, from, &rtp(0, i, 160 * u32::from(i), &caller));
            // Its own in-sequence stream, and RTCP naming no SSRC we know.
            let mut p = rtp(0, 900 + i, 0, &spoof);
            p[8..12].copy_from_slice(&0xbadu32.to_be_bytes());
            leg.on_datagram(at, evil, &p);
            leg.on_datagram(at, evil, &[0x80, 200, 0, 1, 0, 0, 0x0b, 0xad]);
            leg.on_rtcp_datagram(at, evil, &[0x80, 200, 0, 1, 0, 0, 0x0b, 0xad]);
        }
        let q = g711::ulaw_decode(g711::ulaw_encode(1000));
        let frames = audio_frames(&mut leg);
        assert!(!frames.is_empty());
        assert!(
            frames.iter().all(|f| f.0.iter().all(|&v| v == q)),
            "only the caller's audio reaches the AI"
        );
        assert_eq!(leg.latch.target(), Some(from));
        assert_eq!(
            leg.counters.rejected_source, 150,
            "RTP, multiplexed RTCP, RTCP"
        );
        assert!(leg.rtcp_target().is_some_and(|t| t.ip() == from.ip()));
    }

    #[test]
    fn reordered_packets_are_put_back_in_order_and_loss_concealed() {
        let t0 = Instant::now();
        let from = CALLER.parse().unwrap();
        let mut leg = StreamLeg::new(&media(Codec::Pcmu, 0), 8000, 1, clock());
        let frame = |v: i16| vec![g711::ulaw_encode(v); 160];
        leg.on_datagram(t0, from, &rtp(0, 1, 160, &frame(1000)));
        leg.on_datagram(t0, from, &rtp(0, 3, 480, &frame(3000)));
        leg.on_datagram(t0, from, &rtp(0, 2, 320, &frame(2000)));
        leg.on_datagram(t0, from, &rtp(0, 5, 800, &frame(5000)));
        let first: Vec<i16> = audio_frames(&mut leg).iter().map(|f| f.0[0]).collect();
        let q = |v| g711::ulaw_decode(g711::ulaw_encode(v));
        assert_eq!(first, vec![q(1000), q(2000), q(3000)]);
        // Packet 4 never comes: concealed after the wait, then 5 plays.
        let deadline = leg.poll_timeout().unwrap();
        leg.handle_timeout(deadline);
        let rest: Vec<(i16, u64)> = audio_frames(&mut leg)
            .iter()
            .map(|f| (f.0[0], f.1))
            .collect();
        assert_eq!(rest, vec![(q(3000) >> 1, 60), (q(5000), 80)]);
        assert_eq!(leg.stream.concealed_frames, 1);
    }

    #[test]
    fn dtmf_events_are_one_digit_and_keep_the_timeline() {
        let t0 = Instant::now();
        let from = CALLER.parse().unwrap();
        let mut leg = StreamLeg::new(&media(Codec::Pcmu, 0), 8000, 1, clock());
        leg.on_datagram(t0, from, &rtp(0, 1, 0, &[0xff; 160]));
        let ev = |end, d| {
            EventPayload {
                event: 9,
                end,
                volume: 10,
                duration: d,
            }
            .encode()
        };
        leg.on_datagram(t0, from, &rtp(101, 2, 160, &ev(false, 160)));
        leg.on_datagram(t0, from, &rtp(101, 3, 160, &ev(false, 320)));
        for s in 4..7 {
            leg.on_datagram(t0, from, &rtp(101, s, 160, &ev(true, 480)));
        }
        leg.on_datagram(t0, from, &rtp(0, 7, 640, &[0xff; 160]));
        let msgs: Vec<ToAi> = std::iter::from_fn(|| leg.poll_to_ai()).collect();
        let digits: Vec<&ToAi> = msgs
            .iter()
            .filter(|m| matches!(m, ToAi::Dtmf { .. }))
            .collect();
        assert_eq!(
            digits,
            vec![&ToAi::Dtmf {
                digit: '9',
                duration_ms: 60
            }]
        );
        // 20 ms audio + 60 ms filled for the tone + 20 ms audio.
        let stamps: Vec<u64> = msgs
            .iter()
            .filter_map(|m| match m {
                ToAi::Audio { timestamp_ms, .. } => Some(*timestamp_ms),
                _ => None,
            })
            .collect();
        assert_eq!(stamps, vec![0, 20, 40, 60, 80]);
    }

    #[test]
    fn ai_audio_is_paced_to_the_caller_with_marks() {
        let t0 = Instant::now();
        let mut leg = StreamLeg::new(&media(Codec::Pcmu, 0), 8000, 77, clock());
        leg.on_ai(t0, FromAi::Connected);
        leg.on_ai(t0, FromAi::Audio(vec![1000; 400]));
        leg.on_ai(t0, FromAi::Mark { name: "end".into() });
        let mut sent = Vec::new();
        let mut marks_at = None;
        for i in 0..5u32 {
            let now = t0 + Duration::from_millis(20 * u64::from(i));
            assert_eq!(leg.poll_timeout(), Some(now));
            leg.handle_timeout(now);
            while let Some((to, pkt)) = leg.poll_transmit() {
                assert_eq!(to, CALLER.parse().unwrap());
                sent.push(pkt);
            }
            if std::iter::from_fn(|| leg.poll_to_ai())
                .any(|m| m == ToAi::Mark { name: "end".into() })
            {
                marks_at.get_or_insert(i);
            }
        }
        assert_eq!(sent.len(), 5);
        let hdrs: Vec<RtpHeader> = sent.iter().map(|p| RtpHeader::parse(p).unwrap()).collect();
        assert!(hdrs[0].marker && hdrs[1..].iter().all(|h| !h.marker));
        assert!(
            hdrs.windows(2)
                .all(|w| w[1].sequence == w[0].sequence.wrapping_add(1)
                    && w[1].timestamp == w[0].timestamp.wrapping_add(160))
        );
        assert!(hdrs.iter().all(|h| h.ssrc == 77 && h.payload_type == 0));
        // 400 samples: two full frames, then the tail padded with silence
        // (nothing more came), and the mark right after it.
        assert_eq!(marks_at, Some(2));
        let tail = &sent[2][12..];
        assert_eq!(
            g711::ulaw_decode(tail[79]),
            g711::ulaw_decode(g711::ulaw_encode(1000))
        );
        assert_eq!(tail[80], g711::ulaw_encode(0));
    }

    #[test]
    fn dtmf_toward_the_caller_needs_telephone_event() {
        let mut m = media(Codec::Pcmu, 0);
        m.telephone_event = None;
        let mut leg = StreamLeg::new(&m, 8000, 1, clock());
        assert!(!leg.send_dtmf('1', Duration::from_millis(100)));
        let mut leg = StreamLeg::new(&media(Codec::Pcmu, 0), 8000, 1, clock());
        assert!(leg.send_dtmf('1', Duration::from_millis(100)));
        assert!(!leg.send_dtmf('x', Duration::from_millis(100)));
    }

    #[test]
    fn wideband_ai_rate_is_resampled_both_ways() {
        let t0 = Instant::now();
        let from = CALLER.parse().unwrap();
        let mut leg = StreamLeg::new(&media(Codec::Pcmu, 0), 16000, 1, clock());
        for i in 0..10u16 {
            leg.on_datagram(t0, from, &rtp(0, i, u32::from(i) * 160, &[0xff; 160]));
        }
        let frames = audio_frames(&mut leg);
        assert!(frames.iter().all(|f| f.0.len() == 320), "20 ms at 16 kHz");
        assert!(frames.len() >= 9);
        leg.on_ai(t0, FromAi::Connected);
        leg.on_ai(t0, FromAi::Audio(vec![0; 3200]));
        assert_eq!(leg.pacer().queued(), 1600, "100 ms at 8 kHz");
    }

    #[test]
    fn rtcp_reports_go_to_the_rtcp_port_with_reception_stats() {
        let t0 = Instant::now();
        let from: SocketAddr = CALLER.parse().unwrap();
        let mut leg = StreamLeg::new(&media(Codec::Pcmu, 0), 8000, 5, clock());
        leg.on_ai(t0, FromAi::Connected);
        for i in 0..10u16 {
            leg.on_datagram(t0, from, &rtp(0, i * 2, u32::from(i) * 320, &[0xff; 160]));
        }
        let due = t0 + crate::rtcp::INTERVAL / 2;
        let mut t = t0;
        while t <= due {
            leg.handle_timeout(t);
            while leg.poll_transmit().is_some() {}
            t += Duration::from_millis(20);
        }
        let (to, report) = leg.poll_rtcp().expect("a report is due");
        assert_eq!(to, "127.0.0.1:40001".parse().unwrap(), "RTP port + 1");
        assert_eq!(report[1], 200, "SR: we have been sending");
        // One report block on the caller's SSRC: 9 of 19 lost.
        assert_eq!(report[0] & 0x1f, 1);
        assert_eq!(&report[28..32], &0xabcu32.to_be_bytes());
        assert_eq!(
            i32::from_be_bytes([0, report[33], report[34], report[35]]),
            9
        );
        // The caller's RTCP from elsewhere on its host becomes the target.
        let rr = [0x80, 201, 0, 1, 0, 0, 0x0a, 0xbc];
        leg.on_rtcp_datagram(t, "127.0.0.1:40009".parse().unwrap(), &rr);
        assert_eq!(leg.rtcp().counters.received, 1);
        assert_eq!(leg.rtcp_target(), Some("127.0.0.1:40009".parse().unwrap()));
    }

    #[test]
    fn codec_change_keeps_numbering_and_converts_queued_ai_audio() {
        let t0 = Instant::now();
        let mut leg = StreamLeg::new(&media(Codec::Pcmu, 0), 8000, 3, clock());
        leg.on_ai(t0, FromAi::Connected);
        leg.on_ai(t0, FromAi::Audio(vec![500; 1760]));
        leg.handle_timeout(t0);
        let (_, a) = leg.poll_transmit().unwrap();
        assert_eq!(leg.pacer().queued(), 1600);
        // A re-INVITE moves the call to G.722 (16 kHz audio, 8 kHz clock).
        leg.update(&media(Codec::G722, 9));
        assert_eq!(
            leg.pacer().queued(),
            3200,
            "queued audio resampled to 16 kHz"
        );
        let due = leg.poll_timeout().unwrap();
        leg.handle_timeout(due);
        let (_, b) = leg.poll_transmit().unwrap();
        let (ha, hb) = (RtpHeader::parse(&a).unwrap(), RtpHeader::parse(&b).unwrap());
        assert_eq!(hb.payload_type, 9);
        assert_eq!(hb.sequence, ha.sequence.wrapping_add(1));
        assert_eq!(hb.timestamp, ha.timestamp.wrapping_add(160));
        assert_eq!(b.len() - 12, 160, "20 ms of G.722 is 160 octets");
    }

    #[test]
    fn garbage_and_foreign_payloads_are_counted() {
        let t0 = Instant::now();
        let from = CALLER.parse().unwrap();
        let mut leg = StreamLeg::new(&media(Codec::Pcmu, 0), 8000, 1, clock());
        leg.on_datagram(t0, from, &[1, 2, 3]);
        leg.on_datagram(t0, from, &rtp(18, 1, 0, &[0; 20]));
        assert_eq!(leg.counters.malformed, 1);
        assert_eq!(leg.stream.unknown_payload, 1);
        assert!(leg.poll_to_ai().is_none());
    }
}
