//! Route `forward` (the B2BUA) on virtual time: the caller's INVITE, the
//! far leg's responses as a carrier or phone would send them, and what
//! each side sees.

use super::*;

pub(super) const FAR: &str = "192.0.2.10:5070";
pub(super) const FAR_SDP: &str = "v=0\r\no=far 7 7 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 50000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

/// Responds to the far INVITE `inv` as the far side.
pub(super) fn far_response(
    inv: &str,
    status: u16,
    reason: &str,
    to_tag: &str,
    extra: &str,
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    let tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    format!(
        "SIP/2.0 {status} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {}{tag}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        header(inv, "Via").unwrap(),
        header(inv, "From").unwrap(),
        header(inv, "To").unwrap(),
        header(inv, "Call-ID").unwrap(),
        header(inv, "CSeq").unwrap(),
        body.len()
    )
}

/// The far side's 200 OK with its SDP (PCMA) to the far INVITE `inv`.
pub(super) fn far_ok(inv: &str) -> String {
    far_response(
        inv,
        200,
        "OK",
        "far1",
        "Contact: <sip:far@192.0.2.10:5070>\r\n",
        FAR_SDP,
    )
}

fn far_peer() -> Peer {
    peer(TransportKind::Udp, FAR)
}

impl Harness {
    /// The caller's INVITE to a forward number: the relay is bound and
    /// the far INVITE leaves. Returns (caller leg, far leg, far INVITE).
    pub(super) fn forwarded(&mut self, to: &str, call_id: &str) -> (u64, u64, String) {
        self.recv(&invite(to, call_id, "z9hG4bK-fwd1", "", SDP));
        let (legs, media) = match self.media.last() {
            Some(MediaCommand::OpenRelay { legs, media, .. }) => (*legs, *media),
            other => panic!("expected OpenRelay, got {other:?}"),
        };
        assert_eq!(media[0].remote, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(
            media[1].remote, None,
            "nothing goes to the far side before it answers"
        );
        assert!(
            self.take_sent().is_empty(),
            "the far INVITE waits for the relay ports"
        );
        self.relay_opened(legs, [30000, 30002]);
        let (p, inv) = self.sent.pop().expect("far INVITE");
        assert!(self.sent.is_empty());
        assert!(inv.starts_with("INVITE "), "{inv}");
        (legs[0], legs[1], {
            let _ = p;
            inv
        })
    }

    pub(super) fn far(&mut self, msg: &str) {
        self.recv_from(far_peer(), msg);
    }

    pub(super) fn sent_to(&mut self) -> Vec<(String, String)> {
        self.sent
            .drain(..)
            .map(|(p, s)| (p.remote.to_string(), s))
            .collect()
    }

    pub(super) fn last_cause(&self) -> (String, u16) {
        match self.cdr.last() {
            Some(CdrEvent::Ended {
                cause, sip_status, ..
            }) => (cause.clone(), *sip_status),
            other => panic!("expected an Ended record, got {other:?}"),
        }
    }
}

#[test]
fn forwarded_call_rings_answers_and_bridges_both_ways() {
    let mut h = Harness::new();
    let (leg_a, leg_b, inv) = h.forwarded("+15550000002", "fwd-1");
    assert!(
        inv.starts_with("INVITE sip:+15550000002@192.0.2.10:5070 SIP/2.0\r\n"),
        "{inv}"
    );
    assert!(
        header(&inv, "From")
            .unwrap()
            .starts_with("<sip:+15551230000@127.0.0.1:5060>;tag=")
    );
    assert_eq!(
        header(&inv, "To"),
        Some("<sip:+15550000002@192.0.2.10:5070>")
    );
    assert_eq!(header(&inv, "Max-Forwards"), Some("69"));
    assert_ne!(
        header(&inv, "Call-ID"),
        Some("fwd-1"),
        "a B2BUA leg has its own Call-ID"
    );
    assert!(
        inv.contains("m=audio 30002 RTP/AVP 0 8 101\r\n"),
        "offers the caller's codecs: {inv}"
    );

    h.far(&far_response(&inv, 100, "Trying", "", "", ""));
    assert!(h.take_sent().is_empty());
    h.far(&far_response(
        &inv,
        180,
        "Ringing",
        "far1",
        "Contact: <sip:far@192.0.2.10:5070>\r\n",
        "",
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, CARRIER);
    assert!(
        sent[0].1.starts_with("SIP/2.0 180 Ringing"),
        "{}",
        sent[0].1
    );
    let caller_tag = to_tag_of(&sent[0].1);
    // A second 180 is not repeated to the caller.
    h.far(&far_response(&inv, 180, "Ringing", "far1", "", ""));
    assert!(h.take_sent().is_empty());

    h.advance_to(3_000);
    h.take_sent();
    h.media.clear();
    h.far(&far_ok(&inv));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let ack = &sent.iter().find(|(to, _)| to == FAR).expect("ACK to far").1;
    assert!(
        ack.starts_with("ACK sip:far@192.0.2.10:5070 SIP/2.0\r\n"),
        "{ack}"
    );
    assert_eq!(header(ack, "CSeq"), Some("1 ACK"));
    assert!(header(ack, "To").unwrap().ends_with(";tag=far1"));
    let ok = &sent
        .iter()
        .find(|(to, _)| to == CARRIER)
        .expect("200 to caller")
        .1;
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    assert_eq!(to_tag_of(ok), caller_tag, "one dialog with the caller");
    assert!(
        ok.contains("m=audio 30000 RTP/AVP 8 101\r\n"),
        "the caller gets the codec the far side chose (no transcoding): {ok}"
    );
    let far_update = h.media.iter().find_map(|m| match m {
        MediaCommand::Update { leg, media } if *leg == leg_b => Some(*media),
        _ => None,
    });
    let far_update = far_update.expect("relay pointed at the far side");
    assert_eq!(far_update.remote, Some("192.0.2.10:50000".parse().unwrap()));
    assert_eq!(far_update.codec, Codec::Pcma);
    let near_update = h.media.iter().find_map(|m| match m {
        MediaCommand::Update { leg, media } if *leg == leg_a => Some(*media),
        _ => None,
    });
    assert_eq!(
        near_update.map(|m| (m.codec, m.payload_type)),
        Some((Codec::Pcma, 8))
    );
    assert!(matches!(h.cdr.last(), Some(CdrEvent::Answered { .. })));

    // A retransmitted 200 gets the same ACK again.
    h.far(&far_ok(&inv));
    let again = h.sent_to();
    assert_eq!(again.len(), 1);
    assert_eq!(&again[0].1, ack);

    // The caller hangs up: BYE on the far dialog, relay closed.
    h.recv(&in_dialog(
        "ACK",
        "fwd-1",
        &caller_tag,
        1,
        "z9hG4bK-a1",
        "",
        "",
    ));
    h.recv(&in_dialog(
        "BYE",
        "fwd-1",
        &caller_tag,
        2,
        "z9hG4bK-b1",
        "",
        "",
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("SIP/2.0 200 OK"))
    );
    let bye = &sent.iter().find(|(to, _)| to == FAR).expect("BYE to far").1;
    assert!(
        bye.starts_with("BYE sip:far@192.0.2.10:5070 SIP/2.0\r\n"),
        "{bye}"
    );
    assert_eq!(header(bye, "CSeq"), Some("2 BYE"));
    assert!(matches!(h.media.last(), Some(MediaCommand::Close { leg }) if *leg == leg_a));
    assert_eq!(h.last_cause(), ("caller_hangup".into(), 200));
    assert_eq!(h.core.active_calls(), 0);
    assert!(h.core.out_legs.is_empty());
    assert!(h.core.dialogs.is_empty(), "both dialogs forgotten");
}

#[test]
fn far_side_hangup_ends_the_caller_too() {
    let mut h = Harness::new();
    let (_, _, inv) = h.forwarded("+15550000002", "fwd-2");
    h.far(&far_response(
        &inv,
        200,
        "OK",
        "far2",
        "Contact: <sip:far@192.0.2.10:5070>\r\n",
        FAR_SDP,
    ));
    h.take_sent();
    let our_tag = header(&inv, "From")
        .unwrap()
        .split(";tag=")
        .nth(1)
        .unwrap()
        .to_string();
    let call_id = header(&inv, "Call-ID").unwrap().to_string();
    let bye = format!(
        "BYE sip:+15551230000@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-fb\r\nMax-Forwards: 70\r\nFrom: <sip:+15550000002@192.0.2.10:5070>;tag=far2\r\nTo: <sip:+15551230000@127.0.0.1>;tag={our_tag}\r\nCall-ID: {call_id}\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    h.far(&bye);
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == FAR && m.starts_with("SIP/2.0 200 OK")),
        "{sent:?}"
    );
    let to_caller = sent
        .iter()
        .find(|(to, _)| to == CARRIER)
        .expect("BYE to caller");
    assert!(
        to_caller
            .1
            .starts_with("BYE sip:+15551230000@127.0.0.1:5061"),
        "{}",
        to_caller.1
    );
    assert_eq!(h.last_cause(), ("callee_hangup".into(), 200));
    assert!(h.core.out_legs.is_empty());
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn busy_decline_and_failure_end_in_defined_outcomes() {
    for (status, reason, cause, to_caller) in [
        (486, "Busy Here", "busy", 486),
        (603, "Decline", "declined", 603),
        (404, "Not Found", "not_found", 404),
        (503, "Service Unavailable", "failed", 502),
    ] {
        let mut h = Harness::new();
        let (_, _, inv) = h.forwarded("+15550000002", "fwd-busy");
        h.far(&far_response(&inv, status, reason, "farx", "", ""));
        let sent = h.sent_to();
        let ack = &sent.iter().find(|(to, _)| to == FAR).expect("ACK").1;
        assert!(
            ack.starts_with("ACK sip:+15550000002@192.0.2.10:5070 SIP/2.0"),
            "{ack}"
        );
        assert_eq!(
            header(ack, "Via"),
            header(&inv, "Via"),
            "same branch as the INVITE (§17.1.1.3)"
        );
        let resp = &sent
            .iter()
            .find(|(to, _)| to == CARRIER)
            .expect("final to caller")
            .1;
        assert!(
            resp.starts_with(&format!("SIP/2.0 {to_caller} ")),
            "{status}: {resp}"
        );
        assert_eq!(h.last_cause(), (cause.to_string(), to_caller));
        assert!(h.core.out_legs.is_empty());
        assert_eq!(h.core.active_calls(), 0);
        assert!(matches!(h.media.last(), Some(MediaCommand::Close { .. })));
        // A retransmitted final is answered by the transaction's ACK.
        h.far(&far_response(&inv, status, reason, "farx", "", ""));
        let again = h.sent_to();
        assert_eq!(again.len(), 1);
        assert_eq!(&again[0].1, ack);
    }
}

#[test]
fn a_far_leg_whose_transport_fails_ends_at_once_not_after_timer_b() {
    let mut h = Harness::new();
    let (_, _, _inv) = h.forwarded("+15550000002", "fwd-transport");
    // A failure towards another peer touches nothing.
    let now = h.now;
    h.core
        .handle_transport_failure(now, peer(TransportKind::Tcp, FAR));
    h.drain();
    assert_eq!(h.core.out_legs.len(), 1);
    assert!(h.sent_to().iter().all(|(to, _)| to != CARRIER));
    // The edge could not connect (or its TLS handshake failed): the caller
    // hears it now, as after a timeout, with nothing sent in its place.
    h.core.handle_transport_failure(now, far_peer());
    h.drain();
    let sent = h.sent_to();
    assert!(
        sent.iter().all(|(to, _)| to != FAR),
        "nothing more to the far side"
    );
    let resp = &sent
        .iter()
        .find(|(to, _)| to == CARRIER)
        .expect("final to caller")
        .1;
    assert!(resp.starts_with("SIP/2.0 408 "), "{resp}");
    assert_eq!(h.last_cause(), ("unreachable".to_string(), 408));
    assert!(h.core.out_legs.is_empty());
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn ring_timeout_cancels_the_far_leg() {
    let mut h = Harness::new();
    let (_, _, inv) = h.forwarded("+15550000002", "fwd-ring");
    h.far(&far_response(&inv, 180, "Ringing", "far3", "", ""));
    h.take_sent();
    h.advance_to(29_900);
    assert!(h.sent_to().iter().all(|(_, m)| !m.starts_with("CANCEL")));
    h.advance_to(30_100);
    let sent = h.sent_to();
    let cancel = &sent.iter().find(|(to, _)| to == FAR).expect("CANCEL").1;
    assert!(
        cancel.starts_with("CANCEL sip:+15550000002@192.0.2.10:5070 SIP/2.0"),
        "{cancel}"
    );
    assert_eq!(header(cancel, "Via"), header(&inv, "Via"));
    assert_eq!(header(cancel, "CSeq"), Some("1 CANCEL"));
    assert!(!header(cancel, "To").unwrap().contains("tag="));
    let resp = &sent.iter().find(|(to, _)| to == CARRIER).expect("480").1;
    assert!(resp.starts_with("SIP/2.0 480 "), "{resp}");
    assert_eq!(h.last_cause(), ("no_answer".into(), 480));
    // 200 to the CANCEL, 487 to the INVITE: ACKed, nothing else.
    let mut ok_cancel = far_response(cancel, 200, "OK", "far3", "", "");
    ok_cancel = ok_cancel.replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    h.far(&ok_cancel);
    h.far(&far_response(
        &inv,
        487,
        "Request Terminated",
        "far3",
        "",
        "",
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].1.starts_with("ACK "));
    assert!(h.core.out_legs.is_empty());
}

#[test]
fn caller_cancel_waits_for_a_provisional_before_canceling() {
    let mut h = Harness::new();
    let (_, _, inv) = h.forwarded("+15550000002", "fwd-cxl");
    let cancel = invite("+15550000002", "fwd-cxl", "z9hG4bK-fwd1", "", "")
        .replacen("INVITE", "CANCEL", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    h.recv(&cancel);
    let sent = h.sent_to();
    assert_eq!(
        sent.len(),
        2,
        "200 to the CANCEL, 487 to the INVITE: {sent:?}"
    );
    assert!(
        sent.iter().all(|(to, _)| to == CARRIER),
        "§9.1: no CANCEL before a provisional"
    );
    assert_eq!(h.last_cause(), ("canceled".into(), 487));
    h.far(&far_response(&inv, 180, "Ringing", "far4", "", ""));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].1.starts_with("CANCEL "), "{}", sent[0].1);
    // The far side answered anyway (a race): ACK, then BYE.
    h.far(&far_response(
        &inv,
        200,
        "OK",
        "far4",
        "Contact: <sip:far@192.0.2.10:5070>\r\n",
        FAR_SDP,
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].1.starts_with("ACK "));
    assert!(sent[1].1.starts_with("BYE "));
    assert!(h.core.out_legs.is_empty());
}

#[test]
fn early_media_reaches_the_caller_before_the_answer() {
    let mut h = Harness::new();
    let (_, leg_b, inv) = h.forwarded("+15550000002", "fwd-early");
    h.media.clear();
    h.far(&far_response(
        &inv,
        183,
        "Session Progress",
        "far5",
        "",
        FAR_SDP,
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1);
    let p = &sent[0].1;
    assert!(p.starts_with("SIP/2.0 183 "), "{p}");
    assert!(p.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{p}");
    assert!(h.media.iter().any(|m| matches!(m,
        MediaCommand::Update { leg, media } if *leg == leg_b && media.remote == Some("192.0.2.10:50000".parse().unwrap()))));
    h.far(&far_response(
        &inv,
        200,
        "OK",
        "far5",
        "Contact: <sip:far@192.0.2.10:5070>\r\n",
        FAR_SDP,
    ));
    let sent = h.sent_to();
    let ok = &sent.iter().find(|(to, _)| to == CARRIER).unwrap().1;
    assert!(
        ok.contains("m=audio 30000 RTP/AVP 8 101\r\n"),
        "same answer as the 183: {ok}"
    );
}

#[test]
fn trunk_challenge_is_answered_once_with_digest() {
    let mut h = Harness::new();
    let (_, _, inv) = h.forwarded("+15550000003", "fwd-auth");
    assert!(
        inv.starts_with("INVITE sip:+4930123@carrier.example SIP/2.0"),
        "{inv}"
    );
    let carrier = peer(TransportKind::Udp, "192.0.2.20:5060");
    let challenge = "Proxy-Authenticate: Digest realm=\"carrier.example\", nonce=\"n0nce\", qop=\"auth\", algorithm=MD5\r\n";
    h.recv_from(
        carrier,
        &far_response(
            &inv,
            407,
            "Proxy Authentication Required",
            "c1",
            challenge,
            "",
        ),
    );
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent.iter().all(|(to, _)| to == "192.0.2.20:5060"),
        "both to the trunk: {sent:?}"
    );
    assert!(sent[0].1.starts_with("ACK "));
    let inv2 = &sent[1].1;
    assert_eq!(header(inv2, "CSeq"), Some("2 INVITE"));
    assert_ne!(
        header(inv2, "Via"),
        header(&inv, "Via"),
        "a new transaction"
    );
    let creds = Credentials::parse(header(inv2, "Proxy-Authorization").unwrap()).unwrap();
    assert_eq!(creds.username, "gw");
    let ha1 = ha1(Algorithm::Md5, "gw", "carrier.example", "trunk-secret");
    assert_eq!(
        creds
            .expected_response(Algorithm::Md5, &ha1, "INVITE")
            .as_deref(),
        Some(creds.response.as_str()),
        "the response proves the trunk password"
    );
    // A second challenge is not answered again: the caller gets 502.
    h.recv_from(
        carrier,
        &far_response(
            inv2,
            407,
            "Proxy Authentication Required",
            "c2",
            challenge,
            "",
        ),
    );
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("SIP/2.0 502 ")),
        "{sent:?}"
    );
    assert_eq!(h.last_cause(), ("failed".into(), 502));
    let _ = Challenge::parse("Digest realm=\"x\", nonce=\"y\"").unwrap();
}

#[test]
fn late_offer_and_unreachable_targets_are_refused_cleanly() {
    let mut h = Harness::new();
    h.recv(&invite("+15550000002", "fwd-late", "z9hG4bK-l1", "", ""));
    assert_eq!(h.statuses(), vec![488]);
    assert_eq!(h.last_cause(), ("offer_required".into(), 488));
    assert!(h.media.is_empty());
}

/// A request from the far side inside its dialog with us.
fn far_request(
    inv: &str,
    far_tag: &str,
    method: &str,
    cseq: u32,
    extra: &str,
    body: &str,
) -> String {
    let our_tag = header(inv, "From").unwrap().split(";tag=").nth(1).unwrap();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:+15551230000@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-far-{method}-{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:+15550000002@192.0.2.10:5070>;tag={far_tag}\r\nTo: <sip:+15551230000@127.0.0.1>;tag={our_tag}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <sip:far@192.0.2.10:5070>\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        header(inv, "Call-ID").unwrap(),
        body.len()
    )
}

const TARGET_SDP: &str = "v=0\r\no=t 9 9 IN IP4 192.0.2.30\r\ns=-\r\nc=IN IP4 192.0.2.30\r\nt=0 0\r\nm=audio 51000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

impl Harness {
    /// A forwarded call, answered by the far side with tag `far1`; the
    /// caller's ACK in. Returns (caller leg, far leg, far INVITE, caller tag).
    fn bridged(&mut self, call_id: &str) -> (u64, u64, String, String) {
        let (a, b, inv) = self.forwarded("+15550000002", call_id);
        self.far(&far_ok(&inv));
        let ok = self
            .sent_to()
            .into_iter()
            .find(|(to, m)| to == CARRIER && m.starts_with("SIP/2.0 200"))
            .expect("200 to caller")
            .1;
        let tag = to_tag_of(&ok);
        self.recv(&in_dialog("ACK", call_id, &tag, 1, "z9hG4bK-ack", "", ""));
        self.media.clear();
        (a, b, inv, tag)
    }

