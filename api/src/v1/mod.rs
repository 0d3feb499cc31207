//! The REST API under `/v1`: JSON, bearer-token auth (see [`crate::auth`]),
//! every resource scoped to the token's account. Another account's
//! resource answers 404, exactly as a missing one, so ids leak nothing.

mod accounts;
mod blocked_numbers;
mod call_actions;
mod calls;
mod common;
pub mod denied_sources;
pub mod error;
pub mod extract;
pub mod idempotency;
mod list;
mod messages;
mod metrics;
pub mod nodes;
mod numbers;
pub mod openapi;
pub mod ratelimit;
mod recordings;
pub mod schema;
mod sip_users;
mod trunks;

pub use metrics::{ApiMetrics, track as metrics_track};

use crate::auth::Verifier;
use crate::control::CallControl;
use crate::store::Store;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use error::ApiError;
use ratelimit::RateLimits;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Notify;

/// Checks and hashing that belong to other crates (SIP URIs, stream
/// dialects, digest HA1), handed in by the daemon.
#[derive(Clone, Debug)]
pub struct Checks {
    /// The digest realm SIP users authenticate in.
    pub realm: String,
    /// The host of a forward target / fallback when it is a SIP URI we
    /// can dial (`None`: not one).
    pub sip_uri_host: fn(&str) -> Option<String>,
    /// Whether a stream dialect name is known.
    pub dialect: fn(&str) -> bool,
    /// (MD5 HA1, SHA-256 HA1) of (username, realm, password).
    pub ha1: fn(&str, &str, &str) -> (String, String),
}

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub verifier: Verifier,
    pub checks: Checks,
    /// Where tenants may point webhooks, streams and forwards.
    pub targets: crate::targets::TargetPolicy,
    pub limits: RateLimits,
    /// Woken after every change the routing table depends on, so this
    /// node applies it at once (other nodes re-read the store on a timer).
    pub changed: Arc<Notify>,
    /// `None` when the API runs without a signalling core (tests, tools).
    pub control: Option<CallControl>,
    pub metrics: ApiMetrics,
    /// This node among the nodes sharing the store.
    pub cluster: nodes::Cluster,
}

#[derive(Clone)]
pub struct ApiState(pub Arc<Inner>);

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Every `/v1` route and the handler that answers it.
fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/accounts", get(accounts::list_accounts))
        .route(
            "/v1/accounts/{id}",
            get(accounts::get_account).put(accounts::put_account),
        )
        .route(
            "/v1/accounts/{id}/auth-token",
            post(accounts::rotate_auth_token),
        )
        .route("/v1/trunks", get(trunks::list_trunks))
        .route(
            "/v1/trunks/{name}",
            get(trunks::get_trunk)
                .put(trunks::put_trunk)
                .delete(trunks::delete_trunk),
        )
        .route("/v1/numbers", get(numbers::list_numbers))
        .route(
            "/v1/numbers/{number}",
            get(numbers::get_number)
                .put(numbers::put_number)
                .delete(numbers::delete_number),
        )
        .route(
            "/v1/blocked-numbers",
            get(blocked_numbers::list_blocks).post(blocked_numbers::create_block),
        )
        .route(
            "/v1/blocked-numbers/{id}",
            get(blocked_numbers::get_block).delete(blocked_numbers::delete_block),
        )
        .route("/v1/sip-users", get(sip_users::list_sip_users))
        .route(
            "/v1/sip-users/{username}",
            get(sip_users::get_sip_user)
                .put(sip_users::put_sip_user)
                .delete(sip_users::delete_sip_user),
        )
        .route(
            "/v1/denied-sources",
            get(denied_sources::list_denied_sources).post(denied_sources::create_denied_source),
        )
        .route(
            "/v1/denied-sources/{id}",
            get(denied_sources::get_denied_source).delete(denied_sources::delete_denied_source),
        )
        .route("/v1/calls", get(calls::list_calls).post(calls::create_call))
        .route(
            "/v1/calls/{id}",
            get(calls::get_call).post(call_actions::update_call),
        )
        .route("/v1/calls/{id}/hangup", post(call_actions::hangup_call))
        .route("/v1/calls/{id}/dtmf", post(call_actions::send_dtmf))
        .route("/v1/calls/{id}/transfer", post(call_actions::transfer_call))
        .route(
            "/v1/calls/{id}/stream",
            post(call_actions::start_stream).delete(call_actions::stop_stream),
        )
        .route(
            "/v1/messages",
            get(messages::list_messages).post(messages::send_message),
        )
        .route("/v1/messages/{id}", get(messages::get_message))
        .route(
            "/v1/calls/{id}/recording",
            post(recordings::start_recording),
        )
        .route("/v1/recordings", get(recordings::list_recordings))
        .route(
            "/v1/recordings/{id}",
            get(recordings::get_recording).delete(recordings::delete_recording),
        )
        .route(
            "/v1/recordings/{id}/audio",
            get(recordings::download_recording),
        )
        .route("/v1/nodes", get(nodes::list_nodes))
        .route("/v1/nodes/{id}", delete(nodes::delete_node))
        .route("/v1/nodes/{id}/drain", post(nodes::drain_node))
        .route(
            "/v1/openapi.json",
            get(|| async { openapi::document_json() }),
        )
}

/// The `/v1` router (paths include the `/v1` prefix).
pub fn router(state: ApiState) -> Router {
    // Inside the per-IP limit: a passed-on action is limited here first.
    routes()
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            nodes::forward_live_action,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            per_ip_limit,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(extract::MAX_BODY))
        .with_state(state)
}

pub(crate) async fn per_ip_limit(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    // The edge decided who the client is (a trusted proxy's word or the
    // TCP peer); without the edge, the TCP peer.
    let client = req
        .extensions()
        .get::<crate::http::ClientAddr>()
        .map(|c| c.0)
        .or_else(|| {
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        });
    if let Some(ip) = client
        && let Err(wait) = state.limits.ip(ip)
    {
        return ratelimit::too_many(wait, "client address").into_response();
    }
    next.run(req).await
}
