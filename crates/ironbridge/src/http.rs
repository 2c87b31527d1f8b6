//! The HTTP listener: `/healthz`, Prometheus `/metrics` and MQTT over WebSocket at `ws_path`;
//! the REST and device APIs are merged in by `main`, then [`harden`] adds the client address,
//! security headers and CORS. The same router is served over TLS by [`https`](crate::https).

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

/// Adds what every response and handler needs: the client's address for the API (audit log,
/// login limits), security headers, and CORS when origins are configured (off by default: the
/// browser's same-origin rule applies).
pub fn harden(app: Router, cors_origins: &[String], https: bool) -> anyhow::Result<Router> {
    use axum::http::HeaderValue;
    use tower_http::set_header::SetResponseHeaderLayer;
    let mut app = app.layer(axum::middleware::map_request(
        |mut req: axum::extract::Request| async move {
            let peer = req
                .extensions()
                .get::<axum::extract::ConnectInfo<PeerInfo>>()
                .map(|c| c.0.addr.ip());
            if let Some(ip) = peer {
                req.extensions_mut().insert(api::ClientAddr(ip));
            }
            req
        },
    ));
    let headers: [(&str, &str); 5] = [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
        ("cross-origin-opener-policy", "same-origin"),
    ];
    for (name, value) in headers {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    if https {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    if !cors_origins.is_empty() {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let origin = if cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            let list = cors_origins
                .iter()
                .map(|o| {
                    HeaderValue::from_str(o).map_err(|_| {
                        anyhow::anyhow!("[api] cors_origins: {o:?} is not a valid origin")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            AllowOrigin::list(list)
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([
                    axum::http::Method::GET,
                    axum::http::Method::POST,
                    axum::http::Method::PUT,
                    axum::http::Method::PATCH,
                    axum::http::Method::DELETE,
                ])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .max_age(std::time::Duration::from_secs(600)),
        );
    }
    Ok(app)
}

/// Hourly: drops audit records past their retention and sessions long ended.
pub async fn api_housekeeping(
    auth: Arc<api::auth::Auth>,
    platform: Arc<ib_core::Platform>,
    retention_days: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let cutoff = ib_core::db::now_ms() - i64::from(retention_days) * 86_400_000;
        let (a, p) = (auth.clone(), platform.clone());
        let done = tokio::task::spawn_blocking(move || {
            let audit = p.audit.drop_before(cutoff);
            let sessions = a.prune();
            (audit, sessions)
        })
        .await;
        match done {
            Ok((Ok(n), Ok(m))) if n + m > 0 => {
                tracing::info!(audit_records = n, sessions = m, "api housekeeping")
            }
            Ok((Err(e), _)) => tracing::warn!(error = %e, "dropping old audit records"),
            Ok((_, Err(e))) => tracing::warn!(error = %e.message, "pruning sessions"),
            _ => {}
        }
    }
}
