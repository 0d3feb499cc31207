//! RFC 3261 §18 against the real daemon: TCP framing, responses on the
//! same connection, connection reuse, keep-alives, idle limits, large
//! messages over UDP, oversize input, IPv6.

mod common;

use common::{Daemon, Opts};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn options(via_transport: &str, local: SocketAddr, to: SocketAddr, n: u32, extra: &str) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/{via_transport} {local};branch=z9hG4bKt{n}\r\nMax-Forwards: 70\r\nFrom: <sip:t@{local}>;tag=t{n}\r\nTo: <sip:{to}>\r\nCall-ID: t-{n}@test\r\nCSeq: {n} OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Reads until `count` complete responses (by Content-Length) arrived.
fn read_responses(s: &mut TcpStream, count: usize) -> Vec<String> {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && data.windows(4).filter(|w| w == b"\r\n\r\n").count() < count
    {
        if let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8_lossy(&data)
        .split("SIP/2.0 ")
        .filter(|p| !p.is_empty())
        .map(|p| format!("SIP/2.0 {p}"))
        .collect()
}

#[test]
fn tcp_answers_on_the_same_connection_and_reuses_it() {
    let d = Daemon::start("");
    let mut s = TcpStream::connect(d.sip_addr()).unwrap();
    let local = s.local_addr().unwrap();
    // Two requests in one write, the second split across two writes.
    let a = options("TCP", local, d.sip_addr(), 1, "");
    let b = options("TCP", local, d.sip_addr(), 2, "");
    s.write_all(format!("{a}{}", &b[..30]).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&b.as_bytes()[30..]).unwrap();
    let rs = read_responses(&mut s, 2);
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert!(rs[0].starts_with("SIP/2.0 200") && rs[0].contains("t-1@test"));
    assert!(rs[1].starts_with("SIP/2.0 200") && rs[1].contains("t-2@test"));
    assert!(rs[0].contains("Allow: ") && rs[0].contains("Accept: application/sdp"));
}

#[test]
fn tcp_keepalive_ping_gets_pong() {
    let d = Daemon::start("");
    let mut s = TcpStream::connect(d.sip_addr()).unwrap();
    s.write_all(b"\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"\r\n", "RFC 5626 pong");
}

#[test]
fn tcp_without_content_length_is_answered_400_closed_and_counted() {
    let d = Daemon::start("");
    let mut s = TcpStream::connect(d.sip_addr()).unwrap();
    let local = s.local_addr().unwrap();
    let msg = options("TCP", local, d.sip_addr(), 3, "").replace("Content-Length: 0\r\n", "");
    s.write_all(msg.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // RFC 3261 §18.3: the stream cannot be framed any further. The request
    // is answered 400 naming why, then the connection closes.
    let mut got = Vec::new();
    let closed = s.read_to_end(&mut got).is_ok();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("SIP/2.0 400 Bad Request (Content-Length is required"),
        "{text}"
    );
    assert!(text.contains("t-3@test"), "{text}");
    assert!(closed, "connection closed after the 400");
    assert_eq!(
        d.metric("gateway_sip_rejections_total{reason=\"framing\"}"),
        1.0
    );
}

#[test]
fn idle_tcp_connections_are_closed() {
    let d = Daemon::start_opts(Opts {
        sip_extra: "tcp_idle_timeout_secs = 1",
        ..Opts::default()
    });
    let mut s = TcpStream::connect(d.sip_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(s.read(&mut buf), Ok(0)),
        "idle connection closed by the daemon"
    );
}

#[test]
fn large_udp_request_is_answered_and_oversize_is_dropped() {
    let d = Daemon::start_opts(Opts {
        sip_extra: "max_message_size = 20000",
        ..Opts::default()
    });
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let local = sock.local_addr().unwrap();
    // §18.1.1: well beyond the 1300-byte MTU guideline, within our limit.
    let big = format!("X-Padding: {}\r\n", "a".repeat(8000));
    sock.send_to(
        options("UDP", local, d.sip_addr(), 4, &big).as_bytes(),
        d.sip_addr(),
    )
    .unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).expect("answer to a large request");
    assert!(buf[..n].starts_with(b"SIP/2.0 200"));
    let huge = format!("X-Padding: {}\r\n", "a".repeat(30000));
    sock.send_to(
        options("UDP", local, d.sip_addr(), 5, &huge).as_bytes(),
        d.sip_addr(),
    )
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "oversize datagram dropped"
    );
    assert_eq!(
        d.metric("gateway_sip_rejections_total{reason=\"too_large\"}"),
        1.0
    );
}

