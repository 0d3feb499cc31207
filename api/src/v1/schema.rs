//! The `/v1` request and response bodies: one definition each, from which
//! serde reads and writes JSON and utoipa writes the OpenAPI document.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Parses a query parameter from its text (`limit=20`, `active=true`).
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    from_text(d)
}

pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    from_text(d)
}

fn from_text<'de, D: Deserializer<'de>, T: std::str::FromStr>(d: D) -> Result<Option<T>, D::Error>
where
    T::Err: std::fmt::Display,
{
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| s.parse::<T>().map_err(serde::de::Error::custom))
        .transpose()
}

/// `{id}` of an account.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountPath {
    #[param(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
}

/// `{name}` of a trunk.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TrunkPath {
    #[param(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
}

/// `{username}` of a SIP user.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SipUserPath {
    #[param(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub username: String,
}

/// `{number}`: an E.164 DID (`+15550001234`) or prefix pattern (`+1555*`);
/// `+` may be sent as `%2B`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NumberPath {
    #[param(pattern = r"^(\*|\+?[0-9]{1,20}\*?)$")]
    pub number: String,
}

/// `{id}` of a call (`CA…`) or a blocked number (`BL…`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    pub id: String,
}

/// `?limit=&cursor=` on every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page, 1–500 (default 100).
    #[serde(default, deserialize_with = "opt_u32")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/calls` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CallQuery {
    /// Rows per page, 1–500 (default 100).
    #[serde(default, deserialize_with = "opt_u32")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// Calling number (E.164).
    pub from: Option<String>,
    /// Called number (E.164).
    pub to: Option<String>,
    /// Only calls in progress (`true`) or only ended ones (`false`).
    #[serde(default, deserialize_with = "opt_bool")]
    #[param(value_type = Option<bool>)]
    pub active: Option<bool>,
}

/// What changes on a live call: its AI stream moves to `stream`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallUpdateIn {
    pub stream: StreamSpec,
}

