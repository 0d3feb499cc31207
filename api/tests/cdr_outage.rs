//! The CDR writer: batching, shutdown flush, backoff on failure, and a real
//! PostgreSQL outage (server stopped and started again mid-test).
//!
//! The outage test needs `TEST_DATABASE_URL` and `TEST_PG_CTL` (see
//! `scripts/pg-throwaway.sh`); without them it fails unless
//! `GATEWAY_TEST_SKIP_PG=1` is set.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::cdr::{CdrMetrics, CdrQueue, CdrWriterConfig, spawn_writer};
use api::store::postgres::PgStore;
use api::store::sqlite::SqliteStore;
use api::store::*;
use async_trait::async_trait;
use common::{call, call_id};
use tokio::time::Instant;

/// FAULT-INJECTION TEST DOUBLE. Wraps a real store; `apply_cdr_batch`
/// fails while `failing` is set (without touching the inner store) and
/// every attempt is recorded with its time and size. All other methods
/// delegate unchanged.
struct FlakyStore {
    inner: Arc<dyn Store>,
    failing: AtomicBool,
    /// (when, batch size, failed) of every `apply_cdr_batch` call.
    attempts: Mutex<Vec<(Instant, usize, bool)>>,
}

impl FlakyStore {
    fn new(inner: Arc<dyn Store>, failing: bool) -> Arc<Self> {
        Arc::new(FlakyStore {
            inner,
            failing: AtomicBool::new(failing),
            attempts: Mutex::new(Vec::new()),
        })
    }

