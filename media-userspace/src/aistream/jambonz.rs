//! jambonz's `listen` verb with bidirectional audio, on the wire
//! (<https://docs.jambonz.org/verbs/verbs/listen>): the gateway plays the
//! part of jambonz toward an app written for it.
//!
//! To the AI: one text frame of call metadata (`callSid`, `streamSid`,
//! `accountSid`, `from`, `to`, `direction`, `sampleRate`, `mixType`, and
//! the custom parameters as the verb's `metadata`), then the caller's
//! audio as binary frames of 20 ms of 16-bit little-endian PCM at 8 kHz
//! (`jambonz`) or 16 kHz (`jambonz16`), DTMF as `{"event": "dtmf",
//! "dtmf", "duration"}` (as with `passDtmf`), a played mark as `{"type":
//! "mark", "data": {"name", "event": "playout"}}`, and `{"event":
//! "stop"}` (ours) before the socket closes.
//!
//! From the AI: binary PCM (streaming bidirectional audio), `{"type":
//! "playAudio", "data": {"audioContent": <base64 L16>}}`, `{"type":
//! "killAudio"}` (barge-in), `{"type": "mark", "data": {"name"}}`,
//! `{"type": "disconnect"}` (hang up), and our additions.

use super::{
    DialectCodec, Frame, FromAi, ProtocolError, StreamSpec, ToAi, decode_l16, decode_our_event,
    json_frame, sms_frame, transfer_result_frame,
};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PlayData {
    audio_content: String,
    /// `raw` (L16 at the stream's rate) is what this stream plays.
    #[serde(default)]
    audio_content_type: Option<String>,
    /// A JSON number or string in jambonz's examples.
    #[serde(default)]
    sample_rate: Option<Value>,
}

#[derive(Deserialize, Debug)]
struct MarkData {
    name: String,
}

/// jambonz's commands from the app (`type`).
#[derive(Deserialize, Debug)]
#[serde(tag = "type")]
enum Command {
    #[serde(rename = "playAudio")]
    PlayAudio { data: PlayData },
    #[serde(rename = "killAudio")]
    KillAudio {},
    #[serde(rename = "mark")]
    Mark { data: MarkData },
    #[serde(rename = "clearMarks")]
    ClearMarks {},
    #[serde(rename = "disconnect")]
    Disconnect {},
    #[serde(other)]
    Other,
}

pub struct JambonzCodec {
    spec: StreamSpec,
}

impl JambonzCodec {
    pub fn new(spec: &StreamSpec) -> JambonzCodec {
        JambonzCodec { spec: spec.clone() }
    }
}

impl DialectCodec for JambonzCodec {
    fn opening(&mut self) -> Vec<Frame> {
        let s = &self.spec;
        let metadata: Map<String, Value> = s
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        vec![json_frame(json!({
            "callSid": s.call_sid,
            "streamSid": s.stream_sid,
            "accountSid": s.account_sid,
            "from": s.from,
            "to": s.to,
            "direction": "inbound",
            "sampleRate": s.dialect.sample_rate(),
            // A listen-only fork sums both parties.
            "mixType": if s.fork { "mixed" } else { "mono" },
            "metadata": metadata,
        }))]
    }

    fn encode(&mut self, msg: &ToAi) -> Frame {
        match msg {
            ToAi::Audio { samples, .. } => {
                Frame::Binary(samples.iter().flat_map(|s| s.to_le_bytes()).collect())
            }
            ToAi::Dtmf { digit, duration_ms } => json_frame(json!({
                "event": "dtmf",
                "dtmf": digit.to_string(),
                "duration": duration_ms.to_string(),
            })),
            ToAi::Mark { name } => json_frame(json!({
                "type": "mark",
                "data": {"name": name, "event": "playout"},
            })),
            ToAi::TransferResult(result) => transfer_result_frame(result),
            ToAi::Sms(sms) => sms_frame(sms),
        }
    }

