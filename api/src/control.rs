//! Live call control: requests from the REST API to the signalling core,
//! which owns every dialog. The core answers each on a oneshot channel.

use tokio::sync::{mpsc, oneshot};

/// A request for the core.
#[derive(Debug)]
pub enum ControlRequest {
    /// End the call: BYE when answered, CANCEL or a final error response
    /// while it rings (RFC 3261 §15).
    Hangup {
        call_id: String,
        reply: oneshot::Sender<ControlOutcome>,
    },
}

/// The core's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlOutcome {
    /// Done or under way.
    Accepted,
    /// No live call with that id on this node.
    NotLive,
}

/// The API's handle on the core.
#[derive(Clone, Debug)]
pub struct CallControl {
    tx: mpsc::Sender<ControlRequest>,
}

/// Requests waiting for the core before the API answers 503.
pub const CONTROL_QUEUE: usize = 1024;

impl CallControl {
    pub fn channel() -> (CallControl, mpsc::Receiver<ControlRequest>) {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        (CallControl { tx }, rx)
    }

    /// Asks the core to hang up `call_id`; `None` when the core is gone or
    /// overloaded.
    pub async fn hangup(&self, call_id: &str) -> Option<ControlOutcome> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(ControlRequest::Hangup {
                call_id: call_id.to_string(),
                reply,
            })
            .ok()?;
        rx.await.ok()
    }
}
