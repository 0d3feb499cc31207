//! A media worker thread and the loop that runs each echo or stream leg on
//! it. The loop is written once, over [`LegSocket`]: io_uring and plain
//! tokio sockets differ only in how a datagram is received and sent.

use super::*;
use std::future::Future;
use std::io;

pub(super) fn run_worker(backend: Backend, shared: Arc<Shared>, rx: Arc<Mailbox>) {
    match backend {
        Backend::IoUring => match tokio_uring::Runtime::new(&tokio_uring::builder()) {
            Ok(rt) => rt.block_on(serve(shared, rx, Backend::IoUring)),
            Err(e) => {
                tracing::error!(error = %e, "io_uring runtime failed to start on this worker; using tokio sockets");
                tokio_worker(shared, rx);
            }
        },
        Backend::Tokio => tokio_worker(shared, rx),
    }
}

fn tokio_worker(shared: Arc<Shared>, rx: Arc<Mailbox>) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, serve(shared, rx, Backend::Tokio));
        }
        Err(e) => tracing::error!(error = %e, "media worker runtime failed to start"),
    }
}

/// Starts what is posted to this worker, every mailbox tick, each leg and
/// relay as a task on this thread (both runtimes run a `LocalSet`).
async fn serve(shared: Arc<Shared>, mailbox: Arc<Mailbox>, backend: Backend) {
    mailbox
        .serve(|job, ctl| match job {
            Job::Leg(open) => start(&shared, open, ctl, backend),
            Job::Relay(relay) => relayed::start(&shared, relay, ctl),
        })
        .await;
}

fn start(
    shared: &Arc<Shared>,
    mut open: OpenLeg,
    ctl: mpsc::UnboundedReceiver<LegCtl>,
    backend: Backend,
) {
    let (Some(sock), port) = (open.socket.take(), open.port) else {
        return;
    };
    let shared = shared.clone();
    match backend {
        Backend::IoUring => {
            let sock = UringSocket(tokio_uring::net::UdpSocket::from_std(sock));
            tokio::task::spawn_local(leg(shared, sock, port, open, ctl));
        }
        Backend::Tokio => {
            let Ok(sock) = tokio::net::UdpSocket::from_std(sock) else {
                // Not on a runtime with I/O: nothing will serve this leg.
                shared.stats.legs_active.fetch_sub(1, Ordering::Relaxed);
                release_port(&shared, port);
                let _ = shared.events.send(MediaEvent::Failed {
                    leg: open.leg,
                    reason: "media worker cannot register the socket".into(),
                });
                return;
            };
            tokio::task::spawn_local(leg(shared, TokioSocket(sock), port, open, ctl));
        }
    }
}

/// A leg's RTP socket as the leg loop drives it: one receive in flight for
/// the life of the leg, into a buffer the receive owns and gives back.
pub(super) trait LegSocket {
    /// Whether a receive still in flight keeps the socket open after it
    /// drops (an io_uring receive stays queued in the ring): then the loop
    /// completes it before the port is released.
    const RECEIVE_OUTLIVES_DROP: bool;

    fn recv_from(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = (io::Result<(usize, SocketAddr)>, Vec<u8>)>;

    /// Sends `buf[..len]`; gives the buffer back. A send that fails is a
    /// packet lost, as the network would lose it.
    fn send_to(&self, buf: Vec<u8>, len: usize, to: SocketAddr) -> impl Future<Output = Vec<u8>>;

    fn local_addr(&self) -> io::Result<SocketAddr>;
}

struct UringSocket(tokio_uring::net::UdpSocket);

impl LegSocket for UringSocket {
    const RECEIVE_OUTLIVES_DROP: bool = true;

    fn recv_from(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = (io::Result<(usize, SocketAddr)>, Vec<u8>)> {
        self.0.recv_from(buf)
    }

    async fn send_to(&self, buf: Vec<u8>, len: usize, to: SocketAddr) -> Vec<u8> {
        use tokio_uring::buf::BoundedBuf;
        if len == buf.len() {
            // Whole: a slice of an empty buffer (the close's wake-up
            // datagram) would panic in tokio-uring.
            return self.0.send_to(buf, to).await.1;
        }
        let (_, slice) = self.0.send_to(buf.slice(..len), to).await;
        slice.into_inner()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

struct TokioSocket(tokio::net::UdpSocket);

impl LegSocket for TokioSocket {
    const RECEIVE_OUTLIVES_DROP: bool = false;

    async fn recv_from(&self, mut buf: Vec<u8>) -> (io::Result<(usize, SocketAddr)>, Vec<u8>) {
        let r = self.0.recv_from(&mut buf).await;
        (r, buf)
    }

    async fn send_to(&self, buf: Vec<u8>, len: usize, to: SocketAddr) -> Vec<u8> {
        let _ = self.0.send_to(&buf[..len.min(buf.len())], to).await;
        buf
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Runs one echo or stream leg until it is closed or its media times out.
async fn leg<S: LegSocket>(
    shared: Arc<Shared>,
    sock: S,
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
    // The socket closes at the end of this block, before its port is
    // released.
    let end = {
        let sock = sock;
        // One receive stays in flight for the whole life of the leg: a
        // receive dropped by `select!` would, on io_uring, stay queued in
        // the ring, swallow the next datagram and keep the socket open.
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
                        buf = sock.send_to(buf, m, to).await;
                    }
                    if run.counters().rx_packets.is_multiple_of(PUBLISH_EVERY) {
                        run.publish(&shared.stats);
                    }
                    recv.set(sock.recv_from(buf));
                }
            }
            while let Some((to, pkt)) = run.poll_transmit() {
                let len = pkt.len();
                sock.send_to(pkt, len, to).await;
            }
            while let Some((to, pkt)) = run.poll_rtcp() {
                rtcp.send(&pkt, to);
            }
        };
        if S::RECEIVE_OUTLIVES_DROP {
            // Complete the receive still in flight with an empty datagram
            // to ourselves (cheaper than shutdown(), which makes io_uring
            // re-arm and retry the receive), so the socket closes when it
            // drops.
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
            sock.send_to(Vec::new(), 0, to).await;
            let _ = tokio::time::timeout(Duration::from_millis(200), &mut recv).await;
        }
        end
    };
    drop(rtcp);
    finish_leg(&shared, &mut run, port, end);
}
