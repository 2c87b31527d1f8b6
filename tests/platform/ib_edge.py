"""Helpers for the edge gateway tests: a pymodbus simulator process (modbus_sim.py) and an
`ironbridge edge` process, both on loopback, both stoppable and restartable.

    sim = ModbusSim(workdir, {"hr": {"0": 7}, "counter": 99}).start()     # port 0 -> sim.port
    sim.kill(); sim.start(sim.port)                                        # same port again
    edge = Edge(workdir, config_text).start(); edge.kill9(); edge.start()
    words("f", 1.5, "little", "big")   # the registers a device holds for a value
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from ib_platform import SETPRIV, ironbridge_bin

HERE = Path(__file__).resolve().parent
LISTEN_RE = re.compile(r"listening modbus 127\.0\.0\.1:(\d+)")


def words(fmt: str, value, byte_order: str = "big", word_order: str = "big") -> list[int]:
    """`value` packed with struct format `fmt` as a device with these orders holds it."""
    b = struct.pack(">" + fmt, value)
    chunks = [b[i:i + 2] for i in range(0, len(b), 2)]
    if word_order == "little":
        chunks.reverse()
    if byte_order == "little":
        chunks = [c[::-1] for c in chunks]
    return [int.from_bytes(c, "big") for c in chunks]


def _pdeathsig(cmd: list[str]) -> list[str]:
    # the child dies with pytest even when pytest-timeout ends it with os._exit
    return [SETPRIV, "--pdeathsig", "KILL", "--"] + cmd if SETPRIV else cmd


class _Process:
    """A child process whose output is drained to a log file (and kept in memory)."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._drain: threading.Thread | None = None

    def _spawn(self, cmd: list[str], env=None) -> None:
        self.proc = subprocess.Popen(_pdeathsig(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        proc = self.proc

        def drain():
            with open(self.log_path, "ab") as logf:
                logf.write(f"===== start: {' '.join(cmd)}\n".encode())
                for raw in iter(proc.stdout.readline, b""):
                    logf.write(raw)
                    logf.flush()
                    with self._cond:
                        self.lines.append(raw.decode("utf-8", "replace"))
                        self._cond.notify_all()
            with self._cond:
                self._cond.notify_all()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()

    def wait_line(self, pattern: re.Pattern, since: int, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[since:]:
                    m = pattern.search(line)
                    if m:
                        return m
                if self.proc.poll() is not None and not self._drain.is_alive():
                    raise AssertionError(f"process exited ({self.proc.returncode}); log:\n{self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {pattern.pattern!r}; log:\n{self.log_tail()}")
                self._cond.wait(min(left, 0.2))

    def signal_stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> int | None:
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
                raise AssertionError(f"{self.log_path.name}: no exit within {timeout}s of {sig!r}")
        if self._drain is not None:
            self._drain.join(5)
        return p.returncode

    def log_tail(self, n: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class ModbusSim(_Process):
    """modbus_sim.py as a child process."""

    def __init__(self, workdir: Path, spec: dict):
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir / "modbus-sim.log")
        self.spec_path = workdir / "modbus-spec.json"
        import json
        self.spec_path.write_text(json.dumps(spec))
        self.port: int | None = None

    def start(self, port: int = 0) -> "ModbusSim":
        since = len(self.lines)
        self._spawn([sys.executable, str(HERE / "modbus_sim.py"), "--port", str(port),
                     "--spec", str(self.spec_path)])
        self.port = int(self.wait_line(LISTEN_RE, since).group(1))
        return self

    def kill(self) -> None:
        self.signal_stop(signal.SIGKILL)

    def writes(self) -> list[str]:
        with self._cond:
            return [ln.strip() for ln in self.lines if ln.startswith("write ")]


class Edge(_Process):
    """`ironbridge edge --config edge.toml` as a child process."""

    def __init__(self, workdir: Path, config: str):
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir / "edge.log")
        self.config_path = workdir / "edge.toml"
        self.config_path.write_text(config)

    def start(self) -> "Edge":
        since = len(self.lines)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONBRIDGE_")}
        env.setdefault("RUST_LOG", "info")
        self._spawn([ironbridge_bin(), "edge", "--config", str(self.config_path)], env=env)
        self.wait_line(re.compile(r"edge running"), since)
        return self

    def stop(self) -> int | None:
        return self.signal_stop(signal.SIGTERM)

    def kill9(self) -> None:
        self.signal_stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def edge_config(token: str | None, mqtt_port: int, buffer_dir: Path, devices: str,
                url: str | None = None, **uplink) -> str:
    """An edge.toml: [uplink] for the platform on loopback (`url` defaults to
    mqtt://127.0.0.1:PORT; no token line when `token` is None), then `devices` ([[modbus]]
    tables). Other keyword arguments are further [uplink] fields (strings and numbers)."""
    uplink = {"health_interval": "500ms", **uplink}
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in uplink.items())
    url = url or f"mqtt://127.0.0.1:{mqtt_port}"
    token_line = f'token = "{token}"\n' if token is not None else ""
    return (f'[uplink]\nurl = "{url}"\n{token_line}'
            f'buffer_dir = "{buffer_dir}"\n{extra}\n{devices}')


class PtyPair(_Process):
    """Two linked pseudo-terminals from socat: DIR/ptyA (the device's end), DIR/ptyB (the edge's)."""

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir / "socat.log")
        self.a, self.b = workdir / "ptyA", workdir / "ptyB"

    def start(self) -> "PtyPair":
        self._spawn(["socat", "-d", "-d", f"pty,raw,echo=0,link={self.a}",
                     f"pty,raw,echo=0,link={self.b}"])
        deadline = time.monotonic() + 10
        while not (self.a.exists() and self.b.exists()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"socat made no pty pair; log:\n{self.log_tail()}")
            time.sleep(0.05)
        return self


