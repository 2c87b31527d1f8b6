"""Telemetry storage through the platform: retention drops whole partitions (and disk use
falls), the disk guard refuses new telemetry on every transport and recovers by itself, raw
ranges and CSV export, deletion of a device's data, usage per tenant."""

from __future__ import annotations

import socket

import pytest
import requests
from aiocoap import Code

from ib_mqtt import V5, V311
from ib_platform import Platform, now_ms, uid, wait_for
from test_coap import coap, uri

DAY = 86_400_000


@pytest.fixture
def tuned(tmp_path):
    """A platform with a fast retention pass and a file-backed free-space reading."""
    probe = tmp_path / "free-bytes"
    probe.write_text(str(10 << 30))
    p = Platform(tmp_path / "platform", config=(
        "[storage]\nretention_check_s = 1\nseal_interval_s = 1\nmin_free_mb = 100\n"
        f"free_bytes_file = \"{probe}\"\n"
    )).start()
    p.probe = probe
    p.api.login()
    yield p
    p.stop()


def telemetry(p: Platform, token: str, body) -> requests.Response:
    return requests.post(f"{p.http_url}/api/v1/{token}/telemetry", json=body, timeout=10)


def test_retention_drops_old_partitions_and_disk_use_falls(tuned):
    p = tuned
    short = p.api.create_tenant(uid("short"))
    other = p.api.create_tenant(uid("other"))
    d = p.api.create_device(uid("ret"), tenant=short["id"])
    keep = p.api.create_device(uid("keep"), tenant=other["id"])
    now = now_ms()
    body = [{"ts": now - k * DAY, "values": {"v": k}} for k in range(0, 8)]
    for dev in (d, keep):
        assert telemetry(p, dev["access_token"], body).status_code == 200

    def usage(t):
        return p.api.get(f"/api/v1/tenants/{t['id']}/usage").json()["telemetry_bytes"]

    # Sealed into one partition file per day within a second (seal_interval_s = 1).
    wait_for(lambda: usage(short) > 0 and usage(other) > 0, what="the points to be sealed")
    before = usage(short)
    r = p.api.s.put(p.api.url(f"/api/v1/tenants/{short['id']}/retention"), json={"retention_days": 2})
    assert r.status_code == 200 and r.json()["retention_days"] == 2, r.text
    wait_for(lambda: usage(short) < before, what="retention to delete the old partition files")

    # The partition files go one after the other: poll until the last is gone. Partitions are
    # whole days: what remains is at most the last 2 days plus today's.
    def left():
        values = sorted(x["value"] for x in p.api.timeseries(d["id"], ["v"], now - 10 * DAY)["v"])
        return values in ([0, 1], [0, 1, 2]) or None

    wait_for(left, what="only the retained days to be readable")
    assert len(p.api.timeseries(keep["id"], ["v"], now - 10 * DAY)["v"]) == 8, "other tenants keep theirs"


def test_profile_retention_overrides_the_tenants(tuned):
    p = tuned
    profile = p.api.create_profile(uid("brief"), retention_days=1)
    d = p.api.create_device(uid("brief"), profile=profile["name"])
    now = now_ms()
    body = [{"ts": now - k * DAY, "values": {"v": k}} for k in range(0, 5)]
    assert telemetry(p, d["access_token"], body).status_code == 200
    wait_for(lambda: len(p.api.timeseries(d["id"], ["v"], now - 10 * DAY).get("v", [])) <= 2,
             what="the profile's 1-day retention")


