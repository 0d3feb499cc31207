//! Transfers the AI asks for (its `transfer` event, our addition to both
//! stream dialects). The caller stays with the AI while the B2BUA places a
//! far leg to the target, through the number's forwarding trunk (or the
//! trunk the call came in on) or to a `sip:` URI's host. When the target
//! answers, the caller's media moves from the stream leg to a relay with
//! the new leg: a re-INVITE gives the caller the relay's port, and the AI
//! gets `transferResult` `answered` followed by `stop`. When the target
//! fails, the AI gets `transferResult` with why (`busy`, `no_answer`...)
//! and keeps the caller.
//!
//! When the caller's trunk prefers it (`transfer = "refer"`), the carrier
//! does the transfer instead: a REFER in the caller's dialog (RFC 3515),
//! whose NOTIFYs (`message/sipfrag`) tell the AI how it goes; on success
//! the gateway hangs up its side (cause `transferred`) and holds no media
//! for the call any more.

use super::negotiation::{leg_media, local_offer};
use super::*;
use crate::core::legs::BridgeSide;
use crate::core::legs::CallState;
use crate::sip::sdp::LocalMedia;
use domain::model::{Number, RouteKind};
use media_userspace::aistream::TransferResult;
use media_userspace::control::LegMedia;

impl Core {
    /// Tells the AI of stream leg `leg` how its transfer went. A
    /// click-to-call has no AI to keep the callee: a transfer that did not
    /// connect ends it (cause `forward_<status>`).
    fn ai_result(&mut self, now: Instant, leg: LegId, status: &str, sip_status: u16) {
        // The call whose own leg is the stream leg (a relay side is no
        // call's: its AI is gone already).
        let h = CallHandle::of_leg(leg);
        if status != "answered" && self.calls.get(&h).is_some_and(|c| c.click_to_call) {
            tracing::info!(
                call = h.get(),
                status,
                "click-to-call party not reached; ending the call"
            );
            return self.hangup(now, h, &format!("forward_{status}"));
        }
        self.out
            .push_back(Output::Media(MediaCommand::TransferResult {
                leg,
                result: TransferResult {
                    status: status.to_string(),
                    sip_status: sip_status.to_string(),
                },
            }));
    }

    pub(super) fn ai_result_unavailable(&mut self, now: Instant, h: Option<CallHandle>) {
        if let Some(h) = h {
            self.ai_result(now, h.own_leg(), "unavailable", 0);
        }
    }

