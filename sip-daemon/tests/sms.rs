//! SMS in over SIP MESSAGE (RFC 3428) from a SIPp carrier: 202, stored and
//! listed over REST, POSTed (signed) to the number's SMS webhook, and told
//! to the AI of a live call on the number; refusals for unknown numbers,
//! blocked senders, other content types and oversized bodies.

mod common;

use common::ai::{AiServer, Got};
use common::hooks::{HookServer, signed_by};
use common::{Caller, Daemon, Opts, header};
use serde_json::Value;
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

const SECRET: &str = "whsec-sms";

fn message(
    d: &Daemon,
    sock: &UdpSocket,
    to: &str,
    from: &str,
    ctype: &str,
    body: &str,
    n: u32,
) -> u16 {
    let local = sock.local_addr().unwrap();
    let dst = d.sip_addr();
    let msg = format!(
        "MESSAGE sip:{to}@{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKsms{n}\r\nMax-Forwards: 70\r\nFrom: <sip:{from}@{local}>;tag=s{n}\r\nTo: <sip:{to}@{dst}>\r\nCall-ID: sms-{n}@test\r\nCSeq: 1 MESSAGE\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.send_to(msg.as_bytes(), dst).unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        let (len, _) = sock.recv_from(&mut buf).expect("an answer to the MESSAGE");
        let text = String::from_utf8_lossy(&buf[..len]).to_string();
        if header(&text, "Call-ID") == Some(&format!("sms-{n}@test")) {
            return text.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
}

#[test]
fn an_sms_from_a_carrier_is_stored_posted_and_told_to_the_live_ai() {
    let hooks = HookServer::start(vec![]);
    let ai = AiServer::start(vec![vec![]]);
    let d = Daemon::start_opts(Opts {
        extra: &format!(
            r#"
[[numbers]]
pattern = "+15557770001"
account = "acct"
route = "stream"
target = "{}"
sms_webhook = "{}"

[[blocked]]
account = "acct"
caller = "+1900*"

[webhooks]
secret = "{SECRET}"
"#,
            ai.url(),
            hooks.url("/sms")
        ),
        ..Opts::default()
    });
    // A live call to the number, streaming to the AI.
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut caller = Caller::new(d.sip_addr(), "sms-call@test").dialing("+15557770001");
    caller.invite(media.local_addr().unwrap().port());

    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("sipp")
        .current_dir(tmp.path())
        .args([
            "-sf",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/scenarios/uac_message.xml"
            ),
            &d.sip_addr().to_string(),
            "-s",
            "+15557770001",
            "-i",
            "127.0.0.1",
            "-p",
            &common::free_port().to_string(),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "20s",
            "-timeout_error",
        ])
        .output()
        .expect("run sipp (apt package sip-tester)");
    assert!(
        out.status.success(),
        "the carrier's MESSAGE got 202: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.logs()
    );

    // The AI of the live call hears of it.
    ai.wait_for(Duration::from_secs(5), "sms", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "sms"))
    });
    let sms = &ai.events("sms")[0].2;
    assert_eq!(sms["sms"]["from"], "+14155550123");
    assert_eq!(sms["sms"]["to"], "+15557770001");
    // SIPp ends the body with CRLF; the body is passed on as sent.
    assert_eq!(sms["sms"]["body"], "Your code is 4711 ✓\r\n");
    assert!(sms["sms"]["messageSid"].as_str().unwrap().starts_with("SM"));

    // The webhook gets it, signed.
    let hit = &hooks.wait("/sms", 1, Duration::from_secs(5))[0];
    assert!(signed_by(hit, SECRET));
    let ev: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(ev["event"], "message.received");
    assert_eq!(ev["body"], "Your code is 4711 ✓\r\n");
    assert_eq!(ev["message_id"], sms["sms"]["messageSid"]);

    // And it is stored: GET /v1/messages lists it.
    let t = d.token(Some("acct"), false);
    let mut listed = Value::Null;
    for _ in 0..50 {
        listed = d.api("GET", "/v1/messages", Some(&t), None).1;
        if listed["data"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = &listed["data"][0];
    assert_eq!(
        (m["direction"].as_str(), m["status"].as_str()),
        (Some("inbound"), Some("received"))
    );
    assert_eq!(m["from"], "+14155550123");

    // Refusals.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        message(
            &d,
            &sock,
            "+19999999999",
            "+14155550123",
            "text/plain",
            "x",
            1
        ),
        202,
        "the * number takes it"
    );
    assert_eq!(
        message(
            &d,
            &sock,
            "+15557770001",
            "+19005550100",
            "text/plain",
            "spam",
            2
        ),
        603,
        "blocked sender"
    );
    assert_eq!(
        message(
            &d,
            &sock,
            "+15557770001",
            "+14155550123",
            "application/pdf",
            "x",
            3
        ),
        415
    );
    assert_eq!(
        message(
            &d,
            &sock,
            "+15557770001",
            "+14155550123",
            "text/plain",
            &"x".repeat(1301),
            4
        ),
        513
    );
    assert_eq!(
        message(
            &d,
            &sock,
            "not-a-number",
            "+14155550123",
            "text/plain",
            "x",
            5
        ),
        404
    );
    assert!(d.metric("gateway_sip_rejections_total{reason=\"blocked\"}") >= 1.0);
    caller.bye();
}

