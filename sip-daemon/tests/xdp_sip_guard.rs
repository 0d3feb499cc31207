//! The XDP SIP guard across real routing: the daemon in a gateway network
//! namespace with the XDP program attached to its veths (driver mode), a
//! host in the caller namespace (198.18.0.2, no trunk) sending SIP. Over
//! its rate, the host's datagrams are dropped in the kernel (the daemon
//! never sees them); once the registrar locks it out for wrong passwords,
//! all of them are, until the lockout ends; an operator's entry made over
//! REST is dropped there too, until deleted; a trunk network passes.
//!
//! Needs root, iproute2 and the XDP program built in: without them the
//! test FAILS (GATEWAY_TEST_SKIP_XDP=1 skips it, which
//! GATEWAY_REQUIRE_XDP=1 overrides).

mod common;

use common::{Daemon, Opts};
use media_userspace::testnet::{CALLER, GW_C, Topology};
use serde_json::json;
use sip_daemon::sip::digest::{Challenge, Credentials};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn available() -> bool {
    common::xdp_test_available("XDP SIP guard test")
}

/// Sends `msgs` from `sock` to `to` and counts the answers that arrive
/// until the daemon has been quiet for 500 ms.
fn answers(sock: &UdpSocket, to: SocketAddr, msgs: &[String]) -> Vec<String> {
    for m in msgs {
        sock.send_to(m.as_bytes(), to).unwrap();
    }
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    got
}

