//! Relayed leg pairs. Both backends run them on the worker's tokio
//! reactor (tokio-uring runs one too): a relay forwards each packet at
//! once and never waits on a timer per packet.

use super::*;
use crate::relay::{RelayPair, Side};
use std::os::fd::AsRawFd;

pub(super) fn start(shared: &Arc<Shared>, open: OpenRelay, ctl: mpsc::UnboundedReceiver<LegCtl>) {
    let OpenRelay {
        legs,
        media,
        sockets,
        timeout,
        adopted,
    } = open;
    let ports = [sockets[0].port, sockets[1].port];
    let owned = [sockets[0].owned, sockets[1].owned];
    let release = move |shared: &Shared| {
        for (p, owned) in ports.into_iter().zip(owned) {
            if owned {
                release_port(shared, p);
            }
        }
    };
    let [a, b] = sockets;
    let (Ok(rtp_a), Ok(rtp_b)) = (
        tokio::net::UdpSocket::from_std(a.rtp),
        tokio::net::UdpSocket::from_std(b.rtp),
    ) else {
        shared.stats.legs_active.fetch_sub(2, Ordering::Relaxed);
        release(shared);
        if let (Some(a), Some(x)) = (adopted, &shared.cfg.xdp) {
            // Nothing will relay the pair: the kernel must not either.
            x.remove(&a.rules);
        }
        let _ = shared.events.send(MediaEvent::Failed {
            leg: legs[0],
            reason: "media worker cannot register the relay sockets".into(),
        });
        return;
    };
    let sockets = Sockets {
        rtp: [rtp_a, rtp_b],
        rtcp: [RtcpPort::new(a.rtcp), RtcpPort::new(b.rtcp)],
    };
    let shared = shared.clone();
    tokio::task::spawn_local(async move {
        let pair = RelayPair::new(&media[0], &media[1]);
        let end = run(&shared, legs, pair, &sockets, timeout, ctl, ports, adopted).await;
        drop(sockets);
        shared.stats.legs_active.fetch_sub(2, Ordering::Relaxed);
        release(&shared);
        if let LegEnd::TimedOut = end {
            for leg in legs {
                let _ = shared.events.send(MediaEvent::Timeout { leg });
            }
        }
    });
}

pub(super) struct Sockets {
    rtp: [tokio::net::UdpSocket; 2],
    rtcp: [RtcpPort; 2],
}

pub(super) fn index(s: Side) -> usize {
    match s {
        Side::A => 0,
        Side::B => 1,
    }
}

pub(super) const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

thread_local! {
    /// One receive batch per worker thread, shared by its relay tasks:
    /// a batch is read and forwarded without an await in between, so
    /// no two tasks hold it at once (and a relayed call costs no
    /// batch memory of its own).
    static RECV_BATCH: std::cell::RefCell<crate::mmsg::RecvBatch> =
        std::cell::RefCell::new(crate::mmsg::RecvBatch::default());
}

/// How often the kernel's counters of an offloaded pair are read (for
/// the idle timeout and the packet counters).
pub(super) const XDP_POLL: Duration = Duration::from_secs(2);
/// How long a pair that could not be offloaded waits to try again.
pub(super) const XDP_RETRY: Duration = Duration::from_secs(1);

/// A pair whose RTP the kernel forwards.
pub(super) struct Offloaded {
    rules: crate::offload::PairRules,
    peers: [Option<SocketAddr>; 2],
    /// Kernel counters already added to the pair's.
    seen: [crate::xdp::LegCounters; 2],
}

/// Adds what the kernel forwarded since the last poll to the pair's
/// counters and the XDP totals; whether anything new arrived.
pub(super) fn absorb(
    shared: &Shared,
    pair: &mut RelayPair,
    off: &mut Offloaded,
    now: [crate::xdp::LegCounters; 2],
) -> bool {
    let mut moved = false;
    let mono = crate::offload::monotonic_ns();
    for (i, side) in [Side::A, Side::B].into_iter().enumerate() {
        let (p, b) = (
            now[i].packets.saturating_sub(off.seen[i].packets),
            now[i].bytes.saturating_sub(off.seen[i].bytes),
        );
        if p > 0 {
            moved = true;
            pair.add_offloaded(side, p, b);
            shared.stats.xdp_packets.fetch_add(p, Ordering::Relaxed);
            shared.stats.xdp_bytes.fetch_add(b, Ordering::Relaxed);
            let age = Duration::from_nanos(mono.saturating_sub(now[i].last_seen_ns));
            if let Some(at) = Instant::now().checked_sub(age) {
                pair.note_rx(side, at);
            }
        }
        off.seen[i] = now[i];
    }
    moved
}

