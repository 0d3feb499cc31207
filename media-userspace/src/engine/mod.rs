//! The media engine edge: worker threads that own the RTP sockets and run
//! the sans-IO leg cores. Each worker is a tokio-uring (io_uring) runtime;
//! where the kernel refuses io_uring (seccomp, old kernels) the same
//! workers run on plain tokio sockets, so media always works.
//!
//! A command from call control (`commands`) binds the leg's sockets on
//! the caller's thread (`bind`) and posts the leg to a worker's
//! `mailbox`; the `worker` runs each echo or stream `leg` in its
//! own loop, and each `relayed` pair in one task. Legs a previous run
//! left in the kernel are `inherited`; counters go to `stats`.

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

mod bind;
mod commands;
mod inherited;
mod leg;
mod mailbox;
mod relayed;
mod stats;
mod worker;

use bind::{bind_leg_socket, bind_rtcp_socket, release_port};
use inherited::{adopt_sockets, take_over_inherited};
use leg::{LegEnd, LegRun, PUBLISH_EVERY, RtcpPort, finish_leg, to_ai_capacity};
use mailbox::{AdoptedRules, BoundLeg, Job, LegCtl, Mailbox, OpenLeg, OpenRelay, WorkerCmd};
pub use stats::{JitterBuckets, JitterHistogram, MediaStats, MsBuckets, MsHistogram, SrtpStats};
use stats::{add_counter_deltas, publish_srtp};
use worker::run_worker;

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

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start media worker thread: {0}")]
    Thread(#[from] std::io::Error),
}

struct Reserved {
    socket: std::net::UdpSocket,
    port: u16,
    rtcp: Option<std::net::UdpSocket>,
}

struct Inner {
    shared: Arc<Shared>,
    workers: Vec<Arc<Mailbox>>,
    /// Open legs: the worker that runs each, and a relayed leg's partner.
    legs: Mutex<commands::LegTable>,
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

    pub fn active_legs(&self) -> usize {
        self.inner.legs.lock().map(|l| l.len()).unwrap_or(0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
