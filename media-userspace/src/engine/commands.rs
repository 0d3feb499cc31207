//! What call control asks of the engine ([`MediaCommand`]): one function
//! per command. Each runs on the caller's thread, never blocks and never
//! waits for a worker: binding happens here, running on the worker.

use super::*;

/// Open legs: the worker that runs each, and a relayed leg's partner.
pub(super) type LegTable = HashMap<LegId, (usize, Option<LegId>)>;

impl MediaEngine {
    /// Executes a command; never blocks. `Open` binds the leg's socket
    /// right here (a few syscalls) and returns `Opened` or `Failed` at
    /// once, sparing the caller a round trip to the worker thread; the
    /// worker only runs the leg. Later events (timeouts) arrive on the
    /// engine's event channel.
    pub fn command(&self, cmd: MediaCommand) -> Option<MediaEvent> {
        let mut legs = lock(&self.inner.legs);
        match cmd {
            MediaCommand::Open {
                leg,
                mode,
                media,
                timeout,
            } => Some(self.open(&mut legs, leg, mode, media, timeout)),
            MediaCommand::OpenRelay {
                legs: pair,
                media,
                timeout,
            } => self.open_relay(&mut legs, pair, media, timeout),
            MediaCommand::AdoptRelay {
                legs: pair,
                media,
                ports,
                timeout,
            } => Some(self.adopt_relay(&mut legs, pair, media, ports, timeout)),
            MediaCommand::Reserve { leg } => Some(self.reserve(leg)),
            MediaCommand::Update { leg, media } => {
                self.post_ctl(&legs, leg, LegCtl::Update(leg, media));
                None
            }
            MediaCommand::InfoDtmf {
                leg,
                digit,
                duration_ms,
            } => {
                self.post_ctl(&legs, leg, LegCtl::InfoDtmf(digit, duration_ms));
                None
            }
            MediaCommand::SendDtmf {
                leg,
                digit,
                duration_ms,
            } => {
                self.post_ctl(&legs, leg, LegCtl::SendDtmf(digit, duration_ms));
                None
            }
            MediaCommand::Sms { leg, sms } => {
                let ctl = LegCtl::ToAi(crate::aistream::ToAi::Sms(sms));
                self.post_ctl(&legs, leg, ctl);
                None
            }
            MediaCommand::TransferResult { leg, result } => {
                let ctl = LegCtl::ToAi(crate::aistream::ToAi::TransferResult(result));
                self.post_ctl(&legs, leg, ctl);
                None
            }
            MediaCommand::StartFork { leg, spec } => self.start_fork(&legs, leg, spec),
            MediaCommand::Record { leg, spec } => {
                let events = self.inner.shared.events.clone();
                let done: crate::recorder::Done = Box::new(move |d| {
                    let _ = events.send(MediaEvent::RecordingDone(Box::new(d)));
                });
                self.post_ctl(&legs, leg, LegCtl::Record(spec, done));
                None
            }
            MediaCommand::Restream { leg, spec } => {
                self.post_ctl(&legs, leg, LegCtl::Restream(spec));
                None
            }
            MediaCommand::StopFork { leg } => {
                if let Some(&(w, Some(_))) = legs.get(&leg) {
                    self.inner.workers[w].post(WorkerCmd::Ctl(leg, LegCtl::Unfork));
                }
                None
            }
            MediaCommand::Close { leg } => {
                self.close(&mut legs, leg);
                None
            }
        }
    }

    /// A control for an open leg, in order with what its worker already
    /// has; a leg that is not open (ended, never opened) ignores it.
    fn post_ctl(&self, legs: &LegTable, leg: LegId, ctl: LegCtl) {
        if let Some(&(w, _)) = legs.get(&leg) {
            self.inner.workers[w].post(WorkerCmd::Ctl(leg, ctl));
        }
    }

    /// Binds (or takes the reserved) RTP port of an echo or stream leg and
    /// hands the leg to its worker.
    fn open(
        &self,
        legs: &mut LegTable,
        leg: LegId,
        mode: LegMode,
        media: LegMedia,
        timeout: Duration,
    ) -> MediaEvent {
        let shared = &self.inner.shared;
        let reserved = lock(&self.inner.reserved).remove(&leg);
        let (socket, port, rtcp) = match reserved {
            Some(r) => {
                // Early media that arrived while the port was only
                // reserved is stale by now.
                let mut buf = [0u8; 2048];
                for _ in 0..1024 {
                    if r.socket.recv(&mut buf).is_err() {
                        break;
                    }
                }
                (r.socket, r.port, r.rtcp)
            }
            None => {
                let Some((socket, port)) = bind_leg_socket(shared) else {
                    return MediaEvent::Failed {
                        leg,
                        reason: "no RTP port could be bound".into(),
                    };
                };
                (socket, port, None)
            }
        };
        // Stream legs send and read RTCP; a busy RTCP port only
        // costs the reports, never the call.
        let rtcp = match (rtcp, &mode) {
            (_, LegMode::Echo) => None,
            (Some(r), _) => Some(r),
            (None, _) => bind_rtcp_socket(shared, port),
        };
        let w = (leg as usize) % self.inner.workers.len();
        self.inner.workers[w].post(WorkerCmd::Open(OpenLeg {
            socket: Some(socket),
            rtcp,
            port,
            leg,
            mode,
            media,
            timeout,
        }));
        legs.insert(leg, (w, None));
        shared.stats.legs_active.fetch_add(1, Ordering::Relaxed);
        MediaEvent::Opened {
            leg,
            local: SocketAddr::new(shared.cfg.bind_ip, port),
        }
    }

