//! Live control of one of the token's account's calls, carried out by the
//! core: hang up, DTMF, transfer, and a listen-only stream
//! (`/v1/calls/{id}/…`).

use super::ApiState;
use super::calls::{own_call, party, ring_timeout};
use super::common::{check_sip_target, check_stream};
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams};
use super::schema::{CallActionOut, CallUpdateIn, DtmfIn, IdPath, StreamSpec, TransferIn};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// What the core answered a live-control request with, as HTTP.
async fn live_action(
    s: &ApiState,
    account: &str,
    id: String,
    status: &str,
    ask: impl AsyncFnOnce(&crate::control::CallControl, &str) -> Option<crate::control::ControlOutcome>,
) -> Result<(StatusCode, Json<CallActionOut>), ApiError> {
    use crate::control::ControlOutcome;
    let call = own_call(s, account, &id).await?;
    if call.end_at.is_some() {
        return Err(ApiError::conflict("id", "the call has already ended"));
    }
    let Some(control) = &s.control else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no signalling core behind this API",
        ));
    };
    match ask(control, &id).await {
        Some(ControlOutcome::Accepted) => Ok((
            StatusCode::ACCEPTED,
            Json(CallActionOut {
                id,
                status: status.into(),
            }),
        )),
        // The record is open but this node does not hold the call: it
        // ended a moment ago, or another node holds it.
        Some(ControlOutcome::NotLive) => Err(ApiError::conflict(
            "id",
            "the call is not live on this node",
        )),
        Some(ControlOutcome::Refused(why)) => Err(ApiError::conflict("id", why)),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the signalling core is busy; retry",
        )),
    }
}

/// Hangs up a live call (BYE, or CANCEL while it rings).
#[utoipa::path(post, path = "/v1/calls/{id}/hangup", params(IdPath), tag = "calls",
    responses((status = 202, body = CallActionOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn hangup_call(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<(StatusCode, Json<CallActionOut>), ApiError> {
    let account = auth.account()?;
    live_action(&s, account, id, "hanging-up", async |c, id| {
        c.hangup(id).await
    })
    .await
}

/// Starts a listen-only copy of a relayed call's audio (a forwarded,
/// transferred or click-to-call call), both parties, to a WebSocket:
/// Twilio's `<Start><Stream>` with both tracks. In the `twilio` dialect
/// each 20 ms frame goes out once per track (`inbound`: the first party,
/// `outbound`: the party bridged to it); in `pcm` the two are mixed into
/// one channel. Nothing the socket sends back is used. A stream already
/// running on the call is replaced; calls that stream to an AI answer 409.
#[utoipa::path(post, path = "/v1/calls/{id}/stream", params(IdPath), tag = "calls", request_body = StreamSpec,
    responses((status = 202, body = CallActionOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn start_stream(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
    JsonBody(b): JsonBody<StreamSpec>,
) -> Result<(StatusCode, Json<CallActionOut>), ApiError> {
    let account = auth.account()?.to_string();
    let (url, dialect, params) = check_stream(&s, b, "")?;
    let target = crate::control::StreamTarget {
        url,
        dialect,
        params,
    };
    live_action(&s, &account, id, "streaming", async |c, id| {
        c.start_stream(id, &account, target).await
    })
    .await
}

/// Moves a live AI call to another stream: `{"stream": {"url", "dialect",
/// "params"}}`. The old socket gets `stop`, the new one `connected` and
/// `start` with the same callSid and a new streamSid; the caller's audio
/// meanwhile waits in the stream's queue, so none is lost. The new
/// dialect must have the stream's sample rate (8 kHz: twilio, telnyx,
/// plivo, exotel, pcm8, jambonz; 16 kHz: pcm16, vonage, jambonz16; 24 kHz:
/// pcm24).
#[utoipa::path(post, path = "/v1/calls/{id}", params(IdPath), tag = "calls", request_body = CallUpdateIn,
    responses((status = 202, body = CallActionOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn update_call(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
    JsonBody(b): JsonBody<CallUpdateIn>,
) -> Result<(StatusCode, Json<CallActionOut>), ApiError> {
    let account = auth.account()?.to_string();
    let (url, dialect, params) = check_stream(&s, b.stream, "stream.")?;
    let target = crate::control::StreamTarget {
        url,
        dialect,
        params,
    };
    live_action(&s, &account, id, "redirected", async |c, id| {
        c.redirect(id, &account, target).await
    })
    .await
}

/// Stops the call's listen-only stream (its socket gets `stop`).
#[utoipa::path(delete, path = "/v1/calls/{id}/stream", params(IdPath), tag = "calls",
    responses((status = 202, body = CallActionOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn stop_stream(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<(StatusCode, Json<CallActionOut>), ApiError> {
    let account = auth.account()?;
    live_action(&s, account, id, "stream-stopped", async |c, id| {
        c.stop_stream(id).await
    })
    .await
}

/// Plays digits toward the remote party as RFC 4733 events (calls with an
/// AI stream).
#[utoipa::path(post, path = "/v1/calls/{id}/dtmf", params(IdPath), tag = "calls", request_body = DtmfIn,
    responses((status = 202, body = CallActionOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn send_dtmf(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
    JsonBody(b): JsonBody<DtmfIn>,
) -> Result<(StatusCode, Json<CallActionOut>), ApiError> {
    let account = auth.account()?;
    let ok = !b.digits.is_empty()
        && b.digits.len() <= 64
        && b.digits
            .chars()
            .all(|c| matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'));
    if !ok {
        return Err(ApiError::field("digits", "1–64 of 0–9, *, #, A–D"));
    }
    let duration = b.duration_ms.unwrap_or(100);
    if !(40..=2000).contains(&duration) {
        return Err(ApiError::field(
            "duration_ms",
            "duration_ms must be between 40 and 2000",
        ));
    }
    let digits = b.digits;
    live_action(&s, account, id, "sending", async move |c, id| {
        c.send_dtmf(id, &digits, duration).await
    })
    .await
}

/// Transfers the remote party of a call with an AI stream: the target
/// rings while the AI keeps the call; on answer the two are bridged, on
/// failure the AI keeps the call and gets `transferResult`.
#[utoipa::path(post, path = "/v1/calls/{id}/transfer", params(IdPath), tag = "calls", request_body = TransferIn,
    responses((status = 202, body = CallActionOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn transfer_call(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
    JsonBody(b): JsonBody<TransferIn>,
) -> Result<(StatusCode, Json<CallActionOut>), ApiError> {
    let account = auth.account()?;
    let target = party(&s, "to", b.to)?;
    check_sip_target(&s, "to", &target)?;
    let ring = ring_timeout(b.ring_timeout_secs)?;
    live_action(&s, account, id, "transferring", async move |c, id| {
        c.transfer(id, &target, ring).await
    })
    .await
}
