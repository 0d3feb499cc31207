//! Live call control: requests from the REST API to the signalling core,
//! which owns every dialog. The core is sans-IO: it takes a request with
//! an id and answers with a [`ControlReply`] among its outputs; the edge
//! between them ([`ControlEnvelope`]) keeps the channel the reply goes
//! back on.

use tokio::sync::{mpsc, oneshot};

/// A request for the core.
#[derive(Debug)]
pub enum ControlRequest {
    /// End the call: BYE when answered, CANCEL or a final error response
    /// while it rings (RFC 3261 §15).
    Hangup { call_id: String },
    /// Play digits toward the remote party as RFC 4733 events.
    SendDtmf {
        call_id: String,
        digits: String,
        duration_ms: u32,
    },
    /// Transfer the remote party to `to` (E.164 or `sip:` URI), as the
    /// AI's `transfer` event does: the AI keeps the call if it fails.
    Transfer {
        call_id: String,
        to: String,
        /// How long `to` may ring; default: `[forward] ring_timeout_secs`.
        ring_timeout: Option<std::time::Duration>,
    },
    /// Start (or replace) a listen-only copy of a relayed call's audio,
    /// both parties, to a WebSocket (Twilio's `<Start><Stream>`).
    StartStream {
        call_id: String,
        account: String,
        stream: StreamTarget,
    },
    /// Stop that copy.
    StopStream { call_id: String },
    /// Move a live AI call to another stream (URL, dialect, parameters):
    /// the old socket gets `stop`, the new one `connected`/`start` with
    /// the same callSid; the SIP leg is untouched.
    Redirect {
        call_id: String,
        account: String,
        stream: StreamTarget,
    },
    /// Record a live AI call (both tracks) as recording `recording_id`.
    Record {
        call_id: String,
        account: String,
        recording_id: String,
        status_callback: Option<String>,
    },
    /// Fetch TwiML for a live AI call (Twilio's update with `Url`), signed
    /// with the account's token, and carry it out: `<Connect><Stream>`
    /// moves the call as [`ControlRequest::Redirect`] does.
    RedirectFetch {
        call_id: String,
        account: String,
        fetch: crate::twiml::Fetch,
    },
    /// Send an SMS (SIP MESSAGE through a trunk).
    SendMessage { req: Box<MessageRequest> },
    /// Place an outbound call.
    Originate { req: Box<OriginateRequest> },
}

/// The core's answer to a [`ControlRequest`], in the variant the request
/// asks for.
#[derive(Clone, Debug)]
pub enum ControlReply {
    /// Hangup, DTMF, transfer, start and stop of a stream.
    Outcome(ControlOutcome),
    /// SendMessage.
    Message(Result<crate::store::MessageRecord, OriginateRefused>),
    /// Originate.
    Originated(Result<Originated, OriginateRefused>),
}

/// A request on its way to the core, with the channel its reply goes
/// back on (kept by the edge while the core works).
#[derive(Debug)]
pub struct ControlEnvelope {
    pub request: ControlRequest,
    pub reply: oneshot::Sender<ControlReply>,
}

/// An outbound call the REST API asks for (`POST /v1/calls`): INVITE `to`
/// through a trunk with caller id `from`; on answer the call is connected
/// as [`Connect`] says.
#[derive(Clone, Debug)]
pub struct OriginateRequest {
    pub account: String,
    /// E.164, one of the account's numbers (its caller id).
    pub from: String,
    /// E.164 callee.
    pub to: String,
    /// The trunk to call through; default: the `from` number's trunk.
    pub trunk: Option<String>,
    /// What the answered callee is connected to.
    pub connect: Connect,
    /// How long the callee may ring; default: `[forward] ring_timeout_secs`.
    pub ring_timeout: Option<std::time::Duration>,
    /// Where the call's status changes are POSTed (signed, retried).
    pub status_webhook: Option<String>,
    /// How they are written (Twilio's Calls API: `twilio`).
    pub status_format: crate::store::WebhookFormat,
    /// Twilio's `StatusCallbackEvent`: which of `initiated`, `ringing`,
    /// `answered`, `completed` are sent (empty: every change).
    pub status_events: Vec<String>,
    /// Record the call once its TwiML streams it (Twilio's `Record`),
    /// telling this URL when the file is written.
    pub record: Option<RecordRequest>,
}

/// A recording asked for with a call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordRequest {
    pub status_callback: Option<String>,
}

/// A WebSocket to stream a call to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTarget {
    /// `ws://` or `wss://`.
    pub url: String,
    /// `twilio` (default) or `pcm`...
    pub dialect: Option<String>,
    /// Custom parameters for the AI (JSON object text).
    pub params: Option<String>,
}

/// What an answered outbound call is connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connect {
    /// An AI stream, exactly as for an inbound call.
    Stream(StreamTarget),
    /// A second party (click-to-call): the gateway then places a far leg
    /// and bridges the two, as for a forwarded call. An E.164 number goes
    /// through the call's trunk, a `sip:` URI to its own host. When that
    /// leg fails, the call ends (there is no AI to keep the callee).
    Forward { to: String },
    /// TwiML run once the callee answers (Twilio's Calls API: `Twiml`,
    /// or `Url` fetched then, signed with the account's token).
    Twiml(TwimlStart),
}

/// Where an outbound call's TwiML comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TwimlStart {
    /// Given with the request (`Twiml`).
    Verbs(Vec<crate::twiml::Verb>),
    /// Fetched from this URL at the answer (`Url`, `Method`).
    Fetch(crate::twiml::Fetch),
}

