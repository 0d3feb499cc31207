//! Route `stream` end to end: real callers (SIPp playing Debian's G.711
//! and RFC 4733 recordings; a UDP caller in the test) through the daemon
//! binary to a real WebSocket server playing the AI.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::ai::{AiServer, Got, Step};
use common::{Caller, Daemon, Opts, recv_status, tone_share};
use media_userspace::g711;
use serde_json::json;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

const PCAPS: &str = "/usr/share/sip-tester";
const SCENARIO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/scenarios/uac_pcap_dtmf.xml"
);

/// A daemon whose number `+15557000001` streams to `url` in `dialect`.
fn daemon(url: &str, dialect: &str, extra: &str) -> Daemon {
    daemon_media(url, dialect, extra, "")
}

fn daemon_media(url: &str, dialect: &str, extra: &str, media_extra: &str) -> Daemon {
    Daemon::start_opts(Opts {
        media_extra,
        extra: &format!(
            r#"
[[numbers]]
pattern = "+15557000001"
account = "acct"
route = "stream"
target = "{url}"
dialect = "{dialect}"
params = {{ lang = "en-US", tier = 2 }}

[stream]
answer_timeout_ms = 1500
reconnect_window_ms = 2000
keepalive_secs = 1
{extra}
"#
        ),
        ..Opts::default()
    })
}

