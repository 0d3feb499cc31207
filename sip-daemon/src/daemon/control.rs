//! The edge between REST's live-call requests and the core: each request
//! gets a `ControlId`, its reply channel waits here, and the core's
//! `Output::ControlReply` is sent back on it.

use crate::core::ControlId;
use api::control::ControlReply;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// Reply channels of the requests the core has not answered yet.
#[derive(Default)]
pub(super) struct ControlReplies {
    waiting: Mutex<(u64, HashMap<ControlId, oneshot::Sender<ControlReply>>)>,
}

impl ControlReplies {
    /// Keeps `reply` until the core answers; the id to give the core.
    pub(super) fn keep(&self, reply: oneshot::Sender<ControlReply>) -> ControlId {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.0 += 1;
        let id = ControlId(w.0);
        w.1.insert(id, reply);
        id
    }

    /// Sends the core's answer back to the REST handler that asked (which
    /// may have given up waiting: then it is dropped).
    pub(super) fn answer(&self, id: ControlId, reply: ControlReply) {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .remove(&id);
        if let Some(tx) = waiting {
            let _ = tx.send(reply);
        }
    }
}
