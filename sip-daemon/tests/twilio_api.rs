//! The Twilio-compatible Calls and Messages API driven by Twilio's own Python helper
//! library (PyPI `twilio`, installed by `scripts/setup.sh test` into
//! `target/twilio-venv`), unchanged but for its API base URL: it places a
//! call whose TwiML streams the answered callee (a SIPp carrier) to an AI,
//! fetches and lists it, ends it, and reads Twilio's errors; the call's
//! status callback is Twilio's, signed so Twilio's validator accepts it.

mod common;

use common::ai::{AiServer, Got, Step};
use common::hooks::{HookServer, Reply};
use common::{Daemon, Opts};
use serde_json::{Value, json};
use std::time::Duration;

/// One step of `tests/peers/twilio_calls.py`: what it printed.
fn twilio(d: &Daemon, token: &str, step: &str, extra: Value) -> Value {
    let python = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/twilio-venv/bin/python"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/twilio_calls.py");
    let mut args = json!({
        "base": format!("http://127.0.0.1:{}", d.metrics_port),
        "account": "acct",
        "token": token,
        "step": step,
    });
    for (k, v) in extra.as_object().unwrap() {
        args[k] = v.clone();
    }
    let out = std::process::Command::new(python)
        .args([script, &args.to_string()])
        .output()
        .expect("Twilio's Python library (scripts/setup.sh test makes target/twilio-venv)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

#[test]
fn twilios_python_library_places_fetches_lists_and_ends_a_call() {
    let rec_dir = tempfile::tempdir().unwrap();
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

[recordings]
dir = "{}"
"#,
            rec_dir.path().display()
        ),
        ..Opts::default()
    });
    let admin = d.token(None, true);
    let (st, body, _) = d.api("POST", "/v1/accounts/acct/auth-token", Some(&admin), None);
    assert_eq!(st, 200, "{body}");
    let token = body["auth_token"].as_str().unwrap().to_string();
    // The AI keeps the call until the API ends it.
    let ai = AiServer::start(vec![vec![Step::Sleep(Duration::from_secs(20))]]);
    let third_ai = AiServer::start(vec![vec![]]);
    let hooks = HookServer::start(vec![(
        "/moved",
        Reply {
            status: 200,
            body: format!(
                r#"<Response><Connect><Stream url="{}"><Parameter name="leg" value="third"/></Stream></Connect></Response>"#,
                third_ai.url()
            ),
            delay: Duration::ZERO,
        },
    )]);

    let created = twilio(
        &d,
        &token,
        "create",
        json!({
            "to": "+15557654321",
            "from": "+15558880000",
            "twiml": format!(r#"<Response><Connect><Stream url="{}"><Parameter name="campaign" value="renewals"/></Stream></Connect></Response>"#, ai.url()),
            "status_callback": hooks.url("/status"),
            "record": true,
            "recording_status_callback": hooks.url("/recording"),
        }),
    );
    assert_eq!(created["status"], "queued", "{created}");
    assert_eq!(created["direction"], "outbound-api");
    let sid = created["sid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("CA"), "{sid}");

    // Answered by the carrier: the TwiML streams the callee to the AI.
    ai.wait_for(Duration::from_secs(10), "start", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "start"))
    });
    let start = &ai.events("start")[0].2;
    assert_eq!(start["start"]["callSid"], sid.as_str());
    assert_eq!(start["start"]["customParameters"]["campaign"], "renewals");

    let fetched = twilio(&d, &token, "fetch", json!({"sid": sid}));
    assert_eq!(fetched["status"], "in-progress", "{fetched}");
    assert_eq!(
        (fetched["from"].as_str(), fetched["to"].as_str()),
        (Some("+15558880000"), Some("+15557654321"))
    );
    assert_ne!(fetched["start_time"], "None");
    let listed = twilio(&d, &token, "list", json!({"to": "+15557654321"}));
    assert_eq!(listed["sids"], json!([sid]), "{listed}");

    // New TwiML on the live call moves it to another AI (live redirect).
    let next_ai = AiServer::start(vec![vec![]]);
    let moved = twilio(
        &d,
        &token,
        "raw",
        json!({"method": "POST", "path": format!("/2010-04-01/Accounts/acct/Calls/{sid}.json"),
               "data": {"Twiml": format!(r#"<Response><Connect><Stream url="{}"/></Connect></Response>"#, next_ai.url())}}),
    );
    assert_eq!(moved["status"], 200, "{moved}");
    next_ai.wait_for(Duration::from_secs(5), "start", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "start"))
    });
    assert_eq!(
        next_ai.events("start")[0].2["start"]["callSid"],
        sid.as_str()
    );
    ai.wait_for(Duration::from_secs(5), "stop", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "stop"))
    });
    // A `Url` on the live call: fetched, signed, and its <Connect><Stream>
    // moves the call again.
    let fetched_moved = twilio(
        &d,
        &token,
        "raw",
        json!({"method": "POST", "path": format!("/2010-04-01/Accounts/acct/Calls/{sid}.json"),
               "data": {"Url": hooks.url("/moved")}}),
    );
    assert_eq!(fetched_moved["status"], 200, "{fetched_moved}");
    third_ai.wait_for(Duration::from_secs(5), "start", |f| {
        f.iter()
            .any(|f| matches!(&f.got, Got::Text(v) if v["event"] == "start"))
    });
    let third_start = &third_ai.events("start")[0].2["start"];
    assert_eq!(third_start["callSid"], sid.as_str());
    assert_eq!(third_start["customParameters"]["leg"], "third");
    let moved_hit = &hooks.wait("/moved", 1, Duration::from_secs(5))[0];
    assert!(
        moved_hit.body.contains("CallStatus=in-progress"),
        "{}",
        moved_hit.body
    );
    assert!(
        moved_hit.body.contains("Direction=outbound-api"),
        "{}",
        moved_hit.body
    );
    assert!(moved_hit.headers.contains_key("x-twilio-signature"));

    // Twilio's `canceled` leaves a call in progress alone.
    let calls = format!("/2010-04-01/Accounts/acct/Calls/{sid}.json");
    let kept = twilio(
        &d,
        &token,
        "raw",
        json!({"method": "POST", "path": calls, "data": {"Status": "canceled"}}),
    );
    assert_eq!(kept["status"], 200, "{kept}");
    assert_eq!(kept["body"]["status"], "in-progress");

    let ended = twilio(&d, &token, "end", json!({"sid": sid}));
    assert_eq!(ended["sid"], sid.as_str(), "{ended}");
    d.wait_cdr_cause("api_hangup");
    assert!(carrier.wait_with_output().unwrap().status.success());

    // Record=true: the streamed call was recorded, and told.
    let rec_hit = &hooks.wait("/recording", 1, Duration::from_secs(10))[0];
    let rec: Value = serde_json::from_str(&rec_hit.body).unwrap();
    assert_eq!(rec["event"], "recording.completed", "{rec}");
    assert_eq!(rec["call_id"], sid.as_str());
    let acct = d.token(Some("acct"), false);
    let (st, list, _) = d.api("GET", "/v1/recordings", Some(&acct), None);
    assert_eq!(st, 200);
    assert_eq!(list["data"][0]["call_id"], sid.as_str(), "{list}");

    // Its status callback: the events asked for, Twilio's way.
    let hits = hooks.wait("/status", 3, Duration::from_secs(10));
    let statuses: Vec<String> = hits
        .iter()
        .map(|h| {
            h.body
                .split('&')
                .find_map(|p| p.strip_prefix("CallStatus="))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(statuses, ["initiated", "in-progress", "completed"]);
    assert!(
        hits.iter()
            .all(|h| h.headers.contains_key("x-twilio-signature"))
    );

    // Twilio's errors, as its library raises them.
    let refused = twilio(
        &d,
        &token,
        "unsupported",
        json!({"to": "+15557654321", "from": "+15558880000"}),
    );
    assert_eq!(refused["error"]["status"], 400, "{refused}");
    assert_eq!(refused["error"]["code"], 20001);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MachineDetection")
    );
    let denied = twilio(&d, &"0".repeat(32), "auth", json!({"sid": sid}));
    assert_eq!(denied["error"]["status"], 401, "{denied}");
    assert_eq!(denied["error"]["code"], 20003);
    let list = "/2010-04-01/Accounts/acct/Calls.json";
    let filtered = twilio(
        &d,
        &token,
        "raw",
        json!({"method": "GET", "path": list, "params": {"Status": "in-progress"}}),
    );
    assert_eq!(
        filtered["status"], 400,
        "a filter not carried out: {filtered}"
    );
    assert!(
        filtered["body"]["message"]
            .as_str()
            .unwrap()
            .contains("Status")
    );
    let far = twilio(
        &d,
        &token,
        "raw",
        json!({"method": "GET", "path": list, "params": {"Page": "4294967295", "PageSize": "1000"}}),
    );
    assert_eq!(far["status"], 200, "{far}");
    let relative = twilio(
        &d,
        &token,
        "raw",
        json!({"method": "POST", "path": list, "data": {
            "To": "+15557654321", "From": "+15558880000",
            "Twiml": "<Response><Redirect>/next</Redirect></Response>",
        }}),
    );
    assert_eq!(relative["status"], 400, "{relative}");
    assert!(
        relative["body"]["message"]
            .as_str()
            .unwrap()
            .contains("absolute")
    );
    let inward = twilio(
        &d,
        &token,
        "raw",
        json!({"method": "POST", "path": list, "data": {
            "To": "+15557654321", "From": "+15558880000",
            "Twiml": "<Response><Dial><Sip>sip:x@169.254.169.254</Sip></Dial></Response>",
        }}),
    );
    assert_eq!(inward["status"], 400, "the target policy holds: {inward}");
}

