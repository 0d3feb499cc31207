//! SRTP keyed by SDES (RFC 4568, RFC 3711) on virtual time: the policy
//! of numbers and trunks, keys only where the signalling hides them, the
//! leg keyed with what the answer says, re-keying, and keys shared end to
//! end across a forwarded call.

use super::forward::far_response;
use super::*;
use crate::sip::sdes::{Crypto, SrtpSuite};
use media_userspace::srtp::SrtpKeys;

/// 30 bytes of 0x11, 0x22 and 0x33: the caller's and the far side's keys.
const KEY_1: &str = "ERERERERERERERERERERERERERERERERERERERER";
const KEY_2: &str = "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIi";
const KEY_3: &str = "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMz";
/// 28 bytes of 0x11: an AEAD_AES_128_GCM key and salt.
const KEY_GCM: &str = "EREREREREREREREREREREREREREREREREREREQ==";

fn offer(proto: &str, crypto: &[String]) -> String {
    let mut s = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 {proto} 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
    );
    for c in crypto {
        s.push_str(&format!("a=crypto:{c}\r\n"));
    }
    s
}

fn line(tag: u32, suite: &str, key: &str) -> String {
    format!("{tag} {suite} inline:{key}")
}

/// The crypto attributes of a message's SDP.
fn cryptos(msg: &str) -> Vec<Crypto> {
    msg.lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| Crypto::parse(v).unwrap())
        .collect()
}

fn key_of(b64: &str) -> media_userspace::srtp::SrtpKey {
    Crypto::parse(&line(1, "AES_CM_128_HMAC_SHA1_80", b64))
        .unwrap()
        .key
}

fn tls() -> Peer {
    peer(TransportKind::Tls, CARRIER)
}

fn opened_keys(h: &Harness) -> Option<SrtpKeys> {
    match h.media.last() {
        Some(MediaCommand::Open { media, .. }) => media.srtp,
        other => panic!("expected Open, got {other:?}"),
    }
}

fn warning(msg: &str) -> &str {
    header(msg, "Warning").unwrap_or_default()
}

