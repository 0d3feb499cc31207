//! What the two backends share: the SQL text, the row types the queries
//! decode into, the checked conversions from rows to the model, and the
//! `Store` implementation itself (the `impl_store!` macro).
//!
//! Both backends run the very same statements. Placeholders are written
//! `$1`, `$2`, …: PostgreSQL's native form, which SQLite (and sqlx-sqlite)
//! accept as numbered parameters too, repeated uses included.
//!
//! Conversions never panic on what the database holds: an unknown enum
//! string, a number out of range for its Rust type or malformed JSON is
//! reported as [`StoreError::Corrupt`].

use super::model::*;
use super::{Result, StoreError};

/// `UPDATE calls SET …` closing open rows at `$1` with end cause `$cause`:
/// a recorded `sip_status` kept (else 200 if answered, 500 if not), the
/// duration from `answer_at`.
macro_rules! close_calls_at_1 {
    ($cause:literal) => {
        concat!(
            "UPDATE calls SET end_at = $1, end_cause = '",
            $cause,
            "', sip_status = COALESCE(sip_status, \
             CASE WHEN answer_at IS NULL THEN 500 ELSE 200 END), \
             duration_ms = CASE WHEN answer_at IS NULL OR answer_at > $1 THEN 0 \
             ELSE $1 - answer_at END "
        )
    };
}

// ------------------------------------------------------- text as stored

/// `s` as it is stored: C0 control characters but tab, CR and LF, and DEL,
/// become `\xNN` (two lower-case hex digits). PostgreSQL refuses a NUL in
/// TEXT and SQLite cuts strings at one, so call records from hostile input
/// (a `%00` in a From user part, a NUL in a display name) are written the
/// same way on both backends instead of failing their batch.
pub fn db_text(s: &str) -> std::borrow::Cow<'_, str> {
    let refused = |c: char| c.is_ascii_control() && !matches!(c, '\t' | '\r' | '\n');
    if !s.contains(refused) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if refused(c) {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn db_text_owned(s: &mut String) {
    if let std::borrow::Cow::Owned(o) = db_text(s) {
        *s = o;
    }
}

/// A call record with every text field as it is stored ([`db_text`]).
pub(crate) fn stored_call(c: &CallRecord) -> CallRecord {
    let mut c = c.clone();
    for s in [
        &mut c.id,
        &mut c.from_number,
        &mut c.to_number,
        &mut c.sip_call_id,
        &mut c.media_mode,
    ] {
        db_text_owned(s);
    }
    for s in [
        &mut c.account_id,
        &mut c.trunk,
        &mut c.end_cause,
        &mut c.node,
    ]
    .into_iter()
    .flatten()
    {
        db_text_owned(s);
    }
    c
}

pub(crate) const INSERT_DEAD_LETTER: &str =
    "INSERT INTO cdr_dead_letters (call_id, event, error, at) VALUES ($1, $2, $3, $4)";
pub(crate) const LIST_DEAD_LETTERS: &str =
    "SELECT call_id, event, error, at FROM cdr_dead_letters ORDER BY seq";

// ---------------------------------------------------------------- SQL text

pub(crate) const UPSERT_ACCOUNT: &str = "INSERT INTO accounts (id, name, number_ranges) \
     VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
     number_ranges = excluded.number_ranges";
/// The columns of [`AccountRow`], in order.
macro_rules! account_columns {
    () => {
        "id, name, number_ranges"
    };
}
pub(crate) const LIST_ACCOUNTS: &str =
    concat!("SELECT ", account_columns!(), " FROM accounts ORDER BY id");
pub(crate) const GET_ACCOUNT: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE id = $1"
);

pub(crate) const UPSERT_TRUNK: &str = "INSERT INTO trunks \
     (name, source_cidrs, outbound_address, transport, username, password, max_calls, \
     transfer, account_id, requests_per_sec, tls, media_security, srtp_cleartext_keying) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (name) DO UPDATE SET source_cidrs = excluded.source_cidrs, \
     outbound_address = excluded.outbound_address, transport = excluded.transport, \
     username = excluded.username, password = excluded.password, \
     max_calls = excluded.max_calls, transfer = excluded.transfer, \
     account_id = excluded.account_id, requests_per_sec = excluded.requests_per_sec, \
     tls = excluded.tls, media_security = excluded.media_security, \
     srtp_cleartext_keying = excluded.srtp_cleartext_keying";
/// The columns of [`TrunkRow`], in order.
macro_rules! trunk_columns {
    () => {
        "name, source_cidrs, outbound_address, transport, username, password, max_calls, \
         transfer, account_id, requests_per_sec, tls, media_security, srtp_cleartext_keying"
    };
}
pub(crate) const LIST_TRUNKS: &str =
    concat!("SELECT ", trunk_columns!(), " FROM trunks ORDER BY name");
pub(crate) const GET_TRUNK: &str =
    concat!("SELECT ", trunk_columns!(), " FROM trunks WHERE name = $1");
pub(crate) const DELETE_TRUNK: &str = "DELETE FROM trunks WHERE name = $1";

pub(crate) const UPSERT_NUMBER: &str = "INSERT INTO numbers \
     (pattern, account_id, route, target, dialect, params, trunk, max_calls, fallback, \
     voice_webhook, sms_webhook, media_security) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (pattern) DO UPDATE SET account_id = excluded.account_id, \
     route = excluded.route, target = excluded.target, dialect = excluded.dialect, \
     params = excluded.params, trunk = excluded.trunk, max_calls = excluded.max_calls, \
     fallback = excluded.fallback, voice_webhook = excluded.voice_webhook, \
     sms_webhook = excluded.sms_webhook, media_security = excluded.media_security \
     WHERE numbers.account_id = excluded.account_id";
/// The columns of [`NumberRow`], in order.
macro_rules! number_columns {
    () => {
        "pattern, account_id, route, target, dialect, params, trunk, max_calls, fallback, \
         voice_webhook, sms_webhook, media_security"
    };
}
pub(crate) const LIST_NUMBERS: &str = concat!(
    "SELECT ",
    number_columns!(),
    " FROM numbers ORDER BY pattern"
);
pub(crate) const LIST_ACCOUNT_NUMBERS: &str = concat!(
    "SELECT ",
    number_columns!(),
    " FROM numbers WHERE account_id = $1 ORDER BY pattern"
);
pub(crate) const GET_ACCOUNT_NUMBER: &str = concat!(
    "SELECT ",
    number_columns!(),
    " FROM numbers WHERE account_id = $1 AND pattern = $2"
);
pub(crate) const DELETE_NUMBER: &str = "DELETE FROM numbers WHERE pattern = $1";

pub(crate) const UPSERT_BLOCKED: &str = "INSERT INTO blocked_numbers \
     (id, account_id, number_pattern, caller_pattern) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id, \
     number_pattern = excluded.number_pattern, caller_pattern = excluded.caller_pattern";
