//! Prometheus series of the REST API. Labels are the route template
//! (`/v1/calls/{id}`), never an id, so cardinality stays fixed.

use super::error::Rejected;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    rejections: IntCounterVec,
}

impl ApiMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<ApiMetrics> {
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_api_requests_total",
                "REST API requests by route template, method and status code",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "gateway_api_request_duration_seconds",
                "REST API time from request to response head, by route template and method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route", "method"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "gateway_api_rejections_total",
                "REST API requests refused, by reason (unauthorized, invalid_field, rate_limited, ...)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        Ok(ApiMetrics {
            requests,
            latency,
            rejections,
        })
    }
}

/// Counts and times every request.
pub async fn track(State(m): State<ApiMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // A fixed set: extension methods must not create series.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m,
        _ => "OTHER",
    }
    .to_string();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    m.latency
        .with_label_values(&[&route, &method])
        .observe(t0.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&route, &method, resp.status().as_str()])
        .inc();
    if let Some(Rejected(reason)) = resp.extensions().get::<Rejected>() {
        m.rejections.with_label_values(&[reason]).inc();
    }
    resp
}
