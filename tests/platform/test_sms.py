"""SMS over a GSM modem, end to end, with the project's modem simulator (`ironbridge modem-sim`,
crates/modem: 27.005 PDU mode, `+CMTI`, `AT+CMGR`/`CMGD`, `AT+CMGS`, `+CDS` reports) on one end of
a socat pseudo-terminal pair and the real serial code on the other:

- the edge (`[modem]`): a command SMS from a whitelisted number with the PIN toggles a pymodbus
  coil and the result comes back by SMS; an unknown number is refused (no write, no answer,
  counted in the gateway's health); a long message arrives in parts and is answered with a
  concatenated reply; the platform sends an SMS through the edge's modem (RPC `sendSms`); a
  modem that stops answering is reopened, and what arrived meanwhile is read from the SIM;
- a local rule of the edge (`sms` action) texts through the modem with no platform at all;
- the platform (`[notify.sms] via = "modem"`): the vending rule (stock < 10 %) texts the
  supplier through the modem and mails them through a local SMTP server (aiosmtpd).
"""

from __future__ import annotations

import shutil

import pytest

from ib_edge import Edge, ModbusSim, ModemSim, PtyPair, edge_config
from ib_platform import Platform, now_ms, uid, wait_for
from test_notify import create_rule, send, vending_rule, wait_value, PHONE

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")

ALLOWED = "+4917012345678"
STRANGER = "+4915199999999"
PIN = "1234"


class SmsSetup:
    """A gateway on `platform`; a pymodbus pump (coil 0); the modem simulator on a pty pair; an
    edge with the pump and the modem, commands PUMP ON / PUMP OFF."""

    def __init__(self, platform, tmp_path):
        self.api = platform.api
        self.gw = self.api.create_device(uid("sms-gw"), gateway=True)
        self.pump_name, self.modem_name = uid("pump"), uid("gsm")
        self.pump = ModbusSim(tmp_path / "pump", {"co": {"0": False}}).start()
        self.pty = PtyPair(tmp_path / "pty").start()
        self.modem = ModemSim(tmp_path / "modem", self.pty.a, pin="0000").start()
        devices = f"""
[[modbus]]
name = "{self.pump_name}"
address = "127.0.0.1:{self.pump.port}"
poll = "200ms"
timeout = "500ms"
registers = [ {{ key = "running", table = "coil", address = 0, type = "bool" }} ]
writes = [ {{ method = "setPump", table = "coil", address = 0, param = "on" }} ]

[modem]
port = "{self.pty.b}"
baud = 115200
pin = "0000"
name = "{self.modem_name}"
timeout = "2s"
check_interval = "1s"
allowed_numbers = ["{ALLOWED}"]
command_pin = "{PIN}"
[[modem.commands]]
text = "PUMP ON"
device = "{self.pump_name}"
method = "setPump"
params = {{ on = true }}
[[modem.commands]]
text = "pump off"
device = "{self.pump_name}"
method = "setPump"
params = {{ on = false }}
"""
        config = edge_config(self.gw["access_token"], platform.mqtt_port,
                             tmp_path / "edge" / "buffer", devices)
        self.edge = Edge(tmp_path / "edge", config).start()

    def health(self, key: str):
        k = f"{self.modem_name}.{key}"
        return ((self.api.latest(self.gw["id"], [k]) or {}).get(k) or {}).get("value")

    def close(self) -> None:
        for p in (self.edge, self.modem, self.pump, self.pty):
            if p.proc is not None and p.proc.poll() is None:
                p.signal_stop()


@pytest.fixture
def sms_setup(platform, tmp_path):
    s = SmsSetup(platform, tmp_path)
    yield s
    s.close()


def test_a_command_sms_toggles_the_coil_and_is_answered(sms_setup):
    s = sms_setup
    wait_for(lambda: s.health("connected") is True, timeout=30, what="the modem connected")
    assert s.health("signal") == 21
    s.modem.deliver(ALLOWED, f"PUMP ON {PIN}")
    wait_for(lambda: "write co 0 [True]" in s.pump.writes(), what="the coil write")
    reply = wait_for(lambda: s.modem.sms(ALLOWED), what="the reply SMS")
    assert reply[0]["text"] == "PUMP ON: OK", reply
    s.modem.deliver(ALLOWED, f"  pump   off {PIN} ")
    wait_for(lambda: "write co 0 [False]" in s.pump.writes(), what="the coil written back")
    wait_for(lambda: len(s.modem.sms(ALLOWED)) == 2, what="the second reply")
    assert s.modem.sms(ALLOWED)[1]["text"] == "PUMP OFF: OK"
    # the messages read were deleted from the SIM
    wait_for(lambda: len(s.modem.events("deleted")) >= 2, what="the deletions")
    wait_for(lambda: (s.health("sms_received") or 0) >= 2 and (s.health("sms_sent") or 0) >= 2,
             what="the counters")


