//! SIP over TLS end to end: the daemon's TLS listener answers over TLS
//! and refuses cleartext on its port, a certificate replaced on disk
//! reaches new connections while open ones go on, and a call forwarded
//! to a TLS trunk (a second daemon) is verified against the trunk's CA
//! and never sent in clear when verification fails; baresip calls over
//! TLS. Certificates come from openssl, as an operator's would.

mod common;

use common::pki::pki;

use common::{Caller, Daemon, Opts};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TLS client trusting `ca` only, as a carrier's or phone's would.
fn client(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in sip_daemon::tls::read_certs(ca).unwrap() {
        roots.add(c).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(to: SocketAddr, ca: &Path) -> Tls {
    let tcp = TcpStream::connect(to).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(to.ip().into());
    let conn = rustls::ClientConnection::new(client(ca), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.flush().unwrap();
    s
}

/// Sends an OPTIONS over `s` and reads the answer's first line and Via.
fn options(s: &mut impl ReadWrite, to: SocketAddr, n: u32) -> String {
    let local = "127.0.0.1:5099";
    let msg = format!(
        "OPTIONS sips:{to} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls{n}\r\nMax-Forwards: 70\r\nFrom: <sips:t@{local}>;tag=t{n}\r\nTo: <sips:{to}>\r\nCall-ID: tls-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(msg.as_bytes()).unwrap();
    s.flush().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn tls_daemon(cert: &Path, key: &Path, extra: &str) -> (Daemon, SocketAddr) {
    Daemon::start_tls(
        Opts {
            extra,
            ..Opts::default()
        },
        cert,
        key,
    )
}

#[test]
fn the_tls_listener_answers_over_tls_refuses_cleartext_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "one", "IP:127.0.0.1");
    let (d, tls) = tls_daemon(&cert, &key, "");

    let mut s = connect(tls, &ca);
    let answer = options(&mut s, tls, 1);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}\n{}", d.logs());
    assert!(answer.contains("Via: SIP/2.0/TLS"), "{answer}");
    let first_leaf = s.conn.peer_certificates().unwrap()[0].to_vec();

    // Cleartext SIP on the TLS port gets no SIP answer: the handshake fails.
    let mut plain = TcpStream::connect(tls).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let answer = options(&mut plain, tls, 2);
    assert!(!answer.contains("SIP/2.0"), "cleartext answered: {answer}");
    let until = Instant::now() + Duration::from_secs(5);
    while d.metric("gateway_sip_rejections_total{reason=\"tls_handshake\"}") < 1.0 {
        assert!(Instant::now() < until, "the failed handshake is counted");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A new pair from another CA, renamed over the old files.
    let (ca2, cert2, key2) = pki(dir.path(), "two", "IP:127.0.0.1");
    std::fs::rename(&cert2, &cert).unwrap();
    std::fs::rename(&key2, &key).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let tcp = TcpStream::connect(tls).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(tls.ip().into());
        let conn = rustls::ClientConnection::new(client(&ca2), name).unwrap();
        let mut n = rustls::StreamOwned::new(conn, tcp);
        if n.flush().is_ok() && n.conn.peer_certificates().is_some() {
            break n;
        }
        assert!(Instant::now() < until, "the new certificate is served");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut fresh = fresh;
    assert_ne!(
        fresh.conn.peer_certificates().unwrap()[0].to_vec(),
        first_leaf
    );
    assert!(options(&mut fresh, tls, 3).starts_with("SIP/2.0 200"));
    // The connection made before the reload goes on.
    assert!(options(&mut s, tls, 4).starts_with("SIP/2.0 200"));
}

#[test]
fn a_call_to_a_tls_trunk_is_verified_and_never_sent_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    // Carriers: daemons with TLS listeners whose certificates name
    // carrier.example, answering with their echo route.
    let (ca, cert, key) = pki(dir.path(), "carrier", "DNS:carrier.example");
    let (carrier, carrier_tls) = tls_daemon(&cert, &key, "");
    // Where the impostor trunk points: a bare listener that keeps what
    // arrives and hangs up, so cleartext would show as SIP text there.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_tls = other.local_addr().unwrap();
    let seen = std::thread::spawn(move || {
        let (mut c, _) = other.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).unwrap_or(0);
        buf.truncate(n);
        buf
    });
    // The gateway: its own TLS listener (its address goes in Via and
    // Contact), a trunk that expects carrier.example under the carriers'
    // CA, and one whose expected name the certificate does not carry.
    let (_, gw_cert, gw_key) = pki(dir.path(), "gw", "IP:127.0.0.1");
    let trunk = |name: &str, addr: SocketAddr, server_name: &str, number: &str| {
        format!(
            r#"
[[trunks]]
name = "{name}"
outbound_address = "{addr}"
transport = "tls"
tls = {{ server_name = "{server_name}", ca_file = "{}" }}

[[numbers]]
pattern = "{number}"
account = "acct"
route = "forward"
target = "sips:+15550001234@{addr}"
trunk = "{name}"
"#,
            ca.display()
        )
    };
    let extra = trunk("secure", carrier_tls, "carrier.example", "+15551110000")
        + &trunk("impostor", other_tls, "other.example", "+15551110001");
    let (gw, _) = tls_daemon(&gw_cert, &gw_key, &extra);

    // Verified: the call is answered by the carrier over TLS.
    let mut c = Caller::new(gw.sip_addr(), "tls-trunk-ok").dialing("+15551110000");
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rtp.local_addr().unwrap().port();
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.invite(port)));
    assert!(
        answered.is_ok(),
        "no 200\n--- gateway\n{}\n--- carrier\n{}",
        gw.logs(),
        carrier.logs()
    );
    c.bye();
    assert_eq!(
        carrier.metric("gateway_sip_requests_total{method=\"INVITE\"}"),
        1.0,
        "{}",
        gw.logs()
    );

    // Not verified: the caller hears it at once (no 32 s Timer B), and
    // all the impostor got is a TLS ClientHello naming the expected
    // server: no SIP in clear.
    let mut c = Caller::new(gw.sip_addr(), "tls-trunk-bad").dialing("+15551110001");
    let status = c.final_status(rtp.local_addr().unwrap().port());
    assert!(status >= 400, "refused, not {status}");
    assert!(gw.metric("gateway_sip_rejections_total{reason=\"tls_handshake\"}") >= 1.0);
    let hello = seen.join().unwrap();
    assert_eq!(
        hello.first(),
        Some(&0x16),
        "a TLS handshake record: {hello:?}"
    );
    assert!(
        hello
            .windows(b"other.example".len())
            .any(|w| w == b"other.example"),
        "SNI carries the expected name"
    );
    assert!(!hello.windows(6).any(|w| w == b"INVITE"), "no SIP in clear");
}

