//! Golden SDP: for each offer in `tests/sdp_golden/<case>.offer.sdp`, the
//! exact SDP the signalling core puts on the wire, compared byte for byte
//! with the files beside it, as rtpengine keeps its own:
//!
//! - `<case>.answer.sdp`: the answer in the 200 OK to the caller on an
//!   `echo` route (RFC 3264 §6: one audio stream taken, the others
//!   refused with port 0; RFC 4568 §7.1.2: the crypto line answers the
//!   offer's by tag, with our own key);
//! - `<case>.forward-offer.sdp`: the offer the B2BUA sends on to the far
//!   side of a `forward` route (RFC 3264 §5: the caller's codecs; RFC 4568
//!   §7.1.1: one crypto line per suite, the caller's key first where keys
//!   are shared end to end);
//! - `<case>.forward-answer.sdp`: the answer the caller gets on that route
//!   once the far side has answered.
//!
//! Where the core refuses the offer (488), the file ends in `.refused`
//! instead of `.sdp` and holds the final response's status line and
//! Warning header. A `forward-offer` that the core does not send has no
//! file: a re-INVITE is passed on to the far side only when the offered
//! direction changes (so not for an old-style `c=0.0.0.0` hold).
//!
//! Cases named `hold-*` are re-INVITEs (RFC 3264 §8.4) on a call set up
//! with `g711.offer.sdp`; every other offer starts a call.
//!
//! `UPDATE_GOLDEN=1 cargo nextest run -p sip-daemon --test sdp_golden`
//! rewrites the expected files, so that a deliberate change shows as a
//! diff in review; without it any difference fails.
//!
//! Nothing is masked: the core is driven through its public API on
//! virtual time with fixed seeds. Session ids are call handles, ports
//! come from the stand-in media engine below, and our SRTP keys are drawn
//! from [`Core::seed_keys`]' generator (rand's `StdRng`, pinned by
//! Cargo.lock). An upgrade of rand that changes that generator changes
//! the `inline:` keys of our crypto lines, and only those.

use media_userspace::codec::Codec;
use media_userspace::control::{MediaCommand, MediaEvent};
use sip_daemon::core::{Core, CoreConfig, Output, WallClock};
use sip_daemon::metrics::Metrics;
use sip_daemon::routing::RoutingTable;
use sip_daemon::sip::parse::{Framing, parse};
use sip_daemon::sip::sdes::LegKeying;
use sip_daemon::sip::sdp::{LocalMedia, SessionDescription, answer};
use sip_daemon::sip::transport::{Peer, TransportKind};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdp_golden");
const CALLER: &str = "127.0.0.1:5061";
const FAR: &str = "192.0.2.10:5070";
/// The address our SDP advertises (`media.advertised_ip`).
const OURS: &str = "203.0.113.1";
const ECHO: &str = "+15550001";
const FORWARD: &str = "+15550002";
/// The offer that sets up the call a `hold-*` case re-INVITEs.
const SETUP: &str = "g711";

fn routing() -> RoutingTable {
    use api::store::{Number, RouteKind, Trunk};
    // Both trunks let SDES keys cross UDP (as TLS would): SRTP offers are
    // keyed, and SRTP stays optional (the default policy).
    let trunk = |name: &str, cidr: &str, outbound: Option<&str>| Trunk {
        name: name.into(),
        source_cidrs: vec![cidr.into()],
        outbound_address: outbound.map(str::to_string),
        transport: "udp".into(),
        username: None,
        password: None,
        max_calls: None,
        transfer: None,
        account_id: None,
        requests_per_sec: None,
        tls: Default::default(),
        media_security: Default::default(),
        srtp_cleartext_keying: true,
    };
    let number =
        |pattern: &str, route: RouteKind, target: Option<&str>, trunk: Option<&str>| Number {
            pattern: pattern.into(),
            account_id: "golden".into(),
            route,
            target: target.map(str::to_string),
            dialect: None,
            params: None,
            trunk: trunk.map(str::to_string),
            max_calls: None,
            fallback: None,
            voice_webhook: None,
            sms_webhook: None,
            status_webhook: None,
            webhook_format: Default::default(),
            media_security: Default::default(),
        };
    let (table, problems) = RoutingTable::build(
        vec![
            trunk("callers", "127.0.0.0/8", None),
            trunk("far", "192.0.2.10/32", Some(FAR)),
        ],
        vec![
            number(ECHO, RouteKind::Echo, None, None),
            number(
                FORWARD,
                RouteKind::Forward,
                Some("sip:+15550002@far.example"),
                Some("far"),
            ),
        ],
        vec![],
        vec![],
    );
    assert!(problems.is_empty(), "{problems:?}");
    table
}

