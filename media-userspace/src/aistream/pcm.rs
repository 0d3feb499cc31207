//! The `pcm` dialect: the low-overhead wideband option.
//!
//! The daemon sends one JSON `start` text frame, then the caller's audio as
//! binary frames of 16-bit little-endian PCM (20 ms each) at the stream's
//! rate (8, 16 or 24 kHz), and JSON text frames `dtmf`, `mark` and `stop`.
//! The AI sends binary PCM frames of any whole number of samples at the
//! same rate, and JSON text frames `mark` and `clear`. No base64, no JSON
//! per audio frame. A listen-only fork of a relayed call (started over
//! REST) carries both parties summed into the one channel (`"tracks":
//! ["mixed"]`).

use super::media_json::Parameters;
use super::{
    DialectCodec, FRAME_MS, Frame, FromAi, ProtocolError, StreamSpec, ToAi, send_dtmf,
    unknown_event,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PcmFormat {
    /// `audio/l16`, little-endian (unlike RFC 2586's network order).
    pub encoding: &'static str,
    pub endianness: &'static str,
    pub sample_rate: u32,
    pub channels: u32,
    pub frame_ms: u32,
}

/// Messages to the AI (text frames).
#[derive(Serialize, Debug)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound<'a> {
    #[serde(rename_all = "camelCase")]
    Start {
        stream_sid: &'a str,
        call_sid: &'a str,
        account_sid: &'a str,
        from: &'a str,
        to: &'a str,
        /// `["inbound"]` (the caller), or `["mixed"]` on a listen-only
        /// fork of a relayed call (both parties summed).
        tracks: &'static [&'static str],
        media_format: PcmFormat,
        custom_parameters: Parameters<'a>,
    },
    #[serde(rename_all = "camelCase")]
    Dtmf {
        digit: String,
        duration_ms: u32,
    },
    Mark {
        name: &'a str,
    },
    Stop {
        reason: &'a str,
    },
    /// Ours: how the AI's `transfer` went.
    #[serde(rename = "transferResult")]
    TransferResult {
        #[serde(flatten)]
        result: &'a crate::aistream::TransferResult,
    },
    /// Ours: an SMS to the call's number.
    Sms {
        sms: &'a crate::aistream::SmsIn,
    },
}

/// Messages from the AI (text frames).
#[derive(Deserialize, Debug)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound {
    Mark {
        name: String,
    },
    Clear {},
    /// Digits to play to the caller (RFC 4733).
    #[serde(rename = "sendDtmf", rename_all = "camelCase")]
    SendDtmf {
        digits: String,
        duration_ms: Option<u32>,
    },
    /// Transfer the caller.
    Transfer {
        to: String,
    },
    /// Ours: hang up the call (BYE), then `stop`.
    Hangup {},
    #[serde(other)]
    Unknown,
}

pub struct PcmCodec {
    spec: StreamSpec,
}

impl PcmCodec {
    pub fn new(spec: &StreamSpec) -> PcmCodec {
        PcmCodec { spec: spec.clone() }
    }

    fn json(msg: &Outbound<'_>) -> Frame {
        Frame::Text(serde_json::to_string(msg).unwrap_or_default())
    }
}

impl DialectCodec for PcmCodec {
    fn opening(&mut self) -> Vec<Frame> {
        let s = &self.spec;
        vec![Self::json(&Outbound::Start {
            stream_sid: &s.stream_sid,
            call_sid: &s.call_sid,
            account_sid: &s.account_sid,
            from: &s.from,
            to: &s.to,
            tracks: if s.fork { &["mixed"] } else { &["inbound"] },
            media_format: PcmFormat {
                encoding: "audio/l16",
                endianness: "little",
                sample_rate: s.dialect.sample_rate(),
                channels: 1,
                frame_ms: FRAME_MS,
            },
            custom_parameters: Parameters(&s.parameters),
        })]
    }

    fn encode(&mut self, msg: &ToAi) -> Frame {
        match msg {
            ToAi::Audio { samples, .. } => {
                Frame::Binary(samples.iter().flat_map(|s| s.to_le_bytes()).collect())
            }
            ToAi::Dtmf { digit, duration_ms } => Self::json(&Outbound::Dtmf {
                digit: digit.to_string(),
                duration_ms: *duration_ms,
            }),
            ToAi::Mark { name } => Self::json(&Outbound::Mark { name }),
            ToAi::TransferResult(result) => Self::json(&Outbound::TransferResult { result }),
            ToAi::Sms(sms) => Self::json(&Outbound::Sms { sms }),
        }
    }

    fn closing(&mut self, reason: &str) -> Frame {
        Self::json(&Outbound::Stop { reason })
    }

