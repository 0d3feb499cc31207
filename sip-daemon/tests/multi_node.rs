//! Two daemons on one PostgreSQL database: a change made through one
//! node's REST API applies on the other at once (LISTEN/NOTIFY), well
//! before its periodic reload (10 s).

mod common;

use common::{Caller, Daemon, challenge, eventually, pg_schema_url, register};
use serde_json::json;
use sip_daemon::sip::digest::Credentials;
use std::net::UdpSocket;
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

fn node_id(d: &Daemon) -> String {
    format!("node-{}", d.sip_addr().port())
}

/// Two nodes on one PostgreSQL: each lists both with health and load; a
/// hangup asked of the node that does not hold the call is carried out by
/// the one that does, with the same answer; a drain asked of one node for
/// the other turns the other's readiness to 503.
#[test]
fn live_call_actions_and_drains_reach_the_node_that_holds_the_call() {
    let Some(url) = pg_schema_url() else {
        return;
    };
    // A long lease: nothing here waits for a node to be lost.
    let cluster = "[cluster]\nheartbeat_secs = 1\nlease_secs = 30\n";
    let a = Daemon::start_with(cluster, Some(&url));
    let b = Daemon::start_with(cluster, Some(&url));
    let admin = b.token(None, true);
    let user = b.token(Some("acct"), false);

    let nodes = eventually(Duration::from_secs(5), "both nodes listed healthy", || {
        let (st, body, _) = b.api("GET", "/v1/nodes", Some(&admin), None);
        assert_eq!(st, 200, "{body}");
        let data = body["data"].as_array()?.clone();
        (data.len() == 2 && data.iter().all(|n| n["healthy"] == true)).then_some(data)
    });
    let this: Vec<_> = nodes.iter().filter(|n| n["this_node"] == true).collect();
    assert_eq!(this.len(), 1);
    assert_eq!(this[0]["id"], node_id(&b).as_str());
    let (st, _, _) = b.api("GET", "/v1/nodes", Some(&user), None);
    assert_eq!(st, 403, "nodes are for admins");

    // An echo call on node A.
    let mut caller = Caller::new(a.sip_addr(), "cluster-hangup@test").dialing("+15550004444");
    caller.invite(43_300);
    let call = eventually(Duration::from_secs(5), "the call's record", || {
        let (_, body, _) = b.api("GET", "/v1/calls", Some(&user), None);
        body["data"]
            .as_array()?
            .iter()
            .find(|c| c["sip_call_id"] == "cluster-hangup@test" && c["answered_at"].is_i64())
            .cloned()
    });
    assert_eq!(call["node"], node_id(&a).as_str());
    let busy = eventually(Duration::from_secs(5), "node A's load", || {
        let (_, body, _) = b.api("GET", "/v1/nodes", Some(&admin), None);
        body["data"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == node_id(&a).as_str() && n["calls_active"] == 1)
            .cloned()
    });
    assert_eq!(busy["draining"], false);

    // Hung up through node B: node A sends the BYE.
    let id = call["id"].as_str().unwrap();
    let (st, body, _) = b.api("POST", &format!("/v1/calls/{id}/hangup"), Some(&user), None);
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["status"], "hanging-up");
    caller.expect_bye();
    // Another account's token learns nothing about the call, on either node.
    let other = b.token(Some("other"), false);
    for d in [&a, &b] {
        let (st, _, _) = d.api(
            "POST",
            &format!("/v1/calls/{id}/hangup"),
            Some(&other),
            None,
        );
        assert_eq!(st, 404);
    }

    // Node A drained through node B.
    assert_eq!(a.http_get("/readyz").0, 200);
    let (st, body, _) = b.api(
        "POST",
        &format!("/v1/nodes/{}/drain", node_id(&a)),
        Some(&admin),
        None,
    );
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["status"], "drain-requested");
    eventually(Duration::from_secs(5), "node A draining", || {
        (a.http_get("/readyz").0 == 503).then_some(())
    });
    assert_eq!(b.http_get("/readyz").0, 200, "node B still takes calls");
    let mut late = Caller::new(a.sip_addr(), "cluster-late@test");
    assert_eq!(late.final_status(43_302), 503);
    eventually(Duration::from_secs(5), "node A listed draining", || {
        let (_, body, _) = b.api("GET", "/v1/nodes", Some(&admin), None);
        body["data"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == node_id(&a).as_str() && n["draining"] == true)
            .map(|_| ())
    });
    let (st, _, _) = b.api("POST", "/v1/nodes/nobody/drain", Some(&admin), None);
    assert_eq!(st, 404);
}

