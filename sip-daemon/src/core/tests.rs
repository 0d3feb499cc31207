//! Call flows on virtual time: recorded messages in, outputs checked.

use super::*;
use crate::sip::digest::{Algorithm, Challenge, Credentials, ha1};
use crate::sip::parse::{Framing, parse};
use domain::model::{BlockedNumber, Number, RouteKind, SipUser, Trunk};

const CARRIER: &str = "127.0.0.1:5061";
const LOCAL: &str = "127.0.0.1:5060";

fn routing() -> RoutingTable {
    let num = |p: &str, route: RouteKind, max: Option<u32>| Number {
        pattern: p.into(),
        account_id: "acme".into(),
        route,
        target: None,
        dialect: None,
        params: None,
        trunk: None,
        max_calls: max,
        fallback: None,
        voice_webhook: None,
        sms_webhook: None,
        status_webhook: None,
        webhook_format: Default::default(),
        media_security: Default::default(),
    };
    let forward = |p: &str, target: &str, trunk: Option<&str>| Number {
        target: Some(target.into()),
        trunk: trunk.map(str::to_string),
        ..num(p, RouteKind::Forward, None)
    };
    let (t, problems) = RoutingTable::build(
        vec![
            Trunk {
                name: "local".into(),
                source_cidrs: vec!["127.0.0.0/8".into()],
                outbound_address: None,
                transport: "udp".into(),
                username: None,
                password: None,
                max_calls: Some(100),
                transfer: None,
                account_id: None,
                requests_per_sec: None,
                tls: Default::default(),
                media_security: Default::default(),
                srtp_cleartext_keying: false,
            },
            Trunk {
                name: "carrier".into(),
                source_cidrs: vec!["192.0.2.20/32".into()],
                outbound_address: Some("192.0.2.20:5060".into()),
                transport: "udp".into(),
                username: Some("gw".into()),
                password: Some("trunk-secret".into()),
                max_calls: None,
                transfer: Some("refer".into()),
                account_id: None,
                requests_per_sec: None,
                tls: Default::default(),
                media_security: Default::default(),
                srtp_cleartext_keying: false,
            },
            // A trunk that requires SRTP and lets its keys cross UDP.
            Trunk {
                name: "secure".into(),
                source_cidrs: vec!["192.0.2.30/32".into()],
                outbound_address: Some("192.0.2.30:5060".into()),
                transport: "udp".into(),
                username: None,
                password: None,
                max_calls: None,
                transfer: None,
                account_id: None,
                requests_per_sec: None,
                tls: Default::default(),
                media_security: domain::model::MediaSecurity::Srtp,
                srtp_cleartext_keying: true,
            },
            // A trunk whose carrier wants plain RTP only.
            Trunk {
                name: "plain-only".into(),
                source_cidrs: vec!["192.0.2.32/32".into()],
                outbound_address: Some("192.0.2.32:5060".into()),
                transport: "udp".into(),
                username: None,
                password: None,
                max_calls: None,
                transfer: None,
                account_id: None,
                requests_per_sec: None,
                tls: Default::default(),
                media_security: domain::model::MediaSecurity::Rtp,
                srtp_cleartext_keying: false,
            },
            // A trunk that leaves transfers to the B2BUA.
            Trunk {
                name: "direct".into(),
                source_cidrs: vec!["192.0.2.21/32".into()],
                outbound_address: Some("192.0.2.21:5060".into()),
                transport: "udp".into(),
                username: None,
                password: None,
                max_calls: None,
                transfer: None,
                account_id: None,
                requests_per_sec: None,
                tls: Default::default(),
                media_security: Default::default(),
                srtp_cleartext_keying: false,
            },
        ],
        vec![
            num("+1555000*", RouteKind::Echo, None),
            num("+15550009999", RouteKind::Echo, Some(1)),
            num("+1666*", RouteKind::Stream, None),
            forward("+15550000002", "sip:+15550000002@192.0.2.10:5070", None),
            forward(
                "+15550000003",
                "sip:+4930123@carrier.example",
                Some("carrier"),
            ),
            Number {
                fallback: Some("sip:+15559990000@192.0.2.40:5060".into()),
                ..forward("+15550000004", "sip:+15550000004@192.0.2.10:5070", None)
            },
            Number {
                media_security: domain::model::MediaSecurity::Srtp,
                ..num("+1444000*", RouteKind::Echo, None)
            },
            Number {
                media_security: domain::model::MediaSecurity::Rtp,
                ..num("+1444100*", RouteKind::Echo, None)
            },
            forward(
                "+15550000006",
                "sip:+4930555@secure.example",
                Some("secure"),
            ),
            forward(
                "+15550000007",
                "sip:+4930777@plain.example",
                Some("plain-only"),
            ),
            Number {
                voice_webhook: Some("http://127.0.0.1:9/voice".into()),
                sms_webhook: None,
                status_webhook: None,
                webhook_format: Default::default(),
                ..num("+1888*", RouteKind::Echo, None)
            },
            Number {
                target: Some("ws://127.0.0.1:9/ai".into()),
                fallback: Some("sip:+15559990000@192.0.2.40:5060".into()),
                ..num("+1777*", RouteKind::Stream, None)
            },
        ],
        vec![BlockedNumber {
            id: "b1".into(),
            account_id: "acme".into(),
            number_pattern: None,
            caller_pattern: "+1900*".into(),
        }],
        vec![SipUser {
            username: "alice".into(),
            account_id: "acme".into(),
            realm: "voice-gateway".into(),
            ha1_md5: ha1(Algorithm::Md5, "alice", "voice-gateway", "secret"),
            ha1_sha256: ha1(Algorithm::Sha256, "alice", "voice-gateway", "secret"),
        }],
    );
    assert!(problems.is_empty());
    t
}

