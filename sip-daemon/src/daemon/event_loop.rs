//! The event loop: one task feeds the core what arrives (SIP, media
//! events, REST actions, webhook and store answers, routing reloads,
//! signals, timers) and sends out what it asks for, until a drain ends.

use super::DaemonError;
use super::capacity::CapacityAnswer;
use super::drain::Drain;
use super::hooks::VoiceAnswerFor;
use super::inbound::drain_inbound;
use super::listeners::SipQueues;
use super::outputs::Edges;
use super::registrations::RemoteRegistrations;
use super::unix_ms_now;
use crate::config::Listener;
use crate::core::Core;
use crate::metrics::Metrics;
use crate::routing::RoutingTable;
use crate::transport::Inbound;
use api::http::{NodeState, Readiness};
use media_userspace::control::MediaEvent;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The core with its edges, ready to serve.
pub(super) struct Daemon {
    pub core: Core,
    pub out: Edges,
    pub readiness: Readiness,
    pub metrics: Metrics,
    pub drain: Drain,
    pub bound: Vec<Listener>,
    pub writers: Writers,
}

/// The write-behind tasks, waited for at the end.
pub(super) struct Writers {
    /// Ends once [`Edges::registrations`] is dropped.
    pub registrations: JoinHandle<()>,
    pub cdrs: api::cdr::CdrWriter,
}

/// Everything that wakes the loop.
pub(super) struct Inputs {
    pub signals: Signals,
    /// A drain asked for by the embedding code (tests).
    pub shutdown: mpsc::Receiver<()>,
    pub sip: SipQueues,
    pub media: mpsc::UnboundedReceiver<MediaEvent>,
    pub control: mpsc::Receiver<api::control::ControlEnvelope>,
    /// A drain requested over REST.
    pub drain: mpsc::Receiver<()>,
    pub remote_registrations: mpsc::UnboundedReceiver<RemoteRegistrations>,
    pub capacity: mpsc::UnboundedReceiver<CapacityAnswer>,
    pub voice: mpsc::UnboundedReceiver<VoiceAnswerFor>,
    pub routing: mpsc::Receiver<RoutingTable>,
}

/// SIGTERM and SIGINT drain; SIGUSR2 hands bridged calls over, then drains.
pub(super) struct Signals {
    term: Signal,
    int: Signal,
    usr2: Signal,
}

impl Signals {
    pub(super) fn install() -> Result<Signals, DaemonError> {
        let on = |kind| signal(kind).map_err(DaemonError::Signal);
        Ok(Signals {
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            usr2: on(SignalKind::user_defined2())?,
        })
    }
}

impl Daemon {
    /// Serves until the drain ends, then lets the writers finish.
    pub(super) async fn serve(mut self, mut inputs: Inputs) {
        self.readiness.set(NodeState::Ready);
        loop {
            self.turn(&mut inputs).await;
            if self.after_turn() {
                break;
            }
        }
        self.stop().await;
    }

