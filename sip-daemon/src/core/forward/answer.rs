//! The far side's answers to our INVITE: provisional responses passed
//! to the caller, digest challenges, redirects, and the 2xx that bridges
//! the two legs.

use super::*;
use crate::core::dialog::Dialog;
use crate::core::legs::CallState;
use crate::core::negotiation::{leg_media, negotiated_from_answer};
use crate::core::*;
use crate::sip::headers_typed::NameAddr;
use crate::sip::sdes::{SrtpKey, SrtpSuite};
use crate::sip::sdp::{self};
use crate::sip::uri::Scheme;

impl Core {
    /// A response to the far INVITE, delivered by its client transaction.
    pub(in crate::core) fn on_out_response(
        &mut self,
        now: Instant,
        hb: OutLegHandle,
        txn: TxnId,
        resp: Response,
    ) {
        let server = self.cfg.server_name.clone();
        let cnonce = self.random_hex(8);
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        if o.invite_txn != Some(txn) {
            return;
        }
        let status = resp.status;
        if status < 200 {
            // Any provisional, 100 included, allows CANCEL (§9.1).
            o.provisional = true;
            if o.cancel_due && o.provisional {
                return self.send_cancel(now, hb);
            }
            if o.state == OutState::Calling && status > 100 {
                self.out_provisional(now, hb, &resp);
            }
            return;
        }
        if status < 300 {
            return self.out_answered(now, hb, &resp);
        }
        // A non-2xx final: the transaction's ACK (§17.1.1.3).
        let to = resp
            .headers
            .get(&HeaderName::To)
            .unwrap_or_default()
            .to_string();
        let ack = Self::invite_sibling(o, Method::Ack, &to, &server);
        let peer = o.target.peer;
        if let Some(e) = self.txns.client.get_mut(&txn) {
            e.txn.set_ack(ack.clone());
        }
        self.transmit(peer, ack);
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        // A redirection (§8.1.3.4): the INVITE goes again, to the first
        // Contact, a few times at most. Through a trunk it still leaves
        // for the trunk; otherwise to the Contact's own host (an IP).
        if (300..400).contains(&status)
            && o.state == OutState::Calling
            && o.redirects < MAX_REDIRECTS
            && let Some(uri) = resp
                .headers
                .get(&HeaderName::Contact)
                .and_then(|c| NameAddr::parse(c.split(',').next().unwrap_or(c)).ok())
                .map(|n| n.uri)
        {
            let peer = if o.target.via_trunk {
                Some(o.target.peer)
            } else {
                // A redirect is a new direct target: the tenants' target
                // policy holds for it as for the first.
                uri.host
                    .as_ref()
                    .and_then(|h| h.ip())
                    .filter(|ip| self.cfg.targets.check_ip(*ip).is_ok())
                    .map(|ip| Peer {
                        remote: SocketAddr::new(ip, uri.port_or_default()),
                        ..o.target.peer
                    })
            };
            if let Some(peer) = peer
                && peer.remote.is_ipv4() == o.target.peer.remote.is_ipv4()
            {
                tracing::info!(status, target = %uri, "far leg redirected");
                o.redirects += 1;
                o.cseq += 1;
                o.provisional = false;
                o.to = format!("<{uri}>");
                o.target.uri = uri;
                o.target.peer = peer;
                return self.send_out_invite(now, hb, None);
            }
        }
        if o.state == OutState::Calling
            && !o.auth_tried
            && let Some(auth) = digest_answer(&resp, &o.target, "INVITE", &cnonce)
        {
            o.auth_tried = true;
            o.cseq += 1;
            o.provisional = false;
            return self.send_out_invite(now, hb, Some(auth));
        }
        let Some(o) = self.out_legs.remove(&hb) else {
            return;
        };
        if let Some(b) = o.transfer_of {
            return self.transfer_outcome(now, o.partner, b, status, &resp.reason);
        }
        if o.replaces_caller {
            return self.caller_refer_failed(now, o.partner, status, &resp.reason);
        }
        if let Some(relay_a) = o.rebridge {
            return self.rebridge_failed(
                now,
                o.partner,
                relay_a,
                failure_outcome(status).0,
                status,
            );
        }
        if let Some(h) = o.partner {
            let (cause, to_caller) = failure_outcome(status);
            tracing::info!(status, cause, "forwarded call's far leg failed");
            self.fail_forwarded(now, h, cause, to_caller, Some(RelaySide::of(&o)));
        }
    }

