//! What the engine posts to a worker: legs and relays to start, and
//! controls for the legs it runs.

use super::*;

pub(super) enum LegCtl {
    /// The stream of this leg changed (a relay has two legs).
    Update(LegId, LegMedia),
    InfoDtmf(char, u32),
    SendDtmf(char, u32),
    /// A message for the AI from call control (a transfer's result).
    ToAi(crate::aistream::ToAi),
    /// Start (or replace) a relay's listen-only fork.
    Fork(Box<StreamSpec>),
    Unfork,
    /// Move a stream leg's AI to another stream.
    Restream(Box<StreamSpec>),
    /// Record a stream leg; the callback is told when it is written.
    Record(Box<crate::recorder::RecordingSpec>, crate::recorder::Done),
    Close,
}

pub(super) struct OpenLeg {
    /// Bound by [`MediaEngine::command`] on the caller's thread; the
    /// worker takes it.
    pub(super) socket: Option<std::net::UdpSocket>,
    /// The RTCP socket (RTP port + 1) of legs that report.
    pub(super) rtcp: Option<std::net::UdpSocket>,
    pub(super) port: u16,
    pub(super) leg: LegId,
    pub(super) mode: LegMode,
    pub(super) media: LegMedia,
    pub(super) timeout: Duration,
}

/// How often a worker starts the legs posted to it. Posting an open does
/// not wake the worker: at 1,000 calls/s that saves two thread wake-ups
/// per call for one per tick. The socket is bound before the open is
/// posted, so early RTP waits in its buffer (at most one tick). Controls
/// of a posted leg (an answer's media, a close) go straight into its
/// channel instead: a leg reads them before its sockets, so what the
/// answer changed applies to every packet sent after the answer left.
pub(super) const MAILBOX_TICK: Duration = Duration::from_millis(10);

pub(super) enum WorkerCmd {
    Open(OpenLeg),
    OpenRelay(OpenRelay),
    Ctl(LegId, LegCtl),
    Close(LegId),
}

/// Two bridged legs relayed by one task: both sockets live on one worker.
pub(super) struct OpenRelay {
    pub(super) legs: [LegId; 2],
    pub(super) media: [LegMedia; 2],
    pub(super) sockets: [BoundLeg; 2],
    pub(super) timeout: Duration,
    /// A relay taken over with its kernel rules: it starts offloaded.
    pub(super) adopted: Option<Box<AdoptedRules>>,
}

/// The pinned rules of a relay a restored call adopts, and the peers they
/// send to (side A's, side B's).
pub(super) struct AdoptedRules {
    pub(super) rules: crate::offload::PairRules,
    pub(super) peers: [SocketAddr; 2],
}

/// A leg's bound RTP socket, its port and its RTCP socket.
pub(super) struct BoundLeg {
    pub(super) rtp: std::net::UdpSocket,
    pub(super) port: u16,
    pub(super) rtcp: Option<std::net::UdpSocket>,
    /// The allocator handed the port out (or reserved it): it goes back
    /// there when the leg ends. An adopted port outside the range is not.
    pub(super) owned: bool,
}

/// What a worker starts.
pub(super) enum Job {
    Leg(OpenLeg),
    Relay(OpenRelay),
}

/// Commands for one worker: opens collected without waking it, controls
/// delivered at once (see [`MAILBOX_TICK`]).
#[derive(Default)]
pub(super) struct Mailbox {
    pub(super) state: Mutex<MailboxState>,
    pub(super) stopped: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
pub(super) struct MailboxState {
    /// Legs posted and not started yet, each with its control channel.
    pub(super) opens: Vec<(Job, mpsc::UnboundedReceiver<LegCtl>)>,
    /// The control channel of every leg posted and not closed.
    pub(super) ctls: HashMap<LegId, mpsc::UnboundedSender<LegCtl>>,
}

impl Mailbox {
    pub(super) fn post(&self, cmd: WorkerCmd) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match cmd {
            WorkerCmd::Open(open) => {
                let (tx, rx) = mpsc::unbounded_channel();
                st.ctls.insert(open.leg, tx);
                st.opens.push((Job::Leg(open), rx));
            }
            WorkerCmd::OpenRelay(open) => {
                let (tx, rx) = mpsc::unbounded_channel();
                for leg in open.legs {
                    st.ctls.insert(leg, tx.clone());
                }
                st.opens.push((Job::Relay(open), rx));
            }
            // Queued in the channel even before the leg starts: it reads
            // them in order when it does.
            WorkerCmd::Ctl(leg, ctl) => {
                if let Some(tx) = st.ctls.get(&leg) {
                    let _ = tx.send(ctl);
                }
            }
            WorkerCmd::Close(leg) => {
                if let Some(tx) = st.ctls.remove(&leg) {
                    let _ = tx.send(LegCtl::Close);
                }
            }
        }
    }

    /// The worker's loop: every tick, starts the legs posted with `start`,
    /// until the engine is dropped.
    pub(super) async fn serve(&self, mut start: impl FnMut(Job, mpsc::UnboundedReceiver<LegCtl>)) {
        let mut tick = tokio::time::interval(MAILBOX_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopped.load(Ordering::Acquire) {
            tick.tick().await;
            for (open, ctl) in self.take_opens() {
                start(open, ctl);
            }
        }
    }

    /// The legs to start; forgets the channels of legs that ended on their
    /// own (media timeout).
    pub(super) fn take_opens(&self) -> Vec<(Job, mpsc::UnboundedReceiver<LegCtl>)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.ctls.retain(|_, tx| !tx.is_closed());
        std::mem::take(&mut st.opens)
    }
}
