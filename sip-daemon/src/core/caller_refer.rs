//! Blind transfer asked by the caller's side (RFC 3515 REFER in the
//! inbound dialog, the flow of RFC 5589 §6 with us as the transferee's
//! B2BUA): the caller's carrier hands the call on to a new party. The
//! gateway calls the Refer-To target offering the call's own codec on the
//! call's own media port, so whatever the caller was connected to — the
//! far party of a forwarded call, or the AI of a stream call — keeps its
//! media untouched. When the target answers, it becomes the call's remote
//! party: its dialog replaces the caller's, the media leg is pointed at it,
//! and the caller gets the final NOTIFY and a BYE. A caller that hangs up
//! once the REFER is accepted (as blind transferors do) does not end the
//! call while the target rings; if the target fails, the transferor hears
//! it by NOTIFY, or, when it already left, the call ends
//! (`transfer_failed`).
//!
//! The new leg goes out through the trunk the call came in on when that
//! trunk has an outbound address (the carrier routes the number), else to
//! the Refer-To's own host. Attended transfer (`Replaces`) gets 501.

use super::*;
use crate::core::legs::CallState;
use crate::core::legs::OutTarget;
use crate::sip::headers_typed::NameAddr;
use domain::model::{Number, RouteKind};

/// Why a REFER's Refer-To cannot be used: status and reason phrase.
fn parse_refer_to(req: &Request) -> Result<NameAddr, (u16, &'static str)> {
    let refer_to = req
        .headers
        .get(&HeaderName::ReferTo)
        .and_then(|v| NameAddr::parse(v).ok())
        .ok_or((400, "Bad Request (missing or malformed Refer-To)"))?;
    if refer_to.uri.as_str().contains('?') {
        return Err((501, "Not Implemented (attended transfer)"));
    }
    Ok(refer_to)
}

impl Core {
    /// The Refer-To of REFER `id`, or the error response sent (400,
    /// counted as malformed; 501 for attended transfer).
    pub(super) fn refer_target(
        &mut self,
        now: Instant,
        id: TxnId,
        tag: &str,
        req: &Request,
    ) -> Option<NameAddr> {
        match parse_refer_to(req) {
            Ok(r) => Some(r),
            Err((status, phrase)) => {
                if status == 400 {
                    self.metrics.reject("malformed");
                }
                self.respond(now, id, status, Some(phrase), Some(tag), |b| b);
                None
            }
        }
    }

    /// A REFER inside call `h`'s own (inbound) dialog.
    pub(super) fn on_caller_refer(
        &mut self,
        now: Instant,
        id: TxnId,
        h: CallHandle,
        tag: &str,
        req: &Request,
    ) {
        let Some(refer_to) = self.refer_target(now, id, tag, req) else {
            return;
        };
        let Some(call) = self.calls.get(&h) else {
            return self.respond(now, id, 481, None, Some(tag), |b| b);
        };
        let ready = matches!(call.state, CallState::Confirmed | CallState::Answered)
            && call.transfer.is_none()
            && call.refer_until.is_none()
            && call.reinvite_out.is_none()
            && call.origination.is_none()
            && call.pending.is_none();
        let (Some(codec), Some(local), true) = (
            call.negotiated.as_ref().map(|n| n.codec),
            call.local_media,
            ready,
        ) else {
            // Not up yet, a transfer already running, or no media to move.
            return self.respond(now, id, 491, None, Some(tag), |b| b);
        };
        let did = uri_user(&call.dialog.local_uri);
        let trunk = call.trunk.clone();
        let media_leg = call.media_leg;
        let number = |trunk: Option<String>| Number {
            pattern: String::new(),
            account_id: String::new(),
            route: RouteKind::Forward,
            target: Some(refer_to.uri.as_str().to_string()),
            dialect: None,
            params: None,
            trunk,
            max_calls: None,
            fallback: None,
            voice_webhook: None,
            sms_webhook: None,
            status_webhook: None,
            webhook_format: Default::default(),
            media_security: Default::default(),
        };
        // Through the caller's trunk when it can place calls, else to the
        // Refer-To's host.
        let target: Result<OutTarget, _> = self
            .resolve_forward(now, &number(trunk))
            .or_else(|_| self.resolve_forward(now, &number(None)));
        let Ok(target) = target else {
            return self.respond(
                now,
                id,
                403,
                Some("Forbidden (no route to the Refer-To target)"),
                Some(tag),
                |b| b,
            );
        };
        let Some((peer, user)) = self
            .calls
            .get(&h)
            .map(|c| (c.dialog.peer, c.callee_user.clone()))
        else {
            return;
        };
        let contact = self.contact_for(&peer, user.as_deref(), self.sips_dialog(h));
        self.respond(now, id, 202, None, Some(tag), |b| {
            b.header(HeaderName::Contact, contact)
        });
        self.notify_caller(now, h, 100, "Trying", false);
        tracing::info!(call = h.get(), target = %refer_to.uri, "blind transfer by the caller's side");
        let hc: OutLegHandle = self.new_id();
        // The new party sees the number the caller had called.
        let mut leg = self.new_out_leg(h, target, &did, 70, vec![codec], media_leg);
        leg.replaces_caller = true;
        self.out_legs.insert(hc, leg);
        if let Some(c) = self.calls.get_mut(&h) {
            c.transfer = Some(hc);
        }
        self.place_far_leg(now, hc, local);
    }

