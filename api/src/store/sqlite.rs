//! SQLite backend: one file (or an in-memory database), WAL journal.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::common::impl_store;
use super::{Result, StoreError};

/// Embedded store for single-node deployments.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// Connections in the pool of a file database (WAL: readers run in
/// parallel with the one writer; writers wait up to the busy timeout).
const MAX_CONNECTIONS: u32 = 8;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteStore {
    /// Opens (creating it and its parent directory if missing) the database
    /// named by `url` — `sqlite://path`, `sqlite:path`, or `sqlite::memory:`
    /// — and runs the migrations.
    ///
    /// File databases use WAL with `synchronous=NORMAL`, a 16 MiB page
    /// cache and a 5 s busy timeout. An in-memory database lives as long as the store (one
    /// connection that is never recycled).
    pub async fn open(url: &str) -> Result<Self> {
        let (db, params) =
            split_url(url).ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
        let in_memory =
            db == ":memory:" || params.is_some_and(|p| p.split('&').any(|kv| kv == "mode=memory"));
        let opts = SqliteConnectOptions::from_str(url)?.busy_timeout(BUSY_TIMEOUT);
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts)
                .await?
        } else {
            if let Some(parent) = opts.get_filename().parent()
                && !parent.as_os_str().is_empty()
            {
                create_dir(parent).await?;
            }
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // 16 MiB of page cache per connection (the default 2 MiB
                // re-reads index pages from the OS on every CDR batch).
                .pragma("cache_size", "-16384");
            SqlitePoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .connect_with(opts)
                .await?
        };
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// The connection pool, for callers that need a query the trait lacks.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// `sqlite://path?params` or `sqlite:path?params` → (path, params).
fn split_url(url: &str) -> Option<(&str, Option<&str>)> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(match rest.split_once('?') {
        Some((db, params)) => (db, Some(params)),
        None => (rest, None),
    })
}

async fn create_dir(dir: &Path) -> Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))
}

impl_store!(SqliteStore, "sqlite", sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn url_forms() {
        assert_eq!(split_url("sqlite://a/b.db"), Some(("a/b.db", None)));
        assert_eq!(split_url("sqlite:///abs/b.db"), Some(("/abs/b.db", None)));
        assert_eq!(
            split_url("sqlite:b.db?mode=rwc"),
            Some(("b.db", Some("mode=rwc")))
        );
        assert_eq!(split_url("sqlite::memory:"), Some((":memory:", None)));
        assert_eq!(split_url("postgres://x"), None);
    }
}
