"""Server-side RPC (two-way, timeout, one-way, persistent across restarts, TTL) and client-side RPC."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ib_mqtt import V5, V311, VERSIONS
from ib_platform import QUIET, assert_current_time, assert_error_body, uid

REQ = "v1/devices/me/rpc/request/+"
RESP = "v1/devices/me/rpc/response/"


@pytest.fixture
def bg():
    with ThreadPoolExecutor(max_workers=4) as ex:
        yield ex


@pytest.fixture
def dev(api):
    return api.create_device(uid("rpcdev"))


def request_id(topic: str) -> str:
    assert topic.startswith("v1/devices/me/rpc/request/"), topic
    rid = topic.rsplit("/", 1)[1]
    assert rid, topic
    return rid


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_two_way_rpc_returns_the_device_reply(platform, api, clients, dev, bg, version):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=version)
    assert c.subscribe(REQ) == [1]
    fut = bg.submit(api.rpc, dev["id"], {"method": "setGpio", "params": {"pin": 7, "on": True},
                                         "timeout_ms": 10_000})
    m = c.expect(REQ.replace("+", "*"))
    assert m.json() == {"method": "setGpio", "params": {"pin": 7, "on": True}}
    assert c.publish(RESP + request_id(m.topic), {"ok": True, "pin": 7}) == 0
    r = fut.result(20)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCESSFUL"
    assert body["response"] == {"ok": True, "pin": 7}
    assert body.get("id"), body
    state = api.rpc_state(dev["id"], body["id"])
    assert state["status"] == "SUCCESSFUL"


def test_two_way_rpc_reply_may_be_any_json(platform, api, clients, dev, bg):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.subscribe(REQ) == [1]
    for reply in (42, "text", [1, 2, 3]):
        fut = bg.submit(api.rpc, dev["id"], {"method": "echo", "params": {}, "timeout_ms": 10_000})
        m = c.expect(REQ.replace("+", "*"))
        assert c.publish(RESP + request_id(m.topic), json.dumps(reply)) == 0
        r = fut.result(20)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "SUCCESSFUL"
        assert r.json()["response"] == reply


def test_two_way_rpc_timeout_is_504(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.subscribe(REQ) == [1]
    t0 = time.monotonic()
    r = api.rpc(dev["id"], {"method": "slow", "params": {}, "timeout_ms": 700})
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, r.text
    body = r.json()
    assert body["status"] == "TIMEOUT", body
    assert 0.5 <= elapsed < 10, elapsed
    c.expect(REQ.replace("+", "*"))  # it was delivered; the device just never answered
    if body.get("id"):
        assert api.rpc_state(dev["id"], body["id"])["status"] == "TIMEOUT"


def test_late_reply_after_timeout_is_ignored(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.subscribe(REQ) == [1]
    r = api.rpc(dev["id"], {"method": "slow", "params": {}, "timeout_ms": 300})
    assert r.status_code == 504
    m = c.expect(REQ.replace("+", "*"))
    c.publish(RESP + request_id(m.topic), {"late": True})  # any ack code: it answers nothing
    assert c.connected.is_set()
    if r.json().get("id"):
        assert api.rpc_state(dev["id"], r.json()["id"])["status"] == "TIMEOUT"


def test_one_way_rpc_returns_at_once(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=V311)
    assert c.subscribe(REQ) == [1]
    t0 = time.monotonic()
    r = api.rpc(dev["id"], {"method": "blink", "params": {"times": 3}, "oneway": True})
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 5
    body = r.json()
    assert body.get("id") and body.get("status") in ("SENT", "DELIVERED", "SUCCESSFUL"), body
    m = c.expect(REQ.replace("+", "*"))
    assert m.json() == {"method": "blink", "params": {"times": 3}}


def test_rpc_for_one_device_does_not_reach_another(platform, api, clients, dev, bg):
    other = api.create_device(uid("rpcother"))
    a = clients.new(platform.mqtt_port, dev["access_token"])
    b = clients.new(platform.mqtt_port, other["access_token"])
    assert a.subscribe(REQ) == [1] and b.subscribe(REQ) == [1]
    r = api.rpc(dev["id"], {"method": "only-a", "params": {}, "oneway": True})
    assert r.status_code == 200, r.text
    a.expect(REQ.replace("+", "*"))
    b.expect_none()


# ---------------------------------------------------------------------------
# persistent RPC


def _queue(api, dev, ttl_ms=120_000, method="configure", params=None):
    r = api.rpc(dev["id"], {"method": method, "params": params or {"interval": 30},
                            "persistent": True, "ttl_ms": ttl_ms})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "QUEUED", body
    assert body.get("id"), body
    return body["id"]


def _connect_receive_and_reply(platform, api, clients, dev, rpc_id, version=V5):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=version)
    assert c.subscribe(REQ) == [1]
    m = c.expect(REQ.replace("+", "*"))
    assert m.json() == {"method": "configure", "params": {"interval": 30}}
    # handed to the device, not answered yet
    assert api.rpc_state(dev["id"], rpc_id)["status"] in ("SENT", "DELIVERED")
    assert c.publish(RESP + request_id(m.topic), {"applied": True}) == 0
    state = api.wait_rpc_status(dev["id"], rpc_id, "SUCCESSFUL")
    if "response" in state:
        assert state["response"] == {"applied": True}
    c.expect_none(QUIET, topic=REQ.replace("+", "*"))  # delivered once
    return c


def test_persistent_rpc_waits_for_an_offline_device(platform, api, clients, dev):
    rpc_id = _queue(api, dev)
    assert api.rpc_state(dev["id"], rpc_id)["status"] == "QUEUED"
    _connect_receive_and_reply(platform, api, clients, dev, rpc_id, version=V311)


def test_persistent_rpc_is_not_redelivered_after_success(platform, api, clients, dev):
    rpc_id = _queue(api, dev)
    c = _connect_receive_and_reply(platform, api, clients, dev, rpc_id)
    c.close()
    c2 = clients.new(platform.mqtt_port, dev["access_token"])
    assert c2.subscribe(REQ) == [1]
    c2.expect_none(QUIET)


def test_persistent_rpc_survives_graceful_restart(own_platform, clients):
    p = own_platform
    dev = p.api.create_device(uid("rpcpersist"))
    rpc_id = _queue(p.api, dev)
    p.restart()
    assert p.api.rpc_state(dev["id"], rpc_id)["status"] == "QUEUED"
    _connect_receive_and_reply(p, p.api, clients, dev, rpc_id)


def test_persistent_rpc_survives_kill9(own_platform, clients):
    p = own_platform
    dev = p.api.create_device(uid("rpckill"))
    rpc_id = _queue(p.api, dev)
    p.kill9_restart()
    assert p.api.rpc_state(dev["id"], rpc_id)["status"] == "QUEUED"
    _connect_receive_and_reply(p, p.api, clients, dev, rpc_id)


def test_persistent_rpc_reply_survives_restart(own_platform, clients):
    p = own_platform
    dev = p.api.create_device(uid("rpcdone"))
    rpc_id = _queue(p.api, dev)
    _connect_receive_and_reply(p, p.api, clients, dev, rpc_id)
    clients.close_all()
    p.kill9_restart()
    assert p.api.rpc_state(dev["id"], rpc_id)["status"] == "SUCCESSFUL"


def test_persistent_rpc_expires_after_its_ttl(platform, api, clients, dev):
    rpc_id = _queue(api, dev, ttl_ms=300)
    api.wait_rpc_status(dev["id"], rpc_id, "EXPIRED")
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.subscribe(REQ) == [1]
    c.expect_none(QUIET)
    assert api.rpc_state(dev["id"], rpc_id)["status"] == "EXPIRED"


def test_persistent_rpc_to_a_connected_device_is_delivered_at_once(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.subscribe(REQ) == [1]
    r = api.rpc(dev["id"], {"method": "configure", "params": {"interval": 30}, "persistent": True,
                            "ttl_ms": 60_000})
    assert r.status_code == 200, r.text
    rpc_id = r.json()["id"]
    assert r.json()["status"] in ("QUEUED", "SENT", "DELIVERED"), r.json()
    m = c.expect(REQ.replace("+", "*"))
    assert c.publish(RESP + request_id(m.topic), {"applied": True}) == 0
    api.wait_rpc_status(dev["id"], rpc_id, "SUCCESSFUL")



def test_acknowledged_rpc_is_delivered_before_its_reply(platform, api, clients, dev):
    """QoS 1 subscription: the device's PUBACK moves the RPC from SENT to DELIVERED."""
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.subscribe(REQ, qos=1) == [1]
    r = api.rpc(dev["id"], {"method": "calibrate", "params": {}, "persistent": True, "ttl_ms": 60_000})
    assert r.status_code == 200, r.text
    rpc_id = r.json()["id"]
    m = c.expect(REQ.replace("+", "*"))
    api.wait_rpc_status(dev["id"], rpc_id, "DELIVERED")
    assert c.publish(RESP + request_id(m.topic), {"ok": True}) == 0
    api.wait_rpc_status(dev["id"], rpc_id, "SUCCESSFUL")

