//! The `/v1` resources: accounts and trunks (admin), numbers, blocked
//! numbers, SIP users, calls and messages (the token's account).

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, PathParams, QueryParams};
use super::schema::*;
use crate::e164::Pattern;
use crate::store::{
    Account, BlockedNumber, CallFilter, CallRecord, Direction, MessageRecord, Number, RouteKind,
    SipUser, Trunk,
};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/accounts", get(list_accounts))
        .route("/v1/accounts/{id}", get(get_account).put(put_account))
        .route("/v1/trunks", get(list_trunks))
        .route(
            "/v1/trunks/{name}",
            get(get_trunk).put(put_trunk).delete(delete_trunk),
        )
        .route("/v1/numbers", get(list_numbers))
        .route(
            "/v1/numbers/{number}",
            get(get_number).put(put_number).delete(delete_number),
        )
        .route("/v1/blocked-numbers", get(list_blocks).post(create_block))
        .route(
            "/v1/blocked-numbers/{id}",
            get(get_block).delete(delete_block),
        )
        .route("/v1/sip-users", get(list_sip_users))
        .route(
            "/v1/sip-users/{username}",
            get(get_sip_user).put(put_sip_user).delete(delete_sip_user),
        )
        .route("/v1/calls", get(list_calls).post(create_call))
        .route("/v1/calls/{id}", get(get_call))
        .route("/v1/calls/{id}/hangup", post(hangup_call))
        .route("/v1/calls/{id}/dtmf", post(send_dtmf))
        .route("/v1/calls/{id}/transfer", post(transfer_call))
        .route(
            "/v1/calls/{id}/stream",
            post(start_stream).delete(stop_stream),
        )
        .route("/v1/messages", get(list_messages).post(send_message))
}

// ------------------------------------------------------------ pagination

const DEFAULT_PAGE: u32 = 100;
/// One less than the store's own cap: a page asks for one row more to
/// know whether another page follows.
const MAX_PAGE: u32 = 500;

fn page_size(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE as usize),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::field("limit", "limit must be between 1 and 500")),
    }
}

/// One page of `items` (sorted by `key`) after `cursor`.
pub(super) fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    q: &PageQuery,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let n = page_size(q.limit)?;
    let mut rest: Vec<T> = match &q.cursor {
        Some(c) => items.into_iter().filter(|i| key(i) > c.as_str()).collect(),
        None => items,
    };
    let next = (rest.len() > n).then(|| key(&rest[n - 1]).to_string());
    rest.truncate(n);
    Ok((rest, next))
}

/// Applies a routing change on this node at once and announces it to the
/// others sharing the database.
pub(super) async fn changed(state: &ApiState) {
    state.changed.notify_one();
    if let Err(e) = state.store.announce_change().await {
        tracing::warn!(error = %e, "routing change not announced to other nodes; they apply it by their next reload");
    }
}

// ------------------------------------------------------------ accounts

fn account_out(a: Account) -> AccountOut {
    AccountOut {
        id: a.id,
        name: a.name,
        number_ranges: a.number_ranges,
    }
}

fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "1–64 characters from A–Z, a–z, 0–9, '-', '_' and '.'",
        ))
    }
}

/// Accounts (admin).
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", params(PageQuery),
    responses((status = 200, body = AccountPage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_accounts(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<AccountPage>, ApiError> {
    auth.require_admin()?;
    let (data, next_cursor) = paginate(s.store.list_accounts().await?, |a| &a.id, &q)?;
    Ok(Json(AccountPage {
        data: data.into_iter().map(account_out).collect(),
        next_cursor,
    }))
}

/// One account: an admin's, or the token's own.
#[utoipa::path(get, path = "/v1/accounts/{id}", params(AccountPath), tag = "accounts",
    responses((status = 200, body = AccountOut), (status = 404, body = ErrorBody)))]
pub async fn get_account(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(AccountPath { id }): PathParams<AccountPath>,
) -> Result<Json<AccountOut>, ApiError> {
    if !auth.0.admin && auth.0.account.as_deref() != Some(id.as_str()) {
        return Err(ApiError::not_found("account"));
    }
    let a = s
        .store
        .list_accounts()
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(account_out(a)))
}

