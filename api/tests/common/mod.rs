//! Helpers shared by the integration tests: PostgreSQL discovery (with the
//! skip rule), per-test schemas, and record builders.
// Shared by every test binary, each of which uses a different part:
// `pub` here is the module's interface, not the crate's.
#![allow(unreachable_pub)]
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use api::store::{CallRecord, Direction};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// How to get a throwaway server for the PostgreSQL tests.
pub const PG_HINT: &str = "start one with `eval \"$(scripts/pg-throwaway.sh start /tmp/gw-pg)\"` \
     (run from the workspace root), or set GATEWAY_TEST_SKIP_PG=1 to skip the PostgreSQL tests";

/// Whether the PostgreSQL tests were explicitly switched off.
fn skip_pg(what: &str) -> bool {
    if std::env::var("GATEWAY_TEST_SKIP_PG").as_deref() == Ok("1") {
        eprintln!("SKIPPED (PostgreSQL): {what} is not set and GATEWAY_TEST_SKIP_PG=1");
        true
    } else {
        false
    }
}

/// An environment variable a PostgreSQL test needs. `None` (the test
/// returns early) only when GATEWAY_TEST_SKIP_PG=1; otherwise a missing
/// variable fails the test, so a CI run cannot pass without PostgreSQL by
/// accident.
pub fn pg_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ if skip_pg(var) => None,
        _ => panic!("{var} is not set: the PostgreSQL tests need it; {PG_HINT}"),
    }
}

/// `TEST_DATABASE_URL`, under the skip rule of [`pg_env`].
pub fn pg_url() -> Option<String> {
    pg_env("TEST_DATABASE_URL")
}

/// A lock shared by the processes that run PostgreSQL tests. Ordinary
/// tests hold it shared; the outage test, which stops the server, holds it
/// exclusively, so that no other test is using the server meanwhile — also
/// under test runners that run every test in its own process, in parallel
/// (nextest). Released on drop.
pub struct PgLock(std::fs::File);

impl PgLock {
    pub async fn acquire(exclusive: bool) -> PgLock {
        let path = std::env::temp_dir().join("gateway-api-pg-tests.lock");
        let file = tokio::task::spawn_blocking(move || {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            if exclusive {
                f.lock()?;
            } else {
                f.lock_shared()?;
            }
            std::io::Result::Ok(f)
        })
        .await
        .expect("lock task")
        .unwrap_or_else(|e| panic!("locking the PostgreSQL test lock file: {e}"));
        PgLock(file)
    }
}

/// A schema of its own for one test, so that tests running in parallel on
/// one database never see each other's rows. The store reaches it through
/// `search_path`, so the migrations create their tables there.
pub struct PgSchema {
    pub name: String,
    /// URL that selects the schema (`?options=-c search_path=…`).
    pub url: String,
    /// Connect options that select the schema.
    pub opts: PgConnectOptions,
    /// A small pool on the schema for raw SQL.
    pub raw: PgPool,
    admin: PgPool,
    _lock: PgLock,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl PgSchema {
    /// A fresh schema; holds the [`PgLock`] shared until dropped.
    pub async fn create(url: &str) -> PgSchema {
        Self::create_locked(url, PgLock::acquire(false).await).await
    }

    /// A fresh schema for a test that stops the server: holds the
    /// [`PgLock`] exclusively until dropped.
    pub async fn create_exclusive(url: &str) -> PgSchema {
        Self::create_locked(url, PgLock::acquire(true).await).await
    }

    async fn create_locked(url: &str, lock: PgLock) -> PgSchema {
        let base: PgConnectOptions = url
            .parse()
            .unwrap_or_else(|e| panic!("TEST_DATABASE_URL {url:?} does not parse: {e}"));
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await
            .unwrap_or_else(|e| {
                panic!("cannot connect to TEST_DATABASE_URL {url:?}: {e}; {PG_HINT}")
            });
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "gw_test_{}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&admin)
            .await
            .expect("create test schema");
        let opts = base.options([("search_path", name.as_str())]);
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}options=-c%20search_path%3D{name}");
        let raw = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(opts.clone())
            .await
            .expect("connect to test schema");
        PgSchema {
            name,
            url,
            opts,
            raw,
            admin,
            _lock: lock,
        }
    }

    /// Drops the schema (only on success: a failed test leaves it for
    /// inspection; the database is a throwaway one).
    pub async fn drop(self) {
        self.raw.close().await;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&self.admin)
            .await
            .expect("drop test schema");
        self.admin.close().await;
    }
}

/// Our call id for test call number `n`.
pub fn call_id(n: u64) -> String {
    format!("CA{n:032x}")
}

/// An open, unanswered call.
pub fn call(n: u64, account: Option<&str>, direction: Direction, invite_at: i64) -> CallRecord {
    CallRecord {
        id: call_id(n),
        account_id: account.map(str::to_string),
        direction,
        from_number: format!("+1555000{:04}", n % 10_000),
        to_number: "+15550009999".to_string(),
        trunk: Some("local".to_string()),
        sip_call_id: format!("sip-{n}@test"),
        invite_at,
        answer_at: None,
        end_at: None,
        end_cause: None,
        sip_status: None,
        duration_ms: None,
        media_mode: "echo".to_string(),
        node: None,
        media_security: None,
    }
}
