//! TwiML on virtual time: a voice webhook's document carried out verb by
//! verb for a parked call (no sleeps: `<Pause>` is the call's timer).

use super::forward::{FAR, far_response};
use super::*;
use crate::core::twiml::MAX_FETCHES;
use crate::core::webhook::NoRoute;
use api::twiml::parse;
use api::webhook::VoiceAnswer;
use media_userspace::control::LegMode;

fn twiml(xml: &str) -> Result<VoiceAnswer, NoRoute> {
    let base = api::twiml::Url::parse("http://127.0.0.1:9/voice").unwrap();
    Ok(VoiceAnswer::Twiml(parse(xml.as_bytes(), &base).unwrap()))
}

impl Harness {
    /// The next voice webhook request (url, request).
    fn next_hook(&mut self) -> (CallHandle, String, api::webhook::VoiceRequest) {
        match self.hooks.pop() {
            Some(Output::VoiceWebhook { call, url, request }) => (call, url, request),
            other => panic!("expected a voice webhook request, got {other:?}"),
        }
    }
}

#[test]
fn pause_then_connect_stream_opens_a_twilio_stream_with_the_parameters() {
    let mut h = Harness::new();
    let (call, req) = h.parked("tw1");
    h.core.handle_voice_answer(
        h.now,
        call,
        twiml(
            r#"<Response><Pause length="2"/><Connect><Stream url="wss://ai.example/s">
               <Parameter name="intent" value="billing"/></Stream></Connect><Hangup/></Response>"#,
        ),
    );
    h.drain();
    let opened = |h: &Harness| {
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Open { .. }))
    };
    assert!(!opened(&h), "nothing opens while the pause runs");
    h.advance_to(1_900);
    assert!(!opened(&h), "nor before its end");
    h.advance_to(2_000);
    match h.media.last() {
        Some(MediaCommand::Open {
            mode: LegMode::Stream(spec),
            ..
        }) => {
            assert_eq!(spec.url, "wss://ai.example/s");
            assert_eq!(spec.dialect, media_userspace::aistream::Dialect::Twilio);
            assert!(
                spec.parameters
                    .contains(&("intent".to_string(), "billing".to_string())),
                "{:?}",
                spec.parameters
            );
            assert_eq!(spec.call_sid, req.call_id);
        }
        other => panic!("expected the stream leg, got {other:?}"),
    }
    assert!(
        !h.cdr.iter().any(|c| matches!(c, CdrEvent::Ended { .. })),
        "the <Hangup> after <Connect> does not run"
    );
}

#[test]
fn reject_hangup_and_the_end_of_the_document_refuse_the_call() {
    for (xml, status, cause) in [
        (
            r#"<Response><Reject reason="busy"/></Response>"#,
            486,
            "twiml_rejected",
        ),
        ("<Response><Reject/></Response>", 603, "twiml_rejected"),
        (
            "<Response><Pause length=\"0\"/><Hangup/></Response>",
            603,
            "twiml_hangup",
        ),
        ("<Response/>", 603, "twiml_ended"),
    ] {
        let mut h = Harness::new();
        let (call, _) = h.parked("tw2");
        h.core.handle_voice_answer(h.now, call, twiml(xml));
        h.drain();
        assert!(h.statuses().contains(&status), "{xml}");
        assert_eq!(h.last_cause(), (cause.to_string(), status), "{xml}");
    }
    // What is not carried out refuses the call, never half runs it.
    let mut h = Harness::new();
    let (call, _) = h.parked("tw3");
    h.core.handle_voice_answer(
        h.now,
        call,
        Err(NoRoute::Refused(
            "<Say> is not supported by this gateway".into(),
        )),
    );
    h.drain();
    assert!(h.statuses().contains(&500));
    assert_eq!(h.last_cause(), ("twiml_unsupported".to_string(), 500));
}

