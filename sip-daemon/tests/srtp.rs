//! SRTP with real phones: baresip with `mediaenc=srtp-mand` (RTP/SAVP,
//! SDES keys) over SIP over TLS, as a caller of the echo route and on
//! both ends of a forwarded call whose legs share keys end to end (and so
//! stay in the XDP fast path); tones checked by FFT on both sides, and the
//! wire, captured by tshark, shows no SIP in clear and no RTP payload that
//! decodes to the tones.
//!
//! The forwarded call runs in network namespaces the test creates; it
//! needs root, iproute2, ethtool, baresip, tshark and the XDP program
//! built in (GATEWAY_TEST_SKIP_XDP=1 skips it unless GATEWAY_REQUIRE_XDP
//! is set).

mod common;

use common::baresip::{Callee, baresip_dial_as, tone, tone_in_frames};
use common::pki::pki;
use common::{Daemon, Opts, tone_share};
use media_userspace::testnet::{CALLER, FAR, GW_C, Topology};
use media_userspace::xdp::{XdpMode, XdpOffload};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// baresip's account parameters for SRTP it insists on.
const SRTP_MAND: &str = ";mediaenc=srtp-mand";

/// The daemon's call records, newest first (REST).
fn calls(d: &Daemon) -> serde_json::Value {
    let token = d.token(Some("acct"), false);
    let (status, body, _) = d.api("GET", "/v1/calls", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// baresip config lines: trust `ca`, load the srtp module.
fn phone_config(ca: &Path) -> String {
    format!("sip_cafile {}\nmodule srtp.so\n", ca.display())
}

#[test]
fn baresip_with_mandatory_srtp_over_tls_hears_its_voice_back_from_the_echo_route() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "gw", "IP:127.0.0.1");
    let (d, tls) = Daemon::start_tls(Opts::default(), &cert, &key);
    let input = tone(1000.0, 8000, 4000, 8000.0);
    let (rate, heard) = baresip_dial_as(
        None,
        "127.0.0.1",
        &d,
        &format!("sip:+15550001234@{tls};transport=tls"),
        &phone_config(&ca),
        SRTP_MAND,
        "PCMU/8000/1",
        8000,
        &input,
        3,
    );
    assert_eq!(rate, 8000);
    let (frames, share) = tone_in_frames(&heard, 1000.0, 8000);
    assert!(
        frames >= 50 && share > 0.9,
        "baresip heard its 1 kHz back through SRTP: {frames} frames, share {share:.2}\n{}",
        d.logs()
    );
    // The echo leg authenticated and decrypted what came, and protected
    // what it sent back.
    let m = |dir: &str| {
        d.metric(&format!(
            "gateway_srtp_packets_total{{direction=\"{dir}\"}}"
        ))
    };
    assert!(m("unprotected") >= 100.0, "{}", m("unprotected"));
    assert!(m("protected") >= 100.0, "{}", m("protected"));
    d.wait_cdr_cause("caller_hangup");
    let calls = calls(&d);
    assert_eq!(
        calls[0]["media_security"]["caller"].as_str(),
        Some("srtp:AES_CM_128_HMAC_SHA1_80"),
        "{calls}"
    );
}

#[test]
fn an_srtp_caller_talks_with_the_ai_through_the_media_worker() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use common::ai::{AiServer, Step};
    use media_userspace::g711;
    let ulaw: Vec<u8> = tone(1000.0, 8000, 2500, 8000.0)
        .into_iter()
        .map(g711::ulaw_encode)
        .collect();
    let ai = AiServer::start(vec![vec![
        Step::Sleep(Duration::from_millis(300)),
        Step::Text(
            serde_json::json!({"event": "media", "streamSid": "x",
                "media": {"payload": BASE64.encode(&ulaw)}})
            .to_string(),
        ),
    ]]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "gw", "IP:127.0.0.1");
    let extra = format!(
        r#"
[[numbers]]
pattern = "+15557000009"
account = "acct"
route = "stream"
target = "{}"
media_security = "srtp"
"#,
        ai.url()
    );
    let (d, tls) = Daemon::start_tls(
        Opts {
            extra: &extra,
            ..Opts::default()
        },
        &cert,
        &key,
    );
    let (_, heard) = baresip_dial_as(
        None,
        "127.0.0.1",
        &d,
        &format!("sip:+15557000009@{tls};transport=tls"),
        &phone_config(&ca),
        SRTP_MAND,
        "PCMU/8000/1",
        8000,
        &tone(440.0, 8000, 4000, 8000.0),
        4,
    );
    // The AI's 1 kHz reached the phone encrypted and decrypted.
    let (frames, share) = tone_in_frames(&heard, 1000.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the phone heard the AI: {frames} frames, share {share:.2}\n{}",
        d.logs()
    );
    // The caller's 440 Hz reached the AI in the clear.
    let pcm: Vec<i16> = ai
        .events("media")
        .iter()
        .flat_map(|(_, _, v)| {
            BASE64
                .decode(v["media"]["payload"].as_str().unwrap())
                .unwrap()
                .into_iter()
                .map(g711::ulaw_decode)
        })
        .collect();
    let (frames, share) = tone_in_frames(&pcm, 440.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the AI heard the phone: {frames} frames, share {share:.2}"
    );
    assert!(d.metric("gateway_srtp_packets_total{direction=\"unprotected\"}") >= 100.0);
}

