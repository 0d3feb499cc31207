//! SIP ingress: the listeners with their per-source admission and TLS
//! certificate, and the XDP SIP guard in front of the UDP one.

use super::inbound::INBOUND_QUEUE;
use super::{DaemonError, unix_ms_now};
use crate::admission::{Rate, SourceAdmission};
use crate::config::{Config, Listener};
use crate::kernel_guard::KernelGuard;
use crate::routing::RoutingTable;
use crate::sip::transport::Peer;
use crate::transport::{Inbound, Queues, TransportConfig, Transports};
use media_userspace::offload::XdpPath;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The bound listeners and what arrives on them.
pub(super) struct Sip {
    pub transports: Transports,
    pub bound: Vec<Listener>,
    pub queues: SipQueues,
}

/// Messages from the transports, trunks' apart, and the peers whose
/// connection failed.
pub(super) struct SipQueues {
    pub trunk: mpsc::Receiver<Inbound>,
    pub other: mpsc::Receiver<Inbound>,
    pub failed: mpsc::Receiver<Peer>,
}

/// Binds every `sip.listen` listener, with the per-source limit and the
/// trunks of `routing`.
pub(super) async fn bind(
    cfg: &Config,
    routing: &RoutingTable,
    metrics: &crate::metrics::Metrics,
) -> Result<Sip, DaemonError> {
    let listeners = cfg.listeners().map_err(DaemonError::Listen)?;
    let (in_tx, other) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let (trunk_tx, trunk) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let (failed_tx, failed) = mpsc::channel::<Peer>(1024);
    let source_rate = (cfg.sip.source_requests_per_sec > 0)
        .then(|| Rate::with_double_burst(cfg.sip.source_requests_per_sec));
    let mut admission = SourceAdmission::new(source_rate, cfg.sip.source_table_size);
    admission.set_routing(routing, Instant::now(), unix_ms_now());
    let tls_cert = start_tls_reloader(cfg)?;
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
    transports.set_trunks(routing);
    for l in &bound {
        tracing::info!(transport = l.transport.label(), addr = %l.addr, "SIP listening");
    }
    Ok(Sip {
        transports,
        bound,
        queues: SipQueues {
            trunk,
            other,
            failed,
        },
    })
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
pub(super) fn start_kernel_guard(
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
