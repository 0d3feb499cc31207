//! Requests from the far side inside its dialog: BYE, re-INVITE and
//! UPDATE, INFO, REFER.

use crate::core::negotiation::{leg_media, local_offer};
use crate::core::*;
use crate::sip::sdp::{self, LocalMedia};

impl Core {
    /// A request inside the far leg's dialog.
    pub(in crate::core) fn on_out_in_dialog(
        &mut self,
        now: Instant,
        id: TxnId,
        hb: OutLegHandle,
        req: &Request,
    ) {
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return self.reply(now, id, 481, None);
        };
        let tag = o.local_tag.clone();
        if let Some(d) = o.dialog.as_mut()
            && d.accept_remote_cseq(req).is_err()
        {
            return self.respond(
                now,
                id,
                500,
                Some("Server Internal Error (CSeq out of order)"),
                Some(&tag),
                |b| b,
            );
        }
        match req.method {
            Method::Bye => {
                self.respond(now, id, 200, None, Some(&tag), |b| b);
                let partner = self.out_legs.get(&hb).and_then(|o| o.partner);
                self.remove_out(hb);
                if let Some(h) = partner {
                    // Only a transfer this far leg asked for replaces it.
                    let own_transfer = self
                        .calls
                        .get(&h)
                        .and_then(|c| c.transfer)
                        .and_then(|hc| self.out_legs.get(&hc))
                        .is_some_and(|o| o.transfer_of == Some(hb));
                    if let Some(c) = self.calls.get_mut(&h) {
                        c.bridge = None;
                    }
                    // A blind transferor hangs up once it has its 202: the
                    // caller stays for the transfer target.
                    if !own_transfer {
                        self.hangup(now, h, "callee_hangup");
                    }
                }
            }
            Method::Invite | Method::Update => self.out_session_update(now, id, hb, &tag, req),
            Method::Refer => self.on_refer(now, id, hb, &tag, req),
            Method::Options | Method::Info => self.respond(now, id, 200, None, Some(&tag), |b| b),
            _ => self.respond(now, id, 405, None, Some(&tag), |b| {
                b.header(HeaderName::Allow, ALLOW)
            }),
        }
    }

    /// Our 2xx to the far side's re-INVITE (server transaction `id`) is
    /// resent until its ACK (§13.3.1.4).
    fn far_ok_sent(&mut self, now: Instant, hb: OutLegHandle, id: TxnId) {
        let reliable = self
            .out_legs
            .get(&hb)
            .and_then(|o| o.dialog.as_ref())
            .is_some_and(|d| d.peer.transport.is_reliable());
        let ok = self.ok_retransmit(now, id, reliable);
        if let Some(o) = self.out_legs.get_mut(&hb) {
            o.ok = ok;
        }
        self.schedule_out(hb);
    }

    /// A re-INVITE or UPDATE from the far side (hold, new address): answered
    /// on this leg with the bridged codec; the relay follows.
    fn out_session_update(
        &mut self,
        now: Instant,
        id: TxnId,
        hb: OutLegHandle,
        tag: &str,
        req: &Request,
    ) {
        let advertised = self.cfg.advertised_ip;
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        let keying = o.keying.clone();
        if req.method == Method::Invite && o.reinvite_out.is_some() {
            // §14.2: our own re-INVITE is in flight on this dialog.
            return self.respond(now, id, 491, None, Some(tag), |b| b);
        }
        if let Some(d) = o.dialog.as_mut() {
            d.refresh_target(req);
        }
        let codec = o.negotiated.as_ref().map(|n| n.codec);
        o.sdp_version += 1;
        let lm = LocalMedia {
            addr: advertised,
            port: o.local_media.map_or(0, |l| l.port()),
            session_id: o.sdp_session_id(hb),
            session_version: o.sdp_version,
            keying,
        };
        let codecs: Vec<Codec> = codec.into_iter().collect();
        let all_codecs = self.cfg.codecs.clone();
        let contact = o.contact.clone();
        if req.body.is_empty() {
            if req.method == Method::Update {
                return self.respond(now, id, 200, None, Some(tag), |b| b);
            }
            // An offerless re-INVITE: we offer, the ACK answers (the
            // relay keeps its current target meanwhile).
            let offer = local_offer(&codecs, &lm).encode();
            self.respond(now, id, 200, None, Some(tag), |b| {
                b.header(HeaderName::Contact, contact)
                    .body("application/sdp", offer)
            });
            return self.far_ok_sent(now, hb, id);
        }
        let offer = match parse_sdp(&req.body) {
            Ok(o) => o,
            Err(why) => {
                let phrase = format!("Bad Request ({why})");
                return self.respond(now, id, 400, Some(&phrase), Some(tag), |b| b);
            }
        };
        let answered = match codec {
            // The far side may change codec: the relay transcodes.
            Some(c) => super::negotiation::answer_relayed(&offer, &lm, c, &all_codecs),
            None => sdp::answer(&offer, &lm, &codecs),
        };
        match answered {
            Ok((answer, n)) => {
                let media = leg_media(&n);
                let offered = n.direction.reverse();
                let mut leg = hb.own_leg();
                if let Some(o) = self.out_legs.get_mut(&hb) {
                    o.negotiated = Some(n);
                    leg = o.media_leg;
                }
                self.out
                    .push_back(Output::Media(MediaCommand::Update { leg, media }));
                let body = answer.encode();
                self.respond(now, id, 200, None, Some(tag), |b| {
                    b.header(HeaderName::Contact, contact)
                        .body("application/sdp", body)
                });
                if req.method == Method::Invite {
                    self.far_ok_sent(now, hb, id);
                }
                self.propagate_direction(now, crate::core::legs::BridgeSide::Far(hb), offered);
            }
            Err(e) => {
                self.respond(now, id, 488, None, Some(tag), |b| {
                    b.header(HeaderName::Warning, e.warning())
                });
            }
        }
    }
}
