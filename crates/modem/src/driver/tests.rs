//! The driver against the simulator (over `tokio::io::duplex`) and against scripted bytes.

use super::*;
use crate::sim::{self, SimCommand, SimConfig, SimEvent};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

struct Peer {
    control: mpsc::UnboundedSender<SimCommand>,
    events: mpsc::UnboundedReceiver<SimEvent>,
}

fn simulated(config: SimConfig, settings: Settings) -> (Modem<DuplexStream>, Peer) {
    let (a, b) = tokio::io::duplex(4096);
    let (control, control_rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    tokio::spawn(sim::run(b, config, control_rx, events_tx));
    (Modem::new(a, settings), Peer { control, events })
}

fn fast() -> Settings {
    Settings {
        command_timeout: Duration::from_millis(500),
        send_timeout: Duration::from_secs(2),
        registration_timeout: Duration::from_secs(3),
        ..Settings::default()
    }
}

impl Peer {
    async fn next(&mut self) -> SimEvent {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("no simulator event within 5 s")
            .expect("simulator stopped")
    }

    /// Skips events until a whole message.
    async fn message(&mut self) -> (String, String, u8) {
        loop {
            if let SimEvent::Message { to, text, parts } = self.next().await {
                return (to, text, parts);
            }
        }
    }
}

#[tokio::test]
async fn init_enters_the_pin_and_waits_for_registration() {
    let config = SimConfig {
        pin: Some("1234".into()),
        searching: 3,
        ..SimConfig::default()
    };
    let settings = Settings {
        pin: Some("1234".into()),
        ..fast()
    };
    let (mut m, _peer) = simulated(config, settings);
    let status = m.init().await.unwrap();
    assert_eq!(status.registration, 1);
    assert_eq!(status.signal, Some(21));
}

#[tokio::test]
async fn a_missing_or_wrong_pin_is_a_sim_error() {
    let config = SimConfig {
        pin: Some("1234".into()),
        ..SimConfig::default()
    };
    let (mut m, _p) = simulated(config.clone(), fast());
    assert!(matches!(m.init().await, Err(ModemError::Sim(e)) if e.contains("none is configured")));
    let wrong = Settings {
        pin: Some("9999".into()),
        ..fast()
    };
    let (mut m, _p) = simulated(config, wrong);
    let e = m.init().await.unwrap_err();
    assert!(
        matches!(&e, ModemError::PinRefused(s) if s.contains("incorrect password")),
        "{e}"
    );
}

#[tokio::test]
async fn denied_registration_is_an_error() {
    let (mut m, p) = simulated(SimConfig::default(), fast());
    p.control.send(SimCommand::Registration(3)).unwrap();
    assert!(matches!(m.init().await, Err(ModemError::Registration(_))));
}

#[tokio::test]
async fn sends_gsm7_ucs2_and_concatenated_messages_in_pdu_mode() {
    let (mut m, mut p) = simulated(SimConfig::default(), fast());
    m.init().await.unwrap();
    let refs = m.send("+4917012345678", "PUMP ON: ok €5").await.unwrap();
    assert_eq!(refs.len(), 1);
    match p.next().await {
        SimEvent::Submitted {
            to,
            text,
            coding,
            status_report,
            ..
        } => {
            assert_eq!(
                (to.as_str(), text.as_str()),
                ("+4917012345678", "PUMP ON: ok €5")
            );
            assert_eq!(coding, Coding::Gsm7);
            assert!(status_report);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.message().await.1, "PUMP ON: ok €5");
    // the delivery report the simulator sends for it
    m.wait_event().await.unwrap();
    match m.take_event() {
        Some(Event::Report(r)) => assert_eq!((r.reference, r.delivered()), (refs[0], Some(true))),
        other => panic!("{other:?}"),
    }
    let long = "Füllstand niedrig. ".repeat(20);
    let refs = m.send("01701234567", &long).await.unwrap();
    assert_eq!(refs.len(), 3);
    assert_eq!(p.message().await, ("01701234567".into(), long, 3));
    let cyrillic = "Насос включён ✓".repeat(6);
    assert_eq!(m.send("+4917012345678", &cyrillic).await.unwrap().len(), 2);
    assert_eq!(p.message().await.1, cyrillic);
}

#[tokio::test]
async fn sends_in_text_mode() {
    let settings = Settings {
        mode: Mode::Text,
        ..fast()
    };
    let (mut m, mut p) = simulated(SimConfig::default(), settings);
    m.init().await.unwrap();
    m.send("+4917012345678", "hello [text]").await.unwrap();
    match p.next().await {
        SimEvent::Submitted {
            to, text, coding, ..
        } => {
            assert_eq!(
                (to.as_str(), text.as_str(), coding),
                ("+4917012345678", "hello [text]", Coding::Gsm7)
            )
        }
        other => panic!("{other:?}"),
    }
    m.send("+4917012345678", "привет").await.unwrap();
    assert_eq!(p.message().await.1, "hello [text]");
    match p.next().await {
        SimEvent::Submitted { text, coding, .. } => {
            assert_eq!((text.as_str(), coding), ("привет", Coding::Ucs2))
        }
        other => panic!("{other:?}"),
    }
    // received in text mode
    p.control
        .send(SimCommand::Deliver {
            from: "+4915112345678".into(),
            text: "STATUS 1234".into(),
        })
        .unwrap();
    let index = loop {
        m.wait_event().await.unwrap();
        if let Some(Event::Stored(i)) = m.take_event() {
            break i;
        }
    };
    match m.read(index).await.unwrap() {
        Some(Incoming::Deliver(d)) => {
            assert_eq!(
                (d.from.as_str(), d.data.text.as_str()),
                ("+4915112345678", "STATUS 1234")
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn receives_reads_lists_and_deletes() {
    let (mut m, mut p) = simulated(SimConfig::default(), fast());
    m.init().await.unwrap();
    p.control
        .send(SimCommand::Deliver {
            from: "+4915112345678".into(),
            text: "x".repeat(200),
        })
        .unwrap();
    let stored = loop {
        if let SimEvent::Stored(s) = p.next().await {
            break s;
        }
    };
    assert_eq!(stored.len(), 2);
    let mut indexes = Vec::new();
    while indexes.len() < 2 {
        m.wait_event().await.unwrap();
        while let Some(e) = m.take_event() {
            if let Event::Stored(i) = e {
                indexes.push(i);
            }
        }
    }
    assert_eq!(indexes, stored);
    let Some(Incoming::Deliver(first)) = m.read(indexes[0]).await.unwrap() else {
        panic!("not a message")
    };
    assert_eq!(first.data.concat.map(|c| (c.seq, c.total)), Some((1, 2)));
    assert_eq!(m.list().await.unwrap().len(), 2);
    m.delete(indexes[0]).await.unwrap();
    assert_eq!(m.read(indexes[0]).await.unwrap(), None);
    assert_eq!(m.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_silent_modem_is_a_link_error() {
    let (mut m, mut p) = simulated(SimConfig::default(), fast());
    m.init().await.unwrap();
    p.control.send(SimCommand::Silence(true)).unwrap();
    while p.next().await != SimEvent::Silenced(true) {}
    let e = m.signal().await.unwrap_err();
    assert!(e.is_link(), "{e}");
    let e = m.send("+4917012345678", "hi").await.unwrap_err();
    assert!(e.is_link(), "{e}");
}

#[tokio::test]
async fn unsolicited_codes_inside_an_answer_are_kept() {
    let (a, mut b) = tokio::io::duplex(1024);
    let mut m = Modem::new(a, fast());
    let peer = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let _ = b.read(&mut buf).await.unwrap();
        b.write_all(b"AT+CSQ\r\r\n+CMTI: \"SM\",4\r\n\r\n+CSQ: 17,99\r\n\r\nRING\r\n\r\nOK\r\n")
            .await
            .unwrap();
        b
    });
    assert_eq!(m.signal().await.unwrap(), Some(17));
    assert_eq!(m.take_event(), Some(Event::Stored(4)));
    assert_eq!(m.take_event(), None);
    let _b = peer.await.unwrap();
}

#[tokio::test]
async fn bad_numbers_and_errors_are_clear() {
    let (mut m, _p) = simulated(SimConfig::default(), fast());
    m.init().await.unwrap();
    assert!(matches!(
        m.send("+49 170 x", "hi").await,
        Err(ModemError::Pdu(_))
    ));
    let e = m.command("AT+NONSENSE").await.unwrap_err();
    assert!(
        matches!(&e, ModemError::Command { error, .. } if error == "ERROR"),
        "{e}"
    );
    assert!(!e.is_link());
}

#[test]
fn text_mode_time_stamps() {
    let t = parse_scts("26/11/26,18:05:09-08").unwrap();
    assert_eq!((t.year, t.day, t.second, t.tz_quarters), (26, 26, 9, -8));
    assert_eq!(format_scts(&t), "26/11/26,18:05:09-08");
    assert_eq!(parse_scts("garbage"), None);
}

#[tokio::test]
async fn stored_status_reports_are_read_in_both_modes() {
    for mode in [Mode::Pdu, Mode::Text] {
        let config = SimConfig {
            stored_reports: true,
            ..SimConfig::default()
        };
        let (mut m, _p) = simulated(config, Settings { mode, ..fast() });
        m.init().await.unwrap();
        let refs = m.send("+4917012345678", "report me").await.unwrap();
        let index = loop {
            m.wait_event().await.unwrap();
            if let Some(Event::ReportStored(i)) = m.take_event() {
                break i;
            }
        };
        match m.read(index).await.unwrap() {
            Some(Incoming::StatusReport(r)) => {
                assert_eq!(
                    (r.reference, r.recipient.as_str()),
                    (refs[0], "+4917012345678")
                );
                assert_eq!(r.delivered(), Some(true), "{mode:?}");
            }
            other => panic!("{mode:?}: {other:?}"),
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever a broken modem sends back, the driver answers with a result or an error
    /// (a timeout at worst), never a panic or a hang.
    #[test]
    fn arbitrary_modem_output_never_panics(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        prefix in proptest::sample::select(vec![
            "", "\r\nOK\r\n", "\r\n+CMGR: 0,,30\r\n", "\r\n+CMGL: 1,0,,30\r\n",
            "\r\n+CDS: 20\r\n", "\r\n> ", "\r\n+CMT: ,9\r\n",
        ]),
    ) {
        // paused time: the command timeouts pass at once when nothing else can happen
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            for step in 0..4 {
                let (a, mut b) = tokio::io::duplex(4096);
                let mut input = prefix.as_bytes().to_vec();
                input.extend(&bytes);
                input.extend(b"\r\nOK\r\n");
                b.write_all(&input).await.unwrap();
                // the modem's side reads whatever the driver writes, until the driver is gone
                tokio::spawn(async move {
                    let mut sink = [0u8; 256];
                    while b.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                });
                let mut m = Modem::new(a, fast());
                let r = match step {
                    0 => m.list().await.map(drop),
                    1 => m.read(1).await.map(drop),
                    2 => m.send("+4917012345678", "hi").await.map(drop),
                    // cannot end on its own (it waits for the modem): bounded here
                    _ => tokio::time::timeout(Duration::from_secs(1), m.wait_event())
                        .await
                        .unwrap_or(Ok(())),
                };
                let _ = r;
                while m.take_event().is_some() {}
            }
        });
    }
}
