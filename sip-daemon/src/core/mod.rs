//! The signalling core: a sans-IO SIP user agent server and B2BUA.
//!
//! Fed with parsed messages, media events and the current time; returns
//! [`Output`]s (bytes to send, media commands, CDR and registration
//! changes) and its next deadline. It never touches a socket, the clock or
//! the database, so every flow is testable on virtual time.

pub mod ai_transfer;
pub mod auth_guard;
pub mod call;
pub mod caller_refer;
mod capacity;
pub mod dialog;
pub mod fork;
pub mod forward;
pub mod handles;
pub mod hold;
mod negotiation;
pub mod originate;
pub mod registrar;
pub mod resume;
pub mod sms;
pub mod stream;
pub mod transfer;
pub mod txns;
pub mod webhook;

use crate::metrics::{Metrics, status_class};
use crate::routing::RoutingTable;
use crate::sip::build::{self, MessageBuilder};
use crate::sip::digest::NonceSigner;
use crate::sip::header::HeaderName;
use crate::sip::parse::ParseError;
use crate::sip::sdp::SessionDescription;
use crate::sip::timers::TimerConfig;
use crate::sip::transaction::{
    ClientTransaction, ResponseAction, ServerTransaction, TimerEvent, TxnKind,
};
use crate::sip::transport::{Peer, Transmit, TransportKind};
use crate::sip::{Method, Request, Response, SipMessage};
use auth_guard::Lockout;
use bytes::Bytes;
use call::Call;
use dialog::DialogKey;
use domain::model::{CdrEvent, Registration};
pub use handles::{CallHandle, DialogOwner, OutLegHandle, SmsHandle, TxnId};
use media_userspace::codec::Codec;
use media_userspace::control::{LegId, MediaCommand, MediaEvent};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use registrar::{AuthRefusal, RegisterOutcome, Registrar, RegistrarConfig, RegistrationChange};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use txns::{MergeKey, ServerEntry, TxnKey, TxnTables};

/// Methods we implement (Allow header, §20.5).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, MESSAGE";
/// Option tags we support (Supported header, §20.37; RFC 4028 "timer").
pub const SUPPORTED: &[&str] = &["timer"];
/// Bodies we understand.
pub const ACCEPT: &str = "application/sdp";

#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub timers: TimerConfig,
    /// Server / User-Agent header value.
    pub server_name: String,
    pub registrar: RegistrarConfig,
    /// Key for stateless digest nonces (shared by nodes of one cluster).
    pub auth_secret: Vec<u8>,
    pub nonce_lifetime_secs: u64,
    /// RFC 4028 Min-SE we accept.
    pub min_se: u32,
    /// Codecs we answer with, in no particular order (the offer decides).
    pub codecs: Vec<Codec>,
    /// Address written into SDP and used when a listener is bound to an
    /// unspecified address.
    pub advertised_ip: IpAddr,
    /// End a call when no RTP arrives for this long.
    pub media_timeout: Duration,
    pub stream: StreamSettings,
    pub forward: forward::ForwardSettings,
    /// Our bound listeners: requests we originate (forwarded calls) leave
    /// from the one matching the target's transport and address family.
    pub listeners: Vec<(TransportKind, SocketAddr)>,
    /// When a voice webhook fails (error, timeout, bad answer): take the
    /// number's own route (true) or refuse the call with 503 (false).
    pub voice_fallback_to_route: bool,
    /// This node's name in the store: bridged calls are kept resumable
    /// under it ([`resume`]). `None`: no snapshots.
    pub resume_node: Option<String>,
    /// Per-number and per-trunk call limits hold across the nodes sharing
    /// the store: an INVITE within this node's count also reserves its
    /// slots in the store ([`Output::ReserveCapacity`]) before it goes on.
    pub cluster_limits: bool,
    /// UDP responses go to the request's source port whether or not its
    /// Via has `rport` (RFC 3581 behaviour for every request).
    pub symmetric_responses: bool,
    /// What a request from a source that is no trunk and no registered
    /// user gets (REGISTER aside, and requests in one of our dialogs).
    pub unknown_sources: UnknownSources,
    /// Server and client transactions held at once; beyond, 503.
    pub max_transactions: usize,
    /// Calls and far legs held at once; beyond, a new INVITE gets 503.
    pub max_dialogs: usize,
    /// INVITEs from registered users (not trunks) must carry digest
    /// credentials of the user registered at that address (407 otherwise).
    pub challenge_invites: bool,
    /// Where direct (not through a trunk) forward targets may be.
    pub targets: api::targets::TargetPolicy,
}

/// The answer to a request from an unknown source: never a transaction,
/// so it costs one datagram at most and nothing is retransmitted to a
/// spoofable address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSources {
    /// A single stateless 403.
    Reject,
    /// Nothing at all.
    Drop,
}

