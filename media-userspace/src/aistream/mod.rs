//! The AI stream: one WebSocket per call toward the AI platform, carrying
//! the caller's audio out and the AI's voice back.
//!
//! The media leg and the socket task speak the typed messages below
//! ([`ToAi`], [`FromAi`]); each dialect turns them into its wire format
//! and back, sans-IO ([`twilio`], [`pcm`]); [`client`] is the socket edge.

pub mod client;
pub mod exotel;
pub mod jambonz;
pub mod media_json;
pub mod pcm;
pub mod plivo;
pub mod telnyx;
pub mod twilio;
pub mod vonage;

use std::time::Duration;

/// The wire format spoken on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Twilio Media Streams, bidirectional: JSON text frames, base64
    /// μ-law at 8 kHz.
    Twilio,
    /// JSON control frames and binary 16-bit little-endian PCM frames at
    /// `sample_rate` (8000, 16000 or 24000).
    Pcm { sample_rate: u32 },
    /// Telnyx media streaming: JSON text frames, base64 μ-law at 8 kHz.
    Telnyx,
    /// Plivo audio streams: JSON text frames, base64 μ-law at 8 kHz.
    Plivo,
    /// Exotel voicebot streams: JSON text frames, base64 16-bit PCM at
    /// 8 kHz.
    Exotel,
    /// Vonage's WebSocket audio: binary 16-bit PCM at 16 kHz, JSON events.
    Vonage,
    /// jambonz `listen` with bidirectional audio: binary 16-bit PCM at
    /// `sample_rate` (8000 or 16000), JSON commands.
    Jambonz { sample_rate: u32 },
}

impl Dialect {
    /// Rates the `pcm` dialect offers.
    pub const PCM_RATES: [u32; 3] = [8000, 16000, 24000];

    /// Parses a number's `dialect` setting: `twilio`, `telnyx`, `plivo`,
    /// `exotel`, `vonage`, `jambonz` (8 kHz) or `jambonz16`, `pcm`
    /// (16 kHz) or `pcm8`/`pcm16`/`pcm24`.
    pub fn parse(s: &str) -> Option<Dialect> {
        match s {
            "twilio" => Some(Dialect::Twilio),
            "telnyx" => Some(Dialect::Telnyx),
            "plivo" => Some(Dialect::Plivo),
            "exotel" => Some(Dialect::Exotel),
            "vonage" => Some(Dialect::Vonage),
            "jambonz" => Some(Dialect::Jambonz { sample_rate: 8000 }),
            "jambonz16" => Some(Dialect::Jambonz { sample_rate: 16000 }),
            "pcm" | "pcm16" => Some(Dialect::Pcm { sample_rate: 16000 }),
            "pcm8" => Some(Dialect::Pcm { sample_rate: 8000 }),
            "pcm24" => Some(Dialect::Pcm { sample_rate: 24000 }),
            _ => None,
        }
    }

    /// Sampling rate of the audio on the socket.
    pub fn sample_rate(self) -> u32 {
        match self {
            Dialect::Twilio | Dialect::Telnyx | Dialect::Plivo | Dialect::Exotel => 8000,
            Dialect::Pcm { sample_rate } | Dialect::Jambonz { sample_rate } => sample_rate,
            Dialect::Vonage => 16000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Twilio => "twilio",
            Dialect::Pcm { .. } => "pcm",
            Dialect::Telnyx => "telnyx",
            Dialect::Plivo => "plivo",
            Dialect::Exotel => "exotel",
            Dialect::Vonage => "vonage",
            Dialect::Jambonz { .. } => "jambonz",
        }
    }
}

/// Everything the socket task needs to open and describe a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// `ws://` or `wss://` URL.
    pub url: String,
    pub dialect: Dialect,
    pub call_sid: String,
    pub account_sid: String,
    pub stream_sid: String,
    pub from: String,
    pub to: String,
    /// `customParameters` (call details first, then the number's own).
    pub parameters: Vec<(String, String)>,
    pub connect_timeout: Duration,
    /// A socket lost mid-call is reconnected within this window.
    pub reconnect_window: Duration,
    /// Ping interval; a socket silent for three intervals is lost.
    pub keepalive: Duration,
    /// Frames larger than this from the AI are refused.
    pub max_frame_bytes: usize,
    /// A listen-only copy of a relayed call ([`crate::tap`]): both parties'
    /// audio goes out, nothing the socket sends back is used.
    pub fork: bool,
}

/// Whose audio a frame carries (Twilio's `track`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    /// The caller (an AI stream), or side A of a forked relay.
    Inbound,
    /// Side B of a forked relay.
    Outbound,
    /// Both sides of a forked relay summed (the `pcm` dialect).
    Mixed,
}

impl Track {
    pub fn name(self) -> &'static str {
        match self {
            Track::Inbound => "inbound",
            Track::Outbound => "outbound",
            Track::Mixed => "mixed",
        }
    }
}

/// Audio frame length on the socket, both ways (Twilio sends 20 ms).
pub const FRAME_MS: u32 = 20;

