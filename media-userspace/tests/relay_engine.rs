//! The userspace relay through the real media engine: two loopback
//! endpoints exchange RTP and RTCP through a relayed leg pair, on both
//! worker backends (the path every forwarded call can fall back to).

use media_userspace::codec::Codec;
use media_userspace::control::{LegMedia, MediaCommand, MediaEvent};
use media_userspace::engine::{EngineConfig, MediaEngine};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// An RTP socket on an even port with its RTCP socket on the next one.
fn endpoint() -> (UdpSocket, UdpSocket) {
    loop {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        if port.is_multiple_of(2)
            && let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1))
        {
            for s in [&rtp, &rtcp] {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            }
            return (rtp, rtcp);
        }
    }
}

fn media(remote: SocketAddr, pt: u8, te: u8) -> LegMedia {
    LegMedia {
        codec: Codec::Pcmu,
        payload_type: pt,
        telephone_event: Some(te),
        ptime_ms: 20,
        remote: Some(remote),
        send: true,
        srtp: None,
    }
}

fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// A one-worker engine on 127.0.0.1 with the ports `base`..`base + 99`,
/// and the receiver of its events (kept alive by the caller).
fn engine(
    prefer_io_uring: bool,
    base: u16,
) -> (
    MediaEngine,
    tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
) {
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = MediaEngine::start(
        EngineConfig {
            bind_ip: "127.0.0.1".parse().unwrap(),
            port_min: base,
            port_max: base + 99,
            workers: 1,
            prefer_io_uring,
            xdp: None,
            connect_guard: None,
        },
        events,
    )
    .unwrap();
    (engine, rx)
}

fn relay_round_trip(prefer_io_uring: bool, base: u16) {
    let (engine, _rx) = engine(prefer_io_uring, base);
    let (caller, caller_rtcp) = endpoint();
    let (callee, callee_rtcp) = endpoint();
    let opened = engine.command(MediaCommand::OpenRelay {
        legs: [10, 11],
        // The callee numbers telephone-event 96, the caller 101.
        media: [
            media(caller.local_addr().unwrap(), 0, 101),
            media(callee.local_addr().unwrap(), 0, 96),
        ],
        timeout: Duration::from_secs(30),
    });
    let Some(MediaEvent::RelayOpened { legs, locals }) = opened else {
        panic!("{opened:?}");
    };
    assert_eq!(legs, [10, 11]);
    assert_eq!(engine.active_legs(), 2);
    let mut buf = [0u8; 2048];
    for seq in 0..20u16 {
        // Caller → relay leg A → callee, from leg B's port.
        let p = rtp(0, seq, 0xaaaa);
        caller.send_to(&p, locals[0]).unwrap();
        let (n, from) = callee.recv_from(&mut buf).expect("relayed to the callee");
        assert_eq!(from, locals[1], "sent from the callee-side leg");
        assert_eq!(&buf[..n], &p[..], "untouched");
        // And back.
        let q = rtp(0, seq, 0xbbbb);
        callee.send_to(&q, locals[1]).unwrap();
        let (n, from) = caller.recv_from(&mut buf).expect("relayed to the caller");
        assert_eq!(from, locals[0]);
        assert_eq!(&buf[..n], &q[..]);
    }
    // A DTMF event is renumbered for the callee.
    caller.send_to(&rtp(101, 100, 0xaaaa), locals[0]).unwrap();
    let (_, _) = callee.recv_from(&mut buf).unwrap();
    assert_eq!(buf[1] & 0x7f, 96);
    // A re-INVITE moves the callee to A-law: the relay transcodes.
    engine.command(MediaCommand::Update {
        leg: 11,
        media: LegMedia {
            codec: Codec::Pcma,
            ..media(callee.local_addr().unwrap(), 8, 96)
        },
    });
    // The update is in the leg's channel when `command` returns, and the
    // leg reads its controls before its sockets: the very next packet is
    // transcoded (the answer's media applies to what is sent after it).
    let p = rtp(0, 200, 0xaaaa);
    caller.send_to(&p, locals[0]).unwrap();
    let n = callee.recv_from(&mut buf).expect("relayed to the callee").0;
    assert_eq!((n, buf[1] & 0x7f), (p.len(), 8), "A-law, same length");
    let want: Vec<u8> = p[12..]
        .iter()
        .map(|&c| media_userspace::g711::alaw_encode(media_userspace::g711::ulaw_decode(c)))
        .collect();
    assert_eq!(&buf[12..n], &want[..]);
    // RTCP between the RTCP ports.
    let rr = [0x80, 201, 0, 1, 0, 0, 0xaa, 0xaa];
    let rtcp_a: SocketAddr = SocketAddr::new(locals[0].ip(), locals[0].port() + 1);
    caller_rtcp.send_to(&rr, rtcp_a).unwrap();
    let (n, from) = callee_rtcp.recv_from(&mut buf).expect("RTCP relayed");
    assert_eq!(&buf[..n], &rr);
    assert_eq!(from.port(), locals[1].port() + 1);
    // Closing one leg closes the pair and frees both ports.
    engine.command(MediaCommand::Close { leg: 10 });
    assert_eq!(engine.active_legs(), 0);
    std::thread::sleep(Duration::from_millis(200));
    assert!(UdpSocket::bind(locals[0]).is_ok(), "leg A's port released");
    assert!(UdpSocket::bind(locals[1]).is_ok(), "leg B's port released");
    assert!(
        engine
            .stats()
            .rx_packets
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 42,
        "counters published"
    );
}

