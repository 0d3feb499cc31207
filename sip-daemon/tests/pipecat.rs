//! Bots built on Pipecat's own telephony code, unchanged (PyPI
//! `pipecat-ai`, installed by `scripts/setup.sh test` into
//! `target/pipecat-venv`), serve calls on the stream route: a bot written
//! for Twilio (`tests/peers/pipecat_twilio_bot.py`), and one that takes
//! Telnyx's, Plivo's or Exotel's stream with that CPaaS's serializer,
//! as Pipecat's transport detection picks it
//! (`tests/peers/pipecat_cpaas_bot.py`).

mod common;

use common::{Caller, Daemon, Opts, recv_status, tone_share};
use media_userspace::g711;
use std::io::BufRead;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/pipecat_twilio_bot.py"
);

fn python() -> String {
    std::env::var("GATEWAY_PIPECAT_PYTHON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/pipecat-venv/bin/python"
        )
        .to_string()
    })
}

/// Calls a number streaming in `dialect` to the bot `script`: 3 s of the
/// caller saying 440 Hz with a `7` by SIP INFO on the way. What the bot
/// wrote, and what the caller heard.
fn call_the_bot(script: &str, dialect: &str, number: &str) -> (serde_json::Value, Vec<i16>) {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("result.json");
    let mut bot = Command::new(python())
        .arg(script)
        .arg(port.to_string())
        .arg(&result)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("Pipecat's Python (scripts/setup.sh test makes target/pipecat-venv)");
    let mut line = String::new();
    std::io::BufReader::new(bot.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the Pipecat bot did not start");

    let d = Daemon::start_opts(Opts {
        extra: &format!(
            r#"
[[numbers]]
pattern = "{number}"
account = "acct"
route = "stream"
target = "ws://127.0.0.1:{port}/"
dialect = "{dialect}"
"#
        ),
        ..Opts::default()
    });
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut caller = Caller::new(d.sip_addr(), &format!("pipecat-{dialect}@test")).dialing(number);
    let rtp_addr = caller.invite(media.local_addr().unwrap().port());

    // 3 s of the caller saying 440 Hz, while collecting what comes back.
    let mut heard = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    for i in 0..150u16 {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&i.to_be_bytes());
        p.extend_from_slice(&(u32::from(i) * 160).to_be_bytes());
        p.extend_from_slice(&0x5eed_u32.to_be_bytes());
        p.extend((0..160).map(|j| {
            let t = f64::from(u32::from(i) * 160 + j) / 8000.0;
            g711::ulaw_encode(((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 8000.0) as i16)
        }));
        media.send_to(&p, rtp_addr).unwrap();
        if i == 60 {
            let body = "Signal=7\r\nDuration=160\r\n";
            let info = caller.request("INFO", 2, "info1", "").replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            );
            caller.sip.send_to(info.as_bytes(), d.sip_addr()).unwrap();
            recv_status(&caller.sip, &caller.call_id, 200);
        }
        let due = start + Duration::from_millis(20 * u64::from(i + 1));
        while Instant::now() < due {
            if let Ok((n, _)) = media.recv_from(&mut buf) {
                heard.extend(buf[12..n].iter().map(|&b| g711::ulaw_decode(b)));
            }
        }
    }
    caller.bye_cseq(3);
    let status = bot.wait().unwrap();
    assert!(status.success(), "bot exited with {status}");

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    (r, heard)
}

/// The frames of `heard` with a voice in them.
fn voiced(heard: &[i16]) -> Vec<i16> {
    heard
        .chunks_exact(160)
        .filter(|f| f.iter().any(|&s| s.abs() > 1000))
        .flatten()
        .copied()
        .collect()
}

#[test]
fn pipecat_twilio_serializer_runs_a_call_unchanged() {
    let (r, heard) = call_the_bot(BOT, "twilio", "+15557000003");
    assert_eq!(
        r["transport"], "twilio",
        "Pipecat recognised our start: {r}"
    );
    assert!(r["stream_sid"].as_str().unwrap().starts_with("MZ"));
    assert!(r["call_sid"].as_str().unwrap().starts_with("CA"));
    assert_eq!(r["before_start"], serde_json::json!(["connected"]));
    assert_eq!(r["audio_rate"], 16000);
    assert!(r["audio_seconds"].as_f64().unwrap() >= 2.5, "{r}");
    assert_eq!(r["digits"], serde_json::json!(["7"]));
    assert_eq!(r["stopped"], true);
    // Pipecat's runner reads the caller and callee from these parameters.
    assert_eq!(r["custom"]["from_number"], "+14155550100");
    assert_eq!(r["custom"]["to_number"], "+15557000003");
    // The bot's reply, serialised by Pipecat, reached the caller.
    let voiced = voiced(&heard);
    assert!(voiced.len() >= 40 * 160, "{} voiced samples", voiced.len());
    assert!(
        tone_share(&voiced, 1000.0, 8000.0) > 0.8,
        "Pipecat's 1 kHz reached the caller"
    );
}

const CPAAS_BOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/pipecat_cpaas_bot.py"
);

/// A CPaaS dialect end to end through Pipecat's serializer for it: the
/// transport is detected as that CPaaS, the caller's audio and digit
/// arrive, the bot's 2 s of 1 kHz reach the caller, and its interruption
/// (barge-in, half a second later) cuts the rest off.
fn cpaas_dialect_runs_a_call(dialect: &str, number: &str, interrupt: &str) {
    let (r, heard) = call_the_bot(CPAAS_BOT, dialect, number);
    assert_eq!(r["transport"], dialect, "Pipecat recognised our start: {r}");
    assert!(r["stream_id"].as_str().unwrap().starts_with("MZ"), "{r}");
    assert!(r["call_id"].as_str().unwrap().starts_with("CA"), "{r}");
    if dialect != "plivo" {
        assert_eq!(
            (r["from"].as_str(), r["to"].as_str()),
            (Some("+14155550100"), Some(number)),
            "{r}"
        );
    }
    assert_eq!(r["audio_rate"], 16000);
    assert!(r["audio_seconds"].as_f64().unwrap() >= 2.5, "{r}");
    assert_eq!(r["digits"], serde_json::json!(["7"]), "{r}");
    assert_eq!(r["stopped"], true);
    assert_eq!(r["interrupt"], interrupt);
    let voiced = voiced(&heard);
    assert!(
        tone_share(&voiced, 1000.0, 8000.0) > 0.8,
        "Pipecat's 1 kHz reached the caller"
    );
    // 2 s were sent; the interruption half a second later cut them short.
    let frames = voiced.len() / 160;
    assert!(
        (10..=75).contains(&frames),
        "{frames} frames of the bot's 100 were played before the barge-in"
    );
}

#[test]
fn pipecat_telnyx_serializer_runs_a_call_unchanged() {
    cpaas_dialect_runs_a_call("telnyx", "+15557000004", "clear");
}

#[test]
fn pipecat_plivo_serializer_runs_a_call_unchanged() {
    cpaas_dialect_runs_a_call("plivo", "+15557000005", "clearAudio");
}

#[test]
fn pipecat_vonage_serializer_runs_a_call_unchanged() {
    cpaas_dialect_runs_a_call("vonage", "+15557000007", "clear");
}

#[test]
fn pipecat_exotel_serializer_runs_a_call_unchanged() {
    cpaas_dialect_runs_a_call("exotel", "+15557000006", "clear");
}
