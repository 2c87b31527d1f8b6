"""Malformed packets and protocol violations, sent over raw sockets.

Every test first connects a `witness` (subscriber + publisher) and afterwards
proves the broker still routes messages for other clients.

Unless stated otherwise the rule is 3.1.1 [MQTT-4.8.0-1] / 5.0 section 4.13:
on a malformed packet or protocol error the server closes the connection; a 5.0
server MAY first send DISCONNECT with a reason code >= 0x80 (0x81 Malformed
Packet, 0x82 Protocol Error, or a more specific code).
"""

import pytest

import rawmqtt as R
from helpers import V5, V311, assert_error_close, uid, xfail_mosquitto

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


def connected(raw, version, **kw):
    r = raw(version)
    assert r.connect(uid("bad"), **kw).rc == 0
    return r


# ---------------------------------------------------------------------------
# connection-level


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(R.pingreq(), id="pingreq"),
        pytest.param(R.publish("a/b", b"x"), id="publish"),
        pytest.param(R.subscribe(1, [("a/b", 0)]), id="subscribe"),
        pytest.param(R.disconnect(), id="disconnect"),
    ],
)
def test_first_packet_not_connect(raw, witness, first):
    # [MQTT-3.1.0-1]: the first packet from the client MUST be CONNECT
    r = raw(V311)
    r.send(first)
    assert r.expect_closed() == []
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_second_connect_is_protocol_violation(raw, witness, version):
    r = connected(raw, version)
    r.send(R.connect(uid(), version=version))
    # [MQTT-3.1.0-2]: a second CONNECT is a protocol violation => close
    assert_error_close(r, version, allowed={0x82, 0x81})
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_bad_protocol_name_other_clients_unaffected(raw, witness, version):
    r = raw(version)
    r.send(R.connect(uid(), version=version, proto_name="MQIsdpX"))
    got = r.expect_closed()
    assert all(p.type == R.CONNACK and p.rc != 0 for p in got), got
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "kw",
    [
        pytest.param({"extra_flags": 0x08}, id="will_qos_without_will_flag"),  # [MQTT-3.1.2-11]
        pytest.param({"extra_flags": 0x20}, id="will_retain_without_will_flag"),  # [MQTT-3.1.2-15]
        pytest.param({"will_topic": "w", "will_qos": 3}, id="will_qos_3"),  # [MQTT-3.1.2-14]/-12
        pytest.param({"will_topic": "w/+"}, id="will_topic_wildcard"),  # [MQTT-4.7.1-1] no wildcards in names
        pytest.param({"client_id": b"bad\xff"}, id="client_id_invalid_utf8"),  # [MQTT-1.5.3-1]
    ],
)
def test_malformed_connect(raw, witness, version, kw):
    kw = dict(kw)
    cid = kw.pop("client_id", uid())
    r = raw(version)
    r.send(R.connect(cid, version=version, **kw))
    got = r.expect_closed()
    # a CONNACK is allowed only as a refusal (e.g. 0x02 / 0x85 for a bad client id)
    assert all(p.type in (R.CONNACK, R.DISCONNECT) and p.rc != 0 for p in got), got
    witness.check()


def test_v311_password_without_username(raw, witness):
    # [MQTT-3.1.2-22]: password flag without username flag is a protocol violation in 3.1.1
    r = raw(V311)
    r.send(R.connect(uid(), version=V311, password="secret"))
    got = r.expect_closed()
    assert all(p.type == R.CONNACK and p.rc != 0 for p in got), got
    witness.check()


def test_v5_duplicate_connect_property(raw, witness):
    # 3.1.2.11.2: including Session Expiry Interval more than once is a Protocol Error
    r = raw(V5)
    props = R.Props([(R.P.SESSION_EXPIRY_INTERVAL, 10), (R.P.SESSION_EXPIRY_INTERVAL, 20)])
    r.send(R.connect(uid(), version=V5, props=props))
    got = r.expect_closed()
    assert all(p.type in (R.CONNACK, R.DISCONNECT) and p.rc >= 0x80 for p in got), got
    witness.check()


