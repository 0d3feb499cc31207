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

use super::*;
use crate::core::legs::{OutState, OutTarget};

/// A NOTIFY in `dialog` with a REFER's progress (RFC 3515 §2.4.4): the
/// new call's status line as `message/sipfrag`; `done` ends the implicit
/// subscription.
pub(super) fn refer_notify(
    dialog: &mut super::dialog::Dialog,
    via: &str,
    server: &str,
    contact: String,
    status: u16,
    reason: &str,
    done: bool,
) -> Bytes {
    let state = if done {
        "terminated;reason=noresource"
    } else {
        "active;expires=60"
    };
    let b = dialog
        .request(Method::Notify, via, server)
        .header(HeaderName::Event, "refer")
        .header(HeaderName::SubscriptionState, state)
        .header(HeaderName::Contact, contact)
        .body(
            "message/sipfrag;version=2.0",
            Bytes::from(format!("SIP/2.0 {status} {reason}\r\n")),
        );
    Bytes::from(b.encode())
}

impl Core {
    /// A REFER inside the far leg `hb`'s dialog.
    pub(super) fn on_refer(
        &mut self,
        now: Instant,
        id: TxnId,
        hb: OutLegHandle,
        tag: &str,
        req: &Request,
    ) {
        let Some(refer_to) = self.refer_target(now, id, tag, req) else {
            return;
        };
        if !self.out_legs.contains_key(&hb) {
            return self.respond(now, id, 481, None, Some(tag), |b| b);
        }
        let Some(contact) = self.transferable(hb).map(|o| o.contact.clone()) else {
            // No call to move, a transfer already running, or not yet up.
            return self.respond(now, id, 491, None, Some(tag), |b| b);
        };
        self.respond(now, id, 202, None, Some(tag), |b| {
            b.header(HeaderName::Contact, contact)
        });
        if let Some(o) = self.out_legs.get_mut(&hb) {
            o.referred = true;
        }
        self.notify_refer(now, hb, 100, "Trying", false);
        tracing::info!(hb = hb.get(), "blind transfer by the far side");
        self.transfer_far_leg(now, hb, refer_to.uri, None);
    }

    /// The far leg `hb` if its call can be transferred now: answered, and
    /// no transfer running.
    fn transferable(&self, hb: OutLegHandle) -> Option<&crate::core::legs::OutLeg> {
        let o = self.out_legs.get(&hb)?;
        let call = self.calls.get(&o.partner?)?;
        (o.state == OutState::Confirmed
            && call.transfer.is_none()
            && o.negotiated.is_some()
            && o.local_media.is_some())
        .then_some(o)
    }

    /// Places a new far leg to `uri` on far leg `hb`'s relay side; once it
    /// answers it replaces `hb` (`transfer_completed`).
    fn transfer_far_leg(
        &mut self,
        now: Instant,
        hb: OutLegHandle,
        uri: crate::sip::Uri,
        ring: Option<Duration>,
    ) {
        let Some(o) = self.transferable(hb) else {
            return;
        };
        let (Some(h), Some(codec), Some(local)) = (
            o.partner,
            o.negotiated.as_ref().map(|n| n.codec),
            o.local_media,
        ) else {
            return;
        };
        // Through the far leg's trunk (the carrier routes the new number);
        // a far leg reached directly sends the new leg to the target's own
        // host when it is an IP address.
        let mut peer = o.target.peer;
        if !o.target.via_trunk
            && let Some(ip) = uri.host.as_ref().and_then(|h| h.ip())
        {
            peer.remote = SocketAddr::new(ip, uri.port_or_default());
            peer.conn = None;
        }
        let target = OutTarget {
            uri,
            peer,
            credentials: o.target.credentials.clone(),
            via_trunk: o.target.via_trunk,
            media_security: o.target.media_security,
            cleartext_keying: o.target.cleartext_keying,
        };
        let user = uri_user(&o.from);
        let (max_forwards, media_leg) = (o.max_forwards, o.media_leg);
        // The new far leg offers the bridged codec on the transferor's relay
        // side: the caller's stream is unchanged.
        let hc = self.new_id();
        let mut leg = self.new_out_leg(h, target, &user, max_forwards, vec![codec], media_leg);
        leg.transfer_of = Some(hb);
        leg.ring_timeout = ring;
        self.out_legs.insert(hc, leg);
        if let Some(c) = self.calls.get_mut(&h) {
            c.transfer = Some(hc);
        }
        self.place_far_leg(now, hc, local);
    }

    /// A transfer asked for over REST: the caller of forwarded call `h`
    /// goes to `to` (E.164, through the far leg's trunk, or a `sip:` URI);
    /// the old far side is released once the new one answers.
    pub(super) fn transfer_forwarded(
        &mut self,
        now: Instant,
        h: CallHandle,
        to: &str,
        ring: Option<Duration>,
    ) -> api::control::ControlOutcome {
        use api::control::ControlOutcome;
        let Some(hb) = self.calls.get(&h).and_then(|c| c.bridge) else {
            return ControlOutcome::Refused("the call is not bridged");
        };
        let Some(o) = self.transferable(hb) else {
            return ControlOutcome::Refused(
                "the call cannot be transferred now (not answered, or a transfer is running)",
            );
        };
        let text = if to.starts_with("sip:") {
            to.to_string()
        } else {
            let Some(host) = o.target.uri.host.as_ref() else {
                return ControlOutcome::Refused("the far leg's target has no host");
            };
            match o.target.uri.port {
                Some(p) => format!("sip:{to}@{host}:{p}"),
                None => format!("sip:{to}@{host}"),
            }
        };
        let Ok(uri) = crate::sip::Uri::parse(&text) else {
            return ControlOutcome::Refused("the target is not a SIP URI");
        };
        tracing::info!(call = h.get(), target = %uri, "transfer of a forwarded call over REST");
        self.transfer_far_leg(now, hb, uri, ring);
        ControlOutcome::Accepted
    }

    /// NOTIFY in the transferor's dialog with the transfer's progress.
    fn notify_refer(
        &mut self,
        now: Instant,
        hb: OutLegHandle,
        status: u16,
        reason: &str,
        done: bool,
    ) {
        // Only a far side that REFERred us has a subscription to notify.
        let Some((peer, contact)) = self
            .out_legs
            .get(&hb)
            .filter(|o| o.referred)
            .and_then(|o| Some((o.dialog.as_ref()?.peer, o.contact.clone())))
        else {
            return;
        };
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let Some(d) = self.out_legs.get_mut(&hb).and_then(|o| o.dialog.as_mut()) else {
            return;
        };
        let bytes = refer_notify(d, &via, &server, contact, status, reason, done);
        self.start_client_request(now, peer, branch, bytes, txns::ClientPurpose::Notify);
    }

    /// The transfer target answered (already ACKed and on the relay side):
    /// it replaces the transferor.
    pub(super) fn transfer_completed(
        &mut self,
        now: Instant,
        h: CallHandle,
        hc: OutLegHandle,
        hb: OutLegHandle,
    ) {
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
        tracing::info!(call = h.get(), "transfer completed");
    }

    /// The transfer target failed with `status`: the transferor hears it;
    /// the caller stays with the transferor, or, if it already left, the
    /// call ends.
    pub(super) fn transfer_outcome(
        &mut self,
        now: Instant,
        partner: Option<CallHandle>,
        hb: OutLegHandle,
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