/// RTP payloads of a pcap of Ethernet/IPv4/UDP/RTP packets, by payload type.
fn pcap_rtp_payloads(path: &str, pt: u8) -> Vec<Vec<u8>> {
    let d = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (apt package sip-tester)"));
    assert_eq!(&d[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    assert_eq!(
        u32::from_le_bytes(d[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= d.len() {
        let len = u32::from_le_bytes(d[i + 8..i + 12].try_into().unwrap()) as usize;
        let pkt = &d[i + 16..i + 16 + len];
        i += 16 + len;
        let ihl = usize::from(pkt[14] & 0x0f) * 4;
        let rtp = &pkt[14 + ihl + 8..];
        if rtp[1] & 0x7f == pt {
            out.push(rtp[12..].to_vec());
        }
    }
    out
}

/// μ-law payloads of the AI's `media` events, decoded, in order.
fn ai_audio(ai: &AiServer) -> Vec<i16> {
    ai.events("media")
        .iter()
        .flat_map(|(_, _, v)| {
            let b = BASE64
                .decode(v["media"]["payload"].as_str().unwrap())
                .unwrap();
            b.into_iter().map(g711::ulaw_decode).collect::<Vec<_>>()
        })
        .collect()
}

fn sipp(d: &Daemon, number: &str) -> std::process::Output {
    Command::new("sipp")
        .current_dir(d.dir.path())
        .args(["-sf", SCENARIO, &d.sip_addr().to_string()])
        .args(["-s", number])
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &common::free_port().to_string()])
        .args(["-mp", &common::free_port().to_string()])
        .args(["-m", "1", "-l", "1"])
        .args([
            "-recv_timeout",
            "10000",
            "-timeout",
            "60s",
            "-timeout_error",
        ])
        .args(["-nostdin", "-trace_err"])
        .output()
        .expect("run sipp (apt package sip-tester)")
}

#[test]
fn sipp_caller_audio_and_dtmf_reach_the_ai_sample_exact() {
    let ai = AiServer::start(vec![vec![]]);
    let d = daemon(&ai.url(), "twilio", "");
    let out = sipp(&d, "+15557000001");
    assert!(
        out.status.success(),
        "sipp failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.logs()
    );
    ai.wait_for(Duration::from_secs(5), "stop", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "stop"))
    });

    // Twilio's order: connected, start, media..., stop; ids and numbers as
    // Twilio formats them.
    let texts: Vec<serde_json::Value> = ai
        .frames()
        .into_iter()
        .filter_map(|f| match f.got {
            Got::Text(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts[0],
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    let start = &texts[1];
    assert_eq!(start["event"], "start");
    assert_eq!(start["sequenceNumber"], "1");
    let sid = start["streamSid"].as_str().unwrap();
    assert!(sid.starts_with("MZ") && sid.len() == 34, "{sid}");
    let s = &start["start"];
    assert_eq!(s["streamSid"], sid);
    assert!(s["callSid"].as_str().unwrap().starts_with("CA"));
    assert!(s["accountSid"].as_str().unwrap().starts_with("AC"));
    assert_eq!(s["tracks"], json!(["inbound"]));
    assert_eq!(
        s["mediaFormat"],
        json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
    );
    let p = &s["customParameters"];
    assert_eq!(p["to"], "+15557000001");
    assert_eq!(p["from"], "+14155550100");
    assert_eq!(p["callSid"], s["callSid"]);
    assert_eq!(p["account"], "acct");
    assert_eq!(p["lang"], "en-US");
    assert_eq!(p["tier"], "2");
    assert_eq!(texts.last().unwrap()["event"], "stop");
    assert_eq!(texts.last().unwrap()["stop"]["callSid"], s["callSid"]);
    for (i, t) in texts.iter().enumerate().skip(1) {
        assert_eq!(t["sequenceNumber"], (i).to_string(), "{t}");
        assert_eq!(t["streamSid"], sid);
    }
    let media = ai.events("media");
    for (i, (_, _, m)) in media.iter().enumerate() {
        assert_eq!(m["media"]["track"], "inbound");
        assert_eq!(m["media"]["chunk"], (i + 1).to_string());
        assert_eq!(m["media"]["timestamp"], (i * 20).to_string());
        assert_eq!(
            BASE64
                .decode(m["media"]["payload"].as_str().unwrap())
                .unwrap()
                .len(),
            160,
            "20 ms of μ-law"
        );
    }

    // The recording, A-law in 30 ms packets, arrives as 20 ms μ-law frames
    // equal sample for sample to the A-law audio after one μ-law round trip.
    let expected: Vec<i16> = pcap_rtp_payloads(&format!("{PCAPS}/g711a.pcap"), 8)
        .concat()
        .into_iter()
        .map(|a| g711::ulaw_decode(g711::ulaw_encode(g711::alaw_decode(a))))
        .collect();
    assert_eq!(expected.len(), 236 * 240);
    let got = ai_audio(&ai);
    assert!(
        got.len() >= expected.len(),
        "AI got {} samples of {}",
        got.len(),
        expected.len()
    );
    assert!(
        got[..expected.len()] == expected[..],
        "first difference at sample {:?}",
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );

    // Each key press once, in order, though its end packet came three times.
    let digits: Vec<String> = ai
        .events("dtmf")
        .iter()
        .map(|(_, _, v)| {
            assert_eq!(v["dtmf"]["track"], "inbound_track");
            v["dtmf"]["digit"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(digits, vec!["1", "5", "#"]);
    // The leg's counters reach the metrics when it closes.
    wait_metric(&d, "gateway_dtmf_digits_total", 3.0);
    // The recordings' own sequence numbers jump from 7991 (end of digit
    // 1) to 8155 (digit 5): the 163 numbers between never came and are
    // counted lost. (Digit # jumps further, which restarts the stream.)
    assert_eq!(d.metric("gateway_rtp_lost_total"), 163.0);
}

/// Waits until `series` reads `want` (leg counters are published as the
/// leg closes, just after the call ends).
fn wait_metric(d: &Daemon, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.metric(series) != want {
        assert!(
            Instant::now() < deadline,
            "{series} != {want}:\n{}",
            d.metrics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A UDP caller offering PCMU; returns it, its RTP socket and the
/// daemon's RTP address.
fn call(d: &Daemon, id: &str) -> (Caller, UdpSocket, std::net::SocketAddr) {
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut caller = Caller::new(d.sip_addr(), id).dialing("+15557000001");
    let rtp_addr = caller.invite(media.local_addr().unwrap().port());
    (caller, media, rtp_addr)
}

fn rtp(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn tone_ulaw(hz: f64, ms: usize) -> Vec<u8> {
    (0..ms * 8)
        .map(|i| {
            let v = (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin() * 8000.0;
            g711::ulaw_encode(v as i16)
        })
        .collect()
}

fn media_msg(ulaw: &[u8]) -> Step {
    Step::Text(
        json!({"event": "media", "streamSid": "x", "media": {"payload": BASE64.encode(ulaw)}})
            .to_string(),
    )
}

/// Receives RTP for `dur`, returning (arrival, header bytes, payload).
fn collect_rtp(sock: &UdpSocket, dur: Duration) -> Vec<(Instant, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + dur;
    while Instant::now() < end {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            out.push((Instant::now(), buf[..n].to_vec()));
        }
    }
    out
}

#[test]
fn ai_voice_is_paced_to_the_caller_and_marks_come_back_after_it_played() {
    // One second of 1 kHz in one burst, then a mark.
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(200)),
        media_msg(&tone_ulaw(1000.0, 1000)),
        Step::Text(
            json!({"event": "mark", "streamSid": "x", "mark": {"name": "greeting"}}).to_string(),
        ),
    ]]);
    ai_voice_round(&ai, daemon(&ai.url(), "twilio", ""));
}

/// The same on the io_uring media backend.
#[test]
fn ai_voice_on_io_uring_workers() {
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(200)),
        media_msg(&tone_ulaw(1000.0, 1000)),
        Step::Text(
            json!({"event": "mark", "streamSid": "x", "mark": {"name": "greeting"}}).to_string(),
        ),
    ]]);
    let d = daemon_media(&ai.url(), "twilio", "", "io_uring = true");
    assert!(d.logs().contains("backend=\"io_uring\""), "{}", d.logs());
    ai_voice_round(&ai, d);
}

fn ai_voice_round(ai: &AiServer, d: Daemon) {
    let (caller, media, rtp_addr) = call(&d, "voice-1@test");
    // Keep sending so the daemon latches our address.
    media.send_to(&rtp(1, 0, &[0xff; 160]), rtp_addr).unwrap();
    let pkts = collect_rtp(&media, Duration::from_millis(1800));
    caller.bye();
    assert!(pkts.len() >= 60, "continuous RTP: {} packets", pkts.len());
    let hdr = |p: &[u8]| {
        (
            p[1] & 0x80 != 0,
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        )
    };
    for w in pkts.windows(2) {
        let (_, s0, t0) = hdr(&w[0].1);
        let (_, s1, t1) = hdr(&w[1].1);
        assert_eq!(s1, s0.wrapping_add(1), "sequence steps by one");
        assert_eq!(t1, t0.wrapping_add(160), "timestamp steps by 20 ms");
    }
    // The tone: 50 packets, the first with the marker bit.
    let voiced: Vec<&(Instant, Vec<u8>)> = pkts
        .iter()
        .filter(|(_, p)| p[12..].iter().any(|&b| b != 0xff))
        .collect();
    assert_eq!(voiced.len(), 50, "1 s of speech in 20 ms packets");
    assert!(hdr(&voiced[0].1).0, "talkspurt starts with the marker bit");
    let pcm: Vec<i16> = voiced
        .iter()
        .flat_map(|(_, p)| p[12..].iter().map(|&b| g711::ulaw_decode(b)))
        .collect();
    assert!(
        tone_share(&pcm, 1000.0, 8000.0) > 0.9,
        "the AI's 1 kHz tone"
    );
    // Paced: the 50 packets span about a second, not a burst.
    let span = voiced[49].0 - voiced[0].0;
    assert!(span >= Duration::from_millis(900), "{span:?}");
    // The mark comes back once the tone has been sent.
    let marks = ai.events("mark");
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].2["mark"]["name"], "greeting");
    assert!(marks[0].1 >= voiced[48].0, "mark echoed after the audio");
}