# ---------------------------------------------------------------------------
# client-side RPC


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_client_rpc_get_session_limits(platform, clients, dev, version):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=version)
    assert c.subscribe("v1/devices/me/rpc/response/+") == [1]
    m = c.request("v1/devices/me/rpc/request/1", RESP + "1",
                  {"method": "getSessionLimits", "params": {"timeout": 5000}})
    limits = m.json()
    assert isinstance(limits, dict), limits
    assert isinstance(limits.get("maxPayloadSize"), int) and limits["maxPayloadSize"] > 0, limits
    assert isinstance(limits.get("maxInflightMessages"), int) and limits["maxInflightMessages"] > 0, limits
    assert isinstance(limits.get("rateLimits"), dict), limits


def test_client_rpc_get_current_time(platform, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.subscribe("v1/devices/me/rpc/response/+") == [1]
    m = c.request("v1/devices/me/rpc/request/99", RESP + "99", {"method": "getCurrentTime", "params": {}})
    body = m.json()
    assert_current_time(body)


def test_rpc_to_unknown_device_is_404(api):
    r = api.rpc("00000000-0000-0000-0000-000000000000", {"method": "x", "params": {}, "oneway": True})
    assert_error_body(r, 404)


def test_rpc_without_method_is_refused(api, dev):
    r = api.rpc(dev["id"], {"params": {}})
    assert r.status_code in (400, 422), r.text  # a body of the wrong shape
    assert_error_body(r, r.status_code)


def test_unknown_rpc_id_is_404(api, dev):
    rpc_id = _queue(api, dev)
    missing = rpc_id + 1_000_000 if isinstance(rpc_id, int) else "00000000-0000-0000-0000-000000000000"
    assert_error_body(api.get(f"/api/v1/devices/{dev['id']}/rpc/{missing}"), 404)


def test_persistent_rpc_is_not_delivered_to_another_device(platform, api, clients, dev):
    other = api.create_device(uid("rpcother"))
    _queue(api, dev)
    c = clients.new(platform.mqtt_port, other["access_token"])
    assert c.subscribe(REQ) == [1]
    c.expect_none()
