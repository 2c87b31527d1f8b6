//! The broker against `rumqttc` (3.1.1), a client nobody here wrote, plus the in-process link.

use std::time::Duration;

use broker::{Broker, BrokerConfig, Identity};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::net::TcpListener;
use tokio::sync::watch;

struct TestBroker {
    broker: Broker,
    port: u16,
    _stop: watch::Sender<bool>,
}

async fn start(config: BrokerConfig) -> TestBroker {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = Broker::with_static_hooks(config);
    let (stop, rx) = watch::channel(false);
    let b = broker.clone();
    tokio::spawn(async move { b.serve_tcp(listener, rx).await });
    TestBroker {
        broker,
        port,
        _stop: stop,
    }
}

fn anonymous() -> BrokerConfig {
    BrokerConfig {
        allow_anonymous: true,
        ..BrokerConfig::default()
    }
}

fn client(port: u16, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(clean);
    opts.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(opts, 100)
}

/// Polls the event loop until `want` matches an incoming packet, with a deadline.
async fn wait_for<T>(ev: &mut EventLoop, mut want: impl FnMut(&Packet) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, ev.poll())
            .await
            .expect("timed out")
            .expect("connection error");
        if let Event::Incoming(p) = event {
            if let Some(v) = want(&p) {
                return v;
            }
        }
    }
}

async fn connected(ev: &mut EventLoop) -> bool {
    wait_for(ev, |p| match p {
        Packet::ConnAck(a) => Some(a.session_present),
        _ => None,
    })
    .await
}

async fn suback(ev: &mut EventLoop) -> Vec<rumqttc::SubscribeReasonCode> {
    wait_for(ev, |p| match p {
        Packet::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await
}

async fn message(ev: &mut EventLoop) -> rumqttc::Publish {
    wait_for(ev, |p| match p {
        Packet::Publish(m) => Some(m.clone()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn publish_and_subscribe_every_qos() {
    let b = start(anonymous()).await;
    let (sub, mut sub_ev) = client(b.port, "sub", true);
    connected(&mut sub_ev).await;
    sub.subscribe("sensors/+/temp", QoS::ExactlyOnce)
        .await
        .unwrap();
    assert_eq!(
        suback(&mut sub_ev).await,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );

    let (publ, mut pub_ev) = client(b.port, "pub", true);
    tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.publish(format!("sensors/{i}/temp"), qos, false, format!("v{i}"))
            .await
            .unwrap();
        let m = message(&mut sub_ev).await;
        assert_eq!(m.topic, format!("sensors/{i}/temp"));
        assert_eq!(&m.payload[..], format!("v{i}").as_bytes());
        assert_eq!(m.qos, qos);
    }
}

#[tokio::test]
async fn retained_message_reaches_late_subscriber_and_is_cleared() {
    let b = start(anonymous()).await;
    let (publ, mut pub_ev) = client(b.port, "pub", true);
    publ.publish("state/pump", QoS::AtLeastOnce, true, "on")
        .await
        .unwrap();
    wait_for(&mut pub_ev, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });

    let (sub, mut ev) = client(b.port, "late", true);
    connected(&mut ev).await;
    sub.subscribe("state/#", QoS::AtLeastOnce).await.unwrap();
    let m = message(&mut ev).await;
    assert!(m.retain);
    assert_eq!(&m.payload[..], b"on");

    publ.publish("state/pump", QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    let m = message(&mut ev).await; // the clearing message is forwarded live
    assert!(m.payload.is_empty());
    let (sub2, mut ev2) = client(b.port, "later", true);
    connected(&mut ev2).await;
    sub2.subscribe("state/#", QoS::AtLeastOnce).await.unwrap();
    suback(&mut ev2).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), message(&mut ev2))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn persistent_session_gets_messages_queued_while_offline() {
    let b = start(anonymous()).await;
    {
        let (sub, mut ev) = client(b.port, "keeper", false);
        assert!(!connected(&mut ev).await);
        sub.subscribe("q/#", QoS::AtLeastOnce).await.unwrap();
        suback(&mut ev).await;
        sub.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while ev.poll().await.is_ok() {}
        })
        .await;
    }
    let link = b.broker.link(
        "publisher",
        Identity {
            superuser: true,
            ..Identity::new(None)
        },
    );
    for i in 0..3 {
        link.publish("q/x", format!("m{i}"), mqtt_codec::QoS::AtLeastOnce, false)
            .unwrap();
    }
    let (_sub, mut ev) = client(b.port, "keeper", false);
    assert!(connected(&mut ev).await, "session present");
    for i in 0..3 {
        assert_eq!(
            &message(&mut ev).await.payload[..],
            format!("m{i}").as_bytes()
        );
    }
}

#[tokio::test]
async fn will_is_published_when_connection_drops() {
    let b = start(anonymous()).await;
    let (sub, mut sub_ev) = client(b.port, "watcher", true);
    connected(&mut sub_ev).await;
    sub.subscribe("status/#", QoS::AtLeastOnce).await.unwrap();
    suback(&mut sub_ev).await;

    let mut opts = MqttOptions::new("dying", "127.0.0.1", b.port);
    opts.set_last_will(rumqttc::LastWill::new(
        "status/dying",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (c, mut ev) = AsyncClient::new(opts, 10);
    connected(&mut ev).await;
    drop(c);
    drop(ev); // closes the socket without DISCONNECT
    let m = message(&mut sub_ev).await;
    assert_eq!(m.topic, "status/dying");
    assert_eq!(&m.payload[..], b"gone");
}

#[tokio::test]
async fn link_subscribes_and_receives_from_mqtt_clients() {
    let b = start(anonymous()).await;
    let link = b.broker.link(
        "rules",
        Identity {
            superuser: true,
            ..Identity::new(None)
        },
    );
    link.subscribe("telemetry/#", mqtt_codec::QoS::AtLeastOnce)
        .unwrap();
    let (c, mut ev) = client(b.port, "device", true);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    c.publish("telemetry/a", QoS::AtLeastOnce, false, "42")
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), link.recv())
        .await
        .unwrap();
    assert_eq!(&*d.msg.topic, "telemetry/a");
    assert_eq!(&d.msg.payload[..], b"42");
    assert!(link
        .subscribe("bad/#/x", mqtt_codec::QoS::AtMostOnce)
        .is_err());
}

#[tokio::test]
async fn namespaces_do_not_see_each_other() {
    let b = start(anonymous()).await;
    let a = b.broker.link(
        "a",
        Identity {
            namespace: "tenant-a".into(),
            ..Identity::new(None)
        },
    );
    let other = b.broker.link(
        "b",
        Identity {
            namespace: "tenant-b".into(),
            ..Identity::new(None)
        },
    );
    a.subscribe("#", mqtt_codec::QoS::AtMostOnce).unwrap();
    other.subscribe("#", mqtt_codec::QoS::AtMostOnce).unwrap();
    other
        .publish("x/y", "from b", mqtt_codec::QoS::AtMostOnce, false)
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), other.recv())
        .await
        .unwrap();
    assert_eq!(&d.msg.payload[..], b"from b");
    assert!(
        a.try_recv().is_none(),
        "tenant a must not see tenant b's message"
    );
}

#[tokio::test]
async fn anonymous_refused_by_default() {
    let b = start(BrokerConfig::default()).await;
    let (_c, mut ev) = client(b.port, "anon", true);
    let err = loop {
        match ev.poll().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized)
        ),
        "{err:?}"
    );
}
