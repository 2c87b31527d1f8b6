"""HTTP device API: POST /api/v1/{token}/telemetry|attributes, attribute GET and long polls,
RPC long poll and reply, client-side RPC, error bodies."""

from __future__ import annotations

import http.client
import io
import json
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ib_platform import assert_current_time, assert_error_body, now_ms, uid


@pytest.fixture
def dev(api):
    return api.create_device(uid("httpdev"))


@pytest.fixture
def dapi(platform, dev):
    """POST/GET on /api/v1/{token}/..., with a fresh requests.Session."""
    s = requests.Session()
    base = f"{platform.http_url}/api/v1/{dev['access_token']}"

    class D:
        def post(self, path, json=None, data=None, **kw):
            kw.setdefault("timeout", 15)
            return s.post(base + path, json=json, data=data, **kw)

        def get(self, path, **kw):
            kw.setdefault("timeout", 15)
            return s.get(base + path, **kw)
    yield D()
    s.close()


def test_http_telemetry_keeps_types(api, dev, dapi):
    sent = {"i": 7, "f": 0.25, "b": False, "s": "x", "j": {"nested": [1, 2]}}
    r = dapi.post("/telemetry", sent)
    assert r.status_code == 200, r.text
    assert r.json() == {}
    got = api.wait_latest(dev["id"], list(sent))
    assert {k: v["value"] for k, v in got.items()} == sent
    assert type(got["i"]["value"]) is int


def test_http_telemetry_ts_values_and_array(api, dev, dapi):
    ts = now_ms() - 3_000
    r = dapi.post("/telemetry", [{"ts": ts, "values": {"p": 1}}, {"ts": ts + 1, "values": {"p": 2}}])
    assert r.status_code == 200, r.text
    got = api.wait_latest(dev["id"], ["p"])
    assert got["p"] == {"ts": ts + 1, "value": 2}


def test_http_attributes_post_and_get(api, dev, dapi):
    api.set_shared(dev["id"], {"interval": 60, "unit": "C"})
    r = dapi.post("/attributes", {"model": "X1", "rev": 3})
    assert r.status_code == 200, r.text
    assert r.json() == {}
    api.wait_attributes(dev["id"], "client", ["model", "rev"])
    r = dapi.get("/attributes", params={"clientKeys": "model", "sharedKeys": "interval"})
    assert r.status_code == 200, r.text
    assert r.json() == {"client": {"model": "X1"}, "shared": {"interval": 60}}
    r = dapi.get("/attributes")
    assert r.json() == {"client": {"model": "X1", "rev": 3}, "shared": {"interval": 60, "unit": "C"}}


def test_http_unknown_token_is_401_with_json_error(platform):
    for method, path in (("post", "/telemetry"), ("post", "/attributes"), ("get", "/attributes"),
                         ("get", "/rpc?timeout=100")):
        r = getattr(requests, method)(f"{platform.http_url}/api/v1/{'Z' * 24}{path}",
                                      **({"json": {"a": 1}} if method == "post" else {}), timeout=10)
        assert_error_body(r, 401)


@pytest.mark.parametrize("path", ["/telemetry", "/attributes"])
def test_http_bad_json_is_400_and_nothing_stored(api, dev, dapi, path):
    r = dapi.post(path, data=b'{"k": 1,', headers={"Content-Type": "application/json"})
    assert_error_body(r, 400)
    r = dapi.post(path, json=[{"k": 2}, 17])  # one bad element: all or nothing
    assert_error_body(r, 400)
    assert dapi.post("/telemetry", {"marker": 1}).status_code == 200
    api.wait_latest(dev["id"], ["marker"])
    assert not (api.latest(dev["id"], ["k"]) or {}).get("k")
    assert "k" not in ((api.attributes(dev["id"], "client") or {}).get("client") or {})