fn carrier(dir: &std::path::Path, scenario: &str, port: u16) -> std::process::Child {
    Command::new("sipp")
        .current_dir(dir)
        .args([
            "-sf",
            &format!("{}/tests/scenarios/{scenario}", env!("CARGO_MANIFEST_DIR")),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp (apt package sip-tester)")
}

fn sms_daemon(far_port: u16) -> Daemon {
    Daemon::start_opts(Opts {
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
"#
        ),
        ..Opts::default()
    })
}

/// The message's status once it is no longer `queued`.
fn settled(d: &Daemon, t: &str, id: &str) -> Value {
    for _ in 0..100 {
        let (_, page, _) = d.api("GET", "/v1/messages", Some(t), None);
        if let Some(m) = page["data"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == id))
            && m["status"] != "queued"
        {
            return m.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("message {id} stayed queued\n{}", d.logs());
}

#[test]
fn an_sms_sent_over_rest_reaches_a_carrier_that_challenges_and_failures_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let far_port = common::free_port();
    let sipp = carrier(tmp.path(), "uas_message_digest.xml", far_port);
    let d = sms_daemon(far_port);
    let t = d.token(Some("acct"), false);
    let (st, m, _) = d.api(
        "POST",
        "/v1/messages",
        Some(&t),
        Some(&serde_json::json!({"from": "+15558880000", "to": "+15557654321", "body": "Hello from the AI ✓"})),
    );
    assert_eq!(st, 201, "{m}");
    assert_eq!(
        (m["status"].as_str(), m["direction"].as_str()),
        (Some("queued"), Some("outbound"))
    );
    let id = m["id"].as_str().unwrap().to_string();
    let out = sipp.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the carrier checked the digest and the body: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.logs()
    );
    assert_eq!(settled(&d, &t, &id)["status"], "sent");
    // One message by its id, for its own account only.
    let (st, one, _) = d.api("GET", &format!("/v1/messages/{id}"), Some(&t), None);
    assert_eq!(st, 200, "{one}");
    assert_eq!(
        (
            one["id"].as_str(),
            one["status"].as_str(),
            one["body"].as_str()
        ),
        (Some(id.as_str()), Some("sent"), Some("Hello from the AI ✓"))
    );
    let other = d.token(Some("someone-else"), false);
    let (st, _, _) = d.api("GET", &format!("/v1/messages/{id}"), Some(&other), None);
    assert_eq!(st, 404);

    // A carrier that refuses: failed.
    let far_port = common::free_port();
    let sipp = carrier(tmp.path(), "uas_message_reject.xml", far_port);
    let d = sms_daemon(far_port);
    let t = d.token(Some("acct"), false);
    let (st, m, _) = d.api(
        "POST",
        "/v1/messages",
        Some(&t),
        Some(&serde_json::json!({"from": "+15558880000", "to": "+15550000000", "body": "x"})),
    );
    assert_eq!(st, 201, "{m}");
    assert!(sipp.wait_with_output().unwrap().status.success());
    assert_eq!(
        settled(&d, &t, m["id"].as_str().unwrap())["status"],
        "failed"
    );

    // Refused before any SIP, naming the field.
    for (body, field) in [
        (
            serde_json::json!({"from": "+15558880000", "to": "+1555", "body": "x".repeat(1301)}),
            "body",
        ),
        (
            serde_json::json!({"from": "+15558880000", "to": "+1555", "body": ""}),
            "body",
        ),
        (
            serde_json::json!({"from": "+15559990000", "to": "+1555", "body": "x"}),
            "from",
        ),
        (
            serde_json::json!({"from": "+15558880000", "to": "sms me", "body": "x"}),
            "to",
        ),
    ] {
        let (st, e, _) = d.api("POST", "/v1/messages", Some(&t), Some(&body));
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some(field)),
            "{e}"
        );
    }
}
