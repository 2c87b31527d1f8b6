"""Platform process + REST helpers for the device-API end-to-end tests.

No paho import here: tests/platform/tb (which runs in a venv whose `paho` is
ThingsBoard's fork) loads this file by path as well.

    p = Platform(workdir).start()      # `serve` on 127.0.0.1:0 for mqtt, http, coap
    p.mqtt_port, p.http_port, p.coap_port
    p.api                              # Api: logged-in requests.Session (admin)
    p.restart()                        # SIGTERM, start again on the same data dir
    p.kill9_restart()                  # SIGKILL, start again on the same data dir
    p.stop()

Ports may change on every (re)start; read them from the object each time.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_DEADLINE = 30.0
WAIT = 10.0      # positive waits end as soon as the condition holds
QUIET = 1.0      # negative waits ("nothing arrives") are short and bounded
LISTEN_RE = re.compile(r"listening (\w+) ([0-9.]+):(\d+)")
REQUIRED_LISTENERS = ("mqtt", "http")
SETPRIV = shutil.which("setpriv")
COAP_GRACE = 3.0


def ironbridge_bin() -> str:
    return os.environ.get("IRONBRIDGE_BIN") or str(REPO_ROOT / "target" / "debug" / "ironbridge")


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_for(predicate, timeout: float = WAIT, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; AssertionError at the deadline.
    The last value (or exception) seen is included in the message."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
        except AssertionError as e:  # predicates may assert; keep polling
            value, last = None, e
        if value:
            return value
        if value is not None:
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class Platform:
    """One `ironbridge serve` process on a private data dir."""

    def __init__(self, workdir: Path, admin_password: str | None = None, config: str | None = None):
        self.workdir = Path(workdir)
        # Optional TOML config file contents (e.g. a [storage] section).
        self.config = config
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "ironbridge.log"
        self.admin_password = admin_password or secrets.token_urlsafe(18)
        self.proc: subprocess.Popen | None = None
        self.listeners: dict[str, int] = {}
        self._drain: threading.Thread | None = None
        self.api = Api(self)
        self.exit_codes: list[int] = []  # exit status of every stopped process
        # The MQTT listener's address; a test may pin it ("127.0.0.1:PORT") so that clients
        # which reconnect on their own (the edge gateway) find the server again after a restart.
        self.mqtt_listen = f"{HOST}:0"

    # -- addresses
    @property
    def mqtt_port(self) -> int:
        return self.listeners["mqtt"]

    @property
    def http_port(self) -> int:
        return self.listeners["http"]

    @property
    def coap_port(self) -> int:
        if "coap" not in self.listeners:
            raise AssertionError(f"server reported no coap listener (got {sorted(self.listeners)})")
        return self.listeners["coap"]

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    # -- lifecycle
    def start(self) -> "Platform":
        exe = ironbridge_bin()
        if not os.access(exe, os.X_OK):
            raise RuntimeError(f"ironbridge binary not found or not executable: {exe} (set IRONBRIDGE_BIN)")
        cmd = [exe, "serve", "--data-dir", str(self.data_dir), "--mqtt", self.mqtt_listen,
               "--http", f"{HOST}:0", "--coap", f"{HOST}:0"]
        if self.config is not None:
            config_path = self.workdir / "ironbridge.toml"
            config_path.write_text(self.config)
            cmd += ["--config", str(config_path)]
        if SETPRIV:
            # the server dies with pytest even when pytest-timeout ends it with os._exit
            # (setpriv execs the binary: same pid, signals reach the server itself)
            cmd = [SETPRIV, "--pdeathsig", "KILL", "--"] + cmd
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONBRIDGE_")}
        env.update({"IRONBRIDGE_ADMIN_PASSWORD": self.admin_password, "RUST_BACKTRACE": "1"})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        reported: dict[str, int] = {}
        cond = threading.Condition()
        done = {"eof": False}
        proc, log_path = self.proc, self.log_path

        def drain():
            with open(log_path, "ab") as logf:
                logf.write(f"===== start: {' '.join(cmd)}\n".encode())
                for line in iter(proc.stdout.readline, b""):
                    logf.write(line)
                    logf.flush()
                    m = LISTEN_RE.search(line.decode("utf-8", "replace"))
                    if m:
                        with cond:
                            reported.setdefault(m.group(1), int(m.group(3)))
                            cond.notify_all()
            with cond:
                done["eof"] = True
                cond.notify_all()

        self._drain = threading.Thread(target=drain, name="ironbridge-log", daemon=True)
        self._drain.start()
        with cond:
            cond.wait_for(lambda: done["eof"] or all(k in reported for k in REQUIRED_LISTENERS),
                               START_DEADLINE)
            if not done["eof"] and "coap" not in reported:
                # CoAP may legitimately come up a moment later; without it only CoAP tests fail
                cond.wait_for(lambda: done["eof"] or "coap" in reported, COAP_GRACE)
        if done["eof"] or not all(k in reported for k in REQUIRED_LISTENERS):
            self._hard_stop()
            raise RuntimeError(
                f"ironbridge did not report listeners {REQUIRED_LISTENERS} within {START_DEADLINE}s "
                f"(got {reported}, exit {proc.returncode}); log tail:\n{self.log_tail()}")
        self.listeners = dict(reported)
        try:
            wait_for(self._healthy, START_DEADLINE, what="GET /healthz == 200")
            self.api.login()
        except BaseException:
            self._hard_stop()  # a fixture that fails to start has no teardown
            raise
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"ironbridge exited with {self.proc.returncode}; log:\n{self.log_tail()}")
        try:
            return requests.get(self.http_url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit status."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
                self._join()
                raise AssertionError(f"ironbridge did not exit within {timeout}s of SIGTERM")
        self._join()
        self.exit_codes.append(p.returncode)
        return p.returncode

    def _hard_stop(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(5)
        self._join()

    def kill9(self) -> None:
        self._hard_stop()
        self.exit_codes.append(self.proc.returncode)

    def _join(self) -> None:
        if self._drain is not None:
            self._drain.join(5)
            self._drain = None

    def restart(self) -> "Platform":
        """Graceful stop (SIGTERM, must exit 0), then start on the same data dir (new ports)."""
        rc = self.stop()
        assert rc == 0, f"ironbridge exited with {rc} after SIGTERM"
        return self.start()

    def kill9_restart(self) -> "Platform":
        self.kill9()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def metric(self, name: str) -> float:
        """Sum of every sample of metric `name` in GET /metrics (0 when absent)."""
        text = requests.get(self.http_url + "/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


class ApiError(AssertionError):
    pass


class Api:
    """Admin REST client; always talks to the platform's current HTTP port."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self.s = requests.Session()
        self.token: str | None = None

    def url(self, path: str) -> str:
        return self.platform.http_url + path

    def login(self) -> str:
        r = self.s.post(self.url("/api/v1/auth/login"),
                        json={"username": "admin", "password": self.platform.admin_password}, timeout=10)
        assert r.status_code == 200, f"login: {r.status_code} {r.text[:300]}"
        body = r.json()
        assert isinstance(body.get("token"), str) and body["token"], body
        self.token = body["token"]
        self.s.headers["Authorization"] = f"Bearer {self.token}"
        return self.token

    # raw verbs
    def get(self, path, **kw) -> requests.Response:
        kw.setdefault("timeout", 15)
        return self.s.get(self.url(path), **kw)

    def post(self, path, json=None, **kw) -> requests.Response:
        kw.setdefault("timeout", 15)
        return self.s.post(self.url(path), json=json, **kw)

    def delete(self, path, **kw) -> requests.Response:
        kw.setdefault("timeout", 15)
        return self.s.delete(self.url(path), **kw)

    @staticmethod
    def ok(r: requests.Response, *codes: int):
        codes = codes or (200,)
        if r.status_code not in codes:
            raise ApiError(f"{r.request.method} {r.request.path_url} -> {r.status_code} "
                           f"(wanted {codes}): {r.text[:500]}")
        return r.json() if r.content else None

    # registry
    def create_tenant(self, name: str | None = None) -> dict:
        return self.ok(self.post("/api/v1/tenants", {"name": name or uid("tenant")}), 200, 201)

    def create_profile(self, name: str | None = None, tenant: str | None = None, **fields) -> dict:
        body = {"name": name or uid("profile"), **fields}
        if tenant is not None:
            body["tenant"] = tenant
        return self.ok(self.post("/api/v1/profiles", body), 200, 201)

    def create_device(self, name: str | None = None, tenant: str | None = None, **fields) -> dict:
        """POST /api/v1/devices -> 201 {"id", "name", ..., "access_token"}."""
        body = {"name": name or uid("dev"), **fields}
        if tenant is not None:
            body["tenant"] = tenant
        d = self.ok(self.post("/api/v1/devices", body), 201)
        assert isinstance(d.get("id"), str) and d["id"], d
        assert isinstance(d.get("access_token"), str) and d["access_token"], d
        return d

    def list_devices(self, tenant: str | None = None) -> list[dict]:
        """Every page of GET /api/v1/devices."""
        out, cursor = [], None
        for _ in range(1000):
            params = {"limit": 100}
            if tenant is not None:
                params["tenant"] = tenant
            if cursor:
                params["cursor"] = cursor
            page = self.ok(self.get("/api/v1/devices", params=params))
            out += page["data"]
            cursor = page.get("next")
            if not cursor:
                return out
        raise AssertionError("device listing never ended")

    def set_credentials(self, device_id: str, body: dict) -> dict:
        return self.ok(self.post(f"/api/v1/devices/{device_id}/credentials", body), 200, 201)

    # data
    def attributes(self, device_id: str, scope: str | None = None) -> dict:
        params = {"scope": scope} if scope else None
        return self.ok(self.get(f"/api/v1/devices/{device_id}/attributes", params=params))

    def set_shared(self, device_id: str, values: dict) -> None:
        self.ok(self.post(f"/api/v1/devices/{device_id}/attributes/shared", values), 200, 201, 204)

    def delete_shared(self, device_id: str, keys: list[str]) -> None:
        self.ok(self.delete(f"/api/v1/devices/{device_id}/attributes/shared",
                            params={"keys": ",".join(keys)}), 200, 204)

    def latest(self, device_id: str, keys: list[str]) -> dict:
        return self.ok(self.get(f"/api/v1/devices/{device_id}/telemetry/latest",
                                params={"keys": ",".join(keys)}))

    def timeseries(self, device_id: str, keys: list[str], start: int = 0, end: int | None = None) -> dict:
        params = {"keys": ",".join(keys), "from": start, "to": end if end is not None else now_ms() + 3600_000}
        return self.ok(self.get(f"/api/v1/devices/{device_id}/telemetry", params=params))

    def wait_latest(self, device_id: str, keys: list[str], timeout: float = WAIT) -> dict:
        """Poll latest values until every key is present."""
        def have():
            got = self.latest(device_id, keys)
            return got if all(k in (got or {}) for k in keys) else None
        return wait_for(have, timeout, what=f"latest {keys} of {device_id}")

    def wait_attributes(self, device_id: str, scope: str, keys: list[str], timeout: float = WAIT) -> dict:
        """Poll GET attributes?scope= until every key is present in that scope; returns the scope dict."""
        def have():
            got = (self.attributes(device_id, scope) or {}).get(scope) or {}
            return got if all(k in got for k in keys) else None
        return wait_for(have, timeout, what=f"{scope} attributes {keys} of {device_id}")

    def rpc(self, device_id: str, body: dict, timeout: float = 30) -> requests.Response:
        return self.post(f"/api/v1/devices/{device_id}/rpc", body, timeout=timeout)

    def rpc_state(self, device_id: str, rpc_id: str) -> dict:
        return self.ok(self.get(f"/api/v1/devices/{device_id}/rpc/{rpc_id}"))

    def wait_rpc_status(self, device_id: str, rpc_id: str, status: str, timeout: float = WAIT) -> dict:
        last = {}

        def reached():
            last["s"] = self.rpc_state(device_id, rpc_id)
            return last["s"] if last["s"].get("status") == status else None
        try:
            return wait_for(reached, timeout, what=f"rpc {rpc_id} status {status}")
        except AssertionError:
            raise AssertionError(f"rpc {rpc_id} never reached {status}; last state {last.get('s')}") from None


def assert_error_body(r: requests.Response, status: int) -> dict:
    """Errors are {"error":{"code","message"}} with the matching HTTP status."""
    assert r.status_code == status, f"wanted {status}, got {r.status_code}: {r.text[:300]}"
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {r.text[:300]!r}") from None
    err = body.get("error") if isinstance(body, dict) else None
    assert isinstance(err, dict) and "code" in err and isinstance(err.get("message"), str), body
    return err


def assert_current_time(body) -> None:
    """getCurrentTime: the spec fixes no key name; one integer value must be 'now' in ms."""
    assert isinstance(body, dict) and any(
        isinstance(v, int) and not isinstance(v, bool) and abs(v - now_ms()) < 60_000 for v in body.values()
    ), body