def test_an_unknown_number_is_refused(sms_setup):
    s = sms_setup
    wait_for(lambda: s.health("connected") is True, timeout=30, what="the modem connected")
    s.modem.deliver(STRANGER, f"PUMP ON {PIN}")
    wait_for(lambda: s.health("sms_refused") == 1, what="the refusal counted")
    # a wrong PIN from the whitelisted number: refused too, and told so
    s.modem.deliver(ALLOWED, "PUMP ON 9999")
    wait_for(lambda: s.health("sms_refused") == 2, what="the second refusal")
    wait_for(lambda: s.modem.sms(ALLOWED), what="the answer to the wrong PIN")
    assert "wrong" in s.modem.sms(ALLOWED)[0]["text"].lower()
    assert s.modem.sms(STRANGER) == []
    assert not any(w.startswith("write co 0") for w in s.pump.writes())


def test_concatenated_messages_both_ways(sms_setup):
    s = sms_setup
    wait_for(lambda: s.health("connected") is True, timeout=30, what="the modem connected")
    # 180 characters: two parts in, and the answer (which quotes the command) two parts out
    words = "STATUS " + " ".join(["REPORT"] * 24)
    s.modem.deliver(ALLOWED, f"{words} {PIN}")
    reply = wait_for(lambda: s.modem.sms(ALLOWED), what="the reply")[0]
    assert reply["parts"] == 2, reply
    assert reply["text"].startswith(f'Unknown command "{words}"'), reply
    assert "PUMP ON, PUMP OFF" in reply["text"]
    parts = [e for e in s.modem.events("submitted") if e["to"] == ALLOWED]
    assert [p["part"][0] for p in parts] == [1, 2] and all(p["status_report"] for p in parts)
    # the platform sends through the edge's modem: RPC sendSms to the modem's sub-device
    dev = wait_for(lambda: next((d for d in s.api.list_devices() if d["name"] == s.modem_name), None),
                   what="the modem's sub-device")
    text = "Ölstand niedrig – bitte nachfüllen. " * 3   # UCS-2 (the dash), 3 × 36 = 108 > 70
    r = s.api.rpc(dev["id"], {"method": "sendSms", "params": {"to": "+4930123456", "text": text},
                              "timeout_ms": 20000})
    assert r.status_code == 200, r.text
    assert r.json()["response"] == {"ok": True, "parts": 2}
    got = wait_for(lambda: s.modem.sms("+4930123456"), what="the SMS through the edge")[0]
    assert (got["text"], got["parts"]) == (text, 2)
    assert {e["coding"] for e in s.modem.events("submitted") if e["to"] == "+4930123456"} == {"ucs2"}
    # delivery reports counted
    wait_for(lambda: (s.health("sms_delivered") or 0) >= 4, what="the delivery reports")


def test_a_modem_that_stops_answering_is_reopened_and_its_messages_read(sms_setup):
    s = sms_setup
    wait_for(lambda: s.health("connected") is True, timeout=30, what="the modem connected")
    connects = s.health("connects")
    s.modem.silence(True)
    wait_for(lambda: s.health("connected") is False, timeout=30, what="the modem seen as gone")
    # a command arriving meanwhile stays on the SIM (no +CMTI reaches the edge)
    s.modem.deliver(ALLOWED, f"PUMP ON {PIN}")
    wait_for(lambda: s.modem.events("stored"), what="the message stored on the SIM")
    s.modem.silence(False)
    wait_for(lambda: s.health("connected") is True and s.health("connects") > connects,
             timeout=60, what="the modem reopened")
    # read with AT+CMGL when the session starts, carried out, answered
    wait_for(lambda: "write co 0 [True]" in s.pump.writes(), what="the coil write")
    reply = wait_for(lambda: s.modem.sms(ALLOWED), what="the reply")
    assert reply[0]["text"] == "PUMP ON: OK"


