//! The connector with the modem simulator behind it (a duplex stream) and a stand-in for the
//! Modbus connector: a command message becomes its RPC and the result goes back by SMS; an
//! unknown number gets nothing.

use super::*;
use crate::config::EdgeConfig;
use modem::sim::{self, SimCommand, SimConfig, SimEvent};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

const CONFIG: &str = r#"
[uplink]
url = "mqtt://127.0.0.1:1883"
token = "t"
[[modbus]]
name = "pump-station-1"
address = "127.0.0.1:5020"
[modem]
port = "/dev/null"
timeout = "500ms"
allowed_numbers = ["+4917012345678"]
command_pin = "1234"
name = "gsm-1"
[[modem.commands]]
text = "PUMP ON"
device = "pump-station-1"
method = "setPump"
params = { on = true }
"#;

type Sim = (
    mpsc::UnboundedSender<SimCommand>,
    mpsc::UnboundedReceiver<SimEvent>,
);

#[tokio::test]
async fn a_command_sms_becomes_an_rpc_and_its_result_an_sms() {
    let config = EdgeConfig::parse(CONFIG).unwrap().modem.unwrap();
    let sims: Arc<Mutex<Vec<Sim>>> = Arc::default();
    let s2 = sims.clone();
    let opener: service::Opener = Arc::new(move || {
        let sims = s2.clone();
        Box::pin(async move {
            let (a, b) = tokio::io::duplex(4096);
            let (control, rx) = mpsc::unbounded_channel();
            let (tx, events) = mpsc::unbounded_channel();
            tokio::spawn(sim::run(b, SimConfig::default(), rx, tx));
            sims.lock().unwrap().push((control, events));
            Ok(Box::new(a) as Box<dyn service::Port>)
        })
    });
    let c = SmsConnector::with_opener(config, opener).unwrap();
    assert_eq!(c.devices()[0].name, "gsm-1");
    let health = c.health();
    let sender = c.sms_sender().expect("a modem connector sends SMS");
    let (pump_tx, mut pump_rx) = mpsc::channel(4);
    let (readings, _r) = mpsc::channel(4);
    let (_cmd_tx, commands) = mpsc::channel(4);
    let (stop_tx, shutdown) = watch::channel(false);
    let peers: Peers = Arc::new(HashMap::from([("pump-station-1".to_string(), pump_tx)]));
    let task = tokio::spawn(Box::new(c).run(ConnectorIo {
        readings,
        commands,
        shutdown,
        peers,
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !health.connected.load(Ordering::Relaxed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "modem never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (control, mut events) = sims.lock().unwrap().remove(0);
    // an unknown number: refused, no RPC, no answer
    control
        .send(SimCommand::Deliver {
            from: "+4915100000000".into(),
            text: "PUMP ON 1234".into(),
        })
        .unwrap();
    // the whitelisted number with the PIN
    control
        .send(SimCommand::Deliver {
            from: "+4917012345678".into(),
            text: "pump on 1234".into(),
        })
        .unwrap();
    let cmd = tokio::time::timeout(Duration::from_secs(10), pump_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cmd.method.as_str(), &cmd.params),
        ("setPump", &json!({"on": true}))
    );
    cmd.reply.send(Ok(json!({"ok": true}))).unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(SimEvent::Message { to, text, .. }) = events.recv().await {
                return (to, text);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        reply,
        ("+4917012345678".to_string(), "PUMP ON: OK".to_string())
    );
    assert!(
        pump_rx.try_recv().is_err(),
        "the unknown number made an RPC"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let g = health.gauges.lock().unwrap().clone();
        if g.get("sms_refused") == Some(&1) && g.get("sms_sent") == Some(&1) {
            assert_eq!(g.get("signal"), Some(&21));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{g:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the sender local rules will use
    sender.send("+4930123456", "rule fired").await.unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(SimEvent::Message { to, text, .. }) = events.recv().await {
                return (to, text);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(sent, ("+4930123456".to_string(), "rule fired".to_string()));
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn modem_settings_are_checked() {
    let err = |t: &str| EdgeConfig::parse(t).unwrap_err().to_string();
    let e = err(&CONFIG.replace("command_pin = \"1234\"\n", ""));
    assert!(e.contains("command_pin"), "{e}");
    let e = err(&CONFIG.replace("device = \"pump-station-1\"", "device = \"nope\""));
    assert!(e.contains("nope"), "{e}");
    let e = err(&CONFIG.replace("[\"+4917012345678\"]", "[\"call me\"]"));
    assert!(e.contains("allowed_numbers"), "{e}");
    let e = err(&CONFIG.replace("timeout = \"500ms\"", "mode = \"fax\""));
    assert!(e.contains("fax"), "{e}");
    let e = err(&CONFIG.replace("name = \"gsm-1\"", "name = \"pump-station-1\""));
    assert!(e.contains("name"), "{e}");
}
