//! What several `/v1` resources share: field checks (each refusal a 422
//! naming the field), new ids, and announcing a routing change.

use super::ApiState;
use super::error::ApiError;
use super::schema::StreamSpec;
use crate::e164::Pattern;

/// A name in a path (account, trunk, SIP user), or 422 naming `field`.
pub(super) fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "1–64 characters from A–Z, a–z, 0–9, '-', '_' and '.'",
        ))
    }
}

/// The canonical pattern of a path segment, or 422 naming `field`.
pub(super) fn pattern(field: &str, raw: &str) -> Result<String, ApiError> {
    Pattern::parse(raw).map(|p| p.to_string()).ok_or_else(|| {
        ApiError::field(
            field,
            format!("{raw:?} is not an E.164 number (+15550001234) or prefix pattern (+1555*)"),
        )
    })
}

/// `max_calls`, when given, or 422 naming it.
pub(super) fn check_max_calls(v: Option<u32>) -> Result<(), ApiError> {
    match v {
        Some(n) if !(1..=1_000_000).contains(&n) => Err(ApiError::field(
            "max_calls",
            "max_calls must be between 1 and 1000000",
        )),
        _ => Ok(()),
    }
}

/// An http(s) URL the gateway may POST to, or 422 naming `field`.
pub(super) fn check_webhook(s: &ApiState, field: &str, url: &str) -> Result<(), ApiError> {
    if !crate::webhook::valid_url(url) {
        return Err(ApiError::field(field, "an http:// or https:// URL"));
    }
    s.targets
        .check_url(url)
        .map_err(|e| ApiError::field(field, e.to_string()))
}

/// A SIP URI's host the gateway may send to, or 422 naming `field` (SIP
/// user names and E.164 numbers go through trunks and pass).
pub(super) fn check_sip_target(s: &ApiState, field: &str, target: &str) -> Result<(), ApiError> {
    match (s.checks.sip_uri_host)(target) {
        Some(host) => s
            .targets
            .check_host(&host)
            .map_err(|e| ApiError::field(field, e.to_string())),
        None => Ok(()),
    }
}

/// A stream target's URL, dialect and parameters (as JSON text), or 422
/// naming the field (`at` is the target's path in the body: `stream.`).
pub(super) fn check_stream(
    s: &ApiState,
    st: StreamSpec,
    at: &str,
) -> Result<(String, Option<String>, Option<String>), ApiError> {
    if !(st.url.starts_with("ws://") || st.url.starts_with("wss://"))
        || st.url.len() > 2048
        || st.url.bytes().any(|c| c.is_ascii_control() || c == b' ')
    {
        return Err(ApiError::field(format!("{at}url"), "a ws:// or wss:// URL"));
    }
    s.targets
        .check_url(&st.url)
        .map_err(|e| ApiError::field(format!("{at}url"), e.to_string()))?;
    if let Some(d) = &st.dialect
        && !(s.checks.dialect)(d)
    {
        return Err(ApiError::field(
            format!("{at}dialect"),
            "dialect must be twilio, telnyx, plivo, exotel, vonage, jambonz, jambonz16, pcm, pcm8, pcm16 or pcm24",
        ));
    }
    if let Some(params) = &st.params
        && let Some((k, _)) = params.iter().find(|(_, v)| !v.is_string())
    {
        return Err(ApiError::field(
            format!("{at}params.{k}"),
            "custom parameters are strings",
        ));
    }
    let params = st.params.map(|m| serde_json::Value::Object(m).to_string());
    Ok((st.url, st.dialect, params))
}

/// A new random id: `prefix` and 32 hex digits.
pub(super) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Applies a routing change on this node at once and announces it to the
/// others sharing the database.
pub(super) async fn changed(state: &ApiState) {
    state.changed.notify_one();
    if let Err(e) = state.store.announce_change().await {
        tracing::warn!(error = %e, "routing change not announced to other nodes; they apply it by their next reload");
    }
}
