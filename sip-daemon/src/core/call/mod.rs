//! Calls: the INVITE server side (RFC 3261 §13.3), 2xx retransmission until
//! ACK (§13.3.1.4), CANCEL (§9.2), BYE (§15), re-INVITE and UPDATE (§14,
//! RFC 3311) with hold/unhold, and RFC 4028 session timers.
//!
//! By phase: `invite` (a new INVITE up to its route, and CANCEL),
//! `answer` (media ready, the 200 OK and its ACK), `in_dialog` (BYE,
//! re-INVITE and UPDATE, INFO, session timers) and `end` (hangup and the
//! call's record). The call's state is here.

mod answer;
mod end;
mod in_dialog;
mod invite;

use super::*;

/// RFC 3261 §17.2.1: a provisional response is due when the TU has not
/// answered an INVITE within 200 ms.
const TRYING_AFTER: Duration = Duration::from_millis(200);

impl Core {
    pub(in crate::core) fn unix_ms(&self, now: Instant) -> i64 {
        self.clock.unix_ms(now)
    }

    pub(in crate::core) fn schedule_call(&mut self, h: CallHandle) {
        if let Some(at) = self.calls.get(&h).and_then(Call::next_deadline) {
            self.schedule(at, TimerRef::Call(h));
        }
    }
}
