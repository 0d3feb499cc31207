//! SIPp's built-in `uac` scenario (Debian sip-tester) against the real
//! daemon on the echo route, over UDP and over TCP: every call must
//! succeed and leave a complete call record.
//!
//! GATEWAY_SIPP_CALLS (default 2000) and GATEWAY_SIPP_RATE (default 500
//! calls/s) size the run; the benchmark uses 20,000 at 1,000/s.

mod common;

use common::Daemon;
use std::process::Command;
use std::time::Duration;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_sipp(d: &Daemon, transport: &str, calls: u32, rate: u32) {
    let stats = d.dir.path().join(format!("sipp-{transport}"));
    std::fs::create_dir_all(&stats).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new("sipp")
        .current_dir(&stats)
        .args(["-sn", "uac", &d.sip_addr().to_string()])
        .args(["-s", "+15550001234"])
        .args(["-i", "127.0.0.1", "-p", &common::free_port().to_string()])
        .args(["-t", transport])
        .args(["-m", &calls.to_string(), "-r", &rate.to_string()])
        .args(["-l", "5000"])
        // A lost response must fail the run, not hang it.
        .args([
            "-recv_timeout",
            "10000",
            "-timeout",
            "300s",
            "-timeout_error",
        ])
        .args(["-nostdin", "-trace_err", "-trace_stat", "-fd", "1"])
        .output()
        .expect("run sipp (apt package sip-tester)");
    let errs: String = std::fs::read_dir(&stats)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("errors"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    // The figures a load run reports (bench/scripts/sipp-load.sh).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let count = |what: &str| {
        stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(what))
            .and_then(|l| l.split('|').nth(2))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    eprintln!(
        "sipp uac over {transport}: {calls} calls offered at {rate}/s in {:.1} s; successful {}, failed {}",
        started.elapsed().as_secs_f64(),
        count("Successful call"),
        count("Failed call")
    );
    assert!(
        out.status.success(),
        "sipp over {transport} failed ({:?}).\nstdout tail: {}\nstderr: {}\nerrors: {}\ndaemon log tail: {}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 40),
        String::from_utf8_lossy(&out.stderr),
        tail(&errs, 40),
        tail(&d.logs(), 40)
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn count_calls(db: &std::path::Path, sql_where: &str) -> i64 {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"select count(*) from calls where {sql_where}\").fetchone()[0])"
        ))
        .arg(db)
        .output()
        .expect("python3 sqlite3");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(-1)
}

fn sipp_against_echo(transport: &str) {
    let calls = env_u32("GATEWAY_SIPP_CALLS", 2000);
    let rate = env_u32("GATEWAY_SIPP_RATE", 500);
    let mut d = Daemon::start("");
    run_sipp(&d, transport, calls, rate);
    // Counted in the daemon, too.
    let answered = d.metric("gateway_calls_total{direction=\"inbound\",outcome=\"caller_hangup\"}");
    assert_eq!(answered as u32, calls, "completed-call counter");
    let st = d.stop();
    assert!(st.success(), "daemon exit {st:?}");
    // Every call has its complete record once the daemon has drained.
    let db = d.db_path();
    assert_eq!(count_calls(&db, "1=1"), calls as i64, "CDR rows");
    assert_eq!(
        count_calls(
            &db,
            "end_at is not null and answer_at is not null and sip_status = 200 and media_mode = 'echo'"
        ),
        calls as i64,
        "complete CDR rows"
    );
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn sipp_uac_udp() {
    sipp_against_echo("u1");
}

#[test]
fn sipp_uac_tcp() {
    sipp_against_echo("t1");
}
