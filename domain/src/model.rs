//! Rows of the store, one definition shared by the daemon, the API and both
//! SQL backends. Times are Unix milliseconds (UTC) in both databases.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// Numbers and prefix patterns an admin granted the account: it may
    /// claim numbers inside them itself (the patterns, canonical E.164).
    pub number_ranges: Vec<String>,
}

/// A carrier: where it sends from, where we send to, how we authenticate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trunk {
    /// Unique name, used as the id ("local", "telnyx-east").
    pub name: String,
    /// Source networks the carrier sends from (CIDR strings).
    pub source_cidrs: Vec<String>,
    /// Where outbound requests go, as a SIP URI `host[:port]` (`None`: inbound only).
    pub outbound_address: Option<String>,
    /// "udp" | "tcp" | "tls".
    pub transport: String,
    /// Digest credentials for outbound requests the carrier challenges.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Concurrent calls allowed on this trunk (`None`: unlimited).
    pub max_calls: Option<u32>,
    /// How calls from this trunk are transferred: `"refer"` (REFER to the
    /// carrier) or `None`/`"bridge"` (the gateway bridges the new leg).
    pub transfer: Option<String>,
    /// The account whose outbound calls, SMS and numbers may use it
    /// (`None`: every account).
    pub account_id: Option<String>,
    /// SIP messages per second its source networks may send together,
    /// with a burst of twice that (`None`: no limit).
    pub requests_per_sec: Option<u32>,
    /// How its TLS connections are made (with `transport = "tls"`).
    pub tls: TrunkTls,
    /// Whether its calls' media is encrypted (SRTP keyed by SDES).
    pub media_security: MediaSecurity,
    /// SDES keys may cross this trunk's signalling in clear (UDP or TCP):
    /// anyone who reads the signalling can then decrypt the media, so
    /// keys go over TLS only unless the operator allows it here
    /// (RFC 4568 §8.3).
    pub srtp_cleartext_keying: bool,
}

/// Whether a leg's media is encrypted: SRTP (RFC 3711) keyed by SDES
/// (RFC 4568).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum MediaSecurity {
    /// Plain RTP: crypto attributes are ignored, an SRTP-only offer gets
    /// 488, and none is offered.
    #[serde(rename = "rtp")]
    Rtp,
    /// SRTP required: a plain offer gets 488; offers are RTP/SAVP.
    #[serde(rename = "srtp")]
    Srtp,
    /// Either: SRTP when the peer offers or accepts it (and keys may go
    /// over the signalling), plain RTP otherwise; offers are RTP/AVP with
    /// crypto attributes (best effort).
    #[default]
    #[serde(rename = "srtp-optional")]
    SrtpOptional,
}

impl MediaSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaSecurity::Rtp => "rtp",
            MediaSecurity::Srtp => "srtp",
            MediaSecurity::SrtpOptional => "srtp-optional",
        }
    }

    pub fn parse(s: &str) -> Option<MediaSecurity> {
        [
            MediaSecurity::Rtp,
            MediaSecurity::Srtp,
            MediaSecurity::SrtpOptional,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }

    /// The policy of a leg both a number and a trunk speak for: SRTP
    /// required by either is required; else plain RTP asked by either is
    /// plain; else optional.
    pub fn and(self, other: MediaSecurity) -> MediaSecurity {
        use MediaSecurity::*;
        match (self, other) {
            (Srtp, _) | (_, Srtp) => Srtp,
            (Rtp, _) | (_, Rtp) => Rtp,
            _ => SrtpOptional,
        }
    }
}

/// A TLS trunk's client side: whom to expect and what to present. Files
/// are paths on each node (mounted secrets, rotated in place).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrunkTls {
    /// SNI and the name its certificate must carry (`None`: the outbound
    /// address's host, an IP address verified against IP SANs).
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM roots trusted for it instead of the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// A client certificate chain and its key, PEM (mutual TLS).
    #[serde(default)]
    pub client_cert_file: Option<String>,
    #[serde(default)]
    pub client_key_file: Option<String>,
}

impl TrunkTls {
    pub fn is_empty(&self) -> bool {
        *self == TrunkTls::default()
    }
}

impl Trunk {
    /// Whether `account` may send through this trunk.
    pub fn usable_by(&self, account: &str) -> bool {
        self.account_id.as_deref().is_none_or(|a| a == account)
    }
}

/// What a number does with a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteKind {
    Echo,
    Stream,
    Forward,
}

impl RouteKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RouteKind::Echo => "echo",
            RouteKind::Stream => "stream",
            RouteKind::Forward => "forward",
        }
    }
    pub fn parse(s: &str) -> Option<RouteKind> {
        match s {
            "echo" => Some(RouteKind::Echo),
            "stream" => Some(RouteKind::Stream),
            "forward" => Some(RouteKind::Forward),
            _ => None,
        }
    }
}

