"""tb-mqtt-client (ThingsBoard's Python SDK) works against Ironbridge unchanged."""

from __future__ import annotations

import hashlib
import queue
import threading

import pytest
import requests
from tb_device_mqtt import TBDeviceMqttClient
from tb_gateway_mqtt import TBGatewayMqttClient

from ib_platform import HOST, WAIT, assert_current_time, now_ms, uid, wait_for

DEVICE_SUBSCRIPTIONS = 4    # attributes, attributes/response/+, rpc/request/+, rpc/response/+
GATEWAY_SUBSCRIPTIONS = 7   # the above + v1/gateway/attributes, .../attributes/response, v1/gateway/rpc


class Started:
    """Wrap an SDK client: count SUBACKs so a test knows its subscriptions are active."""

    def __init__(self, client, expected_subacks: int):
        self.client = client
        self.expected = expected_subacks
        self.subacks = 0
        self._lock = threading.Lock()
        orig = client._client.on_subscribe

        def on_subscribe(*args, **kw):
            with self._lock:
                self.subacks += 1
            if orig is not None:
                orig(*args, **kw)
        client._client.on_subscribe = on_subscribe

    def start(self):
        self.client.connect()
        wait_for(self.client.is_connected, WAIT, what="SDK connected")
        wait_for(lambda: self.subacks >= self.expected, WAIT, what=f"{self.expected} SUBACKs")
        return self.client


@pytest.fixture
def sdk(platform):
    made = []

    def make(token: str, gateway: bool = False):
        cls = TBGatewayMqttClient if gateway else TBDeviceMqttClient
        c = cls(HOST, port=platform.mqtt_port, username=token)
        made.append(c)
        return Started(c, GATEWAY_SUBSCRIPTIONS if gateway else DEVICE_SUBSCRIPTIONS).start()
    yield make
    for c in made:
        try:
            c.stop()
            c.disconnect()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def dev(api):
    return api.create_device(uid("tbdev"))


def test_sdk_connects_and_receives_session_limits(sdk, dev):
    c = sdk(dev["access_token"])
    # set only when getSessionLimits was answered with a dict holding "rateLimits"
    wait_for(lambda: c.rate_limits_received, WAIT, what="getSessionLimits answered")
    assert c.max_payload_size > 0


def test_sdk_send_telemetry(sdk, api, dev):
    c = sdk(dev["access_token"])
    assert c.send_telemetry({"temperature": 22.5, "count": 3}).get() == 0
    ts = now_ms() - 1000
    assert c.send_telemetry({"ts": ts, "values": {"humidity": 40}}).get() == 0
    got = api.wait_latest(dev["id"], ["temperature", "count", "humidity"])
    assert got["temperature"]["value"] == 22.5 and got["count"]["value"] == 3
    assert got["humidity"] == {"ts": ts, "value": 40}


def test_sdk_send_attributes(sdk, api, dev):
    c = sdk(dev["access_token"])
    assert c.send_attributes({"firmware": "1.2.3", "slots": 2}).get() == 0
    got = api.wait_attributes(dev["id"], "client", ["firmware", "slots"])
    assert got["firmware"]["value"] == "1.2.3" and got["slots"]["value"] == 2


def test_sdk_shared_attribute_update(sdk, api, dev):
    c = sdk(dev["access_token"])
    got = queue.Queue()
    c.subscribe_to_all_attributes(lambda content, exc: got.put((content, exc)))
    api.set_shared(dev["id"], {"targetTemperature": 19})
    content, exc = got.get(timeout=WAIT)
    assert exc is None and content == {"targetTemperature": 19}


def test_sdk_server_side_rpc(sdk, api, dev):
    c = sdk(dev["access_token"])
    requests_q = queue.Queue()
    c.set_server_side_rpc_request_handler(lambda req_id, body: requests_q.put((req_id, body)))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", api.rpc(dev["id"], {"method": "setLed", "params": {"on": True}, "timeout_ms": 10_000})))
    t.start()
    try:
        req_id, body = requests_q.get(timeout=WAIT)
        assert body == {"method": "setLed", "params": {"on": True}}
        c.send_rpc_reply(req_id, {"led": "on"}, wait_for_publish=True)
    finally:
        t.join(20)
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "SUCCESSFUL" and r.json()["response"] == {"led": "on"}


def test_sdk_client_side_rpc(sdk, dev):
    c = sdk(dev["access_token"])
    got = queue.Queue()
    c.send_rpc_call("getCurrentTime", {}, lambda req_id, content, exc: got.put((content, exc)))
    content, exc = got.get(timeout=WAIT)
    assert exc is None, exc
    assert_current_time(content)


