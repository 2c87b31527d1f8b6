"""Edge gateway load figures (issue 9's benchmark shapes, not a test):

1. N Modbus TCP devices (one pymodbus simulator process serving every connection) x 10 holding
   registers polled at 1 Hz by one `ironbridge edge`, forwarded to `ironbridge serve`: the
   edge's CPU use (share of one core) and resident memory over the measuring window.
2. With --replay R: R readings (10 values each, spread over the N devices) left in the edge's
   queue as after an outage, then an edge started against the running platform: the time
   from its uplink connecting to the queue being empty, i.e. the replay rate end to end
   (every reading acknowledged by the platform after its telemetry commit).

    IRONBRIDGE_BIN=target/release/ironbridge .venv/bin/python tests/platform/edge_load.py \\
        [--devices 100] [--seconds 60] [--replay 200000 [--replay-rate N]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import tempfile
import time
from pathlib import Path

from ib_edge import Edge, ModbusSim, edge_config
from ib_platform import Platform, uid, wait_for


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def prefill(queue_dir: Path, devices: int, readings: int) -> None:
    """The edge's queue (crates/edge/src/buffer.rs schema) as an outage would have left it."""
    queue_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(queue_dir / "queue.db")
    db.executescript("""PRAGMA journal_mode = WAL;
        CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT,
            device TEXT NOT NULL, ts INTEGER NOT NULL, vals TEXT NOT NULL, size INTEGER NOT NULL);""")
    start = int(time.time() * 1000) - readings - 60_000
    rows = []
    for i in range(readings):
        name = f"load-{i % devices}"
        vals = json.dumps({f"r{k}": i + k for k in range(10)}, separators=(",", ":"))
        rows.append((name, start + i, vals, len(name) + len(vals) + 32))
    db.executemany("INSERT INTO queue (device, ts, vals, size) VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def queued(queue_dir: Path) -> int:
    db = sqlite3.connect(f"file:{queue_dir / 'queue.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM queue").fetchone()[0]
    finally:
        db.close()


def replay(platform: Platform, token: str, tmp: Path, devices: int, readings: int,
           rate: int | None) -> None:
    buffer = tmp / "replay" / "buffer"
    prefill(buffer, devices, readings)
    # no Modbus device: the queue alone
    limits = {"replay_rate": rate} if rate else {}  # else the edge's default
    edge = Edge(tmp / "replay", edge_config(token, platform.mqtt_port, buffer, "",
                                            health_interval="60s", **limits))
    try:
        edge.start()
        edge.wait_line(re.compile(r"uplink connected"), 0, timeout=30)
        t0 = time.monotonic()
        while queued(buffer) > 0:
            if time.monotonic() - t0 > 600:
                raise AssertionError("the queue did not drain in 10 minutes")
            time.sleep(0.02)
        dt = time.monotonic() - t0
        print(f"replay: {readings} readings x 10 values in {dt:.2f} s: {readings / dt:,.0f} readings/s "
              f"({readings * 10 / dt:,.0f} values/s), each acknowledged after the platform's commit")
        # acknowledged is not enough (MQTT 3.1.1 acknowledges a refused message too): stored?
        dev = next(d for d in platform.api.list_devices() if d["name"] == "load-0")
        start = int(time.time() * 1000) - readings - 70_000
        got = platform.api.timeseries(dev["id"], ["r0"], start=start, end=start + readings + 9_000)
        want = len(range(0, readings, devices))
        stored = len(got.get("r0") or [])
        print(f"replay: load-0 has {stored} of its {want} replayed readings stored")
    finally:
        if edge.proc is not None and edge.proc.poll() is None:
            edge.signal_stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--replay", type=int, default=0, help="readings to replay (0: skip)")
    ap.add_argument("--replay-rate", type=int, default=None,
                    help="the edge's replay_rate (readings/s); its default when absent")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        platform = Platform(tmp / "platform").start()
        sim = edge = None
        try:
            gw = platform.api.create_device(uid("edge-gw"), gateway=True)
            sim = ModbusSim(tmp / "sim", {"hr": {str(i): i * 100 for i in range(10)}, "counter": 0}).start()
            regs = "".join(f'{{ key = "r{i}", table = "holding", address = {i}, type = "u16" }},\n'
                           for i in range(10))
            devices = "".join(f'[[modbus]]\nname = "load-{n}"\naddress = "127.0.0.1:{sim.port}"\n'
                              f'poll = "1s"\nregisters = [\n{regs}]\n' for n in range(args.devices))
            edge = Edge(tmp / "edge", edge_config(gw["access_token"], platform.mqtt_port,
                                                  tmp / "edge" / "buffer", devices,
                                                  health_interval="10s")).start()
            last = f"load-{args.devices - 1}"
            wait_for(lambda: any(d["name"] == last for d in platform.api.list_devices()), 60,
                     what="every sub-device")
            time.sleep(5)  # warm-up: every connection made
            pid = edge.proc.pid
            c0, t0 = cpu_seconds(pid), time.monotonic()
            peak = 0.0
            while time.monotonic() - t0 < args.seconds:
                time.sleep(1)
                peak = max(peak, rss_mb(pid))
            cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
            print(f"edge: {args.devices} devices x 10 registers at 1 Hz over {args.seconds:.0f} s: "
                  f"CPU {cpu * 100:.2f}% of one core, RSS {rss_mb(pid):.1f} MB (peak {peak:.1f} MB)")
            edge.signal_stop()
            if args.replay:
                replay(platform, gw["access_token"], tmp, args.devices, args.replay, args.replay_rate)
        finally:
            for p in (edge, sim):
                if p is not None and p.proc is not None and p.proc.poll() is None:
                    p.signal_stop()
            platform.stop()


if __name__ == "__main__":
    main()