/// Creates or renames an account (admin).
#[utoipa::path(put, path = "/v1/accounts/{id}", params(AccountPath), tag = "accounts", request_body = AccountIn,
    responses((status = 200, body = AccountOut), (status = 422, body = ErrorBody)))]
pub async fn put_account(
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
            .list_accounts()
            .await?
            .into_iter()
            .find(|a| a.id == id)
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

// ------------------------------------------------------------ trunks

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
pub async fn list_trunks(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<TrunkPage>, ApiError> {
    auth.require_admin()?;
    let (data, next_cursor) = paginate(s.store.list_trunks().await?, |t| &t.name, &q)?;
    Ok(Json(TrunkPage {
        data: data.into_iter().map(trunk_out).collect(),
        next_cursor,
    }))
}

/// One trunk (admin).
#[utoipa::path(get, path = "/v1/trunks/{name}", params(TrunkPath), tag = "trunks",
    responses((status = 200, body = TrunkOut), (status = 404, body = ErrorBody)))]
pub async fn get_trunk(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(TrunkPath { name }): PathParams<TrunkPath>,
) -> Result<Json<TrunkOut>, ApiError> {
    auth.require_admin()?;
    let t = find_trunk(&s, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("trunk"))?;
    Ok(Json(trunk_out(t)))
}

async fn find_trunk(s: &ApiState, name: &str) -> Result<Option<Trunk>, ApiError> {
    Ok(s.store
        .list_trunks()
        .await?
        .into_iter()
        .find(|t| t.name == name))
}

/// Creates or replaces a trunk (admin). Takes effect without a restart.
#[utoipa::path(put, path = "/v1/trunks/{name}", params(TrunkPath), tag = "trunks", request_body = TrunkIn,
    responses((status = 200, body = TrunkOut), (status = 422, body = ErrorBody)))]
pub async fn put_trunk(
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
        && !s.store.list_accounts().await?.iter().any(|x| &x.id == a)
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

fn check_max_calls(v: Option<u32>) -> Result<(), ApiError> {
    match v {
        Some(n) if !(1..=1_000_000).contains(&n) => Err(ApiError::field(
            "max_calls",
            "max_calls must be between 1 and 1000000",
        )),
        _ => Ok(()),
    }
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
pub async fn delete_trunk(
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

// ------------------------------------------------------------ numbers

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
    }
}

/// The canonical pattern of a path segment, or 422 naming `field`.
fn pattern(field: &str, raw: &str) -> Result<String, ApiError> {
    Pattern::parse(raw).map(|p| p.to_string()).ok_or_else(|| {
        ApiError::field(
            field,
            format!("{raw:?} is not an E.164 number (+15550001234) or prefix pattern (+1555*)"),
        )
    })
}

async fn own_number(s: &ApiState, account: &str, p: &str) -> Result<Option<Number>, ApiError> {
    Ok(s.store
        .list_numbers()
        .await?
        .into_iter()
        .find(|n| n.pattern == p && n.account_id == account))
}

/// The account's numbers.
#[utoipa::path(get, path = "/v1/numbers", tag = "numbers", params(PageQuery),
    responses((status = 200, body = NumberPage), (status = 401, body = ErrorBody)))]
pub async fn list_numbers(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<NumberPage>, ApiError> {
    let account = auth.account()?;
    let mine: Vec<Number> = s
        .store
        .list_numbers()
        .await?
        .into_iter()
        .filter(|n| n.account_id == account)
        .collect();
    let (data, next_cursor) = paginate(mine, |n| &n.pattern, &q)?;
    Ok(Json(NumberPage {
        data: data.into_iter().map(number_out).collect(),
        next_cursor,
    }))
}

/// One number.
#[utoipa::path(get, path = "/v1/numbers/{number}", params(NumberPath), tag = "numbers",
    responses((status = 200, body = NumberOut), (status = 404, body = ErrorBody)))]
pub async fn get_number(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(NumberPath { number: raw }): PathParams<NumberPath>,
) -> Result<Json<NumberOut>, ApiError> {
    let account = auth.account()?;
    let p = pattern("number", &raw)?;
    let n = own_number(&s, account, &p)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    Ok(Json(number_out(n)))
}

