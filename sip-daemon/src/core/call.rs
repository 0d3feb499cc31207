//! Calls: the INVITE server side (RFC 3261 §13.3), 2xx retransmission until
//! ACK (§13.3.1.4), CANCEL (§9.2), BYE (§15), re-INVITE and UPDATE (§14,
//! RFC 3311) with hold/unhold, and RFC 4028 session timers.

use super::dialog::Dialog;
use super::*;
use crate::routing::normalize_e164;
use crate::sip::grammar;
use crate::sip::sdes::LegKeying;
use crate::sip::sdp::{self, LocalMedia, NegotiatedAudio, OfferAnswerError};
use crate::sip::transaction::ServerState;
use domain::model::{CallRecord, Direction, RouteKind};
use media_userspace::control::{LegMedia, LegMode};

/// RFC 3261 §17.2.1: a provisional response is due when the TU has not
/// answered an INVITE within 200 ms.
const TRYING_AFTER: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// INVITE accepted, waiting for the media leg to open.
    AwaitingMedia,
    /// 2xx sent, waiting for the ACK.
    Answered,
    Confirmed,
}

/// 2xx retransmission state (§13.3.1.4): T1 doubling to T2, for 64*T1.
#[derive(Debug)]
pub struct OkRetransmit {
    pub(super) bytes: Bytes,
    pub(super) next: Option<Instant>,
    pub(super) interval: Duration,
    pub(super) give_up: Instant,
}

impl OkRetransmit {
    /// Retransmission of `bytes` from `now` (none over reliable transports).
    pub(super) fn start(now: Instant, bytes: Bytes, reliable: bool, t: TimerConfig) -> Self {
        OkRetransmit {
            bytes,
            next: (!reliable).then(|| now + t.t1),
            interval: t.t1,
            give_up: now + t.t64(),
        }
    }

    /// Due work at `now`: the bytes to resend, or whether to give up.
    pub(super) fn on_timer(&mut self, now: Instant, t2: Duration) -> (Option<Bytes>, bool) {
        if now >= self.give_up {
            return (None, true);
        }
        match self.next {
            Some(n) if now >= n => {
                self.interval = (self.interval * 2).min(t2);
                self.next = Some(now + self.interval);
                (Some(self.bytes.clone()), false)
            }
            _ => (None, false),
        }
    }

    pub(super) fn deadline(&self) -> Instant {
        self.next.map_or(self.give_up, |n| n.min(self.give_up))
    }
}

/// RFC 4028 session timer state.
#[derive(Debug, Clone, Copy)]
pub struct SessionTimer {
    pub interval: u32,
    pub we_refresh: bool,
    /// When we send the next refresh (we_refresh) or give up (otherwise).
    pub due: Instant,
}

impl SessionTimer {
    pub(super) fn start(now: Instant, interval: u32, we_refresh: bool) -> SessionTimer {
        let secs = if we_refresh {
            interval / 2
        } else {
            // §10: BYE min(32, interval/3) seconds before expiry.
            interval - (interval / 3).min(32)
        };
        SessionTimer {
            interval,
            we_refresh,
            due: now + Duration::from_secs(u64::from(secs)),
        }
    }

    fn header(&self) -> String {
        format!(
            "{};refresher={}",
            self.interval,
            if self.we_refresh { "uas" } else { "uac" }
        )
    }
}

#[derive(Debug)]
pub struct Call {
    pub handle: CallHandle,
    pub sid: String,
    pub state: CallState,
    /// The INVITE server transaction, until it is terminated.
    pub invite_txn: Option<TxnId>,
    pub dialog: Dialog,
    pub number_pattern: Option<String>,
    pub trunk: Option<String>,
    pub media_open: bool,
    /// The caller's offer (None: late offer, ours goes in the 2xx).
    pub offer: Option<SessionDescription>,
    pub local_sdp: Option<SessionDescription>,
    pub negotiated: Option<NegotiatedAudio>,
    pub invite_at: Instant,
    pub answered_at: Option<Instant>,
    pub ok: Option<OkRetransmit>,
    /// Our 2xx carried an offer; the ACK brings the answer.
    pub ack_offer_pending: bool,
    pub session: Option<SessionTimer>,
    /// A re-INVITE being answered.
    pub reinvite_txn: Option<TxnId>,
    pub callee_user: Option<String>,
    /// Codecs this call may use: those its media mode can serve.
    pub codecs: Vec<Codec>,
    /// Route `stream`: the answer waits for the AI's socket, at most
    /// until this instant.
    pub stream_wait: Option<Instant>,
    /// Our RTP address once the leg is open.
    pub local_media: Option<SocketAddr>,
    /// Route `forward`: the far leg this call is bridged to.
    pub bridge: Option<OutLegHandle>,
    /// A transfer in progress: the new far leg, until it answers or fails.
    pub transfer: Option<OutLegHandle>,
    /// Our re-INVITE toward the caller (a hold across the bridge), and
    /// the ACK of its 2xx, resent if the 2xx is.
    pub reinvite_out: Option<super::hold::PendingReinvite>,
    pub reinvite_ack: Option<Bytes>,
    /// The number's fallback (as a forward route), until used.
    pub fallback: Option<domain::model::Number>,
    /// The media leg carrying the caller: the call's handle, or after an
    /// AI transfer the relay side the caller moved to.
    pub media_leg: LegId,
    /// The number's forwarding trunk (AI transfers go through it).
    pub route_trunk: Option<String>,
    /// A REFER of ours to the caller's carrier is running until this
    /// instant (its NOTIFYs tell how the transfer goes).
    pub refer_until: Option<Instant>,
    /// We placed this call (REST): the callee is the remote party.
    pub outbound: bool,
    /// An outbound call until it is answered: the stream it starts then.
    pub origination: Option<super::originate::Origination>,
    /// Waiting for the number's voice webhook to pick the route.
    pub pending: Option<Box<super::webhook::PendingRoute>>,
    /// Where this call's status changes are POSTed.
    pub status_webhook: Option<String>,
    /// Click-to-call: no AI keeps the callee, so when the far leg to the
    /// second party fails, the call ends.
    pub click_to_call: bool,
    /// The streamSid of the listen-only copy of the relay's audio that
    /// runs ([`super::fork`]).
    pub forked: Option<String>,
    /// The caller hung up after REFERring the call elsewhere: the call
    /// waits for the Refer-To target ([`super::caller_refer`]).
    pub caller_left: bool,
    /// SRTP on this leg: its policy and the keys we declare.
    pub keying: LegKeying,
    /// Admitted by this node, waiting for its cluster-wide slots
    /// ([`super::capacity`]): what it does once they are granted.
    pub admission: Option<Box<super::capacity::Admission>>,
    /// Holds (or may hold) slots in the store: released when it ends.
    pub reserved: bool,
}

