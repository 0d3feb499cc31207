//! A request as it arrives: parse errors, retransmissions and merged
//! requests, the RFC 3261 §8.2 checks, who may send it, and dispatch by
//! method (REGISTER here).

use super::*;

impl Core {
    pub(super) fn on_parse_error(&mut self, peer: Peer, e: ParseError) {
        self.metrics.reject(e.metric_reason());
        match e {
            ParseError::Drop(why) => {
                tracing::debug!(remote = %peer.remote, why, "dropped unparseable message");
            }
            ParseError::Reject {
                status,
                reason,
                raw,
            } => {
                let tag = self.new_tag();
                let phrase = format!("{} ({reason})", crate::sip::message::reason_phrase(status));
                let Some(b) = build::response_to_raw(&raw, status, &phrase, &tag) else {
                    tracing::debug!(remote = %peer.remote, %reason, "dropped malformed request without the headers to answer it");
                    return;
                };
                let b = b.header(HeaderName::Server, self.cfg.server_name.as_str());
                self.metrics
                    .sip_responses
                    .with_label_values(&["sent", status_class(status)])
                    .inc();
                tracing::debug!(remote = %peer.remote, status, %reason, "rejected malformed request");
                // Stateless: sent to where the request came from.
                self.transmit(peer, Bytes::from(b.encode()));
            }
        }
    }

    pub(super) fn on_request(&mut self, now: Instant, peer: Peer, req: Request) {
        self.metrics
            .sip_requests
            .with_label_values(&[req.method.metric_label()])
            .inc();
        if req.method == Method::Ack {
            self.on_ack(now, peer, req);
            return;
        }
        // An unknown source (no trunk, no registered user) is answered
        // without a transaction, unless it registers or speaks in one of
        // our dialogs (a forwarded call's far party may be anywhere).
        if req.method != Method::Register
            && self.dialog_of(&req).is_none()
            && !self.source_allowed(now, peer)
        {
            self.metrics.reject("acl");
            // A scanner over TCP or TLS (its address proven) that keeps
            // knocking is locked out like a password guesser, and the edge
            // is told (the kernel guard drops its UDP too). Over UDP the
            // address may be spoofed: the stateless answer costs nothing,
            // and the rate limits bound it.
            if peer.transport.is_reliable()
                && self
                    .registrar
                    .scanner_refused(peer.remote.ip(), self.clock.unix_ms(now))
            {
                self.metrics.reject("scanner_lockout");
                tracing::warn!(source = %peer.remote, "unknown source keeps knocking: locked out");
                self.out.push_back(Output::SourceLockedOut {
                    source: peer.remote.ip(),
                    secs: self.cfg.registrar.guard.lockout_secs,
                });
            }
            if self.cfg.unknown_sources == UnknownSources::Reject {
                self.reply_stateless(peer, &req, 403, "Forbidden (unknown source)", |b| b);
            }
            return;
        }
        // A source locked out for guessing passwords gets one stateless 403
        // per request: no transaction, no digest, no new nonce.
        if matches!(req.method, Method::Register | Method::Invite)
            && self.dialog_of(&req).is_none()
            && self
                .registrar
                .source_locked(peer.remote.ip(), self.clock.unix_ms(now))
        {
            self.metrics.reject("auth_locked");
            self.reply_stateless(
                peer,
                &req,
                403,
                "Forbidden (too many failed authentications)",
                |b| b,
            );
            return;
        }
        let key = TxnKey::for_request(&req, &peer);
        if let Some(&id) = self.txns.server_index.get(&key) {
            // A retransmission: the transaction answers it (§17.2).
            if let Some(entry) = self.txns.server.get(&id)
                && let Some(bytes) = entry.txn.on_request_retransmit()
            {
                let p = entry.peer;
                self.transmit(p, bytes);
            }
            return;
        }
        // Bounded tables: beyond the caps a new request is refused without
        // state, and says when to come back (RFC 3261 §21.5.4).
        let new_dialog = req.method == Method::Invite && req.to_tag().is_none();
        let full = if self.txns.len() >= self.cfg.max_transactions {
            Some("txn_cap")
        } else if new_dialog && self.calls.len() + self.out_legs.len() >= self.cfg.max_dialogs {
            Some("dialog_cap")
        } else {
            None
        };
        if let Some(why) = full {
            self.metrics.reject(why);
            self.reply_stateless(peer, &req, 503, "Service Unavailable (busy)", |b| {
                b.header(HeaderName::RetryAfter, "5")
            });
            return;
        }
        let kind = if req.method == Method::Invite {
            TxnKind::Invite
        } else {
            TxnKind::NonInvite
        };
        let reliable = peer.transport.is_reliable();
        let merge_key = (req.to_tag().is_none() && req.method != Method::Cancel)
            .then(|| MergeKey::for_request(&req));
        // §8.2.2.2: the same request arriving over another path.
        let merged = merge_key
            .as_ref()
            .is_some_and(|m| self.txns.merge_index.contains_key(m));
        let id = self.new_id();
        let response_peer = self.response_peer(peer, &req);
        let method = req.method.clone();
        self.txns.insert_server(
            id,
            ServerEntry {
                txn: ServerTransaction::new(kind, reliable, self.cfg.timers),
                key,
                merge_key: if merged { None } else { merge_key },
                peer: response_peer,
                request: Some(req),
                call: None,
            },
        );
        self.metrics.transactions_active.set(self.txns.len() as i64);
        if method == Method::Cancel {
            self.on_cancel(now, id);
            return;
        }
        if merged {
            self.metrics.reject("loop");
            self.reply(now, id, 482, None);
            return;
        }
        if let Some(status) = self.check_request(id) {
            return self.reject_checked(now, id, status);
        }
        let Some(in_dialog) = self.request(id).map(|r| r.to_tag().is_some()) else {
            return;
        };
        if in_dialog {
            self.on_in_dialog(now, id, peer);
            return;
        }
        // Sources that are neither trunks nor registered users got their
        // stateless answer above: only REGISTER reaches here from them.
        match method {
            Method::Register => self.on_register(now, id, peer),
            Method::Options => self.reply_with(now, id, 200, Self::capabilities),
            Method::Invite => self.on_invite(now, id, peer),
            Method::Message => self.on_message(now, id, peer),
            // BYE, UPDATE, INFO outside a dialog.
            _ => self.reply(now, id, 481, None),
        }
    }

