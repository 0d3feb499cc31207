//! The cluster: nodes sharing one store. `GET /v1/nodes` and
//! `POST /v1/nodes/{id}/drain` (admin), and the edge that carries a
//! live-call action to the node that holds the call, so that every node
//! gives the same answer.
//!
//! Nodes record themselves in the store at start and on every heartbeat
//! (the daemon's `node_heartbeat`); a call record names the node that
//! handles it. A live action (hangup, DTMF, transfer, stream start and
//! stop) for a call another node holds is passed to that node's REST API
//! as it came (same method, path, body and token), marked with
//! `X-Gateway-Forwarded-By` so that it is never passed on twice, and its
//! answer is returned unchanged.

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, PathParams};
use super::idempotency::now_ms;
use super::schema::{IdPath, NodeDrainOut, NodeList, NodeOut};
use crate::store::NodeRecord;
use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// This node among the nodes sharing the store.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// This node's `store.node_id`.
    pub node_id: String,
    /// A node whose heartbeat is older is unhealthy.
    pub lease_ms: i64,
    /// Wakes this node's own drain at once (a request for another node
    /// waits for that node's heartbeat).
    pub drain_self: Option<tokio::sync::mpsc::Sender<()>>,
    /// The client live actions are passed on with.
    pub peers: reqwest::Client,
}

/// How long a node that holds a call has to answer a passed-on action.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The header a passed-on request carries: the node that passed it.
pub const FORWARDED_BY: &str = "x-gateway-forwarded-by";

/// The HTTP client that passes actions on to peers could not be built
/// (no TLS backend).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PeerClientError(#[from] reqwest::Error);

impl Cluster {
    pub fn new(
        node_id: String,
        lease: Duration,
        drain_self: Option<tokio::sync::mpsc::Sender<()>>,
    ) -> Result<Cluster, PeerClientError> {
        // reqwest's rustls needs the process-wide provider (ring, as for
        // webhooks and AI sockets); a second install finds it there.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let peers = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(FORWARD_TIMEOUT)
            .build()?;
        Ok(Cluster {
            node_id,
            lease_ms: lease.as_millis().min(i64::MAX as u128) as i64,
            drain_self,
            peers,
        })
    }

    fn healthy(&self, n: &NodeRecord, now_ms: i64) -> bool {
        now_ms.saturating_sub(n.heartbeat_at) <= self.lease_ms
    }
}

/// Every node sharing the store (admin): health (heartbeat within the
/// lease), load and drain state.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    responses((status = 200, body = NodeList), (status = 403, body = ErrorBody)))]
pub async fn list_nodes(State(s): State<ApiState>, auth: Auth) -> Result<Json<NodeList>, ApiError> {
    auth.require_admin()?;
    let now = now_ms();
    let data = s
        .store
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| NodeOut {
            healthy: s.cluster.healthy(&n, now),
            this_node: n.id == s.cluster.node_id,
            id: n.id,
            api_address: n.api_address,
            version: n.version,
            started_at: n.started_at,
            heartbeat_at: n.heartbeat_at,
            draining: n.draining,
            drain_requested: n.drain_requested,
            calls_active: n.calls_active,
        })
        .collect();
    Ok(Json(NodeList { data }))
}

/// Drains a node (admin): it refuses new calls with 503 (and `/readyz`
/// turns 503) while its calls go on, from its next heartbeat on, or at
/// once when it is the node that answered. The process keeps running
/// until it is stopped (SIGTERM, or SIGUSR2 to hand calls over); its next
/// start clears the request.
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", params(IdPath), tag = "nodes",
    responses((status = 202, body = NodeDrainOut), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn drain_node(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<(StatusCode, Json<NodeDrainOut>), ApiError> {
    auth.require_admin()?;
    if !s.store.request_node_drain(&id).await? {
        return Err(ApiError::not_found("node"));
    }
    if id == s.cluster.node_id
        && let Some(tx) = &s.cluster.drain_self
    {
        let _ = tx.try_send(());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(NodeDrainOut {
            id,
            status: "drain-requested".into(),
        }),
    ))
}

/// Forgets a node that is gone for good (admin): only once its heartbeat
/// has lapsed and none of its calls is open (its peers close a lost
/// node's calls; its resumable ones after `cluster.resume_grace_secs`).
#[utoipa::path(delete, path = "/v1/nodes/{id}", params(IdPath), tag = "nodes",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_node(
    State(s): State<ApiState>,
    auth: Auth,
    PathParams(IdPath { id }): PathParams<IdPath>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let lapsed_before = now_ms().saturating_sub(s.cluster.lease_ms);
    if s.store.delete_node(&id, lapsed_before).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    if s.store.list_nodes().await?.iter().any(|n| n.id == id) {
        return Err(ApiError::conflict(
            "id",
            "the node is alive, or some of its calls are still open",
        ));
    }
    Err(ApiError::not_found("node"))
}

/// The call id of a live-call action's path (`/v1/calls/{id}/hangup`,
/// `…/dtmf`, `…/transfer`, `…/stream`), if it is one.
fn live_action_call<'p>(method: &Method, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix("/v1/calls/")?;
    // `POST /v1/calls/{id}` moves a live call's stream.
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    let live = match action {
        "" => method == Method::POST,
        "hangup" | "dtmf" | "transfer" => method == Method::POST,
        "stream" => method == Method::POST || method == Method::DELETE,
        "recording" => method == Method::POST,
        _ => false,
    };
    (live && !id.is_empty()).then_some(id)
}

