//! Twilio Media Streams, bidirectional (`<Connect><Stream>`), on the wire.
//!
//! To the AI: `connected`, `start`, then `media` (20 ms of base64 μ-law),
//! `dtmf` and `mark` in call order, and `stop`. Every message but
//! `connected` carries a `sequenceNumber` that counts from "1" for the
//! stream; `media.chunk` counts media messages from "1"; numbers are JSON
//! strings and ids keep Twilio's prefixes (`AC`, `CA`, `MZ`), exactly as
//! Twilio sends them, so bots written for Twilio run unchanged.
//!
//! From the AI: `media` (base64 μ-law of any length), `mark`, `clear`.

pub use super::media_json::Parameters;
use super::media_json::{Encoding, JsonAudio, decode_inbound, text};
use super::{DialectCodec, Frame, FromAi, ProtocolError, StreamSpec, ToAi};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: &'static str,
    pub sample_rate: u32,
    pub channels: u32,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct StartInfo<'a> {
    pub account_sid: &'a str,
    pub stream_sid: &'a str,
    pub call_sid: &'a str,
    pub tracks: &'static [&'static str],
    pub custom_parameters: Parameters<'a>,
    pub media_format: MediaFormat,
}

#[derive(Serialize, Debug)]
pub struct MediaOut<'a> {
    pub track: &'static str,
    pub chunk: String,
    pub timestamp: String,
    pub payload: &'a str,
}

#[derive(Serialize, Debug)]
pub struct DtmfOut {
    pub track: &'static str,
    pub digit: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct MarkBody {
    pub name: String,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct StopInfo<'a> {
    pub account_sid: &'a str,
    pub call_sid: &'a str,
}

/// Messages to the AI, field for field as Twilio sends them.
#[derive(Serialize, Debug)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound<'a> {
    Connected {
        protocol: &'static str,
        version: &'static str,
    },
    #[serde(rename_all = "camelCase")]
    Start {
        sequence_number: String,
        start: StartInfo<'a>,
        stream_sid: &'a str,
    },
    #[serde(rename_all = "camelCase")]
    Media {
        sequence_number: String,
        media: MediaOut<'a>,
        stream_sid: &'a str,
    },
    #[serde(rename_all = "camelCase")]
    Dtmf {
        stream_sid: &'a str,
        sequence_number: String,
        dtmf: DtmfOut,
    },
    #[serde(rename_all = "camelCase")]
    Mark {
        sequence_number: String,
        stream_sid: &'a str,
        mark: MarkBody,
    },
    #[serde(rename_all = "camelCase")]
    Stop {
        sequence_number: String,
        stream_sid: &'a str,
        stop: StopInfo<'a>,
    },
    /// Ours: how the AI's `transfer` went.
    #[serde(rename = "transferResult", rename_all = "camelCase")]
    TransferResult {
        stream_sid: &'a str,
        #[serde(flatten)]
        result: &'a crate::aistream::TransferResult,
    },
    /// Ours: an SMS to the call's number.
    #[serde(rename = "sms", rename_all = "camelCase")]
    Sms {
        stream_sid: &'a str,
        sms: &'a crate::aistream::SmsIn,
    },
}

pub struct TwilioCodec {
    spec: StreamSpec,
    /// Counters and reused base64 and μ-law buffers.
    audio: JsonAudio,
}

impl TwilioCodec {
    pub fn new(spec: &StreamSpec) -> TwilioCodec {
        TwilioCodec {
            spec: spec.clone(),
            audio: JsonAudio::new(Encoding::Mulaw),
        }
    }

    fn next_sequence(&mut self) -> String {
        self.audio.next_sequence().to_string()
    }

    fn json(msg: &Outbound<'_>) -> Frame {
        text(msg)
    }
}

impl DialectCodec for TwilioCodec {
    fn opening(&mut self) -> Vec<Frame> {
        let connected = Self::json(&Outbound::Connected {
            protocol: "Call",
            version: "1.0.0",
        });
        let sequence_number = self.next_sequence();
        let s = &self.spec;
        let start = Self::json(&Outbound::Start {
            sequence_number,
            start: StartInfo {
                account_sid: &s.account_sid,
                stream_sid: &s.stream_sid,
                call_sid: &s.call_sid,
                tracks: if s.fork {
                    &["inbound", "outbound"]
                } else {
                    &["inbound"]
                },
                custom_parameters: Parameters(&s.parameters),
                media_format: MediaFormat {
                    encoding: "audio/x-mulaw",
                    sample_rate: 8000,
                    channels: 1,
                },
            },
            stream_sid: &s.stream_sid,
        });
        vec![connected, start]
    }