/// An SMS the REST API asks to send (`POST /v1/messages`).
#[derive(Clone, Debug)]
pub struct MessageRequest {
    pub account: String,
    /// E.164, one of the account's numbers.
    pub from: String,
    pub to: String,
    pub body: String,
    /// Default: the `from` number's trunk.
    pub trunk: Option<String>,
}

/// An outbound call under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Originated {
    pub call_id: String,
    pub sip_call_id: String,
    /// Unix ms.
    pub started_at: i64,
    pub trunk: String,
}

/// Why an outbound call was not placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginateRefused {
    #[error("from is not one of this account's numbers")]
    FromNotOwned,
    #[error("no trunk: name one, or give the from number a trunk")]
    NoTrunk,
    #[error("trunk cannot place calls: {0}")]
    TrunkUnavailable(String),
    #[error("the callee is blocked for this account")]
    Blocked,
    #[error("the trunk or number is at its concurrent call limit")]
    Capacity,
    #[error("the gateway is draining and places no new calls")]
    Draining,
}

/// The core's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlOutcome {
    /// Done or under way.
    Accepted,
    /// No live call with that id on this node.
    NotLive,
    /// The call cannot do this (yet): why.
    Refused(&'static str),
}

/// The API's handle on the core.
#[derive(Clone, Debug)]
pub struct CallControl {
    tx: mpsc::Sender<ControlEnvelope>,
}

pub const CONTROL_QUEUE: usize = 1024;

impl CallControl {
    pub fn channel() -> (CallControl, mpsc::Receiver<ControlEnvelope>) {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        (CallControl { tx }, rx)
    }

    /// Sends `request` and waits for its reply; `None` when the core is
    /// gone or its queue is full.
    async fn ask(&self, request: ControlRequest) -> Option<ControlReply> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(ControlEnvelope { request, reply }).ok()?;
        rx.await.ok()
    }

    /// A request answered with an outcome.
    async fn outcome(&self, request: ControlRequest) -> Option<ControlOutcome> {
        match self.ask(request).await? {
            ControlReply::Outcome(o) => Some(o),
            _ => None,
        }
    }

    pub async fn originate(
        &self,
        req: OriginateRequest,
    ) -> Option<Result<Originated, OriginateRefused>> {
        match self
            .ask(ControlRequest::Originate { req: Box::new(req) })
            .await?
        {
            ControlReply::Originated(r) => Some(r),
            _ => None,
        }
    }

    pub async fn send_dtmf(
        &self,
        call_id: &str,
        digits: &str,
        duration_ms: u32,
    ) -> Option<ControlOutcome> {
        self.outcome(ControlRequest::SendDtmf {
            call_id: call_id.to_string(),
            digits: digits.to_string(),
            duration_ms,
        })
        .await
    }

    pub async fn transfer(
        &self,
        call_id: &str,
        to: &str,
        ring_timeout: Option<std::time::Duration>,
    ) -> Option<ControlOutcome> {
        self.outcome(ControlRequest::Transfer {
            call_id: call_id.to_string(),
            to: to.to_string(),
            ring_timeout,
        })
        .await
    }

    pub async fn start_stream(
        &self,
        call_id: &str,
        account: &str,
        stream: StreamTarget,
    ) -> Option<ControlOutcome> {
        self.outcome(ControlRequest::StartStream {
            call_id: call_id.to_string(),
            account: account.to_string(),
            stream,
        })
        .await
    }

    pub async fn redirect(
        &self,
        call_id: &str,
        account: &str,
        stream: StreamTarget,
    ) -> Option<ControlOutcome> {
        self.outcome(ControlRequest::Redirect {
            call_id: call_id.to_string(),
            account: account.to_string(),
            stream,
        })
        .await
    }

    pub async fn record(
        &self,
        call_id: &str,
        account: &str,
        recording_id: &str,
        status_callback: Option<String>,
    ) -> Option<ControlOutcome> {
        self.outcome(ControlRequest::Record {
            call_id: call_id.to_string(),
            account: account.to_string(),
            recording_id: recording_id.to_string(),
            status_callback,
        })
        .await
    }

    pub async fn redirect_fetch(
        &self,
        call_id: &str,
        account: &str,
        fetch: crate::twiml::Fetch,
    ) -> Option<ControlOutcome> {
        self.outcome(ControlRequest::RedirectFetch {
            call_id: call_id.to_string(),
            account: account.to_string(),
            fetch,
        })
        .await
    }

    pub async fn stop_stream(&self, call_id: &str) -> Option<ControlOutcome> {
        self.outcome(ControlRequest::StopStream {
            call_id: call_id.to_string(),
        })
        .await
    }

    /// Asks the core to send an SMS; `None` when the core is gone or busy.
    pub async fn send_message(
        &self,
        req: MessageRequest,
    ) -> Option<Result<crate::store::MessageRecord, OriginateRefused>> {
        match self
            .ask(ControlRequest::SendMessage { req: Box::new(req) })
            .await?
        {
            ControlReply::Message(r) => Some(r),
            _ => None,
        }
    }

    /// Asks the core to hang up `call_id`; `None` when the core is gone or
    /// overloaded.
    pub async fn hangup(&self, call_id: &str) -> Option<ControlOutcome> {
        self.outcome(ControlRequest::Hangup {
            call_id: call_id.to_string(),
        })
        .await
    }
}
