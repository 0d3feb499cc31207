//! One leg's run state (echo or stream core behind its SRTP context),
//! which the worker loop drives.

use super::*;

/// A stream leg and its link to the socket task.
pub(super) struct StreamRun {
    pub(super) core: StreamLeg,
    pub(super) side: LegSide,
}

pub(super) enum LegCore {
    Echo(EchoLeg),
    Stream(Box<StreamRun>),
}

/// Caller audio held for the AI while its socket is slow or
/// reconnecting: the reconnect window, plus a second.
pub(super) fn to_ai_capacity(spec: &StreamSpec) -> usize {
    ((spec.reconnect_window.as_millis() as usize + 1000) / FRAME_MS as usize).max(50)
}

/// The per-leg state both backends drive.
pub(super) struct LegRun {
    pub(super) leg: LegId,
    pub(super) core: LegCore,
    /// Between the leg and its socket: nothing unauthenticated reaches
    /// the leg, nothing it sends leaves unprotected.
    pub(super) srtp: LegSrtp,
    pub(super) published_srtp: crate::srtp::SrtpCounters,
    pub(super) timeout: Duration,
    pub(super) opened: Instant,
    pub(super) published: LegCounters,
    pub(super) published_stream: [u64; 7],
}

impl LegRun {
    /// The leg's state, and for stream legs the socket task to spawn on
    /// the same worker.
    pub(super) fn new(
        open: &OpenLeg,
        shared: &Arc<Shared>,
    ) -> (
        LegRun,
        Option<impl std::future::Future<Output = ()> + 'static>,
    ) {
        let (core, socket) = match &open.mode {
            LegMode::Echo => (
                LegCore::Echo(EchoLeg::new(&open.media, rand::random())),
                None,
            ),
            LegMode::Stream(spec) => {
                let (side, socket_side) =
                    client::link(to_ai_capacity(spec), shared.streams.clone());
                let clock = crate::rtcp::WallClock {
                    at: Instant::now(),
                    wall: std::time::SystemTime::now(),
                };
                let core = StreamLeg::new(
                    &open.media,
                    spec.dialect.sample_rate(),
                    rand::random(),
                    clock,
                );
                let events = shared.events.clone();
                let leg = open.leg;
                let spec = (**spec).clone();
                let guard = shared.cfg.connect_guard.clone();
                let task = client::run(spec, socket_side, guard, move |ev| {
                    let ev = match ev {
                        StreamEvent::Connected => MediaEvent::StreamConnected { leg },
                        StreamEvent::Failed(reason) => MediaEvent::StreamFailed { leg, reason },
                        StreamEvent::Ended(reason) => MediaEvent::StreamEnded { leg, reason },
                        StreamEvent::Transfer(to) => MediaEvent::AiTransfer { leg, to },
                    };
                    let _ = events.send(ev);
                });
                (
                    LegCore::Stream(Box::new(StreamRun { core, side })),
                    Some(task),
                )
            }
        };
        let run = LegRun {
            leg: open.leg,
            core,
            srtp: LegSrtp::new(open.media.srtp),
            published_srtp: Default::default(),
            timeout: open.timeout,
            opened: Instant::now(),
            published: Default::default(),
            published_stream: [0; 7],
        };
        (run, socket)
    }

    pub(super) fn counters(&self) -> &LegCounters {
        match &self.core {
            LegCore::Echo(e) => &e.counters,
            LegCore::Stream(s) => &s.core.counters,
        }
    }

    pub(super) fn last_rx(&self) -> Option<Instant> {
        match &self.core {
            LegCore::Echo(e) => e.last_rx(),
            LegCore::Stream(s) => s.core.last_rx(),
        }
    }

    pub(super) fn idle_deadline(&self) -> Instant {
        self.last_rx().unwrap_or(self.opened) + self.timeout
    }

    /// The earliest of the media timeout and the leg's own timers.
    pub(super) fn deadline(&self) -> Instant {
        let idle = self.idle_deadline();
        match &self.core {
            LegCore::Echo(_) => idle,
            LegCore::Stream(s) => s.core.poll_timeout().map_or(idle, |t| t.min(idle)),
        }
    }

