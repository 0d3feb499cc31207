//! Twilio's Calls resource (<https://www.twilio.com/docs/voice/api/call-resource>):
//! create, fetch, list, and update to end a call.
//!
//! A created call runs its TwiML (`Twiml`, or `Url` fetched with Twilio's
//! fields and signature) when the callee answers; its status callback is
//! Twilio's. Updating a live call's `Url`/`Twiml` (redirect) is refused as
//! not supported yet.

use super::paging::{ListQuery, PageMeta};
use super::{API_VERSION, FormBody, TwilioAccount, TwilioError};
use crate::control::{Connect, OriginateRequest, TwimlStart};
use crate::store::{CallFilter, CallRecord, Direction, WebhookFormat};
use crate::twiml::{Fetch, Method, Url};
use crate::v1::ApiState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;

/// One call as Twilio's API writes it.
#[derive(Debug, Serialize)]
pub(super) struct TwilioCall {
    pub sid: String,
    pub account_sid: String,
    pub api_version: &'static str,
    pub date_created: Option<String>,
    pub date_updated: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    /// Whole seconds, as text; `None` until the call ends.
    pub duration: Option<String>,
    pub direction: &'static str,
    pub from: String,
    pub from_formatted: String,
    pub to: String,
    pub to_formatted: String,
    /// `queued`, `ringing`, `in-progress`, `completed`, `busy`, `failed`,
    /// `no-answer` or `canceled`.
    pub status: String,
    pub answered_by: Option<String>,
    pub caller_name: Option<String>,
    pub forwarded_from: Option<String>,
    pub group_sid: Option<String>,
    pub parent_call_sid: Option<String>,
    pub phone_number_sid: Option<String>,
    pub price: Option<String>,
    pub price_unit: &'static str,
    pub queue_time: &'static str,
    pub trunk_sid: Option<String>,
    pub uri: String,
    pub subresource_uris: serde_json::Value,
}

fn call_uri(account: &str, sid: &str) -> String {
    format!("/{API_VERSION}/Accounts/{account}/Calls/{sid}.json")
}

/// `c` in Twilio's shape.
pub(super) fn twilio_call(c: &CallRecord, account: &str) -> TwilioCall {
    use crate::webhook::rfc2822;
    let status = domain::model::call_status(
        c.answer_at.is_some(),
        c.end_at.is_some(),
        c.end_cause.as_deref(),
        c.sip_status,
    );
    let updated = c.end_at.or(c.answer_at).unwrap_or(c.invite_at);
    TwilioCall {
        sid: c.id.clone(),
        account_sid: account.to_string(),
        api_version: API_VERSION,
        date_created: Some(rfc2822(c.invite_at)),
        date_updated: Some(rfc2822(updated)),
        start_time: Some(rfc2822(c.invite_at)),
        end_time: c.end_at.map(rfc2822),
        duration: c
            .end_at
            .map(|_| ((c.duration_ms.unwrap_or(0).max(0) + 999) / 1000).to_string()),
        direction: match c.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound-api",
        },
        from: c.from_number.clone(),
        from_formatted: c.from_number.clone(),
        to: c.to_number.clone(),
        to_formatted: c.to_number.clone(),
        status: status.to_string(),
        answered_by: None,
        caller_name: None,
        forwarded_from: None,
        group_sid: None,
        parent_call_sid: None,
        phone_number_sid: None,
        price: None,
        price_unit: "USD",
        queue_time: "0",
        trunk_sid: c.trunk.clone(),
        uri: call_uri(account, &c.id),
        subresource_uris: serde_json::json!({}),
    }
}

/// What relative URLs in inline TwiML resolve against (and are refused).
const INLINE_BASE: &str = "https://inline-twiml.invalid/";

/// Parameters that change what a call does and are not carried out here.
const UNSUPPORTED: &[&str] = &[
    "MachineDetection",
    "AsyncAmd",
    "SendDigits",
    "FallbackUrl",
    "TimeLimit",
    "RecordingChannels",
    "Trim",
    "SipAuthUsername",
    "SipAuthPassword",
    "CallToken",
    "Byoc",
    "CallReason",
    "ApplicationSid",
];