struct Harness {
    core: Core,
    t0: Instant,
    now: Instant,
    sent: Vec<(Peer, String)>,
    media: Vec<MediaCommand>,
    cdr: Vec<CdrEvent>,
    regs: Vec<RegistrationChange>,
    /// Webhook requests the core asked for.
    hooks: Vec<Output>,
}

fn peer(transport: TransportKind, remote: &str) -> Peer {
    Peer {
        transport,
        local: LOCAL.parse().unwrap(),
        remote: remote.parse().unwrap(),
        conn: transport.is_reliable().then_some(7),
    }
}

impl Harness {
    fn new() -> Harness {
        Harness::new_with(|_| {})
    }

    /// A core whose config `f` adjusts.
    fn new_with(f: impl FnOnce(&mut CoreConfig)) -> Harness {
        let t0 = Instant::now();
        let mut cfg = CoreConfig {
            listeners: vec![(TransportKind::Udp, LOCAL.parse().unwrap())],
            ..CoreConfig::default()
        };
        f(&mut cfg);
        let core = Core::new(
            cfg,
            Arc::new(routing()),
            Metrics::unregistered(),
            WallClock {
                base: t0,
                base_unix_ms: 1_700_000_000_000,
            },
            42,
        );
        Harness {
            core,
            t0,
            now: t0,
            sent: vec![],
            media: vec![],
            cdr: vec![],
            regs: vec![],
            hooks: vec![],
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit(t) => self
                    .sent
                    .push((t.peer, String::from_utf8(t.bytes.to_vec()).unwrap())),
                Output::Media(m) => self.media.push(m),
                Output::Cdr(c) => self.cdr.push(c),
                Output::Registration(r) => self.regs.push(r),
                o @ (Output::VoiceWebhook { .. }
                | Output::StatusWebhook { .. }
                | Output::SmsReceived { .. }
                | Output::SmsQueued(_)
                | Output::SmsStatus { .. }
                | Output::SourceLockedOut { .. }
                | Output::ReserveCapacity { .. }
                | Output::ReleaseCapacity { .. }
                | Output::ControlReply { .. }
                | Output::Recording(_)) => self.hooks.push(o),
            }
        }
    }

    fn recv_from(&mut self, p: Peer, msg: &str) {
        let framing = if p.transport.is_reliable() {
            Framing::Stream
        } else {
            Framing::Datagram
        };
        let parsed = parse(msg.as_bytes(), framing);
        self.core.handle_inbound(self.now, p, parsed);
        self.drain();
    }

    fn recv(&mut self, msg: &str) {
        self.recv_from(peer(TransportKind::Udp, CARRIER), msg);
    }

    /// Advances virtual time to `t0 + ms`, firing timers on the way.
    fn advance_to(&mut self, ms: u64) {
        let target = self.t0 + Duration::from_millis(ms);
        while let Some(d) = self.core.poll_timeout() {
            if d > target {
                break;
            }
            self.now = self.now.max(d);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
    }

    fn media_opened(&mut self, port: u16) {
        let leg = match self.media.last() {
            Some(MediaCommand::Open { leg, .. }) => *leg,
            other => panic!("expected an Open command, got {other:?}"),
        };
        self.core.handle_media(
            self.now,
            MediaEvent::Opened {
                leg,
                local: SocketAddr::new("127.0.0.1".parse().unwrap(), port),
            },
        );
        self.drain();
    }

    /// The relay of `legs` is bound on 127.0.0.1 `ports`.
    fn relay_opened(&mut self, legs: [u64; 2], ports: [u16; 2]) {
        let locals = ports.map(|p| SocketAddr::new("127.0.0.1".parse().unwrap(), p));
        self.core
            .handle_media(self.now, MediaEvent::RelayOpened { legs, locals });
        self.drain();
    }

    fn take_sent(&mut self) -> Vec<String> {
        self.sent.drain(..).map(|(_, s)| s).collect()
    }

    fn statuses(&mut self) -> Vec<u16> {
        self.take_sent()
            .iter()
            .filter_map(|s| s.strip_prefix("SIP/2.0 ").and_then(|r| r[..3].parse().ok()))
            .collect()
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
        .collect()
}

const SDP: &str = "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n";

fn invite(to: &str, call_id: &str, branch: &str, extra: &str, body: &str) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "INVITE sip:{to}@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Caller\" <sip:+15551230000@127.0.0.1>;tag=caller1\r\n\
To: <sip:{to}@127.0.0.1>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:+15551230000@127.0.0.1:5061>\r\n\
{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn in_dialog(
    method: &str,
    call_id: &str,
    to_tag: &str,
    cseq: u32,
    branch: &str,
    extra: &str,
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:+15550001@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Caller\" <sip:+15551230000@127.0.0.1>;tag=caller1\r\n\
To: <sip:+15550001@127.0.0.1>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn to_tag_of(resp: &str) -> String {
    let to = header(resp, "To").unwrap();
    to.split(";tag=").nth(1).unwrap().to_string()
}

/// Runs INVITE → 200 and returns the 200.
fn answered_call(h: &mut Harness, call_id: &str, extra: &str) -> String {
    h.recv(&invite("+15550001", call_id, "z9hG4bK-inv1", extra, SDP));
    assert_eq!(
        h.statuses(),
        Vec::<u16>::new(),
        "no 100 when the answer is quick"
    );
    assert!(matches!(h.media.last(), Some(MediaCommand::Open { .. })));
    h.media_opened(30000);
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with("SIP/2.0 200 OK\r\n"), "{}", sent[0]);
    sent[0].clone()
}

