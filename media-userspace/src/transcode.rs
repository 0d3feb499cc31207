//! Per-leg codec state: RTP payloads to linear PCM at the codec's sampling
//! rate and back. G.711 is stateless; stateful codecs keep their state
//! here, one instance per direction.

use crate::codec::Codec;
use crate::g711;
use crate::g722::{G722Decoder, G722Encoder};

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
