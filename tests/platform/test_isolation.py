"""Tenant isolation: each tenant is its own registry and its own broker namespace."""

from __future__ import annotations

import pytest

from ib_mqtt import V5, V311, raw_connack
from ib_platform import QUIET, uid, wait_for

ALL = ["#"]


@pytest.fixture
def tenants(api):
    """Two fresh tenants, each with a profile allowed to use every general topic."""
    out = []
    for _ in range(2):
        t = api.create_tenant(uid("tenant"))
        assert t.get("id") and t.get("name"), t
        prof = api.create_profile(uid("open"), tenant=t["id"], allow_publish=ALL, allow_subscribe=ALL)
        out.append((t, prof))
    return out


def test_tenants_are_listed(api, tenants):
    body = api.ok(api.get("/api/v1/tenants"))
    rows = body["data"] if isinstance(body, dict) else body
    names = {t["name"] for t in rows}
    assert {"default", tenants[0][0]["name"], tenants[1][0]["name"]} <= names


def test_same_device_name_in_two_tenants(api, tenants):
    (ta, _), (tb, _) = tenants
    a = api.create_device("pump-1", tenant=ta["id"])
    b = api.create_device("pump-1", tenant=tb["name"])  # id or name
    assert a["id"] != b["id"]
    assert a["access_token"] != b["access_token"]
    dup = api.post("/api/v1/devices", {"name": "pump-1", "tenant": ta["id"]})
    assert dup.status_code in (400, 409), dup.text
    assert isinstance(dup.json().get("error"), dict), dup.text


def test_device_listing_is_per_tenant(api, tenants):
    (ta, _), (tb, _) = tenants
    a = api.create_device(uid("only-a"), tenant=ta["id"])
    b = api.create_device(uid("only-b"), tenant=tb["id"])
    ids_a = {d["id"] for d in api.list_devices(ta["id"])}
    ids_b = {d["id"] for d in api.list_devices(tb["id"])}
    assert a["id"] in ids_a and a["id"] not in ids_b
    assert b["id"] in ids_b and b["id"] not in ids_a
    assert not ids_a & ids_b


def test_telemetry_lands_on_the_right_same_named_device(platform, api, clients, tenants):
    (ta, _), (tb, _) = tenants
    a = api.create_device("meter", tenant=ta["id"])
    b = api.create_device("meter", tenant=tb["id"])
    ca = clients.new(platform.mqtt_port, a["access_token"])
    assert ca.publish("v1/devices/me/telemetry", {"kwh": 11}) == 0
    api.wait_latest(a["id"], ["kwh"])
    cb = clients.new(platform.mqtt_port, b["access_token"])
    assert cb.publish("v1/devices/me/telemetry", {"marker": 1}) == 0
    api.wait_latest(b["id"], ["marker"])
    assert not (api.latest(b["id"], ["kwh"]) or {}).get("kwh")
    assert api.latest(a["id"], ["kwh"])["kwh"]["value"] == 11


def test_general_topics_do_not_cross_tenants(platform, api, clients, tenants):
    (ta, pa), (tb, pb) = tenants
    a_pub = api.create_device(uid("apub"), tenant=ta["id"], profile=pa["name"])
    a_sub = api.create_device(uid("asub"), tenant=ta["id"], profile=pa["name"])
    b_pub = api.create_device(uid("bpub"), tenant=tb["id"], profile=pb["name"])
    b_sub = api.create_device(uid("bsub"), tenant=tb["id"], profile=pb["name"])
    sa = clients.new(platform.mqtt_port, a_sub["access_token"], version=V311)
    sb = clients.new(platform.mqtt_port, b_sub["access_token"], version=V5)
    assert sa.subscribe("#") == [1]
    assert sb.subscribe("#") == [1]
    pa_c = clients.new(platform.mqtt_port, a_pub["access_token"])
    pb_c = clients.new(platform.mqtt_port, b_pub["access_token"])

    assert pa_c.publish("plant/line/state", b"tenant-a", qos=1) == 0
    assert pa_c.publish("v1/devices/me/telemetry", {"secret_a": 1}) == 0
    assert pb_c.publish("plant/line/state", b"tenant-b", qos=1) == 0

    # positive controls: each tenant's subscriber sees its own tenant's general traffic
    assert sa.expect("plant/line/state").payload == b"tenant-a"
    assert sb.expect("plant/line/state").payload == b"tenant-b"
    seen_b = sb.collect(QUIET)
    assert all(b"tenant-a" not in m.payload and b"secret_a" not in m.payload for m in seen_b), \
        [(m.topic, m.payload[:80]) for m in seen_b]
    seen_a = sa.collect(QUIET)
    assert all(b"tenant-b" not in m.payload for m in seen_a), [(m.topic, m.payload[:80]) for m in seen_a]