    /// The far side REFERs the caller to `target`: 202, NOTIFY 100 and
    /// the new INVITE. Returns the new INVITE.
    fn referred(&mut self, inv: &str, target: &str) -> String {
        self.far(&far_request(
            inv,
            "far1",
            "REFER",
            2,
            &format!("Refer-To: <{target}>\r\nReferred-By: <sip:far@192.0.2.10>\r\n"),
            "",
        ));
        let sent = self.sent_to();
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert!(sent[0].1.starts_with("SIP/2.0 202 "), "{}", sent[0].1);
        let notify = &sent[1].1;
        assert!(
            notify.starts_with("NOTIFY sip:far@192.0.2.10:5070 SIP/2.0"),
            "{notify}"
        );
        assert_eq!(header(notify, "Event"), Some("refer"));
        assert_eq!(
            header(notify, "Subscription-State"),
            Some("active;expires=60")
        );
        assert!(
            notify.ends_with("\r\n\r\nSIP/2.0 100 Trying\r\n"),
            "{notify}"
        );
        let inv2 = sent[2].1.clone();
        assert_eq!(sent[2].0, FAR, "through the far leg's trunk");
        inv2
    }
}

#[test]
fn far_side_blind_transfer_moves_the_caller_to_the_new_target() {
    let mut h = Harness::new();
    let (_, leg_b, inv, caller_tag) = h.bridged("xfer-1");
    let inv2 = h.referred(&inv, "sip:+15559990000@192.0.2.10:5070");
    assert!(
        inv2.starts_with("INVITE sip:+15559990000@192.0.2.10:5070 SIP/2.0"),
        "{inv2}"
    );
    assert_ne!(header(&inv2, "Call-ID"), header(&inv, "Call-ID"));
    assert!(
        inv2.contains("m=audio 30002 RTP/AVP 8 101\r\n"),
        "the new leg gets the relay side and the bridged codec: {inv2}"
    );
    h.far(&far_response(&inv2, 180, "Ringing", "t2", "", ""));
    assert!(
        h.sent_to().is_empty(),
        "the caller hears nothing new while the target rings"
    );
    h.far(&far_response(
        &inv2,
        200,
        "OK",
        "t2",
        "Contact: <sip:target@192.0.2.30:5060>\r\n",
        TARGET_SDP,
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent[0]
            .1
            .starts_with("ACK sip:target@192.0.2.30:5060 SIP/2.0"),
        "{}",
        sent[0].1
    );
    let notify = &sent[1].1;
    assert!(notify.starts_with("NOTIFY "), "{notify}");
    assert_eq!(
        header(notify, "Subscription-State"),
        Some("terminated;reason=noresource")
    );
    assert!(notify.ends_with("SIP/2.0 200 OK\r\n"), "{notify}");
    assert!(
        sent[2].1.starts_with("BYE sip:far@192.0.2.10:5070 SIP/2.0"),
        "transferor released: {}",
        sent[2].1
    );
    assert!(
        h.media.iter().any(|m| matches!(m,
            MediaCommand::Update { leg, media } if *leg == leg_b && media.remote == Some("192.0.2.30:51000".parse().unwrap()))),
        "the relay side now points at the target: {:?}",
        h.media
    );
    // The caller hangs up: the BYE goes to the target.
    h.recv(&in_dialog(
        "BYE",
        "xfer-1",
        &caller_tag,
        2,
        "z9hG4bK-b2",
        "",
        "",
    ));
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == FAR && m.starts_with("BYE sip:target@192.0.2.30:5060")),
        "{sent:?}"
    );
    assert_eq!(h.last_cause(), ("caller_hangup".into(), 200));
    assert!(h.core.out_legs.is_empty());
}

