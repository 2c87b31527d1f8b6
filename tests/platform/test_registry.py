"""Admin surface the other tests build on: login, device/profile registry, error bodies.
Kept small: when one of these fails, most other failures follow from it."""

from __future__ import annotations

import requests

from ib_platform import assert_error_body, uid


def test_healthz(platform):
    assert requests.get(platform.http_url + "/healthz", timeout=5).status_code == 200


def test_login_wrong_password_is_401(platform):
    r = requests.post(platform.http_url + "/api/v1/auth/login",
                      json={"username": "admin", "password": "not-" + platform.admin_password}, timeout=10)
    assert_error_body(r, 401)


def test_login_returns_token_and_refresh_token(platform):
    r = requests.post(platform.http_url + "/api/v1/auth/login",
                      json={"username": "admin", "password": platform.admin_password}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] and body["refresh_token"], body


def test_api_without_token_is_401(platform):
    assert_error_body(requests.get(platform.http_url + "/api/v1/devices", timeout=10), 401)
    r = requests.get(platform.http_url + "/api/v1/devices", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert_error_body(r, 401)


def test_device_create_get_delete(api):
    name = uid("reg")
    d = api.create_device(name, label="Boiler room", iccid="8944500102198304826", gateway=False)
    assert d["name"] == name and d.get("label") == "Boiler room", d
    got = api.ok(api.get(f"/api/v1/devices/{d['id']}"))
    assert got["id"] == d["id"] and got["name"] == name
    assert got.get("iccid") == "8944500102198304826", got
    assert "access_token" not in got
    r = api.delete(f"/api/v1/devices/{d['id']}")
    assert r.status_code in (200, 204), r.text
    assert_error_body(api.get(f"/api/v1/devices/{d['id']}"), 404)


def test_device_create_without_name_is_400(api):
    assert_error_body(api.post("/api/v1/devices", {"label": "no name"}), 400)


def test_device_create_with_unknown_profile_fails(api):
    r = api.post("/api/v1/devices", {"name": uid("x"), "profile": uid("no-such-profile")})
    assert r.status_code in (400, 404), r.text
    assert_error_body(r, r.status_code)


def test_device_listing_pages(api):
    names = {uid("page") for _ in range(3)}
    for n in names:
        api.create_device(n)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = api.ok(api.get("/api/v1/devices", params=params))
        assert len(page["data"]) <= 1
        seen += [d["name"] for d in page["data"]]
        pages += 1
        cursor = page.get("next")
        if not cursor:
            break
        assert pages < 10_000
    assert names <= set(seen)
    assert len(seen) == len(set(seen)), "a device was listed twice"


def test_profile_create_and_list(api):
    name = uid("prof")
    p = api.create_profile(name, allow_publish=["a/#"], allow_subscribe=["a/#"], inactivity_timeout_ms=5000)
    assert p["name"] == name, p
    body = api.ok(api.get("/api/v1/profiles"))
    rows = body["data"] if isinstance(body, dict) else body
    assert {"default", name} <= {r["name"] for r in rows}


def test_default_tenant_and_profile_exist(api):
    body = api.ok(api.get("/api/v1/tenants"))
    rows = body["data"] if isinstance(body, dict) else body
    assert "default" in {r["name"] for r in rows}