/// A spoofer who knows a relayed call's media ports sends a perfect RTP
/// stream (its own SSRC, in sequence) and RTCP while both peers talk: the
/// far side hears only the caller, the spoofer gets nothing back, and the
/// call stays latched to its peers.
fn spoofed_stream_gets_neither_audio_nor_the_call(prefer_io_uring: bool, base: u16) {
    let (engine, _rx) = engine(prefer_io_uring, base);
    let (caller, _caller_rtcp) = endpoint();
    let (callee, callee_rtcp) = endpoint();
    let (spoofer, spoofer_rtcp) = endpoint();
    for s in [&spoofer, &spoofer_rtcp, &callee_rtcp] {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    }
    let opened = engine.command(MediaCommand::OpenRelay {
        legs: [20, 21],
        media: [
            media(caller.local_addr().unwrap(), 0, 101),
            media(callee.local_addr().unwrap(), 0, 101),
        ],
        timeout: Duration::from_secs(30),
    });
    let Some(MediaEvent::RelayOpened { locals, .. }) = opened else {
        panic!("{opened:?}");
    };
    let rtcp_a = SocketAddr::new(locals[0].ip(), locals[0].port() + 1);
    let mut buf = [0u8; 2048];
    let (mut heard, mut spoofed_heard) = (0, 0);
    for seq in 0..100u16 {
        caller.send_to(&rtp(0, seq, 0xaaaa), locals[0]).unwrap();
        callee.send_to(&rtp(0, seq, 0xbbbb), locals[1]).unwrap();
        // At both legs, as a stream of its own.
        spoofer
            .send_to(&rtp(0, 1000 + seq, 0xbad), locals[0])
            .unwrap();
        spoofer
            .send_to(&rtp(0, 3000 + seq, 0xbad), locals[1])
            .unwrap();
        spoofer_rtcp
            .send_to(&[0x80, 201, 0, 1, 0, 0, 0x0b, 0xad], rtcp_a)
            .unwrap();
        while let Ok((n, _)) = callee.recv_from(&mut buf) {
            match u32::from_be_bytes(buf[8..12].try_into().unwrap()) {
                0xaaaa => heard += 1,
                _ => spoofed_heard += 1,
            }
            if n > 0 && heard > seq.into() {
                break;
            }
        }
        let _ = caller.recv_from(&mut buf);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(spoofed_heard, 0, "the spoofer's audio reached the callee");
    assert!(
        heard >= 95,
        "the caller's audio reached the callee: {heard}"
    );
    assert!(
        spoofer.recv_from(&mut buf).is_err(),
        "the spoofer got the call's audio"
    );
    assert!(
        callee_rtcp.recv_from(&mut buf).is_err(),
        "the spoofer's RTCP was relayed"
    );
    // The call's own peers still talk through it.
    caller.send_to(&rtp(0, 500, 0xaaaa), locals[0]).unwrap();
    let (n, _) = callee.recv_from(&mut buf).expect("still relayed");
    assert_eq!(&buf[8..12], &0xaaaau32.to_be_bytes(), "{n}");
    assert!(
        engine
            .stats()
            .rejected_source
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 200,
        "spoofed packets counted"
    );
}

#[test]
fn spoofing_a_relay_on_tokio_workers() {
    spoofed_stream_gets_neither_audio_nor_the_call(false, 43400);
}

#[test]
fn spoofing_a_relay_on_io_uring_workers() {
    spoofed_stream_gets_neither_audio_nor_the_call(true, 43600);
}

#[test]
fn relay_on_tokio_workers() {
    relay_round_trip(false, 43000);
}

#[test]
fn relay_on_io_uring_workers() {
    relay_round_trip(true, 43200);
}

/// A restored call's relay taken over in userspace (no kernel rules): the
/// same ports bound again, relaying at once; refused with a reason when the
/// ports are not a pair or are taken; a port outside the range serves the
/// call and is never handed to another one.
// Fixed ports below the kernel's ephemeral range (32768 and up), so no
// socket another test binds on port 0 can hold them.
#[test]
fn a_restored_call_adopts_its_relay_on_the_same_ports() {
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = MediaEngine::start(
        EngineConfig {
            bind_ip: "127.0.0.1".parse().unwrap(),
            port_min: 31_100,
            port_max: 31_103,
            workers: 1,
            prefer_io_uring: false,
            xdp: None,
            connect_guard: None,
        },
        events,
    )
    .unwrap();
    let (caller, _) = endpoint();
    let (callee, _) = endpoint();
    let media = [
        media(caller.local_addr().unwrap(), 0, 101),
        media(callee.local_addr().unwrap(), 0, 101),
    ];
    let adopt = |legs: [u64; 2], ports: [u16; 2]| {
        engine.command(MediaCommand::AdoptRelay {
            legs,
            media,
            ports,
            timeout: Duration::from_secs(30),
        })
    };
    for bad in [[0, 31_102], [31_102, 31_102]] {
        let r = adopt([1, 2], bad);
        assert!(
            matches!(&r, Some(MediaEvent::Failed { reason, .. }) if reason.contains("not a pair")),
            "{r:?}"
        );
    }
    // One port in the range, one outside it (the range changed).
    let outside = 31_200;
    let r = adopt([10, 11], [31_100, outside]);
    let Some(MediaEvent::RelayOpened { locals, .. }) = r else {
        panic!("{r:?}");
    };
    assert_eq!(locals.map(|l| l.port()), [31_100, outside]);
    let mut buf = [0u8; 2048];
    let p = rtp(0, 1, 0xaaaa);
    caller.send_to(&p, locals[0]).unwrap();
    let (n, from) = callee.recv_from(&mut buf).expect("relayed at once");
    assert_eq!((&buf[..n], from), (&p[..], locals[1]));
    // Taken: the same ports again fail, with the port named.
    let r = adopt([20, 21], [31_100, outside]);
    assert!(
        matches!(&r, Some(MediaEvent::Failed { reason, .. }) if reason.contains("31100")),
        "{r:?}"
    );
    // The range has one pair left (46102/46103): a new call gets it, and
    // with the adopted call closed, the in-range port comes back while
    // the outside one never enters the range.
    let r = engine.command(MediaCommand::OpenRelay {
        legs: [30, 31],
        media,
        timeout: Duration::from_secs(30),
    });
    assert!(
        matches!(r, Some(MediaEvent::Failed { .. })),
        "two ports needed, one free: {r:?}"
    );
    engine.command(MediaCommand::Close { leg: 10 });
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let opened = loop {
        let r = engine.command(MediaCommand::OpenRelay {
            legs: [40, 41],
            media,
            timeout: Duration::from_secs(30),
        });
        match r {
            Some(MediaEvent::RelayOpened { locals, .. }) => break locals,
            _ if std::time::Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("{other:?}"),
        }
    };
    let mut got = opened.map(|l| l.port());
    got.sort_unstable();
    assert_eq!(got, [31_100, 31_102], "{opened:?}");
}
