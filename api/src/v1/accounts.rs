//! `/v1/accounts` (admin; an account may read its own): the tenants the
//! other resources belong to, with the number ranges each may claim.

use super::ApiState;
use super::common::{check_id, pattern};
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::list::page;
use super::schema::{AccountIn, AccountOut, AccountPage, AccountPath, AuthTokenOut, PageQuery};
use crate::store::Account;
use axum::Json;
use axum::extract::State;

fn account_out(a: Account) -> AccountOut {
    AccountOut {
        id: a.id,
        name: a.name,
        number_ranges: a.number_ranges,
    }
}

/// Accounts (admin).
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", params(PageQuery),
    responses((status = 200, body = AccountPage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_accounts(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<AccountPage>, ApiError> {
    auth.require_admin()?;
    let rows = s.store.list_accounts().await?;
    Ok(Json(page(rows, &q, |a| &a.id, account_out)?.into()))
}

/// One account: an admin's, or the token's own.
#[utoipa::path(get, path = "/v1/accounts/{id}", params(AccountPath), tag = "accounts",
    responses((status = 200, body = AccountOut), (status = 404, body = ErrorBody)))]
pub(super) async fn get_account(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(AccountPath { id }): PathParams<AccountPath>,
) -> Result<Json<AccountOut>, ApiError> {
    if !auth.0.admin && auth.0.account.as_deref() != Some(id.as_str()) {
        return Err(ApiError::not_found("account"));
    }
    let a = s
        .store
        .get_account(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(account_out(a)))
}

/// Creates or renames an account (admin).
#[utoipa::path(put, path = "/v1/accounts/{id}", params(AccountPath), tag = "accounts", request_body = AccountIn,
    responses((status = 200, body = AccountOut), (status = 422, body = ErrorBody)))]
pub(super) async fn put_account(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(AccountPath { id }): PathParams<AccountPath>,
    JsonBody(body): JsonBody<AccountIn>,
) -> Result<Json<AccountOut>, ApiError> {
    auth.require_admin()?;
    check_id("id", &id)?;
    if body.name.trim().is_empty() || body.name.len() > 200 {
        return Err(ApiError::field("name", "name must be 1–200 characters"));
    }
    let number_ranges = match body.number_ranges {
        Some(ranges) => {
            if ranges.len() > 1000 {
                return Err(ApiError::field(
                    "number_ranges",
                    "at most 1000 number ranges",
                ));
            }
            let mut canon = Vec::with_capacity(ranges.len());
            for (i, raw) in ranges.iter().enumerate() {
                canon.push(pattern(&format!("number_ranges[{i}]"), raw)?);
            }
            canon.sort();
            canon.dedup();
            canon
        }
        None => s
            .store
            .get_account(&id)
            .await?
            .map(|a| a.number_ranges)
            .unwrap_or_default(),
    };
    let a = Account {
        id,
        name: body.name.trim().to_string(),
        number_ranges,
    };
    s.store.upsert_account(&a).await?;
    Ok(Json(account_out(a)))
}

/// Makes the account a new auth token (admin, or the account itself) and
/// shows it once; the old one stops signing and authenticating at once.
#[utoipa::path(post, path = "/v1/accounts/{id}/auth-token", params(AccountPath), tag = "accounts",
    responses((status = 200, body = AuthTokenOut), (status = 404, body = ErrorBody)))]
pub(super) async fn rotate_auth_token(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(AccountPath { id }): PathParams<AccountPath>,
) -> Result<Json<AuthTokenOut>, ApiError> {
    if !auth.0.admin && auth.0.account.as_deref() != Some(id.as_str()) {
        return Err(ApiError::not_found("account"));
    }
    let token = hex::encode(rand::random::<[u8; 16]>());
    if !s.store.set_account_auth_token(&id, &token).await? {
        return Err(ApiError::not_found("account"));
    }
    Ok(Json(AuthTokenOut {
        account_sid: id,
        auth_token: token,
    }))
}
