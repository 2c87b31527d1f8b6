"""The edge gateway (`ironbridge edge`, crates/edge) against real peers: a pymodbus Modbus TCP
simulator (modbus_sim.py) on one side, `ironbridge serve` on the other, everything on loopback.

- Modbus RTU through a socat pseudo-terminal pair (pymodbus' serial server), one unit and
  several units sharing one line (RS-485);
- every register type, byte and word order, bit fields, scale/offset decoded as the device
  holds them, read back through the platform's REST API;
- RPCs from the platform write coils and registers on the simulator (range-checked, Modbus
  exceptions answered as errors), and so do shared attributes mapped to a write;
- a simulator stopped and restarted is polled again without intervention;
- the platform stopped while the edge polls at 10 Hz: afterwards every reading is there once,
  in order, with its original timestamp; the same with an edge `kill -9` in the middle.
  The outage lasts EDGE_OUTAGE_S seconds (default 60 s, the issue's figure), the simulator's
  EDGE_SIM_DOWN_S (default 120 s, the issue's two minutes); shorter values for quick local runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import ssl
import struct
import subprocess
import time

import pytest

from ib_edge import Edge, ModbusSim, PtyPair, RtuSim, edge_config, words
from ib_platform import HOST, Platform, now_ms, uid, wait_for

OUTAGE_S = float(os.environ.get("EDGE_OUTAGE_S", "60"))
SIM_DOWN_S = float(os.environ.get("EDGE_SIM_DOWN_S", "120"))
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
TYPES = [  # (type, struct format, value)
    ("u16", "H", 51234), ("i16", "h", -12345), ("u32", "I", 3_000_000_123),
    ("i32", "i", -2_000_000_123), ("u64", "Q", 2**53 - 7), ("i64", "q", -(2**52) - 3),
    ("f32", "f", -1234.5), ("f64", "d", 6.02214076e23),
]


def find_device(api, name: str, timeout: float = 15) -> dict:
    def lookup():
        return next((d for d in api.list_devices() if d["name"] == name), None)
    return wait_for(lookup, timeout, what=f"device {name!r} in the registry")


def series(api, device_id: str, key: str) -> list[dict]:
    return api.timeseries(device_id, [key]).get(key) or []


class Setup:
    """A gateway device on `platform`, a simulator, and an edge polling it."""

    def __init__(self, platform, tmp_path, spec: dict, registers: str, writes: str = "",
                 poll: str = "200ms", gateway: dict | None = None, **uplink):
        self.platform = platform
        self.api = platform.api
        self.gw = gateway or self.api.create_device(uid("edge-gw"), gateway=True)
        self.sim = ModbusSim(tmp_path / "sim", spec).start()
        self.name = uid("plc")
        self.tmp = tmp_path
        self.registers, self.writes, self.poll, self.uplink = registers, writes, poll, uplink
        self.edge = Edge(tmp_path / "edge", self.config()).start()

    def config(self) -> str:
        device = (f'[[modbus]]\nname = "{self.name}"\naddress = "127.0.0.1:{self.sim.port}"\n'
                  f'unit = 1\npoll = "{self.poll}"\ntimeout = "500ms"\nbackoff_max = "1s"\n'
                  f'registers = [\n{self.registers}]\n')
        if self.writes:
            device += f"writes = [\n{self.writes}]\n"
        uplink = dict(self.uplink)
        token = uplink.pop("token", self.gw["access_token"])  # token=None: none in the file
        return edge_config(token, self.platform.mqtt_port, self.tmp / "edge" / "buffer",
                           device, **uplink)

    def device(self) -> dict:
        return find_device(self.api, self.name)

    def health(self, key: str):
        got = self.api.latest(self.gw["id"], [f"{self.name}.{key}"]) or {}
        return (got.get(f"{self.name}.{key}") or {}).get("value")

    def close(self) -> None:
        for p in (self.edge, self.sim):
            if p.proc is not None and p.proc.poll() is None:
                p.signal_stop()


@pytest.fixture
def setups():
    made = []
    yield made
    for s in made:
        s.close()


def test_every_type_and_order_is_decoded(platform, tmp_path, setups):
    hr, regs, want = {}, [], {}
    addr = 0
    for t, fmt, value in TYPES:
        for bo, wo in ORDERS:
            key = f"{t}_{bo[0]}{wo[0]}"
            for i, w in enumerate(words(fmt, value, bo, wo)):
                hr[str(addr + i)] = w
            regs.append(f'{{ key = "{key}", table = "holding", address = {addr}, type = "{t}", '
                        f'byte_order = "{bo}", word_order = "{wo}" }},')
            # what the device's bytes mean (f32 rounds)
            want[key] = struct.unpack(">" + fmt, struct.pack(">" + fmt, value))[0]
            addr += len(words(fmt, value))
    # a string (byte order applies within registers), a bit field, scale and offset, and input
    # registers, coils and discrete inputs
    for i, w in enumerate([0x4952, 0x4F4E, 0x2D31, 0x0000]):  # "IRON-1"
        hr[str(200 + i)] = w
    hr["210"] = 0b1010_0000_0000_0100
    hr["211"] = 250
    spec = {"hr": hr, "ir": {"5": 65535, "6": 0x4049, "7": 0x0FDB}, "co": {"3": True},
            "di": {"1": True}}
    regs += [
        '{ key = "label", table = "holding", address = 200, type = "string", length = 4 },',
        '{ key = "alarm", table = "holding", address = 210, type = "bool", bit = 2 },',
        '{ key = "door", table = "holding", address = 210, type = "bool", bit = 15 },',
        '{ key = "idle", table = "holding", address = 210, type = "bool", bit = 3 },',
        '{ key = "temp", table = "holding", address = 211, type = "u16", scale = 0.1, offset = -5.0 },',
        '{ key = "raw_in", table = "input", address = 5, type = "i16" },',
        '{ key = "pi", table = "input", address = 6, type = "f32" },',
        '{ key = "running", table = "coil", address = 3, type = "bool" },',
        '{ key = "stopped", table = "coil", address = 2, type = "bool" },',
        '{ key = "door_in", table = "discrete_input", address = 1, type = "bool" },',
    ]
    want.update({"label": "IRON-1", "alarm": True, "door": True, "idle": False, "temp": 20.0,
                 "raw_in": -1, "pi": struct.unpack(">f", struct.pack(">f", 3.14159265))[0],
                 "running": True, "stopped": False, "door_in": True})
    s = Setup(platform, tmp_path, spec, "\n".join(regs))
    setups.append(s)
    dev = s.device()
    got = s.api.wait_latest(dev["id"], list(want), timeout=20)
    for k, v in want.items():
        value = got[k]["value"]
        if isinstance(v, float):
            assert value == pytest.approx(v, rel=1e-6), (k, value, v)
        else:
            assert value == v, (k, value, v)
    # health is the gateway's own telemetry
    wait_for(lambda: s.health("connected") is True, 10, what="health .connected")
    assert s.health("errors") == 0


def test_rpc_writes_reach_the_simulator(platform, tmp_path, setups):
    writes = "\n".join([
        '{ method = "setPump", table = "coil", address = 0, param = "on" },',
        '{ method = "setPoint", table = "holding", address = 20, type = "u16", scale = 0.1, '
        'param = "value", min = 0, max = 100 },',
        '{ method = "setBig", table = "holding", address = 30, type = "i32", word_order = "little" },',
        '{ method = "setOutside", table = "holding", address = 999, type = "u32" },',
        '{ method = "setLimit", attribute = "limit", table = "holding", address = 40, max = 1000 },',
    ])
    regs = '{ key = "pump", table = "coil", address = 0, type = "bool" },'
    s = Setup(platform, tmp_path, {}, regs, writes)
    setups.append(s)
    dev = s.device()
    s.api.wait_latest(dev["id"], ["pump"], timeout=20)

    def rpc(method, params):
        r = s.api.rpc(dev["id"], {"method": method, "params": params, "timeout_ms": 10000})
        assert r.status_code == 200, r.text
        return r.json()["response"]

    assert rpc("setPump", {"on": True}) == {"ok": True}
    wait_for(lambda: "write co 0 [True]" in s.sim.writes(), what="the coil write")
    # the edge polls the coil it wrote
    wait_for(lambda: s.api.latest(dev["id"], ["pump"])["pump"]["value"] is True, what="pump on")
    assert rpc("setPoint", {"value": 21.5}) == {"ok": True}
    # the simulator prints its writes: read its output until it shows (no race with the pipe)
    wait_for(lambda: "write hr 20 [215]" in s.sim.writes(), what="the register write")
    assert rpc("setBig", -2) == {"ok": True}
    big = f"write hr 30 {words('i', -2, 'big', 'little')}"
    wait_for(lambda: big in s.sim.writes(), what="the i32 write")
    # refused before reaching the device
    assert "maximum" in rpc("setPoint", {"value": 100.5})["error"]
    assert "params.value" in rpc("setPoint", {})["error"]
    assert "unknown method" in rpc("explode", {})["error"]
    # a Modbus exception from the device is an error, and the edge goes on
    assert "exception" in rpc("setOutside", 1)["error"].lower()
    assert rpc("setPump", {"on": False}) == {"ok": True}
    # a shared attribute mapped to a write reaches the device; others are left alone
    s.api.set_shared(dev["id"], {"limit": 77, "colour": "blue"})
    wait_for(lambda: "write hr 40 [77]" in s.sim.writes(), what="the attribute's write")
    s.api.set_shared(dev["id"], {"limit": 5000})  # refused by max: logged, nothing written
    s.api.set_shared(dev["id"], {"limit": 78})
    wait_for(lambda: "write hr 40 [78]" in s.sim.writes(), what="the next attribute write")
    assert not [w for w in s.sim.writes() if w.startswith("write hr 40 [5000")]
    assert s.edge.running


def server_attr(api, device_id: str, key: str):
    return api.attributes(device_id, "server").get("server", {}).get(key, {}).get("value")


@pytest.mark.timeout(SIM_DOWN_S + 90)
def test_a_restarted_simulator_is_polled_again(platform, tmp_path, setups):
    """... and the sub-device shows offline on the platform while it does not answer
    (v1/gateway/disconnect), online again once it does (v1/gateway/connect)."""
    regs = '{ key = "seq", table = "holding", address = 99, type = "u16" },'
    s = Setup(platform, tmp_path, {"counter": 99}, regs)
    setups.append(s)
    dev = s.device()
    s.api.wait_latest(dev["id"], ["seq"], timeout=20)
    wait_for(lambda: s.health("connected") is True, what="connected")
    wait_for(lambda: server_attr(s.api, dev["id"], "active") is True, what="online on the platform")
    s.sim.kill()
    down_at = now_ms()
    wait_for(lambda: s.health("connected") is False, 15, what="health: disconnected")
    wait_for(lambda: server_attr(s.api, dev["id"], "active") is False, 15,
             what="offline on the platform")
    assert server_attr(s.api, dev["id"], "lastDisconnectTime") >= down_at
    assert s.edge.running
    errors = s.health("errors")
    assert errors >= 1
    time.sleep(SIM_DOWN_S)  # the outage itself (reconnection attempts back off meanwhile)
    s.sim.start(s.sim.port)
    up_at = now_ms()
    wait_for(lambda: s.api.latest(dev["id"], ["seq"])["seq"]["ts"] > up_at, 15,
             what="a reading after the restart")
    wait_for(lambda: s.health("connected") is True, what="health: connected again")
    wait_for(lambda: server_attr(s.api, dev["id"], "active") is True, what="online again")
    assert server_attr(s.api, dev["id"], "lastConnectTime") >= up_at
    assert s.health("connects") >= 2
    # nothing was read while the device was down
    points = series(s.api, dev["id"], "seq")
    assert not [p for p in points if down_at + 1000 < p["ts"] < up_at - 1000]


def _check_every_reading(points: list[dict], allow_gap_at: int | None = None) -> None:
    """`seq` readings: consecutive from 0, timestamps strictly increasing; at most one reading
    missing, and only right at `allow_gap_at` (the instant of an edge kill -9)."""
    values = [p["value"] for p in points]
    ts = [p["ts"] for p in points]
    assert values and values[0] == 0, values[:5]
    assert all(a < b for a, b in zip(ts, ts[1:])), "timestamps not strictly increasing"
    gaps = [(i, values[i], values[i + 1]) for i in range(len(values) - 1) if values[i + 1] != values[i] + 1]
    if allow_gap_at is None:
        assert not gaps, f"missing or repeated readings: {gaps[:10]}"
    else:
        for i, a, b in gaps:
            assert b - a == 2 and ts[i] <= allow_gap_at <= ts[i + 1], (gaps, allow_gap_at)


def _outage(own_platform, tmp_path, setups, kill_edge: bool):
    p = own_platform
    p.mqtt_listen = f"{HOST}:{p.mqtt_port}"  # the edge reconnects to the same address
    regs = '{ key = "seq", table = "holding", address = 99, type = "u16" },'
    s = Setup(p, tmp_path, {"counter": 99}, regs, poll="100ms")
    setups.append(s)
    dev = s.device()
    s.api.wait_latest(dev["id"], ["seq"], timeout=20)
    p.stop()
    down_at = now_ms()
    kill_at = None
    if kill_edge:
        time.sleep(OUTAGE_S / 2)
        s.edge.kill9()
        kill_at = now_ms()
        s.edge.start()
        time.sleep(OUTAGE_S / 2)
    else:
        time.sleep(OUTAGE_S)
    p.start()
    up_at = now_ms()

    def complete():
        points = series(s.api, dev["id"], "seq")
        assert points and points[-1]["ts"] > up_at + 1000, "no reading after the platform returned"
        _check_every_reading(points, kill_at)
        return points
    wait_for(complete, 60, interval=0.5, what="every reading, after the platform returned")
    assert s.edge.stop() == 0, s.edge.log_tail()
    points = series(s.api, dev["id"], "seq")
    _check_every_reading(points, kill_at)
    during = [q for q in points if down_at < q["ts"] < up_at]
    # ~10 readings a second while the platform was away, with their original timestamps
    assert len(during) >= OUTAGE_S * 10 * 0.7, (len(during), OUTAGE_S)


@pytest.mark.timeout(OUTAGE_S + 120)
def test_platform_outage_loses_nothing(own_platform, tmp_path, setups):
    _outage(own_platform, tmp_path, setups, kill_edge=False)


@pytest.mark.timeout(OUTAGE_S + 120)
def test_platform_outage_with_edge_kill9_loses_nothing(own_platform, tmp_path, setups):
    _outage(own_platform, tmp_path, setups, kill_edge=True)


def test_bad_config_names_the_field(tmp_path):
    e = Edge(tmp_path, '[uplink]\nurl = "mqtt://127.0.0.1:1"\ntoken = "t"\nbufer_dir = "x"\n')
    with pytest.raises(AssertionError):
        e.start()
    assert e.proc.wait(10) != 0
    assert "bufer_dir" in e.log_tail()


def test_modbus_rtu_over_a_serial_line(platform, tmp_path):
    """RTU through a socat pseudo-terminal pair: pymodbus' serial server on one end."""
    ptys = PtyPair(tmp_path / "pty").start()
    hr = {str(i): w for i, w in enumerate(words("i", -70000, "big", "little"))}
    sim = RtuSim(tmp_path / "sim", {"hr": hr, "co": {"4": True}}).start_serial(ptys.a)
    api = platform.api
    gw = api.create_device(uid("edge-gw"), gateway=True)
    name = uid("rtu")
    device = (f'[[modbus]]\nname = "{name}"\ntransport = "rtu"\nport = "{ptys.b}"\nbaud = 19200\n'
              f'parity = "none"\ndata_bits = 8\nstop_bits = 1\nunit = 3\npoll = "200ms"\n'
              f'timeout = "1s"\nregisters = [\n'
              f'{{ key = "level", table = "holding", address = 0, type = "i32", word_order = "little" }},\n'
              f'{{ key = "valve", table = "coil", address = 4, type = "bool" }},\n]\n'
              f'writes = [ {{ method = "setValve", table = "coil", address = 4, param = "open" }} ]\n')
    edge = Edge(tmp_path / "edge", edge_config(gw["access_token"], platform.mqtt_port,
                                               tmp_path / "edge" / "buffer", device)).start()
    try:
        dev = find_device(api, name)
        got = api.wait_latest(dev["id"], ["level", "valve"], timeout=20)
        assert got["level"]["value"] == -70000 and got["valve"]["value"] is True, got
        r = api.rpc(dev["id"], {"method": "setValve", "params": {"open": False}, "timeout_ms": 10000})
        assert r.status_code == 200 and r.json()["response"] == {"ok": True}, r.text
        wait_for(lambda: "write co 4 [False]" in sim.writes(), what="the coil write over RTU")
        wait_for(lambda: api.latest(dev["id"], ["valve"])["valve"]["value"] is False, what="valve off")
    finally:
        for p in (edge, sim, ptys):
            if p.proc is not None and p.proc.poll() is None:
                p.signal_stop()


