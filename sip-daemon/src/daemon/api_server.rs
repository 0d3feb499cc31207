//! The HTTP server: /metrics, /healthz, /readyz and, when a JWT key is
//! configured, the REST API (`/v1`).

use super::DaemonError;
use super::wiring::Shared;
use crate::config::Config;
use api::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Binds `api.listen`, when set, and serves it on its own task.
pub(super) async fn start(
    cfg: &Config,
    shared: &Shared,
    registry: &prometheus::Registry,
    control: api::control::CallControl,
) -> Result<(), DaemonError> {
    let Some(addr) = cfg.api.listen else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| DaemonError::ApiListen { addr, error })?;
    let cluster = api::v1::nodes::Cluster::new(
        shared.node_id.clone(),
        Duration::from_secs(cfg.cluster.lease_secs),
        Some(shared.drain.clone()),
    )
    .map_err(DaemonError::ClusterClient)?;
    let rest = rest_state(
        cfg,
        shared.store.clone(),
        registry,
        shared.changed.clone(),
        control,
        cluster,
    )?;
    let edge = api::http::Edge {
        request_timeout: Duration::from_millis(cfg.api.request_timeout_ms.max(1)),
        max_concurrent_requests: cfg.api.max_concurrent_requests.max(1),
        trusted_proxies: cfg.api.trusted_proxies.clone(),
        metrics_token: cfg.api.metrics_token.clone(),
    };
    let router = api::http::router(registry.clone(), shared.readiness.clone(), rest, &edge);
    tokio::spawn(async move {
        if let Err(e) = api::http::serve(listener, router).await {
            tracing::error!(%addr, error = %e, "HTTP listener failed");
        }
    });
    Ok(())
}

/// The REST API's state, when `/v1` is configured (a JWT secret or key).
fn rest_state(
    cfg: &Config,
    store: Arc<dyn Store>,
    registry: &prometheus::Registry,
    changed: Arc<tokio::sync::Notify>,
    control: api::control::CallControl,
    cluster: api::v1::nodes::Cluster,
) -> Result<Option<(api::v1::ApiState, api::v1::ApiMetrics)>, DaemonError> {
    use api::v1::ratelimit::{Limit, RateLimits};
    if !cfg.api.rest_enabled() {
        tracing::info!(
            "REST API off: set api.jwt_secret (or api.jwt_public_key_file) to serve /v1"
        );
        return Ok(None);
    }
    let verifier = cfg.api.verifier().map_err(DaemonError::Verifier)?;
    let metrics = api::v1::ApiMetrics::register(registry)?;
    let a = &cfg.api;
    let state = api::v1::ApiState(Arc::new(api::v1::Inner {
        store,
        verifier,
        checks: api::v1::Checks {
            realm: cfg.sip.realm.clone(),
            sip_uri_host: |s| {
                crate::sip::Uri::parse(s)
                    .ok()
                    .map(|u| u.host.map(|h| h.to_string()).unwrap_or_default())
            },
            dialect: |d| media_userspace::aistream::Dialect::parse(d).is_some(),
            ha1: |user, realm, password| {
                use crate::sip::digest::{Algorithm, ha1};
                (
                    ha1(Algorithm::Md5, user, realm, password),
                    ha1(Algorithm::Sha256, user, realm, password),
                )
            },
        },
        targets: api::targets::TargetPolicy::new(a.allowed_target_networks.clone()),
        limits: RateLimits::new(
            Limit {
                rate: a.account_rate,
                burst: a.account_burst,
            },
            Limit {
                rate: a.ip_rate,
                burst: a.ip_burst,
            },
        ),
        changed,
        control: Some(control),
        metrics: metrics.clone(),
        cluster,
    }));
    Ok(Some((state, metrics)))
}
