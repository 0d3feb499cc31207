//! Placing the far leg: the relay pair opened for the caller and the
//! far side, the far leg's identifiers, and its INVITE.

use super::*;
use crate::core::legs::CallState;
use crate::core::negotiation::{leg_media, local_offer};
use crate::core::*;
use crate::sip::sdes::{SrtpKey, SrtpSuite};
use crate::sip::sdp::{self};
use crate::sip::uri::Scheme;

impl Core {
    /// Binds the relay for a forwarded call; the far INVITE leaves once
    /// its ports are known ([`MediaEvent::RelayOpened`]).
    pub(in crate::core) fn open_forward(
        &mut self,
        h: CallHandle,
        target: OutTarget,
        caller: &str,
        max_forwards: u32,
    ) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let (offered, _) = call
            .offer
            .as_ref()
            .map(|o| sdp::offered_codecs(o, &call.codecs))
            .unwrap_or_default();
        let Some(a) = call.negotiated.as_ref().map(leg_media) else {
            return;
        };
        let hb: OutLegHandle = self.new_id();
        let leg = self.new_out_leg(h, target, caller, max_forwards, offered, hb.own_leg());
        self.out_legs.insert(hb, leg);
        if let Some(c) = self.calls.get_mut(&h) {
            c.bridge = Some(hb);
        }
        // The far side's stream is unknown until it answers: nothing is
        // sent toward it before then (remote None). Until then its side
        // takes the caller's keys: SRTP from a stranger on the far port
        // cannot authenticate, so nothing reaches the caller unverified.
        let b = LegMedia { remote: None, ..a };
        self.out.push_back(Output::Media(MediaCommand::OpenRelay {
            legs: [h.own_leg(), hb.own_leg()],
            media: [a, b],
            timeout: self.cfg.media_timeout,
        }));
    }

    /// A far leg in state Binding: identifiers and headers of its INVITE.
    pub(in crate::core) fn new_out_leg(
        &mut self,
        partner: CallHandle,
        target: OutTarget,
        caller: &str,
        max_forwards: u32,
        offered: Vec<Codec>,
        media_leg: u64,
    ) -> OutLeg {
        let local_tag = self.new_tag();
        let call_id = format!(
            "{}@{}",
            self.random_hex(12),
            self.local_host(target.peer.local)
        );
        let user = if caller
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_.".contains(c))
        {
            caller.to_string()
        } else {
            "anonymous".into()
        };
        let host = self.local_host(target.peer.local);
        let from = format!("<sip:{user}@{host}>;tag={local_tag}");
        let to = format!("<{}>", target.uri);
        let contact =
            self.contact_for(&target.peer, Some(&user), target.uri.scheme == Scheme::Sips);
        let mut keying = self.new_keying(target.media_security, target.keys_allowed());
        keying.over_tls = target.peer.transport == TransportKind::Tls;
        OutLeg {
            partner: Some(partner),
            state: OutState::Binding,
            target,
            call_id,
            local_tag,
            from,
            to,
            contact,
            max_forwards,
            cseq: 1,
            via: String::new(),
            invite_txn: None,
            offer: None,
            offered,
            auth_tried: false,
            redirects: 0,
            referred: false,
            provisional: false,
            cancel_due: false,
            ring_deadline: None,
            ring_timeout: None,
            dialog: None,
            ack: None,
            local_media: None,
            negotiated: None,
            ringing_sent: false,
            media_leg,
            transfer_of: None,
            reinvite_out: None,
            reinvite_ack: None,
            sdp_version: 1,
            ok: None,
            rebridge: None,
            rebridge_local: None,
            replaces_caller: false,
            keying,
        }
    }

    /// Both relay ports are bound: send the far INVITE.
    pub(in crate::core) fn on_relay_opened(
        &mut self,
        now: Instant,
        legs: [u64; 2],
        locals: [SocketAddr; 2],
    ) {
        let [a, b] = legs;
        let (h, hb) = (CallHandle::of_leg(a), OutLegHandle::of_leg(b));
        if self.restored_relay_opened(h) {
            return;
        }
        if let Some(o) = self.out_legs.get(&hb)
            && o.rebridge == Some(a)
        {
            if o.partner.is_some_and(|p| self.calls.contains_key(&p)) {
                return self.rebridge_relay_opened(now, hb, locals);
            }
            self.out_legs.remove(&hb);
            return self
                .out
                .push_back(Output::Media(MediaCommand::Close { leg: a }));
        }
        let live = self.calls.contains_key(&h)
            && self
                .out_legs
                .get(&hb)
                .is_some_and(|o| o.state == OutState::Binding);
        if !live {
            self.out_legs.remove(&hb);
            self.out
                .push_back(Output::Media(MediaCommand::Close { leg: a }));
            return;
        }
        if let Some(c) = self.calls.get_mut(&h) {
            c.media_open = true;
            c.local_media = Some(locals[0]);
        }
        self.place_far_leg(now, hb, locals[1]);
    }

    /// Sends far leg `hb`'s INVITE, offering its codecs on relay address
    /// `local`, and starts its ring timeout.
    pub(in crate::core) fn place_far_leg(
        &mut self,
        now: Instant,
        hb: OutLegHandle,
        local: SocketAddr,
    ) {
        let default_ring = self.cfg.forward.ring_timeout;
        let shared = self.caller_key_to_share(hb);
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        o.keying.shared = shared;
        let keying = o.keying.clone();
        let lm = self.local_media(local.port(), hb.get(), 1, &keying);
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        let ring = o.ring_timeout.unwrap_or(default_ring);
        o.local_media = Some(local);
        o.offer = Some(local_offer(&o.offered, &lm).encode());
        o.ring_deadline = Some(now + ring);
        self.send_out_invite(now, hb, None);
        self.schedule_out(hb);
    }

    /// The key a far leg may declare as ours so that the caller's SRTP
    /// passes to it untouched (and the pair may run in the kernel): the
    /// key the caller sends under, while the caller is not answered yet
    /// (its answer can still declare the far side's key back) and both
    /// legs may key.
    fn caller_key_to_share(&self, hb: OutLegHandle) -> Option<(SrtpSuite, SrtpKey)> {
        let o = self.out_legs.get(&hb)?;
        if !o.keying.srtp_usable() || o.rebridge.is_some() || o.transfer_of.is_some() {
            return None;
        }
        let call = self.calls.get(&o.partner?)?;
        if call.state != CallState::AwaitingMedia
            || call.bridge != Some(hb)
            || call.keying.over_tls != o.keying.over_tls
        {
            return None;
        }
        let s = call.negotiated.as_ref()?.srtp?;
        Some((s.suite, s.remote))
    }

    pub(in crate::core) fn schedule_out(&mut self, hb: OutLegHandle) {
        let at = self.out_legs.get(&hb).and_then(|o| {
            [o.ring_deadline, o.ok.as_ref().map(|k| k.deadline())]
                .into_iter()
                .flatten()
                .min()
        });
        if let Some(at) = at {
            self.schedule(at, TimerRef::Out(hb));
        }
    }

    /// Sends (or, after a challenge, re-sends with credentials) the far
    /// INVITE through a new client transaction.
    pub(in crate::core) fn send_out_invite(
        &mut self,
        now: Instant,
        hb: OutLegHandle,
        auth: Option<(HeaderName, String)>,
    ) {
        let Some(peer) = self.out_legs.get(&hb).map(|o| o.target.peer) else {
            return;
        };
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        o.via = via.clone();
        let mut b = MessageBuilder::request(&Method::Invite, &o.target.uri)
            .header(HeaderName::Via, via)
            .header(HeaderName::MaxForwards, o.max_forwards.to_string())
            .header(HeaderName::From, o.from.as_str())
            .header(HeaderName::To, o.to.as_str())
            .header(HeaderName::CallId, o.call_id.as_str())
            .header(HeaderName::CSeq, format!("{} INVITE", o.cseq))
            .header(HeaderName::Contact, o.contact.as_str())
            .header(HeaderName::Allow, ALLOW_FAR)
            .header(HeaderName::UserAgent, server);
        if let Some((name, value)) = auth {
            b = b.header(name, value);
        }
        if let Some(sdp) = &o.offer {
            b = b.body("application/sdp", Bytes::from(sdp.clone().into_bytes()));
        }
        let bytes = Bytes::from(b.encode());
        o.state = OutState::Calling;
        let id = self.start_client_txn(
            now,
            TxnKind::Invite,
            peer,
            branch,
            bytes,
            txns::ClientPurpose::Invite(hb),
        );
        if let Some(o) = self.out_legs.get_mut(&hb) {
            o.invite_txn = Some(id);
        }
    }

    /// Builds a request that repeats the INVITE's Via and CSeq number:
    /// CANCEL (§9.1) or the ACK of a non-2xx final (§17.1.1.3).
    pub(super) fn invite_sibling(o: &OutLeg, method: Method, to: &str, server: &str) -> Bytes {
        let b = MessageBuilder::request(&method, &o.target.uri)
            .header(HeaderName::Via, o.via.as_str())
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, o.from.as_str())
            .header(HeaderName::To, to)
            .header(HeaderName::CallId, o.call_id.as_str())
            .header(HeaderName::CSeq, format!("{} {method}", o.cseq))
            .header(HeaderName::UserAgent, server);
        Bytes::from(b.encode())
    }
}
