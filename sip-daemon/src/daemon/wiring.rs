//! Start-up: the store, the API server, the call records, the media
//! engine, the SIP listeners, the core and the tasks around it, in the
//! order they depend on each other. Each is set up in the file of its
//! idea; this one only connects them.

use super::capacity::CapacityEdge;
use super::drain::Drain;
use super::event_loop::{Daemon, Inputs, Signals, Writers};
use super::hooks::Hooks;
use super::outputs::Edges;
use super::{
    DaemonError, api_server, cluster, listeners, media, registrations, resume, store_sync,
    unix_ms_now,
};
use crate::config::{Config, Listener};
use crate::core::{Core, WallClock};
use crate::metrics::Metrics;
use crate::routing::RoutingTable;
use api::cdr::{CdrMetrics, CdrQueue, CdrWriterConfig, spawn_writer};
use api::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// What the stages share.
pub(super) struct Shared {
    pub store: Arc<dyn Store>,
    pub url: String,
    pub node_id: String,
    /// Notified when routing rows change through this node's API.
    pub changed: Arc<Notify>,
    pub readiness: api::http::Readiness,
    /// Drain requests over REST (`POST /v1/nodes/{id}/drain`), from this
    /// node's API at once or from the store on a heartbeat.
    pub drain: mpsc::Sender<()>,
}

/// The call records' queue, its writer and the store's health.
struct Cdrs {
    queue: CdrQueue,
    writer: api::cdr::CdrWriter,
    metrics: CdrMetrics,
}

/// Sets every edge up and connects it to the core: the daemon, and what
/// its loop waits on.
pub(super) async fn wire(
    cfg: &Config,
    registry: &prometheus::Registry,
    shutdown: mpsc::Receiver<()>,
) -> Result<(Daemon, Inputs), DaemonError> {
    let (shared, drain_rx) = open(cfg).await?;
    let (control, control_rx) = api::control::CallControl::channel();
    api_server::start(cfg, &shared, registry, control).await?;
    let routing = store_sync::initial_routing(shared.store.as_ref()).await?;
    let metrics = Metrics::new(registry.clone());
    let cdrs = start_cdrs(cfg, &shared, registry)?;
    let targets = api::targets::TargetPolicy::new(cfg.api.allowed_target_networks.clone());
    let media = media::start(cfg, registry, &targets)?;
    let sip = listeners::bind(cfg, &routing, &metrics).await?;
    let kernel_guard =
        listeners::start_kernel_guard(cfg, media.xdp.clone(), &sip.bound, &routing, registry)?;
    let core = start_core(cfg, shared.store.as_ref(), routing, &metrics, &sip.bound).await?;
    let regs = registrations::start(&shared.store, &shared.url, &shared.node_id);
    let (hooks, voice) = Hooks::start(cfg, shared.store.clone(), targets, registry)?;
    let (capacity, capacity_rx) = CapacityEdge::new(
        shared.store.clone(),
        shared.node_id.clone(),
        metrics.clone(),
    );
    let routing_rx = store_sync::start_reloader(
        &shared.store,
        &shared.url,
        shared.changed.clone(),
        cdrs.metrics.clone(),
    );
    let inputs = Inputs {
        signals: Signals::install()?,
        shutdown,
        sip: sip.queues,
        media: media.events,
        control: control_rx,
        drain: drain_rx,
        remote_registrations: regs.remote,
        capacity: capacity_rx,
        voice,
        routing: routing_rx,
    };
    let out = Edges {
        transports: sip.transports,
        engine: media.engine,
        cdrs: cdrs.queue.clone(),
        registrations: regs.changes,
        kernel_guard,
        hooks,
        capacity,
        control: Default::default(),
    };
    let writers = Writers {
        registrations: regs.writer,
        cdrs: cdrs.writer,
    };
    let daemon = start_serving(cfg, &shared, core, out, metrics, sip.bound, writers).await?;
    Ok((daemon, inputs))
}

/// The store, opened and provisioned, and the handles every stage
/// shares; drain requests arrive on the receiver.
async fn open(cfg: &Config) -> Result<(Shared, mpsc::Receiver<()>), DaemonError> {
    let url = cfg.store_url();
    let store = store_sync::open(cfg, &url).await?;
    let (drain, drain_rx) = mpsc::channel::<()>(1);
    let shared = Shared {
        store,
        url,
        node_id: cfg.node_id(),
        changed: Arc::new(Notify::new()),
        readiness: api::http::Readiness::default(),
        drain,
    };
    Ok((shared, drain_rx))
}

/// The call-record queue and its writer.
fn start_cdrs(
    cfg: &Config,
    shared: &Shared,
    registry: &prometheus::Registry,
) -> Result<Cdrs, DaemonError> {
    let metrics = CdrMetrics::register(registry)?;
    let queue = CdrQueue::new(cfg.store.cdr_queue_capacity);
    let writer = spawn_writer(
        shared.store.clone(),
        queue.clone(),
        CdrWriterConfig::default(),
        metrics.clone(),
    );
    Ok(Cdrs {
        queue,
        writer,
        metrics,
    })
}

/// The core on the wall clock, with the listeners as bound and the
/// registrations the store holds.
async fn start_core(
    cfg: &Config,
    store: &dyn Store,
    routing: RoutingTable,
    metrics: &Metrics,
    bound: &[Listener],
) -> Result<Core, DaemonError> {
    let clock = WallClock {
        base: Instant::now(),
        base_unix_ms: unix_ms_now(),
    };
    let mut core_cfg = cfg.core_config();
    core_cfg.listeners = bound.iter().map(|l| (l.transport, l.addr)).collect();
    // Nodes share limits only through a shared store.
    core_cfg.cluster_limits = store.backend() == "postgres";
    let mut core = Core::new(
        core_cfg,
        Arc::new(routing),
        metrics.clone(),
        clock,
        rand::random(),
    );
    core.load_registrations(store.list_registrations(unix_ms_now()).await?);
    Ok(core)
}

/// Joins the cluster and takes over from the previous run: the daemon,
/// ready for its loop.
async fn start_serving(
    cfg: &Config,
    shared: &Shared,
    mut core: Core,
    out: Edges,
    metrics: Metrics,
    bound: Vec<Listener>,
    writers: Writers,
) -> Result<Daemon, DaemonError> {
    cluster::start(
        cfg,
        &shared.store,
        &metrics,
        &shared.readiness,
        &shared.drain,
    )
    .await?;
    resume::take_over(cfg, shared.store.as_ref(), &mut core, &out).await?;
    Ok(Daemon {
        core,
        out,
        readiness: shared.readiness.clone(),
        metrics,
        drain: Drain::new(Duration::from_secs(cfg.sip.drain_timeout_secs)),
        bound,
        writers,
    })
}