#[test]
fn an_srtp_caller_forwarded_to_a_plain_phone_is_reencrypted_by_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "gw", "IP:127.0.0.1");
    // The far phone speaks plain RTP over UDP: no keys may go to it.
    let callee = Callee::start(
        dir.path().join("callee"),
        "+15557000007",
        "PCMU/8000/1",
        8000,
        &tone(1000.0, 8000, 6000, 8000.0),
        6,
    );
    let extra = format!(
        r#"
[[numbers]]
pattern = "+15557000007"
account = "acct"
route = "forward"
target = "sip:+15557000007@127.0.0.1:{}"
"#,
        callee.port
    );
    let (d, tls) = Daemon::start_tls(
        Opts {
            extra: &extra,
            ..Opts::default()
        },
        &cert,
        &key,
    );
    let (_, heard) = baresip_dial_as(
        None,
        "127.0.0.1",
        &d,
        &format!("sip:+15557000007@{tls};transport=tls"),
        &phone_config(&ca),
        SRTP_MAND,
        "PCMU/8000/1",
        8000,
        &tone(440.0, 8000, 4000, 8000.0),
        4,
    );
    let callee_log = callee.log();
    let (_, heard_b) = callee.finish();
    let (frames, share) = tone_in_frames(&heard, 1000.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the SRTP caller heard the plain phone: {frames} frames, share {share:.2}\n{callee_log}\n{}",
        d.logs()
    );
    let (frames, share) = tone_in_frames(&heard_b, 440.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the plain phone heard the SRTP caller: {frames} frames, share {share:.2}"
    );
    for dir in ["protected", "unprotected"] {
        let n = d.metric(&format!(
            "gateway_srtp_packets_total{{direction=\"{dir}\"}}"
        ));
        assert!(n >= 100.0, "the relay {dir} the caller's side: {n}");
    }
    d.wait_cdr_cause("caller_hangup");
    let calls = calls(&d);
    assert_eq!(
        calls[0]["media_security"],
        serde_json::json!({"caller": "srtp:AES_CM_128_HMAC_SHA1_80", "far": "rtp"}),
        "{calls}"
    );
}

/// tshark capturing everything on `dev` in namespace `i` into `pcap`.
fn capture(t: &Topology, i: usize, dev: &str, pcap: &Path) -> Child {
    let child = t
        .exec(i)
        .args(["tshark", "-q", "-i", dev, "-w"])
        .arg(pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark (apt package tshark)");
    // Capturing once the file has its header (bounded).
    let until = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(pcap).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < until, "tshark did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(mut c: Child) {
    // SIGINT: tshark flushes the file and exits.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGINT);
    }
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// The payloads (hex) of the packets of `proto` (`udp` or `tcp`) in
/// `pcap`.
fn payloads(pcap: &Path, proto: &str) -> Vec<Vec<u8>> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", &format!("{proto}.payload"), "-T", "fields", "-e"])
        .arg(format!("{proto}.payload"))
        .output()
        .expect("tshark");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            (0..l.len() / 2)
                .filter_map(|i| u8::from_str_radix(&l[2 * i..2 * i + 2], 16).ok())
                .collect()
        })
        .collect()
}