    fn decode(&mut self, frame: Frame, out: &mut Vec<FromAi>) -> Result<(), ProtocolError> {
        match frame {
            Frame::Binary(b) => out.push(FromAi::Audio(super::decode_l16(&b)?)),
            Frame::Text(t) => {
                match serde_json::from_str::<Inbound>(&t)
                    .map_err(|e| ProtocolError::Json(e.to_string()))?
                {
                    Inbound::Mark { name } => out.push(FromAi::Mark { name }),
                    Inbound::Clear {} => out.push(FromAi::Clear),
                    Inbound::SendDtmf {
                        digits,
                        duration_ms,
                    } => out.push(send_dtmf(digits, duration_ms)?),
                    Inbound::Transfer { to } => out.push(crate::aistream::transfer(to)?),
                    Inbound::Hangup {} => out.push(FromAi::Hangup),
                    Inbound::Unknown => return Err(unknown_event(&t)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aistream::Dialect;
    use serde_json::{Value, json};
    use std::time::Duration;

    fn spec() -> StreamSpec {
        StreamSpec {
            url: "ws://127.0.0.1:1/".into(),
            dialect: Dialect::Pcm { sample_rate: 16000 },
            call_sid: "CA1".into(),
            account_sid: "AC1".into(),
            stream_sid: "MZ1".into(),
            from: "+15551110000".into(),
            to: "+15552220000".into(),
            parameters: vec![("k".into(), "v".into())],
            connect_timeout: Duration::from_secs(1),
            reconnect_window: Duration::from_secs(1),
            keepalive: Duration::from_secs(1),
            max_frame_bytes: 1 << 16,
            fork: false,
        }
    }

    #[test]
    fn start_then_binary_audio_and_json_events() {
        let mut c = PcmCodec::new(&spec());
        let open = c.opening();
        let Frame::Text(t) = &open[0] else { panic!() };
        let v: Value = serde_json::from_str(t).unwrap();
        assert_eq!(
            v,
            json!({"event": "start", "streamSid": "MZ1", "callSid": "CA1", "accountSid": "AC1",
                   "from": "+15551110000", "to": "+15552220000", "tracks": ["inbound"],
                   "mediaFormat": {"encoding": "audio/l16", "endianness": "little",
                                   "sampleRate": 16000, "channels": 1, "frameMs": 20},
                   "customParameters": {"k": "v"}})
        );
        assert_eq!(
            c.encode(&ToAi::Audio {
                samples: vec![1, -2],
                timestamp_ms: 0,
                track: crate::aistream::Track::Inbound,
            }),
            Frame::Binary(vec![1, 0, 0xfe, 0xff])
        );
        assert_eq!(
            c.encode(&ToAi::Dtmf {
                digit: '7',
                duration_ms: 120
            }),
            Frame::Text(r#"{"event":"dtmf","digit":"7","durationMs":120}"#.into())
        );
        assert_eq!(
            c.closing("hangup"),
            Frame::Text(r#"{"event":"stop","reason":"hangup"}"#.into())
        );
    }

    #[test]
    fn decodes_audio_marks_and_clear_and_refuses_the_rest() {
        let mut c = PcmCodec::new(&spec());
        let mut out = Vec::new();
        c.decode(Frame::Binary(vec![0x10, 0x00, 0xff, 0x7f]), &mut out)
            .unwrap();
        c.decode(
            Frame::Text(r#"{"event":"mark","name":"x"}"#.into()),
            &mut out,
        )
        .unwrap();
        c.decode(Frame::Text(r#"{"event":"clear"}"#.into()), &mut out)
            .unwrap();
        c.decode(
            Frame::Text(r#"{"event":"sendDtmf","digits":"7","durationMs":80}"#.into()),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                FromAi::Audio(vec![16, 32767]),
                FromAi::Mark { name: "x".into() },
                FromAi::Clear,
                FromAi::SendDtmf {
                    digits: "7".into(),
                    duration_ms: 80
                }
            ]
        );
        assert_eq!(
            c.decode(Frame::Binary(vec![1, 2, 3]), &mut out),
            Err(ProtocolError::FrameSize(3))
        );
        assert_eq!(
            c.decode(Frame::Text(r#"{"event":"media"}"#.into()), &mut out)
                .unwrap_err()
                .reason(),
            "unknown_event"
        );
        assert_eq!(
            c.decode(Frame::Text("[]".into()), &mut out)
                .unwrap_err()
                .reason(),
            "malformed_json"
        );
    }

    #[test]
    fn hangup_event_decodes() {
        let mut c = PcmCodec::new(&spec());
        let mut out = Vec::new();
        c.decode(
            Frame::Text(r#"{"event":"hangup","streamSid":"MZ1"}"#.into()),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, vec![FromAi::Hangup]);
    }
}