#[test]
fn options_keepalive_from_trunk() {
    let mut h = Harness::new();
    h.recv("OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-o1\r\nMax-Forwards: 70\r\nFrom: <sip:carrier@127.0.0.1>;tag=o\r\nTo: <sip:127.0.0.1>\r\nCall-ID: opt\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert!(r.starts_with("SIP/2.0 200 OK"));
    assert_eq!(header(r, "Allow"), Some(ALLOW));
    assert_eq!(header(r, "Accept"), Some("application/sdp"));
    assert_eq!(header(r, "Supported"), Some("timer"));
    assert!(header(r, "To").unwrap().contains(";tag="));
}

#[test]
fn unknown_source_gets_403_and_is_counted() {
    let mut h = Harness::new();
    h.recv_from(
        peer(TransportKind::Udp, "198.51.100.9:5060"),
        &invite("+15550001", "acl", "z9hG4bK-acl", "", SDP)
            .replace("127.0.0.1:5061", "198.51.100.9:5060"),
    );
    assert_eq!(h.statuses(), vec![403]);
    assert_eq!(h.core.metrics.rejection_count("acl"), 1);
    assert!(h.cdr.is_empty(), "no record for unauthorised sources");
    assert!(h.media.is_empty());
}

#[test]
fn echo_call_full_flow_with_cdr() {
    let mut h = Harness::new();
    let ok = answered_call(&mut h, "call-1", "");
    let tag = to_tag_of(&ok);
    assert!(ok.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{ok}");
    assert!(
        header(&ok, "Contact")
            .unwrap()
            .starts_with("<sip:+15550001@127.0.0.1:5060>")
    );
    assert!(
        header(&ok, "Via").unwrap().contains("rport=5061"),
        "rport filled in: {ok}"
    );
    // ACK then BYE after 10 s.
    h.recv(&in_dialog("ACK", "call-1", &tag, 1, "z9hG4bK-ack1", "", ""));
    assert!(h.take_sent().is_empty());
    h.advance_to(10_000);
    assert!(
        h.take_sent().is_empty(),
        "no 2xx retransmission after the ACK"
    );
    h.recv(&in_dialog("BYE", "call-1", &tag, 2, "z9hG4bK-bye1", "", ""));
    assert_eq!(h.statuses(), vec![200]);
    assert!(matches!(h.media.last(), Some(MediaCommand::Close { .. })));
    assert_eq!(h.cdr.len(), 3);
    match &h.cdr[0] {
        CdrEvent::Started(r) => {
            assert_eq!(r.to_number, "+15550001");
            assert_eq!(r.from_number, "+15551230000");
            assert_eq!(r.trunk.as_deref(), Some("local"));
            assert_eq!(r.account_id.as_deref(), Some("acme"));
            assert_eq!(r.media_mode, "echo");
            assert_eq!(r.invite_at, 1_700_000_000_000);
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(&h.cdr[1], CdrEvent::Answered { .. }));
    match &h.cdr[2] {
        CdrEvent::Ended {
            cause,
            sip_status,
            duration_ms,
            ..
        } => {
            assert_eq!(cause, "caller_hangup");
            assert_eq!(*sip_status, 200);
            assert_eq!(*duration_ms, 10_000);
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(h.core.active_calls(), 0);
    // The BYE retransmitted gets the same 200 from the transaction.
    h.recv(&in_dialog("BYE", "call-1", &tag, 2, "z9hG4bK-bye1", "", ""));
    assert_eq!(h.statuses(), vec![200]);
    // A BYE for the gone dialog gets 481.
    h.recv(&in_dialog("BYE", "call-1", &tag, 3, "z9hG4bK-bye2", "", ""));
    assert_eq!(h.statuses(), vec![481]);
}

#[test]
fn invite_retransmission_is_absorbed() {
    let mut h = Harness::new();
    let inv = invite("+15550001", "retx", "z9hG4bK-r1", "", SDP);
    h.recv(&inv);
    assert_eq!(h.statuses(), Vec::<u16>::new());
    // §17.2.1: no answer within 200 ms → 100 Trying.
    h.advance_to(199);
    assert_eq!(h.statuses(), Vec::<u16>::new());
    h.advance_to(200);
    assert_eq!(h.statuses(), vec![100]);
    h.recv(&inv);
    assert_eq!(
        h.statuses(),
        vec![100],
        "the 100 is resent, nothing else happens"
    );
    assert_eq!(h.media.len(), 1);
}

#[test]
fn unacked_2xx_is_retransmitted_then_bye() {
    let mut h = Harness::new();
    answered_call(&mut h, "noack", "");
    h.advance_to(31_000);
    let retrans = h.take_sent();
    // T1 doubling to T2: 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500.
    assert_eq!(retrans.len(), 9);
    assert!(retrans.iter().all(|r| r.starts_with("SIP/2.0 200 OK")));
    h.advance_to(33_000);
    let sent = h.take_sent();
    assert!(
        sent.iter()
            .any(|s| s.starts_with("BYE sip:+15551230000@127.0.0.1:5061 SIP/2.0")),
        "{sent:?}"
    );
    match h.cdr.last() {
        Some(CdrEvent::Ended { cause, .. }) => assert_eq!(cause, "ack_timeout"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn reliable_transport_has_no_retransmissions() {
    let mut h = Harness::new();
    let p = peer(TransportKind::Tcp, "127.0.0.1:40001");
    h.recv_from(
        p,
        &invite("+15550001", "tcp1", "z9hG4bK-t1", "", SDP).replace("SIP/2.0/UDP", "SIP/2.0/TCP"),
    );
    assert_eq!(h.statuses(), Vec::<u16>::new());
    h.media_opened(30002);
    let sent: Vec<(Peer, String)> = h.sent.drain(..).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.conn, Some(7), "response on the same connection");
    assert!(
        header(&sent[0].1, "Contact")
            .unwrap()
            .contains(";transport=tcp")
    );
    h.advance_to(20_000);
    assert!(h.take_sent().is_empty());
}

#[test]
fn cancel_before_answer_gives_487() {
    let mut h = Harness::new();
    h.recv(&invite("+15550001", "cxl", "z9hG4bK-c1", "", SDP));
    h.advance_to(300);
    assert_eq!(h.statuses(), vec![100]);
    h.recv("CANCEL sip:+15550001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-c1;rport\r\nMax-Forwards: 70\r\nFrom: \"Caller\" <sip:+15551230000@127.0.0.1>;tag=caller1\r\nTo: <sip:+15550001@127.0.0.1>\r\nCall-ID: cxl\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.statuses(), vec![200, 487]);
    match h.cdr.last() {
        Some(CdrEvent::Ended {
            cause, sip_status, ..
        }) => {
            assert_eq!((cause.as_str(), *sip_status), ("canceled", 487));
        }
        e => panic!("{e:?}"),
    }
    // The media leg opening late is closed at once.
    h.media.clear();
    h.core.handle_media(
        h.now,
        MediaEvent::Opened {
            leg: 3,
            local: "127.0.0.1:30000".parse().unwrap(),
        },
    );
    h.drain();
    // ACK for the 487 is absorbed by the transaction.
    h.recv("ACK sip:+15550001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-c1;rport\r\nMax-Forwards: 70\r\nFrom: \"Caller\" <sip:+15551230000@127.0.0.1>;tag=caller1\r\nTo: <sip:+15550001@127.0.0.1>;tag=x\r\nCall-ID: cxl\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    h.advance_to(40_000);
    assert!(
        h.take_sent().is_empty(),
        "no 487 retransmissions after the ACK"
    );
    // CANCEL for nothing: 481.
    h.recv("CANCEL sip:+15550001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-none;rport\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=q\r\nTo: <sip:+15550001@127.0.0.1>\r\nCall-ID: none\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.statuses(), vec![481]);
}

#[test]
fn rejections_with_the_right_status() {
    let cases: Vec<(String, u16, &str)> = vec![
        (
            invite(
                "+15550001",
                "r1",
                "z9hG4bK-r1",
                "Require: 100rel, foo\r\n",
                SDP,
            ),
            420,
            "unsupported_extension",
        ),
        (
            invite("+15550001", "r2", "z9hG4bK-r2", "", SDP)
                .replace("application/sdp", "text/plain"),
            415,
            "unsupported_media",
        ),
        (
            invite("+15550001", "r3", "z9hG4bK-r3", "", SDP)
                .replace("Max-Forwards: 70", "Max-Forwards: 0"),
            483,
            "too_many_hops",
        ),
        (
            invite("+19999999", "r4", "z9hG4bK-r4", "", SDP),
            404,
            "not_found",
        ),
        (
            invite("+15550001", "r5", "z9hG4bK-r5", "", SDP)
                .replace("+15551230000@", "+19005551234@"),
            603,
            "blocked",
        ),
        (
            invite("+16660001", "r6", "z9hG4bK-r6", "", SDP),
            480,
            "route_unavailable",
        ),
        (
            invite(
                "+15550001",
                "r7",
                "z9hG4bK-r7",
                "",
                &SDP.replace("0 8 101", "18")
                    .replace("a=rtpmap:101 telephone-event/8000\r\n", ""),
            ),
            488,
            "not_acceptable",
        ),
        (
            invite(
                "+15550001",
                "r8",
                "z9hG4bK-r8",
                "Session-Expires: 30\r\n",
                SDP,
            ),
            422,
            "session_interval",
        ),
        (
            invite("+15550001", "r9", "z9hG4bK-r9", "", "v=0\r\nbogus\r\n"),
            400,
            "malformed_sdp",
        ),
        (
            invite("+15550001", "r10", "z9hG4bK-r10", "", SDP)
                .replace("INVITE sip", "FOO sip")
                .replace("1 INVITE", "1 FOO"),
            501,
            "unknown_method",
        ),
        (
            invite("+15550001", "r11", "z9hG4bK-r11", "", "")
                .replace("INVITE sip", "SUBSCRIBE sip")
                .replace("1 INVITE", "1 SUBSCRIBE"),
            405,
            "method_not_allowed",
        ),
        (
            invite(
                "+15550001",
                "r12",
                "z9hG4bK-r12",
                "Content-Encoding: gzip\r\n",
                SDP,
            ),
            415,
            "unsupported_media",
        ),
    ];
    for (msg, status, reason) in cases {
        let mut h = Harness::new();
        h.recv(&msg);
        let got: Vec<u16> = h.statuses().into_iter().filter(|s| *s != 100).collect();
        assert_eq!(got, vec![status], "{reason}");
        assert_eq!(
            h.core.metrics.rejection_count(reason),
            1,
            "{reason} counted"
        );
        assert_eq!(h.core.active_calls(), 0);
    }
}

#[test]
fn unsupported_answers_carry_their_headers() {
    let mut h = Harness::new();
    h.recv(&invite(
        "+15550001",
        "u1",
        "z9hG4bK-u1",
        "Require: foo\r\n",
        SDP,
    ));
    let r = h.take_sent().pop().unwrap();
    assert_eq!(header(&r, "Unsupported"), Some("foo"));
    h.recv(
        &invite("+15550001", "u2", "z9hG4bK-u2", "", SDP).replace("application/sdp", "text/plain"),
    );
    let r = h.take_sent().pop().unwrap();
    assert_eq!(header(&r, "Accept"), Some("application/sdp"));
    h.recv(&invite(
        "+15550001",
        "u3",
        "z9hG4bK-u3",
        "Session-Expires: 30\r\n",
        SDP,
    ));
    let r = h.take_sent().pop().unwrap();
    assert_eq!(header(&r, "Min-SE"), Some("90"));
}

#[test]
fn merged_request_gets_482() {
    let mut h = Harness::new();
    h.recv(&invite("+15550001", "m1", "z9hG4bK-path1", "", SDP));
    assert_eq!(h.statuses(), Vec::<u16>::new());
    h.recv(&invite("+15550001", "m1", "z9hG4bK-path2", "", SDP));
    assert_eq!(h.statuses(), vec![482]);
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn per_number_limit_gives_486() {
    let mut h = Harness::new();
    h.recv(&invite("+15550009999", "l1", "z9hG4bK-l1", "", SDP));
    h.recv(
        &invite("+15550009999", "l2", "z9hG4bK-l2", "", SDP).replace("tag=caller1", "tag=caller2"),
    );
    assert_eq!(h.statuses(), vec![486]);
    assert_eq!(h.core.metrics.rejection_count("capacity"), 1);
}

#[test]
fn draining_and_store_backlog_refuse_new_calls() {
    let mut h = Harness::new();
    h.core.set_cdr_saturated(true);
    h.recv(&invite("+15550001", "d1", "z9hG4bK-d1", "", SDP));
    assert_eq!(h.statuses(), vec![503]);
    h.core.set_cdr_saturated(false);
    answered_call(&mut h, "d2", "");
    h.core.start_drain();
    h.recv(&invite("+15550001", "d3", "z9hG4bK-d3", "", SDP).replace("tag=caller1", "tag=c3"));
    assert_eq!(h.statuses(), vec![503]);
    assert_eq!(h.core.active_calls(), 1, "the call in progress continues");
    h.core.hangup_all(h.now, "shutdown");
    h.drain();
    assert!(h.take_sent().iter().any(|s| s.starts_with("BYE ")));
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn reinvite_hold_and_unhold() {
    let mut h = Harness::new();
    let ok = answered_call(&mut h, "hold", "");
    let tag = to_tag_of(&ok);
    h.recv(&in_dialog("ACK", "hold", &tag, 1, "z9hG4bK-a1", "", ""));
    let held = SDP
        .replace("a=ptime:20\r\n", "a=ptime:20\r\na=sendonly\r\n")
        .replace("o=carrier 1 1", "o=carrier 1 2");
    h.recv(&in_dialog(
        "INVITE",
        "hold",
        &tag,
        2,
        "z9hG4bK-re1",
        "Contact: <sip:x@127.0.0.1:5061>\r\n",
        &held,
    ));
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    assert!(r.contains("a=recvonly\r\n"), "{r}");
    assert!(r.contains("m=audio 30000 "), "same port: {r}");
    assert!(r.contains("o=- 3 2 IN IP4"), "version bumped: {r}");
    match h.media.last() {
        Some(MediaCommand::Update { media, .. }) => assert!(!media.send),
        m => panic!("{m:?}"),
    }
    h.recv(&in_dialog("ACK", "hold", &tag, 2, "z9hG4bK-a2", "", ""));
    h.recv(&in_dialog(
        "INVITE",
        "hold",
        &tag,
        3,
        "z9hG4bK-re2",
        "",
        SDP,
    ));
    let r = h.take_sent().pop().unwrap();
    assert!(r.contains("a=sendrecv\r\n"), "{r}");
    match h.media.last() {
        Some(MediaCommand::Update { media, .. }) => assert!(media.send),
        m => panic!("{m:?}"),
    }
    // An older CSeq is out of order.
    h.recv(&in_dialog("UPDATE", "hold", &tag, 1, "z9hG4bK-up0", "", ""));
    assert_eq!(h.statuses(), vec![500]);
    // UPDATE without a body refreshes; OPTIONS and INFO in dialog answer 200.
    h.recv(&in_dialog("UPDATE", "hold", &tag, 5, "z9hG4bK-up1", "", ""));
    h.recv(&in_dialog(
        "OPTIONS",
        "hold",
        &tag,
        6,
        "z9hG4bK-op1",
        "",
        "",
    ));
    h.recv(&in_dialog("INFO", "hold", &tag, 7, "z9hG4bK-in1", "", ""));
    assert_eq!(h.statuses(), vec![200, 200, 200]);
}

#[test]
fn late_offer_answered_in_ack() {
    let mut h = Harness::new();
    h.recv(&invite("+15550001", "late", "z9hG4bK-late", "", ""));
    assert_eq!(h.statuses(), Vec::<u16>::new());
    h.media_opened(30010);
    let ok = h.take_sent().pop().unwrap();
    assert!(
        ok.contains("m=audio 30010 RTP/AVP 0 8 9 101\r\n"),
        "our offer: {ok}"
    );
    let tag = to_tag_of(&ok);
    let answer = SDP.replace("0 8 101", "8");
    h.recv(&in_dialog(
        "ACK",
        "late",
        &tag,
        1,
        "z9hG4bK-la",
        "",
        &answer,
    ));
    match h.media.last() {
        Some(MediaCommand::Update { media, .. }) => {
            assert_eq!(media.codec, Codec::Pcma);
            assert_eq!(media.remote, Some("127.0.0.1:40000".parse().unwrap()));
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn session_timer_without_refresh_ends_call() {
    let mut h = Harness::new();
    let ok = answered_call(&mut h, "st", "Supported: timer\r\nSession-Expires: 90\r\n");
    assert_eq!(header(&ok, "Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(header(&ok, "Require"), Some("timer"));
    let tag = to_tag_of(&ok);
    h.recv(&in_dialog("ACK", "st", &tag, 1, "z9hG4bK-sa", "", ""));
    // A refresh at 40 s moves the deadline to 40 + 60.
    h.advance_to(40_000);
    h.recv(&in_dialog(
        "UPDATE",
        "st",
        &tag,
        2,
        "z9hG4bK-su",
        "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        "",
    ));
    assert_eq!(h.statuses(), vec![200]);
    h.advance_to(99_000);
    assert!(h.take_sent().is_empty());
    h.advance_to(101_000);
    assert!(h.take_sent().iter().any(|s| s.starts_with("BYE ")));
    match h.cdr.last() {
        Some(CdrEvent::Ended { cause, .. }) => assert_eq!(cause, "session_timer"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn session_timer_we_refresh_when_uac_cannot() {
    let mut h = Harness::new();
    let ok = answered_call(&mut h, "st2", "Session-Expires: 120\r\n");
    assert_eq!(header(&ok, "Session-Expires"), Some("120;refresher=uas"));
    let tag = to_tag_of(&ok);
    h.recv(&in_dialog("ACK", "st2", &tag, 1, "z9hG4bK-sb", "", ""));
    h.advance_to(61_000);
    let sent = h.take_sent();
    assert!(sent.iter().any(|s| s.starts_with("UPDATE ")), "{sent:?}");
    assert_eq!(h.core.active_calls(), 1);
}

fn register(user: &str, branch: &str, cseq: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=r1\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:5070>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

fn answer_challenge(challenge_resp: &str, user: &str, password: &str, alg: &str) -> String {
    let ch = headers(challenge_resp, "WWW-Authenticate")
        .into_iter()
        .map(|v| Challenge::parse(v).unwrap())
        .find(|c| c.algorithm.as_str() == alg)
        .unwrap();
    Credentials::answer(&ch, user, password, "REGISTER", "sip:127.0.0.1", "cn0").encode()
}

/// Sends a REGISTER without credentials from `p` and returns its 401.
fn fresh_challenge(h: &mut Harness, p: Peer, user: &str, cseq: u32) -> String {
    h.recv_from(
        p,
        &register(user, &format!("z9hG4bK-c{user}{cseq}"), cseq, ""),
    );
    let chal = h.take_sent().pop().unwrap();
    assert!(chal.starts_with("SIP/2.0 401"), "{chal}");
    chal
}

#[test]
fn registrar_digest_flow() {
    let mut h = Harness::new();
    let p = peer(TransportKind::Udp, "127.0.0.1:5070");
    let chal = fresh_challenge(&mut h, p, "alice", 1);
    let algs: Vec<Challenge> = headers(&chal, "WWW-Authenticate")
        .into_iter()
        .map(|v| Challenge::parse(v).unwrap())
        .collect();
    assert_eq!(algs.len(), 2);
    assert_eq!(
        algs[0].algorithm,
        Algorithm::Sha256,
        "SHA-256 offered first"
    );
    assert!(algs[0].qop_auth);
    // A new CSeq per request: the same one again within Timer J would be a
    // merged request (§8.2.2.2). Each answer uses a fresh nonce: a nonce
    // answered once with nc=1 cannot be answered with nc=1 again.
    for (cseq, alg) in [(2, "SHA-256"), (4, "MD5")] {
        let chal = fresh_challenge(&mut h, p, "alice", cseq);
        let auth = answer_challenge(&chal, "alice", "secret", alg);
        h.recv_from(
            p,
            &register(
                "alice",
                &format!("z9hG4bK-g2{alg}"),
                cseq + 1,
                &format!("Expires: 600\r\nAuthorization: {auth}\r\n"),
            ),
        );
        let ok = h.take_sent().pop().unwrap();
        assert!(ok.starts_with("SIP/2.0 200"), "{alg}: {ok}");
        assert_eq!(
            header(&ok, "Contact"),
            Some("<sip:alice@127.0.0.1:5070>;expires=600")
        );
    }
    assert!(
        matches!(h.regs.last(), Some(RegistrationChange::Upsert(r)) if r.username == "alice" && r.source == "127.0.0.1:5070")
    );
    // Wrong password and unknown user: the very same answer.
    let chal = fresh_challenge(&mut h, p, "alice", 6);
    let bad = answer_challenge(&chal, "alice", "wrong", "SHA-256");
    h.recv_from(
        p,
        &register(
            "alice",
            "z9hG4bK-g3",
            7,
            &format!("Authorization: {bad}\r\n"),
        ),
    );
    let r1 = h.take_sent().pop().unwrap();
    let ghost = answer_challenge(&chal, "mallory", "x", "SHA-256");
    h.recv_from(
        p,
        &register(
            "mallory",
            "z9hG4bK-g4",
            8,
            &format!("Authorization: {ghost}\r\n"),
        ),
    );
    let r2 = h.take_sent().pop().unwrap();
    assert!(r1.starts_with("SIP/2.0 401") && r2.starts_with("SIP/2.0 401"));
    let shape = |r: &str| {
        headers(r, "WWW-Authenticate")
            .iter()
            .map(|v| v.split("nonce").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&r1), shape(&r2));
    assert_eq!(h.core.metrics.rejection_count("auth_failure"), 2);
    // Too short an interval.
    let chal = fresh_challenge(&mut h, p, "alice", 9);
    let auth = answer_challenge(&chal, "alice", "secret", "MD5");
    h.recv_from(
        p,
        &register(
            "alice",
            "z9hG4bK-g5",
            10,
            &format!("Expires: 10\r\nAuthorization: {auth}\r\n"),
        ),
    );
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 423"));
    assert_eq!(header(&r, "Min-Expires"), Some("60"));
    // After the nonce lifetime: stale=true.
    let chal = fresh_challenge(&mut h, p, "alice", 11);
    let auth = answer_challenge(&chal, "alice", "secret", "MD5");
    h.advance_to(400_000);
    h.take_sent();
    h.recv_from(
        p,
        &register(
            "alice",
            "z9hG4bK-g6",
            12,
            &format!("Authorization: {auth}\r\n"),
        ),
    );
    let r = h.take_sent().pop().unwrap();
    assert!(
        r.starts_with("SIP/2.0 401") && r.contains("stale=true"),
        "{r}"
    );
}

#[test]
fn registered_user_can_call_from_outside_trunks() {
    let mut h = Harness::new();
    let p = peer(TransportKind::Udp, "203.0.113.5:5070");
    h.recv_from(p, &register("alice", "z9hG4bK-u1", 1, ""));
    let chal = h.take_sent().pop().unwrap();
    let auth = answer_challenge(&chal, "alice", "secret", "SHA-256");
    h.recv_from(
        p,
        &register(
            "alice",
            "z9hG4bK-u2",
            2,
            &format!("Authorization: {auth}\r\n"),
        ),
    );
    assert_eq!(h.statuses(), vec![200]);
    h.recv_from(p, &invite("+15550001", "fromuser", "z9hG4bK-u3", "", SDP));
    assert_eq!(h.statuses(), Vec::<u16>::new());
    match &h.cdr[0] {
        CdrEvent::Started(r) => {
            assert_eq!(r.trunk, None);
            assert_eq!(r.account_id.as_deref(), Some("acme"));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn malformed_request_gets_400_naming_the_problem() {
    let mut h = Harness::new();
    h.recv("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-x\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
    let r = h.take_sent().pop().unwrap();
    assert!(
        r.starts_with("SIP/2.0 400 Bad Request (CSeq method does not match the request method)"),
        "{r}"
    );
    assert_eq!(h.core.metrics.rejection_count("malformed"), 1);
    h.recv("\x00\x01garbage");
    assert!(h.take_sent().is_empty());
    assert_eq!(h.core.metrics.rejection_count("garbage"), 1);
}

/// The routing table with trunk `local` limited to `max` calls at once.
fn trunk_limited(max: u32) -> RoutingTable {
    let t = routing();
    let mut trunk = t.trunk("local").unwrap().trunk.clone();
    trunk.max_calls = Some(max);
    let (limited, problems) = RoutingTable::build(
        vec![trunk],
        vec![Number {
            pattern: "+1555000*".into(),
            account_id: "acme".into(),
            route: RouteKind::Echo,
            target: None,
            dialect: None,
            params: None,
            trunk: None,
            max_calls: None,
            fallback: None,
            voice_webhook: None,
            sms_webhook: None,
            status_webhook: None,
            webhook_format: Default::default(),
            media_security: Default::default(),
        }],
        vec![],
        vec![],
    );
    assert!(problems.is_empty());
    limited
}

impl Harness {
    /// The reservation the core asked for last: (call, sid, scopes).
    fn reservation(&mut self) -> (CallHandle, String, Vec<(String, u32)>) {
        match self.hooks.pop() {
            Some(Output::ReserveCapacity { call, sid, scopes }) => (call, sid, scopes),
            other => panic!("expected a reservation, got {other:?}"),
        }
    }
}

#[test]
fn a_cluster_limit_parks_the_invite_until_the_store_answers() {
    let mut h = Harness::new_with(|c| c.cluster_limits = true);
    h.core.set_routing(Arc::new(trunk_limited(2)));

    // Granted: the call goes on to its media and is answered.
    h.recv(&invite("+15550002", "cl1", "z9hG4bK-cl1", "", SDP));
    let (call, sid, scopes) = h.reservation();
    assert_eq!(scopes, vec![("trunk:local".to_string(), 2)]);
    assert!(h.media.is_empty(), "no media before the slots are granted");
    assert!(!h.statuses().iter().any(|&s| s >= 200));
    h.core.handle_capacity(h.now, call, &sid, Ok(true));
    h.drain();
    h.media_opened(30100);
    assert_eq!(h.statuses(), vec![200]);

    // Refused: the cluster is at the limit though this node is not.
    let inv = invite("+15550003", "cl2", "z9hG4bK-cl2", "", SDP).replace("tag=caller1", "tag=c2");
    h.recv(&inv);
    let (call2, sid2, _) = h.reservation();
    h.core.handle_capacity(h.now, call2, &sid2, Ok(false));
    h.drain();
    assert_eq!(h.statuses(), vec![486]);
    assert_eq!(h.core.metrics.rejection_count("capacity_cluster"), 1);
    assert!(
        !h.hooks
            .iter()
            .any(|o| matches!(o, Output::ReleaseCapacity { .. })),
        "nothing was reserved"
    );
    assert!(
        matches!(h.cdr.last(), Some(CdrEvent::Ended { cause, sip_status: 486, .. }) if cause == "capacity")
    );

    // The store did not answer: admitted within this node's limit.
    let inv = invite("+15550004", "cl3", "z9hG4bK-cl3", "", SDP).replace("tag=caller1", "tag=c3");
    h.recv(&inv);
    let (call3, sid3, _) = h.reservation();
    h.core
        .handle_capacity(h.now, call3, &sid3, Err("down".into()));
    h.drain();
    h.media_opened(30102);
    assert_eq!(h.statuses(), vec![200]);
    assert_eq!(
        h.core.metrics.rejection_count("capacity"),
        0,
        "admitted, not refused"
    );

    // A grant for a call that is gone is given back.
    h.core
        .handle_capacity(h.now, CallHandle::of_leg(9_999), "CAgone", Ok(true));
    h.drain();
    assert!(matches!(h.hooks.last(), Some(Output::ReleaseCapacity { sid }) if sid == "CAgone"));

    // A call that ends releases its slots.
    let hooks_before = h.hooks.len();
    h.core.hangup_all(h.now, "shutdown");
    h.drain();
    let released: Vec<_> = h.hooks[hooks_before..]
        .iter()
        .filter_map(|o| match o {
            Output::ReleaseCapacity { sid } => Some(sid.clone()),
            _ => None,
        })
        .collect();
    assert!(
        released.contains(&sid) && released.contains(&sid3),
        "{released:?}"
    );
}

#[test]
fn without_cluster_limits_no_reservation_is_asked() {
    let mut h = Harness::new();
    h.core.set_routing(Arc::new(trunk_limited(2)));
    h.recv(&invite("+15550002", "nl1", "z9hG4bK-nl1", "", SDP));
    h.media_opened(30100);
    assert_eq!(h.statuses(), vec![200]);
    assert!(h.hooks.is_empty());
}

#[test]
fn per_trunk_limit_gives_486_until_a_call_ends() {
    let mut h = Harness::new();
    // The same table with the trunk limited to two calls at once.
    h.core.set_routing(Arc::new(trunk_limited(2)));
    let ok1 = answered_call(&mut h, "tr1", "");
    let inv2 = invite("+15550002", "tr2", "z9hG4bK-tr2", "", SDP).replace("tag=caller1", "tag=c2");
    h.recv(&inv2);
    h.media_opened(30100);
    assert_eq!(h.statuses(), vec![200]);
    let inv3 = invite("+15550003", "tr3", "z9hG4bK-tr3", "", SDP).replace("tag=caller1", "tag=c3");
    h.recv(&inv3);
    assert_eq!(h.statuses(), vec![486], "third call over the trunk limit");
    assert_eq!(h.core.metrics.rejection_count("capacity"), 1);
    // The first call ends: the trunk has room again.
    let tag = to_tag_of(&ok1);
    h.recv(&in_dialog("ACK", "tr1", &tag, 1, "z9hG4bK-tra", "", ""));
    h.recv(&in_dialog("BYE", "tr1", &tag, 2, "z9hG4bK-trb", "", ""));
    assert_eq!(h.statuses(), vec![200]);
    let inv4 = invite("+15550004", "tr4", "z9hG4bK-tr4", "", SDP).replace("tag=caller1", "tag=c4");
    h.recv(&inv4);
    h.media_opened(30102);
    assert_eq!(h.statuses(), vec![200]);
}

#[test]
fn registered_user_as_call_target_is_redirected_to_its_binding() {
    let mut h = Harness::new();
    // Not registered yet: 480, counted, with a record.
    h.recv(&invite("alice", "ru1", "z9hG4bK-ru1", "", SDP));
    assert_eq!(h.statuses(), vec![480]);
    assert_eq!(h.core.metrics.rejection_count("not_registered"), 1);
    let p = peer(TransportKind::Udp, "192.0.2.44:5070");
    h.recv_from(p, &register("alice", "z9hG4bK-ru2", 1, "Expires: 600\r\n"));
    let chal = h.take_sent().pop().unwrap();
    let auth = answer_challenge(&chal, "alice", "secret", "SHA-256");
    h.recv_from(
        p,
        &register(
            "alice",
            "z9hG4bK-ru3",
            2,
            &format!("Expires: 600\r\nAuthorization: {auth}\r\n"),
        ),
    );
    assert_eq!(h.statuses(), vec![200]);
    // A trunk calls the user: 302 to the device's contact.
    h.advance_to(10_000);
    h.recv(&invite("alice", "ru2", "z9hG4bK-ru4", "", SDP).replace("tag=caller1", "tag=c9"));
    let sent = h.take_sent();
    let r = sent
        .iter()
        .find(|s| s.starts_with("SIP/2.0 302"))
        .expect("302");
    assert_eq!(
        header(r, "Contact"),
        Some("<sip:alice@127.0.0.1:5070>;expires=590")
    );
    match h.cdr.last() {
        Some(CdrEvent::Ended {
            cause, sip_status, ..
        }) => {
            assert_eq!((cause.as_str(), *sip_status), ("redirected", 302));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(h.core.active_calls(), 0);
}

mod auth;
mod edge;
mod forward;
mod originate;
mod resume;
mod srtp;
mod tls;
mod twiml;
mod webhook;
