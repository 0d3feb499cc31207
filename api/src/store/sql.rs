//! The SQL both backends run, as text. Placeholders are written `$1`,
//! `$2`, …: PostgreSQL's native form, which SQLite (and sqlx-sqlite)
//! accept as numbered parameters too, repeated uses included.

use super::model::*;

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
pub(crate) const SET_ACCOUNT_AUTH_TOKEN: &str = "UPDATE accounts SET auth_token = $2 WHERE id = $1";
pub(crate) const GET_ACCOUNT_AUTH_TOKEN: &str = "SELECT auth_token FROM accounts WHERE id = $1";
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
     voice_webhook, sms_webhook, media_security, webhook_format, status_webhook) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (pattern) DO UPDATE SET account_id = excluded.account_id, \
     route = excluded.route, target = excluded.target, dialect = excluded.dialect, \
     params = excluded.params, trunk = excluded.trunk, max_calls = excluded.max_calls, \
     fallback = excluded.fallback, voice_webhook = excluded.voice_webhook, \
     sms_webhook = excluded.sms_webhook, media_security = excluded.media_security, \
     webhook_format = excluded.webhook_format, status_webhook = excluded.status_webhook \
     WHERE numbers.account_id = excluded.account_id";
/// The columns of [`NumberRow`], in order.
macro_rules! number_columns {
    () => {
        "pattern, account_id, route, target, dialect, params, trunk, max_calls, fallback, \
         voice_webhook, sms_webhook, media_security, webhook_format, status_webhook"
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

pub(crate) const INSERT_RECORDING: &str = "INSERT INTO recordings \
     (id, account_id, call_id, path, duration_ms, bytes, status, error, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING";
/// The columns of [`RecordingRow`], in order.
macro_rules! recording_columns {
    () => {
        "id, account_id, call_id, path, duration_ms, bytes, status, error, created_at"
    };
}
pub(crate) const LIST_RECORDINGS: &str = concat!(
    "SELECT ",
    recording_columns!(),
    " FROM recordings WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
);
pub(crate) const GET_RECORDING: &str = concat!(
    "SELECT ",
    recording_columns!(),
    " FROM recordings WHERE id = $1"
);
pub(crate) const DELETE_RECORDING: &str = "DELETE FROM recordings WHERE id = $1";

pub(crate) const GET_MESSAGE: &str = "SELECT id, account_id, direction, from_number, \
     to_number, body, status, created_at FROM messages WHERE id = $1";

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
