//! The REST API of the real daemon over real HTTP: auth failures, account
//! scoping, every resource with good and bad input, changes applied to
//! calls without a restart, live hangup, rate limits and metrics.

mod common;

use common::{Caller, Daemon, JWT_SECRET, Opts};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn claims(account: Option<&str>, exp_in: i64) -> api::auth::Claims {
    let now = api::auth::unix_now() as i64;
    api::auth::Claims {
        sub: "test".into(),
        account: account.map(str::to_string),
        admin: false,
        aud: "voice-gateway".into(),
        iss: "voice-gateway".into(),
        exp: (now + exp_in) as u64,
        nbf: now as u64,
        iat: now as u64,
    }
}

fn mint(secret: &str, c: &api::auth::Claims) -> String {
    api::auth::mint("HS256", secret.as_bytes(), c).unwrap()
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn error_field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or("")
}

#[test]
fn auth_failures_are_401_and_other_accounts_resources_are_404() {
    let d = Daemon::start(
        r#"
[[accounts]]
id = "other"
number_ranges = ["+1555*"]
[[numbers]]
pattern = "+15557770000"
account = "other"
route = "echo"
"#,
    );
    let good = d.token(Some("acct"), false);
    let (st, body, _) = d.api("GET", "/v1/numbers", Some(&good), None);
    assert_eq!(st, 200, "{body}");

    let expired = mint(JWT_SECRET, &claims(Some("acct"), -3600));
    let forged = mint("not-the-secret", &claims(Some("acct"), 3600));
    let mut c = claims(Some("acct"), 3600);
    c.aud = "another-service".into();
    let wrong_aud = mint(JWT_SECRET, &c);
    let mut c = claims(Some("acct"), 3600);
    c.iss = "someone".into();
    let wrong_iss = mint(JWT_SECRET, &c);
    for (what, token) in [
        ("missing", None),
        ("garbage", Some("abc.def.ghi")),
        ("expired", Some(expired.as_str())),
        ("forged", Some(forged.as_str())),
        ("wrong audience", Some(wrong_aud.as_str())),
        ("wrong issuer", Some(wrong_iss.as_str())),
    ] {
        let (st, body, _) = d.api("GET", "/v1/numbers", token, None);
        assert_eq!(st, 401, "{what}: {body}");
        assert_eq!(error_code(&body), "unauthorized", "{what}");
    }

    // The other account's number exists, but not for this token.
    let (st, _, _) = d.api("GET", "/v1/numbers/+15557770000", Some(&good), None);
    assert_eq!(st, 404);
    let (st, _, _) = d.api("DELETE", "/v1/numbers/+15557770000", Some(&good), None);
    assert_eq!(st, 404);
    let other = d.token(Some("other"), false);
    let (st, body, _) = d.api("GET", "/v1/numbers/+15557770000", Some(&other), None);
    assert_eq!((st, body["route"].as_str()), (200, Some("echo")));
    let (_, list, _) = d.api("GET", "/v1/numbers", Some(&good), None);
    let mine: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["number"].as_str().unwrap())
        .collect();
    assert!(!mine.contains(&"+15557770000"), "{mine:?}");
    // Taking another account's number is a conflict, and changes nothing.
    let (st, body, _) = d.api(
        "PUT",
        "/v1/numbers/+15557770000",
        Some(&good),
        Some(&json!({"route": "echo"})),
    );
    assert_eq!((st, error_field(&body)), (409, "number"), "{body}");
    // So is a number inside another account's range, or a range around
    // another account's number; the catch-all needs an admin.
    for inside in ["+15550001234", "+1555*"] {
        let (st, body, _) = d.api(
            "PUT",
            &format!("/v1/numbers/{inside}"),
            Some(&other),
            Some(&json!({"route": "echo"})),
        );
        assert_eq!(
            (st, error_field(&body)),
            (409, "number"),
            "{inside}: {body}"
        );
    }
    let (st, body, _) = d.api(
        "PUT",
        "/v1/numbers/*",
        Some(&good),
        Some(&json!({"route": "echo"})),
    );
    assert_eq!((st, error_code(&body)), (403, "forbidden"), "{body}");

    // Accounts and trunks need the admin claim.
    let (st, body, _) = d.api("GET", "/v1/trunks", Some(&good), None);
    assert_eq!((st, error_code(&body)), (403, "forbidden"));
    let admin = d.token(None, true);
    let (st, body, _) = d.api("GET", "/v1/trunks", Some(&admin), None);
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"][0]["name"], "local");
    // An admin token without an account has no numbers.
    let (st, _, _) = d.api("GET", "/v1/numbers", Some(&admin), None);
    assert_eq!(st, 403);
    let (st, body, _) = d.api("GET", "/v1/accounts/other", Some(&good), None);
    assert_eq!(st, 404, "{body}");
    let (st, body, _) = d.api("GET", "/v1/accounts/acct", Some(&good), None);
    assert_eq!((st, body["id"].as_str()), (200, Some("acct")));
}

