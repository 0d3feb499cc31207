//! The REST API under `/v1`: JSON, bearer-token auth (see [`crate::auth`]),
//! every resource scoped to the token's account. Another account's
//! resource answers 404, exactly as a missing one, so ids leak nothing.

pub mod denied_sources;
pub mod error;
pub mod extract;
pub mod idempotency;
mod metrics;
pub mod nodes;
pub mod openapi;
pub mod ratelimit;
mod resources;
pub mod schema;

pub use metrics::{ApiMetrics, track as metrics_track};

use crate::auth::Verifier;
use crate::control::CallControl;
use crate::store::Store;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

/// The `/v1` router (paths include the `/v1` prefix).
pub fn router(state: ApiState) -> Router {
    let mut r = resources::routes()
        .merge(denied_sources::routes())
        .merge(nodes::routes());
    r = r.route(
        "/v1/openapi.json",
        axum::routing::get(|| async { openapi::document_json() }),
    );
    // Inside the per-IP limit: a passed-on action is limited here first.
    r.fallback(|| async { ApiError::not_found("route") })
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

async fn per_ip_limit(State(state): State<ApiState>, req: Request, next: Next) -> Response {
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