/// Creates a call: `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`.
pub(super) async fn create(
    State(s): State<ApiState>,
    TwilioAccount(account): TwilioAccount,
    form: FormBody,
) -> Result<(StatusCode, Json<TwilioCall>), TwilioError> {
    if let Some(p) = UNSUPPORTED.iter().find(|p| form.get(p).is_some()) {
        return Err(TwilioError::unsupported(p));
    }
    // Record: both tracks once the TwiML streams the call to an AI
    // (`POST /v1/calls/{id}/recording`'s recording).
    let record = match form.get("Record") {
        Some(r) if r.eq_ignore_ascii_case("true") => {
            let status_callback = match form.get("RecordingStatusCallback") {
                None => None,
                Some(url) => {
                    if !crate::webhook::valid_url(url) {
                        return Err(TwilioError::bad_request(
                            "RecordingStatusCallback must be an absolute http(s) URL",
                        ));
                    }
                    s.targets.check_url(url).map_err(|e| {
                        TwilioError::bad_request(format!("RecordingStatusCallback: {e}"))
                    })?;
                    Some(url.to_string())
                }
            };
            Some(crate::control::RecordRequest { status_callback })
        }
        Some(r) if r.eq_ignore_ascii_case("false") => None,
        Some(_) => return Err(TwilioError::bad_request("Record must be true or false")),
        None => {
            if form.get("RecordingStatusCallback").is_some() {
                return Err(TwilioError::bad_request(
                    "RecordingStatusCallback needs Record=true",
                ));
            }
            None
        }
    };
    let from = form
        .get("From")
        .and_then(crate::e164::normalize_e164)
        .ok_or_else(|| TwilioError::bad_request("From must be an E.164 number (+15550001234)"))?;
    let to = form
        .get("To")
        .and_then(crate::e164::normalize_e164)
        .ok_or_else(|| TwilioError::bad_request("To must be an E.164 number (+15550001234)"))?;
    let start = match (form.get("Twiml"), form.get("Url")) {
        (Some(xml), None) => {
            // Inline TwiML has no URL of its own: a relative URL in it
            // resolves against this base and is refused below.
            let base = Url::parse(INLINE_BASE).map_err(|e| TwilioError::internal(&e))?;
            let verbs = crate::twiml::parse(xml.as_bytes(), &base)
                .map_err(|e| TwilioError::bad_request(format!("Twiml: {e}")))?;
            if verbs.iter().any(|v| match v {
                crate::twiml::Verb::Redirect(f) => f.url.starts_with(INLINE_BASE),
                crate::twiml::Verb::Dial(d) => d
                    .action
                    .as_ref()
                    .is_some_and(|f| f.url.starts_with(INLINE_BASE)),
                _ => false,
            }) {
                return Err(TwilioError::bad_request(
                    "Twiml: a URL in inline TwiML must be absolute",
                ));
            }
            if let Some(e) = crate::webhook::twiml_target_refused(&s.targets, &verbs) {
                return Err(TwilioError::bad_request(format!("Twiml: {e}")));
            }
            TwimlStart::Verbs(verbs)
        }
        (None, Some(url)) => {
            if !crate::webhook::valid_url(url) {
                return Err(TwilioError::bad_request(
                    "Url must be an absolute http(s) URL",
                ));
            }
            s.targets
                .check_url(url)
                .map_err(|e| TwilioError::bad_request(format!("Url: {e}")))?;
            let method = match form.get("Method") {
                None => Method::Post,
                Some(m) if m.eq_ignore_ascii_case("POST") => Method::Post,
                Some(m) if m.eq_ignore_ascii_case("GET") => Method::Get,
                Some(_) => return Err(TwilioError::bad_request("Method must be GET or POST")),
            };
            TwimlStart::Fetch(Fetch {
                url: url.to_string(),
                method,
            })
        }
        (Some(_), Some(_)) => {
            return Err(TwilioError::bad_request("give Url or Twiml, not both"));
        }
        (None, None) => return Err(TwilioError::bad_request("Url or Twiml is required")),
    };
    let status_webhook = match form.get("StatusCallback") {
        None => None,
        Some(url) => {
            if !crate::webhook::valid_url(url) {
                return Err(TwilioError::bad_request(
                    "StatusCallback must be an absolute http(s) URL",
                ));
            }
            s.targets
                .check_url(url)
                .map_err(|e| TwilioError::bad_request(format!("StatusCallback: {e}")))?;
            Some(url.to_string())
        }
    };
    if form
        .get("StatusCallbackMethod")
        .is_some_and(|m| !m.eq_ignore_ascii_case("POST"))
    {
        return Err(TwilioError::unsupported(
            "StatusCallbackMethod other than POST",
        ));
    }
    // Twilio sends `completed` alone unless events are named; a library
    // may send them repeated or space-separated.
    let mut status_events: Vec<String> = form
        .all("StatusCallbackEvent")
        .flat_map(|v| v.split_whitespace())
        .map(str::to_string)
        .collect();
    if let Some(bad) = status_events.iter().find(|e| {
        !matches!(
            e.as_str(),
            "initiated" | "ringing" | "answered" | "completed"
        )
    }) {
        return Err(TwilioError::bad_request(format!(
            "StatusCallbackEvent {bad:?} is not one of initiated, ringing, answered, completed"
        )));
    }
    if status_events.is_empty() {
        status_events.push("completed".into());
    }
    let ring_timeout = match form.get("Timeout") {
        None => 60,
        Some(t) => t
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|t| (1..=600).contains(t))
            .ok_or_else(|| TwilioError::bad_request("Timeout must be 1 to 600 seconds"))?,
    };
    let Some(control) = &s.control else {
        return Err(TwilioError::unavailable(
            "no signalling core behind this API",
        ));
    };
    let placed = control
        .originate(OriginateRequest {
            account: account.clone(),
            from: from.clone(),
            to: to.clone(),
            trunk: None,
            connect: Connect::Twiml(start),
            ring_timeout: Some(std::time::Duration::from_secs(ring_timeout)),
            status_webhook,
            status_format: WebhookFormat::Twilio,
            status_events,
            record,
        })
        .await
        .ok_or_else(|| TwilioError::unavailable("the signalling core is busy; retry"))?;
    let o = placed.map_err(refusal)?;
    let now = crate::webhook::rfc2822(o.started_at);
    let mut call = twilio_call(
        &CallRecord {
            id: o.call_id,
            account_id: Some(account.clone()),
            direction: Direction::Outbound,
            from_number: from,
            to_number: to,
            trunk: Some(o.trunk),
            sip_call_id: o.sip_call_id,
            invite_at: o.started_at,
            answer_at: None,
            end_at: None,
            end_cause: None,
            sip_status: None,
            duration_ms: None,
            media_mode: "twiml".into(),
            node: Some(s.cluster.node_id.clone()),
            media_security: None,
        },
        &account,
    );
    call.status = "queued".into();
    call.date_created = Some(now.clone());
    call.date_updated = Some(now);
    Ok((StatusCode::CREATED, Json(call)))
}

