//! `/v1/blocked-numbers` (the token's account): callers refused with 603
//! Decline, for the whole account or one of its numbers.

use super::ApiState;
use super::common::{changed, new_id, pattern};
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::list::page;
use super::schema::{BlockIn, BlockOut, BlockPage, IdPath, PageQuery};
use crate::store::BlockedNumber;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

fn block_out(b: BlockedNumber) -> BlockOut {
    BlockOut {
        id: b.id,
        caller: b.caller_pattern,
        number: b.number_pattern,
    }
}

/// The account's blocked callers.
#[utoipa::path(get, path = "/v1/blocked-numbers", tag = "blocked-numbers", params(PageQuery),
    responses((status = 200, body = BlockPage)))]
pub(super) async fn list_blocks(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<BlockPage>, ApiError> {
    let account = auth.account()?;
    let rows = s.store.list_blocked_for(account).await?;
    Ok(Json(page(rows, &q, |b| &b.id, block_out)?.into()))
}

/// Blocks a caller (E.164 or prefix), for the whole account or one number.
/// Calls and messages from it get 603 Decline from then on.
#[utoipa::path(post, path = "/v1/blocked-numbers", tag = "blocked-numbers", request_body = BlockIn,
    responses((status = 201, description = "Blocked", body = BlockOut),
        (status = 200, description = "Already blocked: the existing block", body = BlockOut),
        (status = 422, body = ErrorBody)))]
pub(super) async fn create_block(
    State(s): State<ApiState>,
    auth: Auth,
    JsonBody(b): JsonBody<BlockIn>,
) -> Result<(StatusCode, Json<BlockOut>), ApiError> {
    let account = auth.account()?.to_string();
    let caller = pattern("caller", &b.caller)?;
    let number = b
        .number
        .as_deref()
        .map(|n| pattern("number", n))
        .transpose()?;
    if let Some(n) = &number
        && s.store.get_number(&account, n).await?.is_none()
    {
        return Err(ApiError::field(
            "number",
            "not one of this account's numbers",
        ));
    }
    let existing = s.store.list_blocked_for(&account).await?;
    if let Some(same) = existing
        .into_iter()
        .find(|x| x.caller_pattern == caller && x.number_pattern == number)
    {
        return Ok((StatusCode::OK, Json(block_out(same))));
    }
    let row = BlockedNumber {
        id: new_id("BL"),
        account_id: account,
        number_pattern: number,
        caller_pattern: caller,
    };
    s.store.upsert_blocked(&row).await?;
    changed(&s).await;
    Ok((StatusCode::CREATED, Json(block_out(row))))
}

/// The account's block `id`; another account's is as missing (404).
async fn own_block(s: &ApiState, account: &str, id: &str) -> Result<BlockedNumber, ApiError> {
    s.store
        .get_blocked(account, id)
        .await?
        .ok_or_else(|| ApiError::not_found("blocked number"))
}

/// One block.
#[utoipa::path(get, path = "/v1/blocked-numbers/{id}", params(IdPath), tag = "blocked-numbers",
    responses((status = 200, body = BlockOut), (status = 404, body = ErrorBody)))]
pub(super) async fn get_block(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<Json<BlockOut>, ApiError> {
    let account = auth.account()?;
    Ok(Json(block_out(own_block(&s, account, &id).await?)))
}

/// Unblocks.
#[utoipa::path(delete, path = "/v1/blocked-numbers/{id}", params(IdPath), tag = "blocked-numbers",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_block(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<StatusCode, ApiError> {
    let account = auth.account()?;
    own_block(&s, account, &id).await?;
    s.store.delete_blocked(&id).await?;
    changed(&s).await;
    Ok(StatusCode::NO_CONTENT)
}
