//! Outbound calls asked for over REST (`POST /v1/calls`): we are the UAC.
//! The INVITE goes through a trunk as a far leg ([`OutLeg`], with its
//! digest answer, ring timeout, CANCEL and outcomes from `forward.rs`),
//! offering a media port reserved up front. When the callee answers, the
//! far leg's dialog becomes the call's dialog and the AI stream starts on
//! the reserved port, exactly as for an inbound call: the AI's first
//! words reach a callee who is listening.
//!
//! Click-to-call (`forward_to`): at the answer no AI starts; the callee is
//! transferred at once to the second party by the same flow as an AI's
//! `transfer` (`ai_transfer.rs`): a far leg on a new relay, and a
//! re-INVITE moving the callee onto it when that party answers. If it
//! does not, the call ends (cause `forward_<outcome>`).

use super::dialog::{Dialog, DialogKey};
use super::negotiation::leg_media;
use super::*;
use crate::core::legs::CallState;
use crate::core::legs::{OutLeg, OutState, StatusHook};
use api::control::{Connect, OriginateRefused, OriginateRequest, Originated};
use domain::model::{CallRecord, Direction, Number, RouteKind};
use media_userspace::control::LegMode;

impl Core {
    /// The route of a call or SMS from `from` to `to` for `account`:
    /// `from` must be one of the account's DIDs (the catch-all `*` owns
    /// none), `to` not blocked, the trunk (named, else the number's) usable
    /// by the account and reachable.
    pub(super) fn outbound_route(
        &mut self,
        now: Instant,
        account: &str,
        from: &str,
        to: &str,
        trunk: Option<&str>,
    ) -> Result<OutboundRoute, OriginateRefused> {
        let routing = self.routing.clone();
        let number = routing
            .number(from)
            .filter(|n| n.account_id == account && n.pattern != "*")
            .cloned()
            .ok_or(OriginateRefused::FromNotOwned)?;
        if routing.is_blocked(account, &number.pattern, to) {
            self.metrics.reject("blocked");
            return Err(OriginateRefused::Blocked);
        }
        let trunk_name = trunk
            .map(str::to_string)
            .or_else(|| number.trunk.clone())
            .ok_or(OriginateRefused::NoTrunk)?;
        let trunk = routing
            .trunk(&trunk_name)
            .map(|e| e.trunk.clone())
            // Another account's trunk answers as a missing one.
            .filter(|t| t.usable_by(account))
            .ok_or_else(|| {
                OriginateRefused::TrunkUnavailable(format!("no trunk {trunk_name:?}"))
            })?;
        let host = trunk
            .outbound_address
            .as_deref()
            .map(|a| a.trim_start_matches("sip:").to_string())
            .ok_or_else(|| {
                OriginateRefused::TrunkUnavailable("the trunk has no outbound address".into())
            })?;
        let target = self
            .resolve_forward(
                now,
                &Number {
                    target: Some(format!("sip:{to}@{host}")),
                    trunk: Some(trunk_name),
                    route: RouteKind::Forward,
                    ..number.clone()
                },
            )
            .map_err(|why| OriginateRefused::TrunkUnavailable(why.into()))?;
        Ok(OutboundRoute {
            number,
            trunk,
            host,
            target,
        })
    }