def test_several_units_share_one_rs485_line(platform, tmp_path):
    """Three RTU devices on one port (one RS-485 line): units 3 and 5 answer with their own
    registers, a write reaches only its unit, and unit 7, absent from the bus, is reported
    unreachable without stopping the others' polls."""
    ptys = PtyPair(tmp_path / "pty").start()
    units = {"3": {"hr": {"0": 333}, "counter": 1},
             "5": {"hr": {"0": 555}, "co": {"4": True}}}
    sim = RtuSim(tmp_path / "sim", {"units": units}).start_serial(ptys.a)
    api = platform.api
    gw = api.create_device(uid("edge-gw"), gateway=True)
    names = {u: uid(f"rs485-u{u}") for u in (3, 5, 7)}
    devices = ""
    for unit, name in names.items():
        devices += (f'[[modbus]]\nname = "{name}"\ntransport = "rtu"\nport = "{ptys.b}"\n'
                    f'baud = 19200\nunit = {unit}\npoll = "200ms"\ntimeout = "300ms"\nretries = 0\n'
                    f'backoff_max = "1s"\nregisters = [\n'
                    f'{{ key = "level", table = "holding", address = 0, type = "u16" }},\n'
                    f'{{ key = "count", table = "holding", address = 1, type = "u16" }},\n'
                    f'{{ key = "valve", table = "coil", address = 4, type = "bool" }},\n]\n'
                    f'writes = [ {{ method = "setValve", table = "coil", address = 4, param = "open" }} ]\n')
    edge = Edge(tmp_path / "edge", edge_config(gw["access_token"], platform.mqtt_port,
                                               tmp_path / "edge" / "buffer", devices)).start()
    try:
        u3, u5 = find_device(api, names[3]), find_device(api, names[5])
        assert api.wait_latest(u3["id"], ["level"], timeout=20)["level"]["value"] == 333
        got = api.wait_latest(u5["id"], ["level", "valve"], timeout=20)
        assert got["level"]["value"] == 555 and got["valve"]["value"] is True, got

        r = api.rpc(u5["id"], {"method": "setValve", "params": {"open": False}, "timeout_ms": 10000})
        assert r.status_code == 200 and r.json()["response"] == {"ok": True}, r.text
        wait_for(lambda: "write co 4 [False] unit 5" in sim.writes(), what="the write to unit 5")
        assert not any("unit 3" in w for w in sim.writes()), sim.writes()
        wait_for(lambda: api.latest(u5["id"], ["valve"])["valve"]["value"] is False, what="valve off")

        silent = names[7]
        def health(key):
            got = api.latest(gw["id"], [f"{silent}.{key}"]) or {}
            return (got.get(f"{silent}.{key}") or {}).get("value")
        wait_for(lambda: health("timeouts") and health("timeouts") >= 2 and health("connected") is False,
                 timeout=30, what="unit 7 reported unreachable")
        # Unit 3 is still polled while unit 7 keeps timing out: its read counter goes on.
        seen = api.latest(u3["id"], ["count"])["count"]["value"]
        wait_for(lambda: api.latest(u3["id"], ["count"])["count"]["value"] >= seen + 5,
                 timeout=20, what="unit 3 polled on")
        assert edge.proc.poll() is None
    finally:
        for p in (edge, sim, ptys):
            if p.proc is not None and p.proc.poll() is None:
                p.signal_stop()