    fn attempts(&self) -> Vec<(Instant, usize, bool)> {
        self.attempts.lock().unwrap().clone()
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    async fn upsert_account(&self, a: &Account) -> Result<()> {
        self.inner.upsert_account(a).await
    }
    async fn list_accounts(&self) -> Result<Vec<Account>> {
        self.inner.list_accounts().await
    }
    async fn get_account(&self, id: &str) -> Result<Option<Account>> {
        self.inner.get_account(id).await
    }
    async fn set_account_auth_token(&self, id: &str, token: &str) -> Result<bool> {
        self.inner.set_account_auth_token(id, token).await
    }
    async fn account_auth_token(&self, id: &str) -> Result<Option<String>> {
        self.inner.account_auth_token(id).await
    }
    async fn get_message(&self, id: &str) -> Result<Option<MessageRecord>> {
        self.inner.get_message(id).await
    }
    async fn insert_recording(&self, r: &RecordingRecord) -> Result<()> {
        self.inner.insert_recording(r).await
    }
    async fn list_recordings(&self, a: &str, limit: u32) -> Result<Vec<RecordingRecord>> {
        self.inner.list_recordings(a, limit).await
    }
    async fn get_recording(&self, id: &str) -> Result<Option<RecordingRecord>> {
        self.inner.get_recording(id).await
    }
    async fn delete_recording(&self, id: &str) -> Result<bool> {
        self.inner.delete_recording(id).await
    }
    async fn upsert_trunk(&self, t: &Trunk) -> Result<()> {
        self.inner.upsert_trunk(t).await
    }
    async fn list_trunks(&self) -> Result<Vec<Trunk>> {
        self.inner.list_trunks().await
    }
    async fn get_trunk(&self, name: &str) -> Result<Option<Trunk>> {
        self.inner.get_trunk(name).await
    }
    async fn delete_trunk(&self, name: &str) -> Result<bool> {
        self.inner.delete_trunk(name).await
    }
    async fn upsert_number(&self, n: &Number) -> Result<bool> {
        self.inner.upsert_number(n).await
    }
    async fn list_numbers(&self) -> Result<Vec<Number>> {
        self.inner.list_numbers().await
    }
    async fn list_numbers_for(&self, account_id: &str) -> Result<Vec<Number>> {
        self.inner.list_numbers_for(account_id).await
    }
    async fn get_number(&self, account_id: &str, pattern: &str) -> Result<Option<Number>> {
        self.inner.get_number(account_id, pattern).await
    }
    async fn delete_number(&self, pattern: &str) -> Result<bool> {
        self.inner.delete_number(pattern).await
    }
    async fn upsert_blocked(&self, b: &BlockedNumber) -> Result<()> {
        self.inner.upsert_blocked(b).await
    }
    async fn list_blocked(&self) -> Result<Vec<BlockedNumber>> {
        self.inner.list_blocked().await
    }
    async fn list_blocked_for(&self, account_id: &str) -> Result<Vec<BlockedNumber>> {
        self.inner.list_blocked_for(account_id).await
    }
    async fn get_blocked(&self, account_id: &str, id: &str) -> Result<Option<BlockedNumber>> {
        self.inner.get_blocked(account_id, id).await
    }
    async fn delete_blocked(&self, id: &str) -> Result<bool> {
        self.inner.delete_blocked(id).await
    }
    async fn insert_denied_source(&self, d: &DeniedSource) -> Result<bool> {
        self.inner.insert_denied_source(d).await
    }
    async fn list_denied_sources(&self) -> Result<Vec<DeniedSource>> {
        self.inner.list_denied_sources().await
    }
    async fn delete_denied_source(&self, id: &str) -> Result<bool> {
        self.inner.delete_denied_source(id).await
    }
    async fn purge_denied_sources(&self, now_ms: i64) -> Result<u64> {
        self.inner.purge_denied_sources(now_ms).await
    }
    async fn upsert_sip_user(&self, u: &SipUser) -> Result<bool> {
        self.inner.upsert_sip_user(u).await
    }
    async fn list_sip_users(&self) -> Result<Vec<SipUser>> {
        self.inner.list_sip_users().await
    }
    async fn list_sip_users_for(&self, account_id: &str) -> Result<Vec<SipUser>> {
        self.inner.list_sip_users_for(account_id).await
    }
    async fn get_sip_user(&self, account_id: &str, username: &str) -> Result<Option<SipUser>> {
        self.inner.get_sip_user(account_id, username).await
    }
    async fn delete_sip_user(&self, username: &str) -> Result<bool> {
        self.inner.delete_sip_user(username).await
    }
    async fn update_message_status(&self, id: &str, status: &str) -> Result<bool> {
        self.inner.update_message_status(id, status).await
    }
    async fn claim_idempotency_key(
        &self,
        account: &str,
        key: &str,
        fingerprint: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<api::store::IdempotencyClaim> {
        self.inner
            .claim_idempotency_key(account, key, fingerprint, now_ms, ttl_ms)
            .await
    }
    async fn finish_idempotency_key(
        &self,
        account: &str,
        key: &str,
        answer: Option<(u16, &str)>,
    ) -> Result<()> {
        self.inner
            .finish_idempotency_key(account, key, answer)
            .await
    }
    async fn announce_change(&self) -> Result<()> {
        self.inner.announce_change().await
    }
    async fn upsert_registration(&self, r: &Registration) -> Result<()> {
        self.inner.upsert_registration(r).await
    }
    async fn delete_registration(&self, username: &str, contact: &str) -> Result<()> {
        self.inner.delete_registration(username, contact).await
    }
    async fn list_registrations(&self, now_ms: i64) -> Result<Vec<Registration>> {
        self.inner.list_registrations(now_ms).await
    }
    async fn apply_cdr_batch(&self, events: &[CdrEvent]) -> Result<()> {
        let failing = self.failing.load(Ordering::SeqCst);
        self.attempts
            .lock()
            .unwrap()
            .push((Instant::now(), events.len(), failing));
        if failing {
            return Err(StoreError::Db(sqlx::Error::PoolTimedOut));
        }
        self.inner.apply_cdr_batch(events).await
    }
    async fn dead_letter_cdr(&self, event: &CdrEvent, error: &str, at_ms: i64) -> Result<()> {
        self.inner.dead_letter_cdr(event, error, at_ms).await
    }
    async fn list_cdr_dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.inner.list_cdr_dead_letters().await
    }
    async fn get_call(&self, id: &str) -> Result<Option<CallRecord>> {
        self.inner.get_call(id).await
    }
    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<CallRecord>> {
        self.inner.list_calls(filter).await
    }
    async fn close_interrupted_calls(&self, now_ms: i64, node: &str) -> Result<u64> {
        self.inner.close_interrupted_calls(now_ms, node).await
    }
    async fn list_resumable_calls(&self, node: &str) -> Result<Vec<ResumableCall>> {
        self.inner.list_resumable_calls(node).await
    }
    async fn insert_message(&self, m: &MessageRecord) -> Result<()> {
        self.inner.insert_message(m).await
    }
    async fn list_messages(&self, account_id: &str, limit: u32) -> Result<Vec<MessageRecord>> {
        self.inner.list_messages(account_id, limit).await
    }
    async fn announce_registration(&self, n: &RegistrationNotice) -> Result<bool> {
        self.inner.announce_registration(n).await
    }
    async fn reserve_capacity(
        &self,
        call: &str,
        node: &str,
        scopes: &[(String, u32)],
        at: i64,
    ) -> Result<bool> {
        self.inner.reserve_capacity(call, node, scopes, at).await
    }
    async fn release_capacity(&self, call: &str) -> Result<()> {
        self.inner.release_capacity(call).await
    }
    async fn release_stale_capacity(&self, node: Option<&str>) -> Result<u64> {
        self.inner.release_stale_capacity(node).await
    }
    async fn delete_node(&self, id: &str, before: i64) -> Result<bool> {
        self.inner.delete_node(id, before).await
    }
    async fn register_node(&self, n: &NodeRecord) -> Result<()> {
        self.inner.register_node(n).await
    }
    async fn heartbeat_node(&self, n: &NodeRecord) -> Result<bool> {
        self.inner.heartbeat_node(n).await
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.inner.list_nodes().await
    }
    async fn close_lost_node_calls(
        &self,
        now: i64,
        node: &str,
        before: i64,
        abandon: bool,
    ) -> Result<u64> {
        self.inner
            .close_lost_node_calls(now, node, before, abandon)
            .await
    }
    async fn request_node_drain(&self, id: &str) -> Result<bool> {
        self.inner.request_node_drain(id).await
    }
}

const T0: i64 = 1_700_000_000_000;

/// The three events of call `n`: started, answered (even `n` only), ended.
fn lifecycle(n: u64) -> (CdrEvent, Vec<CdrEvent>) {
    let started = CdrEvent::Started(call(n, Some("acc-a"), Direction::Inbound, T0 + n as i64));
    let mut rest = Vec::new();
    if n.is_multiple_of(2) {
        rest.push(CdrEvent::Answered {
            id: call_id(n),
            at: T0 + n as i64 + 1_000,
            media_security: None,
        });
    }
    rest.push(CdrEvent::Ended {
        id: call_id(n),
        at: T0 + n as i64 + 5_000,
        cause: "normal".into(),
        sip_status: if n.is_multiple_of(2) { 200 } else { 487 },
        duration_ms: if n.is_multiple_of(2) { 4_000 } else { 0 },
    });
    (started, rest)
}

/// Checks that call `n` holds the final state of [`lifecycle`].
async fn assert_final(s: &dyn Store, n: u64) {
    let row = s
        .get_call(&call_id(n))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("call {n} missing"));
    let answered = n.is_multiple_of(2);
    assert_eq!(row.invite_at, T0 + n as i64, "call {n}");
    assert_eq!(
        row.answer_at,
        answered.then_some(T0 + n as i64 + 1_000),
        "call {n}"
    );
    assert_eq!(row.end_at, Some(T0 + n as i64 + 5_000), "call {n}");
    assert_eq!(row.end_cause.as_deref(), Some("normal"), "call {n}");
    assert_eq!(
        row.sip_status,
        Some(if answered { 200 } else { 487 }),
        "call {n}"
    );
}

