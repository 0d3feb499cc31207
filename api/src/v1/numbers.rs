//! `/v1/numbers` (the token's account): the numbers and prefix patterns an
//! account holds, each with its route (an AI stream, a forward, echo).

use super::ApiState;
use super::common::{
    changed, check_max_calls, check_sip_target, check_stream, check_webhook, pattern,
};
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::list::page;
use super::schema::{NumberIn, NumberOut, NumberPage, NumberPath, PageQuery, StreamSpec};
use crate::e164::Pattern;
use crate::store::{Number, RouteKind, WebhookFormat};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

fn number_out(n: Number) -> NumberOut {
    let (stream, forward_to) = match n.route {
        RouteKind::Stream => (
            n.target.map(|url| StreamSpec {
                url,
                dialect: n.dialect,
                params: n
                    .params
                    .as_deref()
                    .and_then(|p| serde_json::from_str(p).ok()),
            }),
            None,
        ),
        RouteKind::Forward => (None, n.target),
        RouteKind::Echo => (None, None),
    };
    NumberOut {
        number: n.pattern,
        route: n.route.as_str().to_string(),
        stream,
        forward_to,
        trunk: n.trunk,
        max_calls: n.max_calls,
        fallback: n.fallback,
        voice_webhook: n.voice_webhook,
        sms_webhook: n.sms_webhook,
        media_security: n.media_security,
        webhook_format: n.webhook_format,
        status_webhook: n.status_webhook,
    }
}

/// The account's numbers.
#[utoipa::path(get, path = "/v1/numbers", tag = "numbers", params(PageQuery),
    responses((status = 200, body = NumberPage), (status = 401, body = ErrorBody)))]
pub(super) async fn list_numbers(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<NumberPage>, ApiError> {
    let account = auth.account()?;
    let rows = s.store.list_numbers_for(account).await?;
    Ok(Json(page(rows, &q, |n| &n.pattern, number_out)?.into()))
}

/// One number.
#[utoipa::path(get, path = "/v1/numbers/{number}", params(NumberPath), tag = "numbers",
    responses((status = 200, body = NumberOut), (status = 404, body = ErrorBody)))]
pub(super) async fn get_number(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(NumberPath { number: raw }): PathParams<NumberPath>,
) -> Result<Json<NumberOut>, ApiError> {
    let account = auth.account()?;
    let p = pattern("number", &raw)?;
    let n = s
        .store
        .get_number(account, &p)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    Ok(Json(number_out(n)))
}