#[test]
fn redirect_fetches_the_next_document_and_a_loop_ends() {
    let mut h = Harness::new();
    let (call, first) = h.parked("tw4");
    h.core.handle_voice_answer(
        h.now,
        call,
        twiml(r#"<Response><Redirect method="GET">/next</Redirect><Hangup/></Response>"#),
    );
    h.drain();
    let (c, url, req) = h.next_hook();
    assert_eq!((c, url.as_str()), (call, "http://127.0.0.1:9/next"));
    assert_eq!(req.method, api::twiml::Method::Get);
    assert_eq!((req.call_id, req.from), (first.call_id, first.from));
    assert!(h.statuses().iter().all(|s| *s < 200), "still parked");
    // A document that redirects to itself ends after MAX_FETCHES
    // documents, the first included.
    for _ in 2..MAX_FETCHES {
        h.core.handle_voice_answer(
            h.now,
            call,
            twiml("<Response><Redirect>/next</Redirect></Response>"),
        );
        h.drain();
        h.next_hook();
    }
    h.core.handle_voice_answer(
        h.now,
        call,
        twiml("<Response><Redirect>/next</Redirect></Response>"),
    );
    h.drain();
    assert!(h.hooks.is_empty());
    assert_eq!(h.last_cause(), ("twiml_loop".to_string(), 500));
}

#[test]
fn a_busy_dial_asks_its_action_which_connects_the_call_to_an_ai() {
    let mut h = Harness::new();
    let (call, _) = h.parked("tw5");
    h.core.handle_voice_answer(
        h.now,
        call,
        twiml(&format!(
            r#"<Response><Dial timeout="7" callerId="+1 555 000 1234" action="/after">
               <Sip>sip:bob@{FAR}</Sip></Dial><Hangup/></Response>"#
        )),
    );
    h.drain();
    let legs = match h.media.last() {
        Some(MediaCommand::OpenRelay { legs, .. }) => *legs,
        other => panic!("expected the relay, got {other:?}"),
    };
    h.relay_opened(legs, [30000, 30002]);
    let (to, inv) = h
        .sent
        .pop()
        .map(|(p, s)| (p.remote.to_string(), s))
        .unwrap();
    assert_eq!(to, FAR);
    assert!(
        inv.starts_with(&format!("INVITE sip:bob@{FAR} SIP/2.0")),
        "{inv}"
    );
    assert!(
        header(&inv, "From").unwrap().contains("sip:+15550001234@"),
        "callerId: {inv}"
    );
    h.far(&far_response(&inv, 486, "Busy Here", "b", "", ""));
    assert!(
        h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Close { leg } if *leg == legs[0])),
        "the relay toward the busy target closes"
    );
    let (_, url, req) = h.next_hook();
    assert_eq!(url, "http://127.0.0.1:9/after");
    assert_eq!(req.dial_call_status.as_deref(), Some("busy"));
    assert!(
        !h.take_sent().iter().any(|m| m.starts_with("SIP/2.0 486")),
        "the caller does not hear the busy target"
    );
    h.core.handle_voice_answer(
        h.now,
        call,
        twiml(r#"<Response><Connect><Stream url="wss://ai.example/vm"/></Connect></Response>"#),
    );
    h.drain();
    assert!(matches!(
        h.media.last(),
        Some(MediaCommand::Open { leg, mode: LegMode::Stream(_), .. }) if *leg == legs[0]
    ));
}

#[test]
fn an_unanswered_dial_without_action_goes_on_with_the_next_verb() {
    let mut h = Harness::new();
    let (call, _) = h.parked("tw6");
    h.core.handle_voice_answer(
        h.now,
        call,
        twiml(&format!(
            r#"<Response><Dial timeout="5"><Sip>sip:bob@{FAR}</Sip></Dial><Reject reason="busy"/></Response>"#
        )),
    );
    h.drain();
    let legs = match h.media.last() {
        Some(MediaCommand::OpenRelay { legs, .. }) => *legs,
        other => panic!("expected the relay, got {other:?}"),
    };
    h.relay_opened(legs, [30000, 30002]);
    let inv = h.sent.pop().unwrap().1;
    h.far(&far_response(&inv, 180, "Ringing", "r", "", ""));
    h.take_sent();
    // The dial's own timeout (5 s), not [forward]'s: CANCEL toward the
    // target, and <Reject reason="busy"> toward the caller.
    h.advance_to(4_900);
    assert!(!h.take_sent().iter().any(|m| m.starts_with("CANCEL ")));
    h.advance_to(5_100);
    let sent = h.take_sent();
    assert!(sent.iter().any(|m| m.starts_with("CANCEL ")), "{sent:?}");
    assert!(
        sent.iter().any(|m| m.starts_with("SIP/2.0 486 ")),
        "{sent:?}"
    );
    assert_eq!(h.last_cause(), ("twiml_rejected".to_string(), 486));
    h.far(&far_response(&inv, 487, "Request Terminated", "r", "", ""));
    assert!(
        !h.statuses().contains(&480),
        "the target's 487 reaches no one"
    );
}