    /// 180/183 from the far leg: ringing, or early media when it carries
    /// SDP (the caller then hears the far side's announcements and
    /// ringback before the answer).
    fn out_provisional(&mut self, now: Instant, hb: OutLegHandle, resp: &Response) {
        let outbound = self
            .out_legs
            .get(&hb)
            .and_then(|o| super::originate::places_outbound_call(self, o));
        if let Some(h) = outbound {
            // An outbound call: nobody to pass ringing or early media to;
            // its status webhook hears `ringing` once.
            if let Some(o) = self.out_legs.get_mut(&hb)
                && !o.ringing_sent
            {
                o.ringing_sent = true;
                self.status_changed(now, h, "ringing");
            }
            // Early media: its SDP is the answer (RFC 3261 §13.2.1), which
            // a 2xx without a body then confirms.
            if !resp.body.is_empty() {
                self.far_answer(hb, resp);
            }
            return;
        }
        if self
            .out_legs
            .get(&hb)
            .is_some_and(|o| o.rebridge.is_some() || o.transfer_of.is_some() || o.replaces_caller)
        {
            // An AI transfer (the caller is still with the AI) or a far-side
            // transfer (the transferor still holds the relay side): the
            // target's ringing and early media are not passed on.
            return;
        }
        let early = if resp.body.is_empty() {
            None
        } else {
            self.far_answer(hb, resp)
        };
        let Some(h) = self.out_legs.get(&hb).and_then(|o| o.partner) else {
            return;
        };
        match early {
            Some(codec) => {
                if self.bridge_codec(h, codec).is_none() {
                    return;
                }
                self.send_caller_sdp(now, h, 183);
            }
            None => {
                let Some(o) = self.out_legs.get_mut(&hb) else {
                    return;
                };
                if o.ringing_sent {
                    return;
                }
                o.ringing_sent = true;
                self.send_caller_provisional(now, h, resp.status);
            }
        }
    }

    /// Reads the far leg's SDP answer (in a 18x or the 2xx) and points the
    /// relay's far side at it. Returns the codec it chose.
    fn far_answer(&mut self, hb: OutLegHandle, resp: &Response) -> Option<Codec> {
        let o = self.out_legs.get_mut(&hb)?;
        let answer = parse_sdp(&resp.body).ok()?;
        let ours = parse_sdp(o.offer.as_deref()?.as_bytes()).ok()?;
        let n = negotiated_from_answer(&answer, &o.offered, &ours)?;
        let media = leg_media(&n);
        let changed = o.negotiated.as_ref().map(leg_media) != Some(media);
        let codec = n.codec;
        let leg = o.media_leg;
        o.negotiated = Some(n);
        if changed {
            self.out
                .push_back(Output::Media(MediaCommand::Update { leg, media }));
        }
        Some(codec)
    }

