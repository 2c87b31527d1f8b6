//! MQTT over WebSocket on the HTTP listeners (`ws://` on `http`, `wss://` on `https`), at
//! `[listeners] ws_path` (default `/mqtt`). The upgrade negotiates the subprotocol `mqtt`
//! (MQTT 3.1.1 and 5) or `mqttv3.1` (older clients); each upgraded socket becomes one broker
//! connection through [`WsStream`](crate::ws_stream::WsStream).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio_util::task::TaskTracker;

use crate::cert_identity::CertNames;
use crate::http::{HttpState, PeerInfo};
use crate::ws_stream::WsStream;

/// The subprotocols we speak, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// What the WebSocket endpoint needs to hand sockets to the broker.
#[derive(Clone)]
pub struct MqttOverWs {
    pub broker: broker::Broker,
    pub names: CertNames,
    /// The sessions, so that shutdown can wait for their goodbyes.
    pub sessions: TaskTracker,
}

impl FromRef<HttpState> for MqttOverWs {
    fn from_ref(state: &HttpState) -> MqttOverWs {
        state.mqtt_ws.clone()
    }
}

/// `GET ws_path`: upgrades to a WebSocket and serves MQTT on it.
pub async fn upgrade(
    State(state): State<MqttOverWs>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = ws.requested_protocols().next().is_some();
    let ws = ws.protocols(SUBPROTOCOLS);
    if offered && ws.selected_protocol().is_none() {
        // A browser would fail the connection anyway if we answered without one of its choices.
        return (
            StatusCode::BAD_REQUEST,
            "unsupported WebSocket subprotocol: use \"mqtt\"",
        )
            .into_response();
    }
    // One MQTT packet per message is the common case; let a message be as large as a packet.
    let max = (state.broker.config().max_packet_size as usize).saturating_add(8);
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(
            move |e| tracing::debug!(peer = %peer.addr, error = %e, "WebSocket upgrade failed"),
        )
        .on_upgrade(move |socket| {
            let sessions = state.sessions.clone();
            let session = async move {
                let _name = peer.cert.as_ref().and_then(|c| state.names.register(c));
                let fingerprint = peer.cert.as_ref().map(|c| c.fingerprint.clone());
                let stream = WsStream::new(socket);
                state
                    .broker
                    .serve_stream(stream, Some(peer.addr), fingerprint)
                    .await;
            };
            sessions.track_future(session)
        })
}
