"""Differential MQTT conformance harness.

The same tests run against Debian's mosquitto 2.0.11 and against Ironbridge.

    pytest tests/python --broker=mosquitto
    pytest tests/python --broker=ironbridge      # uses $IRONBRIDGE_BIN or target/debug/ironbridge

Default: $BROKER if set, else "ironbridge" when $IRONBRIDGE_BIN is set, else "mosquitto".

Broker settings (one dict, mapped to both brokers; names are Ironbridge's `[mqtt]` keys):

    allow_anonymous      bool          (default True)
    max_keepalive        u16 seconds
    max_packet_size      bytes
    receive_maximum      u16            (mosquitto: max_inflight_messages)
    topic_alias_maximum  u16            (mosquitto: max_topic_alias)
    max_inflight_messages
    max_queued_messages
    max_queued_bytes
    retain_available     bool
    sys_interval         seconds
    users                {username: password}      (mosquitto: password_file via mosquitto_passwd,
                                                    or dynsec clients when `acl` is set)
    acl                  [{"filter": "a/#", "access": "subscribe"|"publish"|"all",
                           "allow": bool, "username": optional}]   first match wins,
                                                                   no match => allowed
                         (mosquitto: dynamic-security plugin, see mosquitto_dynsec())
    tls, listeners       {key: value}   Ironbridge only: the `[tls]` / `[listeners]` tables;
                                        the started broker's `listeners` maps each
                                        `listening NAME` line to its port
    persistence          bool           Ironbridge: on by default (data_dir/mqtt.db);
                                        mosquitto: off unless True (`persistence true`,
                                        `persistence_location` = the broker's work dir)
    persistence_fsync    bool           Ironbridge only
    queue_qos0_messages  bool
    max_connections      int            (mosquitto: the listener's `max_connections`)
    max_connection_rate, max_publish_rate, max_topic_length, max_topic_levels,
    max_subscriptions    int            Ironbridge only
    overflow_policy      "drop_new" | "drop_oldest" | "disconnect"
                                        Ironbridge only; "drop_new" is mosquitto's behaviour
                         A mosquitto broker given an Ironbridge-only setting skips the test
                         (MOSQUITTO_UNSUPPORTED).

Broker objects: start(), stop() (SIGTERM), kill() (SIGKILL), restart() (graceful, same port,
config and data dir), crash_restart(graceful=False) (SIGKILL or SIGTERM, then start on the
same port and data dir), pid, rss_kb() (VmRSS from /proc).

Tests select them with ``@pytest.mark.broker_config(key=value, ...)`` and the
``broker`` fixture, or call the ``make_broker(**settings)`` factory.
"""

from __future__ import annotations

import base64
import getpass
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import helpers

REPO_ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = os.environ.get("MOSQUITTO_PASSWD_BIN") or shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
MOSQUITTO_DYNSEC = os.environ.get("MOSQUITTO_DYNSEC_PLUGIN") or next(
    iter(sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))),
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
)
START_DEADLINE = 20.0

KNOWN_SETTINGS = {
    "allow_anonymous", "max_keepalive", "max_packet_size", "receive_maximum",
    "topic_alias_maximum", "max_inflight_messages", "max_queued_messages",
    "max_queued_bytes", "retain_available", "sys_interval", "users", "acl",
    # Ironbridge only (tests using them skip mosquitto): extra TOML tables, as dicts.
    "tls", "listeners",
    # Persistence (Ironbridge: on by default, data_dir/mqtt.db; mosquitto: off unless
    # persistence=True, then `persistence true` + `persistence_location` in the work dir).
    "persistence", "persistence_fsync", "queue_qos0_messages",
    # Limits (Ironbridge `[mqtt]` keys).  max_connections maps to mosquitto's per-listener
    # `max_connections`; overflow_policy "drop_new" is mosquitto's (only) behaviour.
    "max_connections", "max_connection_rate", "max_publish_rate", "max_topic_length",
    "max_topic_levels", "max_subscriptions", "overflow_policy",
}

# Settings mosquitto has no equivalent for: a mosquitto broker started with one of them
# (other than the listed no-op value) skips the test instead of silently ignoring it.
MOSQUITTO_UNSUPPORTED = {
    "max_connection_rate": 0, "max_publish_rate": 0, "max_topic_length": 0,
    "max_topic_levels": None, "max_subscriptions": 0, "overflow_policy": "drop_new",
    "persistence_fsync": None,
}


# ---------------------------------------------------------------------------
# pytest plumbing


