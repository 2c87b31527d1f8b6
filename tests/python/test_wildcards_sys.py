"""Topic filters (+, #), $-topics, overlapping subscriptions, unsubscribe, and the
$SYS tree.

$SYS topic names (Ironbridge publishes the same ones as mosquitto):
    $SYS/broker/uptime              "<N> seconds"
    $SYS/broker/version             free text
    $SYS/broker/clients/connected   integer
    $SYS/broker/clients/total       integer
    $SYS/broker/messages/received   integer
    $SYS/broker/messages/sent       integer
    $SYS/broker/bytes/received      integer
    $SYS/broker/bytes/sent          integer
    $SYS/broker/subscriptions/count integer
    $SYS/broker/retained messages/count integer
"""

import re
import time

import pytest

from helpers import QUIET, V5, V311, WAIT

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]

MATCH_CASES = [
    # filter, topics that match, topics that do not
    ("a/+/c", ["a/b/c", "a//c"], ["a/b/c/d", "a/c", "a/b/d", "b/b/c"]),
    ("a/#", ["a", "a/b", "a/b/c", "a/"], ["ab", "b/a", "aa/b"]),
    ("+", ["a", "b"], ["a/b", "/a"]),
    ("+/+", ["/x", "a/b", "a/"], ["a", "a/b/c"]),
    ("/+", ["/x"], ["x", "x/y", "/x/y"]),
    ("#", ["a", "a/b", "/", "/x"], []),
    ("a/+/#", ["a/b", "a/b/c", "a/b/c/d"], ["a", "b/c"]),
    ("+/b/+", ["a/b/c", "x/b/y"], ["a/b", "a/c/b"]),
    ("sport/tennis/player1/#", ["sport/tennis/player1", "sport/tennis/player1/ranking"], ["sport/tennis/player2"]),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("filt,yes,no", MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_wildcard_matching(mqtt, version, filt, yes, no):
    sub = mqtt(version=version)
    assert sub.subscribe(filt, 1) == [1]
    pub = mqtt(version=version)
    for t in no + yes:
        pub.publish(t, t, qos=1)
    got = sorted(m.topic for m in sub.expect_messages(len(yes)))
    assert got == sorted(yes)
    sub.expect_no_message(0.3)  # bounded wait: none of `no` may arrive


@pytest.mark.broker_config(sys_interval=1)
def test_dollar_topics_not_matched_by_leading_wildcards(mqtt):
    # [MQTT-4.7.2-1]: filters starting with a wildcard do not match topics starting with $
    hash_sub = mqtt(version=V311)
    hash_sub.subscribe("#", 0)
    plus_sub = mqtt(version=V5)
    plus_sub.subscribe([("+/broker/uptime", 0), ("+/+/+", 0), ("+/#", 0)])
    control = mqtt(version=V311)
    control.subscribe("$SYS/broker/uptime", 0)
    # two uptime messages = at least one full $SYS publication cycle after all the
    # subscriptions above were in place
    control.expect_message(timeout=WAIT)
    control.expect_message(timeout=WAIT)
    hash_sub.expect_no_message(0.1)
    plus_sub.expect_no_message(0.1)


@pytest.mark.broker_config(sys_interval=1)
def test_dollar_topics_matched_by_explicit_prefix(mqtt):
    s = mqtt(version=V5)
    s.subscribe("$SYS/#", 0)
    m = s.expect_message(timeout=WAIT)
    assert m.topic.startswith("$SYS/")


SYS_TOPICS = {
    "$SYS/broker/uptime": r"\d+ seconds",
    "$SYS/broker/version": r".+",
    "$SYS/broker/clients/connected": r"\d+",
    "$SYS/broker/clients/total": r"\d+",
    "$SYS/broker/messages/received": r"\d+",
    "$SYS/broker/messages/sent": r"\d+",
    "$SYS/broker/bytes/received": r"\d+",
    "$SYS/broker/bytes/sent": r"\d+",
    "$SYS/broker/subscriptions/count": r"\d+",
    "$SYS/broker/retained messages/count": r"\d+",
}


@pytest.mark.broker_config(sys_interval=1)
@pytest.mark.parametrize("topic", list(SYS_TOPICS))
def test_sys_topic_published(mqtt, topic):
    s = mqtt(version=V311)
    s.subscribe(topic, 0)
    m = s.expect_message(timeout=WAIT)
    assert m.topic == topic
    assert re.fullmatch(SYS_TOPICS[topic], m.payload.decode()), m.payload


@pytest.mark.broker_config(sys_interval=1)
def test_sys_uptime_is_periodic(mqtt):
    s = mqtt(version=V311)
    s.subscribe("$SYS/broker/uptime", 0)
    values = []
    deadline = time.monotonic() + 6.0
    while len(set(values)) < 2 and time.monotonic() < deadline:
        values.append(int(s.expect_message(timeout=WAIT).payload.split()[0]))
    assert len(set(values)) >= 2, values
    assert values == sorted(values)


@pytest.mark.broker_config(sys_interval=1)
def test_sys_clients_connected_tracks_connections(mqtt):
    s = mqtt(version=V311)
    s.subscribe("$SYS/broker/clients/connected", 0)

    def wait_value(pred, what):
        deadline = time.monotonic() + 6.0
        seen = []
        while time.monotonic() < deadline:
            try:
                v = int(s.expect_message(timeout=max(0.05, deadline - time.monotonic())).payload)
            except AssertionError:
                break
            seen.append(v)
            if pred(v):
                return v
        raise AssertionError(f"clients/connected never {what}; saw {seen}")

    wait_value(lambda v: v >= 1, ">= 1")
    extra = [mqtt(version=V311) for _ in range(3)]
    wait_value(lambda v: v >= 4, ">= 4 with 3 more clients")
    for c in extra:
        c.disconnect()
    wait_value(lambda v: v <= 1, "back to 1")


@pytest.mark.broker_config(sys_interval=1)
def test_sys_messages_received_increases(mqtt):
    s = mqtt(version=V311)
    s.subscribe("$SYS/broker/messages/received", 0)
    first = int(s.expect_message(timeout=WAIT).payload)
    pub = mqtt(version=V311)
    for i in range(5):
        pub.publish("count/t", b"x", qos=1)
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        v = int(s.expect_message(timeout=WAIT).payload)
        if v >= first + 5:
            return
    raise AssertionError("messages/received did not grow by the 5 publishes")


# ---------------------------------------------------------------------------
# overlapping subscriptions / subscribe replacement / unsubscribe


@pytest.mark.parametrize("version", VERSIONS)
def test_overlapping_subscriptions_respect_max_qos(mqtt, version):
    sub = mqtt(version=version)
    sub.subscribe("ov/#", 0)
    sub.subscribe("ov/t", 1)
    mqtt(version=version).publish("ov/t", b"x", qos=1)
    got = sub.collect(1.0)  # bounded: gather every copy
    # [MQTT-3.3.5-1] (3.1.1) / [MQTT-3.3.4-2] (5.0): deliver respecting the maximum QoS
    # of all matching subscriptions; extra copies (one per subscription) are allowed
    assert 1 <= len(got) <= 2, got
    assert max(m.qos for m in got) == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_resubscribe_replaces_subscription(mqtt, version):
    sub = mqtt(version=version)
    assert sub.subscribe("rs/t", 0) == [0]
    assert sub.subscribe("rs/t", 2) == [2]
    mqtt(version=version).publish("rs/t", b"x", qos=2)
    # [MQTT-3.8.4-3]: identical filter replaces the existing subscription (one copy, new QoS)
    m = sub.expect_message()
    assert m.qos == 2
    sub.expect_no_message(QUIET)


def test_unsubscribe_stops_delivery_v311(mqtt):
    sub = mqtt(version=V311)
    sub.subscribe("us/t", 1)
    sub.unsubscribe("us/t")  # UNSUBACK received
    mqtt().publish("us/t", b"x", qos=1)
    sub.expect_no_message(QUIET)


def test_v5_unsubscribe_reason_codes(mqtt):
    sub = mqtt(version=V5)
    sub.subscribe("us5/t", 1)
    # 3.11.3: 0x00 Success; 0x11 No subscription existed
    assert sub.unsubscribe("us5/t") == [0x00]
    assert sub.unsubscribe("us5/t") == [0x11]
    mqtt().publish("us5/t", b"x", qos=1)
    sub.expect_no_message(QUIET)


def test_v5_subscribe_multiple_filters_reason_codes(mqtt):
    sub = mqtt(version=V5)
    assert sub.subscribe([("m/0", 0), ("m/1", 1), ("m/2", 2)]) == [0, 1, 2]