/// How calls on route `stream` reach the AI.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// The call is answered once the socket is up; this long at most.
    pub answer_timeout: Duration,
    /// Status for a call whose AI could not be reached in time.
    pub fallback_status: u16,
    pub reconnect_window: Duration,
    pub keepalive: Duration,
    pub max_frame_bytes: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            answer_timeout: Duration::from_secs(5),
            fallback_status: 503,
            reconnect_window: Duration::from_secs(5),
            keepalive: Duration::from_secs(10),
            max_frame_bytes: 1 << 20,
        }
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            timers: TimerConfig::default(),
            server_name: concat!("voice-gateway/", env!("CARGO_PKG_VERSION")).into(),
            registrar: RegistrarConfig {
                realm: "voice-gateway".into(),
                min_expires: 60,
                max_expires: 3600,
                default_expires: 3600,
                max_bindings_per_user: 10,
                algorithms: vec![
                    crate::sip::digest::Algorithm::Sha256,
                    crate::sip::digest::Algorithm::Md5,
                ],
                guard: auth_guard::AuthGuardConfig::default(),
            },
            auth_secret: b"change-me".to_vec(),
            nonce_lifetime_secs: 300,
            min_se: 90,
            codecs: Codec::ALL.to_vec(),
            advertised_ip: IpAddr::from([127, 0, 0, 1]),
            media_timeout: Duration::from_secs(60),
            stream: StreamSettings::default(),
            forward: forward::ForwardSettings::default(),
            listeners: Vec::new(),
            voice_fallback_to_route: true,
            resume_node: None,
            cluster_limits: false,
            symmetric_responses: true,
            unknown_sources: UnknownSources::Reject,
            max_transactions: 65_536,
            max_dialogs: 65_536,
            challenge_invites: false,
            targets: api::targets::TargetPolicy::allow_all(),
        }
    }
}

/// What the core asks the edges to do.
#[derive(Debug, Clone)]
pub enum Output {
    Transmit(Transmit),
    Media(MediaCommand),
    Cdr(CdrEvent),
    Registration(RegistrationChange),
    /// Ask the number's voice webhook; answer with
    /// [`Core::handle_voice_answer`].
    VoiceWebhook {
        call: CallHandle,
        url: String,
        request: api::webhook::VoiceRequest,
    },
    /// An SMS to store and report (its webhook, signed and retried).
    SmsReceived {
        record: domain::model::MessageRecord,
        webhook: Option<String>,
    },
    /// An SMS we send, to store as `queued` before its status.
    SmsQueued(domain::model::MessageRecord),
    /// A source was locked out for failed authentications for `secs`: the
    /// edge may drop its SIP earlier still (the XDP guard's deny set).
    SourceLockedOut {
        source: IpAddr,
        secs: u64,
    },
    /// How an SMS we send went: `sent` or `failed` (with the status).
    SmsStatus {
        id: String,
        status: &'static str,
        sip_status: u16,
    },
    /// POST a call's status change (in the background, retried).
    StatusWebhook {
        url: String,
        event: api::webhook::StatusEvent,
    },
    /// Reserve one slot of each `(scope, limit)` for call `sid` in the
    /// store, all or none; answer with [`Core::handle_capacity`].
    ReserveCapacity {
        call: CallHandle,
        sid: String,
        scopes: Vec<(String, u32)>,
    },
    /// Release call `sid`'s reservations.
    ReleaseCapacity {
        sid: String,
    },
}

/// Maps the core's monotonic time to wall-clock time for records.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    pub base: Instant,
    pub base_unix_ms: i64,
}

