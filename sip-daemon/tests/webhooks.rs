//! Webhooks end to end: a number's voice webhook picks each call's route
//! (stream, forward, reject; the number's own route when it fails), and an
//! outbound call's status webhook hears every change; all signed.

mod common;

use common::ai::{AiServer, Got};
use common::hooks::{HookServer, Reply, signed_by};
use common::{Caller, Daemon, Opts};
use serde_json::{Value, json};
use std::time::Duration;

const SECRET: &str = "whsec-test";

fn reply(body: Value) -> Reply {
    Reply {
        status: 200,
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

fn daemon(hooks: &HookServer, on_failure: &str) -> Daemon {
    Daemon::start_opts(Opts {
        extra: &format!(
            r#"
[[numbers]]
pattern = "+15556660000"
account = "acct"
route = "echo"
voice_webhook = "{}"

[webhooks]
secret = "{SECRET}"
voice_timeout_ms = 400
voice_on_failure = "{on_failure}"
"#,
            hooks.url("/voice")
        ),
        ..Opts::default()
    })
}

#[test]
fn the_voice_webhook_streams_the_call_to_the_ai_it_names() {
    let ai = AiServer::start(vec![vec![]]);
    let hooks = HookServer::start(vec![(
        "/voice",
        reply(json!({"action": "stream", "url": ai.url(), "params": {"intent": "billing"}})),
    )]);
    let d = daemon(&hooks, "route");
    let mut caller = Caller::new(d.sip_addr(), "wh-stream@test").dialing("+15556660000");
    caller.invite(44_000);
    let hit = &hooks.wait("/voice", 1, Duration::from_secs(5))[0];
    assert!(signed_by(hit, SECRET), "signed: {:?}", hit.headers);
    assert_eq!(
        hit.headers.get("x-gateway-event").map(String::as_str),
        Some("voice")
    );
    let body: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(body["from"], "+14155550100");
    assert_eq!(body["to"], "+15556660000");
    assert_eq!(body["number"], "+15556660000");
    assert!(body["call_id"].as_str().unwrap().starts_with("CA"));
    ai.wait_for(Duration::from_secs(5), "start", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "start"))
    });
    let start = &ai.events("start")[0].2;
    assert_eq!(start["start"]["customParameters"]["intent"], "billing");
    assert_eq!(start["start"]["callSid"], body["call_id"]);
    caller.bye();
}

#[test]
fn the_voice_webhook_rejects_or_forwards_and_its_failure_takes_the_numbers_route() {
    // Reject with 486.
    let hooks = HookServer::start(vec![(
        "/voice",
        reply(json!({"action": "reject", "status": 486})),
    )]);
    let d = daemon(&hooks, "route");
    let mut c = Caller::new(d.sip_addr(), "wh-reject@test").dialing("+15556660000");
    assert_eq!(c.final_status(44_010), 486);
    d.wait_cdr_cause("webhook_rejected");

    // Forward to a phone that is busy: the forward outcome reaches the caller.
    let busy_port = common::free_port();
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::process::Command::new("sipp")
        .current_dir(tmp.path())
        .args([
            "-sf",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/uas_busy.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            &busy_port.to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp (apt package sip-tester)");
    let hooks = HookServer::start(vec![(
        "/voice",
        reply(
            json!({"action": "forward", "to": format!("sip:+15551112222@127.0.0.1:{busy_port}")}),
        ),
    )]);
    let d = daemon(&hooks, "route");
    let mut c = Caller::new(d.sip_addr(), "wh-fwd@test").dialing("+15556660000");
    assert_eq!(c.final_status(44_020), 486);
    assert!(busy.wait_with_output().unwrap().status.success());

    // A webhook too slow (or broken): the number's own route (echo)…
    let slow = Reply {
        status: 200,
        body: json!({"action": "reject"}).to_string(),
        delay: Duration::from_secs(2),
    };
    let hooks = HookServer::start(vec![("/voice", slow.clone())]);
    let d = daemon(&hooks, "route");
    let mut c = Caller::new(d.sip_addr(), "wh-slow@test").dialing("+15556660000");
    assert_eq!(c.final_status(44_030), 200);
    let hooks = HookServer::start(vec![(
        "/voice",
        Reply {
            status: 200,
            body: "not json".into(),
            delay: Duration::ZERO,
        },
    )]);
    let d = daemon(&hooks, "route");
    let mut c = Caller::new(d.sip_addr(), "wh-bad@test").dialing("+15556660000");
    assert_eq!(c.final_status(44_040), 200);
    assert!(
        d.metric("gateway_webhook_requests_total{kind=\"voice\",outcome=\"bad_answer\"}") >= 1.0
    );
    // …or 503 when the operator prefers.
    let hooks = HookServer::start(vec![("/voice", slow)]);
    let d = daemon(&hooks, "reject");
    let mut c = Caller::new(d.sip_addr(), "wh-slow-rej@test").dialing("+15556660000");
    assert_eq!(c.final_status(44_050), 503);
    d.wait_cdr_cause("webhook_failed");
}

#[test]
fn an_outbound_calls_status_webhook_hears_ringing_answer_and_completion_signed() {
    let far_port = common::free_port();
    let tmp = tempfile::tempdir().unwrap();
    let carrier = std::process::Command::new("sipp")
        .current_dir(tmp.path())
        .args([
            "-sf",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/scenarios/uas_carrier_digest.xml"
            ),
            "-i",
            "127.0.0.1",
            "-p",
            &far_port.to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp (apt package sip-tester)");
    let hooks = HookServer::start(vec![]);
    let d = Daemon::start_opts(Opts {
        extra: &format!(
            r#"
[[trunks]]
name = "far"
source_cidrs = ["127.0.0.2/32"]
outbound_address = "127.0.0.1:{far_port}"
username = "gateway"
password = "trunk-secret"

[[numbers]]
pattern = "+15558880000"
account = "acct"
route = "echo"
trunk = "far"

[webhooks]
secret = "{SECRET}"
"#
        ),
        ..Opts::default()
    });
    let ai = AiServer::start(vec![vec![
        common::ai::Step::Sleep(Duration::from_millis(500)),
        common::ai::Step::Close,
    ]]);
    let t = d.token(Some("acct"), false);
    let (st, call, _) = d.api(
        "POST",
        "/v1/calls",
        Some(&t),
        Some(&json!({"from": "+15558880000", "to": "+15557654321", "stream": {"url": ai.url()}, "status_webhook": hooks.url("/status")})),
    );
    assert_eq!(st, 201, "{call}");
    let hits = hooks.wait("/status", 3, Duration::from_secs(15));
    let events: Vec<Value> = hits
        .iter()
        .map(|h| {
            assert!(signed_by(h, SECRET), "signed");
            assert_eq!(
                h.headers.get("x-gateway-event").map(String::as_str),
                Some("call.status")
            );
            serde_json::from_str(&h.body).unwrap()
        })
        .collect();
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["ringing", "in-progress", "completed"],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e["call_id"], call["id"]);
        assert_eq!(
            (e["from"].as_str(), e["to"].as_str()),
            (Some("+15558880000"), Some("+15557654321"))
        );
        assert_eq!(e["direction"], "outbound");
    }
    assert_eq!(events[2]["end_cause"], "ai_hangup");
    assert!(carrier.wait_with_output().unwrap().status.success());
}