/// An E.164 DID (`+15550001234`) or a prefix pattern (`+1555000*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Number {
    pub pattern: String,
    pub account_id: String,
    pub route: RouteKind,
    /// Stream URL (route stream) or target URI (route forward).
    pub target: Option<String>,
    /// Stream dialect ("twilio" | "pcm").
    pub dialect: Option<String>,
    /// Extra parameters passed to the AI (JSON object text).
    pub params: Option<String>,
    /// Trunk used for forwarding.
    pub trunk: Option<String>,
    /// Concurrent calls allowed on this number (`None`: unlimited).
    pub max_calls: Option<u32>,
    /// Where the call goes when its route fails before an answer (a far
    /// leg busy or unanswered, an AI out of reach): a SIP URI or username.
    pub fallback: Option<String>,
    /// Asked at each call what to do with it (an http(s) URL): its answer
    /// replaces the route for that call.
    pub voice_webhook: Option<String>,
    /// Where the number's inbound SMS are POSTed (an http(s) URL).
    pub sms_webhook: Option<String>,
    /// Where its inbound calls' status changes are POSTed (ringing,
    /// in-progress and the final status), written as `webhook_format`.
    pub status_webhook: Option<String>,
    /// Whether its callers' media is encrypted; combined with the
    /// caller's trunk's by [`MediaSecurity::and`].
    pub media_security: MediaSecurity,
    /// How its voice webhook requests are written.
    pub webhook_format: WebhookFormat,
}

/// How a number's webhook requests are written. Either way the answer's
/// content type decides how it is read: JSON actions or TwiML.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum WebhookFormat {
    /// The gateway's JSON, signed with `X-Gateway-Signature`.
    #[default]
    #[serde(rename = "json")]
    Json,
    /// Twilio's form fields (`CallSid`, `AccountSid`, `From`, `To`,
    /// `CallStatus`…), signed with `X-Twilio-Signature` keyed by the
    /// account's auth token, so an app written for Twilio reads them
    /// unchanged.
    #[serde(rename = "twilio")]
    Twilio,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Twilio => "twilio",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookFormat> {
        [WebhookFormat::Json, WebhookFormat::Twilio]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// A blocked caller pattern (E.164 or prefix with `*`), for a whole account
/// or for one number of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedNumber {
    pub id: String,
    pub account_id: String,
    /// `None`: every number of the account.
    pub number_pattern: Option<String>,
    pub caller_pattern: String,
}

/// A network whose SIP is dropped before the parse (and in the kernel when
/// the XDP guard is on): an operator's entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeniedSource {
    pub id: String,
    /// A canonical CIDR (`203.0.113.0/24`, `2001:db8::/32`; a host is /32
    /// or /128).
    pub network: String,
    pub reason: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; `None`: until deleted.
    pub expires_at: Option<i64>,
}

impl DeniedSource {
    /// Whether the entry still applies at `now_ms`.
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.expires_at.is_none_or(|t| t > now_ms)
    }
}

/// A gateway node sharing the store, as it records itself at start and on
/// every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// `store.node_id`: unique and stable across restarts.
    pub id: String,
    /// `host:port` where the other nodes reach this node's REST API.
    pub api_address: Option<String>,
    pub version: String,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms of the last heartbeat.
    pub heartbeat_at: i64,
    pub calls_active: i64,
    /// The node refuses new calls (SIGTERM, hand-over, a drain request).
    pub draining: bool,
    /// A drain was asked for over REST and not yet taken up.
    pub drain_requested: bool,
}

/// A SIP user that registers. Only digests of the password are stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipUser {
    pub username: String,
    pub account_id: String,
    pub realm: String,
    /// H(username:realm:password) with MD5 (hex).
    pub ha1_md5: String,
    /// H(username:realm:password) with SHA-256 (hex).
    pub ha1_sha256: String,
}

/// A registrar binding (RFC 3261 §10.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub username: String,
    pub contact: String,
    /// Unix ms when the binding lapses.
    pub expires_at: i64,
    /// Where the REGISTER came from (ip:port), used to reach the user.
    pub source: String,
    pub transport: String,
    pub call_id: String,
    pub cseq: u32,
}

/// A change to the registrar's bindings: what the store learns, and what
/// the other nodes sharing it are told at once (PostgreSQL
/// `NOTIFY gateway_registrations`, [`RegistrationNotice`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RegistrationChange {
    Upsert(Registration),
    Delete { username: String, contact: String },
}