#[test]
fn resources_take_good_input_and_name_the_field_of_bad_input() {
    let d = Daemon::start("");
    let t = d.token(Some("acct"), false);
    let admin = d.token(None, true);
    let t = Some(t.as_str());
    let admin = Some(admin.as_str());

    // Bodies: wrong content type, bad JSON, unknown and mistyped fields.
    let (st, body, _) = d.api("PUT", "/v1/numbers/+15551112222", t, None);
    assert_eq!((st, error_code(&body)), (415, "unsupported_media_type"));
    for (input, field) in [
        (json!({}), "route"),
        (json!({"route": "teleport"}), "route"),
        (json!({"route": "stream"}), "stream"),
        (json!({"route": "stream", "stream": {}}), "stream.url"),
        (
            json!({"route": "stream", "stream": {"url": "http://x"}}),
            "stream.url",
        ),
        (
            json!({"route": "stream", "stream": {"url": "wss://x", "dialect": "mp3"}}),
            "stream.dialect",
        ),
        (
            json!({"route": "stream", "stream": {"url": "wss://x", "params": {"n": 1}}}),
            "stream.params.n",
        ),
        (json!({"route": "forward"}), "forward_to"),
        (
            json!({"route": "forward", "forward_to": "not a uri"}),
            "forward_to",
        ),
        (
            json!({"route": "forward", "forward_to": "sip:a@127.0.0.1", "trunk": "nope"}),
            "trunk",
        ),
        (json!({"route": "echo", "max_calls": 0}), "max_calls"),
        (json!({"route": "echo", "max_calls": "ten"}), "max_calls"),
        (json!({"route": "echo", "fallback": "%%"}), "fallback"),
        (json!({"route": "echo", "colour": "blue"}), "colour"),
    ] {
        let (st, body, _) = d.api("PUT", "/v1/numbers/+15551112222", t, Some(&input));
        assert_eq!(st, 422, "{input} → {body}");
        assert_eq!(error_field(&body), field, "{input} → {body}");
    }
    let (st, body, _) = d.api(
        "PUT",
        "/v1/numbers/12ab",
        t,
        Some(&json!({"route": "echo"})),
    );
    assert_eq!((st, error_field(&body)), (422, "number"), "{body}");

    // Good input, read back through GET and the list (canonical E.164).
    let (st, body, _) = d.api(
        "PUT",
        "/v1/numbers/+1%20(555)%20111-2222",
        t,
        Some(&json!({"route": "stream", "stream": {"url": "wss://ai.example/s", "dialect": "pcm16", "params": {"tenant": "t1"}}, "max_calls": 5})),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["number"], "+15551112222");
    let (st, got, _) = d.api("GET", "/v1/numbers/+15551112222", t, None);
    assert_eq!(st, 200);
    assert_eq!(got["stream"]["params"]["tenant"], "t1");
    assert_eq!(got["max_calls"], 5);
    let (st, body, _) = d.api(
        "PUT",
        "/v1/numbers/+15551113333",
        t,
        Some(&json!({"route": "forward", "forward_to": "sip:+15551113333@127.0.0.1:5070", "trunk": "local"})),
    );
    assert_eq!(st, 200, "{body}");

    // Pagination: the default rows plus ours, two at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/numbers?limit=2&cursor={}", c.replace('+', "%2B")),
            None => "/v1/numbers?limit=2".into(),
        };
        let (st, page, _) = d.api("GET", &path, t, None);
        assert_eq!(st, 200, "{page}");
        let rows = page["data"].as_array().unwrap();
        assert!(rows.len() <= 2);
        seen.extend(
            rows.iter()
                .map(|r| r["number"].as_str().unwrap().to_string()),
        );
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages in order, no repeats");
    for n in ["*", "+1555000*", "+15551112222", "+15551113333"] {
        assert!(seen.iter().any(|s| s == n), "{n} in {seen:?}");
    }
    for bad in ["limit=0", "limit=501", "limit=x", "bogus=1"] {
        let (st, body, _) = d.api("GET", &format!("/v1/numbers?{bad}"), t, None);
        assert_eq!(st, 422, "{bad}: {body}");
        assert!(!error_field(&body).is_empty(), "{bad}: {body}");
    }

    // Blocked numbers: normalised, idempotent, and bad input named.
    let (st, b1, _) = d.api(
        "POST",
        "/v1/blocked-numbers",
        t,
        Some(&json!({"caller": "+1 (900) 555-0100"})),
    );
    assert_eq!(st, 201, "{b1}");
    assert_eq!(b1["caller"], "+19005550100");
    let (st, again, _) = d.api(
        "POST",
        "/v1/blocked-numbers",
        t,
        Some(&json!({"caller": "+19005550100"})),
    );
    assert_eq!((st, &again["id"]), (200, &b1["id"]));
    let (st, body, _) = d.api(
        "POST",
        "/v1/blocked-numbers",
        t,
        Some(&json!({"caller": "call me"})),
    );
    assert_eq!((st, error_field(&body)), (422, "caller"));
    let (st, body, _) = d.api(
        "POST",
        "/v1/blocked-numbers",
        t,
        Some(&json!({"caller": "+1900*", "number": "+15559990000"})),
    );
    assert_eq!((st, error_field(&body)), (422, "number"), "not our number");
    let id = b1["id"].as_str().unwrap();
    let (st, _, _) = d.api("GET", &format!("/v1/blocked-numbers/{id}"), t, None);
    assert_eq!(st, 200);
    let (st, _, _) = d.api("DELETE", &format!("/v1/blocked-numbers/{id}"), t, None);
    assert_eq!(st, 204);
    let (st, _, _) = d.api("DELETE", &format!("/v1/blocked-numbers/{id}"), t, None);
    assert_eq!(st, 404);

    // SIP users: the password is never returned; too short is named.
    let (st, body, _) = d.api(
        "PUT",
        "/v1/sip-users/bob",
        t,
        Some(&json!({"password": "short"})),
    );
    assert_eq!((st, error_field(&body)), (422, "password"));
    let (st, body, _) = d.api(
        "PUT",
        "/v1/sip-users/bob",
        t,
        Some(&json!({"password": "bob-secret-1"})),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["realm"], "test");
    assert!(body.get("password").is_none());
    let (st, _, _) = d.api("DELETE", "/v1/sip-users/bob", t, None);
    assert_eq!(st, 204);

    // Trunks (admin): CIDRs, transport and address checked.
    for (input, field) in [
        (json!({"source_cidrs": ["10.0.0.0/33"]}), "source_cidrs[0]"),
        (json!({"transport": "sctp"}), "transport"),
        (json!({"outbound_address": "a b:70"}), "outbound_address"),
        (json!({"transfer": "magic"}), "transfer"),
    ] {
        let (st, body, _) = d.api("PUT", "/v1/trunks/carrier", admin, Some(&input));
        assert_eq!((st, error_field(&body)), (422, field), "{input} → {body}");
    }
    let (st, body, _) = d.api(
        "PUT",
        "/v1/trunks/carrier",
        admin,
        Some(&json!({"source_cidrs": ["198.51.100.0/24"], "outbound_address": "sip.carrier.example:5060", "username": "u", "password": "p"})),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["has_password"], true);
    assert!(body.get("password").is_none());
    // A trunk that numbers use cannot be deleted.
    let (st, body, _) = d.api("DELETE", "/v1/trunks/local", admin, None);
    assert_eq!(st, 409, "{body}");
    let (st, _, _) = d.api("DELETE", "/v1/trunks/carrier", admin, None);
    assert_eq!(st, 204);

    // Unknown routes are JSON 404s; the OpenAPI document is served.
    let (st, body, _) = d.api("GET", "/v1/nothing-here", t, None);
    assert_eq!((st, error_code(&body)), (404, "not_found"));
    let (st, doc, _) = d.api("GET", "/v1/openapi.json", None, None);
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
}

