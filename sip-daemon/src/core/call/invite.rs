//! A new INVITE: who calls whom, whether the node and the number admit
//! it, its route, its offer, and the call it becomes; and CANCEL before
//! the final answer (RFC 3261 §9.2).

use super::*;
use crate::core::dialog::Dialog;
use crate::core::legs::Admission;
use crate::core::legs::OutTarget;
use crate::core::negotiation::leg_media;
use crate::core::*;
use crate::routing::normalize_e164;
use crate::sip::grammar;
use crate::sip::sdes::LegKeying;
use crate::sip::sdp::{self, NegotiatedAudio, OfferAnswerError};
use domain::model::{CallRecord, Direction, Number, RouteKind, SipUser, Trunk};
use media_userspace::control::{LegMedia, LegMode};

/// The INVITE got its final answer (and its record) already: it goes no
/// further.
struct Answered;

/// Where an INVITE came from: the trunk whose network it came from, or
/// the registered user at its address.
struct InviteSource {
    trunk: Option<Trunk>,
    user: Option<String>,
}

/// Who calls whom, as the INVITE names them.
struct InviteParties {
    dialed_raw: String,
    /// The dialed number in E.164, when it reads as one.
    dialed: Option<String>,
    caller: String,
    number: Option<Number>,
    /// A SIP user dialed by name (when no number matched).
    target_user: Option<SipUser>,
    account: Option<String>,
}

/// The route a number gives an inbound call: one per route kind, and the
/// voice webhook, which picks one of them later.
enum InboundRoute {
    Echo,
    /// The AI stream at this URL.
    Stream(String),
    Forward(Box<OutTarget>),
    /// Ask this voice webhook for the route.
    Webhook(String),
}

/// Everything the phases learned about an admitted INVITE.
struct NewInboundCall {
    req: Request,
    peer: Peer,
    sid: String,
    trunk: Option<Trunk>,
    caller: String,
    dialed: Option<String>,
    number: Number,
    route: InboundRoute,
    session: Option<SessionTimer>,
    offer: Option<SessionDescription>,
    codecs: Vec<Codec>,
    keying: LegKeying,
    negotiated: Option<NegotiatedAudio>,
}