fn push_all(q: &CdrQueue, calls: std::ops::Range<u64>) -> usize {
    let mut pushed = 0;
    for n in calls {
        let (started, rest) = lifecycle(n);
        q.push(started);
        pushed += 1;
        for ev in rest {
            q.push(ev);
            pushed += 1;
        }
    }
    pushed
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < until,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}/gw.db", dir.path().display());
    Arc::new(SqliteStore::open(&url).await.unwrap())
}

#[tokio::test]
async fn writer_batches_and_flushes_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlakyStore::new(sqlite(&dir).await, false);
    let queue = CdrQueue::new(10_000);
    let metrics = CdrMetrics::unregistered();
    let cfg = CdrWriterConfig {
        batch_max: 100,
        linger: Duration::from_millis(500),
        ..Default::default()
    };
    let writer = spawn_writer(store.clone(), queue.clone(), cfg, metrics.clone());

    // A trickle within the linger window goes in one batch. (The test
    // runtime is single-threaded: the writer runs only when we await.)
    let mut pushed = push_all(&queue, 0..1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metrics.written.get(), 0, "still lingering");
    pushed += push_all(&queue, 1..5);
    wait_for(Duration::from_secs(10), "first batch", || {
        metrics.written.get() == pushed as u64
    })
    .await;
    let sizes: Vec<usize> = store.attempts().iter().map(|a| a.1).collect();
    assert_eq!(sizes, vec![pushed], "one lingered batch");

    // A backlog goes in batches of at most batch_max, in order.
    pushed += push_all(&queue, 5..405);
    assert!(queue.depth() >= 400);
    wait_for(Duration::from_secs(30), "backlog", || {
        metrics.written.get() == pushed as u64
    })
    .await;
    let sizes: Vec<usize> = store.attempts().iter().map(|a| a.1).collect();
    assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");
    assert!(sizes.len() <= 1 + pushed.div_ceil(100) + 1, "{sizes:?}");
    assert_eq!(queue.depth(), 0);
    assert_eq!(metrics.queue_depth.get(), 0);

    // Shutdown flushes what is still queued.
    pushed += push_all(&queue, 405..505);
    assert_eq!(writer.shutdown(Duration::from_secs(10)).await, 0);
    assert_eq!(metrics.written.get(), pushed as u64);
    assert_eq!(metrics.write_failures.get(), 0);
    for n in 0..505 {
        assert_final(&*store, n).await;
    }
}

