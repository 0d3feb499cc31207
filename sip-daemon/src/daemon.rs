//! The daemon's event loop: the only place where the sans-IO core meets
//! sockets, the clock, the media workers and the store.

use crate::admission::{Rate, SourceAdmission};
use crate::config::{Config, Listener};
use crate::core::registrar::RegistrationChange;
use crate::core::{Core, Output, WallClock};
use crate::kernel_guard::KernelGuard;
use crate::metrics::Metrics;
use crate::routing::RoutingTable;
use crate::transport::{Inbound, Queues, TransportConfig, Transports};
use api::cdr::{CdrMetrics, CdrQueue, CdrWriterConfig, spawn_writer};
use api::store::Store;
use media_userspace::engine::{EngineConfig, MediaEngine};
use media_userspace::offload::XdpPath;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("store: {0}")]
    Store(#[from] api::store::StoreError),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("media: {0}")]
    Media(#[from] media_userspace::engine::EngineError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("config: {0}")]
    Config(String),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("sip.tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// `media.xdp = "on"` on a host that cannot attach the program.
    #[error("config: {0}")]
    Xdp(media_userspace::xdp_host::RequiredUnavailable),
}

/// Messages waiting for the core; beyond this, datagrams are dropped and
/// counted (UDP senders retransmit).
const INBOUND_QUEUE: usize = 32_768;
/// Messages handled per wake-up before timers and other events get a turn.
const INBOUND_BATCH: usize = 256;
/// How often the routing table is re-read from the store, so rows changed
/// by another node or the API take effect without a restart.
const ROUTING_RELOAD: Duration = Duration::from_secs(10);
/// After the drain timeout hangs up the remaining calls, how long their
/// BYE transactions may take.
const BYE_GRACE: Duration = Duration::from_secs(5);
/// How often a drain checks on the store and the calls it waits for.
const DRAIN_POLL: Duration = Duration::from_millis(100);

pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes the config file's rows into the store (the store stays the
/// source of truth: rows created elsewhere are kept).
pub async fn provision(store: &dyn Store, cfg: &Config) -> Result<(), DaemonError> {
    let p = cfg.provisioning();
    for a in &p.accounts {
        store.upsert_account(a).await?;
    }
    for t in &p.trunks {
        store.upsert_trunk(t).await?;
    }
    for n in &p.numbers {
        // The operator's file moves a number another account held.
        if !store.upsert_number(n).await? {
            tracing::warn!(number = %n.pattern, account = %n.account_id, "config moves this number from another account");
            store.delete_number(&n.pattern).await?;
            store.upsert_number(n).await?;
        }
    }
    for b in &p.blocked {
        store.upsert_blocked(b).await?;
    }
    for u in &p.sip_users {
        if !store.upsert_sip_user(u).await? {
            tracing::warn!(user = %u.username, account = %u.account_id, "config moves this SIP user from another account");
            store.delete_sip_user(&u.username).await?;
            store.upsert_sip_user(u).await?;
        }
    }
    Ok(())
}

pub async fn load_routing(store: &dyn Store) -> Result<(RoutingTable, Vec<String>), DaemonError> {
    let (mut table, mut problems) = RoutingTable::build(
        store.list_trunks().await?,
        store.list_numbers().await?,
        store.list_blocked().await?,
        store.list_sip_users().await?,
    );
    problems.extend(table.set_denied(store.list_denied_sources().await?, unix_ms_now()));
    Ok((table, problems))
}

/// What a running daemon reports once it is listening (tests use it).
#[derive(Clone, Debug)]
pub struct Started {
    pub listeners: Vec<Listener>,
}

/// Runs until SIGTERM/SIGINT (or `shutdown` fires) and the drain ends.
pub async fn run(
    cfg: Config,
    registry: prometheus::Registry,
    started: Option<tokio::sync::oneshot::Sender<Started>>,
    mut shutdown: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let url = cfg.store_url();
    let store = api::store::open(&url).await?;
    tracing::info!(backend = store.backend(), "store opened");
    provision(store.as_ref(), &cfg).await?;
    let changed = Arc::new(tokio::sync::Notify::new());
    let (control, mut control_rx) = api::control::CallControl::channel();
    let readiness = api::http::Readiness::default();
    // Drain requests over REST (`POST /v1/nodes/{id}/drain`), from this
    // node's API at once or from the store on a heartbeat.
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    let node_id = cfg.node_id();
    if let Some(addr) = cfg.api.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| DaemonError::Config(format!("api.listen {addr}: {e}")))?;
        let cluster = api::v1::nodes::Cluster::new(
            node_id.clone(),
            Duration::from_secs(cfg.cluster.lease_secs),
            Some(drain_tx.clone()),
        )
        .map_err(|e| DaemonError::Config(format!("cluster client: {e}")))?;
        let rest = rest_state(
            &cfg,
            store.clone(),
            &registry,
            changed.clone(),
            control,
            cluster,
        )?;
        let edge = api::http::Edge {
            request_timeout: Duration::from_millis(cfg.api.request_timeout_ms.max(1)),
            max_concurrent_requests: cfg.api.max_concurrent_requests.max(1),
            trusted_proxies: cfg.api.trusted_proxies.clone(),
            metrics_token: cfg.api.metrics_token.clone(),
        };
        let router = api::http::router(registry.clone(), readiness.clone(), rest, &edge);
        tokio::spawn(async move {
            if let Err(e) = api::http::serve(listener, router).await {
                tracing::error!(%addr, error = %e, "HTTP listener failed");
            }
        });
    }
    let (routing, problems) = load_routing(store.as_ref()).await?;
    for p in &problems {
        tracing::warn!(problem = %p, "skipped store row");
    }
    tracing::info!(numbers = routing.number_count(), "routing loaded");

    let metrics = Metrics::new(registry.clone());
    let cdr_metrics = CdrMetrics::register(&registry)?;
    let queue = CdrQueue::new(cfg.store.cdr_queue_capacity);
    let writer = spawn_writer(
        store.clone(),
        queue.clone(),
        CdrWriterConfig::default(),
        cdr_metrics.clone(),
    );

    let (media_tx, mut media_rx) = mpsc::unbounded_channel();
    let workers = if cfg.media.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        cfg.media.workers
    };
    let xdp = setup_offload(&cfg)?;
    let xdp_attached = xdp.is_some();
    let guard_path = xdp.clone();
    let targets = api::targets::TargetPolicy::new(cfg.api.allowed_target_networks.clone());
    let stream_targets = targets.clone();
    let engine = MediaEngine::start(
        EngineConfig {
            bind_ip: cfg.media.bind_ip,
            port_min: cfg.media.port_min,
            port_max: cfg.media.port_max,
            workers,
            prefer_io_uring: cfg.media.io_uring,
            xdp,
            connect_guard: Some(media_userspace::aistream::client::ConnectGuard(Arc::new(
                move |ip| stream_targets.check_ip(ip).map_err(|e| e.to_string()),
            ))),
        },
        media_tx,
    )?;
    engine.stats().xdp_attached.store(
        u64::from(xdp_attached),
        std::sync::atomic::Ordering::Relaxed,
    );
    tracing::info!(
        backend = engine.backend().label(),
        workers,
        "media engine started"
    );
    crate::metrics::register_media(&registry, engine.stats().clone())?;
    crate::metrics::register_streams(&registry, engine.stream_stats().clone())?;

    let listeners = cfg.listeners().map_err(DaemonError::Config)?;
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let (trunk_tx, mut trunk_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let (failed_tx, mut failed_rx) = mpsc::channel::<crate::sip::transport::Peer>(1024);
    let source_rate = (cfg.sip.source_requests_per_sec > 0)
        .then(|| Rate::with_double_burst(cfg.sip.source_requests_per_sec));
    let mut admission = SourceAdmission::new(source_rate, cfg.sip.source_table_size);
    admission.set_routing(&routing, Instant::now(), unix_ms_now());
    let tls_cert = start_tls_reloader(&cfg)?;
    let (transports, bound) = Transports::bind(
        &listeners,
        TransportConfig {
            max_message_size: cfg.sip.max_message_size,
            tcp_idle_timeout: Duration::from_secs(cfg.sip.tcp_idle_timeout_secs.max(1)),
            max_tcp_connections: cfg.sip.max_tcp_connections,
            max_tcp_connections_per_source: cfg.sip.max_tcp_connections_per_source.max(1),
            tcp_message_timeout: Duration::from_secs(cfg.sip.tcp_message_timeout_secs.max(1)),
            tls_cert,
        },
        Queues {
            trunk: trunk_tx,
            other: in_tx,
            failed: failed_tx,
        },
        admission,
        metrics.clone(),
    )
    .await?;
    // The TLS client side's trunk settings (admission has them already).
    transports.set_trunks(&routing);
    for l in &bound {
        tracing::info!(transport = l.transport.label(), addr = %l.addr, "SIP listening");
    }
    let kernel_guard = start_kernel_guard(&cfg, guard_path, &bound, &routing, &registry)?;

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

    // Registration changes are written behind, like CDRs, but are small
    // and rare: a plain task with retries.
    let (reg_tx, reg_rx) = mpsc::unbounded_channel::<RegistrationChange>();
    let reg_writer = tokio::spawn(registration_writer(store.clone(), reg_rx, node_id.clone()));
    // Registrations other nodes take reach this one at once: a phone
    // registered anywhere is reachable through every node.
    let (remote_reg_tx, mut remote_reg_rx) = mpsc::unbounded_channel::<RemoteRegistrations>();
    if store.backend() == "postgres" {
        tokio::spawn(follow_registrations(
            url.clone(),
            store.clone(),
            node_id.clone(),
            remote_reg_tx,
        ));
    }

    if store.backend() == "postgres" {
        // Several nodes may share this database: follow their changes.
        tokio::spawn(api::store::postgres::follow_changes(
            url.clone(),
            changed.clone(),
        ));
    }
    if cfg.webhooks.secret.as_deref().is_none_or(str::is_empty) {
        tracing::warn!("webhooks.secret is unset: webhook requests are not signed");
    }
    let (voice_tx, mut voice_rx) = mpsc::unbounded_channel::<VoiceAnswerFor>();
    let sender = api::webhook::WebhookSender::new(cfg.webhooks.secret.clone(), targets, &registry)?;
    let (sms_tx, sms_rx) = mpsc::unbounded_channel::<SmsWrite>();
    tokio::spawn(sms_writer(store.clone(), sender.clone(), sms_rx));
    let (capacity_tx, mut capacity_rx) = mpsc::unbounded_channel::<CapacityAnswer>();
    let hooks = Hooks {
        kernel_guard: kernel_guard.clone(),
        sender: sender.clone(),
        sms: sms_tx,
        voice_tx,
        voice_timeout: Duration::from_millis(cfg.webhooks.voice_timeout_ms.max(1)),
        capacity: CapacityEdge {
            store: store.clone(),
            node: node_id.clone(),
            answers: capacity_tx,
            metrics: metrics.clone(),
        },
    };
    let (routing_tx, mut routing_rx) = mpsc::channel::<RoutingTable>(1);
    tokio::spawn(routing_reloader(
        store.clone(),
        routing_tx,
        changed,
        cdr_metrics.clone(),
    ));

    let this_node = api::store::NodeRecord {
        id: node_id.clone(),
        api_address: cfg.cluster_api_address(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: unix_ms_now(),
        heartbeat_at: unix_ms_now(),
        calls_active: 0,
        draining: false,
        drain_requested: false,
    };
    // Recorded before any call: a stale heartbeat left by the previous run
    // must not get this run's calls closed by a peer.
    store.register_node(&this_node).await?;
    tokio::spawn(node_heartbeat(
        store.clone(),
        this_node,
        cfg.cluster.clone(),
        metrics.clone(),
        readiness.clone(),
        drain_tx.clone(),
    ));
    resume_calls(&cfg, store.as_ref(), &mut core).await?;
    flush(&mut core, &transports, &engine, &queue, &reg_tx, &hooks);
    close_store_leftovers(&cfg, store.as_ref(), &engine).await?;
    // Slots a previous run of this node held for calls that did not
    // survive it (resumable calls keep theirs).
    match store.release_stale_capacity(Some(&node_id)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(slots = n, "released the call-limit slots of calls gone"),
        Err(e) => tracing::warn!(error = %e, "stale call-limit slots not released"),
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Signal)?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(DaemonError::Signal)?;
    let mut sigusr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
        .map_err(DaemonError::Signal)?;

    if let Some(s) = started {
        let _ = s.send(Started {
            listeners: bound.clone(),
        });
    }

    readiness.set(api::http::NodeState::Ready);
    let drain_timeout = Duration::from_secs(cfg.sip.drain_timeout_secs);
    let mut drain_deadline: Option<Instant> = None;
    let mut hung_up_at: Option<Instant> = None;
    loop {
        let wake = core
            .poll_timeout()
            .into_iter()
            .chain(drain_deadline)
            // While draining, the store's progress is polled too.
            .chain(drain_deadline.map(|_| Instant::now() + DRAIN_POLL))
            .chain(hung_up_at.map(|t| t + BYE_GRACE))
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = sigterm.recv() => begin_drain(&mut core, &mut drain_deadline, drain_timeout, "SIGTERM"),
            _ = sigint.recv() => begin_drain(&mut core, &mut drain_deadline, drain_timeout, "SIGINT"),
            _ = sigusr2.recv() => {
                // A restart that keeps the bridged calls: the next run
                // takes them back from the store (and the kernel). With
                // the store behind, their snapshots might never land:
                // then it is an ordinary drain.
                if queue.is_saturated() {
                    tracing::warn!("SIGUSR2: the store is behind; draining without handing calls over");
                } else {
                    let kept = core.hand_over(Instant::now());
                    tracing::info!(calls = kept, "SIGUSR2: handing bridged calls over to the next run");
                }
                begin_drain(&mut core, &mut drain_deadline, drain_timeout, "SIGUSR2");
            }
            _ = shutdown.recv() => begin_drain(&mut core, &mut drain_deadline, drain_timeout, "shutdown request"),
            Some(remote) = remote_reg_rx.recv() => match remote {
                RemoteRegistrations::Change(change) => core.apply_registration_change(change),
                RemoteRegistrations::All(regs) => core.merge_remote_registrations(regs),
            },
            Some((call, sid, granted)) = capacity_rx.recv() => core.handle_capacity(Instant::now(), call, &sid, granted),
            Some(()) = drain_rx.recv() => {
                // Taken out of service, not stopped: the node refuses new
                // calls and keeps serving its own until a signal stops it
                // (a restart clears the request).
                if !core.is_draining() {
                    tracing::info!(calls = core.active_calls(), "drain requested over REST: refusing new calls");
                    core.start_drain();
                }
            }
            Some(ev) = media_rx.recv() => core.handle_media(Instant::now(), ev),
            // Trunk traffic first: a flood from elsewhere waits behind it.
            Some(inb) = trunk_rx.recv() => {
                let now = Instant::now();
                core.handle_inbound(now, inb.peer, inb.msg);
                drain_inbound(&mut trunk_rx, &mut in_rx, |inb| {
                    core.handle_inbound(now, inb.peer, inb.msg);
                    flush(&mut core, &transports, &engine, &queue, &reg_tx, &hooks);
                });
            }
            Some(inb) = in_rx.recv() => {
                let now = Instant::now();
                core.handle_inbound(now, inb.peer, inb.msg);
                drain_inbound(&mut trunk_rx, &mut in_rx, |inb| {
                    core.handle_inbound(now, inb.peer, inb.msg);
                    flush(&mut core, &transports, &engine, &queue, &reg_tx, &hooks);
                });
            }
            Some(table) = routing_rx.recv() => {
                transports.set_trunks(&table);
                if let Some(g) = &kernel_guard {
                    let mut g = g.lock().unwrap_or_else(|p| p.into_inner());
                    g.set_trunks(&table);
                    g.set_denied(&table, Instant::now(), unix_ms_now());
                }
                core.set_routing(Arc::new(table));
            }
            Some(req) = control_rx.recv() => core.handle_control(Instant::now(), req),
            Some(peer) = failed_rx.recv() => core.handle_transport_failure(Instant::now(), peer),
            Some((call, answer)) = voice_rx.recv() => core.handle_voice_answer(Instant::now(), call, answer),
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        let now = Instant::now();
        core.handle_timeout(now);
        flush(&mut core, &transports, &engine, &queue, &reg_tx, &hooks);
        core.set_cdr_saturated(queue.is_saturated());
        metrics.calls_active.set(core.active_calls() as i64);
        readiness.set(if core.is_draining() {
            api::http::NodeState::Draining
        } else if queue.is_saturated() {
            api::http::NodeState::StoreBacklog
        } else {
            api::http::NodeState::Ready
        });

        if let Some(deadline) = drain_deadline {
            // Server transactions merely absorbing retransmissions (Timer
            // J/K) do not hold the process; our own BYEs do.
            // Calls handed over are safe once their snapshots are stored.
            let stored = !core.is_handing_over() || queue.unwritten() == 0;
            if core.calls_to_drain() == 0 && core.pending_requests() == 0 && stored {
                break;
            }
            if hung_up_at.is_none() && now >= deadline {
                tracing::warn!(
                    calls = core.calls_to_drain(),
                    "drain timeout: hanging up remaining calls"
                );
                if stored {
                    core.hangup_drained(now, "shutdown");
                } else {
                    tracing::error!(
                        events = queue.unwritten(),
                        "the store did not take the snapshots in time: hanging up the calls handed over too"
                    );
                    core.hangup_all(now, "shutdown");
                }
                hung_up_at = Some(now);
                flush(&mut core, &transports, &engine, &queue, &reg_tx, &hooks);
            }
            if hung_up_at.is_some_and(|t| now >= t + BYE_GRACE) {
                break;
            }
        }
    }
    flush(&mut core, &transports, &engine, &queue, &reg_tx, &hooks);
    // Registration changes already decided are written before exit.
    drop(reg_tx);
    if tokio::time::timeout(Duration::from_secs(5), reg_writer)
        .await
        .is_err()
    {
        tracing::warn!("registration changes not all stored: the store is unreachable");
    }
    let unwritten = writer.shutdown(Duration::from_secs(10)).await;
    if unwritten > 0 {
        tracing::error!(
            events = unwritten,
            "call records not written: the store is unreachable"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// The XDP fast path per `media.xdp` (`media_userspace::xdp_host`): "off"
/// skips it, "on" fails start-up when it cannot attach, "auto" falls back
/// to the userspace relay with one warning (and `gateway_xdp_attached` 0).
fn setup_offload(cfg: &Config) -> Result<Option<Arc<XdpPath>>, DaemonError> {
    use media_userspace::xdp_host::{HostSetup, Outcome, XdpSetting, setup};
    let setting = match cfg.media.xdp.as_str() {
        "on" => XdpSetting::On,
        "off" => XdpSetting::Off,
        _ => XdpSetting::Auto,
    };
    let local_ip = if cfg.media.bind_ip.is_unspecified() {
        cfg.advertised_ip()
    } else {
        cfg.media.bind_ip
    };
    let host = HostSetup {
        setting,
        bind_ip: cfg.media.bind_ip,
        interfaces: cfg.media.xdp_interfaces.clone(),
        extra_interfaces: if cfg.sip.xdp_guard {
            cfg.sip.xdp_guard_interfaces.clone()
        } else {
            Vec::new()
        },
        pin_dir: (!cfg.media.xdp_pin_dir.is_empty()).then(|| PathBuf::from(&cfg.media.xdp_pin_dir)),
        local_ip,
        zero_udp_checksum: cfg.media.xdp_zero_udp_checksum,
    };
    match setup(&host).map_err(DaemonError::Xdp)? {
        Outcome::Attached(path) => Ok(Some(path)),
        Outcome::Off | Outcome::Unavailable(_) => Ok(None),
    }
}

/// Loads the TLS listeners' certificate when one is configured, and keeps
/// it current: read again when its files change (polled) and on SIGHUP.
/// A pair that does not load is logged and the old one stays in use.
fn start_tls_reloader(cfg: &Config) -> Result<Option<Arc<crate::tls::ServerCert>>, DaemonError> {
    let (Some(cert), Some(key)) = (&cfg.sip.tls.cert_file, &cfg.sip.tls.key_file) else {
        return Ok(None);
    };
    let sc = Arc::new(crate::tls::ServerCert::load(cert.clone(), key.clone())?);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(DaemonError::Signal)?;
    let every = Duration::from_secs(cfg.sip.tls.reload_interval_secs.max(1));
    let s = sc.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                _ = hup.recv() => true,
            };
            match s.reload(forced) {
                Ok(true) => tracing::info!("sip.tls: certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sip.tls: new certificate refused; the old one stays")
                }
            }
        }
    });
    Ok(Some(sc))
}

