//! The HTTP listener: `/healthz` and Prometheus `/metrics` for now; the REST API, device API
//! and dashboard join it in later issues.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: PrometheusHandle,
    pub broker: broker::Broker,
}

/// The HTTP routes.
pub fn app(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    // Every listener is bound before this router is served, so answering at all means healthy.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let stats = state.broker.stats();
    metrics::gauge!("mqtt_sessions").set(state.broker.session_count() as f64);
    let _ = stats;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