#[test]
fn twilios_python_library_sends_fetches_and_lists_an_sms() {
    let far_port = common::free_port();
    let tmp = tempfile::tempdir().unwrap();
    let carrier = std::process::Command::new("sipp")
        .current_dir(tmp.path())
        .args([
            "-sf",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/scenarios/uas_message_digest.xml"
            ),
            "-i",
            "127.0.0.1",
            "-p",
            &far_port.to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp (apt package sip-tester)");
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
"#
        ),
        ..Opts::default()
    });
    let admin = d.token(None, true);
    let (st, body, _) = d.api("POST", "/v1/accounts/acct/auth-token", Some(&admin), None);
    assert_eq!(st, 200, "{body}");
    let token = body["auth_token"].as_str().unwrap().to_string();
    let sent = twilio(
        &d,
        &token,
        "message",
        json!({"to": "+15557654321", "from": "+15558880000", "body": "Hello from the AI ✓"}),
    );
    assert_eq!(
        (sent["status"].as_str(), sent["direction"].as_str()),
        (Some("queued"), Some("outbound-api")),
        "{sent}"
    );
    let sid = sent["sid"].as_str().unwrap().to_string();
    assert!(
        carrier.wait_with_output().unwrap().status.success(),
        "the carrier checked the digest and the body"
    );
    let fetched = common::eventually(Duration::from_secs(5), "sent", || {
        let m = twilio(&d, &token, "message_fetch", json!({"sid": sid}));
        (m["status"] == "sent").then_some(m)
    });
    assert_eq!(fetched["body"], "Hello from the AI ✓");
    assert_eq!(
        (fetched["from"].as_str(), fetched["to"].as_str()),
        (Some("+15558880000"), Some("+15557654321"))
    );
    let listed = twilio(&d, &token, "message_list", json!({"to": "+15557654321"}));
    assert_eq!(listed["sids"], json!([sid]), "{listed}");
}