# ---------------------------------------------------------------------------
# fixed header / framing


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda v: R.subscribe(1, [("a/b", 0)], version=v, flags=0x0), id="subscribe_flags_0000"),
        pytest.param(lambda v: R.unsubscribe(1, ["a/b"], version=v, flags=0x0), id="unsubscribe_flags_0000"),
        pytest.param(lambda v: R.publish("a/b", b"x", flags=0x06, pid=1, version=v), id="publish_qos3"),
        pytest.param(lambda v: R.publish("a/b", b"x", flags=0x07, pid=1, version=v), id="publish_qos3_retain"),
        pytest.param(
            lambda v: R.packet(R.PINGREQ, 0x1, b""), id="pingreq_flags_0001",
            marks=xfail_mosquitto(
                "mosquitto 2.0.11 answers a PINGREQ whose reserved flags are 0001 with PINGRESP; "
                "3.1.1 [MQTT-2.2.2-2] requires closing the connection on invalid flags and 5.0 "
                "[MQTT-2.1.3-1] makes it a Malformed Packet"
            ),
        ),
        pytest.param(lambda v: R.pubrel(1, version=v, flags=0x0), id="pubrel_flags_0000"),
        pytest.param(lambda v: R.packet(R.DISCONNECT, 0x2, b"" if v == V311 else b"\x00"), id="disconnect_flags"),
        pytest.param(lambda v: R.packet(0, 0, b""), id="reserved_type_0"),
        pytest.param(lambda v: R.packet(15, 0, b"") if v == V311 else R.packet(R.CONNACK, 0, b"\x00\x00"),
                     id="auth_in_311_or_connack_from_client"),
    ],
)
def test_reserved_fixed_header_bits(raw, witness, version, make):
    # [MQTT-2.2.2-1/2] (3.1.1), [MQTT-2.1.3-1] (5.0): invalid flags => malformed => close
    r = connected(raw, version)
    r.send(make(version))
    assert_error_close(r, version)
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_remaining_length_more_than_four_bytes(raw, witness, version):
    r = connected(raw, version)
    r.send(b"\x30\xff\xff\xff\xff\x01")  # 5-byte variable byte integer
    assert_error_close(r, version)
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_string_length_beyond_packet(raw, witness, version):
    r = connected(raw, version)
    # PUBLISH, remaining length 5, topic length claims 200 bytes
    r.send(b"\x30\x05\x00\xc8abc")
    assert_error_close(r, version)
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.broker_config(max_packet_size=1000)
def test_oversized_packet_rejected_from_header(raw, witness, version):
    # The fixed header announces 1 MB; the broker must reject it without waiting for the body.
    r = connected(raw, version)
    r.send(b"\x30" + R.varint(1_000_000) + R.string("big/t"))
    assert_error_close(r, version, allowed={0x95})
    witness.check()


# ---------------------------------------------------------------------------
# topic names and filters


