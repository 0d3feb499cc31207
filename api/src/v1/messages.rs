//! `/v1/messages` (the token's account): SMS sent as a SIP MESSAGE through
//! a trunk, and the account's messages, newest first.

use super::ApiState;
use super::calls::refusal;
use super::common::check_id;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::idempotency::idempotent;
use super::list::{after_row, cut, page_size};
use super::schema::{IdPath, MessageIn, MessageOut, MessagePage, PageQuery};
use crate::store::MessageRecord;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

fn message_out(m: MessageRecord) -> MessageOut {
    MessageOut {
        id: m.id,
        direction: m.direction.as_str().to_string(),
        from: m.from_number,
        to: m.to_number,
        body: m.body,
        status: m.status,
        created_at: m.created_at,
    }
}

/// Sends an SMS: a SIP MESSAGE through the `from` number's trunk (or the
/// one named), with digest when challenged. Answered 201 `queued`; the
/// listing shows `sent` or `failed` once the carrier answered.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = MessageIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeating a POST with the same key (within 24 h) returns the first answer and sends no second message")),
    responses((status = 201, body = MessageOut), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn send_message(
    State(s): State<ApiState>,
    auth: Auth,
    headers: axum::http::HeaderMap,
    JsonBody(b): JsonBody<MessageIn>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let account = auth.account()?.to_string();
    idempotent(&s.store, &account, &headers, "msg", b, |b| {
        send_one_message(&s, &account, b)
    })
    .await
}

async fn send_one_message(
    s: &ApiState,
    account: &str,
    b: MessageIn,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let from = crate::e164::normalize_e164(&b.from)
        .ok_or_else(|| ApiError::field("from", "an E.164 number (+15550001234)"))?;
    let to = crate::e164::normalize_e164(&b.to)
        .ok_or_else(|| ApiError::field("to", "an E.164 number (+15550001234)"))?;
    if b.body.is_empty() || b.body.len() > MAX_SMS_BYTES {
        return Err(ApiError::field(
            "body",
            "1–1300 bytes of UTF-8: one SIP MESSAGE carries it whole (RFC 3428 §7); split longer texts yourself",
        ));
    }
    if let Some(t) = &b.trunk {
        check_id("trunk", t)?;
    }
    let Some(control) = &s.control else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no signalling core behind this API",
        ));
    };
    let sent = control
        .send_message(crate::control::MessageRequest {
            account: account.to_string(),
            from,
            to,
            body: b.body,
            trunk: b.trunk,
        })
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the signalling core is busy; retry",
            )
        })?;
    let record = sent.map_err(refusal)?;
    let body = serde_json::to_value(message_out(record)).map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// Largest SMS body (RFC 3428 §7 keeps a MESSAGE under 1300 bytes).
const MAX_SMS_BYTES: usize = 1300;

/// The account's messages, newest first.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(PageQuery),
    responses((status = 200, body = MessagePage)))]
pub(super) async fn list_messages(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let account = auth.account()?;
    let n = page_size(q.limit)?;
    let rows = s
        .store
        .list_messages(account, crate::store::MAX_LIMIT)
        .await?;
    let rows = after_row(rows, q.cursor.as_deref(), |m| &m.id);
    Ok(Json(cut(rows, n, |m| &m.id, message_out).into()))
}

/// One of the account's messages.
#[utoipa::path(get, path = "/v1/messages/{id}", params(IdPath), tag = "messages",
    responses((status = 200, body = MessageOut), (status = 404, body = ErrorBody)))]
pub(super) async fn get_message(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<Json<MessageOut>, ApiError> {
    let account = auth.account()?;
    match s.store.get_message(&id).await? {
        // Another account's message answers as a missing one.
        Some(m) if m.account_id == account => Ok(Json(message_out(m))),
        _ => Err(ApiError::not_found("message")),
    }
}
