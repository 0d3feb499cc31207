//! TwiML carried out for a call before it is answered: the verbs of the
//! voice webhook's answer run in order until one gives the call its route
//! (`<Connect><Stream>`, `<Dial>`) or ends it (`<Hangup>`, `<Reject>`,
//! the end of the document, where Twilio hangs up too). `<Pause>` waits on
//! the call's timer, ringing; `<Redirect>`, and a `<Dial>` that does not
//! connect when it has an `action`, fetch the next document through the
//! webhook edge as the first was fetched. A `<Dial>` without `action` that
//! fails goes on with the verbs after it.
//!
//! The verbs after `<Connect>` or a connected `<Dial>` are not run: the
//! call ends with its stream or its bridge (README, "TwiML").

use super::legs::CallState;
use super::*;
use api::twiml::{Dial, DialTarget, Fetch, Stream, Verb};
use domain::model::{Number, RouteKind};

/// Documents one call may run, the first included: two documents that
/// redirect to each other end the call instead of looping.
pub const MAX_FETCHES: u32 = 10;
/// How long a call may wait in TwiML (pauses, fetches, dials that fail)
/// before it is answered or refused: ten minutes, past any carrier's
/// no-answer timer, so a document cannot hold a trunk's slots for days.
pub const MAX_PARKED: Duration = Duration::from_secs(600);

