//! The binary as a user runs it: start-up lines, `/healthz`, `/metrics`, Mosquitto's own
//! command-line clients as peers, and graceful shutdown on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{have, http_get};

/// The binary with no config file: only flags.
fn start(extra: &[&str]) -> support::Server {
    support::start("", extra)
}

#[test]
fn healthz_and_metrics() {
    let s = start(&["--allow-anonymous"]);
    let (status, body) = http_get(s.addr("http"), "/healthz");
    assert_eq!(status, 200);
    assert!(body.contains("ok"));
    // One connection so that the broker's counters exist.
    let mut c = TcpStream::connect(s.addr("mqtt")).unwrap();
    c.write_all(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 0])
        .unwrap();
    let mut ack = [0u8; 4];
    c.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    let (status, body) = http_get(s.addr("http"), "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("mqtt_connections_total"), "{body}");
}

#[test]
fn mosquitto_clients_round_trip() {
    if !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let s = start(&["--allow-anonymous"]);
    let (host, port) = s.addr("mqtt").rsplit_once(':').unwrap();
    for version in ["mqttv311", "mqttv5"] {
        let sub = Command::new("mosquitto_sub")
            .args([
                "-h", host, "-p", port, "-V", version, "-t", "smoke/#", "-C", "1", "-W", "10",
                "-v", "-q", "1",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Publish until the subscriber (which needs a moment to subscribe) has its message.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sub = sub;
        let status = loop {
            let ok = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    host,
                    "-p",
                    port,
                    "-V",
                    version,
                    "-t",
                    "smoke/test",
                    "-m",
                    "hello",
                    "-q",
                    "1",
                ])
                .status()
                .unwrap();
            assert!(ok.success());
            if let Some(st) = sub.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "mosquitto_sub got nothing");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success());
        let mut out = String::new();
        sub.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out.trim(), "smoke/test hello");
    }
}

#[test]
fn anonymous_off_by_default_and_sigterm_is_graceful() {
    let mut s = start(&[]);
    let mut c = TcpStream::connect(s.addr("mqtt")).unwrap();
    c.write_all(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 0])
        .unwrap();
    let mut ack = [0u8; 4];
    c.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 5], "3.1.1 CONNACK not authorised");
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st:?}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
