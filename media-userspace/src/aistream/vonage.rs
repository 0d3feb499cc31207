//! Vonage's WebSocket audio, as its Voice API `connect` action to a
//! `websocket` endpoint speaks it
//! (<https://developer.vonage.com/en/voice/voice-api/concepts/websockets>).
//!
//! To the AI: one text frame `{"event": "websocket:connected",
//! "content-type": "audio/l16;rate=16000", …}` carrying the call's details
//! and custom parameters as the endpoint's headers (flattened, as Vonage
//! sends them), then the caller's audio as binary frames of 20 ms of
//! 16-bit little-endian PCM at 16 kHz (640 bytes); DTMF as
//! `{"event": "websocket:dtmf", "digit", "duration"}`; a mark, once what
//! the bot queued before its `notify` has played, as `{"event":
//! "websocket:notify", "payload"}`; and `{"event": "websocket:stop"}`
//! (ours: Vonage just closes) before the socket closes.
//!
//! From the AI: binary PCM frames of any whole number of samples, `{"action":
//! "clear"}`, `{"action": "notify", "payload": {"name": …}}`, and our
//! additions (`sendDtmf`, `transfer`, `hangup`). Pipecat's
//! `VonageFrameSerializer` runs unchanged against it.

use super::{
    DialectCodec, Frame, FromAi, ProtocolError, StreamSpec, ToAi, decode_l16, decode_our_event,
    json_frame, sms_frame, transfer_result_frame, unknown_event,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// What a Vonage bot sends in text frames: Vonage's `action`s, or our
/// own `event`s.
#[derive(Deserialize, Debug)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Action {
    Clear {},
    Notify {
        #[serde(default)]
        payload: Value,
    },
    #[serde(other)]
    Other,
}

pub struct VonageCodec {
    spec: StreamSpec,
}

impl VonageCodec {
    pub fn new(spec: &StreamSpec) -> VonageCodec {
        VonageCodec { spec: spec.clone() }
    }
}

impl DialectCodec for VonageCodec {
    fn opening(&mut self) -> Vec<Frame> {
        let s = &self.spec;
        let mut m = Map::new();
        // Custom parameters first, so the call's own details win a clash.
        for (k, v) in &s.parameters {
            m.insert(k.clone(), Value::String(v.clone()));
        }
        m.insert("event".into(), "websocket:connected".into());
        m.insert(
            "content-type".into(),
            format!("audio/l16;rate={}", s.dialect.sample_rate()).into(),
        );
        m.insert("call_sid".into(), s.call_sid.clone().into());
        m.insert("stream_sid".into(), s.stream_sid.clone().into());
        m.insert("account_sid".into(), s.account_sid.clone().into());
        m.insert("from".into(), s.from.clone().into());
        m.insert("to".into(), s.to.clone().into());
        vec![json_frame(Value::Object(m))]
    }

    fn encode(&mut self, msg: &ToAi) -> Frame {
        match msg {
            ToAi::Audio { samples, .. } => {
                Frame::Binary(samples.iter().flat_map(|s| s.to_le_bytes()).collect())
            }
            ToAi::Dtmf { digit, duration_ms } => json_frame(json!({
                "event": "websocket:dtmf",
                "digit": digit.to_string(),
                "duration": duration_ms,
            })),
            ToAi::Mark { name } => json_frame(json!({
                "event": "websocket:notify",
                "payload": serde_json::from_str::<Value>(name).unwrap_or_else(|_| Value::String(name.clone())),
            })),
            ToAi::TransferResult(result) => transfer_result_frame(result),
            ToAi::Sms(sms) => sms_frame(sms),
        }
    }

    fn closing(&mut self, reason: &str) -> Frame {
        json_frame(json!({"event": "websocket:stop", "reason": reason}))
    }

    fn decode(&mut self, frame: Frame, out: &mut Vec<FromAi>) -> Result<(), ProtocolError> {
        let t = match frame {
            Frame::Binary(b) => {
                out.push(FromAi::Audio(decode_l16(&b)?));
                return Ok(());
            }
            Frame::Text(t) => t,
        };
        let value: Value =
            serde_json::from_str(&t).map_err(|e| ProtocolError::Json(e.to_string()))?;
        if value.get("action").is_some() {
            match Action::deserialize(&value).map_err(|e| ProtocolError::Json(e.to_string()))? {
                Action::Clear {} => out.push(FromAi::Clear),
                // The payload is the bot's own and comes back unchanged
                // (carried as its JSON text).
                Action::Notify { payload } => out.push(FromAi::Mark {
                    name: payload.to_string(),
                }),
                Action::Other => return Err(unknown_event(&t)),
            }
            return Ok(());
        }
        decode_our_event(&value, &t, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aistream::{Dialect, Track, json_of, test_spec};

    #[test]
    fn speaks_vonage_with_binary_audio() {
        let mut c = VonageCodec::new(&test_spec(Dialect::Vonage));
        let open: Vec<_> = c.opening().into_iter().map(json_of).collect();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0]["event"], "websocket:connected");
        assert_eq!(open[0]["content-type"], "audio/l16;rate=16000");
        assert_eq!(
            (open[0]["call_sid"].as_str(), open[0]["lang"].as_str()),
            (Some("CA0123"), Some("en"))
        );
        let a = c.encode(&ToAi::Audio {
            samples: vec![1, -1],
            timestamp_ms: 20,
            track: Track::Inbound,
        });
        assert_eq!(a, Frame::Binary(vec![1, 0, 0xff, 0xff]));
        let d = json_of(c.encode(&ToAi::Dtmf {
            digit: '9',
            duration_ms: 120,
        }));
        assert_eq!(
            (d["event"].as_str(), d["digit"].as_str()),
            (Some("websocket:dtmf"), Some("9"))
        );
        let k = json_of(c.encode(&ToAi::Mark {
            name: r#"{"name":"m","n":1}"#.into(),
        }));
        assert_eq!(k["payload"], json!({"name": "m", "n": 1}));
        let mut out = Vec::new();
        c.decode(Frame::Binary(vec![0, 1]), &mut out).unwrap();
        c.decode(Frame::Text(r#"{"action":"clear"}"#.into()), &mut out)
            .unwrap();
        c.decode(
            Frame::Text(r#"{"action":"notify","payload":{"name":"n1"}}"#.into()),
            &mut out,
        )
        .unwrap();
        c.decode(Frame::Text(r#"{"event":"hangup"}"#.into()), &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![
                FromAi::Audio(vec![256]),
                FromAi::Clear,
                FromAi::Mark {
                    name: r#"{"name":"n1"}"#.into()
                },
                FromAi::Hangup
            ]
        );
        assert_eq!(
            c.decode(Frame::Binary(vec![1, 2, 3]), &mut out),
            Err(ProtocolError::FrameSize(3))
        );
        assert!(matches!(
            c.decode(Frame::Text(r#"{"action":"talk"}"#.into()), &mut out),
            Err(ProtocolError::UnknownEvent(_))
        ));
        assert!(c.decode(Frame::Text("[1]".into()), &mut out).is_err());
    }
}
