//! RFC 3261 timer values (§17, Table 4 of Appendix A).

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct TimerConfig {
    /// RTT estimate.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE
    /// responses.
    pub t2: Duration,
    /// Maximum time a message remains in the network.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// RFC 3261 defaults with another T1 (T2 and T4 keep their values).
    pub fn with_t1(t1: Duration) -> TimerConfig {
        TimerConfig {
            t1,
            ..TimerConfig::default()
        }
    }

    /// Timers B, F, H, J, L, M: 64*T1.
    pub fn t64(&self) -> Duration {
        self.t1 * 64
    }
    /// Timer D: at least 32 s on unreliable transports.
    pub fn timer_d(&self) -> Duration {
        Duration::from_secs(32).max(self.t64())
    }
}