/// Creates or replaces a number's route; takes effect for the next call.
#[utoipa::path(put, path = "/v1/numbers/{number}", params(NumberPath), tag = "numbers", request_body = NumberIn,
    responses((status = 200, body = NumberOut), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn put_number(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(NumberPath { number: raw }): PathParams<NumberPath>,
    JsonBody(b): JsonBody<NumberIn>,
) -> Result<Json<NumberOut>, ApiError> {
    let account = auth.account()?.to_string();
    let p = pattern("number", &raw)?;
    let route = RouteKind::parse(&b.route)
        .ok_or_else(|| ApiError::field("route", "route must be stream, forward or echo"))?;
    let numbers = s.store.list_numbers().await?;
    let new = Pattern::parse(&p).ok_or_else(|| ApiError::field("number", "not a pattern"))?;
    if new.is_catch_all() && !auth.0.admin {
        return Err(ApiError::forbidden(
            "the catch-all number * needs an admin token",
        ));
    }
    // Admins assign numbers; an account claims only inside the ranges an
    // admin granted it (and keeps editing what it holds already).
    let owned = numbers
        .iter()
        .any(|n| n.pattern == p && n.account_id == account);
    if !auth.0.admin && !owned {
        let granted = s
            .store
            .get_account(&account)
            .await?
            .map(|a| a.number_ranges)
            .unwrap_or_default();
        if !granted
            .iter()
            .filter_map(|g| Pattern::parse(g))
            .any(|g| g.covers(&new))
        {
            return Err(ApiError::forbidden(
                "this number is outside the ranges granted to the account; an admin assigns it",
            ));
        }
    }
    // Numbers are routed by the most specific pattern, so a pattern inside
    // (or around) another account's would take its calls and caller ids.
    // Another account's catch-all `*` is the operator's default, not a
    // claim on every number.
    if numbers.iter().any(|n| {
        n.account_id != account
            && Pattern::parse(&n.pattern)
                .is_some_and(|other| !other.is_catch_all() && other.overlaps(&new))
    }) {
        return Err(ApiError::conflict(
            "number",
            "this number (or a number it covers) belongs to another account",
        ));
    }
    // Only this account's SIP users can be forwarded to.
    let users = s.store.list_sip_users_for(&account).await?;
    let dialable =
        |v: &str| (s.checks.sip_uri_host)(v).is_some() || users.iter().any(|u| u.username == v);
    let (target, dialect, params) = match route {
        RouteKind::Stream => {
            if b.forward_to.is_some() {
                return Err(ApiError::field(
                    "forward_to",
                    "route stream takes no forward_to",
                ));
            }
            let st = b
                .stream
                .ok_or_else(|| ApiError::field("stream", "route stream needs stream.url"))?;
            let (url, dialect, params) = check_stream(&s, st, "stream.")?;
            (Some(url), dialect, params)
        }
        RouteKind::Forward => {
            if b.stream.is_some() {
                return Err(ApiError::field("stream", "route forward takes no stream"));
            }
            let to = b
                .forward_to
                .ok_or_else(|| ApiError::field("forward_to", "route forward needs forward_to"))?;
            if !dialable(&to) {
                return Err(ApiError::field(
                    "forward_to",
                    "a sip: URI or one of this gateway's SIP users",
                ));
            }
            check_sip_target(&s, "forward_to", &to)?;
            (Some(to), None, None)
        }
        RouteKind::Echo => {
            if b.stream.is_some() || b.forward_to.is_some() {
                return Err(ApiError::field(
                    "route",
                    "route echo takes no stream or forward_to",
                ));
            }
            (None, None, None)
        }
    };
    if let Some(f) = &b.fallback {
        if !dialable(f) {
            return Err(ApiError::field(
                "fallback",
                "a sip: URI or one of this gateway's SIP users",
            ));
        }
        check_sip_target(&s, "fallback", f)?;
    }
    if let Some(t) = &b.trunk
        && !s
            .store
            .get_trunk(t)
            .await?
            .is_some_and(|t| t.usable_by(&account))
    {
        // Another account's trunk answers as a missing one.
        return Err(ApiError::field("trunk", format!("no trunk named {t:?}")));
    }
    check_max_calls(b.max_calls)?;
    if let Some(w) = &b.voice_webhook {
        check_webhook(&s, "voice_webhook", w)?;
    }
    if let Some(w) = &b.sms_webhook {
        check_webhook(&s, "sms_webhook", w)?;
    }
    if let Some(w) = &b.status_webhook {
        check_webhook(&s, "status_webhook", w)?;
    }
    let webhook_format = b.webhook_format.unwrap_or_default();
    if webhook_format == WebhookFormat::Twilio
        && s.store.account_auth_token(&account).await?.is_none()
    {
        return Err(ApiError::field(
            "webhook_format",
            "twilio requests are signed with the account's auth token: \
             POST /v1/accounts/{id}/auth-token first",
        ));
    }
    let n = Number {
        pattern: p,
        account_id: account,
        route,
        target,
        dialect,
        params,
        trunk: b.trunk,
        max_calls: b.max_calls,
        fallback: b.fallback,
        voice_webhook: b.voice_webhook,
        sms_webhook: b.sms_webhook,
        media_security: b.media_security.unwrap_or_default(),
        webhook_format,
        status_webhook: b.status_webhook,
    };
    // The check above may race a concurrent PUT from another account: the
    // write itself refuses to move the row.
    if !s.store.upsert_number(&n).await? {
        return Err(ApiError::conflict(
            "number",
            "this number (or a number it covers) belongs to another account",
        ));
    }
    changed(&s).await;
    Ok(Json(number_out(n)))
}

/// Releases a number: its calls are refused from then on.
#[utoipa::path(delete, path = "/v1/numbers/{number}", params(NumberPath), tag = "numbers",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_number(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(NumberPath { number: raw }): PathParams<NumberPath>,
) -> Result<StatusCode, ApiError> {
    let account = auth.account()?;
    let p = pattern("number", &raw)?;
    if s.store.get_number(account, &p).await?.is_none() {
        return Err(ApiError::not_found("number"));
    }
    s.store.delete_number(&p).await?;
    changed(&s).await;
    Ok(StatusCode::NO_CONTENT)
}