/// Polls until `f` holds (routing changes apply in the background).
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not happen within {within:?}");
}

#[test]
fn blocks_and_routes_changed_over_rest_apply_to_the_next_call_without_restart() {
    let d = Daemon::start("");
    let t = d.token(Some("acct"), false);
    let (st, block, _) = d.api(
        "POST",
        "/v1/blocked-numbers",
        Some(&t),
        Some(&json!({"caller": "+1415555*"})),
    );
    assert_eq!(st, 201, "{block}");
    // Caller is +14155550100: declined with 603 before any media.
    let mut n = 0;
    eventually(Duration::from_secs(3), "the block applies", || {
        n += 1;
        let mut c = Caller::new(d.sip_addr(), &format!("blocked-{n}@test"));
        c.final_status(40_000 + n) == 603
    });
    assert!(d.metric("gateway_sip_rejections_total{reason=\"blocked\"}") >= 1.0);

    let id = block["id"].as_str().unwrap();
    let (st, _, _) = d.api(
        "DELETE",
        &format!("/v1/blocked-numbers/{id}"),
        Some(&t),
        None,
    );
    assert_eq!(st, 204);
    let mut m = 0;
    eventually(Duration::from_secs(3), "the unblock applies", || {
        m += 1;
        let mut c = Caller::new(d.sip_addr(), &format!("unblocked-{m}@test"));
        c.final_status(40_100 + m) == 200
    });

    // A number released over REST refuses its calls (404) at once.
    let (st, _, _) = d.api("DELETE", "/v1/numbers/+1555000*", Some(&t), None);
    assert_eq!(st, 204);
    let (st, _, _) = d.api("DELETE", "/v1/numbers/*", Some(&t), None);
    assert_eq!(st, 204);
    let mut k = 0;
    eventually(
        Duration::from_secs(3),
        "the released number refuses",
        || {
            k += 1;
            let mut c = Caller::new(d.sip_addr(), &format!("released-{k}@test"));
            c.final_status(40_200 + k) == 404
        },
    );
}