#[test]
fn failed_transfer_leaves_the_caller_with_the_transferor() {
    let mut h = Harness::new();
    let (_, _, inv, caller_tag) = h.bridged("xfer-2");
    let inv2 = h.referred(&inv, "sip:+15559990000@192.0.2.10:5070");
    h.far(&far_response(&inv2, 486, "Busy Here", "t2", "", ""));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].1.starts_with("ACK "));
    assert!(
        sent[1].1.ends_with("SIP/2.0 486 Busy Here\r\n"),
        "{}",
        sent[1].1
    );
    assert_eq!(h.core.active_calls(), 1, "the call goes on");
    h.recv(&in_dialog(
        "BYE",
        "xfer-2",
        &caller_tag,
        2,
        "z9hG4bK-b3",
        "",
        "",
    ));
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(_, m)| m.starts_with("BYE sip:far@192.0.2.10:5070")),
        "{sent:?}"
    );
}

#[test]
fn transferor_leaving_early_keeps_the_caller_until_the_target_answers_or_fails() {
    let mut h = Harness::new();
    let (_, _, inv, _) = h.bridged("xfer-3");
    let inv2 = h.referred(&inv, "sip:+15559990000@192.0.2.10:5070");
    // The transferor hangs up right after its 202, as phones do.
    h.far(&far_request(&inv, "far1", "BYE", 3, "", ""));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1, "only the 200 to its BYE: {sent:?}");
    assert_eq!(h.core.active_calls(), 1);
    h.far(&far_response(
        &inv2,
        480,
        "Temporarily Unavailable",
        "t3",
        "",
        "",
    ));
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("BYE ")),
        "nobody left for the caller: {sent:?}"
    );
    assert_eq!(h.last_cause(), ("transfer_failed".into(), 200));
    assert!(h.core.out_legs.is_empty());
}

#[test]
fn refer_without_target_or_attended_is_refused() {
    let mut h = Harness::new();
    let (_, _, inv, _) = h.bridged("xfer-4");
    h.far(&far_request(&inv, "far1", "REFER", 2, "", ""));
    assert_eq!(h.statuses(), vec![400]);
    h.far(&far_request(
        &inv,
        "far1",
        "REFER",
        3,
        "Refer-To: <sip:+15559990000@192.0.2.10?Replaces=abc%3Bto-tag%3Dx%3Bfrom-tag%3Dy>\r\n",
        "",
    ));
    assert_eq!(h.statuses(), vec![501]);
    assert_eq!(h.core.active_calls(), 1);
}

fn with_direction(sdp: &str, dir: &str) -> String {
    format!("{sdp}a={dir}\r\n")
}

