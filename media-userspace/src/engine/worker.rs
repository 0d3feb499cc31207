//! A media worker thread and the loop that runs each leg on it.

use super::*;

pub(super) fn run_worker(backend: Backend, shared: Arc<Shared>, rx: Arc<Mailbox>) {
    match backend {
        Backend::IoUring => match tokio_uring::Runtime::new(&tokio_uring::builder()) {
            Ok(rt) => rt.block_on(uring::worker(shared, rx)),
            Err(e) => {
                tracing::error!(error = %e, "io_uring runtime failed to start on this worker; using tokio sockets");
                tokio_worker(shared, rx);
            }
        },
        Backend::Tokio => tokio_worker(shared, rx),
    }
}

pub(super) fn tokio_worker(shared: Arc<Shared>, rx: Arc<Mailbox>) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, plain::worker(shared, rx));
        }
        Err(e) => tracing::error!(error = %e, "media worker runtime failed to start"),
    }
}

mod uring {
    use super::*;

    pub(super) async fn worker(shared: Arc<Shared>, mailbox: Arc<Mailbox>) {
        mailbox
            .serve(|job, ctl| {
                let mut open = match job {
                    Job::Leg(open) => open,
                    Job::Relay(relay) => {
                        relayed::start(&shared, relay, ctl);
                        return;
                    }
                };
                let (Some(sock), port) = (open.socket.take(), open.port) else {
                    return;
                };
                let shared = shared.clone();
                tokio_uring::spawn(async move {
                    let sock = tokio_uring::net::UdpSocket::from_std(sock);
                    leg(shared, sock, port, open, ctl).await;
                });
            })
            .await;
    }

    async fn leg(
        shared: Arc<Shared>,
        sock: tokio_uring::net::UdpSocket,
        port: u16,
        open: OpenLeg,
        mut ctl: mpsc::UnboundedReceiver<LegCtl>,
    ) {
        use tokio_uring::buf::BoundedBuf;
        let (mut run, socket_task) = LegRun::new(&open, &shared);
        if let Some(task) = socket_task {
            tokio_uring::spawn(task);
        }
        let wake = run.wake();
        let rtcp = RtcpPort::new(open.rtcp);
        let mut rtcp_buf = vec![0u8; BUF_LEN];
        // The socket closes at the end of this block, before its port is
        // released.
        let end = {
            let sock = sock;
            // One receive stays in flight for the whole life of the leg: a
            // receive dropped by `select!` would stay queued in the ring,
            // swallow the next datagram and keep the socket open.
            let recv = sock.recv_from(vec![0u8; BUF_LEN]);
            tokio::pin!(recv);
            let end = loop {
                let deadline = tokio::time::Instant::from_std(run.deadline());
                let woken = async {
                    match &wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    cmd = ctl.recv() => match cmd {
                        Some(LegCtl::Close) | None => break LegEnd::Closed,
                        Some(c) => run.control(c),
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        let now = Instant::now();
                        if run.idle(now) {
                            break LegEnd::TimedOut;
                        }
                        run.on_wake(now);
                    }
                    _ = woken => run.on_wake(Instant::now()),
                    r = rtcp.recv(&mut rtcp_buf) => {
                        if let Some((n, from)) = r {
                            run.on_rtcp(Instant::now(), from, &rtcp_buf[..n]);
                        }
                    }
                    (res, mut buf) = &mut recv => {
                        if let Ok((n, from)) = res
                            && let Some((to, m)) = run.on_datagram(Instant::now(), from, &mut buf, n)
                        {
                            let (_, slice) = sock.send_to(buf.slice(..m), to).await;
                            buf = slice.into_inner();
                        }
                        if run.counters().rx_packets.is_multiple_of(PUBLISH_EVERY) {
                            run.publish(&shared.stats);
                        }
                        recv.set(sock.recv_from(buf));
                    }
                }
                while let Some((to, pkt)) = run.poll_transmit() {
                    let _ = sock.send_to(pkt, to).await;
                }
                while let Some((to, pkt)) = run.poll_rtcp() {
                    rtcp.send(&pkt, to);
                }
            };
            // Complete the receive still in flight with an empty datagram to
            // ourselves (cheaper than shutdown(), which makes io_uring re-arm
            // and retry the receive), so the socket closes when it drops.
            let to = match sock.local_addr() {
                Ok(a) if a.ip().is_unspecified() && a.is_ipv4() => {
                    SocketAddr::from(([127, 0, 0, 1], a.port()))
                }
                Ok(a) if a.ip().is_unspecified() => {
                    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
                }
                Ok(a) => a,
                Err(_) => SocketAddr::new(shared.cfg.bind_ip, port),
            };
            let _ = sock.send_to(Vec::<u8>::new(), to).await;
            let _ = tokio::time::timeout(Duration::from_millis(200), &mut recv).await;
            end
        };
        drop(rtcp);
        finish_leg(&shared, &mut run, port, end);
    }
}