#[test]
fn calls_are_listed_filtered_and_hung_up_over_rest() {
    let d = Daemon::start("");
    let t = d.token(Some("acct"), false);
    let t = Some(t.as_str());
    // Two finished calls and one live one.
    for i in 0..2 {
        let mut c = Caller::new(d.sip_addr(), &format!("done-{i}@test"));
        c.invite(41_000 + i * 2);
        c.bye();
    }
    let mut live = Caller::new(d.sip_addr(), "live@test").dialing("+15550009999");
    live.invite(41_010);

    let mut listed = Value::Null;
    eventually(Duration::from_secs(5), "three calls listed", || {
        let (st, page, _) = d.api("GET", "/v1/calls?limit=10", t, None);
        listed = page;
        st == 200 && listed["data"].as_array().is_some_and(|a| a.len() == 3)
    });
    let calls = listed["data"].as_array().unwrap();
    assert_eq!(calls[0]["to"], "+15550009999", "newest first: {listed}");
    assert_eq!(calls[0]["status"], "in-progress");
    assert_eq!(calls[1]["status"], "completed");
    assert_eq!(calls[1]["direction"], "inbound");

    let (_, active, _) = d.api("GET", "/v1/calls?active=true", t, None);
    assert_eq!(active["data"].as_array().unwrap().len(), 1, "{active}");
    let (_, to, _) = d.api("GET", "/v1/calls?to=%2B15550009999", t, None);
    assert_eq!(to["data"].as_array().unwrap().len(), 1, "{to}");
    let (_, page1, _) = d.api("GET", "/v1/calls?limit=2", t, None);
    let cursor = page1["next_cursor"].as_str().expect("a second page");
    let (_, page2, _) = d.api(
        "GET",
        &format!("/v1/calls?limit=2&cursor={cursor}"),
        t,
        None,
    );
    assert_eq!(page2["data"].as_array().unwrap().len(), 1, "{page2}");
    assert!(page2["next_cursor"].is_null());
    for (bad, field) in [
        ("direction=sideways", "direction"),
        ("active=maybe", "active"),
        ("from=abc", "from"),
    ] {
        let (st, body, _) = d.api("GET", &format!("/v1/calls?{bad}"), t, None);
        assert_eq!((st, error_field(&body)), (422, field), "{bad}: {body}");
    }

    // Hang up the live call: the caller gets a BYE, the record closes.
    let id = calls[0]["id"].as_str().unwrap().to_string();
    let (st, body, _) = d.api("POST", &format!("/v1/calls/{id}/hangup"), t, None);
    assert_eq!(
        (st, body["status"].as_str()),
        (202, Some("hanging-up")),
        "{body}"
    );
    live.expect_bye();
    eventually(Duration::from_secs(5), "the record closes", || {
        let (_, c, _) = d.api("GET", &format!("/v1/calls/{id}"), t, None);
        c["status"] == "completed" && c["end_cause"] == "api_hangup"
    });
    let (st, body, _) = d.api("POST", &format!("/v1/calls/{id}/hangup"), t, None);
    assert_eq!(st, 409, "already ended: {body}");
    let (st, _, _) = d.api("POST", "/v1/calls/CA0000/hangup", t, None);
    assert_eq!(st, 404);
    let other = d.token(Some("someone-else"), false);
    let (st, _, _) = d.api("GET", &format!("/v1/calls/{id}"), Some(&other), None);
    assert_eq!(st, 404, "another account's call");
}

