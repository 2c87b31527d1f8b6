"""What the device API acknowledged is on disk: SIGKILL and SIGTERM restarts keep telemetry,
attributes, credentials and gateway sub-devices."""

from __future__ import annotations

import pytest

from ib_mqtt import V311, V5, raw_connack
from ib_platform import now_ms, uid, wait_for

RESTARTS = {"sigterm": "restart", "sigkill": "kill9_restart"}


@pytest.mark.parametrize("how", RESTARTS.values(), ids=RESTARTS.keys())
def test_acknowledged_telemetry_survives_restart(own_platform, clients, how):
    p = own_platform
    d = p.api.create_device(uid("dur"))
    c = clients.new(p.mqtt_port, d["access_token"], version=V5)
    ts = now_ms() - 1000
    for i in range(20):
        assert c.publish("v1/devices/me/telemetry", {"ts": ts + i, "values": {"seq": i}}) == 0
    clients.close_all()
    getattr(p, how)()  # right after the last PUBACK
    series = p.api.timeseries(d["id"], ["seq"], ts - 1, ts + 100)
    assert sorted(pt["value"] for pt in series.get("seq", [])) == list(range(20))
    assert p.api.latest(d["id"], ["seq"])["seq"] == {"ts": ts + 19, "value": 19}


@pytest.mark.parametrize("how", RESTARTS.values(), ids=RESTARTS.keys())
def test_attributes_survive_restart(own_platform, clients, how):
    p = own_platform
    d = p.api.create_device(uid("dur"))
    p.api.set_shared(d["id"], {"setpoint": 21})
    c = clients.new(p.mqtt_port, d["access_token"], version=V311)
    assert c.publish("v1/devices/me/attributes", {"fw": "3.0"}) == 0
    clients.close_all()
    getattr(p, how)()
    attrs = p.api.attributes(d["id"])
    assert attrs["client"]["fw"]["value"] == "3.0"
    assert attrs["shared"]["setpoint"]["value"] == 21
    # and the device still reads them
    c = clients.new(p.mqtt_port, d["access_token"])
    assert c.subscribe("v1/devices/me/attributes/response/+") == [1]
    m = c.request("v1/devices/me/attributes/request/1", "v1/devices/me/attributes/response/1", {})
    assert m.json() == {"client": {"fw": "3.0"}, "shared": {"setpoint": 21}}


def test_credentials_survive_kill9(own_platform):
    p = own_platform
    d = p.api.create_device(uid("dur"))
    rotated = p.api.create_device(uid("dur"))
    new = p.api.set_credentials(rotated["id"], {"type": "access_token", "grace_s": 0})["access_token"]
    basic = p.api.create_device(uid("dur"))
    user, cid = uid("u"), uid("c")
    p.api.set_credentials(basic["id"], {"type": "mqtt_basic", "client_id": cid, "username": user, "password": "pw"})
    p.kill9_restart()
    assert raw_connack(p.mqtt_port, d["access_token"]) == 0
    assert raw_connack(p.mqtt_port, new) == 0
    assert raw_connack(p.mqtt_port, rotated["access_token"]) == 0x86
    assert raw_connack(p.mqtt_port, user, "pw", client_id=cid) == 0
    assert raw_connack(p.mqtt_port, user, "wrong", client_id=cid) == 0x86


def test_gateway_sub_devices_survive_kill9(own_platform, clients):
    p = own_platform
    gw = p.api.create_device(uid("gw"), gateway=True)
    c = clients.new(p.mqtt_port, gw["access_token"])
    name = uid("sub")
    assert c.publish("v1/gateway/telemetry", {name: [{"ts": now_ms(), "values": {"v": 1}}]}) == 0
    clients.close_all()
    p.kill9_restart()
    sub = [x for x in p.api.list_devices() if x["name"] == name]
    assert len(sub) == 1, sub
    assert p.api.latest(sub[0]["id"], ["v"])["v"]["value"] == 1
    # the gateway keeps addressing the same sub-device after the restart
    c = clients.new(p.mqtt_port, gw["access_token"])
    assert c.publish("v1/gateway/telemetry", {name: {"v": 2}}) == 0
    wait_for(lambda: p.api.latest(sub[0]["id"], ["v"])["v"]["value"] == 2, what="the second value")
    assert [x["id"] for x in p.api.list_devices() if x["name"] == name] == [sub[0]["id"]]
