//! A drain: new calls refused, the calls in progress waited for until
//! `sip.drain_timeout_secs`, then hung up, their BYEs given a grace.

use super::outputs::Edges;
use crate::core::Core;
use std::time::{Duration, Instant};

/// After the drain timeout hangs up the remaining calls, how long their
/// BYE transactions may take.
const BYE_GRACE: Duration = Duration::from_secs(5);
/// How often a drain checks on the store and the calls it waits for.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Where a drain is.
pub(super) struct Drain {
    timeout: Duration,
    /// Set when the drain began: when the calls left are hung up.
    deadline: Option<Instant>,
    hung_up_at: Option<Instant>,
}

impl Drain {
    pub(super) fn new(timeout: Duration) -> Drain {
        Drain {
            timeout,
            deadline: None,
            hung_up_at: None,
        }
    }

    /// Begins the drain (once), for `why`.
    pub(super) fn begin(&mut self, core: &mut Core, why: &str) {
        if self.deadline.is_none() {
            tracing::info!(
                signal = why,
                calls = core.active_calls(),
                timeout_secs = self.timeout.as_secs(),
                "draining: refusing new calls"
            );
            core.start_drain();
            self.deadline = Some(Instant::now() + self.timeout);
        }
    }

    /// The next wake-up: the core's, or the drain's own.
    pub(super) fn wake(&self, core: Option<Instant>) -> Instant {
        core.into_iter()
            .chain(self.deadline)
            // While draining, the store's progress is polled too.
            .chain(self.deadline.map(|_| Instant::now() + DRAIN_POLL))
            .chain(self.hung_up_at.map(|t| t + BYE_GRACE))
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// After a turn: whether the drain is over. At its deadline the calls
    /// left are hung up.
    pub(super) fn is_over(&mut self, now: Instant, core: &mut Core, out: &Edges) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        // Server transactions merely absorbing retransmissions (Timer
        // J/K) do not hold the process; our own BYEs do.
        // Calls handed over are safe once their snapshots are stored.
        let stored = !core.is_handing_over() || out.cdrs.unwritten() == 0;
        if core.calls_to_drain() == 0 && core.pending_requests() == 0 && stored {
            return true;
        }
        if self.hung_up_at.is_none() && now >= deadline {
            tracing::warn!(
                calls = core.calls_to_drain(),
                "drain timeout: hanging up remaining calls"
            );
            if stored {
                core.hangup_drained(now, "shutdown");
            } else {
                tracing::error!(
                    events = out.cdrs.unwritten(),
                    "the store did not take the snapshots in time: hanging up the calls handed over too"
                );
                core.hangup_all(now, "shutdown");
            }
            self.hung_up_at = Some(now);
            out.flush(core);
        }
        self.hung_up_at.is_some_and(|t| now >= t + BYE_GRACE)
    }
}