#[test]
fn clear_stops_the_ai_voice_at_once_and_returns_pending_marks() {
    let ai = AiServer::start(vec![vec![
        media_msg(&tone_ulaw(1000.0, 5000)),
        Step::Text(
            json!({"event": "mark", "streamSid": "x", "mark": {"name": "long"}}).to_string(),
        ),
        Step::Sleep(Duration::from_millis(500)),
        Step::Text(json!({"event": "clear", "streamSid": "x"}).to_string()),
    ]]);
    let d = daemon(&ai.url(), "twilio", "");
    let (caller, media, rtp_addr) = call(&d, "clear-1@test");
    media.send_to(&rtp(1, 0, &[0xff; 160]), rtp_addr).unwrap();
    let pkts = collect_rtp(&media, Duration::from_millis(1500));
    caller.bye();
    let voiced = pkts
        .iter()
        .filter(|(_, p)| p[12..].iter().any(|&b| b != 0xff))
        .count();
    // About 0.5 s of the 5 s were played before the clear.
    assert!((15..=40).contains(&voiced), "{voiced} voiced packets");
    let marks = ai.events("mark");
    assert_eq!(marks.len(), 1, "the pending mark is returned on clear");
    let last_voiced = pkts
        .iter()
        .rev()
        .find(|(_, p)| p[12..].iter().any(|&b| b != 0xff))
        .unwrap()
        .0;
    assert!(
        marks[0].1 <= last_voiced + Duration::from_millis(100),
        "mark returned as the audio was dropped"
    );
}

#[test]
fn unreachable_ai_gets_the_fallback_status() {
    // Nothing listens on this port.
    let port = common::free_port();
    let d = daemon(&format!("ws://127.0.0.1:{port}/"), "twilio", "");
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut caller = Caller::new(d.sip_addr(), "noai-1@test").dialing("+15557000001");
    assert!(
        caller
            .try_invite(media.local_addr().unwrap().port(), 503)
            .is_none()
    );
    d.wait_cdr_cause("stream_failed");
}

#[test]
fn ai_closing_the_socket_hangs_up_the_caller() {
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(300)),
        Step::Close,
    ]]);
    let d = daemon(&ai.url(), "twilio", "");
    let (caller, _media, _) = call(&d, "aibye-1@test");
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    let bye = loop {
        assert!(Instant::now() < deadline, "no BYE from the daemon");
        if let Ok((n, from)) = caller.sip.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.starts_with("BYE ") {
                // Answer it like a phone would.
                let resp = format!(
                    "SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n",
                    text.lines()
                        .skip(1)
                        .filter(|l| ["Via", "From", "To", "Call-ID", "CSeq"]
                            .iter()
                            .any(|h| l.starts_with(h)))
                        .collect::<Vec<_>>()
                        .join("\r\n")
                );
                caller.sip.send_to(resp.as_bytes(), from).unwrap();
                break text;
            }
        }
    };
    assert!(bye.contains("aibye-1@test"));
    d.wait_cdr_cause("ai_hangup");
}

