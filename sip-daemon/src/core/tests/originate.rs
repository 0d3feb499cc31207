//! Outbound calls (REST `POST /v1/calls`) on virtual time: the INVITE
//! through the trunk offers the reserved port, the callee's answer starts
//! the AI stream on it and hands the dialog to the call.

use super::*;
use api::control::{Connect, OriginateRefused, OriginateRequest};
use domain::model::Direction;
use media_userspace::control::LegMode;

const TRUNK: &str = "192.0.2.20:5060";
const CALLEE_SDP: &str = "v=0\r\no=callee 3 3 IN IP4 192.0.2.30\r\ns=-\r\nc=IN IP4 192.0.2.30\r\nt=0 0\r\nm=audio 52000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";

fn request(from: &str) -> OriginateRequest {
    OriginateRequest {
        account: "acme".into(),
        from: from.into(),
        to: "+4930555".into(),
        trunk: None,
        connect: Connect::Stream(api::control::StreamTarget {
            url: "ws://127.0.0.1:9/ai".into(),
            dialect: None,
            params: Some(r#"{"campaign":"c1"}"#.into()),
        }),
        ring_timeout: Some(Duration::from_secs(20)),
        status_webhook: None,
        status_format: Default::default(),
        status_events: vec![],
        record: None,
    }
}

fn reply(inv: &str, status: u16, reason: &str, to_tag: &str, body: &str) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "SIP/2.0 {status} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:callee@192.0.2.30>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        header(inv, "Via").unwrap(),
        header(inv, "From").unwrap(),
        header(inv, "To").unwrap(),
        header(inv, "Call-ID").unwrap(),
        header(inv, "CSeq").unwrap(),
        body.len()
    )
}

impl Harness {
    /// Places the call; its port is bound and the INVITE leaves. Returns
    /// (media leg, INVITE).
    fn originated(&mut self) -> (u64, String) {
        self.originated_with(request("+15550000003"))
    }

    fn originated_with(&mut self, req: OriginateRequest) -> (u64, String) {
        self.originated_via(req, TRUNK)
    }

    /// [`Self::originated_with`] through the trunk at `trunk`.
    fn originated_via(&mut self, req: OriginateRequest, trunk: &str) -> (u64, String) {
        let placed = self.core.originate(self.now, &req);
        let placed = placed.expect("placed");
        assert!(placed.call_id.starts_with("CA"));
        assert_eq!(placed.trunk, req.trunk.as_deref().unwrap_or("carrier"));
        self.drain();
        match self.cdr.last() {
            Some(CdrEvent::Started(r)) => {
                assert_eq!(r.direction, Direction::Outbound);
                assert_eq!(
                    (r.from_number.as_str(), r.to_number.as_str()),
                    ("+15550000003", "+4930555")
                );
            }
            other => panic!("expected Started, got {other:?}"),
        }
        let leg = match self.media.last() {
            Some(MediaCommand::Reserve { leg }) => *leg,
            other => panic!("expected Reserve, got {other:?}"),
        };
        assert!(self.take_sent().is_empty(), "the INVITE waits for the port");
        self.core.handle_media(
            self.now,
            MediaEvent::Opened {
                leg,
                local: "127.0.0.1:31000".parse().unwrap(),
            },
        );
        self.drain();
        let (p, inv) = self.sent.pop().expect("INVITE");
        assert_eq!(p.remote.to_string(), trunk);
        (leg, inv)
    }

    fn trunk(&mut self, msg: &str) {
        self.recv_from(peer(TransportKind::Udp, TRUNK), msg);
    }
}