/// Creates or replaces a number's route; takes effect for the next call.
#[utoipa::path(put, path = "/v1/numbers/{number}", params(NumberPath), tag = "numbers", request_body = NumberIn,
    responses((status = 200, body = NumberOut), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_number(
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
            .list_accounts()
            .await?
            .into_iter()
            .find(|a| a.id == account)
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
    let users = s.store.list_sip_users().await?;
    // Only this account's SIP users can be forwarded to.
    let dialable = |v: &str| {
        (s.checks.sip_uri_host)(v).is_some()
            || users
                .iter()
                .any(|u| u.username == v && u.account_id == account)
    };
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
        && !find_trunk(&s, t)
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

/// An http(s) URL the gateway may POST to, or 422 naming `field`.
fn check_webhook(s: &ApiState, field: &str, url: &str) -> Result<(), ApiError> {
    if !crate::webhook::valid_url(url) {
        return Err(ApiError::field(field, "an http:// or https:// URL"));
    }
    s.targets
        .check_url(url)
        .map_err(|e| ApiError::field(field, e.to_string()))
}

/// A SIP URI's host the gateway may send to, or 422 naming `field` (SIP
/// user names and E.164 numbers go through trunks and pass).
fn check_sip_target(s: &ApiState, field: &str, target: &str) -> Result<(), ApiError> {
    match (s.checks.sip_uri_host)(target) {
        Some(host) => s
            .targets
            .check_host(&host)
            .map_err(|e| ApiError::field(field, e.to_string())),
        None => Ok(()),
    }
}

/// A stream target's URL, dialect and parameters (as JSON text), or 422
/// naming the field (`at` is the target's path in the body: `stream.`).
fn check_stream(
    s: &ApiState,
    st: StreamSpec,
    at: &str,
) -> Result<(String, Option<String>, Option<String>), ApiError> {
    if !(st.url.starts_with("ws://") || st.url.starts_with("wss://"))
        || st.url.len() > 2048
        || st.url.bytes().any(|c| c.is_ascii_control() || c == b' ')
    {
        return Err(ApiError::field(format!("{at}url"), "a ws:// or wss:// URL"));
    }
    s.targets
        .check_url(&st.url)
        .map_err(|e| ApiError::field(format!("{at}url"), e.to_string()))?;
    if let Some(d) = &st.dialect
        && !(s.checks.dialect)(d)
    {
        return Err(ApiError::field(
            format!("{at}dialect"),
            "dialect must be twilio, pcm, pcm8, pcm16 or pcm24",
        ));
    }
    if let Some(params) = &st.params
        && let Some((k, _)) = params.iter().find(|(_, v)| !v.is_string())
    {
        return Err(ApiError::field(
            format!("{at}params.{k}"),
            "custom parameters are strings",
        ));
    }
    let params = st.params.map(|m| serde_json::Value::Object(m).to_string());
    Ok((st.url, st.dialect, params))
}

/// Releases a number: its calls are refused from then on.
#[utoipa::path(delete, path = "/v1/numbers/{number}", params(NumberPath), tag = "numbers",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_number(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(NumberPath { number: raw }): PathParams<NumberPath>,
) -> Result<StatusCode, ApiError> {
    let account = auth.account()?;
    let p = pattern("number", &raw)?;
    if own_number(&s, account, &p).await?.is_none() {
        return Err(ApiError::not_found("number"));
    }
    s.store.delete_number(&p).await?;
    changed(&s).await;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------ blocked numbers

fn block_out(b: BlockedNumber) -> BlockOut {
    BlockOut {
        id: b.id,
        caller: b.caller_pattern,
        number: b.number_pattern,
    }
}

pub(super) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// The account's blocked callers.
#[utoipa::path(get, path = "/v1/blocked-numbers", tag = "blocked-numbers", params(PageQuery),
    responses((status = 200, body = BlockPage)))]