fn options(local: SocketAddr, to: SocketAddr, n: u32) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKxg{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:x@{local}>;tag=x{n}\r\nTo: <sip:{to}>\r\nCall-ID: xg-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

fn register(local: SocketAddr, to: SocketAddr, n: u32, auth: &str) -> String {
    format!(
        "REGISTER sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKxr{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{GW_C}>;tag=r{n}\r\nTo: <sip:alice@{GW_C}>\r\nCall-ID: xr-{n}\r\nCSeq: {n} REGISTER\r\nContact: <sip:alice@{local}>\r\n{auth}Content-Length: 0\r\n\r\n",
        to.ip()
    )
}

#[test]
fn the_kernel_drops_a_flooder_and_a_locked_out_guesser() {
    if !available() {
        return;
    }
    let t = Topology::new("s");
    let d = Daemon::start_opts(Opts {
        netns: Some(&t.ns[1]),
        ip: Some(GW_C),
        listen: Some(r#"["udp:{ip}:{port}"]"#),
        media_extra: "xdp = \"on\"\nxdp_interfaces = [\"gc\", \"gf\"]\n",
        local_trunk: Some(r#"source_cidrs = ["198.18.1.0/24"]"#),
        // Userspace limits off: what drops here is the kernel.
        sip_extra: "source_requests_per_sec = 0\nxdp_guard = true\nxdp_guard_rate_per_sec = 2\nxdp_guard_burst = 10\nauth_max_failures = 3\nauth_lockout_secs = 3\ndigest_algorithms = [\"MD5\"]",
        extra: r#"
[[sip_users]]
username = "alice"
account = "acct"
password = "right-password"
"#,
        ..Opts::default()
    });
    let to = d.sip_addr();
    let sock = t.run(0, || UdpSocket::bind(format!("{CALLER}:0")).unwrap());
    let local = sock.local_addr().unwrap();

    // A burst of 100 OPTIONS: the kernel lets the burst of 10 through (a
    // little more if the veth's packets land on both CPUs, each of which
    // meters on its own), drops the rest before the daemon sees them.
    let acl_before = d.metric("gateway_sip_rejections_total{reason=\"acl\"}");
    let flood: Vec<String> = (0..100).map(|n| options(local, to, n)).collect();
    let got = answers(&sock, to, &flood);
    let dropped = d.metric("gateway_xdp_sip_rate_dropped_total");
    eprintln!(
        "flood: {} answered, {dropped} dropped in the kernel",
        got.len()
    );
    assert!((10..=25).contains(&got.len()), "{} answered", got.len());
    assert_eq!(
        got.len() as f64 + dropped,
        100.0,
        "each datagram answered or dropped"
    );
    assert!(
        got.iter().all(|a| a.starts_with("SIP/2.0 403")),
        "an unknown source"
    );
    assert_eq!(
        (d.metric("gateway_sip_rejections_total{reason=\"acl\"}") - acl_before) as usize,
        got.len(),
        "the daemon saw only what the kernel passed"
    );

    // Wait out the meter (10 datagrams at 2 a second per CPU).
    std::thread::sleep(Duration::from_millis(5_500));
    // Three wrong passwords lock the source out; the registrar tells the
    // kernel, which drops everything from it from then on.
    for n in 0..3u32 {
        let chal = answers(&sock, to, &[register(local, to, 100 + 2 * n, "")]);
        let ch = chal
            .iter()
            .flat_map(|r| r.lines())
            .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
            .map(|v| Challenge::parse(v).unwrap())
            .unwrap_or_else(|| panic!("a challenge: {chal:?}"));
        let uri = format!("sip:{}", to.ip());
        let wrong = Credentials::answer(&ch, "alice", "guess", "REGISTER", &uri, "c").encode();
        let r = answers(
            &sock,
            to,
            &[register(
                local,
                to,
                101 + 2 * n,
                &format!("Authorization: {wrong}\r\n"),
            )],
        );
        assert!(r.iter().all(|a| a.starts_with("SIP/2.0 401")), "{r:?}");
    }
    assert_eq!(
        d.metric("gateway_sip_rejections_total{reason=\"auth_lockout_source\"}"),
        1.0
    );
    let after: Vec<String> = (0..5).map(|n| options(local, to, 200 + n)).collect();
    let got = answers(&sock, to, &after);
    assert!(got.is_empty(), "nothing answered once locked out: {got:?}");
    assert_eq!(d.metric("gateway_xdp_sip_denied_total"), 5.0);
    // The lockout ends (3 s) and the denial is lifted in the kernel.
    std::thread::sleep(Duration::from_millis(4_500));
    let got = answers(&sock, to, &[options(local, to, 300)]);
    assert_eq!(got.len(), 1, "let back in after the lockout");

    // An operator's entry over REST reaches the kernel: the caller's /24 is
    // dropped there (the daemon never sees it) until the entry is deleted.
    let admin = d.token(None, true);
    let (st, body, _) = d.api(
        "POST",
        "/v1/denied-sources",
        Some(&admin),
        Some(&json!({"network": "198.18.0.0/24", "reason": "abuse desk ticket 1"})),
    );
    assert_eq!(st, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let mut n = 400;
    let applied = (0..50).any(|_| {
        n += 1;
        answers(&sock, to, &[options(local, to, n)]).is_empty()
    });
    assert!(applied, "the entry reached the kernel");
    let kernel = d.metric("gateway_xdp_sip_denied_total");
    let userspace = d.metric("gateway_sip_rejections_total{reason=\"denied\"}");
    let burst: Vec<String> = (0..5).map(|k| options(local, to, 500 + k)).collect();
    assert!(answers(&sock, to, &burst).is_empty());
    assert_eq!(d.metric("gateway_xdp_sip_denied_total") - kernel, 5.0);
    assert_eq!(
        d.metric("gateway_sip_rejections_total{reason=\"denied\"}"),
        userspace,
        "dropped in the kernel, not in the daemon"
    );
    let (st, _, _) = d.api(
        "DELETE",
        &format!("/v1/denied-sources/{id}"),
        Some(&admin),
        None,
    );
    assert_eq!(st, 204);
    let lifted = (0..50).any(|_| {
        n += 1;
        !answers(&sock, to, &[options(local, to, n)]).is_empty()
    });
    assert!(lifted, "the kernel lets the network back in");
}