impl Call {
    /// The o= session id of our SDP toward this call's party: later
    /// offers keep it (RFC 3264 §8), also after a restart gave the call a
    /// new handle.
    pub(super) fn sdp_session_id(&self) -> u64 {
        self.local_sdp
            .as_ref()
            .map_or(self.handle.get(), |s| s.session_id)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ok = self.ok.as_ref().map(|o| match o.next {
            Some(n) => n.min(o.give_up),
            None => o.give_up,
        });
        [
            ok,
            self.session.map(|s| s.due),
            self.stream_wait,
            self.refer_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A key press carried by SIP INFO: `application/dtmf-relay` (`Signal=5`,
/// `Duration=160` in ms, as Cisco and most carriers send it) or
/// `application/dtmf` (the digit alone).
fn parse_dtmf_info(req: &Request) -> Option<(char, u32)> {
    let ctype = req.headers.get(&HeaderName::ContentType)?;
    let ctype = ctype.split(';').next()?.trim();
    let body = std::str::from_utf8(&req.body).ok()?;
    let digit_of = |v: &str| {
        let v = v.trim();
        let mut chars = v.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if media_userspace::dtmf::event_for_digit(c).is_some() => {
                Some(c.to_ascii_uppercase())
            }
            // Some gateways send the event code ("10" for *, "11" for #).
            _ => v
                .parse::<u8>()
                .ok()
                .and_then(media_userspace::dtmf::digit_for_event),
        }
    };
    if ctype.eq_ignore_ascii_case("application/dtmf") {
        return Some((digit_of(body)?, 250));
    }
    if !ctype.eq_ignore_ascii_case("application/dtmf-relay") {
        return None;
    }
    let mut digit = None;
    let mut duration = 250;
    for line in body.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => digit = digit_of(v),
            "duration" => duration = v.trim().parse().unwrap_or(250),
            _ => {}
        }
    }
    Some((digit?, duration.min(10_000)))
}

/// Session-Expires: delta-seconds *(;param) (RFC 4028 §4).
fn parse_session_expires(v: &str) -> Option<(u32, Option<String>)> {
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

/// An SDP offer from us with every codec we allow plus telephone-event,
/// keyed as the leg's policy asks (RTP/SAVP or RTP/AVP, crypto lines).
pub(super) fn local_offer(codecs: &[Codec], local: &LocalMedia) -> SessionDescription {
    let mut formats: Vec<String> = codecs
        .iter()
        .map(|c| c.static_payload_type().to_string())
        .collect();
    formats.push("101".into());
    let mut rtpmaps: Vec<sdp::RtpMap> = codecs
        .iter()
        .map(|c| sdp::RtpMap {
            payload_type: c.static_payload_type(),
            encoding: c.encoding_name().into(),
            clock_rate: c.rtp_clock_rate(),
        })
        .collect();
    rtpmaps.push(sdp::RtpMap {
        payload_type: 101,
        encoding: "telephone-event".into(),
        clock_rate: 8000,
    });
    SessionDescription {
        origin_user: "-".into(),
        session_id: local.session_id,
        session_version: local.session_version,
        origin_addr: local.addr.to_string(),
        session_name: "-".into(),
        connection: Some(local.addr),
        direction: None,
        media: vec![sdp::MediaDescription {
            media: "audio".into(),
            port: local.port,
            proto: local.keying.offer_proto().into(),
            formats,
            connection: None,
            rtpmaps,
            fmtps: vec![(101, "0-16".into())],
            ptime: Some(20),
            direction: Some(sdp::Direction::SendRecv),
            crypto: local
                .keying
                .offer_lines()
                .iter()
                .map(|c| c.encode())
                .collect(),
        }],
    }
}

/// The answer to an offer in a re-INVITE or UPDATE on one side of a relay
/// whose codec is `current`: the same codec when the offer still has it;
/// otherwise another of `codecs` (RFC 3264 §8.3.2: the peer changed
/// codec), which the relay then transcodes to and from the other side's.
pub(super) fn answer_relayed(
    offer: &sdp::SessionDescription,
    local: &LocalMedia,
    current: Codec,
    codecs: &[Codec],
) -> Result<(sdp::SessionDescription, NegotiatedAudio), OfferAnswerError> {
    sdp::answer(offer, local, &[current]).or_else(|_| {
        let others: Vec<Codec> = codecs
            .iter()
            .copied()
            .filter(|&c| c != current && media_userspace::transcode::can_transcode(c))
            .collect();
        sdp::answer(offer, local, &others)
    })
}

pub(super) fn leg_media(n: &NegotiatedAudio) -> LegMedia {
    LegMedia {
        codec: n.codec,
        payload_type: n.payload_type,
        telephone_event: n.telephone_event,
        ptime_ms: n.ptime,
        remote: n.remote,
        send: n.direction.sends(),
        srtp: n.srtp.as_ref().map(|s| s.keys()),
    }
}

/// Reads the answer to our offer (from an ACK, or a far leg's 18x or
/// 2xx) against what we offered: a codec of ours, and keys answering our
/// crypto lines as the leg's policy asks. `None`: unusable.
pub(super) fn negotiated_from_answer(
    answer: &SessionDescription,
    codecs: &[Codec],
    ours: &SessionDescription,
) -> Option<NegotiatedAudio> {
    let m = answer
        .media
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)?;
    let our_m = ours.media.iter().find(|m| m.media == "audio")?;
    let our_lines: Vec<crate::sip::sdes::Crypto> = our_m
        .crypto
        .iter()
        .filter_map(|c| crate::sip::sdes::Crypto::parse(c).ok())
        .collect();
    let srtp = match LegKeying::answered(&our_m.proto, &our_lines, &m.crypto) {
        Ok(s) => s,
        Err(why) => {
            tracing::info!(%why, "answer refused");
            return None;
        }
    };
    let pt: u8 = m.formats.first()?.parse().ok()?;
    let codec = m
        .rtpmaps
        .iter()
        .find(|r| r.payload_type == pt)
        .and_then(|r| Codec::from_rtpmap(&r.encoding, r.clock_rate))
        .or_else(|| Codec::from_static_payload_type(pt))
        .filter(|c| codecs.contains(c))?;
    let remote = m
        .connection
        .or(answer.connection)
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, m.port));
    let dir = m
        .direction
        .or(answer.direction)
        .unwrap_or(sdp::Direction::SendRecv);
    Some(NegotiatedAudio {
        remote,
        codec,
        payload_type: pt,
        telephone_event: m
            .rtpmaps
            .iter()
            .find(|r| r.encoding.eq_ignore_ascii_case("telephone-event"))
            .map(|r| r.payload_type),
        ptime: m.ptime.unwrap_or(20),
        direction: dir.reverse(),
        srtp,
    })
}