def test_disk_guard_refuses_then_recovers(tuned, clients):
    p = tuned
    d = p.api.create_device(uid("guard"))
    token = d["access_token"]
    assert telemetry(p, token, {"before": 1}).status_code == 200
    p.probe.write_text(str(10 << 20))  # 10 MiB free: below 100 MiB
    wait_for(lambda: telemetry(p, token, {"probe": 1}).status_code == 507, what="the guard to trip")
    r = telemetry(p, token, {"x": 1})
    assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage"
    # MQTT 5: PUBACK 0x97; MQTT 3.1.1: no PUBACK, the connection is closed (nothing is lost).
    c5 = clients.new(p.mqtt_port, token, version=V5)
    assert c5.publish("v1/devices/me/telemetry", {"x": 1}) == 0x97
    c3 = clients.new(p.mqtt_port, token, version=V311)
    c3.c.publish("v1/devices/me/telemetry", '{"x":1}', qos=1)
    wait_for(lambda: c3.disconnected.is_set(), what="the 3.1.1 client to be disconnected")
    # CoAP: 5.03.
    resp = coap(Code.POST, uri(p, token, "telemetry"), {"x": 1})
    assert resp.code == Code.SERVICE_UNAVAILABLE, resp
    # Reads go on.
    assert p.api.latest(d["id"], ["before"])["before"]["value"] == 1
    p.probe.write_text(str(10 << 30))
    wait_for(lambda: telemetry(p, token, {"after": 1}).status_code == 200, what="the guard to release")
    assert p.api.latest(d["id"], ["after"])["after"]["value"] == 1


def test_csv_export_and_deleting_a_devices_data(platform, api):
    d = api.create_device(uid("csv"))
    t0 = now_ms() - 60_000
    body = [{"ts": t0 + i, "values": {"a": i, "s": f"x,{i}"}} for i in range(5)]
    assert telemetry(platform, d["access_token"], body).status_code == 200
    r = api.get(f"/api/v1/devices/{d['id']}/telemetry",
                params={"keys": "a,s", "from": t0, "to": t0 + 10, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().split("\n")
    assert lines[0] == "key,ts,value"
    assert f"a,{t0},0" in lines
    assert f'"s",{t0 + 1},"""x,1"""' in lines or f's,{t0 + 1},"""x,1"""' in lines, lines
    r = api.delete(f"/api/v1/devices/{d['id']}/telemetry", params={"from": t0 + 1, "to": t0 + 3})
    assert r.status_code == 204, r.text
    left = api.timeseries(d["id"], ["a"], t0, t0 + 10)["a"]
    assert [x["value"] for x in left] == [0, 4]
    assert api.delete(f"/api/v1/devices/{d['id']}/telemetry").status_code == 204
    assert api.timeseries(d["id"], ["a"], t0, t0 + 10).get("a", []) == []
    assert api.latest(d["id"], ["a"]) == {}


def test_timestamps_outside_the_window_are_refused(platform, api):
    d = api.create_device(uid("window"))
    far = now_ms() + 10 * DAY
    r = telemetry(platform, d["access_token"], {"ts": far, "values": {"v": 1}})
    assert r.status_code == 400 and "window" in r.json()["error"]["message"]
    r = telemetry(platform, d["access_token"], [{"ts": now_ms(), "values": {"ok": 1}},
                                               {"ts": 5, "values": {"old": 1}}])
    assert r.status_code == 400
    assert api.latest(d["id"], ["ok"]) == {}, "nothing of a refused message is stored"


def test_a_value_of_the_wrong_type_for_a_declared_key_is_refused(platform, api, clients):
    profile = api.create_profile(uid("typed"), telemetry_types={"temp": "number", "on": "boolean"})
    d = api.create_device(uid("typed"), profile=profile["name"])
    r = telemetry(platform, d["access_token"], {"temp": "hot", "other": 1})
    assert r.status_code == 400 and "declared" in r.json()["error"]["message"], r.text
    c = clients.new(platform.mqtt_port, d["access_token"], version=V5)
    assert c.publish("v1/devices/me/telemetry", {"on": 1}) == 0x99
    assert api.latest(d["id"], ["other", "on"]) == {}, "nothing of a refused message is stored"
    assert telemetry(platform, d["access_token"], {"temp": 21.5, "on": True, "free": "x"}).status_code == 200
    assert api.latest(d["id"], ["temp"])["temp"]["value"] == 21.5