/// The columns of [`BlockedRow`], in order.
macro_rules! blocked_columns {
    () => {
        "id, account_id, number_pattern, caller_pattern"
    };
}
pub(crate) const LIST_BLOCKED: &str = concat!(
    "SELECT ",
    blocked_columns!(),
    " FROM blocked_numbers ORDER BY id"
);
pub(crate) const LIST_ACCOUNT_BLOCKED: &str = concat!(
    "SELECT ",
    blocked_columns!(),
    " FROM blocked_numbers WHERE account_id = $1 ORDER BY id"
);
pub(crate) const GET_ACCOUNT_BLOCKED: &str = concat!(
    "SELECT ",
    blocked_columns!(),
    " FROM blocked_numbers WHERE account_id = $1 AND id = $2"
);
pub(crate) const DELETE_BLOCKED: &str = "DELETE FROM blocked_numbers WHERE id = $1";

pub(crate) const INSERT_DENIED_SOURCE: &str = "INSERT INTO denied_sources \
     (id, network, reason, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (network) DO NOTHING";
pub(crate) const LIST_DENIED_SOURCES: &str = "SELECT id, network, reason, created_at, \
     expires_at FROM denied_sources ORDER BY network";
pub(crate) const DELETE_DENIED_SOURCE: &str = "DELETE FROM denied_sources WHERE id = $1";
pub(crate) const PURGE_DENIED_SOURCES: &str =
    "DELETE FROM denied_sources WHERE expires_at IS NOT NULL AND expires_at <= $1";

pub(crate) const REGISTER_NODE: &str = "INSERT INTO nodes \
     (id, api_address, version, started_at, heartbeat_at, calls_active, draining, drain_requested) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE) \
     ON CONFLICT (id) DO UPDATE SET api_address = excluded.api_address, \
     version = excluded.version, started_at = excluded.started_at, \
     heartbeat_at = excluded.heartbeat_at, calls_active = excluded.calls_active, \
     draining = excluded.draining, drain_requested = FALSE";
pub(crate) const HEARTBEAT_NODE: &str = "INSERT INTO nodes \
     (id, api_address, version, started_at, heartbeat_at, calls_active, draining, drain_requested) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE) \
     ON CONFLICT (id) DO UPDATE SET api_address = excluded.api_address, \
     version = excluded.version, started_at = excluded.started_at, \
     heartbeat_at = excluded.heartbeat_at, calls_active = excluded.calls_active, \
     draining = excluded.draining \
     RETURNING drain_requested";
pub(crate) const LIST_NODES: &str = "SELECT id, api_address, version, started_at, \
     heartbeat_at, calls_active, draining, drain_requested FROM nodes ORDER BY id";
/// The open calls of node `$2`, whose last heartbeat is still the one seen
/// lapse (`heartbeat_at < $3`), closed as `node_lost`; calls it left
/// resumable stay open for it unless `$4` (its resume grace is over too).
/// The lapse is checked in the same statement, so a node whose heartbeat
/// has just come back keeps its calls.
pub(crate) const CLOSE_LOST_NODE_CALLS: &str = concat!(
    close_calls_at_1!("node_lost"),
    "WHERE end_at IS NULL AND node = $2 \
     AND ($4 OR id NOT IN (SELECT call_id FROM call_resume)) \
     AND EXISTS (SELECT 1 FROM nodes WHERE nodes.id = $2 AND nodes.heartbeat_at < $3)"
);
/// Past its resume grace, a lost node's resume rows and call-limit slots
/// (those of calls whose record never reached the store included) go.
pub(crate) const ABANDON_LOST_NODE_RESUME: &str = "DELETE FROM call_resume WHERE node = $1 \
     AND EXISTS (SELECT 1 FROM nodes WHERE nodes.id = $1 AND nodes.heartbeat_at < $2)";
pub(crate) const ABANDON_LOST_NODE_CAPACITY: &str = "DELETE FROM limit_reservations WHERE node = $1 \
     AND EXISTS (SELECT 1 FROM nodes WHERE nodes.id = $1 AND nodes.heartbeat_at < $2)";
pub(crate) const COUNT_RESERVATIONS: &str =
    "SELECT count(*) FROM limit_reservations WHERE scope = $1";
pub(crate) const INSERT_RESERVATION: &str = "INSERT INTO limit_reservations \
     (call_id, scope, node, at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
pub(crate) const RELEASE_CALL_CAPACITY: &str = "DELETE FROM limit_reservations WHERE call_id = $1";
pub(crate) const RELEASE_ENDED_CAPACITY: &str = "DELETE FROM limit_reservations WHERE EXISTS \
     (SELECT 1 FROM calls WHERE calls.id = limit_reservations.call_id AND calls.end_at IS NOT NULL)";
pub(crate) const RELEASE_NODE_CAPACITY: &str = "DELETE FROM limit_reservations WHERE node = $1 \
     AND call_id NOT IN (SELECT call_id FROM call_resume)";
pub(crate) const DELETE_NODE: &str = "DELETE FROM nodes WHERE id = $1 AND heartbeat_at < $2 \
     AND NOT EXISTS (SELECT 1 FROM calls WHERE calls.node = $1 AND calls.end_at IS NULL)";
pub(crate) const REQUEST_NODE_DRAIN: &str = "UPDATE nodes SET drain_requested = TRUE WHERE id = $1";

pub(crate) const UPSERT_SIP_USER: &str = "INSERT INTO sip_users \
     (username, account_id, realm, ha1_md5, ha1_sha256) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (username) DO UPDATE SET account_id = excluded.account_id, \
     realm = excluded.realm, ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256 \
     WHERE sip_users.account_id = excluded.account_id";
/// The columns of [`SipUserRow`], in order.
macro_rules! sip_user_columns {
    () => {
        "username, account_id, realm, ha1_md5, ha1_sha256"
    };
}
pub(crate) const LIST_SIP_USERS: &str = concat!(
    "SELECT ",
    sip_user_columns!(),
    " FROM sip_users ORDER BY username"
);
pub(crate) const LIST_ACCOUNT_SIP_USERS: &str = concat!(
    "SELECT ",
    sip_user_columns!(),
    " FROM sip_users WHERE account_id = $1 ORDER BY username"
);
pub(crate) const GET_ACCOUNT_SIP_USER: &str = concat!(
    "SELECT ",
    sip_user_columns!(),
    " FROM sip_users WHERE account_id = $1 AND username = $2"
);

pub(crate) const DELETE_SIP_USER: &str = "DELETE FROM sip_users WHERE username = $1";
pub(crate) const DELETE_USER_REGISTRATIONS: &str = "DELETE FROM registrations WHERE username = $1";

pub(crate) const UPSERT_REGISTRATION: &str = "INSERT INTO registrations \
     (username, contact, expires_at, source, transport, call_id, cseq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (username, contact) DO UPDATE SET expires_at = excluded.expires_at, \
     source = excluded.source, transport = excluded.transport, \
     call_id = excluded.call_id, cseq = excluded.cseq";
pub(crate) const DELETE_REGISTRATION: &str =
    "DELETE FROM registrations WHERE username = $1 AND contact = $2";
pub(crate) const LIST_REGISTRATIONS: &str = "SELECT username, contact, expires_at, source, \
     transport, call_id, cseq FROM registrations WHERE expires_at > $1 \
     ORDER BY username, contact";

/// The columns of [`CallRow`], in order. `sip_status` is an INTEGER column;
/// it is read as BIGINT so that both backends decode it as `i64`.
macro_rules! call_columns {
    () => {
        "id, account_id, direction, from_number, to_number, trunk, sip_call_id, \
         invite_at, answer_at, end_at, end_cause, CAST(sip_status AS BIGINT) AS sip_status, \
         duration_ms, media_mode, node, media_security"
    };
}

