//! The media engine edge: worker threads that own the RTP sockets and run
//! the sans-IO leg cores. Each worker is a tokio-uring (io_uring) runtime;
//! where the kernel refuses io_uring (seccomp, old kernels) the same
//! workers run on plain tokio sockets, so media always works.

use crate::aistream::client::{self, LegSide, StreamEvent, StreamStats};
use crate::aistream::{FRAME_MS, StreamSpec};
use crate::control::{LegId, LegMedia, LegMode, MediaCommand, MediaEvent};
use crate::echo::{EchoLeg, LegCounters};
use crate::ports::PortAllocator;
use crate::rtp;
use crate::srtp::LegSrtp;
use crate::stream_leg::StreamLeg;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Datagram buffer: larger than any RTP packet we accept.
const BUF_LEN: usize = 2048;
/// How many ports a leg tries before reporting failure.
const BIND_ATTEMPTS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    IoUring,
    Tokio,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Tokio => "tokio",
        }
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Address RTP sockets bind to.
    pub bind_ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub workers: usize,
    /// Use io_uring when the kernel allows it.
    pub prefer_io_uring: bool,
    /// The XDP fast path for relayed pairs, when attached.
    pub xdp: Option<Arc<crate::offload::XdpPath>>,
    /// Which addresses AI streams may connect to (`None`: any).
    pub connect_guard: Option<crate::aistream::client::ConnectGuard>,
}

/// Process-wide media counters (exported to Prometheus by the daemon).
#[derive(Debug, Default)]
pub struct MediaStats {
    pub legs_active: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub malformed: AtomicU64,
    pub rejected_source: AtomicU64,
    pub bind_failures: AtomicU64,
    /// Stream legs: RTP the jitter buffer gave up on, or got too late or
    /// twice; 20 ms frames concealed; DTMF digits; RTCP sent and read.
    pub rtp_lost: AtomicU64,
    pub rtp_late: AtomicU64,
    pub rtp_duplicate: AtomicU64,
    pub concealed_frames: AtomicU64,
    pub dtmf_digits: AtomicU64,
    pub rtcp_sent: AtomicU64,
    pub rtcp_received: AtomicU64,
    /// 1 when the XDP program is attached (set by the daemon).
    pub xdp_attached: AtomicU64,
    /// Relay pairs whose RTP the kernel forwards now.
    pub xdp_pairs_active: AtomicU64,
    /// RTP the XDP program forwarded (counted when polled or removed).
    pub xdp_packets: AtomicU64,
    pub xdp_bytes: AtomicU64,
    /// Pairs moved to the kernel; moved back (peer moved, re-INVITE).
    pub xdp_offloads: AtomicU64,
    pub xdp_returns: AtomicU64,
    /// Rules the kernel refused (the pair stayed in userspace).
    pub xdp_failures: AtomicU64,
    /// Receive jitter of stream legs (RFC 3550 §6.4.1), observed when a
    /// leg that received RTP closes.
    pub jitter: JitterHistogram,
    /// SRTP and SRTCP of every leg.
    pub srtp: SrtpStats,
}

/// SRTP packets protected and unprotected, and refusals by reason.
#[derive(Debug, Default)]
pub struct SrtpStats {
    pub protected: AtomicU64,
    pub unprotected: AtomicU64,
    pub auth_failed: AtomicU64,
    pub replayed: AtomicU64,
    pub malformed: AtomicU64,
    pub ssrc_limit: AtomicU64,
    pub other: AtomicU64,
}

impl SrtpStats {
    /// Adds what a leg counted since `published`, and moves `published`.
    pub fn publish(
        &self,
        now: crate::srtp::SrtpCounters,
        published: &mut crate::srtp::SrtpCounters,
    ) {
        let p = *published;
        for (total, n, b) in [
            (&self.protected, now.protected, p.protected),
            (&self.unprotected, now.unprotected, p.unprotected),
            (&self.auth_failed, now.auth_failed, p.auth_failed),
            (&self.replayed, now.replayed, p.replayed),
            (&self.malformed, now.malformed, p.malformed),
            (&self.ssrc_limit, now.ssrc_limit, p.ssrc_limit),
            (&self.other, now.other, p.other),
        ] {
            total.fetch_add(n.saturating_sub(b), Ordering::Relaxed);
        }
        *published = now;
    }

