//! RFC 3261 §17 transaction state machines, with the RFC 6026 "Accepted"
//! states. Sans-IO: fed with events and the current time, they return what
//! to (re)send and when they next need attention.

use super::timers::TimerConfig;
use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnKind {
    Invite,
    NonInvite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE only: no response sent yet.
    Trying,
    Proceeding,
    Completed,
    /// RFC 6026 §8.7: INVITE answered with 2xx; the TU retransmits it.
    Accepted,
    Confirmed,
    Terminated,
}

/// What a timer firing asks the owner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerEvent {
    Nothing,
    Retransmit(Bytes),
    /// Timer B/F (client) or H (server): the peer never answered / ACKed.
    Timeout,
    Terminated,
}

/// A server transaction (§17.2).
#[derive(Debug)]
pub struct ServerTransaction {
    pub kind: TxnKind,
    state: ServerState,
    reliable: bool,
    timers: TimerConfig,
    last_response: Option<Bytes>,
    last_status: u16,
    /// Timer G.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timers H, I, J, L.
    end_at: Option<Instant>,
}

impl ServerTransaction {
    pub fn new(kind: TxnKind, reliable: bool, timers: TimerConfig) -> Self {
        ServerTransaction {
            kind,
            state: match kind {
                TxnKind::Invite => ServerState::Proceeding,
                TxnKind::NonInvite => ServerState::Trying,
            },
            reliable,
            timers,
            last_response: None,
            last_status: 0,
            retransmit_at: None,
            retransmit_interval: timers.t1,
            end_at: None,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn last_status(&self) -> u16 {
        self.last_status
    }

    /// The last response sent (the TU retransmits a 2xx from here).
    pub fn last_response(&self) -> Option<&Bytes> {
        self.last_response.as_ref()
    }

    pub fn has_final(&self) -> bool {
        self.last_status >= 200
    }

    /// A retransmission of the request arrived (§17.2.1, §17.2.2): resend
    /// the last response, if any. In Accepted the 2xx is the TU's to resend.
    pub fn on_request_retransmit(&self) -> Option<Bytes> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed => self.last_response.clone(),
            _ => None,
        }
    }

    /// The TU sends a response through the transaction. Returns false (and
    /// sends nothing) when the state forbids it, e.g. a second final.
    pub fn respond(&mut self, now: Instant, status: u16, bytes: Bytes) -> bool {
        let allowed = matches!(self.state, ServerState::Trying | ServerState::Proceeding);
        if !allowed {
            return false;
        }
        self.last_status = status;
        self.last_response = Some(bytes);
        if status < 200 {
            self.state = ServerState::Proceeding;
            return true;
        }
        match (self.kind, status) {
            (TxnKind::Invite, 200..=299) => {
                self.state = ServerState::Accepted;
                self.end_at = Some(now + self.timers.t64()); // Timer L
            }
            (TxnKind::Invite, _) => {
                self.state = ServerState::Completed;
                if !self.reliable {
                    self.retransmit_interval = self.timers.t1;
                    self.retransmit_at = Some(now + self.retransmit_interval); // Timer G
                }
                self.end_at = Some(now + self.timers.t64()); // Timer H
            }
            (TxnKind::NonInvite, _) => {
                self.state = ServerState::Completed;
                // Timer J: 64*T1 on UDP, zero on reliable transports.
                self.end_at = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        self.timers.t64()
                    },
                );
            }
        }
        true
    }

    /// An ACK matched this INVITE transaction (ACK for a non-2xx final).
    pub fn on_ack(&mut self, now: Instant) {
        if self.state == ServerState::Completed && self.kind == TxnKind::Invite {
            self.state = ServerState::Confirmed;
            self.retransmit_at = None;
            // Timer I: T4 on UDP, zero on reliable.
            self.end_at = Some(
                now + if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                },
            );
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.retransmit_at, self.end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_timeout(&mut self, now: Instant) -> TimerEvent {
        if let Some(end) = self.end_at
            && now >= end
        {
            let timed_out = self.state == ServerState::Completed && self.kind == TxnKind::Invite;
            self.state = ServerState::Terminated;
            self.end_at = None;
            self.retransmit_at = None;
            return if timed_out {
                TimerEvent::Timeout
            } else {
                TimerEvent::Terminated
            };
        }
        if let Some(at) = self.retransmit_at
            && now >= at
            && self.state == ServerState::Completed
        {
            // Timer G doubles up to T2 (§17.2.1).
            self.retransmit_interval = (self.retransmit_interval * 2).min(self.timers.t2);
            self.retransmit_at = Some(now + self.retransmit_interval);
            if let Some(r) = &self.last_response {
                return TimerEvent::Retransmit(r.clone());
            }
        }
        TimerEvent::Nothing
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Calling (INVITE) or Trying (non-INVITE).
    Calling,
    Proceeding,
    Completed,
    /// RFC 6026 §8.4: INVITE got a 2xx; further 2xx go to the TU.
    Accepted,
    Terminated,
}

/// What to do with a response received by a client transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseAction {
    /// Pass it to the TU.
    Deliver,
    /// A retransmitted non-2xx final: resend this ACK, do not deliver.
    ResendAck(Bytes),
    /// Absorb silently.
    Absorb,
}