#[tokio::test]
async fn writer_backs_off_keeps_order_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlakyStore::new(sqlite(&dir).await, true);
    let queue = CdrQueue::new(1_000);
    let metrics = CdrMetrics::unregistered();
    let cfg = CdrWriterConfig {
        // Small batches split the events of one call over several of them:
        // if a failed batch came back out of order, an Ended would be
        // applied before its Started and lost.
        batch_max: 7,
        linger: Duration::from_millis(1),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(40),
    };
    let writer = spawn_writer(store.clone(), queue.clone(), cfg, metrics.clone());

    let started = Instant::now();
    let pushed = push_all(&queue, 0..30);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "push never blocks"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;

    let attempts = store.attempts();
    assert!(attempts.iter().all(|a| a.2), "all attempts failed");
    assert_eq!(metrics.write_failures.get(), attempts.len() as u64);
    assert_eq!(metrics.written.get(), 0);
    // Everything is still queued: the failed batch went back to the front
    // (the writer is asleep in its backoff whenever this task runs).
    assert_eq!(queue.depth(), pushed);
    assert_eq!(queue.unwritten(), pushed, "nothing counted as written");
    assert_eq!(metrics.queue_depth.get(), pushed as i64);
    // Exponential backoff: 10, 20, 40 ms, then capped at 40 ms.
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let min_gaps = [10u64, 20, 40, 40, 40];
    for (gap, min) in gaps.iter().zip(min_gaps) {
        assert!(*gap >= Duration::from_millis(min), "gaps {gaps:?}");
    }
    // Uncapped doubling would allow at most 6 attempts in 600 ms.
    assert!(attempts.len() >= 8, "capped backoff: {gaps:?}");
    assert!(attempts.iter().all(|a| a.1 == 7), "same batch size retried");

    // Recovery: everything lands, in order.
    store.failing.store(false, Ordering::SeqCst);
    wait_for(Duration::from_secs(10), "recovery", || {
        metrics.written.get() == pushed as u64
    })
    .await;
    assert_eq!(queue.unwritten(), 0, "all committed");
    assert_eq!(writer.shutdown(Duration::from_secs(5)).await, 0);
    for n in 0..30 {
        assert_final(&*store, n).await;
    }
}