#[test]
fn ipv6_udp_and_tcp() {
    let d = Daemon::start_opts(Opts {
        listen: Some(r#"["udp:127.0.0.1:{port}", "udp:[::1]:{port}", "tcp:[::1]:{port}"]"#),
        extra: "",
        ..Opts::default()
    });
    let v6: SocketAddr = format!("[::1]:{}", d.sip_port).parse().unwrap();
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let local = sock.local_addr().unwrap();
    sock.send_to(options("UDP", local, v6, 6, "").as_bytes(), v6)
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, from) = sock.recv_from(&mut buf).expect("IPv6 UDP answer");
    assert_eq!(from, v6);
    assert!(buf[..n].starts_with(b"SIP/2.0 200"));

    let mut s = TcpStream::connect(v6).unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(options("TCP", local, v6, 7, "").as_bytes())
        .unwrap();
    let rs = read_responses(&mut s, 1);
    assert!(rs[0].starts_with("SIP/2.0 200"), "{rs:?}");
}

#[test]
fn a_slow_sender_is_closed_at_the_message_deadline() {
    let d = Daemon::start_opts(Opts {
        sip_extra: "tcp_message_timeout_secs = 1",
        ..Opts::default()
    });
    let mut s = TcpStream::connect(d.sip_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = s.local_addr().unwrap();
    let msg = options("TCP", local, d.sip_addr(), 8, "");
    // One byte every 100 ms: never idle, never whole in time.
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in msg.as_bytes().iter().take(60) {
        if s.write_all(std::slice::from_ref(b)).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut buf = [0u8; 64];
    closed |= matches!(s.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the trickling connection was closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        d.metric("gateway_sip_rejections_total{reason=\"tcp_message_timeout\"}"),
        1.0
    );
}

#[test]
fn one_host_cannot_hold_every_tcp_slot() {
    let d = Daemon::start_opts(Opts {
        sip_extra: "max_tcp_connections_per_source = 2",
        ..Opts::default()
    });
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(d.sip_addr()).unwrap())
        .collect();
    // Accepted ones are registered once the acceptor saw them.
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(d.sip_addr()).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(third.read(&mut buf), Ok(0) | Err(_)),
        "the third connection from one host is closed"
    );
    assert_eq!(
        d.metric("gateway_sip_rejections_total{reason=\"tcp_source_limit\"}"),
        1.0
    );
    // The held ones still work.
    let mut s = &held[0];
    let local = s.local_addr().unwrap();
    s.write_all(options("TCP", local, d.sip_addr(), 9, "").as_bytes())
        .unwrap();
    assert!(read_responses(&mut held[0].try_clone().unwrap(), 1)[0].starts_with("SIP/2.0 200"));
}

/// Sends `count` OPTIONS from `sock` as fast as it can, then collects the
/// answers until the daemon has been quiet for a while. Returns the
/// answers' status lines and how long the sending took.
fn burst_of_options(sock: &UdpSocket, to: SocketAddr, count: u32, tag: u32) -> (Vec<String>, f64) {
    let local = sock.local_addr().unwrap();
    let started = Instant::now();
    for n in 0..count {
        let m = options("UDP", local, to, tag * 10_000 + n, "");
        sock.send_to(m.as_bytes(), to).unwrap();
    }
    let sending = started.elapsed().as_secs_f64();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut answers = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => answers.push(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            Err(_) => break,
        }
    }
    (answers, sending)
}

