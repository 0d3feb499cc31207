//! The media engine: its workers, and the XDP fast path under it when
//! the host allows (`media_userspace::xdp_host`).

use super::DaemonError;
use crate::config::Config;
use media_userspace::control::MediaEvent;
use media_userspace::engine::{EngineConfig, MediaEngine};
use media_userspace::offload::XdpPath;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The running engine, its events, and the XDP path when attached (the
/// SIP guard uses it too).
pub(super) struct Media {
    pub engine: MediaEngine,
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
    pub xdp: Option<Arc<XdpPath>>,
}

/// Starts the engine with its counters registered; AI streams connect
/// only where `targets` allows.
pub(super) fn start(
    cfg: &Config,
    registry: &prometheus::Registry,
    targets: &api::targets::TargetPolicy,
) -> Result<Media, DaemonError> {
    let (media_tx, events) = mpsc::unbounded_channel();
    let workers = if cfg.media.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        cfg.media.workers
    };
    let xdp = setup_offload(cfg)?;
    let stream_targets = targets.clone();
    let engine = MediaEngine::start(
        EngineConfig {
            bind_ip: cfg.media.bind_ip,
            port_min: cfg.media.port_min,
            port_max: cfg.media.port_max,
            workers,
            prefer_io_uring: cfg.media.io_uring,
            xdp: xdp.clone(),
            connect_guard: Some(media_userspace::aistream::client::ConnectGuard(Arc::new(
                move |ip| stream_targets.check_ip(ip).map_err(Into::into),
            ))),
        },
        media_tx,
    )?;
    engine.stats().xdp_attached.store(
        u64::from(xdp.is_some()),
        std::sync::atomic::Ordering::Relaxed,
    );
    tracing::info!(
        backend = engine.backend().label(),
        workers,
        "media engine started"
    );
    crate::metrics::register_media(registry, engine.stats().clone())?;
    crate::metrics::register_streams(registry, engine.stream_stats().clone())?;
    Ok(Media {
        engine,
        events,
        xdp,
    })
}

/// The XDP fast path per `media.xdp` (`media_userspace::xdp_host`): "off"
/// skips it, "on" fails start-up when it cannot attach, "auto" falls back
/// to the userspace relay with one warning (and `gateway_xdp_attached` 0).
fn setup_offload(cfg: &Config) -> Result<Option<Arc<XdpPath>>, DaemonError> {
    use media_userspace::xdp_host::{HostSetup, Outcome, setup};
    let local_ip = if cfg.media.bind_ip.is_unspecified() {
        cfg.advertised_ip()
    } else {
        cfg.media.bind_ip
    };
    let host = HostSetup {
        setting: cfg.media.xdp,
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
