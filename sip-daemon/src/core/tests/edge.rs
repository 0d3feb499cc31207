//! The public edge: where answers go, and what untrusted sources cost.

use super::*;

fn options_without_rport(via_port: u16) -> String {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:{via_port};branch=z9hG4bK-sym\r\nMax-Forwards: 70\r\nFrom: <sip:a@192.0.2.9>;tag=s1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: sym\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn udp_answers_go_back_to_the_source_port_by_default() {
    let mut h = Harness::new();
    h.recv(&options_without_rport(5099));
    let (to, msg) = h.sent.pop().expect("an answer");
    assert!(msg.starts_with("SIP/2.0 200"), "{msg}");
    assert_eq!(to.remote, CARRIER.parse::<SocketAddr>().unwrap());
    assert!(header(&msg, "Via").unwrap().contains("received=127.0.0.1"));
}

#[test]
fn strict_rfc3261_answers_go_to_the_via_port_without_rport() {
    let mut h = Harness::new_with(|c| c.symmetric_responses = false);
    h.recv(&options_without_rport(5099));
    let (to, msg) = h.sent.pop().expect("an answer");
    assert!(msg.starts_with("SIP/2.0 200"), "{msg}");
    // §18.2.2: the source IP (as `received`) with the sent-by port.
    assert_eq!(to.remote, "127.0.0.1:5099".parse::<SocketAddr>().unwrap());
}

const CANCEL: &str = "CANCEL sip:+15550001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-sp1;rport\r\nMax-Forwards: 70\r\nFrom: \"Caller\" <sip:+15551230000@127.0.0.1>;tag=caller1\r\nTo: <sip:+15550001@127.0.0.1>\r\nCall-ID: sp1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";

#[test]
fn a_cancel_from_another_source_does_not_match_the_invite() {
    let mut h = Harness::new();
    h.recv(&invite("+15550001", "sp1", "z9hG4bK-sp1", "", SDP));
    h.advance_to(300);
    assert_eq!(h.statuses(), vec![100]);
    // Same branch, sent-by and Call-ID, from another port of the trunk's
    // network: not the INVITE's sender, so no transaction to cancel.
    h.recv_from(peer(TransportKind::Udp, "127.0.0.9:5061"), CANCEL);
    assert_eq!(h.statuses(), vec![481]);
    assert!(h.cdr.iter().all(|c| !matches!(c, CdrEvent::Ended { .. })));
    // The sender's own CANCEL does.
    h.recv(CANCEL);
    assert_eq!(h.statuses(), vec![200, 487]);
}

#[test]
fn the_same_branch_from_another_source_is_another_transaction() {
    // RFC 4475's cparam01/cparam02/regescrt share a branch: from two
    // sources they are two requests, each answered where it came from.
    let mut h = Harness::new();
    h.recv(&options_without_rport(5060));
    let other = peer(TransportKind::Udp, "127.0.0.9:5070");
    h.recv_from(other, &options_without_rport(5060));
    let sent: Vec<SocketAddr> = h.sent.iter().map(|(p, _)| p.remote).collect();
    assert_eq!(sent, vec![CARRIER.parse().unwrap(), other.remote]);
    // From the first source again: a retransmission, answered again.
    h.recv(&options_without_rport(5060));
    assert_eq!(h.sent.len(), 3);
    assert_eq!(h.core.txns.len(), 2);
}

#[test]
fn an_invite_that_refuses_sdp_answers_gets_406() {
    // RFC 4475 §3.3.15.
    let mut h = Harness::new();
    h.recv(&invite(
        "+15550001",
        "acc1",
        "z9hG4bK-acc1",
        "Accept: text/nobodyKnowsThis\r\n",
        SDP,
    ));
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 406"), "{r}");
    assert!(header(&r, "Warning").unwrap().starts_with("399 "), "{r}");
    assert!(h.media.is_empty(), "no media for a refused call");
    // Accept lists that admit SDP go through.
    for accept in ["application/sdp", "text/plain, application/*", "*/*;q=0.5"] {
        let mut h = Harness::new();
        h.recv(&invite(
            "+15550001",
            "acc2",
            "z9hG4bK-acc2",
            &format!("Accept: {accept}\r\n"),
            SDP,
        ));
        assert!(
            matches!(h.media.last(), Some(MediaCommand::Open { .. })),
            "{accept}"
        );
    }
}

const STRANGER: &str = "198.51.100.9:5060";

fn stranger_invite(call_id: &str) -> String {
    invite("+15550001", call_id, &format!("z9hG4bK-{call_id}"), "", SDP)
        .replace("127.0.0.1:5061", STRANGER)
}

#[test]
fn an_unknown_source_costs_one_stateless_403_and_no_state() {
    let mut h = Harness::new();
    let from = peer(TransportKind::Udp, STRANGER);
    h.recv_from(from, &stranger_invite("u1"));
    let sent = std::mem::take(&mut h.sent);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].1.starts_with("SIP/2.0 403"), "{}", sent[0].1);
    assert_eq!(sent[0].0.remote, from.remote);
    assert!(
        h.core.txns.is_empty(),
        "no transaction for an unknown source"
    );
    // No Timer G: nothing is ever retransmitted to the spoofable address.
    h.advance_to(64_000);
    assert!(h.sent.is_empty(), "{:?}", h.sent);
    // Its retransmission is answered once more, one for one.
    h.recv_from(from, &stranger_invite("u1"));
    assert_eq!(h.statuses(), vec![403]);
    assert_eq!(h.core.metrics.rejection_count("acl"), 2);
    // REGISTER still reaches the registrar (how phones become known).
    h.recv_from(
        from,
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bK-r1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=r1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: reg-u\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@198.51.100.9:5060>\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(h.statuses(), vec![401]);
}

#[test]
fn unknown_sources_can_be_dropped_silently() {
    let mut h = Harness::new_with(|c| c.unknown_sources = UnknownSources::Drop);
    h.recv_from(peer(TransportKind::Udp, STRANGER), &stranger_invite("u2"));
    assert!(h.sent.is_empty());
    assert!(h.core.txns.is_empty());
    assert_eq!(h.core.metrics.rejection_count("acl"), 1);
}

#[test]
fn full_tables_refuse_new_requests_statelessly_with_503() {
    let mut h = Harness::new_with(|c| c.max_dialogs = 1);
    h.recv(&invite("+15550001", "cap1", "z9hG4bK-cap1", "", SDP));
    assert!(matches!(h.media.last(), Some(MediaCommand::Open { .. })));
    h.take_sent();
    h.recv(&invite("+15550001", "cap2", "z9hG4bK-cap2", "", SDP));
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 503"), "{r}");
    assert_eq!(header(&r, "Retry-After"), Some("5"));
    assert_eq!(h.core.metrics.rejection_count("dialog_cap"), 1);
    // OPTIONS still work: only new dialogs are capped.
    h.recv(&options_without_rport(5061));
    assert_eq!(h.statuses(), vec![200]);

    let mut h = Harness::new_with(|c| c.max_transactions = 1);
    h.recv(&invite("+15550001", "cap3", "z9hG4bK-cap3", "", SDP));
    h.take_sent();
    let before = h.core.txns.len();
    h.recv(&options_without_rport(5061));
    assert_eq!(h.statuses(), vec![503]);
    assert_eq!(h.core.txns.len(), before, "no transaction for the refusal");
    assert_eq!(h.core.metrics.rejection_count("txn_cap"), 1);
}