#[test]
fn caller_hold_is_offered_on_to_the_far_side_and_back() {
    let mut h = Harness::new();
    let (leg_a, leg_b, _, caller_tag) = h.bridged("hold-1");
    // The caller holds: answered at once (recvonly), then a re-INVITE of
    // ours offers sendonly to the far side.
    h.recv(&in_dialog(
        "INVITE",
        "hold-1",
        &caller_tag,
        2,
        "z9hG4bK-h1",
        "",
        &with_direction(SDP, "sendonly"),
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[0].1.starts_with("SIP/2.0 200 OK") && sent[0].1.contains("a=recvonly"),
        "{}",
        sent[0].1
    );
    let reinv = &sent[1].1;
    assert_eq!(sent[1].0, FAR);
    assert!(
        reinv.starts_with("INVITE sip:far@192.0.2.10:5070 SIP/2.0"),
        "{reinv}"
    );
    assert!(
        reinv.contains("m=audio 30002 RTP/AVP 8 101\r\n") && reinv.contains("a=sendonly"),
        "{reinv}"
    );
    assert!(reinv.contains("o=- "), "{reinv}");
    assert_eq!(header(reinv, "CSeq"), Some("2 INVITE"));
    assert!(
        h.media.iter().any(
            |m| matches!(m, MediaCommand::Update { leg, media } if *leg == leg_a && !media.send)
        )
    );
    h.media.clear();
    // The far side answers recvonly: ACKed, its leg keeps sending to it.
    h.far(&far_response(
        reinv,
        200,
        "OK",
        "far1",
        "Contact: <sip:far@192.0.2.10:5070>\r\n",
        &with_direction(FAR_SDP, "recvonly"),
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].1.starts_with("ACK sip:far@192.0.2.10:5070 SIP/2.0"),
        "{}",
        sent[0].1
    );
    assert_eq!(header(&sent[0].1, "CSeq"), Some("2 ACK"));
    assert!(
        h.media.iter().any(
            |m| matches!(m, MediaCommand::Update { leg, media } if *leg == leg_b && media.send)
        )
    );
    // A session refresh with the same direction is not propagated again.
    h.recv(&in_dialog(
        "ACK",
        "hold-1",
        &caller_tag,
        2,
        "z9hG4bK-h1a",
        "",
        "",
    ));
    h.recv(&in_dialog(
        "INVITE",
        "hold-1",
        &caller_tag,
        3,
        "z9hG4bK-h2",
        "",
        &with_direction(SDP, "sendonly"),
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1, "answered only: {sent:?}");
    // Unhold: sendrecv goes on to the far side.
    h.recv(&in_dialog(
        "ACK",
        "hold-1",
        &caller_tag,
        3,
        "z9hG4bK-h2a",
        "",
        "",
    ));
    h.recv(&in_dialog(
        "INVITE",
        "hold-1",
        &caller_tag,
        4,
        "z9hG4bK-h3",
        "",
        SDP,
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1].1.contains("a=sendrecv") && sent[1].1.starts_with("INVITE "),
        "{}",
        sent[1].1
    );
}

#[test]
fn far_side_hold_reaches_the_caller_and_a_refusal_stays_local() {
    let mut h = Harness::new();
    let (leg_a, _, inv, _) = h.bridged("hold-2");
    h.far(&far_request(
        &inv,
        "far1",
        "INVITE",
        5,
        "",
        &with_direction(FAR_SDP, "sendonly"),
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].1.starts_with("SIP/2.0 200 OK") && sent[0].1.contains("a=recvonly"));
    let reinv = &sent[1].1;
    assert_eq!(sent[1].0, CARRIER);
    assert!(
        reinv.starts_with("INVITE sip:+15551230000@127.0.0.1:5061 SIP/2.0"),
        "{reinv}"
    );
    assert!(
        reinv.contains("m=audio 30000 RTP/AVP 8 101\r\n") && reinv.contains("a=sendonly"),
        "{reinv}"
    );
    // The caller refuses (491): ACKed with the INVITE's branch, nothing
    // changes on its leg.
    h.media.clear();
    let resp = format!(
        "SIP/2.0 491 Request Pending\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: hold-2\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header(reinv, "Via").unwrap(),
        header(reinv, "From").unwrap(),
        header(reinv, "To").unwrap(),
        header(reinv, "CSeq").unwrap()
    );
    h.recv(&resp);
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].1.starts_with("ACK "), "{}", sent[0].1);
    assert_eq!(header(&sent[0].1, "Via"), header(reinv, "Via"));
    assert!(
        !h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Update { leg, .. } if *leg == leg_a))
    );
}

const FALLBACK: &str = "192.0.2.40:5060";

#[test]
fn a_busy_far_leg_hands_the_call_to_the_numbers_fallback() {
    let mut h = Harness::new();
    let (_, leg_b, inv) = h.forwarded("+15550000004", "fb-1");
    h.media.clear();
    h.far(&far_response(&inv, 486, "Busy Here", "busy", "", ""));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "ACK, then the fallback's INVITE: {sent:?}");
    assert!(sent[0].1.starts_with("ACK "));
    assert_eq!(sent[1].0, FALLBACK);
    let inv2 = &sent[1].1;
    assert!(
        inv2.starts_with("INVITE sip:+15559990000@192.0.2.40:5060 SIP/2.0"),
        "{inv2}"
    );
    assert!(
        inv2.contains("m=audio 30002 RTP/AVP 0 8 101\r\n"),
        "same relay side: {inv2}"
    );
    assert!(
        !h.cdr.iter().any(|c| matches!(c, CdrEvent::Ended { .. })),
        "the call goes on"
    );
    h.recv_from(
        peer(TransportKind::Udp, FALLBACK),
        &far_response(
            inv2,
            200,
            "OK",
            "fb",
            "Contact: <sip:fb@192.0.2.40:5060>\r\n",
            FAR_SDP,
        ),
    );
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("SIP/2.0 200 OK")),
        "{sent:?}"
    );
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Update { leg, .. } if *leg == leg_b))
    );
}

#[test]
fn the_fallback_is_tried_once() {
    let mut h = Harness::new();
    let (_, _, inv) = h.forwarded("+15550000004", "fb-2");
    h.far(&far_response(
        &inv,
        480,
        "Temporarily Unavailable",
        "x",
        "",
        "",
    ));
    let inv2 = h.sent_to().pop().unwrap().1;
    h.recv_from(
        peer(TransportKind::Udp, FALLBACK),
        &far_response(&inv2, 603, "Decline", "y", "", ""),
    );
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("SIP/2.0 603 ")),
        "{sent:?}"
    );
    assert_eq!(h.last_cause(), ("declined".into(), 603));
    assert!(h.core.out_legs.is_empty());
}

#[test]
fn a_stream_call_whose_ai_is_unreachable_goes_to_the_fallback() {
    let mut h = Harness::new();
    h.recv(&invite("+17770001", "fb-3", "z9hG4bK-fb3", "", SDP));
    assert!(matches!(h.media.last(), Some(MediaCommand::Open { .. })));
    h.media_opened(30000);
    h.take_sent();
    h.media.clear();
    // No AI within stream.answer_timeout (5 s).
    h.advance_to(5_100);
    let (close, relay) = (h.media.first().cloned(), h.media.get(1).cloned());
    assert!(
        matches!(close, Some(MediaCommand::Close { .. })),
        "{:?}",
        h.media
    );
    let Some(MediaCommand::OpenRelay { legs, .. }) = relay else {
        panic!("expected a relay: {:?}", h.media);
    };
    assert!(
        h.sent_to()
            .iter()
            .all(|(_, m)| !m.starts_with("SIP/2.0 503")),
        "no fallback status"
    );
    h.core.handle_media(
        h.now,
        MediaEvent::RelayOpened {
            legs,
            locals: [
                "127.0.0.1:30004".parse().unwrap(),
                "127.0.0.1:30006".parse().unwrap(),
            ],
        },
    );
    h.drain();
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, FALLBACK);
    assert!(
        sent[0]
            .1
            .starts_with("INVITE sip:+15559990000@192.0.2.40:5060 SIP/2.0"),
        "{}",
        sent[0].1
    );
    // A late stream event for the old leg changes nothing.
    h.core.handle_media(
        h.now,
        MediaEvent::StreamFailed {
            leg: legs[0],
            reason: "late".into(),
        },
    );
    h.drain();
    assert!(h.sent_to().is_empty());
    assert_eq!(h.core.active_calls(), 1);
}

impl Harness {
    /// A stream call to +17770001 answered once its AI is up; ACKed.
    /// Returns (stream leg, caller tag).
    pub(super) fn stream_call(&mut self, call_id: &str) -> (u64, String) {
        self.recv(&invite("+17770001", call_id, "z9hG4bK-st1", "", SDP));
        let leg = match self.media.last() {
            Some(MediaCommand::Open {
                leg,
                mode: media_userspace::control::LegMode::Stream(_),
                ..
            }) => *leg,
            other => panic!("expected a stream leg, got {other:?}"),
        };
        self.media_opened(30000);
        self.core
            .handle_media(self.now, MediaEvent::StreamConnected { leg });
        self.drain();
        let ok = self.take_sent().pop().expect("200 OK");
        assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
        let tag = to_tag_of(&ok);
        self.recv(&in_dialog("ACK", call_id, &tag, 1, "z9hG4bK-sta", "", ""));
        self.media.clear();
        (leg, tag)
    }