/// Turns the XDP SIP guard on when asked for and the program is attached:
/// trunks trusted, its counters registered, lockouts lifted on time.
fn start_kernel_guard(
    cfg: &Config,
    path: Option<Arc<XdpPath>>,
    bound: &[Listener],
    routing: &RoutingTable,
    registry: &prometheus::Registry,
) -> Result<Option<Arc<std::sync::Mutex<KernelGuard>>>, DaemonError> {
    if !cfg.sip.xdp_guard {
        return Ok(None);
    }
    let Some(path) = path else {
        tracing::warn!(
            "sip.xdp_guard: the XDP program is not attached (media.xdp); SIP is metered in userspace only"
        );
        return Ok(None);
    };
    let Some(port) = bound
        .iter()
        .find(|l| l.transport == crate::sip::transport::TransportKind::Udp)
        .map(|l| l.addr.port())
    else {
        tracing::warn!("sip.xdp_guard: no UDP listener to guard");
        return Ok(None);
    };
    let Some(mut guard) = KernelGuard::enable(
        path.clone(),
        port,
        cfg.sip.xdp_guard_rate_per_sec,
        cfg.sip.xdp_guard_burst,
    ) else {
        return Ok(None);
    };
    guard.set_trunks(routing);
    guard.set_denied(routing, Instant::now(), unix_ms_now());
    crate::metrics::register_sip_guard(registry, path)?;
    let guard = Arc::new(std::sync::Mutex::new(guard));
    let g = guard.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            g.lock()
                .unwrap_or_else(|p| p.into_inner())
                .expire(Instant::now());
        }
    });
    Ok(Some(guard))
}

