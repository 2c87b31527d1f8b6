//! MQTT over WebSocket with a real WebSocket client (tokio-tungstenite) speaking raw MQTT bytes:
//! subprotocol negotiation, packets split across frames and frames holding several packets,
//! ping/pong, text frames closing the connection, and `wss://` with a client certificate whose
//! identity reaches the ACL rules.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use support::{start, Pki};

/// CONNECT, MQTT 3.1.1, clean session, keep-alive 30 s, client id `ws1`, no credentials.
const CONNECT: [u8; 17] = [
    0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 3, b'w', b's', b'1',
];
const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];

/// SUBSCRIBE packet id 1 to `filter` at QoS 0.
fn subscribe(filter: &str) -> Vec<u8> {
    let mut p = vec![
        0x82,
        (2 + 2 + filter.len() + 1) as u8,
        0,
        1,
        0,
        filter.len() as u8,
    ];
    p.extend_from_slice(filter.as_bytes());
    p.push(0);
    p
}

/// PUBLISH at QoS 0.
fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x30,
        (2 + topic.len() + payload.len()) as u8,
        0,
        topic.len() as u8,
    ];
    p.extend_from_slice(topic.as_bytes());
    p.extend_from_slice(payload);
    p
}

async fn connect<S>(
    io: S,
    url: &str,
    protocol: Option<&str>,
) -> Result<(WebSocketStream<S>, Option<String>), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = url.into_client_request()?;
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, io).await?;
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((ws, chosen))
}

async fn tcp(addr: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Reads binary frames until `n` bytes have arrived.
async fn read_bytes<S>(ws: &mut WebSocketStream<S>, n: usize) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut got = Vec::new();
    while got.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no data within 5 s")
            .expect("stream ended")
            .unwrap();
        match msg {
            Message::Binary(b) => got.extend_from_slice(&b),
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

#[tokio::test]
async fn mqtt_bytes_in_any_framing() {
    let s = start("[mqtt]\nallow_anonymous = true\n", &[]);
    let url = format!("ws://{}/mqtt", s.addr("http"));
    let (mut ws, chosen) = connect(tcp(s.addr("http")).await, &url, Some("mqtt"))
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    // CONNECT in three frames.
    for part in [&CONNECT[..1], &CONNECT[1..7], &CONNECT[7..]] {
        ws.send(Message::binary(part.to_vec())).await.unwrap();
    }
    assert_eq!(read_bytes(&mut ws, 4).await, CONNACK_OK);
    // SUBSCRIBE and a PUBLISH to it in one frame.
    let mut both = subscribe("ws/t");
    both.extend(publish("ws/t", b"hi"));
    ws.send(Message::binary(both)).await.unwrap();
    let mut expected = vec![0x90, 3, 0, 1, 0];
    expected.extend(publish("ws/t", b"hi"));
    assert_eq!(read_bytes(&mut ws, expected.len()).await, expected);
}

#[tokio::test]
async fn ping_pong_and_text_frames() {
    let s = start("[mqtt]\nallow_anonymous = true\n", &[]);
    let url = format!("ws://{}/mqtt", s.addr("http"));
    let (mut ws, _) = connect(tcp(s.addr("http")).await, &url, Some("mqtt"))
        .await
        .unwrap();
    ws.send(Message::binary(CONNECT.to_vec())).await.unwrap();
    assert_eq!(read_bytes(&mut ws, 4).await, CONNACK_OK);
    ws.send(Message::Ping(b"beat".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"beat".to_vec().into()));
    // MQTT over WebSocket is binary only: a text frame ends the connection with 1003.
    ws.send(Message::text("hello")).await.unwrap();
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match close {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn subprotocols() {
    let s = start("[mqtt]\nallow_anonymous = true\n", &["--ws-path", "/ws"]);
    let url = format!("ws://{}/ws", s.addr("http"));
    let (_, chosen) = connect(tcp(s.addr("http")).await, &url, Some("mqttv3.1"))
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("mqttv3.1"));
    let (_, chosen) = connect(tcp(s.addr("http")).await, &url, Some("chat, mqtt"))
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    match connect(tcp(s.addr("http")).await, &url, Some("chat")).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected 400, got {:?}", other.map(|(_, p)| p)),
    }
    // The old path is gone with --ws-path.
    let old = format!("ws://{}/mqtt", s.addr("http"));
    assert!(connect(tcp(s.addr("http")).await, &old, Some("mqtt"))
        .await
        .is_err());
}

fn client_tls(pki: &Pki, client: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(pki.path(&format!("{client}.pem"))).unwrap()],
            PrivateKeyDer::from_pem_file(pki.path(&format!("{client}.key"))).unwrap(),
        )
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn wss_with_client_certificate_identity() {
    let pki = Pki::new();
    let config = format!(
        "[listeners]\nhttps = \"127.0.0.1:0\"\n[mqtt]\nallow_anonymous = false\n\
         [[mqtt.acl]]\nfilter = \"devices/device-1/#\"\naccess = \"all\"\nallow = true\nusername = \"device-1\"\n\
         [[mqtt.acl]]\nfilter = \"#\"\naccess = \"all\"\nallow = false\n{}",
        pki.tls_section(&format!(
            "client_ca = \"{}\"\nuse_identity_as_username = true\n",
            pki.path("ca.pem")
        ))
    );
    let s = start(&config, &["--mqtts", "127.0.0.1:0"]);
    let https = s.addr("https").to_string();
    let tls = client_tls(&pki, "device-1")
        .connect(
            ServerName::try_from("localhost").unwrap(),
            tcp(&https).await,
        )
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/mqtt", s.port("https"));
    let (mut ws, chosen) = connect(tls, &url, Some("mqtt")).await.unwrap();
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    // No user name, anonymous access off: only the certificate can make this succeed.
    ws.send(Message::binary(CONNECT.to_vec())).await.unwrap();
    assert_eq!(read_bytes(&mut ws, 4).await, CONNACK_OK);
    // As "device-1" (the CN) the ACL grants its own subtree and denies the rest.
    ws.send(Message::binary(subscribe("devices/device-1/#")))
        .await
        .unwrap();
    assert_eq!(read_bytes(&mut ws, 5).await, [0x90, 3, 0, 1, 0]);
    ws.send(Message::binary(subscribe("other/#")))
        .await
        .unwrap();
    assert_eq!(read_bytes(&mut ws, 5).await, [0x90, 3, 0, 1, 0x80]);
}