/// A relay's listen-only copy to a WebSocket: the tap and its link to
/// the socket task, which runs on the same worker.
pub(super) struct Fork {
    tap: crate::tap::Tap,
    side: LegSide,
    frames: Vec<crate::aistream::ToAi>,
    /// The packet as its side sent it (the relay may transcode it).
    scratch: Vec<u8>,
}

pub(super) fn start_fork(shared: &Shared, leg: LegId, pair: &RelayPair, spec: StreamSpec) -> Fork {
    let (side, socket_side) = client::link(to_ai_capacity(&spec), shared.streams.clone());
    // Dialects without a track field get both parties summed.
    let mixed = matches!(
        spec.dialect,
        crate::aistream::Dialect::Pcm { .. }
            | crate::aistream::Dialect::Exotel
            | crate::aistream::Dialect::Vonage
            | crate::aistream::Dialect::Jambonz { .. }
    );
    let tap = crate::tap::Tap::new(
        [pair.media(Side::A), pair.media(Side::B)],
        spec.dialect.sample_rate(),
        mixed,
        Instant::now(),
    );
    let events = shared.events.clone();
    let stream_sid = spec.stream_sid.clone();
    let guard = shared.cfg.connect_guard.clone();
    tokio::task::spawn_local(client::run(spec, socket_side, guard, move |ev| {
        let reason = match ev {
            StreamEvent::Failed(r) | StreamEvent::Ended(r) => r,
            // Listen-only: nothing the socket asks for is done.
            StreamEvent::Connected | StreamEvent::Transfer(_) => return,
        };
        let _ = events.send(MediaEvent::ForkEnded {
            leg,
            stream_sid: stream_sid.clone(),
            reason,
        });
    }));
    Fork {
        tap,
        side,
        frames: Vec::new(),
        scratch: Vec::new(),
    }
}

