//! Ending a call: from our side (BYE or an error), and the call's last
//! record, counters and status callback.

use crate::core::*;

impl Core {
    /// Ends a call from our side: BYE once answered, an error before.
    pub(in crate::core) fn hangup(&mut self, now: Instant, h: CallHandle, cause: &str) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if call.state == CallState::AwaitingMedia {
            if let Some(txn) = call.invite_txn {
                let tag = call.dialog.key.local_tag.clone();
                self.respond(now, txn, 503, None, Some(&tag), |b| {
                    b.header(HeaderName::RetryAfter, "30")
                });
            }
            self.end_call(now, h, cause, 503);
            return;
        }
        self.send_in_dialog(now, h, Method::Bye);
        self.end_call(now, h, cause, 200);
    }

    /// Removes the call, closes its media and its record.
    pub(in crate::core) fn end_call(
        &mut self,
        now: Instant,
        h: CallHandle,
        cause: &str,
        status: u16,
    ) {
        let Some(mut call) = self.calls.remove(&h) else {
            return;
        };
        self.restoring.remove(&h);
        self.forget_snapshot(h, &call.sid);
        self.dialogs.remove(&call.dialog.key);
        for hb in call.bridge.into_iter().chain(call.transfer) {
            self.end_bridge(now, hb);
        }
        if let Some(p) = &call.number_pattern
            && let Some(n) = self.active_by_number.get_mut(p)
        {
            *n = n.saturating_sub(1);
        }
        if let Some(t) = &call.trunk
            && let Some(n) = self.active_by_trunk.get_mut(t)
        {
            *n = n.saturating_sub(1);
        }
        if call.reserved {
            self.out.push_back(Output::ReleaseCapacity {
                sid: call.sid.clone(),
            });
        }
        // The leg may still be opening; Close is idempotent at the edge.
        self.out.push_back(Output::Media(MediaCommand::Close {
            leg: call.media_leg,
        }));
        let duration_ms = call
            .answered_at
            .map_or(0, |a| now.saturating_duration_since(a).as_millis() as i64);
        let at = self.unix_ms(now);
        self.out.push_back(Output::Cdr(CdrEvent::Ended {
            id: call.sid.clone(),
            at,
            cause: cause.to_string(),
            sip_status: if call.answered_at.is_some() {
                200
            } else {
                status
            },
            duration_ms,
        }));
        if call.status_webhook.is_some() {
            let sip_status = if call.answered_at.is_some() {
                200
            } else {
                status
            };
            let final_status = domain::model::call_status(
                call.answered_at.is_some(),
                true,
                Some(cause),
                Some(sip_status),
            );
            if let Some((url, mut event)) = super::webhook::next_status(&mut call, final_status, at)
            {
                event.sip_status = Some(sip_status);
                event.end_cause = Some(cause.to_string());
                event.duration_ms = Some(duration_ms);
                self.out.push_back(Output::StatusWebhook { url, event });
            }
        }
        let direction = if call.outbound { "outbound" } else { "inbound" };
        self.metrics
            .calls
            .with_label_values(&[direction, cause])
            .inc();
        self.metrics.calls_active.set(self.calls.len() as i64);
        tracing::debug!(call = %call.sid, cause, duration_ms, "call ended");
    }
}
