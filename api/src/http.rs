//! The HTTP front end (axum). For now: `GET /metrics` (Prometheus text
//! exposition of the daemon's registry) and `GET /healthz`; the REST API
//! under `/v1` joins this router in a later capability.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;

/// The router, on `registry`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(registry)
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

/// Binds `addr` and serves `router` until the process ends.
pub async fn serve(addr: SocketAddr, registry: Registry) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "HTTP listening (/metrics, /healthz)");
    axum::serve(listener, router(registry)).await
}