    fn closing(&mut self, reason: &str) -> Frame {
        json_frame(json!({"event": "stop", "reason": reason}))
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
        if value.get("type").is_some() {
            match Command::deserialize(&value).map_err(|e| ProtocolError::Json(e.to_string()))? {
                Command::PlayAudio { data } => {
                    let rate = data.sample_rate.as_ref().map(|r| match r {
                        Value::String(s) => s.parse::<u32>().ok(),
                        other => other.as_u64().and_then(|n| u32::try_from(n).ok()),
                    });
                    let raw = data
                        .audio_content_type
                        .as_deref()
                        .is_none_or(|t| t.eq_ignore_ascii_case("raw"))
                        && rate.is_none_or(|r| r == Some(self.spec.dialect.sample_rate()));
                    if !raw {
                        return Err(ProtocolError::Json(
                            "playAudio must be raw L16 at the stream's sample rate".into(),
                        ));
                    }
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data.audio_content.as_bytes())
                        .map_err(|_| ProtocolError::Base64)?;
                    out.push(FromAi::Audio(decode_l16(&bytes)?));
                }
                Command::KillAudio {} => out.push(FromAi::Clear),
                Command::Mark { data } => out.push(FromAi::Mark { name: data.name }),
                // Marks not yet played are forgotten with the audio that
                // a `killAudio` drops; alone, nothing to do.
                Command::ClearMarks {} => {}
                Command::Disconnect {} => out.push(FromAi::Hangup),
                Command::Other => {
                    let name = value["type"].as_str().unwrap_or_default();
                    return Err(ProtocolError::UnknownEvent(name.chars().take(64).collect()));
                }
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
    fn speaks_jambonz_listen_with_binary_audio() {
        let mut c = JambonzCodec::new(&test_spec(Dialect::Jambonz { sample_rate: 8000 }));
        let open: Vec<_> = c.opening().into_iter().map(json_of).collect();
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0]["callSid"].as_str(), open[0]["sampleRate"].as_u64()),
            (Some("CA0123"), Some(8000))
        );
        assert_eq!(open[0]["metadata"]["lang"], "en");
        assert_eq!(
            c.encode(&ToAi::Audio {
                samples: vec![2],
                timestamp_ms: 0,
                track: Track::Inbound
            }),
            Frame::Binary(vec![2, 0])
        );
        let d = json_of(c.encode(&ToAi::Dtmf {
            digit: '#',
            duration_ms: 80,
        }));
        assert_eq!(
            (d["event"].as_str(), d["dtmf"].as_str()),
            (Some("dtmf"), Some("#"))
        );
        let k = json_of(c.encode(&ToAi::Mark { name: "m".into() }));
        assert_eq!(k["data"]["event"], "playout");
        let mut out = Vec::new();
        for msg in [
            r#"{"type":"playAudio","data":{"audioContent":"AAE=","audioContentType":"raw","sampleRate":"8000"}}"#,
            r#"{"type":"mark","data":{"name":"m1"}}"#,
            r#"{"type":"killAudio"}"#,
            r#"{"type":"clearMarks"}"#,
            r#"{"type":"disconnect"}"#,
        ] {
            c.decode(Frame::Text(msg.into()), &mut out).unwrap();
        }
        c.decode(Frame::Binary(vec![0, 2]), &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                FromAi::Audio(vec![256]),
                FromAi::Mark { name: "m1".into() },
                FromAi::Clear,
                FromAi::Hangup,
                FromAi::Audio(vec![512]),
            ]
        );
        assert_eq!(
            c.decode(Frame::Text(r#"{"type":"dance"}"#.into()), &mut out),
            Err(ProtocolError::UnknownEvent("dance".into()))
        );
        assert_eq!(
            c.decode(
                Frame::Text(r#"{"type":"playAudio","data":{"audioContent":"%"}}"#.into()),
                &mut out
            ),
            Err(ProtocolError::Base64)
        );
    }
}
