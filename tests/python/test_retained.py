"""Retained messages: store, replace, clear, RETAIN flag on delivery, v5
Retain As Published / Retain Handling, retain_available=false."""

import pytest

import rawmqtt as R
from helpers import QUIET, V5, V311, uid

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_delivered_to_new_subscriber(mqtt, version):
    pub = mqtt(version=version)
    pub.publish("ret/a", b"kept", qos=1, retain=True)
    sub = mqtt(version=version)
    sub.subscribe("ret/a", 1)
    m = sub.expect_message()
    # [MQTT-3.3.1-6]: sent to new subscriptions; [MQTT-3.3.1-8] with RETAIN=1
    assert (m.topic, m.payload, m.retain, m.qos) == ("ret/a", b"kept", True, 1)
    sub.expect_no_message(0.3)


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_is_replaced(mqtt, version):
    pub = mqtt(version=version)
    pub.publish("ret/r", b"one", qos=1, retain=True)
    pub.publish("ret/r", b"two", qos=1, retain=True)
    sub = mqtt(version=version)
    sub.subscribe("ret/r", 1)
    # [MQTT-3.3.1-5]: the new retained message replaces the old one
    assert sub.expect_message().payload == b"two"
    sub.expect_no_message(QUIET)  # bounded wait: "one" must be gone


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_cleared_by_empty_payload(mqtt, version):
    pub = mqtt(version=version)
    live = mqtt(version=version)
    live.subscribe("ret/c", 1)
    pub.publish("ret/c", b"soon-gone", qos=1, retain=True)
    assert live.expect_message().payload == b"soon-gone"
    pub.publish("ret/c", b"", qos=1, retain=True)
    # [MQTT-3.3.1-10/11]: zero-byte retained PUBLISH removes the retained message and is
    # still delivered as normal to existing subscribers
    m = live.expect_message()
    assert m.payload == b""
    sub = mqtt(version=version)
    sub.subscribe("ret/c", 1)
    sub.expect_no_message(QUIET)  # bounded wait: nothing retained any more


def test_v311_live_forwarding_clears_retain_flag(mqtt):
    sub = mqtt(version=V311)
    sub.subscribe("ret/live", 1)
    mqtt(version=V311).publish("ret/live", b"x", qos=1, retain=True)
    # [MQTT-3.3.1-9]: RETAIN=0 when sent because of an established subscription
    assert sub.expect_message().retain is False


@pytest.mark.parametrize("rap", [False, True], ids=["rap0", "rap1"])
def test_v5_retain_as_published(mqtt, rap):
    sub = mqtt(version=V5)
    sub.subscribe("ret/rap", 1, retain_as_published=rap)
    mqtt(version=V5).publish("ret/rap", b"x", qos=1, retain=True)
    # [MQTT-3.3.1-12]: RAP=0 => RETAIN cleared; [MQTT-3.3.1-13]: RAP=1 => as published
    assert sub.expect_message().retain is rap


@pytest.mark.parametrize("rap", [False, True], ids=["rap0", "rap1"])
def test_v5_retained_on_subscribe_always_has_retain_flag(mqtt, rap):
    mqtt(version=V5).publish("ret/rap2", b"x", qos=1, retain=True)
    sub = mqtt(version=V5)
    sub.subscribe("ret/rap2", 1, retain_as_published=rap)
    assert sub.expect_message().retain is True


def test_v5_retain_handling_0_sends_on_every_subscribe(mqtt):
    mqtt(version=V5).publish("ret/rh0", b"x", qos=1, retain=True)
    sub = mqtt(version=V5)
    sub.subscribe("ret/rh0", 1, retain_handling=0)
    assert sub.expect_message().payload == b"x"
    sub.subscribe("ret/rh0", 1, retain_handling=0)  # re-subscribe (existing subscription)
    assert sub.expect_message().payload == b"x"


