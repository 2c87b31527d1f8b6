"""OTA end to end: packages, campaigns and simulated devices over HTTP.

Simulated devices do what ThingsBoard's SDKs do: read the shared attributes `fw_title`,
`fw_version`, `fw_checksum`, `fw_size`, report `fw_state` (DOWNLOADING, DOWNLOADED, VERIFIED,
UPDATING, UPDATED, or FAILED with `fw_error`) as telemetry, and download the image from
`GET /api/v1/{token}/firmware?title=&version=`. Here the first download is cut off halfway (the
connection dropped) and resumed with `Range: bytes=N-`; the SHA-256 is checked before UPDATED.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import threading
import time

import pytest

from ib_platform import Api, assert_error_body, uid, wait_for

IMAGE_SIZE = 300_000


def upload(api: Api, title: str, version: str, image: bytes, **fields) -> dict:
    r = api.post("/api/v1/firmware", files={"file": ("fw.bin", image)},
                 data={"title": title, "version": version, **fields})
    return Api.ok(r, 201)


class HttpDevice:
    """A device updating itself over the HTTP device API; `corrupt` flips a byte of the download."""

    def __init__(self, api: Api, device: dict, corrupt: bool = False):
        self.api, self.d, self.corrupt = api, device, corrupt
        self.token = device["access_token"]
        self.states: list[str] = []
        self.resumed_from: int | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "HttpDevice":
        self.thread.start()
        return self

    def _report(self, state: str, **extra) -> None:
        self.states.append(state)
        r = self.api.s.post(self.api.url(f"/api/v1/{self.token}/telemetry"),
                            json={"fw_state": state, **extra}, timeout=10)
        assert r.status_code == 200, r.text

    def _offer(self) -> dict | None:
        r = self.api.s.get(self.api.url(f"/api/v1/{self.token}/attributes"),
                           params={"sharedKeys": "fw_title,fw_version,fw_checksum,fw_size"}, timeout=10)
        assert r.status_code == 200, r.text
        shared = r.json().get("shared") or {}
        return shared if "fw_title" in shared else None

    def _download(self, fw: dict) -> bytes:
        """The image in two requests: the first connection dies halfway, the second resumes."""
        path = f"/api/v1/{self.token}/firmware?title={fw['fw_title']}&version={fw['fw_version']}"
        host, port = "127.0.0.1", self.api.platform.http_port
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", path)
        res = conn.getresponse()
        assert res.status == 200, res.status
        assert int(res.getheader("content-length")) == fw["fw_size"]
        first = res.read(fw["fw_size"] // 2)
        conn.sock.close()  # the link drops mid-transfer
        conn.close()
        self.resumed_from = len(first)
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", path, headers={"Range": f"bytes={len(first)}-"})
        res = conn.getresponse()
        assert res.status == 206, res.status
        want = f"bytes {len(first)}-{fw['fw_size'] - 1}/{fw['fw_size']}"
        assert res.getheader("content-range") == want, res.getheader("content-range")
        rest = res.read()
        conn.close()
        return first + rest

    def _run(self) -> None:
        try:
            fw = None
            while fw is None:
                if self.stop.wait(0.1):
                    return
                fw = self._offer()
            self._report("DOWNLOADING", current_fw_title="pump", current_fw_version="1.0")
            image = bytearray(self._download(fw))
            if self.corrupt:
                image[len(image) // 3] ^= 0xFF
            self._report("DOWNLOADED")
            if hashlib.sha256(image).hexdigest() != fw["fw_checksum"]:
                self._report("FAILED", fw_error="Checksum verification failed!")
                return
            self._report("VERIFIED")
            self._report("UPDATING")
            self._report("UPDATED", current_fw_title=fw["fw_title"], current_fw_version=fw["fw_version"])
        except BaseException as e:  # surfaced by the test
            self.error = e

    def join(self) -> None:
        self.stop.set()
        self.thread.join(10)
        if self.error:
            raise self.error


def campaign(api: Api, **body) -> dict:
    return Api.ok(api.post("/api/v1/firmware/campaigns", body), 201)


def get_campaign(api: Api, cid: str) -> dict:
    return Api.ok(api.get(f"/api/v1/firmware/campaigns/{cid}"))


def wait_state(api: Api, cid: str, state: str, timeout: float = 30) -> dict:
    last = {}

    def reached():
        last["c"] = get_campaign(api, cid)
        return last["c"] if last["c"]["state"] == state else None
    try:
        return wait_for(reached, timeout, what=f"campaign {state}")
    except AssertionError:
        raise AssertionError(f"campaign never {state}: {last.get('c')}") from None


def test_campaign_over_http_with_range_resume(api):
    prefix = uid("pump")
    devices = [api.create_device(f"{prefix}-{i}") for i in range(3)]
    image = os.urandom(IMAGE_SIZE)
    pkg = upload(api, "pump", uid("v"), image)
    assert pkg["checksum"] == hashlib.sha256(image).hexdigest()
    assert pkg["size"] == IMAGE_SIZE and pkg["checksum_algorithm"] == "SHA256"
    sims = [HttpDevice(api, d).start() for d in devices]
    try:
        c = campaign(api, name=uid("rollout"), firmware_id=pkg["id"],
                     target={"name_prefix": prefix + "-"}, stages=[34, 100],
                     rate_per_minute=100, failure_threshold=0)
        assert c["stages"] == [34, 100] and c["counts"]["devices"] == 3
        assert [s["devices"] for s in c["stage_progress"]] == [2, 1]
        done = wait_state(api, c["id"], "completed")
    finally:
        for s in sims:
            s.join()
    assert done["counts"]["updated"] == 3 and done["counts"]["failed"] == 0, done
    assert all(s.states[-1] == "UPDATED" and s.resumed_from == IMAGE_SIZE // 2 for s in sims)
    # The device's record and its history.
    d = devices[0]
    mine = Api.ok(api.get(f"/api/v1/devices/{d['id']}/firmware"))["firmware"]
    assert mine["state"] == "UPDATED" and mine["current_version"] == pkg["version"], mine
    history = Api.ok(api.get(f"/api/v1/devices/{d['id']}/firmware/history"))["data"]
    assert [h["state"] for h in history] == \
        ["ASSIGNED", "DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED"], history
    assert all(h["campaign"] == c["id"] and h["firmware_id"] == pkg["id"] for h in history)
    per = Api.ok(api.get(f"/api/v1/firmware/campaigns/{c['id']}/devices"))["data"]
    assert sorted(x["state"] for x in per) == ["UPDATED"] * 3
    assert [x["stage"] for x in per] == [0, 0, 1]
    listed = Api.ok(api.get("/api/v1/firmware/campaigns"))["data"]
    assert c["id"] in [x["id"] for x in listed]
    # A completed campaign cannot be paused or cancelled.
    for action in ("pause", "resume", "cancel"):
        assert_error_body(api.post(f"/api/v1/firmware/campaigns/{c['id']}/{action}"), 409)


def test_corrupted_download_fails_and_the_campaign_halts(api):
    prefix = uid("meter")
    devices = [api.create_device(f"{prefix}-{i}") for i in range(4)]
    pkg = upload(api, "meter", uid("v"), os.urandom(50_000))
    sims = [HttpDevice(api, d, corrupt=True).start() for d in devices]
    try:
        c = campaign(api, name=uid("rollout"), firmware_id=pkg["id"],
                     target={"name_prefix": prefix + "-"}, stages=[25, 100],
                     rate_per_minute=100, failure_threshold=0)
        halted = wait_state(api, c["id"], "halted")
    finally:
        for s in sims:
            s.join()
    assert "1 of 1 devices failed" in halted["reason"], halted
    per = Api.ok(api.get(f"/api/v1/firmware/campaigns/{c['id']}/devices"))["data"]
    failed = [x for x in per if x["state"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["error"] == "Checksum verification failed!", per
    assert sorted(x["state"] for x in per if x not in failed) == ["PENDING"] * 3
    # No further device is offered the image (watched for several driver ticks).
    others = [d for d in devices if d["id"] != failed[0]["device"]]
    end = time.monotonic() + 3
    while time.monotonic() < end:
        for d in others:
            shared = (api.attributes(d["id"], "shared") or {}).get("shared") or {}
            assert "fw_title" not in shared, d
        time.sleep(0.3)
    assert get_campaign(api, c["id"])["state"] == "halted"
    history = Api.ok(api.get(f"/api/v1/firmware/campaigns/{c['id']}/history",
                             params={"device": failed[0]["device"]}))["data"]
    assert history[-1]["state"] == "FAILED" and history[-1]["error"] == "Checksum verification failed!"
    # Cancelled for good.
    assert Api.ok(api.post(f"/api/v1/firmware/campaigns/{c['id']}/cancel"))["state"] == "cancelled"


def test_pause_resume_and_tenant_isolation(api, platform):
    prefix = uid("lamp")
    for i in range(2):
        api.create_device(f"{prefix}-{i}")
    pkg = upload(api, "lamp", uid("v"), b"lamp image")
    c = campaign(api, name=uid("later"), firmware_id=pkg["id"], target={"name_prefix": prefix + "-"},
                 start_at=int(time.time() * 1000) + 3_600_000)
    assert c["state"] == "scheduled" and c["stages"] == [1, 10, 50, 100]
    assert Api.ok(api.post(f"/api/v1/firmware/campaigns/{c['id']}/pause"))["state"] == "paused"
    assert_error_body(api.post(f"/api/v1/firmware/campaigns/{c['id']}/pause"), 409)
    # Resumed before its start: waiting again.
    assert Api.ok(api.post(f"/api/v1/firmware/campaigns/{c['id']}/resume"))["state"] == "scheduled"
    # Bad input: 400 with the reason.
    for bad in ({"stages": [50]}, {"stages": [60, 30, 100]}, {"rate_per_minute": 0},
                {"failure_threshold": 150}, {"target": {}}, {"target": {"name_prefix": "nothing-"}},
                {"firmware_id": "nope"}, {"unknown": 1}):
        body = {"name": uid("bad"), "firmware_id": pkg["id"], "target": {"name_prefix": prefix + "-"}, **bad}
        assert_error_body(api.post("/api/v1/firmware/campaigns", body), 400)
    assert_error_body(api.get("/api/v1/firmware/campaigns/nope"), 404)
    # Another tenant's administrator sees nothing of it.
    other = api.create_tenant()
    password = "other-admin-pass-1"
    name = uid("tadmin")
    Api.ok(api.post("/api/v1/users", {"username": name, "password": password, "role": "tenant_admin",
                                      "tenant": other["id"]}), 201)
    outsider = Api(platform)
    r = outsider.s.post(outsider.url("/api/v1/auth/login"), json={"username": name, "password": password})
    outsider.s.headers["Authorization"] = f"Bearer {Api.ok(r)['token']}"
    assert_error_body(outsider.get(f"/api/v1/firmware/campaigns/{c['id']}"), 404)
    assert_error_body(outsider.post(f"/api/v1/firmware/campaigns/{c['id']}/cancel"), 404)
    assert_error_body(outsider.get(f"/api/v1/firmware/campaigns/{c['id']}/devices"), 404)
    assert Api.ok(outsider.get("/api/v1/firmware/campaigns"))["data"] == []
    body = {"name": uid("steal"), "firmware_id": pkg["id"], "target": {"name_prefix": prefix + "-"}}
    assert_error_body(outsider.post("/api/v1/firmware/campaigns", body), 400)
    assert Api.ok(api.post(f"/api/v1/firmware/campaigns/{c['id']}/cancel"))["state"] == "cancelled"


def test_bad_signature_is_refused_with_the_reason(api):
    image = os.urandom(10_000)
    title = uid("signed")
    err = assert_error_body(api.post("/api/v1/firmware", files={"file": ("fw.bin", image)},
                                     data={"title": title, "version": "1",
                                           "signature": base64.b64encode(b"\x01" * 64).decode()}), 400)
    assert "no signing keys" in err["message"], err
    key = base64.b64encode(hashlib.sha256(title.encode()).digest()).decode()
    Api.ok(api.post("/api/v1/firmware-keys", {"name": uid("key"), "public_key": key}), 201)
    err = assert_error_body(api.post("/api/v1/firmware", files={"file": ("fw.bin", image)},
                                     data={"title": title, "version": "1",
                                           "signature": base64.b64encode(b"\x01" * 64).decode()}), 400)
    assert "bad signature" in err["message"], err
    names = [p["title"] for p in Api.ok(api.get("/api/v1/firmware"))["data"]]
    assert title not in names, "nothing stored"


@pytest.mark.parametrize("path", ["/api/v1/firmware/campaigns", "/api/v1/firmware/campaigns/x/devices"])
def test_campaign_routes_need_a_token(platform, path):
    import requests
    assert_error_body(requests.get(platform.http_url + path, timeout=10), 401)


# ---------------------------------------------------------------------------
# CoAP: ThingsBoard's fw/{token} resource, whole image by Block2 or chunk by chunk

def coap_get(platform, path: str, block2=None, blockwise=True):
    import asyncio

    from aiocoap import Code, Context, Message
    from aiocoap.optiontypes import BlockOption

    async def run():
        ctx = await Context.create_client_context()
        try:
            msg = Message(code=Code.GET, uri=f"coap://127.0.0.1:{platform.coap_port}/{path}")
            if block2 is not None:
                msg.opt.block2 = BlockOption.BlockwiseTuple(*block2)
            return await asyncio.wait_for(ctx.request(msg, handle_blockwise=blockwise).response, 30)
        finally:
            await ctx.shutdown()
    return asyncio.run(run())


def coap_post(platform, path: str, body: dict):
    import asyncio
    import json

    from aiocoap import Code, Context, Message

    async def run():
        ctx = await Context.create_client_context()
        try:
            msg = Message(code=Code.POST, uri=f"coap://127.0.0.1:{platform.coap_port}/{path}",
                          payload=json.dumps(body).encode())
            return await asyncio.wait_for(ctx.request(msg).response, 15)
        finally:
            await ctx.shutdown()
    return asyncio.run(run())


def test_coap_block2_download_in_a_campaign(api, platform):
    from aiocoap import Code
    prefix = uid("coap")
    d = api.create_device(f"{prefix}-0")
    token = d["access_token"]
    image = os.urandom(70_000)
    pkg = upload(api, "coapfw", uid("v"), image)
    c = campaign(api, name=uid("coap"), firmware_id=pkg["id"], target={"devices": [d["name"]]},
                 failure_threshold=0)
    got = api.wait_attributes(d["id"], "shared", ["fw_title", "fw_version", "fw_checksum", "fw_size"])
    shared = {k: v["value"] if isinstance(v, dict) else v for k, v in got.items()}
    assert shared["fw_size"] == len(image)
    q = f"title={shared['fw_title']}&version={shared['fw_version']}"
    assert coap_post(platform, f"api/v1/{token}/telemetry", {"fw_state": "DOWNLOADING"}).code == Code.CHANGED
    # The first block on its own: 1024 bytes, more follow, Size2 the whole image.
    first = coap_get(platform, f"fw/{token}?{q}", block2=(0, False, 6), blockwise=False)
    assert first.code == Code.CONTENT, first
    assert first.opt.block2.block_number == 0 and first.opt.block2.more and len(first.payload) == 1024
    assert first.opt.size2 == len(image)
    last = coap_get(platform, f"fw/{token}?{q}", block2=(len(image) // 512, False, 5), blockwise=False)
    assert not last.opt.block2.more and last.payload == image[len(image) // 512 * 512:]
    # The whole image, reassembled by aiocoap from Block2 answers.
    whole = coap_get(platform, f"fw/{token}?{q}")
    assert whole.code == Code.CONTENT and whole.payload == image
    assert hashlib.sha256(whole.payload).hexdigest() == shared["fw_checksum"]
    # ThingsBoard's chunk form, and the other path.
    chunk = coap_get(platform, f"fw/{token}?{q}&size=1000&chunk=3")
    assert chunk.payload == image[3000:4000]
    same = coap_get(platform, f"api/v1/{token}/firmware?{q}")
    assert same.payload == image
    for state in ("DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED"):
        assert coap_post(platform, f"api/v1/{token}/telemetry", {"fw_state": state}).code == Code.CHANGED
    done = wait_state(api, c["id"], "completed")
    assert done["counts"]["updated"] == 1
    # Refusals: another version is 4.00, no package 4.04, a block past the end 4.00, bad token 4.01.
    assert coap_get(platform, f"fw/{token}?title=coapfw&version=other").code == Code.BAD_REQUEST
    assert coap_get(platform, f"sw/{token}").code == Code.NOT_FOUND
    assert coap_get(platform, f"fw/{token}", block2=(1000, False, 6), blockwise=False).code == Code.BAD_REQUEST
    assert coap_get(platform, f"fw/{'Q' * 24}").code == Code.UNAUTHORIZED


def test_libcoap_block2_download(api, platform, tmp_path):
    import shutil
    import subprocess
    client = next((shutil.which(n) for n in ("coap-client", "coap-client-notls", "coap-client-openssl",
                                             "coap-client-gnutls") if shutil.which(n)), None)
    if client is None:
        pytest.skip("libcoap's coap-client is not installed")
    d = api.create_device(uid("libcoap"))
    image = os.urandom(40_000)
    pkg = upload(api, "libcoapfw", uid("v"), image)
    Api.ok(api.post(f"/api/v1/devices/{d['id']}/firmware", {"firmware_id": pkg["id"]}))
    out = tmp_path / "image.bin"
    target = f"coap://127.0.0.1:{platform.coap_port}/fw/{d['access_token']}?title=libcoapfw&version={pkg['version']}"
    p = subprocess.run([client, "-m", "get", "-b", "512", "-o", str(out), target], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == image


def test_profile_assignment_follows_new_devices(api):
    profile = api.create_profile(uid("meters"))
    d1 = api.create_device(uid("m"), profile=profile["name"])
    pkg = upload(api, "meterfw", uid("v"), os.urandom(2_000))
    r = Api.ok(api.post(f"/api/v1/profiles/{profile['id']}/firmware", {"firmware_id": pkg["id"]}))
    assert r["devices"] == 1 and r["package"]["id"] == pkg["id"], r
    assert api.wait_attributes(d1["id"], "shared", ["fw_version"])
    # A device that joins the profile later gets the package within the driver's next pass.
    d2 = api.create_device(uid("m"), profile=profile["name"])
    got = api.wait_attributes(d2["id"], "shared", ["fw_title", "fw_version", "fw_checksum"])
    v = got["fw_checksum"]
    assert (v["value"] if isinstance(v, dict) else v) == pkg["checksum"]
    mine = Api.ok(api.get(f"/api/v1/profiles/{profile['id']}/firmware"))
    assert mine["firmware"]["package"]["id"] == pkg["id"] and mine["software"] is None
    assert_error_body(api.delete(f"/api/v1/firmware/{pkg['id']}"), 409)
    assert api.delete(f"/api/v1/profiles/{profile['id']}/firmware").status_code == 204
    assert Api.ok(api.get(f"/api/v1/profiles/{profile['id']}/firmware"))["firmware"] is None


def test_a_64_mib_image_uploads_and_serves_ranges(api):
    size = 64 << 20
    image = os.urandom(size)
    pkg = upload(api, "big", uid("v"), image)
    assert pkg["size"] == size and pkg["checksum"] == hashlib.sha256(image).hexdigest()
    r = api.get(f"/api/v1/firmware/{pkg['id']}/image", headers={"Range": f"bytes={size - 1000}-"})
    assert r.status_code == 206 and r.content == image[-1000:]
    assert r.headers["content-range"] == f"bytes {size - 1000}-{size - 1}/{size}"


def test_a_sub_device_is_updated_through_its_gateway(api, platform, clients):
    """The platform side of delivery through an edge: the gateway hears the sub-device's fw_*
    attributes on v1/gateway/attributes, fetches the image once with its own token
    (`?device=NAME`, Range for the rest after a cut), and reports the sub-device's states on
    v1/gateway/telemetry; the campaign tracks the sub-device like any other."""
    gw_dev = api.create_device(uid("edge"), gateway=True)
    gw = clients.new(platform.mqtt_port, gw_dev["access_token"])
    assert gw.subscribe("v1/gateway/attributes") == [1]
    name = uid("plc")
    assert gw.publish("v1/gateway/connect", {"device": name, "type": "default"}) == 0
    sub = wait_for(lambda: next((d for d in api.list_devices() if d["name"] == name), None),
                   what="the sub-device")
    image = os.urandom(120_000)
    pkg = upload(api, "plcfw", uid("v"), image)
    c = campaign(api, name=uid("edge"), firmware_id=pkg["id"], target={"devices": [name]},
                 failure_threshold=0)
    m = gw.expect("v1/gateway/attributes", timeout=15).json()
    assert m["device"] == name and m["data"]["fw_title"] == "plcfw", m
    fw = m["data"]
    assert gw.publish("v1/gateway/telemetry", {name: {"fw_state": "DOWNLOADING"}}) == 0
    url = api.url(f"/api/v1/{gw_dev['access_token']}/firmware")
    params = {"title": fw["fw_title"], "version": fw["fw_version"], "device": name}
    first = api.s.get(url, params=params, headers={"Range": "bytes=0-49999"}, timeout=10)
    assert first.status_code == 206, first.text
    rest = api.s.get(url, params=params, headers={"Range": "bytes=50000-"}, timeout=10)
    assert rest.status_code == 206
    got = first.content + rest.content
    assert hashlib.sha256(got).hexdigest() == fw["fw_checksum"] and len(got) == fw["fw_size"]
    for state in ("DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED"):
        assert gw.publish("v1/gateway/telemetry", {name: {"fw_state": state}}) == 0
    assert wait_state(api, c["id"], "completed")["counts"]["updated"] == 1
    mine = Api.ok(api.get(f"/api/v1/devices/{sub['id']}/firmware"))["firmware"]
    assert mine["state"] == "UPDATED", mine
    # Only a gateway may name another device, and only one of its tenant that is no gateway.
    plain = api.create_device(uid("plain"))
    r = api.s.get(api.url(f"/api/v1/{plain['access_token']}/firmware"), params=params, timeout=10)
    assert_error_body(r, 403)
    r = api.s.get(url, params={**params, "device": "no-such-device"}, timeout=10)
    assert_error_body(r, 404)
    other_gw = api.create_device(uid("edge"), gateway=True)
    r = api.s.get(url, params={**params, "device": other_gw["name"]}, timeout=10)
    assert_error_body(r, 404)


def test_a_campaign_carries_on_after_a_restart(own_platform):
    p = own_platform
    api = p.api
    prefix = uid("rst")
    devices = [api.create_device(f"{prefix}-{i}") for i in range(3)]
    pkg = upload(api, "rstfw", uid("v"), os.urandom(1_000))
    c = campaign(api, name=uid("restart"), firmware_id=pkg["id"], target={"name_prefix": prefix + "-"},
                 stages=[33, 100], rate_per_minute=100, failure_threshold=0)
    per = "/api/v1/firmware/campaigns/{}/devices".format(c["id"])
    first = wait_for(lambda: [d for d in Api.ok(api.get(per))["data"] if d["state"] == "ASSIGNED"] or None,
                     what="the first stage offered")
    assert len(first) == 1
    p.kill9_restart()
    api.login()
    token = {d["id"]: d["access_token"] for d in devices}
    r = api.s.post(api.url(f"/api/v1/{token[first[0]['device']]}/telemetry"), json={"fw_state": "UPDATED"}, timeout=10)
    assert r.status_code == 200
    # The restarted driver moves on to the second stage: both other devices are offered.
    wait_for(lambda: sum(d["state"] == "ASSIGNED" for d in Api.ok(api.get(per))["data"]) == 2,
             what="the second stage offered after the restart")
    for d in devices:
        if d["id"] != first[0]["device"]:
            api.s.post(api.url(f"/api/v1/{d['access_token']}/telemetry"), json={"fw_state": "UPDATED"}, timeout=10)
    assert wait_state(api, c["id"], "completed")["counts"]["updated"] == 3


def test_signed_image_reaches_the_device_with_its_signature(api, tmp_path):
    """Ed25519 end to end with OpenSSL: a key registered, a signed upload accepted, the
    signature delivered as fw_signature; the device verifies it over what it downloaded, so a
    corrupted download is FAILED with the reason and a good one UPDATED."""
    import shutil
    import subprocess
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def ssl(*args):
        p = subprocess.run(["openssl", *args], capture_output=True, timeout=30)
        assert p.returncode == 0, p.stderr.decode()
        return p.stdout
    key = tmp_path / "key.pem"
    ssl("genpkey", "-algorithm", "ed25519", "-out", str(key))
    pub_der = ssl("pkey", "-in", str(key), "-pubout", "-outform", "DER")
    (tmp_path / "pub.pem").write_bytes(ssl("pkey", "-in", str(key), "-pubout"))
    image = os.urandom(20_000)
    (tmp_path / "image.bin").write_bytes(image)
    sig = ssl("pkeyutl", "-sign", "-inkey", str(key), "-rawin", "-in", str(tmp_path / "image.bin"))
    assert len(sig) == 64
    Api.ok(api.post("/api/v1/firmware-keys", {"name": uid("release"),
                                               "public_key": base64.b64encode(pub_der[-32:]).decode()}), 201)
    title = uid("signed")
    tampered = bytearray(image)
    tampered[5] ^= 1
    err = assert_error_body(api.post("/api/v1/firmware", files={"file": ("fw.bin", bytes(tampered))},
                                     data={"title": title, "version": "1",
                                           "signature": base64.b64encode(sig).decode()}), 400)
    assert "bad signature" in err["message"]
    pkg = upload(api, title, "1", image, signature=base64.b64encode(sig).decode())
    assert pkg["signed_by"] and pkg["signature"] == sig.hex()

    def update(device: dict, corrupt: bool) -> list[str]:
        Api.ok(api.post(f"/api/v1/devices/{device['id']}/firmware", {"firmware_id": pkg["id"]}))
        token = device["access_token"]
        shared = api.s.get(api.url(f"/api/v1/{token}/attributes"), timeout=10,
                           params={"sharedKeys": "fw_title,fw_version,fw_signature,fw_signature_algorithm"}
                           ).json()["shared"]
        assert shared["fw_signature_algorithm"] == "ED25519"
        got = bytearray(api.s.get(api.url(f"/api/v1/{token}/firmware"), timeout=10,
                                  params={"title": shared["fw_title"], "version": shared["fw_version"]}).content)
        if corrupt:
            got[100] ^= 0xFF
        (tmp_path / "got.bin").write_bytes(bytes(got))
        (tmp_path / "sig.bin").write_bytes(bytes.fromhex(shared["fw_signature"]))
        ok = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "pub.pem"),
                             "-rawin", "-in", str(tmp_path / "got.bin"), "-sigfile", str(tmp_path / "sig.bin")],
                            capture_output=True, timeout=30).returncode == 0
        report = {"fw_state": "UPDATED"} if ok else {"fw_state": "FAILED", "fw_error": "Signature verification failed"}
        assert api.s.post(api.url(f"/api/v1/{token}/telemetry"), json=report, timeout=10).status_code == 200
        fw = wait_for(lambda: (lambda f: f if f.get("state") in ("UPDATED", "FAILED") else None)(
            Api.ok(api.get(f"/api/v1/devices/{device['id']}/firmware"))["firmware"]), what="the report")
        return [fw["state"], fw["error"]]
    assert update(api.create_device(uid("sig")), corrupt=False) == ["UPDATED", None]
    assert update(api.create_device(uid("sig")), corrupt=True) == ["FAILED", "Signature verification failed"]