    /// The request of a server transaction, held until it is answered.
    /// Handlers run only while it is held; a `None` (a logic error) makes
    /// them drop the request rather than panic the daemon.
    pub(super) fn request(&self, id: TxnId) -> Option<&Request> {
        self.txns.server.get(&id).and_then(|e| e.request.as_ref())
    }

    /// §8.2 checks in order: method, Max-Forwards, Require, body.
    pub(super) fn check_request(&self, id: TxnId) -> Option<CheckFailure> {
        let r = self.request(id)?;
        match r.method {
            Method::Extension(_) => return Some(CheckFailure::NotImplemented),
            // REFER inside a dialog: blind transfer by the far side of a
            // forwarded call (transfer.rs) or by the caller's side
            // (caller_refer.rs); outside one, not allowed.
            Method::Refer if r.to_tag().is_some() => {}
            // NOTIFY inside a dialog: how a REFER of ours goes.
            Method::Notify if r.to_tag().is_some() => {}
            // SMS from a trunk (RFC 3428), outside any dialog.
            Method::Message if r.to_tag().is_none() => {}
            Method::Subscribe
            | Method::Publish
            | Method::Prack
            | Method::Refer
            | Method::Notify
            | Method::Message => {
                return Some(CheckFailure::MethodNotAllowed);
            }
            _ => {}
        }
        if r.max_forwards == Some(0) && r.method != Method::Options && r.to_tag().is_none() {
            return Some(CheckFailure::TooManyHops);
        }
        let unsupported: Vec<String> = r
            .require()
            .into_iter()
            .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .map(str::to_string)
            .collect();
        if !unsupported.is_empty() {
            return Some(CheckFailure::BadExtension(unsupported.join(", ")));
        }
        if !r.body.is_empty()
            && matches!(r.method, Method::Invite | Method::Update | Method::Options)
        {
            let ct = r.content_type().unwrap_or("");
            let mt = ct.split(';').next().unwrap_or("").trim();
            if !mt.eq_ignore_ascii_case("application/sdp") {
                return Some(CheckFailure::UnsupportedMedia("Accept", ACCEPT));
            }
        }
        // RFC 4475 §3.3.15: an INVITE whose Accept leaves out SDP cannot be
        // answered (every answer to it carries a session description).
        if r.method == Method::Invite
            && r.to_tag().is_none()
            && r.headers.count(&HeaderName::Accept) > 0
            && !r.headers.get_all(&HeaderName::Accept).any(accepts_sdp)
        {
            return Some(CheckFailure::NotAcceptable);
        }
        if let Some(enc) = r.headers.get(&HeaderName::ContentEncoding)
            && !enc.trim().eq_ignore_ascii_case("identity")
        {
            return Some(CheckFailure::UnsupportedMedia(
                "Accept-Encoding",
                "identity",
            ));
        }
        None
    }