/// `Started`: insert the row, or leave an existing one alone.
/// `Started` rows (with answers and ends folded in by [`fold`]): insert,
/// or merge into an existing row with the first-wins rules of the updates
/// below, so re-applying any batch leaves the same row. The VALUES list
/// goes between head and merge.
pub(crate) const INSERT_CALLS_HEAD: &str = "INSERT INTO calls \
     (id, account_id, direction, from_number, to_number, trunk, sip_call_id, invite_at, \
     answer_at, end_at, end_cause, sip_status, duration_ms, media_mode, node, media_security) ";
pub(crate) const INSERT_CALLS_MERGE: &str = " ON CONFLICT (id) DO UPDATE SET \
     answer_at = COALESCE(calls.answer_at, excluded.answer_at), \
     media_security = COALESCE(excluded.media_security, calls.media_security), \
     end_cause = CASE WHEN calls.end_at IS NULL THEN excluded.end_cause ELSE calls.end_cause END, \
     sip_status = CASE WHEN calls.end_at IS NULL THEN COALESCE(excluded.sip_status, calls.sip_status) \
     ELSE calls.sip_status END, \
     duration_ms = CASE WHEN calls.end_at IS NULL THEN excluded.duration_ms ELSE calls.duration_ms END, \
     end_at = COALESCE(calls.end_at, excluded.end_at)";
/// `Answered` (id, at, media security) rows: the first answer time wins,
/// a media security given replaces the one recorded. VALUES columns are
/// `column1`, `column2`… in both SQLite and PostgreSQL.
pub(crate) const ANSWER_CALLS_HEAD: &str = "UPDATE calls SET answer_at = COALESCE(calls.answer_at, v.column2), \
     media_security = COALESCE(v.column3, calls.media_security) FROM (";
pub(crate) const ANSWER_CALLS_TAIL: &str = ") AS v WHERE calls.id = v.column1";
/// `Ended` (id, at, cause, status, duration) rows: the first end wins.
pub(crate) const END_CALLS_HEAD: &str = "UPDATE calls SET end_at = v.column2, \
     end_cause = v.column3, sip_status = v.column4, duration_ms = v.column5 FROM (";
pub(crate) const END_CALLS_TAIL: &str =
    ") AS v WHERE calls.id = v.column1 AND calls.end_at IS NULL";
pub(crate) const GET_CALL: &str = concat!("SELECT ", call_columns!(), " FROM calls WHERE id = $1");
/// `$1` = now (Unix ms). Keeps a final status already recorded; else an
/// answered call's INVITE status was 200, an unanswered one gets 500.
/// Answered calls are charged up to now (never negative).
pub(crate) const CLOSE_INTERRUPTED: &str = concat!(
    close_calls_at_1!("interrupted"),
    "WHERE end_at IS NULL AND (node = $2 OR node IS NULL) \
     AND id NOT IN (SELECT call_id FROM call_resume)"
);
/// Resume rows of calls that ended (or never had a row).
pub(crate) const SWEEP_RESUME: &str = "DELETE FROM call_resume WHERE call_id NOT IN \
     (SELECT id FROM calls WHERE end_at IS NULL)";
pub(crate) const LIST_RESUMABLE: &str = "SELECT r.call_id, r.snapshot FROM call_resume r \
     JOIN calls c ON c.id = r.call_id WHERE r.node = $1 AND c.end_at IS NULL \
     ORDER BY r.saved_at, r.call_id";
pub(crate) const SAVE_RESUME_HEAD: &str =
    "INSERT INTO call_resume (call_id, node, snapshot, saved_at) ";
pub(crate) const SAVE_RESUME_TAIL: &str = " ON CONFLICT (call_id) DO UPDATE SET \
     node = excluded.node, snapshot = excluded.snapshot, saved_at = excluded.saved_at";
pub(crate) const DROP_RESUME_HEAD: &str = "DELETE FROM call_resume WHERE call_id IN (";

pub(crate) const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (id, account_id, direction, from_number, to_number, body, status, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(crate) const LIST_MESSAGES: &str = "SELECT id, account_id, direction, from_number, \
     to_number, body, status, created_at FROM messages WHERE account_id = $1 \
     ORDER BY created_at DESC, id DESC LIMIT $2";

/// Page size used when a listing asks for 0 rows.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a listing returns.
pub const MAX_LIMIT: u32 = 1000;

/// 0 means [`DEFAULT_LIMIT`]; anything above [`MAX_LIMIT`] is capped.
pub(crate) fn clamp_limit(limit: u32) -> i64 {
    i64::from(match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    })
}

/// A bind value of a query built at run time.
#[derive(Debug)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// Builds the `list_calls` query for `f`: newest first by (invite_at, id).
///
/// The cursor `before_id` selects rows whose (invite_at, id) sorts before
/// that of the cursor row; an id that names no row yields an empty page.
pub(crate) fn list_calls_query(f: &CallFilter) -> (String, Vec<Arg<'_>>) {
    let mut sql = String::from(concat!(
        "SELECT ",
        call_columns!(),
        " FROM calls WHERE TRUE"
    ));
    let mut args = Vec::new();
    // Appends `clause` with its `$?` numbered after the args so far.
    fn push<'a>(sql: &mut String, args: &mut Vec<Arg<'a>>, clause: &str, arg: Arg<'a>) {
        args.push(arg);
        let n = args.len();
        sql.push_str(&clause.replace("$?", &format!("${n}")));
    }
    if let Some(a) = &f.account_id {
        push(&mut sql, &mut args, " AND account_id = $?", Arg::Text(a));
    }
    if let Some(d) = f.direction {
        push(
            &mut sql,
            &mut args,
            " AND direction = $?",
            Arg::Text(d.as_str()),
        );
    }
    if let Some(from) = &f.from_number {
        push(
            &mut sql,
            &mut args,
            " AND from_number = $?",
            Arg::Text(from),
        );
    }
    if let Some(to) = &f.to_number {
        push(&mut sql, &mut args, " AND to_number = $?", Arg::Text(to));
    }
    if let Some(cursor) = &f.before_id {
        push(
            &mut sql,
            &mut args,
            " AND (invite_at, id) < (SELECT c.invite_at, c.id FROM calls c WHERE c.id = $?",
            Arg::Text(cursor),
        );
        // Another account's call is no cursor (and no oracle).
        match &f.account_id {
            Some(a) => push(&mut sql, &mut args, " AND c.account_id = $?)", Arg::Text(a)),
            None => sql.push(')'),
        }
    }
    match f.active {
        Some(true) => sql.push_str(" AND end_at IS NULL"),
        Some(false) => sql.push_str(" AND end_at IS NOT NULL"),
        None => {}
    }
    sql.push_str(" ORDER BY invite_at DESC, id DESC");
    push(
        &mut sql,
        &mut args,
        " LIMIT $?",
        Arg::Int(clamp_limit(f.limit)),
    );
    (sql, args)
}

// ---------------------------------------------------------------- rows