#[test]
fn an_sdes_offer_over_tls_is_answered_with_our_own_key_and_keys_the_leg() {
    let mut h = Harness::new();
    let o = offer(
        "RTP/SAVP",
        &[
            // An MKI we cannot honour, then a line we can.
            format!("{}|2^20|1:4", line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)),
            line(2, "AES_CM_128_HMAC_SHA1_32", KEY_1),
        ],
    );
    h.recv_from(tls(), &invite("+15550001", "s-1", "z9hG4bK-s1", "", &o));
    let keys = opened_keys(&h).expect("the leg is keyed");
    h.media_opened(30000);
    let ok = h.take_sent().pop().unwrap();
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    assert!(ok.contains("m=audio 30000 RTP/SAVP 0 101\r\n"), "{ok}");
    let ours = cryptos(&ok);
    assert_eq!(ours.len(), 1, "{ok}");
    assert_eq!(ours[0].tag, 2, "the answer names the offer's line");
    assert_eq!(ours[0].suite, SrtpSuite::AesCm128HmacSha1_32);
    assert_ne!(ours[0].key, key_of(KEY_1), "our own key, not the caller's");
    assert_eq!(keys.suite, SrtpSuite::AesCm128HmacSha1_32);
    assert_eq!(keys.rx, key_of(KEY_1), "what the caller sends under");
    assert_eq!(keys.tx, ours[0].key, "what we declared");
    let tag = to_tag_of(&ok);
    h.recv_from(
        tls(),
        &in_dialog("ACK", "s-1", &tag, 1, "z9hG4bK-s1a", "", ""),
    );
    match h.cdr.last() {
        Some(CdrEvent::Answered { media_security, .. }) => assert_eq!(
            media_security.as_ref().and_then(|m| m.caller.as_deref()),
            Some("srtp:AES_CM_128_HMAC_SHA1_32")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_never_cross_cleartext_signalling_unless_the_trunk_allows_it() {
    let mut h = Harness::new();
    // RTP/SAVP over UDP from a trunk that keeps keys to TLS: 488, why.
    let savp = offer("RTP/SAVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)]);
    h.recv(&invite("+15550001", "s-2", "z9hG4bK-s2", "", &savp));
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 488"), "{r}");
    assert!(
        warning(&r).contains("SDES keys are accepted over TLS only"),
        "{r}"
    );
    assert_eq!(h.core.metrics.rejection_count("srtp_keys_need_tls"), 1);
    assert!(h.media.is_empty());
    // Best-effort SRTP (RTP/AVP with crypto) over UDP: plain RTP, and no
    // key of ours goes back in clear.
    let avp = offer("RTP/AVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)]);
    h.recv(&invite("+15550001", "s-3", "z9hG4bK-s3", "", &avp));
    assert_eq!(opened_keys(&h), None);
    h.media_opened(30002);
    let ok = h.take_sent().pop().unwrap();
    assert!(ok.contains("m=audio 30002 RTP/AVP 0 101\r\n"), "{ok}");
    assert!(cryptos(&ok).is_empty(), "{ok}");
    // A trunk that allows cleartext keying (and requires SRTP) takes the
    // keys over UDP and refuses plain RTP.
    let secure = peer(TransportKind::Udp, "192.0.2.30:5060");
    h.recv_from(
        secure,
        &invite("+15550001", "s-4", "z9hG4bK-s4", "", &savp)
            .replace("127.0.0.1:5061", "192.0.2.30:5060"),
    );
    assert!(opened_keys(&h).is_some());
    h.recv_from(
        secure,
        &invite("+15550001", "s-5", "z9hG4bK-s5", "", SDP)
            .replace("127.0.0.1:5061", "192.0.2.30:5060"),
    );
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 488"), "{r}");
    assert!(warning(&r).contains("SRTP required"), "{r}");
    assert_eq!(h.core.metrics.rejection_count("srtp_required"), 1);
}

#[test]
fn a_numbers_policy_requires_or_refuses_srtp() {
    let mut h = Harness::new();
    // SRTP required by the number: a plain offer gets 488, even over TLS.
    h.recv_from(tls(), &invite("+14440001", "s-6", "z9hG4bK-s6", "", SDP));
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 488"), "{r}");
    // Best effort from the caller satisfies it.
    let avp = offer("RTP/AVP", &[line(5, "AEAD_AES_128_GCM", KEY_GCM)]);
    h.recv_from(tls(), &invite("+14440001", "s-7", "z9hG4bK-s7", "", &avp));
    assert_eq!(
        opened_keys(&h).map(|k| k.suite),
        Some(SrtpSuite::AeadAes128Gcm)
    );
    // Plain RTP only: RTP/SAVP is refused, crypto on RTP/AVP ignored.
    let savp = offer("RTP/SAVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)]);
    h.recv_from(tls(), &invite("+14441001", "s-8", "z9hG4bK-s8", "", &savp));
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 488"), "{r}");
    assert!(warning(&r).contains("plain RTP only"), "{r}");
    let avp = offer("RTP/AVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)]);
    h.recv_from(tls(), &invite("+14441001", "s-9", "z9hG4bK-s9", "", &avp));
    assert_eq!(opened_keys(&h), None);
}

#[test]
fn crypto_lines_we_cannot_honour_are_refused_by_name() {
    let mut h = Harness::new();
    for (i, bad) in [
        // A key of the wrong length, an MKI, an unknown suite, a lifetime
        // of zero, a session parameter that turns encryption off.
        line(1, "AES_CM_128_HMAC_SHA1_80", &KEY_1[..20]),
        format!("{}|1:4", line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)),
        line(1, "AES_256_CM_HMAC_SHA1_80", KEY_1),
        format!("{}|0", line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)),
        format!(
            "{} UNENCRYPTED_SRTP",
            line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let o = offer("RTP/SAVP", &[bad]);
        let id = format!("s-bad-{i}");
        h.recv_from(
            tls(),
            &invite("+15550001", &id, &format!("z9hG4bK-b{i}"), "", &o),
        );
        let r = h.take_sent().pop().unwrap();
        assert!(r.starts_with("SIP/2.0 488"), "{i}: {r}");
        assert!(
            warning(&r).contains("no crypto attribute we support"),
            "{r}"
        );
    }
    assert_eq!(h.core.metrics.rejection_count("srtp_crypto"), 5);
    assert!(h.media.is_empty());
}

#[test]
fn a_reinvite_with_a_new_key_rekeys_the_leg_and_ours_stays() {
    let mut h = Harness::new();
    let o = offer("RTP/SAVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)]);
    h.recv_from(tls(), &invite("+15550001", "s-10", "z9hG4bK-s10", "", &o));
    let first = opened_keys(&h).unwrap();
    h.media_opened(30000);
    let ok = h.take_sent().pop().unwrap();
    let tag = to_tag_of(&ok);
    h.recv_from(
        tls(),
        &in_dialog("ACK", "s-10", &tag, 1, "z9hG4bK-s10a", "", ""),
    );
    let o2 = offer("RTP/SAVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_2)]);
    h.recv_from(
        tls(),
        &in_dialog("INVITE", "s-10", &tag, 2, "z9hG4bK-s10r", "", &o2),
    );
    let ok2 = h.take_sent().pop().unwrap();
    assert!(ok2.starts_with("SIP/2.0 200"), "{ok2}");
    assert_eq!(cryptos(&ok2)[0].key, first.tx, "our key is kept");
    match h.media.last() {
        Some(MediaCommand::Update { media, .. }) => {
            let k = media.srtp.unwrap();
            assert_eq!((k.rx, k.tx), (key_of(KEY_2), first.tx));
        }
        other => panic!("{other:?}"),
    }
    // A re-INVITE back to plain RTP: the policy is optional, so the leg
    // drops its keys.
    h.recv_from(
        tls(),
        &in_dialog("INVITE", "s-10", &tag, 3, "z9hG4bK-s10p", "", SDP),
    );
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 200"), "optional: plain is fine: {r}");
    assert!(
        matches!(h.media.last(), Some(MediaCommand::Update { media, .. }) if media.srtp.is_none())
    );
}

/// The far INVITE's offer: a single crypto line with the caller's key.
#[test]
fn a_forwarded_call_shares_keys_end_to_end_when_both_legs_key() {
    let mut h = Harness::new();
    let secure = peer(TransportKind::Udp, "192.0.2.30:5060");
    let o = offer("RTP/SAVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)]);
    h.recv_from(
        secure,
        &invite("+15550000006", "s-f1", "z9hG4bK-f1", "", &o)
            .replace("127.0.0.1:5061", "192.0.2.30:5060"),
    );
    let (legs, media) = match h.media.last() {
        Some(MediaCommand::OpenRelay { legs, media, .. }) => (*legs, *media),
        other => panic!("{other:?}"),
    };
    assert_eq!(media[0].srtp.map(|k| k.rx), Some(key_of(KEY_1)));
    h.relay_opened(legs, [30000, 30002]);
    let inv = h.take_sent().pop().unwrap();
    assert!(inv.contains("m=audio 30002 RTP/SAVP 0 8 101\r\n"), "{inv}");
    let offered = cryptos(&inv);
    assert_eq!(offered.len(), 3, "{inv}");
    assert_eq!(offered[0].key, key_of(KEY_1), "the caller's own key first");
    assert!(
        offered[1..]
            .iter()
            .all(|c| c.key != key_of(KEY_1) && c.suite != offered[0].suite),
        "the other suites with keys of our own"
    );
    let far_sdp = format!(
        "v=0\r\no=far 7 7 IN IP4 192.0.2.31\r\ns=-\r\nc=IN IP4 192.0.2.31\r\nt=0 0\r\nm=audio 50000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_3}\r\n"
    );
    h.media.clear();
    h.recv_from(
        secure,
        &far_response(
            &inv,
            200,
            "OK",
            "far1",
            "Contact: <sip:far@192.0.2.30>\r\n",
            &far_sdp,
        ),
    );
    let ok = h
        .take_sent()
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .expect("the caller's 200");
    assert_eq!(cryptos(&ok)[0].key, key_of(KEY_3), "the far side's key");
    let last = |leg: u64| {
        h.media.iter().rev().find_map(|m| match m {
            MediaCommand::Update { leg: l, media } if *l == leg => media.srtp,
            _ => None,
        })
    };
    let (a, b) = (last(legs[0]).unwrap(), last(legs[1]).unwrap());
    assert_eq!((a.rx, a.tx), (key_of(KEY_1), key_of(KEY_3)));
    assert_eq!((b.rx, b.tx), (key_of(KEY_3), key_of(KEY_1)));
    match h.cdr.last() {
        Some(CdrEvent::Answered { media_security, .. }) => {
            let m = media_security.clone().unwrap();
            assert_eq!(m.caller.as_deref(), Some("srtp:AES_CM_128_HMAC_SHA1_80"));
            assert_eq!(m.far.as_deref(), Some("srtp:AES_CM_128_HMAC_SHA1_80"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_srtp_caller_forwarded_to_a_plain_carrier_is_reencrypted() {
    let mut h = Harness::new();
    let o = offer("RTP/SAVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)]);
    h.recv_from(tls(), &invite("+15550000007", "s-f2", "z9hG4bK-f2", "", &o));
    let legs = match h.media.last() {
        Some(MediaCommand::OpenRelay { legs, .. }) => *legs,
        other => panic!("{other:?}"),
    };
    h.relay_opened(legs, [30000, 30002]);
    let inv = h.take_sent().pop().unwrap();
    assert!(inv.contains("m=audio 30002 RTP/AVP 0 8 101\r\n"), "{inv}");
    assert!(cryptos(&inv).is_empty(), "no keys to a plain-only carrier");
    let plain = peer(TransportKind::Udp, "192.0.2.32:5060");
    let far_sdp = "v=0\r\no=far 7 7 IN IP4 192.0.2.33\r\ns=-\r\nc=IN IP4 192.0.2.33\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n";
    h.recv_from(plain, &far_response(&inv, 200, "OK", "far1", "", far_sdp));
    let ok = h
        .take_sent()
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .unwrap();
    let ours = cryptos(&ok);
    assert_eq!(ours.len(), 1);
    assert_ne!(ours[0].key, key_of(KEY_1));
    match h.cdr.last() {
        Some(CdrEvent::Answered { media_security, .. }) => {
            let m = media_security.clone().unwrap();
            assert_eq!(m.caller.as_deref(), Some("srtp:AES_CM_128_HMAC_SHA1_80"));
            assert_eq!(m.far.as_deref(), Some("rtp"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_far_leg_that_must_key_but_cannot_is_never_placed() {
    let mut h = Harness::new();
    // The trunk requires SRTP and its far answer comes without keys: the
    // far leg is refused and the caller gets 488.
    let secure = peer(TransportKind::Udp, "192.0.2.30:5060");
    let o = offer("RTP/SAVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)]);
    h.recv_from(
        secure,
        &invite("+15550000006", "s-f3", "z9hG4bK-f3", "", &o)
            .replace("127.0.0.1:5061", "192.0.2.30:5060"),
    );
    let legs = match h.media.last() {
        Some(MediaCommand::OpenRelay { legs, .. }) => *legs,
        other => panic!("{other:?}"),
    };
    h.relay_opened(legs, [30000, 30002]);
    let inv = h.take_sent().pop().unwrap();
    let far_sdp = "v=0\r\no=far 7 7 IN IP4 192.0.2.31\r\ns=-\r\nc=IN IP4 192.0.2.31\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n";
    h.recv_from(secure, &far_response(&inv, 200, "OK", "far1", "", far_sdp));
    let sent = h.take_sent();
    assert!(sent.iter().any(|m| m.starts_with("BYE ")), "{sent:?}");
    assert!(
        sent.iter().any(|m| m.starts_with("SIP/2.0 488")),
        "{sent:?}"
    );
}

#[test]
fn a_key_that_came_over_tls_is_never_shared_over_cleartext() {
    let mut h = Harness::new();
    // The caller keys over TLS; the far trunk lets keys cross UDP.
    let o = offer("RTP/SAVP", &[line(1, "AES_CM_128_HMAC_SHA1_80", KEY_1)]);
    h.recv_from(tls(), &invite("+15550000006", "s-f4", "z9hG4bK-f4", "", &o));
    let legs = match h.media.last() {
        Some(MediaCommand::OpenRelay { legs, .. }) => *legs,
        other => panic!("{other:?}"),
    };
    h.relay_opened(legs, [30000, 30002]);
    let inv = h.take_sent().pop().unwrap();
    let offered = cryptos(&inv);
    assert!(!offered.is_empty(), "{inv}");
    assert!(
        offered.iter().all(|c| c.key != key_of(KEY_1)),
        "the caller's key stays off the cleartext leg: {inv}"
    );
}
