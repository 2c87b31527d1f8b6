"""CoAP device API with aiocoap (and libcoap's coap-client when installed):
telemetry (CON/NON), attributes GET + Observe, RPC over Observe, Block1/Block2, errors."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import aiocoap
import pytest
from aiocoap import NON, Code, Context, Message
from aiocoap.optiontypes import BlockOption

from ib_platform import HOST, assert_current_time, now_ms, uid

TIMEOUT = 10.0
COAP_CLIENT = next((shutil.which(n) for n in ("coap-client", "coap-client-notls", "coap-client-openssl",
                                               "coap-client-gnutls") if shutil.which(n)), None)
needs_libcoap = pytest.mark.skipif(COAP_CLIENT is None, reason="libcoap's coap-client is not installed")


@pytest.fixture
def dev(api):
    return api.create_device(uid("coapdev"))


def uri(platform, token: str, path: str) -> str:
    return f"coap://{HOST}:{platform.coap_port}/api/v1/{token}/{path}"


async def _request(msg: Message, blockwise: bool = True, timeout: float = TIMEOUT) -> Message:
    ctx = await Context.create_client_context()
    try:
        return await asyncio.wait_for(ctx.request(msg, handle_blockwise=blockwise).response, timeout)
    finally:
        await ctx.shutdown()


def message(code: Code, target: str, payload=b"", non: bool = False, **kw) -> Message:
    """A request; `non` makes it NON-confirmable (transport_tuning on aiocoap >= 0.4.8)."""
    if isinstance(payload, (dict, list)):
        payload = json.dumps(payload).encode()
    if non:
        if hasattr(aiocoap, "Unreliable"):
            kw["transport_tuning"] = aiocoap.Unreliable
        else:
            kw["mtype"] = NON
    return Message(code=code, uri=target, payload=payload, **kw)


def coap(method: Code, target: str, payload=b"", non=False, blockwise=True, block2=None) -> Message:
    msg = message(method, target, payload, non)
    if block2 is not None:
        msg.opt.block2 = BlockOption.BlockwiseTuple(*block2)
    return asyncio.run(_request(msg, blockwise))


def test_coap_post_telemetry_con(platform, api, dev):
    sent = {"t": 21.5, "n": 3, "on": True, "s": "ok", "j": {"a": [1]}}
    r = coap(Code.POST, uri(platform, dev["access_token"], "telemetry"), sent)
    assert r.code == Code.CHANGED, r
    got = api.wait_latest(dev["id"], list(sent))
    assert {k: v["value"] for k, v in got.items()} == sent


def test_coap_post_telemetry_non(platform, api, dev):
    msg = message(Code.POST, uri(platform, dev["access_token"], "telemetry"), {"non": 1}, non=True)

    async def send():
        ctx = await Context.create_client_context()
        try:
            # a NON request may be answered by a NON response; the stored value is what counts
            try:
                return await asyncio.wait_for(ctx.request(msg).response, 3)
            except asyncio.TimeoutError:
                return None
        finally:
            await ctx.shutdown()

    r = asyncio.run(send())
    if r is not None:
        assert r.code.is_successful(), r
    api.wait_latest(dev["id"], ["non"])


def test_coap_ts_values_array(platform, api, dev):
    ts = now_ms() - 4_000
    r = coap(Code.POST, uri(platform, dev["access_token"], "telemetry"),
             [{"ts": ts, "values": {"v": 1}}, {"ts": ts + 5, "values": {"v": 2}}])
    assert r.code == Code.CHANGED, r
    assert api.wait_latest(dev["id"], ["v"])["v"] == {"ts": ts + 5, "value": 2}


def test_coap_post_and_get_attributes(platform, api, dev):
    api.set_shared(dev["id"], {"period": 30})
    r = coap(Code.POST, uri(platform, dev["access_token"], "attributes"), {"model": "C1"})
    assert r.code == Code.CHANGED, r
    api.wait_attributes(dev["id"], "client", ["model"])
    r = coap(Code.GET, uri(platform, dev["access_token"], "attributes?clientKeys=model&sharedKeys=period"))
    assert r.code == Code.CONTENT, r
    assert json.loads(r.payload) == {"client": {"model": "C1"}, "shared": {"period": 30}}


def test_coap_observe_attributes_gets_shared_update(platform, api, dev):
    async def run():
        ctx = await Context.create_client_context()
        try:
            msg = Message(code=Code.GET, uri=uri(platform, dev["access_token"], "attributes"), observe=0)
            req = ctx.request(msg)
            first = await asyncio.wait_for(req.response, TIMEOUT)
            assert first.code.is_successful(), first
            assert first.opt.observe is not None, "server did not register the observation"
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, api.set_shared, dev["id"], {"brightness": 70})
            deadline = time.monotonic() + TIMEOUT
            it = req.observation.__aiter__()
            while True:
                n = await asyncio.wait_for(it.__anext__(), max(0.1, deadline - time.monotonic()))
                body = json.loads(n.payload) if n.payload else {}
                if body.get("brightness") == 70 or body.get("shared", {}).get("brightness") == 70:
                    return body
        finally:
            await ctx.shutdown()

    body = asyncio.run(run())
    assert body in ({"brightness": 70}, {"shared": {"brightness": 70}}), body


def test_coap_rpc_observe_and_reply(platform, api, dev):
    async def run():
        ctx = await Context.create_client_context()
        loop = asyncio.get_running_loop()
        try:
            msg = Message(code=Code.GET, uri=uri(platform, dev["access_token"], "rpc"), observe=0)
            req = ctx.request(msg)
            first = await asyncio.wait_for(req.response, TIMEOUT)
            assert first.code.is_successful(), first
            rest = loop.run_in_executor(None, lambda: api.rpc(dev["id"], {"method": "toggle", "params": {"n": 2},
                                                                          "timeout_ms": 10_000}))
            it = req.observation.__aiter__()
            deadline = time.monotonic() + TIMEOUT
            while True:
                n = await asyncio.wait_for(it.__anext__(), max(0.1, deadline - time.monotonic()))
                if n.payload:
                    call = json.loads(n.payload)
                    break
            assert call["method"] == "toggle" and call["params"] == {"n": 2}, call
            reply = Message(code=Code.POST, uri=uri(platform, dev["access_token"], f"rpc/{call['id']}"),
                            payload=b'{"toggled":true}')
            rr = await asyncio.wait_for(ctx.request(reply).response, TIMEOUT)
            assert rr.code.is_successful(), rr
            return await asyncio.wait_for(rest, 20)
        finally:
            await ctx.shutdown()

    r = asyncio.run(run())
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "SUCCESSFUL" and r.json()["response"] == {"toggled": True}


def test_coap_client_side_rpc(platform, dev):
    r = coap(Code.POST, uri(platform, dev["access_token"], "rpc"), {"method": "getCurrentTime", "params": {}})
    assert r.code.is_successful(), r
    assert_current_time(json.loads(r.payload))


def test_coap_block1_large_telemetry(platform, api, dev):
    sent = {f"k{i:03d}": "v" * 40 + str(i) for i in range(60)}  # ~3.5 KB: several 1024-byte blocks
    payload = json.dumps(sent).encode()
    assert len(payload) > 2048
    r = coap(Code.POST, uri(platform, dev["access_token"], "telemetry"), payload)
    assert r.code == Code.CHANGED, r
    got = api.wait_latest(dev["id"], list(sent))
    assert {k: v["value"] for k, v in got.items()} == sent


def test_coap_block2_large_attributes(platform, api, dev):
    big = "".join(chr(ord("a") + i % 26) for i in range(3000))
    api.set_shared(dev["id"], {"big": big})
    target = uri(platform, dev["access_token"], "attributes?sharedKeys=big")
    # the server splits the answer itself: first block is 1024 bytes with more=1
    r = coap(Code.GET, target, blockwise=False, block2=(0, False, 6))
    assert r.code == Code.CONTENT, r
    assert r.opt.block2 is not None, "no Block2 option on a 3 KB response"
    assert r.opt.block2.block_number == 0 and r.opt.block2.more and len(r.payload) == 1024, r.opt.block2
    # reassembled by aiocoap
    r = coap(Code.GET, target)
    assert json.loads(r.payload).get("shared") == {"big": big}


def test_coap_unknown_token_is_4_01(platform):
    r = coap(Code.POST, uri(platform, "Q" * 24, "telemetry"), {"a": 1})
    assert r.code == Code.UNAUTHORIZED, r
    r = coap(Code.GET, uri(platform, "Q" * 24, "attributes"))
    assert r.code == Code.UNAUTHORIZED, r


@pytest.mark.parametrize("path", ["telemetry", "attributes"])
def test_coap_bad_json_is_4_00(platform, api, dev, path):
    r = coap(Code.POST, uri(platform, dev["access_token"], path), b'{"k": ')
    assert r.code == Code.BAD_REQUEST, r
    r = coap(Code.POST, uri(platform, dev["access_token"], path), [{"k": 1}, "bad"])
    assert r.code == Code.BAD_REQUEST, r
    assert coap(Code.POST, uri(platform, dev["access_token"], "telemetry"), {"marker": 1}).code == Code.CHANGED
    api.wait_latest(dev["id"], ["marker"])
    assert not (api.latest(dev["id"], ["k"]) or {}).get("k")


# ---------------------------------------------------------------------------
# libcoap


def coap_client(*args, timeout=20) -> subprocess.CompletedProcess:
    return subprocess.run([COAP_CLIENT, *args], capture_output=True, timeout=timeout)


@needs_libcoap
def test_libcoap_post_telemetry(platform, api, dev):
    p = coap_client("-m", "post", "-t", "json", "-e", '{"libcoap":1}', uri(platform, dev["access_token"], "telemetry"))
    assert p.returncode == 0, p.stderr
    assert api.wait_latest(dev["id"], ["libcoap"])["libcoap"]["value"] == 1


@needs_libcoap
def test_libcoap_blockwise_both_ways(platform, api, dev, tmp_path):
    sent = {f"b{i:03d}": "w" * 50 for i in range(50)}
    f = tmp_path / "payload.json"
    f.write_text(json.dumps(sent))
    p = coap_client("-m", "post", "-b", "512", "-t", "json", "-f", str(f), uri(platform, dev["access_token"], "telemetry"))
    assert p.returncode == 0, p.stderr
    api.wait_latest(dev["id"], list(sent))
    big = "z" * 3000
    api.set_shared(dev["id"], {"big": big})
    p = coap_client("-m", "get", "-b", "512", uri(platform, dev["access_token"], "attributes?sharedKeys=big"))
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout.decode().strip())
    assert body.get("shared") == {"big": big}, body