#[test]
fn answered_outbound_call_streams_on_the_reserved_port_and_owns_the_dialog() {
    let mut h = Harness::new();
    let (leg, inv) = h.originated();
    assert!(
        inv.starts_with("INVITE sip:+4930555@192.0.2.20:5060 SIP/2.0\r\n"),
        "{inv}"
    );
    assert!(
        header(&inv, "From")
            .unwrap()
            .starts_with("<sip:+15550000003@")
    );
    assert!(
        inv.contains("m=audio 31000 RTP/AVP"),
        "offers the reserved port: {inv}"
    );
    // The trunk challenges; the INVITE is repeated with credentials.
    h.trunk(
        &reply(&inv, 407, "Proxy Authentication Required", "ch", "").replace(
            "Contact: <sip:callee@192.0.2.30>\r\n",
            "Proxy-Authenticate: Digest realm=\"carrier\", nonce=\"n1\"\r\n",
        ),
    );
    let sent = h.take_sent();
    let inv2 = sent
        .iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("INVITE with credentials");
    assert!(
        header(inv2, "Proxy-Authorization")
            .unwrap()
            .contains("username=\"gw\"")
    );
    h.trunk(&reply(inv2, 180, "Ringing", "cal", ""));
    assert!(h.take_sent().is_empty());
    assert!(
        !h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Open { .. })),
        "no stream before the answer"
    );
    let ok = reply(inv2, 200, "OK", "cal", CALLEE_SDP);
    h.trunk(&ok);
    let acks: Vec<String> = h.take_sent();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(
        acks[0].starts_with("ACK sip:callee@192.0.2.30 SIP/2.0"),
        "{}",
        acks[0]
    );
    match h.media.last() {
        Some(MediaCommand::Open {
            leg: l,
            mode: LegMode::Stream(spec),
            media,
            ..
        }) => {
            assert_eq!(*l, leg, "the stream runs on the reserved leg");
            assert_eq!(media.codec, Codec::Pcma);
            assert_eq!(media.remote, Some("192.0.2.30:52000".parse().unwrap()));
            assert!(spec.parameters.contains(&("campaign".into(), "c1".into())));
            assert_eq!(spec.to, "+4930555");
        }
        other => panic!("expected the stream to open, got {other:?}"),
    }
    assert!(matches!(h.cdr.last(), Some(CdrEvent::Answered { .. })));
    // A retransmitted 2xx is ACKed again, not treated as a fork.
    h.trunk(&ok);
    let again = h.take_sent();
    assert_eq!(again.len(), 1);
    assert!(again[0].starts_with("ACK "), "{}", again[0]);
    // The callee's BYE ends the call.
    let bye = format!(
        "BYE sip:+15550000003@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-bye1\r\nFrom: {};tag=cal\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        header(inv2, "To").unwrap(),
        header(inv2, "From").unwrap(),
        header(inv2, "Call-ID").unwrap()
    );
    h.trunk(&bye);
    let sent = h.take_sent();
    assert!(
        sent.iter().any(|m| m.starts_with("SIP/2.0 200 OK")),
        "{sent:?}"
    );
    assert_eq!(h.last_cause().0, "callee_hangup");
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg: l } if *l == leg))
    );
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn outbound_hangup_while_ringing_cancels_and_releases_the_port() {
    let mut h = Harness::new();
    let (leg, inv) = h.originated();
    h.trunk(&reply(&inv, 180, "Ringing", "r1", ""));
    let sid = match &h.cdr[h.cdr.len() - 1] {
        CdrEvent::Started(r) => r.id.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.control(api::control::ControlRequest::Hangup { call_id: sid }),
        api::control::ControlOutcome::Accepted
    );
    let sent = h.take_sent();
    assert!(
        sent.iter().any(|m| m.starts_with("CANCEL sip:+4930555@")),
        "{sent:?}"
    );
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg: l } if *l == leg))
    );
    assert_eq!(h.last_cause().0, "api_hangup");
    // The 487 that follows is ACKed.
    h.trunk(&reply(&inv, 487, "Request Terminated", "r1", ""));
    assert!(h.take_sent().iter().any(|m| m.starts_with("ACK ")));
}

#[test]
fn outbound_calls_are_refused_without_an_owned_number_or_a_usable_trunk() {
    let mut h = Harness::new();
    assert_eq!(
        h.core
            .originate(h.now, &request("+19999999999"))
            .unwrap_err(),
        OriginateRefused::FromNotOwned,
        "covered only by no number"
    );
    // +1555000* is the account's but names no trunk.
    assert_eq!(
        h.core
            .originate(h.now, &request("+15550001111"))
            .unwrap_err(),
        OriginateRefused::NoTrunk
    );
    let mut r = request("+15550001111");
    r.trunk = Some("local".into());
    assert!(matches!(
        h.core.originate(h.now, &r).unwrap_err(),
        OriginateRefused::TrunkUnavailable(_)
    ));
    let mut r = request("+15550000003");
    r.to = "+19005550100".into();
    assert_eq!(
        h.core.originate(h.now, &r).unwrap_err(),
        OriginateRefused::Blocked
    );
    // A blocked second party of a click-to-call too.
    let mut r = click_to_call(Some("direct"));
    r.connect = Connect::Forward {
        to: "+19005550100".into(),
    };
    assert_eq!(
        h.core.originate(h.now, &r).unwrap_err(),
        OriginateRefused::Blocked
    );
    h.core.start_drain();
    assert_eq!(
        h.core
            .originate(h.now, &request("+15550000003"))
            .unwrap_err(),
        OriginateRefused::Draining
    );
    h.drain();
    assert!(h.cdr.is_empty() && h.media.is_empty() && h.sent.is_empty());
}

