//! Call flows through the signalling core: any sequence of datagrams from
//! a caller and a far side, media events and time passing, on routes that
//! echo, stream to an AI and forward (the B2BUA: far legs, CANCEL, REFER,
//! hold across the bridge, fallbacks, AI transfers). The core must never
//! panic, whatever arrives in whatever order. The snapshots it saves of
//! bridged calls are then restored by a second core, as the next run of
//! the daemon would, both as saved and altered by the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use media_userspace::control::{MediaCommand, MediaEvent};
use sip_daemon::core::{Core, CoreConfig, Output, WallClock};
use sip_daemon::metrics::Metrics;
use sip_daemon::routing::RoutingTable;
use sip_daemon::sip::parse::{Framing, parse};
use sip_daemon::sip::transport::{Peer, TransportKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn routing() -> RoutingTable {
    use api::store::{Number, RouteKind, Trunk};
    let num = |p: &str, route: RouteKind, target: Option<&str>, fallback: Option<&str>| Number {
        pattern: p.into(),
        account_id: "a".into(),
        route,
        target: target.map(str::to_string),
        dialect: None,
        params: None,
        trunk: None,
        max_calls: None,
        fallback: fallback.map(str::to_string),
        voice_webhook: None,
        sms_webhook: None,
        status_webhook: None,
        webhook_format: Default::default(),
        media_security: Default::default(),
    };
    let trunk = |name: &str, cidr: &str, transfer: Option<&str>| Trunk {
        name: name.into(),
        source_cidrs: vec![cidr.into()],
        outbound_address: Some("192.0.2.10:5070".into()),
        transport: "udp".into(),
        username: Some("u".into()),
        password: Some("p".into()),
        max_calls: None,
        transfer: transfer.map(str::to_string),
        account_id: None,
        requests_per_sec: None,
        tls: Default::default(),
        media_security: Default::default(),
        srtp_cleartext_keying: false,
    };
    RoutingTable::build(
        vec![
            trunk("callers", "127.0.0.0/8", None),
            trunk("far", "192.0.2.0/24", Some("refer")),
        ],
        vec![
            num(
                "+1555*",
                RouteKind::Forward,
                Some("sip:+1555@192.0.2.10:5070"),
                Some("sip:+1999@192.0.2.11"),
            ),
            num(
                "+1666*",
                RouteKind::Stream,
                Some("ws://127.0.0.1:1/"),
                Some("sip:+1999@192.0.2.11"),
            ),
            num("*", RouteKind::Echo, None, None),
        ],
        vec![],
        vec![],
    )
    .0
}

fn peer(remote: &str) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        local: "127.0.0.1:5060".parse().unwrap(),
        remote: remote.parse().unwrap(),
        conn: None,
    }
}

fn config() -> CoreConfig {
    CoreConfig {
        listeners: vec![(TransportKind::Udp, "127.0.0.1:5060".parse().unwrap())],
        resume_node: Some("n".into()),
        ..CoreConfig::default()
    }
}