/// A new auth token, shown once: the key of `X-Twilio-Signature` on the
/// account's `twilio`-format webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthTokenOut {
    /// The account's id, which Twilio-style requests carry as `AccountSid`.
    pub account_sid: String,
    /// 32 hexadecimal characters; the previous token stops working now.
    pub auth_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountIn {
    /// Display name.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// Numbers and prefix patterns (`+1555*`) the account may claim with
    /// its own token; outside them only an admin assigns it numbers.
    /// Absent: unchanged (none for a new account).
    #[schema(max_items = 1000)]
    pub number_ranges: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountOut {
    pub id: String,
    pub name: String,
    /// Canonical patterns the account may claim numbers inside.
    pub number_ranges: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrunkIn {
    /// Networks the carrier sends from (CIDR), e.g. `["198.51.100.0/24"]`.
    #[serde(default)]
    pub source_cidrs: Vec<String>,
    /// Where we send to, `host[:port]`; absent for inbound-only trunks.
    pub outbound_address: Option<String>,
    /// `udp` (default), `tcp` or `tls`.
    #[schema(pattern = "^(udp|tcp|tls)$")]
    pub transport: Option<String>,
    /// Digest credentials answered when the carrier challenges us.
    pub username: Option<String>,
    /// Write-only: never returned.
    pub password: Option<String>,
    /// Concurrent calls allowed on the trunk.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_calls: Option<u32>,
    /// `bridge` (default) or `refer`: how calls from this trunk are transferred.
    #[schema(pattern = "^(bridge|refer)$")]
    pub transfer: Option<String>,
    /// The only account that may send calls and SMS through it and give it
    /// to its numbers (absent: every account).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub account: Option<String>,
    /// SIP messages per second the trunk's networks may send together,
    /// with bursts of twice that; beyond, datagrams are dropped before
    /// they are parsed (absent: no limit).
    #[schema(minimum = 1, maximum = 1000000)]
    pub requests_per_sec: Option<u32>,
    /// With `transport` `tls`: the name to verify, the CA file and the
    /// client certificate (absent: the system roots and the address).
    pub tls: Option<crate::store::TrunkTls>,
    /// `rtp`, `srtp` (required: a plain offer gets 488) or
    /// `srtp-optional` (default: SRTP when the carrier offers or accepts
    /// it): the media of calls from and through this trunk.
    pub media_security: Option<crate::store::MediaSecurity>,
    /// SDES keys may cross this trunk's signalling in clear (`udp`,
    /// `tcp`); default false: keys go over TLS only, so SRTP on a
    /// cleartext trunk needs this.
    pub srtp_cleartext_keying: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrunkOut {
    pub name: String,
    pub source_cidrs: Vec<String>,
    pub outbound_address: Option<String>,
    pub transport: String,
    pub username: Option<String>,
    /// Whether a password is set (the password itself is never returned).
    pub has_password: bool,
    pub max_calls: Option<u32>,
    pub transfer: String,
    pub account: Option<String>,
    pub requests_per_sec: Option<u32>,
    pub tls: crate::store::TrunkTls,
    pub media_security: crate::store::MediaSecurity,
    pub srtp_cleartext_keying: bool,
}

/// Where a `stream` number sends its calls.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// `ws://` or `wss://` URL of the AI platform.
    pub url: String,
    /// `twilio` (default, Twilio Media Streams), `telnyx`, `plivo`, `exotel`,
    /// `vonage`, `jambonz`, `jambonz16`, or `pcm`, `pcm8`, `pcm16`, `pcm24`.
    pub dialect: Option<String>,
    /// Custom parameters passed to the AI in `start` (string values).
    #[schema(value_type = Option<Object>)]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberIn {
    /// `stream` (to the AI), `forward` (to a phone or carrier) or `echo`.
    #[schema(pattern = "^(stream|forward|echo)$")]
    pub route: String,
    /// Required for route `stream`.
    pub stream: Option<StreamSpec>,
    /// Required for route `forward`: a `sip:` URI or one of our SIP users.
    pub forward_to: Option<String>,
    /// Trunk used to reach `forward_to` and `fallback`.
    pub trunk: Option<String>,
    /// Concurrent calls allowed on this number (absent: unlimited).
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_calls: Option<u32>,
    /// Where calls go when the route fails before an answer.
    pub fallback: Option<String>,
    /// http(s) URL asked at each call what to do with it; its answer
    /// replaces the route for that call (README, "Voice webhook").
    pub voice_webhook: Option<String>,
    /// http(s) URL the number's inbound SMS are POSTed to.
    pub sms_webhook: Option<String>,
    /// `rtp`, `srtp` (required: a plain offer gets 488) or
    /// `srtp-optional` (default): its callers' media, combined with the
    /// caller's trunk's setting (SRTP required by either is required;
    /// else `rtp` asked by either is plain RTP).
    pub media_security: Option<crate::store::MediaSecurity>,
    /// `json` (default: the gateway's JSON) or `twilio` (Twilio's form
    /// fields signed with `X-Twilio-Signature` by the account's auth
    /// token, which must exist): how voice webhook requests are written.
    /// Either way a TwiML answer (`text/xml`) is read as TwiML.
    pub webhook_format: Option<crate::store::WebhookFormat>,
    /// http(s) URL its inbound calls' status changes are POSTed to
    /// (`ringing`, `in-progress`, then `completed`, `busy`, `no-answer`,
    /// `failed` or `canceled`), written as `webhook_format` says.
    pub status_webhook: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NumberOut {
    /// E.164 DID (`+15550001234`) or prefix pattern (`+1555*`).
    pub number: String,
    pub route: String,
    pub stream: Option<StreamSpec>,
    pub forward_to: Option<String>,
    pub trunk: Option<String>,
    pub max_calls: Option<u32>,
    pub fallback: Option<String>,
    pub voice_webhook: Option<String>,
    pub sms_webhook: Option<String>,
    pub media_security: crate::store::MediaSecurity,
    pub webhook_format: crate::store::WebhookFormat,
    pub status_webhook: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockIn {
    /// Caller to refuse: E.164 (`+19005550100`) or prefix (`+1900*`).
    #[schema(pattern = r"^(\*|\+?[0-9]{1,20}\*?)$")]
    pub caller: String,
    /// Only for this number of the account (absent: every number).
    #[schema(pattern = r"^(\*|\+?[0-9]{1,20}\*?)$")]
    pub number: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlockOut {
    pub id: String,
    /// Normalised E.164 or prefix pattern.
    pub caller: String,
    pub number: Option<String>,
}

/// An operator's entry in the SIP deny set (admin).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeniedSourceIn {
    /// An address or a CIDR network, IPv4 or IPv6 (`203.0.113.7`,
    /// `198.51.100.0/24`, `2001:db8::/48`); at least /8 for IPv4 and /32
    /// for IPv6. IPv4-mapped IPv6 is taken as IPv4.
    pub network: String,
    /// Why, for the operators who read the list (at most 200 characters).
    pub reason: Option<String>,
    /// Lifts the entry after this many seconds (absent: until deleted).
    #[schema(minimum = 1, maximum = 31536000)]
    pub expires_in_secs: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SipUserIn {
    /// Stored only as digests (MD5 and SHA-256 HA1, RFC 7616 §3.4.2).
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SipUserOut {
    pub username: String,
    pub realm: String,
}

/// `POST /v1/calls`: an outbound call, connected when answered to an AI
/// stream or (click-to-call) to a second party: exactly one of `stream`
/// and `forward_to`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallIn {
    /// Caller id: one of the account's numbers (E.164).
    #[schema(pattern = r"^\+?[0-9]{1,20}$")]
    pub from: String,
    /// The callee (E.164).
    #[schema(pattern = r"^\+?[0-9]{1,20}$")]
    pub to: String,
    /// Trunk to call through; default: the `from` number's trunk.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub trunk: Option<String>,
    /// The AI the answered call streams to.
    pub stream: Option<StreamSpec>,
    /// Click-to-call: once the callee answers, the gateway calls this
    /// party and bridges the two (an E.164 number through the call's
    /// trunk, or a `sip:` URI at its own host). If it does not answer,
    /// the call ends with cause `forward_<outcome>`.
    pub forward_to: Option<String>,
    /// How long the callee may ring (default: the gateway's ring timeout).
    #[schema(minimum = 1, maximum = 300)]
    pub ring_timeout_secs: Option<u32>,
    /// http(s) URL told each status change (`ringing`, `in-progress`, the
    /// final status), signed, retried with backoff.
    pub status_webhook: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallOut {
    /// `CA` + 32 hex digits.
    pub id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from: String,
    pub to: String,
    pub trunk: Option<String>,
    pub sip_call_id: String,
    /// `queued` (just placed), `ringing`, `in-progress`, `completed`,
    /// `busy`, `no-answer`, `failed` or `canceled`.
    pub status: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_cause: Option<String>,
    pub sip_status: Option<u16>,
    pub duration_ms: Option<i64>,
    /// `stream`, `forward`, `echo` or `none`.
    pub media: String,
    /// How each leg's media was carried once answered: `rtp` or
    /// `srtp:<suite>`.
    pub media_security: Option<crate::store::LegsSecurity>,
    /// The node that handles the call (`GET /v1/nodes`); live actions on
    /// any node are carried out there.
    pub node: Option<String>,
}

/// `POST /v1/messages`: an SMS out.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageIn {
    /// One of the account's numbers (E.164).
    #[schema(pattern = r"^\+?[0-9]{1,20}$")]
    pub from: String,
    #[schema(pattern = r"^\+?[0-9]{1,20}$")]
    pub to: String,
    /// 1–1300 bytes of UTF-8 text (one SIP MESSAGE; longer texts are
    /// refused, not split).
    #[schema(min_length = 1, max_length = 1300)]
    pub body: String,
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub trunk: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    pub id: String,
    pub direction: String,
    pub from: String,
    pub to: String,
    pub body: String,
    /// `queued`, `sent`, `failed` or `received`.
    pub status: String,
    pub created_at: i64,
}

/// Starts recording a live AI call.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingIn {
    /// http(s) URL told when the recording is written
    /// (`recording.completed` or `recording.failed`, signed, retried).
    pub status_callback: Option<String>,
}

/// A call recording: a stereo WAV (the caller left, what the caller heard
/// right) at the call's codec rate.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingOut {
    /// `RE` + 32 hex digits.
    pub id: String,
    pub call_id: String,
    /// `recording` while the call goes on; then `completed` or `failed`.
    pub status: String,
    pub duration_ms: Option<i64>,
    pub bytes: Option<i64>,
    pub error: Option<String>,
    pub created_at: Option<i64>,
}

/// A live-control request the call took.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallActionOut {
    pub id: String,
    /// `hanging-up` (BYE or CANCEL on its way), `sending` (digits queued),
    /// `transferring` (the target is being called).
    pub status: String,
}

/// A gateway node sharing the store (`GET /v1/nodes`).
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeOut {
    /// The node's `store.node_id`.
    pub id: String,
    /// Where the other nodes reach its REST API.
    pub api_address: Option<String>,
    pub version: String,
    /// Unix ms of its start.
    pub started_at: i64,
    /// Unix ms of its last heartbeat.
    pub heartbeat_at: i64,
    /// Its last heartbeat is within `cluster.lease_secs`.
    pub healthy: bool,
    /// It refuses new calls (SIGTERM, a hand-over, a drain request).
    pub draining: bool,
    /// A drain was asked for and the node has not taken it up yet.
    pub drain_requested: bool,
    /// Calls in progress at its last heartbeat.
    pub calls_active: i64,
    /// This is the node that answered.
    pub this_node: bool,
}

/// `GET /v1/nodes`: every node, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    pub data: Vec<NodeOut>,
}

/// `POST /v1/nodes/{id}/drain`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeDrainOut {
    pub id: String,
    /// `drain-requested`: the node refuses new calls from its next
    /// heartbeat on (at once when it is the node that answered).
    pub status: String,
}