#[test]
fn a_call_between_two_srtp_phones_over_tls_shares_keys_and_stays_in_the_kernel() {
    if !common::xdp_test_available("SRTP forwarded-call netns test") {
        return;
    }
    let t = Topology::new("r");
    let _pass: Vec<XdpOffload> = [(0, "c0"), (2, "f0")]
        .into_iter()
        .map(|(i, dev)| {
            t.run(i, move || {
                XdpOffload::load(dev, XdpMode::Native).expect("XDP_PASS")
            })
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let (gw_ca, gw_cert, gw_key) = pki(tmp.path(), "gw", &format!("IP:{GW_C}"));
    let (far_ca, far_cert, far_key) = pki(tmp.path(), "far", &format!("IP:{FAR}"));
    // baresip's TLS listener takes its certificate and key in one file.
    let far_pem = tmp.path().join("far-both.pem");
    std::fs::write(
        &far_pem,
        [
            std::fs::read(&far_cert).unwrap(),
            std::fs::read(&far_key).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let number = "+15557000005";
    let callee = Callee::start_as(
        Some(&t.ns[2]),
        FAR,
        tmp.path().join("callee"),
        number,
        SRTP_MAND,
        &format!("sip_certificate {}\nmodule srtp.so\n", far_pem.display()),
        "PCMU/8000/1",
        8000,
        &tone(1000.0, 8000, 7000, 8000.0),
        8,
    );
    let extra = format!(
        r#"
[[trunks]]
name = "callers"
source_cidrs = ["198.18.0.0/24"]

[[trunks]]
name = "far"
source_cidrs = ["198.18.1.0/24"]
outbound_address = "{FAR}:{far_tls}"
transport = "tls"
media_security = "srtp"
tls = {{ ca_file = "{far_ca}" }}

[[numbers]]
pattern = "{number}"
account = "acct"
route = "forward"
target = "sip:{number}@far.test"
trunk = "far"
media_security = "srtp"
"#,
        far_tls = callee.port + 1,
        far_ca = far_ca.display(),
    );
    let (d, tls) = Daemon::start_tls(
        Opts {
            netns: Some(&t.ns[1]),
            ip: Some(GW_C),
            media_extra: "xdp = \"on\"\nxdp_interfaces = [\"gc\", \"gf\"]\n",
            extra: &extra,
            ..Opts::default()
        },
        &gw_cert,
        &gw_key,
    );
    let pcap = tmp.path().join("caller-side.pcap");
    let tshark = capture(&t, 0, "c0", &pcap);
    let (rate, heard) = baresip_dial_as(
        Some(&t.ns[0]),
        CALLER,
        &d,
        &format!("sip:{number}@{tls};transport=tls"),
        &phone_config(&gw_ca),
        SRTP_MAND,
        "PCMU/8000/1",
        8000,
        &tone(440.0, 8000, 5000, 8000.0),
        5,
    );
    let callee_log = callee.log();
    let (rate_b, heard_b) = callee.finish();
    stop(tshark);
    assert_eq!((rate, rate_b), (8000, 8000));
    let (frames, share) = tone_in_frames(&heard, 1000.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the caller heard the far phone's 1 kHz: {frames} frames, share {share:.2}\n{callee_log}\n{}",
        d.logs()
    );
    let (frames, share) = tone_in_frames(&heard_b, 440.0, 8000);
    assert!(
        frames >= 80 && share > 0.9,
        "the far phone heard the caller's 440 Hz: {frames} frames, share {share:.2}\n{}",
        d.logs()
    );
    // Keys shared end to end: the kernel forwarded the ciphertext.
    assert!(
        d.metric("gateway_xdp_offloads_total") >= 1.0,
        "the SRTP pair ran in the kernel\n{}",
        d.logs()
    );
    assert!(d.metric("gateway_xdp_forwarded_packets_total") >= 100.0);
    d.wait_cdr_cause("caller_hangup");
    let calls = calls(&d);
    assert_eq!(
        (
            calls[0]["media_security"]["caller"].as_str(),
            calls[0]["media_security"]["far"].as_str()
        ),
        (
            Some("srtp:AES_CM_128_HMAC_SHA1_80"),
            Some("srtp:AES_CM_128_HMAC_SHA1_80")
        ),
        "{calls}"
    );
    // The wire between the caller and the gateway: TLS only (no SIP in
    // clear), and RTP whose payloads decode to neither tone.
    let tcp = payloads(&pcap, "tcp");
    assert!(!tcp.is_empty(), "the capture saw the TLS signalling");
    for p in &tcp {
        let text = String::from_utf8_lossy(p);
        assert!(
            !text.contains("SIP/2.0") && !text.contains("INVITE"),
            "SIP in clear on the wire: {text}"
        );
    }
    let rtp: Vec<Vec<u8>> = payloads(&pcap, "udp")
        .into_iter()
        .filter(|p| p.len() > 12 + 160 && p[0] >> 6 == 2 && p[1] & 0x7f == 0)
        .collect();
    assert!(rtp.len() >= 100, "the capture saw the media: {}", rtp.len());
    let mut shares: Vec<f64> = rtp
        .iter()
        .map(|p| {
            let pcm: Vec<i16> = p[12..172]
                .iter()
                .map(|&b| media_userspace::g711::ulaw_decode(b))
                .collect();
            tone_share(&pcm, 440.0, 8000.0).max(tone_share(&pcm, 1000.0, 8000.0))
        })
        .collect();
    shares.sort_by(f64::total_cmp);
    let median = shares[shares.len() / 2];
    assert!(
        median < 0.2,
        "RTP payloads on the wire decode to a tone (share {median:.2}): not encrypted"
    );
}
