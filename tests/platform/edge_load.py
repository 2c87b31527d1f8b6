"""Edge gateway load figure (issue 9's benchmark shape, not a test): N Modbus TCP devices
(one pymodbus simulator process serving every connection) x 10 holding registers polled at
1 Hz by one `ironbridge edge`, forwarded to `ironbridge serve`; prints the edge's CPU use (share
of one core) and resident memory over the measuring window.

    IRONBRIDGE_BIN=target/release/ironbridge .venv/bin/python tests/platform/edge_load.py \\
        [--devices 100] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60)
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
        finally:
            for p in (edge, sim):
                if p is not None and p.proc is not None and p.proc.poll() is None:
                    p.signal_stop()
            platform.stop()


if __name__ == "__main__":
    main()
