//! Registrations across nodes: this node's changes written behind (and
//! announced on PostgreSQL), the other nodes' changes followed.

use super::unix_ms_now;
use crate::core::registrar::RegistrationChange;
use api::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The writer of this node's changes and what other nodes changed.
pub(super) struct Registrations {
    /// This node's changes, for [`registration_writer`].
    pub changes: mpsc::UnboundedSender<RegistrationChange>,
    /// Ends once `changes` is dropped and what was sent is written.
    pub writer: JoinHandle<()>,
    pub remote: mpsc::UnboundedReceiver<RemoteRegistrations>,
}

/// Starts the writer and, on PostgreSQL (`url`), the follower.
pub(super) fn start(store: &Arc<dyn Store>, url: &str, node: &str) -> Registrations {
    // Registration changes are written behind, like CDRs, but are small
    // and rare: a plain task with retries.
    let (changes, rx) = mpsc::unbounded_channel::<RegistrationChange>();
    let writer = tokio::spawn(registration_writer(store.clone(), rx, node.to_string()));
    // Registrations other nodes take reach this one at once: a phone
    // registered anywhere is reachable through every node.
    let (remote_tx, remote) = mpsc::unbounded_channel::<RemoteRegistrations>();
    if store.backend() == "postgres" {
        tokio::spawn(follow_registrations(
            url.to_string(),
            store.clone(),
            node.to_string(),
            remote_tx,
        ));
    }
    Registrations {
        changes,
        writer,
        remote,
    }
}

/// Stores each change (retrying while the store is away), then
/// announces it to the other nodes.
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
pub(super) enum RemoteRegistrations {
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
