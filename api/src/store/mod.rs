//! The store: one trait, two sqlx backends (SQLite embedded, PostgreSQL).

mod common;
mod fold;
mod rows;
mod sql;
pub use domain::model;
pub mod postgres;
pub mod sqlite;

pub use model::*;
pub use rows::db_text;
pub use sql::{DEFAULT_LIMIT, MAX_LIMIT};

use async_trait::async_trait;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid stored value in {table}.{column}: {value}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        value: String,
    },
    /// Holds the URL's scheme only: the rest may carry a password.
    #[error("unsupported database URL scheme {0:?} (expected sqlite:… or postgres://…)")]
    UnsupportedUrl(String),
}

impl StoreError {
    /// Whether the database refused the data itself, so that the same
    /// statement would fail again however often it is retried: PostgreSQL
    /// SQLSTATE classes 22 (data exception, e.g. a NUL in TEXT) and 23
    /// (integrity constraint), SQLite's constraint, mismatch and too-big
    /// results. Connection and server trouble is not permanent.
    pub fn is_permanent(&self) -> bool {
        let StoreError::Db(sqlx::Error::Database(e)) = self else {
            return false;
        };
        let code = e.code();
        let code = code.as_deref().unwrap_or("");
        match e.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
            // Primary result codes (the low byte of an extended code):
            // SQLITE_TOOBIG 18, SQLITE_CONSTRAINT 19, SQLITE_MISMATCH 20.
            Some(_) => code
                .parse::<i32>()
                .is_ok_and(|c| matches!(c & 0xff, 18..=20)),
            None => code.starts_with("22") || code.starts_with("23"),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A CDR event the database refused for good, as kept in
/// `cdr_dead_letters`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub call_id: String,
    /// The event as text (control characters escaped).
    pub event: String,
    pub error: String,
    pub at: i64,
}

/// Everything the daemon and the API persist.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Backend name for logs and metrics ("sqlite" | "postgres").
    fn backend(&self) -> &'static str;

    async fn upsert_account(&self, a: &Account) -> Result<()>;
    async fn list_accounts(&self) -> Result<Vec<Account>>;
    /// Account `id`, if there is one.
    async fn get_account(&self, id: &str) -> Result<Option<Account>>;
    /// Sets the account's auth token (Twilio's: the key of
    /// `X-Twilio-Signature` and the Twilio-compatible API's password);
    /// false when there is no such account.
    async fn set_account_auth_token(&self, id: &str, token: &str) -> Result<bool>;
    /// The account's auth token, if it has one.
    async fn account_auth_token(&self, id: &str) -> Result<Option<String>>;

    async fn upsert_trunk(&self, t: &Trunk) -> Result<()>;
    async fn list_trunks(&self) -> Result<Vec<Trunk>>;
    /// Trunk `name`, if there is one, whichever account may use it.
    async fn get_trunk(&self, name: &str) -> Result<Option<Trunk>>;
    async fn delete_trunk(&self, name: &str) -> Result<bool>;

    /// Inserts the number, or replaces it when it belongs to the same
    /// account, in one statement: `false` (nothing written) when another
    /// account holds the pattern, whatever a concurrent writer did.
    async fn upsert_number(&self, n: &Number) -> Result<bool>;
    /// Every account's numbers, by pattern (the routing table's).
    async fn list_numbers(&self) -> Result<Vec<Number>>;
    /// Account `account_id`'s numbers, by pattern.
    async fn list_numbers_for(&self, account_id: &str) -> Result<Vec<Number>>;
    /// The number with canonical pattern `pattern`, if `account_id` holds it.
    async fn get_number(&self, account_id: &str, pattern: &str) -> Result<Option<Number>>;
    async fn delete_number(&self, pattern: &str) -> Result<bool>;

    async fn upsert_blocked(&self, b: &BlockedNumber) -> Result<()>;
    /// Every account's blocks, by id (the routing table's).
    async fn list_blocked(&self) -> Result<Vec<BlockedNumber>>;
    /// Account `account_id`'s blocks, by id.
    async fn list_blocked_for(&self, account_id: &str) -> Result<Vec<BlockedNumber>>;
    /// Block `id`, if it is `account_id`'s.
    async fn get_blocked(&self, account_id: &str, id: &str) -> Result<Option<BlockedNumber>>;
    async fn delete_blocked(&self, id: &str) -> Result<bool>;