BAD_TOPICS = [
    pytest.param(b"a/\xff", id="invalid_utf8"),
    pytest.param(b"a/\xed\xa0\x80", id="utf16_surrogate"),  # [MQTT-1.5.3-1]
    pytest.param(b"a/\x00b", id="nul_char"),  # [MQTT-1.5.3-2] / [MQTT-1.5.4-2]
    pytest.param(b"a/\xc0\xaf", id="overlong_encoding"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("topic", BAD_TOPICS)
def test_publish_malformed_topic(raw, witness, version, topic):
    r = connected(raw, version)
    r.publish(topic, b"x")
    assert_error_close(r, version, allowed={0x81, 0x82, 0x90})
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("topic", BAD_TOPICS)
def test_subscribe_malformed_filter_encoding(raw, witness, version, topic):
    r = connected(raw, version)
    r.send(R.subscribe(1, [(topic, 0)], version=version))
    assert_error_close(r, version, allowed={0x81, 0x82})
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("topic", ["a/+", "a/#", "#", "+"])
def test_publish_to_wildcard_topic(raw, witness, version, topic):
    # [MQTT-3.3.2-2]: Topic Name MUST NOT contain wildcards.  5.0 has no single mandated
    # code: 0x90 (Topic Name invalid) is the most specific, mosquitto sends 0x82.
    r = connected(raw, version)
    r.publish(topic, b"x", qos=1, pid=1)
    assert_error_close(r, version, allowed={0x90, 0x82, 0x81})
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_publish_empty_topic(raw, witness, version):
    # [MQTT-4.7.3-1]; in 5.0 an empty topic without Topic Alias is a Protocol Error (3.3.2.1)
    r = connected(raw, version)
    r.publish("", b"x")
    assert_error_close(r, version, allowed={0x82, 0x81, 0x90})
    witness.check()


INVALID_FILTERS = ["a/#/b", "a+", "#a", "a/b#", "+a/b", "a/+b", ""]


@pytest.mark.parametrize("filt", INVALID_FILTERS)
def test_v311_subscribe_invalid_filter_closes(raw, witness, filt):
    # [MQTT-4.7.1-2/3], [MQTT-4.7.3-1]; 3.1.1 has no "invalid filter" SUBACK code, so a
    # protocol violation => close [MQTT-4.8.0-1]
    r = connected(raw, V311)
    r.send(R.subscribe(1, [(filt, 0)], version=V311))
    assert_error_close(r, V311)
    witness.check()


@pytest.mark.parametrize("filt", INVALID_FILTERS)
def test_v5_subscribe_invalid_filter(raw, witness, filt):
    # Either SUBACK 0x8F (Topic Filter invalid) or DISCONNECT (0x81/0x82/0x8F) + close
    r = connected(raw, V5)
    r.send(R.subscribe(1, [(filt, 0)], version=V5))
    try:
        p = r.recv_packet(5.0)
    except R.ConnectionClosed:
        p = None
    if p is not None and p.type == R.SUBACK:
        assert p.rcs == [0x8F], p
        r.send(R.pingreq())
        r.expect(R.PINGRESP)  # connection still usable
    else:
        if p is not None:
            assert p.type == R.DISCONNECT and p.rc in (0x81, 0x82, 0x8F), p
        r.expect_closed()
    witness.check()


# ---------------------------------------------------------------------------
# packet contents


@pytest.mark.parametrize("version", VERSIONS)
def test_qos1_publish_with_packet_id_zero(raw, witness, version):
    # [MQTT-2.3.1-1] (3.1.1) / [MQTT-2.2.1-3] (5.0): QoS>0 needs a non-zero packet id
    r = connected(raw, version)
    r.publish("a/b", b"x", qos=1, pid=0)
    assert_error_close(r, version, allowed={0x81, 0x82})
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_subscribe_without_filters(raw, witness, version):
    # [MQTT-3.8.3-3] (3.1.1) / [MQTT-3.8.3-2] (5.0)
    r = connected(raw, version)
    r.send(R.subscribe(1, [], version=version))
    assert_error_close(r, version, allowed={0x81, 0x82})
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_without_filters(raw, witness, version):
    # [MQTT-3.10.3-2]
    r = connected(raw, version)
    r.send(R.unsubscribe(1, [], version=version))
    assert_error_close(r, version, allowed={0x81, 0x82})
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_subscribe_requested_qos_3(raw, witness, version):
    # [MQTT-3.8.3-4] (3.1.1) / [MQTT-3.8.3-5] (5.0)
    r = connected(raw, version)
    r.send(R.subscribe(1, [("a/b", 3)], version=version))
    assert_error_close(r, version, allowed={0x81, 0x82})
    witness.check()


@pytest.mark.parametrize(
    "opts",
    [pytest.param(0x40, id="reserved_bit6"), pytest.param(0xC1, id="reserved_bits67"),
     pytest.param(0x30, id="retain_handling_3")],
)
def test_v5_subscribe_invalid_options(raw, witness, opts):
    # [MQTT-3.8.3-5]: reserved bits set / Retain Handling 3 => Malformed Packet
    r = connected(raw, V5)
    r.send(R.subscribe(1, [("a/b", opts)], version=V5))
    assert_error_close(r, V5, allowed={0x81, 0x82})
    witness.check()


def test_v5_subscription_identifier_zero(raw, witness):
    # 3.8.2.1.2: a Subscription Identifier of 0 is a Protocol Error
    r = connected(raw, V5)
    r.send(R.subscribe(1, [("a/b", 0)], version=V5, props={R.P.SUBSCRIPTION_IDENTIFIER: 0}))
    assert_error_close(r, V5, allowed={0x81, 0x82})
    witness.check()


def test_v5_unknown_property_in_publish(raw, witness):
    r = connected(raw, V5)
    # property id 0x7F does not exist => Malformed Packet
    body = R.string("a/b") + R.varint(2) + b"\x7f\x00" + b"x"
    r.send(R.packet(R.PUBLISH, 0, body))
    assert_error_close(r, V5, allowed={0x81, 0x82})
    witness.check()


def test_v5_property_not_allowed_in_packet(raw, witness):
    r = connected(raw, V5)
    # Session Expiry Interval is not a PUBLISH property => Malformed Packet / Protocol Error
    r.publish("a/b", b"x", props={R.P.SESSION_EXPIRY_INTERVAL: 5})
    assert_error_close(r, V5, allowed={0x81, 0x82})
    witness.check()


@xfail_mosquitto(
    "mosquitto 2.0.11 silently accepts a client PUBLISH carrying a Subscription Identifier; "
    "[MQTT-3.3.4-6] forbids it (a protocol violation => close, section 4.13)"
)
def test_v5_client_sends_server_only_property(raw, witness):
    # [MQTT-3.3.4-6]: a PUBLISH sent from a Client to a Server MUST NOT contain a
    # Subscription Identifier
    r = connected(raw, V5)
    r.publish("a/b", b"x", props={R.P.SUBSCRIPTION_IDENTIFIER: 3})
    assert_error_close(r, V5, allowed={0x81, 0x82})
    witness.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_pubrel_for_unknown_packet_id_answered(raw, witness, version):
    # [MQTT-4.3.3-11]: respond to PUBREL with PUBCOMP (same id); 5.0 may say 0x92
    r = connected(raw, version)
    r.send(R.pubrel(321, version=version))
    comp = r.expect(R.PUBCOMP)
    assert comp.pid == 321
    if version == V5:
        assert comp.rc in (0x00, 0x92)
    witness.check()