def test_a_local_rule_switches_a_coil_with_the_uplink_down(tmp_path):
    """The issue's test: no platform at all (the uplink's port is bound and never listens, so
    every connection is refused), a holding register `soil_moisture` set low on the simulator
    makes the edge's local rule write coil 0 = true, and set high again (the first rule clears,
    the second fires) writes it false. The coil is read back from the simulator."""
    import json
    import socket
    import sqlite3

    from pymodbus.client import ModbusTcpClient

    refusing = socket.socket()
    refusing.bind((HOST, 0))
    sim = ModbusSim(tmp_path / "sim", {"hr": {"0": 50}}).start()
    rules = f"""[[modbus]]
name = "field-1"
address = "127.0.0.1:{sim.port}"
poll = "100ms"
timeout = "500ms"
backoff_max = "1s"
registers = [ {{ key = "soil_moisture", table = "holding", address = 0, type = "u16" }} ]
writes = [ {{ method = "setPump", table = "coil", address = 0, param = "on" }} ]

[[rule]]
name = "irrigate"
scope = {{ device = "field-1" }}
condition = "soil_moisture < 20.0"
for = "300ms"
clear = "soil_moisture > 35.0"
actions = [
  {{ type = "rpc", method = "setPump", params = {{ on = true }} }},
  {{ type = "alarm", alarm = "dry", severity = "MAJOR" }},
  {{ type = "log", message = "dry: {{{{soil_moisture}}}} on {{{{device.name}}}}" }},
]

[[rule]]
name = "stop irrigating"
scope = {{ device = "field-1" }}
condition = "soil_moisture > 35.0"
actions = [ {{ type = "rpc", method = "setPump", params = {{ on = false }} }} ]
"""
    config = edge_config("no-platform", refusing.getsockname()[1], tmp_path / "edge" / "buffer", rules)
    edge = Edge(tmp_path / "edge", config).start()
    client = ModbusTcpClient(HOST, port=sim.port)
    try:
        assert client.connect()

        def coil() -> bool:
            r = client.read_coils(0, count=1)
            assert not r.isError(), r
            return r.bits[0]

        # wet at start: the second rule fires once and writes false
        wait_for(lambda: "write co 0 [False]" in sim.writes(), timeout=15, what="the first 'off'")
        assert not client.write_register(0, 10).isError()
        wait_for(lambda: coil() is True, timeout=15, what="coil 0 switched on by the rule")
        assert not client.write_register(0, 25).isError()  # between the thresholds: stays on
        assert not client.write_register(0, 50).isError()
        wait_for(lambda: coil() is False, timeout=15, what="coil 0 switched off by the rule")
        coil_writes = [w for w in sim.writes() if w.startswith("write co 0")]
        assert coil_writes == ["write co 0 [False]", "write co 0 [True]", "write co 0 [False]"], coil_writes
        # queued for the platform meanwhile: the alarm as the device's telemetry, and the
        # gateway's health counting the firings
        queue = tmp_path / "edge" / "buffer" / "queue.db"

        def queued(device: str) -> list[dict]:
            db = sqlite3.connect(f"file:{queue}?mode=ro", uri=True, timeout=5)
            try:
                rows = db.execute("SELECT vals FROM queue WHERE device = ? ORDER BY id", (device,))
                return [json.loads(v) for (v,) in rows]
            finally:
                db.close()

        def alarms():
            return [r["alarm.dry"] for r in queued("field-1") if "alarm.dry" in r]
        # committed by the queue's writer a moment after the rule decided it
        wait_for(lambda: alarms() == [True, False], timeout=15, what="alarm.dry true, then false")
        wait_for(lambda: any(h.get("rules.fired") == 3 and h.get("rule.irrigate.fired") == 1
                             for h in queued("")), timeout=15, what="rules.fired in the health")
        log = edge.log_tail(100_000)
        assert "dry: 10 on field-1" in log, log[-3000:]
        assert "local rule fired" in log and "local rule cleared" in log
        assert edge.running
    finally:
        client.close()
        edge.stop()
        sim.kill()
        refusing.close()


