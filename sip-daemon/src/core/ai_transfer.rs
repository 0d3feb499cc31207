//! Transfers the AI asks for (its `transfer` event, our addition to both
//! stream dialects). The caller stays with the AI while the B2BUA places a
//! far leg to the target, through the number's forwarding trunk (or the
//! trunk the call came in on) or to a `sip:` URI's host. When the target
//! answers, the caller's media moves from the stream leg to a relay with
//! the new leg: a re-INVITE gives the caller the relay's port, and the AI
//! gets `transferResult` `answered` followed by `stop`. When the target
//! fails, the AI gets `transferResult` with why (`busy`, `no_answer`...)
//! and keeps the caller.

use super::call::{CallState, leg_media, local_offer};
use super::hold::BridgeSide;
use super::*;
use crate::sip::sdp::LocalMedia;
use api::store::{Number, RouteKind};
use media_userspace::aistream::TransferResult;
use media_userspace::control::LegMedia;

impl Core {
    /// Tells the AI of stream leg `leg` how its transfer went.
    fn ai_result(&mut self, leg: u64, status: &str, sip_status: u16) {
        self.out
            .push_back(Output::Media(MediaCommand::TransferResult {
                leg,
                result: TransferResult {
                    status: status.to_string(),
                    sip_status: sip_status.to_string(),
                },
            }));
    }

    pub(super) fn ai_result_unavailable(&mut self, h: Option<u64>) {
        if let Some(h) = h {
            self.ai_result(h, "unavailable", 0);
        }
    }

    /// The AI of stream call `h` asks to transfer the caller to `to`.
    pub(super) fn on_ai_transfer(&mut self, now: Instant, h: u64, to: String) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let ready = call.state != CallState::AwaitingMedia
            && call.bridge.is_none()
            && call.transfer.is_none()
            && call.media_leg == h;
        let Some(n) = call.negotiated.clone().filter(|_| ready) else {
            return self.ai_result(h, "refused", 0);
        };
        let routing = self.routing.clone();
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
            };
            self.resolve_forward(now, &number)
                .map_err(|why| tracing::info!(why, "AI transfer target unavailable"))
                .ok()
        });
        let Some(target) = resolved else {
            return self.ai_result(h, "unavailable", 0);
        };
        let caller = self
            .calls
            .get(&h)
            .and_then(|c| c.dialog.remote_uri.split("sip:").nth(1))
            .and_then(|r| r.split('@').next())
            .unwrap_or("anonymous")
            .to_string();
        let relay_a = self.new_id();
        let hb = self.new_id();
        let mut leg = self.new_out_leg(h, target, &caller, 69, vec![n.codec], hb);
        leg.rebridge = Some(relay_a);
        self.out_legs.insert(hb, leg);
        if let Some(c) = self.calls.get_mut(&h) {
            c.transfer = Some(hb);
        }
        tracing::info!(call = h, "AI asked for a transfer");
        let a = leg_media(&n);
        let b = LegMedia { remote: None, ..a };
        self.out.push_back(Output::Media(MediaCommand::OpenRelay {
            legs: [relay_a, hb],
            media: [a, b],
            timeout: self.cfg.media_timeout,
        }));
    }

    /// The relay for an AI transfer is bound: the far INVITE leaves, the
    /// caller stays with the AI.
    pub(super) fn rebridge_relay_opened(&mut self, now: Instant, hb: u64, locals: [SocketAddr; 2]) {
        let advertised = self.cfg.advertised_ip;
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        o.rebridge_local = Some(locals[0]);
        o.local_media = Some(locals[1]);
        let lm = LocalMedia {
            addr: advertised,
            port: locals[1].port(),
            session_id: hb,
            session_version: 1,
        };
        o.offer = Some(local_offer(&o.offered, &lm).encode());
        o.ring_deadline = Some(now + self.cfg.forward.ring_timeout);
        self.send_out_invite(now, hb, None);
        self.schedule_out(hb);
    }

    /// The target answered (ACKed, its relay side pointed at it): the
    /// caller moves from the AI to the relay.
    pub(super) fn rebridge_completed(&mut self, now: Instant, h: u64, hb: u64) {
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        let (Some(relay_a), Some(local)) = (o.rebridge.take(), o.rebridge_local) else {
            return;
        };
        self.ai_result(h, "answered", 200);
        self.out
            .push_back(Output::Media(MediaCommand::Close { leg: h }));
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
            session_id: h,
            session_version: version,
        };
        tracing::info!(call = h, "AI transfer answered; caller moved to the relay");
        self.send_reinvite(
            now,
            BridgeSide::Caller(h),
            local_offer(&[codec], &lm).encode(),
        );
    }

    /// The target failed: the AI hears why and keeps the caller; the
    /// transfer's relay is closed.
    pub(super) fn rebridge_failed(
        &mut self,
        partner: Option<u64>,
        relay_a: u64,
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
            call = h,
            status,
            "AI transfer failed; the AI keeps the caller"
        );
        self.ai_result(h, status, sip_status);
    }
}