pub async fn list_blocks(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<BlockPage>, ApiError> {
    let account = auth.account()?;
    let mine: Vec<BlockedNumber> = s
        .store
        .list_blocked()
        .await?
        .into_iter()
        .filter(|b| b.account_id == account)
        .collect();
    let (data, next_cursor) = paginate(mine, |b| &b.id, &q)?;
    Ok(Json(BlockPage {
        data: data.into_iter().map(block_out).collect(),
        next_cursor,
    }))
}

/// Blocks a caller (E.164 or prefix), for the whole account or one number.
/// Calls and messages from it get 603 Decline from then on.
#[utoipa::path(post, path = "/v1/blocked-numbers", tag = "blocked-numbers", request_body = BlockIn,
    responses((status = 201, description = "Blocked", body = BlockOut),
        (status = 200, description = "Already blocked: the existing block", body = BlockOut),
        (status = 422, body = ErrorBody)))]
pub async fn create_block(
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
        && own_number(&s, &account, n).await?.is_none()
    {
        return Err(ApiError::field(
            "number",
            "not one of this account's numbers",
        ));
    }
    let existing = s.store.list_blocked().await?;
    if let Some(same) = existing.into_iter().find(|x| {
        x.account_id == account && x.caller_pattern == caller && x.number_pattern == number
    }) {
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

async fn own_block(s: &ApiState, account: &str, id: &str) -> Result<BlockedNumber, ApiError> {
    s.store
        .list_blocked()
        .await?
        .into_iter()
        .find(|b| b.id == id && b.account_id == account)
        .ok_or_else(|| ApiError::not_found("blocked number"))
}

/// One block.
#[utoipa::path(get, path = "/v1/blocked-numbers/{id}", params(IdPath), tag = "blocked-numbers",
    responses((status = 200, body = BlockOut), (status = 404, body = ErrorBody)))]
pub async fn get_block(
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
pub async fn delete_block(
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

// ------------------------------------------------------------ SIP users

fn sip_user_out(u: SipUser) -> SipUserOut {
    SipUserOut {
        username: u.username,
        realm: u.realm,
    }
}

async fn own_sip_user(s: &ApiState, account: &str, name: &str) -> Result<SipUser, ApiError> {
    s.store
        .list_sip_users()
        .await?
        .into_iter()
        .find(|u| u.username == name && u.account_id == account)
        .ok_or_else(|| ApiError::not_found("SIP user"))
}

/// The account's SIP users (phones that register).
#[utoipa::path(get, path = "/v1/sip-users", tag = "sip-users", params(PageQuery),
    responses((status = 200, body = SipUserPage)))]
pub async fn list_sip_users(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<SipUserPage>, ApiError> {
    let account = auth.account()?;
    let mine: Vec<SipUser> = s
        .store
        .list_sip_users()
        .await?
        .into_iter()
        .filter(|u| u.account_id == account)
        .collect();
    let (data, next_cursor) = paginate(mine, |u| &u.username, &q)?;
    Ok(Json(SipUserPage {
        data: data.into_iter().map(sip_user_out).collect(),
        next_cursor,
    }))
}

/// One SIP user.
#[utoipa::path(get, path = "/v1/sip-users/{username}", params(SipUserPath), tag = "sip-users",
    responses((status = 200, body = SipUserOut), (status = 404, body = ErrorBody)))]
pub async fn get_sip_user(
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
pub async fn put_sip_user(
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
    let users = s.store.list_sip_users().await?;
    if users
        .iter()
        .any(|u| u.username == name && u.account_id != account)
    {
        return Err(ApiError::conflict("username", "this username is taken"));
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
    if !s.store.upsert_sip_user(&u).await? {
        return Err(ApiError::conflict("username", "this username is taken"));
    }
    changed(&s).await;
    Ok(Json(sip_user_out(u)))
}

/// Deletes a SIP user; its registrations lapse.
#[utoipa::path(delete, path = "/v1/sip-users/{username}", params(SipUserPath), tag = "sip-users",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_sip_user(
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

// ------------------------------------------------------------ calls

/// The Twilio-style status of a call record.
pub fn call_status(c: &CallRecord) -> &'static str {
    crate::store::call_status(
        c.answer_at.is_some(),
        c.end_at.is_some(),
        c.end_cause.as_deref(),
        c.sip_status,
    )
}

fn call_out(c: CallRecord) -> CallOut {
    CallOut {
        status: call_status(&c).to_string(),
        id: c.id,
        direction: c.direction.as_str().to_string(),
        from: c.from_number,
        to: c.to_number,
        trunk: c.trunk,
        sip_call_id: c.sip_call_id,
        started_at: c.invite_at,
        answered_at: c.answer_at,
        ended_at: c.end_at,
        end_cause: c.end_cause,
        sip_status: c.sip_status,
        duration_ms: c.duration_ms,
        media: c.media_mode,
        media_security: c.media_security,
        node: c.node,
    }
}

async fn own_call(s: &ApiState, account: &str, id: &str) -> Result<CallRecord, ApiError> {
    match s.store.get_call(id).await? {
        Some(c) if c.account_id.as_deref() == Some(account) => Ok(c),
        _ => Err(ApiError::not_found("call")),
    }
}

/// Call records, newest first, filtered.
#[utoipa::path(get, path = "/v1/calls", tag = "calls", params(CallQuery),
    responses((status = 200, body = CallPage), (status = 422, body = ErrorBody)))]