#[test]
fn a_redirected_outbound_call_asks_the_trunk_for_the_new_target() {
    let mut h = Harness::new();
    let (_leg, inv) = h.originated();
    h.trunk(&reply(&inv, 302, "Moved Temporarily", "r", "").replace(
        "Contact: <sip:callee@192.0.2.30>",
        "Contact: <sip:+4930777@192.0.2.99>",
    ));
    let sent = h.sent.drain(..).collect::<Vec<_>>();
    let (p, inv2) = sent
        .iter()
        .find(|(_, m)| m.starts_with("INVITE "))
        .expect("the INVITE goes again");
    assert_eq!(p.remote.to_string(), TRUNK, "still through the trunk");
    assert!(
        inv2.starts_with("INVITE sip:+4930777@192.0.2.99 SIP/2.0\r\n"),
        "{inv2}"
    );
    h.trunk(&reply(inv2, 200, "OK", "c2", CALLEE_SDP));
    assert!(matches!(h.cdr.last(), Some(CdrEvent::Answered { .. })));
}

/// A trunk that leaves transfers to the B2BUA (the harness's `direct`).
const DIRECT: &str = "192.0.2.21:5060";

fn click_to_call(trunk: Option<&str>) -> OriginateRequest {
    let mut req = request("+15550000003");
    req.trunk = trunk.map(str::to_string);
    req.connect = Connect::Forward {
        to: "+4930777".into(),
    };
    req
}

/// Click-to-call through a trunk that leaves transfers to us: the callee
/// answers, the gateway calls the second party (caller id: our number) on
/// a new relay. Returns (reserved leg, callee INVITE, relay legs, party
/// INVITE).
fn click_to_call_answered(h: &mut Harness) -> (u64, String, [u64; 2], String) {
    let (leg, inv) = h.originated_via(click_to_call(Some("direct")), DIRECT);
    match h.cdr.last() {
        Some(CdrEvent::Started(r)) => assert_eq!(r.media_mode, "forward"),
        other => panic!("{other:?}"),
    }
    h.recv_from(
        peer(TransportKind::Udp, DIRECT),
        &reply(&inv, 200, "OK", "cal", CALLEE_SDP),
    );
    assert!(h.take_sent().iter().any(|m| m.starts_with("ACK ")));
    assert!(
        !h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Open { .. })),
        "no AI stream on a click-to-call"
    );
    let legs = match h
        .media
        .iter()
        .find(|m| matches!(m, MediaCommand::OpenRelay { .. }))
    {
        Some(MediaCommand::OpenRelay { legs, media, .. }) => {
            assert_eq!(media[0].codec, Codec::Pcma, "the callee's codec");
            *legs
        }
        _ => panic!("expected the relay to the party: {:?}", h.media),
    };
    h.core.handle_media(
        h.now,
        MediaEvent::RelayOpened {
            legs,
            locals: [
                "127.0.0.1:32000".parse().unwrap(),
                "127.0.0.1:32002".parse().unwrap(),
            ],
        },
    );
    h.drain();
    let sent = h.take_sent();
    let inv_b = sent
        .iter()
        .find(|m| m.starts_with("INVITE sip:+4930777@192.0.2.21:5060 "))
        .unwrap_or_else(|| panic!("INVITE to the party through the trunk: {sent:?}"))
        .clone();
    assert!(
        header(&inv_b, "From")
            .unwrap()
            .starts_with("<sip:+15550000003@"),
        "the party sees our number: {inv_b}"
    );
    assert!(inv_b.contains("m=audio 32002 RTP/AVP 8"), "{inv_b}");
    (leg, inv, legs, inv_b)
}