def test_a_rule_with_a_cel_error_stops_the_edge_naming_it(tmp_path):
    device = ('[[modbus]]\nname = "field-1"\naddress = "127.0.0.1:1"\n'
              'registers = [ { key = "soil_moisture", table = "holding", address = 0, type = "u16" } ]\n'
              '[[rule]]\nname = "broken"\nscope = { device = "field-1" }\n'
              'condition = "soil_moisture <"\nactions = [ { type = "log" } ]\n')
    e = Edge(tmp_path, edge_config("t", 1, tmp_path / "buffer", device))
    with pytest.raises(AssertionError):
        e.start()
    assert e.proc.wait(10) != 0
    assert '"broken"' in e.log_tail() and "condition" in e.log_tail()


# -- the uplink over TLS (mqtts://) ---------------------------------------------------------

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca.pem; server.pem/.key (IP SAN 127.0.0.1); gateway.pem/.key and gateway-x509.pem/.key
    (client certificates); other-ca.pem, a CA that signed none of them. Made with the openssl
    CLI in a temporary directory."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is required in CI")
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-new", *EC, "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN=edge test {ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, cn, ext in [
        ("server", "localhost", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("gateway", "edge-gateway", "extendedKeyUsage=clientAuth\n"),
        ("gateway-x509", "edge-gateway-x509", "extendedKeyUsage=clientAuth\n"),
    ]:
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + ext)
        _openssl("req", "-new", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)
    return d


@pytest.fixture(scope="module")
def tls_platform(tmp_path_factory, pki):
    """`ironbridge serve` with an mqtts listener on 127.0.0.1:0 that requires a client
    certificate signed by ca.pem."""
    config = (f'[listeners]\nmqtts = "127.0.0.1:0"\n[tls]\ncert = "{pki / "server.pem"}"\n'
              f'key = "{pki / "server.key"}"\nclient_ca = "{pki / "ca.pem"}"\n'
              f'require_client_cert = true\n')
    p = Platform(tmp_path_factory.mktemp("tls-platform"), config=config).start()
    assert "mqtts" in p.listeners, p.listeners
    yield p
    assert p.stop() == 0, p.log_tail()


def _tls_uplink(platform, pki, cafile="ca.pem", client="gateway") -> dict:
    return {"url": f"mqtts://127.0.0.1:{platform.listeners['mqtts']}",
            "cafile": str(pki / cafile), "cert": str(pki / f"{client}.pem"),
            "key": str(pki / f"{client}.key")}


SEQ = '{ key = "seq", table = "holding", address = 99, type = "u16" },'


def test_the_uplink_over_tls_with_a_client_certificate(tls_platform, pki, tmp_path, setups):
    s = Setup(tls_platform, tmp_path, {"counter": 99}, SEQ, **_tls_uplink(tls_platform, pki))
    setups.append(s)
    dev = s.device()
    first = s.api.wait_latest(dev["id"], ["seq"], timeout=20)["seq"]["ts"]
    wait_for(lambda: s.api.latest(dev["id"], ["seq"])["seq"]["ts"] > first, what="more readings")
    wait_for(lambda: (s.api.latest(s.gw["id"], ["uplink.connected"]).get("uplink.connected")
                      or {}).get("value") is True, what="the gateway's health: uplink.connected")
    assert "TLS handshake failed" not in s.edge.log_tail()
    # a restarted edge replays its queue over TLS just the same
    s.edge.stop()
    stopped_at = now_ms()
    s.edge.start()
    wait_for(lambda: s.api.latest(dev["id"], ["seq"])["seq"]["ts"] > stopped_at, 20,
             what="readings after the edge restarted")
    _check_every_reading(series(s.api, dev["id"], "seq"))


def test_a_gateway_known_by_its_certificate_needs_no_token(tls_platform, pki, tmp_path, setups):
    """An X.509 credential (the certificate's SHA-256) authenticates the gateway: no token."""
    api = tls_platform.api
    gw = api.create_device(uid("edge-gw"), gateway=True)
    der = ssl.PEM_cert_to_DER_cert((pki / "gateway-x509.pem").read_text())
    api.set_credentials(gw["id"], {"type": "x509", "fingerprint": hashlib.sha256(der).hexdigest()})
    s = Setup(tls_platform, tmp_path, {"counter": 99}, SEQ, gateway=gw, token=None,
              **_tls_uplink(tls_platform, pki, client="gateway-x509"))
    setups.append(s)
    assert "token" not in s.edge.config_path.read_text()
    dev = s.device()
    s.api.wait_latest(dev["id"], ["seq"], timeout=20)


def test_a_wrong_ca_delivers_nothing_and_the_edge_keeps_trying(tls_platform, pki, tmp_path,
                                                              setups):
    failures = tls_platform.metric("mqtt_tls_handshake_failures_total")
    s = Setup(tls_platform, tmp_path, {"counter": 99}, SEQ,
              **_tls_uplink(tls_platform, pki, cafile="other-ca.pem"))
    setups.append(s)
    s.edge.wait_line(re.compile(r"TLS handshake failed.*(certificate|UnknownIssuer)"), 0)
    # retried with the uplink's backoff: the platform sees each attempt fail
    wait_for(lambda: tls_platform.metric("mqtt_tls_handshake_failures_total") >= failures + 3,
             15, what="three handshake attempts")
    assert s.edge.running
    assert not [d for d in s.api.list_devices() if d["name"] == s.name]
    assert not (s.api.latest(s.gw["id"], ["uplink.connected"]) or {})
    # the readings wait on disk
    assert (tmp_path / "edge" / "buffer" / "queue.db").exists()
    assert s.edge.stop() == 0


def test_tls_settings_are_checked_at_start(pki, tmp_path):
    for extra, want in [
        ('url = "mqtts://127.0.0.1:1"\n', "cafile: required"),
        (f'url = "mqtts://127.0.0.1:1"\ncafile = "{tmp_path / "nowhere.pem"}"\n', "nowhere.pem"),
        (f'url = "mqtts://127.0.0.1:1"\ncafile = "{pki / "ca.pem"}"\n'
         f'cert = "{pki / "gateway.pem"}"\nkey = "{pki / "server.key"}"\n', "cert, key"),
        (f'url = "mqtt://127.0.0.1:1"\ncafile = "{pki / "ca.pem"}"\n', "only used with an mqtts"),
    ]:
        e = Edge(tmp_path / uid("edge"), f'[uplink]\n{extra}token = "t"\n')
        with pytest.raises(AssertionError):
            e.start()
        assert e.proc.wait(10) != 0
        assert want in e.log_tail(), e.log_tail()
