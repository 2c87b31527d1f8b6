"""Self-checks of the harness itself: broker lifecycle and the config mappings
the Rust side must accept (Ironbridge TOML keys)."""

import tomllib

import pytest

import conftest
import rawmqtt as R
from helpers import V311, uid


def test_restart_keeps_port_and_accepts_clients(broker, raw):
    port = broker.port
    c = raw(V311)
    assert c.connect(uid()).rc == 0
    broker.restart()
    assert broker.port == port
    c.expect_closed()  # the old connection died with the old process
    assert raw(V311).connect(uid()).rc == 0


def test_kill_drops_connections(broker, raw):
    c = raw(V311)
    c.connect(uid())
    broker.kill()
    assert not broker.running
    c.expect_closed()


def test_two_brokers_are_independent(make_broker, client_factory):
    a = make_broker()
    b = make_broker(max_packet_size=500)
    assert a.port != b.port
    ca = client_factory.raw(a, R.MQTT5).connect(uid())
    cb = client_factory.raw(b, R.MQTT5).connect(uid())
    assert R.P.MAXIMUM_PACKET_SIZE not in ca.props
    assert cb.props.get(R.P.MAXIMUM_PACKET_SIZE) == 500


def test_unknown_setting_is_rejected(make_broker):
    with pytest.raises(ValueError):
        make_broker(max_kepalive=10)


def test_ironbridge_toml_mapping():
    settings = {
        "allow_anonymous": False,
        "max_keepalive": 10,
        "max_packet_size": 1000,
        "receive_maximum": 7,
        "topic_alias_maximum": 3,
        "max_inflight_messages": 5,
        "max_queued_messages": 100,
        "max_queued_bytes": 65536,
        "retain_available": False,
        "sys_interval": 1,
        "users": {"alice": 'pa"ss\\word'},
        "acl": [
            {"filter": "a/#", "access": "subscribe", "allow": False},
            {"filter": "home/alice/#", "access": "all", "allow": True, "username": "alice"},
        ],
    }
    doc = tomllib.loads(conftest.ironbridge_toml(settings))
    m = doc["mqtt"]
    for k in ("allow_anonymous", "max_keepalive", "max_packet_size", "receive_maximum",
              "topic_alias_maximum", "max_inflight_messages", "max_queued_messages",
              "max_queued_bytes", "retain_available", "sys_interval"):
        assert m[k] == settings[k], k
    assert m["users"] == [{"username": "alice", "password": 'pa"ss\\word'}]
    assert m["acl"] == [
        {"filter": "a/#", "access": "subscribe", "allow": False},
        {"filter": "home/alice/#", "access": "all", "allow": True, "username": "alice"},
    ]
    assert tomllib.loads(conftest.ironbridge_toml({}))["mqtt"] == {"allow_anonymous": True}


def test_mosquitto_dynsec_mapping_keeps_rule_order():
    rules = [
        {"filter": "x/public", "access": "all", "allow": True},
        {"filter": "x/#", "access": "publish", "allow": False},
        {"filter": "mine/#", "access": "subscribe", "allow": True, "username": "bob"},
    ]
    cfg = conftest.mosquitto_dynsec(rules, {"bob": "pw"})
    roles = {r["rolename"]: r["acls"] for r in cfg["roles"]}
    anon = roles["anonymous"]
    assert [(a["acltype"], a["topic"], a["allow"]) for a in anon] == [
        ("subscribePattern", "x/public", True),
        ("publishClientSend", "x/public", True),
        ("publishClientSend", "x/#", False),
    ]
    prios = [a["priority"] for a in anon]
    assert prios[0] == prios[1] > prios[2]
    assert [a["topic"] for a in roles["user0"]] == ["x/public", "x/public", "x/#", "mine/#"]
    assert cfg["clients"][0]["username"] == "bob"


@pytest.mark.parametrize("graceful", [False, True], ids=["sigkill", "sigterm"])
def test_crash_restart_keeps_port_and_data_dir(make_broker, client_factory, graceful):
    b = make_broker(persistence=True)
    port, pid = b.port, b.pid
    c = client_factory.raw(b, R.MQTT311)
    assert c.connect(uid()).rc == 0
    b.crash_restart(graceful=graceful)
    assert b.port == port and b.running and b.pid != pid
    c.expect_closed()
    assert client_factory.raw(b, R.MQTT311).connect(uid()).rc == 0
    if b.kind == "ironbridge":
        assert b.rss_kb() > 0
