//! Listen-only streams of relayed calls, started and stopped over REST
//! (`POST`/`DELETE /v1/calls/{id}/stream`): Twilio's `<Start><Stream>`.
//! The media engine's tap copies both parties' audio to the WebSocket
//! (`media_userspace::tap`); the call itself is untouched. Calls that
//! stream to an AI already send it the caller's audio and are refused.

use super::*;
use api::control::{ControlOutcome, StreamTarget};

impl Core {
    /// Starts (or replaces) the fork of relayed call `h`.
    pub(super) fn start_fork(
        &mut self,
        h: CallHandle,
        account: &str,
        target: &StreamTarget,
    ) -> ControlOutcome {
        let Some(call) = self.calls.get(&h) else {
            return ControlOutcome::NotLive;
        };
        if call.bridge.is_none() {
            return ControlOutcome::Refused(
                "the call is not relayed (it streams to an AI, or is not bridged yet): \
                 only forwarded and transferred calls take a listen-only stream",
            );
        }
        let (from, to) = if call.outbound {
            (
                uri_user(&call.dialog.local_uri),
                uri_user(&call.dialog.remote_uri),
            )
        } else {
            (
                uri_user(&call.dialog.remote_uri),
                uri_user(&call.dialog.local_uri),
            )
        };
        let number =
            super::stream::stream_number_for(call.number_pattern.as_deref(), account, target);
        let mut spec = self.stream_spec(
            &target.url,
            &number,
            &call.sid,
            &from,
            &to,
            &call.dialog.key.call_id,
        );
        spec.fork = true;
        let leg = call.media_leg;
        if let Some(c) = self.calls.get_mut(&h) {
            c.forked = Some(spec.stream_sid.clone());
        }
        tracing::info!(call = h.get(), "listen-only stream started");
        self.out.push_back(Output::Media(MediaCommand::StartFork {
            leg,
            spec: Box::new(spec),
        }));
        ControlOutcome::Accepted
    }

    /// Stops the fork of call `h`.
    pub(super) fn stop_fork(&mut self, h: CallHandle) -> ControlOutcome {
        let Some(c) = self.calls.get_mut(&h) else {
            return ControlOutcome::NotLive;
        };
        if c.forked.take().is_none() {
            return ControlOutcome::Refused("no stream runs on this call");
        }
        let leg = c.media_leg;
        self.out
            .push_back(Output::Media(MediaCommand::StopFork { leg }));
        ControlOutcome::Accepted
    }

    /// Fork `stream_sid` failed or its socket ended; the relay goes on
    /// without it. A fork that a newer one replaced is forgotten already.
    pub(super) fn fork_ended(&mut self, leg: u64, stream_sid: &str, reason: &str) {
        let Some((h, c)) = self
            .calls
            .iter_mut()
            .find(|(_, c)| c.media_leg == leg && c.forked.as_deref() == Some(stream_sid))
        else {
            return;
        };
        tracing::info!(call = h.get(), reason, "listen-only stream ended");
        c.forked = None;
        self.out
            .push_back(Output::Media(MediaCommand::StopFork { leg }));
    }
}