def pytest_addoption(parser):
    parser.addoption(
        "--broker",
        action="store",
        choices=["mosquitto", "ironbridge"],
        default=None,
        help="broker under test (default: $BROKER, else ironbridge if $IRONBRIDGE_BIN is set, else mosquitto)",
    )


def resolve_kind(config) -> str:
    kind = config.getoption("--broker") or os.environ.get("BROKER")
    if not kind:
        kind = "ironbridge" if os.environ.get("IRONBRIDGE_BIN") else "mosquitto"
    if kind not in ("mosquitto", "ironbridge"):
        raise pytest.UsageError(f"unknown broker {kind!r}")
    return kind


def pytest_configure(config):
    helpers.BROKER_KIND = resolve_kind(config)
    config.addinivalue_line(
        "markers", "broker_config(**settings): settings for the `broker` fixture (see conftest docstring)"
    )


def pytest_sessionstart(session):
    if helpers.BROKER_KIND == "ironbridge":
        exe = ironbridge_bin()
        if not os.access(exe, os.X_OK):
            raise pytest.UsageError(
                f"--broker=ironbridge but {exe} is not an executable (run `cargo build` or set IRONBRIDGE_BIN)"
            )


def pytest_report_header(config):
    kind = helpers.BROKER_KIND
    exe = MOSQUITTO_BIN if kind == "mosquitto" else ironbridge_bin()
    return [f"broker under test: {kind} ({exe})"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def ironbridge_bin() -> str:
    b = os.environ.get("IRONBRIDGE_BIN")
    if b:
        return b
    return str(REPO_ROOT / "target" / "debug" / "ironbridge")


def free_port() -> int:
    """A port that was free a moment ago (mosquitto cannot report an ephemeral port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(host: str, port: int, deadline: float, proc: subprocess.Popen) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} during startup")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker not accepting on {host}:{port} before deadline")
        time.sleep(0.01)


# ---------------------------------------------------------------------------
# broker processes


class BrokerBase:
    kind = "?"
    host = "127.0.0.1"

    def __init__(self, workdir: Path, settings: dict):
        unknown = set(settings) - KNOWN_SETTINGS
        if unknown:
            raise ValueError(f"unknown broker settings: {sorted(unknown)}")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.settings = dict(settings)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path = workdir / "broker.log"
        self.config_path: Path | None = None

    # subclass API
    def _start(self) -> None:
        raise NotImplementedError

    def start(self) -> "BrokerBase":
        self._start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM)."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        self._after_exit()

    def kill(self) -> None:
        """Hard stop (SIGKILL)."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.kill()
        p.wait(5)
        self._after_exit()

    def restart(self) -> "BrokerBase":
        """Graceful stop, then start again on the same port with the same config/data dir."""
        self.stop()
        self._start()
        return self

    def _after_exit(self) -> None:
        pass

    def crash_restart(self, graceful: bool = False) -> "BrokerBase":
        """SIGKILL (or SIGTERM when `graceful`), then start again on the same port with the
        same config and data dir (persistence tests)."""
        if graceful:
            self.stop()
        else:
            self.kill()
        self._start()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running else None

    def rss_kb(self) -> int:
        """Resident set size of the broker process (VmRSS from /proc, in KiB)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"<{self.kind} {self.host}:{self.port}>"


class MosquittoBroker(BrokerBase):
    kind = "mosquitto"

    def _write_config(self) -> Path:
        s = self.settings
        d = self.workdir
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if s.get('allow_anonymous', True) else 'false'}",
            # when run as root mosquitto would otherwise drop to user "mosquitto"
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
            "set_tcp_nodelay true",
        ]
        for key, noop in MOSQUITTO_UNSUPPORTED.items():
            if key in s and s[key] != noop:
                pytest.skip(f"mosquitto has no equivalent of the Ironbridge setting {key}={s[key]!r}")
        if s.get("persistence"):
            lines += ["persistence true", f"persistence_location {d}/", "persistence_file mosquitto.db"]
        else:
            lines.append("persistence false")
        if "queue_qos0_messages" in s:
            lines.append(f"queue_qos0_messages {'true' if s['queue_qos0_messages'] else 'false'}")
        if "max_connections" in s:
            # a listener option: applies to the `listener` line above
            lines.append(f"max_connections {int(s['max_connections']) or -1}")
        simple = {
            "max_keepalive": "max_keepalive",
            "max_packet_size": "max_packet_size",
            "max_inflight_messages": "max_inflight_messages",
            "max_queued_messages": "max_queued_messages",
            "max_queued_bytes": "max_queued_bytes",
            "sys_interval": "sys_interval",
            "topic_alias_maximum": "max_topic_alias",
            # mosquitto advertises max_inflight_messages as its CONNACK Receive Maximum
            # and uses it as the inbound quota as well.
            "receive_maximum": "max_inflight_messages",
        }
        for key, mkey in simple.items():
            if key in s:
                lines.append(f"{mkey} {int(s[key])}")
        if "retain_available" in s:
            lines.append(f"retain_available {'true' if s['retain_available'] else 'false'}")
        users = s.get("users") or {}
        if s.get("acl") is not None:
            # acl_file cannot deny SUBSCRIBE and has deny-by-default semantics, so ACL
            # configs use the dynamic-security plugin shipped with Debian's mosquitto,
            # which then also holds the users (PBKDF2-SHA512 hashes made here).
            dynsec = d / "dynamic-security.json"
            dynsec.write_text(json.dumps(mosquitto_dynsec(s["acl"], users), indent=1))
            lines.append(f"plugin {MOSQUITTO_DYNSEC}")
            lines.append(f"plugin_opt_config_file {dynsec}")
        elif users:
            pw = d / "passwd"
            first = True
            for user, password in users.items():
                args = [MOSQUITTO_PASSWD, "-b"] + (["-c"] if first else []) + [str(pw), user, password]
                subprocess.run(args, check=True, capture_output=True)
                first = False
            lines.append(f"password_file {pw}")
        conf = d / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _start(self) -> None:
        if self.port is None:
            self.port = free_port()
        self.config_path = self._write_config()
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [MOSQUITTO_BIN, "-c", str(self.config_path)],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        logf.close()
        wait_tcp(self.host, self.port, time.monotonic() + START_DEADLINE, self.proc)


def mosquitto_dynsec(rules: list[dict], users: dict) -> dict:
    """Map Ironbridge users + ACL rules to a mosquitto dynamic-security config.

    Ironbridge: rules are checked in order, the first rule whose filter matches (and
    whose username, if any, is the client's) decides; no match => allowed.
    dynsec: every principal (the anonymous group, each user) gets ONE role holding
    the rules that apply to it, in the same order, as strictly decreasing
    priorities; defaultACLAccess allows everything.  Access mapping:
    subscribe -> subscribePattern, publish -> publishClientSend, all -> both.
    (subscribePattern denies a subscription whose filter lies within the rule's
    filter, e.g. rule "a/#" denies "a/b" and "a/+", but not "#".)
    """
    types = {"subscribe": ["subscribePattern"], "publish": ["publishClientSend"],
             "all": ["subscribePattern", "publishClientSend"]}

    def role(name: str, applicable: list[dict]) -> dict:
        acls = []
        prio = 10 * (len(applicable) + 1)
        for r in applicable:
            for t in types[r["access"]]:
                acls.append({"acltype": t, "topic": r["filter"], "priority": prio, "allow": bool(r["allow"])})
            prio -= 10
        return {"rolename": name, "acls": acls}

    def pbkdf2(password: str) -> dict:
        salt = os.urandom(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
        return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
                "iterations": 101}

    roles = [role("anonymous", [r for r in rules if not r.get("username")])]
    clients = []
    for i, (user, password) in enumerate(users.items()):
        roles.append(role(f"user{i}", [r for r in rules if r.get("username") in (None, "", user)]))
        clients.append({"username": user, "roles": [{"rolename": f"user{i}"}], **pbkdf2(password)})
    return {
        "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True,
                             "subscribe": True, "unsubscribe": True},
        "clients": clients,
        "groups": [{"groupname": "anonymous", "roles": [{"rolename": "anonymous"}], "clients": []}],
        "anonymousGroup": "anonymous",
        "roles": roles,
    }


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot encode {v!r} as TOML")


def ironbridge_toml(settings: dict) -> str:
    s = dict(settings)
    s.setdefault("allow_anonymous", True)
    users = s.pop("users", None) or {}
    acl = s.pop("acl", None) or []
    tables = {name: s.pop(name) for name in ("tls", "listeners") if name in s}
    lines = ["[mqtt]"]
    for k in sorted(s):
        lines.append(f"{k} = {toml_value(s[k])}")
    for user, password in users.items():
        lines += ["", "[[mqtt.users]]", f"username = {toml_value(user)}", f"password = {toml_value(password)}"]
    for rule in acl:
        lines += ["", "[[mqtt.acl]]"]
        for k in ("filter", "access", "allow", "username"):
            if rule.get(k) is not None:
                lines.append(f"{k} = {toml_value(rule[k])}")
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


LISTEN_RE = re.compile(r"listening (\w+) ([0-9.]+):(\d+)")


class IronbridgeBroker(BrokerBase):
    kind = "ironbridge"

    def __init__(self, workdir: Path, settings: dict):
        super().__init__(workdir, settings)
        self.http_port: int | None = None
        # Every `listening NAME ADDR` line: name -> port (mqtt is printed last).
        self.listeners: dict[str, int] = {}
        self._drain: threading.Thread | None = None

    def _start(self) -> None:
        exe = ironbridge_bin()
        if not os.access(exe, os.X_OK):
            pytest.fail(f"ironbridge binary not found or not executable: {exe} (build it or set IRONBRIDGE_BIN)")
        self.config_path = self.workdir / "ironbridge.toml"
        self.config_path.write_text(ironbridge_toml(self.settings))
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        mqtt_addr = f"127.0.0.1:{self.port if self.port else 0}"
        cmd = [
            exe, "serve", "--config", str(self.config_path), "--data-dir", str(data),
            "--mqtt", mqtt_addr, "--http", "127.0.0.1:0", "--coap", "127.0.0.1:0",
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_BACKTRACE": "1"},
        )
        found = threading.Event()
        reported: dict[str, int] = {}
        proc, log_path = self.proc, self.log_path

        def drain():
            with open(log_path, "ab") as logf:
                for line in iter(proc.stdout.readline, b""):
                    logf.write(line)
                    logf.flush()
                    m = LISTEN_RE.search(line.decode("utf-8", "replace"))
                    if m and m.group(1) not in reported:
                        reported[m.group(1)] = int(m.group(3))
                        if m.group(1) == "mqtt":
                            found.set()
            found.set()  # EOF: wake the waiter, which then checks what was reported

        self._drain = threading.Thread(target=drain, name="ironbridge-log", daemon=True)
        self._drain.start()
        if not found.wait(START_DEADLINE):
            self.kill()
            raise RuntimeError(f"ironbridge did not report its mqtt listener within {START_DEADLINE}s")
        if "mqtt" not in reported:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
            raise RuntimeError(f"ironbridge exited ({proc.returncode}) without reporting its mqtt listener")
        self.port = reported["mqtt"]
        self.http_port = reported.get("http", self.http_port)
        self.listeners = reported
        wait_tcp(self.host, self.port, time.monotonic() + START_DEADLINE, proc)

    def _after_exit(self) -> None:
        if self._drain is not None:
            self._drain.join(5)


BROKER_CLASSES = {"mosquitto": MosquittoBroker, "ironbridge": IronbridgeBroker}


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def broker_kind() -> str:
    return helpers.BROKER_KIND


@pytest.fixture
def make_broker(request, tmp_path, broker_kind):
    """Factory: make_broker(**settings) -> started broker (stopped at teardown)."""
    started: list[BrokerBase] = []

    def factory(**settings) -> BrokerBase:
        b = BROKER_CLASSES[broker_kind](tmp_path / f"broker{len(started)}", settings)
        started.append(b)
        try:
            b.start()
        except Exception:
            print(f"----- {b.kind} log ({b.log_path}) -----\n{b.log()}")
            raise
        return b

    yield factory
    failed = any(getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
                 for w in ("setup", "call"))
    for b in started:
        b.kill() if failed else b.stop()
        if failed:
            print(f"----- {b.kind} log ({b.log_path}) -----\n{b.log()[-20000:]}")
        exit_code = b.proc.returncode if b.proc else None
        # A broker that crashed on its own is always a failure worth seeing.
        if exit_code not in (None, 0, -signal.SIGTERM, -signal.SIGKILL) and not failed:
            print(f"----- {b.kind} log ({b.log_path}) -----\n{b.log()[-20000:]}")
            pytest.fail(f"{b.kind} exited with status {exit_code}")


@pytest.fixture
def broker(request, make_broker):
    marker = request.node.get_closest_marker("broker_config")
    settings = dict(marker.kwargs) if marker else {}
    return make_broker(**settings)


@pytest.fixture
def client_factory():
    f = helpers.ClientFactory()
    yield f
    f.close_all()


@pytest.fixture
def mqtt(broker, client_factory):
    """mqtt(client_id=None, version=V5, clean=True, ...) -> connected helpers.Client on `broker`."""

    def make(client_id=None, **kw):
        return client_factory.paho(broker, client_id, **kw)

    return make


@pytest.fixture
def raw(broker, client_factory):
    """raw(version=5) -> rawmqtt.RawClient with an open TCP connection to `broker`."""

    def make(version=5, **kw):
        return client_factory.raw(broker, version, **kw)

    return make


@pytest.fixture
def witness(broker, client_factory):
    """Clients connected before the test body; witness.check() proves the broker still works."""
    return helpers.Witness(client_factory, broker)