    /// Places an outbound call: reserves its media port, then (once bound,
    /// [`Core::originate_port_bound`]) sends the INVITE.
    pub fn originate(
        &mut self,
        now: Instant,
        req: &OriginateRequest,
    ) -> Result<Originated, OriginateRefused> {
        if self.draining {
            return Err(OriginateRefused::Draining);
        }
        let OutboundRoute {
            number,
            trunk,
            host,
            target,
        } = self.outbound_route(now, &req.account, &req.from, &req.to, req.trunk.as_deref())?;
        // The second party of a click-to-call is checked like the callee.
        if let Connect::Forward { to } = &req.connect
            && !to.starts_with("sip:")
            && self.routing.is_blocked(&req.account, &number.pattern, to)
        {
            self.metrics.reject("blocked");
            return Err(OriginateRefused::Blocked);
        }
        let trunk_name = trunk.name.clone();
        let scopes = self.cluster_scopes(&number, trunk.max_calls.map(|m| (trunk_name.clone(), m)));
        if self.at_node_limit(&number, Some(&trunk)) {
            self.metrics.reject("capacity");
            return Err(OriginateRefused::Capacity);
        }

        let codecs: Vec<Codec> = self
            .cfg
            .codecs
            .iter()
            .copied()
            .filter(|&c| media_userspace::transcode::can_transcode(c))
            .collect();
        let sid = self.new_call_sid(now);
        let h: CallHandle = self.new_id();
        let hb: OutLegHandle = self.new_id();
        let mut target = target;
        // The callee is the number's caller: its policy joins the trunk's.
        target.media_security = number.media_security.and(target.media_security);
        if let Err(why) = target.keying_possible() {
            return Err(OriginateRefused::TrunkUnavailable(why.to_string()));
        }
        let mut leg = self.new_out_leg(h, target, &req.from, 70, codecs.clone(), h.own_leg());
        // Twilio's convention for outbound calls: the callee is `to`.
        leg.to = format!("<sip:{}@{host}>", req.to);
        leg.ring_timeout = req.ring_timeout;
        let origination = self.origination_for(req, &number, &sid, &leg.call_id);
        let media_mode = match origination {
            Origination::Stream(_) => "stream",
            Origination::Forward(_) => "forward",
            Origination::Twiml(..) => "twiml",
        };
        // A party's number goes out through the call's trunk; a sip: URI
        // to its own host (`on_ai_transfer`).
        let route_trunk = match &origination {
            Origination::Forward(to) if to.starts_with("sip:") => None,
            _ => Some(trunk_name.clone()),
        };
        let started_at = self.unix_ms(now);
        let originated = Originated {
            call_id: sid.clone(),
            sip_call_id: leg.call_id.clone(),
            started_at,
            trunk: trunk_name.clone(),
        };
        let record = self.outbound_record(req, &originated, media_mode);
        self.out.push_back(Output::Cdr(CdrEvent::Started(record)));
        // Until the answer the call's dialog is the far leg's, without
        // the callee's tag; it is not in the dialog table yet.
        let dialog = Dialog {
            key: DialogKey {
                call_id: leg.call_id.clone(),
                local_tag: leg.local_tag.clone(),
                remote_tag: String::new(),
            },
            local_uri: leg.from.clone(),
            remote_uri: leg.to.clone(),
            remote_target: leg.target.uri.clone(),
            route_set: Vec::new(),
            local_cseq: 1,
            remote_cseq: 0,
            secure: leg.target.uri.scheme == crate::sip::uri::Scheme::Sips,
            peer: leg.target.peer,
        };
        let leg_keying = leg.keying.clone();
        self.out_legs.insert(hb, leg);
        *self
            .active_by_number
            .entry(number.pattern.clone())
            .or_default() += 1;
        *self.active_by_trunk.entry(trunk_name.clone()).or_default() += 1;
        self.calls.insert(
            h,
            Call {
                handle: h,
                sid,
                state: CallState::AwaitingMedia,
                invite_txn: None,
                dialog,
                number_pattern: Some(number.pattern.clone()),
                trunk: Some(trunk_name.clone()),
                media_open: false,
                offer: None,
                local_sdp: None,
                negotiated: None,
                invite_at: now,
                answered_at: None,
                ok: None,
                ack_offer_pending: false,
                session: None,
                reinvite_txn: None,
                callee_user: None,
                codecs,
                stream_wait: None,
                local_media: None,
                bridge: Some(hb),
                transfer: None,
                reinvite_out: None,
                reinvite_ack: None,
                media_leg: h.own_leg(),
                route_trunk,
                refer_until: None,
                fallback: None,
                outbound: true,
                origination: Some(origination),
                pending: None,
                twiml: None,
                ai_stream: None,
                // Its slots are reserved once its port is bound, before
                // the INVITE leaves.
                admission: (!scopes.is_empty())
                    .then(|| Box::new(crate::core::legs::Admission::Outbound { scopes })),
                reserved: false,
                status_webhook: req.status_webhook.clone().map(|url| StatusHook {
                    format: req.status_format,
                    events: req.status_events.clone(),
                    ..StatusHook::json(url, req.account.clone())
                }),
                click_to_call: matches!(req.connect, Connect::Forward { .. }),
                forked: None,
                caller_left: false,
                keying: leg_keying,
            },
        );
        self.metrics.calls_active.set(self.calls.len() as i64);
        self.status_changed(now, h, "initiated");
        self.out
            .push_back(Output::Media(MediaCommand::Reserve { leg: h.own_leg() }));
        Ok(originated)
    }

