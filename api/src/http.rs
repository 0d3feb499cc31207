//! The HTTP front end (axum): `GET /metrics` (Prometheus text exposition of
//! the daemon's registry), `GET /healthz`, and the REST API under `/v1`
//! when it is configured.

use crate::v1::{self, ApiMetrics, ApiState};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;

/// The router: metrics and health on `registry`, plus `/v1` on `api`.
pub fn router(registry: Registry, api: Option<(ApiState, ApiMetrics)>) -> Router {
    let base = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(registry);
    match api {
        Some((state, m)) => base.merge(
            v1::router(state).layer(axum::middleware::from_fn_with_state(m, v1::metrics_track)),
        ),
        None => base,
    }
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
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
}

/// Serves `router` on `listener` until the process ends; handlers see the
/// client address (per-IP rate limits).
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP listening (/v1, /metrics, /healthz)");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
