//! A forwarded call across real routing: the daemon runs in a gateway
//! network namespace between a caller host and a far host (veth pairs the
//! test creates, 198.18.0.0/15), two baresip phones talk through it, and
//! each must hear the other. With `media.xdp = "on"` the relayed RTP must
//! go through the XDP program in driver mode; with "off", through the
//! userspace relay.
//!
//! Needs root, iproute2, ethtool, baresip and the XDP program built in;
//! without them the test FAILS (GATEWAY_TEST_SKIP_XDP=1 skips it, which
//! GATEWAY_REQUIRE_XDP=1 overrides).

mod common;

use common::baresip::{Callee, baresip_call_from, tone, tone_in_frames};
use common::{Daemon, Opts};
use media_userspace::testnet::{CALLER, FAR, GW_C, Topology};
use media_userspace::xdp::{XdpMode, XdpOffload, build_info, program_bytes};

fn available() -> bool {
    let skip = std::env::var("GATEWAY_TEST_SKIP_XDP").is_ok_and(|v| v == "1")
        && std::env::var("GATEWAY_REQUIRE_XDP").is_err_and(|_| true);
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root".to_string())
    } else if program_bytes().is_none() {
        Some(format!("XDP program not built in ({})", build_info()))
    } else {
        None
    };
    match why {
        None => true,
        Some(w) if skip => {
            eprintln!("SKIPPED (GATEWAY_TEST_SKIP_XDP=1): {w}");
            false
        }
        Some(w) => panic!("forwarded-call netns test cannot run: {w}"),
    }
}

/// Places one call caller → +15557000004 → far phone through the daemon
/// in the gateway namespace; checks both directions of audio. Returns the
/// daemon (for its metrics).
fn forwarded_call(t: &Topology, xdp: &str) -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let callee = Callee::start_in(
        Some(&t.ns[2]),
        FAR,
        tmp.path().join("callee"),
        "+15557000004",
        "PCMU/8000/1",
        8000,
        &tone(1000.0, 8000, 6000, 8000.0),
        7,
    );
    let d = Daemon::start_opts(Opts {
        netns: Some(&t.ns[1]),
        ip: Some(GW_C),
        listen: Some(r#"["udp:{ip}:{port}"]"#),
        // (Not pinned: tests/common sets `xdp_pin_dir = ""`.)
        media_extra: &format!("xdp = \"{xdp}\"\nxdp_interfaces = [\"gc\", \"gf\"]\n"),
        extra: &format!(
            r#"
[[trunks]]
name = "callers"
source_cidrs = ["198.18.0.0/24"]

[[trunks]]
name = "far"
source_cidrs = ["198.18.1.0/24"]
outbound_address = "{FAR}:{port}"
transport = "udp"

[[numbers]]
pattern = "+15557000004"
account = "acct"
route = "forward"
target = "sip:+15557000004@far.test"
trunk = "far"
"#,
            port = callee.port
        ),
        ..Opts::default()
    });
    let (rate, heard) = baresip_call_from(
        Some(&t.ns[0]),
        CALLER,
        &d,
        "+15557000004",
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
        "xdp={xdp}: the caller heard the far phone's 1 kHz: {frames} frames, share {share:.2}\n{callee_log}\n{}",
        d.logs()
    );
    let (frames, share) = tone_in_frames(&heard_b, 440.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "xdp={xdp}: the far phone heard the caller's 440 Hz: {frames} frames, share {share:.2}\n{}",
        d.logs()
    );
    d.wait_cdr_cause("caller_hangup");
    d
}

#[test]
fn forwarded_call_media_goes_through_xdp_in_driver_mode() {
    if !available() {
        return;
    }
    let t = Topology::new("s");
    // Frames redirected into a veth are received by its peer's XDP: an
    // XDP_PASS program on the hosts' ends (ours, without rules).
    let _pass: Vec<XdpOffload> = [(0, "c0"), (2, "f0")]
        .into_iter()
        .map(|(i, dev)| {
            t.run(i, move || {
                XdpOffload::load(dev, XdpMode::Native).expect("XDP_PASS")
            })
        })
        .collect();
    let d = forwarded_call(&t, "on");
    assert_eq!(d.metric("gateway_xdp_attached"), 1.0, "{}", d.logs());
    assert!(d.logs().contains("XDP fast path attached"), "{}", d.logs());
    let offloads = d.metric("gateway_xdp_offloads_total");
    let kernel = d.metric("gateway_xdp_forwarded_packets_total");
    // The relay's totals count what the kernel forwarded for it too.
    let relayed = d.metric("gateway_rtp_tx_packets_total");
    eprintln!(
        "XDP: {offloads} offload(s), {kernel} of {relayed} relayed RTP packets forwarded in the kernel"
    );
    assert!(offloads >= 1.0, "the call was offloaded");
    assert!(
        kernel >= 200.0 && kernel >= 0.9 * relayed,
        "the call's RTP went through the kernel: {kernel} of {relayed}"
    );
}

#[test]
fn forwarded_call_media_goes_through_userspace_with_xdp_off() {
    if !available() {
        return;
    }
    let t = Topology::new("o");
    let d = forwarded_call(&t, "off");
    assert_eq!(d.metric("gateway_xdp_attached"), 0.0);
    assert_eq!(d.metric("gateway_xdp_forwarded_packets_total"), 0.0);
    assert!(d.metric("gateway_rtp_tx_packets_total") >= 300.0);
}
