//! Frames from the AI through every dialect's decoder: any bytes, as text
//! and as binary, must give a message or a counted error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use media_userspace::aistream::{Dialect, Frame, StreamSpec, codec_for};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    for dialect in [
        Dialect::Twilio,
        Dialect::Pcm { sample_rate: 16000 },
        Dialect::Telnyx,
        Dialect::Plivo,
        Dialect::Exotel,
        Dialect::Vonage,
        Dialect::Jambonz { sample_rate: 8000 },
    ] {
        let spec = StreamSpec {
            url: "ws://127.0.0.1:1/".into(),
            dialect,
            call_sid: "CA".into(),
            account_sid: "AC".into(),
            stream_sid: "MZ".into(),
            from: String::new(),
            to: String::new(),
            parameters: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            reconnect_window: Duration::from_secs(1),
            keepalive: Duration::from_secs(1),
            max_frame_bytes: 1 << 20,
            fork: false,
        };
        let mut codec = codec_for(&spec);
        let mut out = Vec::new();
        let _ = codec.decode(Frame::Binary(data.to_vec()), &mut out);
        let _ = codec.decode(
            Frame::Text(String::from_utf8_lossy(data).into_owned()),
            &mut out,
        );
    }
});