def test_sdk_request_attributes(sdk, api, dev):
    c = sdk(dev["access_token"])
    api.set_shared(dev["id"], {"mode": "eco", "other": 1})
    assert c.send_attributes({"serial": "SN-1"}).get() == 0
    api.wait_attributes(dev["id"], "client", ["serial"])
    got = queue.Queue()
    c.request_attributes(client_keys=["serial"], shared_keys=["mode"], callback=lambda content, exc: got.put((content, exc)))
    content, exc = got.get(timeout=WAIT)
    assert exc is None and content == {"client": {"serial": "SN-1"}, "shared": {"mode": "eco"}}


def test_sdk_provision(platform, api, sdk):
    key, secret = uid("pk"), uid("ps")
    api.create_profile(uid("tbprov"), provision_key=key, provision_secret=secret)
    name = uid("tbprovisioned")
    creds = TBDeviceMqttClient.provision(HOST, key, secret, port=platform.mqtt_port, device_name=name)
    assert creds and creds["status"] == "SUCCESS" and creds["credentialsType"] == "ACCESS_TOKEN", creds
    c = sdk(creds["credentialsValue"])
    assert c.send_telemetry({"provisioned": True}).get() == 0
    dev = next(d for d in api.list_devices() if d["name"] == name)
    assert api.wait_latest(dev["id"], ["provisioned"])["provisioned"]["value"] is True


def test_sdk_gateway(sdk, api):
    gw_dev = api.create_device(uid("tbgw"), gateway=True)
    gw = sdk(gw_dev["access_token"], gateway=True)
    name = uid("tbsub")
    gw.gw_connect_device(name, "default").get()
    assert gw.gw_send_telemetry(name, {"ts": now_ms(), "values": {"pressure": 1.5}}).get() == 0
    assert gw.gw_send_telemetry(name, {"flow": 7}).get() == 0  # SDK form: {name: [{"flow": 7}]}
    assert gw.gw_send_attributes(name, {"model": "GW-SUB"}).get() == 0
    sub = wait_for(lambda: next((d for d in api.list_devices() if d["name"] == name), None),
                   what="the sub-device in the registry")
    got = api.wait_latest(sub["id"], ["pressure", "flow"])
    assert got["pressure"]["value"] == 1.5 and got["flow"]["value"] == 7
    api.wait_attributes(sub["id"], "client", ["model"])

    # attribute request
    resp = queue.Queue()
    gw.gw_request_client_attributes(name, ["model"], lambda content, exc: resp.put((content, exc)))
    content, exc = resp.get(timeout=WAIT)
    assert exc is None and content["device"] == name, content
    assert content.get("values", {}).get("model", content.get("value")) == "GW-SUB", content

    # shared attribute push
    pushed = queue.Queue()
    gw.gw_subscribe_to_all_attributes(pushed.put)
    api.set_shared(sub["id"], {"valve": "open"})
    assert pushed.get(timeout=WAIT) == {"device": name, "data": {"valve": "open"}}

    # server-side RPC through the gateway
    rpcs = queue.Queue()
    gw.gw_set_server_side_rpc_request_handler(lambda client, content: rpcs.put(content))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", api.rpc(sub["id"], {"method": "close", "params": {"valve": 1}, "timeout_ms": 10_000})))
    t.start()
    try:
        content = rpcs.get(timeout=WAIT)
        assert content["device"] == name and content["data"]["method"] == "close", content
        gw.gw_send_rpc_reply(name, content["data"]["id"], {"closed": True}).get()
    finally:
        t.join(20)
    assert result["r"].status_code == 200, result["r"].text
    assert result["r"].json()["response"] == {"closed": True}


def upload_firmware(api, title: str, version: str, image: bytes, **fields) -> dict:
    data = {"title": title, "version": version, **fields}
    r = api.post("/api/v1/firmware", files={"file": ("image.bin", image)}, data=data)
    return api.ok(r, 201)


