//! When the far leg does not connect or goes away: CANCEL, timeouts,
//! failures passed to the caller or to the number's fallback, and BYE.

use crate::core::legs::CallState;
use crate::core::*;
use crate::sip::sdp::{self};

impl Core {
    pub(super) fn send_cancel(&mut self, now: Instant, hb: OutLegHandle) {
        let server = self.cfg.server_name.clone();
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        o.cancel_due = false;
        let bytes = Self::invite_sibling(o, Method::Cancel, &o.to, &server);
        let peer = o.target.peer;
        let branch = o
            .via
            .split(";branch=")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .unwrap_or_default()
            .to_string();
        // CANCEL shares the INVITE's branch (§9.1) but is its own
        // transaction: it is matched by method as well.
        self.start_client_request(
            now,
            peer,
            format!("{branch}|CANCEL"),
            bytes,
            txns::ClientPurpose::Cancel,
        );
    }

    /// Gives up the far leg while it rings: CANCEL now, or once a
    /// provisional response allows it (§9.1).
    fn abandon_out(&mut self, now: Instant, hb: OutLegHandle) {
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        if let Some(relay_a) = o.rebridge.take() {
            // An AI transfer given up: its relay goes too.
            self.out
                .push_back(Output::Media(MediaCommand::Close { leg: relay_a }));
        }
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        o.partner = None;
        // Nobody is left to tell how a transfer ended.
        o.transfer_of = None;
        o.ring_deadline = None;
        match o.state {
            OutState::Binding => {
                self.out_legs.remove(&hb);
            }
            OutState::Calling => {
                o.state = OutState::Ending;
                // §9.1: a far side that never answers the CANCEL or sends a
                // final is given up after 64*T1.
                o.ring_deadline = Some(now + self.cfg.timers.t64());
                if o.provisional {
                    self.send_cancel(now, hb);
                } else {
                    o.cancel_due = true;
                }
                self.schedule_out(hb);
            }
            OutState::Confirmed => {
                self.bye_out(now, hb);
                self.remove_out(hb);
            }
            OutState::Ending => {}
        }
    }

    /// The inbound call ended (BYE, CANCEL, media timeout, drain): the far
    /// leg goes too.
    pub(in crate::core) fn end_bridge(&mut self, now: Instant, hb: OutLegHandle) {
        self.abandon_out(now, hb);
    }

    pub(in crate::core) fn bye_out(&mut self, now: Instant, hb: OutLegHandle) {
        let Some(peer) = self
            .out_legs
            .get(&hb)
            .and_then(|o| o.dialog.as_ref())
            .map(|d| d.peer)
        else {
            return;
        };
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let Some(d) = self.out_legs.get_mut(&hb).and_then(|o| o.dialog.as_mut()) else {
            return;
        };
        let bytes = Bytes::from(d.request(Method::Bye, &via, &server).encode());
        self.start_client_request(now, peer, branch, bytes, txns::ClientPurpose::Bye);
    }

    /// The ring timeout of the far leg.
    pub(in crate::core) fn out_timer(&mut self, now: Instant, hb: OutLegHandle) {
        let t2 = self.cfg.timers.t2;
        if let Some(o) = self.out_legs.get_mut(&hb)
            && let Some(ok) = o.ok.as_mut()
        {
            let (resend, give_up) = ok.on_timer(now, t2);
            if give_up {
                o.ok = None;
            }
            let peer = o.dialog.as_ref().map(|d| d.peer);
            if let (Some(b), Some(p)) = (resend, peer) {
                self.transmit(p, b);
            }
            self.schedule_out(hb);
        }
        let (due, ending) = self.out_legs.get(&hb).map_or((false, false), |o| {
            (
                o.ring_deadline.is_some_and(|d| d <= now),
                o.state == OutState::Ending,
            )
        });
        if !due {
            return;
        }
        if ending {
            // No final response 64*T1 after we gave up: forget the leg.
            return self.remove_out(hb);
        }
        let (partner, transfer_of, rebridge) =
            self.out_legs.get_mut(&hb).map_or((None, None, None), |o| {
                (o.partner, o.transfer_of, o.rebridge.take())
            });
        if let Some(relay_a) = rebridge {
            self.abandon_out(now, hb);
            return self.rebridge_failed(now, partner, relay_a, "no_answer", 0);
        }
        if let Some(b) = transfer_of {
            // The transfer target did not answer: the transferor hears 480.
            self.abandon_out(now, hb);
            return self.transfer_outcome(now, partner, b, 480, "Temporarily Unavailable");
        }
        if self.out_legs.get(&hb).is_some_and(|o| o.replaces_caller) {
            self.abandon_out(now, hb);
            return self.caller_refer_failed(now, partner, 480, "Temporarily Unavailable");
        }
        let side = self.out_legs.get(&hb).map(RelaySide::of);
        self.abandon_out(now, hb);
        if let Some(h) = partner {
            self.fail_forwarded(now, h, "no_answer", 480, side);
        }
    }

