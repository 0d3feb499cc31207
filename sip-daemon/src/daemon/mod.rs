//! The daemon's shell: the only place where the sans-IO core meets
//! sockets, the clock, the media workers and the store. [`run`] wires the
//! edges up ([`wiring`]) and hands them to the event loop
//! ([`event_loop`]); each edge lives in its own file.

mod api_server;
mod capacity;
mod cluster;
mod control;
mod drain;
mod event_loop;
mod hooks;
mod inbound;
mod listeners;
mod media;
mod outputs;
mod registrations;
mod resume;
mod store_sync;
mod wiring;

pub use store_sync::{load_routing, provision};

use crate::config::{Config, Listener};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

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
    Listen(crate::config::ListenError),
    #[error("config: {0}")]
    Verifier(crate::config::VerifierError),
    #[error("config: api.listen {addr}: {error}")]
    ApiListen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("config: cluster client: {0}")]
    ClusterClient(api::v1::nodes::PeerClientError),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("sip.tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// `media.xdp = "on"` on a host that cannot attach the program.
    #[error("config: {0}")]
    Xdp(media_userspace::xdp_host::RequiredUnavailable),
}

pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
    started: Option<oneshot::Sender<Started>>,
    shutdown: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let (daemon, inputs) = wiring::wire(&cfg, &registry, shutdown).await?;
    if let Some(s) = started {
        let _ = s.send(Started {
            listeners: daemon.bound.clone(),
        });
    }
    daemon.serve(inputs).await;
    Ok(())
}