pub(crate) type AccountRow = (String, String, String);
pub(crate) type TrunkRow = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    String,
    bool,
);
pub(crate) type NumberRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);
pub(crate) type BlockedRow = (String, String, Option<String>, String);
pub(crate) type DeniedSourceRow = (String, String, Option<String>, i64, Option<i64>);
pub(crate) type NodeRow = (String, Option<String>, String, i64, i64, i64, bool, bool);
pub(crate) type SipUserRow = (String, String, String, String, String);
pub(crate) type RegistrationRow = (String, String, i64, String, String, String, i64);
pub(crate) type CallRow = (
    String,
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
);
pub(crate) type MessageRow = (String, String, String, String, String, String, String, i64);

fn corrupt(table: &'static str, column: &'static str, value: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        column,
        value: value.to_string(),
    }
}

/// `i64` column → narrower unsigned Rust integer, or `Corrupt`.
fn narrow<T: TryFrom<i64>>(table: &'static str, column: &'static str, v: i64) -> Result<T> {
    T::try_from(v).map_err(|_| corrupt(table, column, v))
}

fn narrow_opt<T: TryFrom<i64>>(
    table: &'static str,
    column: &'static str,
    v: Option<i64>,
) -> Result<Option<T>> {
    v.map(|v| narrow(table, column, v)).transpose()
}

fn direction(table: &'static str, s: String) -> Result<Direction> {
    Direction::parse(&s).ok_or_else(|| corrupt(table, "direction", s))
}

pub(crate) fn account_from_row((id, name, ranges): AccountRow) -> Result<Account> {
    let number_ranges =
        serde_json::from_str(&ranges).map_err(|_| corrupt("accounts", "number_ranges", ranges))?;
    Ok(Account {
        id,
        name,
        number_ranges,
    })
}

/// Trunk source networks and account number ranges are stored as a JSON
/// array of strings.
pub(crate) fn encode_strings(cidrs: &[String]) -> String {
    // Serializing a slice of strings cannot fail.
    serde_json::to_string(cidrs).unwrap_or_else(|_| "[]".to_string())
}

pub(crate) fn trunk_from_row(r: TrunkRow) -> Result<Trunk> {
    let (
        name,
        cidrs,
        outbound_address,
        transport,
        username,
        password,
        max_calls,
        transfer,
        account_id,
        requests_per_sec,
        tls,
        media_security,
        srtp_cleartext_keying,
    ) = r;
    let source_cidrs =
        serde_json::from_str(&cidrs).map_err(|_| corrupt("trunks", "source_cidrs", cidrs))?;
    let tls = match tls {
        None => TrunkTls::default(),
        Some(t) => serde_json::from_str(&t).map_err(|_| corrupt("trunks", "tls", t))?,
    };
    Ok(Trunk {
        name,
        source_cidrs,
        outbound_address,
        transport,
        username,
        password,
        max_calls: narrow_opt("trunks", "max_calls", max_calls)?,
        transfer,
        account_id,
        requests_per_sec: narrow_opt("trunks", "requests_per_sec", requests_per_sec)?,
        tls,
        media_security: media_security_of("trunks", media_security)?,
        srtp_cleartext_keying,
    })
}

pub(crate) fn number_from_row(r: NumberRow) -> Result<Number> {
    let (
        pattern,
        account_id,
        route,
        target,
        dialect,
        params,
        trunk,
        max_calls,
        fallback,
        voice_webhook,
        sms_webhook,
        media_security,
    ) = r;
    let route = RouteKind::parse(&route).ok_or_else(|| corrupt("numbers", "route", route))?;
    Ok(Number {
        pattern,
        account_id,
        route,
        target,
        dialect,
        params,
        trunk,
        max_calls: narrow_opt("numbers", "max_calls", max_calls)?,
        fallback,
        voice_webhook,
        sms_webhook,
        media_security: media_security_of("numbers", media_security)?,
    })
}

fn media_security_of(table: &'static str, s: String) -> Result<MediaSecurity> {
    MediaSecurity::parse(&s).ok_or_else(|| corrupt(table, "media_security", s))
}

/// A call's per-leg media security as stored (JSON).
pub(crate) fn encode_legs_security(l: &LegsSecurity) -> String {
    serde_json::to_string(l).unwrap_or_default()
}

pub(crate) fn blocked_from_row(r: BlockedRow) -> Result<BlockedNumber> {
    let (id, account_id, number_pattern, caller_pattern) = r;
    Ok(BlockedNumber {
        id,
        account_id,
        number_pattern,
        caller_pattern,
    })
}

pub(crate) fn denied_source_from_row(r: DeniedSourceRow) -> Result<DeniedSource> {
    let (id, network, reason, created_at, expires_at) = r;
    Ok(DeniedSource {
        id,
        network,
        reason,
        created_at,
        expires_at,
    })
}

pub(crate) fn node_from_row(r: NodeRow) -> Result<NodeRecord> {
    let (
        id,
        api_address,
        version,
        started_at,
        heartbeat_at,
        calls_active,
        draining,
        drain_requested,
    ) = r;
    Ok(NodeRecord {
        id,
        api_address,
        version,
        started_at,
        heartbeat_at,
        calls_active,
        draining,
        drain_requested,
    })
}

pub(crate) fn sip_user_from_row(r: SipUserRow) -> Result<SipUser> {
    let (username, account_id, realm, ha1_md5, ha1_sha256) = r;
    Ok(SipUser {
        username,
        account_id,
        realm,
        ha1_md5,
        ha1_sha256,
    })
}

pub(crate) fn registration_from_row(r: RegistrationRow) -> Result<Registration> {
    let (username, contact, expires_at, source, transport, call_id, cseq) = r;
    Ok(Registration {
        username,
        contact,
        expires_at,
        source,
        transport,
        call_id,
        cseq: narrow("registrations", "cseq", cseq)?,
    })
}

pub(crate) fn call_from_row(r: CallRow) -> Result<CallRecord> {
    let (
        id,
        account_id,
        dir,
        from_number,
        to_number,
        trunk,
        sip_call_id,
        invite_at,
        answer_at,
        end_at,
        end_cause,
        sip_status,
        duration_ms,
        media_mode,
        node,
        media_security,
    ) = r;
    let media_security = media_security
        .map(|m| serde_json::from_str(&m).map_err(|_| corrupt("calls", "media_security", m)))
        .transpose()?;
    Ok(CallRecord {
        id,
        account_id,
        direction: direction("calls", dir)?,
        from_number,
        to_number,
        trunk,
        sip_call_id,
        invite_at,
        answer_at,
        end_at,
        end_cause,
        sip_status: narrow_opt("calls", "sip_status", sip_status)?,
        duration_ms,
        media_mode,
        node,
        media_security,
    })
}

pub(crate) fn message_from_row(r: MessageRow) -> Result<MessageRecord> {
    let (id, account_id, dir, from_number, to_number, body, status, created_at) = r;
    Ok(MessageRecord {
        id,
        account_id,
        direction: direction("messages", dir)?,
        from_number,
        to_number,
        body,
        status,
        created_at,
    })
}

pub(crate) fn collect<R, T>(rows: Vec<R>, f: fn(R) -> Result<T>) -> Result<Vec<T>> {
    rows.into_iter().map(f).collect()
}

// ---------------------------------------------------------------- Store

