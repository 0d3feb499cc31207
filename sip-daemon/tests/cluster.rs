//! Three daemons on one throwaway PostgreSQL, as a cluster (issue 14):
//! SIPp places calls on all three at once with no failure and every call
//! is recorded once, complete, under the node that took it; a live-call
//! action asked of any node reaches a call on any other; one node
//! SIGKILLed mid-run leaves the other two nodes' calls untouched, and its
//! own open call is closed as `node_lost` within the lease.
//!
//! The nodes share the host's loopback on their own ports (not network
//! namespaces: the throwaway PostgreSQL listens on loopback).

mod common;

use common::{Caller, Daemon, free_port, pg_schema_url};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Heartbeats every second; a node silent for 5 s is lost.
const CLUSTER: &str = "[cluster]\nheartbeat_secs = 1\nlease_secs = 5\n";

fn node_id(d: &Daemon) -> String {
    format!("node-{}", d.sip_addr().port())
}

/// SIPp's built-in UAC against `d`'s echo numbers: `calls` at `rate`/s,
/// each held `hold_ms`. Bounded: a lost answer fails the run.
fn sipp(d: &Daemon, calls: u32, rate: u32, hold_ms: u32) -> Child {
    let dir = d.dir.path().join(format!("sipp-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    Command::new("sipp")
        .current_dir(&dir)
        .args(["-sn", "uac", &d.sip_addr().to_string()])
        .args(["-s", "+15550001234"])
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args(["-t", "u1"])
        .args(["-m", &calls.to_string(), "-r", &rate.to_string()])
        .args(["-d", &hold_ms.to_string()])
        .args([
            "-recv_timeout",
            "10000",
            "-timeout",
            "120s",
            "-timeout_error",
        ])
        .args(["-nostdin", "-trace_err"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp (apt package sip-tester)")
}

fn sipp_ok(mut c: Child, what: &str) {
    let st = c.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = c.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(st.success(), "{what}: sipp failed ({st:?}): {err}");
}

/// `SELECT …` on the cluster's schema, one row per line, `|` between
/// columns.
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-Atc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The call id of the record with this SIP Call-ID, once it is answered.
fn answered_call(d: &Daemon, token: &str, sip_call_id: &str) -> String {
    eventually(Duration::from_secs(5), "the call's record", || {
        let (_, body, _) = d.api("GET", "/v1/calls", Some(token), None);
        body["data"]
            .as_array()?
            .iter()
            .find(|c| c["sip_call_id"] == sip_call_id && c["answered_at"].is_i64())
            .and_then(|c| c["id"].as_str().map(str::to_string))
    })
}

#[test]
fn three_nodes_share_calls_actions_and_a_dead_nodes_records() {
    let Some(url) = pg_schema_url() else {
        return;
    };
    let nodes: Vec<Daemon> = (0..3)
        .map(|_| Daemon::start_with(CLUSTER, Some(&url)))
        .collect();
    let user = nodes[0].token(Some("acct"), false);

    // 1. SIPp on all three at once: no failure, every call recorded once,
    //    complete, under the node that took it.
    let per_node = 200u32;
    let started = Instant::now();
    let runs: Vec<Child> = nodes.iter().map(|d| sipp(d, per_node, 100, 0)).collect();
    for (i, r) in runs.into_iter().enumerate() {
        sipp_ok(r, &format!("node {i}"));
    }
    eprintln!(
        "{} calls over three nodes in {:.1} s, 0 failed",
        3 * per_node,
        started.elapsed().as_secs_f64()
    );
    for d in &nodes {
        let sql = format!(
            "SELECT count(*) FROM calls WHERE node = '{}' AND end_at IS NOT NULL \
             AND answer_at IS NOT NULL AND sip_status = 200 AND end_cause = 'caller_hangup'",
            node_id(d)
        );
        eventually(
            Duration::from_secs(10),
            "every call's complete record",
            || (psql(&url, &sql) == per_node.to_string()).then_some(()),
        );
    }
    assert_eq!(
        psql(&url, "SELECT count(*) FROM calls"),
        (3 * per_node).to_string()
    );

    // 2. A call on each node, hung up through the next one.
    let mut callers = Vec::new();
    for (i, d) in nodes.iter().enumerate() {
        let sip_call_id = format!("cluster3-{i}@test");
        let mut c = Caller::new(d.sip_addr(), &sip_call_id).dialing("+15550006000");
        c.invite(44_000 + 2 * i as u16);
        callers.push((c, answered_call(&nodes[0], &user, &sip_call_id)));
    }
    for (i, (caller, id)) in callers.iter().enumerate() {
        let through = &nodes[(i + 1) % 3];
        let (st, body, _) =
            through.api("POST", &format!("/v1/calls/{id}/hangup"), Some(&user), None);
        assert_eq!(
            st,
            202,
            "node {} hanging up node {i}'s call: {body}",
            (i + 1) % 3
        );
        caller.expect_bye();
    }

    // 3. Node 0 SIGKILLed while nodes 1 and 2 carry calls and node 0 holds
    //    one: theirs finish; node 0's is closed as node_lost.
    let mut nodes = nodes;
    let mut held = Caller::new(nodes[0].sip_addr(), "cluster3-held@test").dialing("+15550006001");
    held.invite(44_010);
    let held_id = answered_call(&nodes[1], &user, "cluster3-held@test");
    let runs: Vec<Child> = nodes[1..].iter().map(|d| sipp(d, 60, 20, 2_000)).collect();
    std::thread::sleep(Duration::from_millis(1_000));
    let killed_at = Instant::now();
    nodes[0].crash();
    let lost_after = eventually(Duration::from_secs(15), "node 0's call closed", || {
        let (_, body, _) = nodes[1].api("GET", &format!("/v1/calls/{held_id}"), Some(&user), None);
        (body["end_cause"] == "node_lost").then(|| killed_at.elapsed())
    });
    eprintln!(
        "node 0's open call closed as node_lost {lost_after:?} after its SIGKILL (lease 5 s)"
    );
    for (i, r) in runs.into_iter().enumerate() {
        sipp_ok(r, &format!("node {} while node 0 died", i + 1));
    }
    for d in &nodes[1..] {
        let sql = format!(
            "SELECT count(*) FROM calls WHERE node = '{}' AND sip_call_id NOT LIKE 'cluster3-%' \
             AND end_cause = 'caller_hangup' AND sip_status = 200",
            node_id(d)
        );
        eventually(
            Duration::from_secs(10),
            "the live nodes' calls complete",
            || (psql(&url, &sql) == (per_node + 60).to_string()).then_some(()),
        );
    }
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM calls WHERE end_cause = 'node_lost'"
        ),
        "1",
        "only the dead node's call"
    );
}

/// INVITE and its final status; an answered call is ACKed and kept up, a
/// refused one ACKed.
fn call_and_hold(c: &mut Caller, sdp_port: u16) -> u16 {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {sdp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    c.sip
        .send_to(c.request("INVITE", 1, "inv1", &sdp).as_bytes(), c.daemon)
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Ok((n, _)) = c.sip.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if !text.contains(&c.call_id) || status < 200 {
            continue;
        }
        if status < 300 {
            let to = common::header(&text, "To").unwrap_or_default();
            c.to_tag = to
                .split(";tag=")
                .nth(1)
                .map(|t| t.split(';').next().unwrap_or(t).to_string());
            c.sip
                .send_to(c.request("ACK", 1, "ack1", "").as_bytes(), c.daemon)
                .unwrap();
        } else {
            c.sip
                .send_to(c.request("ACK", 1, "inv1", "").as_bytes(), c.daemon)
                .unwrap();
        }
        return status;
    }
    panic!("no final response for {}", c.call_id);
}

/// A number limited to 3 concurrent calls: of 6 calls spread over the
/// three nodes, exactly 3 are answered and 3 refused with 486; once one
/// ends, a new call is answered on a node that refused before. Reports
/// what a reservation costs in the store.
#[test]
fn a_numbers_call_limit_holds_across_the_three_nodes() {
    let Some(url) = pg_schema_url() else {
        return;
    };
    let extra = format!(
        "[[numbers]]\npattern = \"+15550007000\"\naccount = \"acct\"\nroute = \"echo\"\nmax_calls = 3\n{CLUSTER}"
    );
    let nodes: Vec<Daemon> = (0..3)
        .map(|_| Daemon::start_with(&extra, Some(&url)))
        .collect();
    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for round in 0..2u16 {
        for (i, d) in nodes.iter().enumerate() {
            let n = round * 3 + i as u16;
            let mut c =
                Caller::new(d.sip_addr(), &format!("limit-{n}@test")).dialing("+15550007000");
            let st = call_and_hold(&mut c, 44_100 + 2 * n);
            statuses.push(st);
            if st == 200 {
                held.push(c);
            }
        }
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        3,
        "answered: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 486).count(),
        3,
        "refused at the limit: {statuses:?}"
    );
    // The first three attempts, one per node, were the ones answered:
    // each node had room on its own, the cluster for three.
    assert_eq!(statuses[..3], [200, 200, 200]);
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM limit_reservations WHERE scope = 'number:+15550007000'"
        ),
        "3"
    );

    // One ends: its slot comes back, and a node that refused answers.
    held.pop().unwrap().bye();
    let mut n = 10u16;
    eventually(
        Duration::from_secs(5),
        "a freed slot taken on node 0",
        || {
            n += 1;
            let mut c = Caller::new(nodes[0].sip_addr(), &format!("limit-{n}@test"))
                .dialing("+15550007000");
            (call_and_hold(&mut c, 44_100 + 2 * n) == 200).then(|| held.push(c))
        },
    );
    let refused: f64 = nodes
        .iter()
        .map(|d| d.metric("gateway_cluster_capacity_checks_total{outcome=\"refused\"}"))
        .sum();
    assert!(refused >= 3.0, "{refused} refusals counted");
    let (sum, count): (f64, f64) = nodes.iter().fold((0.0, 0.0), |(s, c), d| {
        (
            s + d.metric("gateway_cluster_capacity_seconds_sum"),
            c + d.metric("gateway_cluster_capacity_seconds_count"),
        )
    });
    eprintln!(
        "cluster-wide limit: {count} reservations, {:.2} ms each on average (PostgreSQL on loopback)",
        1000.0 * sum / count.max(1.0)
    );
    for c in &held {
        c.bye();
    }
}
