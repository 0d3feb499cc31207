//! CDR write-behind: signalling pushes call-record events into an in-memory
//! queue that never blocks; a writer task applies them to the store in
//! batches and keeps them queued while the database is unreachable.
//!
//! Contract (implemented below):
//! - `CdrQueue::push` never blocks and never drops an event.
//! - `CdrQueue::is_saturated` is true when the depth reached the soft
//!   capacity; call admission then refuses *new* calls (503) so that the
//!   queue stays bounded by capacity + the events of calls in progress.
//! - The writer takes up to `batch_max` events, applies them with
//!   `Store::apply_cdr_batch` (one transaction), and on failure puts them
//!   back at the front and retries with exponential backoff.
//! - A batch the database refuses for good ([`StoreError::is_permanent`])
//!   is taken apart: its events are applied one by one, and one that is
//!   refused alone goes to `cdr_dead_letters` (`Store::dead_letter_cdr`),
//!   so one bad event never blocks the queue behind it.
//! - Shutdown ([`CdrWriter::shutdown`]) keeps writing until the queue is
//!   empty or the timeout passes and reports what is left unwritten.
//!
//! Delivery is at-least-once: a batch whose commit outcome is unknown is
//! applied again, which `apply_cdr_batch` makes harmless (idempotent).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, Registry};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::{CdrEvent, Store, StoreError};

/// The in-memory CDR queue. Cloning is cheap and yields a handle to the
/// same queue.
#[derive(Clone)]
pub struct CdrQueue {
    inner: Arc<QueueInner>,
}

struct QueueInner {
    events: Mutex<VecDeque<CdrEvent>>,
    /// Wakes the writer when an event arrives (a permit is stored if the
    /// writer is busy, so no wake-up is lost).
    notify: Notify,
    soft_capacity: usize,
    /// Events taken by the writer and not yet committed.
    in_flight: std::sync::atomic::AtomicUsize,
}

impl CdrQueue {
    /// An empty queue that reports saturation at `soft_capacity` events.
    /// The capacity is advisory: pushes beyond it still succeed.
    pub fn new(soft_capacity: usize) -> Self {
        CdrQueue {
            inner: Arc::new(QueueInner {
                events: Mutex::new(VecDeque::new()),
                notify: Notify::new(),
                soft_capacity,
                in_flight: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Appends `ev`. Never blocks (beyond a short critical section) and never
    /// drops: the event stays queued until the writer has committed it.
    pub fn push(&self, ev: CdrEvent) {
        self.lock().push_back(ev);
        self.inner.notify.notify_one();
    }

    /// Events waiting to be written (not counting a batch being applied).
    pub fn depth(&self) -> usize {
        self.lock().len()
    }

    /// Events not yet committed to the store: queued or being written.
    pub fn unwritten(&self) -> usize {
        let q = self.lock();
        q.len()
            + self
                .inner
                .in_flight
                .load(std::sync::atomic::Ordering::Acquire)
    }

    /// True when the depth reached the soft capacity: admission should then
    /// refuse new calls until the writer catches up.
    pub fn is_saturated(&self) -> bool {
        self.depth() >= self.inner.soft_capacity
    }

    /// The soft capacity given to [`CdrQueue::new`].
    pub fn soft_capacity(&self) -> usize {
        self.inner.soft_capacity
    }

    /// A poisoned lock only means another thread panicked while holding
    /// it; the deque itself is always consistent, so keep using it.
    fn lock(&self) -> MutexGuard<'_, VecDeque<CdrEvent>> {
        self.inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn take_front(&self, max: usize) -> Vec<CdrEvent> {
        let mut q = self.lock();
        let n = max.max(1).min(q.len());
        self.inner
            .in_flight
            .fetch_add(n, std::sync::atomic::Ordering::AcqRel);
        q.drain(..n).collect()
    }

    /// Puts `batch` back at the front, in its original order.
    fn requeue_front(&self, batch: Vec<CdrEvent>) {
        let mut q = self.lock();
        self.inner
            .in_flight
            .fetch_sub(batch.len(), std::sync::atomic::Ordering::AcqRel);
        for ev in batch.into_iter().rev() {
            q.push_front(ev);
        }
    }
}

impl fmt::Debug for CdrQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdrQueue")
            .field("depth", &self.depth())
            .field("soft_capacity", &self.inner.soft_capacity)
            .finish()
    }
}

/// Metrics of the CDR writer.
#[derive(Clone, Debug)]
pub struct CdrMetrics {
    /// `gateway_store_queue_depth`: events waiting in the queue.
    pub queue_depth: IntGauge,
    /// `gateway_cdr_events_written_total`: events committed to the store.
    pub written: IntCounter,
    /// `gateway_store_write_failures_total`: failed batch attempts.
    pub write_failures: IntCounter,
    /// `gateway_cdr_dead_letters_total`: events the database refused for
    /// good, kept in `cdr_dead_letters` instead.
    pub dead_letters: IntCounter,
    /// `gateway_store_up`: 1 while the store answers both ways (the last
    /// CDR write and the last routing read succeeded), else 0.
    store_up: IntGauge,
    /// (last write succeeded, last read succeeded): `store_up` is both.
    store_ok: std::sync::Arc<[std::sync::atomic::AtomicBool; 2]>,
}

impl CdrMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(CdrMetrics {
            queue_depth: IntGauge::new(
                "gateway_store_queue_depth",
                "CDR events waiting to be written to the store",
            )?,
            written: IntCounter::new(
                "gateway_cdr_events_written_total",
                "CDR events committed to the store",
            )?,
            write_failures: IntCounter::new(
                "gateway_store_write_failures_total",
                "Failed attempts to write a batch of CDR events",
            )?,
            dead_letters: IntCounter::new(
                "gateway_cdr_dead_letters_total",
                "CDR events the database refused for good, kept in cdr_dead_letters",
            )?,
            store_up: {
                let g = IntGauge::new(
                    "gateway_store_up",
                    "1 while the store answers (the last CDR write and the last routing read succeeded), else 0",
                )?;
                g.set(1);
                g
            },
            store_ok: std::sync::Arc::new([
                std::sync::atomic::AtomicBool::new(true),
                std::sync::atomic::AtomicBool::new(true),
            ]),
        })
    }

