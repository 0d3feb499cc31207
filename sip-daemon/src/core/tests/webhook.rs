//! A number's voice webhook on virtual time: the INVITE waits (100 only,
//! no media) until the answer picks the route; a caller who leaves first
//! makes the late answer a no-op.

use super::*;
use api::webhook::VoiceAnswer;
use media_userspace::control::LegMode;

impl Harness {
    /// The parked call's handle and what the webhook is asked.
    pub(super) fn parked(&mut self, call_id: &str) -> (CallHandle, api::webhook::VoiceRequest) {
        let before = self.media.len();
        self.recv(&invite(
            "+18885550000",
            call_id,
            &format!("z9hG4bK-{call_id}"),
            "",
            SDP,
        ));
        assert_eq!(
            self.media.len(),
            before,
            "no media before the webhook answers"
        );
        match self.hooks.pop() {
            Some(Output::VoiceWebhook { call, url, request }) => {
                assert_eq!(url, "http://127.0.0.1:9/voice");
                (call, request)
            }
            _ => panic!("expected a voice webhook request"),
        }
    }
}

#[test]
fn webhook_answer_stream_opens_the_ai_stream_with_its_parameters() {
    let mut h = Harness::new();
    let (call, req) = h.parked("wh1");
    assert_eq!(req.from, "+15551230000");
    assert_eq!(req.to, "+18885550000");
    assert_eq!(req.number, "+1888*");
    let mut params = serde_json::Map::new();
    params.insert("lang".into(), "de".into());
    h.core.handle_voice_answer(
        h.now,
        call,
        Ok(VoiceAnswer::Stream {
            url: "wss://ai.example/x".into(),
            dialect: Some("pcm16".into()),
            params: Some(params),
        }),
    );
    h.drain();
    match h.media.last() {
        Some(MediaCommand::Open {
            mode: LegMode::Stream(spec),
            ..
        }) => {
            assert_eq!(spec.url, "wss://ai.example/x");
            assert!(spec.parameters.contains(&("lang".into(), "de".into())));
            assert_eq!(spec.call_sid, req.call_id);
        }
        other => panic!("expected a stream leg, got {other:?}"),
    }
}

#[test]
fn webhook_reject_and_failure_and_a_caller_who_left() {
    let mut h = Harness::new();
    let (call, _) = h.parked("wh2");
    h.core
        .handle_voice_answer(h.now, call, Ok(VoiceAnswer::Reject { status: Some(486) }));
    h.drain();
    assert!(h.statuses().contains(&486));
    assert_eq!(h.last_cause(), ("webhook_rejected".to_string(), 486));

    // A failed webhook: the number's own route (echo) with the default.
    let (call, _) = h.parked("wh3");
    h.core.handle_voice_answer(
        h.now,
        call,
        Err(crate::core::webhook::NoRoute::Failed("timed out".into())),
    );
    h.drain();
    assert!(matches!(
        h.media.last(),
        Some(MediaCommand::Open {
            mode: LegMode::Echo,
            ..
        })
    ));

    // The caller leaves while the webhook thinks: the answer changes nothing.
    let (call, _) = h.parked("wh4");
    h.recv("CANCEL sip:+18885550000@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-wh4;rport\r\nMax-Forwards: 70\r\nFrom: \"Caller\" <sip:+15551230000@127.0.0.1>;tag=caller1\r\nTo: <sip:+18885550000@127.0.0.1>\r\nCall-ID: wh4\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.last_cause().0, "canceled");
    let opens = h.media.len();
    h.core.handle_voice_answer(
        h.now,
        call,
        Ok(VoiceAnswer::Stream {
            url: "wss://ai.example/x".into(),
            dialect: None,
            params: None,
        }),
    );
    h.drain();
    assert_eq!(
        h.media.len(),
        opens,
        "nothing opened for a call that is gone"
    );
}
