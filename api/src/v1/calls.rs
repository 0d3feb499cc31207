//! `/v1/calls` (the token's account): call records, newest first, and
//! outbound calls placed through a trunk. Live control of a call is in
//! [`super::call_actions`].

use super::ApiState;
use super::common::{check_id, check_sip_target, check_stream, check_webhook};
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::idempotency::idempotent;
use super::list::{cut, page_size};
use super::schema::{CallIn, CallOut, CallPage, CallQuery, IdPath};
use crate::store::{CallFilter, CallRecord, Direction};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// The Twilio-style status of a call record.
pub(super) fn call_status(c: &CallRecord) -> &'static str {
    crate::store::call_status(
        c.answer_at.is_some(),
        c.end_at.is_some(),
        c.end_cause.as_deref(),
        c.sip_status,
    )
}

fn call_out(c: CallRecord) -> CallOut {
    CallOut {
        status: call_status(&c).to_string(),
        id: c.id,
        direction: c.direction.as_str().to_string(),
        from: c.from_number,
        to: c.to_number,
        trunk: c.trunk,
        sip_call_id: c.sip_call_id,
        started_at: c.invite_at,
        answered_at: c.answer_at,
        ended_at: c.end_at,
        end_cause: c.end_cause,
        sip_status: c.sip_status,
        duration_ms: c.duration_ms,
        media: c.media_mode,
        media_security: c.media_security,
        node: c.node,
    }
}

/// The account's call `id`; another account's is as missing (404).
pub(super) async fn own_call(
    s: &ApiState,
    account: &str,
    id: &str,
) -> Result<CallRecord, ApiError> {
    match s.store.get_call(id).await? {
        Some(c) if c.account_id.as_deref() == Some(account) => Ok(c),
        _ => Err(ApiError::not_found("call")),
    }
}

/// Call records, newest first, filtered.
#[utoipa::path(get, path = "/v1/calls", tag = "calls", params(CallQuery),
    responses((status = 200, body = CallPage), (status = 422, body = ErrorBody)))]
pub(super) async fn list_calls(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<CallQuery>,
) -> Result<Json<CallPage>, ApiError> {
    let account = auth.account()?;
    let n = page_size(q.limit)?;
    let direction = q
        .direction
        .as_deref()
        .map(|d| {
            Direction::parse(d).ok_or_else(|| {
                ApiError::field("direction", "direction must be inbound or outbound")
            })
        })
        .transpose()?;
    let num = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| {
                crate::e164::normalize_e164(v)
                    .ok_or_else(|| ApiError::field(field, "an E.164 number"))
            })
            .transpose()
    };
    let filter = CallFilter {
        account_id: Some(account.to_string()),
        direction,
        from_number: num("from", &q.from)?,
        to_number: num("to", &q.to)?,
        active: q.active,
        before_id: q.cursor.clone(),
        limit: n as u32 + 1,
    };
    // The store starts after the cursor and gives one row more than a
    // page, so that the page knows whether another follows.
    let rows = s.store.list_calls(&filter).await?;
    Ok(Json(cut(rows, n, |c| &c.id, call_out).into()))
}

/// One call, live or ended.
#[utoipa::path(get, path = "/v1/calls/{id}", params(IdPath), tag = "calls",
    responses((status = 200, body = CallOut), (status = 404, body = ErrorBody)))]
