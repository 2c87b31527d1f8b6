"""`ironbridge sim farm --transport coap` against `ironbridge serve`: the simulated soil sensors
post telemetry to the CoAP device API, and a `setPump` sent through the REST API reaches a
pump observing its RPC resource, is answered, and the pump reports its new state. Stopped with
SIGINT, the simulator prints its JSON summary. Every wait polls against a deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from ib_platform import HOST, ironbridge_bin, uid, wait_for

RUN_WAIT = 30.0


@pytest.fixture
def sim(platform):
    """Starts `ironbridge sim` with the given arguments (CoAP: the platform's, or port `coap`); stops whatever is left at teardown."""
    procs = []

    def start(*args: str, coap: int | None = None) -> subprocess.Popen:
        cmd = [ironbridge_bin(), "sim", *args,
               "--http", f"{HOST}:{platform.http_port}",
               "--coap", f"{HOST}:{coap or platform.coap_port}",
               "--json", "--quiet"]
        env = dict(os.environ, IRONBRIDGE_ADMIN_PASSWORD=platform.admin_password)
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def interrupt(p: subprocess.Popen) -> dict:
    """Ctrl-C, then the JSON summary it prints."""
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=15)
    assert p.returncode == 0, f"sim exited with {p.returncode}: {out}\n{err}"
    return json.loads(out.strip())


def device_ids(api, names: list[str]) -> list[str]:
    def all_there():
        by_name = {d["name"]: d["id"] for d in api.list_devices()}
        return [by_name[n] for n in names] if all(n in by_name for n in names) else None
    return wait_for(all_there, RUN_WAIT, interval=0.2, what=f"devices {names}")


def test_sim_farm_over_coap_sends_telemetry_and_obeys_set_pump(platform, api, sim):
    prefix = uid("coapfarm")
    p = sim("farm", "--transport", "coap", "--devices", "2", "--interval", "200ms",
            "--duration", "120s", "--prefix", prefix)
    ids = device_ids(api, [f"{prefix}-001", f"{prefix}-002"])
    for i in ids:
        got = api.wait_latest(i, ["soil_moisture", "temperature"], timeout=RUN_WAIT)
        assert 0.0 <= got["soil_moisture"]["value"] <= 100.0, got

    # The device may not observe its RPC resource yet: a two-way RPC is queued until it does
    # (delivered on registration) or answered; retried until one comes back answered.
    def set_pump():
        r = api.rpc(ids[0], {"method": "setPump", "params": {"on": True}, "timeout_ms": 5000})
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        return body if r.status_code == 200 and body.get("status") == "SUCCESSFUL" else None
    reply = wait_for(set_pump, RUN_WAIT, interval=0.2, what="setPump answered over CoAP")
    assert reply["response"] == {"on": True}, reply
    # The pump reports its new state right after answering.
    wait_for(lambda: api.latest(ids[0], ["pump"]).get("pump", {}).get("value") is True,
             RUN_WAIT, what="pump on in the latest telemetry")
    # The other pump was not switched.
    assert api.latest(ids[1], ["pump"]).get("pump", {}).get("value") is not True

    summary = interrupt(p)
    assert summary["transport"] == "coap", summary
    assert summary["scenario"] == "farm" and summary["devices"] == 2, summary
    assert summary["device_names"] == [f"{prefix}-001", f"{prefix}-002"], summary
    assert summary["rpcs_answered"] >= 1, summary
    assert summary["messages"] >= 3, summary
    assert summary["acknowledged"] == summary["messages"], summary
    assert summary["errors"] == 0, summary


def test_sim_over_coap_counts_a_dead_endpoint_as_errors(platform, sim):
    """Nothing listens on the CoAP port: each request fails (ICMP port unreachable), is
    counted, and the run still ends on time with its summary."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    dead = s.getsockname()[1]
    s.close()
    p = sim("farm", "--transport", "coap", "--devices", "1", "--interval", "200ms",
            "--duration", "2s", "--prefix", uid("coapdead"), coap=dead)
    out, err = p.communicate(timeout=RUN_WAIT)
    assert p.returncode == 0, err
    summary = json.loads(out.strip())
    assert summary["messages"] >= 1 and summary["acknowledged"] == 0, summary
    assert summary["errors"] >= summary["messages"], summary
    assert "refused" in err, err
