//! A call: the caller's side of every route, from INVITE to BYE, and the
//! timers it runs (2xx retransmission, RFC 4028 session timers).

use crate::core::dialog::Dialog;
use crate::core::*;
use crate::sip::sdes::LegKeying;
use crate::sip::sdp::NegotiatedAudio;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// INVITE accepted, waiting for the media leg to open.
    AwaitingMedia,
    /// 2xx sent, waiting for the ACK.
    Answered,
    Confirmed,
}

/// 2xx retransmission state (§13.3.1.4): T1 doubling to T2, for 64*T1.
#[derive(Debug)]
pub struct OkRetransmit {
    pub(in crate::core) bytes: Bytes,
    pub(in crate::core) next: Option<Instant>,
    pub(in crate::core) interval: Duration,
    pub(in crate::core) give_up: Instant,
}

impl OkRetransmit {
    /// Retransmission of `bytes` from `now` (none over reliable transports).
    pub(in crate::core) fn start(
        now: Instant,
        bytes: Bytes,
        reliable: bool,
        t: TimerConfig,
    ) -> Self {
        OkRetransmit {
            bytes,
            next: (!reliable).then(|| now + t.t1),
            interval: t.t1,
            give_up: now + t.t64(),
        }
    }

    /// Due work at `now`: the bytes to resend, or whether to give up.
    pub(in crate::core) fn on_timer(
        &mut self,
        now: Instant,
        t2: Duration,
    ) -> (Option<Bytes>, bool) {
        if now >= self.give_up {
            return (None, true);
        }
        match self.next {
            Some(n) if now >= n => {
                self.interval = (self.interval * 2).min(t2);
                self.next = Some(now + self.interval);
                (Some(self.bytes.clone()), false)
            }
            _ => (None, false),
        }
    }

    pub(in crate::core) fn deadline(&self) -> Instant {
        self.next.map_or(self.give_up, |n| n.min(self.give_up))
    }
}

/// RFC 4028 session timer state.
#[derive(Debug, Clone, Copy)]
pub struct SessionTimer {
    pub interval: u32,
    pub we_refresh: bool,
    /// When we send the next refresh (we_refresh) or give up (otherwise).
    pub due: Instant,
}

impl SessionTimer {
    pub(in crate::core) fn start(now: Instant, interval: u32, we_refresh: bool) -> SessionTimer {
        let secs = if we_refresh {
            interval / 2
        } else {
            // §10: BYE min(32, interval/3) seconds before expiry.
            interval - (interval / 3).min(32)
        };
        SessionTimer {
            interval,
            we_refresh,
            due: now + Duration::from_secs(u64::from(secs)),
        }
    }

    pub(in crate::core) fn header(&self) -> String {
        format!(
            "{};refresher={}",
            self.interval,
            if self.we_refresh { "uas" } else { "uac" }
        )
    }
}

/// What a live redirect keeps of a call's AI stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AiStream {
    pub rate: u32,
    pub from: String,
    pub to: String,
    /// The recording under way (one per call).
    pub recording: Option<String>,
}

/// Where a call's status changes go, and how they are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusHook {
    pub url: String,
    pub format: domain::model::WebhookFormat,
    /// The call's account (Twilio's `AccountSid`; its token signs).
    pub account: String,
    /// Events sent so far: the next one's sequence number.
    pub sent: u32,
    /// Twilio's `StatusCallbackEvent` names wanted (`initiated`,
    /// `ringing`, `answered`, `completed`); empty: every change.
    pub events: Vec<String>,
}

impl StatusHook {
    /// The gateway's JSON events to `url`.
    pub fn json(url: String, account: String) -> StatusHook {
        StatusHook {
            url,
            format: domain::model::WebhookFormat::Json,
            account,
            sent: 0,
            events: vec![],
        }
    }

    /// Whether a change to `status` is told. `initiated` is Twilio's
    /// event only: the gateway's JSON events start at `ringing`.
    pub fn wants(&self, status: &str) -> bool {
        let event = match status {
            "initiated" if self.format == domain::model::WebhookFormat::Json => return false,
            "initiated" | "ringing" => status,
            "in-progress" => "answered",
            _ => "completed",
        };
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }
}

