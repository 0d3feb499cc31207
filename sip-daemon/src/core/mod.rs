//! The signalling core: a sans-IO SIP user agent server and B2BUA.
//!
//! Fed with parsed messages, media events and the current time; returns
//! [`Output`]s (bytes to send, media commands, CDR and registration
//! changes) and its next deadline. It never touches a socket, the clock or
//! the database, so every flow is testable on virtual time.
//!
//! `Core` (here) holds what calls share: transactions (`txns`), dialogs,
//! the registrar, routing and timers, and its entry points. A request
//! arrives in `inbound`, our requests go out in `client`, responses in
//! `respond`; fresh ids and keys come from `identities`, REST's live-call
//! requests from `control`. A call's life is in `call/` (the caller's side
//! of every route) and `forward/` (the far leg of a forwarded call), with
//! SDP offer/answer in `negotiation`; transfers, holds, webhooks, cluster
//! capacity and restart resumption have a file each.

pub mod ai_transfer;
pub mod auth_guard;
pub mod call;
pub mod caller_refer;
mod capacity;
mod client;
mod control;
pub mod dialog;
pub mod fork;
pub mod forward;
pub mod handles;
pub mod hold;
mod identities;
mod inbound;
pub mod legs;
mod negotiation;
pub mod originate;
pub mod registrar;
mod respond;
pub mod resume;
pub mod sms;
pub mod stream;
pub mod transfer;
pub mod twiml;
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
use dialog::DialogKey;
use domain::model::{CdrEvent, Registration};
pub use handles::{CallHandle, ControlId, DialogOwner, OutLegHandle, SmsHandle, TxnId};
use legs::{
    Admission, BridgeSide, Call, CallState, OkRetransmit, Origination, OutLeg, OutState, OutTarget,
    OutboundRoute, PendingReinvite, PendingRoute, RelaySide, SessionTimer,
};
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
    /// Where recordings are written (`None`: recording is refused).
    pub recordings_dir: Option<std::path::PathBuf>,
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
            recordings_dir: None,
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
    /// A recording is written (or failed): store its row, tell its
    /// status callback.
    Recording(Box<media_userspace::recorder::RecordingDone>),
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
    /// The answer to live-control request `id` ([`Core::handle_control`]).
    ControlReply {
        id: ControlId,
        reply: api::control::ControlReply,
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
    out_legs: HashMap<OutLegHandle, legs::OutLeg>,
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
            MediaEvent::RecordingDone(done) => self.out.push_back(Output::Recording(done)),
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
