//! The registrar and the digest guard with real users and real digests:
//! REGISTERs (and challenged INVITEs) from a phone, a guesser and a
//! spoofer, answering the latest challenge each got with the right or a
//! wrong password, any nc, any algorithm, altered nonces, several
//! contacts and expiries, plus raw mutations and time moving on. Never a
//! panic, and never a 200 for a wrong password or for a nonce issued to
//! another address.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sip_daemon::core::{Core, CoreConfig, Output, WallClock};
use sip_daemon::metrics::Metrics;
use sip_daemon::routing::RoutingTable;
use sip_daemon::sip::digest::{Algorithm, Challenge, Credentials, ha1};
use sip_daemon::sip::parse::{Framing, parse};
use sip_daemon::sip::transport::{Peer, TransportKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REALM: &str = "voice-gateway";

fn routing() -> RoutingTable {
    use api::store::{Number, RouteKind, SipUser};
    let user = |name: &str, pw: &str| SipUser {
        username: name.into(),
        account_id: "a".into(),
        realm: REALM.into(),
        ha1_md5: ha1(Algorithm::Md5, name, REALM, pw),
        ha1_sha256: ha1(Algorithm::Sha256, name, REALM, pw),
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
    RoutingTable::build(
        vec![],
        vec![echo],
        vec![],
        vec![user("alice", "secret"), user("bob", "hunter2")],
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

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let cfg = CoreConfig {
        listeners: vec![(TransportKind::Udp, "127.0.0.1:5060".parse().unwrap())],
        challenge_invites: data.first().is_some_and(|b| b & 1 == 1),
        ..CoreConfig::default()
    };
    let mut cfg = cfg;
    cfg.registrar.guard.max_failures = 4;
    cfg.registrar.max_bindings_per_user = 3;
    let mut core = Core::new(
        cfg,
        Arc::new(routing()),
        Metrics::unregistered(),
        WallClock {
            base: t0,
            base_unix_ms: 1_700_000_000_000,
        },
        11,
    );
    let peers = [
        peer("198.51.100.1:5070"),
        peer("203.0.113.66:5070"),
        peer("[2001:db8::7]:5070"),
    ];
    // The latest challenges each peer received.
    let mut challenges: [Vec<Challenge>; 3] = Default::default();
    let users = [("alice", "secret"), ("bob", "hunter2"), ("mallory", "x")];
    let mut seq = 0u32;
    for op in data.chunks(6).take(200) {
        let [kind, who, user, knobs, extra, tweak] =
            [0, 1, 2, 3, 4, 5].map(|i| op.get(i).copied().unwrap_or(0));
        let p = usize::from(who % 3);
        let (name, right_pw) = users[usize::from(user % 3)];
        let good_pw = knobs & 1 == 0;
        let password = if good_pw {
            right_pw.to_string()
        } else {
            format!("guess{extra}")
        };
        seq += 1;
        let local = peers[p].remote;
        let contacts: String = (0..=(knobs >> 1 & 3))
            .map(|i| {
                format!(
                    "Contact: <sip:{name}@{local};line={}>\r\n",
                    (u16::from(extra) + u16::from(i)) % 7
                )
            })
            .collect();
        let expires = [0u32, 10, 60, 3600][usize::from(knobs >> 3 & 3)];
        let method = if kind % 4 == 3 { "INVITE" } else { "REGISTER" };
        let uri = if method == "INVITE" {
            "sip:+15550001@127.0.0.1"
        } else {
            "sip:127.0.0.1"
        };
        // The challenge answered: this peer's, another peer's (a nonce
        // issued elsewhere), or an altered one.
        let from_peer = if knobs & 0x20 != 0 { (p + 1) % 3 } else { p };
        let mut ch = challenges[from_peer]
            .get(usize::from(tweak % 2))
            .or_else(|| challenges[from_peer].first())
            .cloned();
        if let Some(c) = ch.as_mut()
            && knobs & 0x40 != 0
        {
            let mut b = c.nonce.clone().into_bytes();
            let at = usize::from(tweak) % b.len().max(1);
            if let Some(x) = b.get_mut(at) {
                *x ^= extra | 1;
            }
            c.nonce = String::from_utf8_lossy(&b).into_owned();
        }
        let auth = match (kind % 4, &ch) {
            (0, _) | (_, None) => String::new(),
            (_, Some(c)) => {
                let mut cr =
                    Credentials::answer(c, name, &password, method, uri, &format!("cn{seq}"));
                if knobs & 0x80 != 0 {
                    // Any nc, recomputing the response for it.
                    cr.nc = Some(format!("{:08x}", u32::from(extra)));
                    let h1 = ha1(c.algorithm, name, &c.realm, &password);
                    cr.response = cr
                        .expected_response(c.algorithm, &h1, method)
                        .unwrap_or_default();
                }
                let header = if method == "INVITE" {
                    "Proxy-Authorization"
                } else {
                    "Authorization"
                };
                format!("{header}: {}\r\n", cr.encode())
            }
        };
        let msg = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-f{seq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{name}@127.0.0.1>;tag=f{seq}\r\nTo: <sip:{}@127.0.0.1>\r\nCall-ID: fz-{p}-{}\r\nCSeq: {seq} {method}\r\n{contacts}Expires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n",
            if method == "INVITE" {
                "+15550001"
            } else {
                name
            },
            if method == "INVITE" { seq } else { 0 },
        );
        let mut bytes = msg.into_bytes();
        if kind & 0x10 != 0 && !bytes.is_empty() {
            // A raw mutation somewhere in the message.
            let at = usize::from(tweak) * 13 % bytes.len();
            bytes[at] = extra;
        }
        let honest = kind & 0x10 == 0 && knobs & 0x60 == 0 && from_peer == p;
        core.handle_inbound(now, peers[p], parse(&bytes, Framing::Datagram));
        while let Some(out) = core.poll_output() {
            let Output::Transmit(t) = out else { continue };
            let text = String::from_utf8_lossy(&t.bytes).into_owned();
            if !text.starts_with("SIP/2.0 ") {
                continue;
            }
            let for_this = text.contains(&format!("CSeq: {seq} "));
            if text.starts_with("SIP/2.0 200")
                && for_this
                && method == "REGISTER"
                && !auth.is_empty()
            {
                assert!(
                    good_pw && users[usize::from(user % 3)].0 != "mallory",
                    "200 for a wrong password:\n{text}"
                );
                assert!(
                    honest || kind & 0x10 != 0,
                    "200 for a nonce from elsewhere:\n{text}"
                );
            }
            let got: Vec<Challenge> = text
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("WWW-Authenticate: ")
                        .or_else(|| l.strip_prefix("Proxy-Authenticate: "))
                })
                .filter_map(|v| Challenge::parse(v).ok())
                .collect();
            let to = peers.iter().position(|q| q.remote == t.peer.remote);
            if let (false, Some(i)) = (got.is_empty(), to) {
                challenges[i] = got;
            }
        }
        if kind & 0x20 != 0 {
            now += Duration::from_secs(u64::from(extra) * 4);
            core.handle_timeout(now);
            while core.poll_output().is_some() {}
        }
    }
});