    /// The AI of stream call `h` (or REST, or a click-to-call's answer)
    /// asks to transfer the caller to `to`, ringing it for `ring` (default:
    /// `[forward] ring_timeout_secs`).
    pub(super) fn on_ai_transfer(
        &mut self,
        now: Instant,
        h: CallHandle,
        to: String,
        ring: Option<Duration>,
    ) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let ready = call.state != CallState::AwaitingMedia
            && call.bridge.is_none()
            && call.transfer.is_none()
            && call.refer_until.is_none()
            && call.media_leg == h.own_leg();
        let Some(n) = call.negotiated.clone().filter(|_| ready) else {
            return self.ai_result(now, h.own_leg(), "refused", 0);
        };
        let routing = self.routing.clone();
        let refer = call
            .trunk
            .as_deref()
            .and_then(|t| routing.trunk(t))
            .filter(|t| t.trunk.transfer.as_deref() == Some("refer"));
        if let Some(t) = refer {
            let refer_to = if to.starts_with("sip:") {
                to
            } else {
                let host = t
                    .trunk
                    .outbound_address
                    .clone()
                    .unwrap_or_else(|| call.dialog.peer.remote.ip().to_string());
                format!("sip:{to}@{}", host.trim_start_matches("sip:"))
            };
            return self.refer_caller(now, h, &refer_to);
        }
        // A number goes through the number's forwarding trunk, else back
        // out through the trunk the call came in on; a sip: URI through the
        // forwarding trunk if any, else to its own host.
        let is_uri = to.starts_with("sip:");
        let trunk_name = if is_uri {
            call.route_trunk.clone()
        } else {
            call.route_trunk.clone().or_else(|| call.trunk.clone())
        };
        let target = if is_uri {
            Some(to.clone())
        } else {
            trunk_name
                .as_deref()
                .and_then(|t| routing.trunk(t))
                .and_then(|t| t.trunk.outbound_address.clone())
                .map(|addr| format!("sip:{to}@{}", addr.trim_start_matches("sip:")))
        };
        let resolved = target.and_then(|target| {
            let number = Number {
                pattern: String::new(),
                account_id: String::new(),
                route: RouteKind::Forward,
                target: Some(target),
                dialect: None,
                params: None,
                trunk: trunk_name,
                max_calls: None,
                fallback: None,
                voice_webhook: None,
                sms_webhook: None,
                status_webhook: None,
                webhook_format: Default::default(),
                media_security: Default::default(),
            };
            self.resolve_forward(now, &number)
                .map_err(|why| tracing::info!(why, "AI transfer target unavailable"))
                .ok()
        });
        let Some(target) = resolved else {
            return self.ai_result(now, h.own_leg(), "unavailable", 0);
        };
        // The party sees the caller, or on a call we placed, our number.
        let caller = self.calls.get(&h).map_or_else(
            || "anonymous".into(),
            |c| {
                uri_user(if c.outbound {
                    &c.dialog.local_uri
                } else {
                    &c.dialog.remote_uri
                })
            },
        );
        let relay_a: LegId = self.new_id();
        let hb: OutLegHandle = self.new_id();
        let mut leg = self.new_out_leg(h, target, &caller, 69, vec![n.codec], hb.own_leg());
        leg.rebridge = Some(relay_a);
        leg.ring_timeout = ring;
        self.out_legs.insert(hb, leg);
        if let Some(c) = self.calls.get_mut(&h) {
            c.transfer = Some(hb);
        }
        tracing::info!(call = h.get(), "AI asked for a transfer");
        let a = leg_media(&n);
        let b = LegMedia { remote: None, ..a };
        self.out.push_back(Output::Media(MediaCommand::OpenRelay {
            legs: [relay_a, hb.own_leg()],
            media: [a, b],
            timeout: self.cfg.media_timeout,
        }));
    }

    /// REFER to the caller's carrier (in the caller's dialog).
    fn refer_caller(&mut self, now: Instant, h: CallHandle, refer_to: &str) {
        let Some((peer, user)) = self
            .calls
            .get(&h)
            .map(|c| (c.dialog.peer, c.callee_user.clone()))
        else {
            return;
        };
        let contact = self.contact_for(&peer, user.as_deref(), self.sips_dialog(h));
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let wait = self.cfg.forward.ring_timeout + Duration::from_secs(5);
        let Some(c) = self.calls.get_mut(&h) else {
            return;
        };
        let referred_by = contact.clone();
        let b = c
            .dialog
            .request(Method::Refer, &via, &server)
            .header(HeaderName::ReferTo, format!("<{refer_to}>"))
            .header(HeaderName::ReferredBy, referred_by)
            .header(HeaderName::Contact, contact);
        c.refer_until = Some(now + wait);
        let bytes = Bytes::from(b.encode());
        tracing::info!(call = h.get(), "AI transfer by REFER to the carrier");
        self.start_client_request(now, peer, branch, bytes, txns::ClientPurpose::Refer(h));
        self.schedule_call(h);
    }

    /// The carrier's final answer to our REFER: 202 means NOTIFYs follow.
    pub(super) fn on_refer_response(&mut self, now: Instant, h: CallHandle, status: u16) {
        if status < 300 {
            return;
        }
        let Some(c) = self.calls.get_mut(&h) else {
            return;
        };
        if c.refer_until.take().is_none() {
            return;
        }
        let leg = c.media_leg;
        self.ai_result(now, leg, "refused", status);
    }

    /// A NOTIFY in the caller's dialog: the progress of our REFER.
    pub(super) fn on_refer_notify(
        &mut self,
        now: Instant,
        id: TxnId,
        h: CallHandle,
        tag: &str,
        req: &Request,
    ) {
        let pending = self.calls.get(&h).is_some_and(|c| c.refer_until.is_some());
        let is_refer = req.headers.get(&HeaderName::Event).is_some_and(|e| {
            e.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("refer")
        });
        if !pending || !is_refer {
            return self.respond(now, id, 481, None, Some(tag), |b| b);
        }
        self.respond(now, id, 200, None, Some(tag), |b| b);
        // message/sipfrag (RFC 3420): the status line of the new call.
        let status = std::str::from_utf8(&req.body)
            .ok()
            .and_then(|b| b.lines().next())
            .and_then(|l| l.strip_prefix("SIP/2.0 "))
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse::<u16>().ok());
        let Some(status) = status.filter(|s| *s >= 200) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&h) else {
            return;
        };
        c.refer_until = None;
        let leg = c.media_leg;
        if status < 300 {
            self.ai_result(now, leg, "answered", status);
            // The carrier connected the caller elsewhere: our side ends.
            return self.hangup(now, h, "transferred");
        }
        self.ai_result(now, leg, forward::failure_outcome(status).0, status);
    }

    /// The carrier never said how the REFER ended.
    pub(super) fn refer_timed_out(&mut self, now: Instant, h: CallHandle) {
        if let Some(leg) = self.calls.get(&h).map(|c| c.media_leg) {
            self.ai_result(now, leg, "no_answer", 0);
        }
    }

    /// The relay for an AI transfer is bound: the far INVITE leaves, the
    /// caller stays with the AI.
    pub(super) fn rebridge_relay_opened(
        &mut self,
        now: Instant,
        hb: OutLegHandle,
        locals: [SocketAddr; 2],
    ) {
        if let Some(o) = self.out_legs.get_mut(&hb) {
            o.rebridge_local = Some(locals[0]);
        }
        self.place_far_leg(now, hb, locals[1]);
    }

    /// The target answered (ACKed, its relay side pointed at it): the
    /// caller moves from the AI to the relay.
    pub(super) fn rebridge_completed(&mut self, now: Instant, h: CallHandle, hb: OutLegHandle) {
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        let (Some(relay_a), Some(local)) = (o.rebridge.take(), o.rebridge_local) else {
            return;
        };
        self.ai_result(now, h.own_leg(), "answered", 200);
        self.out
            .push_back(Output::Media(MediaCommand::Close { leg: h.own_leg() }));
        let advertised = self.cfg.advertised_ip;
        let Some(c) = self.calls.get_mut(&h) else {
            return;
        };
        c.media_leg = relay_a;
        c.local_media = Some(local);
        c.bridge = Some(hb);
        c.transfer = None;
        let Some(codec) = c.negotiated.as_ref().map(|n| n.codec) else {
            return;
        };
        let version = c.local_sdp.as_ref().map_or(1, |s| s.session_version) + 1;
        if let Some(s) = c.local_sdp.as_mut() {
            s.session_version = version;
        }
        let lm = LocalMedia {
            addr: advertised,
            port: local.port(),
            session_id: c.sdp_session_id(),
            session_version: version,
            keying: c.keying.clone(),
        };
        let offer = local_offer(&[codec], &lm);
        if let Some(c) = self.calls.get_mut(&h) {
            // Later re-INVITEs and UPDATEs from the caller are answered on
            // the relay's port with the bridged codec.
            c.local_sdp = Some(offer.clone());
            c.codecs = vec![codec];
        }
        tracing::info!(
            call = h.get(),
            "AI transfer answered; caller moved to the relay"
        );
        self.send_vital_reinvite(now, BridgeSide::Caller(h), offer.encode());
    }

    /// The target failed: the AI hears why and keeps the caller; the
    /// transfer's relay is closed.
    pub(super) fn rebridge_failed(
        &mut self,
        now: Instant,
        partner: Option<CallHandle>,
        relay_a: LegId,
        status: &str,
        sip_status: u16,
    ) {
        self.out
            .push_back(Output::Media(MediaCommand::Close { leg: relay_a }));
        let Some(h) = partner else {
            return;
        };
        if let Some(c) = self.calls.get_mut(&h) {
            c.transfer = None;
        }
        tracing::info!(
            call = h.get(),
            status,
            "AI transfer failed; the AI keeps the caller"
        );
        self.ai_result(now, h.own_leg(), status, sip_status);
    }
}