    pub(super) fn reject_checked(&mut self, now: Instant, id: TxnId, f: CheckFailure) {
        match f {
            CheckFailure::NotImplemented => {
                self.metrics.reject("unknown_method");
                self.reply_with(now, id, 501, |b| b.header(HeaderName::Allow, ALLOW));
            }
            CheckFailure::MethodNotAllowed => {
                self.metrics.reject("method_not_allowed");
                self.reply_with(now, id, 405, |b| b.header(HeaderName::Allow, ALLOW));
            }
            CheckFailure::TooManyHops => {
                self.metrics.reject("too_many_hops");
                self.reply(now, id, 483, None);
            }
            CheckFailure::BadExtension(tags) => {
                self.metrics.reject("unsupported_extension");
                self.reply_with(now, id, 420, |b| b.header(HeaderName::Unsupported, tags));
            }
            CheckFailure::NotAcceptable => {
                self.metrics.reject("not_acceptable");
                let warning = format!(
                    "399 {} \"the answer is SDP, which Accept does not admit\"",
                    self.cfg.server_name.split('/').next().unwrap_or("gateway")
                );
                self.reply_with(now, id, 406, |b| {
                    b.header(HeaderName::Accept, ACCEPT)
                        .header(HeaderName::Warning, warning)
                });
            }
            CheckFailure::UnsupportedMedia(h, v) => {
                self.metrics.reject("unsupported_media");
                let name = HeaderName::parse(h);
                self.reply_with(now, id, 415, |b| b.header(name, v));
            }
        }
    }

    /// Capability headers for OPTIONS (§11.2).
    pub(super) fn capabilities(b: MessageBuilder) -> MessageBuilder {
        b.header(HeaderName::Allow, ALLOW)
            .header(HeaderName::Accept, ACCEPT)
            .header(HeaderName::AcceptEncoding, "identity")
            .header(HeaderName::AcceptLanguage, "en")
            .header(HeaderName::Supported, SUPPORTED.join(", "))
    }

    /// A trunk's network or a registered user.
    pub(super) fn source_allowed(&self, now: Instant, peer: Peer) -> bool {
        self.routing.trunk_for_source(peer.remote.ip()).is_some()
            || self
                .registrar
                .user_at(peer.remote, self.clock.unix_ms(now))
                .is_some()
    }