#[test]
fn expired_and_untrusted_carriers_and_cut_handshakes_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A carrier whose certificate expired yesterday, and one whose
    // certificate a CA the trunk does not trust signed.
    let (ca, old_cert, old_key) =
        common::pki::pki_for_days(dir.path(), "old", "DNS:carrier.example", -1);
    let (expired, expired_tls) = tls_daemon(&old_cert, &old_key, "");
    let (_, rogue_cert, rogue_key) = pki(dir.path(), "rogue", "DNS:carrier.example");
    let (rogue, rogue_tls) = tls_daemon(&rogue_cert, &rogue_key, "");
    let (_, gw_cert, gw_key) = pki(dir.path(), "gw", "IP:127.0.0.1");
    let trunk = |name: &str, addr: SocketAddr, number: &str| {
        format!(
            r#"
[[trunks]]
name = "{name}"
outbound_address = "{addr}"
transport = "tls"
tls = {{ server_name = "carrier.example", ca_file = "{}" }}

[[numbers]]
pattern = "{number}"
account = "acct"
route = "forward"
target = "sips:+15550001234@{addr}"
trunk = "{name}"
"#,
            ca.display()
        )
    };
    let extra =
        trunk("expired", expired_tls, "+15551110002") + &trunk("rogue", rogue_tls, "+15551110003");
    let (gw, gw_tls) = tls_daemon(&gw_cert, &gw_key, &extra);
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, number) in ["+15551110002", "+15551110003"].into_iter().enumerate() {
        let mut c = Caller::new(gw.sip_addr(), &format!("bad-cert-{i}")).dialing(number);
        let t0 = Instant::now();
        let status = c.final_status(rtp.local_addr().unwrap().port());
        assert!(status >= 400, "{number}: refused, not {status}");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "at once, not Timer B"
        );
        assert!(
            gw.metric("gateway_sip_rejections_total{reason=\"tls_handshake\"}") >= (i + 1) as f64
        );
    }
    for d in [&expired, &rogue] {
        assert_eq!(
            d.metric("gateway_sip_requests_total{method=\"INVITE\"}"),
            0.0,
            "nothing reached a carrier that failed verification"
        );
    }
    // A handshake cut midway (half a ClientHello, then gone) costs the
    // listener a counted refusal and nothing else.
    let before = gw.metric("gateway_sip_rejections_total{reason=\"tls_handshake\"}");
    {
        let mut cut = TcpStream::connect(gw_tls).unwrap();
        cut.write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
        cut.write_all(&[0x5a; 20]).unwrap();
    }
    let until = Instant::now() + Duration::from_secs(10);
    while gw.metric("gateway_sip_rejections_total{reason=\"tls_handshake\"}") < before + 1.0 {
        assert!(Instant::now() < until, "the cut handshake is counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let gw_ca = dir.path().join("gw-ca.pem");
    let mut s = connect(gw_tls, &gw_ca);
    assert!(
        options(&mut s, gw_tls, 7).starts_with("SIP/2.0 200"),
        "still served"
    );
}

#[test]
fn handshakes_under_way_hold_their_slots_of_the_connection_caps() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "caps", "IP:127.0.0.1");
    let tls_port = common::free_port();
    let listen = format!(r#"["udp:{{ip}}:{{port}}", "tls:{{ip}}:{tls_port}"]"#);
    let sip_extra = format!(
        "max_tcp_connections_per_source = 2\n\n[sip.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let d = Daemon::start_opts(Opts {
        listen: Some(&listen),
        sip_extra: &sip_extra,
        ..Opts::default()
    });
    let tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
    // Two connections that never say hello hold both slots...
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(tls).unwrap()).collect();
    let until = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        // ...so a third is closed at once, before any handshake.
        let mut third = TcpStream::connect(tls).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut b = [0u8; 1];
        if matches!(third.read(&mut b), Ok(0)) {
            break true;
        }
        if Instant::now() > until {
            break false;
        }
    };
    assert!(refused, "a third connection got a slot");
    assert!(d.metric("gateway_sip_rejections_total{reason=\"tcp_source_limit\"}") >= 1.0);
    drop(idle);
    // Once they are gone, a real client is served again.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let tcp = TcpStream::connect(tls).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(tls.ip().into());
        let conn = rustls::ClientConnection::new(client(&ca), name).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        if s.flush().is_ok() && options(&mut s, tls, 9).starts_with("SIP/2.0 200") {
            break;
        }
        assert!(
            Instant::now() < until,
            "served again once the slots are free"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn baresip_calls_over_tls_and_hears_its_own_voice_back() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "phone", "IP:127.0.0.1");
    let (d, tls) = tls_daemon(&cert, &key, "");
    // A real phone: baresip with SIP over TLS to the echo route (the TLS
    // port speaks nothing else: an established call is a TLS one),
    // trusting the test CA.
    let input = common::baresip::tone(1000.0, 8000, 4000, 8000.0);
    let (rate, heard) = common::baresip::baresip_dial(
        None,
        "127.0.0.1",
        &d,
        &format!("sip:+15550001234@{tls};transport=tls"),
        &format!("sip_cafile {}\n", ca.display()),
        "PCMU/8000/1",
        8000,
        &input,
        3,
    );
    assert_eq!(rate, 8000);
    let (frames, share) = common::baresip::tone_in_frames(&heard, 1000.0, 8000);
    assert!(frames >= 50, "baresip heard {frames} frames of sound");
    assert!(share > 0.9, "its 1 kHz came back: {share:.2}");
}