    /// Creates the metrics and registers them in `reg` (fails if already
    /// registered there).
    pub fn register(reg: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::new()?;
        reg.register(Box::new(m.queue_depth.clone()))?;
        reg.register(Box::new(m.written.clone()))?;
        reg.register(Box::new(m.write_failures.clone()))?;
        reg.register(Box::new(m.dead_letters.clone()))?;
        reg.register(Box::new(m.store_up.clone()))?;
        Ok(m)
    }

    /// The last CDR write (or dead letter) succeeded or failed.
    pub fn store_write_ok(&self, ok: bool) {
        self.store_ok(0, ok);
    }

    /// The last routing read succeeded or failed.
    pub fn store_read_ok(&self, ok: bool) {
        self.store_ok(1, ok);
    }

    fn store_ok(&self, which: usize, ok: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.store_ok[which].store(ok, Relaxed);
        let both = self.store_ok.iter().all(|f| f.load(Relaxed));
        self.store_up.set(i64::from(both));
    }

    /// Metrics registered nowhere (tests, tools).
    pub fn unregistered() -> Self {
        Self::new().expect("static metric names and help texts are valid")
    }
}

/// Tuning of the writer task.
#[derive(Clone, Debug)]
pub struct CdrWriterConfig {
    /// Most events applied in one transaction.
    pub batch_max: usize,
    /// Before each batch smaller than `batch_max`, how long to wait for
    /// more events, so that steady load goes in few transactions (and a
    /// call's Started/Answered/Ended fold into one row write). Bounds how
    /// stale the records are while the store is healthy.
    pub linger: Duration,
    /// First delay after a failed batch; doubles per failure…
    pub retry_initial: Duration,
    /// …up to this.
    pub retry_max: Duration,
}

