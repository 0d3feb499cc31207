//! `/v1/trunks` (admin): the carriers calls come in from (by source
//! network) and go out through (to an outbound address).

use super::ApiState;
use super::common::{changed, check_id, check_max_calls};
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::list::page;
use super::schema::{PageQuery, TrunkIn, TrunkOut, TrunkPage, TrunkPath};
use crate::store::Trunk;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

fn trunk_out(t: Trunk) -> TrunkOut {
    TrunkOut {
        name: t.name,
        source_cidrs: t.source_cidrs,
        outbound_address: t.outbound_address,
        transport: t.transport,
        username: t.username,
        has_password: t.password.is_some(),
        max_calls: t.max_calls,
        transfer: t.transfer.unwrap_or_else(|| "bridge".into()),
        account: t.account_id,
        requests_per_sec: t.requests_per_sec,
        tls: t.tls,
        media_security: t.media_security,
        srtp_cleartext_keying: t.srtp_cleartext_keying,
    }
}

/// Trunks (admin).
#[utoipa::path(get, path = "/v1/trunks", tag = "trunks", params(PageQuery),
    responses((status = 200, body = TrunkPage), (status = 403, body = ErrorBody)))]
pub(super) async fn list_trunks(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<TrunkPage>, ApiError> {
    auth.require_admin()?;
    let rows = s.store.list_trunks().await?;
    Ok(Json(page(rows, &q, |t| &t.name, trunk_out)?.into()))
}

/// One trunk (admin).
#[utoipa::path(get, path = "/v1/trunks/{name}", params(TrunkPath), tag = "trunks",
    responses((status = 200, body = TrunkOut), (status = 404, body = ErrorBody)))]
pub(super) async fn get_trunk(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(TrunkPath { name }): PathParams<TrunkPath>,
) -> Result<Json<TrunkOut>, ApiError> {
    auth.require_admin()?;
    let t = s
        .store
        .get_trunk(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("trunk"))?;
    Ok(Json(trunk_out(t)))
}

/// Creates or replaces a trunk (admin). Takes effect without a restart.
#[utoipa::path(put, path = "/v1/trunks/{name}", params(TrunkPath), tag = "trunks", request_body = TrunkIn,
    responses((status = 200, body = TrunkOut), (status = 422, body = ErrorBody)))]
pub(super) async fn put_trunk(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(TrunkPath { name }): PathParams<TrunkPath>,
    JsonBody(b): JsonBody<TrunkIn>,
) -> Result<Json<TrunkOut>, ApiError> {
    auth.require_admin()?;
    check_id("name", &name)?;
    for (i, c) in b.source_cidrs.iter().enumerate() {
        let ok = c.parse::<ipnet::IpNet>().is_ok() || c.parse::<std::net::IpAddr>().is_ok();
        if !ok {
            return Err(ApiError::field(
                format!("source_cidrs[{i}]"),
                format!("{c:?} is not a CIDR network or IP address"),
            ));
        }
    }
    let transport = b.transport.unwrap_or_else(|| "udp".into());
    if !matches!(transport.as_str(), "udp" | "tcp" | "tls") {
        return Err(ApiError::field(
            "transport",
            "transport must be udp, tcp or tls",
        ));
    }
    if let Some(a) = &b.outbound_address
        && !valid_host_port(a)
    {
        return Err(ApiError::field(
            "outbound_address",
            "outbound_address must be host or host:port",
        ));
    }
    if !matches!(b.transfer.as_deref(), None | Some("bridge" | "refer")) {
        return Err(ApiError::field(
            "transfer",
            "transfer must be bridge or refer",
        ));
    }
    check_max_calls(b.max_calls)?;
    if b.requests_per_sec
        .is_some_and(|n| !(1..=1_000_000).contains(&n))
    {
        return Err(ApiError::field(
            "requests_per_sec",
            "requests_per_sec must be between 1 and 1000000",
        ));
    }
    if let Some(a) = &b.account
        && s.store.get_account(a).await?.is_none()
    {
        return Err(ApiError::field("account", format!("no account {a:?}")));
    }
    let tls = b.tls.unwrap_or_default();
    if !tls.is_empty() && transport != "tls" {
        return Err(ApiError::field("tls", "tls settings need transport tls"));
    }
    check_trunk_tls(&tls)?;
    let media_security = b.media_security.unwrap_or_default();
    let srtp_cleartext_keying = b.srtp_cleartext_keying.unwrap_or(false);
    if media_security == crate::store::MediaSecurity::Srtp
        && transport != "tls"
        && !srtp_cleartext_keying
    {
        return Err(ApiError::field(
            "media_security",
            "srtp over a cleartext transport needs srtp_cleartext_keying: SDES keys go over TLS only",
        ));
    }
    let t = Trunk {
        name,
        source_cidrs: b.source_cidrs,
        outbound_address: b.outbound_address,
        transport,
        username: b.username,
        password: b.password,
        max_calls: b.max_calls,
        transfer: b.transfer,
        account_id: b.account,
        requests_per_sec: b.requests_per_sec,
        tls,
        media_security,
        srtp_cleartext_keying,
    };
    s.store.upsert_trunk(&t).await?;
    changed(&s).await;
    Ok(Json(trunk_out(t)))
}

/// A TLS trunk's names and files: a DNS name (or IP) to verify, absolute
/// paths, a client certificate with its key.
fn check_trunk_tls(tls: &crate::store::TrunkTls) -> Result<(), ApiError> {
    if let Some(n) = &tls.server_name
        && rustls::pki_types::ServerName::try_from(n.as_str()).is_err()
    {
        return Err(ApiError::field(
            "tls.server_name",
            "a DNS name or an IP address",
        ));
    }
    for (field, path) in [
        ("tls.ca_file", &tls.ca_file),
        ("tls.client_cert_file", &tls.client_cert_file),
        ("tls.client_key_file", &tls.client_key_file),
    ] {
        if let Some(p) = path
            && (!p.starts_with('/') || p.len() > 4096 || p.chars().any(char::is_control))
        {
            return Err(ApiError::field(field, "an absolute path on the nodes"));
        }
    }
    match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(_), None) => {
            return Err(ApiError::field(
                "tls.client_key_file",
                "a client certificate needs its key",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::field(
                "tls.client_cert_file",
                "a client key needs its certificate",
            ));
        }
        _ => {}
    }
    Ok(())
}

fn valid_host_port(a: &str) -> bool {
    if a.parse::<std::net::SocketAddr>().is_ok() || a.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (a, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Deletes a trunk (admin).
#[utoipa::path(delete, path = "/v1/trunks/{name}", params(TrunkPath), tag = "trunks",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete_trunk(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(TrunkPath { name }): PathParams<TrunkPath>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let users: Vec<String> = s
        .store
        .list_numbers()
        .await?
        .into_iter()
        .filter(|n| n.trunk.as_deref() == Some(name.as_str()))
        .map(|n| n.pattern)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(
            "name",
            format!("numbers still use this trunk: {}", users.join(", ")),
        ));
    }
    if s.store.delete_trunk(&name).await? {
        changed(&s).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("trunk"))
    }
}