/// The core on virtual time, with a stand-in media engine that binds
/// every leg it is asked for on the next even port from 30000.
struct Gateway {
    core: Core,
    now: Instant,
    next_port: u16,
    /// (destination, message) of what the core sent.
    sent: Vec<(String, String)>,
}

impl Gateway {
    fn new() -> Gateway {
        let now = Instant::now();
        let cfg = CoreConfig {
            listeners: vec![(TransportKind::Udp, "127.0.0.1:5060".parse().unwrap())],
            advertised_ip: OURS.parse().unwrap(),
            ..CoreConfig::default()
        };
        let clock = WallClock {
            base: now,
            base_unix_ms: 1_700_000_000_000,
        };
        let mut core = Core::new(cfg, Arc::new(routing()), Metrics::unregistered(), clock, 1);
        core.seed_keys([0x5a; 32]);
        Gateway {
            core,
            now,
            next_port: 30000,
            sent: Vec::new(),
        }
    }

    fn port(&mut self) -> SocketAddr {
        let p = self.next_port;
        self.next_port += 2;
        SocketAddr::new("127.0.0.1".parse().unwrap(), p)
    }

    fn pump(&mut self) {
        while let Some(o) = self.core.poll_output() {
            let event = match o {
                Output::Transmit(t) => {
                    let text = String::from_utf8(t.bytes.to_vec()).expect("SIP is UTF-8 here");
                    self.sent.push((t.peer.remote.to_string(), text));
                    continue;
                }
                Output::Media(MediaCommand::Open { leg, .. }) => MediaEvent::Opened {
                    leg,
                    local: self.port(),
                },
                Output::Media(MediaCommand::OpenRelay { legs, .. }) => MediaEvent::RelayOpened {
                    legs,
                    locals: [self.port(), self.port()],
                },
                _ => continue,
            };
            self.core.handle_media(self.now, event);
        }
    }

    fn recv(&mut self, from: &str, msg: &str) {
        let peer = Peer {
            transport: TransportKind::Udp,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: from.parse().unwrap(),
            conn: None,
        };
        self.core
            .handle_inbound(self.now, peer, parse(msg.as_bytes(), Framing::Datagram));
        self.pump();
    }

    fn take(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.sent)
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn with_body(head: String, body: &str) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!("{head}{ct}Content-Length: {}\r\n\r\n{body}", body.len())
}

/// The caller's INVITE (`cseq` 1, a new call) or re-INVITE (`to_tag` of
/// the dialog) to `to`.
fn caller_invite(to: &str, to_tag: Option<&str>, cseq: u32, sdp: &str) -> String {
    let tag = to_tag.map_or(String::new(), |t| format!(";tag={t}"));
    with_body(
        format!(
            "INVITE sip:{to}@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-golden-{to}-{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:+15551230000@127.0.0.1>;tag=caller\r\n\
To: <sip:{to}@127.0.0.1>{tag}\r\n\
Call-ID: golden-{to}\r\n\
CSeq: {cseq} INVITE\r\n\
Contact: <sip:+15551230000@{CALLER}>\r\n"
        ),
        sdp,
    )
}

fn caller_ack(to: &str, to_tag: &str, cseq: u32) -> String {
    with_body(
        format!(
            "ACK sip:{to}@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-golden-{to}-{cseq}-ack;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:+15551230000@127.0.0.1>;tag=caller\r\n\
To: <sip:{to}@127.0.0.1>;tag={to_tag}\r\n\
Call-ID: golden-{to}\r\n\
CSeq: {cseq} ACK\r\n"
        ),
        "",
    )
}

/// The far side's 200 OK to the core's INVITE `inv`. The far side is a
/// stand-in played by this crate's own answerer with fixed keys (bytes of
/// 0x44), at 192.0.2.10:50000; a change in the answerer shows in the
/// `forward-answer` files as well as in the `answer` ones.
fn far_ok(inv: &str, version: u64) -> String {
    let offer = SessionDescription::parse(body(inv).as_bytes()).expect("our offer parses");
    let keying = LegKeying::new(Default::default(), true, &mut |b| b.fill(0x44));
    let local = LocalMedia {
        addr: "192.0.2.10".parse().unwrap(),
        port: 50000,
        session_id: 7,
        session_version: version,
        keying,
    };
    let (sdp, _) = answer(&offer, &local, &Codec::ALL).expect("the far side takes our offer");
    let h = |n| header(inv, n).unwrap();
    with_body(
        format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=far\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:far@{FAR}>\r\n",
            h("Via"),
            h("From"),
            h("To").split(";tag=").next().unwrap(),
            h("Call-ID"),
            h("CSeq"),
        ),
        &sdp.encode(),
    )
}