#[tokio::test]
async fn shutdown_reports_unwritten_events_when_store_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlakyStore::new(sqlite(&dir).await, true);
    let queue = CdrQueue::new(10);
    let metrics = CdrMetrics::unregistered();
    let cfg = CdrWriterConfig {
        batch_max: 8,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_secs(5),
        ..Default::default()
    };
    let writer = spawn_writer(store.clone(), queue.clone(), cfg, metrics.clone());
    let pushed = push_all(&queue, 0..10);
    assert!(queue.is_saturated());
    wait_for(Duration::from_secs(5), "a failure", || {
        metrics.write_failures.get() > 0
    })
    .await;

    let t = Instant::now();
    let left = writer.shutdown(Duration::from_millis(300)).await;
    let took = t.elapsed();
    assert_eq!(left, pushed, "nothing was written");
    assert_eq!(queue.depth(), pushed, "still queued after shutdown");
    assert!(
        took >= Duration::from_millis(250),
        "kept retrying: {took:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "bounded by the timeout: {took:?}"
    );
    assert!(metrics.write_failures.get() >= 2);
    assert_eq!(metrics.written.get(), 0);

    // The events are not lost: a new writer on a healthy store writes them.
    store.failing.store(false, Ordering::SeqCst);
    let writer = spawn_writer(
        store.clone(),
        queue.clone(),
        CdrWriterConfig::default(),
        metrics,
    );
    assert_eq!(writer.shutdown(Duration::from_secs(5)).await, 0);
    for n in 0..10 {
        assert_final(&*store, n).await;
    }
}

#[test]
fn metrics_register_once() {
    let reg = prometheus::Registry::new();
    let m = CdrMetrics::register(&reg).unwrap();
    m.written.inc_by(3);
    let names: Vec<String> = reg.gather().iter().map(|f| f.name().to_string()).collect();
    for want in [
        "gateway_cdr_events_written_total",
        "gateway_store_queue_depth",
        "gateway_store_write_failures_total",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert!(
        CdrMetrics::register(&reg).is_err(),
        "duplicate registration"
    );
}

/// Runs `$TEST_PG_CTL <action>`; true on success.
fn pg_ctl(ctl: &str, action: &str) -> bool {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{ctl} {action}"))
        .output()
        .unwrap_or_else(|e| panic!("running sh -c '{ctl} {action}': {e}"));
    if !out.status.success() {
        eprintln!(
            "`{ctl} {action}` failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// Starts the server again if the test ends (or panics) while it is down,
/// so that later tests find it running.
struct RestartOnDrop(String);

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if !pg_ctl(&self.0, "status") {
            pg_ctl(&self.0, "start");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_outage_keeps_events_and_recovers() {
    let Some(url) = common::pg_url() else { return };
    let Some(ctl) = common::pg_env("TEST_PG_CTL") else {
        return;
    };
    // Exclusive: no other PostgreSQL test may run while the server is down.
    let schema = common::PgSchema::create_exclusive(&url).await;
    let store: Arc<dyn Store> = Arc::new(PgStore::connect_with(schema.opts.clone()).await.unwrap());
    let queue = CdrQueue::new(100_000);
    let metrics = CdrMetrics::unregistered();
    let cfg = CdrWriterConfig {
        batch_max: 100,
        linger: Duration::from_millis(5),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
    };
    let writer = spawn_writer(store.clone(), queue.clone(), cfg, metrics.clone());

    // Phase 1: server up. Calls 0..300 start.
    const BEFORE: u64 = 300;
    const TOTAL: u64 = 400;
    for n in 0..BEFORE {
        queue.push(lifecycle(n).0);
    }
    let mut pushed = BEFORE;
    wait_for(Duration::from_secs(30), "phase 1 written", || {
        metrics.written.get() == pushed
    })
    .await;

    // Phase 2: server down. The calls end, and new calls come and go.
    schema.raw.close().await;
    let _restart = RestartOnDrop(ctl.clone());
    assert!(pg_ctl(&ctl, "stop"), "stopping PostgreSQL");
    let t = Instant::now();
    for n in 0..BEFORE {
        for ev in lifecycle(n).1 {
            queue.push(ev);
            pushed += 1;
        }
    }
    pushed += push_all(&queue, BEFORE..TOTAL) as u64;
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "push never blocks"
    );
    // At least one retry fails too (each attempt gives up after the pool's
    // 3 s acquire timeout).
    wait_for(Duration::from_secs(30), "write failures", || {
        metrics.write_failures.get() >= 2
    })
    .await;
    assert!(queue.depth() > 0);
    assert!(
        queue.depth() as u64 + 100 >= pushed - BEFORE,
        "all but the batch in flight queued: depth {}",
        queue.depth()
    );
    assert_eq!(metrics.written.get(), BEFORE, "nothing written while down");

    // Phase 3: server back. The backlog drains.
    assert!(pg_ctl(&ctl, "start"), "starting PostgreSQL");
    wait_for(Duration::from_secs(30), "backlog drained", || {
        metrics.written.get() == pushed
    })
    .await;
    assert_eq!(queue.depth(), 0);
    assert_eq!(writer.shutdown(Duration::from_secs(5)).await, 0);
    assert_eq!(metrics.queue_depth.get(), 0);

    // Every call is there, in its final state, seen from a new connection.
    let reopened = PgStore::connect_with(schema.opts.clone()).await.unwrap();
    for n in 0..TOTAL {
        assert_final(&reopened, n).await;
    }
    let all = reopened
        .list_calls(&CallFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), TOTAL as usize);
    reopened.pool().close().await;
    drop(store);
    schema.drop().await;
}

fn rec(n: u64) -> CallRecord {
    call(n, Some("acc-a"), Direction::Inbound, T0 + n as i64)
}

/// A batch holding one event the database refuses for good: the others are
/// written, the bad one lands in `cdr_dead_letters`, the queue empties and
/// later events go through. The refusal is the database's own: a CHECK
/// constraint (PostgreSQL, SQLSTATE 23514) or a trigger that aborts
/// (SQLite, SQLITE_CONSTRAINT), added by the test to its own schema.
async fn poison_batch_goes_row_by_row(store: Arc<dyn Store>) {
    let q = CdrQueue::new(1000);
    let metrics = CdrMetrics::unregistered();
    let w = spawn_writer(
        store.clone(),
        q.clone(),
        CdrWriterConfig {
            linger: Duration::from_millis(20),
            retry_initial: Duration::from_millis(10),
            ..CdrWriterConfig::default()
        },
        metrics.clone(),
    );
    let mut poison = rec(2);
    poison.from_number = "poison".into();
    for c in [rec(1), poison, rec(3)] {
        q.push(CdrEvent::Started(c));
    }
    wait_for(Duration::from_secs(10), "queue drained", || {
        q.unwritten() == 0
    })
    .await;
    q.push(CdrEvent::Started(rec(4)));
    assert_eq!(w.shutdown(Duration::from_secs(5)).await, 0);
    for n in [1, 3, 4] {
        assert!(
            store.get_call(&call_id(n)).await.unwrap().is_some(),
            "call {n}"
        );
    }
    assert!(store.get_call(&call_id(2)).await.unwrap().is_none());
    let dead = store.list_cdr_dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].call_id, call_id(2));
    assert!(dead[0].event.contains("poison"), "{dead:?}");
    assert_eq!(metrics.dead_letters.get(), 1);
}

#[tokio::test]
async fn sqlite_refusal_goes_to_dead_letters_and_the_queue_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("p.db").display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON calls WHEN NEW.from_number = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'poison refused'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    poison_batch_goes_row_by_row(Arc::new(store)).await;
}