def test_http_oversized_body_is_413(platform, dev):
    """A 48 MiB telemetry body is refused with 413 and a JSON error. Raw socket: the body is
    streamed in chunks and the answer read as soon as it arrives (a server that answers early
    and closes could otherwise reset the connection before the client reads the 413)."""
    total = 48 * 1024 * 1024
    head = (f"POST /api/v1/{dev['access_token']}/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n").encode()
    chunk = b"x" * (256 * 1024)
    data = b""
    with socket.create_connection(("127.0.0.1", platform.http_port), timeout=10) as s:
        try:
            s.sendall(head + b'{"big":"')
            sent = 8
            while sent < total and not select.select([s], [], [], 0)[0]:
                n = min(len(chunk), total - sent)
                s.sendall(chunk[:n])
                sent += n
        except OSError:
            pass  # the server stopped reading; its answer is what matters
        try:
            while True:
                got = s.recv(65536)
                if not got:
                    break
                data += got
        except OSError:
            pass
    assert data.startswith(b"HTTP/1.1 413"), data[:300]
    resp = parse_http_response(data)
    try:
        err = json.loads(resp.read()).get("error")
    except ValueError:
        raise AssertionError(f"413 body is not JSON: {data[:400]!r}") from None
    assert isinstance(err, dict) and "code" in err and "message" in err, data[:400]


def parse_http_response(data: bytes) -> http.client.HTTPResponse:
    class Sock:
        def makefile(self, *args, **kw):
            return io.BytesIO(data)
    resp = http.client.HTTPResponse(Sock())
    resp.begin()
    return resp


def test_http_rpc_long_poll_and_reply(api, dev, dapi):
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(api.rpc, dev["id"], {"method": "setValve", "params": {"open": 40}, "timeout_ms": 15_000})
        deadline = time.monotonic() + 10
        while True:
            r = dapi.get("/rpc", params={"timeout": 3000}, timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert r.status_code == 408, r.text
        assert r.status_code == 200, r.text
        req = r.json()
        assert req["method"] == "setValve" and req["params"] == {"open": 40}, req
        reply = dapi.post(f"/rpc/{req['id']}", {"opened": 40})
        assert reply.status_code == 200, reply.text
        res = fut.result(20)
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "SUCCESSFUL"
    assert res.json()["response"] == {"opened": 40}


def test_http_rpc_long_poll_times_out_with_408(dev, dapi):
    t0 = time.monotonic()
    r = dapi.get("/rpc", params={"timeout": 500})
    assert r.status_code == 408, r.text
    assert 0.4 <= time.monotonic() - t0 < 8


def test_http_rpc_long_poll_gets_a_queued_persistent_rpc(api, dev, dapi):
    q = api.rpc(dev["id"], {"method": "configure", "params": {"n": 1}, "persistent": True, "ttl_ms": 60_000})
    assert q.status_code == 200 and q.json()["status"] == "QUEUED", q.text
    r = dapi.get("/rpc", params={"timeout": 5000})
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "configure"
    assert dapi.post(f"/rpc/{r.json()['id']}", {"ok": 1}).status_code == 200
    api.wait_rpc_status(dev["id"], q.json()["id"], "SUCCESSFUL")


def test_http_attribute_updates_long_poll(api, dev, dapi):
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(dapi.get, "/attributes/updates", params={"timeout": 10_000}, timeout=20)
        n = 0
        # the poll may not be registered yet: keep changing the value until it answers
        deadline = time.monotonic() + 12
        while not fut.done() and time.monotonic() < deadline:
            n += 1
            api.set_shared(dev["id"], {"level": n})
            time.sleep(0.2)
        r = fut.result(10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"level"} and 1 <= body["level"] <= n, body


def test_http_attribute_updates_long_poll_times_out_with_408(dev, dapi):
    r = dapi.get("/attributes/updates", params={"timeout": 400})
    assert r.status_code == 408, r.text


def test_http_client_side_rpc(dapi):
    r = dapi.post("/rpc", {"method": "getCurrentTime", "params": {}})
    assert r.status_code == 200, r.text
    assert_current_time(r.json())
    r = dapi.post("/rpc", {"method": "getSessionLimits", "params": {}})
    assert r.status_code == 200, r.text
    assert "maxPayloadSize" in r.json(), r.text


def test_http_unknown_path_is_404_json(platform, dev):
    r = requests.get(f"{platform.http_url}/api/v1/{dev['access_token']}/nosuchthing", timeout=10)
    assert_error_body(r, 404)
