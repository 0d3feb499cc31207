//! TwiML end to end: a number whose voice webhook is a Twilio app. The
//! daemon POSTs Twilio's form fields signed with `X-Twilio-Signature`,
//! which Twilio's own Python `RequestValidator` (PyPI `twilio`, installed
//! by `scripts/setup.sh test` into `target/twilio-venv`) accepts; the
//! app's TwiML answer streams the call to an AI with its `<Parameter>`s,
//! dials a busy phone (SIPp) and asks its `action`, or asks for a verb
//! the gateway does not carry out and the call is refused saying so.

mod common;

use common::ai::{AiServer, Got};
use common::hooks::{Hit, HookServer, Reply};
use common::{Caller, Daemon, Opts};
use std::time::Duration;

fn xml(body: &str) -> Reply {
    Reply {
        status: 200,
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

/// A daemon whose number +15556660000 asks `hooks`' `/voice` in Twilio's
/// format (and tells `/status` its calls' changes), and the auth token the
/// REST API made for its account.
fn daemon(hooks: &HookServer) -> (Daemon, String) {
    let d = Daemon::start_opts(Opts {
        extra: &format!(
            r#"
[[numbers]]
pattern = "+15556660000"
account = "acct"
route = "echo"
voice_webhook = "{}"
webhook_format = "twilio"
status_webhook = "{}"

[webhooks]
voice_timeout_ms = 2000
voice_on_failure = "reject"
"#,
            hooks.url("/voice"),
            hooks.url("/status")
        ),
        ..Opts::default()
    });
    let admin = d.token(None, true);
    let (status, body, _) = d.api("POST", "/v1/accounts/acct/auth-token", Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["account_sid"], "acct");
    let token = body["auth_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    (d, token)
}

/// The form fields of a hit, decoded.
fn form(hit: &Hit) -> Vec<(String, String)> {
    url_decode_pairs(&hit.body)
}

fn url_decode_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Twilio's own validator on `url`, the hit's form fields and its
/// `X-Twilio-Signature`, keyed with `token`.
fn twilio_validates(token: &str, url: &str, hit: &Hit) -> bool {
    let python = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/twilio-venv/bin/python"
    );
    let signature = hit
        .headers
        .get("x-twilio-signature")
        .cloned()
        .unwrap_or_default();
    let params: serde_json::Map<String, serde_json::Value> = form(hit)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys\n\
             from twilio.request_validator import RequestValidator\n\
             a = json.loads(sys.argv[1])\n\
             print(RequestValidator(a['token']).validate(a['url'], a['params'], a['signature']))",
            &serde_json::json!({
                "token": token, "url": url, "params": params, "signature": signature,
            })
            .to_string(),
        ])
        .output()
        .expect("Twilio's Python library (scripts/setup.sh test makes target/twilio-venv)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match String::from_utf8_lossy(&out.stdout).trim() {
        "True" => true,
        "False" => false,
        other => panic!("validator printed {other:?}"),
    }
}

#[test]
fn a_twilio_app_validates_our_request_and_its_twiml_streams_the_call_to_the_ai() {
    let ai = AiServer::start(vec![vec![]]);
    let hooks = HookServer::start(vec![(
        "/voice",
        xml(&format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Connect>
    <Stream url="{}">
      <Parameter name="intent" value="billing &amp; refunds"/>
    </Stream>
  </Connect>
  <Pause length="40"/>
</Response>"#,
            ai.url()
        )),
    )]);
    let (d, token) = daemon(&hooks);
    let mut caller = Caller::new(d.sip_addr(), "tw-stream@test").dialing("+15556660000");
    caller.invite(44_100);
    let hit = &hooks.wait("/voice", 1, Duration::from_secs(5))[0];
    assert_eq!(
        hit.headers.get("content-type").map(String::as_str),
        Some("application/x-www-form-urlencoded")
    );
    let f = form(hit);
    assert_eq!(field(&f, "From"), Some("+14155550100"));
    assert_eq!(field(&f, "To"), Some("+15556660000"));
    assert_eq!(field(&f, "AccountSid"), Some("acct"));
    assert_eq!(field(&f, "CallStatus"), Some("ringing"));
    assert_eq!(field(&f, "Direction"), Some("inbound"));
    assert_eq!(field(&f, "ApiVersion"), Some("2010-04-01"));
    let call_sid = field(&f, "CallSid").unwrap().to_string();
    assert!(call_sid.starts_with("CA"), "{call_sid}");
    // Twilio's validator accepts the signature with the account's token,
    // and refuses it with any other or on another URL.
    let url = hooks.url("/voice");
    assert!(twilio_validates(&token, &url, hit), "{:?}", hit.headers);
    assert!(!twilio_validates(&"0".repeat(32), &url, hit));
    assert!(!twilio_validates(&token, &hooks.url("/other"), hit));

    ai.wait_for(Duration::from_secs(5), "start", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "start"))
    });
    let start = &ai.events("start")[0].2;
    assert_eq!(
        start["start"]["customParameters"]["intent"],
        "billing & refunds"
    );
    assert_eq!(start["start"]["callSid"], call_sid.as_str());
    std::thread::sleep(Duration::from_millis(1_200));
    caller.bye();
    d.wait_cdr_cause("caller_hangup");

    // The number's status callback, Twilio's way: each change in order,
    // signed, numbered, the last with its SIP status and duration.
    let hits = hooks.wait("/status", 3, Duration::from_secs(10));
    let events: Vec<Vec<(String, String)>> = hits.iter().map(form).collect();
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| field(e, "CallStatus").unwrap())
        .collect();
    assert_eq!(statuses, ["ringing", "in-progress", "completed"]);
    for (i, (hit, e)) in hits.iter().zip(&events).enumerate() {
        assert!(twilio_validates(&token, &hooks.url("/status"), hit));
        assert_eq!(field(e, "SequenceNumber"), Some(i.to_string().as_str()));
        assert_eq!(field(e, "CallSid"), Some(call_sid.as_str()));
        assert_eq!(field(e, "Direction"), Some("inbound"));
        assert_eq!(field(e, "From"), Some("+14155550100"));
        assert_eq!(field(e, "CallbackSource"), Some("call-progress-events"));
        assert!(field(e, "Timestamp").unwrap().ends_with(" +0000"));
    }
    assert_eq!(field(&events[2], "SipResponseCode"), Some("200"));
    let secs: u64 = field(&events[2], "CallDuration").unwrap().parse().unwrap();
    assert!((2..=5).contains(&secs), "{secs} s");
}