class RtuSim(ModbusSim):
    """modbus_sim.py serving Modbus RTU on a serial port."""

    def start_serial(self, port: Path) -> "RtuSim":
        since = len(self.lines)
        self._spawn([sys.executable, str(HERE / "modbus_sim.py"), "--serial", str(port),
                     "--spec", str(self.spec_path)])
        self.wait_line(re.compile(r"listening modbus-rtu"), since)
        return self


class ModemSim(_Process):
    """`ironbridge modem-sim` (crates/modem's simulator) on a serial port: JSON lines in on stdin
    (`deliver(from, text)`, `silence(on)`), JSON lines out (`sms()`: whole messages it was asked
    to send; `events(kind)`)."""

    def __init__(self, workdir: Path, port: Path, pin: str | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir / "modem-sim.log")
        self.port, self.pin = port, pin

    def start(self) -> "ModemSim":
        import json
        since = len(self.lines)
        cmd = [ironbridge_bin(), "modem-sim", "--port", str(self.port)]
        if self.pin:
            cmd += ["--pin", self.pin]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONBRIDGE_")}
        self.proc = subprocess.Popen(_pdeathsig(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.PIPE, env=env)
        proc = self.proc

        def drain():
            with open(self.log_path, "ab") as logf:
                for raw in iter(proc.stdout.readline, b""):
                    logf.write(raw)
                    logf.flush()
                    with self._cond:
                        self.lines.append(raw.decode("utf-8", "replace"))
                        self._cond.notify_all()
            with self._cond:
                self._cond.notify_all()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        self.wait_line(re.compile(r'"event":"ready"'), since)
        self._json = json
        return self

    def _send(self, obj: dict) -> None:
        self.proc.stdin.write((self._json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def deliver(self, sender: str, text: str) -> None:
        """A message from `sender` arrives at the modem."""
        self._send({"deliver": {"from": sender, "text": text}})

    def silence(self, on: bool) -> None:
        """Stops (or resumes) answering; returns once the simulator has done it."""
        before = len([e for e in self.events("silenced") if e["on"] == on])
        self._send({"silence": on})
        deadline = time.monotonic() + 10
        while len([e for e in self.events("silenced") if e["on"] == on]) <= before:
            if time.monotonic() > deadline:
                raise AssertionError(f"modem-sim did not acknowledge silence={on}")
            time.sleep(0.02)

    def events(self, kind: str) -> list[dict]:
        out = []
        with self._cond:
            lines = list(self.lines)
        for ln in lines:
            if ln.startswith("{"):
                try:
                    e = self._json.loads(ln)
                except ValueError:
                    continue
                if e.get("event") == kind:
                    out.append(e)
        return out

    def sms(self, to: str | None = None) -> list[dict]:
        """Whole messages the modem was asked to send (to `to`)."""
        return [e for e in self.events("sms") if to is None or e["to"] == to]