#[test]
fn click_to_call_bridges_the_callee_to_the_party_when_it_answers() {
    let mut h = Harness::new();
    let (leg, _inv, legs, inv_b) = click_to_call_answered(&mut h);
    let party_sdp = CALLEE_SDP.replace("52000", "52100");
    h.recv_from(
        peer(TransportKind::Udp, DIRECT),
        &reply(&inv_b, 200, "OK", "party", &party_sdp),
    );
    let sent = h.take_sent();
    assert!(sent.iter().any(|m| m.starts_with("ACK ")), "{sent:?}");
    let reinvite = sent
        .iter()
        .find(|m| m.starts_with("INVITE sip:callee@192.0.2.30"))
        .unwrap_or_else(|| panic!("re-INVITE to the callee: {sent:?}"));
    assert!(
        reinvite.contains("m=audio 32000 RTP/AVP 8"),
        "the callee moves to the relay: {reinvite}"
    );
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg: l } if *l == leg)),
        "the reserved port is released"
    );
    assert!(
        !h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg: l } if *l == legs[0])),
        "the relay stays"
    );
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn click_to_call_ends_the_call_when_the_party_is_busy() {
    let mut h = Harness::new();
    let (_leg, inv, legs, inv_b) = click_to_call_answered(&mut h);
    h.recv_from(
        peer(TransportKind::Udp, DIRECT),
        &reply(&inv_b, 486, "Busy Here", "party", ""),
    );
    let sent = h.take_sent();
    assert!(
        sent.iter().any(|m| m.starts_with("ACK sip:+4930777@")),
        "{sent:?}"
    );
    let bye = sent
        .iter()
        .find(|m| m.starts_with("BYE sip:callee@192.0.2.30"))
        .unwrap_or_else(|| panic!("BYE to the callee: {sent:?}"));
    assert_eq!(header(bye, "Call-ID"), header(&inv, "Call-ID"));
    assert_eq!(h.last_cause().0, "forward_busy");
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg: l } if *l == legs[0])),
        "the party's relay is closed"
    );
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn click_to_call_through_a_trunk_that_prefers_refer_asks_the_carrier_to_connect() {
    let mut h = Harness::new();
    let (_leg, inv) = h.originated_with(click_to_call(None));
    h.trunk(&reply(&inv, 200, "OK", "cal", CALLEE_SDP));
    let sent = h.take_sent();
    let refer = sent
        .iter()
        .find(|m| m.starts_with("REFER sip:callee@192.0.2.30"))
        .unwrap_or_else(|| panic!("REFER in the callee's dialog: {sent:?}"));
    assert_eq!(
        header(refer, "Refer-To"),
        Some("<sip:+4930777@192.0.2.20:5060>")
    );
    assert!(
        !h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::OpenRelay { .. })),
        "the carrier connects them; no relay here"
    );
    // The carrier says the party is busy: no AI keeps the callee.
    h.trunk(&reply(refer, 202, "Accepted", "cal", ""));
    let notify = format!(
        "NOTIFY sip:+15550000003@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-n1\r\nFrom: {};tag=cal\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 7 NOTIFY\r\nEvent: refer\r\nSubscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag\r\nContent-Length: 22\r\n\r\nSIP/2.0 486 Busy Here\r\n",
        header(&inv, "To").unwrap(),
        header(&inv, "From").unwrap(),
        header(&inv, "Call-ID").unwrap()
    );
    h.trunk(&notify);
    let sent = h.take_sent();
    assert!(
        sent.iter().any(|m| m.starts_with("SIP/2.0 200 OK")),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|m| m.starts_with("BYE sip:callee@192.0.2.30")),
        "{sent:?}"
    );
    assert_eq!(h.last_cause().0, "forward_busy");
}

#[test]
fn early_media_sdp_answers_an_outbound_call_whose_2xx_has_no_body() {
    let mut h = Harness::new();
    let (leg, inv) = h.originated();
    // Announcements or ringback with SDP, then a 200 that does not repeat it.
    h.trunk(&reply(&inv, 183, "Session Progress", "em", CALLEE_SDP));
    assert!(h.take_sent().is_empty());
    assert!(
        !h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Open { .. })),
        "the AI starts at the answer"
    );
    h.trunk(&reply(&inv, 200, "OK", "em", ""));
    assert!(h.take_sent().iter().any(|m| m.starts_with("ACK ")));
    match h.media.last() {
        Some(MediaCommand::Open {
            leg: l,
            mode: LegMode::Stream(_),
            media,
            ..
        }) => {
            assert_eq!(*l, leg);
            assert_eq!(media.codec, Codec::Pcma);
            assert_eq!(media.remote, Some("192.0.2.30:52000".parse().unwrap()));
        }
        other => panic!("expected the stream on the early media's answer, got {other:?}"),
    }
    assert!(matches!(h.cdr.last(), Some(CdrEvent::Answered { .. })));
}

