//! Outbound calls placed over REST (`POST /v1/calls`): through a real
//! carrier (SIPp, with a digest challenge) and to a real phone (baresip),
//! the AI stream starting at the answer; click-to-call between two real
//! phones, with a listen-only stream of both started and stopped over
//! REST; busy, no answer and refusals end in their defined statuses.

mod common;

use base64::Engine;
use common::ai::{AiServer, Step};
use common::baresip::{Callee, tone, tone_in_frames};
use common::{Daemon, Opts};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn daemon(far_port: u16) -> Daemon {
    Daemon::start_opts(Opts {
        extra: &format!(
            r#"
[[trunks]]
name = "far"
source_cidrs = ["127.0.0.2/32"]
outbound_address = "127.0.0.1:{far_port}"
transport = "udp"
username = "gateway"
password = "trunk-secret"

[[numbers]]
pattern = "+15558880000"
account = "acct"
route = "stream"
target = "ws://127.0.0.1:9/unused"
trunk = "far"

[[accounts]]
id = "other"
"#
        ),
        ..Opts::default()
    })
}

/// The daemon with DID +15558880000 whose trunk `phone` reaches a phone
/// (baresip) on 127.0.0.1:`phone_port`.
fn phone_daemon(phone_port: u16) -> Daemon {
    Daemon::start_opts(Opts {
        extra: &format!(
            r#"
[[trunks]]
name = "phone"
source_cidrs = ["127.0.0.3/32"]
outbound_address = "127.0.0.1:{phone_port}"

[[numbers]]
pattern = "+15558880000"
account = "acct"
route = "echo"
trunk = "phone"
"#
        ),
        ..Opts::default()
    })
}

fn run_sipp(dir: &Path, scenario: &str, port: u16) -> std::process::Child {
    let scenario = format!("{}/tests/scenarios/{scenario}", env!("CARGO_MANIFEST_DIR"));
    Command::new("sipp")
        .current_dir(dir)
        .args(["-sf", &scenario, "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-mp", &(10_000 + (port % 4_000) * 2).to_string()])
        .args([
            "-m",
            "1",
            "-nostdin",
            "-trace_err",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp (apt package sip-tester)")
}

/// Polls the call until `pred` holds; returns it.
fn wait_call(
    d: &Daemon,
    token: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let (st, c, _) = d.api("GET", &format!("/v1/calls/{id}"), Some(token), None);
        if st == 200 && pred(&c) {
            return c;
        }
        last = c;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("call {id} never became {what}: {last}\n{}", d.logs());
}

fn tone_ulaw(hz: f64, ms: usize) -> Vec<u8> {
    (0..ms * 8)
        .map(|i| {
            let v = (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin() * 8000.0;
            media_userspace::g711::ulaw_encode(v as i16)
        })
        .collect()
}

#[test]
fn outbound_call_through_a_digest_carrier_streams_to_the_ai_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let far_port = common::free_port();
    let carrier = run_sipp(tmp.path(), "uas_carrier_digest.xml", far_port);
    let d = daemon(far_port);
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(1500)),
        Step::Close,
    ]]);
    let t = d.token(Some("acct"), false);
    let body = json!({
        "from": "+1 555 888 0000",
        "to": "+15557654321",
        "stream": {"url": ai.url(), "params": {"campaign": "renewals"}},
    });
    let post = |body: &Value| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(&format!("http://127.0.0.1:{}/v1/calls", d.metrics_port))
            .header("Authorization", &format!("Bearer {t}"))
            .header("Idempotency-Key", "order-42")
            .send_json(body)
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_json::<Value>().unwrap())
    };
    let (st, call) = post(&body);
    assert_eq!(st, 201, "{call}\n{}", d.logs());
    assert_eq!(call["status"], "queued");
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["from"], "+15558880000");
    assert_eq!(call["trunk"], "far");
    let id = call["id"].as_str().unwrap().to_string();
    // A retry with the same key places no second call.
    let (st, again) = post(&body);
    assert_eq!((st, &again["id"]), (201, &call["id"]), "{again}");
    let (st, other) =
        post(&json!({"from": "+15558880000", "to": "+15550000000", "stream": {"url": ai.url()}}));
    assert_eq!(st, 422, "same key, another body: {other}");

    // The AI hears of the call once the carrier answered.
    ai.wait_for(Duration::from_secs(15), "start", |f| {
        f.iter()
            .any(|f| matches!(&f.got, common::ai::Got::Text(v) if v["event"] == "start"))
    });
    let start = &ai.events("start")[0].2;
    let custom = &start["start"]["customParameters"];
    assert_eq!(start["start"]["callSid"], id.as_str());
    assert_eq!(custom["from"], "+15558880000");
    assert_eq!(custom["to"], "+15557654321");
    assert_eq!(custom["campaign"], "renewals");
    let live = wait_call(&d, &t, &id, "in-progress", |c| c["status"] == "in-progress");
    assert!(live["answered_at"].is_i64());

    // The AI hangs up: the carrier gets a BYE and the record closes.
    let carrier = carrier.wait_with_output().unwrap();
    assert!(
        carrier.status.success(),
        "the carrier saw a valid digest answer and a BYE: {:?} {}\n{}",
        carrier.status,
        String::from_utf8_lossy(&carrier.stderr),
        d.logs()
    );
    let done = wait_call(&d, &t, &id, "completed", |c| c["status"] == "completed");
    assert_eq!(done["end_cause"], "ai_hangup");
    let (_, list, _) = d.api("GET", "/v1/calls?direction=outbound", Some(&t), None);
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "one call placed: {list}"
    );
    assert!(d.metric("gateway_calls_total{direction=\"outbound\",outcome=\"ai_hangup\"}") >= 1.0);
}