    /// Waits for the next input (or the next timer) and hands it to the core.
    async fn turn(&mut self, i: &mut Inputs) {
        let wake = self.drain.wake(self.core.poll_timeout());
        let now = Instant::now;
        tokio::select! {
            biased;
            _ = i.signals.term.recv() => self.drain.begin(&mut self.core, "SIGTERM"),
            _ = i.signals.int.recv() => self.drain.begin(&mut self.core, "SIGINT"),
            _ = i.signals.usr2.recv() => self.hand_over(),
            _ = i.shutdown.recv() => self.drain.begin(&mut self.core, "shutdown request"),
            Some(remote) = i.remote_registrations.recv() => match remote {
                RemoteRegistrations::Change(change) => self.core.apply_registration_change(change),
                RemoteRegistrations::All(regs) => self.core.merge_remote_registrations(regs),
            },
            // The core logs why a check or a webhook failed: it takes the text.
            Some((call, sid, granted)) = i.capacity.recv() => self.core.handle_capacity(now(), call, &sid, granted.map_err(|e| e.to_string())),
            Some(()) = i.drain.recv() => self.drain_requested(),
            Some(ev) = i.media.recv() => self.core.handle_media(now(), ev),
            // Trunk traffic first: a flood from elsewhere waits behind it.
            Some(inb) = i.sip.trunk.recv() => self.inbound(inb, &mut i.sip),
            Some(inb) = i.sip.other.recv() => self.inbound(inb, &mut i.sip),
            Some(table) = i.routing.recv() => self.set_routing(table),
            Some(env) = i.control.recv() => self.control(env),
            Some(peer) = i.sip.failed.recv() => self.core.handle_transport_failure(now(), peer),
            Some((call, answer)) = i.voice.recv() => self.core.handle_voice_answer(now(), call, answer.map_err(|e| match e {
                api::webhook::WebhookError::Twiml(_) => crate::core::webhook::NoRoute::Refused(e.to_string()),
                e => crate::core::webhook::NoRoute::Failed(e.to_string()),
            })),
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
    }

    /// `first` and whatever else is queued, a batch at most.
    fn inbound(&mut self, first: Inbound, sip: &mut SipQueues) {
        let now = Instant::now();
        self.core.handle_inbound(now, first.peer, first.msg);
        drain_inbound(&mut sip.trunk, &mut sip.other, |inb| {
            self.core.handle_inbound(now, inb.peer, inb.msg);
            self.out.flush(&mut self.core);
        });
    }

    /// SIGUSR2: a restart that keeps the bridged calls. The next run takes
    /// them back from the store (and the kernel). With the store behind,
    /// their snapshots might never land: then it is an ordinary drain.
    fn hand_over(&mut self) {
        if self.out.cdrs.is_saturated() {
            tracing::warn!("SIGUSR2: the store is behind; draining without handing calls over");
        } else {
            let kept = self.core.hand_over(Instant::now());
            tracing::info!(
                calls = kept,
                "SIGUSR2: handing bridged calls over to the next run"
            );
        }
        self.drain.begin(&mut self.core, "SIGUSR2");
    }

    /// Taken out of service, not stopped: the node refuses new calls and
    /// keeps serving its own until a signal stops it (a restart clears the
    /// request).
    /// A live-call request from REST: its reply channel waits at the edge
    /// while the core answers by its id.
    fn control(&mut self, env: api::control::ControlEnvelope) {
        let id = self.out.control.keep(env.reply);
        self.core.handle_control(Instant::now(), id, env.request);
    }

    fn drain_requested(&mut self) {
        if !self.core.is_draining() {
            tracing::info!(
                calls = self.core.active_calls(),
                "drain requested over REST: refusing new calls"
            );
            self.core.start_drain();
        }
    }

    fn set_routing(&mut self, table: RoutingTable) {
        self.out.transports.set_trunks(&table);
        if let Some(g) = &self.out.kernel_guard {
            let mut g = g.lock().unwrap_or_else(|p| p.into_inner());
            g.set_trunks(&table);
            g.set_denied(&table, Instant::now(), unix_ms_now());
        }
        self.core.set_routing(Arc::new(table));
    }

    /// Timers, outputs and the node's state after every wake-up; whether
    /// the drain is over.
    fn after_turn(&mut self) -> bool {
        let now = Instant::now();
        self.core.handle_timeout(now);
        self.out.flush(&mut self.core);
        let saturated = self.out.cdrs.is_saturated();
        self.core.set_cdr_saturated(saturated);
        self.metrics
            .calls_active
            .set(self.core.active_calls() as i64);
        self.readiness.set(if self.core.is_draining() {
            NodeState::Draining
        } else if saturated {
            NodeState::StoreBacklog
        } else {
            NodeState::Ready
        });
        self.drain.is_over(now, &mut self.core, &self.out)
    }

    /// What is decided is written before exit.
    async fn stop(mut self) {
        self.out.flush(&mut self.core);
        // Registration changes already decided are written before exit.
        drop(self.out.registrations);
        if tokio::time::timeout(Duration::from_secs(5), self.writers.registrations)
            .await
            .is_err()
        {
            tracing::warn!("registration changes not all stored: the store is unreachable");
        }
        let unwritten = self.writers.cdrs.shutdown(Duration::from_secs(10)).await;
        if unwritten > 0 {
            tracing::error!(
                events = unwritten,
                "call records not written: the store is unreachable"
            );
        }
        tracing::info!("stopped");
    }
}
