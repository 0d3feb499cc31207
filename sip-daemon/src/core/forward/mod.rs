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

//!
//! By phase: `target` (where the call goes), `setup` (the relay and the
//! far INVITE), `answer` (the far side's responses), `failure` (CANCEL,
//! timeouts, fallback, BYE) and `in_dialog` (the far side's requests).

mod answer;
mod failure;
mod in_dialog;
mod setup;
mod target;

use super::dialog::Dialog;
use super::*;
use crate::sip::Uri;
use crate::sip::digest::{Challenge, Credentials};
use crate::sip::sdes::LegKeying;
use crate::sip::sdp::NegotiatedAudio;
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