    /// Inserts the entry; `false` (nothing written) when its network is
    /// already denied (by another row).
    async fn insert_denied_source(&self, d: &DeniedSource) -> Result<bool>;
    /// Every entry, expired ones too, by network.
    async fn list_denied_sources(&self) -> Result<Vec<DeniedSource>>;
    async fn delete_denied_source(&self, id: &str) -> Result<bool>;
    /// Removes the entries that expired by `now_ms`; how many.
    async fn purge_denied_sources(&self, now_ms: i64) -> Result<u64>;

    /// Like [`Store::upsert_number`]: `false` when another account holds
    /// the username.
    async fn upsert_sip_user(&self, u: &SipUser) -> Result<bool>;
    /// Every account's SIP users, by username (the registrar's).
    async fn list_sip_users(&self) -> Result<Vec<SipUser>>;
    /// Account `account_id`'s SIP users, by username.
    async fn list_sip_users_for(&self, account_id: &str) -> Result<Vec<SipUser>>;
    /// SIP user `username`, if it is `account_id`'s.
    async fn get_sip_user(&self, account_id: &str, username: &str) -> Result<Option<SipUser>>;
    /// Deletes the user and its registrar bindings.
    async fn delete_sip_user(&self, username: &str) -> Result<bool>;

    /// Inserts or refreshes the binding (username, contact).
    async fn upsert_registration(&self, r: &Registration) -> Result<()>;
    async fn delete_registration(&self, username: &str, contact: &str) -> Result<()>;
    /// Bindings that have not lapsed at `now_ms`.
    async fn list_registrations(&self, now_ms: i64) -> Result<Vec<Registration>>;

    /// Applies CDR events in order in one transaction. Idempotent: a batch
    /// applied twice leaves the same rows (`Started` never overwrites,
    /// the first `Answered` and the first `Ended` win).
    ///
    /// An `Answered`/`Ended` for a call that has no row yet changes nothing,
    /// so a call's `Started` must be applied first, in the same or an
    /// earlier batch — which the FIFO [`crate::cdr::CdrQueue`] guarantees
    /// when the `Started` is pushed first.
    async fn apply_cdr_batch(&self, events: &[CdrEvent]) -> Result<()>;
    /// Keeps `event`, which the database refused for good with `error`, in
    /// `cdr_dead_letters`, so the queue can go on past it.
    async fn dead_letter_cdr(&self, event: &CdrEvent, error: &str, at_ms: i64) -> Result<()>;
    /// The dead-lettered CDR events, oldest first.
    async fn list_cdr_dead_letters(&self) -> Result<Vec<DeadLetter>>;
    async fn get_call(&self, id: &str) -> Result<Option<CallRecord>>;
    /// Calls matching `filter`, newest first by (invite_at, id); at most
    /// `filter.limit` rows ([`DEFAULT_LIMIT`] for 0, capped at
    /// [`MAX_LIMIT`]). With `before_id`, the rows that sort after that call
    /// (the next page); an unknown `before_id` gives an empty page.
    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<CallRecord>>;
    /// Closes calls left open by a crash as `interrupted`; returns how many.
    /// `end_at` = `now_ms`, `sip_status` kept if set else 500, `duration_ms`
    /// = `now_ms - answer_at` for answered calls (never negative), else 0.
    /// Calls that are resumable ([`CdrEvent::Resumable`]) stay open for
    /// their node to take back; resume rows of ended calls are swept.
    /// Only calls of `node` (and rows from before calls had a node) are
    /// closed: the other nodes' calls are theirs.
    async fn close_interrupted_calls(&self, now_ms: i64, node: &str) -> Result<u64>;
    /// The open calls `node` left resumable, oldest first.
    async fn list_resumable_calls(&self, node: &str) -> Result<Vec<ResumableCall>>;

