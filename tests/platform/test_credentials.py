"""Device authentication and authorisation: tokens, MQTT basic credentials, rotation,
profile topic filters."""

from __future__ import annotations

import pytest
import requests

from ib_mqtt import V5, V311, VERSIONS, raw_connack
from ib_platform import assert_error_body, uid, wait_for

TELEMETRY = "v1/devices/me/telemetry"
REFUSED_V311 = (4, 5)        # bad user name or password / not authorized
REFUSED_V5 = (0x86, 0x87)


# ---------------------------------------------------------------------------
# access tokens


def test_wrong_token_v311_connack_5(platform):
    assert raw_connack(platform.mqtt_port, "A" * 24, version=V311) == 5


def test_wrong_token_v5_connack_0x86(platform):
    assert raw_connack(platform.mqtt_port, "A" * 24, version=V5) == 0x86


def test_no_credentials_refused_without_allow_anonymous(platform):
    assert raw_connack(platform.mqtt_port, None, version=V311) in REFUSED_V311
    assert raw_connack(platform.mqtt_port, None, version=V5) in REFUSED_V5


def test_valid_token_connects_and_paho_reports_success(platform, api, clients):
    d = api.create_device(uid("tok"))
    assert raw_connack(platform.mqtt_port, d["access_token"], version=V311) == 0
    c = clients.new(platform.mqtt_port, d["access_token"], version=V5)
    assert c.connack_rc == 0


def test_access_token_format(api):
    tok = api.create_device(uid("fmt"))["access_token"]
    assert len(tok) == 24 and tok.isalnum() and tok.isascii(), tok


def test_token_is_shown_only_at_creation(api):
    d = api.create_device(uid("once"))
    got = api.ok(api.get(f"/api/v1/devices/{d['id']}"))
    assert d["access_token"] not in str(got)
    listed = [x for x in api.list_devices() if x["id"] == d["id"]]
    assert len(listed) == 1 and d["access_token"] not in str(listed[0])


# ---------------------------------------------------------------------------
# profile topic filters


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_subscribe_outside_profile_is_refused(platform, api, clients, version):
    d = api.create_device(uid("acl"))
    c = clients.new(platform.mqtt_port, d["access_token"], version=version)
    assert c.subscribe("factory/#") == [0x80 if version == V311 else 0x87]
    assert c.subscribe("#") == [0x80 if version == V311 else 0x87]
    assert c.subscribe("v1/devices/me/attributes") == [1]  # the device API stays allowed


def test_publish_outside_profile_is_refused_v5(platform, api, clients):
    d = api.create_device(uid("acl"))
    c = clients.new(platform.mqtt_port, d["access_token"], version=V5)
    assert c.publish("factory/line1/state", b"on") == 0x87
    assert c.connected.is_set()
    assert c.publish(TELEMETRY, {"still": 1}) == 0


def test_profile_filters_let_two_devices_talk(platform, api, clients):
    prof = api.create_profile(uid("talk"), allow_publish=["line1/+/cmd"], allow_subscribe=["line1/#"])
    a = api.create_device(uid("talker"), profile=prof["name"])
    b = api.create_device(uid("listener"), profile=prof["name"])
    ca = clients.new(platform.mqtt_port, a["access_token"], version=V5)
    cb = clients.new(platform.mqtt_port, b["access_token"], version=V311)
    assert cb.subscribe("line1/#") == [1]
    assert ca.publish("line1/pump/cmd", b'{"on":true}') == 0
    m = cb.expect("line1/pump/cmd")
    assert m.payload == b'{"on":true}'
    # outside the profile's filters: still refused
    assert ca.publish("line2/pump/cmd", b"x") == 0x87
    assert ca.publish("line1/pump/state", b"x") == 0x87
    assert cb.subscribe("line2/#") == [0x80]
    cb.expect_none()


def test_default_profile_device_cannot_see_profile_topics(platform, api, clients):
    prof = api.create_profile(uid("talk"), allow_publish=["zone/#"], allow_subscribe=["zone/#"])
    a = api.create_device(uid("zoned"), profile=prof["name"])
    plain = api.create_device(uid("plain"))
    ca = clients.new(platform.mqtt_port, a["access_token"])
    cp = clients.new(platform.mqtt_port, plain["access_token"])
    assert cp.subscribe("zone/#") == [0x87]
    assert ca.publish("zone/1", b"x") in (0x00, 0x10)  # 0x10: no matching subscribers
    cp.expect_none()


# ---------------------------------------------------------------------------
# MQTT basic credentials


def _basic(api, **creds):
    d = api.create_device(uid("basic"))
    api.set_credentials(d["id"], {"type": "mqtt_basic", **creds})
    return d


def test_mqtt_basic_full_credentials(platform, api, clients):
    cid, user, pw = uid("cid"), uid("user"), "s3cret-" + uid()
    d = _basic(api, client_id=cid, username=user, password=pw)
    c = clients.new(platform.mqtt_port, user, password=pw, client_id=cid, version=V5)
    assert c.publish(TELEMETRY, {"via": "basic"}) == 0
    assert api.wait_latest(d["id"], ["via"])["via"]["value"] == "basic"


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
def test_mqtt_basic_wrong_password_refused(platform, api, version):
    cid, user = uid("cid"), uid("user")
    _basic(api, client_id=cid, username=user, password="right-password")
    rc = raw_connack(platform.mqtt_port, user, "wrong-password", client_id=cid, version=version)
    assert rc in (REFUSED_V311 if version == V311 else REFUSED_V5)
    rc = raw_connack(platform.mqtt_port, user, None, client_id=cid, version=version)
    assert rc in (REFUSED_V311 if version == V311 else REFUSED_V5)


