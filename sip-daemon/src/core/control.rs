//! Live-call control from the REST API (`ControlRequest`): DTMF,
//! transfer, listen-only streams, hangup, outbound calls and SMS.

use super::*;
use api::control::{ControlOutcome, ControlReply, ControlRequest};

impl Core {
    /// The handle of the live call `sid`.
    pub(super) fn live_call(&self, sid: &str) -> Option<CallHandle> {
        self.calls.values().find(|c| c.sid == sid).map(|c| c.handle)
    }

    pub(super) fn control_dtmf(
        &mut self,
        h: CallHandle,
        digits: &str,
        duration_ms: u32,
    ) -> ControlOutcome {
        let Some(call) = self.calls.get(&h) else {
            return ControlOutcome::NotLive;
        };
        if call.state == legs::CallState::AwaitingMedia {
            return ControlOutcome::Refused("the call is not answered yet");
        }
        if call.bridge.is_some() || call.media_leg != h.own_leg() {
            return ControlOutcome::Refused(
                "DTMF is played on calls with an AI stream; this call is relayed",
            );
        }
        for digit in digits.chars() {
            self.out.push_back(Output::Media(MediaCommand::SendDtmf {
                leg: h.own_leg(),
                digit,
                duration_ms,
            }));
        }
        ControlOutcome::Accepted
    }

    pub(super) fn control_transfer(
        &mut self,
        now: Instant,
        h: CallHandle,
        to: String,
        ring: Option<Duration>,
    ) -> ControlOutcome {
        let Some(call) = self.calls.get(&h) else {
            return ControlOutcome::NotLive;
        };
        if call.state == legs::CallState::AwaitingMedia {
            return ControlOutcome::Refused("the call is not answered yet");
        }
        if call.bridge.is_some() {
            return self.transfer_forwarded(now, h, &to, ring);
        }
        if call.media_leg != h.own_leg() {
            return ControlOutcome::Refused("the call was transferred already");
        }
        if call.transfer.is_some() || call.refer_until.is_some() {
            return ControlOutcome::Refused("a transfer of this call is already under way");
        }
        self.on_ai_transfer(now, h, to, ring);
        ControlOutcome::Accepted
    }

    /// A live-control request from the REST API; its answer leaves as
    /// `Output::ControlReply` with the same `id`, before this returns.
    pub fn handle_control(&mut self, now: Instant, id: ControlId, req: ControlRequest) {
        let reply = match req {
            ControlRequest::Originate { req } => {
                let result = self.originate(now, &req);
                if let Err(why) = &result {
                    tracing::info!(from = %req.from, to = %req.to, %why, "outbound call refused");
                }
                ControlReply::Originated(result)
            }
            ControlRequest::SendMessage { req } => ControlReply::Message(self.send_sms(now, &req)),
            ControlRequest::SendDtmf {
                call_id,
                digits,
                duration_ms,
            } => ControlReply::Outcome(match self.live_call(&call_id) {
                None => ControlOutcome::NotLive,
                Some(h) => self.control_dtmf(h, &digits, duration_ms),
            }),
            ControlRequest::Transfer {
                call_id,
                to,
                ring_timeout,
            } => ControlReply::Outcome(match self.live_call(&call_id) {
                None => ControlOutcome::NotLive,
                Some(h) => self.control_transfer(now, h, to, ring_timeout),
            }),
            ControlRequest::StartStream {
                call_id,
                account,
                stream,
            } => ControlReply::Outcome(match self.live_call(&call_id) {
                None => ControlOutcome::NotLive,
                Some(h) => self.start_fork(h, &account, &stream),
            }),
            ControlRequest::Redirect {
                call_id,
                account,
                stream,
            } => ControlReply::Outcome(match self.live_call(&call_id) {
                None => ControlOutcome::NotLive,
                Some(h) => self.redirect_stream(h, &account, &stream),
            }),
            ControlRequest::Record {
                call_id,
                account,
                recording_id,
                status_callback,
            } => ControlReply::Outcome(match self.live_call(&call_id) {
                None => ControlOutcome::NotLive,
                Some(h) => self.record_call(h, &account, &recording_id, status_callback),
            }),
            ControlRequest::RedirectFetch {
                call_id,
                account,
                fetch,
            } => ControlReply::Outcome(match self.live_call(&call_id) {
                None => ControlOutcome::NotLive,
                Some(h) => self.redirect_fetch(now, h, &account, fetch),
            }),
            ControlRequest::StopStream { call_id } => {
                ControlReply::Outcome(match self.live_call(&call_id) {
                    None => ControlOutcome::NotLive,
                    Some(h) => self.stop_fork(h),
                })
            }
            ControlRequest::Hangup { call_id } => {
                ControlReply::Outcome(match self.live_call(&call_id) {
                    Some(h) => {
                        self.hangup(now, h, "api_hangup");
                        ControlOutcome::Accepted
                    }
                    None => ControlOutcome::NotLive,
                })
            }
        };
        self.out.push_back(Output::ControlReply { id, reply });
    }
}