mod plain {
    use super::*;

    pub(super) async fn worker(shared: Arc<Shared>, mailbox: Arc<Mailbox>) {
        mailbox
            .serve(|job, ctl| match job {
                Job::Leg(open) => start(&shared, open, ctl),
                Job::Relay(relay) => relayed::start(&shared, relay, ctl),
            })
            .await;
    }

    fn start(shared: &Arc<Shared>, mut open: OpenLeg, ctl: mpsc::UnboundedReceiver<LegCtl>) {
        {
            let (Some(sock), port) = (open.socket.take(), open.port) else {
                return;
            };
            let Ok(sock) = tokio::net::UdpSocket::from_std(sock) else {
                // Not on a runtime with I/O: nothing will serve this leg.
                shared.stats.legs_active.fetch_sub(1, Ordering::Relaxed);
                release_port(shared, port);
                let _ = shared.events.send(MediaEvent::Failed {
                    leg: open.leg,
                    reason: "media worker cannot register the socket".into(),
                });
                return;
            };
            let shared = shared.clone();
            tokio::task::spawn_local(leg(shared, sock, port, open, ctl));
        }
    }

    async fn leg(
        shared: Arc<Shared>,
        sock: tokio::net::UdpSocket,
        port: u16,
        open: OpenLeg,
        mut ctl: mpsc::UnboundedReceiver<LegCtl>,
    ) {
        let (mut run, socket_task) = LegRun::new(&open, &shared);
        if let Some(task) = socket_task {
            tokio::task::spawn_local(task);
        }
        let wake = run.wake();
        let rtcp = RtcpPort::new(open.rtcp);
        let mut rtcp_buf = vec![0u8; BUF_LEN];
        let mut buf = vec![0u8; BUF_LEN];
        let end = loop {
            let deadline = tokio::time::Instant::from_std(run.deadline());
            let woken = async {
                match &wake {
                    Some(w) => w.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                cmd = ctl.recv() => match cmd {
                    Some(LegCtl::Close) | None => break LegEnd::Closed,
                    Some(c) => run.control(c),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if run.idle(now) {
                        break LegEnd::TimedOut;
                    }
                    run.on_wake(now);
                }
                _ = woken => run.on_wake(Instant::now()),
                r = rtcp.recv(&mut rtcp_buf) => {
                    if let Some((n, from)) = r {
                        run.on_rtcp(Instant::now(), from, &rtcp_buf[..n]);
                    }
                }
                res = sock.recv_from(&mut buf) => {
                    let Ok((n, from)) = res else { continue };
                    if let Some((to, m)) = run.on_datagram(Instant::now(), from, &mut buf, n) {
                        let _ = sock.send_to(&buf[..m], to).await;
                    }
                    if run.counters().rx_packets.is_multiple_of(PUBLISH_EVERY) {
                        run.publish(&shared.stats);
                    }
                }
            }
            while let Some((to, pkt)) = run.poll_transmit() {
                let _ = sock.send_to(&pkt, to).await;
            }
            while let Some((to, pkt)) = run.poll_rtcp() {
                rtcp.send(&pkt, to);
            }
        };
        drop(rtcp);
        finish_leg(&shared, &mut run, port, end);
    }
}
