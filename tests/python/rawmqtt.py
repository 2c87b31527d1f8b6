"""A tiny, deliberately permissive MQTT 3.1.1 / 5.0 packet encoder/decoder and a
raw-socket client.

It exists for everything paho-mqtt cannot (or will not) do: malformed packets,
withholding acknowledgements, inspecting the DUP flag and packet identifiers,
topic aliases, and observing exactly what the broker sends before it closes the
connection.

Nothing here validates anything: the encoders happily produce illegal packets
(that is the point).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Iterable

# --------------------------------------------------------------------------
# constants

MQTT311 = 4
MQTT5 = 5

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

PACKET_NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK",
    PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ", PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT", AUTH: "AUTH",
}


class P:
    """MQTT 5 property identifiers."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _U32, 0x03: _STR, 0x08: _STR, 0x09: _BIN, 0x0B: _VARINT,
    0x11: _U32, 0x12: _STR, 0x13: _U16, 0x15: _STR, 0x16: _BIN, 0x17: _BYTE,
    0x18: _U32, 0x19: _BYTE, 0x1A: _STR, 0x1C: _STR, 0x1F: _STR, 0x21: _U16,
    0x22: _U16, 0x23: _U16, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _U32,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}


# --------------------------------------------------------------------------
# primitive encoders


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def u32(n: int) -> bytes:
    return struct.pack("!I", n)


def bin_(data: bytes) -> bytes:
    return u16(len(data)) + data