    /// A caller not answered yet uses the codec the far side chose, so the
    /// relay passes payloads untouched: re-negotiates the caller's answer
    /// to it. An answered caller keeps its codec and the relay transcodes.
    fn bridge_codec(&mut self, h: CallHandle, codec: Codec) -> Option<()> {
        let shared = self.far_key_to_share(h);
        let call = self.calls.get_mut(&h)?;
        if call.state != CallState::AwaitingMedia {
            // An answered caller keeps its codec (a transfer target may
            // answer with another) and its keys: the relay transcodes and
            // re-encrypts.
            return Some(());
        }
        if call.codecs == [codec] && call.keying.shared == shared {
            return Some(());
        }
        call.keying.shared = shared;
        let call = self.calls.get(&h)?;
        let lm = self.local_media(
            call.local_media.map_or(0, |l| l.port()),
            h.get(),
            1,
            &call.keying,
        );
        let call = self.calls.get_mut(&h)?;
        let offer = call.offer.as_ref()?;
        let (_, n) = sdp::answer(offer, &lm, &[codec]).ok()?;
        call.codecs = vec![codec];
        let media = leg_media(&n);
        if call.negotiated.as_ref().map(leg_media) != Some(media) {
            call.negotiated = Some(n);
            self.out.push_back(Output::Media(MediaCommand::Update {
                leg: h.own_leg(),
                media,
            }));
        }
        Some(())
    }

    /// The key the caller's answer may declare as ours: the far side's,
    /// when the far leg was offered the caller's own key and answered in
    /// the same suite (keys shared end to end, [`Self::caller_key_to_share`]).
    fn far_key_to_share(&self, h: CallHandle) -> Option<(SrtpSuite, SrtpKey)> {
        let call = self.calls.get(&h)?;
        let o = self.out_legs.get(&call.bridge?)?;
        let (suite, offered) = o.keying.shared?;
        let far = o.negotiated.as_ref()?.srtp?;
        let caller = call.negotiated.as_ref()?.srtp?;
        (far.suite == suite && far.local == offered && caller.suite == suite)
            .then_some((suite, far.remote))
    }

