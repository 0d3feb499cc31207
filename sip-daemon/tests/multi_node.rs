//! Two daemons on one PostgreSQL database: a change made through one
//! node's REST API applies on the other at once (LISTEN/NOTIFY), well
//! before its periodic reload (10 s).

mod common;

use common::{Caller, Daemon, pg_schema_url};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_block_made_on_one_node_applies_on_the_other_at_once() {
    let Some(url) = pg_schema_url() else {
        return;
    };
    let a = Daemon::start_with("", Some(&url));
    let b = Daemon::start_with("", Some(&url));
    let token = a.token(Some("acct"), false);
    // Both answer the caller (+14155550100) before the block.
    for (d, n) in [(&a, 0u16), (&b, 1)] {
        let mut c = Caller::new(d.sip_addr(), &format!("before-{n}@test"));
        assert_eq!(c.final_status(43_000 + n), 200);
    }
    let (st, body, _) = a.api(
        "POST",
        "/v1/blocked-numbers",
        Some(&token),
        Some(&json!({"caller": "+14155550100"})),
    );
    assert_eq!(st, 201, "{body}");
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let mut c = Caller::new(b.sip_addr(), &format!("after-{n}@test"));
        if c.final_status(43_100 + n) == 603 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "node B still answers a caller blocked on node A after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the other node sees the block over its own API.
    let (st, list, _) = b.api("GET", "/v1/blocked-numbers", Some(&token), None);
    assert_eq!(st, 200);
    assert_eq!(list["data"][0]["caller"], "+14155550100");
}

#[test]
fn an_idempotency_key_holds_across_nodes() {
    let Some(url) = pg_schema_url() else {
        return;
    };
    let extra = r#"
[[trunks]]
name = "nowhere"
source_cidrs = ["127.0.0.9/32"]
outbound_address = "127.0.0.1:9"

[[numbers]]
pattern = "+15558880000"
account = "acct"
route = "echo"
trunk = "nowhere"
"#;
    let a = Daemon::start_with(extra, Some(&url));
    let b = Daemon::start_with(extra, Some(&url));
    let token = a.token(Some("acct"), false);
    let post = |d: &Daemon| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(&format!("http://127.0.0.1:{}/v1/calls", d.metrics_port))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Idempotency-Key", "retry-after-timeout")
            .send_json(json!({"from": "+15558880000", "to": "+15557654321", "stream": {"url": "ws://127.0.0.1:9/x"}}))
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_json::<serde_json::Value>().unwrap(),
        )
    };
    let (st, first) = post(&a);
    assert_eq!(st, 201, "{first}");
    // The client's retry reaches the other node: the same call, no second.
    let (st, again) = post(&b);
    assert_eq!((st, &again["id"]), (201, &first["id"]), "{again}");
}