/// Twilio's error for a call or message the core would not place.
pub(super) fn refusal(why: crate::control::OriginateRefused) -> TwilioError {
    use crate::control::OriginateRefused;
    match why {
        // 21210: the caller id is not one of the account's numbers.
        OriginateRefused::FromNotOwned => {
            TwilioError::new(StatusCode::BAD_REQUEST, 21210, format!("From: {why}"))
        }
        OriginateRefused::Blocked => {
            TwilioError::new(StatusCode::FORBIDDEN, 21216, format!("To: {why}"))
        }
        OriginateRefused::Capacity => TwilioError::too_many(std::time::Duration::from_secs(1)),
        other => TwilioError::unavailable(other.to_string()),
    }
}

/// What the core answered a live-call request with, as Twilio's error
/// when it did not take it (21220: the call is not in a state for it).
fn accepted(outcome: Option<crate::control::ControlOutcome>) -> Result<(), TwilioError> {
    use crate::control::ControlOutcome;
    match outcome {
        Some(ControlOutcome::Accepted) => Ok(()),
        // Another node holds it (or it ended a moment ago).
        Some(ControlOutcome::NotLive) => Err(TwilioError::new(
            StatusCode::CONFLICT,
            21220,
            "the call is not live on this node",
        )),
        Some(ControlOutcome::Refused(why)) => {
            Err(TwilioError::new(StatusCode::CONFLICT, 21220, why))
        }
        None => Err(TwilioError::unavailable(
            "the signalling core is busy; retry",
        )),
    }
}

