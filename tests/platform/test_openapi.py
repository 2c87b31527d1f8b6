"""The OpenAPI document and the docs page.

- `GET /api/v1/openapi.json` is public and is an OpenAPI 3.1 document.
- `GET /api/v1/docs/` is the vendored Swagger UI (crates/api/assets/swagger-ui/): an HTML page
  whose scripts and stylesheet (relative URLs) are served next to it with the right types.
- schemathesis (tests/platform/requirements.txt) fuzzes every documented operation as admin, positive
  and negative inputs: no 5xx, and every status code, content type and body is one the document
  declares. On failure the test shows schemathesis' output, which includes a curl command
  reproducing each failure and the seed (rerun with `--seed N` to get the same inputs).
  Its schemathesis.toml (written next to the run, see `_config`) points path parameters at seeded
  objects, keeps waits short, accepts the documented 504 of a two-way RPC, keeps the run's own
  session alive, and fails the run when it is lost anyway.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from ib_platform import Platform, now_ms

OPENAPI = "/api/v1/openapi.json"
DOCS = "/api/v1/docs/"

# schemathesis' checks: 5xx never; status codes, content types and bodies as documented.
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
])
MAX_EXAMPLES = 25          # per operation and phase
REQUEST_TIMEOUT = 20       # s per request: a hanging request is a failure, not a stuck run
RUN_DEADLINE = 180         # s for the whole schemathesis run (the test's own timeout is above it)


CSS = {"text/css"}
JS = {"text/javascript", "application/javascript"}


def _public_get(platform: Platform, path: str) -> requests.Response:
    """No Authorization header: a browser opening the docs page sends none."""
    return requests.get(platform.http_url + path, timeout=10)


def _media_type(r: requests.Response) -> str:
    return r.headers.get("content-type", "").split(";")[0].strip().lower()


# -- the document and the docs page

def test_openapi_document_is_public_openapi_3_1(platform):
    r = _public_get(platform, OPENAPI)
    assert r.status_code == 200, f"GET {OPENAPI} -> {r.status_code}: {r.text[:300]}"
    assert _media_type(r) == "application/json", r.headers.get("content-type")
    doc = r.json()
    assert str(doc.get("openapi", "")).startswith("3.1"), doc.get("openapi")
    assert doc.get("info", {}).get("title"), doc.get("info")
    assert "/api/v1/devices" in doc.get("paths", {}), sorted(doc.get("paths", {}))


def test_docs_page_is_html(platform):
    r = _public_get(platform, DOCS)
    assert r.status_code == 200, f"GET {DOCS} -> {r.status_code}: {r.text[:300]}"
    assert _media_type(r) == "text/html", r.headers.get("content-type")
    assert "<title>Ironbridge API</title>" in r.text, r.text[:500]
    assert 'id="swagger-ui"' in r.text, r.text[:500]


@pytest.mark.parametrize("asset, media_types", [
    ("swagger-ui.css", CSS),
    ("swagger-ui-bundle.js", JS),
    ("init.js", JS),
])
def test_docs_assets(platform, asset, media_types):
    r = _public_get(platform, DOCS + asset)
    assert r.status_code == 200, f"GET {DOCS}{asset} -> {r.status_code}: {r.text[:300]}"
    assert _media_type(r) in media_types, r.headers.get("content-type")
    assert len(r.content) > 0


def test_docs_page_references_resolve(platform):
    """Every script and stylesheet the served page names (relative URLs) is served, with its type."""
    r = _public_get(platform, DOCS)
    assert r.status_code == 200, f"GET {DOCS} -> {r.status_code}"
    refs = re.findall(r'<script[^>]*\ssrc="([^"]+)"', r.text) + \
        re.findall(r'<link[^>]*\shref="([^"]+\.css)"', r.text)
    assert {"swagger-ui-bundle.js", "init.js", "swagger-ui.css"} <= {u.rsplit("/", 1)[-1] for u in refs}, refs
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>\s*\S", r.text), "inline script (the CSP forbids it)"
    for ref in refs:
        url = urljoin(platform.http_url + DOCS, ref)
        assert url.startswith(platform.http_url + DOCS), f"{ref} is not served next to the page"
        a = requests.get(url, timeout=10)
        assert a.status_code == 200, f"GET {url} -> {a.status_code}"
        want = CSS if ref.endswith(".css") else JS
        assert _media_type(a) in want, (url, a.headers.get("content-type"))


# -- schemathesis

RPC_REQUEST = "v1/devices/me/rpc/request/+"
RPC_RESPONSE = "v1/devices/me/rpc/response/"


def _login(platform: Platform, username: str, password: str) -> str:
    r = requests.post(platform.http_url + "/api/v1/auth/login",
                      json={"username": username, "password": password}, timeout=10)
    assert r.status_code == 200, f"login {username}: {r.status_code} {r.text[:300]}"
    return r.json()["token"]


def _seed(platform: Platform, api, clients) -> dict:
    """A little of everything, so that operations on existing objects have something to find, and
    the sessions schemathesis uses. Everything is set up before the run: the fuzzer's failed logins
    soon lock logins from this address for a while (docs/API.md)."""
    tenant = api.create_tenant("sch-tenant")
    profile = api.create_profile("sch-profile")
    customer = api.ok(api.post("/api/v1/customers", {"name": "sch-customer"}), 200, 201)
    # several devices: the fuzzer deletes what it finds
    devices = [api.create_device("sch-1", label="schemathesis"), api.create_device("sch-2"),
               api.create_device("sch-3", tenant=tenant["id"])]
    dev = devices[0]
    api.set_shared(dev["id"], {"mode": "auto", "target": 21})
    r = requests.post(api.url(f"/api/v1/{dev['access_token']}/telemetry"),
                      json={"ts": now_ms(), "values": {"temp": 21.5, "on": True}}, timeout=10)
    assert r.status_code == 200, r.text
    r = requests.post(api.url(f"/api/v1/{dev['access_token']}/attributes"), json={"fw": "1.0.0"}, timeout=10)
    assert r.status_code == 200, r.text
    api.wait_latest(dev["id"], ["temp"])
    # a persistent RPC to an offline device is queued and answered at once
    rpc = api.ok(api.rpc(dev["id"], {"method": "reboot", "params": {}, "persistent": True, "ttl_ms": 3600_000}))

    # The device that two-way RPCs (POST /api/v1/devices/{id}/rpc) mostly go to: connected, it
    # answers every request at once, so that the success path gets tested too. (Devices the fuzzer
    # creates itself are offline: an RPC to one waits for its timeout and gets 504.)
    rpc_dev = api.create_device("sch-rpc")
    responder = clients.new(platform.mqtt_port, rpc_dev["access_token"])
    assert responder.subscribe(RPC_REQUEST) == [1]

    def answer(client, _userdata, m):
        client.publish(RPC_RESPONSE + m.topic.rsplit("/", 1)[1], b'{"ok":true}', qos=1)
    responder.c.on_message = answer
    r = api.rpc(rpc_dev["id"], {"method": "ping", "params": {}, "timeout_ms": 5000})
    assert r.status_code == 200, f"the RPC responder does not answer: {r.status_code} {r.text[:300]}"

    # The user that user updates and deletions, and password changes, act on: those revoke the
    # sessions of the user concerned (docs/API.md), and the run's own session must survive.
    victim_password = "Sch-" + secrets.token_urlsafe(12)
    victim = api.ok(api.post("/api/v1/users", {"username": "sch-victim", "password": victim_password,
                                               "role": "viewer"}), 200, 201)

    return {
        "ids": {
            "objects": [d["id"] for d in devices] + [tenant["id"], profile["id"], customer["id"]],
            "rpcs": [rpc["id"]],
            "tenants": ["default", tenant["name"], tenant["id"]],
            "rpc_devices": [rpc_dev["id"]],
        },
        "token": _login(platform, "admin", platform.admin_password),
        "logout_token": _login(platform, "admin", platform.admin_password),
        "victim": victim["id"],
        "victim_token": _login(platform, "sch-victim", victim_password),
    }


# operationIds the run's configuration names (test_schemathesis checks that they exist)
RPC_OP = "send_rpc"
LOGOUT_OP = "logout"
PASSWORD_OP = "change_password"
USER_CHANGE_OPS = ("update_user", "delete_user")


def _config(seeded: dict) -> str:
    """schemathesis.toml for the run:
    - path and query parameters take the seeded ids half of the time (random values otherwise), so
      that operations on existing objects get past 404;
    - a two-way RPC's documented 504 (TIMEOUT) is not a server error, and its valid timeouts stay
      short (invalid ones are still generated);
    - operations that revoke sessions act on other sessions than the run's own;
    - an operation that gets only 401/403 fails the run (the run's session was lost).
    [[operations]] entries select by operationId: their include-* filters are OR-ed."""
    def binding(dictionary: str, probability: float = 0.5) -> str:
        return f'{{ dictionary = "{dictionary}", probability = {probability} }}'

    def bearer(token: str) -> str:
        return "{ Authorization = " + json.dumps(f"Bearer {token}") + " }"

    lines = []
    for name, values in {**seeded["ids"], "short_waits": [1, 100, 1000]}.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines += [
        "[parameters]",
        f'"path.id" = {binding("objects")}',
        f'"path.rpc" = {binding("rpcs")}',
        f'"query.tenant" = {binding("tenants")}',
        "",
        "[warnings]",
        'fail-on = ["missing_auth"]',
        "",
        "# Server-side RPC (docs/DEVICES.md): a two-way RPC the device does not answer within",
        "# timeout_ms gets 504 with status TIMEOUT: documented, not a server error. Half of the",
        "# requests go to the responder device.",
        "[[operations]]",
        f'include-operation-id = "{RPC_OP}"',
        'checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]',
        f'parameters = {{ "path.id" = {binding("rpc_devices")}, '
        f'"body.timeout_ms" = {binding("short_waits", 1.0)} }}',
        "",
        "# Logging out ends the caller's session: a second session of the administrator's.",
        "[[operations]]",
        f'include-operation-id = "{LOGOUT_OP}"',
        f"headers = {bearer(seeded['logout_token'])}",
        "",
        "# A password change revokes all the caller's sessions: the sacrificial user's. It answers a",
        "# wrong current password with 401, and the user is deleted meanwhile: 401s are expected.",
        "[[operations]]",
        f'include-operation-id = "{PASSWORD_OP}"',
        f"headers = {bearer(seeded['victim_token'])}",
        "warnings = { fail-on = false }",
        "",
        "# Updating or deleting a user revokes their sessions: always the sacrificial user.",
        "[[operations]]",
        f"include-operation-id = {json.dumps(list(USER_CHANGE_OPS))}",
        f'parameters = {{ "path.id" = {json.dumps(seeded["victim"])} }}',
    ]
    return "\n".join(lines) + "\n"


def _schemathesis_cmd(platform: Platform, token: str, config: Path) -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    prefix = [str(exe)] if exe.exists() else [sys.executable, "-m", "schemathesis.cli"]
    return prefix + [
        "--config-file", str(config),
        "run", platform.http_url + OPENAPI,
        "--origin", platform.http_url,     # whatever `servers` says: this server, the document's base path
        "--header", f"Authorization: Bearer {token}",
        "--checks", CHECKS,
        "--mode", "all",                   # negative (invalid) inputs too: they must get a documented 4xx
        "--max-examples", str(MAX_EXAMPLES),
        "--request-timeout", str(REQUEST_TIMEOUT),
        "--generation-database", "none",   # nothing written outside the run's temp dir
        "--no-color",
    ]


def _run(cmd: list[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
    """(exit code or None on timeout, combined output). On timeout the whole process group dies."""
    env = dict(os.environ)
    for k in ("NO_PROXY", "no_proxy"):  # never send the fuzzer's requests through a proxy
        env[k] = ",".join(filter(None, [env.get(k), "127.0.0.1", "localhost"]))
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


@pytest.mark.timeout(RUN_DEADLINE + 60)
def test_schemathesis(platform, api, clients, tmp_path):
    r = _public_get(platform, OPENAPI)
    assert r.status_code == 200, f"GET {OPENAPI} -> {r.status_code}: {r.text[:300]}"
    op_ids = {op.get("operationId") for item in r.json().get("paths", {}).values()
              for op in item.values() if isinstance(op, dict)}
    missing = {RPC_OP, LOGOUT_OP, PASSWORD_OP, *USER_CHANGE_OPS} - op_ids
    assert not missing, f"operationIds named in _config are not in the document: {sorted(missing)}"
    seeded = _seed(platform, api, clients)
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(seeded))
    # its own admin session: whatever the fuzzer does leaves the fixture's alone
    cmd = _schemathesis_cmd(platform, seeded["token"], config)
    shown = " ".join(a if "Bearer" not in a else "'Authorization: Bearer ...'" for a in cmd)
    rc, out = _run(cmd, tmp_path, RUN_DEADLINE)
    print(f"$ {shown}\n{out}")
    (tmp_path / "schemathesis.log").write_text(out)
    assert platform.running, f"ironbridge died during the schemathesis run; log tail:\n{platform.log_tail()}"
    if rc is None:
        pytest.fail(f"schemathesis did not finish within {RUN_DEADLINE}s ({shown}); output:\n{out[-20000:]}")
    assert rc == 0, f"schemathesis exited with {rc} ({shown}); output:\n{out[-20000:]}"