def string(s: str | bytes) -> bytes:
    """Length-prefixed string; bytes are passed through unvalidated (for invalid UTF-8 tests)."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    return bin_(s)


class Props:
    """Ordered list of (id, value) pairs; duplicates allowed (user property, subscription id)."""

    def __init__(self, items: Iterable[tuple[int, object]] | dict | None = None):
        if items is None:
            items = []
        elif isinstance(items, dict):
            items = list(items.items())
        self.items: list[tuple[int, object]] = list(items)

    def add(self, pid: int, value) -> "Props":
        self.items.append((pid, value))
        return self

    def get(self, pid: int, default=None):
        for k, v in self.items:
            if k == pid:
                return v
        return default

    def all(self, pid: int) -> list:
        return [v for k, v in self.items if k == pid]

    def __contains__(self, pid: int) -> bool:
        return any(k == pid for k, _ in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Props({self.items!r})"

    def encode(self) -> bytes:
        body = bytearray()
        for pid, value in self.items:
            body += varint(pid)
            t = PROPERTY_TYPES[pid]
            if t == _BYTE:
                body.append(value)
            elif t == _U16:
                body += u16(value)
            elif t == _U32:
                body += u32(value)
            elif t == _VARINT:
                body += varint(value)
            elif t == _STR:
                body += string(value)
            elif t == _BIN:
                body += bin_(value)
            elif t == _PAIR:
                body += string(value[0]) + string(value[1])
        return varint(len(body)) + bytes(body)


def props_bytes(props) -> bytes:
    if props is None:
        return b"\x00"
    if isinstance(props, (bytes, bytearray)):
        return bytes(props)
    if not isinstance(props, Props):
        props = Props(props)
    return props.encode()


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | (flags & 0x0F)]) + varint(len(body)) + body


# --------------------------------------------------------------------------
# packet encoders


def connect(
    client_id: str | bytes = "",
    *,
    version: int = MQTT311,
    clean: bool = True,
    keepalive: int = 60,
    username: str | None = None,
    password: str | bytes | None = None,
    will_topic: str | None = None,
    will_payload: bytes = b"",
    will_qos: int = 0,
    will_retain: bool = False,
    will_props=None,
    props=None,
    proto_name: str | bytes = "MQTT",
    reserved_flag: bool = False,
    extra_flags: int = 0,
) -> bytes:
    flags = extra_flags
    if clean:
        flags |= 0x02
    if reserved_flag:
        flags |= 0x01
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3)
        if will_retain:
            flags |= 0x20
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = string(proto_name) + bytes([version, flags]) + u16(keepalive)
    if version == MQTT5:
        body += props_bytes(props)
    body += string(client_id)
    if will_topic is not None:
        if version == MQTT5:
            body += props_bytes(will_props)
        body += string(will_topic) + bin_(will_payload)
    if username is not None:
        body += string(username)
    if password is not None:
        body += bin_(password.encode() if isinstance(password, str) else password)
    return packet(CONNECT, 0, body)


def publish(
    topic: str | bytes,
    payload: bytes | str = b"",
    *,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    pid: int | None = None,
    version: int = MQTT311,
    props=None,
    flags: int | None = None,
) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    if flags is None:
        flags = (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = string(topic)
    if qos > 0 or (flags >> 1) & 3:
        body += u16(pid if pid is not None else 1)
    if version == MQTT5:
        body += props_bytes(props)
    body += payload
    return packet(PUBLISH, flags, body)


def _ack(ptype: int, flags: int, pid: int, rc: int | None, props, version: int) -> bytes:
    body = u16(pid)
    if version == MQTT5 and (rc is not None or props is not None):
        body += bytes([rc or 0])
        if props is not None:
            body += props_bytes(props)
    return packet(ptype, flags, body)


def puback(pid, rc=None, props=None, version=MQTT311):
    return _ack(PUBACK, 0, pid, rc, props, version)


def pubrec(pid, rc=None, props=None, version=MQTT311):
    return _ack(PUBREC, 0, pid, rc, props, version)


def pubrel(pid, rc=None, props=None, version=MQTT311, flags=0x02):
    return _ack(PUBREL, flags, pid, rc, props, version)


def pubcomp(pid, rc=None, props=None, version=MQTT311):
    return _ack(PUBCOMP, 0, pid, rc, props, version)


def sub_options(qos=0, no_local=False, retain_as_published=False, retain_handling=0) -> int:
    return qos | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | (retain_handling << 4)


def subscribe(pid: int, topics, *, version: int = MQTT311, props=None, flags: int = 0x02) -> bytes:
    """topics: list of (filter, options_byte) or (filter, qos) tuples, or a single filter string."""
    if isinstance(topics, (str, bytes)):
        topics = [(topics, 0)]
    body = u16(pid)
    if version == MQTT5:
        body += props_bytes(props)
    for filt, opts in topics:
        body += string(filt) + bytes([opts])
    return packet(SUBSCRIBE, flags, body)


def unsubscribe(pid: int, topics, *, version: int = MQTT311, props=None, flags: int = 0x02) -> bytes:
    if isinstance(topics, (str, bytes)):
        topics = [topics]
    body = u16(pid)
    if version == MQTT5:
        body += props_bytes(props)
    for filt in topics:
        body += string(filt)
    return packet(UNSUBSCRIBE, flags, body)


def pingreq() -> bytes:
    return packet(PINGREQ, 0, b"")


def disconnect(rc: int | None = None, props=None, version: int = MQTT311) -> bytes:
    body = b""
    if version == MQTT5 and (rc is not None or props is not None):
        body = bytes([rc or 0])
        if props is not None:
            body += props_bytes(props)
    return packet(DISCONNECT, 0, body)


def auth(rc: int = 0, props=None) -> bytes:
    return packet(AUTH, 0, bytes([rc]) + props_bytes(props))


# --------------------------------------------------------------------------
# decoder


class DecodeError(Exception):
    pass


@dataclass
class Packet:
    type: int
    flags: int
    raw: bytes  # the complete packet as received
    rc: int | None = None
    pid: int | None = None
    props: Props = field(default_factory=Props)
    # CONNACK
    session_present: bool | None = None
    # PUBLISH
    topic: bytes | None = None
    payload: bytes | None = None
    qos: int = 0
    dup: bool = False
    retain: bool = False
    # SUBACK / UNSUBACK
    rcs: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, f"type{self.type}")

    @property
    def topic_str(self) -> str:
        return (self.topic or b"").decode("utf-8", "replace")

    def __repr__(self) -> str:
        parts = [self.name]
        if self.type == PUBLISH:
            parts.append(f"topic={self.topic!r} qos={self.qos} dup={int(self.dup)} retain={int(self.retain)}")
            parts.append(f"pid={self.pid} payload={self.payload[:40]!r}")
        else:
            if self.pid is not None:
                parts.append(f"pid={self.pid}")
            if self.rc is not None:
                parts.append(f"rc=0x{self.rc:02x}")
            if self.session_present is not None:
                parts.append(f"sp={int(self.session_present)}")
            if self.rcs:
                parts.append("rcs=[" + ",".join(f"0x{r:02x}" for r in self.rcs) + "]")
        if len(self.props):
            parts.append(repr(self.props))
        return "<" + " ".join(parts) + ">"


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    mult, value = 1, 0
    for i in range(4):
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos
        mult *= 128
    raise DecodeError("varint too long")


def _str(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(buf):
        raise DecodeError("truncated string")
    (n,) = struct.unpack_from("!H", buf, pos)
    pos += 2
    if pos + n > len(buf):
        raise DecodeError("truncated string")
    return buf[pos:pos + n], pos + n


def decode_props(buf: bytes, pos: int) -> tuple[Props, int]:
    length, pos = decode_varint(buf, pos)
    end = pos + length
    props = Props()
    while pos < end:
        pid, pos = decode_varint(buf, pos)
        t = PROPERTY_TYPES.get(pid)
        if t is None:
            raise DecodeError(f"unknown property 0x{pid:02x}")
        if t == _BYTE:
            v = buf[pos]
            pos += 1
        elif t == _U16:
            (v,) = struct.unpack_from("!H", buf, pos)
            pos += 2
        elif t == _U32:
            (v,) = struct.unpack_from("!I", buf, pos)
            pos += 4
        elif t == _VARINT:
            v, pos = decode_varint(buf, pos)
        elif t == _STR:
            v, pos = _str(buf, pos)
            v = v.decode("utf-8", "replace")
        elif t == _BIN:
            v, pos = _str(buf, pos)
        else:
            k, pos = _str(buf, pos)
            val, pos = _str(buf, pos)
            v = (k.decode("utf-8", "replace"), val.decode("utf-8", "replace"))
        props.add(pid, v)
    if pos != end:
        raise DecodeError("property length mismatch")
    return props, pos


def decode(raw: bytes, version: int) -> Packet:
    """Decode one complete packet (fixed header included)."""
    ptype, flags = raw[0] >> 4, raw[0] & 0x0F
    _, pos = decode_varint(raw, 1)
    body = raw[pos:]
    p = Packet(type=ptype, flags=flags, raw=raw)
    v5 = version == MQTT5
    if ptype == CONNACK:
        p.session_present = bool(body[0] & 1)
        p.rc = body[1]
        if v5 and len(body) > 2:
            p.props, _ = decode_props(body, 2)
    elif ptype == PUBLISH:
        p.qos = (flags >> 1) & 3
        p.dup = bool(flags & 8)
        p.retain = bool(flags & 1)
        p.topic, i = _str(body, 0)
        if p.qos:
            (p.pid,) = struct.unpack_from("!H", body, i)
            i += 2
        if v5:
            p.props, i = decode_props(body, i)
        p.payload = body[i:]
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        (p.pid,) = struct.unpack_from("!H", body, 0)
        if v5:
            p.rc = body[2] if len(body) > 2 else 0
            if len(body) > 3:
                p.props, _ = decode_props(body, 3)
    elif ptype in (SUBACK, UNSUBACK):
        (p.pid,) = struct.unpack_from("!H", body, 0)
        i = 2
        if v5:
            p.props, i = decode_props(body, i)
        p.rcs = list(body[i:])
    elif ptype == DISCONNECT:
        if v5:
            p.rc = body[0] if body else 0
            if len(body) > 1:
                p.props, _ = decode_props(body, 1)
    elif ptype == AUTH:
        p.rc = body[0] if body else 0
        if len(body) > 1:
            p.props, _ = decode_props(body, 1)
    return p


# --------------------------------------------------------------------------
# raw client


class ConnectionClosed(Exception):
    pass


class RawClient:
    """A blocking socket speaking raw MQTT. `version` selects how replies are decoded."""

    def __init__(self, host: str, port: int, version: int = MQTT311, timeout: float = 5.0):
        self.host, self.port, self.version = host, port, version
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False

    # -- io
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, tolerating a connection the broker already closed."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet before deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no packet before deadline") from None
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            chunk = b""
        if not chunk:
            self.closed = True
            raise ConnectionClosed("connection closed by broker")
        self.buf += chunk

    def recv_packet(self, timeout: float = 5.0) -> Packet:
        """Next packet; raises TimeoutError or ConnectionClosed."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                try:
                    length, pos = decode_varint(self.buf, 1)
                except DecodeError:
                    length = None
                if length is not None and len(self.buf) >= pos + length:
                    raw = self.buf[: pos + length]
                    self.buf = self.buf[pos + length:]
                    return decode(raw, self.version)
            self._fill(deadline)

    def recv_until(self, ptype: int, timeout: float = 5.0, keep: list | None = None) -> Packet:
        """Return the next packet of `ptype`, collecting others into `keep` if given."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.recv_packet(max(0.0, deadline - time.monotonic()) or 0.001)
            if p.type == ptype:
                return p
            if keep is not None:
                keep.append(p)

    def expect(self, ptype: int, timeout: float = 5.0) -> Packet:
        p = self.recv_packet(timeout)
        assert p.type == ptype, f"expected {PACKET_NAMES[ptype]}, got {p!r}"
        return p

    def expect_nothing(self, timeout: float) -> None:
        """Assert that no packet arrives within `timeout` (and the connection stays open)."""
        try:
            p = self.recv_packet(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected packet {p!r}")

    def expect_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Wait until the broker closes the connection; return packets received before."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                got.append(self.recv_packet(max(0.001, deadline - time.monotonic())))
            except ConnectionClosed:
                return got
            except DecodeError:
                continue
            except TimeoutError:
                raise AssertionError(
                    f"broker did not close the connection within {timeout}s; received {got!r}"
                ) from None

    def is_open(self, timeout: float = 0.2) -> bool:
        try:
            self.recv_packet(timeout)
        except TimeoutError:
            return True
        except ConnectionClosed:
            return False
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True

    def abort(self) -> None:
        """Close abruptly with a TCP RST (no DISCONNECT)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    # -- conveniences
    def connect(self, client_id: str = "", timeout: float = 5.0, **kw) -> Packet:
        kw.setdefault("version", self.version)
        self.send(connect(client_id, **kw))
        return self.expect(CONNACK, timeout)

    def subscribe(self, topics, pid: int = 1, props=None, timeout: float = 5.0) -> Packet:
        self.send(subscribe(pid, topics, version=self.version, props=props))
        return self.recv_until(SUBACK, timeout)

    def publish(self, topic, payload=b"", **kw) -> None:
        kw.setdefault("version", self.version)
        self.send(publish(topic, payload, **kw))

    def puback(self, pid: int) -> None:
        self.send(puback(pid, version=self.version))

    def disconnect(self, rc: int | None = None, props=None) -> None:
        self.try_send(disconnect(rc, props, version=self.version))
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
