//! Answering: the media leg opened (or failed), the AI stream connected,
//! the 200 OK and its retransmission, and the ACK that confirms it
//! (RFC 3261 §13.3.1.4).

use crate::core::negotiation::{leg_media, local_offer, negotiated_from_answer};
use crate::core::*;
use crate::sip::sdp::{self, NegotiatedAudio};
use crate::sip::transaction::ServerState;

impl Core {
    pub(in crate::core) fn on_media_opened(
        &mut self,
        now: Instant,
        h: CallHandle,
        local: SocketAddr,
    ) {
        let Some(call) = self.calls.get_mut(&h) else {
            // The call ended while the leg was opening.
            self.out
                .push_back(Output::Media(MediaCommand::Close { leg: h.own_leg() }));
            return;
        };
        if call.origination.is_some() && !call.media_open {
            call.media_open = true;
            call.local_media = Some(local);
            return self.originate_port_bound(now, h, local);
        }
        call.media_open = true;
        call.local_media = Some(local);
        if call.state != CallState::AwaitingMedia || call.stream_wait.is_some() {
            // A stream call is answered once the AI's socket is up.
            return;
        }
        self.answer(now, h);
    }

    /// The AI's socket is up: answer if the leg is open too.
    pub(in crate::core) fn on_stream_connected(&mut self, now: Instant, h: CallHandle) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        call.stream_wait = None;
        if call.state == CallState::AwaitingMedia && call.media_open {
            self.answer(now, h);
        }
    }

    /// The AI's socket failed, timed out or was closed: an unanswered call
    /// gets the configured fallback, an answered one a BYE.
    pub(in crate::core) fn on_stream_gone(&mut self, now: Instant, h: CallHandle, cause: &str) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if call.bridge.is_some() {
            // The call went to its fallback; the old stream leg is gone.
            return;
        }
        tracing::info!(call = %call.sid, cause, "AI stream gone");
        if call.state == CallState::AwaitingMedia && self.stream_to_fallback(now, h) {
            return;
        }
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if call.state == CallState::AwaitingMedia {
            if let Some(txn) = call.invite_txn {
                let tag = call.dialog.key.local_tag.clone();
                let status = self.cfg.stream.fallback_status;
                self.metrics.reject(cause);
                self.respond(now, txn, status, None, Some(&tag), |b| b);
                self.end_call(now, h, cause, status);
            }
            return;
        }
        self.hangup(now, h, cause);
    }

    /// Sends the 2xx with our SDP.
    pub(in crate::core) fn answer(&mut self, now: Instant, h: CallHandle) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let (Some(txn), Some(local)) = (call.invite_txn, call.local_media) else {
            return;
        };
        let lm = self.local_media(local.port(), h.get(), 1, &call.keying);
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let sdp = match &call.offer {
            Some(o) => match sdp::answer(o, &lm, &call.codecs) {
                Ok((a, _)) => a,
                Err(_) => return,
            },
            None => {
                call.ack_offer_pending = true;
                local_offer(&call.codecs, &lm)
            }
        };
        call.local_sdp = Some(sdp.clone());
        let body = sdp.encode();
        let tag = call.dialog.key.local_tag.clone();
        let session = call.session;
        let peer = call.dialog.peer;
        let user = call.callee_user.clone();
        let sid = call.sid.clone();
        let contact = self.contact_for(&peer, user.as_deref(), self.sips_dialog(h));
        self.respond(now, txn, 200, None, Some(&tag), |mut b| {
            b = b
                .header(HeaderName::Contact, contact)
                .header(HeaderName::Allow, ALLOW)
                .header(HeaderName::Supported, SUPPORTED.join(", "));
            if let Some(s) = session {
                b = b.header(HeaderName::SessionExpires, s.header());
                if !s.we_refresh {
                    b = b.header(HeaderName::Require, "timer");
                }
            }
            b.body("application/sdp", body)
        });
        self.after_2xx(now, h, txn);
        let mut fork = None;
        if let Some(call) = self.calls.get_mut(&h) {
            call.state = CallState::Answered;
            call.answered_at = Some(now);
            // Its route is settled (a TwiML <Dial> kept both until now);
            // a <Start><Stream> before the <Dial> begins now.
            let pending = call.pending.take();
            fork = call
                .twiml
                .take()
                .and_then(|t| t.fork)
                .zip(pending.map(|p| p.number.account_id.clone()));
            self.metrics
                .call_setup
                .with_label_values(&["inbound"])
                .observe(now.saturating_duration_since(call.invite_at).as_secs_f64());
        }
        let at = self.unix_ms(now);
        let media_security = Some(self.legs_security(h));
        self.out.push_back(Output::Cdr(CdrEvent::Answered {
            id: sid,
            at,
            media_security,
        }));
        self.status_changed(now, h, "in-progress");
        self.schedule_call(h);
        if let Some((stream, account)) = fork {
            let target = stream.target();
            let outcome = self.start_fork(h, &account, &target);
            if outcome != api::control::ControlOutcome::Accepted {
                tracing::info!(
                    call = h.get(),
                    ?outcome,
                    "TwiML <Start><Stream> not started"
                );
            }
        }
    }

    /// How each leg of call `h` carries its media, for the CDR.
    pub(in crate::core) fn legs_security(&self, h: CallHandle) -> domain::model::LegsSecurity {
        let record = |n: Option<&NegotiatedAudio>| {
            n.map(|n| n.srtp.map_or_else(|| "rtp".to_string(), |s| s.record()))
        };
        let call = self.calls.get(&h);
        let far = call
            .and_then(|c| c.bridge)
            .and_then(|hb| self.out_legs.get(&hb))
            .and_then(|o| record(o.negotiated.as_ref()));
        domain::model::LegsSecurity {
            caller: call.and_then(|c| record(c.negotiated.as_ref())),
            far,
        }
    }

    /// Retransmission of server transaction `txn`'s 2xx until its ACK
    /// (§13.3.1.4; none over reliable transports).
    pub(in crate::core) fn ok_retransmit(
        &self,
        now: Instant,
        txn: TxnId,
        reliable: bool,
    ) -> Option<OkRetransmit> {
        let last = self.txns.server.get(&txn)?.txn.last_response()?.clone();
        Some(OkRetransmit::start(now, last, reliable, self.cfg.timers))
    }

    /// Starts 2xx retransmission (unreliable transports) and the ACK wait.
    pub(super) fn after_2xx(&mut self, now: Instant, h: CallHandle, txn: TxnId) {
        let Some(reliable) = self
            .calls
            .get(&h)
            .map(|c| c.dialog.peer.transport.is_reliable())
        else {
            return;
        };
        let ok = self.ok_retransmit(now, txn, reliable);
        if let Some(call) = self.calls.get_mut(&h) {
            call.ok = ok;
        }
    }

    pub(in crate::core) fn on_media_failed(&mut self, now: Instant, leg: LegId, reason: &str) {
        // The relay of an AI transfer could not be bound.
        let rebridge = self
            .out_legs
            .iter()
            .find(|(_, o)| o.rebridge == Some(leg))
            .map(|(hb, o)| (*hb, o.partner));
        if let Some((hb, partner)) = rebridge {
            tracing::warn!(reason, "relay for an AI transfer failed to open");
            self.out_legs.remove(&hb);
            if let Some(p) = partner
                && let Some(c) = self.calls.get_mut(&p)
            {
                c.transfer = None;
            }
            return self.ai_result_unavailable(now, partner);
        }
        let h = CallHandle::of_leg(leg);
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        tracing::warn!(call = %call.sid, reason, "media leg failed to open");
        if let Some(txn) = call.invite_txn
            && call.state == CallState::AwaitingMedia
        {
            let tag = call.dialog.key.local_tag.clone();
            self.metrics.reject("media");
            self.respond(
                now,
                txn,
                503,
                Some("Service Unavailable (no media port)"),
                Some(&tag),
                |b| b,
            );
            self.end_call(now, h, "media_failed", 503);
        } else {
            self.hangup(now, h, "media_failed");
        }
    }

    pub(in crate::core) fn on_ack(&mut self, now: Instant, peer: Peer, ack: Request) {
        // ACK for a non-2xx final: absorbed by the INVITE transaction.
        let key = TxnKey::invite_of(&ack, &peer);
        if let Some(&id) = self.txns.server_index.get(&key)
            && let Some(e) = self.txns.server.get_mut(&id)
            && e.txn.state() == ServerState::Completed
        {
            e.txn.on_ack(now);
            if let Some(at) = e.txn.next_deadline() {
                self.schedule(at, TimerRef::Server(id));
            }
            return;
        }
        // ACK for a 2xx: end to end, matched to the dialog (§13.3.1.4).
        let h = match self.dialog_of(&ack) {
            Some(DialogOwner::Call(h)) => h,
            Some(DialogOwner::OutLeg(hb)) => {
                // The far side ACKed our 2xx to its re-INVITE.
                if let Some(o) = self.out_legs.get_mut(&hb) {
                    o.ok = None;
                }
                return;
            }
            None => return,
        };
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        call.ok = None;
        if call.state == CallState::Answered {
            call.state = CallState::Confirmed;
        }
        if call.ack_offer_pending {
            call.ack_offer_pending = false;
            let ours = call.local_sdp.clone();
            match parse_sdp(&ack.body)
                .ok()
                .and_then(|a| negotiated_from_answer(&a, &call.codecs, ours.as_ref()?))
            {
                Some(n) => {
                    let media = leg_media(&n);
                    call.negotiated = Some(n);
                    let leg = call.media_leg;
                    self.out
                        .push_back(Output::Media(MediaCommand::Update { leg, media }));
                }
                None => {
                    // §13.3.1.4: an unusable answer in the ACK ends the call.
                    tracing::info!(call = %call.sid, "ACK carried no usable SDP answer");
                    self.hangup(now, h, "not_acceptable");
                    return;
                }
            }
        }
        self.schedule_call(h);
    }
}