    /// What the answered callee is connected to: the AI stream (a
    /// `StreamSpec` as for an inbound call to `number`) or a second party.
    fn origination_for(
        &mut self,
        req: &OriginateRequest,
        number: &Number,
        sid: &str,
        sip_call_id: &str,
    ) -> Origination {
        match &req.connect {
            Connect::Stream(api::control::StreamTarget {
                url,
                dialect,
                params,
            }) => {
                let stream_number = Number {
                    target: Some(url.clone()),
                    dialect: dialect.clone(),
                    params: params.clone(),
                    route: RouteKind::Stream,
                    ..number.clone()
                };
                let spec =
                    self.stream_spec(url, &stream_number, sid, &req.from, &req.to, sip_call_id);
                Origination::Stream(Box::new(spec))
            }
            Connect::Forward { to } => Origination::Forward(to.clone()),
            Connect::Twiml(start) => {
                Origination::Twiml(start.clone(), Box::new(number.clone()), req.record.clone())
            }
        }
    }

    /// The first record (`Started`) of an outbound call.
    fn outbound_record(
        &self,
        req: &OriginateRequest,
        placed: &Originated,
        media_mode: &str,
    ) -> CallRecord {
        CallRecord {
            id: placed.call_id.clone(),
            account_id: Some(req.account.clone()),
            direction: Direction::Outbound,
            from_number: req.from.clone(),
            to_number: req.to.clone(),
            trunk: Some(placed.trunk.clone()),
            sip_call_id: placed.sip_call_id.clone(),
            invite_at: placed.started_at,
            answer_at: None,
            end_at: None,
            end_cause: None,
            sip_status: None,
            duration_ms: None,
            media_mode: media_mode.into(),
            node: self.cfg.resume_node.clone(),
            media_security: None,
        }
    }

    /// The reserved port of outbound call `h` is bound: the INVITE leaves,
    /// offering it.
    pub(super) fn originate_port_bound(&mut self, now: Instant, h: CallHandle, local: SocketAddr) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if let Some(admission) = call.admission.take() {
            match *admission {
                crate::core::legs::Admission::Outbound { scopes } => {
                    let next = crate::core::legs::Admission::FarLeg { local };
                    return self.park_for_capacity(h, scopes, next);
                }
                other => call.admission = Some(Box::new(other)),
            }
        }
        let Some(hb) = self.calls.get(&h).and_then(|c| c.bridge) else {
            return;
        };
        self.place_far_leg(now, hb, local);
    }

    /// The callee answered outbound call `h` (far leg `hb`, already ACKed
    /// and holding the callee's SDP answer): its dialog becomes the call's,
    /// and the AI stream starts on the reserved port, or the far leg to
    /// the second party leaves.
    pub(super) fn originate_answered(&mut self, now: Instant, h: CallHandle, hb: OutLegHandle) {
        let t64 = self.cfg.timers.t64();
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        let (Some(dialog), Some(negotiated)) = (o.dialog.clone(), o.negotiated.clone()) else {
            return;
        };
        let offer = o
            .offer
            .as_deref()
            .and_then(|s| parse_sdp(s.as_bytes()).ok());
        // The far leg stays only to re-ACK a retransmitted 2xx
        // (§13.2.2.4), then is forgotten; the call owns the dialog.
        o.partner = None;
        o.state = OutState::Ending;
        o.ring_deadline = Some(now + t64);
        self.schedule_out(hb);
        self.dialogs
            .insert(dialog.key.clone(), DialogOwner::Call(h));
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let Some(origination) = call.origination.take() else {
            return;
        };
        call.bridge = None;
        call.dialog = dialog;
        call.state = CallState::Confirmed;
        call.answered_at = Some(now);
        self.metrics
            .call_setup
            .with_label_values(&["outbound"])
            .observe(now.saturating_duration_since(call.invite_at).as_secs_f64());
        call.local_sdp = offer;
        call.codecs = vec![negotiated.codec];
        let media = leg_media(&negotiated);
        call.negotiated = Some(negotiated);
        let sid = call.sid.clone();
        let at = self.unix_ms(now);
        let media_security = Some(self.legs_security(h));
        self.out.push_back(Output::Cdr(CdrEvent::Answered {
            id: sid,
            at,
            media_security,
        }));
        self.status_changed(now, h, "in-progress");
        match origination {
            Origination::Stream(spec) => {
                self.open_media_leg(h, LegMode::Stream(spec), media);
                self.schedule_call(h);
            }
            Origination::Forward(to) => {
                tracing::info!(
                    call = h.get(),
                    "click-to-call answered; calling the second party"
                );
                self.on_ai_transfer(now, h, to, None);
            }
            Origination::Twiml(start, number, record) => {
                self.schedule_call(h);
                self.start_answered_twiml(now, h, start, *number, record);
            }
        }
    }
}

/// Whether far leg `o` places an outbound call (rather than bridging one).
pub(super) fn places_outbound_call(core: &Core, o: &OutLeg) -> Option<CallHandle> {
    o.partner
        .filter(|h| core.calls.get(h).is_some_and(|c| c.origination.is_some()))
}