    /// Refusals by reason label (`gateway_srtp_rejected_total`).
    pub fn rejected(&self) -> [(&'static str, u64); 5] {
        use crate::srtp::SrtpError as E;
        [
            (E::Auth.label(), self.auth_failed.load(Ordering::Relaxed)),
            (E::Replay.label(), self.replayed.load(Ordering::Relaxed)),
            (E::Malformed.label(), self.malformed.load(Ordering::Relaxed)),
            (
                E::SsrcLimit.label(),
                self.ssrc_limit.load(Ordering::Relaxed),
            ),
            ("other", self.other.load(Ordering::Relaxed)),
        ]
    }
}

/// A histogram's fixed bucket bounds, in milliseconds (the last bucket,
/// +Inf, is the count).
pub trait MsBuckets {
    const MS: &'static [f64];
}

/// Per-leg receive jitter: 1 ms to 160 ms.
#[derive(Debug, Default)]
pub struct JitterBuckets;
impl MsBuckets for JitterBuckets {
    const MS: &'static [f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0];
}

/// Most buckets an [`MsHistogram`] holds.
const MAX_BUCKETS: usize = 16;

/// A lock-free fixed-bucket histogram of milliseconds, published to
/// Prometheus by the daemon at scrape time.
#[derive(Debug)]
pub struct MsHistogram<B: MsBuckets> {
    /// Observations at or below each bound (not cumulative); the first
    /// `B::MS.len()` are used.
    buckets: [AtomicU64; MAX_BUCKETS],
    pub count: AtomicU64,
    /// Sum of observations in microseconds.
    pub sum_us: AtomicU64,
    _bounds: std::marker::PhantomData<B>,
}

impl<B: MsBuckets> Default for MsHistogram<B> {
    fn default() -> Self {
        const { assert!(B::MS.len() <= MAX_BUCKETS) };
        MsHistogram {
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            _bounds: std::marker::PhantomData,
        }
    }
}

impl<B: MsBuckets> MsHistogram<B> {
    pub fn observe_ms(&self, ms: f64) {
        if let Some(i) = B::MS.iter().position(|b| ms <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((ms * 1000.0).max(0.0) as u64, Ordering::Relaxed);
    }

    /// The observation count and each bound (ms) with the observations at
    /// or below it, cumulative. The count is read first and the buckets
    /// clamped to it: an observation counted in its bucket but not yet in
    /// the count never shows as more observations than the count.
    pub fn snapshot(&self) -> (u64, Vec<(f64, u64)>) {
        let count = self.count.load(Ordering::Relaxed);
        let mut total = 0u64;
        let buckets = B::MS
            .iter()
            .zip(&self.buckets)
            .map(|(ub, n)| {
                total = total.saturating_add(n.load(Ordering::Relaxed));
                (*ub, total.min(count))
            })
            .collect();
        (count, buckets)
    }
}

/// Receive jitter of stream legs.
pub type JitterHistogram = MsHistogram<JitterBuckets>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start media worker thread: {0}")]
    Thread(#[from] std::io::Error),
}

enum LegCtl {
    /// The stream of this leg changed (a relay has two legs).
    Update(LegId, LegMedia),
    InfoDtmf(char, u32),
    SendDtmf(char, u32),
    /// A message for the AI from call control (a transfer's result).
    ToAi(crate::aistream::ToAi),
    /// Start (or replace) a relay's listen-only fork.
    Fork(Box<StreamSpec>),
    Unfork,
    Close,
}

struct OpenLeg {
    /// Bound by [`MediaEngine::command`] on the caller's thread; the
    /// worker takes it.
    socket: Option<std::net::UdpSocket>,
    /// The RTCP socket (RTP port + 1) of legs that report.
    rtcp: Option<std::net::UdpSocket>,
    port: u16,
    leg: LegId,
    mode: LegMode,
    media: LegMedia,
    timeout: Duration,
}

/// How often a worker starts the legs posted to it. Posting an open does
/// not wake the worker: at 1,000 calls/s that saves two thread wake-ups
/// per call for one per tick. The socket is bound before the open is
/// posted, so early RTP waits in its buffer (at most one tick). Controls
/// of a posted leg (an answer's media, a close) go straight into its
/// channel instead: a leg reads them before its sockets, so what the
/// answer changed applies to every packet sent after the answer left.
const MAILBOX_TICK: Duration = Duration::from_millis(10);

enum WorkerCmd {
    Open(OpenLeg),
    OpenRelay(OpenRelay),
    Ctl(LegId, LegCtl),
    Close(LegId),
}

/// Two bridged legs relayed by one task: both sockets live on one worker.
struct OpenRelay {
    legs: [LegId; 2],
    media: [LegMedia; 2],
    sockets: [BoundLeg; 2],
    timeout: Duration,
    /// A relay taken over with its kernel rules: it starts offloaded.
    adopted: Option<Box<AdoptedRules>>,
}

/// The pinned rules of a relay a restored call adopts, and the peers they
/// send to (side A's, side B's).
struct AdoptedRules {
    rules: crate::offload::PairRules,
    peers: [SocketAddr; 2],
}

/// A leg's bound RTP socket, its port and its RTCP socket.
struct BoundLeg {
    rtp: std::net::UdpSocket,
    port: u16,
    rtcp: Option<std::net::UdpSocket>,
    /// The allocator handed the port out (or reserved it): it goes back
    /// there when the leg ends. An adopted port outside the range is not.
    owned: bool,
}

/// What a worker starts.
enum Job {
    Leg(OpenLeg),
    Relay(OpenRelay),
}

/// Commands for one worker: opens collected without waking it, controls
/// delivered at once (see [`MAILBOX_TICK`]).
#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    stopped: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct MailboxState {
    /// Legs posted and not started yet, each with its control channel.
    opens: Vec<(Job, mpsc::UnboundedReceiver<LegCtl>)>,
    /// The control channel of every leg posted and not closed.
    ctls: HashMap<LegId, mpsc::UnboundedSender<LegCtl>>,
}

impl Mailbox {
    fn post(&self, cmd: WorkerCmd) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match cmd {
            WorkerCmd::Open(open) => {
                let (tx, rx) = mpsc::unbounded_channel();
                st.ctls.insert(open.leg, tx);
                st.opens.push((Job::Leg(open), rx));
            }
            WorkerCmd::OpenRelay(open) => {
                let (tx, rx) = mpsc::unbounded_channel();
                for leg in open.legs {
                    st.ctls.insert(leg, tx.clone());
                }
                st.opens.push((Job::Relay(open), rx));
            }
            // Queued in the channel even before the leg starts: it reads
            // them in order when it does.
            WorkerCmd::Ctl(leg, ctl) => {
                if let Some(tx) = st.ctls.get(&leg) {
                    let _ = tx.send(ctl);
                }
            }
            WorkerCmd::Close(leg) => {
                if let Some(tx) = st.ctls.remove(&leg) {
                    let _ = tx.send(LegCtl::Close);
                }
            }
        }
    }