#[test]
fn the_ai_greets_a_baresip_callee_who_hears_it_from_the_first_words() {
    let tmp = tempfile::tempdir().unwrap();
    let callee = Callee::start(
        tmp.path().join("callee"),
        "+15557654321",
        "PCMU/8000/1",
        8000,
        &tone(1000.0, 8000, 6000, 8000.0),
        7,
    );
    let d = phone_daemon(callee.port);
    // The AI speaks 700 Hz for 3 s as soon as the stream starts.
    let mut script: Vec<Step> = tone_ulaw(700.0, 3000)
        .chunks(160)
        .map(|c| {
            Step::Text(
                json!({"event": "media", "streamSid": "x", "media": {"payload": base64::engine::general_purpose::STANDARD.encode(c)}})
                    .to_string(),
            )
        })
        .collect();
    script.push(Step::Sleep(Duration::from_millis(3500)));
    script.push(Step::Close);
    let ai = AiServer::start(vec![script]);
    let t = d.token(Some("acct"), false);
    let (st, call, _) = d.api(
        "POST",
        "/v1/calls",
        Some(&t),
        Some(&json!({"from": "+15558880000", "to": "+15557654321", "stream": {"url": ai.url()}})),
    );
    assert_eq!(st, 201, "{call}\n{}", d.logs());
    let id = call["id"].as_str().unwrap().to_string();
    let log = callee.log();
    let (rate, heard) = callee.finish();
    assert_eq!(rate, 8000);
    let (frames, share) = tone_in_frames(&heard, 700.0, 8000);
    assert!(
        frames >= 100 && share > 0.9,
        "the callee heard the AI's 700 Hz: {frames} frames, share {share:.2}\n{log}\n{}",
        d.logs()
    );
    // And the AI heard the callee's 1 kHz.
    let heard_by_ai: Vec<i16> = ai
        .events("media")
        .iter()
        .flat_map(|(_, _, v)| {
            base64::engine::general_purpose::STANDARD
                .decode(v["media"]["payload"].as_str().unwrap())
                .unwrap()
        })
        .map(media_userspace::g711::ulaw_decode)
        .collect();
    let (frames, share) = tone_in_frames(&heard_by_ai, 1000.0, 8000);
    assert!(
        frames >= 100 && share > 0.9,
        "the AI heard the callee: {frames}, {share:.2}"
    );
    wait_call(&d, &t, &id, "completed", |c| c["status"] == "completed");
}