/// The `{sid}.json` path segment's resource id.
pub(super) fn resource_sid(segment: &str) -> Result<&str, TwilioError> {
    segment
        .strip_suffix(".json")
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .ok_or_else(TwilioError::not_found)
}

async fn own_call(s: &ApiState, account: &str, sid: &str) -> Result<CallRecord, TwilioError> {
    match s.store.get_call(sid).await {
        Ok(Some(c)) if c.account_id.as_deref() == Some(account) => Ok(c),
        Ok(_) => Err(TwilioError::not_found()),
        Err(e) => Err(TwilioError::internal(&e)),
    }
}

/// One call: `GET …/Calls/{CallSid}.json`.
pub(super) async fn fetch(
    State(s): State<ApiState>,
    TwilioAccount(account): TwilioAccount,
    Path((_, segment)): Path<(String, String)>,
) -> Result<Json<TwilioCall>, TwilioError> {
    let c = own_call(&s, &account, resource_sid(&segment)?).await?;
    Ok(Json(twilio_call(&c, &account)))
}

/// Ends a live call: `POST …/Calls/{CallSid}.json` with `Status=completed`
/// (or `canceled` while it rings).
pub(super) async fn update(
    State(s): State<ApiState>,
    TwilioAccount(account): TwilioAccount,
    Path((_, segment)): Path<(String, String)>,
    form: FormBody,
) -> Result<Json<TwilioCall>, TwilioError> {
    let sid = resource_sid(&segment)?;
    for p in ["FallbackUrl", "TimeLimit"] {
        if form.get(p).is_some() {
            return Err(TwilioError::unsupported(p));
        }
    }
    let c = own_call(&s, &account, sid).await?;
    if let Some(xml) = form.get("Twiml") {
        return redirect(&s, &account, c, xml).await;
    }
    if let Some(url) = form.get("Url") {
        return redirect_fetch(&s, &account, c, url, form.get("Method")).await;
    }
    match form.get("Status") {
        // Twilio: `canceled` ends a call still queued or ringing only.
        Some("canceled") if c.answer_at.is_some() => return Ok(Json(twilio_call(&c, &account))),
        Some("completed" | "canceled") => {}
        Some(other) => {
            return Err(TwilioError::bad_request(format!(
                "Status {other:?}: only completed or canceled"
            )));
        }
        None => return Ok(Json(twilio_call(&c, &account))),
    }
    if c.end_at.is_none() {
        let Some(control) = &s.control else {
            return Err(TwilioError::unavailable(
                "no signalling core behind this API",
            ));
        };
        accepted(control.hangup(sid).await)?;
    }
    let c = own_call(&s, &account, sid).await?;
    let mut call = twilio_call(&c, &account);
    if c.end_at.is_none() {
        // The hangup is under way; the record closes a moment later.
        call.status = if c.answer_at.is_some() {
            "completed"
        } else {
            "canceled"
        }
        .into();
    }
    Ok(Json(call))
}

