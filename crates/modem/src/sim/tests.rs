//! The simulator spoken to with raw AT commands: what a modem answers, errors included.

use super::*;
use std::time::Duration;
use tokio::io::DuplexStream;

async fn ask(io: &mut DuplexStream, command: &str, until: &str) -> String {
    io.write_all(command.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains(until) {
            let n = io.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{command:?}: no {until:?} in {:?}",
            String::from_utf8_lossy(&got)
        )
    });
    String::from_utf8_lossy(&got).into_owned()
}

fn start(config: SimConfig) -> (DuplexStream, mpsc::UnboundedSender<SimCommand>) {
    let (a, b) = tokio::io::duplex(4096);
    let (control, rx) = mpsc::unbounded_channel();
    let (events, _) = mpsc::unbounded_channel();
    tokio::spawn(run(b, config, rx, events));
    (a, control)
}

#[tokio::test]
async fn echo_errors_and_pin_state() {
    let (mut io, _c) = start(SimConfig {
        pin: Some("0000".into()),
        ..SimConfig::default()
    });
    assert_eq!(ask(&mut io, "AT\r", "OK").await, "AT\r\r\nOK\r\n");
    ask(&mut io, "ATE0\r", "OK").await;
    assert_eq!(ask(&mut io, "AT+CMEE=1\r", "OK").await, "\r\nOK\r\n");
    assert!(ask(&mut io, "AT+CMGF=0\r", "ERROR")
        .await
        .contains("+CMS ERROR: 311"));
    assert!(ask(&mut io, "AT+CREG?\r", "OK")
        .await
        .contains("+CREG: 0,0"));
    assert!(ask(&mut io, "AT+CPIN=\"1111\"\r", "ERROR")
        .await
        .contains("+CME ERROR: 16"));
    ask(&mut io, "AT+CPIN=\"0000\"\r", "OK").await;
    assert!(ask(&mut io, "AT+CPIN?\r", "OK").await.contains("READY"));
    assert!(ask(&mut io, "AT+FOO\r", "ERROR").await.contains("ERROR"));
    ask(&mut io, "AT+CMEE=2\r", "OK").await;
    assert!(ask(&mut io, "AT+CMGR=x\r", "ERROR")
        .await
        .contains("invalid memory index"));
}

#[tokio::test]
async fn a_bad_pdu_is_refused_with_304() {
    let (mut io, _c) = start(SimConfig {
        searching: 0,
        ..SimConfig::default()
    });
    ask(&mut io, "ATE0\r", "OK").await;
    ask(&mut io, "AT+CMEE=1\r", "OK").await;
    assert!(ask(&mut io, "AT+CMGS=10\r", "> ").await.ends_with("> "));
    assert!(ask(&mut io, "00FFFF\x1a", "ERROR")
        .await
        .contains("+CMS ERROR: 304"));
    assert!(ask(&mut io, "AT+CMGS=999\r", "ERROR").await.contains("304"));
    // ESC leaves the prompt without sending
    ask(&mut io, "AT+CMGS=10\r", "> ").await;
    assert!(ask(&mut io, "0011\x1b", "OK").await.contains("OK"));
}

#[tokio::test]
async fn incoming_messages_are_announced_and_listed() {
    let (mut io, c) = start(SimConfig::default());
    ask(&mut io, "ATE0\r", "OK").await;
    ask(&mut io, "AT+CNMI=2,1,0,1,0\r", "OK").await;
    c.send(SimCommand::Deliver {
        from: "+4915112345678".into(),
        text: "hi".into(),
    })
    .unwrap();
    let mut buf = [0u8; 256];
    let n = io.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"\r\n+CMTI: \"SM\",1\r\n");
    let listed = ask(&mut io, "AT+CMGL=4\r", "OK").await;
    assert!(listed.starts_with("\r\n+CMGL: 1,0,,"), "{listed}");
    let read = ask(&mut io, "AT+CMGL=1\r", "OK").await;
    assert!(read.contains("+CMGL: 1,1,,"), "{read}");
    ask(&mut io, "AT+CMGD=1\r", "OK").await;
    assert_eq!(ask(&mut io, "AT+CMGL=4\r", "OK").await, "\r\nOK\r\n");
}
