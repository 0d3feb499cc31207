//! `/v1/recordings` and `POST /v1/calls/{id}/recording` (the token's
//! account): call recordings, written by the node that holds the call into
//! its `[recordings] dir`, listed, downloaded and deleted here.

use super::ApiState;
use super::calls::own_call;
use super::common::check_webhook;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::list::{after_row, cut, page_size};
use super::schema::{IdPath, PageQuery, RecordingIn, RecordingOut, RecordingPage};
use crate::store::RecordingRecord;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

fn recording_out(r: RecordingRecord) -> RecordingOut {
    RecordingOut {
        id: r.id,
        call_id: r.call_id,
        status: r.status,
        duration_ms: Some(r.duration_ms),
        bytes: Some(r.bytes),
        error: r.error,
        created_at: Some(r.created_at),
    }
}

/// Starts recording a live AI call: both tracks until the call ends.
#[utoipa::path(post, path = "/v1/calls/{id}/recording", params(IdPath), tag = "recordings", request_body = RecordingIn,
    responses((status = 202, body = RecordingOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn start_recording(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
    JsonBody(b): JsonBody<RecordingIn>,
) -> Result<(StatusCode, Json<RecordingOut>), ApiError> {
    let account = auth.account()?.to_string();
    if let Some(w) = &b.status_callback {
        check_webhook(&s, "status_callback", w)?;
    }
    let call = own_call(&s, &account, &id).await?;
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
    let recording_id = format!("RE{}", hex::encode(rand::random::<[u8; 16]>()));
    use crate::control::ControlOutcome;
    match control
        .record(&id, &account, &recording_id, b.status_callback)
        .await
    {
        Some(ControlOutcome::Accepted) => Ok((
            StatusCode::ACCEPTED,
            Json(RecordingOut {
                id: recording_id,
                call_id: id,
                status: "recording".into(),
                duration_ms: None,
                bytes: None,
                error: None,
                created_at: None,
            }),
        )),
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

/// The account's recordings, newest first.
#[utoipa::path(get, path = "/v1/recordings", tag = "recordings", params(PageQuery),
    responses((status = 200, body = RecordingPage)))]
pub(super) async fn list_recordings(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<RecordingPage>, ApiError> {
    let account = auth.account()?;
    let n = page_size(q.limit)?;
    let rows = s
        .store
        .list_recordings(account, crate::store::MAX_LIMIT)
        .await?;
    let rows = after_row(rows, q.cursor.as_deref(), |r| &r.id);
    Ok(Json(cut(rows, n, |r| &r.id, recording_out).into()))
}

async fn own_recording(s: &ApiState, account: &str, id: &str) -> Result<RecordingRecord, ApiError> {
    match s.store.get_recording(id).await? {
        // Another account's recording answers as a missing one.
        Some(r) if r.account_id == account => Ok(r),
        _ => Err(ApiError::not_found("recording")),
    }
}

/// One recording.
#[utoipa::path(get, path = "/v1/recordings/{id}", params(IdPath), tag = "recordings",
    responses((status = 200, body = RecordingOut), (status = 404, body = ErrorBody)))]
pub(super) async fn get_recording(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<Json<RecordingOut>, ApiError> {
    let account = auth.account()?;
    Ok(Json(recording_out(own_recording(&s, account, &id).await?)))
}

/// The recording's WAV (`audio/wav`), from the node that wrote it.
#[utoipa::path(get, path = "/v1/recordings/{id}/audio", params(IdPath), tag = "recordings",
    responses((status = 200, content_type = "audio/wav", description = "The WAV file"), (status = 404, body = ErrorBody)))]
pub(super) async fn download_recording(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<axum::response::Response, ApiError> {
    let account = auth.account()?;
    let r = own_recording(&s, account, &id).await?;
    let bytes = tokio::fs::read(&r.path)
        .await
        .map_err(|_| ApiError::not_found("recording file (on this node)"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.wav\"", r.id),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Deletes a recording: its file on this node and its row.
#[utoipa::path(delete, path = "/v1/recordings/{id}", params(IdPath), tag = "recordings",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_recording(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<StatusCode, ApiError> {
    let account = auth.account()?;
    let r = own_recording(&s, account, &id).await?;
    match tokio::fs::remove_file(&r.path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ApiError::internal(format!(
                "recording file not deleted: {e}"
            )));
        }
    }
    s.store.delete_recording(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