#[test]
fn a_caller_id_that_is_not_the_accounts_fails_the_dial() {
    let mut h = Harness::new();
    let (call, _) = h.parked("tw7");
    h.core.handle_voice_answer(
        h.now,
        call,
        twiml(&format!(
            r#"<Response><Dial callerId="+14155559999" action="/after"><Sip>sip:bob@{FAR}</Sip></Dial></Response>"#
        )),
    );
    h.drain();
    assert!(
        !h.media
            .iter()
            .any(|m| matches!(m, MediaCommand::OpenRelay { .. })),
        "nothing is dialled"
    );
    let (_, url, req) = h.next_hook();
    assert_eq!(url, "http://127.0.0.1:9/after");
    assert_eq!(req.dial_call_status.as_deref(), Some("failed"));
}

#[test]
fn pauses_ring_the_caller_once_and_a_call_waits_in_twiml_ten_minutes_at_most() {
    let mut h = Harness::new();
    let (call, _) = h.parked("tw8");
    h.take_sent();
    h.core.handle_voice_answer(
        h.now,
        call,
        twiml(r#"<Response><Pause length="600"/><Pause length="600"/><Hangup/></Response>"#),
    );
    h.drain();
    assert_eq!(h.statuses(), vec![180], "ringing at the first pause");
    h.advance_to(599_000);
    assert!(h.statuses().is_empty(), "once, and no end yet");
    h.advance_to(600_500);
    assert!(h.statuses().contains(&480));
    assert_eq!(h.last_cause(), ("twiml_timeout".to_string(), 480));
}

#[test]
fn a_dial_that_failed_after_early_media_reaches_the_caller_as_it_is() {
    let mut h = Harness::new();
    let (call, _) = h.parked("tw9");
    h.core.handle_voice_answer(
        h.now,
        call,
        twiml(&format!(
            r#"<Response><Dial action="/after"><Sip>sip:bob@{FAR}</Sip></Dial></Response>"#
        )),
    );
    h.drain();
    let legs = match h.media.last() {
        Some(MediaCommand::OpenRelay { legs, .. }) => *legs,
        other => panic!("expected the relay, got {other:?}"),
    };
    h.relay_opened(legs, [30000, 30002]);
    let inv = h.sent.pop().unwrap().1;
    h.far(&far_response(
        &inv,
        183,
        "Session Progress",
        "e",
        "",
        super::forward::FAR_SDP,
    ));
    assert!(
        h.statuses().contains(&183),
        "early media reached the caller"
    );
    h.far(&far_response(&inv, 486, "Busy Here", "e", "", ""));
    assert!(h.statuses().contains(&486));
    assert!(h.hooks.is_empty(), "the action is not asked");
    assert_eq!(h.last_cause().0, "busy");
}

#[test]
fn a_live_calls_url_update_moves_its_stream_and_a_failed_fetch_leaves_it() {
    let mut h = Harness::new();
    let (leg, _) = h.stream_call("tw10");
    let sid = match h.cdr.iter().find_map(|c| match c {
        CdrEvent::Started(r) => Some(r.id.clone()),
        _ => None,
    }) {
        Some(s) => s,
        None => panic!("a started record"),
    };
    let call = h.core.live_call(&sid).expect("live");
    let fetch = api::twiml::Fetch {
        url: "http://127.0.0.1:9/moved".into(),
        method: api::twiml::Method::Post,
    };
    // A fetch that fails: the AI keeps the call.
    assert_eq!(
        h.core.redirect_fetch(h.now, call, "acme", fetch.clone()),
        api::control::ControlOutcome::Accepted
    );
    h.drain();
    let (_, url, req) = h.next_hook();
    assert_eq!(url, "http://127.0.0.1:9/moved");
    assert_eq!(
        (req.call_status, req.call_id.as_str()),
        ("in-progress", sid.as_str())
    );
    h.core
        .handle_voice_answer(h.now, call, Err(NoRoute::Failed("timed out".into())));
    h.drain();
    assert!(!h.take_sent().iter().any(|m| m.starts_with("BYE ")));
    assert_eq!(h.core.active_calls(), 1);
    // A document with <Connect><Stream>: the stream moves.
    h.core.redirect_fetch(h.now, call, "acme", fetch);
    h.drain();
    let (c, _, _) = h.next_hook();
    h.core.handle_voice_answer(
        h.now,
        c,
        twiml(r#"<Response><Connect><Stream url="wss://ai.example/next"/></Connect></Response>"#),
    );
    h.drain();
    match h.media.last() {
        Some(MediaCommand::Restream { leg: l, spec }) => {
            assert_eq!(*l, leg);
            assert_eq!(spec.url, "wss://ai.example/next");
            assert_eq!(spec.call_sid, sid);
        }
        other => panic!("expected the stream to move, got {other:?}"),
    }
    assert!(!h.take_sent().iter().any(|m| m.starts_with("BYE ")));
}