/// A node SIGKILLed with a call open: a peer sees its heartbeat lapse and
/// closes the call's record as `node_lost`, and says so in its metrics;
/// its own calls are untouched.
#[test]
fn a_dead_nodes_open_calls_are_closed_by_a_peer() {
    let Some(url) = pg_schema_url() else {
        return;
    };
    let cluster = "[cluster]\nheartbeat_secs = 1\nlease_secs = 5\n";
    let mut a = Daemon::start_with(cluster, Some(&url));
    let b = Daemon::start_with(cluster, Some(&url));
    let user = b.token(Some("acct"), false);
    let admin = b.token(None, true);
    let mut on_a = Caller::new(a.sip_addr(), "cluster-lost@test").dialing("+15550005555");
    on_a.invite(43_400);
    let mut on_b = Caller::new(b.sip_addr(), "cluster-kept@test").dialing("+15550005556");
    on_b.invite(43_402);
    let record = |sip_call_id: &str| {
        let (_, body, _) = b.api("GET", "/v1/calls", Some(&user), None);
        body["data"]
            .as_array()
            .and_then(|d| d.iter().find(|c| c["sip_call_id"] == sip_call_id).cloned())
    };
    eventually(Duration::from_secs(5), "both calls recorded", || {
        let a = record("cluster-lost@test")?;
        let b = record("cluster-kept@test")?;
        (a["answered_at"].is_i64() && b["answered_at"].is_i64()).then_some(())
    });
    let killed_at = Instant::now();
    a.crash();
    let lost = eventually(Duration::from_secs(15), "node A's call closed", || {
        record("cluster-lost@test").filter(|c| c["end_cause"] == "node_lost")
    });
    let took = killed_at.elapsed();
    eprintln!("node A's call closed {took:?} after its SIGKILL (lease 5 s, heartbeat 1 s)");
    assert!(lost["ended_at"].is_i64());
    assert_eq!(lost["node"], node_id(&a).as_str());
    let kept = record("cluster-kept@test").unwrap();
    assert!(
        kept["ended_at"].is_null(),
        "node B's own call goes on: {kept}"
    );
    // Counted once the close returned, just after the record shows it.
    eventually(Duration::from_secs(3), "node B's metrics", || {
        (b.metric("gateway_node_lost_calls_total") == 1.0
            && b.metric("gateway_cluster_nodes{health=\"lapsed\"}") == 1.0
            && b.metric("gateway_cluster_nodes{health=\"healthy\"}") == 1.0)
            .then_some(())
    });
    let (_, body, _) = b.api("GET", "/v1/nodes", Some(&admin), None);
    let a_row = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == node_id(&a).as_str())
        .cloned()
        .unwrap();
    assert_eq!(a_row["healthy"], false);
    // A node gone for good is forgotten; a live one is not.
    let (st, body, _) = b.api(
        "DELETE",
        &format!("/v1/nodes/{}", node_id(&b)),
        Some(&admin),
        None,
    );
    assert_eq!(st, 409, "{body}");
    let (st, _, _) = b.api(
        "DELETE",
        &format!("/v1/nodes/{}", node_id(&a)),
        Some(&admin),
        None,
    );
    assert_eq!(st, 204);
    let (_, body, _) = b.api("GET", "/v1/nodes", Some(&admin), None);
    let ids: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].clone())
        .collect();
    assert_eq!(ids, vec![serde_json::json!(node_id(&b))]);
    let (st, _, _) = b.api(
        "DELETE",
        &format!("/v1/nodes/{}", node_id(&a)),
        Some(&admin),
        None,
    );
    assert_eq!(st, 404);
    on_b.bye();
}

/// REGISTER with digest: challenged, then answered; the final answer.
fn register_alice(sock: &UdpSocket, d: &Daemon, cseq: u32, expires: u32) -> String {
    let first = register(sock, d, "alice", cseq, &format!("Expires: {expires}\r\n"));
    let auth = Credentials::answer(
        &challenge(&first, "SHA-256"),
        "alice",
        "alice-secret",
        "REGISTER",
        "sip:127.0.0.1",
        "c0ffee",
    )
    .encode();
    register(
        sock,
        d,
        "alice",
        cseq + 1,
        &format!("Expires: {expires}\r\nAuthorization: {auth}\r\n"),
    )
}

/// A phone registered on one node is reachable through the other at once
/// (announced through PostgreSQL, not the periodic reload), and gone from
/// both once it unregisters.
#[test]
fn a_phone_registered_on_one_node_is_reachable_through_the_other() {
    let Some(url) = pg_schema_url() else {
        return;
    };
    let users =
        "[[sip_users]]\nusername = \"alice\"\naccount = \"acct\"\npassword = \"alice-secret\"\n";
    let a = Daemon::start_with(users, Some(&url));
    let b = Daemon::start_with(users, Some(&url));
    let mut n = 0u16;
    let mut status_on_b = || {
        n += 1;
        let mut c =
            Caller::new(b.sip_addr(), &format!("cluster-to-alice-{n}@test")).dialing("alice");
        c.final_status(43_500 + 2 * n)
    };
    assert_eq!(status_on_b(), 480, "not registered yet");
    // Node B follows announcements before alice registers: what reaches
    // it comes through them, not through its first full reload.
    eventually(
        Duration::from_secs(5),
        "node B following registrations",
        || {
            b.logs()
                .contains("following the other nodes' registrations")
                .then_some(())
        },
    );

    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let ok = register_alice(&phone, &a, 1, 600);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let t0 = Instant::now();
    eventually(
        Duration::from_secs(3),
        "alice reachable through node B",
        || (status_on_b() == 302).then_some(()),
    );
    eprintln!(
        "registered on A, reachable through B after {:?}",
        t0.elapsed()
    );
    assert_eq!(b.metric("gateway_registrations_active"), 1.0);

    let gone = register_alice(&phone, &a, 3, 0);
    assert!(gone.starts_with("SIP/2.0 200"), "{gone}");
    eventually(Duration::from_secs(3), "alice gone from node B", || {
        (status_on_b() == 480).then_some(())
    });
    assert_eq!(b.metric("gateway_registrations_active"), 0.0);
}