pub async fn list_calls(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<CallQuery>,
) -> Result<Json<CallPage>, ApiError> {
    let account = auth.account()?;
    let n = page_size(q.limit)?;
    let direction = q
        .direction
        .as_deref()
        .map(|d| {
            Direction::parse(d).ok_or_else(|| {
                ApiError::field("direction", "direction must be inbound or outbound")
            })
        })
        .transpose()?;
    let num = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| {
                crate::e164::normalize_e164(v)
                    .ok_or_else(|| ApiError::field(field, "an E.164 number"))
            })
            .transpose()
    };
    let filter = CallFilter {
        account_id: Some(account.to_string()),
        direction,
        from_number: num("from", &q.from)?,
        to_number: num("to", &q.to)?,
        active: q.active,
        before_id: q.cursor.clone(),
        limit: n as u32 + 1,
    };
    let mut rows = s.store.list_calls(&filter).await?;
    let next_cursor = (rows.len() > n).then(|| rows[n - 1].id.clone());
    rows.truncate(n);
    Ok(Json(CallPage {
        data: rows.into_iter().map(call_out).collect(),
        next_cursor,
    }))
}

/// One call, live or ended.
#[utoipa::path(get, path = "/v1/calls/{id}", params(IdPath), tag = "calls",
    responses((status = 200, body = CallOut), (status = 404, body = ErrorBody)))]
