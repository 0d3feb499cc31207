//! Blind transfer of a forwarded call (RFC 3515 REFER, the flow of RFC 5589
//! §6): the far side REFERs us to a new target; the B2BUA places a new far
//! leg there on the same relay side (the caller's media never moves), and
//! once it answers bridges the caller to it and releases the transferor
//! with a BYE. The transferor learns how it went by NOTIFY with a
//! `message/sipfrag` body (RFC 3515 §2.4.4–2.4.5): `100 Trying` at once,
//! then the new leg's final status. A failed transfer leaves the caller
//! with the transferor, or ends the call (`transfer_failed`) when the
//! transferor already hung up.
//!
//! The new leg goes through the far leg's trunk when it had one (the
//! carrier routes the number); a far leg reached directly sends it to the
//! Refer-To's own host. Attended transfer (Refer-To with `Replaces`) is
//! refused with 501.

use super::forward::{OutState, OutTarget};
use super::*;
use crate::sip::headers_typed::NameAddr;

impl Core {
    /// A REFER inside the far leg `hb`'s dialog.
    pub(super) fn on_refer(&mut self, now: Instant, id: u64, hb: u64, tag: &str, req: &Request) {
        let Some(refer_to) = req
            .headers
            .get(&HeaderName::ReferTo)
            .and_then(|v| NameAddr::parse(v).ok())
        else {
            self.metrics.reject("malformed");
            return self.respond(
                now,
                id,
                400,
                Some("Bad Request (missing or malformed Refer-To)"),
                Some(tag),
                |b| b,
            );
        };
        if refer_to.uri.as_str().contains('?') {
            return self.respond(
                now,
                id,
                501,
                Some("Not Implemented (attended transfer)"),
                Some(tag),
                |b| b,
            );
        }
        let Some(o) = self.out_legs.get(&hb) else {
            return self.respond(now, id, 481, None, Some(tag), |b| b);
        };
        let pending = o
            .partner
            .and_then(|h| self.calls.get(&h))
            .map(|c| c.transfer.is_some());
        let (Some(h), Some(false), OutState::Confirmed) = (o.partner, pending, o.state) else {
            // No call to move, a transfer already running, or not yet up.
            return self.respond(now, id, 491, None, Some(tag), |b| b);
        };
        let codec = o.negotiated.as_ref().map(|n| n.codec);
        let (Some(codec), Some(local)) = (codec, o.local_media) else {
            return self.respond(now, id, 491, None, Some(tag), |b| b);
        };
        // Through the far leg's trunk (the carrier routes the new number);
        // a far leg reached directly sends the new leg to the Refer-To's
        // own host when it is an IP address.
        let mut peer = o.target.peer;
        if !o.target.via_trunk
            && let Some(ip) = refer_to.uri.host.as_ref().and_then(|h| h.ip())
        {
            peer.remote = SocketAddr::new(ip, refer_to.uri.port_or_default());
            peer.conn = None;
        }
        let target = OutTarget {
            uri: refer_to.uri,
            peer,
            credentials: o.target.credentials.clone(),
            via_trunk: o.target.via_trunk,
        };
        let user = uri_user(&o.from);
        let (max_forwards, media_leg, contact) = (o.max_forwards, o.media_leg, o.contact.clone());
        self.respond(now, id, 202, None, Some(tag), |b| {
            b.header(HeaderName::Contact, contact)
        });
        self.notify_refer(now, hb, 100, "Trying", false);

        // The new far leg offers the bridged codec on the transferor's relay
        // side: the caller's stream is unchanged.
        let hc = self.new_id();
        let mut leg = self.new_out_leg(h, target, &user, max_forwards, vec![codec], media_leg);
        leg.transfer_of = Some(hb);
        self.out_legs.insert(hc, leg);
        if let Some(c) = self.calls.get_mut(&h) {
            c.transfer = Some(hc);
        }
        tracing::info!(call = h, "blind transfer by the far side");
        self.place_far_leg(now, hc, local);
    }

    /// NOTIFY in the transferor's dialog with the transfer's progress.
    fn notify_refer(&mut self, now: Instant, hb: u64, status: u16, reason: &str, done: bool) {
        let Some((peer, contact)) = self
            .out_legs
            .get(&hb)
            .and_then(|o| Some((o.dialog.as_ref()?.peer, o.contact.clone())))
        else {
            return;
        };
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let Some(d) = self.out_legs.get_mut(&hb).and_then(|o| o.dialog.as_mut()) else {
            return;
        };
        let state = if done {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let b = d
            .request(Method::Notify, &via, &server)
            .header(HeaderName::Event, "refer")
            .header(HeaderName::SubscriptionState, state)
            .header(HeaderName::Contact, contact)
            .body(
                "message/sipfrag;version=2.0",
                Bytes::from(format!("SIP/2.0 {status} {reason}\r\n")),
            );
        let bytes = Bytes::from(b.encode());
        self.start_client_request(now, peer, branch, bytes, txns::ClientPurpose::Notify);
    }

    /// The transfer target answered (already ACKed and on the relay side):
    /// it replaces the transferor.
    pub(super) fn transfer_completed(&mut self, now: Instant, h: u64, hc: u64, hb: u64) {
        self.notify_refer(now, hb, 200, "OK", true);
        if self.out_legs.contains_key(&hb) {
            self.bye_out(now, hb);
            self.remove_out(hb);
        }
        if let Some(o) = self.out_legs.get_mut(&hc) {
            o.transfer_of = None;
        }
        if let Some(c) = self.calls.get_mut(&h) {
            c.bridge = Some(hc);
            c.transfer = None;
        }
        tracing::info!(call = h, "transfer completed");
    }

    /// The transfer target failed with `status`: the transferor hears it;
    /// the caller stays with the transferor, or, if it already left, the
    /// call ends.
    pub(super) fn transfer_outcome(
        &mut self,
        now: Instant,
        partner: Option<u64>,
        hb: u64,
        status: u16,
        reason: &str,
    ) {
        tracing::info!(status, "transfer target failed");
        self.notify_refer(now, hb, status, reason, true);
        let Some(h) = partner else {
            return;
        };
        let orphaned = match self.calls.get_mut(&h) {
            Some(c) => {
                c.transfer = None;
                c.bridge.is_none()
            }
            None => false,
        };
        if orphaned {
            self.hangup(now, h, "transfer_failed");
        }
    }
}
