//! The HTTP front end (axum): `GET /metrics` (Prometheus text exposition of
//! the daemon's registry), `GET /healthz` (liveness), `GET /readyz`
//! (whether the node takes new calls), and the REST API under `/v1`
//! when it is configured, behind the edge: a deadline per request, a cap on
//! requests in progress (shed with 503 beyond, never queued without bound),
//! the client address taken from `X-Forwarded-For` only when the peer is a
//! trusted proxy, and `/metrics` optionally behind a bearer token.

use crate::v1::error::ApiError;
use crate::v1::{self, ApiMetrics, ApiState};
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tower::ServiceBuilder;

/// The HTTP edge's settings (`[api]`).
#[derive(Clone, Debug)]
pub struct Edge {
    /// A request (body included) must be answered within this.
    pub request_timeout: Duration,
    /// Requests in progress at once; beyond, 503 at once.
    pub max_concurrent_requests: usize,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Bearer token `/metrics` requires (`None`: open).
    pub metrics_token: Option<String>,
}

impl Default for Edge {
    fn default() -> Self {
        Edge {
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 512,
            trusted_proxies: Vec::new(),
            metrics_token: None,
        }
    }
}

/// The client's address as the edge decided it (the TCP peer, or what a
/// trusted proxy said): what per-IP limits and logs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Whether this node takes new calls: what `GET /readyz` answers, so that
/// a load balancer or Kubernetes stops sending calls to a node that would
/// refuse them, while `/healthz` (liveness) stays 200 through a drain.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicU8>);

/// The node's state as [`Readiness`] reports it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Loading the store and resuming calls: not serving SIP yet.
    Starting = 0,
    /// Taking new calls.
    Ready = 1,
    /// Draining (SIGTERM, SIGUSR2 hand-over, a drain request): calls in
    /// progress go on, new ones get 503.
    Draining = 2,
    /// The call-record queue is over capacity (the store is behind): new
    /// calls get 503 so that no record is lost.
    StoreBacklog = 3,
}

impl Readiness {
    pub fn set(&self, state: NodeState) {
        self.0.store(state as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> NodeState {
        match self.0.load(Ordering::Relaxed) {
            1 => NodeState::Ready,
            2 => NodeState::Draining,
            3 => NodeState::StoreBacklog,
            _ => NodeState::Starting,
        }
    }
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let (status, text) = match readiness.get() {
        NodeState::Ready => (StatusCode::OK, "ready\n"),
        NodeState::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        NodeState::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        NodeState::StoreBacklog => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store backlog: refusing new calls\n",
        ),
    };
    (status, text).into_response()
}

/// The router: metrics, liveness and readiness, plus `/v1` on `api`.
pub fn router(
    registry: Registry,
    readiness: Readiness,
    api: Option<(ApiState, ApiMetrics)>,
    edge: &Edge,
) -> Router {
    let token = Arc::new(edge.metrics_token.clone().filter(|t| !t.is_empty()));
    let base = Router::new()
        .route("/metrics", get(metrics))
        .with_state((registry, token))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(
            Router::new()
                .route("/readyz", get(readyz))
                .with_state(readiness),
        );
    let timeout = edge.request_timeout;
    let all = match api {
        Some((state, m)) => base.merge(
            v1::router(state.clone())
                .merge(crate::twilio::router(state))
                .layer(
                    ServiceBuilder::new()
                        .layer(HandleErrorLayer::new(move |e| edge_error(e, timeout)))
                        .load_shed()
                        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                            edge.max_concurrent_requests.max(1),
                        ))
                        .timeout(timeout),
                )
                .layer(axum::middleware::from_fn_with_state(m, v1::metrics_track)),
        ),
        None => base,
    };
    let proxies = Arc::new(edge.trusted_proxies.clone());
    all.layer(axum::middleware::from_fn_with_state(proxies, client_addr))
}

/// What the edge layers refused, as the API's JSON errors (counted by the
/// metrics layer as `timeout` and `overloaded`).
async fn edge_error(e: tower::BoxError, timeout: Duration) -> ApiError {
    if e.is::<tower::timeout::error::Elapsed>() {
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} ms", timeout.as_millis()),
        );
        err.retry_after_secs = Some(1);
        err
    } else if e.is::<tower::load_shed::error::Overloaded>() {
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in progress; retry later",
        );
        err.retry_after_secs = Some(1);
        err
    } else {
        ApiError::internal(e)
    }
}

/// Decides the client address: the TCP peer, unless the peer is a trusted
/// proxy; then the rightmost `X-Forwarded-For` entry that is not one (the
/// entries left of it are the client's to write, so they are not trusted).
async fn client_addr(
    State(proxies): State<Arc<Vec<IpNet>>>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let client = client_of(peer.ip(), req.headers(), &proxies);
        req.extensions_mut().insert(ClientAddr(client));
    }
    next.run(req).await
}

fn client_of(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let trusted = |ip: &IpAddr| proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // From the right: each trusted proxy vouches for the hop left of it.
    // The first hop that is no trusted proxy is the client; an entry that
    // is no address ends the walk at the last hop believed (what a client
    // writes on the left cannot move it).
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !trusted(&ip) {
            break;
        }
    }
    client
}

/// Compares without an early exit on the first differing byte.
fn same_token(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

async fn metrics(
    State((registry, token)): State<(Registry, Arc<Option<String>>)>,
    headers: HeaderMap,
) -> Response {
    if let Some(want) = token.as_deref() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_token(given.trim().as_bytes(), want.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
                "metrics need the bearer token (api.metrics_token)\n",
            )
                .into_response();
        }
    }
    let enc = TextEncoder::new();
    let mut out = Vec::new();
    match enc.encode(&registry.gather(), &mut out) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, enc.format_type().to_string())],
            out,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            format!("cannot encode metrics: {e}\n").into_bytes(),
        ),
    }
    .into_response()
}

/// Serves `router` on `listener` until the process ends; handlers see the
/// client address (per-IP rate limits).
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP listening (/v1, /metrics, /healthz, /readyz)");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not a proxy: its header is ignored.
        assert_eq!(
            client_of(ip("203.0.113.7"), &headers(&["198.51.100.1"]), &proxies),
            ip("203.0.113.7")
        );
        // A proxy: the rightmost untrusted hop, whatever the client wrote
        // further left.
        assert_eq!(
            client_of(
                ip("10.0.0.2"),
                &headers(&["1.2.3.4, 198.51.100.9", "10.0.0.5"]),
                &proxies
            ),
            ip("198.51.100.9")
        );
        // Only proxies: the leftmost.
        assert_eq!(
            client_of(ip("10.0.0.2"), &headers(&["10.1.1.1"]), &proxies),
            ip("10.1.1.1")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(
            client_of(ip("10.0.0.2"), &headers(&[]), &proxies),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_of(ip("10.0.0.2"), &headers(&["1.2.3.4, unknown"]), &proxies),
            ip("10.0.0.2")
        );
        // Garbage the client wrote on the left does not hide it.
        assert_eq!(
            client_of(ip("10.0.0.2"), &headers(&["junk, 198.51.100.9"]), &proxies),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc") && !same_token(b"ab", b"abc"));
    }
}
