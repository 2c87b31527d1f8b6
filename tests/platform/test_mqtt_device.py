"""MQTT device API: telemetry, client/shared attributes, attribute requests, bad payloads."""

from __future__ import annotations

import pytest

from ib_mqtt import V5, V311, VERSIONS
from ib_platform import now_ms, uid, wait_for

TELEMETRY = "v1/devices/me/telemetry"
ATTRIBUTES = "v1/devices/me/attributes"


@pytest.fixture
def dev(api):
    return api.create_device(uid("mqttdev"))


def values(latest: dict) -> dict:
    return {k: v["value"] for k, v in latest.items()}


# ---------------------------------------------------------------------------
# telemetry


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_telemetry_plain_object_keeps_value_types(platform, api, clients, dev, version):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=version)
    sent = {"i": 42, "f": 21.5, "b": True, "s": "hello", "j": {"a": 1, "b": [1, "x"]}}
    assert c.publish(TELEMETRY, sent) == 0
    got = api.wait_latest(dev["id"], list(sent))
    vals = values(got)
    assert vals == sent
    assert type(vals["i"]) is int and type(vals["f"]) is float and vals["b"] is True
    for k in sent:
        assert isinstance(got[k]["ts"], int) and abs(got[k]["ts"] - now_ms()) < 60_000, got[k]


def test_telemetry_ts_values_form_keeps_device_timestamp(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    ts = now_ms() - 5_000
    assert c.publish(TELEMETRY, {"ts": ts, "values": {"temp": 19.25, "door": False}}) == 0
    got = api.wait_latest(dev["id"], ["temp", "door"])
    assert got["temp"] == {"ts": ts, "value": 19.25}
    assert got["door"] == {"ts": ts, "value": False}
    series = api.timeseries(dev["id"], ["temp"], ts - 1000, ts + 1000)
    assert series["temp"] == [{"ts": ts, "value": 19.25}]


def test_telemetry_array_of_both_forms(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=V311)
    t1 = now_ms() - 10_000
    t2 = t1 + 1_000
    payload = [
        {"ts": t1, "values": {"level": 1}},
        {"ts": t2, "values": {"level": 2}},
        {"mode": "auto"},
    ]
    assert c.publish(TELEMETRY, payload) == 0
    got = api.wait_latest(dev["id"], ["level", "mode"])
    assert got["level"] == {"ts": t2, "value": 2}
    assert got["mode"]["value"] == "auto"
    series = wait_for(lambda: (s := api.timeseries(dev["id"], ["level"], t1 - 1, t2 + 1))
                      and len(s.get("level", [])) == 2 and s, what="both points of the array")
    assert sorted((p["ts"], p["value"]) for p in series["level"]) == [(t1, 1), (t2, 2)]


# ---------------------------------------------------------------------------
# attributes


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_client_attributes_are_stored(platform, api, clients, dev, version):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=version)
    attrs = {"fw": "1.0.3", "slots": 3, "battery": 87.5, "sleepy": True}
    assert c.publish(ATTRIBUTES, attrs) == 0
    got = api.wait_attributes(dev["id"], "client", list(attrs))
    assert {k: v["value"] for k, v in got.items()} == attrs
    assert all(isinstance(v["ts"], int) for v in got.values()), got
    # client attributes are not shared attributes
    assert not set(attrs) & set((api.attributes(dev["id"], "shared") or {}).get("shared") or {})


def _prepare_attributes(platform, api, clients, dev):
    api.set_shared(dev["id"], {"sh1": "alpha", "sh2": 5})
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.publish(ATTRIBUTES, {"c1": 1, "c2": "two"}) == 0
    api.wait_attributes(dev["id"], "client", ["c1", "c2"])
    assert c.subscribe("v1/devices/me/attributes/response/+") == [1]
    return c