    fn transfer_result(&self) -> Option<(u64, String, String)> {
        self.media.iter().rev().find_map(|m| match m {
            MediaCommand::TransferResult { leg, result } => {
                Some((*leg, result.status.clone(), result.sip_status.clone()))
            }
            _ => None,
        })
    }
}

const AI_TARGET: &str = "192.0.2.50:5060";

#[test]
fn an_ai_transfer_moves_the_caller_from_the_ai_to_the_target() {
    let mut h = Harness::new();
    let (stream, caller_tag) = h.stream_call("ai-x1");
    h.core.handle_media(
        h.now,
        MediaEvent::AiTransfer {
            leg: stream,
            to: format!("sip:+15559990000@{AI_TARGET}"),
        },
    );
    h.drain();
    let Some(MediaCommand::OpenRelay { legs, media, .. }) = h.media.last().cloned() else {
        panic!("expected a relay: {:?}", h.media);
    };
    assert_ne!(
        legs[0], stream,
        "the AI keeps the caller while the target rings"
    );
    assert_eq!(media[0].remote, Some("127.0.0.1:40000".parse().unwrap()));
    h.core.handle_media(
        h.now,
        MediaEvent::RelayOpened {
            legs,
            locals: [
                "127.0.0.1:30010".parse().unwrap(),
                "127.0.0.1:30012".parse().unwrap(),
            ],
        },
    );
    h.drain();
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, AI_TARGET);
    let inv = sent[0].1.clone();
    assert!(
        inv.starts_with("INVITE sip:+15559990000@192.0.2.50:5060 SIP/2.0"),
        "{inv}"
    );
    assert!(
        inv.contains("m=audio 30012 RTP/AVP 0 101\r\n"),
        "the caller's codec only: {inv}"
    );
    h.media.clear();
    // Ringing reaches nobody: the caller is still talking to the AI.
    h.recv_from(
        peer(TransportKind::Udp, AI_TARGET),
        &far_response(&inv, 180, "Ringing", "t1", "", ""),
    );
    assert!(h.sent_to().is_empty());
    let target_sdp = FAR_SDP
        .replace("RTP/AVP 8 101", "RTP/AVP 0 101")
        .replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000");
    h.recv_from(
        peer(TransportKind::Udp, AI_TARGET),
        &far_response(
            &inv,
            200,
            "OK",
            "t1",
            "Contact: <sip:t@192.0.2.50:5060>\r\n",
            &target_sdp,
        ),
    );
    let sent = h.sent_to();
    assert_eq!(
        sent.len(),
        2,
        "ACK to the target, re-INVITE to the caller: {sent:?}"
    );
    assert!(
        sent[0].1.starts_with("ACK sip:t@192.0.2.50:5060"),
        "{}",
        sent[0].1
    );
    let reinv = &sent[1].1;
    assert_eq!(sent[1].0, CARRIER);
    assert!(
        reinv.starts_with("INVITE sip:+15551230000@127.0.0.1:5061 SIP/2.0"),
        "{reinv}"
    );
    assert!(
        reinv.contains("m=audio 30010 RTP/AVP 0 101\r\n"),
        "the caller moves to the relay: {reinv}"
    );
    assert_eq!(
        h.transfer_result(),
        Some((stream, "answered".into(), "200".into()))
    );
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg } if *leg == stream)),
        "the stream ends"
    );
    // The caller's 200 to our re-INVITE points the relay at it; its BYE
    // ends the target's leg and closes the relay.
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: ai-x1\r\nCSeq: {}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        header(reinv, "Via").unwrap(),
        header(reinv, "From").unwrap(),
        header(reinv, "To").unwrap(),
        header(reinv, "CSeq").unwrap(),
        SDP.len()
    );
    h.media.clear();
    h.recv(&ok);
    assert!(h.sent_to()[0].1.starts_with("ACK "));
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Update { leg, .. } if *leg == legs[0]))
    );
    h.recv(&in_dialog(
        "BYE",
        "ai-x1",
        &caller_tag,
        2,
        "z9hG4bK-aib",
        "",
        "",
    ));
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == AI_TARGET && m.starts_with("BYE sip:t@")),
        "{sent:?}"
    );
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg } if *leg == legs[0]))
    );
    assert_eq!(h.last_cause(), ("caller_hangup".into(), 200));
}

#[test]
fn a_busy_ai_transfer_target_leaves_the_caller_with_the_ai() {
    let mut h = Harness::new();
    let (stream, _) = h.stream_call("ai-x2");
    h.core.handle_media(
        h.now,
        MediaEvent::AiTransfer {
            leg: stream,
            to: format!("sip:+15559990000@{AI_TARGET}"),
        },
    );
    h.drain();
    let Some(MediaCommand::OpenRelay { legs, .. }) = h.media.last().cloned() else {
        panic!("expected a relay");
    };
    h.core.handle_media(
        h.now,
        MediaEvent::RelayOpened {
            legs,
            locals: [
                "127.0.0.1:30010".parse().unwrap(),
                "127.0.0.1:30012".parse().unwrap(),
            ],
        },
    );
    h.drain();
    let inv = h.sent_to().pop().unwrap().1;
    h.recv_from(
        peer(TransportKind::Udp, AI_TARGET),
        &far_response(&inv, 486, "Busy Here", "t2", "", ""),
    );
    assert_eq!(
        h.transfer_result(),
        Some((stream, "busy".into(), "486".into()))
    );
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg } if *leg == legs[0])),
        "the relay is released"
    );
    assert!(
        !h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg } if *leg == stream)),
        "the AI keeps the caller"
    );
    assert_eq!(h.core.active_calls(), 1);
    // A second transfer may follow.
    h.media.clear();
    h.core.handle_media(
        h.now,
        MediaEvent::AiTransfer {
            leg: stream,
            to: "+15559990000".into(),
        },
    );
    h.drain();
    assert_eq!(
        h.transfer_result(),
        Some((stream, "unavailable".into(), "0".into())),
        "a number needs a trunk with an outbound address"
    );
}

const REFER_CARRIER: &str = "192.0.2.20:5060";

impl Harness {
    /// A stream call from the carrier whose trunk prefers REFER; answered
    /// and ACKed. Returns (stream leg, our tag).
    fn stream_call_from_refer_trunk(&mut self, call_id: &str) -> (u64, String) {
        let p = peer(TransportKind::Udp, REFER_CARRIER);
        self.recv_from(p, &invite("+17770001", call_id, "z9hG4bK-rf1", "", SDP));
        let leg = match self.media.last() {
            Some(MediaCommand::Open { leg, .. }) => *leg,
            other => panic!("expected a stream leg, got {other:?}"),
        };
        self.media_opened(30000);
        self.core
            .handle_media(self.now, MediaEvent::StreamConnected { leg });
        self.drain();
        let ok = self.take_sent().pop().expect("200 OK");
        let tag = to_tag_of(&ok);
        self.recv_from(
            p,
            &in_dialog("ACK", call_id, &tag, 1, "z9hG4bK-rfa", "", ""),
        );
        self.media.clear();
        (leg, tag)
    }

    /// Our REFER after the AI's transfer to `to`.
    fn ai_refers(&mut self, leg: u64, to: &str) -> String {
        self.core
            .handle_media(self.now, MediaEvent::AiTransfer { leg, to: to.into() });
        self.drain();
        let sent = self.sent_to();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, REFER_CARRIER);
        assert!(
            self.media
                .iter()
                .all(|m| !matches!(m, MediaCommand::OpenRelay { .. })),
            "no relay: the carrier transfers"
        );
        sent[0].1.clone()
    }

    fn carrier_answers(&mut self, req: &str, status: u16, reason: &str) {
        let resp = format!(
            "SIP/2.0 {status} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            header(req, "Via").unwrap(),
            header(req, "From").unwrap(),
            header(req, "To").unwrap(),
            header(req, "Call-ID").unwrap(),
            header(req, "CSeq").unwrap()
        );
        self.recv_from(peer(TransportKind::Udp, REFER_CARRIER), &resp);
    }

    fn carrier_notifies(
        &mut self,
        call_id: &str,
        tag: &str,
        cseq: u32,
        sipfrag: &str,
    ) -> Vec<(String, String)> {
        let req = in_dialog(
            "NOTIFY",
            call_id,
            tag,
            cseq,
            &format!("z9hG4bK-n{cseq}"),
            "Event: refer\r\nSubscription-State: active;expires=60\r\n",
            "",
        )
        .replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: message/sipfrag;version=2.0\r\nContent-Length: {}\r\n\r\n{sipfrag}",
                sipfrag.len()
            ),
        );
        self.recv_from(peer(TransportKind::Udp, REFER_CARRIER), &req);
        self.sent_to()
    }
}