#[test]
fn a_source_over_its_rate_is_dropped_unparsed_and_a_trunk_is_not() {
    let d = Daemon::start_opts(Opts {
        sip_extra: "source_requests_per_sec = 10",
        local_trunk: Some(r#"source_cidrs = ["127.0.0.1/32"]"#),
        ..Opts::default()
    });
    // 127.0.0.2 is no trunk: a burst of twice its rate, then its rate.
    let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
    let (answers, secs) = burst_of_options(&stranger, d.sip_addr(), 200, 1);
    let most = 20 + (10.0 * secs).ceil() as usize;
    assert!(
        (20..=most).contains(&answers.len()),
        "{} answers in {secs:.3} s",
        answers.len()
    );
    assert!(
        answers.iter().all(|a| a.starts_with("SIP/2.0 403")),
        "{answers:?}"
    );
    assert_eq!(
        d.metric("gateway_sip_rejections_total{reason=\"source_rate\"}") as usize,
        200 - answers.len(),
        "every message not answered was dropped by the rate, and counted"
    );
    // The trunk is not limited, and the stranger's flood took nothing from it.
    let carrier = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (answers, _) = burst_of_options(&carrier, d.sip_addr(), 200, 2);
    assert_eq!(answers.len(), 200);
    assert!(answers.iter().all(|a| a.starts_with("SIP/2.0 200")));
}

#[test]
fn a_trunk_with_a_rate_shares_one_bucket() {
    let d = Daemon::start_opts(Opts {
        local_trunk: Some(
            r#"source_cidrs = ["127.0.0.0/8"]
requests_per_sec = 5"#,
        ),
        ..Opts::default()
    });
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.3:0").unwrap();
    // The readiness probe spent a token: wait until the bucket is full.
    std::thread::sleep(Duration::from_millis(2100));
    let started = Instant::now();
    let (from_a, _) = burst_of_options(&a, d.sip_addr(), 50, 3);
    let (from_b, _) = burst_of_options(&b, d.sip_addr(), 50, 4);
    let secs = started.elapsed().as_secs_f64();
    let total = from_a.len() + from_b.len();
    // Ten at once, then five a second across both addresses.
    assert!(from_a.len() >= 10, "{from_a:?}");
    assert!(
        total <= 10 + (5.0 * secs).ceil() as usize,
        "{total} answers in {secs:.3} s"
    );
    assert!(
        from_a
            .iter()
            .chain(&from_b)
            .all(|a| a.starts_with("SIP/2.0 200"))
    );
}

/// RFC 5923: a peer's request over TCP whose Via names its listening port
/// with `alias` lets the daemon send its own requests to that port over
/// the same connection: a call forwarded to the peer's listener arrives on
/// the connection the peer opened, and the listener gets no connection.
/// A Via naming another host is not taken.
#[test]
fn a_via_alias_lets_the_daemon_reuse_the_peers_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // The phone at 127.0.0.1 is no trunk (carriers' connections are
    // never aliased); the caller placing the call is, at 127.0.0.2.
    let d = Daemon::start_opts(Opts {
        local_trunk: Some(r#"source_cidrs = ["127.0.0.2/32"]"#),
        extra: &format!(
            r#"
[[numbers]]
pattern = "+15557000040"
account = "acct"
route = "forward"
target = "sip:+15557000040@127.0.0.1:{port};transport=tcp"
"#
        ),
        ..Opts::default()
    });
    let mut s = TcpStream::connect(d.sip_addr()).unwrap();
    let listening = SocketAddr::from(([127, 0, 0, 1], port));
    // Another host's address as an alias is ignored; our own is taken.
    let other = SocketAddr::from(([127, 0, 0, 2], port));
    s.write_all(
        options("TCP", other, d.sip_addr(), 1, "")
            .replace(";branch", ";alias;branch")
            .as_bytes(),
    )
    .unwrap();
    s.write_all(
        options("TCP", listening, d.sip_addr(), 2, "")
            .replace(";branch", ";alias;branch")
            .as_bytes(),
    )
    .unwrap();
    // Unknown, the phone gets its stateless 403s; the alias stands.
    assert_eq!(read_responses(&mut s, 2).len(), 2);
    // A call to the forward number (over UDP): its far INVITE must come
    // over the connection we opened.
    let caller = UdpSocket::bind("127.0.0.2:0").unwrap();
    let me = caller.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:+15557000040@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKal;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+14155550100@{me}>;tag=al\r\nTo: <sip:+15557000040@{to}>\r\nCall-ID: alias-call@test\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        to = d.sip_addr()
    );
    caller.send_to(invite.as_bytes(), d.sip_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !String::from_utf8_lossy(&got).contains("INVITE sip:") {
        if let Ok(n) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(
        text.contains("INVITE sip:+15557000040@127.0.0.1:"),
        "the far INVITE came over the peer's connection: {text}\n{}",
        d.logs()
    );
    assert!(
        listener.accept().is_err(),
        "no second connection to the peer's listener"
    );
}