def test_attribute_request_with_client_and_shared_keys(platform, api, clients, dev):
    c = _prepare_attributes(platform, api, clients, dev)
    m = c.request("v1/devices/me/attributes/request/1", "v1/devices/me/attributes/response/1",
                  {"clientKeys": "c1", "sharedKeys": "sh2,nosuchkey"})
    assert m.json() == {"client": {"c1": 1}, "shared": {"sh2": 5}}


def test_attribute_request_without_keys_returns_all(platform, api, clients, dev):
    c = _prepare_attributes(platform, api, clients, dev)
    m = c.request("v1/devices/me/attributes/request/7", "v1/devices/me/attributes/response/7", {})
    assert m.json() == {"client": {"c1": 1, "c2": "two"}, "shared": {"sh1": "alpha", "sh2": 5}}


def test_attribute_request_ids_are_echoed(platform, api, clients, dev):
    c = _prepare_attributes(platform, api, clients, dev)
    for req_id in (3, 12345):
        m = c.request(f"v1/devices/me/attributes/request/{req_id}",
                      "v1/devices/me/attributes/response/*", {"sharedKeys": "sh1"})
        assert m.topic == f"v1/devices/me/attributes/response/{req_id}"
        assert m.json()["shared"] == {"sh1": "alpha"}


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_shared_attribute_update_and_delete_are_pushed(platform, api, clients, dev, version):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=version)
    assert c.subscribe(ATTRIBUTES) == [1]
    api.set_shared(dev["id"], {"target": 21, "mode": "eco"})
    assert c.expect(ATTRIBUTES).json() == {"target": 21, "mode": "eco"}
    shared = api.attributes(dev["id"], "shared")["shared"]
    assert {k: v["value"] for k, v in shared.items()} == {"target": 21, "mode": "eco"}

    api.delete_shared(dev["id"], ["mode"])
    assert c.expect(ATTRIBUTES).json() == {"deleted": ["mode"]}
    shared = api.attributes(dev["id"], "shared")["shared"]
    assert set(shared) == {"target"}


def test_client_attribute_publish_is_not_echoed_to_the_device(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.subscribe(ATTRIBUTES) == [1]
    assert c.publish(ATTRIBUTES, {"own": 1}) == 0
    api.wait_attributes(dev["id"], "client", ["own"])
    c.expect_none(topic=ATTRIBUTES)


# ---------------------------------------------------------------------------
# bad payloads: MQTT 5 PUBACK 0x99; 3.1.1 acknowledged but nothing stored


@pytest.mark.parametrize("topic", [TELEMETRY, ATTRIBUTES])
def test_v5_bad_json_is_refused_with_0x99(platform, api, clients, dev, topic):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=V5)
    assert c.publish(topic, b'{"k": 1,') == 0x99
    assert c.last_puback_reason, "PUBACK 0x99 without a reason string"
    assert c.publish(topic, b"\xff\xfe not json") == 0x99
    # the connection stays usable
    assert c.publish(TELEMETRY, {"after": 1}) == 0
    api.wait_latest(dev["id"], ["after"])


def test_v311_bad_json_is_acked_but_not_stored(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=V311)
    assert c.publish(TELEMETRY, {"k": 1}) == 0
    first = api.wait_latest(dev["id"], ["k"])["k"]
    assert c.publish(TELEMETRY, b'{"k": 2') == 0      # QoS 1: PUBACK arrives
    assert c.connected.is_set(), "a bad payload must not cost the connection"
    # a later good message on the same connection is processed after the bad one
    assert c.publish(TELEMETRY, {"marker": 1}) == 0
    api.wait_latest(dev["id"], ["marker"])
    assert api.latest(dev["id"], ["k"])["k"] == first