#[test]
fn lost_socket_reconnects_with_the_same_stream_and_buffered_audio() {
    // The first connection dies without a close frame after 300 ms.
    let ai = AiServer::start(vec![
        vec![Step::Sleep(Duration::from_millis(300)), Step::Abort],
        vec![],
    ]);
    let d = daemon(&ai.url(), "twilio", "");
    let (caller, media, rtp_addr) = call(&d, "reconnect-1@test");
    // 2 s of caller audio, a counter in each packet's first byte.
    for i in 0..100u16 {
        let mut payload = [0xffu8; 160];
        payload[0] = g711::ulaw_encode(i16::try_from(i).unwrap() * 64);
        media
            .send_to(&rtp(i, u32::from(i) * 160, &payload), rtp_addr)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    ai.wait_for(Duration::from_secs(5), "a second start", |f| {
        f.iter()
            .any(|f| f.conn == 1 && matches!(&f.got, Got::Text(v) if v["event"] == "start"))
    });
    std::thread::sleep(Duration::from_millis(300));
    caller.bye();
    let starts = ai.events("start");
    assert_eq!(starts.len(), 2);
    assert_eq!(
        starts[0].2["streamSid"], starts[1].2["streamSid"],
        "same stream"
    );
    // Every frame of caller audio reached the AI across both sockets.
    let chunks: Vec<u64> = ai
        .events("media")
        .iter()
        .map(|(_, _, v)| v["media"]["chunk"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(chunks.len() >= 99, "{} frames", chunks.len());
    assert!(
        chunks.windows(2).all(|w| w[1] == w[0] + 1),
        "no frame lost or repeated"
    );
    assert!(d.metric("gateway_ai_stream_reconnects_total") >= 1.0);
}

#[test]
fn bad_frames_from_the_ai_are_counted_and_the_call_goes_on() {
    let ai = AiServer::start(vec![vec![
        Step::Text("{nope".into()),
        Step::Text(json!({"event": "dance"}).to_string()),
        Step::Text(json!({"event": "media", "media": {"payload": "@@@"}}).to_string()),
        Step::Binary(vec![1, 2, 3]),
        Step::Text(format!(
            r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
            "A".repeat(1_200_000)
        )),
        media_msg(&tone_ulaw(1000.0, 200)),
    ]]);
    let d = daemon(&ai.url(), "twilio", "");
    let (caller, media, rtp_addr) = call(&d, "bad-1@test");
    media.send_to(&rtp(1, 0, &[0xff; 160]), rtp_addr).unwrap();
    let pkts = collect_rtp(&media, Duration::from_millis(800));
    let voiced = pkts
        .iter()
        .filter(|(_, p)| p[12..].iter().any(|&b| b != 0xff))
        .count();
    assert_eq!(
        voiced, 10,
        "the good media after the bad frames still plays"
    );
    caller.bye();
    let m = d.metrics();
    for reason in [
        "malformed_json",
        "unknown_event",
        "bad_base64",
        "unexpected_binary",
        "oversized",
    ] {
        let series = format!("gateway_ai_stream_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(d.metric(&series), 1.0, "{series}\n{m}");
    }
}

#[test]
fn sip_info_dtmf_reaches_the_ai() {
    let ai = AiServer::start(vec![vec![]]);
    let d = daemon(&ai.url(), "twilio", "");
    let (caller, _media, _) = call(&d, "info-1@test");
    for (i, digit) in ["4", "*"].iter().enumerate() {
        let body = format!("Signal={digit}\r\nDuration=160\r\n");
        let req = caller
            .request("INFO", 10 + i as u32, &format!("info{i}"), "")
            .replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            );
        caller.sip.send_to(req.as_bytes(), d.sip_addr()).unwrap();
        recv_status(&caller.sip, &caller.call_id, 200);
    }
    ai.wait_for(Duration::from_secs(3), "two dtmf events", |f| {
        f.iter()
            .filter(|f| matches!(&f.got, Got::Text(v) if v["event"] == "dtmf"))
            .count()
            == 2
    });
    caller.bye_cseq(20);
    let digits: Vec<String> = ai
        .events("dtmf")
        .iter()
        .map(|(_, _, v)| v["dtmf"]["digit"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digits, vec!["4", "*"]);
}

#[test]
fn pcm_dialect_streams_wideband_binary_frames_both_ways() {
    // 200 ms of 440 Hz at 16 kHz from the AI, as binary L16.
    let tone: Vec<u8> = (0..3200)
        .flat_map(|i| {
            let v = (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 16000.0).sin() * 8000.0;
            (v as i16).to_le_bytes()
        })
        .collect();
    let ai = AiServer::start(vec![vec![
        Step::Binary(tone),
        Step::Text(json!({"event": "mark", "name": "m"}).to_string()),
    ]]);
    let d = daemon(&ai.url(), "pcm16", "");
    let (caller, media, rtp_addr) = call(&d, "pcm-1@test");
    let ulaw = tone_ulaw(1000.0, 400);
    for (i, c) in ulaw.chunks(160).enumerate() {
        media
            .send_to(&rtp(i as u16, i as u32 * 160, c), rtp_addr)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let pkts = collect_rtp(&media, Duration::from_millis(400));
    caller.bye();
    let start = &ai.events("start")[0].2;
    assert_eq!(
        start["mediaFormat"],
        json!({"encoding": "audio/l16", "endianness": "little", "sampleRate": 16000,
               "channels": 1, "frameMs": 20})
    );
    assert!(start["callSid"].as_str().unwrap().starts_with("CA"));
    let frames = ai.binary_frames();
    assert!(frames.len() >= 18, "{} frames", frames.len());
    assert!(
        frames.iter().all(|f| f.len() == 640),
        "20 ms of 16-bit 16 kHz"
    );
    let pcm = ai.binary_pcm();
    assert!(
        tone_share(&pcm[320..], 1000.0, 16000.0) > 0.8,
        "caller's tone, upsampled"
    );
    let voiced: Vec<i16> = pkts
        .iter()
        .filter(|(_, p)| p[12..].iter().any(|&b| b != 0xff))
        .flat_map(|(_, p)| {
            p[12..]
                .iter()
                .map(|&b| g711::ulaw_decode(b))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(voiced.len() >= 1440, "{} samples", voiced.len());
    assert!(
        tone_share(&voiced, 440.0, 8000.0) > 0.8,
        "AI's tone, downsampled"
    );
    assert_eq!(
        ai.events("mark")[0].2,
        json!({"event": "mark", "name": "m"})
    );
    ai.wait_for(Duration::from_secs(3), "stop", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "stop"))
    });
    assert_eq!(
        ai.events("stop")[0].2,
        json!({"event": "stop", "reason": "hangup"})
    );
}

/// A live redirect (`POST /v1/calls/{id}`): the first AI gets `stop`, the
/// second `connected` and `start` with the same callSid and a new
/// streamSid, and the caller's audio carries on without a frame lost (the
/// media `timestamp`s run on across the two sockets).
#[test]
fn a_live_call_moves_to_another_ai_without_losing_caller_audio() {
    let first = AiServer::start(vec![vec![]]);
    let second = AiServer::start(vec![vec![]]);
    let d = daemon(&first.url(), "twilio", "");
    let (caller, media, rtp_addr) = call(&d, "redirect-1@test");
    let token = d.token(Some("acct"), false);
    // 3 s of the caller, the redirect after 1 s.
    let ulaw = tone_ulaw(1000.0, 3000);
    let mut call_sid = String::new();
    for (i, c) in ulaw.chunks(160).enumerate() {
        media
            .send_to(&rtp(i as u16, i as u32 * 160, c), rtp_addr)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        if i == 50 {
            call_sid = first.events("start")[0].2["start"]["callSid"]
                .as_str()
                .unwrap()
                .to_string();
            let (st, body, _) = d.api(
                "POST",
                &format!("/v1/calls/{call_sid}"),
                Some(&token),
                Some(&json!({"stream": {"url": second.url(), "params": {"agent": "billing"}}})),
            );
            assert_eq!(st, 202, "{body}");
            // Another sample rate is refused: the leg keeps its rate.
            let (st, body, _) = d.api(
                "POST",
                &format!("/v1/calls/{call_sid}"),
                Some(&token),
                Some(&json!({"stream": {"url": second.url(), "dialect": "pcm16"}})),
            );
            assert_eq!(st, 409, "{body}");
        }
    }
    second.wait_for(Duration::from_secs(3), "media", |f| {
        f.iter()
            .filter(|f| matches!(&f.got, Got::Text(v) if v["event"] == "media"))
            .count()
            >= 50
    });
    caller.bye();
    let stop = &first.events("stop")[0];
    let start = &second.events("start")[0].2;
    assert_eq!(start["start"]["callSid"], call_sid.as_str());
    assert_ne!(
        start["start"]["streamSid"],
        first.events("start")[0].2["start"]["streamSid"]
    );
    assert_eq!(start["start"]["customParameters"]["agent"], "billing");
    let stamps = |ai: &AiServer| -> Vec<(Instant, u64)> {
        ai.events("media")
            .into_iter()
            .map(|(_, at, v)| {
                (
                    at,
                    v["media"]["timestamp"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    };
    let (a, b) = (stamps(&first), stamps(&second));
    let (last_a, first_b) = (a.last().unwrap(), b[0]);
    assert!(last_a.0 <= stop.1, "the first AI's audio ends at its stop");
    assert_eq!(
        first_b.1,
        last_a.1 + 20,
        "the second AI's audio begins where the first's ended: no frame lost"
    );
    eprintln!(
        "redirect: last frame to the first AI to the first frame to the second: {:.1} ms",
        first_b.0.duration_since(last_a.0).as_secs_f64() * 1000.0
    );
}

/// A live AI call recorded over REST: both tracks in a stereo WAV (the
/// caller's 1 kHz left, the AI's 440 Hz right), its status callback, then
/// listed, downloaded and deleted.
#[test]
fn a_recorded_call_keeps_both_tracks_and_is_listed_downloaded_and_deleted() {
    let rec_dir = tempfile::tempdir().unwrap();
    let tone: Vec<u8> = (0..8000)
        .map(|i| {
            let v = (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin() * 8000.0;
            g711::ulaw_encode(v as i16)
        })
        .collect();
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(300)),
        Step::Text(
            json!({"event": "media", "streamSid": "x", "media": {"payload": BASE64.encode(&tone)}})
                .to_string(),
        ),
    ]]);
    let hooks = common::hooks::HookServer::start(vec![]);
    let d = daemon(
        &ai.url(),
        "twilio",
        &format!("[recordings]\ndir = \"{}\"\n", rec_dir.path().display()),
    );
    let (caller, media, rtp_addr) = call(&d, "record-1@test");
    let token = d.token(Some("acct"), false);
    let ulaw = tone_ulaw(1000.0, 2000);
    let mut recording = String::new();
    for (i, c) in ulaw.chunks(160).enumerate() {
        media
            .send_to(&rtp(i as u16, i as u32 * 160, c), rtp_addr)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        if i == 5 {
            let call_sid = ai.events("start")[0].2["start"]["callSid"]
                .as_str()
                .unwrap()
                .to_string();
            let (st, body, _) = d.api(
                "POST",
                &format!("/v1/calls/{call_sid}/recording"),
                Some(&token),
                Some(&json!({"status_callback": hooks.url("/recorded")})),
            );
            assert_eq!(st, 202, "{body}");
            assert_eq!(body["status"], "recording");
            recording = body["id"].as_str().unwrap().to_string();
            let (st, body, _) = d.api(
                "POST",
                &format!("/v1/calls/{call_sid}/recording"),
                Some(&token),
                Some(&json!({})),
            );
            assert_eq!(st, 409, "one recording per call: {body}");
        }
    }
    caller.bye();
    let hit = &hooks.wait("/recorded", 1, Duration::from_secs(10))[0];
    let ev: serde_json::Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(ev["event"], "recording.completed", "{ev}");
    assert_eq!(ev["recording_id"], recording.as_str());
    let (st, list, _) = d.api("GET", "/v1/recordings", Some(&token), None);
    assert_eq!(st, 200);
    assert_eq!(list["data"][0]["id"], recording.as_str());
    assert_eq!(list["data"][0]["status"], "completed");
    let ms = list["data"][0]["duration_ms"].as_i64().unwrap();
    assert!((1500..=2100).contains(&ms), "{ms} ms recorded");
    let (st, _, _) = d.api(
        "GET",
        &format!("/v1/recordings/{recording}/audio"),
        Some(&token),
        None,
    );
    assert_eq!(st, 200);
    let path = rec_dir.path().join("acct").join(format!("{recording}.wav"));
    let wav = std::fs::read(&path).unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "stereo");
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    assert!(
        tone_share(&left, 1000.0, 8000.0) > 0.8,
        "the caller on the left"
    );
    let voiced: Vec<i16> = right
        .chunks_exact(160)
        .filter(|f| f.iter().any(|&s| s.abs() > 1000))
        .flatten()
        .copied()
        .collect();
    assert!(voiced.len() >= 4000, "{} samples of the AI", voiced.len());
    assert!(
        tone_share(&voiced, 440.0, 8000.0) > 0.8,
        "the AI on the right"
    );
    let other = d.token(Some("someone-else"), false);
    let (st, _, _) = d.api(
        "GET",
        &format!("/v1/recordings/{recording}"),
        Some(&other),
        None,
    );
    assert_eq!(st, 404, "another account's recording is not found");
    let (st, _, _) = d.api(
        "DELETE",
        &format!("/v1/recordings/{recording}"),
        Some(&token),
        None,
    );
    assert_eq!(st, 204);
    assert!(!path.exists(), "the file is gone");
    let (st, _, _) = d.api(
        "GET",
        &format!("/v1/recordings/{recording}"),
        Some(&token),
        None,
    );
    assert_eq!(st, 404);
}

/// jambonz `listen` with bidirectional audio, spoken by a scripted app
/// (jambonz has no Pipecat serializer): metadata first, binary L16 at
/// 8 kHz both ways, `mark` answered with `playout`, `disconnect` hangs up.
#[test]
fn jambonz_listen_streams_binary_audio_both_ways_and_disconnect_hangs_up() {
    let tone: Vec<u8> = (0..1600)
        .flat_map(|i| {
            let v = (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin() * 8000.0;
            (v as i16).to_le_bytes()
        })
        .collect();
    let ai = AiServer::start(vec![vec![
        Step::Binary(tone),
        Step::Text(json!({"type": "mark", "data": {"name": "m"}}).to_string()),
        Step::Sleep(Duration::from_millis(700)),
        Step::Text(json!({"type": "disconnect"}).to_string()),
    ]]);
    let d = daemon(&ai.url(), "jambonz", "");
    let (caller, media, rtp_addr) = call(&d, "jambonz-1@test");
    let ulaw = tone_ulaw(1000.0, 300);
    for (i, c) in ulaw.chunks(160).enumerate() {
        media
            .send_to(&rtp(i as u16, i as u32 * 160, c), rtp_addr)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let pkts = collect_rtp(&media, Duration::from_millis(300));
    caller.expect_bye();
    d.wait_cdr_cause("ai_hangup");
    let first = match &ai.frames()[0].got {
        Got::Text(v) => v.clone(),
        other => panic!("metadata first, got {other:?}"),
    };
    assert!(first["callSid"].as_str().unwrap().starts_with("CA"));
    assert_eq!(first["sampleRate"], 8000);
    assert_eq!(first["metadata"]["lang"], "en-US");
    let frames = ai.binary_frames();
    assert!(frames.len() >= 10, "{} frames", frames.len());
    assert!(
        frames.iter().all(|f| f.len() == 320),
        "20 ms of 16-bit 8 kHz"
    );
    assert!(
        tone_share(&ai.binary_pcm()[160..], 1000.0, 8000.0) > 0.8,
        "caller's tone"
    );
    let voiced: Vec<i16> = pkts
        .iter()
        .filter(|(_, p)| p[12..].iter().any(|&b| b != 0xff))
        .flat_map(|(_, p)| {
            p[12..]
                .iter()
                .map(|&b| g711::ulaw_decode(b))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(voiced.len() >= 1200, "{} samples", voiced.len());
    assert!(tone_share(&voiced, 440.0, 8000.0) > 0.8, "the app's tone");
    let mark = ai
        .frames()
        .into_iter()
        .find_map(|f| match f.got {
            Got::Text(v) if v["type"] == "mark" => Some(v),
            _ => None,
        })
        .expect("the mark, once played");
    assert_eq!(
        mark,
        json!({"type": "mark", "data": {"name": "m", "event": "playout"}})
    );
}

#[test]
fn rtcp_sender_reports_reach_the_callers_rtcp_port() {
    let ai = AiServer::start(vec![vec![]]);
    let d = daemon(&ai.url(), "twilio", "");
    // RTP on an even port, RTCP on the next one (RFC 3550 §11).
    let (media, rtcp) = loop {
        let m = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = m.local_addr().unwrap().port();
        if p.is_multiple_of(2)
            && let Ok(r) = UdpSocket::bind(("127.0.0.1", p + 1))
        {
            break (m, r);
        }
    };
    rtcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut caller = Caller::new(d.sip_addr(), "rtcp-1@test").dialing("+15557000001");
    let rtp_addr = caller.invite(media.local_addr().unwrap().port());
    for i in 0..20u16 {
        media
            .send_to(&rtp(i, u32::from(i) * 160, &[0xff; 160]), rtp_addr)
            .unwrap();
    }
    let mut buf = [0u8; 1500];
    let (n, from) = rtcp.recv_from(&mut buf).expect("an RTCP report within 5 s");
    caller.bye();
    assert_eq!(from.port(), rtp_addr.port() + 1, "sent from our RTCP port");
    let r = &buf[..n];
    assert_eq!(r[0] >> 6, 2);
    assert_eq!(r[1], 200, "sender report: the daemon sends RTP");
    assert_eq!(r[0] & 0x1f, 1, "one report block, on our stream");
    assert_eq!(&r[28..32], &0x0bad_cafeu32.to_be_bytes());
    assert_eq!(
        u32::from_be_bytes(r[36..40].try_into().unwrap()),
        19,
        "highest sequence received"
    );
    // Compound: SDES with a CNAME follows.
    let sr_len = (usize::from(u16::from_be_bytes([r[2], r[3]])) + 1) * 4;
    assert_eq!(r[sr_len + 1], 202);
    assert_eq!(r[sr_len + 8], 1, "CNAME item");
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.metric("gateway_rtcp_sent_total") < 1.0 {
        assert!(Instant::now() < deadline, "{}", d.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn g722_caller_gives_the_ai_real_wideband_audio() {
    let ai = AiServer::start(vec![vec![]]);
    let d = daemon(&ai.url(), "pcm16", "");
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut caller = Caller::new(d.sip_addr(), "g722-1@test")
        .dialing("+15557000001")
        .offering_g722();
    let rtp_addr = caller.invite(media.local_addr().unwrap().port());
    // 600 ms of 6 kHz at 16 kHz: above anything G.711 can carry.
    let x: Vec<i16> = (0..9600)
        .map(|i| {
            ((2.0 * std::f64::consts::PI * 6000.0 * f64::from(i) / 16000.0).sin() * 6000.0) as i16
        })
        .collect();
    let mut enc = media_userspace::g722::G722Encoder::default();
    for (i, frame) in x.chunks(320).enumerate() {
        let mut payload = Vec::new();
        enc.encode(frame, &mut payload);
        let mut p = rtp(i as u16, i as u32 * 160, &payload);
        p[1] = 9;
        media.send_to(&p, rtp_addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    caller.bye();
    let pcm: Vec<i16> = ai.binary_pcm();
    assert!(pcm.len() >= 8000, "{} samples", pcm.len());
    let share = tone_share(&pcm[1600..8000], 6000.0, 16000.0);
    assert!(share > 0.8, "6 kHz reaches the AI: {share:.2}");
}

#[test]
fn ai_send_dtmf_reaches_the_caller_as_rfc4733_events() {
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(200)),
        Step::Text(
            json!({"event": "sendDtmf", "streamSid": "x", "digits": "5#", "durationMs": 60})
                .to_string(),
        ),
    ]]);
    let d = daemon(&ai.url(), "twilio", "");
    let (caller, media, rtp_addr) = call(&d, "senddtmf-1@test");
    media.send_to(&rtp(1, 0, &[0xff; 160]), rtp_addr).unwrap();
    let pkts = collect_rtp(&media, Duration::from_millis(800));
    caller.bye();
    // (event, end, marker, timestamp) of the telephone-event packets.
    let events: Vec<(u8, bool, bool, u32)> = pkts
        .iter()
        .filter(|(_, p)| p[1] & 0x7f == 101)
        .map(|(_, p)| {
            (
                p[12],
                p[13] & 0x80 != 0,
                p[1] & 0x80 != 0,
                u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            )
        })
        .collect();
    // 60 ms per digit at 20 ms: two updates, then the end packet 3 times.
    assert_eq!(events.len(), 10, "{events:?}");
    for (digit, packets) in [(5u8, &events[..5]), (11, &events[5..])] {
        assert!(packets.iter().all(|e| e.0 == digit && e.3 == packets[0].3));
        assert!(
            packets[0].2 && packets[1..].iter().all(|e| !e.2),
            "marker on the first"
        );
        assert_eq!(
            packets.iter().filter(|e| e.1).count(),
            3,
            "end sent three times"
        );
    }
    // Sequence numbers stay continuous through the events.
    for w in pkts.windows(2) {
        let s0 = u16::from_be_bytes([w[0].1[2], w[0].1[3]]);
        let s1 = u16::from_be_bytes([w[1].1[2], w[1].1[3]]);
        assert_eq!(s1, s0.wrapping_add(1));
    }
}

#[test]
fn metrics_after_stream_calls_pass_promtool_check() {
    let ai = AiServer::start(vec![vec![Step::Text("{nope".into())]]);
    let d = daemon(&ai.url(), "twilio", "");
    let (caller, media, rtp_addr) = call(&d, "promtool-1@test");
    for seq in 0..10u16 {
        media
            .send_to(&rtp(seq, u32::from(seq) * 160, &[0xff; 160]), rtp_addr)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    caller.bye();
    // The leg's receive jitter is observed when it closes.
    wait_metric(&d, "gateway_rtp_jitter_seconds_count", 1.0);
    let response = d.metrics();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    assert!(body.contains("gateway_ai_stream_rejected_total{reason=\"malformed_json\"} 1"));
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt package prometheus)");
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ai_transfer_results_reach_the_ai_and_a_failed_one_keeps_the_caller() {
    let target_port = common::free_port();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/uas_busy.xml");
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::process::Command::new("sipp")
        .current_dir(tmp.path())
        .args([
            "-sf",
            scenario,
            "-i",
            "127.0.0.1",
            "-p",
            &target_port.to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp (apt package sip-tester)");
    // The AI first asks for a number with no route out (the test trunk
    // has no outbound address), then for a busy phone.
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(200)),
        Step::Text(json!({"event": "transfer", "to": "+15559990000"}).to_string()),
        Step::Sleep(Duration::from_millis(300)),
        Step::Text(
            json!({"event": "transfer", "to": format!("sip:+15559990000@127.0.0.1:{target_port}")})
                .to_string(),
        ),
    ]]);
    let d = daemon(&ai.url(), "twilio", "");
    let (caller, _media, _) = call(&d, "ai-xfer-1@test");
    ai.wait_for(Duration::from_secs(5), "two transfer results", |f| {
        f.iter()
            .filter(|f| matches!(&f.got, Got::Text(v) if v["event"] == "transferResult"))
            .count()
            == 2
    });
    let results: Vec<(String, String)> = ai
        .events("transferResult")
        .iter()
        .map(|(_, _, v)| {
            assert!(v["streamSid"].as_str().unwrap().starts_with("MZ"), "{v}");
            (
                v["status"].as_str().unwrap().to_string(),
                v["sipStatus"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        vec![
            ("unavailable".to_string(), "0".to_string()),
            ("busy".to_string(), "486".to_string())
        ]
    );
    assert!(ai.events("stop").is_empty(), "the AI keeps the caller");
    let busy = busy.wait_with_output().unwrap();
    assert!(
        busy.status.success(),
        "the busy phone got the INVITE and the ACK: {}",
        String::from_utf8_lossy(&busy.stderr)
    );
    caller.bye();
    ai.wait_for(Duration::from_secs(3), "stop", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "stop"))
    });
}

#[test]
fn ai_transfer_on_a_refer_trunk_goes_to_the_carrier_by_refer() {
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(300)),
        Step::Text(json!({"event": "transfer", "to": "sip:desk@127.0.0.1:9999"}).to_string()),
    ]]);
    // The caller's carrier (127.0.0.1 exactly: more specific than the test
    // trunk's 127.0.0.0/8) takes transfers by REFER.
    let d = daemon(
        &ai.url(),
        "twilio",
        "[[trunks]]\nname = \"refer-carrier\"\nsource_cidrs = [\"127.0.0.1/32\"]\ntransfer = \"refer\"\n",
    );
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/uac_refer_carrier.xml"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("sipp")
        .current_dir(tmp.path())
        .args([
            "-sf",
            scenario,
            &d.sip_addr().to_string(),
            "-s",
            "+15557000001",
        ])
        .args(["-i", "127.0.0.1", "-p", &common::free_port().to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .output()
        .expect("run sipp (apt package sip-tester)");
    assert!(
        out.status.success(),
        "REFER received and accepted, NOTIFYs answered, released by BYE: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.logs()
    );
    ai.wait_for(Duration::from_secs(3), "transferResult and stop", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "stop"))
    });
    let results = ai.events("transferResult");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].2["status"], "answered");
    assert_eq!(results[0].2["sipStatus"], "200");
    d.wait_cdr_cause("transferred");
}

/// The newest call's id, over REST.
fn newest_call(d: &Daemon, token: &str) -> String {
    let (st, page, _) = d.api("GET", "/v1/calls?limit=1", Some(token), None);
    assert_eq!(st, 200, "{page}");
    page["data"][0]["id"].as_str().expect("a call").to_string()
}

#[test]
fn rest_dtmf_and_transfer_act_on_a_live_stream_call_and_the_ai_gets_the_result() {
    let target_port = common::free_port();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/uas_busy.xml");
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::process::Command::new("sipp")
        .current_dir(tmp.path())
        .args([
            "-sf",
            scenario,
            "-i",
            "127.0.0.1",
            "-p",
            &target_port.to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp (apt package sip-tester)");
    let ai = AiServer::start(vec![vec![]]);
    let d = daemon(&ai.url(), "twilio", "");
    let t = d.token(Some("acct"), false);
    let (caller, media, rtp_addr) = call(&d, "rest-ctl-1@test");
    media.send_to(&rtp(1, 0, &[0xff; 160]), rtp_addr).unwrap();
    let mut id = String::new();
    for _ in 0..50 {
        let (_, page, _) = d.api("GET", "/v1/calls?active=true", Some(&t), None);
        if let Some(i) = page["data"][0]["id"].as_str() {
            id = i.to_string();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!id.is_empty(), "the live call is listed");
    assert_eq!(newest_call(&d, &t), id);

    // Digits over REST reach the caller as RFC 4733 events.
    let (st, body, _) = d.api(
        "POST",
        &format!("/v1/calls/{id}/dtmf"),
        Some(&t),
        Some(&json!({"digits": "7", "duration_ms": 60})),
    );
    assert_eq!(
        (st, body["status"].as_str()),
        (202, Some("sending")),
        "{body}"
    );
    let pkts = collect_rtp(&media, Duration::from_millis(600));
    let digits: Vec<u8> = pkts
        .iter()
        .filter(|(_, p)| p[1] & 0x7f == 101)
        .map(|(_, p)| p[12])
        .collect();
    assert!(
        !digits.is_empty() && digits.iter().all(|&d| d == 7),
        "{digits:?}"
    );
    for (bad, field) in [
        (json!({"digits": "7x"}), "digits"),
        (json!({"digits": "7", "duration_ms": 5}), "duration_ms"),
    ] {
        let (st, body, _) = d.api(
            "POST",
            &format!("/v1/calls/{id}/dtmf"),
            Some(&t),
            Some(&bad),
        );
        assert_eq!(
            (st, body["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}"
        );
    }

    // A transfer to a busy phone: the AI hears `busy` and keeps the call.
    let (st, body, _) = d.api(
        "POST",
        &format!("/v1/calls/{id}/transfer"),
        Some(&t),
        Some(&json!({"to": format!("sip:+15559990000@127.0.0.1:{target_port}")})),
    );
    assert_eq!(
        (st, body["status"].as_str()),
        (202, Some("transferring")),
        "{body}"
    );
    ai.wait_for(Duration::from_secs(5), "transferResult", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "transferResult"))
    });
    assert_eq!(ai.events("transferResult")[0].2["status"], "busy");
    assert!(ai.events("stop").is_empty(), "the AI keeps the caller");
    assert!(busy.wait_with_output().unwrap().status.success());
    let (st, body, _) = d.api(
        "POST",
        &format!("/v1/calls/{id}/transfer"),
        Some(&t),
        Some(&json!({"to": "sip:a b"})),
    );
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (422, Some("to")),
        "{body}"
    );
    let (st, body, _) = d.api(
        "POST",
        &format!("/v1/calls/{id}/transfer"),
        Some(&t),
        Some(&json!({"to": "+15559990000", "ring_timeout_secs": 0})),
    );
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (422, Some("ring_timeout_secs")),
        "{body}"
    );
    // The AI already hears the caller: no listen-only stream here.
    let (st, body, _) = d.api(
        "POST",
        &format!("/v1/calls/{id}/stream"),
        Some(&t),
        Some(&json!({"url": "ws://127.0.0.1:9/listen"})),
    );
    assert_eq!(st, 409, "{body}");
    let (st, body, _) = d.api(
        "POST",
        &format!("/v1/calls/{id}/stream"),
        Some(&t),
        Some(&json!({"url": "http://127.0.0.1:9/listen"})),
    );
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (422, Some("url")),
        "{body}"
    );
    caller.bye();
    // The ended call refuses control.
    let mut st = 0;
    for _ in 0..50 {
        st = d
            .api(
                "POST",
                &format!("/v1/calls/{id}/dtmf"),
                Some(&t),
                Some(&json!({"digits": "1"})),
            )
            .0;
        if st == 409 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(st, 409);
}

#[test]
fn the_ai_hangup_event_ends_the_call_with_a_bye() {
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(300)),
        Step::Text(json!({"event": "hangup", "streamSid": "x"}).to_string()),
    ]]);
    let d = daemon(&ai.url(), "twilio", "");
    let (caller, _media, _) = call(&d, "ai-hangup-ev@test");
    caller.expect_bye();
    d.wait_cdr_cause("ai_hangup");
    ai.wait_for(Duration::from_secs(3), "stop", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "stop"))
    });
}
