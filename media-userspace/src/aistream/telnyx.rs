//! Telnyx media streaming, bidirectional, on the wire
//! (<https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming>).
//!
//! To the AI: `connected`, `start` (`call_control_id`, `from`, `to`,
//! `media_format` PCMU 8 kHz, our `custom_parameters`), then `media`
//! (20 ms of base64 μ-law), `dtmf` and `mark`, and `stop`; every message
//! but `connected` carries `stream_id` and a `sequence_number` (a JSON
//! string, from "1"). From the AI: `media`, `mark`, `clear` (and our
//! additions, as in every dialect). Pipecat's `TelnyxFrameSerializer`
//! and its transport detection take it as Telnyx's.

use super::media_json::{Encoding, JsonAudio, Parameters, decode_inbound, text};
use super::{DialectCodec, Frame, FromAi, ProtocolError, StreamSpec, ToAi};
use serde::Serialize;

#[derive(Serialize, Debug)]
struct MediaFormat {
    encoding: &'static str,
    sample_rate: u32,
    channels: u32,
}

#[derive(Serialize, Debug)]
struct StartInfo<'a> {
    /// Our call SID: Telnyx's call control id.
    call_control_id: &'a str,
    call_session_id: &'a str,
    from: &'a str,
    to: &'a str,
    client_state: &'static str,
    custom_parameters: Parameters<'a>,
    media_format: MediaFormat,
    tracks: &'static [&'static str],
}

#[derive(Serialize, Debug)]
struct MediaOut<'a> {
    track: &'static str,
    chunk: String,
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
}

#[derive(Serialize, Debug)]
struct StopInfo<'a> {
    call_control_id: &'a str,
}

#[derive(Serialize, Debug)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Outbound<'a> {
    Connected {
        version: &'static str,
    },
    Start {
        sequence_number: String,
        start: StartInfo<'a>,
        stream_id: &'a str,
    },
    Media {
        sequence_number: String,
        media: MediaOut<'a>,
        stream_id: &'a str,
    },
    Dtmf {
        sequence_number: String,
        dtmf: Digit,
        stream_id: &'a str,
    },
    Mark {
        sequence_number: String,
        mark: Named,
        stream_id: &'a str,
    },
    Stop {
        sequence_number: String,
        stop: StopInfo<'a>,
        stream_id: &'a str,
    },
    #[serde(rename = "transferResult")]
    TransferResult {
        stream_id: &'a str,
        #[serde(flatten)]
        result: &'a super::TransferResult,
    },
    #[serde(rename = "sms")]
    Sms {
        stream_id: &'a str,
        sms: &'a super::SmsIn,
    },
}

pub struct TelnyxCodec {
    spec: StreamSpec,
    audio: JsonAudio,
}

impl TelnyxCodec {
    pub fn new(spec: &StreamSpec) -> TelnyxCodec {
        TelnyxCodec {
            spec: spec.clone(),
            audio: JsonAudio::new(Encoding::Mulaw),
        }
    }
}

impl DialectCodec for TelnyxCodec {
    fn opening(&mut self) -> Vec<Frame> {
        let sequence_number = self.audio.next_sequence().to_string();
        let s = &self.spec;
        vec![
            text(&Outbound::Connected { version: "1.0.0" }),
            text(&Outbound::Start {
                sequence_number,
                start: StartInfo {
                    call_control_id: &s.call_sid,
                    call_session_id: &s.call_sid,
                    from: &s.from,
                    to: &s.to,
                    client_state: "",
                    custom_parameters: Parameters(&s.parameters),
                    media_format: MediaFormat {
                        encoding: "PCMU",
                        sample_rate: 8000,
                        channels: 1,
                    },
                    tracks: if s.fork {
                        &["inbound", "outbound"]
                    } else {
                        &["inbound"]
                    },
                },
                stream_id: &s.stream_sid,
            }),
        ]
    }

    fn encode(&mut self, msg: &ToAi) -> Frame {
        let sequence_number = self.audio.next_sequence().to_string();
        let stream_id = &self.spec.stream_sid;
        match msg {
            ToAi::Audio {
                samples,
                timestamp_ms,
                track,
            } => {
                let chunk = self.audio.next_chunk().to_string();
                let payload = self.audio.encode(samples);
                text(&Outbound::Media {
                    sequence_number,
                    media: MediaOut {
                        track: track.name(),
                        chunk,
                        timestamp: timestamp_ms.to_string(),
                        payload,
                    },
                    stream_id,
                })
            }
            ToAi::Dtmf { digit, .. } => text(&Outbound::Dtmf {
                sequence_number,
                dtmf: Digit {
                    digit: digit.to_string(),
                },
                stream_id,
            }),
            ToAi::Mark { name } => text(&Outbound::Mark {
                sequence_number,
                mark: Named { name: name.clone() },
                stream_id,
            }),
            ToAi::TransferResult(result) => text(&Outbound::TransferResult { stream_id, result }),
            ToAi::Sms(sms) => text(&Outbound::Sms { stream_id, sms }),
        }
    }

    fn closing(&mut self, _reason: &str) -> Frame {
        let sequence_number = self.audio.next_sequence().to_string();
        text(&Outbound::Stop {
            sequence_number,
            stop: StopInfo {
                call_control_id: &self.spec.call_sid,
            },
            stream_id: &self.spec.stream_sid,
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
    use serde_json::json;

    #[test]
    fn speaks_telnyx_field_for_field() {
        let mut c = TelnyxCodec::new(&test_spec(Dialect::Telnyx));
        let open: Vec<_> = c.opening().into_iter().map(json_of).collect();
        assert_eq!(open[0], json!({"event": "connected", "version": "1.0.0"}));
        assert_eq!(open[1]["event"], "start");
        assert_eq!(open[1]["sequence_number"], "1");
        assert_eq!(open[1]["stream_id"], "MZ89ab");
        assert_eq!(open[1]["start"]["call_control_id"], "CA0123");
        assert_eq!(
            (
                open[1]["start"]["from"].as_str(),
                open[1]["start"]["to"].as_str()
            ),
            (Some("+15551110000"), Some("+15552220000"))
        );
        assert_eq!(
            open[1]["start"]["media_format"],
            json!({"encoding": "PCMU", "sample_rate": 8000, "channels": 1})
        );
        assert_eq!(open[1]["start"]["custom_parameters"]["lang"], "en");
        let m = json_of(c.encode(&ToAi::Audio {
            samples: vec![0; 160],
            timestamp_ms: 20,
            track: Track::Inbound,
        }));
        assert_eq!(
            (m["sequence_number"].as_str(), m["media"]["chunk"].as_str()),
            (Some("2"), Some("1"))
        );
        let d = json_of(c.encode(&ToAi::Dtmf {
            digit: '5',
            duration_ms: 100,
        }));
        assert_eq!(d["dtmf"]["digit"], "5");
        assert_eq!(
            json_of(c.closing("bye"))["stop"]["call_control_id"],
            "CA0123"
        );
        let mut out = Vec::new();
        c.decode(
            Frame::Text(r#"{"event":"media","media":{"payload":"//8="}}"#.into()),
            &mut out,
        )
        .unwrap();
        c.decode(Frame::Text(r#"{"event":"clear"}"#.into()), &mut out)
            .unwrap();
        assert_eq!(out, vec![FromAi::Audio(vec![0, 0]), FromAi::Clear]);
        assert!(c.decode(Frame::Binary(vec![1]), &mut out).is_err());
    }
}