#[derive(Debug)]
pub struct Call {
    pub handle: CallHandle,
    pub sid: String,
    pub state: CallState,
    /// The INVITE server transaction, until it is terminated.
    pub invite_txn: Option<TxnId>,
    pub dialog: Dialog,
    pub number_pattern: Option<String>,
    pub trunk: Option<String>,
    pub media_open: bool,
    /// The caller's offer (None: late offer, ours goes in the 2xx).
    pub offer: Option<SessionDescription>,
    pub local_sdp: Option<SessionDescription>,
    pub negotiated: Option<NegotiatedAudio>,
    pub invite_at: Instant,
    pub answered_at: Option<Instant>,
    pub ok: Option<OkRetransmit>,
    /// Our 2xx carried an offer; the ACK brings the answer.
    pub ack_offer_pending: bool,
    pub session: Option<SessionTimer>,
    /// A re-INVITE being answered.
    pub reinvite_txn: Option<TxnId>,
    pub callee_user: Option<String>,
    /// Codecs this call may use: those its media mode can serve.
    pub codecs: Vec<Codec>,
    /// Route `stream`: the answer waits for the AI's socket, at most
    /// until this instant.
    pub stream_wait: Option<Instant>,
    /// Our RTP address once the leg is open.
    pub local_media: Option<SocketAddr>,
    /// Route `forward`: the far leg this call is bridged to.
    pub bridge: Option<OutLegHandle>,
    /// A transfer in progress: the new far leg, until it answers or fails.
    pub transfer: Option<OutLegHandle>,
    /// Our re-INVITE toward the caller (a hold across the bridge), and
    /// the ACK of its 2xx, resent if the 2xx is.
    pub reinvite_out: Option<super::PendingReinvite>,
    pub reinvite_ack: Option<Bytes>,
    /// The number's fallback (as a forward route), until used.
    pub fallback: Option<domain::model::Number>,
    /// The media leg carrying the caller: the call's handle, or after an
    /// AI transfer the relay side the caller moved to.
    pub media_leg: LegId,
    /// The number's forwarding trunk (AI transfers go through it).
    pub route_trunk: Option<String>,
    /// A REFER of ours to the caller's carrier is running until this
    /// instant (its NOTIFYs tell how the transfer goes).
    pub refer_until: Option<Instant>,
    /// We placed this call (REST): the callee is the remote party.
    pub outbound: bool,
    /// An outbound call until it is answered: the stream it starts then.
    pub origination: Option<super::Origination>,
    /// Waiting for the number's voice webhook to pick the route.
    pub pending: Option<Box<super::PendingRoute>>,
    /// The AI stream the call has: its sample rate and the `from`/`to`
    /// it told the AI (a live redirect keeps all three).
    pub ai_stream: Option<AiStream>,
    /// The TwiML its voice webhook answered, while it runs.
    pub twiml: Option<Box<super::TwimlRun>>,
    /// Where this call's status changes are POSTed.
    pub status_webhook: Option<StatusHook>,
    /// Click-to-call: no AI keeps the callee, so when the far leg to the
    /// second party fails, the call ends.
    pub click_to_call: bool,
    /// The streamSid of the listen-only copy of the relay's audio that
    /// runs ([`super::fork`]).
    pub forked: Option<String>,
    /// The caller hung up after REFERring the call elsewhere: the call
    /// waits for the Refer-To target ([`super::caller_refer`]).
    pub caller_left: bool,
    /// SRTP on this leg: its policy and the keys we declare.
    pub keying: LegKeying,
    /// Admitted by this node, waiting for its cluster-wide slots
    /// ([`super::capacity`]): what it does once they are granted.
    pub admission: Option<Box<super::Admission>>,
    /// Holds (or may hold) slots in the store: released when it ends.
    pub reserved: bool,
}

impl Call {
    /// The o= session id of our SDP toward this call's party: later
    /// offers keep it (RFC 3264 §8), also after a restart gave the call a
    /// new handle.
    pub(in crate::core) fn sdp_session_id(&self) -> u64 {
        self.local_sdp
            .as_ref()
            .map_or(self.handle.get(), |s| s.session_id)
    }

    pub(in crate::core) fn next_deadline(&self) -> Option<Instant> {
        let ok = self.ok.as_ref().map(|o| match o.next {
            Some(n) => n.min(o.give_up),
            None => o.give_up,
        });
        [
            ok,
            self.session.map(|s| s.due),
            self.stream_wait,
            self.refer_until,
            self.twiml.as_ref().and_then(|t| t.wake),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