#[test]
fn click_to_call_bridges_two_baresip_phones_who_hear_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    // The callee says 440 Hz, the second party 1 kHz; each quits (hangs
    // up) after a few seconds.
    let callee = Callee::start(
        tmp.path().join("callee"),
        "+15557654321",
        "PCMU/8000/1",
        8000,
        &tone(440.0, 8000, 7000, 8000.0),
        8,
    );
    let party = Callee::start(
        tmp.path().join("party"),
        "+15557000009",
        "PCMU/8000/1",
        8000,
        &tone(1000.0, 8000, 7000, 8000.0),
        9,
    );
    let d = phone_daemon(callee.port);
    let t = d.token(Some("acct"), false);
    // Exactly one of stream and forward_to.
    let (st, e, _) = d.api(
        "POST",
        "/v1/calls",
        Some(&t),
        Some(&json!({"from": "+15558880000", "to": "+15557654321"})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("stream")),
        "{e}"
    );
    let (st, e, _) = d.api(
        "POST",
        "/v1/calls",
        Some(&t),
        Some(&json!({"from": "+15558880000", "to": "+15557654321", "forward_to": "not a party"})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("forward_to")),
        "{e}"
    );
    let party_uri = format!("sip:+15557000009@127.0.0.1:{}", party.port);
    let (st, call, _) = d.api(
        "POST",
        "/v1/calls",
        Some(&t),
        Some(&json!({"from": "+15558880000", "to": "+15557654321", "forward_to": party_uri})),
    );
    assert_eq!(st, 201, "{call}\n{}", d.logs());
    assert_eq!(call["media"], "forward");
    let id = call["id"].as_str().unwrap().to_string();
    // A listen-only stream of both parties, started once they are bridged
    // (409 until then), stopped over REST.
    let ai = AiServer::start(vec![vec![Step::Sleep(Duration::from_secs(30))]]);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (st, r, _) = d.api(
            "POST",
            &format!("/v1/calls/{id}/stream"),
            Some(&t),
            Some(&json!({"url": ai.url(), "params": {"purpose": "transcribe"}})),
        );
        if st == 202 {
            break;
        }
        // 404 until the write-behind call record lands, 409 until bridged.
        assert!(st == 404 || st == 409, "{st} {r}");
        assert!(
            Instant::now() < deadline,
            "never bridged: {r}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The audio of one track, from frames the AI server recorded.
    let per_track = |frames: &[common::ai::Frame], track: &str| {
        frames
            .iter()
            .filter_map(|f| match &f.got {
                common::ai::Got::Text(v)
                    if v["event"] == "media" && v["media"]["track"] == track =>
                {
                    v["media"]["payload"].as_str().map(str::to_string)
                }
                _ => None,
            })
            .flat_map(|p| base64::engine::general_purpose::STANDARD.decode(p).unwrap())
            .map(media_userspace::g711::ulaw_decode)
            .collect::<Vec<i16>>()
    };
    ai.wait_for(Duration::from_secs(5), "2 s of both tracks", |f| {
        per_track(f, "outbound").len() >= 16_000
    });
    let (st, r, _) = d.api("DELETE", &format!("/v1/calls/{id}/stream"), Some(&t), None);
    assert_eq!(st, 202, "{r}");
    ai.wait_for(Duration::from_secs(3), "stop", |f| {
        f.iter()
            .any(|f| matches!(&f.got, common::ai::Got::Text(v) if v["event"] == "stop"))
    });
    let (st, _, _) = d.api("DELETE", &format!("/v1/calls/{id}/stream"), Some(&t), None);
    assert_eq!(st, 409, "no stream runs any more");
    let start = &ai.events("start")[0].2;
    assert_eq!(
        start["start"]["tracks"],
        json!(["inbound", "outbound"]),
        "{start}"
    );
    assert_eq!(start["start"]["callSid"], id.as_str());
    assert_eq!(start["start"]["customParameters"]["purpose"], "transcribe");
    let (frames, share) = tone_in_frames(&per_track(&ai.frames(), "inbound"), 440.0, 8000);
    assert!(
        frames >= 50 && share > 0.9,
        "the stream's inbound track is the callee's 440 Hz: {frames} frames, share {share:.2}"
    );
    let (frames, share) = tone_in_frames(&per_track(&ai.frames(), "outbound"), 1000.0, 8000);
    assert!(
        frames >= 50 && share > 0.9,
        "the stream's outbound track is the party's 1 kHz: {frames} frames, share {share:.2}"
    );
    let callee_log = callee.log();
    let (rate, heard) = callee.finish();
    let party_log = party.log();
    let (rate_b, heard_b) = party.finish();
    assert_eq!((rate, rate_b), (8000, 8000));
    let (frames, share) = tone_in_frames(&heard, 1000.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the callee heard the party's 1 kHz: {frames} frames, share {share:.2}\n{callee_log}\n{}",
        d.logs()
    );
    let (frames, share) = tone_in_frames(&heard_b, 440.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the party heard the callee's 440 Hz: {frames} frames, share {share:.2}\n{party_log}"
    );
    let done = wait_call(&d, &t, &id, "completed", |c| c["status"] == "completed");
    assert_eq!(done["media"], "forward", "{done}");
    assert!(done["answered_at"].is_i64(), "{done}");
}

