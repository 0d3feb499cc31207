//! This node among the nodes sharing the store: its row and heartbeat, a
//! drain requested over REST on any node, and the calls of nodes lost.

use super::{DaemonError, unix_ms_now};
use crate::config::Config;
use crate::metrics::Metrics;
use api::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Records this node and starts its heartbeat.
pub(super) async fn start(
    cfg: &Config,
    store: &Arc<dyn Store>,
    metrics: &Metrics,
    readiness: &api::http::Readiness,
    drain: &mpsc::Sender<()>,
) -> Result<(), DaemonError> {
    let this_node = api::store::NodeRecord {
        id: cfg.node_id(),
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
        drain.clone(),
    ));
    Ok(())
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
