"""Device state as server-side attributes: MQTT devices are active while connected; HTTP and CoAP
devices while their traffic is newer than the profile's inactivity timeout. Customers group
devices."""

from __future__ import annotations

import requests

from ib_platform import uid, wait_for


def server_attr(api, device_id: str, key: str):
    return api.attributes(device_id, "server").get("server", {}).get(key, {}).get("value")


def test_mqtt_device_is_active_while_connected(platform, api, clients):
    d = api.create_device(uid("state"))
    c = clients.new(platform.mqtt_port, d["access_token"])
    wait_for(lambda: server_attr(api, d["id"], "active") is True, what="active after connect")
    assert isinstance(server_attr(api, d["id"], "lastConnectTime"), int)
    c.close()
    wait_for(lambda: server_attr(api, d["id"], "active") is False, what="inactive after disconnect")
    assert isinstance(server_attr(api, d["id"], "lastDisconnectTime"), int)


def test_http_device_goes_inactive_after_its_profile_timeout(platform, api):
    profile = api.create_profile(uid("quick"), inactivity_timeout_ms=300)
    d = api.create_device(uid("httpstate"), profile=profile["name"])
    r = requests.post(f"{platform.http_url}/api/v1/{d['access_token']}/telemetry", json={"x": 1}, timeout=10)
    assert r.status_code == 200
    wait_for(lambda: server_attr(api, d["id"], "active") is True, what="active after traffic")
    wait_for(lambda: server_attr(api, d["id"], "active") is False, timeout=10,
             what="inactive once the 300 ms inactivity timeout passed")
    assert isinstance(server_attr(api, d["id"], "lastActivityTime"), int)


def test_customers_group_devices(api):
    name = uid("cust")
    r = api.post("/api/v1/customers", {"name": name})
    assert r.status_code == 201, r.text
    customer = r.json()
    d = api.create_device(uid("owned"), customer=name)
    assert d["customer"] == customer["id"]
    listed = api.get("/api/v1/customers").json()["data"]
    assert any(c["id"] == customer["id"] for c in listed)
    r = api.post("/api/v1/devices", {"name": uid("nocust"), "customer": "no-such-customer"})
    assert r.status_code == 404, r.text
