//! baresip (Debian `baresip-core`, headless: a WAV file as microphone, the
//! decoded far end recorded by its `sndfile` module) calls the stream
//! route; the AI is a real WebSocket server. Each side must hear the
//! other's tone.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::ai::{AiServer, Step};
use common::{Daemon, Opts, tone_share};
use media_userspace::g711;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn tone(hz: f64, rate: u32, ms: usize, amp: f64) -> Vec<i16> {
    (0..ms * rate as usize / 1000)
        .map(|i| {
            ((2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() * amp) as i16
        })
        .collect()
}

fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    std::fs::write(path, w).unwrap();
}

/// 16-bit PCM samples of a WAV file (the `data` chunk).
fn read_wav(path: &Path) -> (u32, Vec<i16>) {
    let b = std::fs::read(path).unwrap();
    let rate = u32::from_le_bytes(b[24..28].try_into().unwrap());
    let mut i = 12;
    while i + 8 <= b.len() {
        let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()) as usize;
        if &b[i..i + 4] == b"data" {
            let end = (i + 8 + len).min(b.len());
            let s = b[i + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (rate, s);
        }
        i += 8 + len;
    }
    (rate, Vec::new())
}

/// 20 ms frames of `s` with sound in them, and the median share of `hz`
/// in those frames.
fn tone_in_frames(s: &[i16], hz: f64, rate: u32) -> (usize, f64) {
    let n = rate as usize / 50;
    let mut shares: Vec<f64> = s
        .chunks_exact(n)
        .filter(|f| f.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n as f64 > 500.0 * 500.0)
        .map(|f| tone_share(f, hz, f64::from(rate)))
        .collect();
    shares.sort_by(f64::total_cmp);
    let median = shares.get(shares.len() / 2).copied().unwrap_or(0.0);
    (shares.len(), median)
}

/// Runs baresip for `secs` seconds, dialling `number` on the daemon with
/// `codec`, speaking `input`; returns what it heard (rate, samples).
fn baresip_call(
    d: &Daemon,
    number: &str,
    codec: &str,
    rate: u32,
    input: &[i16],
    secs: u32,
) -> (u32, Vec<i16>) {
    let dir = d
        .dir
        .path()
        .join(format!("baresip-{}", codec.replace('/', "-")));
    std::fs::create_dir_all(&dir).unwrap();
    write_wav(&dir.join("in.wav"), rate, input);
    let port = common::free_port();
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{port}\naudio_player none\n\
             audio_source aufile,{src}\naudio_alert none\nausrc_srate {rate}\nauplay_srate {rate}\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule g722.so\nmodule aufile.so\n\
             module sndfile.so\nmodule_tmp account.so\nmodule_app contact.so\nmodule_app menu.so\n\
             snd_path {dir}\n",
            src = dir.join("in.wav").display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!("<sip:+14155550100@127.0.0.1>;regint=0;audio_codecs={codec}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("contacts"), "").unwrap();
    let out = Command::new("timeout")
        .arg(format!("{}", secs + 10))
        .arg("baresip")
        .arg("-f")
        .arg(&dir)
        .arg("-e")
        .arg(format!("/dial sip:{number}@{}", d.sip_addr()))
        .arg("-t")
        .arg(secs.to_string())
        .current_dir(&dir)
        .output()
        .expect("run baresip (apt package baresip-core)");
    let log = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        log.contains("Call established"),
        "baresip log:\n{log}\n{}",
        d.logs()
    );
    let dec = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("baresip recorded nothing:\n{log}"));
    read_wav(&dec)
}

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
