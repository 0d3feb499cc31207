//! Two daemons on one PostgreSQL database: a change made through one
//! node's REST API applies on the other at once (LISTEN/NOTIFY), well
//! before its periodic reload (10 s).

mod common;

use common::{Caller, Daemon};
use serde_json::json;
use std::time::{Duration, Instant};

/// A fresh schema in the test server, as a database URL selecting it.
fn pg_schema_url() -> Option<String> {
    let base = match std::env::var("TEST_DATABASE_URL") {
        Ok(v) if !v.trim().is_empty() => v,
        _ if std::env::var("GATEWAY_TEST_SKIP_PG").as_deref() == Ok("1") => {
            eprintln!(
                "SKIPPED (PostgreSQL): TEST_DATABASE_URL is not set and GATEWAY_TEST_SKIP_PG=1"
            );
            return None;
        }
        _ => panic!(
            "TEST_DATABASE_URL is not set: start a server with `eval \"$(scripts/pg-throwaway.sh start /tmp/gw-pg)\"` or set GATEWAY_TEST_SKIP_PG=1"
        ),
    };
    let schema = format!("mn_{}_{}", std::process::id(), common::free_port());
    let out = std::process::Command::new("psql")
        .arg(&base)
        .args(["-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .output()
        .expect("psql (apt package postgresql)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

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
