//! `/v1/denied-sources` (admin): the operator's entries in the SIP deny
//! set. Every node drops SIP from a denied network before the parse, and
//! in the kernel when the XDP guard is on (IPv4); a denied network wins
//! over a trunk's. Entries may expire; the list shows those in force.

use super::ApiState;
use super::common::{changed, new_id};
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::idempotency::now_ms;
use super::list::page;
use super::schema::{DeniedSourceIn, DeniedSourcePage, IdPath, PageQuery};
use crate::store::DeniedSource;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ipnet::{IpNet, Ipv4Net};
use std::net::IpAddr;

/// Shortest prefixes an entry may have: a wider one is a typo more often
/// than an intent, and would cut off carriers with it.
const MIN_V4_PREFIX: u8 = 8;
const MIN_V6_PREFIX: u8 = 32;
const MAX_REASON: usize = 200;

/// Why an entry's network is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidNetwork {
    #[error("an IP address or a CIDR network")]
    NotANetwork,
    /// An IPv4-mapped IPv6 network whose prefix does not fit IPv4.
    #[error("{0}")]
    Prefix(ipnet::PrefixLenError),
    #[error("/{0} is too wide: at least /{MIN_V4_PREFIX} for IPv4 and /{MIN_V6_PREFIX} for IPv6")]
    TooWide(u8),
}

/// `203.0.113.7`, `198.51.100.0/24` or `2001:db8::/48` as a canonical
/// network: host bits cleared, IPv4-mapped IPv6 as IPv4.
pub fn parse_network(raw: &str) -> Result<IpNet, InvalidNetwork> {
    let raw = raw.trim();
    let net = match raw.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match raw.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return Err(InvalidNetwork::NotANetwork),
        },
    };
    let net = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => {
                IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).map_err(InvalidNetwork::Prefix)?)
            }
            None => IpNet::V6(v6),
        },
        n => n,
    }
    .trunc();
    let (len, min) = match net {
        IpNet::V4(n) => (n.prefix_len(), MIN_V4_PREFIX),
        IpNet::V6(n) => (n.prefix_len(), MIN_V6_PREFIX),
    };
    if len < min {
        return Err(InvalidNetwork::TooWide(len));
    }
    Ok(net)
}

async fn in_force(s: &ApiState) -> Result<Vec<DeniedSource>, ApiError> {
    let now = now_ms();
    Ok(s.store
        .list_denied_sources()
        .await?
        .into_iter()
        .filter(|d| d.in_force(now))
        .collect())
}

/// The deny set's entries in force (admin), by network.
#[utoipa::path(get, path = "/v1/denied-sources", tag = "denied-sources", params(PageQuery),
    responses((status = 200, body = DeniedSourcePage), (status = 403, body = ErrorBody)))]
pub async fn list_denied_sources(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<DeniedSourcePage>, ApiError> {
    auth.require_admin()?;
    let rows = in_force(&s).await?;
    Ok(Json(page(rows, &q, |d| &d.network, |d| d)?.into()))
}

/// Denies a network's SIP on every node (admin): dropped before the parse,
/// and in the kernel when the XDP guard is on (IPv4). Takes effect without
/// a restart.
#[utoipa::path(post, path = "/v1/denied-sources", tag = "denied-sources", request_body = DeniedSourceIn,
    responses((status = 201, description = "Denied", body = DeniedSource),
        (status = 409, description = "The network is denied already (the error names the entry)", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_denied_source(
    State(s): State<ApiState>,
    auth: Auth,
    JsonBody(b): JsonBody<DeniedSourceIn>,
) -> Result<(StatusCode, Json<DeniedSource>), ApiError> {
    auth.require_admin()?;
    let network =
        parse_network(&b.network).map_err(|e| ApiError::field("network", e.to_string()))?;
    if let Some(r) = &b.reason
        && (r.chars().count() > MAX_REASON || r.chars().any(char::is_control))
    {
        return Err(ApiError::field(
            "reason",
            format!("at most {MAX_REASON} characters, no control characters"),
        ));
    }
    if b.expires_in_secs == Some(0) || b.expires_in_secs.is_some_and(|s| s > 31_536_000) {
        return Err(ApiError::field(
            "expires_in_secs",
            "between 1 and 31536000 (a year)",
        ));
    }
    let now = now_ms();
    // An expired entry for the network must not stand in the way.
    s.store.purge_denied_sources(now).await?;
    let row = DeniedSource {
        id: new_id("DS"),
        network: network.to_string(),
        reason: b.reason,
        created_at: now,
        expires_at: b
            .expires_in_secs
            .map(|secs| now.saturating_add(i64::from(secs) * 1000)),
    };
    if !s.store.insert_denied_source(&row).await? {
        let id = s
            .store
            .list_denied_sources()
            .await?
            .into_iter()
            .find(|d| d.network == row.network)
            .map(|d| d.id)
            .unwrap_or_default();
        return Err(ApiError::conflict(
            "network",
            format!("{} is denied already (entry {id})", row.network),
        ));
    }
    changed(&s).await;
    Ok((StatusCode::CREATED, Json(row)))
}

async fn find(s: &ApiState, id: &str) -> Result<DeniedSource, ApiError> {
    in_force(s)
        .await?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| ApiError::not_found("denied source"))
}

/// One entry (admin).
#[utoipa::path(get, path = "/v1/denied-sources/{id}", params(IdPath), tag = "denied-sources",
    responses((status = 200, body = DeniedSource), (status = 404, body = ErrorBody)))]
pub async fn get_denied_source(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<Json<DeniedSource>, ApiError> {
    auth.require_admin()?;
    Ok(Json(find(&s, &id).await?))
}

/// Lifts an entry on every node (admin).
#[utoipa::path(delete, path = "/v1/denied-sources/{id}", params(IdPath), tag = "denied-sources",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_denied_source(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    // A lapsed entry is gone, as for GET.
    find(&s, &id).await?;
    if s.store.delete_denied_source(&id).await? {
        changed(&s).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("denied source"))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_network;

    #[test]
    fn networks_are_canonical_and_not_too_wide() {
        let ok = |s: &str| parse_network(s).unwrap().to_string();
        assert_eq!(ok("203.0.113.7"), "203.0.113.7/32");
        assert_eq!(ok(" 198.51.100.9/24 "), "198.51.100.0/24");
        assert_eq!(ok("::ffff:203.0.113.7"), "203.0.113.7/32");
        assert_eq!(ok("::ffff:198.51.100.0/120"), "198.51.100.0/24");
        assert_eq!(ok("2001:db8::1/48"), "2001:db8::/48");
        assert_eq!(ok("10.0.0.0/8"), "10.0.0.0/8");
        for bad in [
            "",
            "example.com",
            "203.0.113.7/33",
            "0.0.0.0/0",
            "10.0.0.0/7",
            "::/0",
            "2001:db8::/31",
            "203.0.113.7/24/1",
            "203.0.113.7\0",
        ] {
            assert!(parse_network(bad).is_err(), "{bad:?} accepted");
        }
    }
}