@pytest.mark.parametrize("chunk_size", [0, 4096])
def test_sdk_firmware_update(sdk, api, chunk_size):
    """ThingsBoard's OTA flow, as its SDK runs it: assignment (fw_* shared attributes), chunked
    download over v2/fw/request|response, SHA-256 verification, state reports."""
    dev = api.create_device(uid("ota"))
    image = bytes((i * 7 + i // 256) % 256 for i in range(50_000))
    pkg = upload_firmware(api, uid("pump-fw"), "2.0", image)
    assert pkg["size"] == len(image) and pkg["checksum_algorithm"] == "SHA256"
    assert pkg["checksum"] == hashlib.sha256(image).hexdigest()
    api.ok(api.post(f"/api/v1/devices/{dev['id']}/firmware", {"firmware_id": pkg["id"]}))

    c = TBDeviceMqttClient(HOST, port=api.platform.mqtt_port, username=dev["access_token"],
                           chunk_size=chunk_size)
    received = queue.Queue()

    def on_firmware(client, data, version):
        received.put((bytes(data), version))
        client.update_firmware_info(title=client.firmware_info.get("fw_title"), version=version,
                                    state=client_state("UPDATED"))
    c.set_on_firmware_received_callback(on_firmware)
    try:
        Started(c, DEVICE_SUBSCRIPTIONS).start()
        c.get_firmware_update()
        data, version = received.get(timeout=WAIT)
        assert data == image and version == "2.0"

        def state():
            r = api.ok(api.get(f"/api/v1/devices/{dev['id']}/firmware"))
            return r["firmware"]
        wait_for(lambda: state()["state"] == "UPDATED", WAIT, what="UPDATED reported")
        fw = state()
        assert fw["current_version"] == "2.0" and fw["error"] is None
        assert fw["package"]["id"] == pkg["id"]
    finally:
        c.stop()
        c.disconnect()


def client_state(name: str):
    from tb_device_mqtt import TBFirmwareState
    return TBFirmwareState[name]


def test_firmware_over_http_with_ranges_and_refusals(api):
    dev = api.create_device(uid("otahttp"))
    image = bytes(range(256)) * 40
    title = uid("meter-fw")
    pkg = upload_firmware(api, title, "3.1", image)
    base = f"{api.platform.http_url}/api/v1/{dev['access_token']}/firmware"
    q = {"title": title, "version": "3.1"}
    # Not assigned yet.
    assert requests.get(base, params=q, timeout=10).status_code == 404
    api.ok(api.post(f"/api/v1/devices/{dev['id']}/firmware", {"firmware_id": pkg["id"]}))
    assert requests.get(base, params=q, timeout=10).content == image
    # A download resumed after a dropped connection: the rest by Range.
    r = requests.get(base, params=q, headers={"Range": "bytes=6000-"}, timeout=10)
    assert r.status_code == 206 and r.content == image[6000:]
    # ThingsBoard's chunks.
    r = requests.get(base, params={**q, "size": 1000, "chunk": 3}, timeout=10)
    assert r.content == image[3000:4000]
    # Wrong version, bad token.
    assert requests.get(base, params={**q, "version": "9"}, timeout=10).status_code == 404
    bad = f"{api.platform.http_url}/api/v1/no-such-token/firmware"
    assert requests.get(bad, params=q, timeout=10).status_code == 401
    # A package in use cannot be deleted; the same title and version cannot be uploaded again.
    assert api.delete(f"/api/v1/firmware/{pkg['id']}").status_code == 409
    r = api.post("/api/v1/firmware", files={"file": ("x", b"x")}, data={"title": title, "version": "3.1"})
    assert r.status_code == 409, r.text



def test_sdk_firmware_update_in_a_campaign(api):
    """A staged campaign over two SDK clients: each is offered the image in its stage, downloads
    it in chunks through the SDK and reports UPDATED; the campaign completes."""
    prefix = uid("tbfleet")
    devs = [api.create_device(f"{prefix}-{i}") for i in range(2)]
    image = bytes((i * 13) % 256 for i in range(30_000))
    pkg = upload_firmware(api, uid("tb-fw"), "3.0", image)
    clients, got = {}, queue.Queue()

    def on_firmware(client, data, version):
        got.put(bytes(data))
        client.update_firmware_info(title=client.firmware_info.get("fw_title"), version=version,
                                    state=client_state("UPDATED"))
    try:
        for d in devs:
            c = TBDeviceMqttClient(HOST, port=api.platform.mqtt_port, username=d["access_token"],
                                   chunk_size=4096)
            c.set_on_firmware_received_callback(on_firmware)
            Started(c, DEVICE_SUBSCRIPTIONS).start()
            clients[d["id"]] = c
        r = api.post("/api/v1/firmware/campaigns", {"name": uid("tb"), "firmware_id": pkg["id"],
                                                    "target": {"name_prefix": prefix + "-"},
                                                    "stages": [50, 100], "failure_threshold": 0})
        cid = api.ok(r, 201)["id"]
        started = set()

        def progress():
            devices = api.ok(api.get(f"/api/v1/firmware/campaigns/{cid}/devices"))["data"]
            for d in devices:
                if d["state"] == "ASSIGNED" and d["device"] not in started:
                    started.add(d["device"])
                    clients[d["device"]].get_firmware_update()
            c = api.ok(api.get(f"/api/v1/firmware/campaigns/{cid}"))
            return c if c["state"] in ("completed", "halted") else None
        done = wait_for(progress, 30, what="the campaign to finish")
        assert done["state"] == "completed" and done["counts"]["updated"] == 2, done
        assert got.get(timeout=1) == image and got.get(timeout=1) == image
    finally:
        for c in clients.values():
            c.stop()
            c.disconnect()
