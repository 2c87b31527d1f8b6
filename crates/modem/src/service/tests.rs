//! The service with simulators behind its opener: sending, receiving concatenated messages,
//! delivery reports, and recovery from a modem that stops answering.

use super::*;
use crate::sim::{self, SimCommand, SimConfig, SimEvent};
use std::sync::atomic::AtomicUsize;

struct Sims {
    controls: Mutex<Vec<mpsc::UnboundedSender<SimCommand>>>,
    events: Mutex<Vec<mpsc::UnboundedReceiver<SimEvent>>>,
    opened: AtomicUsize,
}

/// An opener starting a fresh simulator on each open.
fn opener(sims: Arc<Sims>) -> Opener {
    opener_with(sims, SimConfig::default())
}

fn opener_with(sims: Arc<Sims>, config: SimConfig) -> Opener {
    Arc::new(move || {
        let config = config.clone();
        let sims = sims.clone();
        Box::pin(async move {
            let (a, b) = tokio::io::duplex(4096);
            let (control, rx) = mpsc::unbounded_channel();
            let (tx, events) = mpsc::unbounded_channel();
            tokio::spawn(sim::run(b, config, rx, tx));
            sims.controls.lock().unwrap().push(control);
            sims.events.lock().unwrap().push(events);
            sims.opened.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(a) as Box<dyn Port>)
        })
    })
}

fn settings() -> Settings {
    Settings {
        command_timeout: Duration::from_millis(300),
        send_timeout: Duration::from_secs(2),
        registration_timeout: Duration::from_secs(2),
        ..Settings::default()
    }
}

fn start() -> (Arc<Sims>, ModemHandle, mpsc::Receiver<ModemEvent>) {
    let sims = Arc::new(Sims {
        controls: Mutex::new(Vec::new()),
        events: Mutex::new(Vec::new()),
        opened: AtomicUsize::new(0),
    });
    let (h, events) = spawn(
        "test".into(),
        opener(sims.clone()),
        settings(),
        Duration::from_secs(60),
    );
    (sims, h, events)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next(events: &mut mpsc::Receiver<ModemEvent>) -> ModemEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("no modem event within 10 s")
        .expect("service stopped")
}

#[tokio::test]
async fn sends_receives_and_reports() {
    let (sims, h, mut events) = start();
    let sent = h.send("+4917012345678", &"a".repeat(300)).await.unwrap();
    assert_eq!(sent.references.len(), 2);
    for _ in 0..2 {
        match next(&mut events).await {
            ModemEvent::Report(r) => assert!(sent.references.contains(&r.reference)),
            other => panic!("{other:?}"),
        }
    }
    let control = sims.controls.lock().unwrap()[0].clone();
    let long = "Ünïcödé ✓ ".repeat(20);
    control
        .send(SimCommand::Deliver {
            from: "+4915112345678".into(),
            text: long.clone(),
        })
        .unwrap();
    match next(&mut events).await {
        ModemEvent::Received(r) => {
            assert_eq!(
                (r.from.as_str(), r.text.as_str(), r.parts),
                ("+4915112345678", long.as_str(), 3)
            )
        }
        other => panic!("{other:?}"),
    }
    // read messages are deleted from the SIM
    let mut sim_events = sims.events.lock().unwrap().remove(0);
    let mut deleted = 0;
    until("three deletions", || {
        while let Ok(e) = sim_events.try_recv() {
            deleted += usize::from(matches!(e, SimEvent::Deleted(_)));
        }
        deleted == 3
    })
    .await;
    assert_eq!(h.stats.sent.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.received.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.delivered.load(Ordering::Relaxed), 2);
    assert_eq!(h.stats.signal.load(Ordering::Relaxed), 21);
}

#[tokio::test]
async fn a_modem_that_stops_answering_is_reopened() {
    let (sims, h, _events) = start();
    until("the modem up", || h.stats.connected.load(Ordering::Relaxed)).await;
    let first = sims.controls.lock().unwrap()[0].clone();
    first.send(SimCommand::Silence(true)).unwrap();
    let mut first_events = sims.events.lock().unwrap().remove(0);
    while first_events.recv().await != Some(SimEvent::Silenced(true)) {}
    // this send times out: the service reopens (a fresh simulator answers)
    assert!(h
        .send("+4917012345678", "lost")
        .await
        .unwrap_err()
        .is_link());
    until("a second session", || {
        h.stats.connects.load(Ordering::Relaxed) >= 2 && h.stats.connected.load(Ordering::Relaxed)
    })
    .await;
    h.send("+4917012345678", "after").await.unwrap();
    assert!(sims.opened.load(Ordering::SeqCst) >= 2);
    assert_eq!(h.stats.failed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_message_waits_for_a_modem_that_comes_back() {
    let sims = Arc::new(Sims {
        controls: Mutex::new(Vec::new()),
        events: Mutex::new(Vec::new()),
        opened: AtomicUsize::new(0),
    });
    let tries = Arc::new(AtomicUsize::new(0));
    let inner = opener(sims.clone());
    let (t2, inner2) = (tries.clone(), inner.clone());
    // the first two opens fail (the port is not there yet)
    let flaky: Opener = Arc::new(move || {
        if t2.fetch_add(1, Ordering::SeqCst) < 2 {
            Box::pin(async { Err(std::io::Error::other("not yet")) })
        } else {
            inner2()
        }
    });
    let (h, _events) = spawn("x".into(), flaky, settings(), Duration::from_secs(60));
    until("a failure", || h.stats.last_error().is_some()).await;
    h.send("+4917012345678", "held").await.unwrap();
    assert!(tries.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_port_that_cannot_open_fails_sends_at_once() {
    let failing: Opener =
        Arc::new(|| Box::pin(async { Err(std::io::Error::other("no such port")) }));
    let hold = Settings {
        hold: Duration::ZERO,
        ..settings()
    };
    let (h, _events) = spawn("x".into(), failing, hold, Duration::from_secs(60));
    until("an error", || h.stats.last_error().is_some()).await;
    let e = h.send("+4917012345678", "hi").await.unwrap_err();
    assert!(
        matches!(&e, ModemError::NotReady(m) if m.contains("no such port")),
        "{e}"
    );
}

#[tokio::test]
async fn a_refused_pin_is_never_tried_again() {
    let sims = Arc::new(Sims {
        controls: Mutex::new(Vec::new()),
        events: Mutex::new(Vec::new()),
        opened: AtomicUsize::new(0),
    });
    let config = SimConfig {
        pin: Some("1234".into()),
        ..SimConfig::default()
    };
    let wrong = Settings {
        pin: Some("9999".into()),
        ..settings()
    };
    let (h, _events) = spawn(
        "x".into(),
        opener_with(sims.clone(), config),
        wrong,
        Duration::from_secs(60),
    );
    until("three opens", || sims.opened.load(Ordering::SeqCst) >= 3).await;
    until("the third refusal", || {
        h.stats.errors.load(Ordering::Relaxed) >= 3
    })
    .await;
    let mut tries = 0;
    for mut e in sims.events.lock().unwrap().drain(..) {
        while let Ok(ev) = e.try_recv() {
            tries += usize::from(matches!(ev, SimEvent::PinEntered { .. }));
        }
    }
    assert_eq!(tries, 1, "the PIN was entered {tries} times");
    let last = h.stats.last_error().unwrap();
    assert!(
        last.contains("PIN refused") && last.contains("not tried again"),
        "{last}"
    );
}