pub async fn get_call(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<Json<CallOut>, ApiError> {
    let account = auth.account()?;
    Ok(Json(call_out(own_call(&s, account, &id).await?)))
}

/// Places an outbound call through a trunk; on answer the AI stream starts
/// as for an inbound call. Follow it with `GET /v1/calls/{id}`.
#[utoipa::path(post, path = "/v1/calls", tag = "calls", request_body = CallIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeating a POST with the same key (within 24 h) returns the first answer and places no second call")),
    responses((status = 201, description = "Placed: the INVITE is on its way", body = CallOut),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_call(
    State(s): State<ApiState>,
    auth: Auth,
    headers: axum::http::HeaderMap,
    JsonBody(b): JsonBody<CallIn>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let account = auth.account()?.to_string();
    let key = super::idempotency::key(&headers)?.map(|k| format!("call:{k}"));
    let fingerprint = serde_json::to_string(&b).unwrap_or_default();
    idempotent(&s, &account, key, &fingerprint, place_call(&s, &account, b)).await
}

/// Runs `create` under an Idempotency-Key (when given): a finished
/// request's answer is replayed, a request dropped mid-way (the client
/// went away) releases its key so the retry is not refused for 24 h.
async fn idempotent(
    s: &ApiState,
    account: &str,
    key: Option<String>,
    fingerprint: &str,
    create: impl std::future::Future<Output = Result<(StatusCode, Json<serde_json::Value>), ApiError>>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Some(key) = key else {
        return create.await;
    };
    if let Some(done) =
        super::idempotency::begin(s.store.as_ref(), account, &key, fingerprint).await?
    {
        return Ok(done);
    }
    let guard = super::idempotency::Guard::new(s.store.clone(), account, &key);
    let result = create.await;
    guard.finish(result.as_ref().ok()).await;
    result
}

/// `ring_timeout_secs`: 1–300 seconds.
fn ring_timeout(secs: Option<u32>) -> Result<Option<std::time::Duration>, ApiError> {
    match secs {
        None => Ok(None),
        Some(n) if (1..=300).contains(&n) => Ok(Some(std::time::Duration::from_secs(n.into()))),
        Some(_) => Err(ApiError::field(
            "ring_timeout_secs",
            "ring_timeout_secs must be between 1 and 300",
        )),
    }
}

/// A party to call: an E.164 number (normalised) or a `sip:` URI that
/// parses and carries nothing that could break out of a header.
fn party(s: &ApiState, field: &str, to: String) -> Result<String, ApiError> {
    let number = crate::e164::normalize_e164(&to).filter(|n| n.len() <= 16 && n.len() >= 2);
    match number {
        Some(n) if !to.starts_with("sip:") => Ok(n),
        _ if (s.checks.sip_uri_host)(&to).is_some()
            && to.starts_with("sip:")
            && to.len() <= 256
            && !to.chars().any(|c| {
                c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ',')
            }) =>
        {
            Ok(to)
        }
        _ => Err(ApiError::field(
            field,
            "an E.164 number (+15550001234) or a sip: URI",
        )),
    }
}

async fn place_call(
    s: &ApiState,
    account: &str,
    b: CallIn,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    use crate::control::{Connect, OriginateRequest, StreamTarget};
    let from = crate::e164::normalize_e164(&b.from)
        .ok_or_else(|| ApiError::field("from", "an E.164 number (+15550001234)"))?;
    let to = crate::e164::normalize_e164(&b.to)
        .ok_or_else(|| ApiError::field("to", "an E.164 number (+15550001234)"))?;
    if let Some(t) = &b.trunk {
        check_id("trunk", t)?;
    }
    let ring_timeout = ring_timeout(b.ring_timeout_secs)?;
    let connect = match (b.stream, b.forward_to) {
        (Some(st), None) => {
            let (url, dialect, params) = check_stream(s, st, "stream.")?;
            Connect::Stream(StreamTarget {
                url,
                dialect,
                params,
            })
        }
        (None, Some(to)) => {
            let to = party(s, "forward_to", to)?;
            check_sip_target(s, "forward_to", &to)?;
            Connect::Forward { to }
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "forward_to",
                "give stream or forward_to, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::field(
                "stream",
                "give stream (an AI to connect) or forward_to (a party to connect)",
            ));
        }
    };
    let media = match connect {
        Connect::Stream { .. } => "stream",
        Connect::Forward { .. } => "forward",
    };
    let status_webhook = b.status_webhook;
    if let Some(w) = &status_webhook {
        check_webhook(s, "status_webhook", w)?;
    }
    let Some(control) = &s.control else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no signalling core behind this API",
        ));
    };
    let placed = control
        .originate(OriginateRequest {
            account: account.to_string(),
            from: from.clone(),
            to: to.clone(),
            trunk: b.trunk,
            connect,
            ring_timeout,
            status_webhook,
        })
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the signalling core is busy; retry",
            )
        })?;
    match placed {
        Ok(o) => {
            let out = CallOut {
                id: o.call_id,
                direction: "outbound".into(),
                from,
                to,
                trunk: Some(o.trunk),
                sip_call_id: o.sip_call_id,
                status: "queued".into(),
                started_at: o.started_at,
                answered_at: None,
                ended_at: None,
                end_cause: None,
                sip_status: None,
                duration_ms: None,
                media: media.into(),
                media_security: None,
                node: Some(s.cluster.node_id.clone()),
            };
            let body = serde_json::to_value(&out).map_err(ApiError::internal)?;
            Ok((StatusCode::CREATED, Json(body)))
        }
        Err(why) => Err(refusal(why)),
    }
}

