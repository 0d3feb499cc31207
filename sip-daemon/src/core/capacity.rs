//! Per-number and per-trunk call limits across the nodes sharing the
//! store. This node's own count is checked first, as without a cluster;
//! an INVITE within it then reserves one slot of each limited scope in the
//! store ([`Output::ReserveCapacity`]: one short transaction, serialised
//! per scope, all scopes or none) before it is answered, forwarded or put
//! to its webhook, and the call releases its slots when it ends
//! ([`Output::ReleaseCapacity`]). Calls on numbers and trunks without a
//! limit never touch the store. A store that cannot answer leaves the call
//! to this node's own count (fail open to the per-node limit, counted).

use super::*;
use domain::model::{Number, Trunk};

impl Core {
    /// Whether `number` or `trunk` is at its concurrent call limit on this
    /// node (the cluster-wide limits are the store's reservations).
    pub(super) fn at_node_limit(&self, number: &Number, trunk: Option<&Trunk>) -> bool {
        let number_busy = number.max_calls.is_some_and(|m| {
            self.active_by_number
                .get(&number.pattern)
                .copied()
                .unwrap_or(0)
                >= m
        });
        let trunk_busy = trunk.is_some_and(|t| {
            t.max_calls
                .is_some_and(|m| self.active_by_trunk.get(&t.name).copied().unwrap_or(0) >= m)
        });
        number_busy || trunk_busy
    }

    /// The limited scopes an INVITE on `number` through a trunk limited to
    /// `trunk` counts against cluster-wide (none without cluster limits).
    pub(super) fn cluster_scopes(
        &self,
        number: &Number,
        trunk: Option<(String, u32)>,
    ) -> Vec<(String, u32)> {
        if !self.cfg.cluster_limits {
            return Vec::new();
        }
        let mut scopes = Vec::new();
        if let Some(m) = number.max_calls {
            scopes.push((format!("number:{}", number.pattern), m));
        }
        if let Some((name, m)) = trunk {
            scopes.push((format!("trunk:{name}"), m));
        }
        scopes
    }

    /// Parks call `h` until the store grants its slots.
    pub(super) fn park_for_capacity(
        &mut self,
        h: CallHandle,
        scopes: Vec<(String, u32)>,
        next: Admission,
    ) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        call.admission = Some(Box::new(next));
        // From here on the call may hold slots: its end releases them.
        call.reserved = true;
        self.out.push_back(Output::ReserveCapacity {
            call: h,
            sid: call.sid.clone(),
            scopes,
        });
    }

    /// The store's answer for call `h` (`sid`): `Ok(true)` granted,
    /// `Ok(false)` the cluster is at a limit (486), `Err` the store did not
    /// answer (the call goes on within this node's own count).
    pub fn handle_capacity(
        &mut self,
        now: Instant,
        h: CallHandle,
        sid: &str,
        granted: Result<bool, String>,
    ) {
        let Some(next) = self
            .calls
            .get_mut(&h)
            .filter(|c| c.sid == sid)
            .and_then(|c| c.admission.take())
        else {
            // The caller gave up meanwhile (its end released the slots,
            // perhaps before they were taken): release again.
            if granted == Ok(true) {
                self.out.push_back(Output::ReleaseCapacity {
                    sid: sid.to_string(),
                });
            }
            return;
        };
        match granted {
            Ok(true) => self.admit(now, h, *next),
            Ok(false) => {
                let Some(call) = self.calls.get_mut(&h) else {
                    return;
                };
                call.reserved = false;
                let (txn, tag) = (call.invite_txn, call.dialog.key.local_tag.clone());
                self.metrics.reject("capacity_cluster");
                if let Some(txn) = txn {
                    self.respond(now, txn, 486, None, Some(&tag), |b| b);
                }
                self.end_call(now, h, "capacity", 486);
            }
            Err(why) => {
                // Admitted, so no rejection: the edge counts the failed
                // check (`gateway_cluster_capacity_checks_total{outcome="error"}`).
                tracing::warn!(call = %sid, error = %why, "cluster limit not checked (store); admitted within this node's limit");
                self.admit(now, h, *next);
            }
        }
    }

    /// Carries an admitted call on.
    pub(super) fn admit(&mut self, now: Instant, h: CallHandle, next: Admission) {
        match next {
            Admission::Outbound { .. } => {}
            Admission::FarLeg { local } => {
                if let Some(hb) = self.calls.get(&h).and_then(|c| c.bridge) {
                    self.place_far_leg(now, hb, local);
                }
            }
            Admission::Webhook { url, pending } => self.ask_voice_webhook(h, url, pending),
            Admission::Forward {
                target,
                caller,
                max_forwards,
            } => self.open_forward(h, target, &caller, max_forwards),
            Admission::Media { mode, media } => self.open_media_leg(h, mode, media),
        }
    }
}
