//! What the JSON dialects share: Twilio, Telnyx, Plivo and Exotel all send
//! audio as base64 in JSON text frames (μ-law at 8 kHz, or for Exotel
//! 16-bit linear PCM at 8 kHz), number their messages, and take the
//! same few messages back (`media`, `mark`, `clear`, and our additions
//! `sendDtmf`, `transfer`, `hangup`). One definition of each here; each
//! dialect's file holds only its own field names.

use super::{FromAi, ProtocolError, send_dtmf, unknown_event};
use crate::g711;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// How samples are written in a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// G.711 μ-law, one byte a sample.
    Mulaw,
    /// 16-bit little-endian linear PCM.
    Linear16,
}

/// A stream's message counters and reused payload buffers.
#[derive(Debug)]
pub struct JsonAudio {
    encoding: Encoding,
    sequence: u64,
    chunk: u64,
    bytes: Vec<u8>,
    text: String,
}

impl JsonAudio {
    pub fn new(encoding: Encoding) -> JsonAudio {
        JsonAudio {
            encoding,
            sequence: 0,
            chunk: 0,
            bytes: Vec::with_capacity(320),
            text: String::with_capacity(448),
        }
    }

    /// The next message's sequence number, from 1.
    pub fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// The next media message's chunk number, from 1.
    pub fn next_chunk(&mut self) -> u64 {
        self.chunk += 1;
        self.chunk
    }

    /// `samples` as base64 text, valid until the next call.
    pub fn encode(&mut self, samples: &[i16]) -> &str {
        self.bytes.clear();
        match self.encoding {
            Encoding::Mulaw => self
                .bytes
                .extend(samples.iter().map(|&s| g711::ulaw_encode(s))),
            Encoding::Linear16 => self
                .bytes
                .extend(samples.iter().flat_map(|s| s.to_le_bytes())),
        }
        self.text.clear();
        BASE64.encode_string(&self.bytes, &mut self.text);
        &self.text
    }

    /// A base64 payload's samples.
    pub fn decode(&mut self, payload: &str) -> Result<Vec<i16>, ProtocolError> {
        self.bytes.clear();
        BASE64
            .decode_vec(payload.as_bytes(), &mut self.bytes)
            .map_err(|_| ProtocolError::Base64)?;
        match self.encoding {
            Encoding::Mulaw => Ok(self.bytes.iter().map(|&c| g711::ulaw_decode(c)).collect()),
            Encoding::Linear16 => super::decode_l16(&self.bytes),
        }
    }
}

/// `customParameters` and the like: an object of strings, in order.
#[derive(Debug, Clone, Copy)]
pub struct Parameters<'a>(pub &'a [(String, String)]);

impl Serialize for Parameters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Deserialize, Debug)]
pub struct MediaIn {
    pub payload: String,
}

#[derive(Deserialize, Debug)]
pub struct MarkIn {
    pub name: String,
}

/// What a bot sends back in the Twilio, Telnyx and Exotel dialects (their
/// shapes agree). Other fields (`streamSid`, `stream_id`, `stream_sid`) are
/// accepted and ignored, as the CPaaS do.
#[derive(Deserialize, Debug)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound {
    Media {
        media: MediaIn,
    },
    Mark {
        mark: MarkIn,
    },
    Clear {},
    /// Ours: digits to play to the caller.
    #[serde(rename = "sendDtmf", rename_all = "camelCase")]
    SendDtmf {
        digits: String,
        duration_ms: Option<u32>,
    },
    /// Ours: transfer the caller.
    Transfer {
        to: String,
    },
    /// Ours: hang up the call (BYE), then `stop`.
    Hangup {},
    #[serde(other)]
    Unknown,
}

/// Decodes one text frame of the shared inbound shape.
pub fn decode_inbound(
    text: &str,
    audio: &mut JsonAudio,
    out: &mut Vec<FromAi>,
) -> Result<(), ProtocolError> {
    let msg: Inbound =
        serde_json::from_str(text).map_err(|e| ProtocolError::Json(e.to_string()))?;
    match msg {
        Inbound::Media { media } => out.push(FromAi::Audio(audio.decode(&media.payload)?)),
        Inbound::Mark { mark } => out.push(FromAi::Mark { name: mark.name }),
        Inbound::Clear {} => out.push(FromAi::Clear),
        Inbound::SendDtmf {
            digits,
            duration_ms,
        } => out.push(send_dtmf(digits, duration_ms)?),
        Inbound::Transfer { to } => out.push(super::transfer(to)?),
        Inbound::Hangup {} => out.push(FromAi::Hangup),
        Inbound::Unknown => return Err(unknown_event(text)),
    }
    Ok(())
}

/// Serialises a message we send (string keys, no floats: cannot fail).
pub fn text<T: Serialize>(msg: &T) -> super::Frame {
    super::Frame::Text(serde_json::to_string(msg).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_in_both_encodings() {
        let samples: Vec<i16> = (0..160).map(|i| (i * 97 - 7000) as i16).collect();
        let mut lin = JsonAudio::new(Encoding::Linear16);
        let b64 = lin.encode(&samples).to_string();
        assert_eq!(lin.decode(&b64).unwrap(), samples);
        let mut mu = JsonAudio::new(Encoding::Mulaw);
        let b64 = mu.encode(&samples).to_string();
        let expect: Vec<i16> = samples
            .iter()
            .map(|&s| g711::ulaw_decode(g711::ulaw_encode(s)))
            .collect();
        assert_eq!(mu.decode(&b64).unwrap(), expect);
        assert_eq!(lin.decode("AAEC"), Err(ProtocolError::FrameSize(3)));
        assert_eq!(mu.decode("!!"), Err(ProtocolError::Base64));
        assert_eq!(
            (mu.next_sequence(), mu.next_sequence(), mu.next_chunk()),
            (1, 2, 1)
        );
    }
}