#[test]
fn a_cluster_limit_holds_an_outbound_invite_until_the_store_answers() {
    let mut h = Harness::new_with(|c| c.cluster_limits = true);
    // The calling number limited to 2 calls at once, through `carrier`.
    let base = routing();
    let carrier = base.trunk("carrier").unwrap().trunk.clone();
    let (limited, problems) = RoutingTable::build(
        vec![carrier],
        vec![Number {
            pattern: "+15550000003".into(),
            account_id: "acme".into(),
            route: RouteKind::Forward,
            target: Some("sip:+4930123@carrier.example".into()),
            dialect: None,
            params: None,
            trunk: Some("carrier".into()),
            max_calls: Some(2),
            fallback: None,
            voice_webhook: None,
            sms_webhook: None,
            status_webhook: None,
            webhook_format: Default::default(),
            media_security: Default::default(),
        }],
        vec![],
        vec![],
    );
    assert!(problems.is_empty(), "{problems:?}");
    h.core.set_routing(Arc::new(limited));

    let place = |h: &mut Harness| -> u64 {
        let placed = h.core.originate(h.now, &request("+15550000003"));
        placed.expect("placed by this node");
        h.drain();
        let leg = match h.media.last() {
            Some(MediaCommand::Reserve { leg }) => *leg,
            other => panic!("expected Reserve, got {other:?}"),
        };
        h.core.handle_media(
            h.now,
            MediaEvent::Opened {
                leg,
                local: "127.0.0.1:31000".parse().unwrap(),
            },
        );
        h.drain();
        leg
    };
    // Granted: the INVITE leaves only then.
    place(&mut h);
    let (call, sid, scopes) = h.reservation();
    assert_eq!(scopes, vec![("number:+15550000003".to_string(), 2)]);
    assert!(
        !h.take_sent().iter().any(|m| m.starts_with("INVITE ")),
        "no INVITE before the slots"
    );
    h.core.handle_capacity(h.now, call, &sid, Ok(true));
    h.drain();
    assert!(h.take_sent().iter().any(|m| m.starts_with("INVITE ")));

    // Refused: the cluster is at the limit; the call fails, no INVITE.
    place(&mut h);
    let (call2, sid2, _) = h.reservation();
    h.core.handle_capacity(h.now, call2, &sid2, Ok(false));
    h.drain();
    assert!(!h.take_sent().iter().any(|m| m.starts_with("INVITE ")));
    assert!(
        matches!(h.cdr.last(), Some(CdrEvent::Ended { cause, sip_status: 486, .. }) if cause == "capacity"),
        "{:?}",
        h.cdr.last()
    );
}

fn twiml_request(start: api::control::TwimlStart) -> OriginateRequest {
    OriginateRequest {
        connect: Connect::Twiml(start),
        status_webhook: Some("http://127.0.0.1:9/status".into()),
        status_format: domain::model::WebhookFormat::Twilio,
        status_events: vec!["initiated".into(), "completed".into()],
        ..request("+15550000003")
    }
}