/// A live AI call given new TwiML at `url`: the gateway fetches it
/// (signed, `CallStatus=in-progress`) and carries it out; its
/// `<Connect><Stream>` moves the call's stream.
async fn redirect_fetch(
    s: &ApiState,
    account: &str,
    c: CallRecord,
    url: &str,
    method: Option<&str>,
) -> Result<Json<TwilioCall>, TwilioError> {
    if !crate::webhook::valid_url(url) {
        return Err(TwilioError::bad_request(
            "Url must be an absolute http(s) URL",
        ));
    }
    s.targets
        .check_url(url)
        .map_err(|e| TwilioError::bad_request(format!("Url: {e}")))?;
    let method = match method {
        None => Method::Post,
        Some(m) if m.eq_ignore_ascii_case("POST") => Method::Post,
        Some(m) if m.eq_ignore_ascii_case("GET") => Method::Get,
        Some(_) => return Err(TwilioError::bad_request("Method must be GET or POST")),
    };
    if c.end_at.is_some() {
        return Err(TwilioError::new(
            StatusCode::CONFLICT,
            21220,
            "the call has already ended",
        ));
    }
    let Some(control) = &s.control else {
        return Err(TwilioError::unavailable(
            "no signalling core behind this API",
        ));
    };
    let fetch = Fetch {
        url: url.to_string(),
        method,
    };
    accepted(control.redirect_fetch(&c.id, account, fetch).await)?;
    Ok(Json(twilio_call(&c, account)))
}

/// A live AI call moved by new TwiML: `<Connect><Stream>` alone (a live
/// redirect, same callSid, a new streamSid).
async fn redirect(
    s: &ApiState,
    account: &str,
    c: CallRecord,
    xml: &str,
) -> Result<Json<TwilioCall>, TwilioError> {
    let base = Url::parse(INLINE_BASE).map_err(|e| TwilioError::internal(&e))?;
    let verbs = crate::twiml::parse(xml.as_bytes(), &base)
        .map_err(|e| TwilioError::bad_request(format!("Twiml: {e}")))?;
    let [crate::twiml::Verb::Connect(stream)] = verbs.as_slice() else {
        return Err(TwilioError::unsupported(
            "Twiml on a live call other than one <Connect><Stream>",
        ));
    };
    if let Some(e) = crate::webhook::twiml_target_refused(&s.targets, &verbs) {
        return Err(TwilioError::bad_request(format!("Twiml: {e}")));
    }
    if c.end_at.is_some() {
        return Err(TwilioError::new(
            StatusCode::CONFLICT,
            21220,
            "the call has already ended",
        ));
    }
    let target = stream.target();
    let Some(control) = &s.control else {
        return Err(TwilioError::unavailable(
            "no signalling core behind this API",
        ));
    };
    accepted(control.redirect(&c.id, account, target).await)?;
    Ok(Json(twilio_call(&c, account)))
}

/// A page of calls, newest first.
#[derive(Debug, Serialize)]
pub(super) struct CallPage {
    calls: Vec<TwilioCall>,
    #[serde(flatten)]
    meta: PageMeta,
}

/// Calls, newest first: `GET …/Calls.json` (`To`, `From`, `PageSize`,
/// `PageToken`).
pub(super) async fn list(
    State(s): State<ApiState>,
    TwilioAccount(account): TwilioAccount,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CallPage>, TwilioError> {
    let Query(q) = query.map_err(|e| TwilioError::bad_request(e.body_text()))?;
    let q = q.checked()?;
    let filter = CallFilter {
        account_id: Some(account.clone()),
        direction: None,
        from_number: q.from.clone(),
        to_number: q.to.clone(),
        active: None,
        before_id: q.page_token.clone(),
        limit: q.page_size,
    };
    let rows = s
        .store
        .list_calls(&filter)
        .await
        .map_err(|e| TwilioError::internal(&e))?;
    let base = format!("/{API_VERSION}/Accounts/{account}/Calls.json");
    let full = rows.len() == q.page_size as usize;
    let next = rows.last().filter(|_| full).map(|c| c.id.as_str());
    Ok(Json(CallPage {
        meta: q.meta(&base, rows.len(), next),
        calls: rows.iter().map(|c| twilio_call(c, &account)).collect(),
    }))
}
