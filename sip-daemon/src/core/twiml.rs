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
//!
//! An outbound call placed with TwiML (Twilio's Calls API) runs it once
//! the callee answers: `<Connect><Stream>` opens the stream on the call's
//! reserved port, `<Dial>` bridges the callee to the target as a
//! click-to-call does, `<Hangup>`, `<Reject>` and the end of the document
//! send BYE.

use super::legs::CallState;
use super::negotiation::leg_media;
use super::*;
use api::control::TwimlStart;
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
            let answered = call.answered_at.is_some();
            let Some(run) = call.twiml.as_mut() else {
                return;
            };
            if answered != call.outbound && !run.live {
                // An inbound call runs TwiML until it is answered; an
                // outbound call from its answer on; a live call's update
                // whenever it comes.
                return;
            }
            let live = run.live;
            let Some(verb) = run.verbs.pop_front() else {
                return self.end_twiml(now, h, 603, "twiml_ended");
            };
            let deadline = run.started.unwrap_or(now) + MAX_PARKED;
            if !answered && now >= deadline {
                tracing::info!(call = %call.sid, "TwiML kept the call unanswered too long");
                return self.refuse_parked(now, h, 480, "twiml_timeout");
            }
            match verb {
                Verb::Start(stream) => run.fork = Some(stream),
                Verb::Stop => run.fork = None,
                Verb::Pause(0) => {}
                Verb::Pause(secs) => {
                    let wake = now + Duration::from_secs(secs.into());
                    run.wake = Some(if answered { wake } else { wake.min(deadline) });
                    // The caller hears ringing while the app waits; a
                    // 100 alone lets carriers give up sooner.
                    let ring = !answered && !std::mem::replace(&mut run.rang, true);
                    if ring {
                        self.send_caller_provisional(now, h, 180);
                    }
                    return self.schedule_call(h);
                }
                Verb::Hangup => return self.end_twiml(now, h, 603, "twiml_hangup"),
                Verb::Reject(why) => {
                    return self.end_twiml(now, h, why.sip_status(), "twiml_rejected");
                }
                Verb::Redirect(fetch) => return self.fetch_twiml(now, h, fetch, None),
                Verb::Connect(stream) if live => return self.twiml_stream_live(h, stream),
                Verb::Connect(stream) if answered => {
                    return self.twiml_stream_answered(now, h, stream);
                }
                Verb::Connect(stream) => return self.twiml_stream(now, h, stream),
                Verb::Dial(dial) if answered => {
                    return self.twiml_dial_answered(now, h, dial, live);
                }
                Verb::Dial(dial) => return self.twiml_dial(now, h, dial),
            }
        }
    }

    /// Ends a call TwiML ended: refused with `status` before the answer,
    /// BYE after.
    fn end_twiml(&mut self, now: Instant, h: CallHandle, status: u16, cause: &str) {
        if self.calls.get(&h).is_some_and(|c| c.answered_at.is_some()) {
            self.hangup(now, h, cause);
        } else {
            self.refuse_parked(now, h, status, cause);
        }
    }

    /// The callee of outbound call `h` answered: its TwiML starts, given or
    /// fetched (signed with its account's token, `CallStatus` in-progress).
    /// `number` is the account's number the call was placed from, as
    /// resolved then: its account, pattern and trunk are what the
    /// document's requests tell, whatever changed since.
    pub(super) fn start_answered_twiml(
        &mut self,
        now: Instant,
        h: CallHandle,
        start: TwimlStart,
        number: Number,
        record: Option<api::control::RecordRequest>,
    ) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let from = uri_user(&call.dialog.local_uri);
        let to = uri_user(&call.dialog.remote_uri);
        let pending = Box::new(PendingRoute {
            number: Number {
                webhook_format: domain::model::WebhookFormat::Twilio,
                ..number
            },
            caller: from,
            dialed: to,
            sip_call_id: call.dialog.key.call_id.clone(),
            max_forwards: 70,
        });
        if let Some(call) = self.calls.get_mut(&h) {
            call.twiml = Some(Box::new(super::legs::TwimlRun {
                started: Some(now),
                record,
                ..Default::default()
            }));
        }
        match start {
            TwimlStart::Verbs(verbs) => {
                // The given document counts as the first.
                if let Some(run) = self.calls.get_mut(&h).and_then(|c| c.twiml.as_mut()) {
                    run.fetches = 1;
                }
                self.start_twiml(now, h, pending, verbs)
            }
            TwimlStart::Fetch(fetch) => {
                let Some(call) = self.calls.get_mut(&h) else {
                    return;
                };
                call.pending = Some(pending);
                self.fetch_twiml(now, h, fetch, None);
            }
        }
    }

    /// `<Connect><Stream>` on an answered outbound call: the stream opens
    /// on the call's reserved port.
    fn twiml_stream_answered(&mut self, now: Instant, h: CallHandle, stream: Stream) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let Some(pending) = call.pending.take() else {
            return;
        };
        let record = call.twiml.take().and_then(|t| t.record);
        let Some(media) = call.negotiated.as_ref().map(leg_media) else {
            return self.hangup(now, h, "failed");
        };
        let sid = call.sid.clone();
        let number = stream_number(&pending.number, &stream);
        let spec = self.stream_spec(
            &stream.url,
            &number,
            &sid,
            &pending.caller,
            &pending.dialed,
            &pending.sip_call_id,
        );
        self.open_media_leg(
            h,
            media_userspace::control::LegMode::Stream(Box::new(spec)),
            media,
        );
        self.schedule_call(h);
        if let Some(r) = record {
            let id = format!("RE{}", self.random_hex(16));
            let outcome = self.record_call(h, &pending.number.account_id, &id, r.status_callback);
            if outcome != api::control::ControlOutcome::Accepted {
                tracing::warn!(
                    call = h.get(),
                    ?outcome,
                    "the call's Record not carried out"
                );
            }
        }
    }

    /// Twilio's update of a live AI call with `Url`: the document is
    /// fetched (signed, `CallStatus=in-progress`) and carried out on the
    /// answered call.
    pub(super) fn redirect_fetch(
        &mut self,
        now: Instant,
        h: CallHandle,
        account: &str,
        fetch: Fetch,
    ) -> api::control::ControlOutcome {
        use api::control::ControlOutcome;
        let stream = match self.live_ai_stream(h) {
            Ok(s) => s,
            Err(why) => return why,
        };
        let Some(call) = self.calls.get(&h) else {
            return ControlOutcome::NotLive;
        };
        if call.pending.is_some() || call.twiml.is_some() {
            return ControlOutcome::Refused("TwiML for this call is already being fetched");
        }
        let number = call
            .number_pattern
            .as_deref()
            .and_then(|p| self.routing.number(p))
            .filter(|n| n.account_id == account)
            .cloned()
            .unwrap_or_else(|| Number {
                pattern: call.number_pattern.clone().unwrap_or_default(),
                account_id: account.to_string(),
                route: RouteKind::Stream,
                target: None,
                dialect: None,
                params: None,
                trunk: call.route_trunk.clone(),
                max_calls: None,
                fallback: None,
                voice_webhook: None,
                sms_webhook: None,
                status_webhook: None,
                webhook_format: Default::default(),
                media_security: Default::default(),
            });
        let pending = Box::new(PendingRoute {
            number: Number {
                webhook_format: domain::model::WebhookFormat::Twilio,
                ..number
            },
            caller: stream.from,
            dialed: stream.to,
            sip_call_id: call.dialog.key.call_id.clone(),
            max_forwards: 70,
        });
        let Some(call) = self.calls.get_mut(&h) else {
            return ControlOutcome::NotLive;
        };
        call.pending = Some(pending);
        call.twiml = Some(Box::new(super::legs::TwimlRun {
            started: Some(now),
            live: true,
            ..Default::default()
        }));
        self.fetch_twiml(now, h, fetch, None);
        ControlOutcome::Accepted
    }

    /// `<Connect><Stream>` fetched for a live AI call: a live redirect.
    fn twiml_stream_live(&mut self, h: CallHandle, stream: Stream) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let Some(pending) = call.pending.take() else {
            return;
        };
        call.twiml = None;
        let target = stream.target();
        let outcome = self.redirect_stream(h, &pending.number.account_id, &target);
        if outcome != api::control::ControlOutcome::Accepted {
            tracing::warn!(
                call = h.get(),
                ?outcome,
                "live call's <Connect><Stream> not carried out"
            );
        }
    }

    /// `<Dial>` on an answered outbound call: the callee is bridged to the
    /// target as a click-to-call is; when that leg fails, the call ends.
    fn twiml_dial_answered(&mut self, now: Instant, h: CallHandle, dial: Dial, live: bool) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let Some(pending) = call.pending.take() else {
            return;
        };
        call.twiml = None;
        // An outbound call's callee has no AI to go back to; a live AI
        // call's caller does, as after the AI's own `transfer`.
        if !live {
            call.click_to_call = true;
        }
        let to = match dial.target {
            DialTarget::Number(e164) => {
                if self.routing.is_blocked(
                    &pending.number.account_id,
                    &pending.number.pattern,
                    &e164,
                ) {
                    self.metrics.reject("blocked");
                    return self.hangup(now, h, "blocked");
                }
                e164
            }
            DialTarget::Sip(uri) => uri,
        };
        let ring = Duration::from_secs(dial.timeout_s.into());
        self.on_ai_transfer(now, h, to, Some(ring));
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
            return self.end_twiml(now, h, 500, "twiml_loop");
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
        let number = stream_number(&pending.number, &stream);
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

/// `number` streaming to `url` in the `twilio` dialect with these
/// `<Parameter>`s as its `customParameters`.
fn stream_number(number: &Number, stream: &Stream) -> Number {
    let target = stream.target();
    Number {
        route: RouteKind::Stream,
        target: Some(target.url),
        dialect: target.dialect,
        params: target.params,
        ..number.clone()
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