#[test]
fn a_trunk_that_prefers_refer_gets_the_ais_transfer_and_the_call_leaves_us() {
    let mut h = Harness::new();
    let (leg, tag) = h.stream_call_from_refer_trunk("rf-1");
    let refer = h.ai_refers(leg, "+15559990000");
    assert!(
        refer.starts_with("REFER sip:+15551230000@127.0.0.1:5061 SIP/2.0"),
        "{refer}"
    );
    assert_eq!(
        header(&refer, "Refer-To"),
        Some("<sip:+15559990000@192.0.2.20:5060>")
    );
    assert!(header(&refer, "Referred-By").is_some());
    h.carrier_answers(&refer, 202, "Accepted");
    assert!(
        h.transfer_result().is_none(),
        "202 only means NOTIFYs follow"
    );
    let sent = h.carrier_notifies("rf-1", &tag, 2, "SIP/2.0 100 Trying\r\n");
    assert_eq!(sent.len(), 1);
    assert!(sent[0].1.starts_with("SIP/2.0 200 OK"));
    assert!(h.transfer_result().is_none());
    let sent = h.carrier_notifies("rf-1", &tag, 3, "SIP/2.0 200 OK\r\n");
    assert!(sent[0].1.starts_with("SIP/2.0 200 OK"), "{sent:?}");
    assert!(
        sent.iter()
            .any(|(to, m)| to == REFER_CARRIER && m.starts_with("BYE ")),
        "our side hangs up: {sent:?}"
    );
    assert_eq!(
        h.transfer_result(),
        Some((leg, "answered".into(), "200".into()))
    );
    assert_eq!(h.last_cause(), ("transferred".into(), 200));
}

#[test]
fn a_refer_the_carrier_fails_or_refuses_leaves_the_caller_with_the_ai() {
    let mut h = Harness::new();
    let (leg, tag) = h.stream_call_from_refer_trunk("rf-2");
    let refer = h.ai_refers(leg, "sip:desk@198.51.100.4");
    assert_eq!(header(&refer, "Refer-To"), Some("<sip:desk@198.51.100.4>"));
    h.carrier_answers(&refer, 202, "Accepted");
    h.carrier_notifies("rf-2", &tag, 2, "SIP/2.0 486 Busy Here\r\n");
    assert_eq!(
        h.transfer_result(),
        Some((leg, "busy".into(), "486".into()))
    );
    assert_eq!(h.core.active_calls(), 1);
    // A NOTIFY with no REFER running gets 481.
    let sent = h.carrier_notifies("rf-2", &tag, 3, "SIP/2.0 200 OK\r\n");
    assert!(sent[0].1.starts_with("SIP/2.0 481 "), "{sent:?}");
    // The next REFER is refused outright.
    h.media.clear();
    let refer = h.ai_refers(leg, "+15559990000");
    h.carrier_answers(&refer, 405, "Method Not Allowed");
    assert_eq!(
        h.transfer_result(),
        Some((leg, "refused".into(), "405".into()))
    );
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn a_100_trying_is_enough_to_cancel_and_a_silent_far_side_is_forgotten() {
    let mut h = Harness::new();
    let (_, _, inv) = h.forwarded("+15550000002", "fwd-100");
    h.far(&far_response(&inv, 100, "Trying", "", "", ""));
    let cancel = invite("+15550000002", "fwd-100", "z9hG4bK-fwd1", "", "")
        .replacen("INVITE", "CANCEL", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    h.recv(&cancel);
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == FAR && m.starts_with("CANCEL ")),
        "§9.1: 100 Trying is a provisional response: {sent:?}"
    );
    // The far side never answers the CANCEL nor sends a final: after
    // 64*T1 the leg is forgotten.
    assert_eq!(h.core.out_legs.len(), 1);
    h.advance_to(40_000);
    assert!(h.core.out_legs.is_empty());
}

#[test]
fn our_2xx_to_a_far_reinvite_is_resent_until_its_ack_and_glare_gets_491() {
    let mut h = Harness::new();
    let (_, _, inv, caller_tag) = h.bridged("ok-rt");
    h.far(&far_request(&inv, "far1", "INVITE", 5, "", FAR_SDP));
    let ok = h
        .sent_to()
        .into_iter()
        .find(|(to, m)| to == FAR && m.starts_with("SIP/2.0 200"));
    let ok = ok.expect("200 to the far re-INVITE").1;
    h.advance_to(600);
    let again = h.sent_to();
    assert!(
        again.iter().any(|(to, m)| to == FAR && *m == ok),
        "resent after T1: {again:?}"
    );
    h.far(&far_request(&inv, "far1", "ACK", 5, "", ""));
    h.advance_to(5_000);
    assert!(
        h.sent_to().iter().all(|(_, m)| *m != ok),
        "not after the ACK"
    );
    // Glare: our re-INVITE toward the far side is in flight (the caller
    // held) when the far side sends one: 491 (§14.2).
    h.recv(&in_dialog(
        "INVITE",
        "ok-rt",
        &caller_tag,
        2,
        "z9hG4bK-g1",
        "",
        &with_direction(SDP, "sendonly"),
    ));
    assert!(
        h.sent_to()
            .iter()
            .any(|(to, m)| to == FAR && m.starts_with("INVITE "))
    );
    h.far(&far_request(&inv, "far1", "INVITE", 6, "", FAR_SDP));
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == FAR && m.starts_with("SIP/2.0 491 ")),
        "{sent:?}"
    );
}

#[test]
fn a_second_fork_answering_is_acked_and_released() {
    let mut h = Harness::new();
    let (_, _, inv) = h.forwarded("+15550000002", "fork-1");
    h.far(&far_response(
        &inv,
        200,
        "OK",
        "fork1",
        "Contact: <sip:a@192.0.2.10:5070>\r\n",
        FAR_SDP,
    ));
    h.take_sent();
    // Another phone the INVITE forked to answers too.
    h.far(&far_response(
        &inv,
        200,
        "OK",
        "fork2",
        "Contact: <sip:b@192.0.2.10:5071>\r\n",
        FAR_SDP,
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[0].1.starts_with("ACK sip:b@192.0.2.10:5071 SIP/2.0"),
        "{}",
        sent[0].1
    );
    assert!(header(&sent[0].1, "To").unwrap().ends_with(";tag=fork2"));
    assert!(
        sent[1].1.starts_with("BYE sip:b@192.0.2.10:5071 SIP/2.0"),
        "{}",
        sent[1].1
    );
    assert!(
        sent.iter().all(|(to, _)| to != CARRIER),
        "the caller sees nothing"
    );
    // The first fork's retransmitted 200 still gets its own ACK.
    h.far(&far_response(
        &inv,
        200,
        "OK",
        "fork1",
        "Contact: <sip:a@192.0.2.10:5070>\r\n",
        FAR_SDP,
    ));
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].1.starts_with("ACK sip:a@192.0.2.10:5070"),
        "{}",
        sent[0].1
    );
}

#[test]
fn a_redirected_far_leg_follows_the_contact_to_its_host() {
    let mut h = Harness::new();
    let (_leg_a, _leg_b, inv) = h.forwarded("+15550000002", "fwd-302");
    h.far(&far_response(
        &inv,
        302,
        "Moved Temporarily",
        "r1",
        "Contact: <sip:desk@192.0.2.60:5080>\r\n",
        "",
    ));
    let sent = h.sent_to();
    let ack = sent
        .iter()
        .find(|(_, m)| m.starts_with("ACK "))
        .expect("the 302 is ACKed");
    assert_eq!(ack.0, FAR);
    let (to, inv2) = sent
        .iter()
        .find(|(_, m)| m.starts_with("INVITE "))
        .expect("the INVITE goes again")
        .clone();
    assert_eq!(to, "192.0.2.60:5080");
    assert!(
        inv2.starts_with("INVITE sip:desk@192.0.2.60:5080 SIP/2.0\r\n"),
        "{inv2}"
    );
    assert_eq!(header(&inv2, "CSeq"), Some("2 INVITE"));
    assert_eq!(header(&inv2, "Call-ID"), header(&inv, "Call-ID"));
    assert_eq!(header(&inv2, "To"), Some("<sip:desk@192.0.2.60:5080>"));
    // Three redirections at most: then the failure stands.
    let mut last = inv2;
    for n in 0..3 {
        h.recv_from(
            peer(TransportKind::Udp, "192.0.2.60:5080"),
            &far_response(
                &last,
                302,
                "Moved",
                &format!("r{n}x"),
                "Contact: <sip:desk@192.0.2.60:5080>\r\n",
                "",
            ),
        );
        match h
            .sent_to()
            .into_iter()
            .find(|(_, m)| m.starts_with("INVITE "))
        {
            Some((_, m)) => last = m,
            None => break,
        }
    }
    assert_eq!(
        h.last_cause().0,
        "failed",
        "gave up after three redirections"
    );
}

