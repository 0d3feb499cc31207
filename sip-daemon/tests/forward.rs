//! Route `forward` end to end with real peers: the daemon is the B2BUA
//! between a caller and a far end it reaches through a trunk, relaying
//! RTP in userspace (the media workers).

mod common;

use common::baresip::{Callee, baresip_call, tone, tone_in_frames};
use common::{Daemon, Opts};
use std::path::Path;
use std::process::Command;

/// The daemon with number +15557000003 forwarded through trunk `far`
/// (outbound address 127.0.0.1:`far_port`, digest credentials).
fn daemon(far_port: u16) -> Daemon {
    Daemon::start_opts(Opts {
        extra: &format!(
            r#"
[[trunks]]
name = "far"
source_cidrs = ["127.0.0.2/32"]
outbound_address = "127.0.0.1:{far_port}"
transport = "udp"
username = "gateway"
password = "trunk-secret"

[[numbers]]
pattern = "+15557000003"
account = "acct"
route = "forward"
target = "sip:+15557000003@carrier.test"
trunk = "far"

[[numbers]]
pattern = "+15557000005"
account = "acct"
route = "forward"
target = "sip:+15557000005@127.0.0.1:{far_port}"
"#
        ),
        ..Opts::default()
    })
}

#[test]
fn two_baresip_phones_hear_each_other_through_the_forwarded_call() {
    let tmp = tempfile::tempdir().unwrap();
    // The far phone answers and says 1 kHz; the caller says 440 Hz.
    let callee = Callee::start(
        tmp.path().join("callee"),
        "+15557000003",
        "PCMU/8000/1",
        8000,
        &tone(1000.0, 8000, 6000, 8000.0),
        7,
    );
    let d = daemon(callee.port);
    let (rate, heard) = baresip_call(
        &d,
        "+15557000003",
        "PCMU/8000/1",
        8000,
        &tone(440.0, 8000, 3000, 8000.0),
        4,
    );
    let callee_log = callee.log();
    let (rate_b, heard_b) = callee.finish();
    assert_eq!((rate, rate_b), (8000, 8000));
    let (frames, share) = tone_in_frames(&heard, 1000.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the caller heard the far phone's 1 kHz: {frames} frames, share {share:.2}\n{callee_log}"
    );
    let (frames, share) = tone_in_frames(&heard_b, 440.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the far phone heard the caller's 440 Hz: {frames} frames, share {share:.2}\n{}",
        d.logs()
    );
    d.wait_cdr_cause("caller_hangup");
    // The relay publishes its counters when it closes, which may come
    // after the record is written: wait for them (bounded). 300 packets is
    // 3 s of both directions, less each phone's latching run: baresip's SDP
    // names its eth0 address while it sends from loopback, so each side is
    // latched after LATCH_PACKETS in-sequence packets, the first ones not
    // relayed.
    let want = 300.0 - 2.0 * f64::from(media_userspace::latch::LATCH_PACKETS - 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut tx = d.metric("gateway_rtp_tx_packets_total");
    while tx < want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        tx = d.metric("gateway_rtp_tx_packets_total");
    }
    assert!(
        tx >= want,
        "both directions went through the userspace relay: {tx} packets\n{}",
        d.logs()
    );
}

/// A media port for the far SIPp below the ephemeral range and the test
/// daemons' media ranges (20000–59999), where nothing else binds.
fn sipp_media_port(far_port: u16) -> String {
    (10_000 + (far_port % 4_000) * 2).to_string()
}

fn run_sipp(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new("sipp")
        .current_dir(dir)
        .args(args)
        .args([
            "-m",
            "1",
            "-nostdin",
            "-trace_err",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp (apt package sip-tester)")
}

#[test]
fn sipp_caller_reaches_a_carrier_that_challenges_with_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let far_port = common::free_port();
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/uas_carrier_digest.xml"
    );
    let far_media = sipp_media_port(far_port);
    let carrier = run_sipp(
        tmp.path(),
        &[
            "-sf",
            scenario,
            "-i",
            "127.0.0.1",
            "-p",
            &far_port.to_string(),
            "-mp",
            &far_media,
        ],
    );
    let d = daemon(far_port);
    let caller = run_sipp(
        tmp.path(),
        &[
            "-sn",
            "uac",
            &d.sip_addr().to_string(),
            "-s",
            "+15557000003",
            "-i",
            "127.0.0.1",
            "-p",
            &common::free_port().to_string(),
            "-m",
            "1",
        ],
    );
    let caller = caller.wait_with_output().unwrap();
    let carrier = carrier.wait_with_output().unwrap();
    assert!(
        carrier.status.success(),
        "the carrier saw a valid digest answer and a complete call: {:?} {}\n{}",
        carrier.status,
        String::from_utf8_lossy(&carrier.stderr),
        d.logs()
    );
    assert!(
        caller.status.success(),
        "the caller's call completed: {:?} {}\n{}",
        caller.status,
        String::from_utf8_lossy(&caller.stderr),
        d.logs()
    );
    d.wait_cdr_cause("caller_hangup");
}