/// What one step produced: SDP, a refusal, or nothing sent.
#[derive(Debug, PartialEq)]
enum Golden {
    Sdp(String),
    Refused(String),
    Absent,
}

/// The caller's final response among `sent`: its SDP if 2xx, else its
/// status line and Warning.
fn final_to_caller(sent: &[(String, String)]) -> Golden {
    let Some((_, r)) = sent.iter().rev().find(|(to, m)| {
        to == CALLER
            && m.starts_with("SIP/2.0 ")
            && !m.starts_with("SIP/2.0 1")
            && header(m, "CSeq").is_some_and(|c| c.ends_with("INVITE"))
    }) else {
        return Golden::Absent;
    };
    if r.starts_with("SIP/2.0 2") {
        return Golden::Sdp(body(r).to_string());
    }
    let status = r.split("\r\n").next().unwrap();
    let warning = header(r, "Warning").unwrap_or("(none)");
    Golden::Refused(format!("{status}\nWarning: {warning}\n"))
}

/// The INVITE the core sent to the far side among `sent`.
fn invite_to_far(sent: &[(String, String)]) -> Option<&str> {
    sent.iter()
        .find(|(to, m)| to == FAR && m.starts_with("INVITE "))
        .map(|(_, m)| m.as_str())
}

fn offer_file(case: &str) -> String {
    let path = Path::new(DIR).join(format!("{case}.offer.sdp"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The answer to `case` on the echo route.
fn echo(case: &str, reinvite: bool) -> Golden {
    let mut gw = Gateway::new();
    if !reinvite {
        gw.recv(CALLER, &caller_invite(ECHO, None, 1, &offer_file(case)));
        return final_to_caller(&gw.take());
    }
    gw.recv(CALLER, &caller_invite(ECHO, None, 1, &offer_file(SETUP)));
    let sent = gw.take();
    let Golden::Sdp(_) = final_to_caller(&sent) else {
        panic!("the call to re-INVITE is not set up: {sent:?}");
    };
    let tag = to_tag(&sent);
    gw.recv(CALLER, &caller_ack(ECHO, &tag, 1));
    gw.recv(
        CALLER,
        &caller_invite(ECHO, Some(&tag), 2, &offer_file(case)),
    );
    final_to_caller(&gw.take())
}

fn to_tag(sent: &[(String, String)]) -> String {
    let ok = sent
        .iter()
        .rev()
        .find(|(to, m)| to == CALLER && m.starts_with("SIP/2.0 200"))
        .expect("a 200 to the caller");
    let to = header(&ok.1, "To").unwrap();
    to.split(";tag=").nth(1).unwrap().to_string()
}

/// The offer sent on to the far side and the answer the caller gets, for
/// `case` on the forward route.
fn forward(case: &str, reinvite: bool) -> (Golden, Golden) {
    let mut gw = Gateway::new();
    let first = if reinvite { SETUP } else { case };
    gw.recv(CALLER, &caller_invite(FORWARD, None, 1, &offer_file(first)));
    let sent = gw.take();
    let Some(inv) = invite_to_far(&sent) else {
        assert!(!reinvite, "the call to re-INVITE is not set up: {sent:?}");
        return (Golden::Absent, final_to_caller(&sent));
    };
    let far_offer = Golden::Sdp(body(inv).to_string());
    gw.recv(FAR, &far_ok(inv, 1));
    let sent = gw.take();
    let caller_answer = final_to_caller(&sent);
    if !reinvite {
        return (far_offer, caller_answer);
    }
    let tag = to_tag(&sent);
    gw.recv(CALLER, &caller_ack(FORWARD, &tag, 1));
    gw.take();
    gw.recv(
        CALLER,
        &caller_invite(FORWARD, Some(&tag), 2, &offer_file(case)),
    );
    let sent = gw.take();
    let caller_answer = final_to_caller(&sent);
    let far_offer = match invite_to_far(&sent) {
        Some(reinv) => {
            let far_offer = Golden::Sdp(body(reinv).to_string());
            // The far side answers, so the exchange ends as a real one would.
            gw.recv(FAR, &far_ok(reinv, 2));
            far_offer
        }
        None => Golden::Absent,
    };
    (far_offer, caller_answer)
}

fn update_mode() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty())
}

fn path(case: &str, slot: &str, ext: &str) -> PathBuf {
    Path::new(DIR).join(format!("{case}.{slot}.{ext}"))
}

/// Compares `got` with `<case>.<slot>.sdp` or `.refused`, or rewrites
/// them under `UPDATE_GOLDEN`; returns the failure, if any.
fn check(case: &str, slot: &str, got: &Golden) -> Option<String> {
    let sdp = path(case, slot, "sdp");
    let refused = path(case, slot, "refused");
    let (want_path, text) = match got {
        Golden::Sdp(t) => (Some(&sdp), t.as_str()),
        Golden::Refused(t) => (Some(&refused), t.as_str()),
        Golden::Absent => (None, ""),
    };
    if update_mode() {
        for p in [&sdp, &refused] {
            if Some(p) != want_path && p.exists() {
                std::fs::remove_file(p).unwrap();
            }
        }
        if let Some(p) = want_path {
            std::fs::write(p, text).unwrap();
        }
        return None;
    }
    for p in [&sdp, &refused] {
        if Some(p) != want_path && p.exists() {
            return Some(format!(
                "{}: expected, but the core produced {}",
                p.display(),
                match got {
                    Golden::Sdp(_) => "SDP",
                    Golden::Refused(_) => "a refusal",
                    Golden::Absent => "nothing",
                }
            ));
        }
    }
    let p = want_path?;
    let want = match std::fs::read_to_string(p) {
        Ok(w) => w,
        Err(e) => return Some(format!("{}: {e}\n{}", p.display(), show(text))),
    };
    (want != text).then(|| format!("{} differs:\n{}", p.display(), diff(&want, text)))
}

/// Lines with their CR made visible.
fn show(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| format!("  {}\n", l.replace('\r', "\\r").trim_end_matches('\n')))
        .collect()
}