    fn encode(&mut self, msg: &ToAi) -> Frame {
        let sequence_number = self.next_sequence();
        match msg {
            ToAi::Audio {
                samples,
                timestamp_ms,
                track,
            } => {
                let chunk = self.audio.next_chunk().to_string();
                let payload = self.audio.encode(samples);
                Self::json(&Outbound::Media {
                    sequence_number,
                    media: MediaOut {
                        track: track.name(),
                        chunk,
                        timestamp: timestamp_ms.to_string(),
                        payload,
                    },
                    stream_sid: &self.spec.stream_sid,
                })
            }
            ToAi::Dtmf { digit, .. } => Self::json(&Outbound::Dtmf {
                stream_sid: &self.spec.stream_sid,
                sequence_number,
                dtmf: DtmfOut {
                    track: "inbound_track",
                    digit: digit.to_string(),
                },
            }),
            ToAi::Mark { name } => Self::json(&Outbound::Mark {
                sequence_number,
                stream_sid: &self.spec.stream_sid,
                mark: MarkBody { name: name.clone() },
            }),
            ToAi::TransferResult(result) => Self::json(&Outbound::TransferResult {
                stream_sid: &self.spec.stream_sid,
                result,
            }),
            ToAi::Sms(sms) => Self::json(&Outbound::Sms {
                stream_sid: &self.spec.stream_sid,
                sms,
            }),
        }
    }

