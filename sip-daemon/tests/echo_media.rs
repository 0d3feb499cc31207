//! The echo line end to end: a real UDP SIP caller and RTP socket against
//! the daemon binary. The caller's RTP must come back (same payload,
//! sequence and timestamp, our SSRC), and with symmetric RTP it goes to
//! where packets really come from, not to the address in the SDP.

mod common;

use common::{Caller, Daemon, Opts, recv_status};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn rtp(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The default media backend: plain tokio sockets.
#[test]
fn echo_returns_rtp_to_the_latched_source() {
    let d = Daemon::start("");
    assert!(d.logs().contains("backend=\"tokio\""), "{}", d.logs());
    echo_round_trip(d);
}

/// The io_uring backend (tokio-uring, `media.io_uring = true`) serves the
/// same leg; this kernel allows io_uring, so it must be the one in use.
#[test]
fn echo_on_io_uring() {
    let d = Daemon::start_opts(Opts {
        media_extra: "io_uring = true",
        ..Opts::default()
    });
    assert!(d.logs().contains("backend=\"io_uring\""), "{}", d.logs());
    echo_round_trip(d);
}

fn echo_round_trip(d: Daemon) {
    // The SDP names one port, the packets come from another (a NAT):
    // symmetric RTP answers the real source.
    let advertised = UdpSocket::bind("127.0.0.1:0").unwrap();
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    advertised
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut caller = Caller::new(d.sip_addr(), "echo-1@test");
    let rtp_addr = caller.invite(advertised.local_addr().unwrap().port());

    let mut buf = [0u8; 2048];
    // A source that is not the SDP's is latched once it sent a run of
    // in-sequence packets; none of the run's first packets is echoed.
    let run = u16::from(media_userspace::latch::LATCH_PACKETS);
    let spoofer = UdpSocket::bind("127.0.0.1:0").unwrap();
    spoofer
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    for i in 0..50u16 {
        let payload: Vec<u8> = (0..160).map(|j| (i as usize * 7 + j) as u8).collect();
        let sent = rtp(1000 + i, 160 * i as u32, &payload);
        media.send_to(&sent, rtp_addr).unwrap();
        if i + 1 < run {
            media
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            assert!(media.recv_from(&mut buf).is_err(), "echoed before latched");
            media
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            continue;
        }
        // Once latched, another source's stream is neither echoed nor
        // takes the call.
        let mut spoofed = rtp(5000 + i, 0, &payload);
        spoofed[8..12].copy_from_slice(&0xbadu32.to_be_bytes());
        spoofer.send_to(&spoofed, rtp_addr).unwrap();
        let (n, from) = media.recv_from(&mut buf).expect("echoed packet");
        assert_eq!(from, rtp_addr, "echo comes from the port in our SDP answer");
        let got = &buf[..n];
        assert_eq!(got.len(), sent.len());
        assert_eq!(&got[4..8], &sent[4..8], "timestamp kept");
        assert_eq!(
            u16::from_be_bytes([got[2], got[3]]),
            i + 1 - run,
            "our own gapless sequence from 0 (the caller's numbering is not reused)"
        );
        assert_ne!(
            &got[8..12],
            &sent[8..12],
            "the echo is our own RTP stream (SSRC)"
        );
        assert_eq!(&got[12..], &sent[12..], "payload returned unchanged");
    }
    assert!(
        advertised.recv_from(&mut buf).is_err(),
        "nothing goes to the SDP address once latched"
    );
    assert!(
        spoofer.recv_from(&mut buf).is_err(),
        "the spoofer got audio"
    );
    // Not RTP: counted, not echoed.
    media.send_to(b"hello", rtp_addr).unwrap();
    assert!(media.recv_from(&mut buf).is_err());
    caller.bye();
    // Leg counters are published when the leg closes, just after the BYE.
    let deadline = Instant::now() + Duration::from_secs(5);
    let echoed = f64::from(50 - (run - 1));
    let (tx, malformed) = loop {
        let tx = d.metric("gateway_rtp_tx_packets_total");
        let malformed = d.metric("gateway_rtp_malformed_total");
        if (tx >= echoed && malformed >= 1.0) || Instant::now() > deadline {
            break (tx, malformed);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((tx, malformed), (echoed, 1.0));
    // The run's first packets and every spoofed one.
    assert_eq!(
        d.metric("gateway_rtp_rejected_source_total"),
        f64::from(run - 1) + echoed
    );
    assert_eq!(d.metric("gateway_media_legs_active"), 0.0);
}

#[test]
fn echo_call_without_acceptable_codec_gets_488() {
    let d = Daemon::start("");
    let caller = Caller::new(d.sip_addr(), "echo-488@test");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    caller
        .sip
        .send_to(
            caller.request("INVITE", 1, "inv488", sdp).as_bytes(),
            d.sip_addr(),
        )
        .unwrap();
    recv_status(&caller.sip, "echo-488@test", 488);
}
