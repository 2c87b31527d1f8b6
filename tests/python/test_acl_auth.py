"""Authentication (config users, allow_anonymous) and authorisation (ACL rules).

ACL rules use Ironbridge semantics: checked in order, first match wins, no match
=> allowed.  conftest maps them onto mosquitto's dynamic-security plugin.
"""

import pytest

import rawmqtt as R
from helpers import QUIET, V5, V311, uid

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]
USERS = {"alice": "s3cret-A", "bob": "s3cret-B"}

# refusal codes: 3.1.1 0x04 bad user name or password / 0x05 not authorized;
# 5.0 0x86 bad user name or password / 0x87 not authorized (mosquitto uses 0x05 / 0x87)
REFUSED = {V311: (0x04, 0x05), V5: (0x86, 0x87)}
NOT_AUTHORIZED_SUBACK = {V311: 0x80, V5: 0x87}


def assert_refused(raw, version, **kw):
    r = raw(version)
    r.send(R.connect(uid(), version=version, **kw))
    got = r.expect_closed()
    # [MQTT-3.2.2-5] (3.1.1) / [MQTT-3.2.2-7] (5.0): refusal CONNACK, then close
    assert len(got) == 1 and got[0].type == R.CONNACK, got
    assert got[0].rc in REFUSED[version], got


# ---------------------------------------------------------------------------
# authentication


@pytest.mark.parametrize("version", VERSIONS)
def test_anonymous_allowed_by_default(raw, version):
    assert raw(version).connect(uid()).rc == 0


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.broker_config(allow_anonymous=False, users=USERS)
def test_configured_user_can_connect(raw, mqtt, version):
    assert raw(version).connect(uid(), username="alice", password="s3cret-A").rc == 0
    c = mqtt(version=version, username="bob", password="s3cret-B")
    c.subscribe("auth/t", 1)
    c.publish("auth/t", b"hello", qos=1)
    assert c.expect_message().payload == b"hello"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.broker_config(allow_anonymous=False, users=USERS)
def test_wrong_password_refused(raw, version):
    assert_refused(raw, version, username="alice", password="s3cret-B")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.broker_config(allow_anonymous=False, users=USERS)
def test_unknown_user_refused(raw, version):
    assert_refused(raw, version, username="mallory", password="s3cret-A")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.broker_config(allow_anonymous=False, users=USERS)
def test_anonymous_refused_when_disallowed(raw, version):
    assert_refused(raw, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.broker_config(allow_anonymous=True, users=USERS)
def test_anonymous_and_users_together(raw, version):
    assert raw(version).connect(uid()).rc == 0
    assert raw(version).connect(uid(), username="alice", password="s3cret-A").rc == 0
    # a wrong password is still refused even though anonymous access is allowed
    assert_refused(raw, version, username="alice", password="nope")


# ---------------------------------------------------------------------------
# authorisation


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.broker_config(acl=[{"filter": "secret/#", "access": "subscribe", "allow": False}])
def test_acl_subscribe_denied(mqtt, version):
    c = mqtt(version=version)
    # 3.1.1: 0x80 Failure (3.9.3); 5.0: 0x87 Not authorized
    assert c.subscribe("secret/plans", 1) == [NOT_AUTHORIZED_SUBACK[version]]
    assert c.subscribe("public/news", 1) == [1]
    # mixed SUBSCRIBE: one code per filter, in order [MQTT-3.9.3-1]
    assert c.subscribe([("public/a", 0), ("secret/b", 1), ("public/c", 2)]) == [
        0, NOT_AUTHORIZED_SUBACK[version], 2]
    mqtt(version=version).publish("secret/plans", b"x", qos=1)
    c.expect_no_message(QUIET)  # bounded wait: the refused subscription does not exist


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.broker_config(acl=[{"filter": "readonly/#", "access": "publish", "allow": False}])
def test_acl_publish_denied(raw, mqtt, version):
    sub = mqtt(version=V5)
    assert sub.subscribe("readonly/#", 1) == [1]  # subscribing is not restricted
    r = raw(version)
    r.connect(uid())
    r.publish("readonly/t", b"forbidden", qos=1, pid=11)
    if version == V5:
        ack = r.expect(R.PUBACK)
        # 3.4.2.1: 0x87 Not authorized
        assert (ack.pid, ack.rc) == (11, 0x87), ack
    else:
        # [MQTT-3.3.5-2]: 3.1.1 cannot report it: positive acknowledgement (silently
        # dropped) or close the connection
        try:
            ack = r.recv_packet(5.0)
            assert ack.type == R.PUBACK and ack.pid == 11, ack
        except R.ConnectionClosed:
            r = raw(version)
            r.connect(uid())
    sub.expect_no_message(QUIET)  # bounded wait: the message must not be delivered
    r.publish("writable/t", b"ok", qos=1, pid=12)
    assert r.expect(R.PUBACK).pid == 12
    sub.subscribe("writable/t", 1)
    r.publish("writable/t", b"ok", qos=1, pid=13)
    assert sub.expect_message().payload == b"ok"


@pytest.mark.broker_config(acl=[
    {"filter": "area/public", "access": "all", "allow": True},
    {"filter": "area/#", "access": "all", "allow": False},
])
def test_acl_first_match_wins(mqtt):
    c = mqtt(version=V5)
    assert c.subscribe("area/public", 1) == [1]
    assert c.subscribe("area/private", 1) == [0x87]
    other = mqtt(version=V5)
    assert other.publish("area/public", b"ok", qos=1) == 0
    assert other.publish("area/private", b"no", qos=1) == 0x87
    assert c.expect_message().payload == b"ok"
    c.expect_no_message(QUIET)


@pytest.mark.broker_config(acl=[{"filter": "elsewhere/#", "access": "all", "allow": False}])
def test_acl_no_matching_rule_allows(mqtt):
    c = mqtt(version=V5)
    assert c.subscribe("free/t", 1) == [1]
    assert mqtt(version=V5).publish("free/t", b"ok", qos=1) == 0
    assert c.expect_message().payload == b"ok"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.broker_config(
    allow_anonymous=False,
    users=USERS,
    acl=[
        {"filter": "home/alice/#", "access": "all", "allow": True, "username": "alice"},
        {"filter": "home/#", "access": "all", "allow": False},
    ],
)
def test_acl_per_user_rules(mqtt, version):
    alice = mqtt(version=version, username="alice", password="s3cret-A")
    bob = mqtt(version=version, username="bob", password="s3cret-B")
    assert alice.subscribe("home/alice/inbox", 1) == [1]
    assert bob.subscribe("home/alice/inbox", 1) == [NOT_AUTHORIZED_SUBACK[version]]
    assert bob.subscribe("home/bob/inbox", 1) == [NOT_AUTHORIZED_SUBACK[version]]
    assert alice.subscribe("home/bob/inbox", 1) == [NOT_AUTHORIZED_SUBACK[version]]
    assert bob.subscribe("street/t", 1) == [1]
    alice.publish("home/alice/inbox", b"note-to-self", qos=1)
    assert alice.expect_message().payload == b"note-to-self"
    bob.expect_no_message(0.2)