/// The HTTP answer for a call or message the core would not place.
fn refusal(why: crate::control::OriginateRefused) -> ApiError {
    use crate::control::OriginateRefused;
    match why {
        OriginateRefused::FromNotOwned => ApiError::field("from", why.to_string()),
        OriginateRefused::NoTrunk | OriginateRefused::TrunkUnavailable(_) => {
            ApiError::field("trunk", why.to_string())
        }
        OriginateRefused::Blocked => {
            let mut e = ApiError::forbidden(why.to_string());
            e.detail.field = Some("to".into());
            e
        }
        OriginateRefused::Capacity => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "capacity", why.to_string());
            e.retry_after_secs = Some(1);
            e
        }
        OriginateRefused::Draining => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            why.to_string(),
        ),
    }
}

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
pub async fn hangup_call(
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
pub async fn start_stream(
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

/// Stops the call's listen-only stream (its socket gets `stop`).
#[utoipa::path(delete, path = "/v1/calls/{id}/stream", params(IdPath), tag = "calls",
    responses((status = 202, body = CallActionOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_stream(
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
pub async fn send_dtmf(
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
pub async fn transfer_call(
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

// ------------------------------------------------------------ messages

fn message_out(m: MessageRecord) -> MessageOut {
    MessageOut {
        id: m.id,
        direction: m.direction.as_str().to_string(),
        from: m.from_number,
        to: m.to_number,
        body: m.body,
        status: m.status,
        created_at: m.created_at,
    }
}

/// Sends an SMS: a SIP MESSAGE through the `from` number's trunk (or the
/// one named), with digest when challenged. Answered 201 `queued`; the
/// listing shows `sent` or `failed` once the carrier answered.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = MessageIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeating a POST with the same key (within 24 h) returns the first answer and sends no second message")),
    responses((status = 201, body = MessageOut), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn send_message(
    State(s): State<ApiState>,
    auth: Auth,
    headers: axum::http::HeaderMap,
    JsonBody(b): JsonBody<MessageIn>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let account = auth.account()?.to_string();
    let key = super::idempotency::key(&headers)?.map(|k| format!("msg:{k}"));
    let fingerprint = serde_json::to_string(&b).unwrap_or_default();
    idempotent(
        &s,
        &account,
        key,
        &fingerprint,
        send_one_message(&s, &account, b),
    )
    .await
}

async fn send_one_message(
    s: &ApiState,
    account: &str,
    b: MessageIn,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let from = crate::e164::normalize_e164(&b.from)
        .ok_or_else(|| ApiError::field("from", "an E.164 number (+15550001234)"))?;
    let to = crate::e164::normalize_e164(&b.to)
        .ok_or_else(|| ApiError::field("to", "an E.164 number (+15550001234)"))?;
    if b.body.is_empty() || b.body.len() > MAX_SMS_BYTES {
        return Err(ApiError::field(
            "body",
            "1–1300 bytes of UTF-8: one SIP MESSAGE carries it whole (RFC 3428 §7); split longer texts yourself",
        ));
    }
    if let Some(t) = &b.trunk {
        check_id("trunk", t)?;
    }
    let Some(control) = &s.control else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no signalling core behind this API",
        ));
    };
    let sent = control
        .send_message(crate::control::MessageRequest {
            account: account.to_string(),
            from,
            to,
            body: b.body,
            trunk: b.trunk,
        })
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the signalling core is busy; retry",
            )
        })?;
    let record = sent.map_err(refusal)?;
    let body = serde_json::to_value(message_out(record)).map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// Largest SMS body (RFC 3428 §7 keeps a MESSAGE under 1300 bytes).
const MAX_SMS_BYTES: usize = 1300;

/// The account's messages, newest first.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(PageQuery),
    responses((status = 200, body = MessagePage)))]
pub async fn list_messages(
    State(s): State<ApiState>,
    auth: Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let account = auth.account()?;
    let n = page_size(q.limit)?;
    let mut rows = s
        .store
        .list_messages(account, crate::store::MAX_LIMIT)
        .await?;
    if let Some(c) = &q.cursor {
        match rows.iter().position(|m| &m.id == c) {
            Some(i) => {
                rows.drain(..=i);
            }
            None => rows.clear(),
        }
    }
    let next_cursor = (rows.len() > n).then(|| rows[n - 1].id.clone());
    rows.truncate(n);
    Ok(Json(MessagePage {
        data: rows.into_iter().map(message_out).collect(),
        next_cursor,
    }))
}