#[tokio::test]
async fn postgres_refusal_goes_to_dead_letters_and_the_queue_goes_on() {
    let Some(url) = common::pg_url() else {
        return;
    };
    let schema = common::PgSchema::create(&url).await;
    let store = PgStore::open(&schema.url).await.unwrap();
    sqlx::query("ALTER TABLE calls ADD CONSTRAINT refuse_poison CHECK (from_number <> 'poison')")
        .execute(store.pool())
        .await
        .unwrap();
    poison_batch_goes_row_by_row(Arc::new(store)).await;
}

#[tokio::test]
async fn postgres_stores_control_characters_escaped_as_sqlite_does() {
    let Some(url) = common::pg_url() else {
        return;
    };
    let schema = common::PgSchema::create(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let stores: [Arc<dyn Store>; 2] = [
        Arc::new(PgStore::open(&schema.url).await.unwrap()),
        sqlite(&dir).await,
    ];
    for store in stores {
        let mut c = rec(7);
        // A `%00` in a From user part and a NUL in a Call-ID, as hostile
        // input brings them: PostgreSQL refuses NUL in TEXT.
        c.from_number = "+1555\u{0}0001".into();
        c.sip_call_id = "bad\u{0}\u{7}id".into();
        store
            .apply_cdr_batch(&[CdrEvent::Started(c)])
            .await
            .unwrap();
        let got = store.get_call(&call_id(7)).await.unwrap().unwrap();
        assert_eq!(got.from_number, "+1555\\x000001", "{}", store.backend());
        assert_eq!(got.sip_call_id, "bad\\x00\\x07id", "{}", store.backend());
    }
}
