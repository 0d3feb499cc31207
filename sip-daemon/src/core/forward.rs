//! Route `forward`: the B2BUA (RFC 7092 §3.1, a signalling and media
//! relaying back-to-back user agent). The inbound leg (a [`Call`], the UAS
//! side) is bridged to an outbound leg ([`OutLeg`], the UAC side) that we
//! place toward the number's target, through its trunk (with digest
//! authentication when the trunk challenges, RFC 3261 §22.2) or to a
//! registered user. Media runs through a relay pair in the media workers
//! (and the XDP fast path where it can serve): no transcoding, so the far
//! leg is offered only the codecs the caller offered.
//!
//! Outcomes of the far leg, as the caller sees them and as the call
//! record names them: answered (bridged); busy (486); declined (603);
//! no_answer (ring timeout or 408/480: 480); not_found (404); unreachable
//! (no response at all: 408); failed (any other failure: 4xx/6xx passed
//! through, 5xx as 502). Either side's BYE ends both.

use super::call::CallState;
use super::dialog::Dialog;
use super::negotiation::{leg_media, local_offer, negotiated_from_answer};
use super::*;
use crate::sip::digest::{Challenge, Credentials};
use crate::sip::sdes::{LegKeying, SrtpKey, SrtpSuite};
use crate::sip::sdp::{self, LocalMedia, NegotiatedAudio};
use crate::sip::uri::Scheme;
use crate::sip::{Uri, headers_typed::NameAddr};
use domain::model::Number;
use media_userspace::control::LegMedia;

/// Redirections (3xx) a far leg follows before the failure stands.
const MAX_REDIRECTS: u8 = 3;

/// Methods the far leg of a forwarded call accepts: REFER too (blind
/// transfer by the far side, `transfer.rs`).
pub const ALLOW_FAR: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER";