    /// The worker's loop: every tick, starts the legs posted with `start`,
    /// until the engine is dropped.
    async fn serve(&self, mut start: impl FnMut(Job, mpsc::UnboundedReceiver<LegCtl>)) {
        let mut tick = tokio::time::interval(MAILBOX_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopped.load(Ordering::Acquire) {
            tick.tick().await;
            for (open, ctl) in self.take_opens() {
                start(open, ctl);
            }
        }
    }

    /// The legs to start; forgets the channels of legs that ended on their
    /// own (media timeout).
    fn take_opens(&self) -> Vec<(Job, mpsc::UnboundedReceiver<LegCtl>)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.ctls.retain(|_, tx| !tx.is_closed());
        std::mem::take(&mut st.opens)
    }
}

struct Reserved {
    socket: std::net::UdpSocket,
    port: u16,
    rtcp: Option<std::net::UdpSocket>,
}

struct Inner {
    shared: Arc<Shared>,
    workers: Vec<Arc<Mailbox>>,
    /// Open legs and the worker that runs each.
    /// Open legs: the worker that runs each, and a relayed leg's partner.
    legs: Mutex<HashMap<LegId, (usize, Option<LegId>)>>,
    /// Ports bound by `Reserve` and not yet opened: RTP socket, port and
    /// RTCP socket. Taken under the `legs` lock.
    reserved: Mutex<HashMap<LegId, Reserved>>,
    backend: Backend,
    stats: Arc<MediaStats>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for w in &self.workers {
            w.stopped.store(true, Ordering::Release);
        }
    }
}

/// Handle to the media workers. Cheap to clone.
#[derive(Clone)]
pub struct MediaEngine {
    inner: Arc<Inner>,
}

/// Shared by the workers of one engine.
struct Shared {
    cfg: EngineConfig,
    ports: Mutex<PortAllocator>,
    events: mpsc::UnboundedSender<MediaEvent>,
    stats: Arc<MediaStats>,
    streams: Arc<StreamStats>,
    /// Relayed legs a previous run left in the kernel, by local port,
    /// until a restored call adopts them or they are released.
    inherited: Mutex<HashMap<u16, Inherited>>,
}