/// Session-Expires: delta-seconds *(;param) (RFC 4028 §4).
pub(super) fn parse_session_expires(v: &str) -> Option<(u32, Option<String>)> {
    let (delta, params) = match v.find(';') {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let delta = grammar::parse_decimal(delta, u32::MAX as u64)? as u32;
    let params = grammar::Params::parse(params).ok()?;
    Some((
        delta,
        params.value("refresher").map(|r| r.to_ascii_lowercase()),
    ))
}

impl Core {
    /// Rejects a new INVITE and closes its CDR.
    /// A registered user as call target (RFC 3261 §8.3, §10.2): answer 302
    /// with the user's live bindings so the caller reaches the device
    /// directly; 480 when the user has none. Bridging the call through us
    /// instead (route `forward` to a user) comes with forwarding.
    fn redirect_to_user(&mut self, now: Instant, id: TxnId, sid: &str, username: &str) {
        let now_ms = self.unix_ms(now);
        let contacts: Vec<String> = self
            .registrar
            .bindings_of(username, now_ms)
            .iter()
            .map(|b| {
                let secs = ((b.expires_at_ms - now_ms) / 1000).max(1);
                format!("<{}>;expires={secs}", b.contact)
            })
            .collect();
        if contacts.is_empty() {
            return self.reject_invite(now, id, Some(sid), 480, "not_registered", |b| b);
        }
        let tag = self.new_tag();
        self.respond(now, id, 302, None, Some(&tag), |mut b| {
            for c in &contacts {
                b = b.header(HeaderName::Contact, c.as_str());
            }
            b
        });
        self.out.push_back(Output::Cdr(CdrEvent::Ended {
            id: sid.to_string(),
            at: now_ms,
            cause: "redirected".into(),
            sip_status: 302,
            duration_ms: 0,
        }));
        self.metrics
            .calls
            .with_label_values(&["inbound", "redirected"])
            .inc();
    }

    fn reject_invite(
        &mut self,
        now: Instant,
        id: TxnId,
        sid: Option<&str>,
        status: u16,
        cause: &str,
        extra: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) {
        self.metrics.reject(cause);
        let tag = self.new_tag();
        self.respond(now, id, status, None, Some(&tag), extra);
        if let Some(sid) = sid {
            self.out.push_back(Output::Cdr(CdrEvent::Ended {
                id: sid.to_string(),
                at: self.unix_ms(now),
                cause: cause.to_string(),
                sip_status: status,
                duration_ms: 0,
            }));
            self.metrics
                .calls
                .with_label_values(&["inbound", cause])
                .inc();
        }
    }

    /// A new INVITE (RFC 3261 §13.3): each phase below either passes what
    /// it learned on, or gave the INVITE its final answer and its record
    /// (`Answered`), and the INVITE goes no further.
    pub(in crate::core) fn on_invite(&mut self, now: Instant, id: TxnId, peer: Peer) {
        let Some(req) = self.request(id).cloned() else {
            return;
        };
        // §17.2.1: 100 Trying only if we have not answered within 200 ms
        // (an echo call is usually answered well before).
        self.schedule(now + TRYING_AFTER, TimerRef::Trying(id));
        let _ = self.try_invite(now, id, peer, req);
    }

    fn try_invite(
        &mut self,
        now: Instant,
        id: TxnId,
        peer: Peer,
        req: Request,
    ) -> Result<(), Answered> {
        self.node_takes_calls(now, id)?;
        let source = self.invite_source(now, id, peer, &req)?;
        let parties = self.invite_parties(&req, &source);
        let sid = self.call_started(now, &req, &source, &parties);
        let Some(number) = parties.number.clone() else {
            match &parties.target_user {
                Some(user) => self.redirect_to_user(now, id, &sid, &user.username),
                None => self.reject_invite(now, id, Some(&sid), 404, "not_found", |b| b),
            }
            return Err(Answered);
        };
        self.number_admits(now, id, &sid, &number, &parties.caller, &source)?;
        let route = self.inbound_route(now, id, &sid, &number)?;
        let session = self.invite_session_timer(now, id, &sid, &req)?;
        let offer = self.invite_offer(now, id, &sid, &req)?;
        if matches!(route, InboundRoute::Forward(_)) && offer.is_none() {
            // The relay offers the far leg only what the caller offered,
            // so a forwarded call needs the caller's offer up front.
            self.reject_invite(now, id, Some(&sid), 488, "offer_required", |b| {
                b.header(
                    HeaderName::Warning,
                    "399 voice-gateway \"Forwarded calls need an SDP offer in the INVITE\"",
                )
            });
            return Err(Answered);
        }
        let codecs = self.route_codecs(&route);
        let (keying, negotiated) = self.invite_media(
            now,
            id,
            &sid,
            peer,
            &number,
            &source,
            offer.as_ref(),
            &codecs,
        )?;
        let invite = NewInboundCall {
            req,
            peer,
            sid,
            trunk: source.trunk,
            caller: parties.caller,
            dialed: parties.dialed,
            number,
            route,
            session,
            offer,
            codecs,
            keying,
            negotiated,
        };
        self.create_inbound_call(now, id, invite);
        Ok(())
    }

    /// 503 while the node drains or its record queue is full.
    fn node_takes_calls(&mut self, now: Instant, id: TxnId) -> Result<(), Answered> {
        if self.draining {
            self.reject_invite(now, id, None, 503, "draining", |b| {
                b.header(HeaderName::RetryAfter, "30")
            });
            return Err(Answered);
        }
        if self.cdr_saturated {
            self.reject_invite(now, id, None, 503, "store_backlog", |b| {
                b.header(HeaderName::RetryAfter, "5")
            });
            return Err(Answered);
        }
        Ok(())
    }

    /// The trunk whose network the INVITE came from, or the registered
    /// user at its address; with `challenge_invites`, that user's
    /// credentials too (a registered address is not proof enough behind a
    /// NAT shared with others).
    fn invite_source(
        &mut self,
        now: Instant,
        id: TxnId,
        peer: Peer,
        req: &Request,
    ) -> Result<InviteSource, Answered> {
        let routing = self.routing.clone();
        let trunk = routing
            .trunk_for_source(peer.remote.ip())
            .map(|t| t.trunk.clone());
        let user = if trunk.is_none() {
            self.registrar
                .user_at(peer.remote, self.unix_ms(now))
                .map(str::to_string)
        } else {
            None
        };
        if self.cfg.challenge_invites
            && let Some(user) = user.as_deref()
        {
            let now_ms = self.unix_ms(now);
            match self
                .registrar
                .authenticate(req, peer.remote, now_ms, &routing)
            {
                Ok(who) if who == user => {}
                Ok(_) => {
                    self.metrics.reject("auth_user_mismatch");
                    self.reply(
                        now,
                        id,
                        403,
                        Some("Forbidden (credentials of another user)"),
                    );
                    return Err(Answered);
                }
                Err(why) => {
                    self.refuse_auth(now, id, peer, why, 407);
                    return Err(Answered);
                }
            }
        }
        Ok(InviteSource { trunk, user })
    }

    /// Who calls whom: the dialed and calling numbers (E.164 where they
    /// read as such), the number or SIP user dialed, and the account.
    fn invite_parties(&self, req: &Request, source: &InviteSource) -> InviteParties {
        let routing = &self.routing;
        let dialed_raw = req
            .uri
            .user
            .clone()
            .or_else(|| req.core.to.uri.user.clone())
            .unwrap_or_default();
        let dialed = normalize_e164(&dialed_raw);
        let caller_raw = req
            .core
            .from
            .uri
            .user
            .clone()
            .unwrap_or_else(|| "anonymous".into());
        let caller = normalize_e164(&caller_raw).unwrap_or(caller_raw);
        let number = dialed.as_deref().and_then(|d| routing.number(d)).cloned();
        // A call to one of our SIP users (Request-URI user = username).
        let target_user = if number.is_none() {
            routing.user(&dialed_raw).cloned()
        } else {
            None
        };
        let account = number
            .as_ref()
            .map(|n| n.account_id.clone())
            .or_else(|| target_user.as_ref().map(|u| u.account_id.clone()))
            .or_else(|| {
                source
                    .user
                    .as_deref()
                    .and_then(|u| routing.user(u))
                    .map(|u| u.account_id.clone())
            });
        InviteParties {
            dialed_raw,
            dialed,
            caller,
            number,
            target_user,
            account,
        }
    }

    /// The call's id and its first record (`Started`); every later answer
    /// to the INVITE closes this record.
    fn call_started(
        &mut self,
        now: Instant,
        req: &Request,
        source: &InviteSource,
        parties: &InviteParties,
    ) -> String {
        let sid = self.new_call_sid(now);
        self.out
            .push_back(Output::Cdr(CdrEvent::Started(CallRecord {
                id: sid.clone(),
                account_id: parties.account.clone(),
                direction: Direction::Inbound,
                from_number: parties.caller.clone(),
                to_number: parties
                    .dialed
                    .clone()
                    .unwrap_or_else(|| parties.dialed_raw.clone()),
                trunk: source.trunk.as_ref().map(|t| t.name.clone()),
                sip_call_id: req.core.call_id.clone(),
                invite_at: self.unix_ms(now),
                answer_at: None,
                end_at: None,
                end_cause: None,
                sip_status: None,
                duration_ms: None,
                media_mode: parties
                    .number
                    .as_ref()
                    .map_or("none", |n| n.route.as_str())
                    .to_string(),
                node: self.cfg.resume_node.clone(),
                media_security: None,
            })));
        sid
    }

    /// 603 to a caller the number's account blocked; 486 when the number
    /// or the trunk is at its call limit on this node.
    fn number_admits(
        &mut self,
        now: Instant,
        id: TxnId,
        sid: &str,
        number: &Number,
        caller: &str,
        source: &InviteSource,
    ) -> Result<(), Answered> {
        if self
            .routing
            .is_blocked(&number.account_id, &number.pattern, caller)
        {
            self.reject_invite(now, id, Some(sid), 603, "blocked", |b| b);
            return Err(Answered);
        }
        if self.at_node_limit(number, source.trunk.as_ref()) {
            self.reject_invite(now, id, Some(sid), 486, "capacity", |b| b);
            return Err(Answered);
        }
        Ok(())
    }

    /// The number's route: its voice webhook decides when it has one;
    /// else echo, the AI stream at its target, or the forward target
    /// (480 when a stream or forward route has nowhere to go).
    fn inbound_route(
        &mut self,
        now: Instant,
        id: TxnId,
        sid: &str,
        number: &Number,
    ) -> Result<InboundRoute, Answered> {
        if let Some(url) = &number.voice_webhook {
            return Ok(InboundRoute::Webhook(url.clone()));
        }
        let route = match number.route {
            RouteKind::Echo => Some(InboundRoute::Echo),
            RouteKind::Stream => number.target.clone().map(InboundRoute::Stream),
            RouteKind::Forward => match self.resolve_forward(now, number) {
                Ok(t) => Some(InboundRoute::Forward(Box::new(t))),
                Err(why) => {
                    tracing::info!(number = %number.pattern, why, "forward target unavailable");
                    None
                }
            },
        };
        route.ok_or_else(|| {
            self.reject_invite(now, id, Some(sid), 480, "route_unavailable", |b| b);
            Answered
        })
    }

    /// The codecs a route can carry: those the AI's transcoder speaks when
    /// an AI may take the call, every configured one otherwise.
    fn route_codecs(&self, route: &InboundRoute) -> Vec<Codec> {
        match route {
            InboundRoute::Stream(_) | InboundRoute::Webhook(_) => self
                .cfg
                .codecs
                .iter()
                .copied()
                .filter(|&c| media_userspace::transcode::can_transcode(c))
                .collect(),
            InboundRoute::Echo | InboundRoute::Forward(_) => self.cfg.codecs.clone(),
        }
    }

    /// RFC 4028: the session timer the INVITE asks for; 400 when its
    /// Session-Expires is malformed, 422 below our minimum.
    fn invite_session_timer(
        &mut self,
        now: Instant,
        id: TxnId,
        sid: &str,
        req: &Request,
    ) -> Result<Option<SessionTimer>, Answered> {
        let se = req
            .headers
            .get(&HeaderName::SessionExpires)
            .map(parse_session_expires);
        match se {
            Some(None) => {
                self.reject_invite(now, id, Some(sid), 400, "malformed", |b| b);
                Err(Answered)
            }
            Some(Some((delta, _))) if delta < self.cfg.min_se => {
                let min = self.cfg.min_se.to_string();
                self.reject_invite(now, id, Some(sid), 422, "session_interval", |b| {
                    b.header(HeaderName::MinSe, min)
                });
                Err(Answered)
            }
            Some(Some((delta, refresher))) => {
                let uac_timer = req
                    .supported()
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case("timer"));
                let we_refresh = !uac_timer || refresher.as_deref() == Some("uas");
                Ok(Some(SessionTimer::start(now, delta, we_refresh)))
            }
            None => Ok(None),
        }
    }

    /// The caller's SDP offer, if the INVITE carries one (none: a late
    /// offer); 400 naming what is wrong with a malformed one.
    fn invite_offer(
        &mut self,
        now: Instant,
        id: TxnId,
        sid: &str,
        req: &Request,
    ) -> Result<Option<SessionDescription>, Answered> {
        if req.body.is_empty() {
            return Ok(None);
        }
        match parse_sdp(&req.body) {
            Ok(o) => Ok(Some(o)),
            Err(why) => {
                let phrase = format!("Bad Request ({why})");
                self.metrics.reject("malformed_sdp");
                let tag = self.new_tag();
                self.respond(now, id, 400, Some(&phrase), Some(&tag), |b| b);
                self.out.push_back(Output::Cdr(CdrEvent::Ended {
                    id: sid.to_string(),
                    at: self.unix_ms(now),
                    cause: "malformed_sdp".into(),
                    sip_status: 400,
                    duration_ms: 0,
                }));
                self.metrics
                    .calls
                    .with_label_values(&["inbound", "malformed_sdp"])
                    .inc();
                Err(Answered)
            }
        }
    }

    /// SRTP keying under the number's and the trunk's policy (keys only
    /// where the signalling hides them, TLS, unless the trunk allows
    /// otherwise), and the answer to the offer; 488 when they cannot meet.
    #[allow(clippy::too_many_arguments)]
    fn invite_media(
        &mut self,
        now: Instant,
        id: TxnId,
        sid: &str,
        peer: Peer,
        number: &Number,
        source: &InviteSource,
        offer: Option<&SessionDescription>,
        codecs: &[Codec],
    ) -> Result<(LegKeying, Option<NegotiatedAudio>), Answered> {
        let trunk = source.trunk.as_ref();
        let policy =
            number
                .media_security
                .and(trunk.map_or(domain::model::MediaSecurity::default(), |t| {
                    t.media_security
                }));
        let keys_allowed =
            peer.transport == TransportKind::Tls || trunk.is_some_and(|t| t.srtp_cleartext_keying);
        let mut keying = self.new_keying(policy, keys_allowed);
        keying.over_tls = peer.transport == TransportKind::Tls;
        if offer.is_none()
            && let Err(why) = keying.can_offer()
        {
            // Late offer: ours would go in the 2xx, where the policy
            // cannot be met.
            let e = OfferAnswerError::Keying(why);
            self.reject_invite(now, id, Some(sid), 488, e.label(), |b| {
                b.header(HeaderName::Warning, e.warning())
            });
            return Err(Answered);
        }
        let probe = self.local_media(0, 0, 0, &keying);
        let negotiated = match offer {
            Some(o) => match sdp::answer(o, &probe, codecs) {
                Ok((_, n)) => Some(n),
                Err(e) => {
                    self.reject_invite(now, id, Some(sid), 488, e.label(), |b| {
                        b.header(HeaderName::Warning, e.warning())
                    });
                    return Err(Answered);
                }
            },
            None => None,
        };
        Ok((keying, negotiated))
    }

    /// The call an admitted INVITE becomes: its dialog, its place in the
    /// node's call limits, and what follows (its route, after any
    /// cluster-wide reservation).
    fn create_inbound_call(&mut self, now: Instant, id: TxnId, invite: NewInboundCall) {
        let NewInboundCall {
            req,
            peer,
            sid,
            trunk,
            caller,
            dialed,
            number,
            route,
            session,
            offer,
            codecs,
            keying,
            negotiated,
        } = invite;
        let local_tag = self.new_tag();
        let handle: CallHandle = self.new_id();
        let dialog = Dialog::from_invite(&req, &local_tag, peer);
        self.dialogs
            .insert(dialog.key.clone(), DialogOwner::Call(handle));
        if let Some(e) = self.txns.server.get_mut(&id) {
            e.call = Some(handle);
        }
        *self
            .active_by_number
            .entry(number.pattern.clone())
            .or_default() += 1;
        if let Some(t) = &trunk {
            *self.active_by_trunk.entry(t.name.clone()).or_default() += 1;
        }
        let trunk_limit = trunk
            .as_ref()
            .and_then(|t| t.max_calls.map(|m| (t.name.clone(), m)));
        let max_forwards = req.max_forwards.unwrap_or(70).clamp(1, 71) - 1;
        let stream_wait =
            matches!(route, InboundRoute::Stream(_)).then(|| now + self.cfg.stream.answer_timeout);
        let media = negotiated.as_ref().map(leg_media).unwrap_or(LegMedia {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: None,
            ptime_ms: 20,
            remote: None,
            send: true,
            srtp: None,
        });
        let next = match route {
            InboundRoute::Webhook(url) => Admission::Webhook {
                url,
                pending: crate::core::legs::PendingRoute {
                    number: number.clone(),
                    caller,
                    dialed: dialed.clone().unwrap_or_default(),
                    sip_call_id: req.core.call_id.clone(),
                    max_forwards,
                },
            },
            InboundRoute::Forward(target) => Admission::Forward {
                target: *target,
                caller,
                max_forwards,
            },
            InboundRoute::Echo => Admission::Media {
                mode: LegMode::Echo,
                media,
            },
            InboundRoute::Stream(url) => Admission::Media {
                mode: LegMode::Stream(Box::new(self.stream_spec(
                    &url,
                    &number,
                    &sid,
                    &caller,
                    dialed.as_deref().unwrap_or_default(),
                    &req.core.call_id,
                ))),
                media,
            },
        };
        self.calls.insert(
            handle,
            Call {
                handle,
                sid,
                state: CallState::AwaitingMedia,
                invite_txn: Some(id),
                dialog,
                number_pattern: Some(number.pattern.clone()),
                trunk: trunk.map(|t| t.name),
                media_open: false,
                offer,
                local_sdp: None,
                negotiated,
                invite_at: now,
                answered_at: None,
                ok: None,
                ack_offer_pending: false,
                session,
                reinvite_txn: None,
                callee_user: req.uri.user.clone(),
                codecs,
                stream_wait,
                local_media: None,
                bridge: None,
                transfer: None,
                reinvite_out: None,
                reinvite_ack: None,
                media_leg: handle.own_leg(),
                route_trunk: number.trunk.clone(),
                refer_until: None,
                outbound: false,
                origination: None,
                pending: None,
                twiml: None,
                ai_stream: None,
                admission: None,
                reserved: false,
                status_webhook: number.status_webhook.clone().map(|url| {
                    crate::core::legs::StatusHook {
                        url,
                        format: number.webhook_format,
                        account: number.account_id.clone(),
                        sent: 0,
                        events: vec![],
                    }
                }),
                click_to_call: false,
                forked: None,
                caller_left: false,
                keying,
                fallback: number.fallback.as_ref().map(|f| domain::model::Number {
                    route: RouteKind::Forward,
                    target: Some(f.clone()),
                    ..number.clone()
                }),
            },
        );
        self.metrics.calls_active.set(self.calls.len() as i64);
        self.schedule_call(handle);
        // The call rings at the gateway from its admission on.
        self.status_changed(now, handle, "ringing");
        let scopes = self.cluster_scopes(&number, trunk_limit);
        if scopes.is_empty() {
            return self.admit(now, handle, next);
        }
        self.park_for_capacity(handle, scopes, next);
    }

    pub(in crate::core) fn on_cancel(&mut self, now: Instant, id: TxnId) {
        let Some(invite_key) = self
            .txns
            .server
            .get(&id)
            .and_then(|e| Some(TxnKey::invite_of_cancel(e.request.as_ref()?, &e.key)))
        else {
            return;
        };
        let Some(&inv) = self.txns.server_index.get(&invite_key) else {
            return self.reply(now, id, 481, None);
        };
        let (has_final, call) = match self.txns.server.get(&inv) {
            Some(e) => (e.txn.has_final(), e.call),
            None => (true, None),
        };
        let tag = call
            .and_then(|h| self.calls.get(&h))
            .map(|c| c.dialog.key.local_tag.clone())
            .unwrap_or_else(|| self.new_tag());
        self.respond(now, id, 200, None, Some(&tag), |b| b);
        if has_final {
            return;
        }
        // §9.2: the INVITE is answered 487.
        self.respond(now, inv, 487, None, Some(&tag), |b| b);
        if let Some(h) = call {
            self.end_call(now, h, "canceled", 487);
        }
    }
}
