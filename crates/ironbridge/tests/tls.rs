//! MQTT over TLS with real peers: Mosquitto's clients (`--cafile`, `--cert`/`--key`), OpenSSL's
//! `s_client` for protocol versions, and client-certificate identity reaching the ACL rules.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{have, metric, mosquitto_pub, mosquitto_sub, publish_until_received, start, Pki};

const FAILURES: &str = "mqtt_tls_handshake_failures_total{listener=\"mqtts\"}";

/// `-h 127.0.0.1 -p PORT --cafile CA` plus `--cert/--key` for `client`.
fn tls_args(pki: &Pki, port: &str, client: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.into(),
        "--cafile".into(),
        pki.path("ca.pem"),
    ];
    if let Some(c) = client {
        args.extend([
            "--cert".into(),
            pki.path(&format!("{c}.pem")),
            "--key".into(),
            pki.path(&format!("{c}.key")),
        ]);
    }
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn mosquitto_clients_over_tls() {
    if !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let pki = Pki::new();
    let config = format!("[mqtt]\nallow_anonymous = true\n{}", pki.tls_section(""));
    let s = start(&config, &["--mqtts", "127.0.0.1:0"]);
    let port = s.port("mqtts");
    let tls = tls_args(&pki, &port, None);
    for version in ["mqttv311", "mqttv5"] {
        let mut sub = strs(&tls);
        sub.extend(["-V", version, "-t", "tls/#", "-q", "1"]);
        let mut publish = strs(&tls);
        publish.extend(["-V", version, "-t", "tls/x", "-m", "secret", "-q", "1"]);
        let out = publish_until_received(mosquitto_sub(&sub), &publish);
        assert_eq!(out.trim(), "tls/x secret");
    }
    // The plain listener still works next to it.
    let mqtt_port = s.port("mqtt");
    let out = mosquitto_pub(&["-h", "127.0.0.1", "-p", &mqtt_port, "-t", "t", "-m", "m"]);
    assert!(out.status.success());
    // Without the CA the client refuses our certificate: the handshake fails on both sides.
    let out = mosquitto_pub(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--capath",
        "/nonexistent",
        "-t",
        "t",
        "-m",
        "m",
    ]);
    assert!(!out.status.success());
}