fn begin_drain(core: &mut Core, deadline: &mut Option<Instant>, timeout: Duration, why: &str) {
    if deadline.is_none() {
        tracing::info!(
            signal = why,
            calls = core.active_calls(),
            timeout_secs = timeout.as_secs(),
            "draining: refusing new calls"
        );
        core.start_drain();
        *deadline = Some(Instant::now() + timeout);
    }
}

/// The webhook edge: the sender and where voice answers go back to the
/// core's loop.
struct Hooks {
    /// The XDP SIP guard, when on: lockouts go to its deny set.
    kernel_guard: Option<Arc<std::sync::Mutex<KernelGuard>>>,
    sender: api::webhook::WebhookSender,
    /// SMS rows, written in order by one task (a status never overtakes
    /// its row).
    sms: mpsc::UnboundedSender<SmsWrite>,
    voice_tx: mpsc::UnboundedSender<VoiceAnswerFor>,
    voice_timeout: Duration,
    capacity: CapacityEdge,
}

/// Longest wait for a call-limit reservation.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// (call, its sid, the store's answer) for [`Core::handle_capacity`].
type CapacityAnswer = (u64, String, Result<bool, String>);

/// Cluster-wide call limits at the edge: reservations in the store.
struct CapacityEdge {
    store: Arc<dyn Store>,
    node: String,
    answers: mpsc::UnboundedSender<CapacityAnswer>,
    metrics: Metrics,
}

