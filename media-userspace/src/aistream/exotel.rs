//! Exotel's voicebot stream (AgentStream), bidirectional, on the wire
//! (<https://support.exotel.com/support/solutions/articles/3000108630>).
//!
//! To the AI: `connected`, `start` (`stream_sid`, `call_sid`,
//! `account_sid`, `from`, `to`, `custom_parameters`, `media_format`
//! `raw/slin` 8 kHz), then `media` (20 ms of base64 16-bit little-endian
//! PCM), `dtmf` and `mark`, and `stop`; `sequence_number` and `chunk`
//! are JSON numbers, as Exotel sends them. From the AI: `media` (base64
//! 16-bit PCM at 8 kHz), `mark`, `clear` (and our additions). Pipecat's
//! `ExotelFrameSerializer` and its transport detection take it as
//! Exotel's.

use super::media_json::{Encoding, JsonAudio, Parameters, decode_inbound, text};
use super::{DialectCodec, Frame, FromAi, ProtocolError, StreamSpec, ToAi};
use serde::Serialize;

#[derive(Serialize, Debug)]
struct MediaFormat {
    encoding: &'static str,
    sample_rate: &'static str,
    bit_rate: &'static str,
}

#[derive(Serialize, Debug)]
struct StartInfo<'a> {
    stream_sid: &'a str,
    call_sid: &'a str,
    account_sid: &'a str,
    from: &'a str,
    to: &'a str,
    custom_parameters: Parameters<'a>,
    media_format: MediaFormat,
}

#[derive(Serialize, Debug)]
struct MediaOut<'a> {
    chunk: u64,
    timestamp: String,
    payload: &'a str,
}

#[derive(Serialize, Debug)]
struct Named {
    name: String,
}

#[derive(Serialize, Debug)]
struct Digit {
    digit: String,
    duration: String,
}

#[derive(Serialize, Debug)]
struct StopInfo<'a> {
    call_sid: &'a str,
    account_sid: &'a str,
    reason: &'a str,
}

#[derive(Serialize, Debug)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Outbound<'a> {
    Connected {},
    Start {
        sequence_number: u64,
        stream_sid: &'a str,
        start: StartInfo<'a>,
    },
    Media {
        sequence_number: u64,
        stream_sid: &'a str,
        media: MediaOut<'a>,
    },
    Dtmf {
        sequence_number: u64,
        stream_sid: &'a str,
        dtmf: Digit,
    },
    Mark {
        sequence_number: u64,
        stream_sid: &'a str,
        mark: Named,
    },
    Stop {
        sequence_number: u64,
        stream_sid: &'a str,
        stop: StopInfo<'a>,
    },
    #[serde(rename = "transferResult")]
    TransferResult {
        stream_sid: &'a str,
        #[serde(flatten)]
        result: &'a super::TransferResult,
    },
    #[serde(rename = "sms")]
    Sms {
        stream_sid: &'a str,
        sms: &'a super::SmsIn,
    },
}

pub struct ExotelCodec {
    spec: StreamSpec,
    audio: JsonAudio,
}

impl ExotelCodec {
    pub fn new(spec: &StreamSpec) -> ExotelCodec {
        ExotelCodec {
            spec: spec.clone(),
            audio: JsonAudio::new(Encoding::Linear16),
        }
    }
}

impl DialectCodec for ExotelCodec {
    fn opening(&mut self) -> Vec<Frame> {
        let sequence_number = self.audio.next_sequence();
        let s = &self.spec;
        vec![
            text(&Outbound::Connected {}),
            text(&Outbound::Start {
                sequence_number,
                stream_sid: &s.stream_sid,
                start: StartInfo {
                    stream_sid: &s.stream_sid,
                    call_sid: &s.call_sid,
                    account_sid: &s.account_sid,
                    from: &s.from,
                    to: &s.to,
                    custom_parameters: Parameters(&s.parameters),
                    media_format: MediaFormat {
                        encoding: "raw/slin",
                        sample_rate: "8000",
                        bit_rate: "128kbps",
                    },
                },
            }),
        ]
    }