/// Moves the pair back to userspace (peer moved, re-INVITE, close):
/// removes its rules, takes in their last counters, and only then
/// counts it out, so a pair seen gone has its kernel counts in.
pub(super) fn unload(shared: &Shared, pair: &mut RelayPair, off: Offloaded) {
    let Some(x) = &shared.cfg.xdp else {
        return;
    };
    let mut off = off;
    let last = x.remove(&off.rules);
    absorb(shared, pair, &mut off, last);
    shared
        .stats
        .xdp_pairs_active
        .fetch_sub(1, Ordering::Relaxed);
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    shared: &Shared,
    legs: [LegId; 2],
    mut pair: RelayPair,
    socks: &Sockets,
    timeout: Duration,
    mut ctl: mpsc::UnboundedReceiver<LegCtl>,
    ports: [u16; 2],
    adopted: Option<Box<AdoptedRules>>,
) -> LegEnd {
    let opened = Instant::now();
    let mut rtcp_bufs = [vec![0u8; BUF_LEN], vec![0u8; BUF_LEN]];
    let mut published = [(LegCounters::default(), Default::default()); 2];
    let mut offloaded: Option<Offloaded> = None;
    if let (Some(a), Some(x)) = (adopted, &shared.cfg.xdp) {
        // The kernel forwards already: start latched where it sends,
        // counting only what it forwards from now on.
        pair.adopt(a.peers, opened);
        shared
            .stats
            .xdp_pairs_active
            .fetch_add(1, Ordering::Relaxed);
        offloaded = Some(Offloaded {
            seen: x.counters(&a.rules),
            rules: a.rules,
            peers: a.peers.map(Some),
        });
    }
    let mut next_try = opened;
    // Pairs offloaded together (a burst of calls, a restart) would
    // otherwise read the kernel's counters together every XDP_POLL: a
    // burst of map reads that keeps the core from the NAPI work the
    // offloaded packets need. Each pair keeps its own phase.
    let phase = Duration::from_millis(legs[0].wrapping_mul(7919) % XDP_POLL.as_millis() as u64);
    let mut poll_at = opened + XDP_POLL + phase;
    let mut fork: Option<Fork> = None;
    let end = loop {
        let idle = pair.last_rx_any().unwrap_or(opened) + timeout;
        let [rbuf_a, rbuf_b] = &mut rtcp_bufs;
        let polling = offloaded.is_some();
        let fork_at = fork.as_ref().map(|f| f.tap.next_deadline());
        // (side, is RTCP, length, source)
        let got: Option<(Side, bool, usize, SocketAddr)> = tokio::select! {
            biased;
            cmd = ctl.recv() => match cmd {
                Some(LegCtl::Update(leg, m)) => {
                    let side = if leg == legs[0] { Side::A } else { Side::B };
                    if let Some(off) = offloaded.take() {
                        unload(shared, &mut pair, off);
                        shared.stats.xdp_returns.fetch_add(1, Ordering::Relaxed);
                    }
                    pair.update(side, &m);
                    if let Some(f) = fork.as_mut() {
                        f.tap.update(side, &m);
                    }
                    None
                }
                Some(LegCtl::Fork(spec)) => {
                    if let Some(off) = offloaded.take() {
                        unload(shared, &mut pair, off);
                        shared.stats.xdp_returns.fetch_add(1, Ordering::Relaxed);
                    }
                    fork = Some(start_fork(shared, legs[0], &pair, *spec));
                    None
                }
                Some(LegCtl::Unfork) => {
                    if let Some(mut f) = fork.take() {
                        f.side.stop("stopped");
                    }
                    None
                }
                Some(LegCtl::Close) | None => break LegEnd::Closed,
                Some(_) => None,
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(fork_at.unwrap_or(idle))), if fork_at.is_some() => {
                if let Some(f) = fork.as_mut() {
                    f.tap.poll(Instant::now(), &mut f.frames);
                    for m in f.frames.drain(..) {
                        f.side.send(m);
                    }
                    f.side.flush();
                    // Listen-only: what the socket sends back is dropped.
                    while f.side.try_recv().is_some() {}
                }
                None
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(poll_at)), if polling => {
                poll_at = Instant::now() + XDP_POLL;
                if let (Some(x), Some(off)) = (&shared.cfg.xdp, offloaded.as_mut()) {
                    let now = x.counters(&off.rules);
                    absorb(shared, &mut pair, off, now);
                    publish(shared, legs, &pair, &mut published);
                }
                None
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(idle)) => {
                if Instant::now() >= idle {
                    break LegEnd::TimedOut;
                }
                None
            }
            // RTP is read in batches once the socket is readable.
            r = socks.rtp[0].readable() => r.ok().map(|_| (Side::A, false, 0, UNSPECIFIED)),
            r = socks.rtp[1].readable() => r.ok().map(|_| (Side::B, false, 0, UNSPECIFIED)),
            r = socks.rtcp[0].recv(rbuf_a) => r.map(|(n, f)| (Side::A, true, n, f)),
            r = socks.rtcp[1].recv(rbuf_b) => r.map(|(n, f)| (Side::B, true, n, f)),
        };
        let Some((side, is_rtcp, n, from)) = got else {
            continue;
        };
        let i = index(side);
        let out = index(side.other());
        if is_rtcp {
            let pkt = &rtcp_bufs[i][..n];
            if let Some((to, protected)) = pair.on_rtcp(side, from, pkt) {
                socks.rtcp[out].send(protected.as_deref().unwrap_or(pkt), to);
            }
        } else {
            let now = Instant::now();
            let sock = &socks.rtp[i];
            let n = RECV_BATCH.with(|b| {
                let mut b = b.borrow_mut();
                sock.try_io(tokio::io::Interest::READABLE, || b.recv(sock.as_raw_fd()))
            });
            let Ok(n) = n else {
                continue;
            };
            RECV_BATCH.with(|b| {
                let mut b = b.borrow_mut();
                // Where each packet of the batch goes, on the stack.
                let mut sends = [(&[][..], UNSPECIFIED); crate::mmsg::BATCH];
                let mut to_send = [(0usize, UNSPECIFIED); crate::mmsg::BATCH];
                let mut count = 0;
                for k in 0..n {
                    let (buf, len, from) = b.slot_mut(k);
                    if let (Some(x), Some(off)) = (&shared.cfg.xdp, offloaded.as_mut())
                        && off.peers[i] != Some(from)
                    {
                        // The kernel passed a packet from another source:
                        // the latched peer's liveness is in the kernel's
                        // counters, which the latch must see first.
                        let c = x.counters(&off.rules);
                        absorb(shared, &mut pair, off, c);
                    }
                    let tap = fork.as_mut().map(|f| &mut f.scratch);
                    if let Some((to, m)) = pair.on_rtp(side, now, from, buf, len, tap) {
                        b.set_len(k, m);
                        to_send[count] = (k, to);
                        count += 1;
                        // Only what the relay accepted, in the clear
                        // as it arrived.
                        if let Some(f) = fork.as_mut() {
                            f.tap.on_rtp(side, &f.scratch);
                        }
                    }
                }
                if count > 0 {
                    for (slot, &(k, to)) in sends.iter_mut().zip(&to_send[..count]) {
                        *slot = (b.get(k), to);
                    }
                    // A full send buffer drops the rest, as the network would.
                    let _ = crate::mmsg::send(socks.rtp[out].as_raw_fd(), &sends[..count]);
                }
            });
            if let Some(x) = &shared.cfg.xdp {
                let view = pair.offload_view();
                if offloaded.as_ref().is_some_and(|o| o.peers != view.peers) {
                    if let Some(off) = offloaded.take() {
                        unload(shared, &mut pair, off);
                    }
                    shared.stats.xdp_returns.fetch_add(1, Ordering::Relaxed);
                    // Re-offloaded on the next packet: the latch itself
                    // keeps a peer from moving more often than every
                    // RELATCH_SILENCE, so this cannot flap faster.
                    next_try = now;
                } else if offloaded.is_none() && fork.is_none() && now >= next_try {
                    match x.install(&view, ports) {
                        Ok(rules) => {
                            shared.stats.xdp_offloads.fetch_add(1, Ordering::Relaxed);
                            shared
                                .stats
                                .xdp_pairs_active
                                .fetch_add(1, Ordering::Relaxed);
                            poll_at = now + XDP_POLL + phase;
                            offloaded = Some(Offloaded {
                                rules,
                                peers: view.peers,
                                seen: Default::default(),
                            });
                        }
                        Err(crate::offload::OffloadError::Stay(why)) => {
                            // Not latched yet, on hold...: checked again
                            // on the next packet, at no cost.
                            if why.needs_host_state() {
                                next_try = now + XDP_RETRY;
                            }
                            tracing::trace!(legs = ?legs, %why, "relay stays in userspace");
                        }
                        Err(e) => {
                            next_try = now + XDP_RETRY;
                            shared.stats.xdp_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(legs = ?legs, error = %e, "XDP offload failed; relaying in userspace");
                        }
                    }
                }
            }
        }
        // Batches move the count by more than one: publish once it has
        // moved PUBLISH_EVERY since the last time.
        if pair.counters(side).rx_packets >= published[i].0.rx_packets + PUBLISH_EVERY {
            publish(shared, legs, &pair, &mut published);
        }
    };
    if let Some(off) = offloaded.take() {
        unload(shared, &mut pair, off);
    }
    publish(shared, legs, &pair, &mut published);
    end
}

pub(super) fn publish(
    shared: &Shared,
    legs: [LegId; 2],
    pair: &RelayPair,
    published: &mut [(LegCounters, crate::srtp::SrtpCounters); 2],
) {
    for side in [Side::A, Side::B] {
        let c = *pair.counters(side);
        let (p, ps) = &mut published[index(side)];
        add_counter_deltas(&shared.stats, &c, p);
        *p = c;
        publish_srtp(
            &shared.stats,
            legs[index(side)],
            pair.srtp_counters(side),
            ps,
        );
    }
}
