//! Session changes across the bridge of a forwarded call. A re-INVITE or
//! UPDATE that changes the media direction on one leg (hold and unhold,
//! RFC 3264 §8.4) is answered on that leg at once and offered on to the
//! other leg in a re-INVITE of ours, so the other party learns it is held
//! (and stops sending, or plays its own music on hold) and the relay sends
//! only where the answers allow. If the other leg refuses (491, 488...),
//! the change stays local to the leg that asked.

use super::negotiation::{leg_media, local_offer, negotiated_from_answer};
use super::*;
use crate::sip::sdp::{Direction, LocalMedia};

/// What a re-INVITE toward one side needs, read from the call or far leg.
struct SideMedia {
    codec: Codec,
    local_port: u16,
    /// Our current direction toward that side.
    ours: Direction,
    media_leg: u64,
    keying: crate::sip::sdes::LegKeying,
}

impl Core {
    fn side_media(&self, side: BridgeSide) -> Option<SideMedia> {
        match side {
            BridgeSide::Caller(h) => {
                let c = self.calls.get(&h)?;
                let n = c.negotiated.as_ref()?;
                Some(SideMedia {
                    codec: n.codec,
                    local_port: c.local_media?.port(),
                    ours: n.direction,
                    media_leg: c.media_leg,
                    keying: c.keying.clone(),
                })
            }
            BridgeSide::Far(hb) => {
                let o = self.out_legs.get(&hb)?;
                let n = o.negotiated.as_ref()?;
                o.dialog.as_ref()?;
                Some(SideMedia {
                    codec: n.codec,
                    local_port: o.local_media?.port(),
                    ours: n.direction,
                    media_leg: o.media_leg,
                    keying: o.keying.clone(),
                })
            }
        }
    }

    /// One leg's peer now offers `offered` (its own direction): offer the
    /// same toward the other leg of the bridge, unless nothing changes
    /// there or a re-INVITE of ours is already in flight on it.
    pub(super) fn propagate_direction(
        &mut self,
        now: Instant,
        from: BridgeSide,
        offered: Direction,
    ) {
        let to = match from {
            BridgeSide::Caller(h) => match self.calls.get(&h).and_then(|c| c.bridge) {
                Some(hb) => BridgeSide::Far(hb),
                None => return,
            },
            BridgeSide::Far(hb) => match self.out_legs.get(&hb).and_then(|o| o.partner) {
                Some(h) => BridgeSide::Caller(h),
                None => return,
            },
        };
        let Some(m) = self.side_media(to) else {
            return;
        };
        if m.ours == offered {
            return;
        }
        let ready =
            match to {
                BridgeSide::Caller(h) => self.calls.get(&h).is_some_and(|c| {
                    c.state == legs::CallState::Confirmed && c.reinvite_out.is_none()
                }),
                BridgeSide::Far(hb) => self.out_legs.get(&hb).is_some_and(|o| {
                    o.state == legs::OutState::Confirmed && o.reinvite_out.is_none()
                }),
            };
        if !ready {
            return;
        }
        let version = match to {
            BridgeSide::Caller(h) => self.calls.get_mut(&h).map(|c| {
                let v = c.local_sdp.as_ref().map_or(1, |s| s.session_version) + 1;
                if let Some(s) = c.local_sdp.as_mut() {
                    s.session_version = v;
                }
                v
            }),
            BridgeSide::Far(hb) => self.out_legs.get_mut(&hb).map(|o| {
                o.sdp_version += 1;
                o.sdp_version
            }),
        }
        .unwrap_or(2);
        let session_id = match to {
            BridgeSide::Caller(h) => self.calls.get(&h).map_or(h.get(), Call::sdp_session_id),
            BridgeSide::Far(hb) => self
                .out_legs
                .get(&hb)
                .map_or(hb.get(), |o| o.sdp_session_id(hb)),
        };
        let lm = LocalMedia {
            addr: self.cfg.advertised_ip,
            port: m.local_port,
            session_id,
            session_version: version,
            keying: m.keying.clone(),
        };
        let mut offer = local_offer(&[m.codec], &lm);
        if let Some(md) = offer.media.first_mut() {
            md.direction = Some(offered);
        }
        self.send_reinvite(now, to, offer.encode());
    }

    fn dialog_mut(&mut self, side: BridgeSide) -> Option<&mut dialog::Dialog> {
        match side {
            BridgeSide::Caller(h) => self.calls.get_mut(&h).map(|c| &mut c.dialog),
            BridgeSide::Far(hb) => self.out_legs.get_mut(&hb)?.dialog.as_mut(),
        }
    }

    pub(super) fn send_reinvite(&mut self, now: Instant, to: BridgeSide, sdp: String) {
        self.send_reinvite_for(now, to, sdp, false);
    }

    /// A re-INVITE whose failure ends the call (see [`PendingReinvite`]).
    pub(super) fn send_vital_reinvite(&mut self, now: Instant, to: BridgeSide, sdp: String) {
        self.send_reinvite_for(now, to, sdp, true);
    }