#[test]
fn required_client_certificate() {
    if !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let pki = Pki::new();
    let tls = pki.tls_section(&format!(
        "client_ca = \"{}\"\nrequire_client_cert = true\n",
        pki.path("ca.pem")
    ));
    let s = start(
        &format!("[mqtt]\nallow_anonymous = true\n{tls}"),
        &["--mqtts", "127.0.0.1:0"],
    );
    let port = s.port("mqtts");
    let http = s.addr("http").to_string();
    let before = metric(&http, FAILURES);

    let good = tls_args(&pki, &port, Some("device-1"));
    let mut sub = strs(&good);
    sub.extend(["-t", "mtls/#"]);
    let mut publish = strs(&good);
    publish.extend(["-t", "mtls/x", "-m", "ok"]);
    assert_eq!(
        publish_until_received(mosquitto_sub(&sub), &publish).trim(),
        "mtls/x ok"
    );

    for client in [None, Some("rogue")] {
        let mut args = tls_args(&pki, &port, client);
        args.extend(["-t".into(), "mtls/x".into(), "-m".into(), "no".into()]);
        let out = mosquitto_pub(&strs(&args));
        assert!(
            !out.status.success(),
            "{client:?} was let in: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(metric(&http, FAILURES) >= before + 2.0);
}

#[test]
fn certificate_identity_reaches_the_acl() {
    if !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let pki = Pki::new();
    let nameless = pki.fingerprint("nameless");
    // No anonymous access and no users: only a certificate can get a client in, as its CN
    // (device-1) or, without a CN, as its fingerprint.
    let config = format!(
        "[mqtt]\nallow_anonymous = false\n\
         [[mqtt.acl]]\nfilter = \"devices/device-1/#\"\naccess = \"all\"\nallow = true\nusername = \"device-1\"\n\
         [[mqtt.acl]]\nfilter = \"devices/nameless/#\"\naccess = \"all\"\nallow = true\nusername = \"{nameless}\"\n\
         [[mqtt.acl]]\nfilter = \"#\"\naccess = \"all\"\nallow = false\n{}",
        pki.tls_section(&format!(
            "client_ca = \"{}\"\nuse_identity_as_username = true\n",
            pki.path("ca.pem")
        ))
    );
    let s = start(&config, &["--mqtts", "127.0.0.1:0"]);
    let port = s.port("mqtts");

    let device = tls_args(&pki, &port, Some("device-1"));
    let mut sub = strs(&device);
    sub.extend(["-V", "mqttv5", "-t", "devices/device-1/#"]);
    let mut publish = strs(&device);
    publish.extend(["-V", "mqttv5", "-t", "devices/device-1/t", "-m", "21.5"]);
    assert_eq!(
        publish_until_received(mosquitto_sub(&sub), &publish).trim(),
        "devices/device-1/t 21.5"
    );

    // The nameless certificate's subscriber must see its own topic, and never device-1's
    // publish to it (the ACL denies device-1 there).
    let other = tls_args(&pki, &port, Some("nameless"));
    let mut sub = strs(&other);
    sub.extend(["-t", "devices/nameless/#"]);
    let sub = mosquitto_sub(&sub);
    std::thread::sleep(Duration::from_millis(300));
    let mut denied = strs(&device);
    denied.extend(["-t", "devices/nameless/t", "-m", "from-device-1"]);
    let _ = mosquitto_pub(&denied);
    let mut allowed = strs(&other);
    allowed.extend(["-t", "devices/nameless/t", "-m", "mine"]);
    assert_eq!(
        publish_until_received(sub, &allowed).trim(),
        "devices/nameless/t mine"
    );

    // Without a certificate the usual rules apply: no anonymous access.
    let mut anonymous = tls_args(&pki, &port, None);
    anonymous.extend(["-t".into(), "devices/x".into(), "-m".into(), "m".into()]);
    let out = mosquitto_pub(&strs(&anonymous));
    assert!(!out.status.success(), "anonymous TLS client was let in");
}

/// `openssl s_client` with one protocol version: whether the handshake completed.
fn s_client(port: &str, version: &str, pki: &Pki) -> bool {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            version,
        ])
        // Let OpenSSL itself offer TLS 1.1 (its default security level refuses to).
        .args([
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-CAfile",
            &pki.path("ca.pem"),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && !text.contains("Cipher is (NONE)")
}

#[test]
fn only_tls_1_2_and_1_3() {
    if !have("openssl") {
        return;
    }
    let pki = Pki::new();
    let s = start(
        &format!("[mqtt]\nallow_anonymous = true\n{}", pki.tls_section("")),
        &["--mqtts", "127.0.0.1:0"],
    );
    let (port, http) = (s.port("mqtts"), s.addr("http").to_string());
    assert!(s_client(&port, "-tls1_3", &pki), "TLS 1.3 refused");
    assert!(s_client(&port, "-tls1_2", &pki), "TLS 1.2 refused");
    let before = metric(&http, FAILURES);
    assert!(!s_client(&port, "-tls1_1", &pki), "TLS 1.1 accepted");
    // The server saw the attempt and refused it (not just the client declining to try).
    assert_eq!(metric(&http, FAILURES), before + 1.0);
}

#[test]
fn silent_clients_are_dropped_after_the_handshake_timeout() {
    let pki = Pki::new();
    let s = start(
        &format!("[mqtt]\nallow_anonymous = true\n{}", pki.tls_section("")),
        &["--mqtts", "127.0.0.1:0"],
    );
    let mut silent = TcpStream::connect(s.addr("mqtts")).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    // The server closes the connection (EOF or reset) without a handshake.
    let closed = matches!(silent.read(&mut buf), Ok(0) | Err(_));
    let waited = started.elapsed();
    assert!(closed);
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
    // The counter is bumped as the server gives up, which may be just after the socket closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(s.addr("http"), FAILURES) < 1.0 {
        assert!(Instant::now() < deadline, "handshake failure not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}
