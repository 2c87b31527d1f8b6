"""A Modbus TCP device for the edge tests: pymodbus's TCP server (the real protocol stack)
over a small register store of our own, run as its own process so a test can stop and
restart it like a real device.

    python modbus_sim.py --port 0 --spec spec.json
    -> prints "listening modbus 127.0.0.1:PORT", then serves until killed
    python modbus_sim.py --serial /dev/pts/N --spec spec.json      # Modbus RTU, 19200 8N1
    -> prints "listening modbus-rtu /dev/pts/N"

spec.json: {"co": {"0": true}, "di": {...}, "hr": {"10": 513}, "ir": {...},
            "counter": 99}
       or {"units": {"3": {<spec as above>}, "5": {...}}}: several units on one line (RS-485),
          each with its own tables; a request to any other unit gets no answer, as on a real bus.
Tables hold 1000 items each (addresses 0..999, 0 by default; reads past them get exception 2).
"counter" names a holding register that counts the reads covering it: each read returns the
count so far, then adds one, so the values an edge reports are consecutive integers.
"firmware": {"register": R, "out": PATH, "refuse": CODE?} adds a bootloader on the holding
registers from R (the edge's protocol, crates/edge/src/modbus/firmware.rs): the image it
receives and verifies is written to PATH and "firmware installed N bytes" is printed; with
"refuse" it reports failure with that error code instead.
Writes are applied and printed ("write co 0 [True]", with " unit 5" after it for "units").
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice

SIZE = 1000
TABLE_BY_FUNCTION = {1: "co", 5: "co", 15: "co", 2: "di", 3: "hr", 6: "hr", 16: "hr",
                     22: "hr", 23: "hr", 4: "ir"}


class Store:
    """What pymodbus' request handler needs of a datastore (duck-typed: the server's
    `context`), backed by plain dicts."""

    def __init__(self, spec: dict, unit: int | None = None):
        self.tables = {t: {int(a): v for a, v in (spec.get(t) or {}).items()}
                       for t in ("co", "di", "hr", "ir")}
        self.counter = spec.get("counter")
        self.unit = unit
        self.boot = Bootloader(self.tables["hr"], spec["firmware"]) if spec.get("firmware") else None

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
        if self.boot is not None and table == "hr":
            self.boot.written(address, list(values))
        unit = "" if self.unit is None else f" unit {self.unit}"
        print(f"write {table} {address} {list(values)}{unit}", flush=True)
        return None


class Bootloader:
    """The device side of the edge's firmware window: command, status, error, size, SHA-256,
    then blocks (offset + data). Status: 0 idle, 1 receiving, 2 installing, 3 updated, 4 failed."""

    def __init__(self, hr: dict, spec: dict):
        self.hr, self.r = hr, int(spec["register"])
        self.out, self.refuse = spec["out"], spec.get("refuse")
        self.size, self.sha, self.image = 0, b"", bytearray()

    def written(self, address: int, values: list[int]) -> None:
        r = self.r
        if address == r + 3 and len(values) == 18:
            self.size = (values[0] << 16) | values[1]
            self.sha = b"".join(w.to_bytes(2, "big") for w in values[2:])
        elif address == r + 21 and len(values) > 2:
            offset = (values[0] << 16) | values[1]
            data = b"".join(w.to_bytes(2, "big") for w in values[2:])
            end = min(offset + len(data), self.size)
            self.image[offset:end] = data[:end - offset]
        elif address == r and len(values) == 1:
            command = values[0]
            if command == 1:
                self.image = bytearray(self.size)
                self.hr[r + 1], self.hr[r + 2] = 1, 0
            elif command == 2:
                if self.refuse is not None:
                    self.hr[r + 1], self.hr[r + 2] = 4, int(self.refuse)
                elif hashlib.sha256(self.image).digest() != self.sha:
                    self.hr[r + 1], self.hr[r + 2] = 4, 1
                else:
                    with open(self.out, "wb") as f:
                        f.write(self.image)
                    self.hr[r + 1] = 3
                    print(f"firmware installed {len(self.image)} bytes", flush=True)
            elif command == 3:
                self.hr[r + 1] = 0


class Units:
    """Several units on one line, each a `Store`; any other unit id is a missing device."""

    def __init__(self, units: dict):
        self.units = {int(u): Store(spec, int(u)) for u, spec in units.items()}

    def device_ids(self):
        return list(self.units)

    def _unit(self, device_id):
        if device_id not in self.units:
            raise NoSuchIdException(f"no unit {device_id}")
        return self.units[device_id]

    async def async_getValues(self, device_id, func_code, address, count=1):
        return await self._unit(device_id).async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id, func_code, address, values):
        return await self._unit(device_id).async_setValues(device_id, func_code, address, values)


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
    units = spec.get("units")
    if args.serial:
        server = ModbusSerialServer(device, framer=FramerType.RTU, port=args.serial,
                                    baudrate=19200, timeout=0.5,
                                    ignore_missing_devices=units is not None)
    else:
        server = ModbusTcpServer(device, address=("127.0.0.1", args.port))
    server.context = Units(units) if units else Store(spec)
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