    /// NOTIFY in the call's own dialog with the progress of the caller's
    /// REFER (RFC 3515 §2.4.4, `message/sipfrag`); nothing once the caller
    /// left.
    fn notify_caller(
        &mut self,
        now: Instant,
        h: CallHandle,
        status: u16,
        reason: &str,
        done: bool,
    ) {
        let Some((peer, user, left)) = self
            .calls
            .get(&h)
            .map(|c| (c.dialog.peer, c.callee_user.clone(), c.caller_left))
        else {
            return;
        };
        if left {
            return;
        }
        let contact = self.contact_for(&peer, user.as_deref(), self.sips_dialog(h));
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let Some(c) = self.calls.get_mut(&h) else {
            return;
        };
        let bytes = super::transfer::refer_notify(
            &mut c.dialog,
            &via,
            &server,
            contact,
            status,
            reason,
            done,
        );
        self.start_client_request(now, peer, branch, bytes, txns::ClientPurpose::Notify);
    }

    /// The caller hung up while its REFER's target rings: the call stays
    /// for the target. Whether that was the case.
    pub(super) fn caller_left_during_refer(&mut self, h: CallHandle) -> bool {
        let replacing = self
            .calls
            .get(&h)
            .and_then(|c| c.transfer)
            .and_then(|hc| self.out_legs.get(&hc))
            .is_some_and(|o| o.replaces_caller);
        if replacing && let Some(c) = self.calls.get_mut(&h) {
            c.caller_left = true;
            tracing::info!(
                call = h.get(),
                "the transferor left; the call waits for the target"
            );
        }
        replacing
    }

    /// The Refer-To target answered (ACKed; the media leg already points
    /// at it): it becomes the call's remote party.
    pub(super) fn caller_replaced(&mut self, now: Instant, h: CallHandle, hc: OutLegHandle) {
        self.notify_caller(now, h, 200, "OK", true);
        let left = self.calls.get(&h).is_none_or(|c| c.caller_left);
        if !left {
            self.send_in_dialog(now, h, Method::Bye);
        }
        let t64 = self.cfg.timers.t64();
        let Some(o) = self.out_legs.get_mut(&hc) else {
            return;
        };
        let (Some(dialog), Some(negotiated)) = (o.dialog.clone(), o.negotiated.clone()) else {
            return;
        };
        // The target's leg keys as its own trunk and transport allow.
        let keying = o.keying.clone();
        // Our SDP toward the target is the one its INVITE offered (its o=
        // line goes on in later offers, RFC 3264 §8).
        let local_sdp = o
            .offer
            .as_deref()
            .and_then(|s| parse_sdp(s.as_bytes()).ok());
        // The new leg stays only to re-ACK a retransmitted 2xx; the call
        // owns its dialog from now on.
        o.partner = None;
        o.replaces_caller = false;
        o.state = crate::core::legs::OutState::Ending;
        o.ring_deadline = Some(now + t64);
        self.schedule_out(hc);
        let Some(c) = self.calls.get_mut(&h) else {
            return;
        };
        let old = std::mem::replace(&mut c.dialog, dialog);
        c.keying = keying;
        c.codecs = vec![negotiated.codec];
        c.negotiated = Some(negotiated);
        c.local_sdp = local_sdp;
        c.transfer = None;
        c.caller_left = false;
        c.session = None;
        // Whatever was under way with the old caller is over.
        c.ok = None;
        c.reinvite_txn = None;
        c.reinvite_out = None;
        c.reinvite_ack = None;
        c.ack_offer_pending = false;
        let new_key = c.dialog.key.clone();
        self.dialogs.remove(&old.key);
        self.dialogs.insert(new_key, DialogOwner::Call(h));
        tracing::info!(call = h.get(), "caller's transfer completed");
    }

    /// The Refer-To target did not answer (`status`): the transferor hears
    /// it and keeps the call, or, when it already left, the call ends.
    pub(super) fn caller_refer_failed(
        &mut self,
        now: Instant,
        partner: Option<CallHandle>,
        status: u16,
        reason: &str,
    ) {
        let Some(h) = partner else {
            return;
        };
        tracing::info!(call = h.get(), status, "caller's transfer target failed");
        self.notify_caller(now, h, status, reason, true);
        let Some(c) = self.calls.get_mut(&h) else {
            return;
        };
        c.transfer = None;
        if c.caller_left {
            self.hangup(now, h, "transfer_failed");
        }
    }
}
