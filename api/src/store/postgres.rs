//! PostgreSQL backend, for deployments with several nodes or an existing
//! database server.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::Result;
use super::common::impl_store;

/// Store on a PostgreSQL server.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

const MAX_CONNECTIONS: u32 = 8;
/// How long a query waits for a connection. While the server is down every
/// call fails after at most this long, which bounds how long the CDR writer
/// and the API block on an outage.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl PgStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and runs the
    /// migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let opts: PgConnectOptions = url.parse()?;
        Self::connect_with(opts).await
    }

    /// Like [`PgStore::open`] with options built by the caller, e.g. with a
    /// `search_path` (`opts.options([("search_path", "tenant")])`): the
    /// migrations then create their tables in that schema.
    pub async fn connect_with(opts: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// The connection pool, for callers that need a query the trait lacks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl_store!(PgStore, "postgres", sqlx::Postgres);

/// Listens on `channel` for as long as the process runs: each
/// notification's payload goes to `tx`, and `None` after every (re)connect
/// (what was announced while the connection was down is lost: the receiver
/// reloads). Ends when `tx` is closed.
pub async fn follow_channel(
    url: String,
    channel: &'static str,
    tx: tokio::sync::mpsc::UnboundedSender<Option<String>>,
) {
    use sqlx::postgres::PgListener;
    loop {
        let listener = async {
            let mut l = PgListener::connect(&url).await?;
            l.listen(channel).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        match listener {
            Ok(mut l) => {
                if tx.send(None).is_err() {
                    return;
                }
                loop {
                    let sent = match l.try_recv().await {
                        Ok(Some(n)) => tx.send(Some(n.payload().to_string())),
                        Ok(None) => tx.send(None),
                        Err(e) => {
                            tracing::warn!(channel, error = %e, "listener failed; reconnecting");
                            break;
                        }
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(channel, error = %e, "cannot listen; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wakes `changed` whenever a node announces a routing change
/// ([`super::Store::announce_change`]), and once after every (re)connect,
/// since announcements made meanwhile are lost. Runs until the process ends.
pub async fn follow_changes(url: String, changed: std::sync::Arc<tokio::sync::Notify>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(follow_channel(url, super::CHANGE_CHANNEL, tx));
    while rx.recv().await.is_some() {
        changed.notify_one();
    }
}
