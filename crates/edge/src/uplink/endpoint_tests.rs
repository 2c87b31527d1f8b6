//! The uplink's URL and TLS settings: parsing, the checks made at load (each naming the field
//! and the file), and handshakes against a rustls server on loopback.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::super::session::SessionError;
use super::super::test_pki::Pki;
use super::*;

fn uplink(url: &str) -> UplinkConfig {
    let text = format!("url = {url:?}\ntoken = \"t\"\n");
    toml::from_str(&text).unwrap()
}

fn tls(pki: &Pki, url: &str, cafile: &str, client: Option<(&str, &str)>) -> UplinkConfig {
    let mut c = uplink(url);
    c.cafile = Some(pki.path(cafile));
    if let Some((cert, key)) = client {
        c.cert = Some(pki.path(cert));
        c.key = Some(pki.path(key));
    }
    c
}

fn err(c: &UplinkConfig) -> String {
    match Endpoint::from_config(c) {
        Ok(e) => panic!("{e} was accepted"),
        Err(e) => e,
    }
}

#[test]
fn urls_give_host_port_and_tls() {
    let ok = |u: &str| parse_url(u).unwrap();
    assert_eq!(
        ok("mqtt://127.0.0.1:1884"),
        (false, "127.0.0.1".into(), 1884)
    );
    assert_eq!(
        ok("mqtt://127.0.0.1:1884/"),
        (false, "127.0.0.1".into(), 1884)
    );
    assert_eq!(
        ok("mqtt://platform.example"),
        (false, "platform.example".into(), 1883)
    );
    assert_eq!(
        ok("mqtts://platform.example"),
        (true, "platform.example".into(), 8883)
    );
    assert_eq!(ok("mqtts://[::1]:9883"), (true, "::1".into(), 9883));
    assert_eq!(ok("mqtts://[::1]"), (true, "::1".into(), 8883));
    for bad in [
        "tcp://a:1",
        "mqtt://",
        "mqtt://:1883",
        "mqtt://a:0",
        "mqtt://a:99999",
        "mqtt://a:x",
        "mqtt://a:1/topic",
        "mqtt://user@a:1",
        "mqtts://[::1",
        "mqtts://[::1]x",
    ] {
        assert!(parse_url(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn the_endpoint_shows_its_url() {
    let e = Endpoint::from_config(&uplink("mqtt://127.0.0.1:1884/")).unwrap();
    assert_eq!(e.to_string(), "mqtt://127.0.0.1:1884");
    let pki = Pki::new("display");
    let e = Endpoint::from_config(&tls(&pki, "mqtts://[::1]", "ca.pem", None)).unwrap();
    assert_eq!(e.to_string(), "mqtts://[::1]:8883");
    assert!(e.client_cert().is_none());
    let c = tls(
        &pki,
        "mqtts://localhost:1",
        "ca.pem",
        Some(("client.pem", "client.key")),
    );
    let e = Endpoint::from_config(&c).unwrap();
    assert!(e.client_cert().is_some());
}

#[test]
fn tls_settings_need_mqtts_and_mqtts_needs_a_ca() {
    let pki = Pki::new("fields");
    let e = err(&tls(&pki, "mqtt://127.0.0.1:1", "ca.pem", None));
    assert!(e.starts_with("cafile:") && e.contains("mqtts://"), "{e}");
    let mut c = uplink("mqtt://127.0.0.1:1");
    c.key = Some(pki.path("client.key"));
    assert!(err(&c).starts_with("key:"), "{}", err(&c));
    let e = err(&uplink("mqtts://127.0.0.1:1"));
    assert!(e.starts_with("cafile: required"), "{e}");
    let mut c = tls(&pki, "mqtts://127.0.0.1:1", "ca.pem", None);
    c.cert = Some(pki.path("client.pem"));
    assert!(err(&c).starts_with("key: required"), "{}", err(&c));
    let mut c = tls(&pki, "mqtts://127.0.0.1:1", "ca.pem", None);
    c.key = Some(pki.path("client.key"));
    assert!(err(&c).starts_with("cert: required"), "{}", err(&c));
}

#[test]
fn bad_files_are_named_with_the_field() {
    let pki = Pki::new("files");
    std::fs::write(pki.path("empty.pem"), "just some text\n").unwrap();
    std::fs::write(pki.path("cut.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    let url = "mqtts://127.0.0.1:1";
    let e = err(&tls(&pki, url, "missing.pem", None));
    assert!(
        e.starts_with("cafile:") && e.contains("missing.pem") && e.contains("No such file"),
        "{e}"
    );
    let e = err(&tls(&pki, url, "empty.pem", None));
    assert!(
        e.contains("empty.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = err(&tls(&pki, url, "cut.pem", None));
    assert!(e.contains("cut.pem") && e.contains("not valid PEM"), "{e}");
    let e = err(&tls(
        &pki,
        url,
        "ca.pem",
        Some(("missing.pem", "client.key")),
    ));
    assert!(e.starts_with("cert:") && e.contains("missing.pem"), "{e}");
    // a certificate where the key should be
    let e = err(&tls(
        &pki,
        url,
        "ca.pem",
        Some(("client.pem", "client.pem")),
    ));
    assert!(e.starts_with("key:") && e.contains("private key"), "{e}");
    // a key that is not the certificate's
    let e = err(&tls(
        &pki,
        url,
        "ca.pem",
        Some(("client.pem", "server.key")),
    ));
    assert!(e.starts_with("cert, key:"), "{e}");
}

/// A TLS server on loopback completing one handshake, then echoing one byte; its handshake
/// result is returned by the task.
async fn server(pki: &Pki, mutual: bool) -> (u16, tokio::task::JoinHandle<Result<(), String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(pki.server_config(mutual));
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        s.write_all(&b).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())
    });
    (port, task)
}

async fn echo(stream: &mut Box<dyn Stream>) -> std::io::Result<u8> {
    stream.write_all(b"x").await?;
    stream.flush().await?;
    let mut b = [0u8; 1];
    stream.read_exact(&mut b).await?;
    Ok(b[0])
}

#[tokio::test]
async fn the_platform_is_verified_by_ca_and_ip_address() {
    let pki = Pki::new("handshake");
    for (host, mutual) in [("127.0.0.1", false), ("localhost", true)] {
        let (port, task) = server(&pki, mutual).await;
        let client = mutual.then_some(("client.pem", "client.key"));
        let c = tls(&pki, &format!("mqtts://{host}:{port}"), "ca.pem", client);
        let e = Endpoint::from_config(&c).unwrap();
        let mut s = e.connect(Duration::from_secs(10)).await.unwrap();
        assert_eq!(echo(&mut s).await.unwrap(), b'x');
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_wrong_ca_fails_the_handshake() {
    let pki = Pki::new("wrong-ca");
    let (port, task) = server(&pki, false).await;
    let c = tls(
        &pki,
        &format!("mqtts://127.0.0.1:{port}"),
        "other-ca.pem",
        None,
    );
    let e = Endpoint::from_config(&c).unwrap();
    match e.connect(Duration::from_secs(10)).await {
        Err(SessionError::Handshake(m)) => assert!(m.contains("certificate"), "{m}"),
        Err(other) => panic!("expected a handshake error, got {other}"),
        Ok(_) => panic!("a server signed by another CA was accepted"),
    }
    assert!(task.await.unwrap().is_err());
}

#[tokio::test]
async fn a_server_requiring_a_client_certificate_refuses_a_gateway_without_one() {
    let pki = Pki::new("no-client-cert");
    let (port, task) = server(&pki, true).await;
    let c = tls(&pki, &format!("mqtts://127.0.0.1:{port}"), "ca.pem", None);
    let e = Endpoint::from_config(&c).unwrap();
    // TLS 1.3: the client finishes first; the server's refusal arrives with the first read.
    let refused = match e.connect(Duration::from_secs(10)).await {
        Err(_) => true,
        Ok(mut s) => echo(&mut s).await.is_err(),
    };
    assert!(refused);
    assert!(task.await.unwrap().is_err());
}

#[test]
fn a_host_that_is_no_server_name_is_refused() {
    let pki = Pki::new("names");
    let e = err(&tls(&pki, "mqtts://bad_name!:1", "ca.pem", None));
    assert!(e.starts_with("url:"), "{e}");
}