/// From the media leg to the AI.
#[derive(Clone, Debug, PartialEq)]
pub enum ToAi {
    /// [`FRAME_MS`] of the caller's audio at the dialect's rate;
    /// `timestamp_ms` counts from the start of the stream.
    Audio {
        samples: Vec<i16>,
        timestamp_ms: u64,
        track: Track,
    },
    /// A key press (RFC 4733 or SIP INFO).
    Dtmf { digit: char, duration_ms: u32 },
    /// The audio queued before this mark has been played.
    Mark { name: String },
    /// How a `transfer` the AI asked for went (our addition).
    TransferResult(TransferResult),
    /// An SMS reached the number of this call (our addition, event `sms`).
    Sms(SmsIn),
}

/// An inbound SMS told to the AI of a live call on its number.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SmsIn {
    pub message_sid: String,
    pub from: String,
    pub to: String,
    pub body: String,
}

/// The outcome of the AI's `transfer` (event `transferResult`): `status`
/// is `answered` (the caller is bridged to the target and this stream
/// ends), or why not: `busy`, `no_answer`, `declined`, `not_found`,
/// `unreachable`, `failed`, `unavailable` (no route to the target) or
/// `refused` (the call cannot be transferred now); the AI keeps the
/// caller then. `sipStatus` is the far side's final status ("0" when
/// none came).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferResult {
    pub status: String,
    pub sip_status: String,
}

/// From the AI to the media leg.
#[derive(Clone, Debug, PartialEq)]
pub enum FromAi {
    /// The socket is up (first and after reconnects): start playout.
    Connected,
    /// The stream moved to another AI: drop what the old one queued
    /// (audio, tones, marks) without reporting it.
    Reset,
    /// Audio at the dialect's rate, any length.
    Audio(Vec<i16>),
    Mark {
        name: String,
    },
    Clear,
    /// Play these digits to the caller as RFC 4733 events (our addition,
    /// event `sendDtmf`; Twilio's protocol has no such message).
    SendDtmf {
        digits: String,
        duration_ms: u32,
    },
    /// Transfer the caller to `to` (an E.164 number, sent through the
    /// number's trunk, or a `sip:` URI): our addition, event `transfer`.
    Transfer {
        to: String,
    },
    /// End the call now: our addition, event `hangup`.
    Hangup,
}

/// Default tone length of `sendDtmf` digits.
pub const DTMF_DEFAULT_MS: u32 = 100;

/// What the AI sent that could not be used; each is counted and logged,
/// none ends the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame is not valid JSON: {0}")]
    Json(String),
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    #[error("media payload is not valid base64")]
    Base64,
    #[error("frame of {0} bytes exceeds the limit")]
    Oversized(usize),
    #[error("binary frame of {0} bytes is not whole 16-bit samples")]
    FrameSize(usize),
    #[error("binary frame where the dialect expects text")]
    UnexpectedBinary,
    #[error("sendDtmf digits must be 0-9, *, #, A-D: {0:?}")]
    BadDigits(String),
    #[error("transfer target must be an E.164 number or a sip: URI: {0:?}")]
    BadTarget(String),
}

impl ProtocolError {
    /// Label for the rejection counter.
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::Json(_) => "malformed_json",
            ProtocolError::UnknownEvent(_) => "unknown_event",
            ProtocolError::Base64 => "bad_base64",
            ProtocolError::Oversized(_) => "oversized",
            ProtocolError::FrameSize(_) => "frame_size",
            ProtocolError::UnexpectedBinary => "unexpected_binary",
            ProtocolError::BadDigits(_) => "bad_digits",
            ProtocolError::BadTarget(_) => "bad_target",
        }
    }
}

/// A frame on the socket, independent of the WebSocket library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// A dialect's sans-IO encoder/decoder for one stream.
pub trait DialectCodec: Send {
    /// Frames sent when the socket opens (again).
    fn opening(&mut self) -> Vec<Frame>;
    fn encode(&mut self, msg: &ToAi) -> Frame;
    /// The frame sent when the call ends.
    fn closing(&mut self, reason: &str) -> Frame;
    /// Decodes one frame from the AI; pushes what it carries to `out`.
    fn decode(&mut self, frame: Frame, out: &mut Vec<FromAi>) -> Result<(), ProtocolError>;
}

pub fn codec_for(spec: &StreamSpec) -> Box<dyn DialectCodec> {
    match spec.dialect {
        Dialect::Twilio => Box::new(twilio::TwilioCodec::new(spec)),
        Dialect::Pcm { .. } => Box::new(pcm::PcmCodec::new(spec)),
        Dialect::Telnyx => Box::new(telnyx::TelnyxCodec::new(spec)),
        Dialect::Plivo => Box::new(plivo::PlivoCodec::new(spec)),
        Dialect::Exotel => Box::new(exotel::ExotelCodec::new(spec)),
        Dialect::Vonage => Box::new(vonage::VonageCodec::new(spec)),
        Dialect::Jambonz { .. } => Box::new(jambonz::JambonzCodec::new(spec)),
    }
}

/// Binary audio: 16-bit little-endian PCM, a whole number of samples.
pub fn decode_l16(b: &[u8]) -> Result<Vec<i16>, ProtocolError> {
    if !b.len().is_multiple_of(2) {
        return Err(ProtocolError::FrameSize(b.len()));
    }
    Ok(b.chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect())
}

