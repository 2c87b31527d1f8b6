"""The rule engine end to end: devices are real MQTT clients (paho), rules are made through the
REST API, webhooks go to a local HTTP listener. Timestamps are injected (`{"ts", "values"}`), so
`for` durations need no waiting.

- health: heart rate > 120 for 1 minute → CRITICAL alarm + webhook; the alarm clears with
  hysteresis (below 100), and only then.
- sensor → actuator: dry soil on one device → `setPump` RPC reaches another device over MQTT;
  wet again → a second rule turns it off.
- bad rules are refused at save time with the error's position.
- a failing webhook is retried, then recorded as a failed action on the rule.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ib_platform import assert_error_body, now_ms, uid, wait_for

REQ = "v1/devices/me/rpc/request/+"


class Hooks:
    """A local HTTP listener recording POSTed JSON bodies (status configurable)."""

    def __init__(self, status: int = 200):
        self.bodies: list[dict] = []
        self.status = status
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                n = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(n)
                hooks.bodies.append(json.loads(body or b"null"))
                self.send_response(hooks.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def hooks():
    h = Hooks()
    yield h
    h.close()


def create_rule(api, body: dict) -> dict:
    r = api.post("/api/v1/rules", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def alarms(api, device_id: str, status: str = "active") -> list[dict]:
    r = api.get(f"/api/v1/alarms?device={device_id}&status={status}")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def send(client, t0: int, second: int, **values) -> None:
    client.publish("v1/devices/me/telemetry", json.dumps({"ts": t0 + second * 1000, "values": values}))


def test_heart_rate_alarm_with_duration_webhook_and_hysteresis(platform, api, clients, hooks):
    profile = api.create_profile(uid("monitor"))
    dev = api.create_device(uid("patient"), profile=profile["name"])
    create_rule(api, {
        "name": uid("tachycardia"),
        "scope": {"profile": profile["name"]},
        "condition": "hr > 120",
        "for": "1m",
        "clear": "hr < 100",
        "actions": [
            {"type": "alarm", "alarm": "High heart rate", "severity": "CRITICAL"},
            {"type": "webhook", "url": hooks.url},
        ],
    })
    c = clients.new(platform.mqtt_port, dev["access_token"])
    t0 = now_ms() - 3_600_000
    send(c, t0, 0, hr=130)
    send(c, t0, 30, hr=135)
    # Not yet a minute: nothing.
    api.wait_latest(dev["id"], ["hr"])
    assert alarms(api, dev["id"]) == []
    send(c, t0, 61, hr=128)
    found = wait_for(lambda: alarms(api, dev["id"]), what="the alarm")
    assert len(found) == 1
    alarm = found[0]
    assert (alarm["type"], alarm["severity"], alarm["status"]) == ("High heart rate", "CRITICAL", "ACTIVE_UNACK")
    body = wait_for(lambda: hooks.bodies and hooks.bodies[0], what="the webhook")
    assert body["device"] == dev["id"] and body["values"]["hr"] == 128 and body["phase"] == "fire"
    # Between the thresholds the alarm stays; below 100 it clears.
    send(c, t0, 70, hr=110)
    send(c, t0, 80, hr=140)
    send(c, t0, 90, hr=95)
    wait_for(lambda: alarms(api, dev["id"], "cleared"), what="the clear")
    assert alarms(api, dev["id"]) == []
    assert len(alarms(api, dev["id"], "cleared")) == 1, "one alarm, raised once"
    assert len(hooks.bodies) == 1, "the webhook fires when the rule fires, not on clear"


def test_dry_soil_switches_a_pump_on_another_device(platform, api, clients):
    sensor = api.create_device(uid("soil"))
    pump = api.create_device(uid("pump"))
    for name, cond, on in [("on", "moisture < 20.0", True), ("off", "moisture > 35.0", False)]:
        create_rule(api, {
            "name": uid(f"pump-{name}"),
            "scope": {"device": sensor["name"]},
            "condition": cond,
            "actions": [{"type": "rpc", "method": "setPump", "params": {"on": on}, "device": pump["name"]}],
        })
    p = clients.new(platform.mqtt_port, pump["access_token"])
    assert p.subscribe(REQ) == [1]
    s = clients.new(platform.mqtt_port, sensor["access_token"])
    t0 = now_ms()
    send(s, t0, 0, moisture=25.0)
    send(s, t0, 1, moisture=15.0)
    m = p.expect(timeout=10)
    assert json.loads(m.payload) == {"method": "setPump", "params": {"on": True}}
    p.publish("v1/devices/me/rpc/response/" + m.topic.rsplit("/", 1)[1], json.dumps({"ok": True}))
    # Still dry: no second command.
    send(s, t0, 2, moisture=14.0)
    p.expect_none()
    send(s, t0, 3, moisture=40.0)
    m = p.expect(timeout=10)
    assert json.loads(m.payload) == {"method": "setPump", "params": {"on": False}}


@pytest.mark.parametrize("condition,fragment", [
    ("soil_moisture < ", "line 1, column"),
    ("bogus(temp) > 1.0", "unknown function"),
    ("temp + 1", "add"),
    ("temp * 2.0", "true or false"),
])
def test_bad_rules_are_refused_with_the_error(api, condition, fragment):
    r = api.post("/api/v1/rules", json={
        "name": uid("bad"), "scope": {"tenant": True}, "condition": condition,
        "actions": [{"type": "log"}],
    })
    body = assert_error_body(r, 400)
    assert fragment in body["message"], body


def test_unknown_keys_are_refused_when_the_profile_declares_its_keys(api):
    profile = api.create_profile(uid("typed"), telemetry_types={"temp": "number"})
    r = api.post("/api/v1/rules", json={
        "name": uid("typo"), "scope": {"profile": profile["name"]}, "condition": "tmep > 30.0",
        "actions": [{"type": "log"}],
    })
    body = assert_error_body(r, 400)
    assert 'unknown key "tmep"' in body["message"], body


def test_a_failing_webhook_is_retried_then_recorded(platform, api, clients):
    down = Hooks(status=503)
    try:
        dev = api.create_device(uid("door"))
        rule = create_rule(api, {
            "name": uid("door-open"),
            "scope": {"device": dev["name"]},
            "condition": "open == true",
            "actions": [{"type": "webhook", "url": down.url, "body": '{"door": "{{device.name}}"}'}],
        })
        c = clients.new(platform.mqtt_port, dev["access_token"])
        c.publish("v1/devices/me/telemetry", json.dumps({"open": True}))

        def failed():
            r = api.get(f"/api/v1/rules/{rule['id']}/failures")
            assert r.status_code == 200, r.text
            return r.json()

        failures = wait_for(failed, timeout=30, what="the recorded failure")
        assert failures[0]["action"] == "webhook" and "503" in failures[0]["error"], failures
        assert len(down.bodies) >= 2, "retried"
        assert down.bodies[0] == {"door": dev["name"]}
        r = api.get(f"/api/v1/rules/{rule['id']}")
        assert "503" in r.json()["last_error"]
    finally:
        down.close()


class Weather:
    """A local forecast service (GET → JSON), its answer set by the test."""

    def __init__(self, rain_mm: float):
        self.answer = {"rain_mm": rain_mm}
        weather = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = json.dumps(weather.answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/forecast"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_irrigation_waters_only_when_dry_and_no_rain_is_forecast(platform, api, clients):
    weather = Weather(rain_mm=0.0)
    try:
        src = api.post("/api/v1/sources", json={"name": uid("weather"), "url": weather.url, "every": "1s"})
        assert src.status_code == 201, src.text
        src = src.json()

        def fetched(rain):
            s = api.get(f"/api/v1/sources/{src['id']}").json()
            return s["last_value"] == {"rain_mm": rain} and s

        wait_for(lambda: fetched(0.0), what="the first forecast")
        profile = api.create_profile(uid("soil-sensor"))
        sensor = api.create_device(uid("field"), profile=profile["name"])
        create_rule(api, {
            "name": uid("irrigate"),
            "scope": {"profile": profile["name"]},
            "condition": f'soil_moisture < 20.0 && external("{src["name"]}").rain_mm < 1.0',
            "clear": "soil_moisture > 35.0",
            "actions": [{"type": "rpc", "method": "setPump", "params": {"on": True}}],
        })
        create_rule(api, {
            "name": uid("stop-irrigating"),
            "scope": {"profile": profile["name"]},
            "condition": "soil_moisture > 35.0",
            "actions": [{"type": "rpc", "method": "setPump", "params": {"on": False}}],
        })
        c = clients.new(platform.mqtt_port, sensor["access_token"])
        assert c.subscribe(REQ) == [1]
        # Dry, but rain is forecast: no watering.
        weather.answer = {"rain_mm": 6.5}
        wait_for(lambda: fetched(6.5), what="the rainy forecast")
        c.publish("v1/devices/me/telemetry", json.dumps({"soil_moisture": 12.0}))
        c.expect_none()
        # Dry and no rain: the pump goes on.
        weather.answer = {"rain_mm": 0.2}
        wait_for(lambda: fetched(0.2), what="the dry forecast")
        c.publish("v1/devices/me/telemetry", json.dumps({"soil_moisture": 11.0}))
        m = c.expect(timeout=10)
        assert json.loads(m.payload) == {"method": "setPump", "params": {"on": True}}
        # The soil recovers: the pump goes off.
        c.publish("v1/devices/me/telemetry", json.dumps({"soil_moisture": 40.0}))
        m = c.expect(timeout=10)
        assert json.loads(m.payload) == {"method": "setPump", "params": {"on": False}}
    finally:
        weather.close()


def test_fleet_geofence_exit_and_unauthorized_stop(platform, api, clients):
    route = api.post("/api/v1/geofences", json={
        "name": uid("route"),
        "polygon": [[13.0, 52.0], [14.0, 52.0], [14.0, 53.0], [13.0, 53.0]],
    })
    assert route.status_code == 201, route.text
    depot = api.post("/api/v1/geofences", json={
        "name": uid("depot"), "circle": {"lon": 13.40, "lat": 52.52, "radius_m": 300.0},
    })
    assert depot.status_code == 201, depot.text
    route, depot = route.json()["name"], depot.json()["name"]
    truck = api.create_device(uid("truck"))
    create_rule(api, {
        "name": uid("left-route"), "scope": {"device": truck["name"]},
        "condition": f'!inside("{route}")',
        "actions": [{"type": "alarm", "alarm": "Left the route", "severity": "MAJOR"}],
    })
    create_rule(api, {
        "name": uid("stop"), "scope": {"device": truck["name"]},
        "condition": f'speed < 1.0 && !inside("{depot}")', "for": "15m",
        "actions": [{"type": "alarm", "alarm": "Unauthorized stop", "severity": "WARNING"}],
    })
    c = clients.new(platform.mqtt_port, truck["access_token"])
    t0 = now_ms() - 7_200_000

    def at(minute: int, lat: float, lon: float, speed: float) -> None:
        c.publish("v1/devices/me/telemetry", json.dumps(
            {"ts": t0 + minute * 60_000, "values": {"latitude": lat, "longitude": lon, "speed": speed}}))

    # Stopped 20 minutes in the depot: fine.
    for m in range(0, 21, 5):
        at(m, 52.5201, 13.4001, 0.0)
    # Driving, then stopped 10 minutes outside: not yet.
    at(25, 52.60, 13.50, 60.0)
    at(30, 52.61, 13.51, 0.0)
    at(40, 52.61, 13.51, 0.0)
    api.wait_latest(truck["id"], ["speed"])
    assert alarms(api, truck["id"]) == []
    # Fifteen minutes: an unauthorized stop.
    at(45, 52.61, 13.51, 0.0)
    found = wait_for(lambda: alarms(api, truck["id"]), what="the stop alarm")
    assert [a["type"] for a in found] == ["Unauthorized stop"], found
    # Leaving the route's polygon, driving: the route alarm; the stop is over (cleared).
    at(50, 53.20, 13.50, 70.0)
    wait_for(lambda: [a["type"] for a in alarms(api, truck["id"])] == ["Left the route"],
             what="the geofence alarm")
    assert [a["type"] for a in alarms(api, truck["id"], "cleared")] == ["Unauthorized stop"]


def test_backtest_lists_when_a_rule_would_have_fired(platform, api, clients):
    dev = api.create_device(uid("press"))
    c = clients.new(platform.mqtt_port, dev["access_token"])
    t0 = now_ms() - 3_600_000
    series = [{"ts": t0 + i * 60_000, "values": {"vibration": 7.0 if 10 <= i < 20 else 2.0}}
              for i in range(40)]
    c.publish("v1/devices/me/telemetry", json.dumps(series))
    wait_for(lambda: len(api.timeseries(dev["id"], ["vibration"], t0, t0 + 3_600_000)["vibration"]) == 40,
             what="the history")
    r = api.post("/api/v1/rules/backtest", json={
        "from": t0, "to": t0 + 3_600_000,
        "rule": {"name": "bt", "scope": {"device": dev["name"]}, "condition": "vibration > 5.0",
                 "for": "5m", "actions": [{"type": "log"}]},
    })
    assert r.status_code == 200, r.text
    out = r.json()
    assert [((h["ts"] - t0) // 60_000, h["phase"]) for h in out["hits"]] == [(15, "fire"), (20, "clear")], out
    assert out["evaluations"] == 40 and out["errors"] == 0


def test_predictive_maintenance_anomaly_then_time_to_threshold(platform, api, clients):
    dev = api.create_device(uid("motor"))
    create_rule(api, {
        "name": uid("vibration-anomaly"), "scope": {"device": dev["name"]},
        "condition": 'anomaly("vibration", "2h") > 5.0',
        "actions": [{"type": "alarm", "alarm": "Vibration anomaly", "severity": "MAJOR"}],
    })
    create_rule(api, {
        "name": uid("maintenance"), "scope": {"device": dev["name"]},
        "condition": 'hours_to("vibration", 10.0, "3h") < 24.0',
        "actions": [{"type": "alarm", "alarm": "Maintenance due", "severity": "WARNING"}],
    })
    c = clients.new(platform.mqtt_port, dev["access_token"])
    t0 = now_ms() - 4 * 3_600_000
    # Two hours of a healthy motor: 2.0 with a little noise, one point a minute.
    healthy = [{"ts": t0 + i * 60_000, "values": {"vibration": 2.0 + 0.05 * ((i * 7) % 5 - 2)}}
               for i in range(120)]
    c.publish("v1/devices/me/telemetry", json.dumps(healthy))
    wait_for(lambda: len(api.timeseries(dev["id"], ["vibration"], t0, t0 + 7_200_000)["vibration"]) == 120,
             what="the healthy history")
    assert alarms(api, dev["id"]) == []
    # Then it starts drifting upward, 0.05 a minute.
    for i in range(120, 160):
        v = 2.0 + 0.05 * (i - 120)
        c.publish("v1/devices/me/telemetry", json.dumps({"ts": t0 + i * 60_000, "values": {"vibration": v}}))
    found = wait_for(lambda: {a["type"] for a in alarms(api, dev["id"])} >= {"Vibration anomaly", "Maintenance due"}
                     and alarms(api, dev["id"]), what="both alarms")
    assert {a["severity"] for a in found} == {"MAJOR", "WARNING"}
    # The estimate through the API: the drift reaches 10.0 about (10 - 3.95) / 0.05 minutes on.
    last = t0 + 159 * 60_000
    r = api.get(f"/api/v1/devices/{dev['id']}/analytics/time-to-threshold?key=vibration&threshold=10&window=2400000")
    assert r.status_code == 200, r.text
    eta = r.json()["eta_ts"]
    expected = last + (10.0 - 3.95) / 0.05 * 60_000
    assert eta is not None and abs(eta - expected) < 30 * 60_000, (eta, expected, r.json())
