"""Firmware for sub-devices behind `ironbridge edge` (the OTA issue's "through the edge"):
pymodbus devices with a bootloader (modbus_sim.py's "firmware": the edge's register-window
protocol) behind an edge, packages assigned on the platform.

- an assigned package reaches the device byte for byte; the platform follows the update
  through the states the edge reports for the sub-device (DOWNLOADING ... UPDATED);
- a second device given the same image is served from the edge's cache: one fetch;
- a device that refuses the image ends FAILED with its error code;
- a package assigned while the edge is stopped is installed when it comes back.
"""

from __future__ import annotations

import os

from ib_edge import Edge, ModbusSim, edge_config
from ib_platform import Api, uid, wait_for

REGISTER = 500  # the bootloader window (modbus_sim.py's tables hold 1000 registers)


def upload(api: Api, title: str, version: str, image: bytes) -> dict:
    r = api.post("/api/v1/firmware", files={"file": ("fw.bin", image)},
                 data={"title": title, "version": version})
    return Api.ok(r, 201)


def assign(api: Api, device: dict, pkg: dict) -> None:
    Api.ok(api.post(f"/api/v1/devices/{device['id']}/firmware", {"firmware_id": pkg["id"]}))


def find(api: Api, name: str) -> dict:
    def lookup():
        return next((d for d in api.list_devices() if d["name"] == name), None)
    return wait_for(lookup, 20, what=f"sub-device {name!r}")


def record(api: Api, device: dict) -> dict:
    return Api.ok(api.get(f"/api/v1/devices/{device['id']}/firmware"))["firmware"] or {}


def wait_record(api: Api, device: dict, state: str, version: str) -> dict:
    def done():
        r = record(api, device)
        if r.get("state") == "FAILED" and state != "FAILED":
            raise AssertionError(f"update failed: {r}")
        assigned = (r.get("package") or {}).get("version")
        return r if r.get("state") == state and assigned == version else None
    return wait_for(done, 60, what=f"{device['name']} {state} {version}")


class Fleet:
    """A gateway on `platform`, one bootloader device per name, and an edge in front of them."""

    def __init__(self, platform, tmp_path, names: list[str], refuse: dict | None = None):
        self.platform, self.api, self.tmp = platform, platform.api, tmp_path
        self.gw = self.api.create_device(uid("edge-gw"), gateway=True)
        self.sims, self.out = {}, {}
        for n in names:
            self.out[n] = tmp_path / f"{n}.installed"
            boot = {"register": REGISTER, "out": str(self.out[n])}
            if refuse and n in refuse:
                boot["refuse"] = refuse[n]
            self.sims[n] = ModbusSim(tmp_path / f"sim-{n}", {"firmware": boot, "hr": {"0": 7}}).start()
        self.edge = None

    def start_edge(self) -> Edge:
        devices = "".join(
            f'[[modbus]]\nname = "{n}"\naddress = "127.0.0.1:{sim.port}"\nunit = 1\npoll = "500ms"\n'
            f'timeout = "1s"\nregisters = [ {{ key = "v", table = "holding", address = 0, type = "u16" }} ]\n'
            f'firmware = {{ register = {REGISTER}, block = 64, install_timeout = "20s" }}\n'
            for n, sim in self.sims.items())
        config = edge_config(self.gw["access_token"], self.platform.mqtt_port,
                             self.tmp / "edge" / "buffer", devices, http=self.platform.http_url)
        self.edge = Edge(self.tmp / "edge", config).start()
        return self.edge

    def gateway_value(self, key: str):
        got = self.api.latest(self.gw["id"], [key]) or {}
        return (got.get(key) or {}).get("value")

    def installs(self, name: str) -> int:
        return sum("firmware installed" in line for line in self.sims[name].lines)

    def begins(self, name: str) -> int:
        """Transfers the device saw start (command 1 written to the window)."""
        return sum(line.strip() == f"write hr {REGISTER} [1]" for line in self.sims[name].lines)

    def close(self) -> None:
        for p in [self.edge, *self.sims.values()]:
            if p is not None and p.proc is not None and p.proc.poll() is None:
                p.signal_stop()


def test_sub_devices_are_updated_through_the_edge_from_one_cached_download(platform, tmp_path):
    api = platform.api
    a, b, c = uid("boot-a"), uid("boot-b"), uid("boot-c")
    fleet = Fleet(platform, tmp_path, [a, b, c], refuse={c: 7})
    try:
        fleet.start_edge()
        da, db, dc = find(api, a), find(api, b), find(api, c)
        image = os.urandom(20_001)  # odd: the last word is padded
        pkg = upload(api, uid("plc-fw"), "1.1", image)

        assign(api, da, pkg)
        done = wait_record(api, da, "UPDATED", "1.1")
        assert done["current_version"] == "1.1", done
        assert fleet.out[a].read_bytes() == image
        history = Api.ok(api.get(f"/api/v1/devices/{da['id']}/firmware/history"))["data"]
        assert [h["state"] for h in history] == \
            ["ASSIGNED", "DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED"], history

        # The same image for another device: from the edge's cache, not fetched again.
        assign(api, db, pkg)
        wait_record(api, db, "UPDATED", "1.1")
        assert fleet.out[b].read_bytes() == image
        wait_for(lambda: fleet.gateway_value("firmware.cache_hits") == 1, 20, what="one cache hit")
        assert fleet.gateway_value("firmware.fetched") == 1
        assert fleet.gateway_value("firmware.updated") == 2

        # A device that refuses the image: FAILED, with its reason.
        assign(api, dc, pkg)
        failed = wait_record(api, dc, "FAILED", "1.1")
        assert "error code 7" in (failed.get("error") or ""), failed
        assert not fleet.out[c].exists()

        # Assigned while the edge is down: installed when it reconnects (it asks for the fw_*
        # attributes of its devices at every connect); 1.1 is not installed again.
        fleet.edge.signal_stop()
        fleet.edge.proc.wait(timeout=15)
        newer = os.urandom(3_000)
        pkg2 = upload(api, pkg["title"], "1.2", newer)
        assign(api, da, pkg2)
        fleet.start_edge()
        wait_record(api, da, "UPDATED", "1.2")
        assert fleet.out[a].read_bytes() == newer
        assert fleet.installs(a) == 2 and fleet.installs(b) == 1, (fleet.installs(a), fleet.installs(b))
        # The refused image is not offered again at the reconnect (only a new assignment would).
        assert record(api, dc)["state"] == "FAILED"
        assert fleet.begins(c) == 1, fleet.begins(c)
        assert fleet.edge.proc.poll() is None
    finally:
        fleet.close()