/// One pinned rule of a previous run ([`take_over_inherited`]).
struct Inherited {
    key: crate::xdp::RelayKey,
    rule: crate::xdp::RelayRule,
    /// Its port was ours to reserve (a changed port range may leave it
    /// outside): only then is it released.
    reserved: bool,
}

fn io_uring_available() -> bool {
    io_uring::IoUring::new(8).is_ok()
}

impl MediaEngine {
    /// Starts `cfg.workers` threads. Events (opened, failed, timeout) go to
    /// `events`.
    pub fn start(
        cfg: EngineConfig,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<MediaEngine, EngineError> {
        let backend = if cfg.prefer_io_uring && io_uring_available() {
            Backend::IoUring
        } else {
            Backend::Tokio
        };
        let stats = Arc::new(MediaStats::default());
        let shared = Arc::new(Shared {
            ports: Mutex::new(PortAllocator::new(cfg.port_min, cfg.port_max)),
            cfg: cfg.clone(),
            events,
            stats: stats.clone(),
            streams: Arc::default(),
            inherited: Mutex::default(),
        });
        take_over_inherited(&shared)?;
        let mut workers = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let mailbox = Arc::new(Mailbox::default());
            let shared = shared.clone();
            let mb = mailbox.clone();
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || run_worker(backend, shared, mb))?;
            workers.push(mailbox);
        }
        Ok(MediaEngine {
            inner: Arc::new(Inner {
                shared,
                workers,
                legs: Mutex::new(HashMap::new()),
                reserved: Mutex::new(HashMap::new()),
                backend,
                stats,
            }),
        })
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    pub fn stats(&self) -> &Arc<MediaStats> {
        &self.inner.stats
    }

    /// AI stream counters (connects, drops, refused frames).
    pub fn stream_stats(&self) -> &Arc<StreamStats> {
        &self.inner.shared.streams
    }

