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

/// Tenants cannot point the gateway inward: loopback, private, link-local
/// and metadata targets are refused when written over REST (the field
/// named), and again when the gateway connects, for names that resolve
/// inward and for rows that never went through REST.
#[test]
fn inward_targets_are_refused_on_write_and_on_connect() {
    let ai = AiServer::start(vec![vec![]]);
    let hooks = HookServer::start(vec![(
        "/voice",
        reply(json!({"action": "stream", "url": ai.url()})),
    )]);
    let d = Daemon::start_opts(Opts {
        api_extra: r#"allowed_target_networks = ["10.20.0.0/16"]"#,
        extra: &format!(
            r#"
[[numbers]]
pattern = "+15556670000"
account = "acct"
route = "stream"
target = "{}"

[[numbers]]
pattern = "+15556680000"
account = "acct"
route = "echo"
voice_webhook = "{}"
"#,
            ai.url(),
            // A name, so the refusal happens as it resolves.
            hooks.url("/voice").replace("127.0.0.1", "localhost")
        ),
        ..Opts::default()
    });
    let t = d.token(Some("acct"), false);
    for (body, field) in [
        (
            json!({"route": "stream", "stream": {"url": "ws://127.0.0.1:9/x"}}),
            "stream.url",
        ),
        (
            json!({"route": "stream", "stream": {"url": "wss://ai.localhost/x"}}),
            "stream.url",
        ),
        (
            json!({"route": "stream", "stream": {"url": "ws://[::ffff:10.0.0.1]/x"}}),
            "stream.url",
        ),
        (
            json!({"route": "echo", "voice_webhook": "http://169.254.169.254/latest/meta-data/"}),
            "voice_webhook",
        ),
        (
            json!({"route": "echo", "sms_webhook": "http://192.168.1.1/sms"}),
            "sms_webhook",
        ),
        (
            json!({"route": "forward", "forward_to": "sip:bob@10.0.0.7"}),
            "forward_to",
        ),
        (
            json!({"route": "forward", "forward_to": "sip:bob@[fe80::1]:5060"}),
            "forward_to",
        ),
        (
            json!({"route": "echo", "fallback": "sip:bob@127.0.0.1"}),
            "fallback",
        ),
    ] {
        let (st, got, _) = d.api("PUT", "/v1/numbers/+15556690000", Some(&t), Some(&body));
        assert_eq!(
            (st, got["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}: {got}"
        );
        assert!(
            got["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("allowed_target_networks")),
            "{got}"
        );
    }
    // The operator's network passes, and so do public ones.
    for body in [
        json!({"route": "forward", "forward_to": "sip:bob@10.20.0.7"}),
        json!({"route": "stream", "stream": {"url": "wss://ai.example.com/x"}}),
    ] {
        let (st, got, _) = d.api("PUT", "/v1/numbers/+15556690000", Some(&t), Some(&body));
        assert_eq!(st, 200, "{body}: {got}");
    }
    let (st, got, _) = d.api(
        "POST",
        "/v1/calls",
        Some(&t),
        Some(&json!({"from": "+15550001234", "to": "+15550009999", "stream": {"url": "wss://ai.example.com/x"}, "status_webhook": "http://[::1]:80/s"})),
    );
    assert_eq!(
        (st, got["error"]["field"].as_str()),
        (422, Some("status_webhook")),
        "{got}"
    );

    // A stream row at loopback (written by the operator's file, which the
    // policy does not exempt at connect): the AI is never reached.
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut caller = Caller::new(d.sip_addr(), "inward-1@test").dialing("+15556670000");
    assert!(
        caller
            .try_invite(media.local_addr().unwrap().port(), 503)
            .is_none()
    );
    d.wait_cdr_cause("stream_failed");
    assert!(ai.frames().is_empty(), "the AI got nothing");
    assert!(d.metric("gateway_ai_stream_connect_failures_total") >= 1.0);

    // A voice webhook whose name resolves to loopback is not called; the
    // number's own route takes the call.
    let mut caller = Caller::new(d.sip_addr(), "inward-2@test").dialing("+15556680000");
    caller.invite(media.local_addr().unwrap().port());
    caller.bye();
    assert!(hooks.hits("/voice").is_empty(), "the webhook got nothing");
    assert_eq!(
        d.metric("gateway_webhook_requests_total{kind=\"voice\",outcome=\"error\"}"),
        1.0
    );
}