/// A JSON text frame.
pub(crate) fn json_frame(v: serde_json::Value) -> Frame {
    Frame::Text(v.to_string())
}

/// Our `transferResult` in the dialects that build their JSON by hand
/// (vonage, jambonz).
pub(crate) fn transfer_result_frame(result: &TransferResult) -> Frame {
    json_frame(serde_json::json!({
        "event": "transferResult",
        "status": result.status,
        "sipStatus": result.sip_status,
    }))
}

/// Our `sms` event in those dialects.
pub(crate) fn sms_frame(sms: &SmsIn) -> Frame {
    json_frame(serde_json::json!({"event": "sms", "sms": sms}))
}

/// Our own events from the AI (`sendDtmf`, `transfer`, `hangup`) in the
/// dialects whose own messages have another tag (vonage's `action`,
/// jambonz's `type`).
#[derive(serde::Deserialize, Debug)]
#[serde(tag = "event")]
enum OurEvent {
    #[serde(rename = "sendDtmf", rename_all = "camelCase")]
    SendDtmf {
        digits: String,
        duration_ms: Option<u32>,
    },
    #[serde(rename = "transfer")]
    Transfer { to: String },
    #[serde(rename = "hangup")]
    Hangup {},
}

/// Decodes one of [`OurEvent`] from `value` (the frame `text`, parsed).
pub(crate) fn decode_our_event(
    value: &serde_json::Value,
    text: &str,
    out: &mut Vec<FromAi>,
) -> Result<(), ProtocolError> {
    use serde::Deserialize as _;
    match OurEvent::deserialize(value).map_err(|_| unknown_event(text))? {
        OurEvent::SendDtmf {
            digits,
            duration_ms,
        } => out.push(send_dtmf(digits, duration_ms)?),
        OurEvent::Transfer { to } => out.push(transfer(to)?),
        OurEvent::Hangup {} => out.push(FromAi::Hangup),
    }
    Ok(())
}

/// The error for a well-formed message whose `event` we do not know,
/// naming the event.
pub fn unknown_event(text: &str) -> ProtocolError {
    #[derive(serde::Deserialize)]
    struct EventName {
        event: String,
    }
    let name = serde_json::from_str::<EventName>(text)
        .map(|e| e.event)
        .unwrap_or_default();
    ProtocolError::UnknownEvent(name)
}

/// The AI's `sendDtmf` request, the same in both dialects:
/// `{"event": "sendDtmf", "digits": "12#", "durationMs": 120}`.
pub fn send_dtmf(digits: String, duration_ms: Option<u32>) -> Result<FromAi, ProtocolError> {
    let ok = !digits.is_empty()
        && digits.len() <= 64
        && digits
            .chars()
            .all(|c| crate::dtmf::event_for_digit(c).is_some());
    if !ok {
        return Err(ProtocolError::BadDigits(digits.chars().take(64).collect()));
    }
    Ok(FromAi::SendDtmf {
        digits,
        duration_ms: duration_ms.unwrap_or(DTMF_DEFAULT_MS).clamp(40, 2000),
    })
}

/// The AI's `transfer`: `to` is an E.164 number (`+` and 1–15 digits) or
/// a `sip:` URI, at most 256 bytes.
pub fn transfer(to: String) -> Result<FromAi, ProtocolError> {
    let number = to
        .strip_prefix('+')
        .is_some_and(|d| (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    // It goes into a Refer-To or Request-URI: nothing that could end the
    // header or the URI early.
    let uri = to.starts_with("sip:")
        && to.len() <= 256
        && !to
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ','));
    if !(number || uri) {
        return Err(ProtocolError::BadTarget(to.chars().take(64).collect()));
    }
    Ok(FromAi::Transfer { to })
}

/// A stream of `dialect` for the codecs' tests.
#[cfg(test)]
pub(crate) fn test_spec(dialect: Dialect) -> StreamSpec {
    StreamSpec {
        url: "ws://127.0.0.1:1/".into(),
        dialect,
        call_sid: "CA0123".into(),
        account_sid: "AC4567".into(),
        stream_sid: "MZ89ab".into(),
        from: "+15551110000".into(),
        to: "+15552220000".into(),
        parameters: vec![
            ("from".into(), "+15551110000".into()),
            ("lang".into(), "en".into()),
        ],
        connect_timeout: Duration::from_secs(1),
        reconnect_window: Duration::from_secs(1),
        keepalive: Duration::from_secs(1),
        max_frame_bytes: 1 << 16,
        fork: false,
    }
}

/// A text frame's JSON, for the codecs' tests.
#[cfg(test)]
pub(crate) fn json_of(f: Frame) -> serde_json::Value {
    match f {
        Frame::Text(t) => serde_json::from_str(&t).expect("JSON"),
        Frame::Binary(_) => panic!("binary"),
    }
}

/// `MZ` + 32 hex digits, as Twilio's stream SIDs.
pub fn new_stream_sid() -> String {
    format!("MZ{:032x}", rand::random::<u128>())
}