/// `snapshot` with bytes replaced where `edits` (pairs of position and
/// byte) say.
fn altered(snapshot: &str, edits: &[u8]) -> String {
    let mut b = snapshot.as_bytes().to_vec();
    for e in edits.chunks(2) {
        if let ([at, v], false) = (e, b.is_empty()) {
            let i = usize::from(*at) * 7 % b.len();
            b[i] = *v;
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut core = Core::new(
        config(),
        Arc::new(routing()),
        Metrics::unregistered(),
        WallClock {
            base: t0,
            base_unix_ms: 1_700_000_000_000,
        },
        7,
    );
    let peers = [
        peer("127.0.0.1:5061"),
        peer("192.0.2.10:5070"),
        peer("192.0.2.11:5060"),
    ];
    // Media commands seen so far: the events below answer them.
    let mut opened: Vec<MediaCommand> = Vec::new();
    // Snapshots the core saved: (call id, snapshot).
    let mut saved: Vec<(String, String)> = Vec::new();
    let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    for chunk in data.split(|&b| b == 0xff).take(64) {
        let Some((&op, rest)) = chunk.split_first() else {
            continue;
        };
        match op % 8 {
            0..=2 => {
                let msg = parse(rest, Framing::Datagram);
                core.handle_inbound(now, peers[usize::from(op % 8)], msg);
            }
            3 => {
                let ms = rest.first().map_or(100, |&b| u64::from(b) * 250);
                now += Duration::from_millis(ms);
                core.handle_timeout(now);
            }
            _ => {
                let Some(cmd) = opened
                    .get(rest.first().map_or(0, |&b| usize::from(b)) % opened.len().max(1))
                    .cloned()
                else {
                    continue;
                };
                let ev = match (op % 8, cmd) {
                    (4, MediaCommand::Open { leg, .. }) => MediaEvent::Opened {
                        leg,
                        local: local(30000),
                    },
                    (4, MediaCommand::OpenRelay { legs, .. }) => MediaEvent::RelayOpened {
                        legs,
                        locals: [local(30002), local(30004)],
                    },
                    (5, MediaCommand::Open { leg, .. }) => MediaEvent::StreamConnected { leg },
                    (5, MediaCommand::OpenRelay { legs, .. }) => {
                        MediaEvent::Timeout { leg: legs[1] }
                    }
                    (6, MediaCommand::Open { leg, .. }) => MediaEvent::AiTransfer {
                        leg,
                        to: String::from_utf8_lossy(rest.get(1..).unwrap_or_default()).into_owned(),
                    },
                    (6, MediaCommand::OpenRelay { legs, .. }) => MediaEvent::Failed {
                        leg: legs[0],
                        reason: "x".into(),
                    },
                    (_, MediaCommand::Open { leg, .. }) => MediaEvent::StreamFailed {
                        leg,
                        reason: "x".into(),
                    },
                    (_, MediaCommand::OpenRelay { legs, .. }) => {
                        MediaEvent::Timeout { leg: legs[0] }
                    }
                    _ => continue,
                };
                core.handle_media(now, ev);
            }
        }
        while let Some(o) = core.poll_output() {
            match o {
                Output::Media(m @ (MediaCommand::Open { .. } | MediaCommand::OpenRelay { .. })) => {
                    opened.push(m)
                }
                Output::Cdr(api::store::CdrEvent::Resumable { id, snapshot, .. }) => {
                    saved.push((id, snapshot))
                }
                _ => {}
            }
        }
    }
    // The next run takes the saved calls back.
    let mut next = Core::new(
        config(),
        Arc::new(routing()),
        Metrics::unregistered(),
        WallClock {
            base: now,
            base_unix_ms: 1_700_000_100_000,
        },
        8,
    );
    let edits = data.rsplit(|&b| b == 0xff).next().unwrap_or_default();
    let resumable = saved
        .iter()
        .flat_map(|(id, snapshot)| {
            [snapshot.clone(), altered(snapshot, edits)].map(|snapshot| api::store::ResumableCall {
                id: id.clone(),
                snapshot,
            })
        })
        .collect();
    let _ = next.restore(now, resumable);
    while let Some(o) = next.poll_output() {
        if let Output::Media(MediaCommand::AdoptRelay { legs, .. }) = o {
            let ev = if legs[0] % 2 == 0 {
                MediaEvent::RelayOpened {
                    legs,
                    locals: [local(30002), local(30004)],
                }
            } else {
                MediaEvent::Failed {
                    leg: legs[0],
                    reason: "x".into(),
                }
            };
            next.handle_media(now, ev);
        }
    }
    for chunk in data.split(|&b| b == 0xff).take(8) {
        let msg = parse(chunk, Framing::Datagram);
        next.handle_inbound(now, peers[chunk.len() % 3], msg);
    }
    next.handle_timeout(now + Duration::from_secs(120));
    next.hangup_all(now + Duration::from_secs(120), "shutdown");
    while next.poll_output().is_some() {}
    // Everything ends: no timer may panic on the way out.
    now += Duration::from_secs(120);
    core.handle_timeout(now);
    core.hangup_all(now, "shutdown");
    while core.poll_output().is_some() {}
});
