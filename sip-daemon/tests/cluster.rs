//! Three daemons on one throwaway PostgreSQL, as a cluster (issue 14):
//! SIPp places calls on all three at once with no failure and every call
//! is recorded once, complete, under the node that took it; a live-call
//! action asked of any node reaches a call on any other; one node
//! SIGKILLed mid-run leaves the other two nodes' calls untouched, and its
//! own open call is closed as `node_lost` within the lease.
//!
//! The nodes run in network namespaces of their own on one bridge; the
//! throwaway PostgreSQL on the host's loopback is reached through a relay
//! the test runs on the bridge's address.

mod common;

use common::{Caller, Daemon, Opts, eventually, free_port, pg_schema_url};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Heartbeats every second; a node silent for 5 s is lost.
const CLUSTER: &str = "[cluster]\nheartbeat_secs = 1\nlease_secs = 5\n";

fn node_id(d: &Daemon) -> String {
    format!("node-{}", d.sip_addr().port())
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

/// Three node namespaces on one bridge (in a fourth namespace, the LAN),
/// 198.18.2.11–13, and a TCP relay from the LAN's 198.18.2.1 to the
/// throwaway PostgreSQL on the host's loopback. Removed on drop.
struct Lan {
    lan: String,
    nodes: Vec<String>,
}

const LAN_IP: &str = "198.18.2.1";

fn node_ip(i: usize) -> String {
    format!("198.18.2.{}", 11 + i)
}

impl Lan {
    fn new() -> Lan {
        use media_userspace::testnet::sh;
        let id = std::process::id() % 100_000;
        let lan = format!("gk{id}l");
        let nodes: Vec<String> = (0..3).map(|i| format!("gk{id}n{i}")).collect();
        for n in std::iter::once(&lan).chain(&nodes) {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            sh(&["ip", "netns", "add", n]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", &lan, "link", "add", "br0", "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            &lan,
            "addr",
            "add",
            &format!("{LAN_IP}/24"),
            "dev",
            "br0",
        ]);
        sh(&["ip", "-n", &lan, "link", "set", "br0", "up"]);
        for (i, n) in nodes.iter().enumerate() {
            let port = format!("v{i}");
            sh(&[
                "ip", "link", "add", &port, "netns", &lan, "type", "veth", "peer", "name", "eth0",
                "netns", n,
            ]);
            sh(&["ip", "-n", &lan, "link", "set", &port, "master", "br0"]);
            sh(&["ip", "-n", &lan, "link", "set", &port, "up"]);
            sh(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/24", node_ip(i)),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", n, "link", "set", "eth0", "up"]);
        }
        Lan { lan, nodes }
    }

    /// `url` (a database on the host's loopback) as the nodes reach it:
    /// through a relay on the LAN's address.
    fn database_url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (auth, rest) = rest.rsplit_once('@').map_or(("", rest), |(a, r)| (a, r));
        let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
        let target: std::net::SocketAddr = host_port.parse().expect("host:port");
        let listener = common::in_netns(Some(&self.lan), || {
            std::net::TcpListener::bind((LAN_IP, 0)).expect("relay listener")
        });
        let port = listener.local_addr().unwrap().port();
        // Accepted on the LAN (the listener's namespace), connected from
        // this thread's, the host's.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let Ok(pg) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (conn.try_clone().unwrap(), pg.try_clone().unwrap()),
                    (pg, conn),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        let auth = if auth.is_empty() {
            String::new()
        } else {
            format!("{auth}@")
        };
        format!("{scheme}://{auth}{LAN_IP}:{port}/{path}")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for n in std::iter::once(&self.lan).chain(&self.nodes) {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// SIPp's built-in UAC in node `i`'s namespace against its daemon.
fn sipp_in(lan: &Lan, i: usize, d: &Daemon, calls: u32, rate: u32, hold_ms: u32) -> Child {
    let dir = d.dir.path().join(format!("sipp-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    Command::new("ip")
        .args(["netns", "exec", &lan.nodes[i], "sipp"])
        .current_dir(&dir)
        .args(["-sn", "uac", &d.sip_addr().to_string()])
        .args(["-s", "+15550001234"])
        .args(["-i", &node_ip(i), "-p", &free_port().to_string()])
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

/// A caller in node `i`'s namespace.
fn caller_in(lan: &Lan, i: usize, d: &Daemon, call_id: &str, number: &str) -> Caller {
    let (addr, id, number) = (d.sip_addr(), call_id.to_string(), number.to_string());
    common::in_netns(Some(&lan.nodes[i]), move || {
        Caller::new(addr, &id).dialing(&number)
    })
}

#[test]
fn three_nodes_in_namespaces_share_calls_actions_and_a_dead_nodes_records() {
    let Some(url) = pg_schema_url() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the three-node test makes network namespaces: run it as root"
    );
    let lan = Lan::new();
    let via_lan = lan.database_url(&url);
    let local_trunk = r#"source_cidrs = ["127.0.0.0/8", "198.18.2.0/24"]"#;
    let ips: Vec<String> = (0..3).map(node_ip).collect();
    let nodes: Vec<Daemon> = (0..3)
        .map(|i| {
            Daemon::start_opts(Opts {
                netns: Some(&lan.nodes[i]),
                ip: Some(&ips[i]),
                listen: Some(r#"["udp:{ip}:{port}"]"#),
                api_ip: Some("0.0.0.0"),
                media_extra: "xdp = \"off\"\n",
                local_trunk: Some(local_trunk),
                extra: CLUSTER,
                database_url: Some(&via_lan),
                ..Opts::default()
            })
        })
        .collect();
    let user = nodes[0].token(Some("acct"), false);

    // 1. SIPp in each node's namespace at once: no failure, every call
    //    recorded once, complete, under the node that took it.
    let per_node = 200u32;
    let started = Instant::now();
    let runs: Vec<Child> = nodes
        .iter()
        .enumerate()
        .map(|(i, d)| sipp_in(&lan, i, d, per_node, 100, 0))
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        sipp_ok(r, &format!("node {i}"));
    }
    eprintln!(
        "{} calls over three nodes in namespaces in {:.1} s, 0 failed",
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
    // Each node reaches the others' REST API at its own address.
    let addresses = psql(&url, "SELECT api_address FROM nodes ORDER BY api_address");
    assert_eq!(
        addresses.lines().collect::<Vec<_>>(),
        ips.iter()
            .zip(&nodes)
            .map(|(ip, d)| format!("{ip}:{}", d.metrics_port))
            .collect::<Vec<_>>()
    );

    // 2. A call on each node, hung up through the next one (node to node
    //    across the LAN).
    let mut callers = Vec::new();
    for (i, d) in nodes.iter().enumerate() {
        let sip_call_id = format!("cluster3-{i}@test");
        let mut c = caller_in(&lan, i, d, &sip_call_id, "+15550006000");
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
    let mut held = caller_in(&lan, 0, &nodes[0], "cluster3-held@test", "+15550006001");
    held.invite(44_010);
    let held_id = answered_call(&nodes[1], &user, "cluster3-held@test");
    let runs: Vec<Child> = (1..3)
        .map(|i| sipp_in(&lan, i, &nodes[i], 60, 20, 2_000))
        .collect();
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
            let st = c.call_and_hold(44_100 + 2 * n);
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
            (c.call_and_hold(44_100 + 2 * n) == 200).then(|| held.push(c))
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
