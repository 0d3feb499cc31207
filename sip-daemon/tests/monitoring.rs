//! The Grafana dashboard and the Prometheus alert rules
//! (`deploy/monitoring/`) against a live daemon: after a little real
//! traffic (an answered call, a stream call whose AI is unreachable, a
//! refused SIP request, REST requests), every metric a panel or a rule uses
//! is in the daemon's scrape; `promtool` accepts the rules and passes their
//! unit tests.

mod common;

use common::{Caller, Daemon};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// The scrape's body (the HTTP head cut off).
fn scrape(d: &Daemon) -> String {
    let raw = d.metrics();
    raw.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(raw)
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_in_a_live_scrape() {
    let d = Daemon::start("");
    // An answered echo call, hung up: calls by outcome, setup time.
    let mut caller = Caller::new(d.sip_addr(), "monitoring-echo@test").dialing("+15550001234");
    caller.invite(41_000);
    caller.bye();
    // A stream call whose AI does not answer (ws://127.0.0.1:9): connect
    // failures, and the call refused after its answer timeout.
    let mut ai_down = Caller::new(d.sip_addr(), "monitoring-ai@test").dialing("+14155550199");
    let _ = ai_down.final_status(41_002);
    // A request the edge refuses, and REST traffic (one refused, one not).
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"INVITE sip:nobody SIP/2.0\r\n\r\n", d.sip_addr())
        .unwrap();
    let (st, _, _) = d.api("GET", "/v1/numbers", None, None);
    assert_eq!(st, 401);
    let token = d.token(Some("acct"), false);
    let (st, body, _) = d.api("GET", "/v1/numbers", Some(&token), None);
    assert_eq!(st, 200, "{body}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scrape.prom");
    let check = || {
        std::fs::write(&file, scrape(&d)).unwrap();
        Command::new("python3")
            .arg(monitoring().join("check_metrics.py"))
            .arg(&file)
            .output()
            .unwrap()
    };
    // The call's end is counted once its BYE is answered and the failed
    // stream's once its answer timeout passes: poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut out = check();
    while !out.status.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        out = check();
    }
    assert!(
        out.status.success(),
        "{}{}\nscrape:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&file).unwrap()
    );

    // The traffic was observed, not only declared.
    assert!(d.metric("gateway_call_setup_seconds_count{direction=\"inbound\"}") >= 1.0);
    assert!(d.metric("gateway_ai_stream_connect_failures_total") >= 1.0);
    assert_eq!(d.metric("gateway_store_up"), 1.0);

    // The check itself is not vacuous: it names what a scrape lacks.
    let listed = Command::new("python3")
        .arg(monitoring().join("check_metrics.py"))
        .arg("--list")
        .output()
        .unwrap();
    let used = String::from_utf8_lossy(&listed.stdout).to_string();
    for name in [
        "gateway_calls_total",
        "gateway_call_setup_seconds",
        "gateway_store_queue_depth",
        "gateway_store_up",
        "gateway_xdp_attached",
        "gateway_ai_stream_connect_seconds",
        "gateway_api_request_duration_seconds",
    ] {
        assert!(used.lines().any(|l| l == name), "{name} unused:\n{used}");
    }
    let full = scrape(&d);
    let without: String = full
        .lines()
        .filter(|l| !l.contains("gateway_store_up"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, without).unwrap();
    let out = Command::new("python3")
        .arg(monitoring().join("check_metrics.py"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gateway_store_up")
            || String::from_utf8_lossy(&out.stderr).contains("gateway_store_up")
    );
}

#[test]
fn promtool_accepts_the_alert_rules_and_passes_their_unit_tests() {
    let rules = monitoring().join("prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&rules)
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool ({e}): run scripts/setup.sh test (Debian package prometheus)")
            });
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
