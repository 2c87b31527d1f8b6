"""Device provisioning over MQTT (user name `provision`) and HTTP."""

from __future__ import annotations

import pytest
import requests

from ib_mqtt import V5, VERSIONS
from ib_platform import uid, wait_for


@pytest.fixture
def prov_profile(api):
    key, secret = uid("pkey"), uid("psecret")
    prof = api.create_profile(uid("provprof"), provision_key=key, provision_secret=secret)
    return prof, key, secret


def provision(platform, clients, request: dict, version=V5) -> dict:
    c = clients.new(platform.mqtt_port, "provision", version=version)
    assert c.subscribe("/provision/response") == [1]
    m = c.request("/provision/request", "/provision/response", request)
    return m.json()


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_provision_success_gives_a_working_token(platform, api, clients, prov_profile, version):
    prof, key, secret = prov_profile
    name = uid("provisioned")
    resp = provision(platform, clients, {"deviceName": name, "provisionDeviceKey": key,
                                         "provisionDeviceSecret": secret}, version)
    assert resp["status"] == "SUCCESS", resp
    assert resp["credentialsType"] == "ACCESS_TOKEN", resp
    token = resp["credentialsValue"]
    assert isinstance(token, str) and len(token) == 24, resp
    dev = wait_for(lambda: next((d for d in api.list_devices() if d["name"] == name), None),
                   what="the provisioned device in the registry")
    c = clients.new(platform.mqtt_port, token, version=version)
    assert c.publish("v1/devices/me/telemetry", {"hello": 1}) == 0
    api.wait_latest(dev["id"], ["hello"])
    full = api.ok(api.get(f"/api/v1/devices/{dev['id']}"))
    assert prof["name"] in str(full.get("profile")) or str(prof.get("id")) in str(full.get("profile")), full


def test_provision_wrong_secret_fails(platform, api, clients, prov_profile):
    _, key, _ = prov_profile
    name = uid("nope")
    resp = provision(platform, clients, {"deviceName": name, "provisionDeviceKey": key,
                                         "provisionDeviceSecret": "wrong"})
    assert resp["status"] in ("FAILURE", "NOT_FOUND"), resp
    assert "credentialsValue" not in resp
    assert all(d["name"] != name for d in api.list_devices())


def test_provision_unknown_key_fails(platform, api, clients):
    resp = provision(platform, clients, {"deviceName": uid("nope"), "provisionDeviceKey": uid("nokey"),
                                         "provisionDeviceSecret": "x"})
    assert resp["status"] in ("FAILURE", "NOT_FOUND"), resp


def test_provision_session_cannot_use_the_device_api(platform, clients):
    c = clients.new(platform.mqtt_port, "provision", version=V5)
    assert c.publish("v1/devices/me/telemetry", {"x": 1}) >= 0x80
    assert c.subscribe("v1/devices/me/attributes") == [0x87]


def test_provision_twice_with_the_same_name_fails(platform, api, clients, prov_profile):
    _, key, secret = prov_profile
    req = {"deviceName": uid("twice"), "provisionDeviceKey": key, "provisionDeviceSecret": secret}
    assert provision(platform, clients, req)["status"] == "SUCCESS"
    second = provision(platform, clients, req)
    assert second["status"] in ("FAILURE", "NOT_FOUND"), second


def test_provision_over_http(platform, api, clients, prov_profile):
    _, key, secret = prov_profile
    name = uid("httpprov")
    r = requests.post(f"{platform.http_url}/api/v1/provision",
                      json={"deviceName": name, "provisionDeviceKey": key, "provisionDeviceSecret": secret},
                      timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCESS" and body["credentialsType"] == "ACCESS_TOKEN", body
    r = requests.post(f"{platform.http_url}/api/v1/{body['credentialsValue']}/telemetry", json={"h": 1},
                      timeout=10)
    assert r.status_code == 200, r.text
    bad = requests.post(f"{platform.http_url}/api/v1/provision",
                        json={"deviceName": uid("x"), "provisionDeviceKey": key, "provisionDeviceSecret": "no"},
                        timeout=10)
    assert bad.status_code in (200, 401, 403, 404), bad.text
    if bad.status_code == 200:
        assert bad.json()["status"] in ("FAILURE", "NOT_FOUND"), bad.text