    fn closing(&mut self, _reason: &str) -> Frame {
        let sequence_number = self.next_sequence();
        Self::json(&Outbound::Stop {
            sequence_number,
            stream_sid: &self.spec.stream_sid,
            stop: StopInfo {
                account_sid: &self.spec.account_sid,
                call_sid: &self.spec.call_sid,
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
    use crate::aistream::Dialect;
    use crate::g711;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde_json::{Value, json};

    fn spec() -> StreamSpec {
        crate::aistream::test_spec(Dialect::Twilio)
    }

    fn text(f: Frame) -> Value {
        crate::aistream::json_of(f)
    }

    #[test]
    fn opening_messages_match_twilio() {
        let mut c = TwilioCodec::new(&spec());
        let open: Vec<Value> = c.opening().into_iter().map(text).collect();
        assert_eq!(
            open[0],
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        );
        assert_eq!(
            open[1],
            json!({
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC4567",
                    "streamSid": "MZ89ab",
                    "callSid": "CA0123",
                    "tracks": ["inbound"],
                    "customParameters": {"from": "+15551110000", "lang": "en"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
                },
                "streamSid": "MZ89ab"
            })
        );
    }

    #[test]
    fn media_dtmf_mark_and_stop_number_as_twilio_does() {
        let mut c = TwilioCodec::new(&spec());
        c.opening();
        let samples: Vec<i16> = (0..160).map(|i| (i * 100 - 8000) as i16).collect();
        let m = text(c.encode(&ToAi::Audio {
            samples: samples.clone(),
            timestamp_ms: 20,
            track: crate::aistream::Track::Inbound,
        }));
        assert_eq!(m["event"], "media");
        assert_eq!(m["sequenceNumber"], "2");
        assert_eq!(m["media"]["track"], "inbound");
        assert_eq!(m["media"]["chunk"], "1");
        assert_eq!(m["media"]["timestamp"], "20");
        assert_eq!(m["streamSid"], "MZ89ab");
        let payload = BASE64
            .decode(m["media"]["payload"].as_str().unwrap())
            .unwrap();
        let expect: Vec<u8> = samples.iter().map(|&s| g711::ulaw_encode(s)).collect();
        assert_eq!(payload, expect);
        let m2 = text(c.encode(&ToAi::Audio {
            samples,
            timestamp_ms: 40,
            track: crate::aistream::Track::Inbound,
        }));
        assert_eq!(
            (m2["sequenceNumber"].as_str(), m2["media"]["chunk"].as_str()),
            (Some("3"), Some("2"))
        );
        let d = text(c.encode(&ToAi::Dtmf {
            digit: '#',
            duration_ms: 100,
        }));
        assert_eq!(
            d,
            json!({"event": "dtmf", "streamSid": "MZ89ab", "sequenceNumber": "4",
                   "dtmf": {"track": "inbound_track", "digit": "#"}})
        );
        let k = text(c.encode(&ToAi::Mark {
            name: "greeting".into(),
        }));
        assert_eq!(
            k,
            json!({"event": "mark", "sequenceNumber": "5", "streamSid": "MZ89ab",
                   "mark": {"name": "greeting"}})
        );
        let s = text(c.closing("hangup"));
        assert_eq!(
            s,
            json!({"event": "stop", "sequenceNumber": "6", "streamSid": "MZ89ab",
                   "stop": {"accountSid": "AC4567", "callSid": "CA0123"}})
        );
    }

    #[test]
    fn decodes_what_twilio_bots_send() {
        let mut c = TwilioCodec::new(&spec());
        let mut out = Vec::new();
        let ulaw: Vec<u8> = (0..=255).collect();
        let msg = json!({"event": "media", "streamSid": "MZ89ab",
                         "media": {"payload": BASE64.encode(&ulaw)}});
        c.decode(Frame::Text(msg.to_string()), &mut out).unwrap();
        c.decode(
            Frame::Text(r#"{"event":"mark","streamSid":"MZ89ab","mark":{"name":"m1"}}"#.into()),
            &mut out,
        )
        .unwrap();
        c.decode(
            Frame::Text(r#"{"event":"clear","streamSid":"MZ89ab"}"#.into()),
            &mut out,
        )
        .unwrap();
        let expect: Vec<i16> = ulaw.iter().map(|&c| g711::ulaw_decode(c)).collect();
        assert_eq!(
            out,
            vec![
                FromAi::Audio(expect),
                FromAi::Mark { name: "m1".into() },
                FromAi::Clear
            ]
        );
    }

    #[test]
    fn send_dtmf_is_our_own_event_with_checked_digits() {
        let mut c = TwilioCodec::new(&spec());
        let mut out = Vec::new();
        c.decode(
            Frame::Text(r#"{"event":"sendDtmf","streamSid":"MZ89ab","digits":"12#*A"}"#.into()),
            &mut out,
        )
        .unwrap();
        c.decode(
            Frame::Text(r#"{"event":"sendDtmf","digits":"9","durationMs":5000}"#.into()),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                FromAi::SendDtmf {
                    digits: "12#*A".into(),
                    duration_ms: 100
                },
                FromAi::SendDtmf {
                    digits: "9".into(),
                    duration_ms: 2000
                }
            ]
        );
        for bad in [
            r#"{"event":"sendDtmf","digits":"12x"}"#,
            r#"{"event":"sendDtmf","digits":""}"#,
        ] {
            assert_eq!(
                c.decode(Frame::Text(bad.into()), &mut out)
                    .unwrap_err()
                    .reason(),
                "bad_digits"
            );
        }
    }

    #[test]
    fn transfer_is_our_own_event_and_its_result_goes_back() {
        let mut c = TwilioCodec::new(&spec());
        let mut out = Vec::new();
        c.decode(
            Frame::Text(r#"{"event":"transfer","streamSid":"MZ89ab","to":"+15559990000"}"#.into()),
            &mut out,
        )
        .unwrap();
        c.decode(
            Frame::Text(r#"{"event":"transfer","to":"sip:desk@192.0.2.9:5060"}"#.into()),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                FromAi::Transfer {
                    to: "+15559990000".into()
                },
                FromAi::Transfer {
                    to: "sip:desk@192.0.2.9:5060".into()
                }
            ]
        );
        for bad in [
            r#"{"event":"transfer","to":"5559990000"}"#,
            r#"{"event":"transfer","to":"+1555 999"}"#,
            r#"{"event":"transfer","to":"tel:+15559990000"}"#,
        ] {
            assert_eq!(
                c.decode(Frame::Text(bad.into()), &mut out)
                    .unwrap_err()
                    .reason(),
                "bad_target"
            );
        }
        let r = text(
            c.encode(&ToAi::TransferResult(crate::aistream::TransferResult {
                status: "busy".into(),
                sip_status: "486".into(),
            })),
        );
        assert_eq!(
            r,
            json!({"event": "transferResult", "streamSid": "MZ89ab", "status": "busy", "sipStatus": "486"})
        );
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut c = TwilioCodec::new(&spec());
        let mut out = Vec::new();
        let cases: Vec<(Frame, &str)> = vec![
            (Frame::Text("{not json".into()), "malformed_json"),
            (Frame::Text(r#"{"event":"dance"}"#.into()), "unknown_event"),
            (Frame::Text(r#"{"media":{}}"#.into()), "malformed_json"),
            (
                Frame::Text(r#"{"event":"media","media":{"payload":"!!!"}}"#.into()),
                "bad_base64",
            ),
            (Frame::Text(r#"{"event":"media"}"#.into()), "malformed_json"),
            (Frame::Binary(vec![1, 2]), "unexpected_binary"),
        ];
        for (frame, reason) in cases {
            let e = c.decode(frame.clone(), &mut out).unwrap_err();
            assert_eq!(e.reason(), reason, "{frame:?}: {e}");
        }
        assert_eq!(
            c.decode(Frame::Text(r#"{"event":"dance"}"#.into()), &mut out),
            Err(ProtocolError::UnknownEvent("dance".into()))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn hangup_event_decodes() {
        let mut c = TwilioCodec::new(&spec());
        let mut out = Vec::new();
        c.decode(
            Frame::Text(r#"{"event":"hangup","streamSid":"MZ1"}"#.into()),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, vec![FromAi::Hangup]);
    }

    #[test]
    fn sms_event_encodes() {
        let mut c = TwilioCodec::new(&spec());
        let f = c.encode(&ToAi::Sms(crate::aistream::SmsIn {
            message_sid: "SM1".into(),
            from: "+1415".into(),
            to: "+1555".into(),
            body: "hi".into(),
        }));
        let Frame::Text(t) = f else { panic!() };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["event"], "sms");
        assert_eq!(v["streamSid"], spec().stream_sid);
        assert_eq!(v["sms"]["messageSid"], "SM1");
        assert_eq!(v["sms"]["body"], "hi");
    }
}
