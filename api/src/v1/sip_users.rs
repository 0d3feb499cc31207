//! `/v1/sip-users` (the token's account): the phones that register with
//! the gateway, with digest credentials (only their HA1s are stored).

use super::ApiState;
use super::common::{changed, check_id};
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::list::page;
use super::schema::{PageQuery, SipUserIn, SipUserOut, SipUserPage, SipUserPath};
use crate::store::SipUser;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

fn sip_user_out(u: SipUser) -> SipUserOut {
    SipUserOut {
        username: u.username,
        realm: u.realm,
    }
}

/// The account's SIP user `name`; another account's is as missing (404).
async fn own_sip_user(s: &ApiState, account: &str, name: &str) -> Result<SipUser, ApiError> {
    s.store
        .get_sip_user(account, name)
        .await?
        .ok_or_else(|| ApiError::not_found("SIP user"))
}

/// The account's SIP users (phones that register).
#[utoipa::path(get, path = "/v1/sip-users", tag = "sip-users", params(PageQuery),
    responses((status = 200, body = SipUserPage)))]
pub(super) async fn list_sip_users(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<SipUserPage>, ApiError> {
    let account = auth.account()?;
    let rows = s.store.list_sip_users_for(account).await?;
    Ok(Json(page(rows, &q, |u| &u.username, sip_user_out)?.into()))
}

/// One SIP user.
#[utoipa::path(get, path = "/v1/sip-users/{username}", params(SipUserPath), tag = "sip-users",
    responses((status = 200, body = SipUserOut), (status = 404, body = ErrorBody)))]
pub(super) async fn get_sip_user(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(SipUserPath { username: name }): PathParams<SipUserPath>,
) -> Result<Json<SipUserOut>, ApiError> {
    let account = auth.account()?;
    Ok(Json(sip_user_out(own_sip_user(&s, account, &name).await?)))
}

/// Creates a SIP user or sets its password.
#[utoipa::path(put, path = "/v1/sip-users/{username}", params(SipUserPath), tag = "sip-users", request_body = SipUserIn,
    responses((status = 200, body = SipUserOut), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn put_sip_user(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(SipUserPath { username: name }): PathParams<SipUserPath>,
    JsonBody(b): JsonBody<SipUserIn>,
) -> Result<Json<SipUserOut>, ApiError> {
    let account = auth.account()?.to_string();
    check_id("username", &name)?;
    let chars = b.password.chars().count();
    if !(8..=256).contains(&chars) {
        return Err(ApiError::field(
            "password",
            "password must be 8–256 characters",
        ));
    }
    let realm = s.checks.realm.clone();
    let (md5, sha256) = (s.checks.ha1)(&name, &realm, &b.password);
    let u = SipUser {
        username: name,
        account_id: account,
        realm,
        ha1_md5: md5,
        ha1_sha256: sha256,
    };
    // The write itself refuses a username another account holds.
    if !s.store.upsert_sip_user(&u).await? {
        return Err(ApiError::conflict("username", "this username is taken"));
    }
    changed(&s).await;
    Ok(Json(sip_user_out(u)))
}

/// Deletes a SIP user; its registrations lapse.
#[utoipa::path(delete, path = "/v1/sip-users/{username}", params(SipUserPath), tag = "sip-users",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_sip_user(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(SipUserPath { username: name }): PathParams<SipUserPath>,
) -> Result<StatusCode, ApiError> {
    let account = auth.account()?;
    own_sip_user(&s, account, &name).await?;
    s.store.delete_sip_user(&name).await?;
    changed(&s).await;
    Ok(StatusCode::NO_CONTENT)
}
