//! Commands from call control to the media plane and the events it reports
//! back. One definition, used by the SIP daemon and the workers.

use crate::aistream::StreamSpec;
use crate::codec::Codec;
use std::net::SocketAddr;
use std::time::Duration;

/// Identifies one media leg (one RTP socket pair) for its whole life.
pub type LegId = u64;

/// What a leg does with the audio it receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LegMode {
    /// Return the caller's RTP to the caller (line-test number).
    Echo,
    /// Bridge the caller's audio with an AI over a WebSocket.
    Stream(Box<StreamSpec>),
}

/// The negotiated stream parameters a leg needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegMedia {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
    pub ptime_ms: u32,
    /// Where the SDP says to send; latching may override it.
    pub remote: Option<SocketAddr>,
    /// Whether we may send (false when the peer holds the call).
    pub send: bool,
    /// SRTP keys (RFC 3711, keyed by SDES): `None` for plain RTP. What
    /// arrives is authenticated and decrypted under `rx` before anything
    /// else sees it; what leaves is protected under `tx`.
    pub srtp: Option<crate::srtp::SrtpKeys>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaCommand {
    /// Allocate a port pair, bind it and start the leg.
    Open {
        leg: LegId,
        mode: LegMode,
        media: LegMedia,
        /// No packet for this long: report [`MediaEvent::Timeout`].
        timeout: Duration,
    },
    /// Bind two legs and relay RTP and RTCP between them (a forwarded
    /// call): what arrives on one leg leaves from the other toward its
    /// peer. Closing either leg closes both.
    OpenRelay {
        legs: [LegId; 2],
        media: [LegMedia; 2],
        timeout: Duration,
    },
    /// Take over a relay a previous run of the daemon left (a call it
    /// restored from the store): bind the same two local RTP ports
    /// (RTCP on the next ones) and relay as [`MediaCommand::OpenRelay`]
    /// does. When the kernel still holds the pair's pinned XDP rules
    /// ([`crate::engine::MediaEngine`] took them over at start), the pair
    /// starts latched to the peers those rules name and stays offloaded,
    /// so the kernel forwards without a gap. Answered with
    /// [`MediaEvent::RelayOpened`] or [`MediaEvent::Failed`].
    AdoptRelay {
        legs: [LegId; 2],
        media: [LegMedia; 2],
        ports: [u16; 2],
        timeout: Duration,
    },
    /// Bind a leg's RTP (and RTCP) port now, so that its address can go
    /// in an SDP offer, and start it later with [`MediaCommand::Open`] on
    /// the same leg id (an outbound call: the AI stream starts at the
    /// answer). Answered with [`MediaEvent::Opened`]; `Close` releases it.
    Reserve {
        leg: LegId,
    },
    /// A re-INVITE or UPDATE changed the stream (hold, new address).
    Update {
        leg: LegId,
        media: LegMedia,
    },
    Close {
        leg: LegId,
    },
    /// A digit the caller sent by SIP INFO (application/dtmf-relay),
    /// reported to the AI like an RFC 4733 one.
    InfoDtmf {
        leg: LegId,
        digit: char,
        duration_ms: u32,
    },
    /// Play a digit toward the caller as RFC 4733 events.
    SendDtmf {
        leg: LegId,
        digit: char,
        duration_ms: u32,
    },
    /// Tell the AI of a stream leg of an SMS to its number.
    Sms {
        leg: LegId,
        sms: crate::aistream::SmsIn,
    },
    /// Tell the AI of a stream leg how its `transfer` went.
    TransferResult {
        leg: LegId,
        result: crate::aistream::TransferResult,
    },
    /// Copy a relay's audio, both parties, to a listen-only WebSocket
    /// ([`crate::tap`]); `leg` is either leg of the relay. A fork already
    /// running is replaced. While forked, the pair is not offloaded to XDP
    /// (the kernel would forward packets the tap never sees).
    StartFork {
        leg: LegId,
        spec: Box<crate::aistream::StreamSpec>,
    },
    /// Stop the relay's fork (its socket gets `stop`).
    StopFork {
        leg: LegId,
    },
    /// Record a stream leg: the caller and what the caller hears, as a
    /// stereo WAV at `spec.path`; `RecordingDone` tells when it is
    /// written (after the leg closes).
    Record {
        leg: LegId,
        spec: Box<crate::recorder::RecordingSpec>,
    },
    /// Move a stream leg's AI to `spec` (same sample rate): the new
    /// socket opens, the old one gets `stop`, the leg goes on.
    Restream {
        leg: LegId,
        spec: Box<crate::aistream::StreamSpec>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// A recording is written (or failed: `error` says why).
    RecordingDone(Box<crate::recorder::RecordingDone>),
    Opened {
        leg: LegId,
        local: SocketAddr,
    },
    Failed {
        leg: LegId,
        reason: String,
    },
    /// Both legs of a relay are bound: their local RTP addresses.
    RelayOpened {
        legs: [LegId; 2],
        locals: [SocketAddr; 2],
    },
    /// No RTP arrived for the configured time.
    Timeout {
        leg: LegId,
    },
    /// The AI's socket is up (route `stream`): the call may be answered.
    StreamConnected {
        leg: LegId,
    },
    /// The AI's socket could not be opened.
    StreamFailed {
        leg: LegId,
        reason: String,
    },
    /// The AI ended the stream (closed it, or it stayed lost too long).
    StreamEnded {
        leg: LegId,
        reason: String,
    },
    /// The AI asks for the caller to be transferred (event `transfer`):
    /// an E.164 number or a `sip:` URI, checked by the dialect.
    AiTransfer {
        leg: LegId,
        to: String,
    },
    /// A relay's fork could not connect, or its socket ended: the relay
    /// goes on without it. `stream_sid` tells which fork (a newer one may
    /// have replaced it).
    ForkEnded {
        leg: LegId,
        stream_sid: String,
        reason: String,
    },
}
