"""Shared helpers for the conformance tests: a synchronous wrapper around paho-mqtt
2.x, broker-kind dependent markers, and small waiting utilities.

Test modules import from here (never from conftest).  `BROKER_KIND` is filled in
by conftest.pytest_configure before any test module is imported.
"""

from __future__ import annotations

import os
import queue
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import rawmqtt

BROKER_KIND: str = "mosquitto"  # overwritten by conftest.pytest_configure

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5

# Default waits.  "Positive" waits are generous (they end as soon as the event
# happens); "negative" waits (proving that something does NOT happen) are short
# and bounded.
WAIT = 5.0
QUIET = 0.6


def is_mosquitto() -> bool:
    return BROKER_KIND == "mosquitto"


def xfail_mosquitto(reason: str):
    """The test asserts the MQTT specification; mosquitto 2.0.11 is known to differ."""
    return pytest.mark.xfail(condition=is_mosquitto(), reason=f"mosquitto deviates: {reason}", strict=True)


def skip_mosquitto(reason: str):
    """Optional feature (MAY) that mosquitto does not implement; nothing to compare."""
    return pytest.mark.skipif(is_mosquitto(), reason=f"mosquitto: {reason}")


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(predicate, timeout: float = WAIT, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until truthy or raise AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# paho wrapper

PROP_PACKET = {
    "connect": PacketTypes.CONNECT,
    "publish": PacketTypes.PUBLISH,
    "subscribe": PacketTypes.SUBSCRIBE,
    "will": PacketTypes.WILLMESSAGE,
    "disconnect": PacketTypes.DISCONNECT,
    "unsubscribe": PacketTypes.UNSUBSCRIBE,
}


def make_props(kind: str, values: dict | None) -> Properties | None:
    """Build paho Properties from {"SessionExpiryInterval": 10, "UserProperty": [(k, v)], ...}."""
    if not values:
        return None
    p = Properties(PROP_PACKET[kind])
    for k, v in values.items():
        setattr(p, k, v)
    return p


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    props: Properties | None = None
    received_at: float = field(default_factory=time.monotonic)

    def prop(self, name: str, default=None):
        if self.props is None:
            return default
        return getattr(self.props, name, default)

    @property
    def sub_ids(self) -> list[int]:
        v = self.prop("SubscriptionIdentifier", [])
        return list(v) if isinstance(v, (list, tuple)) else [v]

    @property
    def user_props(self) -> list[tuple[str, str]]:
        return list(self.prop("UserProperty", []) or [])


class Client:
    """Synchronous-feeling paho client: connect() blocks until CONNACK, messages
    land in a queue, SUBACK/PUBACK reason codes are returned by the calls."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str | None = None,
        *,
        version: int = V5,
        clean: bool = True,
        session_expiry: int | None = None,
        connect_props: dict | None = None,
        username: str | None = None,
        password: str | None = None,
        will: dict | None = None,
        keepalive: int = 60,
        manual_ack: bool = False,
    ):
        self.host, self.port = host, port
        self.client_id = uid("c") if client_id is None else client_id
        self.version = version
        self.clean = clean
        self.keepalive = keepalive
        kwargs = {}
        if version != V5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=version,
            reconnect_on_failure=False,
            manual_ack=manual_ack,
            **kwargs,
        )
        props = dict(connect_props or {})
        if session_expiry is not None:
            props["SessionExpiryInterval"] = session_expiry
        self._connect_props = make_props("connect", props) if version == V5 else None
        if username is not None:
            self.c.username_pw_set(username, password)
        if will:
            self.c.will_set(
                will["topic"],
                will.get("payload", b""),
                will.get("qos", 0),
                will.get("retain", False),
                make_props("will", will.get("props")) if version == V5 else None,
            )
        self.messages: queue.Queue[Msg] = queue.Queue()
        self.connected = threading.Event()
        self.connack = threading.Event()
        self.disconnected = threading.Event()
        self.connack_rc: int | None = None
        self.connack_props: Properties | None = None
        self.session_present: bool | None = None
        self.disconnect_rc: int | None = None
        self.disconnect_props = None
        self._lock = threading.Lock()
        self._subacks: dict[int, list[int]] = {}
        self._unsubacks: dict[int, list[int]] = {}
        self._pubacks: dict[int, int | None] = {}
        self._cond = threading.Condition(self._lock)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_publish = self._on_publish

    # -- callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack_rc = reason_code.value
        self.session_present = bool(flags.session_present)
        self.connack_props = properties
        if not reason_code.is_failure:
            self.connected.set()
        self.connack.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_rc = reason_code.value if reason_code is not None else None
        self.disconnect_props = properties
        self.connected.clear()
        self.disconnected.set()
        self.connack.set()

    def _on_message(self, client, userdata, m):
        self.messages.put(
            Msg(m.topic, m.payload, m.qos, bool(m.retain), bool(m.dup), m.mid,
                getattr(m, "properties", None))
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._subacks[mid] = [rc.value for rc in reason_codes]
            self._cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._unsubacks[mid] = [rc.value for rc in (reason_codes or [])]
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._cond:
            self._pubacks[mid] = reason_code.value if reason_code is not None else None
            self._cond.notify_all()

    def _wait_in(self, table: dict, mid: int, timeout: float, what: str):
        with self._cond:
            if not self._cond.wait_for(lambda: mid in table or self.disconnected.is_set(), timeout):
                raise AssertionError(f"{self.client_id}: no {what} for mid {mid} within {timeout}s")
            if mid not in table:
                raise AssertionError(
                    f"{self.client_id}: disconnected (rc={self.disconnect_rc}) while waiting for {what}"
                )
            return table.pop(mid)

    # -- API
    def connect(self, timeout: float = WAIT, expect_success: bool = True) -> "Client":
        kwargs = {}
        if self.version == V5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = self._connect_props
        self.c.connect(self.host, self.port, self.keepalive, **kwargs)
        self.c.loop_start()
        if not self.connack.wait(timeout):
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s")
        if expect_success and not self.connected.is_set():
            raise AssertionError(
                f"{self.client_id}: connect failed rc={self.connack_rc} disconnect_rc={self.disconnect_rc}"
            )
        return self

    def subscribe(self, topic, qos: int = 0, *, no_local=False, retain_as_published=False,
                  retain_handling=0, sub_id: int | None = None, props: dict | None = None,
                  timeout: float = WAIT) -> list[int]:
        """Subscribe and return the SUBACK reason codes (ints)."""
        p = dict(props or {})
        if sub_id is not None:
            p["SubscriptionIdentifier"] = sub_id
        if self.version == V5:
            opts = mqtt.SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=retain_as_published,
                                         retainHandling=retain_handling)
            if isinstance(topic, str):
                topic = [(topic, opts)]
            else:
                topic = [(t, mqtt.SubscribeOptions(qos=q)) if isinstance(q, int) else (t, q) for t, q in topic]
            rc, mid = self.c.subscribe(topic, properties=make_props("subscribe", p))
        else:
            rc, mid = self.c.subscribe(topic, qos)  # str, or list of (filter, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe send failed: {rc}"
        return self._wait_in(self._subacks, mid, timeout, "SUBACK")

    def unsubscribe(self, topic, timeout: float = WAIT) -> list[int]:
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self._wait_in(self._unsubacks, mid, timeout, "UNSUBACK")

    def publish(self, topic: str, payload=b"", qos: int = 0, retain: bool = False,
                props: dict | None = None, wait: bool = True, timeout: float = WAIT):
        """Publish; for QoS>0 (and wait=True) block until PUBACK/PUBCOMP and return its reason code."""
        info = self.c.publish(topic, payload, qos, retain,
                              make_props("publish", props) if self.version == V5 else None)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError(f"publish failed locally: {info.rc}")
        if not wait:
            return info
        return self._wait_in(self._pubacks, info.mid, timeout, "PUBACK/PUBCOMP")

    def ack(self, mid: int, qos: int) -> None:
        self.c.ack(mid, qos)

    def expect_message(self, timeout: float = WAIT, topic: str | None = None) -> Msg:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                m = self.messages.get(timeout=max(0.001, remaining))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: no message{' on ' + topic if topic else ''} within {timeout}s"
                ) from None
            if topic is None or m.topic == topic:
                return m

    def expect_messages(self, n: int, timeout: float = WAIT) -> list[Msg]:
        deadline = time.monotonic() + timeout
        return [self.expect_message(max(0.001, deadline - time.monotonic())) for _ in range(n)]

    def expect_no_message(self, timeout: float = QUIET) -> None:
        """Bounded negative wait: nothing may arrive within `timeout` seconds."""
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m.topic!r} {m.payload[:50]!r}")

    def collect(self, timeout: float) -> list[Msg]:
        """Everything that arrives within `timeout` seconds (bounded wait)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                out.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                return out

    def wait_disconnected(self, timeout: float = WAIT) -> int | None:
        if not self.disconnected.wait(timeout):
            raise AssertionError(f"{self.client_id}: still connected after {timeout}s")
        return self.disconnect_rc

    def disconnect(self, rc: int | None = None, props: dict | None = None, timeout: float = WAIT) -> None:
        if self.connected.is_set():
            reason = None
            if rc is not None and self.version == V5:
                from paho.mqtt.reasoncodes import ReasonCode
                reason = ReasonCode(PacketTypes.DISCONNECT, identifier=rc)
            # paho reports "disconnected" once it has sent DISCONNECT and closed its own socket;
            # a test that reconnects right away could reach the broker before the broker has read
            # that DISCONNECT. A duplicate of the socket keeps the connection open past paho's
            # close, so we can wait for the broker's own close, i.e. for DISCONNECT handled.
            dup = None
            sock = self.c.socket()
            if sock is not None:
                try:
                    dup = socket.socket(fileno=os.dup(sock.fileno()))
                except OSError:
                    dup = None
            self.c.disconnect(reasoncode=reason, properties=make_props("disconnect", props))
            self.disconnected.wait(timeout)
            if dup is not None:
                dup.settimeout(timeout)
                try:
                    while dup.recv(65536):
                        pass
                except OSError:
                    pass
                finally:
                    dup.close()
        self.c.loop_stop()

    def kill(self) -> None:
        """Drop the TCP connection without sending DISCONNECT (abnormal close)."""
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.disconnected.wait(WAIT)
        self.c.loop_stop()

    def close(self) -> None:
        try:
            if self.connected.is_set():
                self.c.disconnect()
                self.disconnected.wait(1.0)
        finally:
            self.c.loop_stop()


class ClientFactory:
    """Creates clients and closes them all at teardown."""

    def __init__(self):
        self._paho: list[Client] = []
        self._raw: list[rawmqtt.RawClient] = []

    def paho(self, broker, client_id: str | None = None, *, connect: bool = True, **kw) -> Client:
        c = Client(broker.host, broker.port, client_id, **kw)
        self._paho.append(c)
        if connect:
            c.connect()
        return c

    def raw(self, broker, version: int = rawmqtt.MQTT5, timeout: float = WAIT) -> rawmqtt.RawClient:
        r = rawmqtt.RawClient(broker.host, broker.port, version=version, timeout=timeout)
        self._raw.append(r)
        return r

    def close_all(self) -> None:
        for c in self._paho:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - teardown must not mask the test result
                pass
        for r in self._raw:
            r.close()


class Witness:
    """A subscriber/publisher pair connected *before* a test does something nasty;
    `check()` proves the broker still routes messages for other clients."""

    def __init__(self, factory: ClientFactory, broker):
        self.topic = uid("witness")
        self.sub = factory.paho(broker, uid("wsub"), version=V311)
        self.sub.subscribe(self.topic, 1)
        self.pub = factory.paho(broker, uid("wpub"), version=V5)
        self.n = 0

    def check(self) -> None:
        self.n += 1
        payload = f"alive-{self.n}".encode()
        self.pub.publish(self.topic, payload, qos=1)
        m = self.sub.expect_message()
        assert m.payload == payload


def assert_error_close(r, version, allowed=None, timeout=3.0):
    """The broker must close `r`; v5 may send one DISCONNECT (>= 0x80, in `allowed`) first."""
    got = r.expect_closed(timeout)
    if version == V311:
        assert got == [], f"3.1.1 server sent {got!r} before closing"
    else:
        assert len(got) <= 1 and all(p.type == rawmqtt.DISCONNECT for p in got), got
        for p in got:
            assert p.rc >= 0x80, got
            if allowed is not None:
                assert p.rc in allowed, f"DISCONNECT reason 0x{p.rc:02x} not in {[hex(a) for a in allowed]}"
    return got