impl WallClock {
    /// Wall-clock time of `now`, which may precede `base` (a restored
    /// call answered in a previous run).
    pub fn unix_ms(&self, now: Instant) -> i64 {
        match now.checked_duration_since(self.base) {
            Some(d) => self.base_unix_ms + d.as_millis() as i64,
            None => self.base_unix_ms - (self.base - now).as_millis() as i64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(TxnId),
    Client(TxnId),
    Call(CallHandle),
    /// Ring timeout of a forwarded call's far leg.
    Out(OutLegHandle),
    /// 200 ms after an INVITE: send 100 Trying unless a response left
    /// already (RFC 3261 §17.2.1).
    Trying(TxnId),
    Sweep,
    /// Save the snapshots of bridged calls that changed ([`resume`]).
    Snapshots,
}

/// Interval of registrar sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub struct Core {
    cfg: CoreConfig,
    routing: Arc<RoutingTable>,
    metrics: Metrics,
    clock: WallClock,
    rng: SmallRng,
    /// SRTP master keys come from here: a CSPRNG seeded by the OS (tags
    /// and branches need no secrecy, keys do).
    key_rng: rand::rngs::StdRng,
    next_id: u64,
    /// Counter inside call ids (see `new_call_sid`).
    sid_seq: u16,
    /// SMS we are sending, until their MESSAGE is answered.
    sms_out: HashMap<SmsHandle, sms::SmsOut>,
    txns: TxnTables,
    calls: HashMap<CallHandle, Call>,
    /// Far legs of forwarded calls, by media leg handle.
    out_legs: HashMap<OutLegHandle, forward::OutLeg>,
    dialogs: HashMap<DialogKey, DialogOwner>,
    registrar: Registrar,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    out: VecDeque<Output>,
    draining: bool,
    cdr_saturated: bool,
    active_by_number: HashMap<String, u32>,
    active_by_trunk: HashMap<String, u32>,
    /// Calls whose snapshot the store holds, with its fingerprint.
    resumable: HashMap<CallHandle, u64>,
    /// Restored calls whose relay is not adopted yet.
    restoring: HashSet<CallHandle>,
    /// Stopping for a restart: resumable calls are left to the next run.
    handing_over: bool,
}

impl Core {
    pub fn new(
        cfg: CoreConfig,
        routing: Arc<RoutingTable>,
        metrics: Metrics,
        clock: WallClock,
        seed: u64,
    ) -> Core {
        let signer = NonceSigner::new(&cfg.auth_secret, cfg.nonce_lifetime_secs);
        let registrar = Registrar::new(
            cfg.registrar.clone(),
            signer,
            cfg.nonce_lifetime_secs,
            seed.rotate_left(17),
        );
        let mut core = Core {
            cfg,
            routing,
            metrics,
            clock,
            rng: SmallRng::seed_from_u64(seed),
            key_rng: rand::rngs::StdRng::from_os_rng(),
            next_id: 1,
            txns: TxnTables::default(),
            calls: HashMap::new(),
            out_legs: HashMap::new(),
            dialogs: HashMap::new(),
            registrar,
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            draining: false,
            sid_seq: 0,
            sms_out: HashMap::new(),
            cdr_saturated: false,
            active_by_number: HashMap::new(),
            active_by_trunk: HashMap::new(),
            resumable: HashMap::new(),
            restoring: HashSet::new(),
            handing_over: false,
        };
        core.schedule(clock.base + SWEEP_EVERY, TimerRef::Sweep);
        if core.cfg.resume_node.is_some() {
            core.schedule(clock.base + resume::SAVE_EVERY, TimerRef::Snapshots);
        }
        core
    }

    /// Replaces the routing table (after a store change).
    pub fn set_routing(&mut self, routing: Arc<RoutingTable>) {
        self.routing = routing;
    }

    pub fn load_registrations(&mut self, regs: Vec<Registration>) {
        self.registrar.load(regs);
        self.metrics
            .registrations_active
            .set(self.registrar.count() as i64);
    }

    /// Every binding in the store, from the other nodes' side: merged as
    /// theirs (reachable, not trusted by source here).
    pub fn merge_remote_registrations(&mut self, regs: Vec<Registration>) {
        self.registrar.merge_remote(regs);
        self.metrics
            .registrations_active
            .set(self.registrar.count() as i64);
    }

    /// A registration change another node announced.
    pub fn apply_registration_change(&mut self, change: registrar::RegistrationChange) {
        self.registrar.apply(change);
        self.metrics
            .registrations_active
            .set(self.registrar.count() as i64);
    }

    /// The CDR queue is (no longer) over capacity: new calls are refused
    /// while it is, so no record is ever dropped.
    pub fn set_cdr_saturated(&mut self, saturated: bool) {
        self.cdr_saturated = saturated;
    }