#[test]
fn sipp_far_side_blind_transfers_the_call() {
    let tmp = tempfile::tempdir().unwrap();
    let far_port = common::free_port();
    let target_port = common::free_port();
    // The transfer target: SIPp's built-in UAS (ring, answer, wait for BYE).
    let target = run_sipp(
        tmp.path(),
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &target_port.to_string(),
            "-mp",
            &sipp_media_port(target_port),
            "-m",
            "1",
        ],
    );
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/uas_far_transfers.xml"
    );
    let far_media = sipp_media_port(far_port);
    let target_addr = format!("127.0.0.1:{target_port}");
    let far = run_sipp(
        tmp.path(),
        &[
            "-sf",
            scenario,
            "-i",
            "127.0.0.1",
            "-p",
            &far_port.to_string(),
            "-mp",
            &far_media,
            "-m",
            "1",
            "-key",
            "target",
            &target_addr,
        ],
    );
    let d = daemon(far_port);
    let caller = run_sipp(
        tmp.path(),
        &[
            "-sn",
            "uac",
            &d.sip_addr().to_string(),
            "-s",
            "+15557000005",
            "-i",
            "127.0.0.1",
            "-p",
            &common::free_port().to_string(),
            "-m",
            "1",
            "-d",
            "2500",
        ],
    );
    let caller = caller.wait_with_output().unwrap();
    let far = far.wait_with_output().unwrap();
    let target = target.wait_with_output().unwrap();
    assert!(
        target.status.success(),
        "the transfer target was called, answered and hung up by the caller's BYE: {:?} {}\n{}",
        target.status,
        String::from_utf8_lossy(&target.stderr),
        d.logs()
    );
    assert!(
        far.status.success(),
        "REFER answered 202, NOTIFY 100 and 200 received, transferor released: {:?} {}\n{}",
        far.status,
        String::from_utf8_lossy(&far.stderr),
        d.logs()
    );
    assert!(
        caller.status.success(),
        "the caller's call went on through the transfer: {:?} {}\n{}",
        caller.status,
        String::from_utf8_lossy(&caller.stderr),
        d.logs()
    );
    d.wait_cdr_cause("caller_hangup");
}

#[test]
fn sipp_caller_side_blind_transfers_the_call_and_the_far_party_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let far_port = common::free_port();
    let target_port = common::free_port();
    // The far party and the transfer target: SIPp's built-in UAS (answer,
    // wait for BYE).
    let uas = |port: u16| {
        run_sipp(
            tmp.path(),
            &[
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-mp",
                &sipp_media_port(port),
                "-m",
                "1",
            ],
        )
    };
    let far = uas(far_port);
    let target = uas(target_port);
    let d = daemon(far_port);
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/uac_refers_the_call.xml"
    );
    let target_addr = format!("127.0.0.1:{target_port}");
    let caller = run_sipp(
        tmp.path(),
        &[
            "-sf",
            scenario,
            &d.sip_addr().to_string(),
            "-s",
            "+15557000005",
            "-i",
            "127.0.0.1",
            "-p",
            &common::free_port().to_string(),
            "-m",
            "1",
            "-key",
            "target",
            &target_addr,
        ],
    );
    let caller = caller.wait_with_output().unwrap();
    assert!(
        caller.status.success(),
        "REFER answered 202, NOTIFY 100 and 200 received, the transferor released: {:?} {}\n{}",
        caller.status,
        String::from_utf8_lossy(&caller.stderr),
        d.logs()
    );
    // The far party now talks to the target; hanging the call up over
    // REST releases both.
    let t = d.token(Some("acct"), false);
    let (st, page, _) = d.api("GET", "/v1/calls?active=true", Some(&t), None);
    assert_eq!(st, 200, "{page}");
    let id = page["data"][0]["id"]
        .as_str()
        .expect("the call is still up")
        .to_string();
    let (st, r, _) = d.api("POST", &format!("/v1/calls/{id}/hangup"), Some(&t), None);
    assert_eq!(st, 202, "{r}");
    let far = far.wait_with_output().unwrap();
    let target = target.wait_with_output().unwrap();
    assert!(
        far.status.success(),
        "the far party stayed until the hangup: {:?} {}",
        far.status,
        String::from_utf8_lossy(&far.stderr)
    );
    assert!(
        target.status.success(),
        "the target was called, answered and hung up: {:?} {}\n{}",
        target.status,
        String::from_utf8_lossy(&target.stderr),
        d.logs()
    );
    d.wait_cdr_cause("api_hangup");
}
