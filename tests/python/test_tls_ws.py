"""MQTT over WebSocket (ws://, wss://) and over TLS with paho-mqtt as the peer.

Ironbridge only (the mosquitto run skips them): mosquitto would need its own TLS and
websockets listeners, and the point here is Ironbridge's transports, not a difference
in MQTT behaviour.  Certificates are made per test module with the `openssl` CLI in a
temporary directory; no key is kept anywhere.
"""

from __future__ import annotations

import os
import queue
import shutil
import ssl
import subprocess

import paho.mqtt.client as mqtt
import pytest

import helpers
from helpers import V311, V5, WAIT, uid

pytestmark = pytest.mark.skipif(
    helpers.is_mosquitto(), reason="Ironbridge transports (TLS, WebSocket); nothing to compare"
)

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca.pem, server.pem/.key (127.0.0.1, localhost), client.pem/.key (CN=device-1)."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is required in CI")
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-new", *EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=Ironbridge test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, cn, ext in [
        ("server", "localhost",
         "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "device-1", "extendedKeyUsage=clientAuth\n"),
    ]:
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + ext)
        openssl("req", "-new", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext", cwd=d)
    return d


@pytest.fixture
def tls_broker(make_broker, pki):
    """Ironbridge with ws on the HTTP listener, plus https (wss) and mqtts listeners."""
    return make_broker(
        tls={"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
             "client_ca": str(pki / "ca.pem")},
        listeners={"https": "127.0.0.1:0", "mqtts": "127.0.0.1:0"},
    )


class Peer:
    """A paho client on a given transport that records what it receives."""

    def __init__(self, version: int, transport: str = "tcp", tls: dict | None = None,
                 username: str | None = None):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uid("tw"),
                             protocol=version, transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        if tls is not None:
            self.c.tls_set(cert_reqs=ssl.CERT_REQUIRED, **tls)
        if username is not None:
            self.c.username_pw_set(username)
        self.messages: queue.Queue = queue.Queue()
        self.connack = queue.Queue()
        self.subacks = queue.Queue()
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))

    def connect(self, port: int) -> "Peer":
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        rc = self.connack.get(timeout=WAIT)
        assert not rc.is_failure, f"CONNACK {rc}"
        return self

    def subscribe(self, topic: str) -> None:
        self.c.subscribe(topic, qos=1)
        rcs = self.subacks.get(timeout=WAIT)
        assert all(not rc.is_failure for rc in rcs), rcs

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def round_trip(pub: Peer, sub: Peer, topic: str) -> None:
    sub.subscribe(topic)
    payload = os.urandom(300)  # binary, and larger than one small frame
    info = pub.c.publish(topic, payload, qos=1)
    info.wait_for_publish(WAIT)
    assert sub.messages.get(timeout=WAIT) == (topic, payload)


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_ws_round_trip(tls_broker, version):
    sub = Peer(version, "websockets").connect(tls_broker.http_port)
    pub = Peer(version, "websockets").connect(tls_broker.http_port)
    try:
        round_trip(pub, sub, f"ws/{uid()}")
    finally:
        pub.close()
        sub.close()


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_wss_round_trip(tls_broker, pki, version):
    port = tls_broker.listeners["https"]
    tls = {"ca_certs": str(pki / "ca.pem")}
    sub = Peer(version, "websockets", tls).connect(port)
    pub = Peer(version, "websockets", tls).connect(port)
    try:
        round_trip(pub, sub, f"wss/{uid()}")
    finally:
        pub.close()
        sub.close()


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_transports_share_one_broker(tls_broker, pki, version):
    """A wss client with a client certificate publishes; mqtts and plain TCP clients receive."""
    ca = str(pki / "ca.pem")
    mtls = {"ca_certs": ca, "certfile": str(pki / "client.pem"), "keyfile": str(pki / "client.key")}
    pub = Peer(version, "websockets", mtls).connect(tls_broker.listeners["https"])
    over_tls = Peer(version, "tcp", {"ca_certs": ca}).connect(tls_broker.listeners["mqtts"])
    plain = Peer(version).connect(tls_broker.port)
    topic = f"mixed/{uid()}"
    try:
        plain.subscribe(topic)
        round_trip(pub, over_tls, topic)
        assert plain.messages.get(timeout=WAIT)[0] == topic
    finally:
        for p in (pub, over_tls, plain):
            p.close()


def test_wss_refuses_an_untrusted_server_certificate(tls_broker):
    """The client side of the check: without our CA, paho's default trust store refuses."""
    peer = Peer(V5, "websockets", {})
    with pytest.raises((ssl.SSLError, OSError)):
        peer.c.connect("127.0.0.1", tls_broker.listeners["https"], keepalive=30)
    peer.c.loop_stop()


def test_ws_keeps_working_under_many_small_messages(tls_broker):
    """Many QoS 1 messages over ws: every PUBACK and delivery must be flushed promptly."""
    sub = Peer(V5, "websockets").connect(tls_broker.http_port)
    pub = Peer(V5, "websockets").connect(tls_broker.http_port)
    topic = f"burst/{uid()}"
    try:
        sub.subscribe(topic)
        infos = [pub.c.publish(topic, str(i).encode(), qos=1) for i in range(200)]
        for info in infos:
            info.wait_for_publish(WAIT)
        got = [sub.messages.get(timeout=WAIT)[1] for _ in range(200)]
        assert got == [str(i).encode() for i in range(200)]
    finally:
        pub.close()
        sub.close()