    /// Answers a request whose credentials were refused: a challenge
    /// (`status` 401 or 407), or 403 for a lockout; counted by why.
    pub(super) fn refuse_auth(
        &mut self,
        now: Instant,
        id: TxnId,
        peer: Peer,
        why: AuthRefusal,
        status: u16,
    ) {
        let unix_secs = (self.clock.unix_ms(now) / 1000).max(0) as u64;
        let stale = match why {
            AuthRefusal::Challenge => {
                self.metrics.reject("auth");
                false
            }
            AuthRefusal::Stale => {
                self.metrics.reject("auth");
                true
            }
            AuthRefusal::Replayed => {
                self.metrics.reject("auth_replay");
                true
            }
            AuthRefusal::Failed { locked } => {
                self.metrics.reject("auth_failure");
                if let Some(l) = locked {
                    self.metrics.reject(match l {
                        Lockout::Source => "auth_lockout_source",
                        Lockout::User => "auth_lockout_user",
                    });
                    tracing::warn!(source = %peer.remote, ?l, "too many failed authentications: locked out");
                    let now_ms = self.clock.unix_ms(now);
                    if l == Lockout::Source
                        && !self.registrar.has_binding_at(peer.remote.ip(), now_ms)
                    {
                        self.out.push_back(Output::SourceLockedOut {
                            source: peer.remote.ip(),
                            secs: self.cfg.registrar.guard.lockout_secs,
                        });
                    }
                }
                false
            }
            AuthRefusal::LockedOut(_) => {
                self.metrics.reject("auth_locked");
                return self.reply(
                    now,
                    id,
                    403,
                    Some("Forbidden (too many failed authentications)"),
                );
            }
            AuthRefusal::Reject(status, reason) => {
                self.metrics.reject("registrar");
                let phrase = format!("{} ({reason})", crate::sip::message::reason_phrase(status));
                return self.reply(now, id, status, Some(&phrase));
            }
        };
        let challenges = self
            .registrar
            .challenges(unix_secs, stale, peer.remote.ip());
        let header = if status == 407 {
            HeaderName::ProxyAuthenticate
        } else {
            HeaderName::WwwAuthenticate
        };
        self.reply_with(now, id, status, |mut b| {
            for c in challenges {
                b = b.header(header.clone(), c);
            }
            b
        });
    }

    pub(super) fn on_register(&mut self, now: Instant, id: TxnId, peer: Peer) {
        let now_ms = self.clock.unix_ms(now);
        let routing = self.routing.clone();
        let Some(req) = self.request(id).cloned() else {
            return;
        };
        let outcome = match self
            .registrar
            .authenticate(&req, peer.remote, now_ms, &routing)
        {
            Ok(user) => self.registrar.register(&req, &user, &peer, now_ms),
            Err(why) => return self.refuse_auth(now, id, peer, why, 401),
        };
        match outcome {
            RegisterOutcome::Challenge { stale } => {
                let why = if stale {
                    AuthRefusal::Stale
                } else {
                    AuthRefusal::Challenge
                };
                self.refuse_auth(now, id, peer, why, 401);
            }
            RegisterOutcome::IntervalTooBrief { min } => {
                self.reply_with(now, id, 423, |b| {
                    b.header(HeaderName::MinExpires, min.to_string())
                });
            }
            RegisterOutcome::Reject(status, reason) => {
                self.metrics.reject("registrar");
                let phrase = format!("{} ({reason})", crate::sip::message::reason_phrase(status));
                self.reply(now, id, status, Some(&phrase));
            }
            RegisterOutcome::Ok { bindings, changes } => {
                for c in changes {
                    self.out.push_back(Output::Registration(c));
                }
                self.metrics
                    .registrations_active
                    .set(self.registrar.count() as i64);
                self.reply_with(now, id, 200, |mut b| {
                    for (contact, secs) in bindings {
                        b = b.header(HeaderName::Contact, format!("<{contact}>;expires={secs}"));
                    }
                    b
                });
            }
        }
    }
}

/// Why a request failed the §8.2 checks.
pub(super) enum CheckFailure {
    NotImplemented,
    MethodNotAllowed,
    TooManyHops,
    BadExtension(String),
    UnsupportedMedia(&'static str, &'static str),
    /// The answer must carry SDP, which the request's Accept refuses.
    NotAcceptable,
}

/// Whether an Accept header value (RFC 3261 §20.1) admits
/// `application/sdp`; an empty value admits nothing.
pub(super) fn accepts_sdp(accept: &str) -> bool {
    crate::sip::grammar::split_commas(accept)
        .iter()
        .any(|range| {
            let mt = range.split(';').next().unwrap_or("").trim();
            ["application/sdp", "application/*", "*/*"]
                .iter()
                .any(|ok| mt.eq_ignore_ascii_case(ok))
        })
}

/// Replaces a valueless `rport` parameter with `rport=<port>`.
pub(super) fn replace_flag_rport(via: &str, port: u16) -> String {
    let mut out = String::with_capacity(via.len() + 8);
    for (i, part) in via.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        if i > 0 && part.trim().eq_ignore_ascii_case("rport") {
            out.push_str(&format!("rport={port}"));
        } else {
            out.push_str(part);
        }
    }
    out
}
