//! Cluster-wide call limits at the edge: slots reserved and released in
//! the store on their own tasks, the answers sent back to the loop.

use super::unix_ms_now;
use crate::metrics::Metrics;
use api::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Longest wait for a call-limit reservation.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);
/// (call, its sid, the store's answer) for [`Core::handle_capacity`].
pub(super) type CapacityAnswer = (crate::core::CallHandle, String, Result<bool, ReserveError>);

/// Why a reservation was not answered: the call is admitted within the
/// node's own count.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReserveError {
    #[error(transparent)]
    Store(api::store::StoreError),
    #[error("the store took too long")]
    Timeout,
}

/// Cluster-wide call limits at the edge: reservations in the store.
pub(super) struct CapacityEdge {
    store: Arc<dyn Store>,
    node: String,
    answers: mpsc::UnboundedSender<CapacityAnswer>,
    metrics: Metrics,
}

impl CapacityEdge {
    /// The edge for node `node`; answers arrive on the receiver.
    pub(super) fn new(
        store: Arc<dyn Store>,
        node: String,
        metrics: Metrics,
    ) -> (CapacityEdge, mpsc::UnboundedReceiver<CapacityAnswer>) {
        let (answers, rx) = mpsc::unbounded_channel();
        let edge = CapacityEdge {
            store,
            node,
            answers,
            metrics,
        };
        (edge, rx)
    }

    /// Reserves `scopes`' slots for `call` (its `sid`), bounded by
    /// [`RESERVE_TIMEOUT`]; counted and timed.
    pub(super) fn reserve(
        &self,
        call: crate::core::CallHandle,
        sid: String,
        scopes: Vec<(String, u32)>,
    ) {
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
                Ok(r) => r.map_err(ReserveError::Store),
                Err(_) => Err(ReserveError::Timeout),
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

    /// Gives `sid`'s slots back.
    pub(super) fn release(&self, sid: String) {
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