    pub(in crate::core) fn send_caller_provisional(
        &mut self,
        now: Instant,
        h: CallHandle,
        status: u16,
    ) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let (Some(txn), tag, peer) = (
            call.invite_txn,
            call.dialog.key.local_tag.clone(),
            call.dialog.peer,
        ) else {
            return;
        };
        let contact = self.contact_for(&peer, call.callee_user.as_deref(), call.dialog.secure);
        self.respond(now, txn, status, None, Some(&tag), |b| {
            b.header(HeaderName::Contact, contact)
        });
    }

    /// A 183 with our answer to the caller's offer (early media).
    fn send_caller_sdp(&mut self, now: Instant, h: CallHandle, status: u16) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let Some(local) = call.local_media else {
            return;
        };
        let lm = self.local_media(local.port(), h.get(), 1, &call.keying);
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let (Some(txn), Some(offer)) = (call.invite_txn, call.offer.as_ref()) else {
            return;
        };
        let Ok((sdp, _)) = sdp::answer(offer, &lm, &call.codecs) else {
            return;
        };
        call.local_sdp = Some(sdp.clone());
        let body = sdp.encode();
        let tag = call.dialog.key.local_tag.clone();
        let peer = call.dialog.peer;
        let user = call.callee_user.clone();
        let contact = self.contact_for(&peer, user.as_deref(), self.sips_dialog(h));
        self.respond(now, txn, status, None, Some(&tag), |b| {
            b.header(HeaderName::Contact, contact)
                .body("application/sdp", body)
        });
    }

    /// The far leg answered: ACK it, point the relay at it and answer the
    /// caller with the same codec.
    fn out_answered(&mut self, now: Instant, hb: OutLegHandle, resp: &Response) {
        let server = self.cfg.server_name.clone();
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        if let Some(ack) = &o.ack {
            let same_dialog = o
                .dialog
                .as_ref()
                .is_some_and(|d| Some(d.key.remote_tag.as_str()) == resp.core.to.tag());
            let peer = o.dialog.as_ref().map_or(o.target.peer, |d| d.peer);
            if same_dialog {
                // A retransmitted 2xx: our ACK was lost (§13.2.2.4).
                let ack = ack.clone();
                return self.transmit(peer, ack);
            }
            // A 2xx from another fork of the INVITE: that dialog is ACKed
            // and ended at once; the call stays with the first (§13.2.2.4).
            let mut fork = Dialog::from_response(resp, &o.from, &o.local_tag, o.cseq, peer);
            let cseq = o.cseq;
            let (via, _) = self.our_via(&peer);
            let ack = Bytes::from(fork.ack(cseq, &via, &server).encode());
            self.transmit(peer, ack);
            let (via, branch) = self.our_via(&peer);
            let bye = Bytes::from(fork.request(Method::Bye, &via, &server).encode());
            return self.start_client_request(now, peer, branch, bye, txns::ClientPurpose::Bye);
        }
        let mut peer = o.target.peer;
        if peer.transport.is_reliable() {
            peer.conn = None;
        }
        let mut dialog = Dialog::from_response(resp, &o.from, &o.local_tag, o.cseq, peer);
        // §12.1.2: a dialog made by our sips: request is a SIPS one.
        dialog.secure |= o.target.uri.scheme == Scheme::Sips;
        let cseq = o.cseq;
        let (via, _) = self.our_via(&peer);
        let ack = Bytes::from(dialog.ack(cseq, &via, &server).encode());
        self.dialogs
            .insert(dialog.key.clone(), DialogOwner::OutLeg(hb));
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        o.ack = Some(ack.clone());
        o.dialog = Some(dialog);
        o.ring_deadline = None;
        let abandoned = o.state == OutState::Ending || o.partner.is_none();
        o.state = OutState::Confirmed;
        self.transmit(peer, ack);
        if abandoned {
            // The caller left while the far side picked up (§15: a 2xx
            // after CANCEL still makes a dialog, which we end).
            self.bye_out(now, hb);
            self.remove_out(hb);
            return;
        }
        let Some(h) = self.out_legs.get(&hb).and_then(|o| o.partner) else {
            return;
        };
        let codec = if resp.body.is_empty() {
            // The answer came in early media (a 2xx need not repeat it).
            self.out_legs
                .get(&hb)
                .and_then(|o| o.negotiated.as_ref().map(|n| n.codec))
        } else {
            self.far_answer(hb, resp)
        };
        if self.out_legs.get(&hb).is_some_and(|o| o.rebridge.is_some()) {
            // An AI transfer: the target was offered the caller's codec.
            if codec.is_some() {
                return self.rebridge_completed(now, h, hb);
            }
            self.bye_out(now, hb);
            let relay_a = self.out_legs.get_mut(&hb).and_then(|o| o.rebridge.take());
            self.remove_out(hb);
            if let Some(relay_a) = relay_a {
                self.rebridge_failed(now, Some(h), relay_a, "failed", 488);
            }
            return;
        }
        if self.out_legs.get(&hb).is_some_and(|o| o.replaces_caller) {
            if codec.is_some() {
                return self.caller_replaced(now, h, hb);
            }
            self.bye_out(now, hb);
            self.remove_out(hb);
            return self.caller_refer_failed(now, Some(h), 488, "Not Acceptable Here");
        }
        let outbound = self
            .out_legs
            .get(&hb)
            .and_then(|o| super::originate::places_outbound_call(self, o))
            .is_some();
        if outbound {
            if codec.is_some() {
                return self.originate_answered(now, h, hb);
            }
            tracing::info!("callee answered with no usable SDP");
            self.bye_out(now, hb);
            self.remove_out(hb);
            return self.fail_forwarded(now, h, "not_acceptable", 488, None);
        }
        let bridged = codec.and_then(|c| self.bridge_codec(h, c));
        if bridged.is_none() {
            tracing::info!("far leg answered with no usable SDP");
            self.bye_out(now, hb);
            self.remove_out(hb);
            return self.fail_forwarded(now, h, "not_acceptable", 488, None);
        }
        if let Some(b) = self.out_legs.get(&hb).and_then(|o| o.transfer_of) {
            return self.transfer_completed(now, h, hb, b);
        }
        let answered = self
            .calls
            .get(&h)
            .is_some_and(|c| c.state != CallState::AwaitingMedia);
        if !answered {
            self.answer(now, h);
        }
    }
}