    /// Stop accepting new calls (SIGTERM); calls in progress continue.
    pub fn start_drain(&mut self) {
        self.draining = true;
        self.metrics.draining.set(1);
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Hangs up every call (end of a drain).
    pub fn hangup_all(&mut self, now: Instant, cause: &str) {
        let handles: Vec<CallHandle> = self.calls.keys().copied().collect();
        for h in handles {
            self.hangup(now, h, cause);
        }
    }

    /// The handle of the live call `sid`.
    fn live_call(&self, sid: &str) -> Option<CallHandle> {
        self.calls.values().find(|c| c.sid == sid).map(|c| c.handle)
    }

    fn control_dtmf(
        &mut self,
        h: CallHandle,
        digits: &str,
        duration_ms: u32,
    ) -> api::control::ControlOutcome {
        use api::control::ControlOutcome;
        let Some(call) = self.calls.get(&h) else {
            return ControlOutcome::NotLive;
        };
        if call.state == call::CallState::AwaitingMedia {
            return ControlOutcome::Refused("the call is not answered yet");
        }
        if call.bridge.is_some() || call.media_leg != h.own_leg() {
            return ControlOutcome::Refused(
                "DTMF is played on calls with an AI stream; this call is relayed",
            );
        }
        for digit in digits.chars() {
            self.out.push_back(Output::Media(MediaCommand::SendDtmf {
                leg: h.own_leg(),
                digit,
                duration_ms,
            }));
        }
        ControlOutcome::Accepted
    }

    fn control_transfer(
        &mut self,
        now: Instant,
        h: CallHandle,
        to: String,
        ring: Option<Duration>,
    ) -> api::control::ControlOutcome {
        use api::control::ControlOutcome;
        let Some(call) = self.calls.get(&h) else {
            return ControlOutcome::NotLive;
        };
        if call.state == call::CallState::AwaitingMedia {
            return ControlOutcome::Refused("the call is not answered yet");
        }
        if call.bridge.is_some() {
            return self.transfer_forwarded(now, h, &to, ring);
        }
        if call.media_leg != h.own_leg() {
            return ControlOutcome::Refused("the call was transferred already");
        }
        if call.transfer.is_some() || call.refer_until.is_some() {
            return ControlOutcome::Refused("a transfer of this call is already under way");
        }
        self.on_ai_transfer(now, h, to, ring);
        ControlOutcome::Accepted
    }

    /// A live-control request from the REST API.
    pub fn handle_control(&mut self, now: Instant, req: api::control::ControlRequest) {
        use api::control::{ControlOutcome, ControlRequest};
        match req {
            ControlRequest::Originate { req, reply } => {
                let result = self.originate(now, &req);
                if let Err(why) = &result {
                    tracing::info!(from = %req.from, to = %req.to, %why, "outbound call refused");
                }
                let _ = reply.send(result);
            }
            ControlRequest::SendDtmf {
                call_id,
                digits,
                duration_ms,
                reply,
            } => {
                let outcome = match self.live_call(&call_id) {
                    None => ControlOutcome::NotLive,
                    Some(h) => self.control_dtmf(h, &digits, duration_ms),
                };
                let _ = reply.send(outcome);
            }
            ControlRequest::Transfer {
                call_id,
                to,
                ring_timeout,
                reply,
            } => {
                let outcome = match self.live_call(&call_id) {
                    None => ControlOutcome::NotLive,
                    Some(h) => self.control_transfer(now, h, to, ring_timeout),
                };
                let _ = reply.send(outcome);
            }
            ControlRequest::StartStream {
                call_id,
                account,
                stream,
                reply,
            } => {
                let outcome = match self.live_call(&call_id) {
                    None => ControlOutcome::NotLive,
                    Some(h) => self.start_fork(h, &account, &stream),
                };
                let _ = reply.send(outcome);
            }
            ControlRequest::StopStream { call_id, reply } => {
                let outcome = match self.live_call(&call_id) {
                    None => ControlOutcome::NotLive,
                    Some(h) => self.stop_fork(h),
                };
                let _ = reply.send(outcome);
            }
            ControlRequest::SendMessage { req, reply } => {
                let _ = reply.send(self.send_sms(now, &req));
            }
            ControlRequest::Hangup { call_id, reply } => {
                let outcome = match self.live_call(&call_id) {
                    Some(h) => {
                        self.hangup(now, h, "api_hangup");
                        ControlOutcome::Accepted
                    }
                    None => ControlOutcome::NotLive,
                };
                let _ = reply.send(outcome);
            }
        }
    }

    /// Transactions still running (a drain waits for BYEs to finish).
    pub fn transactions(&self) -> usize {
        self.txns.len()
    }

    /// Requests we sent that still await their final response (a drain
    /// waits for the BYEs of calls it hung up).
    /// An INVITE that got its answer (RFC 6026 Accepted, Completed) only
    /// absorbs retransmissions: it holds nothing.
    pub fn pending_requests(&self) -> usize {
        use crate::sip::transaction::ClientState;
        self.txns
            .client
            .values()
            .filter(|e| {
                !(matches!(
                    e.purpose,
                    txns::ClientPurpose::Invite(_) | txns::ClientPurpose::Reinvite(_)
                ) && matches!(
                    e.txn.state(),
                    ClientState::Accepted | ClientState::Completed | ClientState::Terminated
                ))
            })
            .count()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    // ---- inputs -----------------------------------------------------------

    /// A message (or a parse failure) arrived from `peer`.
    pub fn handle_inbound(
        &mut self,
        now: Instant,
        peer: Peer,
        msg: Result<SipMessage, ParseError>,
    ) {
        match msg {
            Ok(SipMessage::Request(r)) => self.on_request(now, peer, r),
            Ok(SipMessage::Response(r)) => self.on_response(now, r),
            Err(e) => self.on_parse_error(peer, e),
        }
    }

    pub fn handle_media(&mut self, now: Instant, ev: MediaEvent) {
        match ev {
            MediaEvent::Opened { leg, local } => {
                self.on_media_opened(now, CallHandle::of_leg(leg), local)
            }
            MediaEvent::Failed { leg, reason } => self.on_media_failed(now, leg, &reason),
            MediaEvent::Timeout { leg } => {
                // A call's media leg is its handle, or after an AI transfer
                // the relay side it moved to.
                let h = if self.calls.contains_key(&CallHandle::of_leg(leg)) {
                    Some(CallHandle::of_leg(leg))
                } else {
                    self.calls
                        .iter()
                        .find(|(_, c)| c.media_leg == leg)
                        .map(|(h, _)| *h)
                };
                if let Some(h) = h {
                    self.hangup(now, h, "media_timeout");
                }
            }
            MediaEvent::AiTransfer { leg, to } => {
                self.on_ai_transfer(now, CallHandle::of_leg(leg), to, None)
            }
            MediaEvent::ForkEnded {
                leg,
                stream_sid,
                reason,
            } => self.fork_ended(leg, &stream_sid, &reason),
            MediaEvent::RelayOpened { legs, locals } => self.on_relay_opened(now, legs, locals),
            MediaEvent::StreamConnected { leg } => {
                self.on_stream_connected(now, CallHandle::of_leg(leg))
            }
            MediaEvent::StreamFailed { leg, reason } => {
                tracing::warn!(leg, reason, "AI stream failed to connect");
                self.on_stream_gone(now, CallHandle::of_leg(leg), "stream_failed");
            }
            MediaEvent::StreamEnded { leg, reason } => {
                let cause = if reason == "ai_closed"
                    || reason == media_userspace::aistream::client::AI_HANGUP
                {
                    "ai_hangup"
                } else {
                    "stream_lost"
                };
                self.on_stream_gone(now, CallHandle::of_leg(leg), cause);
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, r))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match r {
                TimerRef::Server(id) => self.server_timer(now, id),
                TimerRef::Client(id) => self.client_timer(now, id),
                TimerRef::Call(h) => self.call_timer(now, h),
                TimerRef::Out(h) => self.out_timer(now, h),
                TimerRef::Trying(id) => {
                    let silent =
                        self.txns.server.get(&id).is_some_and(|e| {
                            e.request.is_some() && e.txn.last_response().is_none()
                        });
                    if silent {
                        self.respond(now, id, 100, None, None, |b| b);
                    }
                }
                TimerRef::Sweep => {
                    let now_ms = self.clock.unix_ms(now);
                    self.registrar.sweep(now_ms);
                    self.metrics
                        .registrations_active
                        .set(self.registrar.count() as i64);
                    self.schedule(now + SWEEP_EVERY, TimerRef::Sweep);
                }
                TimerRef::Snapshots => {
                    self.save_snapshots(now);
                    self.schedule(now + resume::SAVE_EVERY, TimerRef::Snapshots);
                }
            }
        }
        self.metrics.transactions_active.set(self.txns.len() as i64);
    }

    // ---- helpers ----------------------------------------------------------

    fn schedule(&mut self, at: Instant, r: TimerRef) {
        self.timers.push(Reverse((at, r)));
    }

    /// A fresh handle (or id) from the one counter every handle comes
    /// from.
    fn new_id<H: handles::Counted>(&mut self) -> H {
        self.next_id += 1;
        H::counted(self.next_id)
    }

    fn random_hex(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes * 2);
        for _ in 0..bytes {
            let b: u8 = self.rng.random();
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    fn new_tag(&mut self) -> String {
        self.random_hex(8)
    }

    /// Draws SRTP keys from a generator seeded with `seed` instead of the
    /// OS's randomness (tests and fuzzing that replay a run).
    pub fn seed_keys(&mut self, seed: [u8; 32]) {
        self.key_rng = rand::rngs::StdRng::from_seed(seed);
    }

    /// The SRTP keying of a new leg, its keys drawn now.
    fn new_keying(
        &mut self,
        policy: domain::model::MediaSecurity,
        keys_allowed: bool,
    ) -> crate::sip::sdes::LegKeying {
        let rng = &mut self.key_rng;
        crate::sip::sdes::LegKeying::new(policy, keys_allowed, &mut |b| rng.fill(b))
    }

    /// Our side of a leg's SDP: the advertised address, `port`, the o=
    /// identity and the leg's keying.
    fn local_media(
        &self,
        port: u16,
        session_id: u64,
        session_version: u64,
        keying: &crate::sip::sdes::LegKeying,
    ) -> crate::sip::sdp::LocalMedia {
        crate::sip::sdp::LocalMedia {
            addr: self.cfg.advertised_ip,
            port,
            session_id,
            session_version,
            keying: keying.clone(),
        }
    }

    fn new_branch(&mut self) -> String {
        format!("z9hG4bK{}", self.random_hex(8))
    }

    /// Twilio-style call id: "CA" + 32 hex digits. The first 12 digits
    /// are the Unix time in ms and the next 4 count calls within the
    /// node, so ids sort by creation (also within one millisecond: call
    /// listings are newest first) and inserts land at the end of the
    /// primary-key index (random keys dirtied one index page per call in
    /// every CDR commit); the other 16 are random (nodes never collide).
    fn new_call_sid(&mut self, now: Instant) -> String {
        let ms = self.clock.unix_ms(now).clamp(0, 0xffff_ffff_ffff);
        self.sid_seq = self.sid_seq.wrapping_add(1);
        let seq = self.sid_seq;
        format!("CA{ms:012x}{seq:04x}{}", self.random_hex(8))
    }

    fn transmit(&mut self, peer: Peer, bytes: Bytes) {
        self.out
            .push_back(Output::Transmit(Transmit { peer, bytes }));
    }

    /// Host for our Via / Contact on the listener `local`.
    fn local_host(&self, local: SocketAddr) -> String {
        let ip = if local.ip().is_unspecified() {
            self.cfg.advertised_ip
        } else {
            local.ip()
        };
        match ip {
            IpAddr::V4(a) => format!("{a}:{}", local.port()),
            IpAddr::V6(a) => format!("[{a}]:{}", local.port()),
        }
    }

    fn our_via(&mut self, peer: &Peer) -> (String, String) {
        let branch = self.new_branch();
        // RFC 5923: over a stream, the peer may reuse our connection for
        // its requests to us.
        let alias = if peer.transport.is_reliable() {
            ";alias"
        } else {
            ""
        };
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport{alias}",
            peer.transport.via_token(),
            self.local_host(peer.local)
        );
        (via, branch)
    }

    /// Whether call `h`'s dialog is a SIPS one.
    fn sips_dialog(&self, h: CallHandle) -> bool {
        self.calls.get(&h).is_some_and(|c| c.dialog.secure)
    }

    /// Our Contact toward `peer`: a `sips:` URI in a SIPS dialog
    /// (§12.1.1, RFC 5630 §3.1.3: never with `transport=tls`), else a
    /// `sip:` URI naming the transport when it is not UDP.
    fn contact_for(&self, peer: &Peer, user: Option<&str>, secure: bool) -> String {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        let host = self.local_host(peer.local);
        if secure && peer.transport == TransportKind::Tls {
            return format!("<sips:{user}{host}>");
        }
        let transport = match peer.transport {
            TransportKind::Udp => String::new(),
            t => format!(";transport={}", t.label()),
        };
        format!("<sip:{user}{host}{transport}>")
    }

    /// Where responses to a request from `peer` go (§18.2.2, RFC 3581):
    /// streams answer on the same connection; datagrams go to the source
    /// address when `rport` asked for it or responses are symmetric, else
    /// to the source IP and the Via port.
    fn response_peer(&self, peer: Peer, req: &Request) -> Peer {
        if peer.transport.is_reliable() || self.cfg.symmetric_responses {
            return peer;
        }
        let via = req.core.top_via();
        if via.params.has("rport") {
            return peer;
        }
        Peer {
            remote: SocketAddr::new(peer.remote.ip(), via.port.unwrap_or(5060)),
            ..peer
        }
    }

    /// Adds `received` and `rport` to the top Via of a response (§18.2.1,
    /// RFC 3581 §4).
    fn stamp_via(b: &mut MessageBuilder, source: SocketAddr, req: &Request) {
        let via = req.core.top_via();
        let mut extra = String::new();
        let sent_by_ip = via.host.ip();
        if sent_by_ip != Some(source.ip()) {
            extra.push_str(&format!(";received={}", source.ip()));
        }
        let rport_flag = matches!(via.params.get("rport"), Some(None));
        if let Some(first) = b.headers.0.iter_mut().find(|h| h.name == HeaderName::Via) {
            // Only the first element of the first Via line is ours to stamp.
            let (head, tail) = match crate::sip::grammar::split_commas(&first.value).len() {
                1 => (first.value.clone(), String::new()),
                _ => {
                    let parts = crate::sip::grammar::split_commas(&first.value);
                    (parts[0].to_string(), format!(", {}", parts[1..].join(", ")))
                }
            };
            let mut head = head;
            if rport_flag {
                head = replace_flag_rport(&head, source.port());
            }
            first.value = format!("{head}{extra}{tail}");
        }
    }

    /// Sends a response through server transaction `id`.
    fn respond(
        &mut self,
        now: Instant,
        id: TxnId,
        status: u16,
        reason: Option<&str>,
        to_tag: Option<&str>,
        extra: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) {
        let Some(entry) = self.txns.server.get(&id) else {
            return;
        };
        let Some(req) = entry.request.as_ref() else {
            return;
        };
        let tag = if status > 100 { to_tag } else { None };
        let bytes = self.response_bytes(req, entry.peer.remote, status, reason, tag, extra);
        let peer = entry.peer;
        let Some(entry) = self.txns.server.get_mut(&id) else {
            return;
        };
        if !entry.txn.respond(now, status, bytes.clone()) {
            return;
        }
        if status >= 200 {
            entry.request = None;
        }
        let deadline = entry.txn.next_deadline();
        self.metrics
            .sip_responses
            .with_label_values(&["sent", status_class(status)])
            .inc();
        self.transmit(peer, bytes);
        if let Some(at) = deadline {
            self.schedule(at, TimerRef::Server(id));
        }
    }

    /// A final response sent without a transaction (§8.2.6 answered once,
    /// retransmissions answered again one for one): for sources we keep no
    /// state for, and for requests refused because the tables are full.
    fn reply_stateless(
        &mut self,
        peer: Peer,
        req: &Request,
        status: u16,
        reason: &str,
        extra: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) {
        let tag = self.new_tag();
        let bytes = self.response_bytes(req, peer.remote, status, Some(reason), Some(&tag), extra);
        self.metrics
            .sip_responses
            .with_label_values(&["sent", status_class(status)])
            .inc();
        let to = self.response_peer(peer, req);
        self.transmit(to, bytes);
    }

    /// A response to `req` from `source`: its Via stamped (§18.2.1), our
    /// Server header, then what `extra` adds.
    fn response_bytes(
        &self,
        req: &Request,
        source: SocketAddr,
        status: u16,
        reason: Option<&str>,
        to_tag: Option<&str>,
        extra: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) -> Bytes {
        let mut b = build::response_to(req, status, reason, to_tag);
        Self::stamp_via(&mut b, source, req);
        b = extra(b.header(HeaderName::Server, self.cfg.server_name.as_str()));
        Bytes::from(b.encode())
    }

    /// A final response with a random To tag (requests outside any call).
    fn reply(&mut self, now: Instant, id: TxnId, status: u16, reason: Option<&str>) {
        let tag = self.new_tag();
        self.respond(now, id, status, reason, Some(&tag), |b| b);
    }

    fn reply_with(
        &mut self,
        now: Instant,
        id: TxnId,
        status: u16,
        extra: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) {
        let tag = self.new_tag();
        self.respond(now, id, status, None, Some(&tag), extra);
    }

    fn on_parse_error(&mut self, peer: Peer, e: ParseError) {
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

    fn on_request(&mut self, now: Instant, peer: Peer, req: Request) {
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
    fn request(&self, id: TxnId) -> Option<&Request> {
        self.txns.server.get(&id).and_then(|e| e.request.as_ref())
    }

    /// §8.2 checks in order: method, Max-Forwards, Require, body.
    fn check_request(&self, id: TxnId) -> Option<CheckFailure> {
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

    fn reject_checked(&mut self, now: Instant, id: TxnId, f: CheckFailure) {
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
    fn capabilities(b: MessageBuilder) -> MessageBuilder {
        b.header(HeaderName::Allow, ALLOW)
            .header(HeaderName::Accept, ACCEPT)
            .header(HeaderName::AcceptEncoding, "identity")
            .header(HeaderName::AcceptLanguage, "en")
            .header(HeaderName::Supported, SUPPORTED.join(", "))
    }

    /// A trunk's network or a registered user.
    fn source_allowed(&self, now: Instant, peer: Peer) -> bool {
        self.routing.trunk_for_source(peer.remote.ip()).is_some()
            || self
                .registrar
                .user_at(peer.remote, self.clock.unix_ms(now))
                .is_some()
    }

    /// Answers a request whose credentials were refused: a challenge
    /// (`status` 401 or 407), or 403 for a lockout; counted by why.
    fn refuse_auth(&mut self, now: Instant, id: TxnId, peer: Peer, why: AuthRefusal, status: u16) {
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

    fn on_register(&mut self, now: Instant, id: TxnId, peer: Peer) {
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

    fn on_response(&mut self, now: Instant, resp: Response) {
        self.metrics
            .sip_responses
            .with_label_values(&["received", status_class(resp.status)])
            .inc();
        let Some(branch) = resp.core.top_via().branch() else {
            return;
        };
        // A CANCEL shares its INVITE's branch (§9.1): told apart by method.
        let id = if resp.core.cseq.method == Method::Cancel {
            self.txns.client_index.get(&format!("{branch}|CANCEL"))
        } else {
            self.txns.client_index.get(branch)
        };
        let Some(&id) = id else {
            tracing::debug!(
                status = resp.status,
                "response matches no client transaction"
            );
            return;
        };
        let Some(entry) = self.txns.client.get_mut(&id) else {
            return;
        };
        let action = entry.txn.on_response(now, resp.status);
        let (deadline, done) = (entry.txn.next_deadline(), entry.txn.is_terminated());
        let (purpose, peer) = (entry.purpose, entry.peer);
        if let Some(at) = deadline {
            self.schedule(at, TimerRef::Client(id));
        }
        if done {
            self.txns.remove_client(id);
        }
        match action {
            ResponseAction::ResendAck(ack) => self.transmit(peer, ack),
            ResponseAction::Deliver => match purpose {
                txns::ClientPurpose::Invite(hb) => self.on_out_response(now, hb, id, resp),
                txns::ClientPurpose::Refer(h) => self.on_refer_response(now, h, resp.status),
                txns::ClientPurpose::Message(m) => self.on_sms_response(now, m, resp),
                txns::ClientPurpose::Reinvite(side) => {
                    self.on_reinvite_response(now, side, id, resp)
                }
                _ => {}
            },
            ResponseAction::Absorb => {}
        }
    }

    /// Starts a non-INVITE client transaction and sends its request.
    fn start_client_request(
        &mut self,
        now: Instant,
        peer: Peer,
        branch: String,
        bytes: Bytes,
        purpose: txns::ClientPurpose,
    ) {
        self.start_client_txn(now, TxnKind::NonInvite, peer, branch, bytes, purpose);
    }

    /// Starts a client transaction (§17.1), sends its request and arms its
    /// timers; returns its id. `branch` is what responses are matched by.
    fn start_client_txn(
        &mut self,
        now: Instant,
        kind: TxnKind,
        peer: Peer,
        branch: String,
        bytes: Bytes,
        purpose: txns::ClientPurpose,
    ) -> TxnId {
        let txn = ClientTransaction::new(
            now,
            kind,
            bytes.clone(),
            peer.transport.is_reliable(),
            self.cfg.timers,
        );
        let deadline = txn.next_deadline();
        let id = self.new_id();
        self.txns.insert_client(
            id,
            txns::ClientEntry {
                txn,
                branch,
                peer,
                purpose,
            },
        );
        self.transmit(peer, bytes);
        if let Some(at) = deadline {
            self.schedule(at, TimerRef::Client(id));
        }
        id
    }

    /// A client transaction that got no answer (Timer B/F) or whose
    /// transport failed: its request's user learns it failed.
    fn client_failed(&mut self, now: Instant, purpose: txns::ClientPurpose) {
        match purpose {
            txns::ClientPurpose::Invite(hb) => self.on_out_invite_timeout(now, hb),
            txns::ClientPurpose::Reinvite(side) => self.on_reinvite_timeout(now, side),
            txns::ClientPurpose::Message(m) => self.sms_failed(m, 408),
            _ => {}
        }
    }

    /// The transport could not reach `peer` with a request (a connection
    /// or a TLS handshake failed, RFC 3261 §17.1.4): the client
    /// transactions to it that never heard back end now, as if they had
    /// timed out, instead of after Timer B or F. One that had an answer
    /// came over a connection that worked, and keeps its timers.
    pub fn handle_transport_failure(&mut self, now: Instant, peer: Peer) {
        let failed: Vec<TxnId> = self
            .txns
            .client
            .iter()
            .filter(|(_, e)| {
                e.peer.transport == peer.transport
                    && e.peer.remote == peer.remote
                    && e.txn.state() == crate::sip::transaction::ClientState::Calling
            })
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            if let Some(entry) = self.txns.remove_client(id) {
                tracing::debug!(remote = %peer.remote, "transport failed: client transaction ends");
                self.client_failed(now, entry.purpose);
            }
        }
    }

    fn server_timer(&mut self, now: Instant, id: TxnId) {
        let Some(entry) = self.txns.server.get_mut(&id) else {
            return;
        };
        match entry.txn.next_deadline() {
            Some(d) if d <= now => {}
            _ => return,
        }
        let ev = entry.txn.on_timeout(now);
        let peer = entry.peer;
        let call = entry.call;
        let next = entry.txn.next_deadline();
        let terminated = entry.txn.is_terminated();
        match ev {
            TimerEvent::Retransmit(b) => self.transmit(peer, b),
            TimerEvent::Timeout => {
                tracing::debug!(id = id.get(), "no ACK for a final response (Timer H)");
            }
            _ => {}
        }
        if terminated {
            self.txns.remove_server(id);
            if let Some(h) = call
                && let Some(c) = self.calls.get_mut(&h)
                && c.invite_txn == Some(id)
            {
                c.invite_txn = None;
            }
        } else if let Some(at) = next {
            self.schedule(at, TimerRef::Server(id));
        }
    }

    fn client_timer(&mut self, now: Instant, id: TxnId) {
        let Some(entry) = self.txns.client.get_mut(&id) else {
            return;
        };
        match entry.txn.next_deadline() {
            Some(d) if d <= now => {}
            _ => return,
        }
        let ev = entry.txn.on_timeout(now);
        let peer = entry.peer;
        let purpose = entry.purpose;
        let next = entry.txn.next_deadline();
        let terminated = entry.txn.is_terminated();
        match ev {
            TimerEvent::Retransmit(b) => self.transmit(peer, b),
            TimerEvent::Timeout => self.client_failed(now, purpose),
            _ => {}
        }
        if terminated {
            self.txns.remove_client(id);
        } else if let Some(at) = next {
            self.schedule(at, TimerRef::Client(id));
        }
    }
}

/// Why a request failed the §8.2 checks.
enum CheckFailure {
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
fn accepts_sdp(accept: &str) -> bool {
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
fn replace_flag_rport(via: &str, port: u16) -> String {
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

/// The user part of the first `sip:` URI in a header value (`"anonymous"`
/// when there is none): the caller's number as our legs present it.
pub(crate) fn uri_user(value: &str) -> String {
    value
        .split("sip:")
        .nth(1)
        .and_then(|r| r.split('@').next())
        .filter(|u| !u.is_empty() && !u.contains(['>', ';']))
        .unwrap_or("anonymous")
        .to_string()
}

/// Parses an SDP body, mapping errors to a 400 reason.
pub(crate) fn parse_sdp(body: &[u8]) -> Result<SessionDescription, String> {
    SessionDescription::parse(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