#[test]
fn a_rest_transfer_moves_a_forwarded_caller_without_notifying_the_old_far_side() {
    let mut h = Harness::new();
    let (leg_a, _leg_b, inv, _) = h.bridged("xfer-rest");
    let sid = h
        .cdr
        .iter()
        .find_map(|c| match c {
            CdrEvent::Started(r) if r.sip_call_id == "xfer-rest" => Some(r.id.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        h.control(api::control::ControlRequest::Transfer {
            call_id: sid,
            to: "+15559990000".into(),
            ring_timeout: None,
        }),
        api::control::ControlOutcome::Accepted
    );
    let sent = h.sent_to();
    assert_eq!(sent.len(), 1, "only the new INVITE, no NOTIFY: {sent:?}");
    let inv2 = sent[0].1.clone();
    assert!(
        inv2.starts_with("INVITE sip:+15559990000@192.0.2.10:5070 SIP/2.0"),
        "{inv2}"
    );
    assert!(inv2.contains("m=audio 30002 RTP/AVP 8 101\r\n"), "{inv2}");
    h.far(&far_response(
        &inv2,
        200,
        "OK",
        "t2",
        "Contact: <sip:target@192.0.2.30:5060>\r\n",
        TARGET_SDP,
    ));
    let sent = h.sent_to();
    assert!(
        sent.iter().any(|(_, m)| m.starts_with("ACK sip:target@")),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(_, m)| m.starts_with("BYE sip:far@192.0.2.10:5070")),
        "the old far side is released: {sent:?}"
    );
    assert!(
        !sent.iter().any(|(_, m)| m.starts_with("NOTIFY ")),
        "{sent:?}"
    );
    assert!(
        h.core.calls.contains_key(&CallHandle::of_leg(leg_a)),
        "the caller stays"
    );
    let _ = inv;
}

impl Harness {
    /// A live-control request, answered at once among the outputs.
    pub(super) fn control(
        &mut self,
        request: api::control::ControlRequest,
    ) -> api::control::ControlOutcome {
        let id = ControlId(self.hooks.len() as u64 + 1_000_000);
        self.core.handle_control(self.now, id, request);
        self.drain();
        let at = self
            .hooks
            .iter()
            .position(|o| matches!(o, Output::ControlReply { id: i, .. } if *i == id))
            .expect("answered at once");
        match self.hooks.remove(at) {
            Output::ControlReply {
                reply: api::control::ControlReply::Outcome(o),
                ..
            } => o,
            other => panic!("expected an outcome, got {other:?}"),
        }
    }

    fn first_call_sid(&self) -> String {
        self.cdr
            .iter()
            .find_map(|e| match e {
                CdrEvent::Started(r) => Some(r.id.clone()),
                _ => None,
            })
            .expect("a call record")
    }
}

#[test]
fn a_listen_only_stream_forks_a_bridged_call_and_stops_on_request_or_when_its_socket_ends() {
    use api::control::{ControlOutcome, ControlRequest, StreamTarget};
    let mut h = Harness::new();
    let (a, _b, _inv, _tag) = h.bridged("fork-1@carrier");
    let sid = h.first_call_sid();
    let target = StreamTarget {
        url: "ws://127.0.0.1:9/listen".into(),
        dialect: None,
        params: Some(r#"{"purpose":"qa"}"#.into()),
    };
    let stop = |h: &mut Harness| {
        h.control(ControlRequest::StopStream {
            call_id: sid.clone(),
        })
    };
    assert_eq!(
        stop(&mut h),
        ControlOutcome::Refused("no stream runs on this call")
    );
    let start = |h: &mut Harness| {
        h.control(ControlRequest::StartStream {
            call_id: sid.clone(),
            account: "acme".into(),
            stream: target.clone(),
        })
    };
    assert_eq!(start(&mut h), ControlOutcome::Accepted);
    let first_sid = match h.media.last() {
        Some(MediaCommand::StartFork { leg, spec }) => {
            assert_eq!(*leg, a, "the relay, by its first leg");
            assert!(spec.fork);
            assert_eq!(spec.call_sid, sid);
            assert_eq!(spec.url, "ws://127.0.0.1:9/listen");
            assert!(spec.parameters.contains(&("purpose".into(), "qa".into())));
            spec.stream_sid.clone()
        }
        other => panic!("expected StartFork, got {other:?}"),
    };
    // A second start replaces the first; the first's late failure does
    // not stop the second.
    assert_eq!(start(&mut h), ControlOutcome::Accepted);
    h.media.clear();
    h.core.handle_media(
        h.now,
        MediaEvent::ForkEnded {
            leg: a,
            stream_sid: first_sid,
            reason: "connect timeout".into(),
        },
    );
    h.drain();
    assert!(h.media.is_empty(), "{:?}", h.media);
    assert_eq!(stop(&mut h), ControlOutcome::Accepted);
    assert!(matches!(h.media.last(), Some(MediaCommand::StopFork { leg }) if *leg == a));
    // The socket ending on its own releases the fork the same way.
    assert_eq!(start(&mut h), ControlOutcome::Accepted);
    let sid_now = match h.media.last() {
        Some(MediaCommand::StartFork { spec, .. }) => spec.stream_sid.clone(),
        other => panic!("{other:?}"),
    };
    h.media.clear();
    h.core.handle_media(
        h.now,
        MediaEvent::ForkEnded {
            leg: a,
            stream_sid: sid_now,
            reason: "connect timeout".into(),
        },
    );
    h.drain();
    assert!(matches!(h.media.last(), Some(MediaCommand::StopFork { leg }) if *leg == a));
    assert_eq!(
        stop(&mut h),
        ControlOutcome::Refused("no stream runs on this call")
    );
    assert_eq!(h.core.active_calls(), 1, "the call itself goes on");
}

#[test]
fn a_rest_transfer_rings_the_target_for_its_own_timeout_then_keeps_the_caller() {
    use api::control::{ControlOutcome, ControlRequest};
    let mut h = Harness::new();
    let (leg_a, _leg_b, _inv, _) = h.bridged("xfer-ring");
    let sid = h.first_call_sid();
    let start = h.now;
    assert_eq!(
        h.control(ControlRequest::Transfer {
            call_id: sid,
            to: "+15559990000".into(),
            ring_timeout: Some(Duration::from_secs(4)),
        }),
        ControlOutcome::Accepted
    );
    let inv2 = h.sent_to().pop().expect("INVITE to the target").1;
    h.far(&far_response(&inv2, 180, "Ringing", "t2", "", ""));
    h.sent_to();
    // Virtual ms since the harness began, when the INVITE left.
    let placed = start.duration_since(h.t0).as_millis() as u64;
    h.advance_to(placed + 3_900);
    assert!(
        !h.sent_to().iter().any(|(_, m)| m.starts_with("CANCEL ")),
        "still ringing at 3.9 s"
    );
    h.advance_to(placed + 4_100);
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(_, m)| m.starts_with("CANCEL sip:+15559990000@")),
        "canceled at its own 4 s, not the gateway's 30 s: {sent:?}"
    );
    assert!(
        !sent.iter().any(|(_, m)| m.starts_with("BYE ")),
        "the caller stays with the old far side: {sent:?}"
    );
    assert!(h.core.calls.contains_key(&CallHandle::of_leg(leg_a)));
}

#[test]
fn either_side_may_change_codec_mid_call_and_the_relay_transcodes() {
    let mut h = Harness::new();
    let (leg_a, leg_b, inv, caller_tag) = h.bridged("codec-1");
    // Bridged on PCMA; the caller now offers only PCMU.
    let pcmu_only = SDP.replace("RTP/AVP 0 8 101", "RTP/AVP 0 101");
    h.recv(&in_dialog(
        "INVITE",
        "codec-1",
        &caller_tag,
        2,
        "z9hG4bK-c1",
        "",
        &pcmu_only,
    ));
    let sent = h.sent_to();
    assert_eq!(
        sent.len(),
        1,
        "answered here, nothing asked of the far side: {sent:?}"
    );
    assert!(
        sent[0].1.starts_with("SIP/2.0 200 OK")
            && sent[0].1.contains("m=audio 30000 RTP/AVP 0 101"),
        "{}",
        sent[0].1
    );
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Update { leg, media }
            if *leg == leg_a && media.codec == Codec::Pcmu && media.payload_type == 0)),
        "{:?}",
        h.media
    );
    h.recv(&in_dialog(
        "ACK",
        "codec-1",
        &caller_tag,
        2,
        "z9hG4bK-c1a",
        "",
        "",
    ));
    h.media.clear();
    // The far side moves to G.722 (and keeps PCMA when it still offers it).
    h.far(&far_request(
        &inv,
        "far1",
        "INVITE",
        2,
        "",
        &FAR_SDP
            .replace("RTP/AVP 8 101", "RTP/AVP 9 101")
            .replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:9 G722/8000"),
    ));
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(_, m)| m.starts_with("SIP/2.0 200 OK") && m.contains("RTP/AVP 9 101")),
        "{sent:?}"
    );
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Update { leg, media }
            if *leg == leg_b && media.codec == Codec::G722)),
        "{:?}",
        h.media
    );
    // A codec neither we nor the relay know: 488, the session stays.
    h.recv(&in_dialog(
        "INVITE",
        "codec-1",
        &caller_tag,
        3,
        "z9hG4bK-c2",
        "",
        &SDP.replace("RTP/AVP 0 8 101", "RTP/AVP 18"),
    ));
    assert!(
        h.sent_to()
            .iter()
            .any(|(_, m)| m.starts_with("SIP/2.0 488")),
    );
}

