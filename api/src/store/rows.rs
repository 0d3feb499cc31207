//! Rows as the queries decode them, and their checked conversion to the
//! model: conversions never panic on what the database holds: an
//! unknown enum string, a number out of range for its Rust type or
//! malformed JSON is reported as [`StoreError::Corrupt`]. Text is stored
//! with control characters escaped (`db_text`).

use super::model::*;
use super::{Result, StoreError};

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
    String,
    Option<String>,
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
pub(crate) type RecordingRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    i64,
);

pub(crate) fn recording_from_row(r: RecordingRow) -> Result<RecordingRecord> {
    let (id, account_id, call_id, path, duration_ms, bytes, status, error, created_at) = r;
    Ok(RecordingRecord {
        id,
        account_id,
        call_id,
        path,
        duration_ms,
        bytes,
        status,
        error,
        created_at,
    })
}

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
        webhook_format,
        status_webhook,
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
        webhook_format: WebhookFormat::parse(&webhook_format)
            .ok_or_else(|| corrupt("numbers", "webhook_format", webhook_format))?,
        status_webhook,
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