    /// Whether the media timeout has passed.
    pub(super) fn idle(&self, now: Instant) -> bool {
        now >= self.idle_deadline()
    }

    pub(super) fn wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        match &self.core {
            LegCore::Echo(_) => None,
            LegCore::Stream(s) => Some(s.side.wake_leg.clone()),
        }
    }

    pub(super) fn control(&mut self, ctl: LegCtl) {
        if let LegCtl::Update(_, m) = &ctl {
            self.srtp.update(m.srtp);
        }
        match (&mut self.core, ctl) {
            (LegCore::Echo(e), LegCtl::Update(_, m)) => e.update(&m),
            (LegCore::Stream(s), LegCtl::Update(_, m)) => s.core.update(&m),
            (LegCore::Stream(s), LegCtl::InfoDtmf(d, ms)) => s.core.on_info_dtmf(d, ms),
            (LegCore::Stream(s), LegCtl::SendDtmf(d, ms)) => {
                s.core.send_dtmf(d, Duration::from_millis(u64::from(ms)));
            }
            (LegCore::Stream(s), LegCtl::Restream(spec)) => s.side.redirect(*spec),
            (LegCore::Stream(s), LegCtl::Record(spec, done)) => s.core.record(*spec, done),
            (LegCore::Stream(s), LegCtl::ToAi(msg)) => {
                s.side.send(msg);
                s.side.flush();
            }
            _ => {}
        }
        self.flush();
    }

    /// A datagram in `buf[..len]`; for echo legs, where to send it back
    /// and its length (rewritten in place in `buf`, which has room for
    /// the SRTP tag). Stream legs queue their packets: see
    /// `poll_transmit`.
    pub(super) fn on_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<(SocketAddr, usize)> {
        let len = len.min(buf.len());
        // SRTP first (RFC 3711 §3.3): the leg sees only what
        // authenticated, so a spoofed packet can neither latch it nor
        // reach the AI. RTCP may share the port (RFC 5761).
        let clear = if rtp::looks_like_rtcp(&buf[..len]) {
            match self.srtp.inbound_rtcp(&buf[..len]) {
                // Plain: the packet as it came.
                Ok(std::borrow::Cow::Borrowed(_)) => len,
                Ok(std::borrow::Cow::Owned(v)) => {
                    buf[..v.len()].copy_from_slice(&v);
                    v.len()
                }
                Err(_) => return None,
            }
        } else {
            self.srtp.inbound_rtp(&mut buf[..len]).ok()?
        };
        match &mut self.core {
            LegCore::Echo(e) => {
                let to = e.on_datagram(now, from, &mut buf[..clear])?;
                let n = self.srtp.outbound_rtp(buf, clear).ok()?;
                Some((to, n))
            }
            LegCore::Stream(s) => {
                s.core.on_datagram(now, from, &buf[..clear]);
                self.flush();
                None
            }
        }
    }

    /// Timers and AI messages.
    pub(super) fn on_wake(&mut self, now: Instant) {
        if let LegCore::Stream(s) = &mut self.core {
            while let Some(m) = s.side.try_recv() {
                s.core.on_ai(now, m);
            }
            s.core.handle_timeout(now);
            self.flush();
        }
    }

    /// Moves what the leg produced for the AI to the socket task.
    pub(super) fn flush(&mut self) {
        if let LegCore::Stream(s) = &mut self.core {
            let mut any = false;
            while let Some(m) = s.core.poll_to_ai() {
                s.side.send(m);
                any = true;
            }
            if any {
                s.side.flush();
            }
        }
    }

    pub(super) fn on_rtcp(&mut self, now: Instant, from: SocketAddr, pkt: &[u8]) {
        if let LegCore::Stream(s) = &mut self.core
            && let Ok(clear) = self.srtp.inbound_rtcp(pkt)
        {
            s.core.on_rtcp_datagram(now, from, &clear);
        }
    }

    /// RTCP to send, protected (SRTCP) on SRTP legs; what cannot be
    /// protected is dropped (counted).
    pub(super) fn poll_rtcp(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let LegCore::Stream(s) = &mut self.core else {
            return None;
        };
        while let Some((to, pkt)) = s.core.poll_rtcp() {
            if self.srtp.is_plain() {
                return Some((to, pkt));
            }
            if let Ok(p) = self.srtp.outbound_rtcp(&pkt) {
                return Some((to, p));
            }
        }
        None
    }

    /// RTP to send, protected on SRTP legs.
    pub(super) fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let LegCore::Stream(s) = &mut self.core else {
            return None;
        };
        while let Some((to, pkt)) = s.core.poll_transmit() {
            if let Ok(p) = self.srtp.outbound_rtp_vec(pkt) {
                return Some((to, p));
            }
        }
        None
    }

    pub(super) fn close(&mut self, reason: &str) {
        if let LegCore::Stream(s) = &mut self.core {
            s.side.stop(reason);
        }
    }

    /// Adds this leg's counter deltas to the process totals.
    pub(super) fn publish(&mut self, stats: &MediaStats) {
        let c = *self.counters();
        add_counter_deltas(stats, &c, &self.published);
        self.published = c;
        publish_srtp(
            stats,
            self.leg,
            self.srtp.counters(),
            &mut self.published_srtp,
        );
        if let LegCore::Stream(s) = &self.core {
            let j = s.core.jitter().counters;
            let now = [
                j.lost,
                j.late,
                j.duplicate,
                s.core.stream.concealed_frames,
                s.core.stream.dtmf_digits,
                s.core.rtcp().counters.sent,
                s.core.rtcp().counters.received,
            ];
            let totals = [
                &stats.rtp_lost,
                &stats.rtp_late,
                &stats.rtp_duplicate,
                &stats.concealed_frames,
                &stats.dtmf_digits,
                &stats.rtcp_sent,
                &stats.rtcp_received,
            ];
            for ((total, v), p) in totals.into_iter().zip(now).zip(self.published_stream) {
                total.fetch_add(v - p, Ordering::Relaxed);
            }
            self.published_stream = now;
        }
    }
}

