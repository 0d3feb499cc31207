//! Per-leg codec state: RTP payloads to linear PCM at the codec's sampling
//! rate and back. G.711 is stateless; stateful codecs keep their state
//! here, one instance per direction. [`Transcoder`] turns one codec's
//! payloads into another's for a relay whose sides negotiated different
//! codecs.

use crate::codec::Codec;
use crate::g711;
use crate::g722::{G722Decoder, G722Encoder};
use crate::resample::Resampler;

#[derive(Debug)]
pub struct Decoder {
    codec: Codec,
    g722: Option<Box<G722Decoder>>,
}

#[derive(Debug)]
pub struct Encoder {
    codec: Codec,
    g722: Option<Box<G722Encoder>>,
}

/// Whether the media engine can decode and encode `codec` (streams and
/// transcoding need it; echo and relay do not).
pub fn can_transcode(codec: Codec) -> bool {
    matches!(codec, Codec::Pcmu | Codec::Pcma | Codec::G722)
}

impl Decoder {
    pub fn new(codec: Codec) -> Decoder {
        Decoder {
            codec,
            g722: (codec == Codec::G722).then(Box::default),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Appends the decoded samples; false if the codec is not supported.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> bool {
        match self.codec {
            Codec::Pcmu => out.extend(payload.iter().map(|&c| g711::ulaw_decode(c))),
            Codec::Pcma => out.extend(payload.iter().map(|&c| g711::alaw_decode(c))),
            Codec::G722 => match &mut self.g722 {
                Some(d) => d.decode(payload, out),
                None => return false,
            },
        }
        true
    }
}

impl Encoder {
    pub fn new(codec: Codec) -> Encoder {
        Encoder {
            codec,
            g722: (codec == Codec::G722).then(Box::default),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Appends the encoded payload; false if the codec is not supported.
    pub fn encode(&mut self, samples: &[i16], out: &mut Vec<u8>) -> bool {
        match self.codec {
            Codec::Pcmu => out.extend(samples.iter().map(|&s| g711::ulaw_encode(s))),
            Codec::Pcma => out.extend(samples.iter().map(|&s| g711::alaw_encode(s))),
            Codec::G722 => match &mut self.g722 {
                Some(e) => e.encode(samples, out),
                None => return false,
            },
        }
        true
    }
}

/// Rewrites RTP payloads from one codec to another in place: decode,
/// resample, encode. All our codecs run at 64 kbit/s on an 8 kHz RTP
/// clock, so a payload keeps its length and the packet its timestamp,
/// sequence number and SSRC. One per direction (G.722 keeps state).
#[derive(Debug)]
pub struct Transcoder {
    decoder: Decoder,
    resampler: Resampler,
    encoder: Encoder,
    /// Audio at the target rate not yet sent; the resampler's output per
    /// packet varies by a sample or two.
    pcm: Vec<i16>,
    decoded: Vec<i16>,
    out: Vec<u8>,
}

impl Transcoder {
    pub fn new(from: Codec, to: Codec) -> Transcoder {
        Transcoder {
            decoder: Decoder::new(from),
            resampler: Resampler::new(from.sample_rate(), to.sample_rate()),
            encoder: Encoder::new(to),
            pcm: Vec::new(),
            decoded: Vec::new(),
            out: Vec::new(),
        }
    }

    /// (from, to).
    pub fn codecs(&self) -> (Codec, Codec) {
        (self.decoder.codec(), self.encoder.codec())
    }

    /// Converts `payload` in place; false (payload untouched) if a codec
    /// is not supported.
    pub fn convert(&mut self, payload: &mut [u8]) -> bool {
        self.decoded.clear();
        if !self.decoder.decode(payload, &mut self.decoded) {
            return false;
        }
        self.resampler.process(&self.decoded, &mut self.pcm);
        // 8 bits per 8 kHz sample: a payload of n bytes is n/8000 s.
        let need = payload.len() * self.encoder.codec().sample_rate() as usize / 8000;
        if self.pcm.len() < need {
            // The resampler's start-up delay (and later a sample of its
            // jitter): silence in front, once, rather than a gap each time.
            let short = need - self.pcm.len();
            self.pcm.splice(0..0, std::iter::repeat_n(0, short));
        }
        self.out.clear();
        if !self.encoder.encode(&self.pcm[..need], &mut self.out) || self.out.len() != payload.len()
        {
            return false;
        }
        self.pcm.drain(..need);
        // Never more than a packet's worth of lag.
        if self.pcm.len() > need {
            let over = self.pcm.len() - need;
            self.pcm.drain(..over);
        }
        payload.copy_from_slice(&self.out);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, rate: u32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                ((2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() * 8000.0)
                    as i16
            })
            .collect()
    }

    /// Energy of `hz` in `s` relative to all of `s` (a single-bin DFT).
    fn share(s: &[i16], hz: f64, rate: u32) -> f64 {
        let (mut re, mut im, mut total) = (0.0, 0.0, 0.0);
        for (i, &x) in s.iter().enumerate() {
            let x = f64::from(x);
            let w = 2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate);
            re += x * w.cos();
            im += x * w.sin();
            total += x * x;
        }
        2.0 * (re * re + im * im) / (s.len() as f64 * total.max(1.0))
    }

    fn roundtrip(from: Codec, to: Codec) -> Vec<i16> {
        let mut enc = Encoder::new(from);
        let mut t = Transcoder::new(from, to);
        let mut dec = Decoder::new(to);
        let src = tone(700.0, from.sample_rate(), from.sample_rate() as usize);
        let per_packet = from.sample_rate() as usize / 50;
        let mut heard = Vec::new();
        for chunk in src.chunks(per_packet) {
            let mut payload = Vec::new();
            assert!(enc.encode(chunk, &mut payload));
            let len = payload.len();
            assert!(t.convert(&mut payload));
            assert_eq!(payload.len(), len, "a payload keeps its length");
            assert!(dec.decode(&payload, &mut heard));
        }
        heard
    }

    #[test]
    fn a_tone_survives_every_pair_of_codecs() {
        for from in Codec::ALL {
            for to in Codec::ALL {
                let heard = roundtrip(from, to);
                let rate = to.sample_rate();
                assert_eq!(heard.len(), rate as usize, "{from:?} -> {to:?}: one second");
                // Skip the codecs' and resampler's start-up.
                let steady = &heard[rate as usize / 10..];
                let s = share(steady, 700.0, rate);
                assert!(s > 0.9, "{from:?} -> {to:?}: 700 Hz share {s:.3}");
            }
        }
    }

    #[test]
    fn garbage_is_converted_without_panics_and_keeps_its_length() {
        let mut t = Transcoder::new(Codec::G722, Codec::Pcmu);
        for n in [0usize, 1, 7, 160, 321] {
            let mut p: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            t.convert(&mut p);
            assert_eq!(p.len(), n);
        }
    }
}
