//! Devices end to end through the binary: a device authenticated by its client certificate
//! (X.509 credentials) on the `mqtts` listener, with Mosquitto's client as the device.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{have, http_request, login, mosquitto_pub, start, Pki};

#[test]
fn a_device_authenticates_with_its_client_certificate() {
    if !have("mosquitto_pub") {
        return;
    }
    let pki = Pki::new();
    let config = pki.tls_section(&format!("client_ca = \"{}\"\n", pki.path("ca.pem")));
    let s = start(&config, &["--mqtts", "127.0.0.1:0"]);
    let token = login(&s);
    let http = s.addr("http");
    let (status, body) = http_request(
        http,
        "POST",
        "/api/v1/devices",
        Some(&token),
        Some(r#"{"name":"meter-7"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let device: Value = serde_json::from_str(&body).unwrap();
    let id = device["id"].as_str().unwrap();
    let cred = format!(
        r#"{{"type":"x509","fingerprint":"{}"}}"#,
        pki.fingerprint("nameless")
    );
    let (status, body) = http_request(
        http,
        "POST",
        &format!("/api/v1/devices/{id}/credentials"),
        Some(&token),
        Some(&cred),
    );
    assert_eq!(status, 200, "{body}");

    let port = s.port("mqtts");
    let tls = |cert: &str| {
        vec![
            "-h".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.clone(),
            "--cafile".into(),
            pki.path("ca.pem"),
            "--cert".into(),
            pki.path(&format!("{cert}.pem")),
            "--key".into(),
            pki.path(&format!("{cert}.key")),
            "-q".into(),
            "1".into(),
            "-t".into(),
            "v1/devices/me/telemetry".into(),
        ]
    };
    let mut args = tls("nameless");
    args.extend(["-m".into(), r#"{"kwh":12.5}"#.into()]);
    let out = mosquitto_pub(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_request(
            http,
            "GET",
            &format!("/api/v1/devices/{id}/telemetry/latest?keys=kwh"),
            Some(&token),
            None,
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["kwh"]["value"] == 12.5 {
            break;
        }
        assert!(Instant::now() < deadline, "telemetry never arrived: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A certificate the CA signed but no device owns does not make a device (and anonymous
    // access is off).
    let mut args = tls("device-1");
    args.extend(["-m".into(), r#"{"kwh":1}"#.into()]);
    let out = mosquitto_pub(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success(), "an unknown certificate was let in");
}