#[test]
fn an_outbound_calls_twiml_url_is_fetched_at_the_answer_and_streams_it() {
    let mut h = Harness::new();
    let (leg, inv) = h.originated_with(twiml_request(api::control::TwimlStart::Fetch(
        api::twiml::Fetch {
            url: "http://127.0.0.1:9/twiml".into(),
            method: api::twiml::Method::Post,
        },
    )));
    let statuses = |h: &Harness| -> Vec<(String, u32)> {
        h.hooks
            .iter()
            .filter_map(|o| match o {
                Output::StatusWebhook { event, .. } => Some((event.status.clone(), event.sequence)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(statuses(&h), vec![("initiated".to_string(), 0)]);
    h.trunk(&reply(&inv, 180, "Ringing", "cal", ""));
    h.trunk(&reply(&inv, 200, "OK", "cal", CALLEE_SDP));
    assert_eq!(
        statuses(&h).len(),
        1,
        "ringing and answered are not asked for"
    );
    let (call, url, req) = match h.hooks.pop() {
        Some(Output::VoiceWebhook { call, url, request }) => (call, url, request),
        other => panic!("expected the TwiML fetch, got {other:?}"),
    };
    assert_eq!(url, "http://127.0.0.1:9/twiml");
    assert_eq!(
        (req.direction, req.call_status),
        ("outbound-api", "in-progress")
    );
    assert_eq!(req.format, domain::model::WebhookFormat::Twilio);
    assert_eq!(
        (req.from.as_str(), req.to.as_str()),
        ("+15550000003", "+4930555")
    );
    let base = api::twiml::Url::parse(&url).unwrap();
    let verbs = api::twiml::parse(
        br#"<Response><Connect><Stream url="wss://ai.example/o"><Parameter name="k" value="v"/></Stream></Connect></Response>"#,
        &base,
    )
    .unwrap();
    h.core
        .handle_voice_answer(h.now, call, Ok(api::webhook::VoiceAnswer::Twiml(verbs)));
    h.drain();
    match h.media.last() {
        Some(MediaCommand::Open {
            leg: l,
            mode: LegMode::Stream(spec),
            ..
        }) => {
            assert_eq!(*l, leg, "on the reserved port");
            assert_eq!(spec.url, "wss://ai.example/o");
            assert!(spec.parameters.contains(&("k".into(), "v".into())));
        }
        other => panic!("expected the stream, got {other:?}"),
    }
}

#[test]
fn an_outbound_calls_inline_twiml_pauses_then_hangs_up_with_a_bye() {
    let mut h = Harness::new();
    let verbs = api::twiml::parse(
        br#"<Response><Pause length="2"/><Hangup/></Response>"#,
        &api::twiml::Url::parse("http://127.0.0.1:9/").unwrap(),
    )
    .unwrap();
    let (_, inv) = h.originated_with(twiml_request(api::control::TwimlStart::Verbs(verbs)));
    h.trunk(&reply(&inv, 200, "OK", "cal", CALLEE_SDP));
    h.take_sent();
    h.advance_to(1_900);
    assert!(!h.take_sent().iter().any(|m| m.starts_with("BYE ")));
    h.advance_to(2_100);
    assert!(h.take_sent().iter().any(|m| m.starts_with("BYE ")));
    assert_eq!(h.last_cause().0, "twiml_hangup");
    let last = h.hooks.iter().rev().find_map(|o| match o {
        Output::StatusWebhook { event, .. } => Some(event.clone()),
        _ => None,
    });
    let last = last.expect("completed");
    assert_eq!((last.status.as_str(), last.sequence), ("completed", 1));
}

#[test]
fn an_outbound_call_whose_twiml_loops_or_cannot_be_fetched_gets_a_bye() {
    let fetch = || {
        api::control::TwimlStart::Fetch(api::twiml::Fetch {
            url: "http://127.0.0.1:9/twiml".into(),
            method: api::twiml::Method::Post,
        })
    };
    let next_fetch = |h: &mut Harness| match h.hooks.pop() {
        Some(Output::VoiceWebhook { call, .. }) => call,
        other => panic!("expected a fetch, got {other:?}"),
    };
    // A document that redirects to itself: BYE once the limit is passed.
    let mut h = Harness::new();
    let (_, inv) = h.originated_with(twiml_request(fetch()));
    h.trunk(&reply(&inv, 200, "OK", "cal", CALLEE_SDP));
    h.take_sent();
    let base = api::twiml::Url::parse("http://127.0.0.1:9/twiml").unwrap();
    for _ in 0..crate::core::twiml::MAX_FETCHES {
        let call = next_fetch(&mut h);
        let verbs =
            api::twiml::parse(b"<Response><Redirect>/twiml</Redirect></Response>", &base).unwrap();
        h.core
            .handle_voice_answer(h.now, call, Ok(api::webhook::VoiceAnswer::Twiml(verbs)));
        h.drain();
    }
    assert!(h.take_sent().iter().any(|m| m.starts_with("BYE ")));
    assert_eq!(h.last_cause().0, "twiml_loop");

    // A fetch that fails: BYE too.
    let mut h = Harness::new();
    let (_, inv) = h.originated_with(twiml_request(fetch()));
    h.trunk(&reply(&inv, 200, "OK", "cal", CALLEE_SDP));
    h.take_sent();
    let call = next_fetch(&mut h);
    h.core.handle_voice_answer(
        h.now,
        call,
        Err(crate::core::webhook::NoRoute::Failed("timed out".into())),
    );
    h.drain();
    assert!(h.take_sent().iter().any(|m| m.starts_with("BYE ")));
    assert_eq!(h.last_cause().0, "webhook_failed");
}

#[test]
fn a_json_status_webhook_never_hears_initiated() {
    let mut h = Harness::new();
    let mut req = request("+15550000003");
    req.status_webhook = Some("http://127.0.0.1:9/status".into());
    let _ = h.originated_with(req);
    assert!(
        !h.hooks
            .iter()
            .any(|o| matches!(o, Output::StatusWebhook { .. })),
        "the gateway's JSON events start at ringing"
    );
}
