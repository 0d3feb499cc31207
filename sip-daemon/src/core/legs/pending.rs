//! What waits on something else: a route waiting for its voice webhook or
//! for cluster capacity, a re-INVITE waiting for the other side's answer,
//! an outbound call waiting for its callee.

use crate::core::*;
use domain::model::Number;
use media_userspace::aistream::StreamSpec;
use media_userspace::control::{LegMedia, LegMode};

/// One leg of a bridge, by handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeSide {
    /// The inbound call (its handle is its media leg).
    Caller(CallHandle),
    /// A far leg (by its handle; media on its `media_leg`).
    Far(OutLegHandle),
}

/// A re-INVITE of ours in flight: its CSeq and top Via (for the ACK of a
/// non-2xx final, §17.1.1.3).
#[derive(Clone, Debug)]
pub struct PendingReinvite {
    pub cseq: u32,
    pub via: String,
    /// The re-INVITE moves the caller's media (an AI transfer): if it
    /// fails, nothing carries the call any more and it ends.
    pub must_succeed: bool,
    /// Our offer in it: the answer is read against it (codec, keys).
    pub offer: String,
}

/// What an outbound call is connected to when it is answered.
#[derive(Debug)]
pub enum Origination {
    /// This AI stream starts on the reserved port.
    Stream(Box<StreamSpec>),
    /// The callee is bridged to this party (E.164 or `sip:` URI).
    Forward(String),
    /// TwiML runs ([`crate::core::twiml`]), for the account's number the
    /// call was placed from (resolved when it was placed).
    Twiml(
        api::control::TwimlStart,
        Box<Number>,
        Option<api::control::RecordRequest>,
    ),
}

/// How a request we originate (a call, an SMS) leaves: the caller id's
/// number, the trunk, its host and the resolved target.
pub(in crate::core) struct OutboundRoute {
    pub number: Number,
    pub trunk: domain::model::Trunk,
    pub host: String,
    pub target: super::OutTarget,
}

/// What an INVITE waiting for its voice webhook keeps.
#[derive(Debug)]
pub struct PendingRoute {
    /// The number that matched (its own route is the fallback).
    pub number: Number,
    pub caller: String,
    pub dialed: String,
    pub sip_call_id: String,
    pub max_forwards: u32,
}

/// A TwiML document being carried out for a call that is not answered
/// yet ([`crate::core::twiml`]).
#[derive(Debug, Default)]
pub struct TwimlRun {
    /// The verbs still to run, in order.
    pub verbs: std::collections::VecDeque<api::twiml::Verb>,
    /// Documents fetched for the call so far (`<Redirect>`, `<Dial
    /// action>`): bounded, so two documents that redirect to each other
    /// end instead of looping.
    pub fetches: u32,
    /// A `<Pause>` runs until this instant.
    pub wake: Option<Instant>,
    /// A `<Dial>` rings: where its outcome is told when it fails (its
    /// `action`), or `None` to go on with the verbs after it.
    pub dialing: Option<Option<api::twiml::Fetch>>,
    /// When the first document started: the call waits in TwiML at most
    /// [`crate::core::twiml::MAX_PARKED`] from then.
    pub started: Option<Instant>,
    /// 180 Ringing went to the caller (at the first `<Pause>`).
    pub rang: bool,
    /// Fetched for a live AI call (Twilio's update with `Url`): its
    /// `<Connect><Stream>` moves the call's stream.
    pub live: bool,
    /// `<Start><Stream>`: the listen-only copy that starts once a
    /// `<Dial>` connects the call.
    pub fork: Option<api::twiml::Stream>,
    /// Record the call once its `<Connect><Stream>` opens (Twilio's
    /// `Record` on a call it placed).
    pub record: Option<api::control::RecordRequest>,
}

/// What an admitted INVITE does next: at once, or once its slots are
/// granted.
#[derive(Debug)]
pub enum Admission {
    /// Ask the number's voice webhook for the route.
    Webhook {
        url: String,
        pending: super::PendingRoute,
    },
    /// Call the forward target.
    Forward {
        target: super::OutTarget,
        caller: String,
        max_forwards: u32,
    },
    /// Open the media leg (echo, or the AI stream).
    Media { mode: LegMode, media: LegMedia },
    /// An outbound call (REST) whose port is bound: reserve these scopes,
    /// then send its INVITE.
    Outbound { scopes: Vec<(String, u32)> },
    /// An outbound call granted its slots: send the INVITE offering
    /// `local`.
    FarLeg { local: std::net::SocketAddr },
}