def test_retained_messages_are_per_tenant(platform, api, clients, tenants):
    (ta, pa), (tb, pb) = tenants
    a = api.create_device(uid("aret"), tenant=ta["id"], profile=pa["name"])
    a2 = api.create_device(uid("aret2"), tenant=ta["id"], profile=pa["name"])
    b = api.create_device(uid("bret"), tenant=tb["id"], profile=pb["name"])
    ca = clients.new(platform.mqtt_port, a["access_token"])
    ca.c.publish("status/gw", b"retained-a", qos=1, retain=True).wait_for_publish(5)
    # same tenant sees the retained message (control), the other tenant does not
    ca2 = clients.new(platform.mqtt_port, a2["access_token"])
    assert ca2.subscribe("status/#") == [1]
    assert ca2.expect("status/gw").payload == b"retained-a"
    cb = clients.new(platform.mqtt_port, b["access_token"])
    assert cb.subscribe("status/#") == [1]
    cb.expect_none()


def test_client_id_space_is_per_tenant(platform, api, clients, tenants):
    (ta, _), (tb, _) = tenants
    a = api.create_device(uid("cida"), tenant=ta["id"])
    b = api.create_device(uid("cidb"), tenant=tb["id"])
    cid = uid("shared-client-id")
    ca = clients.new(platform.mqtt_port, a["access_token"], client_id=cid)
    cb = clients.new(platform.mqtt_port, b["access_token"], client_id=cid)
    # no session take-over across tenants: both connections stay up and work
    assert not ca.disconnected.wait(QUIET), f"tenant A's client was disconnected (rc={ca.disconnect_rc})"
    assert ca.publish("v1/devices/me/telemetry", {"x": 1}) == 0
    assert cb.publish("v1/devices/me/telemetry", {"x": 2}) == 0
    assert api.wait_latest(a["id"], ["x"])["x"]["value"] == 1
    assert api.wait_latest(b["id"], ["x"])["x"]["value"] == 2


def test_shared_attributes_and_rpc_do_not_cross(platform, api, clients, tenants):
    (ta, _), (tb, _) = tenants
    a = api.create_device("twin", tenant=ta["id"])
    b = api.create_device("twin", tenant=tb["id"])
    cb = clients.new(platform.mqtt_port, b["access_token"])
    assert cb.subscribe("v1/devices/me/attributes") == [1]
    assert cb.subscribe("v1/devices/me/rpc/request/+") == [1]
    ca = clients.new(platform.mqtt_port, a["access_token"])
    assert ca.subscribe("v1/devices/me/attributes") == [1]
    assert ca.subscribe("v1/devices/me/rpc/request/+") == [1]

    api.set_shared(a["id"], {"only_for_a": 1})
    assert ca.expect("v1/devices/me/attributes").json() == {"only_for_a": 1}
    r = api.rpc(a["id"], {"method": "onlyA", "params": {}, "oneway": True})
    assert r.status_code == 200, r.text
    ca.expect("v1/devices/me/rpc/request/*")
    cb.expect_none()
    assert not (api.attributes(b["id"], "shared").get("shared") or {})


def test_deleting_a_tenant_refuses_its_devices(platform, api):
    t = api.create_tenant(uid("doomed"))
    d = api.create_device(uid("doomed-dev"), tenant=t["id"])
    assert raw_connack(platform.mqtt_port, d["access_token"]) == 0
    r = api.delete(f"/api/v1/tenants/{t['id']}")
    assert r.status_code in (200, 204), r.text
    assert raw_connack(platform.mqtt_port, d["access_token"]) == 0x86


def test_deleting_a_tenant_closes_its_live_device_sessions(platform, api, clients):
    t = api.create_tenant(uid("doomed"))
    d = api.create_device(uid("doomed-dev"), tenant=t["id"])
    c = clients.new(platform.mqtt_port, d["access_token"])
    r = api.delete(f"/api/v1/tenants/{t['id']}")
    assert r.status_code in (200, 204), r.text
    wait_for(lambda: c.disconnected.is_set(), what="the deleted tenant's live device to be disconnected")