pub(super) enum LegEnd {
    Closed,
    TimedOut,
}

pub(super) fn finish_leg(shared: &Shared, run: &mut LegRun, port: u16, end: LegEnd) {
    run.close(match end {
        LegEnd::Closed => "hangup",
        LegEnd::TimedOut => "media_timeout",
    });
    if let LegCore::Stream(s) = &run.core
        && run.counters().rx_packets > 1
    {
        // RTP clock units of our codecs are 1/8000 s (G.722 too, RFC 3551).
        let ms = f64::from(s.core.jitter().jitter()) / 8.0;
        shared.stats.jitter.observe_ms(ms);
    }
    run.publish(&shared.stats);
    shared.stats.legs_active.fetch_sub(1, Ordering::Relaxed);
    release_port(shared, port);
    if let LegEnd::TimedOut = end {
        let _ = shared.events.send(MediaEvent::Timeout { leg: run.leg });
    }
}

/// A leg's RTCP socket on the worker's tokio reactor (both backends run
/// one); RTCP is a packet every few seconds, not worth a ring slot.
pub(super) struct RtcpPort(Option<tokio::net::UdpSocket>);

impl RtcpPort {
    pub(super) fn new(sock: Option<std::net::UdpSocket>) -> RtcpPort {
        RtcpPort(sock.and_then(|s| tokio::net::UdpSocket::from_std(s).ok()))
    }

    /// Next datagram; pending forever for legs without RTCP.
    pub(super) async fn recv(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match &self.0 {
            Some(s) => s.recv_from(buf).await.ok(),
            None => std::future::pending().await,
        }
    }

    pub(super) fn send(&self, pkt: &[u8], to: SocketAddr) {
        if let Some(s) = &self.0 {
            let _ = s.try_send_to(pkt, to);
        }
    }
}

/// Publish counters at least this often while packets flow.
pub(super) const PUBLISH_EVERY: u64 = 64;
