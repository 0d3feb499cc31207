//! `Reserve` then `Open` on the real engine: the port offered in SDP before
//! the answer is the port the leg later runs on; a reservation that is
//! closed unopened gives its port back.

use media_userspace::codec::Codec;
use media_userspace::control::{LegMedia, LegMode, MediaCommand, MediaEvent};
use media_userspace::engine::{EngineConfig, MediaEngine};
use std::net::UdpSocket;
use std::time::Duration;

fn engine(base: u16) -> MediaEngine {
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    // Leak the receiver: the engine reports timeouts on it.
    std::mem::forget(_rx);
    MediaEngine::start(
        EngineConfig {
            bind_ip: "127.0.0.1".parse().unwrap(),
            // One RTP/RTCP port pair only.
            port_min: base,
            port_max: base + 1,
            workers: 1,
            prefer_io_uring: false,
            xdp: None,
            connect_guard: None,
        },
        events,
    )
    .unwrap()
}

fn rtp(seq: u16, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234u32.to_be_bytes());
    p.extend(std::iter::repeat_n(fill, 160));
    p
}

#[test]
fn a_reserved_port_is_the_port_the_leg_runs_on() {
    let e = engine(47_100);
    let Some(MediaEvent::Opened { leg: 7, local }) = e.command(MediaCommand::Reserve { leg: 7 })
    else {
        panic!("reserve failed");
    };
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Early media while only reserved: dropped at the open, never echoed.
    peer.send_to(&rtp(1, 0xee), local).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let opened = e.command(MediaCommand::Open {
        leg: 7,
        mode: LegMode::Echo,
        media: LegMedia {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: None,
            ptime_ms: 20,
            remote: Some(peer.local_addr().unwrap()),
            send: true,
            srtp: None,
        },
        timeout: Duration::from_secs(30),
    });
    assert_eq!(opened, Some(MediaEvent::Opened { leg: 7, local }));
    let mut buf = [0u8; 2048];
    let mut echoed = Vec::new();
    for seq in 2..12u16 {
        peer.send_to(&rtp(seq, seq as u8), local).unwrap();
        if let Ok((n, from)) = peer.recv_from(&mut buf) {
            assert_eq!(from, local, "echoed from the reserved port");
            echoed.push(buf[12..n].to_vec());
        }
    }
    assert!(!echoed.is_empty(), "the leg runs on the reserved port");
    assert!(
        echoed.iter().all(|p| !p.contains(&0xee)),
        "stale early media was not played"
    );
    e.command(MediaCommand::Close { leg: 7 });
}

#[test]
fn closing_an_unopened_reservation_frees_its_port() {
    let e = engine(47_200);
    assert!(matches!(
        e.command(MediaCommand::Reserve { leg: 1 }),
        Some(MediaEvent::Opened { .. })
    ));
    // The only pair is taken.
    assert!(matches!(
        e.command(MediaCommand::Reserve { leg: 2 }),
        Some(MediaEvent::Failed { .. })
    ));
    e.command(MediaCommand::Close { leg: 1 });
    assert!(matches!(
        e.command(MediaCommand::Reserve { leg: 3 }),
        Some(MediaEvent::Opened { .. })
    ));
    assert_eq!(e.active_legs(), 0);
}
