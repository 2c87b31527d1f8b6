"""A Modbus TCP device for the edge tests: pymodbus's TCP server (the real protocol stack)
over a small register store of our own, run as its own process so a test can stop and
restart it like a real device.

    python modbus_sim.py --port 0 --spec spec.json
    -> prints "listening modbus 127.0.0.1:PORT", then serves until killed
    python modbus_sim.py --serial /dev/pts/N --spec spec.json      # Modbus RTU, 19200 8N1
    -> prints "listening modbus-rtu /dev/pts/N"

spec.json: {"co": {"0": true}, "di": {...}, "hr": {"10": 513}, "ir": {...},
            "counter": 99}
Tables hold 1000 items each (addresses 0..999, 0 by default; reads past them get exception 2).
"counter" names a holding register that counts the reads covering it: each read returns the
count so far, then adds one, so the values an edge reports are consecutive integers.
Writes are applied and printed ("write co 0 [True]").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from pymodbus.constants import ExcCodes
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice

SIZE = 1000
TABLE_BY_FUNCTION = {1: "co", 5: "co", 15: "co", 2: "di", 3: "hr", 6: "hr", 16: "hr",
                     22: "hr", 23: "hr", 4: "ir"}


class Store:
    """What pymodbus' request handler needs of a datastore (duck-typed: the server's
    `context`), backed by plain dicts."""

    def __init__(self, spec: dict):
        self.tables = {t: {int(a): v for a, v in (spec.get(t) or {}).items()}
                       for t in ("co", "di", "hr", "ir")}
        self.counter = spec.get("counter")

    def device_ids(self):
        return [0]

    async def async_getValues(self, device_id, func_code, address, count=1):
        table = TABLE_BY_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if address < 0 or address + count > SIZE:
            return ExcCodes.ILLEGAL_ADDRESS
        t = self.tables[table]
        default = False if table in ("co", "di") else 0
        values = [t.get(a, default) for a in range(address, address + count)]
        if table == "hr" and self.counter is not None and address <= self.counter < address + count:
            t[self.counter] = (t.get(self.counter, 0) + 1) & 0xFFFF
        return values

    async def async_setValues(self, device_id, func_code, address, values):
        table = TABLE_BY_FUNCTION.get(func_code)
        if table not in ("co", "hr"):
            return ExcCodes.ILLEGAL_FUNCTION
        if address < 0 or address + len(values) > SIZE:
            return ExcCodes.ILLEGAL_ADDRESS
        for i, v in enumerate(values):
            self.tables[table][address + i] = v
        print(f"write {table} {address} {list(values)}", flush=True)
        return None


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--serial", help="serve Modbus RTU on this serial port instead of TCP")
    ap.add_argument("--spec", required=True)
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    # The server wants a device to start with; its datastore is then ours.
    device = SimDevice(0, simdata=[SimData(0, values=0)])
    if args.serial:
        server = ModbusSerialServer(device, framer=FramerType.RTU, port=args.serial,
                                    baudrate=19200, timeout=0.5)
    else:
        server = ModbusTcpServer(device, address=("127.0.0.1", args.port))
    server.context = Store(spec)
    await server.serve_forever(background=True)
    if args.serial:
        print(f"listening modbus-rtu {args.serial}", flush=True)
    else:
        port = server.transport.sockets[0].getsockname()[1]
        print(f"listening modbus 127.0.0.1:{port}", flush=True)
    await server.serving


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
