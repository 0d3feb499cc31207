//! Where the core's outputs go: the transports, the media engine, the
//! call-record queue, the registration writer, the XDP SIP guard, the
//! webhooks and the cluster-wide call limits.

use super::capacity::CapacityEdge;
use super::control::ControlReplies;
use super::hooks::{Hooks, SmsWrite};
use crate::core::registrar::RegistrationChange;
use crate::core::{Core, Output};
use crate::kernel_guard::KernelGuard;
use crate::transport::Transports;
use api::cdr::CdrQueue;
use media_userspace::engine::MediaEngine;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// Every edge the core's outputs reach.
pub(super) struct Edges {
    pub transports: Transports,
    pub engine: MediaEngine,
    pub cdrs: CdrQueue,
    /// Registration changes, written behind by their own task.
    pub registrations: mpsc::UnboundedSender<RegistrationChange>,
    /// The XDP SIP guard, when on: lockouts go to its deny set.
    pub kernel_guard: Option<Arc<Mutex<KernelGuard>>>,
    pub hooks: Hooks,
    pub capacity: CapacityEdge,
    /// REST requests waiting for the core's reply.
    pub control: ControlReplies,
}

impl Edges {
    /// Sends out everything the core has to say.
    pub(super) fn flush(&self, core: &mut Core) {
        while let Some(out) = core.poll_output() {
            match out {
                Output::Transmit(t) => self.transports.send(t),
                Output::Media(cmd) => {
                    // Opening a leg answers at once; feeding the answer back
                    // here lets the 200 OK leave in the same turn.
                    if let Some(ev) = self.engine.command(cmd) {
                        core.handle_media(Instant::now(), ev);
                    }
                }
                Output::Cdr(ev) => self.cdrs.push(ev),
                Output::Registration(change) => {
                    let _ = self.registrations.send(change);
                }
                Output::VoiceWebhook { call, url, request } => {
                    self.hooks.ask_voice(call, url, request)
                }
                Output::Recording(done) => self.hooks.recording(*done),
                Output::StatusWebhook { url, event } => {
                    self.hooks.sender.deliver_status(url, event)
                }
                Output::SmsReceived { record, webhook } => {
                    self.hooks.sms(SmsWrite::Insert(record, webhook))
                }
                Output::SmsQueued(record) => self.hooks.sms(SmsWrite::Insert(record, None)),
                Output::SourceLockedOut { source, secs } => self.lock_out(source, secs),
                Output::SmsStatus { id, status, .. } => {
                    self.hooks.sms(SmsWrite::Status(id, status))
                }
                Output::ReserveCapacity { call, sid, scopes } => {
                    self.capacity.reserve(call, sid, scopes)
                }
                Output::ReleaseCapacity { sid } => self.capacity.release(sid),
                Output::ControlReply { id, reply } => self.control.answer(id, reply),
            }
        }
    }

    /// Drops SIP from `source` in the kernel for `secs`, when the guard is on.
    fn lock_out(&self, source: std::net::IpAddr, secs: u64) {
        if let Some(g) = &self.kernel_guard {
            g.lock()
                .unwrap_or_else(|p| p.into_inner())
                .deny(Instant::now(), source, secs);
        }
    }
}