/// Implements [`Store`](super::Store) for a backend struct with a `pool`
/// field (`sqlx::Pool<DB>`); `$backend` is what `Store::backend` returns.
/// The body is backend-neutral: the same SQL, binds and row types serve
/// SQLite and PostgreSQL.
macro_rules! impl_store {
    ($ty:ty, $backend:literal, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $ty {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn upsert_account(
                &self,
                a: &$crate::store::Account,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::common::UPSERT_ACCOUNT)
                    .bind(&a.id)
                    .bind(&a.name)
                    .bind($crate::store::common::encode_strings(&a.number_ranges))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_accounts(&self) -> $crate::store::Result<Vec<$crate::store::Account>> {
                let rows = sqlx::query_as::<_, $crate::store::common::AccountRow>(
                    $crate::store::common::LIST_ACCOUNTS,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::account_from_row)
            }

            async fn get_account(
                &self,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::Account>> {
                sqlx::query_as::<_, $crate::store::common::AccountRow>(
                    $crate::store::common::GET_ACCOUNT,
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::common::account_from_row)
                .transpose()
            }

            async fn upsert_trunk(&self, t: &$crate::store::Trunk) -> $crate::store::Result<()> {
                sqlx::query($crate::store::common::UPSERT_TRUNK)
                    .bind(&t.name)
                    .bind($crate::store::common::encode_strings(&t.source_cidrs))
                    .bind(t.outbound_address.as_deref())
                    .bind(&t.transport)
                    .bind(t.username.as_deref())
                    .bind(t.password.as_deref())
                    .bind(t.max_calls.map(i64::from))
                    .bind(t.transfer.as_deref())
                    .bind(t.account_id.as_deref())
                    .bind(t.requests_per_sec.map(i64::from))
                    .bind(
                        (!t.tls.is_empty())
                            .then(|| serde_json::to_string(&t.tls).unwrap_or_default()),
                    )
                    .bind(t.media_security.as_str())
                    .bind(t.srtp_cleartext_keying)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_trunks(&self) -> $crate::store::Result<Vec<$crate::store::Trunk>> {
                let rows = sqlx::query_as::<_, $crate::store::common::TrunkRow>(
                    $crate::store::common::LIST_TRUNKS,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::trunk_from_row)
            }

            async fn get_trunk(
                &self,
                name: &str,
            ) -> $crate::store::Result<Option<$crate::store::Trunk>> {
                sqlx::query_as::<_, $crate::store::common::TrunkRow>(
                    $crate::store::common::GET_TRUNK,
                )
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::common::trunk_from_row)
                .transpose()
            }

            async fn delete_trunk(&self, name: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::common::DELETE_TRUNK)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn upsert_number(
                &self,
                n: &$crate::store::Number,
            ) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::common::UPSERT_NUMBER)
                    .bind(&n.pattern)
                    .bind(&n.account_id)
                    .bind(n.route.as_str())
                    .bind(n.target.as_deref())
                    .bind(n.dialect.as_deref())
                    .bind(n.params.as_deref())
                    .bind(n.trunk.as_deref())
                    .bind(n.max_calls.map(i64::from))
                    .bind(n.fallback.as_deref())
                    .bind(n.voice_webhook.as_deref())
                    .bind(n.sms_webhook.as_deref())
                    .bind(n.media_security.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_numbers(&self) -> $crate::store::Result<Vec<$crate::store::Number>> {
                let rows = sqlx::query_as::<_, $crate::store::common::NumberRow>(
                    $crate::store::common::LIST_NUMBERS,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::number_from_row)
            }

            async fn list_numbers_for(
                &self,
                account_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::Number>> {
                let rows = sqlx::query_as::<_, $crate::store::common::NumberRow>(
                    $crate::store::common::LIST_ACCOUNT_NUMBERS,
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::number_from_row)
            }

            async fn get_number(
                &self,
                account_id: &str,
                pattern: &str,
            ) -> $crate::store::Result<Option<$crate::store::Number>> {
                sqlx::query_as::<_, $crate::store::common::NumberRow>(
                    $crate::store::common::GET_ACCOUNT_NUMBER,
                )
                .bind(account_id)
                .bind(pattern)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::common::number_from_row)
                .transpose()
            }

            async fn delete_number(&self, pattern: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::common::DELETE_NUMBER)
                    .bind(pattern)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn upsert_blocked(
                &self,
                b: &$crate::store::BlockedNumber,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::common::UPSERT_BLOCKED)
                    .bind(&b.id)
                    .bind(&b.account_id)
                    .bind(b.number_pattern.as_deref())
                    .bind(&b.caller_pattern)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_blocked(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::BlockedNumber>> {
                let rows = sqlx::query_as::<_, $crate::store::common::BlockedRow>(
                    $crate::store::common::LIST_BLOCKED,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::blocked_from_row)
            }

            async fn list_blocked_for(
                &self,
                account_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::BlockedNumber>> {
                let rows = sqlx::query_as::<_, $crate::store::common::BlockedRow>(
                    $crate::store::common::LIST_ACCOUNT_BLOCKED,
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::blocked_from_row)
            }

            async fn get_blocked(
                &self,
                account_id: &str,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::BlockedNumber>> {
                sqlx::query_as::<_, $crate::store::common::BlockedRow>(
                    $crate::store::common::GET_ACCOUNT_BLOCKED,
                )
                .bind(account_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::common::blocked_from_row)
                .transpose()
            }

            async fn delete_blocked(&self, id: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::common::DELETE_BLOCKED)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn insert_denied_source(
                &self,
                d: &$crate::store::DeniedSource,
            ) -> $crate::store::Result<bool> {
                use $crate::store::common::db_text;
                let r = sqlx::query($crate::store::common::INSERT_DENIED_SOURCE)
                    .bind(&d.id)
                    .bind(&d.network)
                    .bind(d.reason.as_deref().map(db_text))
                    .bind(d.created_at)
                    .bind(d.expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_denied_sources(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::DeniedSource>> {
                let rows = sqlx::query_as::<_, $crate::store::common::DeniedSourceRow>(
                    $crate::store::common::LIST_DENIED_SOURCES,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::denied_source_from_row)
            }

            async fn delete_denied_source(&self, id: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::common::DELETE_DENIED_SOURCE)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn purge_denied_sources(&self, now_ms: i64) -> $crate::store::Result<u64> {
                let r = sqlx::query($crate::store::common::PURGE_DENIED_SOURCES)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn upsert_sip_user(
                &self,
                u: &$crate::store::SipUser,
            ) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::common::UPSERT_SIP_USER)
                    .bind(&u.username)
                    .bind(&u.account_id)
                    .bind(&u.realm)
                    .bind(&u.ha1_md5)
                    .bind(&u.ha1_sha256)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_sip_users(&self) -> $crate::store::Result<Vec<$crate::store::SipUser>> {
                let rows = sqlx::query_as::<_, $crate::store::common::SipUserRow>(
                    $crate::store::common::LIST_SIP_USERS,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::sip_user_from_row)
            }

            async fn list_sip_users_for(
                &self,
                account_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::SipUser>> {
                let rows = sqlx::query_as::<_, $crate::store::common::SipUserRow>(
                    $crate::store::common::LIST_ACCOUNT_SIP_USERS,
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::sip_user_from_row)
            }

            async fn get_sip_user(
                &self,
                account_id: &str,
                username: &str,
            ) -> $crate::store::Result<Option<$crate::store::SipUser>> {
                sqlx::query_as::<_, $crate::store::common::SipUserRow>(
                    $crate::store::common::GET_ACCOUNT_SIP_USER,
                )
                .bind(account_id)
                .bind(username)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::common::sip_user_from_row)
                .transpose()
            }

            async fn delete_sip_user(&self, username: &str) -> $crate::store::Result<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query($crate::store::common::DELETE_USER_REGISTRATIONS)
                    .bind(username)
                    .execute(&mut *tx)
                    .await?;
                let r = sqlx::query($crate::store::common::DELETE_SIP_USER)
                    .bind(username)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(r.rows_affected() > 0)
            }

            async fn upsert_registration(
                &self,
                r: &$crate::store::Registration,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::common::UPSERT_REGISTRATION)
                    .bind(&r.username)
                    .bind(&r.contact)
                    .bind(r.expires_at)
                    .bind(&r.source)
                    .bind(&r.transport)
                    .bind(&r.call_id)
                    .bind(i64::from(r.cseq))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_registration(
                &self,
                username: &str,
                contact: &str,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::common::DELETE_REGISTRATION)
                    .bind(username)
                    .bind(contact)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_registrations(
                &self,
                now_ms: i64,
            ) -> $crate::store::Result<Vec<$crate::store::Registration>> {
                let rows = sqlx::query_as::<_, $crate::store::common::RegistrationRow>(
                    $crate::store::common::LIST_REGISTRATIONS,
                )
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::registration_from_row)
            }

            /// One transaction, events in order. `Started` inserts or does
            /// nothing, `Answered` keeps the first answer time, `Ended` only
            /// closes an open row — so re-applying a batch (after a failed
            /// commit whose outcome is unknown) changes nothing.
            ///
            /// An `Answered`/`Ended` whose row does not exist updates
            /// nothing. That cannot lose an event in practice: the queue is
            /// FIFO and a call's `Started` is pushed before its other
            /// events, so it is applied in the same or an earlier batch.
            async fn apply_cdr_batch(
                &self,
                events: &[$crate::store::CdrEvent],
            ) -> $crate::store::Result<()> {
                use $crate::store::common::{ROWS_PER_STATEMENT, fold};
                let batch = fold(events);
                let mut tx = self.pool.begin().await?;
                // Three multi-row statements per batch instead of one per
                // event: each statement is a round trip to the driver.
                for rows in batch.started.chunks(ROWS_PER_STATEMENT) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new($crate::store::common::INSERT_CALLS_HEAD);
                    qb.push_values(rows, |mut b, c| {
                        b.push_bind(c.id.clone())
                            .push_bind(c.account_id.clone())
                            .push_bind(c.direction.as_str())
                            .push_bind(c.from_number.clone())
                            .push_bind(c.to_number.clone())
                            .push_bind(c.trunk.clone())
                            .push_bind(c.sip_call_id.clone())
                            .push_bind(c.invite_at)
                            .push_bind(c.answer_at)
                            .push_bind(c.end_at)
                            .push_bind(c.end_cause.clone())
                            .push_bind(c.sip_status.map(i32::from))
                            .push_bind(c.duration_ms)
                            .push_bind(c.media_mode.clone())
                            .push_bind(c.node.clone())
                            .push_bind(
                                c.media_security
                                    .as_ref()
                                    .map($crate::store::common::encode_legs_security),
                            );
                    });
                    qb.push($crate::store::common::INSERT_CALLS_MERGE);
                    qb.build().execute(&mut *tx).await?;
                }
                for rows in batch.answered.chunks(ROWS_PER_STATEMENT) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new($crate::store::common::ANSWER_CALLS_HEAD);
                    qb.push_values(rows, |mut b, (id, at, media)| {
                        b.push_bind(id.clone())
                            .push_bind(*at)
                            .push_bind(media.clone());
                    });
                    qb.push($crate::store::common::ANSWER_CALLS_TAIL);
                    qb.build().execute(&mut *tx).await?;
                }
                for rows in batch.ended.chunks(ROWS_PER_STATEMENT) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new($crate::store::common::END_CALLS_HEAD);
                    qb.push_values(rows, |mut b, (id, at, cause, status, duration)| {
                        b.push_bind(id.clone())
                            .push_bind(*at)
                            .push_bind(cause.clone())
                            .push_bind(i32::from(*status))
                            .push_bind(*duration);
                    });
                    qb.push($crate::store::common::END_CALLS_TAIL);
                    qb.build().execute(&mut *tx).await?;
                }
                for rows in batch.resume_save.chunks(ROWS_PER_STATEMENT) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new($crate::store::common::SAVE_RESUME_HEAD);
                    qb.push_values(rows, |mut b, (id, node, snapshot, at)| {
                        b.push_bind(id.clone())
                            .push_bind(node.clone())
                            .push_bind(snapshot.clone())
                            .push_bind(*at);
                    });
                    qb.push($crate::store::common::SAVE_RESUME_TAIL);
                    qb.build().execute(&mut *tx).await?;
                }
                for ids in batch.resume_drop.chunks(ROWS_PER_STATEMENT) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new($crate::store::common::DROP_RESUME_HEAD);
                    let mut sep = qb.separated(", ");
                    for id in ids {
                        sep.push_bind(id.clone());
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn dead_letter_cdr(
                &self,
                event: &$crate::store::CdrEvent,
                error: &str,
                at_ms: i64,
            ) -> $crate::store::Result<()> {
                use $crate::store::common::db_text;
                // Debug text escapes what a TEXT column refuses.
                sqlx::query($crate::store::common::INSERT_DEAD_LETTER)
                    .bind(db_text(event.call_id()).into_owned())
                    .bind(db_text(&format!("{event:?}")).into_owned())
                    .bind(db_text(error).into_owned())
                    .bind(at_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_cdr_dead_letters(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::DeadLetter>> {
                let rows: Vec<(String, String, String, i64)> =
                    sqlx::query_as($crate::store::common::LIST_DEAD_LETTERS)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(call_id, event, error, at)| $crate::store::DeadLetter {
                        call_id,
                        event,
                        error,
                        at,
                    })
                    .collect())
            }

            async fn get_call(
                &self,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::CallRecord>> {
                let row = sqlx::query_as::<_, $crate::store::common::CallRow>(
                    $crate::store::common::GET_CALL,
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map($crate::store::common::call_from_row).transpose()
            }

            async fn list_calls(
                &self,
                filter: &$crate::store::CallFilter,
            ) -> $crate::store::Result<Vec<$crate::store::CallRecord>> {
                let (sql, args) = $crate::store::common::list_calls_query(filter);
                let mut q = sqlx::query_as::<_, $crate::store::common::CallRow>(&sql);
                for arg in args {
                    q = match arg {
                        $crate::store::common::Arg::Text(s) => q.bind(s),
                        $crate::store::common::Arg::Int(i) => q.bind(i),
                    };
                }
                let rows = q.fetch_all(&self.pool).await?;
                $crate::store::common::collect(rows, $crate::store::common::call_from_row)
            }

            async fn close_interrupted_calls(
                &self,
                now_ms: i64,
                node: &str,
            ) -> $crate::store::Result<u64> {
                let mut tx = self.pool.begin().await?;
                sqlx::query($crate::store::common::SWEEP_RESUME)
                    .execute(&mut *tx)
                    .await?;
                let r = sqlx::query($crate::store::common::CLOSE_INTERRUPTED)
                    .bind(now_ms)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(r.rows_affected())
            }

            async fn list_resumable_calls(
                &self,
                node: &str,
            ) -> $crate::store::Result<Vec<$crate::store::ResumableCall>> {
                let rows: Vec<(String, String)> =
                    sqlx::query_as($crate::store::common::LIST_RESUMABLE)
                        .bind(node)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, snapshot)| $crate::store::ResumableCall { id, snapshot })
                    .collect())
            }

            async fn claim_idempotency_key(
                &self,
                account: &str,
                key: &str,
                fingerprint: &str,
                now_ms: i64,
                ttl_ms: i64,
            ) -> $crate::store::Result<$crate::store::IdempotencyClaim> {
                use $crate::store::IdempotencyClaim;
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 \
                     AND created_at < $3",
                )
                .bind(account)
                .bind(key)
                .bind(now_ms - ttl_ms)
                .execute(&mut *tx)
                .await?;
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (account_id, key, fingerprint, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, key) DO NOTHING",
                )
                .bind(account)
                .bind(key)
                .bind(fingerprint)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let claim = if inserted == 1 {
                    IdempotencyClaim::Claimed
                } else {
                    let (f, status, body): (String, Option<i64>, Option<String>) = sqlx::query_as(
                        "SELECT fingerprint, CAST(status AS BIGINT), body FROM idempotency_keys \
                         WHERE account_id = $1 AND key = $2",
                    )
                    .bind(account)
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                    match (status, body) {
                        _ if f != fingerprint => IdempotencyClaim::Mismatch,
                        (Some(s), Some(b)) => IdempotencyClaim::Done {
                            status: u16::try_from(s).map_err(|_| {
                                $crate::store::StoreError::Corrupt {
                                    table: "idempotency_keys",
                                    column: "status",
                                    value: s.to_string(),
                                }
                            })?,
                            body: b,
                        },
                        _ => IdempotencyClaim::InFlight,
                    }
                };
                tx.commit().await?;
                Ok(claim)
            }

            async fn finish_idempotency_key(
                &self,
                account: &str,
                key: &str,
                answer: Option<(u16, &str)>,
            ) -> $crate::store::Result<()> {
                match answer {
                    Some((status, body)) => {
                        sqlx::query(
                            "UPDATE idempotency_keys SET status = $1, body = $2 \
                             WHERE account_id = $3 AND key = $4",
                        )
                        .bind(i64::from(status))
                        .bind(body)
                        .bind(account)
                        .bind(key)
                        .execute(&self.pool)
                        .await?;
                    }
                    None => {
                        sqlx::query(
                            "DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2",
                        )
                        .bind(account)
                        .bind(key)
                        .execute(&self.pool)
                        .await?;
                    }
                }
                Ok(())
            }

            async fn announce_registration(
                &self,
                notice: &$crate::store::RegistrationNotice,
            ) -> $crate::store::Result<bool> {
                if $backend != "postgres" {
                    return Ok(true);
                }
                let Ok(payload) = serde_json::to_string(notice) else {
                    return Ok(false);
                };
                if payload.len() > $crate::store::MAX_NOTICE_BYTES {
                    return Ok(false);
                }
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind($crate::store::REGISTRATION_CHANNEL)
                    .bind(payload)
                    .execute(&self.pool)
                    .await?;
                Ok(true)
            }

            async fn announce_change(&self) -> $crate::store::Result<()> {
                if $backend == "postgres" {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind($crate::store::CHANGE_CHANNEL)
                        .execute(&self.pool)
                        .await?;
                }
                Ok(())
            }

            async fn insert_message(
                &self,
                m: &$crate::store::MessageRecord,
            ) -> $crate::store::Result<()> {
                use $crate::store::common::db_text;
                sqlx::query($crate::store::common::INSERT_MESSAGE)
                    .bind(&m.id)
                    .bind(&m.account_id)
                    .bind(m.direction.as_str())
                    .bind(db_text(&m.from_number).into_owned())
                    .bind(db_text(&m.to_number).into_owned())
                    .bind(db_text(&m.body).into_owned())
                    .bind(&m.status)
                    .bind(m.created_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn update_message_status(
                &self,
                id: &str,
                status: &str,
            ) -> $crate::store::Result<bool> {
                let r = sqlx::query("UPDATE messages SET status = $1 WHERE id = $2")
                    .bind(status)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_messages(
                &self,
                account_id: &str,
                limit: u32,
            ) -> $crate::store::Result<Vec<$crate::store::MessageRecord>> {
                let rows = sqlx::query_as::<_, $crate::store::common::MessageRow>(
                    $crate::store::common::LIST_MESSAGES,
                )
                .bind(account_id)
                .bind($crate::store::common::clamp_limit(limit))
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::message_from_row)
            }

            async fn register_node(
                &self,
                n: &$crate::store::NodeRecord,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::common::REGISTER_NODE)
                    .bind(&n.id)
                    .bind(&n.api_address)
                    .bind(&n.version)
                    .bind(n.started_at)
                    .bind(n.heartbeat_at)
                    .bind(n.calls_active)
                    .bind(n.draining)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn heartbeat_node(
                &self,
                n: &$crate::store::NodeRecord,
            ) -> $crate::store::Result<bool> {
                let (requested,): (bool,) = sqlx::query_as($crate::store::common::HEARTBEAT_NODE)
                    .bind(&n.id)
                    .bind(&n.api_address)
                    .bind(&n.version)
                    .bind(n.started_at)
                    .bind(n.heartbeat_at)
                    .bind(n.calls_active)
                    .bind(n.draining)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(requested)
            }

            async fn list_nodes(&self) -> $crate::store::Result<Vec<$crate::store::NodeRecord>> {
                let rows = sqlx::query_as::<_, $crate::store::common::NodeRow>(
                    $crate::store::common::LIST_NODES,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::common::collect(rows, $crate::store::common::node_from_row)
            }

            async fn close_lost_node_calls(
                &self,
                now_ms: i64,
                node: &str,
                lapsed_before_ms: i64,
                abandon: bool,
            ) -> $crate::store::Result<u64> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query($crate::store::common::CLOSE_LOST_NODE_CALLS)
                    .bind(now_ms)
                    .bind(node)
                    .bind(lapsed_before_ms)
                    .bind(abandon)
                    .execute(&mut *tx)
                    .await?;
                if abandon {
                    for sql in [
                        $crate::store::common::ABANDON_LOST_NODE_RESUME,
                        $crate::store::common::ABANDON_LOST_NODE_CAPACITY,
                    ] {
                        sqlx::query(sql)
                            .bind(node)
                            .bind(lapsed_before_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(r.rows_affected())
            }

            async fn reserve_capacity(
                &self,
                call_id: &str,
                node: &str,
                scopes: &[(String, u32)],
                at_ms: i64,
            ) -> $crate::store::Result<bool> {
                // SQLite: the write lock up front (a read upgraded to a
                // write would fail under concurrency); PostgreSQL: per
                // scope, below.
                // PostgreSQL: READ COMMITTED whatever the server's default
                // (a snapshot taken before the lock wait would miss the
                // previous holder's row and overbook), and bounded waits.
                let mut tx = if $backend == "postgres" {
                    let mut tx = self
                        .pool
                        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                        .await?;
                    sqlx::query("SET LOCAL lock_timeout = '1s'")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("SET LOCAL statement_timeout = '2s'")
                        .execute(&mut *tx)
                        .await?;
                    tx
                } else {
                    self.pool.begin_with("BEGIN IMMEDIATE").await?
                };
                // One lock order (sorted scopes): two calls reserving the
                // same pair never deadlock.
                let mut sorted: Vec<&(String, u32)> = scopes.iter().collect();
                sorted.sort();
                for (scope, limit) in sorted {
                    if $backend == "postgres" {
                        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                            .bind(scope)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let (held,): (i64,) = sqlx::query_as($crate::store::common::COUNT_RESERVATIONS)
                        .bind(scope)
                        .fetch_one(&mut *tx)
                        .await?;
                    if held >= i64::from(*limit) {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    sqlx::query($crate::store::common::INSERT_RESERVATION)
                        .bind(call_id)
                        .bind(scope)
                        .bind(node)
                        .bind(at_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn release_capacity(&self, call_id: &str) -> $crate::store::Result<()> {
                sqlx::query($crate::store::common::RELEASE_CALL_CAPACITY)
                    .bind(call_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn release_stale_capacity(
                &self,
                node: Option<&str>,
            ) -> $crate::store::Result<u64> {
                let mut n = sqlx::query($crate::store::common::RELEASE_ENDED_CAPACITY)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if let Some(node) = node {
                    n += sqlx::query($crate::store::common::RELEASE_NODE_CAPACITY)
                        .bind(node)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                }
                Ok(n)
            }

            async fn delete_node(
                &self,
                id: &str,
                lapsed_before_ms: i64,
            ) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::common::DELETE_NODE)
                    .bind(id)
                    .bind(lapsed_before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn request_node_drain(&self, id: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::common::REQUEST_NODE_DRAIN)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }
        }
    };
}
pub(crate) use impl_store;

/// A batch of CDR events folded per call: one `Started` row per call with
/// its answer and end merged in, and the first `Answered`/`Ended` of calls
/// whose row came in an earlier batch. Applying it (rows first, then the
/// updates) leaves the same rows as applying the events one by one,
/// because `INSERT_CALLS_MERGE` merges with the first-wins rules of the updates.
#[derive(Debug, Default)]
pub(crate) struct FoldedBatch {
    pub started: Vec<crate::store::CallRecord>,
    /// (id, at, media security as stored)
    pub answered: Vec<(String, i64, Option<String>)>,
    /// (id, at, cause, sip_status, duration_ms)
    pub ended: Vec<(String, i64, String, u16, i64)>,
    /// The last resume snapshot of each call the batch left resumable:
    /// (id, node, snapshot, at).
    pub resume_save: Vec<(String, String, String, i64)>,
    /// Calls the batch left not resumable.
    pub resume_drop: Vec<String>,
}

pub(crate) fn fold<'a>(events: &'a [crate::store::CdrEvent]) -> FoldedBatch {
    use crate::store::CdrEvent;
    use std::collections::HashMap;
    use std::collections::hash_map::Entry;
    let mut f = FoldedBatch::default();
    let mut started: HashMap<&str, usize> = HashMap::new();
    let mut answered: HashMap<&str, usize> = HashMap::new();
    let mut ended: HashMap<&str, ()> = HashMap::new();
    // Each call's last resume change, in first-seen order: (node,
    // snapshot, at), or None when withdrawn.
    type Change<'a> = Option<(&'a str, &'a str, i64)>;
    let mut resume: Vec<(&str, Change)> = Vec::new();
    let mut resume_at: HashMap<&str, usize> = HashMap::new();
    let mut set_resume = |id: &'a str, v: Change<'a>| match resume_at.entry(id) {
        Entry::Occupied(o) => resume[*o.get()].1 = v,
        Entry::Vacant(e) => {
            e.insert(resume.len());
            resume.push((id, v));
        }
    };
    for ev in events {
        match ev {
            CdrEvent::Resumable {
                id,
                node,
                snapshot,
                at,
            } => set_resume(id, Some((node, snapshot, *at))),
            CdrEvent::NotResumable { id } => set_resume(id, None),
            CdrEvent::Started(c) => {
                if let Entry::Vacant(v) = started.entry(c.id.as_str()) {
                    v.insert(f.started.len());
                    f.started.push(stored_call(c));
                }
            }
            CdrEvent::Answered {
                id,
                at,
                media_security,
            } => match started.get(id.as_str()) {
                Some(&i) => {
                    let c = &mut f.started[i];
                    c.answer_at = c.answer_at.or(Some(*at));
                    if media_security.is_some() {
                        c.media_security = media_security.clone();
                    }
                }
                None => {
                    let media = media_security.as_ref().map(encode_legs_security);
                    match answered.entry(id.as_str()) {
                        Entry::Vacant(v) => {
                            v.insert(f.answered.len());
                            f.answered.push((id.clone(), *at, media));
                        }
                        // The first time stays; the latest security wins.
                        Entry::Occupied(o) => {
                            if media.is_some() {
                                f.answered[*o.get()].2 = media;
                            }
                        }
                    }
                }
            },
            CdrEvent::Ended {
                id,
                at,
                cause,
                sip_status,
                duration_ms,
            } => match started.get(id.as_str()) {
                Some(&i) => {
                    let c = &mut f.started[i];
                    if c.end_at.is_none() {
                        c.end_at = Some(*at);
                        c.end_cause = Some(db_text(cause).into_owned());
                        c.sip_status = Some(*sip_status);
                        c.duration_ms = Some(*duration_ms);
                    }
                }
                None => {
                    if ended.insert(id.as_str(), ()).is_none() {
                        f.ended.push((
                            id.clone(),
                            *at,
                            db_text(cause).into_owned(),
                            *sip_status,
                            *duration_ms,
                        ));
                    }
                }
            },
        }
    }
    for (id, v) in resume {
        match v {
            Some((node, snapshot, at)) => {
                f.resume_save
                    .push((id.to_string(), node.to_string(), snapshot.to_string(), at));
            }
            None => f.resume_drop.push(id.to_string()),
        }
    }
    f
}

/// Rows per multi-row statement (14 binds per row stays far below both
/// databases' parameter limits).
pub(crate) const ROWS_PER_STATEMENT: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_stored_escaped() {
        assert!(matches!(
            db_text("+15551230000"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(db_text("a\u{0}b"), "a\\x00b");
        assert_eq!(db_text("\u{7}\u{7f}\u{1b}"), "\\x07\\x7f\\x1b");
        // Tab, CR, LF and non-ASCII stay as they are.
        assert_eq!(db_text("a\tb\r\nc ü €"), "a\tb\r\nc ü €");
        let c = CallRecord {
            id: "CA1".into(),
            account_id: Some("acct\u{0}".into()),
            direction: Direction::Inbound,
            from_number: "evil\u{0}".into(),
            to_number: "+1555".into(),
            trunk: None,
            sip_call_id: "x\u{1}y".into(),
            invite_at: 1,
            answer_at: None,
            end_at: None,
            end_cause: None,
            sip_status: None,
            duration_ms: None,
            media_mode: "echo".into(),
            node: None,
            media_security: None,
        };
        let s = stored_call(&c);
        assert_eq!(s.from_number, "evil\\x00");
        assert_eq!(s.sip_call_id, "x\\x01y");
        assert_eq!(s.account_id.as_deref(), Some("acct\\x00"));
        assert_eq!(s.to_number, "+1555");
    }
}
