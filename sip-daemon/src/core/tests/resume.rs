//! Bridged calls taken back by the next run ([`crate::core::resume`]), on
//! virtual time: the snapshot the first core saves is all the second one
//! gets, as across a restart of the daemon.

use super::forward::{FAR, FAR_SDP, far_ok, far_response};
use super::*;
use domain::model::ResumableCall;

fn resuming() -> Harness {
    Harness::new_with(|c| c.resume_node = Some("node-a".into()))
}

fn snapshots(h: &Harness) -> Vec<(String, String)> {
    h.cdr
        .iter()
        .filter_map(|e| match e {
            CdrEvent::Resumable {
                id, node, snapshot, ..
            } => {
                assert_eq!(node, "node-a");
                Some((id.clone(), snapshot.clone()))
            }
            _ => None,
        })
        .collect()
}

fn withdrawn(h: &Harness) -> Vec<String> {
    h.cdr
        .iter()
        .filter_map(|e| match e {
            CdrEvent::NotResumable { id } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// A forwarded call answered by the far side and ACKed by the caller:
/// (caller's To tag, the far INVITE, our 200 to the caller).
fn bridged(h: &mut Harness, call_id: &str) -> (String, String, String) {
    let (_, _, inv) = h.forwarded("+15550000002", call_id);
    h.far(&far_ok(&inv));
    let sent = h.sent_to();
    let ok = sent
        .iter()
        .find(|(to, _)| to == CARRIER)
        .expect("200")
        .1
        .clone();
    let tag = to_tag_of(&ok);
    h.recv(&in_dialog("ACK", call_id, &tag, 1, "z9hG4bK-ra", "", ""));
    (tag, inv, ok)
}

/// A call bridged by a first run and taken back by a second from the
/// snapshot alone: (the second run, the call's id, the caller's To tag,
/// the far INVITE, our 200 to the caller).
fn restored(call_id: &str) -> (Harness, String, String, String, String) {
    let mut a = resuming();
    let (tag, inv, ok) = bridged(&mut a, call_id);
    a.advance_to(1_500);
    let (id, snapshot) = snapshots(&a).remove(0);
    // The new run numbers its calls afresh: the restored call gets other
    // handles than it had (the first run's went to transactions first).
    let mut b = resuming();
    take_back(&mut b, &id, snapshot);
    (b, id, tag, inv, ok)
}

/// Run `b` restores call `id` from `snapshot`, which must succeed.
fn take_back(b: &mut Harness, id: &str, snapshot: String) {
    let failed = b.core.restore(
        b.now,
        vec![ResumableCall {
            id: id.to_string(),
            snapshot,
        }],
    );
    assert!(failed.is_empty(), "{failed:?}");
    b.drain();
}

#[test]
fn a_bridged_call_is_saved_once_and_taken_back_by_the_next_run() {
    let mut a = resuming();
    let (tag, inv, _) = bridged(&mut a, "res-1");
    assert!(snapshots(&a).is_empty(), "saved by the periodic pass");
    a.advance_to(1_500);
    let saved = snapshots(&a);
    assert_eq!(saved.len(), 1, "{:?}", a.cdr);
    // Nothing changed: not saved again.
    a.advance_to(5_000);
    assert_eq!(snapshots(&a).len(), 1);
    let (id, snapshot) = saved[0].clone();
    let started = a
        .cdr
        .iter()
        .find_map(|e| match e {
            CdrEvent::Started(r) => Some(r.id.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(id, started);

    // The next run knows only the snapshot.
    let mut b = resuming();
    b.advance_to(2_000);
    take_back(&mut b, &id, snapshot);
    let (legs, media, ports) = match b.media.last() {
        Some(MediaCommand::AdoptRelay {
            legs, media, ports, ..
        }) => (*legs, *media, *ports),
        other => panic!("expected AdoptRelay, got {other:?}"),
    };
    assert_eq!(ports, [30000, 30002], "the relay's own ports");
    assert_eq!(media[1].remote, Some("192.0.2.10:50000".parse().unwrap()));
    assert_eq!(media[0].remote, Some("127.0.0.1:40000".parse().unwrap()));
    assert_eq!((media[0].codec, media[1].codec), (Codec::Pcma, Codec::Pcma));
    assert_eq!(b.core.active_calls(), 1);
    b.relay_opened(legs, [30000, 30002]);
    assert!(b.take_sent().is_empty(), "no INVITE: the far leg is up");
    assert!(
        !b.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { .. })),
        "the adopted relay stays open"
    );
    // Restored as saved: the next pass does not save it again.
    b.advance_to(4_000);
    assert!(snapshots(&b).is_empty(), "{:?}", b.cdr);

    // The caller hangs up: the BYE reaches the far party on its dialog.
    b.recv(&in_dialog("BYE", "res-1", &tag, 2, "z9hG4bK-rb", "", ""));
    let sent = b.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("SIP/2.0 200 OK")),
        "{sent:?}"
    );
    let bye = &sent.iter().find(|(to, _)| to == FAR).expect("BYE to far").1;
    assert!(
        bye.starts_with("BYE sip:far@192.0.2.10:5070 SIP/2.0\r\n"),
        "{bye}"
    );
    assert_eq!(header(bye, "Call-ID"), header(&inv, "Call-ID"));
    assert_eq!(header(bye, "From"), header(&inv, "From"));
    assert!(header(bye, "To").unwrap().ends_with(";tag=far1"));
    let cseq: u32 = header(bye, "CSeq")
        .and_then(|c| c.split(' ').next()?.parse().ok())
        .unwrap();
    assert!(
        cseq > 100,
        "our CSeq moved past anything sent before: {cseq}"
    );
    assert_eq!(b.last_cause(), ("caller_hangup".into(), 200));
    match b
        .cdr
        .iter()
        .rev()
        .find(|e| matches!(e, CdrEvent::Ended { .. }))
    {
        Some(CdrEvent::Ended { duration_ms, .. }) => assert!(
            (3_500..=4_500).contains(duration_ms),
            "charged from the first run's answer: {duration_ms}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(withdrawn(&b), vec![id]);
    assert!(b.core.dialogs.is_empty());
}

#[test]
fn the_far_party_can_hang_up_a_restored_call() {
    let (mut b, ..) = restored("res-2");
    let far_call_id = match &b.core.out_legs.values().next().unwrap().dialog {
        Some(d) => d.key.call_id.clone(),
        None => panic!("far dialog"),
    };
    let far_tag = b.core.out_legs.values().next().unwrap().local_tag.clone();
    let bye = format!(
        "BYE sip:+15551230000@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-fb\r\n\
Max-Forwards: 70\r\n\
From: <sip:+15550000002@192.0.2.10:5070>;tag=far1\r\n\
To: <sip:+15551230000@127.0.0.1:5060>;tag={far_tag}\r\n\
Call-ID: {far_call_id}\r\n\
CSeq: 5 BYE\r\n\
Content-Length: 0\r\n\r\n"
    );
    b.far(&bye);
    let sent = b.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == FAR && m.starts_with("SIP/2.0 200 OK")),
        "{sent:?}"
    );
    let to_caller = &sent.iter().find(|(to, _)| to == CARRIER).expect("BYE").1;
    assert!(to_caller.starts_with("BYE "), "{to_caller}");
    assert_eq!(header(to_caller, "Call-ID"), Some("res-2"));
    assert_eq!(b.last_cause().0, "callee_hangup");
}

#[test]
fn a_relay_that_cannot_be_adopted_hangs_the_restored_call_up() {
    let (mut b, ..) = restored("res-3");
    let legs = match b.media.last() {
        Some(MediaCommand::AdoptRelay { legs, .. }) => *legs,
        other => panic!("{other:?}"),
    };
    b.core.handle_media(
        b.now,
        MediaEvent::Failed {
            leg: legs[0],
            reason: "port taken".into(),
        },
    );
    b.drain();
    let sent = b.sent_to();
    assert!(
        sent.iter()
            .any(|(to, m)| to == CARRIER && m.starts_with("BYE "))
    );
    assert!(
        sent.iter()
            .any(|(to, m)| to == FAR && m.starts_with("BYE "))
    );
    assert_eq!(b.last_cause().0, "media_failed");
}

#[test]
fn snapshots_that_cannot_be_read_are_refused_with_the_reason() {
    let mut a = resuming();
    bridged(&mut a, "res-4");
    a.advance_to(1_500);
    let (id, snapshot) = snapshots(&a).remove(0);
    let mut b = resuming();
    let failed = b.core.restore(
        b.now,
        vec![
            ResumableCall {
                id: "CA0".into(),
                snapshot: "{not json".into(),
            },
            ResumableCall {
                id: "CA1".into(),
                snapshot: snapshot.clone(),
            },
            ResumableCall {
                id: id.clone(),
                snapshot: snapshot.replace("\"version\":1", "\"version\":99"),
            },
            ResumableCall {
                id: id.clone(),
                snapshot: snapshot.replace("\"codec\":\"PCMA\"", "\"codec\":\"OPUS\""),
            },
        ],
    );
    let why: Vec<String> = failed.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(failed.len(), 4, "{why:?}");
    assert!(matches!(
        failed[0].1,
        crate::core::resume::RestoreError::Format(_)
    ));
    assert!(matches!(
        failed[1].1,
        crate::core::resume::RestoreError::OtherCall(_)
    ));
    assert!(matches!(
        failed[2].1,
        crate::core::resume::RestoreError::Version(99)
    ));
    assert!(matches!(
        failed[3].1,
        crate::core::resume::RestoreError::Field("codec")
    ));
    b.drain();
    assert!(b.media.is_empty(), "nothing adopted");
    assert_eq!(b.core.active_calls(), 0);
    assert!(b.core.dialogs.is_empty());
}

#[test]
fn a_call_on_hold_change_is_withdrawn_and_saved_again_once_settled() {
    let mut a = resuming();
    let (tag, _, _) = bridged(&mut a, "res-5");
    a.advance_to(1_500);
    let first = snapshots(&a);
    assert_eq!(first.len(), 1);
    // The caller puts the far party on hold: our re-INVITE to the far
    // side is under way, so the call is withdrawn...
    let hold_sdp = SDP.replace("a=sendrecv", "a=sendonly");
    let hold_sdp = if hold_sdp.contains("a=sendonly") {
        hold_sdp
    } else {
        format!("{SDP}a=sendonly\r\n")
    };
    a.recv(&in_dialog(
        "INVITE",
        "res-5",
        &tag,
        3,
        "z9hG4bK-rh",
        "",
        &hold_sdp,
    ));
    let sent = a.sent_to();
    let reinvite = sent
        .iter()
        .find(|(to, m)| to == FAR && m.starts_with("INVITE "))
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("re-INVITE to the far side: {sent:?}"));
    a.advance_to(2_600);
    assert_eq!(withdrawn(&a), vec![first[0].0.clone()], "{:?}", a.cdr);
    // ...and saved again once the far side answered.
    a.far(&far_response(
        &reinvite,
        200,
        "OK",
        "far1",
        "Contact: <sip:far@192.0.2.10:5070>\r\n",
        &FAR_SDP.replace("a=rtpmap:101", "a=recvonly\r\na=rtpmap:101"),
    ));
    a.recv(&in_dialog("ACK", "res-5", &tag, 3, "z9hG4bK-rh2", "", ""));
    a.advance_to(3_700);
    let again = snapshots(&a);
    assert_eq!(again.len(), 2, "{:?}", a.cdr);
    assert_ne!(again[0].1, again[1].1, "the hold is in the new snapshot");
    assert!(again[1].1.contains("sendonly") || again[1].1.contains("recvonly"));
}

/// The o= line's session id (RFC 4566 §5.2).
fn sdp_session_id(msg: &str) -> String {
    msg.lines()
        .find_map(|l| l.strip_prefix("o="))
        .and_then(|o| o.split(' ').nth(1))
        .unwrap_or_else(|| panic!("no o= line: {msg}"))
        .to_string()
}

#[test]
fn a_restored_call_keeps_its_sdp_sessions_when_put_on_hold() {
    let (mut b, _, tag, inv, ok) = restored("res-6");
    let hold_sdp = format!("{SDP}a=sendonly\r\n");
    b.recv(&in_dialog(
        "INVITE",
        "res-6",
        &tag,
        3,
        "z9hG4bK-6h",
        "",
        &hold_sdp,
    ));
    let sent = b.sent_to();
    let reinvite = &sent
        .iter()
        .find(|(to, m)| to == FAR && m.starts_with("INVITE "))
        .unwrap_or_else(|| panic!("{sent:?}"))
        .1;
    assert_eq!(
        sdp_session_id(reinvite),
        sdp_session_id(&inv),
        "the far side sees the same session"
    );
    // The caller's re-INVITE is answered at once; the hold goes on to
    // the far side in our own re-INVITE.
    let answer = &sent
        .iter()
        .find(|(to, m)| to == CARRIER && m.starts_with("SIP/2.0 200"))
        .unwrap_or_else(|| panic!("{sent:?}"))
        .1;
    assert_eq!(
        sdp_session_id(answer),
        sdp_session_id(&ok),
        "the caller sees the same session"
    );
}