#[test]
fn rate_limits_answer_429_with_retry_after_and_metrics_pass_promtool() {
    let d = Daemon::start_opts(Opts {
        api_extra: "account_rate = 2.0\naccount_burst = 5.0",
        ..Opts::default()
    });
    let t = d.token(Some("acct"), false);
    let mut limited = None;
    for i in 0..20 {
        let (st, body, retry) = d.api("GET", "/v1/numbers", Some(&t), None);
        if st == 429 {
            limited = Some((i, body, retry));
            break;
        }
        assert_eq!(st, 200);
    }
    let (i, body, retry) = limited.expect("the account is limited");
    assert!(i >= 5, "the burst of 5 passes first ({i})");
    assert_eq!(error_code(&body), "rate_limited");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // Another account is not limited by this one.
    let other = d.token(Some("other"), false);
    assert_eq!(d.api("GET", "/v1/calls", Some(&other), None).0, 200);

    let text = d.metrics();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or(&text).to_string();
    assert!(body.contains("gateway_api_rejections_total{reason=\"rate_limited\"}"));
    assert!(body.contains(
        "gateway_api_requests_total{method=\"GET\",route=\"/v1/numbers\",status=\"200\"}"
    ));
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt package prometheus)");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_accounts_own_trunk_is_not_usable_by_other_accounts() {
    let d = Daemon::start(
        r#"
[[accounts]]
id = "other"
number_ranges = ["+49*"]
"#,
    );
    let admin = d.token(None, true);
    let (st, body, _) = d.api(
        "PUT",
        "/v1/trunks/private",
        Some(&admin),
        Some(&json!({"outbound_address": "127.0.0.1:5999", "account": "other"})),
    );
    assert_eq!(
        (st, body["account"].as_str()),
        (200, Some("other")),
        "{body}"
    );
    let (st, body, _) = d.api(
        "PUT",
        "/v1/trunks/nobody",
        Some(&admin),
        Some(&json!({"account": "ghost"})),
    );
    assert_eq!((st, error_field(&body)), (422, "account"), "{body}");

    // Its account may route numbers through it; another may not.
    let other = d.token(Some("other"), false);
    let (st, body, _) = d.api(
        "PUT",
        "/v1/numbers/+4930123",
        Some(&other),
        Some(&json!({"route": "echo", "trunk": "private"})),
    );
    assert_eq!(st, 200, "{body}");
    let t = d.token(Some("acct"), false);
    let (st, body, _) = d.api(
        "PUT",
        "/v1/numbers/+15550007777",
        Some(&t),
        Some(&json!({"route": "echo", "trunk": "private"})),
    );
    assert_eq!((st, error_field(&body)), (422, "trunk"), "{body}");
    // Nor place calls or send SMS through it.
    let (st, body, _) = d.api(
        "POST",
        "/v1/calls",
        Some(&t),
        Some(&json!({"from": "+15550001234", "to": "+4930999", "trunk": "private", "stream": {"url": "ws://127.0.0.1:9/x"}})),
    );
    assert_eq!((st, error_field(&body)), (422, "trunk"), "{body}");
    let (st, body, _) = d.api(
        "POST",
        "/v1/messages",
        Some(&t),
        Some(&json!({"from": "+15550001234", "to": "+4930999", "trunk": "private", "body": "x"})),
    );
    assert_eq!((st, error_field(&body)), (422, "trunk"), "{body}");
}