/// A line-by-line difference: `-` expected, `+` produced (CR shown as
/// `\r`, so line-ending changes are visible too).
fn diff(want: &str, got: &str) -> String {
    let w: Vec<&str> = want.split_inclusive('\n').collect();
    let g: Vec<&str> = got.split_inclusive('\n').collect();
    let mut out = String::new();
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (w.get(i), g.get(i));
        let vis = |l: &str| l.replace('\r', "\\r").trim_end_matches('\n').to_string();
        if a == b {
            out.push_str(&format!("  {}\n", vis(a.unwrap())));
        } else {
            if let Some(a) = a {
                out.push_str(&format!("- {}\n", vis(a)));
            }
            if let Some(b) = b {
                out.push_str(&format!("+ {}\n", vis(b)));
            }
        }
    }
    out
}

fn golden(case: &str) {
    let reinvite = case.starts_with("hold-");
    let (far_offer, forward_answer) = forward(case, reinvite);
    let failures: Vec<String> = [
        ("answer", echo(case, reinvite)),
        ("forward-offer", far_offer),
        ("forward-answer", forward_answer),
    ]
    .iter()
    .filter_map(|(slot, got)| check(case, slot, got))
    .collect();
    assert!(
        failures.is_empty(),
        "{}\n(a deliberate change: rerun with UPDATE_GOLDEN=1 and review the diff; \
         if only our `inline:` keys differ, rand's StdRng changed)",
        failures.join("\n")
    );
}

/// One test per case, and `CASES`.
macro_rules! cases {
    ($($test:ident => $case:literal;)*) => {
        /// Every case: a file without one here fails
        /// [`every_offer_file_has_a_case`].
        const CASES: &[&str] = &[$($case),*];
        $(
            #[test]
            fn $test() {
                golden($case);
            }
        )*
    };
}

/// The offer files and `CASES` name the same cases, and no expected file
/// is left from a case gone.
#[test]
fn every_offer_file_has_a_case() {
    let listed: BTreeSet<&str> = CASES.iter().copied().collect();
    let mut offers = BTreeSet::new();
    for entry in std::fs::read_dir(DIR).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with('.') {
            continue;
        }
        let (case, _) = name.split_once('.').unwrap();
        assert!(listed.contains(case), "{name}: no such case in CASES");
        if name.ends_with(".offer.sdp") {
            offers.insert(case.to_string());
        }
    }
    let listed: BTreeSet<String> = listed.iter().map(|c| c.to_string()).collect();
    assert_eq!(offers, listed, "offer files and CASES differ");
}

cases! {
    g711 => "g711";
    pcma_no_telephone_event => "pcma-no-telephone-event";
    g722_telephone_event => "g722-telephone-event";
    unsupported_codecs_first => "unsupported-codecs-first";
    unsupported_codecs_only => "unsupported-codecs-only";
    audio_and_video => "audio-and-video";
    srtp_aes_cm_80 => "srtp-aes-cm-80";
    srtp_aes_cm_32 => "srtp-aes-cm-32";
    srtp_aead_aes_128_gcm => "srtp-aead-aes-128-gcm";
    srtp_best_effort => "srtp-best-effort";
    srtp_no_usable_crypto => "srtp-no-usable-crypto";
    ipv6 => "ipv6";
    ptime_30 => "ptime-30";
    rtcp_mux => "rtcp-mux";
    hold_sendonly => "hold-sendonly";
    hold_inactive => "hold-inactive";
    hold_zero_address => "hold-zero-address";
}
