"""Synchronous paho-mqtt 2.x wrapper for device connections, plus a raw CONNECT probe.

    dev = DeviceClient(port, username=token, version=V5).connect()
    dev.subscribe("v1/devices/me/rpc/request/+")          -> [reason codes]
    dev.publish("v1/devices/me/telemetry", {"t": 1})      -> PUBACK reason code (QoS 1)
    m = dev.expect(topic="v1/devices/me/attributes")      -> Msg (m.json())
"""

from __future__ import annotations

import fnmatch
import json
import queue
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ib_platform import HOST, QUIET, WAIT

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
VERSIONS = {"v311": V311, "v5": V5}

# paho 2 reports a 3.1.1 CONNACK return code as the matching v5 reason code.
_V5_TO_V311_CONNACK = {0: 0, 0x84: 1, 0x85: 2, 0x88: 3, 0x86: 4, 0x87: 5}


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self):
        return json.loads(self.payload)


class DeviceClient:
    def __init__(self, port: int, *, username: str | None = None, password: str | None = None,
                 client_id: str | None = None, version: int = V5, host: str = HOST, keepalive: int = 30):
        self.host, self.port, self.version, self.keepalive = host, port, version, keepalive
        self.client_id = client_id if client_id is not None else f"dev-{uuid.uuid4().hex[:10]}"
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=version)
        if username is not None or password is not None:
            self.c.username_pw_set(username, password)
        self.c.reconnect_delay_set(60, 120)  # no quiet auto-reconnects during a test
        self.messages: queue.Queue[Msg] = queue.Queue()
        self.connack = threading.Event()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_rc: int | None = None       # protocol value: 3.1.1 return code or v5 reason code
        self.disconnect_rc: int | None = None
        self.last_puback_reason: str | None = None  # v5 Reason String of the last PUBACK
        self._cond = threading.Condition()
        self._subacks: dict[int, list[int]] = {}
        self._pubacks: dict[int, int] = {}
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self._loop = False

    # callbacks (network thread)
    def _on_connect(self, client, userdata, flags, rc, props):
        v = rc.value
        self.connack_rc = _V5_TO_V311_CONNACK.get(v, v) if self.version == V311 else v
        if not rc.is_failure:
            self.connected.set()
        self.connack.set()

    def _on_disconnect(self, client, userdata, flags, rc, props):
        self.disconnect_rc = rc.value if rc is not None else None
        self.connected.clear()
        self.disconnected.set()
        self.connack.set()
        with self._cond:
            self._cond.notify_all()

    def _on_message(self, client, userdata, m):
        self.messages.put(Msg(m.topic, m.payload, m.qos, bool(m.retain)))

    def _on_subscribe(self, client, userdata, mid, rcs, props):
        with self._cond:
            self._subacks[mid] = [rc.value for rc in rcs]
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, rc, props):
        with self._cond:
            self._pubacks[mid] = rc.value if rc is not None else 0
            self.last_puback_reason = getattr(props, "ReasonString", None) if props is not None else None
            self._cond.notify_all()

    def _wait(self, table, mid, timeout, what):
        with self._cond:
            ok = self._cond.wait_for(lambda: mid in table or self.disconnected.is_set(), timeout)
            if mid in table:
                return table.pop(mid)
            if not ok:
                raise AssertionError(f"{self.client_id}: no {what} within {timeout}s")
            raise AssertionError(f"{self.client_id}: disconnected (rc={self.disconnect_rc}) before {what}")

    # API
    def connect(self, expect_success: bool = True, timeout: float = WAIT) -> "DeviceClient":
        kw = {"clean_start": True} if self.version == V5 else {}
        self.c.connect(self.host, self.port, self.keepalive, **kw)
        self.c.loop_start()
        self._loop = True
        if not self.connack.wait(timeout):
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s")
        if expect_success and not self.connected.is_set():
            raise AssertionError(f"{self.client_id}: connect refused, CONNACK {self.connack_rc!r} "
                                 f"(disconnect rc {self.disconnect_rc!r})")
        return self

    def subscribe(self, topic, qos: int = 1, timeout: float = WAIT) -> list[int]:
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {rc}"
        return self._wait(self._subacks, mid, timeout, f"SUBACK for {topic!r}")

    def publish(self, topic: str, payload, qos: int = 1, timeout: float = WAIT) -> int | None:
        """dict/list payloads are JSON-encoded. QoS 1/2: waits for the ack and returns its reason
        code (always 0 on 3.1.1). QoS 0: returns None once written."""
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        info = self.c.publish(topic, payload, qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError(f"publish not sent: {info.rc}")
        if qos == 0:
            info.wait_for_publish(timeout)
            return None
        return self._wait(self._pubacks, info.mid, timeout, f"PUBACK for {topic!r}")

    def expect(self, topic: str | None = None, timeout: float = WAIT) -> Msg:
        """Next message whose topic matches `topic` (fnmatch pattern; others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.messages.get(timeout=max(0.001, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.client_id}: no message{' on ' + topic if topic else ''} "
                                     f"within {timeout}s") from None
            if topic is None or fnmatch.fnmatchcase(m.topic, topic):
                return m

    def expect_none(self, timeout: float = QUIET, topic: str | None = None) -> None:
        """Bounded negative wait: no (matching) message within `timeout`."""
        for m in self.collect(timeout):
            if topic is None or fnmatch.fnmatchcase(m.topic, topic):
                raise AssertionError(f"{self.client_id}: unexpected message {m.topic!r} {m.payload[:200]!r}")

    def collect(self, timeout: float) -> list[Msg]:
        out, deadline = [], time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out

    def request(self, req_topic: str, resp_topic: str, payload, timeout: float = WAIT) -> Msg:
        """Publish a request and wait for the reply on `resp_topic` (subscribe first)."""
        rc = self.publish(req_topic, payload)
        assert rc in (0, None), f"request on {req_topic} refused: 0x{rc:02x}"
        return self.expect(resp_topic, timeout)

    def close(self) -> None:
        if not self._loop:
            return
        try:
            if self.connected.is_set():
                self.c.disconnect()
                self.disconnected.wait(2)
        finally:
            self.c.loop_stop()
            self._loop = False


class Clients:
    """Creates device clients and closes them all at teardown."""

    def __init__(self):
        self._all: list[DeviceClient] = []

    def new(self, port: int, token: str | None = None, *, connect: bool = True,
            version: int = V5, **kw) -> DeviceClient:
        c = DeviceClient(port, username=token, version=version, **kw)
        self._all.append(c)
        if connect:
            c.connect()
        return c

    def close_all(self) -> None:
        for c in self._all:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - teardown must not hide the test result
                pass


# ---------------------------------------------------------------------------
# raw CONNECT: the exact CONNACK byte, independent of any client library


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_connack(port: int, username: str | None, password: str | None = None, *, version: int = V5,
                client_id: str | None = None, timeout: float = WAIT) -> int:
    """Send one CONNECT and return the CONNACK return code (3.1.1) / reason code (5.0).
    Returns -1 if the server closed without a CONNACK."""
    level = 5 if version == V5 else 4
    flags = 0x02
    payload = _utf8(client_id or f"raw-{uuid.uuid4().hex[:8]}")
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
    if password is not None:
        flags |= 0x40
        payload += _utf8(password)
    var = _utf8("MQTT") + bytes([level, flags]) + struct.pack("!H", 30)
    if level == 5:
        var += b"\x00"  # no properties
    body = var + payload
    pkt = b"\x10" + _remaining_length(len(body)) + body
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(pkt)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # fixed header: type byte, remaining length (varint), then flags + code
            i = 1
            while i < len(data) and data[i] & 0x80:
                i += 1
            if len(data) >= i + 3:
                assert data[0] == 0x20, f"not a CONNACK: {data[:8]!r}"
                return data[i + 2]
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    return -1
