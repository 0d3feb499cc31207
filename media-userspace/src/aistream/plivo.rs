//! Plivo audio streams, bidirectional, on the wire
//! (<https://www.plivo.com/docs/voice/api/stream>).
//!
//! To the AI: `start` (`callId`, `streamId`, `accountId`, `mediaFormat`
//! μ-law 8 kHz, and our `customParameters`), then `media` (20 ms of
//! base64 μ-law), `dtmf`, `playedStream` (Plivo's answer to a
//! `checkpoint`, our marks) and `stop`; `sequenceNumber` is a JSON number
//! from 1. From the AI: `playAudio` (base64 μ-law at 8 kHz), `checkpoint`
//! (a mark), `clearAudio`, and our additions. Pipecat's
//! `PlivoFrameSerializer` and its transport detection take it as
//! Plivo's.

use super::media_json::{Encoding, JsonAudio, MarkIn, MediaIn, Parameters, text};
use super::{DialectCodec, Frame, FromAi, ProtocolError, StreamSpec, ToAi, unknown_event};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct MediaFormat {
    encoding: &'static str,
    sample_rate: u32,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct StartInfo<'a> {
    call_id: &'a str,
    stream_id: &'a str,
    account_id: &'a str,
    from: &'a str,
    to: &'a str,
    tracks: &'static [&'static str],
    custom_parameters: Parameters<'a>,
    media_format: MediaFormat,
}

#[derive(Serialize, Debug)]
struct MediaOut<'a> {
    track: &'static str,
    timestamp: String,
    chunk: u64,
    payload: &'a str,
}

#[derive(Serialize, Debug)]
struct Digit {
    track: &'static str,
    digit: String,
}

#[derive(Serialize, Debug)]
#[serde(tag = "event", rename_all = "camelCase")]
enum Outbound<'a> {
    #[serde(rename_all = "camelCase")]
    Start {
        sequence_number: u64,
        start: StartInfo<'a>,
    },
    #[serde(rename_all = "camelCase")]
    Media {
        sequence_number: u64,
        stream_id: &'a str,
        media: MediaOut<'a>,
    },
    #[serde(rename_all = "camelCase")]
    Dtmf {
        sequence_number: u64,
        stream_id: &'a str,
        dtmf: Digit,
    },
    #[serde(rename_all = "camelCase")]
    PlayedStream {
        sequence_number: u64,
        stream_id: &'a str,
        name: String,
    },
    #[serde(rename_all = "camelCase")]
    Stop {
        sequence_number: u64,
        stream_id: &'a str,
    },
    #[serde(rename_all = "camelCase")]
    TransferResult {
        stream_id: &'a str,
        #[serde(flatten)]
        result: &'a super::TransferResult,
    },
    #[serde(rename_all = "camelCase")]
    Sms {
        stream_id: &'a str,
        sms: &'a super::SmsIn,
    },
}

/// `playAudio`'s media: μ-law at 8 kHz is what this stream plays.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PlayMedia {
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    sample_rate: Option<u32>,
    #[serde(flatten)]
    media: MediaIn,
}

/// What a Plivo bot sends. Other fields (`streamId`) are accepted and
/// ignored.
#[derive(Deserialize, Debug)]
#[serde(tag = "event", rename_all = "camelCase")]
enum Inbound {
    PlayAudio {
        media: PlayMedia,
    },
    Checkpoint {
        name: String,
    },
    ClearAudio {},
    /// Twilio's shapes, which some Plivo bots send too.
    Mark {
        mark: MarkIn,
    },
    #[serde(rename_all = "camelCase")]
    SendDtmf {
        digits: String,
        duration_ms: Option<u32>,
    },
    Transfer {
        to: String,
    },
    Hangup {},
    #[serde(other)]
    Unknown,
}

pub struct PlivoCodec {
    spec: StreamSpec,
    audio: JsonAudio,
}

impl PlivoCodec {
    pub fn new(spec: &StreamSpec) -> PlivoCodec {
        PlivoCodec {
            spec: spec.clone(),
            audio: JsonAudio::new(Encoding::Mulaw),
        }
    }
}

impl DialectCodec for PlivoCodec {
    fn opening(&mut self) -> Vec<Frame> {
        let sequence_number = self.audio.next_sequence();
        let s = &self.spec;
        vec![text(&Outbound::Start {
            sequence_number,
            start: StartInfo {
                call_id: &s.call_sid,
                stream_id: &s.stream_sid,
                account_id: &s.account_sid,
                from: &s.from,
                to: &s.to,
                tracks: if s.fork {
                    &["inbound", "outbound"]
                } else {
                    &["inbound"]
                },
                custom_parameters: Parameters(&s.parameters),
                media_format: MediaFormat {
                    encoding: "audio/x-mulaw",
                    sample_rate: 8000,
                },
            },
        })]
    }

