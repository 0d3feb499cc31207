//! SIP over TLS in the core, on virtual time: a SIPS dialog gets a
//! `sips:` Contact (RFC 3261 §12.1.1, RFC 5630 §3.1.3), a `sip:` one over
//! TLS names the transport, and our Vias over streams carry `alias`
//! (RFC 5923) so the peer may reuse our connection.

use super::*;

fn tls() -> Peer {
    peer(TransportKind::Tls, CARRIER)
}

#[test]
fn a_sips_request_uri_makes_a_sips_dialog_with_a_sips_contact() {
    let mut h = Harness::new();
    let inv = invite("+15550001", "sips-1", "z9hG4bK-t1", "", SDP).replacen(
        "INVITE sip:",
        "INVITE sips:",
        1,
    );
    h.recv_from(tls(), &inv);
    h.media_opened(30000);
    let ok = h.take_sent().pop().unwrap();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert_eq!(
        header(&ok, "Contact"),
        Some("<sips:+15550001@127.0.0.1:5060>"),
        "{ok}"
    );
    // The same over TLS with a sip: URI: hop-by-hop TLS, named.
    h.recv_from(tls(), &invite("+15550001", "sips-2", "z9hG4bK-t2", "", SDP));
    h.media_opened(30002);
    let ok = h.take_sent().pop().unwrap();
    assert_eq!(
        header(&ok, "Contact"),
        Some("<sip:+15550001@127.0.0.1:5060;transport=tls>"),
        "{ok}"
    );
}

#[test]
fn our_vias_over_streams_offer_connection_reuse() {
    let mut h = Harness::new_with(|c| {
        c.listeners
            .push((TransportKind::Tcp, LOCAL.parse().unwrap()));
    });
    // A far leg over TCP: its INVITE's Via carries alias; over UDP not.
    h.recv(&invite("+15550000002", "al-1", "z9hG4bK-a1", "", SDP));
    let legs = match h.media.last() {
        Some(MediaCommand::OpenRelay { legs, .. }) => *legs,
        other => panic!("{other:?}"),
    };
    h.relay_opened(legs, [30000, 30002]);
    let inv = h.take_sent().pop().unwrap();
    assert!(!header(&inv, "Via").unwrap().contains("alias"), "{inv}");
    let mut h = Harness::new_with(|c| {
        c.listeners = vec![(TransportKind::Tcp, LOCAL.parse().unwrap())];
    });
    h.recv_from(
        peer(TransportKind::Tcp, CARRIER),
        &invite("+15550001", "al-2", "z9hG4bK-a2", "", SDP),
    );
    h.media_opened(30000);
    let ok = h.take_sent().pop().unwrap();
    h.recv_from(
        peer(TransportKind::Tcp, CARRIER),
        &in_dialog("ACK", "al-2", &to_tag_of(&ok), 1, "z9hG4bK-a2a", "", ""),
    );
    // Our BYE on that dialog goes over the stream with alias.
    h.core.hangup_all(h.now, "test");
    h.drain();
    let bye = h
        .take_sent()
        .into_iter()
        .find(|m| m.starts_with("BYE "))
        .expect("BYE");
    let via = header(&bye, "Via").unwrap();
    assert!(
        via.starts_with("SIP/2.0/TCP ") && via.ends_with(";alias"),
        "{via}"
    );
}