def test_vending_rule_texts_through_the_platforms_modem(tmp_path, smtp, clients):
    pty = PtyPair(tmp_path / "pty").start()
    modem = ModemSim(tmp_path / "modem", pty.a).start()
    config = f"""
[notify.smtp]
host = "127.0.0.1"
port = {smtp.port}
from = "Ironbridge <ironbridge@example.com>"
timeout_s = 5

[notify.sms]
via = "modem"
port = "{pty.b}"
baud = 115200
timeout_s = 2
"""
    p = Platform(tmp_path / "platform", config=config).start()
    try:
        api = p.api
        dev = api.create_device(uid("vending"))
        name = dev["name"]
        create_rule(api, vending_rule(uid("low-stock"), name))
        c = clients.new(p.mqtt_port, dev["access_token"])
        t0 = now_ms()
        send(c, t0, stock_pct=50.0)
        wait_value(api, dev["id"], "stock_pct", 50.0)
        send(c, t0 + 1000, stock_pct=8.0)
        text = wait_for(lambda: modem.sms(PHONE), timeout=30, what="the SMS at the modem")
        assert text[0]["text"] == f"{name}: stock 8.0%", text
        mail = wait_for(lambda: smtp.about(name), what="the mail")
        assert mail[0]["rcpt"] == ["supplier@example.com"]
        # once per drop: another low reading sends nothing more
        send(c, t0 + 2000, stock_pct=7.0)
        wait_value(api, dev["id"], "stock_pct", 7.0)
        assert len(modem.sms(PHONE)) == 1
    finally:
        assert p.stop() == 0, p.log_tail()
        modem.signal_stop()
        pty.signal_stop()


def test_a_local_rule_texts_through_the_modem_with_the_uplink_down(tmp_path):
    """A local rule's `sms` action goes out through the edge's modem with no platform at all
    (the uplink's port is bound and never listens): soil_moisture low on the pymodbus simulator
    sends one text, its template filled from the reading; staying low sends no second one."""
    import json
    import socket
    import sqlite3

    from pymodbus.client import ModbusTcpClient

    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    field = ModbusSim(tmp_path / "field", {"hr": {"0": 50}}).start()
    pty = PtyPair(tmp_path / "pty").start()
    modem = ModemSim(tmp_path / "modem", pty.a).start()
    devices = f"""
[[modbus]]
name = "field-1"
address = "127.0.0.1:{field.port}"
poll = "100ms"
timeout = "500ms"
registers = [ {{ key = "soil_moisture", table = "holding", address = 0, type = "u16" }} ]

[modem]
port = "{pty.b}"
baud = 115200
timeout = "2s"

[[rule]]
name = "dry soil"
scope = {{ device = "field-1" }}
condition = "soil_moisture < 20.0"
clear = "soil_moisture > 35.0"
actions = [ {{ type = "sms", to = "{ALLOWED}", text = "{{{{device.name}}}}: soil {{{{soil_moisture}}}}" }} ]
"""
    config = edge_config("no-platform", refusing.getsockname()[1], tmp_path / "edge" / "buffer", devices)
    edge = Edge(tmp_path / "edge", config).start()
    client = ModbusTcpClient("127.0.0.1", port=field.port)
    try:
        assert client.connect()
        assert not client.write_register(0, 12).isError()
        sent = wait_for(lambda: modem.sms(ALLOWED), timeout=30, what="the rule's SMS")
        assert [m["text"] for m in sent] == ["field-1: soil 12"], sent
        assert not client.write_register(0, 11).isError()  # still dry: no second text

        def queued_soil() -> list:
            db = sqlite3.connect(f"file:{tmp_path / 'edge' / 'buffer' / 'queue.db'}?mode=ro",
                                 uri=True, timeout=5)
            try:
                rows = db.execute("SELECT vals FROM queue WHERE device = 'field-1'")
                return [json.loads(v).get("soil_moisture") for (v,) in rows]
            finally:
                db.close()
        # the rules saw 11 (a reading is queued after they evaluate it)
        wait_for(lambda: 11 in queued_soil(), what="the reading of 11 queued")
        assert edge.running
    finally:
        client.close()
        for p in (edge, modem, field, pty):
            if p.proc is not None and p.proc.poll() is None:
                p.signal_stop()
        refusing.close()
    assert [m["text"] for m in modem.sms(ALLOWED)] == ["field-1: soil 12"]