    fn encode(&mut self, msg: &ToAi) -> Frame {
        let sequence_number = self.audio.next_sequence();
        let stream_id = &self.spec.stream_sid;
        match msg {
            ToAi::Audio {
                samples,
                timestamp_ms,
                track,
            } => {
                let chunk = self.audio.next_chunk();
                let payload = self.audio.encode(samples);
                text(&Outbound::Media {
                    sequence_number,
                    stream_id,
                    media: MediaOut {
                        track: track.name(),
                        timestamp: timestamp_ms.to_string(),
                        chunk,
                        payload,
                    },
                })
            }
            ToAi::Dtmf { digit, .. } => text(&Outbound::Dtmf {
                sequence_number,
                stream_id,
                dtmf: Digit {
                    track: "inbound",
                    digit: digit.to_string(),
                },
            }),
            ToAi::Mark { name } => text(&Outbound::PlayedStream {
                sequence_number,
                stream_id,
                name: name.clone(),
            }),
            ToAi::TransferResult(result) => text(&Outbound::TransferResult { stream_id, result }),
            ToAi::Sms(sms) => text(&Outbound::Sms { stream_id, sms }),
        }
    }

    fn closing(&mut self, _reason: &str) -> Frame {
        let sequence_number = self.audio.next_sequence();
        text(&Outbound::Stop {
            sequence_number,
            stream_id: &self.spec.stream_sid,
        })
    }

    fn decode(&mut self, frame: Frame, out: &mut Vec<FromAi>) -> Result<(), ProtocolError> {
        let text = match frame {
            Frame::Text(t) => t,
            Frame::Binary(_) => return Err(ProtocolError::UnexpectedBinary),
        };
        let msg: Inbound =
            serde_json::from_str(&text).map_err(|e| ProtocolError::Json(e.to_string()))?;
        match msg {
            Inbound::PlayAudio { media } => {
                // Plivo also takes L16; this stream plays μ-law at 8 kHz
                // only, and says so rather than play noise.
                let mulaw = media
                    .content_type
                    .as_deref()
                    .is_none_or(|t| t.eq_ignore_ascii_case("audio/x-mulaw"))
                    && media.sample_rate.is_none_or(|r| r == 8000);
                if !mulaw {
                    return Err(ProtocolError::Json(
                        "playAudio must be audio/x-mulaw at 8000 Hz".into(),
                    ));
                }
                out.push(FromAi::Audio(self.audio.decode(&media.media.payload)?))
            }
            Inbound::Checkpoint { name }
            | Inbound::Mark {
                mark: MarkIn { name },
            } => out.push(FromAi::Mark { name }),
            Inbound::ClearAudio {} => out.push(FromAi::Clear),
            Inbound::SendDtmf {
                digits,
                duration_ms,
            } => out.push(super::send_dtmf(digits, duration_ms)?),
            Inbound::Transfer { to } => out.push(super::transfer(to)?),
            Inbound::Hangup {} => out.push(FromAi::Hangup),
            Inbound::Unknown => return Err(unknown_event(&text)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aistream::{Dialect, Track, json_of, test_spec};
    use serde_json::json;

    #[test]
    fn speaks_plivo_field_for_field() {
        let mut c = PlivoCodec::new(&test_spec(Dialect::Plivo));
        let open: Vec<_> = c.opening().into_iter().map(json_of).collect();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0]["event"], "start");
        assert_eq!(open[0]["sequenceNumber"], 1);
        assert_eq!(
            (
                open[0]["start"]["callId"].as_str(),
                open[0]["start"]["streamId"].as_str()
            ),
            (Some("CA0123"), Some("MZ89ab"))
        );
        assert_eq!(
            open[0]["start"]["mediaFormat"],
            json!({"encoding": "audio/x-mulaw", "sampleRate": 8000})
        );
        let m = json_of(c.encode(&ToAi::Audio {
            samples: vec![0; 160],
            timestamp_ms: 20,
            track: Track::Inbound,
        }));
        assert_eq!(
            (m["event"].as_str(), m["streamId"].as_str()),
            (Some("media"), Some("MZ89ab"))
        );
        assert_eq!(m["media"]["payload"].as_str().unwrap().len(), 216);
        let k = json_of(c.encode(&ToAi::Mark { name: "m1".into() }));
        assert_eq!(
            (k["event"].as_str(), k["name"].as_str()),
            (Some("playedStream"), Some("m1"))
        );
        assert_eq!(json_of(c.closing("bye"))["event"], "stop");
        let mut out = Vec::new();
        for msg in [
            r#"{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"//8="},"streamId":"MZ89ab"}"#,
            r#"{"event":"checkpoint","streamId":"MZ89ab","name":"m2"}"#,
            r#"{"event":"clearAudio","streamId":"MZ89ab"}"#,
        ] {
            c.decode(Frame::Text(msg.into()), &mut out).unwrap();
        }
        assert_eq!(
            out,
            vec![
                FromAi::Audio(vec![0, 0]),
                FromAi::Mark { name: "m2".into() },
                FromAi::Clear
            ]
        );
        assert_eq!(
            c.decode(Frame::Text(r#"{"event":"dance"}"#.into()), &mut out),
            Err(ProtocolError::UnknownEvent("dance".into()))
        );
        assert!(
            c.decode(
                Frame::Text(r#"{"event":"playAudio","media":{"payload":"!"}}"#.into()),
                &mut out
            )
            .is_err()
        );
    }
}