    fn send_reinvite_for(&mut self, now: Instant, to: BridgeSide, sdp: String, must_succeed: bool) {
        let Some(peer) = self.dialog_mut(to).map(|d| d.peer) else {
            return;
        };
        let contact = match to {
            BridgeSide::Caller(h) => {
                let user = self.calls.get(&h).and_then(|c| c.callee_user.clone());
                self.contact_for(&peer, user.as_deref(), self.sips_dialog(h))
            }
            BridgeSide::Far(hb) => self
                .out_legs
                .get(&hb)
                .map(|o| o.contact.clone())
                .unwrap_or_default(),
        };
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let Some(d) = self.dialog_mut(to) else {
            return;
        };
        let b = d
            .request(Method::Invite, &via, &server)
            .header(HeaderName::Contact, contact)
            .header(HeaderName::Allow, ALLOW)
            .body("application/sdp", Bytes::from(sdp.clone().into_bytes()));
        let pending = PendingReinvite {
            cseq: d.local_cseq,
            via,
            must_succeed,
            offer: sdp,
        };
        let bytes = Bytes::from(b.encode());
        match to {
            BridgeSide::Caller(h) => {
                if let Some(c) = self.calls.get_mut(&h) {
                    c.reinvite_out = Some(pending);
                }
            }
            BridgeSide::Far(hb) => {
                if let Some(o) = self.out_legs.get_mut(&hb) {
                    o.reinvite_out = Some(pending);
                }
            }
        }
        self.start_client_txn(
            now,
            TxnKind::Invite,
            peer,
            branch,
            bytes,
            txns::ClientPurpose::Reinvite(to),
        );
    }

    /// A response to our re-INVITE toward `to`.
    /// Our re-INVITE toward `to` got no response at all (Timer B).
    pub(super) fn on_reinvite_timeout(&mut self, now: Instant, to: BridgeSide) {
        let pending = match to {
            BridgeSide::Caller(h) => self.calls.get_mut(&h).and_then(|c| c.reinvite_out.take()),
            BridgeSide::Far(hb) => self
                .out_legs
                .get_mut(&hb)
                .and_then(|o| o.reinvite_out.take()),
        };
        if let (Some(p), BridgeSide::Caller(h)) = (pending, to)
            && p.must_succeed
        {
            self.hangup(now, h, "transfer_failed");
        }
    }

    pub(super) fn on_reinvite_response(
        &mut self,
        now: Instant,
        to: BridgeSide,
        txn: TxnId,
        resp: Response,
    ) {
        if resp.status < 200 {
            return;
        }
        let pending = match to {
            BridgeSide::Caller(h) => self.calls.get(&h).and_then(|c| c.reinvite_out.clone()),
            BridgeSide::Far(hb) => self.out_legs.get(&hb).and_then(|o| o.reinvite_out.clone()),
        };
        let server = self.cfg.server_name.clone();
        let Some(p) = pending else {
            // A retransmitted 2xx: our ACK was lost (§13.2.2.4).
            let ack = match to {
                BridgeSide::Caller(h) => self.calls.get(&h).and_then(|c| c.reinvite_ack.clone()),
                BridgeSide::Far(hb) => self.out_legs.get(&hb).and_then(|o| o.reinvite_ack.clone()),
            };
            if let (true, Some(ack), Some(peer)) =
                (resp.status < 300, ack, self.dialog_mut(to).map(|d| d.peer))
            {
                self.transmit(peer, ack);
            }
            return;
        };
        let Some(peer) = self.dialog_mut(to).map(|d| d.peer) else {
            return;
        };
        let via = if resp.status < 300 {
            self.our_via(&peer).0
        } else {
            p.via.clone()
        };
        let Some(d) = self.dialog_mut(to) else {
            return;
        };
        let ack = Bytes::from(d.ack(p.cseq, &via, &server).encode());
        if resp.status >= 300 {
            if let Some(e) = self.txns.client.get_mut(&txn) {
                e.txn.set_ack(ack.clone());
            }
            tracing::info!(
                status = resp.status,
                "re-INVITE across the bridge refused; the change stays local"
            );
        }
        self.transmit(peer, ack.clone());
        let kept = (resp.status < 300).then_some(ack);
        match to {
            BridgeSide::Caller(h) => {
                if let Some(c) = self.calls.get_mut(&h) {
                    c.reinvite_out = None;
                    c.reinvite_ack = kept;
                }
            }
            BridgeSide::Far(hb) => {
                if let Some(o) = self.out_legs.get_mut(&hb) {
                    o.reinvite_out = None;
                    o.reinvite_ack = kept;
                }
            }
        }
        if resp.status >= 300 {
            if p.must_succeed
                && let BridgeSide::Caller(h) = to
            {
                self.hangup(now, h, "transfer_failed");
            }
            return;
        }
        let Some(m) = self.side_media(to) else {
            return;
        };
        let ours = parse_sdp(p.offer.as_bytes()).ok();
        let Some(n) = parse_sdp(&resp.body)
            .ok()
            .and_then(|a| negotiated_from_answer(&a, &[m.codec], ours.as_ref()?))
        else {
            tracing::info!("re-INVITE answer across the bridge had no usable SDP");
            return;
        };
        let media = leg_media(&n);
        match to {
            BridgeSide::Caller(h) => {
                if let Some(c) = self.calls.get_mut(&h) {
                    c.negotiated = Some(n);
                }
            }
            BridgeSide::Far(hb) => {
                if let Some(o) = self.out_legs.get_mut(&hb) {
                    o.negotiated = Some(n);
                }
            }
        }
        self.out.push_back(Output::Media(MediaCommand::Update {
            leg: m.media_leg,
            media,
        }));
    }
}