/// Passes a live-call action on to the node that holds the call. Anything
/// else, and anything this node should answer itself (no valid token, not
/// the token's call, an ended call, a call of this node, a request passed
/// on already), goes to the handlers.
pub async fn forward_live_action(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(id) = live_action_call(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED_BY) {
        return next.run(req).await;
    }
    // Verified here without the account's rate limit: the handler (here or
    // on the holder) counts the request once.
    let account = super::extract::bearer_token(req.headers())
        .and_then(|t| s.verifier.verify(t).ok())
        .and_then(|p| p.account);
    let Some(account) = account else {
        return next.run(req).await;
    };
    let call = match s.store.get_call(id).await {
        Ok(Some(c)) => c,
        _ => return next.run(req).await,
    };
    let holder = match call.node.as_deref() {
        Some(n)
            if call.account_id.as_deref() == Some(account.as_str())
                && call.end_at.is_none()
                && n != s.cluster.node_id =>
        {
            n.to_string()
        }
        _ => return next.run(req).await,
    };
    let nodes = match s.store.list_nodes().await {
        Ok(n) => n,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = now_ms();
    let address = nodes
        .iter()
        .find(|n| n.id == holder && s.cluster.healthy(n, now))
        .and_then(|n| n.api_address.clone());
    let Some(address) = address else {
        return unreachable_holder(&holder);
    };
    match pass_on(&s.cluster, &address, req).await {
        Ok(resp) => resp,
        Err(PassOnError::Body(e)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_body",
            format!("the request body could not be read: {e}"),
        )
        .into_response(),
        Err(PassOnError::Connect(e)) => {
            tracing::warn!(node = %holder, %address, error = %e, "live-call action not passed on");
            unreachable_holder(&holder)
        }
        Err(PassOnError::Answer(e)) => {
            // Sent, but no answer came: the holder may have acted, so no
            // invitation to retry.
            tracing::warn!(node = %holder, %address, error = %e, "no answer to a passed-on action");
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "unavailable",
                format!("node {holder}, which holds the call, did not answer in time; the action may have been carried out"),
            )
            .into_response()
        }
    }
}

/// Why a live-call action was not passed on.
enum PassOnError {
    /// The body could not be read (too large, cut off).
    Body(String),
    /// The holder could not be reached: nothing was sent.
    Connect(String),
    /// Sent, but no (complete) answer.
    Answer(String),
}

fn unreachable_holder(node: &str) -> Response {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("the call is held by node {node}, which does not answer; retry"),
    );
    e.retry_after_secs = Some(1);
    e.into_response()
}

/// Sends `req` as it came to the node at `address` and returns its answer.
/// The client's address goes along as `X-Forwarded-For` (list the nodes
/// in `api.trusted_proxies` so that the holder's per-IP limit counts the
/// client, not the node).
async fn pass_on(cluster: &Cluster, address: &str, req: Request) -> Result<Response, PassOnError> {
    let client = req
        .extensions()
        .get::<crate::http::ClientAddr>()
        .map(|c| c.0.to_string());
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, super::extract::MAX_BODY)
        .await
        .map_err(|e| PassOnError::Body(e.to_string()))?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = cluster
        .peers
        .request(parts.method.clone(), format!("http://{address}{path}"))
        .header(FORWARDED_BY, cluster.node_id.as_str())
        .body(body);
    for name in [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::HeaderName::from_static("idempotency-key"),
    ] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    if let Some(ip) = client {
        out = out.header("x-forwarded-for", ip);
    }
    let resp = out.send().await.map_err(|e| {
        if e.is_connect() {
            PassOnError::Connect(e.to_string())
        } else {
            PassOnError::Answer(e.to_string())
        }
    })?;
    let status = resp.status();
    // What a client acts on; hop-by-hop and connection headers stay.
    let kept: Vec<_> = [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        header::WWW_AUTHENTICATE,
    ]
    .into_iter()
    .filter_map(|name| resp.headers().get(&name).cloned().map(|v| (name, v)))
    .collect();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| PassOnError::Answer(e.to_string()))?;
    let mut answer = Response::new(Body::from(bytes));
    *answer.status_mut() = status;
    answer.headers_mut().extend(kept);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_actions_are_passed_on() {
        let post = Method::POST;
        assert_eq!(live_action_call(&post, "/v1/calls/CA1/hangup"), Some("CA1"));
        assert_eq!(live_action_call(&post, "/v1/calls/CA1/dtmf"), Some("CA1"));
        assert_eq!(
            live_action_call(&post, "/v1/calls/CA1/transfer"),
            Some("CA1")
        );
        assert_eq!(live_action_call(&post, "/v1/calls/CA1/stream"), Some("CA1"));
        assert_eq!(
            live_action_call(&Method::DELETE, "/v1/calls/CA1/stream"),
            Some("CA1")
        );
        assert_eq!(live_action_call(&Method::GET, "/v1/calls/CA1/hangup"), None);
        // `POST /v1/calls/{id}` moves a live call's stream.
        assert_eq!(live_action_call(&post, "/v1/calls/CA1"), Some("CA1"));
        assert_eq!(live_action_call(&Method::GET, "/v1/calls/CA1"), None);
        assert_eq!(live_action_call(&post, "/v1/calls/"), None);
        assert_eq!(live_action_call(&post, "/v1/calls//hangup"), None);
        assert_eq!(live_action_call(&post, "/v1/calls/CA1/consult"), None);
        assert_eq!(live_action_call(&post, "/v1/numbers/x/hangup"), None);
    }
}