    fn encode(&mut self, msg: &ToAi) -> Frame {
        let sequence_number = self.audio.next_sequence();
        let stream_sid = &self.spec.stream_sid;
        match msg {
            ToAi::Audio {
                samples,
                timestamp_ms,
                ..
            } => {
                let chunk = self.audio.next_chunk();
                let payload = self.audio.encode(samples);
                text(&Outbound::Media {
                    sequence_number,
                    stream_sid,
                    media: MediaOut {
                        chunk,
                        timestamp: timestamp_ms.to_string(),
                        payload,
                    },
                })
            }
            ToAi::Dtmf { digit, duration_ms } => text(&Outbound::Dtmf {
                sequence_number,
                stream_sid,
                dtmf: Digit {
                    digit: digit.to_string(),
                    duration: duration_ms.to_string(),
                },
            }),
            ToAi::Mark { name } => text(&Outbound::Mark {
                sequence_number,
                stream_sid,
                mark: Named { name: name.clone() },
            }),
            ToAi::TransferResult(result) => text(&Outbound::TransferResult { stream_sid, result }),
            ToAi::Sms(sms) => text(&Outbound::Sms { stream_sid, sms }),
        }
    }

    fn closing(&mut self, _reason: &str) -> Frame {
        let sequence_number = self.audio.next_sequence();
        text(&Outbound::Stop {
            sequence_number,
            stream_sid: &self.spec.stream_sid,
            stop: StopInfo {
                call_sid: &self.spec.call_sid,
                account_sid: &self.spec.account_sid,
                reason: "callended",
            },
        })
    }

    fn decode(&mut self, frame: Frame, out: &mut Vec<FromAi>) -> Result<(), ProtocolError> {
        match frame {
            Frame::Text(t) => decode_inbound(&t, &mut self.audio, out),
            Frame::Binary(_) => Err(ProtocolError::UnexpectedBinary),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aistream::{Dialect, Track, json_of, test_spec};
    use base64::Engine as _;

    #[test]
    fn speaks_exotel_field_for_field_in_16_bit_pcm() {
        let mut c = ExotelCodec::new(&test_spec(Dialect::Exotel));
        let open: Vec<_> = c.opening().into_iter().map(json_of).collect();
        assert_eq!(open[0]["event"], "connected");
        let start = &open[1]["start"];
        assert_eq!(
            (
                start["stream_sid"].as_str(),
                start["call_sid"].as_str(),
                start["account_sid"].as_str()
            ),
            (Some("MZ89ab"), Some("CA0123"), Some("AC4567"))
        );
        assert_eq!(start["media_format"]["encoding"], "raw/slin");
        assert_eq!(open[1]["sequence_number"], 1);
        let samples: Vec<i16> = (0..160).map(|i| i * 100 - 8000).collect();
        let m = json_of(c.encode(&ToAi::Audio {
            samples: samples.clone(),
            timestamp_ms: 20,
            track: Track::Inbound,
        }));
        assert_eq!(
            (m["sequence_number"].as_u64(), m["media"]["chunk"].as_u64()),
            (Some(2), Some(1))
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(m["media"]["payload"].as_str().unwrap())
            .unwrap();
        let back: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(back, samples);
        assert_eq!(json_of(c.closing("bye"))["stop"]["reason"], "callended");
        let mut out = Vec::new();
        c.decode(
            Frame::Text(
                r#"{"event":"media","stream_sid":"MZ89ab","media":{"payload":"AAE="}}"#.into(),
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, vec![FromAi::Audio(vec![256])]);
        assert_eq!(
            c.decode(
                Frame::Text(r#"{"event":"media","media":{"payload":"AAEC"}}"#.into()),
                &mut out
            ),
            Err(ProtocolError::FrameSize(3))
        );
    }
}