impl Default for CdrWriterConfig {
    fn default() -> Self {
        CdrWriterConfig {
            batch_max: 500,
            linger: Duration::from_millis(50),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// Handle of the writer task started by [`spawn_writer`].
///
/// Dropping it without calling [`CdrWriter::shutdown`] leaves the task
/// running detached until the runtime stops.
#[derive(Debug)]
pub struct CdrWriter {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// What the handle and the task share: the queue and the shutdown request.
#[derive(Debug)]
struct Shared {
    queue: CdrQueue,
    /// Set once by `shutdown`: write until the queue is empty or this.
    deadline: Mutex<Option<Instant>>,
    stop: Notify,
}

impl Shared {
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Extra time `shutdown` waits past its deadline for the task to notice
/// it before aborting the task.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

impl CdrWriter {
    /// Stops the writer: it keeps writing until the queue is empty or
    /// `timeout` has passed (an attempt still running then is cut off and
    /// its batch counted as unwritten, though it may have committed).
    /// Returns the number of events left unwritten in the queue, 0 when
    /// everything was flushed. Events pushed later stay in the queue.
    pub async fn shutdown(self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(deadline);
        self.shared.stop.notify_one();
        let mut task = self.task;
        if tokio::time::timeout_at(deadline + SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            // Only reached if the store call ignores cancellation for long;
            // the in-flight guard puts its batch back when the task drops.
            task.abort();
            let _ = task.await;
        }
        self.shared.queue.depth()
    }
}

/// Starts the writer task on the current tokio runtime. It takes events
/// from the front of `queue`, up to `cfg.batch_max` at a time, and applies
/// them with [`Store::apply_cdr_batch`]. A failed batch goes back to the
/// front of the queue (order kept) and is retried after an exponential
/// backoff (`retry_initial` doubling up to `retry_max`); a warning is logged
/// once per outage, and once more when writes recover.
pub fn spawn_writer(
    store: Arc<dyn Store>,
    queue: CdrQueue,
    cfg: CdrWriterConfig,
    metrics: CdrMetrics,
) -> CdrWriter {
    let shared = Arc::new(Shared {
        queue,
        deadline: Mutex::new(None),
        stop: Notify::new(),
    });
    let task = tokio::spawn(run(store, shared.clone(), cfg, metrics));
    CdrWriter { shared, task }
}

/// A batch taken from the queue. Unless marked written, it goes back to
/// the front of the queue when dropped — also when the task is aborted
/// mid-write — so no event can leave the queue without being committed.
struct InFlight<'a> {
    queue: &'a CdrQueue,
    events: Vec<CdrEvent>,
}

impl InFlight<'_> {
    fn written(mut self) {
        self.queue
            .inner
            .in_flight
            .fetch_sub(self.events.len(), std::sync::atomic::Ordering::AcqRel);
        self.events.clear();
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.events.is_empty() {
            self.queue.requeue_front(std::mem::take(&mut self.events));
        }
    }
}

/// Runs `fut` unless the shutdown deadline passes first (`None` then).
async fn until_deadline<F: Future>(shared: &Shared, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    loop {
        let deadline = shared.deadline();
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            _ = sleep_until(deadline) => return None,
            // A shutdown request: loop to pick up its deadline.
            _ = shared.stop.notified(), if deadline.is_none() => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Waits `backoff` after a failure and doubles it up to `max`; false when
/// the shutdown deadline cut the wait short.
async fn back_off(shared: &Shared, backoff: &mut Duration, max: Duration) -> bool {
    if until_deadline(shared, tokio::time::sleep(*backoff))
        .await
        .is_none()
    {
        return false;
    }
    *backoff = backoff.saturating_mul(2).min(max);
    true
}

/// Keeps `ev`, refused for good with `why`, in the dead-letter table.
async fn dead_letter(store: &dyn Store, ev: &CdrEvent, why: &StoreError) -> Result<(), StoreError> {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    tracing::warn!(
        call = ev.call_id(),
        error = %why,
        "CDR event refused by the database for good; kept in cdr_dead_letters"
    );
    store.dead_letter_cdr(ev, &why.to_string(), at).await
}

fn gauge(metrics: &CdrMetrics, queue: &CdrQueue) {
    metrics
        .queue_depth
        .set(i64::try_from(queue.depth()).unwrap_or(i64::MAX));
}

async fn run(
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    cfg: CdrWriterConfig,
    metrics: CdrMetrics,
) {
    let queue = &shared.queue;
    let mut backoff = cfg.retry_initial;
    // Failed attempts in the current outage (0: the store is healthy).
    let mut failures: u64 = 0;
    let mut outage_start = Instant::now();
    // Events still to apply one at a time, after a batch that held an
    // event the database refuses for good.
    let mut isolate: usize = 0;
    loop {
        gauge(&metrics, queue);
        let deadline = shared.deadline();
        if queue.depth() == 0 {
            if deadline.is_some() {
                break;
            }
            tokio::select! {
                _ = queue.inner.notify.notified() => {}
                _ = shared.stop.notified() => {}
            }
            continue;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if failures == 0 && isolate == 0 && deadline.is_none() && queue.depth() < cfg.batch_max {
            // Gather more events into this batch (a shutdown cuts it short;
            // after a failure the backoff already waited).
            let _ = until_deadline(&shared, tokio::time::sleep(cfg.linger)).await;
        }

        let batch = InFlight {
            queue,
            events: queue.take_front(if isolate > 0 { 1 } else { cfg.batch_max }),
        };
        gauge(&metrics, queue);
        let n = batch.events.len();
        let Some(result) = until_deadline(&shared, store.apply_cdr_batch(&batch.events)).await
        else {
            // Cut off by the shutdown deadline: `batch` goes back on drop.
            break;
        };
        match result {
            Err(e) if e.is_permanent() && n > 1 => {
                tracing::warn!(
                    backend = store.backend(),
                    error = %e,
                    events = n,
                    "CDR batch refused for good; applying its events one by one"
                );
                drop(batch);
                isolate = n;
            }
            Err(e) if e.is_permanent() => {
                isolate = isolate.saturating_sub(1);
                match dead_letter(&*store, &batch.events[0], &e).await {
                    Ok(()) => {
                        batch.written();
                        metrics.dead_letters.inc();
                        metrics.store_write_ok(true);
                    }
                    Err(e2) => {
                        // Kept at the front; retried after the backoff.
                        tracing::warn!(error = %e2, "CDR dead letter failed");
                        drop(batch);
                        metrics.write_failures.inc();
                        metrics.store_write_ok(false);
                        isolate += 1;
                        if !back_off(&shared, &mut backoff, cfg.retry_max).await {
                            break;
                        }
                    }
                }
            }
            Ok(()) => {
                isolate = isolate.saturating_sub(1);
                batch.written();
                metrics.written.inc_by(n as u64);
                metrics.store_write_ok(true);
                if failures > 0 {
                    tracing::info!(
                        backend = store.backend(),
                        failures,
                        outage_ms = outage_start.elapsed().as_millis() as u64,
                        queued = queue.depth(),
                        "CDR writes recovered"
                    );
                }
                failures = 0;
                backoff = cfg.retry_initial;
            }
            Err(e) => {
                drop(batch);
                metrics.write_failures.inc();
                metrics.store_write_ok(false);
                if failures == 0 {
                    outage_start = Instant::now();
                    tracing::warn!(
                        backend = store.backend(),
                        error = %e,
                        queued = queue.depth(),
                        "CDR write failed; events stay queued and are retried with backoff"
                    );
                } else {
                    tracing::debug!(error = %e, failures, "CDR write retry failed");
                }
                failures += 1;
                gauge(&metrics, queue);
                if !back_off(&shared, &mut backoff, cfg.retry_max).await {
                    break;
                }
            }
        }
    }
    gauge(&metrics, queue);
}

#[cfg(test)]
mod store_health_tests {
    use super::CdrMetrics;

    #[test]
    fn store_up_needs_both_the_last_write_and_the_last_read() {
        let m = CdrMetrics::unregistered();
        assert_eq!(m.store_up.get(), 1);
        m.store_write_ok(false);
        assert_eq!(m.store_up.get(), 0);
        // Reads that work (a read-only standby) do not hide failing writes.
        m.store_read_ok(true);
        assert_eq!(m.store_up.get(), 0);
        m.store_write_ok(true);
        assert_eq!(m.store_up.get(), 1);
        m.store_read_ok(false);
        assert_eq!(m.store_up.get(), 0);
        m.store_read_ok(true);
        assert_eq!(m.store_up.get(), 1);
    }
}