/// How forwarded calls are placed.
#[derive(Clone, Debug)]
pub struct ForwardSettings {
    /// The far leg may ring this long; then it is canceled and the call
    /// ends `no_answer` (480).
    pub ring_timeout: Duration,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        ForwardSettings {
            ring_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutState {
    /// The relay's ports are being bound; no INVITE has left yet.
    Binding,
    /// INVITE sent, no final response yet.
    Calling,
    /// 2xx received and ACKed: bridged.
    Confirmed,
    /// Given up (CANCEL sent or due): waiting for the INVITE's final
    /// response, which is ACKed (and a late 2xx answered with BYE).
    Ending,
}

/// Where and how the far leg is reached.
#[derive(Clone, Debug)]
pub struct OutTarget {
    /// Request-URI of the INVITE.
    pub uri: Uri,
    pub peer: Peer,
    /// Digest username and password for a trunk that challenges.
    pub credentials: Option<(String, String)>,
    /// Reached through a trunk: requests for new targets (a transfer) go
    /// through it too, whatever host their URI names.
    pub via_trunk: bool,
    /// The SRTP policy of the leg: its trunk's (default for targets
    /// reached directly).
    pub media_security: domain::model::MediaSecurity,
    /// The trunk lets SDES keys cross cleartext signalling.
    pub cleartext_keying: bool,
}

impl OutTarget {
    /// SDES keys may cross this leg's signalling.
    pub fn keys_allowed(&self) -> bool {
        self.peer.transport == TransportKind::Tls || self.cleartext_keying
    }

    /// Whether the leg's SRTP policy can be met at all.
    pub fn keying_possible(&self) -> Result<(), crate::sip::sdes::KeyingRefusal> {
        crate::sip::sdes::policy_can_key(self.media_security, self.keys_allowed())
    }
}

/// The outbound (UAC) leg of a forwarded call.
#[derive(Debug)]
pub struct OutLeg {
    /// The inbound call it is bridged to, until that one ends.
    pub partner: Option<CallHandle>,
    pub state: OutState,
    pub target: OutTarget,
    pub call_id: String,
    pub local_tag: String,
    /// Our From value (with tag) and the To value (without one).
    pub from: String,
    pub to: String,
    pub contact: String,
    pub max_forwards: u32,
    pub cseq: u32,
    /// Top Via of the INVITE in flight (CANCEL and the non-2xx ACK reuse it).
    pub via: String,
    pub invite_txn: Option<TxnId>,
    /// Our SDP offer (set once the relay's far port is known).
    pub offer: Option<String>,
    pub offered: Vec<Codec>,
    pub auth_tried: bool,
    /// Redirections (3xx) followed so far.
    pub redirects: u8,
    /// This leg REFERred us: it is told by NOTIFY how the transfer goes.
    pub referred: bool,
    /// A provisional response arrived: CANCEL may be sent (§9.1).
    pub provisional: bool,
    pub cancel_due: bool,
    pub ring_deadline: Option<Instant>,
    /// This leg's own ring timeout (REST), else `[forward]`'s.
    pub ring_timeout: Option<Duration>,
    pub dialog: Option<Dialog>,
    /// The ACK for the 2xx, resent when the 2xx is retransmitted.
    pub ack: Option<Bytes>,
    pub local_media: Option<SocketAddr>,
    pub negotiated: Option<NegotiatedAudio>,
    pub ringing_sent: bool,
    /// The relay side this leg's media runs on: its own handle, or, for
    /// the new far leg of a transfer, the side of the leg it replaces.
    pub media_leg: LegId,
    /// For the new far leg of a transfer: the leg that sent the REFER,
    /// told the outcome by NOTIFY (RFC 3515 §2.4.4).
    pub transfer_of: Option<OutLegHandle>,
    /// Our re-INVITE toward this leg (a hold across the bridge), and the
    /// ACK of its 2xx, resent if the 2xx is.
    pub reinvite_out: Option<super::hold::PendingReinvite>,
    pub reinvite_ack: Option<Bytes>,
    /// For the far leg of an AI transfer: the relay side that takes the
    /// caller over when this leg answers, and its local address.
    pub rebridge: Option<LegId>,
    /// A REFER from the caller's side: this leg takes the caller's
    /// place in the call when it answers ([`super::caller_refer`]).
    pub replaces_caller: bool,
    pub rebridge_local: Option<SocketAddr>,
    /// Version of our SDP on this leg (o= line), raised with each offer
    /// or changed answer (RFC 3264 §8).
    pub sdp_version: u64,
    /// Our 2xx to the far side's re-INVITE, resent until its ACK
    /// (§13.3.1.4).
    pub ok: Option<super::call::OkRetransmit>,
    /// SRTP on this leg: its policy and the keys we declare.
    pub keying: LegKeying,
}

impl OutLeg {
    /// The o= session id of our SDP toward the far side: later offers and
    /// answers keep it (RFC 3264 §8), also after a restart gave the leg
    /// a new handle.
    pub(super) fn sdp_session_id(&self, hb: OutLegHandle) -> u64 {
        self.offer
            .as_deref()
            .and_then(|t| SessionDescription::parse(t.as_bytes()).ok())
            .map_or(hb.get(), |s| s.session_id)
    }
}

/// The relay side a failed far leg held, for the leg that takes over.
#[derive(Clone, Debug)]
pub struct RelaySide {
    media_leg: u64,
    local: Option<SocketAddr>,
    offered: Vec<Codec>,
}

impl RelaySide {
    fn of(o: &OutLeg) -> RelaySide {
        RelaySide {
            media_leg: o.media_leg,
            local: o.local_media,
            offered: o.offered.clone(),
        }
    }
}

/// The Authorization (401) or Proxy-Authorization (407) header answering
/// the challenge in `resp` with `target`'s trunk credentials (RFC 3261
/// §22.2), for a request of `method`; `None` when there is nothing to
/// answer (another status, no credentials, no parsable challenge).
pub(super) fn digest_answer(
    resp: &Response,
    target: &OutTarget,
    method: &str,
    cnonce: &str,
) -> Option<(HeaderName, String)> {
    let (challenge_h, answer_h) = match resp.status {
        401 => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
        407 => (
            HeaderName::ProxyAuthenticate,
            HeaderName::ProxyAuthorization,
        ),
        _ => return None,
    };
    let (user, pass) = target.credentials.as_ref()?;
    let ch = Challenge::parse(resp.headers.get(&challenge_h)?).ok()?;
    let uri = target.uri.to_string();
    let creds = Credentials::answer(&ch, user, pass, method, &uri, cnonce);
    Some((answer_h, creds.encode()))
}

/// What a final failure of the far leg means for the caller: the cause in
/// the call record and the status the caller gets.
pub fn failure_outcome(status: u16) -> (&'static str, u16) {
    match status {
        486 | 600 => ("busy", 486),
        603 => ("declined", 603),
        408 | 480 => ("no_answer", 480),
        404 | 484 | 604 => ("not_found", 404),
        // Our own credentials failed: the caller can do nothing about it.
        401 | 407 => ("failed", 502),
        // RFC 3261 §16.7 item 6: a 5xx is not the caller's to retry here.
        500..=599 => ("failed", 502),
        s if (400..700).contains(&s) => ("failed", s),
        _ => ("failed", 502),
    }
}

impl Core {
    /// Where a number's forward target is reached: the trunk's outbound
    /// address when the number names a trunk, a registered user's live
    /// binding when the target is one of our SIP users, else the target
    /// URI's own host (an IP literal: the core does no DNS).
    pub(super) fn resolve_forward(
        &self,
        now: Instant,
        number: &Number,
    ) -> Result<OutTarget, &'static str> {
        let target = number.target.as_deref().ok_or("no forward target")?;
        let routing = self.routing.clone();
        if !target.contains(':')
            && let Some(user) = routing.user(target)
        {
            let now_ms = self.clock.unix_ms(now);
            let b = self
                .registrar
                .bindings_of(&user.username, now_ms)
                .into_iter()
                .next()
                .ok_or("user not registered")?;
            let uri = Uri::parse(&b.contact)
                .or_else(|_| NameAddr::parse(&b.contact).map(|n| n.uri))
                .map_err(|_| "bad binding contact")?;
            let local = self
                .listener_for(b.transport, b.source)
                .ok_or("no listener")?;
            return Ok(OutTarget {
                uri,
                peer: Peer {
                    transport: b.transport,
                    local,
                    remote: b.source,
                    conn: None,
                },
                credentials: None,
                via_trunk: false,
                media_security: domain::model::MediaSecurity::default(),
                cleartext_keying: false,
            });
        }
        let uri = Uri::parse(target).map_err(|_| "forward target is not a SIP URI")?;
        let trunk = number.trunk.as_deref().and_then(|t| routing.trunk(t));
        let via_trunk = trunk.is_some();
        let (media_security, cleartext_keying) = trunk.map_or(Default::default(), |t| {
            (t.trunk.media_security, t.trunk.srtp_cleartext_keying)
        });
        let (transport, remote, credentials) = match trunk {
            Some(t) => {
                if t.trunk.outbound_address.is_none() {
                    return Err("trunk has no outbound address");
                }
                let remote = t
                    .outbound_addr()
                    .ok_or("trunk outbound address is not IP:port")?;
                let transport = t
                    .transport()
                    .ok_or("trunk transport not supported for forwarding")?;
                // RFC 3261 §26.2: sips: is TLS on every hop, ours included.
                if uri.scheme == Scheme::Sips && transport != TransportKind::Tls {
                    return Err("a sips: target through a trunk that is not TLS");
                }
                let creds = t.trunk.username.clone().zip(t.trunk.password.clone());
                (transport, remote, creds)
            }
            None => {
                let ip = uri
                    .host
                    .as_ref()
                    .and_then(|h| h.ip())
                    .ok_or("forward target host is not an IP address")?;
                // Every way to a direct target ends here (numbers, REST and
                // AI transfers, a caller's REFER): the tenants' target
                // policy holds for all. Trunks are the operator's.
                if self.cfg.targets.check_ip(ip).is_err() {
                    return Err(
                        "forward target address is not allowed (api.allowed_target_networks)",
                    );
                }
                // RFC 3261 §26.2: a sips: target is reached over TLS only.
                let transport = match (uri.scheme, uri.transport_param().as_deref()) {
                    (Scheme::Sips, None | Some("tls" | "tcp")) => TransportKind::Tls,
                    (Scheme::Sips, Some(_)) => return Err("a sips: target needs TLS"),
                    (_, None | Some("udp")) => TransportKind::Udp,
                    (_, Some("tcp")) => TransportKind::Tcp,
                    (_, Some("tls")) => TransportKind::Tls,
                    (_, Some(_)) => return Err("target transport not supported"),
                };
                // §19.1.2: TLS defaults to 5061, whatever the scheme.
                let port = match (uri.port, transport) {
                    (Some(p), _) => p,
                    (None, TransportKind::Tls) => 5061,
                    (None, _) => uri.port_or_default(),
                };
                let remote = SocketAddr::new(ip, port);
                // TLS to an address is made with the settings of the trunk
                // that sends there (its client certificate among them):
                // only calls through that trunk may use them.
                if transport == TransportKind::Tls
                    && routing.trunks().any(|e| {
                        e.transport() == Some(TransportKind::Tls)
                            && e.outbound_addr() == Some(remote)
                    })
                {
                    return Err("the target is a TLS trunk's address: route through the trunk");
                }
                (transport, remote, None)
            }
        };
        let local = self
            .listener_for(transport, remote)
            .ok_or("no listener for the target's transport")?;
        let target = OutTarget {
            uri,
            peer: Peer {
                transport,
                local,
                remote,
                conn: None,
            },
            credentials,
            via_trunk,
            media_security,
            cleartext_keying,
        };
        target
            .keying_possible()
            .map_err(|_| "the trunk requires SRTP but SDES keys may not cross its signalling")?;
        Ok(target)
    }

    /// Our listener for requests of `transport` to `remote`.
    fn listener_for(&self, transport: TransportKind, remote: SocketAddr) -> Option<SocketAddr> {
        self.cfg
            .listeners
            .iter()
            .filter(|(t, a)| *t == transport && a.is_ipv4() == remote.is_ipv4())
            .map(|(_, a)| *a)
            .next()
    }

    /// Binds the relay for a forwarded call; the far INVITE leaves once
    /// its ports are known ([`MediaEvent::RelayOpened`]).
    pub(super) fn open_forward(
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
    pub(super) fn new_out_leg(
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
    pub(super) fn on_relay_opened(
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
    pub(super) fn place_far_leg(&mut self, now: Instant, hb: OutLegHandle, local: SocketAddr) {
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

    pub(super) fn schedule_out(&mut self, hb: OutLegHandle) {
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
    pub(super) fn send_out_invite(
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
    fn invite_sibling(o: &OutLeg, method: Method, to: &str, server: &str) -> Bytes {
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

    fn send_cancel(&mut self, now: Instant, hb: OutLegHandle) {
        let server = self.cfg.server_name.clone();
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        o.cancel_due = false;
        let bytes = Self::invite_sibling(o, Method::Cancel, &o.to, &server);
        let peer = o.target.peer;
        let branch = o
            .via
            .split(";branch=")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .unwrap_or_default()
            .to_string();
        // CANCEL shares the INVITE's branch (§9.1) but is its own
        // transaction: it is matched by method as well.
        self.start_client_request(
            now,
            peer,
            format!("{branch}|CANCEL"),
            bytes,
            txns::ClientPurpose::Cancel,
        );
    }

    /// Gives up the far leg while it rings: CANCEL now, or once a
    /// provisional response allows it (§9.1).
    fn abandon_out(&mut self, now: Instant, hb: OutLegHandle) {
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        if let Some(relay_a) = o.rebridge.take() {
            // An AI transfer given up: its relay goes too.
            self.out
                .push_back(Output::Media(MediaCommand::Close { leg: relay_a }));
        }
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        o.partner = None;
        // Nobody is left to tell how a transfer ended.
        o.transfer_of = None;
        o.ring_deadline = None;
        match o.state {
            OutState::Binding => {
                self.out_legs.remove(&hb);
            }
            OutState::Calling => {
                o.state = OutState::Ending;
                // §9.1: a far side that never answers the CANCEL or sends a
                // final is given up after 64*T1.
                o.ring_deadline = Some(now + self.cfg.timers.t64());
                if o.provisional {
                    self.send_cancel(now, hb);
                } else {
                    o.cancel_due = true;
                }
                self.schedule_out(hb);
            }
            OutState::Confirmed => {
                self.bye_out(now, hb);
                self.remove_out(hb);
            }
            OutState::Ending => {}
        }
    }

    /// The inbound call ended (BYE, CANCEL, media timeout, drain): the far
    /// leg goes too.
    pub(super) fn end_bridge(&mut self, now: Instant, hb: OutLegHandle) {
        self.abandon_out(now, hb);
    }

    pub(super) fn bye_out(&mut self, now: Instant, hb: OutLegHandle) {
        let Some(peer) = self
            .out_legs
            .get(&hb)
            .and_then(|o| o.dialog.as_ref())
            .map(|d| d.peer)
        else {
            return;
        };
        let (via, branch) = self.our_via(&peer);
        let server = self.cfg.server_name.clone();
        let Some(d) = self.out_legs.get_mut(&hb).and_then(|o| o.dialog.as_mut()) else {
            return;
        };
        let bytes = Bytes::from(d.request(Method::Bye, &via, &server).encode());
        self.start_client_request(now, peer, branch, bytes, txns::ClientPurpose::Bye);
    }

    /// The ring timeout of the far leg.
    pub(super) fn out_timer(&mut self, now: Instant, hb: OutLegHandle) {
        let t2 = self.cfg.timers.t2;
        if let Some(o) = self.out_legs.get_mut(&hb)
            && let Some(ok) = o.ok.as_mut()
        {
            let (resend, give_up) = ok.on_timer(now, t2);
            if give_up {
                o.ok = None;
            }
            let peer = o.dialog.as_ref().map(|d| d.peer);
            if let (Some(b), Some(p)) = (resend, peer) {
                self.transmit(p, b);
            }
            self.schedule_out(hb);
        }
        let (due, ending) = self.out_legs.get(&hb).map_or((false, false), |o| {
            (
                o.ring_deadline.is_some_and(|d| d <= now),
                o.state == OutState::Ending,
            )
        });
        if !due {
            return;
        }
        if ending {
            // No final response 64*T1 after we gave up: forget the leg.
            return self.remove_out(hb);
        }
        let (partner, transfer_of, rebridge) =
            self.out_legs.get_mut(&hb).map_or((None, None, None), |o| {
                (o.partner, o.transfer_of, o.rebridge.take())
            });
        if let Some(relay_a) = rebridge {
            self.abandon_out(now, hb);
            return self.rebridge_failed(now, partner, relay_a, "no_answer", 0);
        }
        if let Some(b) = transfer_of {
            // The transfer target did not answer: the transferor hears 480.
            self.abandon_out(now, hb);
            return self.transfer_outcome(now, partner, b, 480, "Temporarily Unavailable");
        }
        if self.out_legs.get(&hb).is_some_and(|o| o.replaces_caller) {
            self.abandon_out(now, hb);
            return self.caller_refer_failed(now, partner, 480, "Temporarily Unavailable");
        }
        let side = self.out_legs.get(&hb).map(RelaySide::of);
        self.abandon_out(now, hb);
        if let Some(h) = partner {
            self.fail_forwarded(now, h, "no_answer", 480, side);
        }
    }

    /// The far INVITE got no response at all (Timer B).
    pub(super) fn on_out_invite_timeout(&mut self, now: Instant, hb: OutLegHandle) {
        let Some(o) = self.out_legs.remove(&hb) else {
            return;
        };
        if let Some(b) = o.transfer_of {
            return self.transfer_outcome(now, o.partner, b, 408, "Request Timeout");
        }
        if o.replaces_caller {
            return self.caller_refer_failed(now, o.partner, 408, "Request Timeout");
        }
        if let Some(relay_a) = o.rebridge {
            return self.rebridge_failed(now, o.partner, relay_a, "unreachable", 0);
        }
        if let Some(h) = o.partner {
            self.fail_forwarded(now, h, "unreachable", 408, Some(RelaySide::of(&o)));
        }
    }

    /// The caller hears `status` for a forwarded call that was never
    /// answered (unless the number's fallback takes the call over on the
    /// relay side the failed leg held); an answered one gets a BYE.
    fn fail_forwarded(
        &mut self,
        now: Instant,
        h: CallHandle,
        cause: &str,
        status: u16,
        side: Option<RelaySide>,
    ) {
        if let Some(side) = side
            && self.try_fallback(now, h, side, cause)
        {
            return;
        }
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        call.bridge = None;
        if call.state != CallState::AwaitingMedia {
            return self.hangup(now, h, cause);
        }
        if let Some(txn) = call.invite_txn {
            let tag = call.dialog.key.local_tag.clone();
            self.metrics.reject(cause);
            self.respond(now, txn, status, None, Some(&tag), |b| b);
        }
        self.end_call(now, h, cause, status);
    }

    /// The number's fallback takes over an unanswered call whose far leg
    /// failed: a new far leg on the same relay side (once per call).
    fn try_fallback(&mut self, now: Instant, h: CallHandle, side: RelaySide, cause: &str) -> bool {
        let Some(local) = side.local else {
            return false;
        };
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        if call.state != CallState::AwaitingMedia {
            return false;
        }
        let Some(number) = call.fallback.take() else {
            return false;
        };
        let caller = uri_user(&call.dialog.remote_uri);
        let target = match self.resolve_forward(now, &number) {
            Ok(t) => t,
            Err(why) => {
                tracing::info!(why, "fallback target unavailable");
                return false;
            }
        };
        tracing::info!(cause, "far leg failed; trying the number's fallback");
        let hb = self.new_id();
        let leg = self.new_out_leg(h, target, &caller, 69, side.offered, side.media_leg);
        self.out_legs.insert(hb, leg);
        if let Some(c) = self.calls.get_mut(&h) {
            c.bridge = Some(hb);
        }
        self.place_far_leg(now, hb, local);
        true
    }

    /// A stream call whose AI cannot be reached goes to the number's
    /// fallback instead of the fallback status: its stream leg is closed
    /// and the call opens a relay toward the fallback, as a forwarded
    /// call. Needs the caller's SDP offer.
    pub(super) fn stream_to_fallback(&mut self, now: Instant, h: CallHandle) -> bool {
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        if call.state != CallState::AwaitingMedia || call.offer.is_none() {
            return false;
        }
        let Some(number) = call.fallback.take() else {
            return false;
        };
        let caller = uri_user(&call.dialog.remote_uri);
        let Ok(target) = self.resolve_forward(now, &number) else {
            return false;
        };
        let codecs = self.cfg.codecs.clone();
        let Some(keying) = self.calls.get(&h).map(|c| c.keying.clone()) else {
            return false;
        };
        let probe = self.local_media(0, 0, 0, &keying);
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        let Some(offer) = call.offer.as_ref() else {
            return false;
        };
        let Ok((_, n)) = sdp::answer(offer, &probe, &codecs) else {
            return false;
        };
        call.codecs = codecs;
        call.negotiated = Some(n);
        call.stream_wait = None;
        call.media_open = false;
        call.local_media = None;
        tracing::info!("AI unreachable; trying the number's fallback");
        self.out
            .push_back(Output::Media(MediaCommand::Close { leg: h.own_leg() }));
        self.open_forward(h, target, &caller, 69);
        true
    }

    /// A response to the far INVITE, delivered by its client transaction.
    pub(super) fn on_out_response(
        &mut self,
        now: Instant,
        hb: OutLegHandle,
        txn: TxnId,
        resp: Response,
    ) {
        let server = self.cfg.server_name.clone();
        let cnonce = self.random_hex(8);
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        if o.invite_txn != Some(txn) {
            return;
        }
        let status = resp.status;
        if status < 200 {
            // Any provisional, 100 included, allows CANCEL (§9.1).
            o.provisional = true;
            if o.cancel_due && o.provisional {
                return self.send_cancel(now, hb);
            }
            if o.state == OutState::Calling && status > 100 {
                self.out_provisional(now, hb, &resp);
            }
            return;
        }
        if status < 300 {
            return self.out_answered(now, hb, &resp);
        }
        // A non-2xx final: the transaction's ACK (§17.1.1.3).
        let to = resp
            .headers
            .get(&HeaderName::To)
            .unwrap_or_default()
            .to_string();
        let ack = Self::invite_sibling(o, Method::Ack, &to, &server);
        let peer = o.target.peer;
        if let Some(e) = self.txns.client.get_mut(&txn) {
            e.txn.set_ack(ack.clone());
        }
        self.transmit(peer, ack);
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        // A redirection (§8.1.3.4): the INVITE goes again, to the first
        // Contact, a few times at most. Through a trunk it still leaves
        // for the trunk; otherwise to the Contact's own host (an IP).
        if (300..400).contains(&status)
            && o.state == OutState::Calling
            && o.redirects < MAX_REDIRECTS
            && let Some(uri) = resp
                .headers
                .get(&HeaderName::Contact)
                .and_then(|c| NameAddr::parse(c.split(',').next().unwrap_or(c)).ok())
                .map(|n| n.uri)
        {
            let peer = if o.target.via_trunk {
                Some(o.target.peer)
            } else {
                uri.host.as_ref().and_then(|h| h.ip()).map(|ip| Peer {
                    remote: SocketAddr::new(ip, uri.port_or_default()),
                    ..o.target.peer
                })
            };
            if let Some(peer) = peer
                && peer.remote.is_ipv4() == o.target.peer.remote.is_ipv4()
            {
                tracing::info!(status, target = %uri, "far leg redirected");
                o.redirects += 1;
                o.cseq += 1;
                o.provisional = false;
                o.to = format!("<{uri}>");
                o.target.uri = uri;
                o.target.peer = peer;
                return self.send_out_invite(now, hb, None);
            }
        }
        if o.state == OutState::Calling
            && !o.auth_tried
            && let Some(auth) = digest_answer(&resp, &o.target, "INVITE", &cnonce)
        {
            o.auth_tried = true;
            o.cseq += 1;
            o.provisional = false;
            return self.send_out_invite(now, hb, Some(auth));
        }
        let Some(o) = self.out_legs.remove(&hb) else {
            return;
        };
        if let Some(b) = o.transfer_of {
            return self.transfer_outcome(now, o.partner, b, status, &resp.reason);
        }
        if o.replaces_caller {
            return self.caller_refer_failed(now, o.partner, status, &resp.reason);
        }
        if let Some(relay_a) = o.rebridge {
            return self.rebridge_failed(
                now,
                o.partner,
                relay_a,
                failure_outcome(status).0,
                status,
            );
        }
        if let Some(h) = o.partner {
            let (cause, to_caller) = failure_outcome(status);
            tracing::info!(status, cause, "forwarded call's far leg failed");
            self.fail_forwarded(now, h, cause, to_caller, Some(RelaySide::of(&o)));
        }
    }

    /// 180/183 from the far leg: ringing, or early media when it carries
    /// SDP (the caller then hears the far side's announcements and
    /// ringback before the answer).
    fn out_provisional(&mut self, now: Instant, hb: OutLegHandle, resp: &Response) {
        let outbound = self
            .out_legs
            .get(&hb)
            .and_then(|o| super::originate::places_outbound_call(self, o));
        if let Some(h) = outbound {
            // An outbound call: nobody to pass ringing or early media to;
            // its status webhook hears `ringing` once.
            if let Some(o) = self.out_legs.get_mut(&hb)
                && !o.ringing_sent
            {
                o.ringing_sent = true;
                self.status_changed(now, h, "ringing");
            }
            // Early media: its SDP is the answer (RFC 3261 §13.2.1), which
            // a 2xx without a body then confirms.
            if !resp.body.is_empty() {
                self.far_answer(hb, resp);
            }
            return;
        }
        if self
            .out_legs
            .get(&hb)
            .is_some_and(|o| o.rebridge.is_some() || o.transfer_of.is_some() || o.replaces_caller)
        {
            // An AI transfer (the caller is still with the AI) or a far-side
            // transfer (the transferor still holds the relay side): the
            // target's ringing and early media are not passed on.
            return;
        }
        let early = if resp.body.is_empty() {
            None
        } else {
            self.far_answer(hb, resp)
        };
        let Some(h) = self.out_legs.get(&hb).and_then(|o| o.partner) else {
            return;
        };
        match early {
            Some(codec) => {
                if self.bridge_codec(h, codec).is_none() {
                    return;
                }
                self.send_caller_sdp(now, h, 183);
            }
            None => {
                let Some(o) = self.out_legs.get_mut(&hb) else {
                    return;
                };
                if o.ringing_sent {
                    return;
                }
                o.ringing_sent = true;
                self.send_caller_provisional(now, h, resp.status);
            }
        }
    }

    /// Reads the far leg's SDP answer (in a 18x or the 2xx) and points the
    /// relay's far side at it. Returns the codec it chose.
    fn far_answer(&mut self, hb: OutLegHandle, resp: &Response) -> Option<Codec> {
        let o = self.out_legs.get_mut(&hb)?;
        let answer = parse_sdp(&resp.body).ok()?;
        let ours = parse_sdp(o.offer.as_deref()?.as_bytes()).ok()?;
        let n = negotiated_from_answer(&answer, &o.offered, &ours)?;
        let media = leg_media(&n);
        let changed = o.negotiated.as_ref().map(leg_media) != Some(media);
        let codec = n.codec;
        let leg = o.media_leg;
        o.negotiated = Some(n);
        if changed {
            self.out
                .push_back(Output::Media(MediaCommand::Update { leg, media }));
        }
        Some(codec)
    }

    /// A caller not answered yet uses the codec the far side chose, so the
    /// relay passes payloads untouched: re-negotiates the caller's answer
    /// to it. An answered caller keeps its codec and the relay transcodes.
    fn bridge_codec(&mut self, h: CallHandle, codec: Codec) -> Option<()> {
        let shared = self.far_key_to_share(h);
        let call = self.calls.get_mut(&h)?;
        if call.state != CallState::AwaitingMedia {
            // An answered caller keeps its codec (a transfer target may
            // answer with another) and its keys: the relay transcodes and
            // re-encrypts.
            return Some(());
        }
        if call.codecs == [codec] && call.keying.shared == shared {
            return Some(());
        }
        call.keying.shared = shared;
        let call = self.calls.get(&h)?;
        let lm = self.local_media(
            call.local_media.map_or(0, |l| l.port()),
            h.get(),
            1,
            &call.keying,
        );
        let call = self.calls.get_mut(&h)?;
        let offer = call.offer.as_ref()?;
        let (_, n) = sdp::answer(offer, &lm, &[codec]).ok()?;
        call.codecs = vec![codec];
        let media = leg_media(&n);
        if call.negotiated.as_ref().map(leg_media) != Some(media) {
            call.negotiated = Some(n);
            self.out.push_back(Output::Media(MediaCommand::Update {
                leg: h.own_leg(),
                media,
            }));
        }
        Some(())
    }

    /// The key the caller's answer may declare as ours: the far side's,
    /// when the far leg was offered the caller's own key and answered in
    /// the same suite (keys shared end to end, [`Self::caller_key_to_share`]).
    fn far_key_to_share(&self, h: CallHandle) -> Option<(SrtpSuite, SrtpKey)> {
        let call = self.calls.get(&h)?;
        let o = self.out_legs.get(&call.bridge?)?;
        let (suite, offered) = o.keying.shared?;
        let far = o.negotiated.as_ref()?.srtp?;
        let caller = call.negotiated.as_ref()?.srtp?;
        (far.suite == suite && far.local == offered && caller.suite == suite)
            .then_some((suite, far.remote))
    }

    fn send_caller_provisional(&mut self, now: Instant, h: CallHandle, status: u16) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let (Some(txn), tag, peer) = (
            call.invite_txn,
            call.dialog.key.local_tag.clone(),
            call.dialog.peer,
        ) else {
            return;
        };
        let contact = self.contact_for(&peer, call.callee_user.as_deref(), call.dialog.secure);
        self.respond(now, txn, status, None, Some(&tag), |b| {
            b.header(HeaderName::Contact, contact)
        });
    }

    /// A 183 with our answer to the caller's offer (early media).
    fn send_caller_sdp(&mut self, now: Instant, h: CallHandle, status: u16) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let Some(local) = call.local_media else {
            return;
        };
        let lm = self.local_media(local.port(), h.get(), 1, &call.keying);
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let (Some(txn), Some(offer)) = (call.invite_txn, call.offer.as_ref()) else {
            return;
        };
        let Ok((sdp, _)) = sdp::answer(offer, &lm, &call.codecs) else {
            return;
        };
        call.local_sdp = Some(sdp.clone());
        let body = sdp.encode();
        let tag = call.dialog.key.local_tag.clone();
        let peer = call.dialog.peer;
        let user = call.callee_user.clone();
        let contact = self.contact_for(&peer, user.as_deref(), self.sips_dialog(h));
        self.respond(now, txn, status, None, Some(&tag), |b| {
            b.header(HeaderName::Contact, contact)
                .body("application/sdp", body)
        });
    }

    /// The far leg answered: ACK it, point the relay at it and answer the
    /// caller with the same codec.
    fn out_answered(&mut self, now: Instant, hb: OutLegHandle, resp: &Response) {
        let server = self.cfg.server_name.clone();
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        if let Some(ack) = &o.ack {
            let same_dialog = o
                .dialog
                .as_ref()
                .is_some_and(|d| Some(d.key.remote_tag.as_str()) == resp.core.to.tag());
            let peer = o.dialog.as_ref().map_or(o.target.peer, |d| d.peer);
            if same_dialog {
                // A retransmitted 2xx: our ACK was lost (§13.2.2.4).
                let ack = ack.clone();
                return self.transmit(peer, ack);
            }
            // A 2xx from another fork of the INVITE: that dialog is ACKed
            // and ended at once; the call stays with the first (§13.2.2.4).
            let mut fork = Dialog::from_response(resp, &o.from, &o.local_tag, o.cseq, peer);
            let cseq = o.cseq;
            let (via, _) = self.our_via(&peer);
            let ack = Bytes::from(fork.ack(cseq, &via, &server).encode());
            self.transmit(peer, ack);
            let (via, branch) = self.our_via(&peer);
            let bye = Bytes::from(fork.request(Method::Bye, &via, &server).encode());
            return self.start_client_request(now, peer, branch, bye, txns::ClientPurpose::Bye);
        }
        let mut peer = o.target.peer;
        if peer.transport.is_reliable() {
            peer.conn = None;
        }
        let mut dialog = Dialog::from_response(resp, &o.from, &o.local_tag, o.cseq, peer);
        // §12.1.2: a dialog made by our sips: request is a SIPS one.
        dialog.secure |= o.target.uri.scheme == Scheme::Sips;
        let cseq = o.cseq;
        let (via, _) = self.our_via(&peer);
        let ack = Bytes::from(dialog.ack(cseq, &via, &server).encode());
        self.dialogs
            .insert(dialog.key.clone(), DialogOwner::OutLeg(hb));
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        o.ack = Some(ack.clone());
        o.dialog = Some(dialog);
        o.ring_deadline = None;
        let abandoned = o.state == OutState::Ending || o.partner.is_none();
        o.state = OutState::Confirmed;
        self.transmit(peer, ack);
        if abandoned {
            // The caller left while the far side picked up (§15: a 2xx
            // after CANCEL still makes a dialog, which we end).
            self.bye_out(now, hb);
            self.remove_out(hb);
            return;
        }
        let Some(h) = self.out_legs.get(&hb).and_then(|o| o.partner) else {
            return;
        };
        let codec = if resp.body.is_empty() {
            // The answer came in early media (a 2xx need not repeat it).
            self.out_legs
                .get(&hb)
                .and_then(|o| o.negotiated.as_ref().map(|n| n.codec))
        } else {
            self.far_answer(hb, resp)
        };
        if self.out_legs.get(&hb).is_some_and(|o| o.rebridge.is_some()) {
            // An AI transfer: the target was offered the caller's codec.
            if codec.is_some() {
                return self.rebridge_completed(now, h, hb);
            }
            self.bye_out(now, hb);
            let relay_a = self.out_legs.get_mut(&hb).and_then(|o| o.rebridge.take());
            self.remove_out(hb);
            if let Some(relay_a) = relay_a {
                self.rebridge_failed(now, Some(h), relay_a, "failed", 488);
            }
            return;
        }
        if self.out_legs.get(&hb).is_some_and(|o| o.replaces_caller) {
            if codec.is_some() {
                return self.caller_replaced(now, h, hb);
            }
            self.bye_out(now, hb);
            self.remove_out(hb);
            return self.caller_refer_failed(now, Some(h), 488, "Not Acceptable Here");
        }
        let outbound = self
            .out_legs
            .get(&hb)
            .and_then(|o| super::originate::places_outbound_call(self, o))
            .is_some();
        if outbound {
            if codec.is_some() {
                return self.originate_answered(now, h, hb);
            }
            tracing::info!("callee answered with no usable SDP");
            self.bye_out(now, hb);
            self.remove_out(hb);
            return self.fail_forwarded(now, h, "not_acceptable", 488, None);
        }
        let bridged = codec.and_then(|c| self.bridge_codec(h, c));
        if bridged.is_none() {
            tracing::info!("far leg answered with no usable SDP");
            self.bye_out(now, hb);
            self.remove_out(hb);
            return self.fail_forwarded(now, h, "not_acceptable", 488, None);
        }
        if let Some(b) = self.out_legs.get(&hb).and_then(|o| o.transfer_of) {
            return self.transfer_completed(now, h, hb, b);
        }
        let answered = self
            .calls
            .get(&h)
            .is_some_and(|c| c.state != CallState::AwaitingMedia);
        if !answered {
            self.answer(now, h);
        }
    }

    pub(super) fn remove_out(&mut self, hb: OutLegHandle) {
        if let Some(o) = self.out_legs.remove(&hb)
            && let Some(d) = o.dialog
            // An outbound call took the dialog over at its answer.
            && self.dialogs.get(&d.key) == Some(&DialogOwner::OutLeg(hb))
        {
            self.dialogs.remove(&d.key);
        }
    }

    /// A request inside the far leg's dialog.
    pub(super) fn on_out_in_dialog(
        &mut self,
        now: Instant,
        id: TxnId,
        hb: OutLegHandle,
        req: &Request,
    ) {
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return self.reply(now, id, 481, None);
        };
        let tag = o.local_tag.clone();
        if let Some(d) = o.dialog.as_mut()
            && d.accept_remote_cseq(req).is_err()
        {
            return self.respond(
                now,
                id,
                500,
                Some("Server Internal Error (CSeq out of order)"),
                Some(&tag),
                |b| b,
            );
        }
        match req.method {
            Method::Bye => {
                self.respond(now, id, 200, None, Some(&tag), |b| b);
                let partner = self.out_legs.get(&hb).and_then(|o| o.partner);
                self.remove_out(hb);
                if let Some(h) = partner {
                    // Only a transfer this far leg asked for replaces it.
                    let own_transfer = self
                        .calls
                        .get(&h)
                        .and_then(|c| c.transfer)
                        .and_then(|hc| self.out_legs.get(&hc))
                        .is_some_and(|o| o.transfer_of == Some(hb));
                    if let Some(c) = self.calls.get_mut(&h) {
                        c.bridge = None;
                    }
                    // A blind transferor hangs up once it has its 202: the
                    // caller stays for the transfer target.
                    if !own_transfer {
                        self.hangup(now, h, "callee_hangup");
                    }
                }
            }
            Method::Invite | Method::Update => self.out_session_update(now, id, hb, &tag, req),
            Method::Refer => self.on_refer(now, id, hb, &tag, req),
            Method::Options | Method::Info => self.respond(now, id, 200, None, Some(&tag), |b| b),
            _ => self.respond(now, id, 405, None, Some(&tag), |b| {
                b.header(HeaderName::Allow, ALLOW)
            }),
        }
    }

    /// Our 2xx to the far side's re-INVITE (server transaction `id`) is
    /// resent until its ACK (§13.3.1.4).
    fn far_ok_sent(&mut self, now: Instant, hb: OutLegHandle, id: TxnId) {
        let reliable = self
            .out_legs
            .get(&hb)
            .and_then(|o| o.dialog.as_ref())
            .is_some_and(|d| d.peer.transport.is_reliable());
        let ok = self.ok_retransmit(now, id, reliable);
        if let Some(o) = self.out_legs.get_mut(&hb) {
            o.ok = ok;
        }
        self.schedule_out(hb);
    }

    /// A re-INVITE or UPDATE from the far side (hold, new address): answered
    /// on this leg with the bridged codec; the relay follows.
    fn out_session_update(
        &mut self,
        now: Instant,
        id: TxnId,
        hb: OutLegHandle,
        tag: &str,
        req: &Request,
    ) {
        let advertised = self.cfg.advertised_ip;
        let Some(o) = self.out_legs.get_mut(&hb) else {
            return;
        };
        let keying = o.keying.clone();
        if req.method == Method::Invite && o.reinvite_out.is_some() {
            // §14.2: our own re-INVITE is in flight on this dialog.
            return self.respond(now, id, 491, None, Some(tag), |b| b);
        }
        if let Some(d) = o.dialog.as_mut() {
            d.refresh_target(req);
        }
        let codec = o.negotiated.as_ref().map(|n| n.codec);
        o.sdp_version += 1;
        let lm = LocalMedia {
            addr: advertised,
            port: o.local_media.map_or(0, |l| l.port()),
            session_id: o.sdp_session_id(hb),
            session_version: o.sdp_version,
            keying,
        };
        let codecs: Vec<Codec> = codec.into_iter().collect();
        let all_codecs = self.cfg.codecs.clone();
        let contact = o.contact.clone();
        if req.body.is_empty() {
            if req.method == Method::Update {
                return self.respond(now, id, 200, None, Some(tag), |b| b);
            }
            // An offerless re-INVITE: we offer, the ACK answers (the
            // relay keeps its current target meanwhile).
            let offer = local_offer(&codecs, &lm).encode();
            self.respond(now, id, 200, None, Some(tag), |b| {
                b.header(HeaderName::Contact, contact)
                    .body("application/sdp", offer)
            });
            return self.far_ok_sent(now, hb, id);
        }
        let offer = match parse_sdp(&req.body) {
            Ok(o) => o,
            Err(why) => {
                let phrase = format!("Bad Request ({why})");
                return self.respond(now, id, 400, Some(&phrase), Some(tag), |b| b);
            }
        };
        let answered = match codec {
            // The far side may change codec: the relay transcodes.
            Some(c) => super::negotiation::answer_relayed(&offer, &lm, c, &all_codecs),
            None => sdp::answer(&offer, &lm, &codecs),
        };
        match answered {
            Ok((answer, n)) => {
                let media = leg_media(&n);
                let offered = n.direction.reverse();
                let mut leg = hb.own_leg();
                if let Some(o) = self.out_legs.get_mut(&hb) {
                    o.negotiated = Some(n);
                    leg = o.media_leg;
                }
                self.out
                    .push_back(Output::Media(MediaCommand::Update { leg, media }));
                let body = answer.encode();
                self.respond(now, id, 200, None, Some(tag), |b| {
                    b.header(HeaderName::Contact, contact)
                        .body("application/sdp", body)
                });
                if req.method == Method::Invite {
                    self.far_ok_sent(now, hb, id);
                }
                self.propagate_direction(now, super::hold::BridgeSide::Far(hb), offered);
            }
            Err(e) => {
                self.respond(now, id, 488, None, Some(tag), |b| {
                    b.header(HeaderName::Warning, e.warning())
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::failure_outcome;

    #[test]
    fn far_failures_map_to_defined_outcomes() {
        assert_eq!(failure_outcome(486), ("busy", 486));
        assert_eq!(failure_outcome(600), ("busy", 486));
        assert_eq!(failure_outcome(603), ("declined", 603));
        assert_eq!(failure_outcome(480), ("no_answer", 480));
        assert_eq!(failure_outcome(408), ("no_answer", 480));
        assert_eq!(failure_outcome(404), ("not_found", 404));
        assert_eq!(failure_outcome(407), ("failed", 502));
        assert_eq!(failure_outcome(503), ("failed", 502));
        assert_eq!(failure_outcome(415), ("failed", 415));
    }
}