    /// Claims `key` for a request with `fingerprint` (its body) at `now_ms`,
    /// unless a claim younger than `ttl_ms` holds it.
    async fn claim_idempotency_key(
        &self,
        account: &str,
        key: &str,
        fingerprint: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<IdempotencyClaim>;
    /// Records the answer of the request that claimed `key`, or (`None`)
    /// releases the key so that a retry may claim it.
    async fn finish_idempotency_key(
        &self,
        account: &str,
        key: &str,
        answer: Option<(u16, &str)>,
    ) -> Result<()>;

    /// Tells every node sharing the database that routing rows changed
    /// (PostgreSQL: `NOTIFY gateway_routing`; SQLite has one node: no-op).
    async fn announce_change(&self) -> Result<()>;

    /// Tells every node sharing the database about a registration change
    /// (PostgreSQL: `NOTIFY gateway_registrations` with the notice as
    /// JSON; SQLite has one node: no-op). False when the notice was too
    /// large to announce.
    async fn announce_registration(&self, notice: &RegistrationNotice) -> Result<bool>;

    async fn insert_message(&self, m: &MessageRecord) -> Result<()>;
    /// Sets a message's status (`sent`, `failed`); false if no such row.
    async fn update_message_status(&self, id: &str, status: &str) -> Result<bool>;
    /// Messages of the account, newest first; `limit` as for `list_calls`.
    async fn list_messages(&self, account_id: &str, limit: u32) -> Result<Vec<MessageRecord>>;
    /// Message `id` (any account's: callers check the owner).
    async fn get_message(&self, id: &str) -> Result<Option<MessageRecord>>;
    /// Stores a recording's row (again: no change).
    async fn insert_recording(&self, r: &RecordingRecord) -> Result<()>;
    /// The account's recordings, newest first.
    async fn list_recordings(&self, account_id: &str, limit: u32) -> Result<Vec<RecordingRecord>>;
    /// Recording `id` (any account's: callers check the owner).
    async fn get_recording(&self, id: &str) -> Result<Option<RecordingRecord>>;
    /// Deletes recording `id`'s row; whether there was one.
    async fn delete_recording(&self, id: &str) -> Result<bool>;

    /// Records node `n` at its start: inserted, or replaced with its drain
    /// request cleared (a request was for the run that ended).
    async fn register_node(&self, n: &NodeRecord) -> Result<()>;
    /// The node's heartbeat: its row refreshed (the drain request kept);
    /// returns whether a drain was requested.
    async fn heartbeat_node(&self, n: &NodeRecord) -> Result<bool>;
    /// Every node, by id.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Closes the open calls of node `node` as `node_lost` if its last
    /// heartbeat is older than `lapsed_before_ms` (checked in the same
    /// statement); the calls it left resumable stay open for its return,
    /// unless `abandon` (its resume grace is over): then they are closed
    /// too and its resume rows and call-limit slots go.
    async fn close_lost_node_calls(
        &self,
        now_ms: i64,
        node: &str,
        lapsed_before_ms: i64,
        abandon: bool,
    ) -> Result<u64>;
    /// Reserves one slot of every `(scope, limit)` for call `call_id` on
    /// node `node`, all or none: false (nothing reserved) when a scope
    /// already holds `limit` reservations. Serialised per scope on
    /// PostgreSQL (an advisory lock), so concurrent nodes never overbook.
    async fn reserve_capacity(
        &self,
        call_id: &str,
        node: &str,
        scopes: &[(String, u32)],
        at_ms: i64,
    ) -> Result<bool>;
    /// Releases call `call_id`'s reservations (none: no-op).
    async fn release_capacity(&self, call_id: &str) -> Result<()>;
    /// Releases what no live call holds any more: the reservations of
    /// calls whose record is closed, and, for `node` (this node, at its
    /// start), those of its calls not left resumable. Returns how many.
    async fn release_stale_capacity(&self, node: Option<&str>) -> Result<u64>;
    /// Forgets node `id` (decommissioned): only if its last heartbeat is
    /// older than `lapsed_before_ms` and none of its calls is open (a lost
    /// node's calls must be closed first). False when it was not removed.
    async fn delete_node(&self, id: &str, lapsed_before_ms: i64) -> Result<bool>;
    /// Asks node `id` to drain (it does on its next heartbeat); false if
    /// no such node.
    async fn request_node_drain(&self, id: &str) -> Result<bool>;
}

/// The PostgreSQL channel routing changes are announced on.
pub const CHANGE_CHANNEL: &str = "gateway_routing";

/// The PostgreSQL channel registration changes are announced on, as JSON
/// [`RegistrationNotice`]s.
pub const REGISTRATION_CHANNEL: &str = "gateway_registrations";

/// Largest notice announced (PostgreSQL refuses payloads of 8000 bytes and
/// more); a larger one reaches the other nodes at their next full reload.
pub const MAX_NOTICE_BYTES: usize = 7_900;

/// Opens the store named by `url` (`sqlite://path` or `postgres://…`) and
/// runs its migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        Err(StoreError::UnsupportedUrl(
            scheme.chars().take(32).collect(),
        ))
    }
}