impl Core {
    pub(super) fn unix_ms(&self, now: Instant) -> i64 {
        self.clock.unix_ms(now)
    }

    pub(super) fn schedule_call(&mut self, h: CallHandle) {
        if let Some(at) = self.calls.get(&h).and_then(Call::next_deadline) {
            self.schedule(at, TimerRef::Call(h));
        }
    }

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

    pub(super) fn on_invite(&mut self, now: Instant, id: TxnId, peer: Peer) {
        let Some(req) = self.request(id).cloned() else {
            return;
        };
        // §17.2.1: 100 Trying only if we have not answered within 200 ms
        // (an echo call is usually answered well before).
        self.schedule(now + TRYING_AFTER, TimerRef::Trying(id));
        if self.draining {
            return self.reject_invite(now, id, None, 503, "draining", |b| {
                b.header(HeaderName::RetryAfter, "30")
            });
        }
        if self.cdr_saturated {
            return self.reject_invite(now, id, None, 503, "store_backlog", |b| {
                b.header(HeaderName::RetryAfter, "5")
            });
        }
        let routing = self.routing.clone();
        let trunk = routing
            .trunk_for_source(peer.remote.ip())
            .map(|t| t.trunk.clone());
        let source_user = if trunk.is_none() {
            self.registrar
                .user_at(peer.remote, self.unix_ms(now))
                .map(str::to_string)
        } else {
            None
        };
        // A registered address is not proof enough when the operator asks
        // for credentials on every call (a NAT shared with others).
        if self.cfg.challenge_invites
            && let Some(user) = source_user.as_deref()
        {
            let now_ms = self.unix_ms(now);
            match self
                .registrar
                .authenticate(&req, peer.remote, now_ms, &routing)
            {
                Ok(who) if who == user => {}
                Ok(_) => {
                    self.metrics.reject("auth_user_mismatch");
                    return self.reply(
                        now,
                        id,
                        403,
                        Some("Forbidden (credentials of another user)"),
                    );
                }
                Err(why) => return self.refuse_auth(now, id, peer, why, 407),
            }
        }
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
                source_user
                    .as_deref()
                    .and_then(|u| routing.user(u))
                    .map(|u| u.account_id.clone())
            });
        let sid = self.new_call_sid(now);
        self.out
            .push_back(Output::Cdr(CdrEvent::Started(CallRecord {
                id: sid.clone(),
                account_id: account,
                direction: Direction::Inbound,
                from_number: caller.clone(),
                to_number: dialed.clone().unwrap_or(dialed_raw),
                trunk: trunk.as_ref().map(|t| t.name.clone()),
                sip_call_id: req.core.call_id.clone(),
                invite_at: self.unix_ms(now),
                answer_at: None,
                end_at: None,
                end_cause: None,
                sip_status: None,
                duration_ms: None,
                media_mode: number
                    .as_ref()
                    .map_or("none", |n| n.route.as_str())
                    .to_string(),
                node: self.cfg.resume_node.clone(),
                media_security: None,
            })));
        let Some(number) = number else {
            if let Some(user) = target_user {
                return self.redirect_to_user(now, id, &sid, &user.username);
            }
            return self.reject_invite(now, id, Some(&sid), 404, "not_found", |b| b);
        };
        if routing.is_blocked(&number.account_id, &number.pattern, &caller) {
            return self.reject_invite(now, id, Some(&sid), 603, "blocked", |b| b);
        }
        let number_busy = number.max_calls.is_some_and(|m| {
            self.active_by_number
                .get(&number.pattern)
                .copied()
                .unwrap_or(0)
                >= m
        });
        let trunk_busy = trunk.as_ref().is_some_and(|t| {
            t.max_calls
                .is_some_and(|m| self.active_by_trunk.get(&t.name).copied().unwrap_or(0) >= m)
        });
        if number_busy || trunk_busy {
            return self.reject_invite(now, id, Some(&sid), 486, "capacity", |b| b);
        }
        let trunk_limit = trunk
            .as_ref()
            .and_then(|t| t.max_calls.map(|m| (t.name.clone(), m)));
        let mut forward_to = None;
        let webhook = number.voice_webhook.clone();
        let stream_url = match number.route {
            // The webhook's answer decides the route (webhook.rs).
            _ if webhook.is_some() => None,
            RouteKind::Echo => None,
            RouteKind::Stream => match number.target.clone() {
                Some(url) => Some(url),
                None => {
                    return self.reject_invite(
                        now,
                        id,
                        Some(&sid),
                        480,
                        "route_unavailable",
                        |b| b,
                    );
                }
            },
            RouteKind::Forward => match self.resolve_forward(now, &number) {
                Ok(t) => {
                    forward_to = Some(t);
                    None
                }
                Err(why) => {
                    tracing::info!(number = %number.pattern, why, "forward target unavailable");
                    return self.reject_invite(
                        now,
                        id,
                        Some(&sid),
                        480,
                        "route_unavailable",
                        |b| b,
                    );
                }
            },
        };
        let codecs: Vec<Codec> = if stream_url.is_some() || webhook.is_some() {
            self.cfg
                .codecs
                .iter()
                .copied()
                .filter(|&c| media_userspace::transcode::can_transcode(c))
                .collect()
        } else {
            self.cfg.codecs.clone()
        };
        // RFC 4028: Session-Expires below our minimum gets 422.
        let se = req
            .headers
            .get(&HeaderName::SessionExpires)
            .map(parse_session_expires);
        let session = match se {
            Some(None) => {
                return self.reject_invite(now, id, Some(&sid), 400, "malformed", |b| b);
            }
            Some(Some((delta, _))) if delta < self.cfg.min_se => {
                let min = self.cfg.min_se.to_string();
                return self.reject_invite(now, id, Some(&sid), 422, "session_interval", |b| {
                    b.header(HeaderName::MinSe, min)
                });
            }
            Some(Some((delta, refresher))) => {
                let uac_timer = req
                    .supported()
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case("timer"));
                let we_refresh = !uac_timer || refresher.as_deref() == Some("uas");
                Some(SessionTimer::start(now, delta, we_refresh))
            }
            None => None,
        };
        let offer = if req.body.is_empty() {
            None
        } else {
            match parse_sdp(&req.body) {
                Ok(o) => Some(o),
                Err(why) => {
                    let phrase = format!("Bad Request ({why})");
                    self.metrics.reject("malformed_sdp");
                    let tag = self.new_tag();
                    self.respond(now, id, 400, Some(&phrase), Some(&tag), |b| b);
                    self.out.push_back(Output::Cdr(CdrEvent::Ended {
                        id: sid.clone(),
                        at: self.unix_ms(now),
                        cause: "malformed_sdp".into(),
                        sip_status: 400,
                        duration_ms: 0,
                    }));
                    self.metrics
                        .calls
                        .with_label_values(&["inbound", "malformed_sdp"])
                        .inc();
                    return;
                }
            }
        };
        if forward_to.is_some() && offer.is_none() {
            // The relay offers the far leg only what the caller offered,
            // so a forwarded call needs the caller's offer up front.
            return self.reject_invite(now, id, Some(&sid), 488, "offer_required", |b| {
                b.header(
                    HeaderName::Warning,
                    "399 voice-gateway \"Forwarded calls need an SDP offer in the INVITE\"",
                )
            });
        }
        // SRTP: the number's and the trunk's policy; keys only where the
        // signalling hides them (TLS) unless the trunk allows otherwise.
        let policy = number.media_security.and(
            trunk
                .as_ref()
                .map_or(domain::model::MediaSecurity::default(), |t| {
                    t.media_security
                }),
        );
        let keys_allowed = peer.transport == TransportKind::Tls
            || trunk.as_ref().is_some_and(|t| t.srtp_cleartext_keying);
        let mut keying = self.new_keying(policy, keys_allowed);
        keying.over_tls = peer.transport == TransportKind::Tls;
        if offer.is_none()
            && let Err(why) = keying.can_offer()
        {
            // Late offer: ours would go in the 2xx, where the policy
            // cannot be met.
            let e = OfferAnswerError::Keying(why);
            return self.reject_invite(now, id, Some(&sid), 488, e.label(), |b| {
                b.header(HeaderName::Warning, e.warning())
            });
        }
        let probe = self.local_media(0, 0, 0, &keying);
        let negotiated = match &offer {
            Some(o) => match sdp::answer(o, &probe, &codecs) {
                Ok((_, n)) => Some(n),
                Err(e) => {
                    return self.reject_invite(now, id, Some(&sid), 488, e.label(), |b| {
                        b.header(HeaderName::Warning, e.warning())
                    });
                }
            },
            None => None,
        };
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
        let max_forwards = req.max_forwards.unwrap_or(70).clamp(1, 71) - 1;
        let mode = match &stream_url {
            None => LegMode::Echo,
            Some(url) => LegMode::Stream(Box::new(self.stream_spec(
                url,
                &number,
                &sid,
                &caller,
                dialed.as_deref().unwrap_or_default(),
                &req.core.call_id,
            ))),
        };
        let stream_wait = stream_url
            .as_ref()
            .map(|_| now + self.cfg.stream.answer_timeout);
        let media = negotiated.as_ref().map(leg_media).unwrap_or(LegMedia {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: None,
            ptime_ms: 20,
            remote: None,
            send: true,
            srtp: None,
        });
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
                admission: None,
                reserved: false,
                status_webhook: None,
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
        let next = if let Some(url) = webhook {
            super::capacity::Admission::Webhook {
                url,
                pending: super::webhook::PendingRoute {
                    number: number.clone(),
                    caller,
                    dialed: dialed.unwrap_or_default(),
                    sip_call_id: req.core.call_id.clone(),
                    max_forwards,
                },
            }
        } else if let Some(target) = forward_to {
            super::capacity::Admission::Forward {
                target,
                caller,
                max_forwards,
            }
        } else {
            super::capacity::Admission::Media { mode, media }
        };
        let scopes = self.cluster_scopes(&number, trunk_limit);
        if scopes.is_empty() {
            return self.admit(now, handle, next);
        }
        self.park_for_capacity(handle, scopes, next);
    }

    pub(super) fn on_media_opened(&mut self, now: Instant, h: CallHandle, local: SocketAddr) {
        let Some(call) = self.calls.get_mut(&h) else {
            // The call ended while the leg was opening.
            self.out
                .push_back(Output::Media(MediaCommand::Close { leg: h.own_leg() }));
            return;
        };
        if call.origination.is_some() && !call.media_open {
            call.media_open = true;
            call.local_media = Some(local);
            return self.originate_port_bound(now, h, local);
        }
        call.media_open = true;
        call.local_media = Some(local);
        if call.state != CallState::AwaitingMedia || call.stream_wait.is_some() {
            // A stream call is answered once the AI's socket is up.
            return;
        }
        self.answer(now, h);
    }

    /// The AI's socket is up: answer if the leg is open too.
    pub(super) fn on_stream_connected(&mut self, now: Instant, h: CallHandle) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        call.stream_wait = None;
        if call.state == CallState::AwaitingMedia && call.media_open {
            self.answer(now, h);
        }
    }

    /// The AI's socket failed, timed out or was closed: an unanswered call
    /// gets the configured fallback, an answered one a BYE.
    pub(super) fn on_stream_gone(&mut self, now: Instant, h: CallHandle, cause: &str) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if call.bridge.is_some() {
            // The call went to its fallback; the old stream leg is gone.
            return;
        }
        tracing::info!(call = %call.sid, cause, "AI stream gone");
        if call.state == CallState::AwaitingMedia && self.stream_to_fallback(now, h) {
            return;
        }
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if call.state == CallState::AwaitingMedia {
            if let Some(txn) = call.invite_txn {
                let tag = call.dialog.key.local_tag.clone();
                let status = self.cfg.stream.fallback_status;
                self.metrics.reject(cause);
                self.respond(now, txn, status, None, Some(&tag), |b| b);
                self.end_call(now, h, cause, status);
            }
            return;
        }
        self.hangup(now, h, cause);
    }

    /// Sends the 2xx with our SDP.
    pub(super) fn answer(&mut self, now: Instant, h: CallHandle) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let (Some(txn), Some(local)) = (call.invite_txn, call.local_media) else {
            return;
        };
        let lm = self.local_media(local.port(), h.get(), 1, &call.keying);
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let sdp = match &call.offer {
            Some(o) => match sdp::answer(o, &lm, &call.codecs) {
                Ok((a, _)) => a,
                Err(_) => return,
            },
            None => {
                call.ack_offer_pending = true;
                local_offer(&call.codecs, &lm)
            }
        };
        call.local_sdp = Some(sdp.clone());
        let body = sdp.encode();
        let tag = call.dialog.key.local_tag.clone();
        let session = call.session;
        let peer = call.dialog.peer;
        let user = call.callee_user.clone();
        let sid = call.sid.clone();
        let contact = self.contact_for(&peer, user.as_deref(), self.sips_dialog(h));
        self.respond(now, txn, 200, None, Some(&tag), |mut b| {
            b = b
                .header(HeaderName::Contact, contact)
                .header(HeaderName::Allow, ALLOW)
                .header(HeaderName::Supported, SUPPORTED.join(", "));
            if let Some(s) = session {
                b = b.header(HeaderName::SessionExpires, s.header());
                if !s.we_refresh {
                    b = b.header(HeaderName::Require, "timer");
                }
            }
            b.body("application/sdp", body)
        });
        self.after_2xx(now, h, txn);
        if let Some(call) = self.calls.get_mut(&h) {
            call.state = CallState::Answered;
            call.answered_at = Some(now);
            self.metrics
                .call_setup
                .with_label_values(&["inbound"])
                .observe(now.saturating_duration_since(call.invite_at).as_secs_f64());
        }
        let at = self.unix_ms(now);
        let media_security = Some(self.legs_security(h));
        self.out.push_back(Output::Cdr(CdrEvent::Answered {
            id: sid,
            at,
            media_security,
        }));
        self.schedule_call(h);
    }

    /// How each leg of call `h` carries its media, for the CDR.
    pub(super) fn legs_security(&self, h: CallHandle) -> domain::model::LegsSecurity {
        let record = |n: Option<&NegotiatedAudio>| {
            n.map(|n| n.srtp.map_or_else(|| "rtp".to_string(), |s| s.record()))
        };
        let call = self.calls.get(&h);
        let far = call
            .and_then(|c| c.bridge)
            .and_then(|hb| self.out_legs.get(&hb))
            .and_then(|o| record(o.negotiated.as_ref()));
        domain::model::LegsSecurity {
            caller: call.and_then(|c| record(c.negotiated.as_ref())),
            far,
        }
    }

    /// Retransmission of server transaction `txn`'s 2xx until its ACK
    /// (§13.3.1.4; none over reliable transports).
    pub(super) fn ok_retransmit(
        &self,
        now: Instant,
        txn: TxnId,
        reliable: bool,
    ) -> Option<OkRetransmit> {
        let last = self.txns.server.get(&txn)?.txn.last_response()?.clone();
        Some(OkRetransmit::start(now, last, reliable, self.cfg.timers))
    }

    /// Starts 2xx retransmission (unreliable transports) and the ACK wait.
    fn after_2xx(&mut self, now: Instant, h: CallHandle, txn: TxnId) {
        let Some(reliable) = self
            .calls
            .get(&h)
            .map(|c| c.dialog.peer.transport.is_reliable())
        else {
            return;
        };
        let ok = self.ok_retransmit(now, txn, reliable);
        if let Some(call) = self.calls.get_mut(&h) {
            call.ok = ok;
        }
    }

    pub(super) fn on_media_failed(&mut self, now: Instant, leg: LegId, reason: &str) {
        // The relay of an AI transfer could not be bound.
        let rebridge = self
            .out_legs
            .iter()
            .find(|(_, o)| o.rebridge == Some(leg))
            .map(|(hb, o)| (*hb, o.partner));
        if let Some((hb, partner)) = rebridge {
            tracing::warn!(reason, "relay for an AI transfer failed to open");
            self.out_legs.remove(&hb);
            if let Some(p) = partner
                && let Some(c) = self.calls.get_mut(&p)
            {
                c.transfer = None;
            }
            return self.ai_result_unavailable(now, partner);
        }
        let h = CallHandle::of_leg(leg);
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        tracing::warn!(call = %call.sid, reason, "media leg failed to open");
        if let Some(txn) = call.invite_txn
            && call.state == CallState::AwaitingMedia
        {
            let tag = call.dialog.key.local_tag.clone();
            self.metrics.reject("media");
            self.respond(
                now,
                txn,
                503,
                Some("Service Unavailable (no media port)"),
                Some(&tag),
                |b| b,
            );
            self.end_call(now, h, "media_failed", 503);
        } else {
            self.hangup(now, h, "media_failed");
        }
    }

    pub(super) fn on_cancel(&mut self, now: Instant, id: TxnId) {
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

    pub(super) fn on_ack(&mut self, now: Instant, peer: Peer, ack: Request) {
        // ACK for a non-2xx final: absorbed by the INVITE transaction.
        let key = TxnKey::invite_of(&ack, &peer);
        if let Some(&id) = self.txns.server_index.get(&key)
            && let Some(e) = self.txns.server.get_mut(&id)
            && e.txn.state() == ServerState::Completed
        {
            e.txn.on_ack(now);
            if let Some(at) = e.txn.next_deadline() {
                self.schedule(at, TimerRef::Server(id));
            }
            return;
        }
        // ACK for a 2xx: end to end, matched to the dialog (§13.3.1.4).
        let h = match self.dialog_of(&ack) {
            Some(DialogOwner::Call(h)) => h,
            Some(DialogOwner::OutLeg(hb)) => {
                // The far side ACKed our 2xx to its re-INVITE.
                if let Some(o) = self.out_legs.get_mut(&hb) {
                    o.ok = None;
                }
                return;
            }
            None => return,
        };
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        call.ok = None;
        if call.state == CallState::Answered {
            call.state = CallState::Confirmed;
        }
        if call.ack_offer_pending {
            call.ack_offer_pending = false;
            let ours = call.local_sdp.clone();
            match parse_sdp(&ack.body)
                .ok()
                .and_then(|a| negotiated_from_answer(&a, &call.codecs, ours.as_ref()?))
            {
                Some(n) => {
                    let media = leg_media(&n);
                    call.negotiated = Some(n);
                    let leg = call.media_leg;
                    self.out
                        .push_back(Output::Media(MediaCommand::Update { leg, media }));
                }
                None => {
                    // §13.3.1.4: an unusable answer in the ACK ends the call.
                    tracing::info!(call = %call.sid, "ACK carried no usable SDP answer");
                    self.hangup(now, h, "not_acceptable");
                    return;
                }
            }
        }
        self.schedule_call(h);
    }

    pub(super) fn dialog_of(&self, req: &Request) -> Option<DialogOwner> {
        let key = DialogKey {
            call_id: req.core.call_id.clone(),
            local_tag: req.to_tag()?.to_string(),
            remote_tag: req.from_tag().unwrap_or("").to_string(),
        };
        self.dialogs.get(&key).copied()
    }

    pub(super) fn on_in_dialog(&mut self, now: Instant, id: TxnId, _peer: Peer) {
        let Some(req) = self.request(id).cloned() else {
            return;
        };
        let h = match self.dialog_of(&req) {
            Some(DialogOwner::Call(h)) => h,
            Some(DialogOwner::OutLeg(hb)) => return self.on_out_in_dialog(now, id, hb, &req),
            None => {
                self.metrics.reject("no_dialog");
                return self.reply(now, id, 481, None);
            }
        };
        let method = req.method.clone();
        let req_cseq_ok = {
            self.calls
                .get_mut(&h)
                .map(|c| c.dialog.accept_remote_cseq(&req).is_ok())
                .unwrap_or(false)
        };
        let tag = match self.calls.get(&h) {
            Some(c) => c.dialog.key.local_tag.clone(),
            None => return self.reply(now, id, 481, None),
        };
        if !req_cseq_ok {
            return self.respond(
                now,
                id,
                500,
                Some("Server Internal Error (CSeq out of order)"),
                Some(&tag),
                |b| b,
            );
        }
        if let Some(e) = self.txns.server.get_mut(&id) {
            e.call = Some(h);
        }
        match method {
            Method::Bye => {
                self.respond(now, id, 200, None, Some(&tag), |b| b);
                if self.caller_left_during_refer(h) {
                    return;
                }
                let outbound = self.calls.get(&h).is_some_and(|c| c.outbound);
                let cause = if outbound {
                    "callee_hangup"
                } else {
                    "caller_hangup"
                };
                self.end_call(now, h, cause, 200);
            }
            Method::Invite | Method::Update => self.on_session_update(now, id, h, &tag),
            Method::Options => self.respond(now, id, 200, None, Some(&tag), Self::capabilities),
            Method::Notify => self.on_refer_notify(now, id, h, &tag, &req),
            Method::Refer => self.on_caller_refer(now, id, h, &tag, &req),
            Method::Info => {
                if let Some((digit, duration_ms)) = parse_dtmf_info(&req) {
                    let leg = self.calls.get(&h).map_or(h.own_leg(), |c| c.media_leg);
                    self.out.push_back(Output::Media(MediaCommand::InfoDtmf {
                        leg,
                        digit,
                        duration_ms,
                    }));
                }
                self.respond(now, id, 200, None, Some(&tag), |b| b)
            }
            _ => self.respond(now, id, 405, None, Some(&tag), |b| {
                b.header(HeaderName::Allow, ALLOW)
            }),
        }
    }

    /// re-INVITE or UPDATE: a new offer (hold/unhold, new address), an
    /// empty re-INVITE (we offer), or a session refresh.
    fn on_session_update(&mut self, now: Instant, id: TxnId, h: CallHandle, tag: &str) {
        let Some(req) = self.request(id).cloned() else {
            return;
        };
        let is_invite = req.method == Method::Invite;
        let cfg = self.cfg.clone();
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if is_invite && call.reinvite_out.is_some() {
            // §14.2: our own re-INVITE is in flight on this dialog.
            return self.respond(now, id, 491, None, Some(tag), |b| b);
        }
        if is_invite && (call.reinvite_txn.is_some() || call.state == CallState::AwaitingMedia) {
            // §14.2: an INVITE while another is in progress.
            return self.respond(now, id, 500, None, Some(tag), |b| {
                b.header(HeaderName::RetryAfter, "2")
            });
        }
        call.dialog.refresh_target(&req);
        let se = req
            .headers
            .get(&HeaderName::SessionExpires)
            .and_then(parse_session_expires);
        if let Some((delta, refresher)) = se {
            if delta < cfg.min_se {
                let min = cfg.min_se.to_string();
                return self.respond(now, id, 422, None, Some(tag), |b| {
                    b.header(HeaderName::MinSe, min)
                });
            }
            let uac_timer = req
                .supported()
                .iter()
                .any(|t| t.eq_ignore_ascii_case("timer"));
            call.session = Some(SessionTimer::start(
                now,
                delta,
                !uac_timer || refresher.as_deref() == Some("uas"),
            ));
        } else if let Some(s) = call.session {
            call.session = Some(SessionTimer::start(now, s.interval, s.we_refresh));
        }
        let Some(prev) = call.local_sdp.clone() else {
            return self.respond(now, id, 491, None, Some(tag), |b| b);
        };
        let lm = LocalMedia {
            addr: cfg.advertised_ip,
            port: prev
                .media
                .iter()
                .find(|m| m.port != 0)
                .map_or(0, |m| m.port),
            session_id: prev.session_id,
            session_version: prev.session_version + 1,
            keying: call.keying.clone(),
        };
        let mut offered_dir = None;
        let (sdp_out, offer_pending) = if req.body.is_empty() {
            if is_invite {
                (Some(local_offer(&call.codecs, &lm)), true)
            } else {
                (None, false)
            }
        } else {
            let offer = match parse_sdp(&req.body) {
                Ok(o) => o,
                Err(why) => {
                    let phrase = format!("Bad Request ({why})");
                    return self.respond(now, id, 400, Some(&phrase), Some(tag), |b| b);
                }
            };
            let current = call.negotiated.as_ref().map(|n| n.codec);
            let answered = match current {
                // A relayed call may change codec: the relay transcodes.
                Some(c) if call.bridge.is_some() => answer_relayed(&offer, &lm, c, &cfg.codecs),
                _ => sdp::answer(&offer, &lm, &call.codecs),
            };
            match answered {
                Ok((answer, n)) => {
                    let media = leg_media(&n);
                    offered_dir = Some(n.direction.reverse());
                    if call.bridge.is_some() {
                        // Later offers of ours to this side use its codec.
                        call.codecs = vec![n.codec];
                    }
                    call.negotiated = Some(n);
                    let leg = call.media_leg;
                    self.out
                        .push_back(Output::Media(MediaCommand::Update { leg, media }));
                    (Some(answer), false)
                }
                Err(e) => {
                    // The old session stays in place (RFC 3264 §8).
                    return self.respond(now, id, 488, None, Some(tag), |b| {
                        b.header(HeaderName::Warning, e.warning())
                    });
                }
            }
        };
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if let Some(s) = &sdp_out {
            call.local_sdp = Some(s.clone());
        }
        call.ack_offer_pending = offer_pending;
        let session = call.session;
        let peer = call.dialog.peer;
        let user = call.callee_user.clone();
        if is_invite {
            call.reinvite_txn = Some(id);
        }
        let contact = self.contact_for(&peer, user.as_deref(), self.sips_dialog(h));
        self.respond(now, id, 200, None, Some(tag), |mut b| {
            b = b
                .header(HeaderName::Contact, contact)
                .header(HeaderName::Allow, ALLOW)
                .header(HeaderName::Supported, SUPPORTED.join(", "));
            if let Some(s) = session {
                b = b.header(HeaderName::SessionExpires, s.header());
                if !s.we_refresh {
                    b = b.header(HeaderName::Require, "timer");
                }
            }
            match sdp_out {
                Some(s) => b.body("application/sdp", s.encode()),
                None => b,
            }
        });
        if is_invite {
            self.after_2xx(now, h, id);
            if let Some(c) = self.calls.get_mut(&h) {
                c.reinvite_txn = None;
                if c.state == CallState::Confirmed {
                    c.state = CallState::Answered;
                }
            }
        }
        self.schedule_call(h);
        if let Some(dir) = offered_dir {
            self.propagate_direction(now, super::hold::BridgeSide::Caller(h), dir);
        }
    }

    pub(super) fn call_timer(&mut self, now: Instant, h: CallHandle) {
        let t2 = self.cfg.timers.t2;
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if call.stream_wait.is_some_and(|w| now >= w) {
            call.stream_wait = None;
            return self.on_stream_gone(now, h, "stream_timeout");
        }
        if call.refer_until.is_some_and(|w| now >= w) {
            call.refer_until = None;
            self.refer_timed_out(now, h);
            return self.schedule_call(h);
        }
        let mut resend = None;
        let mut hangup = None;
        let mut refresh = false;
        if let Some(ok) = call.ok.as_mut() {
            if now >= ok.give_up {
                // §13.3.1.4: no ACK within 64*T1 ends the dialog with a BYE.
                hangup = Some("ack_timeout");
                call.ok = None;
            } else if let Some(n) = ok.next
                && now >= n
            {
                ok.interval = (ok.interval * 2).min(t2);
                ok.next = Some(now + ok.interval);
                resend = Some(ok.bytes.clone());
            }
        }
        if hangup.is_none()
            && let Some(s) = call.session
            && now >= s.due
        {
            if s.we_refresh {
                refresh = true;
                call.session = Some(SessionTimer::start(now, s.interval, true));
            } else {
                hangup = Some("session_timer");
            }
        }
        let peer = call.dialog.peer;
        if let Some(b) = resend {
            self.transmit(peer, b);
        }
        if let Some(cause) = hangup {
            self.hangup(now, h, cause);
            return;
        }
        if refresh {
            self.send_in_dialog(now, h, Method::Update);
        }
        self.schedule_call(h);
    }

    /// Sends a request inside the call's dialog through a client transaction.
    pub(super) fn send_in_dialog(&mut self, now: Instant, h: CallHandle, method: Method) {
        let Some(peer) = self.calls.get(&h).map(|c| c.dialog.peer) else {
            return;
        };
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let mut b = call.dialog.request(method.clone(), &via, &server);
        if method == Method::Update
            && let Some(s) = call.session
        {
            b = b
                .header(HeaderName::SessionExpires, s.header())
                .header(HeaderName::Supported, "timer");
        }
        let bytes = Bytes::from(b.encode());
        self.start_client_request(now, peer, branch, bytes, txns::ClientPurpose::Bye);
    }

    /// Ends a call from our side: BYE once answered, an error before.
    pub(super) fn hangup(&mut self, now: Instant, h: CallHandle, cause: &str) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if call.state == CallState::AwaitingMedia {
            if let Some(txn) = call.invite_txn {
                let tag = call.dialog.key.local_tag.clone();
                self.respond(now, txn, 503, None, Some(&tag), |b| {
                    b.header(HeaderName::RetryAfter, "30")
                });
            }
            self.end_call(now, h, cause, 503);
            return;
        }
        self.send_in_dialog(now, h, Method::Bye);
        self.end_call(now, h, cause, 200);
    }

    /// Removes the call, closes its media and its record.
    pub(super) fn end_call(&mut self, now: Instant, h: CallHandle, cause: &str, status: u16) {
        let Some(call) = self.calls.remove(&h) else {
            return;
        };
        self.restoring.remove(&h);
        self.forget_snapshot(h, &call.sid);
        self.dialogs.remove(&call.dialog.key);
        for hb in call.bridge.into_iter().chain(call.transfer) {
            self.end_bridge(now, hb);
        }
        if let Some(p) = &call.number_pattern
            && let Some(n) = self.active_by_number.get_mut(p)
        {
            *n = n.saturating_sub(1);
        }
        if let Some(t) = &call.trunk
            && let Some(n) = self.active_by_trunk.get_mut(t)
        {
            *n = n.saturating_sub(1);
        }
        if call.reserved {
            self.out.push_back(Output::ReleaseCapacity {
                sid: call.sid.clone(),
            });
        }
        // The leg may still be opening; Close is idempotent at the edge.
        self.out.push_back(Output::Media(MediaCommand::Close {
            leg: call.media_leg,
        }));
        let duration_ms = call
            .answered_at
            .map_or(0, |a| now.saturating_duration_since(a).as_millis() as i64);
        let at = self.unix_ms(now);
        self.out.push_back(Output::Cdr(CdrEvent::Ended {
            id: call.sid.clone(),
            at,
            cause: cause.to_string(),
            sip_status: if call.answered_at.is_some() {
                200
            } else {
                status
            },
            duration_ms,
        }));
        if let Some(url) = call.status_webhook.clone() {
            let sip_status = if call.answered_at.is_some() {
                200
            } else {
                status
            };
            let final_status = domain::model::call_status(
                call.answered_at.is_some(),
                true,
                Some(cause),
                Some(sip_status),
            );
            let mut event = super::webhook::status_event(&call, final_status, at);
            event.sip_status = Some(sip_status);
            event.end_cause = Some(cause.to_string());
            event.duration_ms = Some(duration_ms);
            self.out.push_back(Output::StatusWebhook { url, event });
        }
        let direction = if call.outbound { "outbound" } else { "inbound" };
        self.metrics
            .calls
            .with_label_values(&[direction, cause])
            .inc();
        self.metrics.calls_active.set(self.calls.len() as i64);
        tracing::debug!(call = %call.sid, cause, duration_ms, "call ended");
    }
}