def test_deleting_a_device_closes_its_live_session(platform, api, clients):
    d = api.create_device(uid("doomed-dev"))
    c = clients.new(platform.mqtt_port, d["access_token"])
    r = api.delete(f"/api/v1/devices/{d['id']}")
    assert r.status_code in (200, 204), r.text
    wait_for(lambda: c.disconnected.is_set(), what="the deleted device's live session to be disconnected")


def test_deleted_device_token_is_refused(platform, api, clients):
    d = api.create_device(uid("gone"))
    assert raw_connack(platform.mqtt_port, d["access_token"]) == 0
    r = api.delete(f"/api/v1/devices/{d['id']}")
    assert r.status_code in (200, 204), r.text
    assert api.get(f"/api/v1/devices/{d['id']}").status_code == 404
    assert raw_connack(platform.mqtt_port, d["access_token"]) == 0x86


def test_gateway_sub_device_name_never_resolves_to_another_tenant(platform, api, clients, tenants):
    (ta, _), (tb, _) = tenants
    victim = api.create_device("shared-name", tenant=tb["id"])
    gw = api.create_device(uid("gw"), tenant=ta["id"], gateway=True)
    c = clients.new(platform.mqtt_port, gw["access_token"])
    assert c.publish("v1/gateway/telemetry", {"shared-name": {"injected": 1}}) == 0
    sub = wait_for(lambda: next((d for d in api.list_devices(ta["id"]) if d["name"] == "shared-name"), None),
                   what="the sub-device in the gateway's tenant")
    assert sub["id"] != victim["id"]
    api.wait_latest(sub["id"], ["injected"])
    assert not (api.latest(victim["id"], ["injected"]) or {}).get("injected")


def test_two_gateways_only_get_their_own_sub_devices_traffic(platform, api, clients):
    g1 = api.create_device(uid("gw1"), gateway=True)
    g2 = api.create_device(uid("gw2"), gateway=True)
    c1 = clients.new(platform.mqtt_port, g1["access_token"])
    c2 = clients.new(platform.mqtt_port, g2["access_token"])
    for c in (c1, c2):
        assert c.subscribe("v1/gateway/attributes") == [1]
        assert c.subscribe("v1/gateway/rpc") == [1]
    name = uid("sub-of-g1")
    assert c1.publish("v1/gateway/connect", {"device": name, "type": "default"}) == 0
    sub = wait_for(lambda: next((d for d in api.list_devices() if d["name"] == name), None),
                   what="the sub-device")
    api.set_shared(sub["id"], {"k": 1})
    assert c1.expect("v1/gateway/attributes").json() == {"device": name, "data": {"k": 1}}
    assert api.rpc(sub["id"], {"method": "m", "params": {}, "oneway": True}).status_code == 200
    assert c1.expect("v1/gateway/rpc").json()["device"] == name
    c2.expect_none()


def test_device_api_traffic_is_not_visible_to_wildcard_subscribers(platform, api, clients):
    """A device allowed to subscribe `#` in its tenant still never gets commands, attribute
    pushes or telemetry that belong to another device's device API."""
    prof = api.create_profile(uid("open"), allow_publish=ALL, allow_subscribe=ALL)
    target = api.create_device(uid("target"))
    snoop = api.create_device(uid("snoop"), profile=prof["name"])
    cs = clients.new(platform.mqtt_port, snoop["access_token"])
    assert cs.subscribe("#") == [1]
    ct = clients.new(platform.mqtt_port, target["access_token"])
    assert ct.subscribe("v1/devices/me/attributes") == [1]
    assert ct.subscribe("v1/devices/me/rpc/request/+") == [1]
    assert ct.publish("v1/devices/me/telemetry", {"private": 1}) == 0
    assert ct.publish("v1/devices/me/attributes", {"private_attr": 1}) == 0
    api.set_shared(target["id"], {"private_shared": 1})
    assert api.rpc(target["id"], {"method": "privateCmd", "params": {}, "oneway": True}).status_code == 200
    ct.expect("v1/devices/me/attributes")
    ct.expect("v1/devices/me/rpc/request/*")
    seen = cs.collect(QUIET)
    assert not seen, [(m.topic, m.payload[:80]) for m in seen]
