//! The store as the source of truth for routing: the config file's rows
//! written in at start, the table loaded from it, and reloaded when rows
//! change (through this node's API at once, other nodes' by the next tick
//! or their PostgreSQL notice).

use super::{DaemonError, unix_ms_now};
use crate::config::Config;
use crate::routing::RoutingTable;
use api::cdr::CdrMetrics;
use api::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How often the routing table is re-read from the store, so rows changed
/// by another node or the API take effect without a restart.
const ROUTING_RELOAD: Duration = Duration::from_secs(10);

/// Opens the store at `url` and writes the config file's rows into it.
pub(super) async fn open(cfg: &Config, url: &str) -> Result<Arc<dyn Store>, DaemonError> {
    let store = api::store::open(url).await?;
    tracing::info!(backend = store.backend(), "store opened");
    provision(store.as_ref(), cfg).await?;
    Ok(store)
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

/// The first table, its skipped rows logged.
pub(super) async fn initial_routing(store: &dyn Store) -> Result<RoutingTable, DaemonError> {
    let (routing, problems) = load_routing(store).await?;
    for p in &problems {
        tracing::warn!(problem = %p, "skipped store row");
    }
    tracing::info!(numbers = routing.number_count(), "routing loaded");
    Ok(routing)
}

/// Reloads the table every [`ROUTING_RELOAD`] and whenever `changed` is
/// notified (several nodes on PostgreSQL: on their changes too); new
/// tables arrive on the receiver.
pub(super) fn start_reloader(
    store: &Arc<dyn Store>,
    url: &str,
    changed: Arc<Notify>,
    store_health: CdrMetrics,
) -> mpsc::Receiver<RoutingTable> {
    if store.backend() == "postgres" {
        // Several nodes may share this database: follow their changes.
        tokio::spawn(api::store::postgres::follow_changes(
            url.to_string(),
            changed.clone(),
        ));
    }
    let (tx, rx) = mpsc::channel::<RoutingTable>(1);
    tokio::spawn(routing_reloader(store.clone(), tx, changed, store_health));
    rx
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