def test_rejected_payloads_are_counted(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=V311)
    before = platform.metric("device_messages_rejected_total")
    assert c.publish(TELEMETRY, b"not json") == 0
    wait_for(lambda: platform.metric("device_messages_rejected_total") > before,
             what="device_messages_rejected_total to grow")


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_array_with_one_bad_element_stores_nothing(platform, api, clients, dev, version):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=version)
    assert c.publish(TELEMETRY, {"k": 1}) == 0
    first = api.wait_latest(dev["id"], ["k"])["k"]
    ts = now_ms()
    bad = [{"ts": ts, "values": {"k": 2, "fresh": 1}}, {"k": 3}, 17]
    rc = c.publish(TELEMETRY, bad)
    assert rc == (0x99 if version == V5 else 0)
    assert c.publish(TELEMETRY, {"marker": 1}) == 0
    api.wait_latest(dev["id"], ["marker"])
    latest = api.latest(dev["id"], ["k", "fresh"])
    assert latest.get("k") == first
    assert not latest.get("fresh"), latest


def test_bad_element_inside_ts_values_stores_nothing(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"], version=V5)
    rc = c.publish(TELEMETRY, [{"ts": now_ms(), "values": {"ok1": 1}}, {"ts": "yesterday", "values": {"ok2": 2}}])
    assert rc == 0x99
    assert c.publish(TELEMETRY, {"marker": 1}) == 0
    api.wait_latest(dev["id"], ["marker"])
    latest = api.latest(dev["id"], ["ok1", "ok2"]) or {}
    assert not latest.get("ok1") and not latest.get("ok2"), latest


def test_timeseries_query_respects_from_and_to(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    t0 = now_ms() - 60_000
    pts = [{"ts": t0 + i * 1000, "values": {"r": i}} for i in range(5)]
    assert c.publish(TELEMETRY, pts) == 0
    wait_for(lambda: len(api.timeseries(dev["id"], ["r"], t0 - 1, t0 + 10_000).get("r", [])) == 5,
             what="five points")
    mid = api.timeseries(dev["id"], ["r"], t0 + 1000, t0 + 3000)["r"]
    assert sorted(p["ts"] for p in mid) in ([t0 + 1000, t0 + 2000, t0 + 3000], [t0 + 1000, t0 + 2000]), mid
    assert api.timeseries(dev["id"], ["r"], t0 - 10_000, t0 - 1).get("r", []) == []


def test_latest_ignores_older_points(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    t = now_ms()
    assert c.publish(TELEMETRY, {"ts": t, "values": {"o": "new"}}) == 0
    api.wait_latest(dev["id"], ["o"])
    assert c.publish(TELEMETRY, {"ts": t - 10_000, "values": {"o": "old", "probe": 1}}) == 0
    api.wait_latest(dev["id"], ["probe"])
    assert api.latest(dev["id"], ["o"])["o"] == {"ts": t, "value": "new"}


def test_shared_attributes_rest_rejects_non_object(api, dev):
    from ib_platform import assert_error_body
    assert_error_body(api.post(f"/api/v1/devices/{dev['id']}/attributes/shared", [1, 2]), 400)


def test_telemetry_value_edge_cases_keep_types(platform, api, clients, dev):
    c = clients.new(platform.mqtt_port, dev["access_token"])
    sent = {"big": 9007199254740993, "neg": -5, "zero": 0, "tiny": 1.5e-7, "fint": 2.0,
            "uni": "température ✓", "empty": "", "nested": {"a": {"b": [True, None, 1.25]}}}
    assert c.publish(TELEMETRY, sent) == 0
    got = values(api.wait_latest(dev["id"], list(sent)))
    assert got == sent
    assert type(got["big"]) is int and type(got["fint"]) is float and type(got["zero"]) is int


def test_shared_attribute_pushes_are_not_retained(platform, api, clients, dev):
    """Shared-attribute pushes are not retained: a device subscribing later gets none."""
    api.set_shared(dev["id"], {"r": 1})
    c = clients.new(platform.mqtt_port, dev["access_token"])
    assert c.subscribe(ATTRIBUTES) == [1]
    c.expect_none(topic=ATTRIBUTES)