pub(super) async fn get_call(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<Json<CallOut>, ApiError> {
    let account = auth.account()?;
    Ok(Json(call_out(own_call(&s, account, &id).await?)))
}

/// Places an outbound call through a trunk; on answer the AI stream starts
/// as for an inbound call. Follow it with `GET /v1/calls/{id}`.
#[utoipa::path(post, path = "/v1/calls", tag = "calls", request_body = CallIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeating a POST with the same key (within 24 h) returns the first answer and places no second call")),
    responses((status = 201, description = "Placed: the INVITE is on its way", body = CallOut),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn create_call(
    State(s): State<ApiState>,
    auth: Auth,
    headers: axum::http::HeaderMap,
    JsonBody(b): JsonBody<CallIn>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let account = auth.account()?.to_string();
    idempotent(&s.store, &account, &headers, "call", b, |b| {
        place_call(&s, &account, b)
    })
    .await
}

/// `ring_timeout_secs`: 1–300 seconds.
pub(super) fn ring_timeout(secs: Option<u32>) -> Result<Option<std::time::Duration>, ApiError> {
    match secs {
        None => Ok(None),
        Some(n) if (1..=300).contains(&n) => Ok(Some(std::time::Duration::from_secs(n.into()))),
        Some(_) => Err(ApiError::field(
            "ring_timeout_secs",
            "ring_timeout_secs must be between 1 and 300",
        )),
    }
}

/// A party to call: an E.164 number (normalised) or a `sip:` URI that
/// parses and carries nothing that could break out of a header.
pub(super) fn party(s: &ApiState, field: &str, to: String) -> Result<String, ApiError> {
    let number = crate::e164::normalize_e164(&to).filter(|n| n.len() <= 16 && n.len() >= 2);
    match number {
        Some(n) if !to.starts_with("sip:") => Ok(n),
        _ if (s.checks.sip_uri_host)(&to).is_some()
            && to.starts_with("sip:")
            && to.len() <= 256
            && !to.chars().any(|c| {
                c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ',')
            }) =>
        {
            Ok(to)
        }
        _ => Err(ApiError::field(
            field,
            "an E.164 number (+15550001234) or a sip: URI",
        )),
    }
}

async fn place_call(
    s: &ApiState,
    account: &str,
    b: CallIn,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    use crate::control::{Connect, OriginateRequest, StreamTarget};
    let from = crate::e164::normalize_e164(&b.from)
        .ok_or_else(|| ApiError::field("from", "an E.164 number (+15550001234)"))?;
    let to = crate::e164::normalize_e164(&b.to)
        .ok_or_else(|| ApiError::field("to", "an E.164 number (+15550001234)"))?;
    if let Some(t) = &b.trunk {
        check_id("trunk", t)?;
    }
    let ring_timeout = ring_timeout(b.ring_timeout_secs)?;
    let connect = match (b.stream, b.forward_to) {
        (Some(st), None) => {
            let (url, dialect, params) = check_stream(s, st, "stream.")?;
            Connect::Stream(StreamTarget {
                url,
                dialect,
                params,
            })
        }
        (None, Some(to)) => {
            let to = party(s, "forward_to", to)?;
            check_sip_target(s, "forward_to", &to)?;
            Connect::Forward { to }
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "forward_to",
                "give stream or forward_to, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::field(
                "stream",
                "give stream (an AI to connect) or forward_to (a party to connect)",
            ));
        }
    };
    let media = match connect {
        Connect::Stream { .. } => "stream",
        Connect::Forward { .. } => "forward",
        Connect::Twiml(_) => "twiml",
    };
    let status_webhook = b.status_webhook;
    if let Some(w) = &status_webhook {
        check_webhook(s, "status_webhook", w)?;
    }
    let Some(control) = &s.control else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no signalling core behind this API",
        ));
    };
    let placed = control
        .originate(OriginateRequest {
            account: account.to_string(),
            from: from.clone(),
            to: to.clone(),
            trunk: b.trunk,
            connect,
            ring_timeout,
            status_webhook,
            status_format: Default::default(),
            status_events: vec![],
            record: None,
        })
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the signalling core is busy; retry",
            )
        })?;
    match placed {
        Ok(o) => {
            let out = CallOut {
                id: o.call_id,
                direction: "outbound".into(),
                from,
                to,
                trunk: Some(o.trunk),
                sip_call_id: o.sip_call_id,
                status: "queued".into(),
                started_at: o.started_at,
                answered_at: None,
                ended_at: None,
                end_cause: None,
                sip_status: None,
                duration_ms: None,
                media: media.into(),
                media_security: None,
                node: Some(s.cluster.node_id.clone()),
            };
            let body = serde_json::to_value(&out).map_err(ApiError::internal)?;
            Ok((StatusCode::CREATED, Json(body)))
        }
        Err(why) => Err(refusal(why)),
    }
}

/// The HTTP answer for a call or message the core would not place.
pub(super) fn refusal(why: crate::control::OriginateRefused) -> ApiError {
    use crate::control::OriginateRefused;
    match why {
        OriginateRefused::FromNotOwned => ApiError::field("from", why.to_string()),
        OriginateRefused::NoTrunk | OriginateRefused::TrunkUnavailable(_) => {
            ApiError::field("trunk", why.to_string())
        }
        OriginateRefused::Blocked => {
            let mut e = ApiError::forbidden(why.to_string());
            e.detail.field = Some("to".into());
            e
        }
        OriginateRefused::Capacity => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "capacity", why.to_string());
            e.retry_after_secs = Some(1);
            e
        }
        OriginateRefused::Draining => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            why.to_string(),
        ),
    }
}
