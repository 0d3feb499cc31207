//! Per-leg codec state: RTP payloads to linear PCM at the codec's sampling
//! rate and back. G.711 is stateless; stateful codecs keep their state
//! here, one instance per direction.

use crate::codec::Codec;
use crate::g711;

#[derive(Debug)]
pub struct Decoder {
    codec: Codec,
}

#[derive(Debug)]
pub struct Encoder {
    codec: Codec,
}

/// Whether the media engine can decode and encode `codec` (streams and
/// transcoding need it; echo and relay do not).
pub fn can_transcode(codec: Codec) -> bool {
    matches!(codec, Codec::Pcmu | Codec::Pcma)
}

impl Decoder {
    pub fn new(codec: Codec) -> Decoder {
        Decoder { codec }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Appends the decoded samples; false if the codec is not supported.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> bool {
        match self.codec {
            Codec::Pcmu => out.extend(payload.iter().map(|&c| g711::ulaw_decode(c))),
            Codec::Pcma => out.extend(payload.iter().map(|&c| g711::alaw_decode(c))),
            Codec::G722 => return false,
        }
        true
    }
}

impl Encoder {
    pub fn new(codec: Codec) -> Encoder {
        Encoder { codec }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Appends the encoded payload; false if the codec is not supported.
    pub fn encode(&mut self, samples: &[i16], out: &mut Vec<u8>) -> bool {
        match self.codec {
            Codec::Pcmu => out.extend(samples.iter().map(|&s| g711::ulaw_encode(s))),
            Codec::Pcma => out.extend(samples.iter().map(|&s| g711::alaw_encode(s))),
            Codec::G722 => return false,
        }
        true
    }
}
