//! The driver and the simulator on the two ends of a socat pseudo-terminal pair, opened as
//! serial ports (tokio-serial), as the edge opens a real modem. Skipped, with a message, when
//! socat is not installed (CI has it).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use modem::service::{self, ModemEvent};
use modem::sim::{self, SimCommand, SimConfig, SimEvent};
use modem::Settings;
use tokio::sync::mpsc;

struct Socat(Child);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn socat(dir: &Path) -> Option<Socat> {
    let (a, b) = (dir.join("ptyA"), dir.join("ptyB"));
    let child = Command::new("socat")
        .args([
            format!("pty,raw,echo=0,link={}", a.display()),
            format!("pty,raw,echo=0,link={}", b.display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let s = Socat(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(a.exists() && b.exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "socat made no pty pair"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(s)
}

#[tokio::test]
async fn send_and_receive_over_a_pty_pair() {
    let dir = std::env::temp_dir().join(format!("modem-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(_socat) = socat(&dir) else {
        eprintln!("skipped: socat is not installed");
        return;
    };
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(
        dir.join("ptyA").to_string_lossy(),
        115_200,
    ))
    .unwrap();
    let (control, control_rx) = mpsc::unbounded_channel();
    let (events_tx, mut sim_events) = mpsc::unbounded_channel();
    let config = SimConfig {
        pin: Some("4321".into()),
        ..SimConfig::default()
    };
    tokio::spawn(sim::run(port, config, control_rx, events_tx));
    let settings = Settings {
        pin: Some("4321".into()),
        ..Settings::default()
    };
    let (h, mut events) = service::spawn(
        "pty".into(),
        service::serial(dir.join("ptyB"), 115_200),
        settings,
        Duration::from_secs(60),
    );
    let text = "Über 160 Zeichen? ".repeat(10);
    let sent = h.send("+4917012345678", &text).await.unwrap();
    assert_eq!(sent.references.len(), 2);
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(SimEvent::Message { text, parts, .. }) = sim_events.recv().await {
                return (text, parts);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, (text, 2));
    control
        .send(SimCommand::Deliver {
            from: "+4915112345678".into(),
            text: "PUMP ON 1234".into(),
        })
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(ModemEvent::Received(r)) = events.recv().await {
                return r;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        (received.from.as_str(), received.text.as_str()),
        ("+4915112345678", "PUMP ON 1234")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