/// The caller's side REFERs a bridged forwarded call to a new party at
/// 192.0.2.40: 202, NOTIFY 100, and the INVITE there offering the
/// bridged codec on the caller's relay port. Returns (caller leg, far
/// INVITE, caller tag, the new INVITE).
fn caller_referred(h: &mut Harness, call_id: &str) -> (u64, String, String, String) {
    let (leg_a, _leg_b, inv, caller_tag) = h.bridged(call_id);
    h.recv(&in_dialog(
        "REFER",
        call_id,
        &caller_tag,
        2,
        "z9hG4bK-cref",
        "Refer-To: <sip:+15559990000@192.0.2.40:5060>\r\nReferred-By: <sip:+15551230000@127.0.0.1>\r\n",
        "",
    ));
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("SIP/2.0 202 Accepted")),
        "{sent:?}"
    );
    assert!(
        sent.iter().any(|(to, m)| to == CARRIER
            && m.starts_with("NOTIFY sip:")
            && m.contains("Event: refer")
            && m.ends_with("SIP/2.0 100 Trying\r\n")),
        "{sent:?}"
    );
    let new_inv = sent
        .iter()
        .find(|(to, m)| {
            to == "192.0.2.40:5060" && m.starts_with("INVITE sip:+15559990000@192.0.2.40:5060 ")
        })
        .unwrap_or_else(|| panic!("INVITE to the Refer-To target: {sent:?}"))
        .1
        .clone();
    assert!(
        new_inv.contains("m=audio 30000 RTP/AVP 8 101\r\n"),
        "{new_inv}"
    );
    (leg_a, inv, caller_tag, new_inv)
}

#[test]
fn a_refer_from_the_callers_side_hands_the_far_party_to_the_new_target() {
    let mut h = Harness::new();
    let (leg_a, _inv, _caller_tag, new_inv) = caller_referred(&mut h, "cref-1");
    // Ringing is not passed to anyone; the answer replaces the caller.
    h.far(&far_response(&new_inv, 180, "Ringing", "t9", "", ""));
    assert!(h.sent_to().is_empty());
    h.media.clear();
    h.far(&far_response(
        &new_inv,
        200,
        "OK",
        "t9",
        "Contact: <sip:target@192.0.2.30:5060>\r\n",
        TARGET_SDP,
    ));
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(_, m)| m.starts_with("ACK sip:target@192.0.2.30:5060")),
        "{sent:?}"
    );
    assert!(
        sent.iter().any(|(to, m)| to == CARRIER
            && m.starts_with("NOTIFY ")
            && m.contains("Subscription-State: terminated")
            && m.ends_with("SIP/2.0 200 OK\r\n")),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("BYE ")),
        "the transferor is released: {sent:?}"
    );
    assert!(
        !sent.iter().any(|(to, _)| to == FAR),
        "the far party notices nothing: {sent:?}"
    );
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Update { leg, media }
            if *leg == leg_a && media.remote == Some("192.0.2.30:51000".parse().unwrap()))),
        "the caller's relay side now sends to the target: {:?}",
        h.media
    );
    assert_eq!(h.core.active_calls(), 1);
    // The new party's BYE ends the call, and the far party hears it.
    h.far(&far_request(&new_inv, "t9", "BYE", 5, "", ""));
    let sent = h.sent_to();
    assert!(
        sent.iter().any(|(_, m)| m.starts_with("SIP/2.0 200 OK")),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(to, m)| to == FAR && m.starts_with("BYE sip:far@")),
        "{sent:?}"
    );
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn a_transferor_who_leaves_early_ends_the_call_only_if_the_target_fails() {
    let mut h = Harness::new();
    let (_leg_a, _inv, caller_tag, new_inv) = caller_referred(&mut h, "cref-2");
    // Blind transferors hang up at once.
    h.recv(&in_dialog(
        "BYE",
        "cref-2",
        &caller_tag,
        3,
        "z9hG4bK-cbye",
        "",
        "",
    ));
    let sent = h.sent_to();
    assert!(
        sent.iter().any(|(_, m)| m.starts_with("SIP/2.0 200 OK")),
        "{sent:?}"
    );
    assert!(
        !sent.iter().any(|(to, _)| to == FAR),
        "the far party waits for the target: {sent:?}"
    );
    assert_eq!(h.core.active_calls(), 1);
    h.far(&far_response(&new_inv, 486, "Busy Here", "t9", "", ""));
    let sent = h.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == FAR && m.starts_with("BYE sip:far@")),
        "{sent:?}"
    );
    assert!(
        !sent
            .iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("NOTIFY ")),
        "nobody left to notify: {sent:?}"
    );
    assert_eq!(h.last_cause().0, "transfer_failed");
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn a_callers_refer_to_a_busy_target_keeps_the_call_and_says_why() {
    let mut h = Harness::new();
    let (_leg_a, _inv, caller_tag, new_inv) = caller_referred(&mut h, "cref-3");
    h.far(&far_response(&new_inv, 486, "Busy Here", "t9", "", ""));
    let sent = h.sent_to();
    assert!(
        sent.iter().any(|(to, m)| to == CARRIER
            && m.starts_with("NOTIFY ")
            && m.ends_with("SIP/2.0 486 Busy Here\r\n")),
        "{sent:?}"
    );
    assert!(!sent.iter().any(|(_, m)| m.starts_with("BYE ")), "{sent:?}");
    assert_eq!(h.core.active_calls(), 1);
    // Attended transfer and a missing Refer-To are refused.
    for (i, (extra, status)) in [
        ("Refer-To: <sip:x@192.0.2.40?Replaces=abc>\r\n", "501"),
        ("", "400"),
    ]
    .into_iter()
    .enumerate()
    {
        h.recv(&in_dialog(
            "REFER",
            "cref-3",
            &caller_tag,
            3 + i as u32,
            &format!("z9hG4bK-cr{i}"),
            extra,
            "",
        ));
        let sent = h.sent_to();
        assert!(
            sent.iter()
                .any(|(_, m)| m.starts_with(&format!("SIP/2.0 {status}"))),
            "{sent:?}"
        );
    }
}

#[test]
fn the_far_party_leaving_during_a_callers_refer_ends_the_call() {
    let mut h = Harness::new();
    let (_leg_a, inv, _caller_tag, new_inv) = caller_referred(&mut h, "cref-4");
    h.far(&far_response(&new_inv, 180, "Ringing", "t9", "", ""));
    h.sent_to();
    // The party the caller was handing over hangs up: nobody is left for
    // the target, so the caller hears BYE and the target CANCEL.
    h.far(&far_request(&inv, "far1", "BYE", 3, "", ""));
    let sent = h.sent_to();
    assert!(
        sent.iter().any(|(_, m)| m.starts_with("SIP/2.0 200 OK")),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("BYE ")),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(_, m)| m.starts_with("CANCEL sip:+15559990000@192.0.2.40")),
        "{sent:?}"
    );
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn direct_forward_targets_obey_the_tenants_target_policy() {
    let h = Harness::new_with(|c| c.targets = api::targets::TargetPolicy::default());
    let number = |target: &str| domain::model::Number {
        pattern: "+15550000009".into(),
        account_id: "acme".into(),
        route: domain::model::RouteKind::Forward,
        target: Some(target.into()),
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
    // Every path to a direct target (numbers, REST and AI transfers, a
    // caller's REFER) resolves here.
    for inward in [
        "sip:x@127.0.0.1:5070",
        "sip:x@169.254.169.254",
        "sip:x@10.1.2.3",
        "sip:x@[::1]:5060",
    ] {
        let e = h.core.resolve_forward(h.now, &number(inward)).err();
        assert!(
            e.is_some_and(|e| e.contains("not allowed")),
            "{inward}: {e:?}"
        );
    }
    assert!(
        h.core
            .resolve_forward(h.now, &number("sip:x@192.0.2.10:5070"))
            .is_ok()
    );
    // Through a trunk, the operator's address is used whatever it is.
    let via_trunk = domain::model::Number {
        trunk: Some("carrier".into()),
        ..number("sip:x@127.0.0.1:5070")
    };
    assert!(h.core.resolve_forward(h.now, &via_trunk).is_ok());
}
