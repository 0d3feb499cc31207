//! Requests inside a confirmed call's dialog: BYE, re-INVITE and UPDATE
//! (hold, new address, session refresh), INFO DTMF, NOTIFY and REFER;
//! and the call's timers.

use super::invite::parse_session_expires;
use crate::core::negotiation::{answer_relayed, leg_media, local_offer};
use crate::core::*;
use crate::sip::sdp::{self, LocalMedia};

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

impl Core {
    pub(in crate::core) fn dialog_of(&self, req: &Request) -> Option<DialogOwner> {
        let key = DialogKey {
            call_id: req.core.call_id.clone(),
            local_tag: req.to_tag()?.to_string(),
            remote_tag: req.from_tag().unwrap_or("").to_string(),
        };
        self.dialogs.get(&key).copied()
    }

    pub(in crate::core) fn on_in_dialog(&mut self, now: Instant, id: TxnId, _peer: Peer) {
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
            self.propagate_direction(now, crate::core::legs::BridgeSide::Caller(h), dir);
        }
    }

    pub(in crate::core) fn call_timer(&mut self, now: Instant, h: CallHandle) {
        let t2 = self.cfg.timers.t2;
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if call.stream_wait.is_some_and(|w| now >= w) {
            call.stream_wait = None;
            return self.on_stream_gone(now, h, "stream_timeout");
        }
        if self.twiml_wake(now, h) {
            return;
        }
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
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
    pub(in crate::core) fn send_in_dialog(&mut self, now: Instant, h: CallHandle, method: Method) {
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
}