#[test]
fn accounts_claim_numbers_only_inside_granted_ranges_and_parallel_puts_move_nothing() {
    let d = Daemon::start(
        r#"
[[accounts]]
id = "tenant-a"
[[accounts]]
id = "tenant-b"
"#,
    );
    let admin = d.token(None, true);
    let a = d.token(Some("tenant-a"), false);
    let b = d.token(Some("tenant-b"), false);
    let echo = json!({"route": "echo"});

    // No grant yet: the account claims nothing, not even a wide prefix
    // that would take other tenants' unmatched calls.
    for n in ["+15550400000", "+1*", "+1555*"] {
        let (st, body, _) = d.api("PUT", &format!("/v1/numbers/{n}"), Some(&a), Some(&echo));
        assert_eq!((st, error_code(&body)), (403, "forbidden"), "{n}: {body}");
    }
    // An admin grants ranges (canonicalised), then the account claims
    // inside them, and only there.
    let (st, body, _) = d.api(
        "PUT",
        "/v1/accounts/tenant-a",
        Some(&admin),
        Some(&json!({"name": "A", "number_ranges": ["+1 (555) 04*", "+4930123"]})),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["number_ranges"], json!(["+155504*", "+4930123"]));
    let (st, body, _) = d.api(
        "PUT",
        "/v1/accounts/tenant-a",
        Some(&admin),
        Some(&json!({"name": "A", "number_ranges": ["+1555x"]})),
    );
    assert_eq!(
        (st, error_field(&body)),
        (422, "number_ranges[0]"),
        "{body}"
    );
    // A rename keeps the grant.
    let (st, body, _) = d.api(
        "PUT",
        "/v1/accounts/tenant-a",
        Some(&admin),
        Some(&json!({"name": "Tenant A"})),
    );
    assert_eq!(
        body["number_ranges"],
        json!(["+155504*", "+4930123"]),
        "{st} {body}"
    );
    for (n, want) in [
        ("+15550400001", 200),
        ("+1555041*", 200),
        ("+4930123", 200),
        ("+155505*", 403),
        ("+1555*", 403),
        ("+49301234", 403),
    ] {
        let (st, body, _) = d.api("PUT", &format!("/v1/numbers/{n}"), Some(&a), Some(&echo));
        assert_eq!(st, want, "{n}: {body}");
    }
    // A token with the admin claim assigns outside any grant.
    let admin_b = mint(JWT_SECRET, &{
        let mut c = claims(Some("tenant-b"), 3600);
        c.admin = true;
        c
    });
    let (st, body, _) = d.api(
        "PUT",
        "/v1/numbers/+15559990000",
        Some(&admin_b),
        Some(&echo),
    );
    assert_eq!(st, 200, "{body}");

    // Both accounts granted the same range race for one number and one
    // SIP user: whoever writes first owns them, every other write from
    // the other account is refused, and no row ever changes hands.
    for t in ["tenant-a", "tenant-b"] {
        let (st, body, _) = d.api(
            "PUT",
            &format!("/v1/accounts/{t}"),
            Some(&admin),
            Some(&json!({"name": t, "number_ranges": ["+1666*"]})),
        );
        assert_eq!(st, 200, "{body}");
    }
    let results: Vec<(usize, u16, u16)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let (d, token) = (&d, if i % 2 == 0 { &a } else { &b });
                scope.spawn(move || {
                    let route = json!({"route": "echo", "max_calls": i + 1});
                    let n = d
                        .api("PUT", "/v1/numbers/+16660000001", Some(token), Some(&route))
                        .0;
                    let pw = json!({"password": format!("secret-{i:04}")});
                    let u = d
                        .api("PUT", "/v1/sip-users/contested", Some(token), Some(&pw))
                        .0;
                    (i % 2, n, u)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let owner_of = |path: &str| {
        let got_a = d.api("GET", path, Some(&a), None).0 == 200;
        let got_b = d.api("GET", path, Some(&b), None).0 == 200;
        assert!(got_a ^ got_b, "{path}: exactly one owner");
        usize::from(got_b)
    };
    let number_owner = owner_of("/v1/numbers/+16660000001");
    let user_owner = owner_of("/v1/sip-users/contested");
    for (who, n, u) in results {
        assert_eq!(n, if who == number_owner { 200 } else { 409 }, "number");
        assert_eq!(u, if who == user_owner { 200 } else { 409 }, "user");
    }
}

/// One raw HTTP/1.1 exchange with the daemon's API port: the status and
/// the body.
fn raw_http(d: &Daemon, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.metrics_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn the_rest_edge_sheds_load_times_out_slow_requests_and_trusts_only_its_proxies() {
    let d = Daemon::start_opts(Opts {
        api_extra: r#"request_timeout_ms = 800
max_concurrent_requests = 2
ip_rate = 0.5
ip_burst = 3.0
trusted_proxies = ["127.0.0.0/8"]
metrics_token = "scrape-secret""#,
        ..Opts::default()
    });
    let t = d.token(Some("acct"), false);
    // Two requests whose bodies never finish hold both slots.
    use std::io::Write;
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", d.metrics_port)).unwrap();
            write!(
                s,
                "PUT /v1/numbers/+1555000{i}000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nX-Forwarded-For: 198.51.100.{i}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"route\""
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A third is shed at once, not queued.
    let asked = Instant::now();
    let (st, body) = raw_http(
        &d,
        &format!(
            "GET /v1/numbers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nX-Forwarded-For: 198.51.100.50\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("\"overloaded\""), "{body}");
    assert!(
        asked.elapsed() < Duration::from_millis(700),
        "shed, not queued"
    );
    // The held ones are answered at their deadline.
    for mut s in held {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.contains("\"timeout\""), "{out}");
    }

    // Behind the trusted proxy (loopback here), each forwarded client has
    // its own bucket: one spends its burst of 3, another is untouched.
    let get = |client: &str| {
        raw_http(
            &d,
            &format!("GET /v1/numbers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"),
        )
        .0
    };
    let spent: Vec<u16> = (0..4).map(|_| get("198.51.100.7")).collect();
    assert_eq!(spent, [200, 200, 200, 429]);
    assert_eq!(get("198.51.100.8"), 200);
    // A forged hop left of the real one does not help the client.
    assert_eq!(get("10.9.9.9, 198.51.100.7"), 429);

    // /metrics wants its token; with it, the refusals above are counted.
    let (st, _) = raw_http(
        &d,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 401);
    let (st, _) = raw_http(
        &d,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 401);
    let (st, text) = raw_http(
        &d,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer scrape-secret\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 200);
    let count = |reason: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "gateway_api_rejections_total{{reason=\"{reason}\"}} "
                ))
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(count("overloaded"), 1.0, "{text}");
    assert_eq!(count("timeout"), 2.0);
    assert_eq!(count("rate_limited"), 2.0);
}

/// Whether an OPTIONS from `from` is answered at all.
fn answered_from(d: &Daemon, from: &str, n: u32) -> bool {
    let sock = std::net::UdpSocket::bind((from, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    common::options_ping(&sock, d.sip_addr(), n).is_some()
}

#[test]
fn the_operators_deny_set_drops_a_network_before_the_parse_until_lifted_or_lapsed() {
    let d = Daemon::start("");
    let admin = d.token(None, true);
    let tenant = d.token(Some("acct"), false);
    let mut n = 0;
    let mut ping = |from: &str| {
        n += 1;
        answered_from(&d, from, n)
    };
    assert!(ping("127.0.0.2"), "a trunk address is answered first");

    // Admin only; bad input names its field.
    let deny = json!({"network": "127.0.0.2", "reason": "scanner"});
    let (st, body, _) = d.api("POST", "/v1/denied-sources", Some(&tenant), Some(&deny));
    assert_eq!((st, error_code(&body)), (403, "forbidden"), "{body}");
    for (bad, field) in [
        (json!({"network": "127.0.0.0/4"}), "network"),
        (json!({"network": "gateway.example"}), "network"),
        (json!({"network": "::/0"}), "network"),
        (
            json!({"network": "127.0.0.9", "reason": "a\u{7}b"}),
            "reason",
        ),
        (
            json!({"network": "127.0.0.9", "reason": "x".repeat(201)}),
            "reason",
        ),
        (
            json!({"network": "127.0.0.9", "expires_in_secs": 0}),
            "expires_in_secs",
        ),
    ] {
        let (st, body, _) = d.api("POST", "/v1/denied-sources", Some(&admin), Some(&bad));
        assert_eq!((st, error_field(&body)), (422, field), "{bad} -> {body}");
    }

    let (st, body, _) = d.api("POST", "/v1/denied-sources", Some(&admin), Some(&deny));
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["network"], "127.0.0.2/32", "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    // The same network again, however written, is a conflict naming the entry.
    let (st, body, _) = d.api(
        "POST",
        "/v1/denied-sources",
        Some(&admin),
        Some(&json!({"network": "::ffff:127.0.0.2"})),
    );
    assert_eq!((st, error_field(&body)), (409, "network"), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&id),
        "{body}"
    );

    // Dropped unparsed, even from a trunk's network; its neighbours are not.
    eventually(Duration::from_secs(5), "the entry applies", || {
        !ping("127.0.0.2")
    });
    assert!(ping("127.0.0.3"));
    assert!(d.metric("gateway_sip_rejections_total{reason=\"denied\"}") >= 1.0);

    let (st, body, _) = d.api("GET", "/v1/denied-sources", Some(&admin), None);
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"][0]["id"], id.as_str(), "{body}");
    assert_eq!(body["data"][0]["reason"], "scanner", "{body}");
    let (st, _, _) = d.api(
        "GET",
        &format!("/v1/denied-sources/{id}"),
        Some(&tenant),
        None,
    );
    assert_eq!(st, 403);
    let (st, _, _) = d.api(
        "DELETE",
        &format!("/v1/denied-sources/{id}"),
        Some(&admin),
        None,
    );
    assert_eq!(st, 204);
    let (st, _, _) = d.api(
        "GET",
        &format!("/v1/denied-sources/{id}"),
        Some(&admin),
        None,
    );
    assert_eq!(st, 404);
    eventually(Duration::from_secs(5), "the entry is lifted", || {
        ping("127.0.0.2")
    });

    // An entry that expires lapses by itself, on the node's clock.
    let (st, body, _) = d.api(
        "POST",
        "/v1/denied-sources",
        Some(&admin),
        Some(&json!({"network": "127.0.0.4/32", "expires_in_secs": 3})),
    );
    assert_eq!(st, 201, "{body}");
    eventually(Duration::from_secs(5), "the entry applies", || {
        !ping("127.0.0.4")
    });
    eventually(Duration::from_secs(5), "the entry lapses", || {
        ping("127.0.0.4")
    });
    let (_, body, _) = d.api("GET", "/v1/denied-sources", Some(&admin), None);
    assert_eq!(
        body["data"],
        json!([]),
        "a lapsed entry is not listed: {body}"
    );
}

#[test]
fn tls_trunks_take_their_verification_settings_and_refuse_bad_ones_by_field() {
    let d = Daemon::start("");
    let admin = d.token(None, true);
    let put = |body: Value| d.api("PUT", "/v1/trunks/secure", Some(&admin), Some(&body));
    let tls = json!({"server_name": "sip.carrier.example", "ca_file": "/etc/gw/ca.pem"});
    for (body, field) in [
        (json!({"transport": "udp", "tls": tls}), "tls"),
        (
            json!({"transport": "tls", "tls": {"server_name": "not a name!"}}),
            "tls.server_name",
        ),
        (
            json!({"transport": "tls", "tls": {"ca_file": "ca.pem"}}),
            "tls.ca_file",
        ),
        (
            json!({"transport": "tls", "tls": {"client_cert_file": "/etc/gw/c.pem"}}),
            "tls.client_key_file",
        ),
    ] {
        let (st, out, _) = put(body.clone());
        assert_eq!((st, error_field(&out)), (422, field), "{body} -> {out}");
    }
    let (st, out, _) = put(json!({"transport": "tls", "tls": {"bogus": 1}}));
    assert_eq!(st, 422, "unknown tls fields are refused: {out}");
    let (st, out, _) = put(json!({
        "transport": "tls",
        "outbound_address": "192.0.2.50:5061",
        "tls": {"server_name": "sip.carrier.example", "ca_file": "/etc/gw/ca.pem",
                "client_cert_file": "/etc/gw/c.pem", "client_key_file": "/etc/gw/c.key"},
    }));
    assert_eq!(st, 200, "{out}");
    let (_, got, _) = d.api("GET", "/v1/trunks/secure", Some(&admin), None);
    assert_eq!(got["tls"]["server_name"], "sip.carrier.example", "{got}");
    assert_eq!(got["tls"]["client_key_file"], "/etc/gw/c.key", "{got}");
}

#[test]
fn media_security_is_set_per_trunk_and_number_and_checked_by_field() {
    let d = Daemon::start("");
    let admin = d.token(None, true);
    let put = |body: Value| d.api("PUT", "/v1/trunks/carrier", Some(&admin), Some(&body));
    // SRTP required where keys may not cross the signalling: refused.
    let (st, out, _) = put(json!({"transport": "udp", "media_security": "srtp"}));
    assert_eq!((st, error_field(&out)), (422, "media_security"), "{out}");
    let (st, out, _) = put(json!({"transport": "udp", "media_security": "srtp-maybe"}));
    assert_eq!(st, 422, "an unknown policy is refused: {out}");
    let (st, out, _) = put(json!({
        "transport": "udp", "media_security": "srtp", "srtp_cleartext_keying": true
    }));
    assert_eq!(st, 200, "{out}");
    let (_, got, _) = d.api("GET", "/v1/trunks/carrier", Some(&admin), None);
    assert_eq!(
        (&got["media_security"], &got["srtp_cleartext_keying"]),
        (&json!("srtp"), &json!(true)),
        "{got}"
    );
    // Absent: optional, the default.
    let (_, got, _) = put(json!({"transport": "tls"}));
    assert_eq!(got["media_security"], "srtp-optional", "{got}");
    let token = d.token(Some("acct"), false);
    let (st, got, _) = d.api(
        "PUT",
        "/v1/numbers/+15559990001",
        Some(&token),
        Some(&json!({"route": "echo", "media_security": "rtp"})),
    );
    assert_eq!((st, &got["media_security"]), (200, &json!("rtp")), "{got}");
    let (_, doc, _) = d.api("GET", "/v1/openapi.json", None, None);
    assert!(
        doc["components"]["schemas"]["MediaSecurity"].is_object(),
        "the policy is in the OpenAPI document"
    );
}