    /// The far INVITE got no response at all (Timer B).
    pub(in crate::core) fn on_out_invite_timeout(&mut self, now: Instant, hb: OutLegHandle) {
        let Some(o) = self.out_legs.remove(&hb) else {
            return;
        };
        if let Some(b) = o.transfer_of {
            return self.transfer_outcome(now, o.partner, b, 408, "Request Timeout");
        }
        if o.replaces_caller {
            return self.caller_refer_failed(now, o.partner, 408, "Request Timeout");
        }
        if let Some(relay_a) = o.rebridge {
            return self.rebridge_failed(now, o.partner, relay_a, "unreachable", 0);
        }
        if let Some(h) = o.partner {
            self.fail_forwarded(now, h, "unreachable", 408, Some(RelaySide::of(&o)));
        }
    }

    /// The caller hears `status` for a forwarded call that was never
    /// answered (unless the number's fallback takes the call over on the
    /// relay side the failed leg held); an answered one gets a BYE.
    pub(super) fn fail_forwarded(
        &mut self,
        now: Instant,
        h: CallHandle,
        cause: &str,
        status: u16,
        side: Option<RelaySide>,
    ) {
        if self.twiml_dial_failed(now, h, cause) {
            return;
        }
        if let Some(side) = side
            && self.try_fallback(now, h, side, cause)
        {
            return;
        }
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        call.bridge = None;
        if call.state != CallState::AwaitingMedia {
            return self.hangup(now, h, cause);
        }
        if let Some(txn) = call.invite_txn {
            let tag = call.dialog.key.local_tag.clone();
            self.metrics.reject(cause);
            self.respond(now, txn, status, None, Some(&tag), |b| b);
        }
        self.end_call(now, h, cause, status);
    }

    /// The number's fallback takes over an unanswered call whose far leg
    /// failed: a new far leg on the same relay side (once per call).
    fn try_fallback(&mut self, now: Instant, h: CallHandle, side: RelaySide, cause: &str) -> bool {
        let Some(local) = side.local else {
            return false;
        };
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        if call.state != CallState::AwaitingMedia {
            return false;
        }
        let Some(number) = call.fallback.take() else {
            return false;
        };
        let caller = uri_user(&call.dialog.remote_uri);
        let target = match self.resolve_forward(now, &number) {
            Ok(t) => t,
            Err(why) => {
                tracing::info!(why, "fallback target unavailable");
                return false;
            }
        };
        tracing::info!(cause, "far leg failed; trying the number's fallback");
        let hb = self.new_id();
        let leg = self.new_out_leg(h, target, &caller, 69, side.offered, side.media_leg);
        self.out_legs.insert(hb, leg);
        if let Some(c) = self.calls.get_mut(&h) {
            c.bridge = Some(hb);
        }
        self.place_far_leg(now, hb, local);
        true
    }

    /// A stream call whose AI cannot be reached goes to the number's
    /// fallback instead of the fallback status: its stream leg is closed
    /// and the call opens a relay toward the fallback, as a forwarded
    /// call. Needs the caller's SDP offer.
    pub(in crate::core) fn stream_to_fallback(&mut self, now: Instant, h: CallHandle) -> bool {
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        if call.state != CallState::AwaitingMedia || call.offer.is_none() {
            return false;
        }
        let Some(number) = call.fallback.take() else {
            return false;
        };
        let caller = uri_user(&call.dialog.remote_uri);
        let Ok(target) = self.resolve_forward(now, &number) else {
            return false;
        };
        let codecs = self.cfg.codecs.clone();
        let Some(keying) = self.calls.get(&h).map(|c| c.keying.clone()) else {
            return false;
        };
        let probe = self.local_media(0, 0, 0, &keying);
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        let Some(offer) = call.offer.as_ref() else {
            return false;
        };
        let Ok((_, n)) = sdp::answer(offer, &probe, &codecs) else {
            return false;
        };
        call.codecs = codecs;
        call.negotiated = Some(n);
        call.stream_wait = None;
        call.media_open = false;
        call.local_media = None;
        tracing::info!("AI unreachable; trying the number's fallback");
        self.out
            .push_back(Output::Media(MediaCommand::Close { leg: h.own_leg() }));
        self.open_forward(h, target, &caller, 69);
        true
    }

    pub(in crate::core) fn remove_out(&mut self, hb: OutLegHandle) {
        if let Some(o) = self.out_legs.remove(&hb)
            && let Some(d) = o.dialog
            // An outbound call took the dialog over at its answer.
            && self.dialogs.get(&d.key) == Some(&DialogOwner::OutLeg(hb))
        {
            self.dialogs.remove(&d.key);
        }
    }
}