/// `POST /v1/calls/{id}/dtmf`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DtmfIn {
    /// 0–9, `*`, `#`, A–D; up to 64.
    #[schema(pattern = "^[0-9*#A-D]{1,64}$")]
    pub digits: String,
    /// Tone length per digit, 40–2000 ms (default 100).
    #[schema(minimum = 40, maximum = 2000)]
    pub duration_ms: Option<u32>,
}

/// `POST /v1/calls/{id}/transfer`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferIn {
    /// E.164 number (through the number's trunk) or `sip:` URI.
    pub to: String,
    /// How long the target may ring before the transfer fails (and the
    /// AI, or the old far side, keeps the caller); default: the gateway's
    /// ring timeout.
    #[schema(minimum = 1, maximum = 300)]
    pub ring_timeout_secs: Option<u32>,
}

macro_rules! page {
    ($name:ident, $item:ty) => {
        /// One page of a list, newest or lowest key first.
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $name {
            pub data: Vec<$item>,
            /// Pass as `cursor` for the next page; absent on the last page.
            pub next_cursor: Option<String>,
        }

        impl From<super::list::Page<$item>> for $name {
            fn from(p: super::list::Page<$item>) -> Self {
                $name {
                    data: p.data,
                    next_cursor: p.next_cursor,
                }
            }
        }
    };
}
page!(AccountPage, AccountOut);
page!(TrunkPage, TrunkOut);
page!(NumberPage, NumberOut);
page!(BlockPage, BlockOut);
page!(SipUserPage, SipUserOut);
page!(DeniedSourcePage, crate::store::DeniedSource);
page!(CallPage, CallOut);
page!(MessagePage, MessageOut);
page!(RecordingPage, RecordingOut);