impl CapacityEdge {
    fn reserve(&self, call: u64, sid: String, scopes: Vec<(String, u32)>) {
        let (store, node, tx, metrics) = (
            self.store.clone(),
            self.node.clone(),
            self.answers.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            // Bounded: a store that stalls admits within the node's own
            // count rather than leaving the INVITE without an answer.
            let granted = match tokio::time::timeout(
                RESERVE_TIMEOUT,
                store.reserve_capacity(&sid, &node, &scopes, unix_ms_now()),
            )
            .await
            {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("the store took too long".to_string()),
            };
            metrics
                .capacity_seconds
                .observe(started.elapsed().as_secs_f64());
            let outcome = match &granted {
                Ok(true) => "granted",
                Ok(false) => "refused",
                Err(_) => "error",
            };
            metrics.capacity_checks.with_label_values(&[outcome]).inc();
            let _ = tx.send((call, sid, granted));
        });
    }

    fn release(&self, sid: String) {
        let store = self.store.clone();
        tokio::spawn(async move {
            // A release that fails is retried once; what is left is
            // released with the call's closed record (each heartbeat).
            for _ in 0..2 {
                match store.release_capacity(&sid).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(call = %sid, error = %e, "call-limit slots not released yet");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }
}

type VoiceAnswerFor = (u64, Result<api::webhook::VoiceAnswer, String>);

/// Takes back the bridged calls a previous run of this node left: their
/// dialogs answer again and their relays are adopted when `flush` runs
/// the core's commands (in the kernel without a gap when pinned).
/// Snapshots that cannot be restored are withdrawn at once, so that
/// [`close_store_leftovers`] closes their calls.
async fn resume_calls(cfg: &Config, store: &dyn Store, core: &mut Core) -> Result<(), DaemonError> {
    let node = cfg.node_id();
    let calls = store.list_resumable_calls(&node).await?;
    let listed = calls.len();
    let failed = core.restore(Instant::now(), calls);
    let mut withdrawn = Vec::with_capacity(failed.len());
    for (id, why) in failed {
        tracing::warn!(call = %id, error = %why, "call not restored");
        withdrawn.push(api::store::CdrEvent::NotResumable { id });
    }
    store.apply_cdr_batch(&withdrawn).await?;
    if listed > 0 {
        tracing::info!(
            node = %node,
            restored = listed - withdrawn.len(),
            failed = withdrawn.len(),
            "resumed bridged calls of the previous run"
        );
    }
    Ok(())
}

/// After [`resume_calls`] and the adoption of their relays: removes the
/// kernel rules no call adopted and closes every other call left open as
/// `interrupted`.
async fn close_store_leftovers(
    cfg: &Config,
    store: &dyn Store,
    engine: &MediaEngine,
) -> Result<(), DaemonError> {
    engine.release_inherited();
    let closed = store
        .close_interrupted_calls(unix_ms_now(), &cfg.node_id())
        .await?;
    if closed > 0 {
        tracing::warn!(
            calls = closed,
            "closed calls left open by a previous run as interrupted"
        );
    }
    Ok(())
}

/// Handles what is already queued before the next poll (one wake-up per
/// burst, not per message), at most a batch: trunk messages first, but
/// every [`OTHER_TURN`]th turn goes to the other queue first, so a flood
/// that passes for a trunk (a spoofed carrier address) cannot starve the
/// registered phones either.
fn drain_inbound(
    trunk_rx: &mut mpsc::Receiver<Inbound>,
    in_rx: &mut mpsc::Receiver<Inbound>,
    mut handle: impl FnMut(Inbound),
) {
    for turn in 0..INBOUND_BATCH {
        let next = if turn % OTHER_TURN == OTHER_TURN - 1 {
            in_rx.try_recv().or_else(|_| trunk_rx.try_recv())
        } else {
            trunk_rx.try_recv().or_else(|_| in_rx.try_recv())
        };
        let Ok(inb) = next else {
            break;
        };
        handle(inb);
    }
}

/// One turn in this many serves the non-trunk queue first.
const OTHER_TURN: usize = 8;

fn flush(
    core: &mut Core,
    transports: &Transports,
    engine: &MediaEngine,
    queue: &CdrQueue,
    reg_tx: &mpsc::UnboundedSender<RegistrationChange>,
    hooks: &Hooks,
) {
    while let Some(out) = core.poll_output() {
        match out {
            Output::Transmit(t) => transports.send(t),
            Output::Media(cmd) => {
                // Opening a leg answers at once; feeding the answer back
                // here lets the 200 OK leave in the same turn.
                if let Some(ev) = engine.command(cmd) {
                    core.handle_media(Instant::now(), ev);
                }
            }
            Output::Cdr(ev) => queue.push(ev),
            Output::Registration(change) => {
                let _ = reg_tx.send(change);
            }
            Output::VoiceWebhook { call, url, request } => {
                let sender = hooks.sender.clone();
                let tx = hooks.voice_tx.clone();
                let timeout = hooks.voice_timeout;
                tokio::spawn(async move {
                    let answer = sender
                        .ask_voice(&url, &request, timeout)
                        .await
                        .map_err(|e| e.to_string());
                    let _ = tx.send((call, answer));
                });
            }
            Output::StatusWebhook { url, event } => hooks.sender.deliver_status(url, event),
            Output::SmsReceived { record, webhook } => {
                let _ = hooks.sms.send(SmsWrite::Insert(record, webhook));
            }
            Output::SmsQueued(record) => {
                let _ = hooks.sms.send(SmsWrite::Insert(record, None));
            }
            Output::SourceLockedOut { source, secs } => {
                if let Some(g) = &hooks.kernel_guard {
                    g.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .deny(Instant::now(), source, secs);
                }
            }
            Output::SmsStatus { id, status, .. } => {
                let _ = hooks.sms.send(SmsWrite::Status(id, status));
            }
            Output::ReserveCapacity { call, sid, scopes } => {
                hooks.capacity.reserve(call, sid, scopes)
            }
            Output::ReleaseCapacity { sid } => hooks.capacity.release(sid),
        }
    }
}

enum SmsWrite {
    /// Store the row, then POST it to this webhook (an inbound SMS).
    Insert(api::store::MessageRecord, Option<String>),
    Status(String, &'static str),
}

async fn sms_writer(
    store: Arc<dyn Store>,
    sender: api::webhook::WebhookSender,
    mut rx: mpsc::UnboundedReceiver<SmsWrite>,
) {
    while let Some(w) = rx.recv().await {
        let mut wait = Duration::from_millis(100);
        for _ in 0..8 {
            let res = match &w {
                SmsWrite::Insert(r, _) => store.insert_message(r).await,
                SmsWrite::Status(id, status) => {
                    store.update_message_status(id, status).await.map(|_| ())
                }
            };
            match res {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "SMS row not stored yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let SmsWrite::Insert(r, Some(url)) = w {
            sender.deliver_message(url, api::webhook::MessageEvent::received(&r));
        }
    }
}

async fn registration_writer(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<RegistrationChange>,
    node: String,
) {
    while let Some(change) = rx.recv().await {
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            let res = match &change {
                RegistrationChange::Upsert(r) => store.upsert_registration(r).await,
                RegistrationChange::Delete { username, contact } => {
                    store.delete_registration(username, contact).await
                }
            };
            match res {
                Ok(()) => {
                    // Stored first: a node that missed the notice finds
                    // the change at its next full reload.
                    let notice = api::store::RegistrationNotice {
                        node: node.clone(),
                        change: change.clone(),
                    };
                    match store.announce_registration(&notice).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(
                            "registration change too large to announce; other nodes see it at their next reload"
                        ),
                        Err(e) => tracing::warn!(error = %e, "registration change not announced"),
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registration not stored yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// What the registration follower hands the core.
enum RemoteRegistrations {
    /// A change another node announced.
    Change(RegistrationChange),
    /// Every live binding in the store (after the listener (re)connected,
    /// and every [`REGISTRATIONS_RELOAD`]): merged, so nothing announced
    /// while the listener was down stays missing.
    All(Vec<api::store::Registration>),
}

/// A full reload of the bindings, for notices lost while the listener
/// was down or too large to announce.
const REGISTRATIONS_RELOAD: Duration = Duration::from_secs(60);

/// Follows the other nodes' registration changes (PostgreSQL
/// `LISTEN gateway_registrations`), and reloads every binding after each
/// (re)connect and every [`REGISTRATIONS_RELOAD`].
async fn follow_registrations(
    url: String,
    store: Arc<dyn Store>,
    node: String,
    tx: mpsc::UnboundedSender<RemoteRegistrations>,
) {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Option<String>>();
    tokio::spawn(api::store::postgres::follow_channel(
        url,
        api::store::REGISTRATION_CHANNEL,
        raw_tx,
    ));
    let mut reload = tokio::time::interval(REGISTRATIONS_RELOAD);
    reload.tick().await;
    loop {
        let (payload, reconnected) = tokio::select! {
            p = raw_rx.recv() => match p {
                Some(p) => (p.clone(), p.is_none()),
                None => return,
            },
            _ = reload.tick() => (None, false),
        };
        let msg = match payload {
            Some(text) => match serde_json::from_str::<api::store::RegistrationNotice>(&text) {
                Ok(n) if n.node == node => continue,
                Ok(n) => RemoteRegistrations::Change(n.change),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable registration notice; ignored");
                    continue;
                }
            },
            None => match store.list_registrations(unix_ms_now()).await {
                Ok(all) => {
                    if reconnected {
                        tracing::info!(
                            bindings = all.len(),
                            "following the other nodes' registrations"
                        );
                    }
                    RemoteRegistrations::All(all)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registrations not reloaded");
                    continue;
                }
            },
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Refreshes this node's row every `heartbeat_secs` (load, drain state); a
/// drain requested over REST on any node reaches this one here. Then looks
/// at the other nodes: the open calls of one whose heartbeat has not
/// changed for `lease_secs` are closed as `node_lost` ([`PeerWatch`]).
async fn node_heartbeat(
    store: Arc<dyn Store>,
    mut node: api::store::NodeRecord,
    timing: crate::config::ClusterSection,
    metrics: Metrics,
    readiness: api::http::Readiness,
    drain: mpsc::Sender<()>,
) {
    let lease = Duration::from_secs(timing.lease_secs);
    let resume_grace = Duration::from_secs(timing.resume_grace_secs);
    let mut peers = PeerWatch::default();
    let mut tick = tokio::time::interval(Duration::from_secs(timing.heartbeat_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut failing = false;
    loop {
        tick.tick().await;
        node.heartbeat_at = unix_ms_now();
        node.calls_active = metrics.calls_active.get();
        node.draining = readiness.get() == api::http::NodeState::Draining;
        match store.heartbeat_node(&node).await {
            Ok(requested) => {
                if failing {
                    tracing::info!("node heartbeats stored again");
                    failing = false;
                }
                if requested && !node.draining {
                    tracing::info!(node = %node.id, "drain requested over REST");
                    let _ = drain.try_send(());
                }
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "node heartbeat not stored");
                failing = true;
                continue;
            }
            Err(_) => continue,
        }
        close_lost_nodes_calls(
            store.as_ref(),
            &node.id,
            &mut peers,
            (lease, resume_grace),
            &metrics,
        )
        .await;
        // The slots of calls whose record is closed (a lost node's, or a
        // release that did not get through).
        if let Err(e) = store.release_stale_capacity(None).await {
            tracing::debug!(error = %e, "stale call-limit slots not released");
        }
    }
}

/// When this node last saw each peer's heartbeat change, on its own
/// monotonic clock: a peer is lost when its heartbeat stays the same for a
/// lease, whatever the two nodes' wall clocks say.
#[derive(Default)]
struct PeerWatch(std::collections::HashMap<String, (i64, Instant)>);

impl PeerWatch {
    /// How long peer `id`, last heartbeat `heartbeat_at`, has not changed.
    fn unchanged_for(&mut self, id: &str, heartbeat_at: i64, now: Instant) -> Duration {
        let seen = self.0.entry(id.to_string()).or_insert((heartbeat_at, now));
        if seen.0 != heartbeat_at {
            *seen = (heartbeat_at, now);
        }
        now.saturating_duration_since(seen.1)
    }
}

/// The open calls of every other node whose heartbeat stayed the same for
/// `lease` are closed as `node_lost` (their records would otherwise stay
/// open for ever); the calls a node left resumable wait for its return
/// until `resume_grace`, then go too, with its call-limit slots.
async fn close_lost_nodes_calls(
    store: &dyn Store,
    me: &str,
    peers: &mut PeerWatch,
    (lease, resume_grace): (Duration, Duration),
    metrics: &Metrics,
) {
    let Ok(nodes) = store.list_nodes().await else {
        return;
    };
    let now = Instant::now();
    let (mut healthy, mut lapsed) = (1, 0);
    for n in nodes.iter().filter(|n| n.id != me) {
        let quiet = peers.unchanged_for(&n.id, n.heartbeat_at, now);
        if quiet < lease {
            healthy += 1;
            continue;
        }
        lapsed += 1;
        let abandon = quiet >= resume_grace;
        // `heartbeat_at < seen + 1`: still the heartbeat seen lapse.
        let seen = n.heartbeat_at.saturating_add(1);
        match store
            .close_lost_node_calls(unix_ms_now(), &n.id, seen, abandon)
            .await
        {
            Ok(0) => {}
            Ok(closed) => {
                metrics.node_lost_calls.inc_by(closed);
                tracing::warn!(
                    node = %n.id,
                    calls = closed,
                    heartbeat_unchanged_ms = quiet.as_millis() as u64,
                    abandon,
                    "closed the open calls of a node whose heartbeat lapsed (node_lost)"
                );
            }
            Err(e) => {
                tracing::warn!(node = %n.id, error = %e, "could not close a lost node's calls")
            }
        }
    }
    metrics
        .cluster_nodes
        .with_label_values(&["healthy"])
        .set(healthy);
    metrics
        .cluster_nodes
        .with_label_values(&["lapsed"])
        .set(lapsed);
}

async fn routing_reloader(
    store: Arc<dyn Store>,
    tx: mpsc::Sender<RoutingTable>,
    changed: Arc<tokio::sync::Notify>,
    store_health: CdrMetrics,
) {
    let mut tick = tokio::time::interval(ROUTING_RELOAD);
    tick.tick().await;
    loop {
        // A change through this node's API applies at once; other nodes'
        // changes by the next tick.
        tokio::select! {
            _ = tick.tick() => {}
            _ = changed.notified() => tick.reset(),
        }
        match load_routing(store.as_ref()).await {
            Ok((table, _)) => {
                store_health.store_read_ok(true);
                if tx.send(table).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                store_health.store_read_ok(false);
                tracing::warn!(error = %e, "routing reload failed; keeping the current table")
            }
        }
    }
}

/// The REST API's state, when `/v1` is configured (a JWT secret or key).
fn rest_state(
    cfg: &Config,
    store: Arc<dyn Store>,
    registry: &prometheus::Registry,
    changed: Arc<tokio::sync::Notify>,
    control: api::control::CallControl,
    cluster: api::v1::nodes::Cluster,
) -> Result<Option<(api::v1::ApiState, api::v1::ApiMetrics)>, DaemonError> {
    use api::v1::ratelimit::{Limit, RateLimits};
    if !cfg.api.rest_enabled() {
        tracing::info!(
            "REST API off: set api.jwt_secret (or api.jwt_public_key_file) to serve /v1"
        );
        return Ok(None);
    }
    let verifier = cfg.api.verifier().map_err(DaemonError::Config)?;
    let metrics = api::v1::ApiMetrics::register(registry)?;
    let a = &cfg.api;
    let state = api::v1::ApiState(Arc::new(api::v1::Inner {
        store,
        verifier,
        checks: api::v1::Checks {
            realm: cfg.sip.realm.clone(),
            sip_uri_host: |s| {
                crate::sip::Uri::parse(s)
                    .ok()
                    .map(|u| u.host.map(|h| h.to_string()).unwrap_or_default())
            },
            dialect: |d| media_userspace::aistream::Dialect::parse(d).is_some(),
            ha1: |user, realm, password| {
                use crate::sip::digest::{Algorithm, ha1};
                (
                    ha1(Algorithm::Md5, user, realm, password),
                    ha1(Algorithm::Sha256, user, realm, password),
                )
            },
        },
        targets: api::targets::TargetPolicy::new(a.allowed_target_networks.clone()),
        limits: RateLimits::new(
            Limit {
                rate: a.account_rate,
                burst: a.account_burst,
            },
            Limit {
                rate: a.ip_rate,
                burst: a.ip_burst,
            },
        ),
        changed,
        control: Some(control),
        metrics: metrics.clone(),
        cluster,
    }));
    Ok(Some((state, metrics)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transport::{Peer, TransportKind};

    fn inbound(port: u16) -> Inbound {
        Inbound {
            peer: Peer {
                transport: TransportKind::Udp,
                local: "127.0.0.1:5060".parse().unwrap(),
                remote: std::net::SocketAddr::from(([192, 0, 2, 1], port)),
                conn: None,
            },
            msg: Err(crate::sip::parse::ParseError::Drop("test")),
        }
    }

    #[test]
    fn queued_trunk_messages_are_handled_before_the_flood() {
        let (trunk_tx, mut trunk_rx) = mpsc::channel(INBOUND_QUEUE);
        let (in_tx, mut in_rx) = mpsc::channel(INBOUND_QUEUE);
        for i in 0..1000 {
            in_tx.try_send(inbound(10_000 + i)).unwrap();
        }
        for i in 0..3 {
            trunk_tx.try_send(inbound(i)).unwrap();
        }
        let mut order = Vec::new();
        drain_inbound(&mut trunk_rx, &mut in_rx, |inb| {
            order.push(inb.peer.remote.port());
            if order.len() == 10 {
                // One arrives from the trunk mid-batch: it goes next.
                trunk_tx.try_send(inbound(3)).unwrap();
            }
        });
        assert_eq!(order.len(), INBOUND_BATCH, "one batch per wake-up");
        assert_eq!(&order[..3], &[0, 1, 2]);
        assert_eq!(order[10], 3);
        assert!(order[3..10].iter().all(|p| *p >= 10_000));
    }

    #[test]
    fn a_flood_through_the_trunk_queue_leaves_the_others_their_share() {
        let (trunk_tx, mut trunk_rx) = mpsc::channel(INBOUND_QUEUE);
        let (in_tx, mut in_rx) = mpsc::channel(INBOUND_QUEUE);
        for i in 0..1000 {
            trunk_tx.try_send(inbound(i)).unwrap();
            in_tx.try_send(inbound(10_000 + i)).unwrap();
        }
        let mut others = 0;
        drain_inbound(&mut trunk_rx, &mut in_rx, |inb| {
            if inb.peer.remote.port() >= 10_000 {
                others += 1;
            }
        });
        assert_eq!(others, INBOUND_BATCH / OTHER_TURN);
    }
}
