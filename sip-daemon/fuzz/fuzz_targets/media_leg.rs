//! Datagrams into a stream leg (RTP, RTCP, DTMF events, garbage) and on
//! its RTCP port, into a relay's listen-only tap and through a relay's
//! transcoder, with time moving on: never a panic, whatever arrives.
#![no_main]
use libfuzzer_sys::fuzz_target;
use media_userspace::codec::Codec;
use media_userspace::control::LegMedia;
use media_userspace::relay::Side;
use media_userspace::rtcp::WallClock;
use media_userspace::stream_leg::StreamLeg;
use media_userspace::tap::Tap;
use media_userspace::transcode::Transcoder;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let codec = [Codec::Pcmu, Codec::Pcma, Codec::G722][usize::from(sel % 3)];
    let media = LegMedia {
        codec,
        payload_type: codec.static_payload_type(),
        telephone_event: Some(101),
        ptime_ms: 20,
        remote: Some("127.0.0.1:4000".parse().unwrap()),
        send: true,
        srtp: None,
    };
    let mut now = Instant::now();
    let clock = WallClock {
        at: now,
        wall: std::time::UNIX_EPOCH,
    };
    let rate = [8000, 16000, 24000][usize::from(sel / 3 % 3)];
    let mut leg = StreamLeg::new(&media, rate, 1, clock);
    let pcma = LegMedia {
        codec: Codec::Pcma,
        payload_type: 8,
        ..media
    };
    let mut tap = Tap::new([&media, &pcma], rate, sel & 0x80 != 0, now);
    let mut frames = Vec::new();
    let mut transcoder = Transcoder::new(
        codec,
        [Codec::Pcma, Codec::G722, Codec::Pcmu][usize::from(sel % 3)],
    );
    let from = "127.0.0.1:4000".parse().unwrap();
    // Datagrams are length-prefixed chunks of the input.
    let mut input = rest;
    while let Some((&len, tail)) = input.split_first() {
        let n = usize::from(len).min(tail.len());
        let (pkt, next) = tail.split_at(n);
        if len & 1 == 0 {
            leg.on_datagram(now, from, pkt);
        } else {
            leg.on_rtcp_datagram(now, from, pkt);
        }
        let side = if len & 2 == 0 { Side::A } else { Side::B };
        tap.on_rtp(side, pkt);
        let mut payload = pkt.to_vec();
        transcoder.convert(&mut payload);
        assert_eq!(payload.len(), pkt.len());
        now += Duration::from_millis(u64::from(len % 40));
        leg.handle_timeout(now);
        while leg.poll_transmit().is_some() {}
        while leg.poll_to_ai().is_some() {}
        while leg.poll_rtcp().is_some() {}
        tap.poll(now, &mut frames);
        frames.clear();
        input = next;
    }
});
