//! The far leg of a forwarded call (the B2BUA's UAC side), and where it
//! goes.

use crate::core::dialog::Dialog;
use crate::core::*;
use crate::sip::Uri;
use crate::sip::sdes::LegKeying;
use crate::sip::sdp::NegotiatedAudio;

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
    pub reinvite_out: Option<super::PendingReinvite>,
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
    pub ok: Option<super::OkRetransmit>,
    /// SRTP on this leg: its policy and the keys we declare.
    pub keying: LegKeying,
}

impl OutLeg {
    /// The o= session id of our SDP toward the far side: later offers and
    /// answers keep it (RFC 3264 §8), also after a restart gave the leg
    /// a new handle.
    pub(in crate::core) fn sdp_session_id(&self, hb: OutLegHandle) -> u64 {
        self.offer
            .as_deref()
            .and_then(|t| SessionDescription::parse(t.as_bytes()).ok())
            .map_or(hb.get(), |s| s.session_id)
    }
}

/// The relay side a failed far leg held, for the leg that takes over.
#[derive(Clone, Debug)]
pub struct RelaySide {
    pub(in crate::core) media_leg: u64,
    pub(in crate::core) local: Option<SocketAddr>,
    pub(in crate::core) offered: Vec<Codec>,
}

impl RelaySide {
    pub(in crate::core) fn of(o: &OutLeg) -> RelaySide {
        RelaySide {
            media_leg: o.media_leg,
            local: o.local_media,
            offered: o.offered.clone(),
        }
    }
}
