//! Twilio's Messages resource (<https://www.twilio.com/docs/messaging/api/message-resource>):
//! create (an SMS sent as a SIP MESSAGE through the `From` number's
//! trunk, as `POST /v1/messages`), fetch and list.

use super::paging::{ListQuery, PageMeta};
use super::{API_VERSION, FormBody, TwilioAccount, TwilioError};
use crate::store::{Direction, MessageRecord};
use crate::v1::ApiState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;

/// Largest body (RFC 3428 §7 keeps a MESSAGE under 1300 bytes).
const MAX_BODY_BYTES: usize = 1300;

/// One message as Twilio's API writes it.
#[derive(Debug, Serialize)]
pub(super) struct TwilioMessage {
    sid: String,
    account_sid: String,
    api_version: &'static str,
    body: String,
    date_created: String,
    date_updated: String,
    date_sent: Option<String>,
    direction: &'static str,
    error_code: Option<u32>,
    error_message: Option<String>,
    from: String,
    to: String,
    messaging_service_sid: Option<String>,
    num_media: &'static str,
    num_segments: &'static str,
    price: Option<String>,
    price_unit: &'static str,
    /// `queued`, `sent`, `failed` or `received`.
    status: String,
    uri: String,
    subresource_uris: serde_json::Value,
}

fn twilio_message(m: &MessageRecord) -> TwilioMessage {
    let created = crate::webhook::rfc2822(m.created_at);
    TwilioMessage {
        sid: m.id.clone(),
        account_sid: m.account_id.clone(),
        api_version: API_VERSION,
        body: m.body.clone(),
        date_created: created.clone(),
        date_updated: created.clone(),
        date_sent: (m.status == "sent" || m.status == "received").then_some(created),
        direction: match m.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound-api",
        },
        error_code: None,
        error_message: None,
        from: m.from_number.clone(),
        to: m.to_number.clone(),
        messaging_service_sid: None,
        num_media: "0",
        num_segments: "1",
        price: None,
        price_unit: "USD",
        status: m.status.clone(),
        uri: format!(
            "/{API_VERSION}/Accounts/{}/Messages/{}.json",
            m.account_id, m.id
        ),
        subresource_uris: serde_json::json!({}),
    }
}

/// Parameters that change what a message is and are not carried out.
const UNSUPPORTED: &[&str] = &[
    "MediaUrl",
    "MessagingServiceSid",
    "StatusCallback",
    "ContentSid",
    "SendAt",
    "ScheduleType",
    "ValidityPeriod",
];

/// Sends an SMS: `POST …/Messages.json` (`To`, `From`, `Body`).
pub(super) async fn create(
    State(s): State<ApiState>,
    TwilioAccount(account): TwilioAccount,
    form: FormBody,
) -> Result<(StatusCode, Json<TwilioMessage>), TwilioError> {
    if let Some(p) = UNSUPPORTED.iter().find(|p| form.get(p).is_some()) {
        return Err(TwilioError::unsupported(p));
    }
    let from = form
        .get("From")
        .and_then(crate::e164::normalize_e164)
        .ok_or_else(|| TwilioError::bad_request("From must be an E.164 number (+15550001234)"))?;
    let to = form
        .get("To")
        .and_then(crate::e164::normalize_e164)
        .ok_or_else(|| TwilioError::bad_request("To must be an E.164 number (+15550001234)"))?;
    let body = form.get("Body").unwrap_or_default();
    if body.is_empty() || body.len() > MAX_BODY_BYTES {
        // 21617: the body exceeds the limit (or is missing).
        return Err(TwilioError::new(
            StatusCode::BAD_REQUEST,
            21617,
            "Body must be 1-1300 bytes of UTF-8: one SIP MESSAGE carries it whole (RFC 3428 §7)",
        ));
    }
    let Some(control) = &s.control else {
        return Err(TwilioError::unavailable(
            "no signalling core behind this API",
        ));
    };
    let sent = control
        .send_message(crate::control::MessageRequest {
            account: account.clone(),
            from,
            to,
            body: body.to_string(),
            trunk: None,
        })
        .await
        .ok_or_else(|| TwilioError::unavailable("the signalling core is busy; retry"))?;
    let record = sent.map_err(super::calls::refusal)?;
    Ok((StatusCode::CREATED, Json(twilio_message(&record))))
}

/// One message: `GET …/Messages/{MessageSid}.json`.
pub(super) async fn fetch(
    State(s): State<ApiState>,
    TwilioAccount(account): TwilioAccount,
    Path((_, segment)): Path<(String, String)>,
) -> Result<Json<TwilioMessage>, TwilioError> {
    let sid = super::calls::resource_sid(&segment)?;
    match s.store.get_message(sid).await {
        Ok(Some(m)) if m.account_id == account => Ok(Json(twilio_message(&m))),
        Ok(_) => Err(TwilioError::not_found()),
        Err(e) => Err(TwilioError::internal(&e)),
    }
}

#[derive(Debug, Serialize)]
pub(super) struct MessagePage {
    messages: Vec<TwilioMessage>,
    #[serde(flatten)]
    meta: PageMeta,
}

/// Messages, newest first: `GET …/Messages.json` (`To`, `From`,
/// `PageSize`, `PageToken`), from the account's newest 1,000.
pub(super) async fn list(
    State(s): State<ApiState>,
    TwilioAccount(account): TwilioAccount,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MessagePage>, TwilioError> {
    let Query(q) = query.map_err(|e| TwilioError::bad_request(e.body_text()))?;
    let q = q.checked()?;
    let rows = s
        .store
        .list_messages(&account, crate::store::MAX_LIMIT)
        .await
        .map_err(|e| TwilioError::internal(&e))?;
    let mut rows: Vec<MessageRecord> = rows
        .into_iter()
        .filter(|m| q.to.as_ref().is_none_or(|t| &m.to_number == t))
        .filter(|m| q.from.as_ref().is_none_or(|f| &m.from_number == f))
        .collect();
    if let Some(after) = &q.page_token {
        let at = rows
            .iter()
            .position(|m| &m.id == after)
            .map_or(rows.len(), |i| i + 1);
        rows.drain(..at);
    }
    let more = rows.len() > q.page_size as usize;
    rows.truncate(q.page_size as usize);
    let base = format!("/{API_VERSION}/Accounts/{account}/Messages.json");
    let next = rows.last().filter(|_| more).map(|m| m.id.as_str());
    Ok(Json(MessagePage {
        meta: q.meta(&base, rows.len(), next),
        messages: rows.iter().map(twilio_message).collect(),
    }))
}
