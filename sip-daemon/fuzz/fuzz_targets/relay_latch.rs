//! The relay's RTP and RTCP path with the latch: datagrams from the
//! signalled peer, a peer that moved, and spoofers, on both sides' RTP
//! and RTCP sockets, with re-INVITE updates and time moving on. Never a
//! panic, and the latch holds: while the latched peer keeps sending (no
//! silence of RELATCH_SILENCE), no other address is ever forwarded from.
//! Sides may be SRTP (re-encrypted, or with keys shared end to end): the
//! fuzzer never knows the keys, so nothing it sends to an SRTP side may
//! be forwarded except through a pair that passes ciphertext on from the
//! latched peer unverified, as the kernel does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use media_userspace::codec::Codec;
use media_userspace::control::LegMedia;
use media_userspace::relay::{RelayPair, Side};
use media_userspace::srtp::{SrtpKey, SrtpKeys, SrtpSuite};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SOURCES: [&str; 4] = [
    "192.0.2.1:4000",   // side A's signalled peer
    "192.0.2.2:5000",   // side B's signalled peer
    "192.0.2.1:4002",   // A's peer after a NAT rebinding
    "203.0.113.9:6666", // a spoofer
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let codecs = [Codec::Pcmu, Codec::Pcma, Codec::G722];
    let media = |remote: &str, c: Codec| LegMedia {
        codec: c,
        payload_type: c.static_payload_type(),
        telephone_event: Some(101),
        ptime_ms: 20,
        remote: remote.parse().ok(),
        send: true,
        srtp: None,
    };
    let a = media(SOURCES[0], codecs[usize::from(sel % 3)]);
    let b = media(SOURCES[1], codecs[usize::from(sel / 3 % 3)]);
    let key = |b: u8| SrtpKey::new(SrtpSuite::AesCm128HmacSha1_80, &[b; 30]).expect("key");
    // 0: plain; 1: SRTP re-encrypted; 2: SRTP with keys shared end to end.
    let keys = |mode: u8, side: Side| -> Option<SrtpKeys> {
        let (tx, rx) = match (mode, side) {
            (1, Side::A) => (1, 2),
            (1, Side::B) => (3, 4),
            (2, Side::A) => (1, 2),
            (2, Side::B) => (2, 1),
            _ => return None,
        };
        Some(SrtpKeys {
            suite: SrtpSuite::AesCm128HmacSha1_80,
            tx: key(tx),
            rx: key(rx),
            replay_window: 64,
        })
    };
    let mode = sel / 9 % 3;
    let a = LegMedia {
        srtp: keys(mode, Side::A),
        ..a
    };
    let b = LegMedia {
        srtp: keys(mode, Side::B),
        ..b
    };
    let mut pair = RelayPair::new(&a, &b);
    let mut now = Instant::now();
    let sources: Vec<SocketAddr> = SOURCES.iter().map(|s| s.parse().unwrap()).collect();
    // The last time each side's latched peer was forwarded from.
    let mut input = rest;
    while let Some((&op, tail)) = input.split_first() {
        let (&len, tail) = match tail.split_first() {
            Some(x) => x,
            None => break,
        };
        let n = usize::from(len).min(tail.len());
        let (body, next) = tail.split_at(n);
        input = next;
        let side = if op & 1 == 0 { Side::A } else { Side::B };
        let from = sources[usize::from(op >> 1 & 3)];
        match op >> 3 & 7 {
            // RTP (a header built from the input, so the latch sees real
            // sequences), raw bytes, RTCP on the RTCP socket.
            0..=3 => {
                let mut pkt = vec![0x80, body.first().copied().unwrap_or(0) & 0x7f];
                let seq = u16::from_be_bytes([
                    body.get(1).copied().unwrap_or(0),
                    body.get(2).copied().unwrap_or(0),
                ]);
                pkt.extend_from_slice(&seq.to_be_bytes());
                pkt.extend_from_slice(&[0, 0, 0, 0]);
                let ssrc = u32::from(body.get(3).copied().unwrap_or(0));
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                pkt.extend_from_slice(body.get(4..).unwrap_or(&[]));
                let before = pair.latched_peer(side);
                let live = pair
                    .last_rx(side)
                    .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(100));
                let n = pkt.len();
                pkt.resize(n + 32, 0);
                let srtp_side = pair.media(side).srtp.is_some();
                if pair.on_rtp(side, now, from, &mut pkt, n, None).is_some() {
                    // Without the key, only ciphertext passed on unverified
                    // from a latched peer (keys shared end to end) leaves.
                    if srtp_side {
                        assert_eq!(
                            pair.offload_view().srtp,
                            media_userspace::offload::PairSrtp::SharedKeys
                        );
                        assert_eq!(pair.latched_peer(side), Some(from));
                    }
                    // A live latched peer is never replaced by another.
                    if let Some(peer) = before
                        && live
                        && peer != from
                    {
                        panic!("forwarded from {from} while {peer} was live");
                    }
                }
            }
            4 => {
                let mut pkt = body.to_vec();
                pkt.resize(body.len() + 32, 0);
                let _ = pair.on_rtp(side, now, from, &mut pkt, body.len(), None);
            }
            5 => {
                let _ = pair.on_rtcp(side, from, body);
            }
            6 => {
                let remote = sources[usize::from(len & 3)].to_string();
                let m = media(&remote, codecs[usize::from(len >> 2) % 3]);
                pair.update(
                    side,
                    &LegMedia {
                        send: len & 0x40 == 0,
                        srtp: pair.media(side).srtp,
                        ..m
                    },
                );
            }
            _ => now += Duration::from_millis(u64::from(len) * 8),
        }
    }
});