/// A registration change as announced to the other nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationNotice {
    /// The node that took the REGISTER (it applies its own at once).
    pub node: String,
    pub change: RegistrationChange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// The call detail record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Our call id ("CA" + 32 hex digits).
    pub id: String,
    pub account_id: Option<String>,
    pub direction: Direction,
    pub from_number: String,
    pub to_number: String,
    pub trunk: Option<String>,
    /// The SIP Call-ID of the leg that created the call.
    pub sip_call_id: String,
    pub invite_at: i64,
    pub answer_at: Option<i64>,
    pub end_at: Option<i64>,
    /// "normal", "caller_hangup", "canceled", "rejected", "interrupted", ...
    pub end_cause: Option<String>,
    /// Final SIP status of the INVITE (200 for answered calls).
    pub sip_status: Option<u16>,
    /// Answered duration in ms (0 for unanswered calls).
    pub duration_ms: Option<i64>,
    /// "echo", "stream", "forward", or "none" for rejected calls.
    pub media_mode: String,
    /// The node that handles the call (its `store.node_id`).
    #[serde(default)]
    pub node: Option<String>,
    /// How each leg's media was protected, as answered.
    #[serde(default)]
    pub media_security: Option<LegsSecurity>,
}

/// How each leg of a call carried its media (CDR): `"rtp"`, or `"srtp:"`
/// and the SRTP suite (`"srtp:AES_CM_128_HMAC_SHA1_80"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LegsSecurity {
    /// The leg to the party that called (for calls we placed, the
    /// callee's).
    pub caller: Option<String>,
    /// The far leg of a forwarded call.
    pub far: Option<String>,
}

/// The Twilio-style status of a call (REST and status webhooks):
/// `ringing`, `in-progress`, `completed`, `busy`, `no-answer`, `failed`
/// or `canceled`.
pub fn call_status(
    answered: bool,
    ended: bool,
    cause: Option<&str>,
    sip_status: Option<u16>,
) -> &'static str {
    match (answered, ended) {
        (false, false) => "ringing",
        (true, false) => "in-progress",
        (true, true) => "completed",
        (false, true) => match (cause, sip_status) {
            (Some("canceled" | "caller_hangup" | "api_hangup"), _) => "canceled",
            (Some("busy"), _) | (_, Some(486 | 600)) => "busy",
            (Some("no_answer"), _) | (_, Some(408 | 480 | 487)) => "no-answer",
            _ => "failed",
        },
    }
}

/// What claiming an Idempotency-Key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is ours: go on, then finish it.
    Claimed,
    /// Another request with this key has not finished.
    InFlight,
    /// The key was used with another body.
    Mismatch,
    /// The first request's answer.
    Done { status: u16, body: String },
}

/// A change to a call record; applied in order, idempotently.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "every call has one Started, as many as its other events: boxing it costs an allocation per call to save bytes in a short queue"
)]
pub enum CdrEvent {
    /// The INVITE arrived: insert the row (no-op if it exists).
    Started(CallRecord),
    /// The call was answered: its first answer time wins; the media
    /// security, when given, replaces what was recorded.
    Answered {
        id: String,
        at: i64,
        media_security: Option<LegsSecurity>,
    },
    Ended {
        id: String,
        at: i64,
        cause: String,
        sip_status: u16,
        duration_ms: i64,
    },
    /// The live call can be taken back by `node` after a restart from
    /// `snapshot` (the daemon's own format); replaces an earlier one.
    Resumable {
        id: String,
        node: String,
        snapshot: String,
        at: i64,
    },
    /// The call can no longer be resumed (it ended, or is mid-change).
    NotResumable { id: String },
}

impl CdrEvent {
    /// The call the event is about.
    pub fn call_id(&self) -> &str {
        match self {
            CdrEvent::Started(c) => &c.id,
            CdrEvent::Answered { id, .. }
            | CdrEvent::Ended { id, .. }
            | CdrEvent::Resumable { id, .. }
            | CdrEvent::NotResumable { id } => id,
        }
    }
}

/// A live call a node may take back after its restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumableCall {
    pub id: String,
    pub snapshot: String,
}

/// Filter for call listings.
#[derive(Clone, Debug, Default)]
pub struct CallFilter {
    pub account_id: Option<String>,
    pub direction: Option<Direction>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    /// Only calls not yet ended.
    pub active: Option<bool>,
    /// Page after this id (cursor), newest first.
    pub before_id: Option<String>,
    pub limit: u32,
}

/// A call recording: a stereo WAV on the node that made it (the caller
/// left, what the caller heard right).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRecord {
    /// `RE` + 32 hex digits.
    pub id: String,
    pub account_id: String,
    pub call_id: String,
    /// The file, on the node that recorded it.
    pub path: String,
    pub duration_ms: i64,
    pub bytes: i64,
    /// `completed`, or `failed` with `error`.
    pub status: String,
    pub error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// An SMS (SIP MESSAGE or REST).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: String,
    pub account_id: String,
    pub direction: Direction,
    pub from_number: String,
    pub to_number: String,
    pub body: String,
    /// "queued" | "sent" | "failed" | "received".
    pub status: String,
    pub created_at: i64,
}