#[test]
fn a_busy_dial_asks_its_action_with_the_dial_status_and_what_it_answers_runs() {
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
    let hooks = HookServer::start(vec![
        (
            "/voice",
            xml(&format!(
                r#"<Response><Dial timeout="10" action="/after" callerId="+15556660000"><Sip>sip:+15551112222@127.0.0.1:{busy_port}</Sip></Dial><Hangup/></Response>"#
            )),
        ),
        (
            "/after",
            xml(r#"<Response><Pause length="1"/><Reject reason="busy"/></Response>"#),
        ),
    ]);
    let (d, token) = daemon(&hooks);
    let mut c = Caller::new(d.sip_addr(), "tw-dial@test").dialing("+15556660000");
    assert_eq!(c.final_status(44_110), 486);
    assert!(busy.wait_with_output().unwrap().status.success());
    let after = &hooks.wait("/after", 1, Duration::from_secs(5))[0];
    let f = form(after);
    assert_eq!(field(&f, "DialCallStatus"), Some("busy"));
    assert!(twilio_validates(&token, &hooks.url("/after"), after));
    let first = &hooks.hits("/voice")[0];
    assert_eq!(field(&f, "CallSid"), field(&form(first), "CallSid"));
    assert!(
        after.at.duration_since(first.at) < Duration::from_secs(5),
        "asked at the busy answer, not at the dial's timeout"
    );
    d.wait_cdr_cause("twiml_rejected");
}

#[test]
fn twiml_the_gateway_does_not_carry_out_refuses_the_call_and_says_what() {
    let hooks = HookServer::start(vec![(
        "/voice",
        xml("<Response><Say>Hello</Say><Hangup/></Response>"),
    )]);
    let (d, _) = daemon(&hooks);
    let mut c = Caller::new(d.sip_addr(), "tw-say@test").dialing("+15556660000");
    assert_eq!(c.final_status(44_120), 500);
    d.wait_cdr_cause("twiml_unsupported");
    assert!(
        d.logs().contains("<Say> is not supported by this gateway"),
        "the log names the verb"
    );
    assert!(
        d.metric("gateway_webhook_requests_total{kind=\"voice\",outcome=\"bad_answer\"}") >= 1.0
    );
}

#[test]
fn start_stream_copies_a_dialed_call_to_a_websocket_once_it_connects() {
    let far_port = common::free_port();
    let tmp = tempfile::tempdir().unwrap();
    // SIPp's own answering UAS: 200 OK with SDP, then it waits for BYE.
    let phone = std::process::Command::new("sipp")
        .current_dir(tmp.path())
        .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &far_port.to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp (apt package sip-tester)");
    let fork = AiServer::start(vec![vec![]]);
    let hooks = HookServer::start(vec![(
        "/voice",
        xml(&format!(
            r#"<Response><Start><Stream url="{}"><Parameter name="purpose" value="qa"/></Stream></Start><Dial><Sip>sip:+15551112222@127.0.0.1:{far_port}</Sip></Dial></Response>"#,
            fork.url()
        )),
    )]);
    let (d, _) = daemon(&hooks);
    let mut caller = Caller::new(d.sip_addr(), "tw-start@test").dialing("+15556660000");
    caller.invite(44_130);
    fork.wait_for(Duration::from_secs(5), "start", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "start"))
    });
    let start = &fork.events("start")[0].2["start"];
    assert_eq!(start["tracks"], serde_json::json!(["inbound", "outbound"]));
    assert_eq!(start["customParameters"]["purpose"], "qa");
    caller.bye();
    assert!(phone.wait_with_output().unwrap().status.success());
    d.wait_cdr_cause("caller_hangup");
}
