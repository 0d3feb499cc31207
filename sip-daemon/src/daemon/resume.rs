//! Taking over from a previous run of this node: its bridged calls
//! resumed, every other call it left open closed, and the call-limit
//! slots of calls gone released.

use super::outputs::Edges;
use super::{DaemonError, unix_ms_now};
use crate::config::Config;
use crate::core::Core;
use api::store::Store;
use media_userspace::engine::MediaEngine;
use std::time::Instant;

/// Resumes what can be, sends out what that asks for, closes the rest.
pub(super) async fn take_over(
    cfg: &Config,
    store: &dyn Store,
    core: &mut Core,
    out: &Edges,
) -> Result<(), DaemonError> {
    resume_calls(cfg, store, core).await?;
    out.flush(core);
    close_store_leftovers(cfg, store, &out.engine).await?;
    // Slots a previous run of this node held for calls that did not
    // survive it (resumable calls keep theirs).
    match store.release_stale_capacity(Some(&cfg.node_id())).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(slots = n, "released the call-limit slots of calls gone"),
        Err(e) => tracing::warn!(error = %e, "stale call-limit slots not released"),
    }
    Ok(())
}

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