    /// Binds two fresh ports for a relayed pair.
    fn open_relay(
        &self,
        legs: &mut LegTable,
        pair: [LegId; 2],
        media: [LegMedia; 2],
        timeout: Duration,
    ) -> Option<MediaEvent> {
        let shared = &self.inner.shared;
        let mut bound: Vec<BoundLeg> = Vec::with_capacity(2);
        for _ in 0..2 {
            let Some((rtp, port)) = bind_leg_socket(shared) else {
                for b in &bound {
                    release_port(shared, b.port);
                }
                return Some(MediaEvent::Failed {
                    leg: pair[0],
                    reason: "no RTP port could be bound for the relay".into(),
                });
            };
            let rtcp = bind_rtcp_socket(shared, port);
            bound.push(BoundLeg {
                rtp,
                port,
                rtcp,
                owned: true,
            });
        }
        let locals = [
            SocketAddr::new(shared.cfg.bind_ip, bound[0].port),
            SocketAddr::new(shared.cfg.bind_ip, bound[1].port),
        ];
        let Ok(sockets) = <[BoundLeg; 2]>::try_from(bound) else {
            return None;
        };
        Some(self.start_relay(
            legs,
            OpenRelay {
                legs: pair,
                media,
                sockets,
                timeout,
                adopted: None,
            },
            locals,
        ))
    }

    /// Binds the ports a restored relayed call had, taking over the kernel
    /// rules a previous run left for them ([`super::inherited`]).
    fn adopt_relay(
        &self,
        legs: &mut LegTable,
        pair: [LegId; 2],
        media: [LegMedia; 2],
        ports: [u16; 2],
        timeout: Duration,
    ) -> MediaEvent {
        let shared = &self.inner.shared;
        let (sockets, adopted) = match adopt_sockets(shared, ports) {
            Ok(found) => found,
            Err(reason) => {
                return MediaEvent::Failed {
                    leg: pair[0],
                    reason,
                };
            }
        };
        let locals = ports.map(|p| SocketAddr::new(shared.cfg.bind_ip, p));
        self.start_relay(
            legs,
            OpenRelay {
                legs: pair,
                media,
                sockets,
                timeout,
                adopted,
            },
            locals,
        )
    }

    /// Binds a leg's port before its media is known (an offer to send);
    /// `Open` takes it later, `Close` frees it.
    fn reserve(&self, leg: LegId) -> MediaEvent {
        let shared = &self.inner.shared;
        let Some((socket, port)) = bind_leg_socket(shared) else {
            return MediaEvent::Failed {
                leg,
                reason: "no RTP port could be bound".into(),
            };
        };
        let rtcp = bind_rtcp_socket(shared, port);
        lock(&self.inner.reserved).insert(leg, Reserved { socket, port, rtcp });
        MediaEvent::Opened {
            leg,
            local: SocketAddr::new(shared.cfg.bind_ip, port),
        }
    }

    /// A listen-only copy of a relayed leg to a WebSocket.
    fn start_fork(
        &self,
        legs: &LegTable,
        leg: LegId,
        spec: Box<crate::aistream::StreamSpec>,
    ) -> Option<MediaEvent> {
        if let Some(&(w, Some(_))) = legs.get(&leg) {
            self.inner.workers[w].post(WorkerCmd::Ctl(leg, LegCtl::Fork(spec)));
            return None;
        }
        Some(MediaEvent::ForkEnded {
            leg,
            stream_sid: spec.stream_sid,
            reason: "not a relayed leg".into(),
        })
    }

    /// Frees a reserved port, or ends an open leg (closing either leg of a
    /// relay closes the pair).
    fn close(&self, legs: &mut LegTable, leg: LegId) {
        let reserved = lock(&self.inner.reserved).remove(&leg);
        if let Some(r) = reserved {
            drop(r.socket);
            release_port(&self.inner.shared, r.port);
        }
        if let Some((w, partner)) = legs.remove(&leg) {
            if let Some(p) = partner {
                legs.remove(&p);
            }
            self.inner.workers[w].post(WorkerCmd::Close(leg));
        }
    }

    /// Hands a bound relay pair to its worker and records both legs.
    fn start_relay(
        &self,
        legs: &mut LegTable,
        open: OpenRelay,
        locals: [SocketAddr; 2],
    ) -> MediaEvent {
        let pair = open.legs;
        let w = (pair[0] as usize) % self.inner.workers.len();
        self.inner.workers[w].post(WorkerCmd::OpenRelay(open));
        legs.insert(pair[0], (w, Some(pair[1])));
        legs.insert(pair[1], (w, Some(pair[0])));
        self.inner
            .shared
            .stats
            .legs_active
            .fetch_add(2, Ordering::Relaxed);
        MediaEvent::RelayOpened { legs: pair, locals }
    }
}