#[test]
fn busy_no_answer_and_refused_outbound_calls_end_in_defined_statuses() {
    let tmp = tempfile::tempdir().unwrap();
    let ai = AiServer::start(vec![vec![]]);
    let t;
    // Busy.
    {
        let far_port = common::free_port();
        let carrier = run_sipp(tmp.path(), "uas_busy.xml", far_port);
        let d = daemon(far_port);
        t = d.token(Some("acct"), false);
        let (st, call, _) = d.api(
            "POST",
            "/v1/calls",
            Some(&t),
            Some(
                &json!({"from": "+15558880000", "to": "+15557654321", "stream": {"url": ai.url()}}),
            ),
        );
        assert_eq!(st, 201, "{call}");
        let id = call["id"].as_str().unwrap();
        let c = wait_call(&d, &t, id, "busy", |c| c["status"] == "busy");
        assert_eq!(
            (c["end_cause"].as_str(), c["sip_status"].as_u64()),
            (Some("busy"), Some(486))
        );
        assert!(carrier.wait_with_output().unwrap().status.success());
    }
    // No answer within the call's ring timeout: CANCEL, 487, ACK.
    {
        let far_port = common::free_port();
        let carrier = run_sipp(tmp.path(), "uas_ring_forever.xml", far_port);
        let d = daemon(far_port);
        let t = d.token(Some("acct"), false);
        let (st, call, _) = d.api(
            "POST",
            "/v1/calls",
            Some(&t),
            Some(&json!({"from": "+15558880000", "to": "+15557654321", "stream": {"url": ai.url()}, "ring_timeout_secs": 1})),
        );
        assert_eq!(st, 201, "{call}");
        let id = call["id"].as_str().unwrap();
        let c = wait_call(&d, &t, id, "no-answer", |c| c["status"] == "no-answer");
        assert_eq!(c["end_cause"], "no_answer");
        let out = carrier.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the phone saw CANCEL and the ACK of its 487: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.logs()
        );
        assert!(
            ai.events("start").is_empty(),
            "no stream for an unanswered call"
        );

        // Refusals name the field.
        let bad = |body: Value| d.api("POST", "/v1/calls", Some(&t), Some(&body));
        let stream = json!({"url": ai.url()});
        let (st, e, _) =
            bad(json!({"from": "+15559990000", "to": "+15557654321", "stream": stream}));
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some("from")),
            "not our number: {e}"
        );
        let (st, e, _) = bad(
            json!({"from": "+15558880000", "to": "+15557654321", "trunk": "nope", "stream": stream}),
        );
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some("trunk")),
            "{e}"
        );
        let (st, e, _) = bad(json!({"from": "+15558880000", "to": "call me", "stream": stream}));
        assert_eq!((st, e["error"]["field"].as_str()), (422, Some("to")), "{e}");
        let (st, e, _) = bad(json!({"from": "+15558880000", "to": "+15557654321"}));
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some("stream")),
            "{e}"
        );
        let (st, e, _) = bad(
            json!({"from": "+15558880000", "to": "+15557654321", "stream": stream, "ring_timeout_secs": 0}),
        );
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some("ring_timeout_secs")),
            "{e}"
        );
        let (st, _, _) = d.api(
            "POST",
            "/v1/blocked-numbers",
            Some(&t),
            Some(&json!({"caller": "+1900*"})),
        );
        assert_eq!(st, 201);
        let mut refused = None;
        for _ in 0..50 {
            let (st, e, _) =
                bad(json!({"from": "+15558880000", "to": "+19005550100", "stream": stream}));
            if st == 403 {
                refused = Some(e);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let e = refused.expect("a blocked callee is refused");
        assert_eq!(e["error"]["field"], "to");
        // Another account cannot use this account's number as caller id.
        let other = d.token(Some("other"), false);
        let (st, e, _) = d.api(
            "POST",
            "/v1/calls",
            Some(&other),
            Some(&json!({"from": "+15558880000", "to": "+15557654321", "stream": stream})),
        );
        assert_eq!((st, e["error"]["field"].as_str()), (422, Some("from")));
    }
}

#[test]
fn a_redirected_outbound_call_reaches_the_new_target_through_the_trunk() {
    let tmp = tempfile::tempdir().unwrap();
    let far_port = common::free_port();
    let carrier = run_sipp(tmp.path(), "uas_redirect.xml", far_port);
    let d = daemon(far_port);
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(300)),
        Step::Close,
    ]]);
    let t = d.token(Some("acct"), false);
    let (st, call, _) = d.api(
        "POST",
        "/v1/calls",
        Some(&t),
        Some(&json!({"from": "+15558880000", "to": "+15557654321", "stream": {"url": ai.url()}})),
    );
    assert_eq!(st, 201, "{call}");
    let out = carrier.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the second INVITE asked for the redirect's target: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.logs()
    );
    let id = call["id"].as_str().unwrap();
    wait_call(&d, &t, id, "completed", |c| c["status"] == "completed");
}
