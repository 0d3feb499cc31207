//! No input stops the records: hostile caller ids reach a PostgreSQL-backed
//! daemon (which refuses a NUL in TEXT) and every call, theirs and every
//! later one, has its record.

mod common;

use common::{Caller, Daemon, pg_schema_url};
use std::time::{Duration, Instant};

#[test]
fn nul_in_caller_ids_never_stops_the_records_on_postgres() {
    let Some(url) = pg_schema_url() else {
        return;
    };
    let d = Daemon::start_with("", Some(&url));
    // A `%00` in the From user part (decoded to a NUL) and raw control
    // characters in a quoted display name (legal quoted-pairs, RFC 4475
    // §3.1.1.2): both reach the call record.
    let hostile = [
        ("nul-user@test", "<sip:+1555%000001@127.0.0.1>"),
        (
            "nul-display@test",
            "\"evil \\\u{0} \\\u{7}\" <sip:+15550000002@127.0.0.1>",
        ),
    ];
    for (n, (cid, from)) in hostile.iter().enumerate() {
        let mut c = Caller::new(d.sip_addr(), cid);
        c.from = Some(from.to_string());
        assert_eq!(c.final_status(44_000 + n as u16), 200, "{cid}");
    }
    // A NUL in the Call-ID is no word (RFC 3261 §25.1): 400 at parse.
    let mut bad = Caller::new(d.sip_addr(), "bad\u{0}id@test");
    assert_eq!(bad.final_status(44_010), 400);
    let later: Vec<String> = (0..5).map(|n| format!("later-{n}@test")).collect();
    for (n, cid) in later.iter().enumerate() {
        let mut c = Caller::new(d.sip_addr(), cid);
        assert_eq!(c.final_status(44_020 + n as u16), 200, "{cid}");
    }
    let token = d.token(Some("acct"), false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let calls = loop {
        let (st, body, _) = d.api("GET", "/v1/calls?limit=100", Some(&token), None);
        assert_eq!(st, 200, "{body}");
        let calls = body["data"].as_array().cloned().unwrap_or_default();
        let ended = calls.iter().filter(|c| !c["ended_at"].is_null()).count();
        if ended >= hostile.len() + later.len() {
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "{ended} ended records of {}: {body}\n{}",
            hostile.len() + later.len(),
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(calls.len(), hostile.len() + later.len(), "{calls:?}");
    let from: Vec<&str> = calls.iter().filter_map(|c| c["from"].as_str()).collect();
    assert!(from.contains(&"+1555\\x000001"), "stored escaped: {from:?}");
    assert_eq!(
        d.metric("gateway_cdr_dead_letters_total"),
        0.0,
        "escaped text is stored, not dead-lettered"
    );
    assert_eq!(d.metric("gateway_store_queue_depth"), 0.0);
    assert!(!d.logs().contains("CDR write failed"), "{}", d.logs());
}
