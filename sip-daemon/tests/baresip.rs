//! baresip (Debian `baresip-core`, headless: a WAV file as microphone, the
//! decoded far end recorded by its `sndfile` module) calls the stream
//! route; the AI is a real WebSocket server. Each side must hear the
//! other's tone.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::ai::{AiServer, Step};
use common::baresip::{baresip_call, tone, tone_in_frames};
use common::{Daemon, Opts};
use media_userspace::g711;
use serde_json::json;
use std::time::Duration;

fn daemon(url: &str, dialect: &str) -> Daemon {
    Daemon::start_opts(Opts {
        extra: &format!(
            r#"
[[numbers]]
pattern = "+15557000002"
account = "acct"
route = "stream"
target = "{url}"
dialect = "{dialect}"
"#
        ),
        ..Opts::default()
    })
}

#[test]
fn baresip_pcmu_caller_and_twilio_ai_hear_each_other() {
    // The AI answers with 2 s of 1 kHz.
    let ulaw: Vec<u8> = tone(1000.0, 8000, 2000, 8000.0)
        .into_iter()
        .map(g711::ulaw_encode)
        .collect();
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(300)),
        Step::Text(
            json!({"event": "media", "streamSid": "x", "media": {"payload": BASE64.encode(&ulaw)}})
                .to_string(),
        ),
    ]]);
    let d = daemon(&ai.url(), "twilio");
    // The caller says 440 Hz for 3 s.
    let (rate, heard) = baresip_call(
        &d,
        "+15557000002",
        "PCMU/8000/1",
        8000,
        &tone(440.0, 8000, 3000, 8000.0),
        4,
    );
    assert_eq!(rate, 8000);
    let (frames, share) = tone_in_frames(&heard, 1000.0, 8000);
    assert!(frames >= 80, "baresip heard {frames} frames of sound");
    assert!(share > 0.9, "the AI's 1 kHz reached baresip: {share:.2}");
    // And the AI heard the caller's 440 Hz.
    let pcm: Vec<i16> = ai
        .events("media")
        .iter()
        .flat_map(|(_, _, v)| {
            BASE64
                .decode(v["media"]["payload"].as_str().unwrap())
                .unwrap()
                .into_iter()
                .map(g711::ulaw_decode)
                .collect::<Vec<_>>()
        })
        .collect();
    let (frames, share) = tone_in_frames(&pcm, 440.0, 8000);
    assert!(frames >= 100, "the AI got {frames} frames of sound");
    assert!(
        share > 0.9,
        "the caller's 440 Hz reached the AI: {share:.2}"
    );
}

#[test]
fn baresip_g722_caller_and_pcm16_ai_exchange_wideband_audio() {
    // 6 kHz both ways: only a real 16 kHz path carries it.
    let pcm16: Vec<u8> = tone(5000.0, 16000, 2000, 6000.0)
        .into_iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(300)),
        Step::Binary(pcm16),
    ]]);
    let d = daemon(&ai.url(), "pcm16");
    let (rate, heard) = baresip_call(
        &d,
        "+15557000002",
        "G722/16000/1",
        16000,
        &tone(6000.0, 16000, 3000, 6000.0),
        4,
    );
    assert_eq!(rate, 16000, "baresip decoded G.722 at 16 kHz");
    let (frames, share) = tone_in_frames(&heard, 5000.0, 16000);
    assert!(frames >= 80, "baresip heard {frames} frames of sound");
    assert!(
        share > 0.8,
        "the AI's 5 kHz reached baresip over G.722: {share:.2}"
    );
    let got: Vec<i16> = ai.binary_pcm();
    let (frames, share) = tone_in_frames(&got, 6000.0, 16000);
    assert!(frames >= 100, "the AI got {frames} frames of sound");
    assert!(share > 0.8, "baresip's 6 kHz reached the AI: {share:.2}");
}
