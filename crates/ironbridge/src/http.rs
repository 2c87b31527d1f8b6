//! The HTTP listener: `/healthz`, Prometheus `/metrics` and MQTT over WebSocket at `ws_path`;
//! the REST API, device API and dashboard join it in later issues. The same router is served
//! over TLS by [`https`](crate::https).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::IncomingStream;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::cert_identity::ClientCert;
use crate::ws::{self, MqttOverWs};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: PrometheusHandle,
    pub broker: broker::Broker,
    pub mqtt_ws: MqttOverWs,
}

/// Who is on the other end of an HTTP connection (axum's `ConnectInfo`).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The verified client certificate (HTTPS only).
    pub cert: Option<Arc<ClientCert>>,
}

impl Connected<IncomingStream<'_, TcpListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> PeerInfo {
        PeerInfo {
            addr: *stream.remote_addr(),
            cert: None,
        }
    }
}

/// The HTTP routes; MQTT over WebSocket lives at `ws_path`.
pub fn app(state: HttpState, ws_path: &str) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(ws_path, get(ws::upgrade))
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
    metrics::gauge!("mqtt_sessions").set(state.broker.session_count() as f64);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
