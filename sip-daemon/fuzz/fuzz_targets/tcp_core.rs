//! TCP bytes into the signalling core, as the transport hands them over:
//! the input cut into segments at fuzzer-chosen points, framed by the
//! stream framer (resuming across segments), each frame parsed with
//! stream framing and fed to the core from a TCP peer; a framing error
//! answered as the transport does (a 400 built from the head) and the
//! connection dropped. Never a panic, whatever the bytes and the cuts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sip_daemon::core::{Core, CoreConfig, WallClock};
use sip_daemon::metrics::Metrics;
use sip_daemon::routing::RoutingTable;
use sip_daemon::sip::framer::{Frame, StreamFramer};
use sip_daemon::sip::parse::{self, Framing};
use sip_daemon::sip::transport::{Peer, TransportKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn routing() -> RoutingTable {
    use api::store::{Number, RouteKind, SipUser, Trunk};
    let trunk = Trunk {
        name: "callers".into(),
        source_cidrs: vec!["127.0.0.0/8".into()],
        outbound_address: None,
        transport: "tcp".into(),
        username: None,
        password: None,
        max_calls: None,
        transfer: None,
        account_id: None,
        requests_per_sec: None,
        tls: Default::default(),
        media_security: Default::default(),
        srtp_cleartext_keying: false,
    };
    let echo = Number {
        pattern: "*".into(),
        account_id: "a".into(),
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
    };
    let user = SipUser {
        username: "alice".into(),
        account_id: "a".into(),
        realm: "voice-gateway".into(),
        ha1_md5: "0".repeat(32),
        ha1_sha256: "0".repeat(64),
    };
    RoutingTable::build(vec![trunk], vec![echo], vec![], vec![user]).0
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, bytes)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let cfg = CoreConfig {
        listeners: vec![(TransportKind::Tcp, "127.0.0.1:5060".parse().unwrap())],
        ..CoreConfig::default()
    };
    let mut core = Core::new(
        cfg,
        Arc::new(routing()),
        Metrics::unregistered(),
        WallClock {
            base: t0,
            base_unix_ms: 1_700_000_000_000,
        },
        3,
    );
    // Two connections: from a trunk's network and from elsewhere.
    let peers = [("127.0.0.1:40000", 1), ("203.0.113.7:40001", 2)].map(|(remote, id)| Peer {
        transport: TransportKind::Tcp,
        local: "127.0.0.1:5060".parse().unwrap(),
        remote: remote.parse().unwrap(),
        conn: Some(id),
    });
    let peer = peers[usize::from(cuts & 1)];
    let mut framer = StreamFramer::new(4096);
    // Segment lengths come from the first byte: 1 to 64 bytes each.
    let step = usize::from(cuts >> 1).max(1);
    for seg in bytes.chunks(step) {
        framer.push(seg);
        loop {
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Ping)) => {}
                Ok(Some(Frame::Message(m))) => {
                    core.handle_inbound(now, peer, parse::parse(&m, Framing::Stream));
                }
                Err(e) => {
                    if let Some(head) = framer.head() {
                        core.handle_inbound(
                            now,
                            peer,
                            Err(parse::unframeable(head, &e.to_string())),
                        );
                    }
                    while core.poll_output().is_some() {}
                    return;
                }
            }
        }
        while core.poll_output().is_some() {}
        now += Duration::from_millis(50);
        core.handle_timeout(now);
        while core.poll_output().is_some() {}
    }
    // The framer examined each byte a bounded number of times.
    assert!(
        framer.examined() <= 4 * bytes.len() as u64 + 64,
        "{} for {}",
        framer.examined(),
        bytes.len()
    );
});
