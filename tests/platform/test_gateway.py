"""Gateway API (v1/gateway/*): sub-devices, their telemetry/attributes, attribute requests,
shared-attribute pushes and server-side RPC through the gateway."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ib_mqtt import V5, V311, VERSIONS
from ib_platform import now_ms, uid, wait_for

GW_ATTR = "v1/gateway/attributes"
GW_ATTR_RESP = "v1/gateway/attributes/response"
GW_RPC = "v1/gateway/rpc"


def find_device(api, name: str, tenant: str | None = None) -> dict:
    def lookup():
        return next((d for d in api.list_devices(tenant) if d["name"] == name), None)
    return wait_for(lookup, what=f"device {name!r} in the registry")


class Gateway:
    def __init__(self, platform, api, clients, version=V5, tenant=None):
        self.api = api
        self.tenant = tenant
        self.dev = api.create_device(uid("gw"), gateway=True, tenant=tenant)
        self.c = clients.new(platform.mqtt_port, self.dev["access_token"], version=version)
        self.sub = {}

    def connect_sub(self, name: str, profile: str = "default") -> dict:
        assert self.c.publish("v1/gateway/connect", {"device": name, "type": profile}) == 0
        d = find_device(self.api, name, self.tenant)
        self.sub[name] = d
        return d


@pytest.fixture
def gw(platform, api, clients):
    return Gateway(platform, api, clients)


def test_gateway_flag_is_stored(api, gw):
    got = api.ok(api.get(f"/api/v1/devices/{gw.dev['id']}"))
    assert got["gateway"] is True, got


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_gateway_telemetry_creates_sub_devices(platform, api, clients, version):
    gw = Gateway(platform, api, clients, version=version)
    a, b = uid("sub-a"), uid("sub-b")
    assert gw.c.publish("v1/gateway/connect", {"device": a, "type": "default"}) == 0
    ts = now_ms() - 2_000
    payload = {a: [{"ts": ts, "values": {"temp": 20.5, "ok": True}}], b: {"temp": 7}}
    assert gw.c.publish("v1/gateway/telemetry", payload) == 0
    da, db = find_device(api, a), find_device(api, b)
    assert da["id"] != db["id"] and gw.dev["id"] not in (da["id"], db["id"])
    got_a = api.wait_latest(da["id"], ["temp", "ok"])
    assert got_a["temp"] == {"ts": ts, "value": 20.5} and got_a["ok"]["value"] is True
    assert api.wait_latest(db["id"], ["temp"])["temp"]["value"] == 7
    # nothing of it is stored on the gateway itself
    assert not (api.latest(gw.dev["id"], ["temp"]) or {}).get("temp")


def test_sub_devices_records_their_gateway(api, gw):
    name = uid("sub")
    d = gw.connect_sub(name)
    full = api.ok(api.get(f"/api/v1/devices/{d['id']}"))
    assert gw.dev["id"] in str(full) or gw.dev["name"] in str(full), full


def test_gateway_sub_device_gets_the_profile_named_in_connect(platform, api, clients):
    prof = api.create_profile(uid("gwprof"))
    gw = Gateway(platform, api, clients)
    d = gw.connect_sub(uid("sub"), profile=prof["name"])
    full = api.ok(api.get(f"/api/v1/devices/{d['id']}"))
    assert prof["name"] in str(full.get("profile")) or str(prof.get("id")) in str(full.get("profile")), full


def test_gateway_client_attributes(api, gw):
    name = uid("sub")
    d = gw.connect_sub(name)
    assert gw.c.publish("v1/gateway/attributes", {name: {"fw": "2.1", "slots": 4}}) == 0
    got = api.wait_attributes(d["id"], "client", ["fw", "slots"])
    assert got["fw"]["value"] == "2.1" and got["slots"]["value"] == 4


def test_gateway_attribute_request_single_key(api, gw):
    name = uid("sub")
    d = gw.connect_sub(name)
    assert gw.c.publish("v1/gateway/attributes", {name: {"fw": "2.1"}}) == 0
    api.wait_attributes(d["id"], "client", ["fw"])
    assert gw.c.subscribe(GW_ATTR_RESP) == [1]
    m = gw.c.request("v1/gateway/attributes/request", GW_ATTR_RESP,
                     {"id": 1, "device": name, "client": True, "key": "fw"})
    assert m.json() == {"id": 1, "device": name, "value": "2.1"}


def test_gateway_attribute_request_several_shared_keys(api, gw):
    name = uid("sub")
    d = gw.connect_sub(name)
    api.set_shared(d["id"], {"mode": "eco", "target": 19})
    assert gw.c.subscribe(GW_ATTR_RESP) == [1]
    m = gw.c.request("v1/gateway/attributes/request", GW_ATTR_RESP,
                     {"id": 2, "device": name, "client": False, "keys": ["mode", "target"]})
    assert m.json() == {"id": 2, "device": name, "values": {"mode": "eco", "target": 19}}


def test_gateway_receives_shared_attribute_updates(api, gw):
    name = uid("sub")
    d = gw.connect_sub(name)
    assert gw.c.subscribe(GW_ATTR) == [1]
    api.set_shared(d["id"], {"setpoint": 5})
    m = gw.c.expect(GW_ATTR)
    assert m.json() == {"device": name, "data": {"setpoint": 5}}


def test_gateway_answers_server_side_rpc_for_a_sub_device(api, gw):
    name = uid("sub")
    d = gw.connect_sub(name)
    assert gw.c.subscribe(GW_RPC) == [1]
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(api.rpc, d["id"], {"method": "reboot", "params": {"delay": 1}, "timeout_ms": 10_000})
        m = gw.c.expect(GW_RPC)
        req = m.json()
        assert req["device"] == name
        assert req["data"]["method"] == "reboot" and req["data"]["params"] == {"delay": 1}
        rid = req["data"]["id"]
        assert gw.c.publish(GW_RPC, {"device": name, "id": rid, "data": {"done": True}}) == 0
        r = fut.result(20)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "SUCCESSFUL"
    assert r.json()["response"] == {"done": True}


def test_gateway_rpc_goes_to_the_right_sub_device(api, gw):
    a, b = uid("sub-a"), uid("sub-b")
    gw.connect_sub(a)
    db = gw.connect_sub(b)
    assert gw.c.subscribe(GW_RPC) == [1]
    r = api.rpc(db["id"], {"method": "ping", "params": {}, "oneway": True})
    assert r.status_code == 200, r.text
    assert gw.c.expect(GW_RPC).json()["device"] == b


def test_gateway_disconnect_is_accepted(api, gw):
    name = uid("sub")
    gw.connect_sub(name)
    assert gw.c.publish("v1/gateway/disconnect", {"device": name}) == 0
    assert gw.c.connected.is_set()


def test_gateway_bad_payload_v5_0x99(api, gw):
    assert gw.c.publish("v1/gateway/telemetry", b"[not json") == 0x99
    assert gw.c.publish("v1/gateway/telemetry", {"x": 5}) == 0x99  # a device's values must be an object/array


def test_plain_device_cannot_use_the_gateway_api(platform, api, clients):
    d = api.create_device(uid("notgw"))
    c = clients.new(platform.mqtt_port, d["access_token"], version=V5)
    name = uid("sneaky")
    rc = c.publish("v1/gateway/telemetry", {name: {"t": 1}})
    assert rc is not None and rc >= 0x80, rc
    assert all(x["name"] != name for x in api.list_devices())


def test_sub_devices_stay_in_the_gateways_tenant(platform, api, clients):
    t = api.create_tenant(uid("gwtenant"))
    gw = Gateway(platform, api, clients, version=V311, tenant=t["id"])
    name = uid("sub")
    d = gw.connect_sub(name)
    assert d["id"] in {x["id"] for x in api.list_devices(t["id"])}
    assert d["id"] not in {x["id"] for x in api.list_devices("default")}