/// A client transaction (§17.1).
#[derive(Debug)]
pub struct ClientTransaction {
    pub kind: TxnKind,
    state: ClientState,
    reliable: bool,
    timers: TimerConfig,
    request: Bytes,
    ack: Option<Bytes>,
    /// Timers A / E.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timers B / F, then D / K / M.
    end_at: Option<Instant>,
}

impl ClientTransaction {
    /// Starts the transaction; the caller sends `request` once itself.
    pub fn new(
        now: Instant,
        kind: TxnKind,
        request: Bytes,
        reliable: bool,
        timers: TimerConfig,
    ) -> Self {
        ClientTransaction {
            kind,
            state: ClientState::Calling,
            reliable,
            timers,
            request,
            ack: None,
            retransmit_at: (!reliable).then(|| now + timers.t1),
            retransmit_interval: timers.t1,
            end_at: Some(now + timers.t64()),
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn request(&self) -> &Bytes {
        &self.request
    }

    pub fn on_response(&mut self, now: Instant, status: u16) -> ResponseAction {
        match (self.kind, self.state) {
            (_, ClientState::Terminated) => ResponseAction::Absorb,
            (TxnKind::Invite, ClientState::Calling | ClientState::Proceeding) => {
                self.retransmit_at = None;
                if status < 200 {
                    self.state = ClientState::Proceeding;
                    // Timer B stops once a provisional arrives (§17.1.1.2);
                    // the TU's own timer (Timer C / ring timeout) applies.
                    self.end_at = None;
                } else if status < 300 {
                    self.state = ClientState::Accepted;
                    self.end_at = Some(now + self.timers.t64()); // Timer M
                } else {
                    self.state = ClientState::Completed;
                    self.end_at = Some(
                        now + if self.reliable {
                            Duration::ZERO
                        } else {
                            self.timers.timer_d()
                        },
                    );
                }
                ResponseAction::Deliver
            }
            (TxnKind::Invite, ClientState::Accepted) => {
                if (200..300).contains(&status) {
                    ResponseAction::Deliver
                } else {
                    ResponseAction::Absorb
                }
            }
            (TxnKind::Invite, ClientState::Completed) => match &self.ack {
                Some(a) if status >= 300 => ResponseAction::ResendAck(a.clone()),
                _ => ResponseAction::Absorb,
            },
            (TxnKind::NonInvite, ClientState::Calling | ClientState::Proceeding) => {
                if status < 200 {
                    self.state = ClientState::Proceeding;
                    if !self.reliable {
                        // Timer E continues at T2 in Proceeding (§17.1.2.2).
                        self.retransmit_interval = self.timers.t2;
                    }
                } else {
                    self.state = ClientState::Completed;
                    self.retransmit_at = None;
                    self.end_at = Some(
                        now + if self.reliable {
                            Duration::ZERO
                        } else {
                            self.timers.t4
                        },
                    ); // Timer K
                }
                ResponseAction::Deliver
            }
            (TxnKind::NonInvite, _) => ResponseAction::Absorb,
        }
    }

    /// Records the ACK the TU built for a non-2xx final response so that
    /// retransmitted finals are answered with it.
    pub fn set_ack(&mut self, ack: Bytes) {
        self.ack = Some(ack);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.retransmit_at, self.end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_timeout(&mut self, now: Instant) -> TimerEvent {
        if let Some(end) = self.end_at
            && now >= end
        {
            let timed_out = matches!(self.state, ClientState::Calling | ClientState::Proceeding);
            self.state = ClientState::Terminated;
            self.end_at = None;
            self.retransmit_at = None;
            return if timed_out {
                TimerEvent::Timeout
            } else {
                TimerEvent::Terminated
            };
        }
        if let Some(at) = self.retransmit_at
            && now >= at
        {
            self.retransmit_interval = match self.kind {
                // Timer A doubles without bound (§17.1.1.2).
                TxnKind::Invite => self.retransmit_interval * 2,
                TxnKind::NonInvite => (self.retransmit_interval * 2).min(self.timers.t2),
            };
            self.retransmit_at = Some(now + self.retransmit_interval);
            return TimerEvent::Retransmit(self.request.clone());
        }
        TimerEvent::Nothing
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
}

#[cfg(test)]
// Virtual time starts at a real instant; only offsets from it matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs timers until `until`, collecting (offset ms, event).
    fn run_server(
        t: &mut ServerTransaction,
        start: Instant,
        until: Duration,
    ) -> Vec<(u128, TimerEvent)> {
        let mut out = Vec::new();
        while let Some(d) = t.next_deadline() {
            if d > start + until {
                break;
            }
            let ev = t.on_timeout(d);
            out.push(((d - start).as_millis(), ev));
        }
        out
    }

    #[test]
    fn invite_server_non_2xx_retransmits_until_h() {
        let t0 = Instant::now();
        let mut t = ServerTransaction::new(TxnKind::Invite, false, TimerConfig::default());
        assert!(t.respond(t0, 486, Bytes::from_static(b"486")));
        assert!(
            !t.respond(t0, 200, Bytes::from_static(b"200")),
            "second final refused"
        );
        let evs = run_server(&mut t, t0, Duration::from_secs(40));
        let retrans: Vec<u128> = evs
            .iter()
            .filter(|(_, e)| matches!(e, TimerEvent::Retransmit(_)))
            .map(|(t, _)| *t)
            .collect();
        // G: 500, 1500, 3500, 7500, 11500, ... capped at T2 = 4 s.
        assert_eq!(&retrans[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(evs.last().unwrap(), &(32000, TimerEvent::Timeout));
        assert!(t.is_terminated());
    }

    #[test]
    fn invite_server_ack_confirms_then_timer_i() {
        let t0 = Instant::now();
        let mut t = ServerTransaction::new(TxnKind::Invite, false, TimerConfig::default());
        t.respond(t0, 404, Bytes::from_static(b"404"));
        assert_eq!(t.on_request_retransmit(), Some(Bytes::from_static(b"404")));
        t.on_ack(t0 + ms(100));
        assert_eq!(t.state(), ServerState::Confirmed);
        assert_eq!(t.next_deadline(), Some(t0 + ms(5100)));
        assert_eq!(t.on_timeout(t0 + ms(5100)), TimerEvent::Terminated);
    }

    #[test]
    fn invite_server_reliable_has_no_retransmissions() {
        let t0 = Instant::now();
        let mut t = ServerTransaction::new(TxnKind::Invite, true, TimerConfig::default());
        t.respond(t0, 603, Bytes::from_static(b"603"));
        let evs = run_server(&mut t, t0, Duration::from_secs(40));
        assert_eq!(evs, vec![(32000, TimerEvent::Timeout)]);
        let mut t = ServerTransaction::new(TxnKind::Invite, true, TimerConfig::default());
        t.respond(t0, 603, Bytes::from_static(b"603"));
        t.on_ack(t0);
        assert_eq!(
            t.next_deadline(),
            Some(t0),
            "Timer I is zero on reliable transports"
        );
    }

    #[test]
    fn invite_server_2xx_goes_to_accepted_with_timer_l() {
        let t0 = Instant::now();
        let mut t = ServerTransaction::new(TxnKind::Invite, false, TimerConfig::default());
        t.respond(t0, 100, Bytes::from_static(b"100"));
        assert_eq!(t.on_request_retransmit(), Some(Bytes::from_static(b"100")));
        t.respond(t0, 200, Bytes::from_static(b"200"));
        assert_eq!(t.state(), ServerState::Accepted);
        assert_eq!(t.on_request_retransmit(), None);
        assert_eq!(
            run_server(&mut t, t0, Duration::from_secs(60)),
            vec![(32000, TimerEvent::Terminated)]
        );
    }

    #[test]
    fn non_invite_server_timer_j() {
        let t0 = Instant::now();
        let mut t = ServerTransaction::new(TxnKind::NonInvite, false, TimerConfig::default());
        assert_eq!(t.on_request_retransmit(), None, "Trying sends nothing");
        t.respond(t0, 200, Bytes::from_static(b"200"));
        assert_eq!(t.on_request_retransmit(), Some(Bytes::from_static(b"200")));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(32)));
        let mut r = ServerTransaction::new(TxnKind::NonInvite, true, TimerConfig::default());
        r.respond(t0, 200, Bytes::from_static(b"200"));
        assert_eq!(r.next_deadline(), Some(t0));
    }

    fn run_client(
        t: &mut ClientTransaction,
        start: Instant,
        until: Duration,
    ) -> Vec<(u128, TimerEvent)> {
        let mut out = Vec::new();
        while let Some(d) = t.next_deadline() {
            if d > start + until {
                break;
            }
            let ev = t.on_timeout(d);
            out.push(((d - start).as_millis(), ev));
        }
        out
    }

    #[test]
    fn non_invite_client_timer_e_and_f() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(
            t0,
            TxnKind::NonInvite,
            Bytes::from_static(b"BYE"),
            false,
            TimerConfig::default(),
        );
        let evs = run_client(&mut t, t0, Duration::from_secs(40));
        let times: Vec<u128> = evs.iter().map(|(t, _)| *t).collect();
        assert_eq!(&times[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
        assert_eq!(evs.last().unwrap(), &(32000, TimerEvent::Timeout));
    }

    #[test]
    fn non_invite_client_completes_with_timer_k() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(
            t0,
            TxnKind::NonInvite,
            Bytes::from_static(b"BYE"),
            false,
            TimerConfig::default(),
        );
        assert_eq!(t.on_response(t0 + ms(10), 200), ResponseAction::Deliver);
        assert_eq!(t.on_response(t0 + ms(20), 200), ResponseAction::Absorb);
        assert_eq!(
            run_client(&mut t, t0, Duration::from_secs(10)),
            vec![(5010, TimerEvent::Terminated)]
        );
    }

    #[test]
    fn invite_client_timer_a_b_and_non_2xx_ack() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(
            t0,
            TxnKind::Invite,
            Bytes::from_static(b"INVITE"),
            false,
            TimerConfig::default(),
        );
        let evs = run_client(&mut t, t0, Duration::from_secs(40));
        let times: Vec<u128> = evs.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![500, 1500, 3500, 7500, 15500, 31500, 32000]);
        assert_eq!(evs.last().unwrap().1, TimerEvent::Timeout);

        let mut t = ClientTransaction::new(
            t0,
            TxnKind::Invite,
            Bytes::from_static(b"INVITE"),
            false,
            TimerConfig::default(),
        );
        assert_eq!(t.on_response(t0, 180), ResponseAction::Deliver);
        assert_eq!(
            t.next_deadline(),
            None,
            "no retransmissions or Timer B after 1xx"
        );
        assert_eq!(t.on_response(t0, 486), ResponseAction::Deliver);
        t.set_ack(Bytes::from_static(b"ACK"));
        assert_eq!(
            t.on_response(t0, 486),
            ResponseAction::ResendAck(Bytes::from_static(b"ACK"))
        );
        assert_eq!(
            t.next_deadline(),
            Some(t0 + Duration::from_secs(32)),
            "Timer D"
        );
    }

    #[test]
    fn invite_client_2xx_accepted_delivers_retransmitted_2xx() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(
            t0,
            TxnKind::Invite,
            Bytes::from_static(b"INVITE"),
            true,
            TimerConfig::default(),
        );
        assert_eq!(
            t.next_deadline(),
            Some(t0 + Duration::from_secs(32)),
            "reliable: only Timer B"
        );
        assert_eq!(t.on_response(t0, 200), ResponseAction::Deliver);
        assert_eq!(t.on_response(t0, 200), ResponseAction::Deliver);
        assert_eq!(t.state(), ClientState::Accepted);
    }
}