impl Core {
    /// Carries out the TwiML answer `verbs` for parked call `h`.
    pub(super) fn start_twiml(
        &mut self,
        now: Instant,
        h: CallHandle,
        pending: Box<PendingRoute>,
        verbs: Vec<Verb>,
    ) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let run = call.twiml.get_or_insert_with(|| {
            Box::new(super::legs::TwimlRun {
                fetches: 1,
                started: Some(now),
                ..Default::default()
            })
        });
        run.verbs = verbs.into();
        run.wake = None;
        run.dialing = None;
        call.pending = Some(pending);
        self.run_twiml(now, h);
    }

    /// Runs verbs until one gives the call a route, ends it or waits.
    fn run_twiml(&mut self, now: Instant, h: CallHandle) {
        loop {
            let Some(call) = self.calls.get_mut(&h) else {
                return;
            };
            if call.state != CallState::AwaitingMedia {
                return;
            }
            let Some(run) = call.twiml.as_mut() else {
                return;
            };
            let Some(verb) = run.verbs.pop_front() else {
                return self.refuse_parked(now, h, 603, "twiml_ended");
            };
            let deadline = run.started.unwrap_or(now) + MAX_PARKED;
            if now >= deadline {
                tracing::info!(call = %call.sid, "TwiML kept the call unanswered too long");
                return self.refuse_parked(now, h, 480, "twiml_timeout");
            }
            match verb {
                Verb::Pause(0) => {}
                Verb::Pause(secs) => {
                    run.wake = Some((now + Duration::from_secs(secs.into())).min(deadline));
                    // The caller hears ringing while the app waits; a
                    // 100 alone lets carriers give up sooner.
                    let ring = !std::mem::replace(&mut run.rang, true);
                    if ring {
                        self.send_caller_provisional(now, h, 180);
                    }
                    return self.schedule_call(h);
                }
                Verb::Hangup => return self.refuse_parked(now, h, 603, "twiml_hangup"),
                Verb::Reject(why) => {
                    return self.refuse_parked(now, h, why.sip_status(), "twiml_rejected");
                }
                Verb::Redirect(fetch) => return self.fetch_twiml(now, h, fetch, None),
                Verb::Connect(stream) => return self.twiml_stream(now, h, stream),
                Verb::Dial(dial) => return self.twiml_dial(now, h, dial),
            }
        }
    }

    /// A `<Pause>` of call `h` is over when `now` passed its end: the next
    /// verb runs. Whether it was.
    pub(super) fn twiml_wake(&mut self, now: Instant, h: CallHandle) -> bool {
        let Some(run) = self.calls.get_mut(&h).and_then(|c| c.twiml.as_mut()) else {
            return false;
        };
        if run.wake.is_none_or(|w| now < w) {
            return false;
        }
        run.wake = None;
        self.run_twiml(now, h);
        self.schedule_call(h);
        true
    }

    /// Asks `fetch`'s URL for the next document (with how the last
    /// `<Dial>` ended, for its `action`).
    fn fetch_twiml(&mut self, now: Instant, h: CallHandle, fetch: Fetch, dial: Option<&str>) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let Some(run) = call.twiml.as_mut() else {
            return;
        };
        run.fetches += 1;
        run.verbs.clear();
        if run.fetches > MAX_FETCHES {
            tracing::warn!(call = %call.sid, "TwiML fetched {MAX_FETCHES} documents: ending the call");
            return self.refuse_parked(now, h, 500, "twiml_loop");
        }
        let Some(pending) = call.pending.as_deref() else {
            return;
        };
        let mut request = super::webhook::voice_request(call, pending);
        request.method = fetch.method;
        request.dial_call_status = dial.map(str::to_string);
        self.out.push_back(Output::VoiceWebhook {
            call: h,
            url: fetch.url,
            request,
        });
    }

    /// `<Connect><Stream>`: the call's route is the stream, its
    /// `<Parameter>`s the AI's `customParameters`.
    fn twiml_stream(&mut self, now: Instant, h: CallHandle, stream: Stream) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let Some(pending) = call.pending.take() else {
            return;
        };
        call.twiml = None;
        let params = (!stream.parameters.is_empty()).then(|| {
            let map: serde_json::Map<String, serde_json::Value> = stream
                .parameters
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            serde_json::Value::Object(map).to_string()
        });
        let number = Number {
            route: RouteKind::Stream,
            target: Some(stream.url),
            dialect: Some("twilio".into()),
            params,
            ..pending.number.clone()
        };
        self.start_route(now, h, &number, &pending);
    }

    /// `<Dial>`: the call is forwarded to its target, ringing at most its
    /// timeout.
    fn twiml_dial(&mut self, now: Instant, h: CallHandle, dial: Dial) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let Some(pending) = call.pending.as_deref() else {
            return;
        };
        if call.offer.is_none() {
            return self.refuse_parked(now, h, 488, "offer_required");
        }
        let number = pending.number.clone();
        let max_forwards = pending.max_forwards;
        // A caller id is the caller's own or one of the account's numbers
        // (as for REST calls): a tenant's TwiML cannot present anyone else.
        let caller = match dial.caller_id {
            None => pending.caller.clone(),
            Some(id)
                if id == pending.caller
                    || self
                        .routing
                        .number(&id)
                        .is_some_and(|n| n.account_id == number.account_id && n.pattern != "*") =>
            {
                id
            }
            Some(id) => {
                tracing::warn!(call = %call.sid, caller_id = %id, "TwiML <Dial callerId> is not the caller's nor the account's number");
                if let Some(run) = self.calls.get_mut(&h).and_then(|c| c.twiml.as_mut()) {
                    run.dialing = Some(dial.action);
                }
                if !self.twiml_dial_failed(now, h, "failed") {
                    self.refuse_parked(now, h, 480, "route_unavailable");
                }
                return;
            }
        };
        let target = match dial.target {
            DialTarget::Sip(uri) => Some(uri),
            // As for REST calls: the account's destination blocks hold,
            // and only a trunk the account may use carries the call.
            DialTarget::Number(e164)
                if self
                    .routing
                    .is_blocked(&number.account_id, &number.pattern, &e164) =>
            {
                tracing::info!(to = %e164, "TwiML <Dial> to a blocked number");
                None
            }
            DialTarget::Number(e164) => number
                .trunk
                .as_deref()
                .and_then(|t| self.routing.trunk(t))
                .filter(|t| t.trunk.usable_by(&number.account_id))
                .and_then(|t| t.trunk.outbound_address.clone())
                .map(|host| format!("sip:{e164}@{}", host.trim_start_matches("sip:"))),
        };
        let forward = Number {
            route: RouteKind::Forward,
            target,
            ..number
        };
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if let Some(run) = call.twiml.as_mut() {
            run.dialing = Some(dial.action);
        }
        let target = match self.resolve_forward(now, &forward) {
            Ok(t) => t,
            Err(why) => {
                tracing::info!(why, "TwiML <Dial> target unavailable");
                if !self.twiml_dial_failed(now, h, "failed") {
                    self.refuse_parked(now, h, 480, "route_unavailable");
                }
                return;
            }
        };
        self.open_forward(h, target, &caller, max_forwards);
        let ring = Duration::from_secs(dial.timeout_s.into());
        if let Some(hb) = self.calls.get(&h).and_then(|c| c.bridge)
            && let Some(o) = self.out_legs.get_mut(&hb)
        {
            o.ring_timeout = Some(ring);
        }
    }

    /// The far leg of a TwiML `<Dial>` failed before an answer with
    /// `cause`: its `action` is asked what next, or the verbs after it go
    /// on. Whether TwiML took the failure over (else the caller hears it,
    /// as for any forwarded call).
    pub(super) fn twiml_dial_failed(&mut self, now: Instant, h: CallHandle, cause: &str) -> bool {
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        if call.state != CallState::AwaitingMedia {
            return false;
        }
        let Some(run) = call.twiml.as_mut() else {
            return false;
        };
        let Some(action) = run.dialing.take() else {
            return false;
        };
        if action.is_none() && run.verbs.is_empty() {
            return false;
        }
        // An answer already reached the caller in a 18x (early media): a
        // new media leg would answer from another address, which RFC 3261
        // §13.2.1 forbids, so the failure reaches the caller as it is.
        if call.local_sdp.is_some() {
            tracing::info!(call = %call.sid, "TwiML <Dial> failed after early media: not going on");
            return false;
        }
        // The relay toward the failed target closes; the next verb opens
        // the caller's media anew.
        if call.bridge.take().is_some() {
            call.media_open = false;
            call.local_media = None;
            self.out
                .push_back(Output::Media(MediaCommand::Close { leg: h.own_leg() }));
        }
        match action {
            Some(fetch) => self.fetch_twiml(now, h, fetch, Some(dial_call_status(cause))),
            None => self.run_twiml(now, h),
        }
        true
    }
}

/// Twilio's `DialCallStatus` for a far leg's failure cause
/// ([`super::forward::failure_outcome`]).
pub fn dial_call_status(cause: &str) -> &'static str {
    match cause {
        "busy" | "declined" => "busy",
        "no_answer" => "no-answer",
        "canceled" => "canceled",
        _ => "failed",
    }
}