def test_v5_retain_handling_1_only_for_new_subscription(mqtt):
    mqtt(version=V5).publish("ret/rh1", b"x", qos=1, retain=True)
    sub = mqtt(version=V5)
    sub.subscribe("ret/rh1", 1, retain_handling=1)
    assert sub.expect_message().payload == b"x"
    sub.subscribe("ret/rh1", 1, retain_handling=1)
    # [MQTT-3.3.1-10] (5.0, Retain Handling 1): not sent if the subscription already existed
    sub.expect_no_message(QUIET)


def test_v5_retain_handling_2_never_sends(mqtt):
    mqtt(version=V5).publish("ret/rh2", b"x", qos=1, retain=True)
    sub = mqtt(version=V5)
    sub.subscribe("ret/rh2", 1, retain_handling=2)
    sub.expect_no_message(QUIET)  # bounded wait: Retain Handling 2 => never sent
    # the subscription itself works
    mqtt(version=V5).publish("ret/rh2", b"live", qos=1)
    assert sub.expect_message().payload == b"live"


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_delivery_respects_subscription_qos(mqtt, version):
    pub = mqtt(version=version)
    pub.publish("ret/q/2", b"two", qos=2, retain=True)
    pub.publish("ret/q/0", b"zero", qos=0, retain=True)
    sub = mqtt(version=version)
    sub.subscribe("ret/q/+", 1)
    got = {m.topic: m for m in sub.expect_messages(2)}
    assert got["ret/q/2"].qos == 1  # downgraded to the subscription's QoS
    assert got["ret/q/0"].qos == 0  # never upgraded


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_messages_matched_by_wildcards(mqtt, version):
    pub = mqtt(version=version)
    for t in ("ret/w/a", "ret/w/b", "ret/w/c/d", "ret/x"):
        pub.publish(t, t, qos=1, retain=True)
    sub = mqtt(version=version)
    sub.subscribe("ret/w/+", 1)
    got = sorted(m.topic for m in sub.expect_messages(2))
    assert got == ["ret/w/a", "ret/w/b"]
    sub.expect_no_message(QUIET)
    sub2 = mqtt(version=version)
    sub2.subscribe("ret/#", 1)
    assert sorted(m.topic for m in sub2.expect_messages(4)) == ["ret/w/a", "ret/w/b", "ret/w/c/d", "ret/x"]


@pytest.mark.broker_config(retain_available=False)
def test_v5_retain_unavailable(raw):
    r = raw(V5)
    ack = r.connect(uid())
    # 3.2.2.3.5: Retain Available = 0 in CONNACK
    assert ack.props.get(R.P.RETAIN_AVAILABLE) == 0, ack
    r.publish("ret/no", b"x", retain=True)
    # [MQTT-3.2.2-14]: RETAIN=1 after Retain Available=0 is a Protocol Error; the server
    # SHOULD send DISCONNECT 0x9A (Retain not supported) (3.2.2.3.5)
    got = r.expect_closed()
    assert [p.rc for p in got if p.type == R.DISCONNECT] == [0x9A], got


@pytest.mark.broker_config(retain_available=False)
def test_v5_retain_unavailable_non_retained_publish_still_works(mqtt):
    sub = mqtt(version=V5)
    sub.subscribe("ret/ok", 1)
    mqtt(version=V5).publish("ret/ok", b"fine", qos=1)
    assert sub.expect_message().payload == b"fine"


@pytest.mark.broker_config(retain_available=False)
def test_v5_retained_will_rejected_when_retain_unavailable(raw):
    r = raw(V5)
    r.send(R.connect(uid(), version=V5, will_topic="ret/will", will_payload=b"w", will_retain=True))
    got = r.expect_closed()
    # [MQTT-3.2.2-13]: reject the connection; SHOULD be CONNACK 0x9A, then close
    assert [p.type for p in got] in ([], [R.CONNACK]), got
    if got:
        assert got[0].rc == 0x9A, got