def test_mqtt_basic_client_id_and_username_must_both_match(platform, api):
    cid, user = uid("cid"), uid("user")
    _basic(api, client_id=cid, username=user, password="pw-1")
    assert raw_connack(platform.mqtt_port, user, "pw-1", client_id=cid) == 0
    assert raw_connack(platform.mqtt_port, user, "pw-1", client_id=uid("other")) in REFUSED_V5
    assert raw_connack(platform.mqtt_port, uid("other"), "pw-1", client_id=cid) in REFUSED_V5


def test_mqtt_basic_username_and_password_only(platform, api, clients):
    user = uid("user")
    d = _basic(api, username=user, password="pw-2")
    c = clients.new(platform.mqtt_port, user, password="pw-2", client_id=uid("anyid"))
    assert c.publish(TELEMETRY, {"u": 1}) == 0
    api.wait_latest(d["id"], ["u"])
    assert raw_connack(platform.mqtt_port, user, "pw-3") in REFUSED_V5


def test_mqtt_basic_client_id_only(platform, api, clients):
    cid = uid("cid")
    d = _basic(api, client_id=cid)
    c = clients.new(platform.mqtt_port, None, client_id=cid)
    assert c.publish(TELEMETRY, {"cidonly": 1}) == 0
    api.wait_latest(d["id"], ["cidonly"])


def test_mqtt_basic_password_is_not_returned(api):
    d = api.create_device(uid("basic"))
    body = api.set_credentials(d["id"], {"type": "mqtt_basic", "client_id": uid("c"), "username": uid("u"),
                                         "password": "do-not-echo-me"})
    assert "do-not-echo-me" not in str(body)
    assert "do-not-echo-me" not in api.get(f"/api/v1/devices/{d['id']}").text


# ---------------------------------------------------------------------------
# token rotation


def _rotate(api, device_id, grace_s):
    body = api.set_credentials(device_id, {"type": "access_token", "grace_s": grace_s})
    new = body.get("access_token")
    assert isinstance(new, str) and len(new) == 24, body
    return new


def test_rotation_with_grace_keeps_both_tokens(platform, api, clients):
    d = api.create_device(uid("rot"))
    old = d["access_token"]
    new = _rotate(api, d["id"], 60)
    assert new != old
    for tok, key in ((old, "old"), (new, "new")):
        c = clients.new(platform.mqtt_port, tok)
        assert c.publish(TELEMETRY, {key: 1}) == 0
    got = api.wait_latest(d["id"], ["old", "new"])  # both land on the same device
    assert got["old"]["value"] == 1 and got["new"]["value"] == 1
    # HTTP accepts both as well
    for tok in (old, new):
        r = requests.post(f"{platform.http_url}/api/v1/{tok}/telemetry", json={"h": 1}, timeout=10)
        assert r.status_code == 200, r.text


def test_rotation_with_zero_grace_revokes_at_once(platform, api, clients):
    d = api.create_device(uid("rot0"))
    old = d["access_token"]
    new = _rotate(api, d["id"], 0)
    assert raw_connack(platform.mqtt_port, old, version=V311) == 5
    assert raw_connack(platform.mqtt_port, old, version=V5) == 0x86
    r = requests.post(f"{platform.http_url}/api/v1/{old}/telemetry", json={"h": 1}, timeout=10)
    assert r.status_code == 401
    c = clients.new(platform.mqtt_port, new)
    assert c.publish(TELEMETRY, {"rotated": 1}) == 0
    api.wait_latest(d["id"], ["rotated"])



def test_rotation_grace_ends(platform, api):
    d = api.create_device(uid("rotg"))
    old = d["access_token"]
    new = _rotate(api, d["id"], 2)
    assert raw_connack(platform.mqtt_port, old) == 0
    wait_for(lambda: raw_connack(platform.mqtt_port, old) == 0x86, timeout=15,
             what="the old token to be refused once its 2 s grace is over")
    assert raw_connack(platform.mqtt_port, new) == 0


def test_credentials_of_unknown_device_is_404(api):
    r = api.post("/api/v1/devices/00000000-0000-0000-0000-000000000000/credentials",
                 {"type": "access_token", "grace_s": 0})
    assert_error_body(r, 404)


def test_credentials_with_unknown_type_is_refused(api):
    d = api.create_device(uid("badtype"))
    r = api.post(f"/api/v1/devices/{d['id']}/credentials", {"type": "kerberos"})
    assert r.status_code in (400, 422), r.text
    assert_error_body(r, r.status_code)


def test_rotation_with_zero_grace_closes_the_old_tokens_live_session(platform, api, clients):
    d = api.create_device(uid("rotlive"))
    c = clients.new(platform.mqtt_port, d["access_token"])
    _rotate(api, d["id"], 0)
    wait_for(lambda: c.disconnected.is_set(), what="the revoked token's live session to be closed")