    /// Executes a command; never blocks. `Open` binds the leg's socket
    /// right here (a few syscalls) and returns `Opened` or `Failed` at
    /// once, sparing the caller a round trip to the worker thread; the
    /// worker only runs the leg. Later events (timeouts) arrive on the
    /// engine's event channel.
    pub fn command(&self, cmd: MediaCommand) -> Option<MediaEvent> {
        let mut legs = self.inner.legs.lock().unwrap_or_else(|e| e.into_inner());
        match cmd {
            MediaCommand::Open {
                leg,
                mode,
                media,
                timeout,
            } => {
                let shared = &self.inner.shared;
                let reserved = self
                    .inner
                    .reserved
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&leg);
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
                            return Some(MediaEvent::Failed {
                                leg,
                                reason: "no RTP port could be bound".into(),
                            });
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
                Some(MediaEvent::Opened {
                    leg,
                    local: SocketAddr::new(shared.cfg.bind_ip, port),
                })
            }
            MediaCommand::OpenRelay {
                legs: pair,
                media,
                timeout,
            } => {
                let shared = &self.inner.shared;
                let mut bound = Vec::with_capacity(2);
                for _ in 0..2 {
                    let Some((rtp, port)) = bind_leg_socket(shared) else {
                        for b in &bound {
                            let b: &BoundLeg = b;
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
                    &mut legs,
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
            MediaCommand::AdoptRelay {
                legs: pair,
                media,
                ports,
                timeout,
            } => {
                let shared = &self.inner.shared;
                let (sockets, adopted) = match adopt_sockets(shared, ports) {
                    Ok(found) => found,
                    Err(reason) => {
                        return Some(MediaEvent::Failed {
                            leg: pair[0],
                            reason,
                        });
                    }
                };
                let locals = ports.map(|p| SocketAddr::new(shared.cfg.bind_ip, p));
                Some(self.start_relay(
                    &mut legs,
                    OpenRelay {
                        legs: pair,
                        media,
                        sockets,
                        timeout,
                        adopted,
                    },
                    locals,
                ))
            }
            MediaCommand::Reserve { leg } => {
                let shared = &self.inner.shared;
                let Some((socket, port)) = bind_leg_socket(shared) else {
                    return Some(MediaEvent::Failed {
                        leg,
                        reason: "no RTP port could be bound".into(),
                    });
                };
                let rtcp = bind_rtcp_socket(shared, port);
                self.inner
                    .reserved
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(leg, Reserved { socket, port, rtcp });
                Some(MediaEvent::Opened {
                    leg,
                    local: SocketAddr::new(shared.cfg.bind_ip, port),
                })
            }
            MediaCommand::Update { leg, media } => {
                if let Some(&(w, _)) = legs.get(&leg) {
                    self.inner.workers[w].post(WorkerCmd::Ctl(leg, LegCtl::Update(leg, media)));
                }
                None
            }
            MediaCommand::InfoDtmf {
                leg,
                digit,
                duration_ms,
            } => {
                if let Some(&(w, _)) = legs.get(&leg) {
                    let ctl = LegCtl::InfoDtmf(digit, duration_ms);
                    self.inner.workers[w].post(WorkerCmd::Ctl(leg, ctl));
                }
                None
            }
            MediaCommand::SendDtmf {
                leg,
                digit,
                duration_ms,
            } => {
                if let Some(&(w, _)) = legs.get(&leg) {
                    let ctl = LegCtl::SendDtmf(digit, duration_ms);
                    self.inner.workers[w].post(WorkerCmd::Ctl(leg, ctl));
                }
                None
            }
            MediaCommand::Sms { leg, sms } => {
                if let Some(&(w, _)) = legs.get(&leg) {
                    let ctl = LegCtl::ToAi(crate::aistream::ToAi::Sms(sms));
                    self.inner.workers[w].post(WorkerCmd::Ctl(leg, ctl));
                }
                None
            }
            MediaCommand::TransferResult { leg, result } => {
                if let Some(&(w, _)) = legs.get(&leg) {
                    let ctl = LegCtl::ToAi(crate::aistream::ToAi::TransferResult(result));
                    self.inner.workers[w].post(WorkerCmd::Ctl(leg, ctl));
                }
                None
            }
            MediaCommand::StartFork { leg, spec } => {
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
            MediaCommand::StopFork { leg } => {
                if let Some(&(w, Some(_))) = legs.get(&leg) {
                    self.inner.workers[w].post(WorkerCmd::Ctl(leg, LegCtl::Unfork));
                }
                None
            }
            MediaCommand::Close { leg } => {
                let reserved = self
                    .inner
                    .reserved
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&leg);
                if let Some(r) = reserved {
                    drop(r.socket);
                    release_port(&self.inner.shared, r.port);
                }
                if let Some((w, partner)) = legs.remove(&leg) {
                    // Closing either leg of a relay closes the pair.
                    if let Some(p) = partner {
                        legs.remove(&p);
                    }
                    self.inner.workers[w].post(WorkerCmd::Close(leg));
                }
                None
            }
        }
    }

    /// Hands a bound relay pair to its worker and records both legs.
    fn start_relay(
        &self,
        legs: &mut HashMap<LegId, (usize, Option<LegId>)>,
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

    pub fn active_legs(&self) -> usize {
        self.inner.legs.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Removes the kernel rules a previous run left that no restored call
    /// adopted ([`MediaCommand::AdoptRelay`]): their calls ended while the
    /// daemon was away, or are not ours to resume. Frees their ports;
    /// returns how many legs were removed.
    pub fn release_inherited(&self) -> usize {
        let shared = &self.inner.shared;
        let left: Vec<Inherited> = lock(&shared.inherited).drain().map(|(_, i)| i).collect();
        if let Some(x) = &shared.cfg.xdp {
            for i in &left {
                x.remove_key(&i.key);
                if i.reserved {
                    release_port(shared, u16::from_be(i.key.local_port));
                }
            }
        }
        let n = left.len();
        if n > 0 {
            tracing::info!(
                legs = n,
                "removed relayed legs a previous run left that no open call adopted"
            );
        }
        left.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds the two ports of a relay a restored call adopts and takes its
/// pinned rules, when the kernel still holds both and they are the two
/// directions of this very pair.
fn adopt_sockets(
    shared: &Shared,
    ports: [u16; 2],
) -> Result<([BoundLeg; 2], Option<Box<AdoptedRules>>), String> {
    if ports[0] == 0 || ports[1] == 0 || ports[0] == ports[1] {
        return Err(format!("relay ports {ports:?} are not a pair"));
    }
    let mut taken = {
        let mut inherited = lock(&shared.inherited);
        ports.map(|p| inherited.remove(&p))
    };
    let mut bound: Vec<BoundLeg> = Vec::with_capacity(2);
    for (p, inherited) in ports.into_iter().zip(&taken) {
        // A port a previous run left in the kernel is reserved already;
        // another one is reserved now, unless outside the range (then it
        // is never handed back to the allocator).
        let owned = match inherited {
            Some(i) => i.reserved,
            None => lock(&shared.ports).reserve(p),
        };
        let addr = SocketAddr::new(shared.cfg.bind_ip, p);
        let rtp = match std::net::UdpSocket::bind(addr).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                // Ports this call reserved go back; an inherited one stays
                // reserved with its rule for the release.
                for b in &bound {
                    if b.owned
                        && taken
                            .iter()
                            .flatten()
                            .all(|i| u16::from_be(i.key.local_port) != b.port)
                    {
                        release_port(shared, b.port);
                    }
                }
                if owned && inherited.is_none() {
                    release_port(shared, p);
                }
                forget_inherited(shared, &mut taken);
                return Err(format!("relay port {addr} cannot be bound again: {e}"));
            }
        };
        let rtcp = bind_rtcp_socket(shared, p);
        bound.push(BoundLeg {
            rtp,
            port: p,
            rtcp,
            owned,
        });
    }
    let Ok(sockets) = <[BoundLeg; 2]>::try_from(bound) else {
        return Err("relay sockets".into());
    };
    let same_pair = |a: &Inherited, b: &Inherited| {
        // Side A's rule leaves from side B's port, and the reverse.
        a.rule.src_port_host() == ports[1] && b.rule.src_port_host() == ports[0]
    };
    let adopted = match taken {
        [Some(a), Some(b)] if same_pair(&a, &b) => {
            // Side A's rule sends to B's peer and B's to A's.
            let peers = [
                crate::offload::rule_remote(&b.rule),
                crate::offload::rule_remote(&a.rule),
            ];
            Some(Box::new(AdoptedRules {
                rules: [(a.key, a.rule), (b.key, b.rule)],
                peers,
            }))
        }
        others => {
            // Half a pair, or rules of other pairs: of no use to this
            // relay, which offloads afresh once latched.
            if let Some(x) = &shared.cfg.xdp {
                for i in others.iter().flatten() {
                    x.remove_key(&i.key);
                }
            }
            None
        }
    };
    Ok((sockets, adopted))
}

/// Puts rules taken for an adoption that failed back among the inherited.
fn forget_inherited(shared: &Shared, taken: &mut [Option<Inherited>; 2]) {
    let mut inherited = lock(&shared.inherited);
    for i in taken.iter_mut().filter_map(Option::take) {
        inherited.insert(u16::from_be(i.key.local_port), i);
    }
}

fn run_worker(backend: Backend, shared: Arc<Shared>, rx: Arc<Mailbox>) {
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

fn tokio_worker(shared: Arc<Shared>, rx: Arc<Mailbox>) {
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

fn bind_rtcp_socket(shared: &Shared, rtp_port: u16) -> Option<std::net::UdpSocket> {
    let addr = SocketAddr::new(shared.cfg.bind_ip, rtp_port.checked_add(1)?);
    match std::net::UdpSocket::bind(addr) {
        Ok(s) if s.set_nonblocking(true).is_ok() => Some(s),
        Ok(_) => None,
        Err(e) => {
            shared.stats.bind_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%addr, error = %e, "RTCP port busy; leg runs without RTCP");
            None
        }
    }
}

/// Binds an RTP socket on a free port of the range.
fn bind_leg_socket(shared: &Shared) -> Option<(std::net::UdpSocket, u16)> {
    for _ in 0..BIND_ATTEMPTS {
        let port = shared.ports.lock().ok()?.allocate()?;
        let addr = SocketAddr::new(shared.cfg.bind_ip, port);
        match std::net::UdpSocket::bind(addr) {
            Ok(s) => {
                if s.set_nonblocking(true).is_ok() {
                    return Some((s, port));
                }
            }
            Err(e) => {
                shared.stats.bind_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%addr, error = %e, "RTP port busy, trying another");
            }
        }
        // Busy ports go to the back of the queue.
        if let Ok(mut p) = shared.ports.lock() {
            p.release(port);
        }
    }
    None
}

/// Relayed legs a previous run of the daemon left in the kernel (pinned
/// maps, [`crate::xdp::XdpOffload::load_pinned`]): their media goes on
/// flowing across the restart. Their ports stay out of the allocator
/// until a restored call adopts its pair ([`MediaCommand::AdoptRelay`])
/// or the rest are released ([`MediaEngine::release_inherited`]). They
/// count in no statistic until adopted: the relay that adopts a pair
/// counts it as its own.
fn take_over_inherited(shared: &Arc<Shared>) -> Result<(), EngineError> {
    let Some(x) = shared.cfg.xdp.clone() else {
        return Ok(());
    };
    let rules = x.rules();
    if rules.is_empty() {
        return Ok(());
    }
    let mut inherited = lock(&shared.inherited);
    let mut ports = lock(&shared.ports);
    for (key, rule) in rules {
        let port = u16::from_be(key.local_port);
        if let Some(old) = inherited.get(&port) {
            // The same port under another local address (the bind address
            // changed): neither can be adopted by port; both go.
            x.remove_key(&old.key);
            x.remove_key(&key);
            if let Some(old) = inherited.remove(&port)
                && old.reserved
            {
                ports.release(port);
            }
            continue;
        }
        let reserved = ports.reserve(port);
        inherited.insert(
            port,
            Inherited {
                key,
                rule,
                reserved,
            },
        );
    }
    tracing::info!(
        legs = inherited.len(),
        "took over relayed legs a previous run left in the kernel"
    );
    Ok(())
}

/// A stream leg and its link to the socket task.
struct StreamRun {
    core: StreamLeg,
    side: LegSide,
}

enum LegCore {
    Echo(EchoLeg),
    Stream(Box<StreamRun>),
}

/// Caller audio held for the AI while its socket is slow or
/// reconnecting: the reconnect window, plus a second.
fn to_ai_capacity(spec: &StreamSpec) -> usize {
    ((spec.reconnect_window.as_millis() as usize + 1000) / FRAME_MS as usize).max(50)
}

/// The per-leg state both backends drive.
struct LegRun {
    leg: LegId,
    core: LegCore,
    /// Between the leg and its socket: nothing unauthenticated reaches
    /// the leg, nothing it sends leaves unprotected.
    srtp: LegSrtp,
    published_srtp: crate::srtp::SrtpCounters,
    timeout: Duration,
    opened: Instant,
    published: LegCounters,
    published_stream: [u64; 7],
}

impl LegRun {
    /// The leg's state, and for stream legs the socket task to spawn on
    /// the same worker.
    fn new(
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

    fn counters(&self) -> &LegCounters {
        match &self.core {
            LegCore::Echo(e) => &e.counters,
            LegCore::Stream(s) => &s.core.counters,
        }
    }

    fn last_rx(&self) -> Option<Instant> {
        match &self.core {
            LegCore::Echo(e) => e.last_rx(),
            LegCore::Stream(s) => s.core.last_rx(),
        }
    }

    fn idle_deadline(&self) -> Instant {
        self.last_rx().unwrap_or(self.opened) + self.timeout
    }

    /// The earliest of the media timeout and the leg's own timers.
    fn deadline(&self) -> Instant {
        let idle = self.idle_deadline();
        match &self.core {
            LegCore::Echo(_) => idle,
            LegCore::Stream(s) => s.core.poll_timeout().map_or(idle, |t| t.min(idle)),
        }
    }

    /// Whether the media timeout has passed.
    fn idle(&self, now: Instant) -> bool {
        now >= self.idle_deadline()
    }

    fn wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        match &self.core {
            LegCore::Echo(_) => None,
            LegCore::Stream(s) => Some(s.side.wake_leg.clone()),
        }
    }

    fn control(&mut self, ctl: LegCtl) {
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
    fn on_datagram(
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
    fn on_wake(&mut self, now: Instant) {
        if let LegCore::Stream(s) = &mut self.core {
            while let Some(m) = s.side.try_recv() {
                s.core.on_ai(now, m);
            }
            s.core.handle_timeout(now);
            self.flush();
        }
    }

    /// Moves what the leg produced for the AI to the socket task.
    fn flush(&mut self) {
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

    fn on_rtcp(&mut self, now: Instant, from: SocketAddr, pkt: &[u8]) {
        if let LegCore::Stream(s) = &mut self.core
            && let Ok(clear) = self.srtp.inbound_rtcp(pkt)
        {
            s.core.on_rtcp_datagram(now, from, &clear);
        }
    }

    /// RTCP to send, protected (SRTCP) on SRTP legs; what cannot be
    /// protected is dropped (counted).
    fn poll_rtcp(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
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
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
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

    fn close(&mut self, reason: &str) {
        if let LegCore::Stream(s) = &mut self.core {
            s.side.stop(reason);
        }
    }

    /// Adds this leg's counter deltas to the process totals.
    fn publish(&mut self, stats: &MediaStats) {
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

/// Adds a leg's SRTP counts to the totals; the first refusals of a leg
/// are logged once (a wrong key or a spoofer shows up in the log without
/// flooding it).
fn publish_srtp(
    stats: &MediaStats,
    leg: LegId,
    now: crate::srtp::SrtpCounters,
    published: &mut crate::srtp::SrtpCounters,
) {
    if published.rejected() == 0 && now.rejected() > 0 {
        tracing::info!(
            leg,
            auth = now.auth_failed,
            replay = now.replayed,
            malformed = now.malformed,
            ssrc_limit = now.ssrc_limit,
            other = now.other,
            "SRTP packets refused on this leg (all counted in gateway_srtp_rejected_total; logged once per leg)"
        );
    }
    stats.srtp.publish(now, published);
}

/// Adds what a leg counted since `published` to the process totals.
fn add_counter_deltas(stats: &MediaStats, c: &LegCounters, published: &LegCounters) {
    let p = published;
    for (total, now, before) in [
        (&stats.rx_packets, c.rx_packets, p.rx_packets),
        (&stats.rx_bytes, c.rx_bytes, p.rx_bytes),
        (&stats.tx_packets, c.tx_packets, p.tx_packets),
        (&stats.tx_bytes, c.tx_bytes, p.tx_bytes),
        (&stats.malformed, c.malformed, p.malformed),
        (&stats.rejected_source, c.rejected_source, p.rejected_source),
    ] {
        total.fetch_add(now - before, Ordering::Relaxed);
    }
}

enum LegEnd {
    Closed,
    TimedOut,
}

fn release_port(shared: &Shared, port: u16) {
    if let Ok(mut p) = shared.ports.lock() {
        p.release(port);
    }
}

fn finish_leg(shared: &Shared, run: &mut LegRun, port: u16, end: LegEnd) {
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
struct RtcpPort(Option<tokio::net::UdpSocket>);

impl RtcpPort {
    fn new(sock: Option<std::net::UdpSocket>) -> RtcpPort {
        RtcpPort(sock.and_then(|s| tokio::net::UdpSocket::from_std(s).ok()))
    }

    /// Next datagram; pending forever for legs without RTCP.
    async fn recv(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match &self.0 {
            Some(s) => s.recv_from(buf).await.ok(),
            None => std::future::pending().await,
        }
    }

    fn send(&self, pkt: &[u8], to: SocketAddr) {
        if let Some(s) = &self.0 {
            let _ = s.try_send_to(pkt, to);
        }
    }
}

/// Publish counters at least this often while packets flow.
const PUBLISH_EVERY: u64 = 64;

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

/// Relayed leg pairs. Both backends run them on the worker's tokio
/// reactor (tokio-uring runs one too): a relay forwards each packet at
/// once and never waits on a timer per packet.
mod relayed {
    use super::*;
    use crate::relay::{RelayPair, Side};
    use std::os::fd::AsRawFd;

    pub(super) fn start(
        shared: &Arc<Shared>,
        open: OpenRelay,
        ctl: mpsc::UnboundedReceiver<LegCtl>,
    ) {
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

    struct Sockets {
        rtp: [tokio::net::UdpSocket; 2],
        rtcp: [RtcpPort; 2],
    }

    fn index(s: Side) -> usize {
        match s {
            Side::A => 0,
            Side::B => 1,
        }
    }

    const UNSPECIFIED: SocketAddr =
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
    const XDP_POLL: Duration = Duration::from_secs(2);
    /// How long a pair that could not be offloaded waits to try again.
    const XDP_RETRY: Duration = Duration::from_secs(1);

    /// A pair whose RTP the kernel forwards.
    struct Offloaded {
        rules: crate::offload::PairRules,
        peers: [Option<SocketAddr>; 2],
        /// Kernel counters already added to the pair's.
        seen: [crate::xdp::LegCounters; 2],
    }

    /// Adds what the kernel forwarded since the last poll to the pair's
    /// counters and the XDP totals; whether anything new arrived.
    fn absorb(
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
    struct Fork {
        tap: crate::tap::Tap,
        side: LegSide,
        frames: Vec<crate::aistream::ToAi>,
        /// The packet as its side sent it (the relay may transcode it).
        scratch: Vec<u8>,
    }

    fn start_fork(shared: &Shared, leg: LegId, pair: &RelayPair, spec: StreamSpec) -> Fork {
        let (side, socket_side) = client::link(to_ai_capacity(&spec), shared.streams.clone());
        let mixed = matches!(spec.dialect, crate::aistream::Dialect::Pcm { .. });
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
    fn unload(shared: &Shared, pair: &mut RelayPair, off: Offloaded) {
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
    async fn run(
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

    fn publish(
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
}
