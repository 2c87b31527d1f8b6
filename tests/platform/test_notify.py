"""Notification actions (`email`, `sms`) end to end: a local SMTP server (aiosmtpd) receives what
the platform sends; the SMS goes through the email-to-SMS gateway (`[notify.sms] via = "email"`).

- the vending scenario: stock below 10 % → an SMS to the supplier's phone (a mail to
  `<digits>@sms.example.com`) and an email to the supplier, once per drop; a refill re-arms it.
- long SMS texts are cut to one message (160 GSM characters).
- a recipient the mail server refuses is a failed action with the server's answer.
- bad numbers and addresses are refused when the rule is saved.
- without `[notify.smtp]` / `[notify.sms]` the actions fail, visibly at /rules/{id}/failures.
"""

from __future__ import annotations

import json
import time

import pytest

from ib_platform import QUIET, Platform, assert_error_body, now_ms, uid, wait_for

PHONE = "+4917012345678"
GATEWAY = "sms.example.com"


@pytest.fixture(scope="module")
def notifying(tmp_path_factory, smtp) -> Platform:
    config = f"""
[notify.smtp]
host = "127.0.0.1"
port = {smtp.port}
from = "Ironbridge <ironbridge@example.com>"
timeout_s = 5

[notify.sms]
via = "email"
domain = "{GATEWAY}"
"""
    p = Platform(tmp_path_factory.mktemp("notify"), config=config).start()
    yield p
    assert p.stop() == 0, p.log_tail()


def create_rule(api, body: dict) -> dict:
    r = api.post("/api/v1/rules", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def failures(api, rule_id: str) -> list[dict]:
    r = api.get(f"/api/v1/rules/{rule_id}/failures")
    assert r.status_code == 200, r.text
    return r.json()


def send(client, ts: int, **values) -> None:
    client.publish("v1/devices/me/telemetry", json.dumps({"ts": ts, "values": values}))


def wait_value(api, device_id: str, key: str, value) -> None:
    """Until the platform has stored `value` as the latest `key` (the rule has seen it)."""
    wait_for(lambda: api.latest(device_id, [key]).get(key, {}).get("value") == value,
             what=f"latest {key} == {value}")


def vending_rule(name: str, device: str) -> dict:
    return {
        "name": name,
        "scope": {"device": device},
        "condition": "stock_pct < 10.0",
        "actions": [
            {"type": "sms", "to": PHONE, "text": "{{device.name}}: stock {{stock_pct}}%"},
            {"type": "email", "to": ["supplier@example.com"], "subject": "Refill {{device.name}}"},
        ],
    }


def test_low_stock_texts_and_mails_the_supplier_once_per_drop(notifying, smtp, clients):
    api = notifying.api
    dev = api.create_device(uid("vending"))
    name = dev["name"]
    rule = create_rule(api, vending_rule(uid("low-stock"), name))
    c = clients.new(notifying.mqtt_port, dev["access_token"])
    t0 = now_ms()
    send(c, t0, stock_pct=50.0)
    wait_value(api, dev["id"], "stock_pct", 50.0)
    send(c, t0 + 1000, stock_pct=8.0)
    mails = wait_for(lambda: len(smtp.about(name)) >= 2 and smtp.about(name), what="two mails")
    by_rcpt = {m["rcpt"][0]: m for m in mails}
    assert sorted(by_rcpt) == [f"4917012345678@{GATEWAY}", "supplier@example.com"], mails
    text = by_rcpt[f"4917012345678@{GATEWAY}"]
    assert text["rcpt"] == [f"4917012345678@{GATEWAY}"]
    assert text["body"].strip() == f"{name}: stock 8.0%", text
    assert text["from"] == "ironbridge@example.com"
    mail = by_rcpt["supplier@example.com"]
    assert mail["subject"] == f"Refill {name}"
    # The default body: what fired, and the values the condition saw.
    assert f"Rule {rule['name']} fired on {name}" in mail["body"], mail["body"]
    assert "stock_pct = 8.0" in mail["body"], mail["body"]

    # Still low: nothing more.
    send(c, t0 + 2000, stock_pct=6.0)
    wait_value(api, dev["id"], "stock_pct", 6.0)
    time.sleep(QUIET)
    assert len(smtp.about(name)) == 2, smtp.about(name)
    # Refilled, then low again: notified again.
    send(c, t0 + 3000, stock_pct=90.0)
    send(c, t0 + 4000, stock_pct=4.0)
    again = wait_for(lambda: len(smtp.about(name)) >= 4 and smtp.about(name), what="two more mails")
    assert any(m["body"].strip() == f"{name}: stock 4.0%" for m in again), again
    time.sleep(QUIET)
    assert len(smtp.about(name)) == 4, smtp.about(name)
    assert failures(api, rule["id"]) == []
    assert api.get(f"/api/v1/rules/{rule['id']}").json()["last_error"] is None


def test_a_long_sms_is_cut_to_one_message(notifying, smtp, clients):
    api = notifying.api
    dev = api.create_device(uid("kiosk"))
    create_rule(api, {
        "name": uid("chatty"), "scope": {"device": dev["name"]}, "condition": "door == true",
        "actions": [{"type": "sms", "to": "+15550001234", "text": "{{device.name}} " + "x" * 300}],
    })
    c = clients.new(notifying.mqtt_port, dev["access_token"])
    send(c, now_ms(), door=True)
    mail = wait_for(lambda: smtp.about(dev["name"]), what="the SMS mail")[0]
    assert mail["rcpt"] == [f"15550001234@{GATEWAY}"]
    assert len(mail["body"].rstrip("\r\n")) == 160, mail["body"]
    assert mail["body"].startswith(dev["name"] + " xxx")


def test_a_refused_recipient_is_a_failed_action(notifying, smtp, clients):
    api = notifying.api
    dev = api.create_device(uid("fridge"))
    rule = create_rule(api, {
        "name": uid("warm"), "scope": {"device": dev["name"]}, "condition": "temp > 8.0",
        "actions": [{"type": "email", "to": ["refused@example.com"]}],
    })
    c = clients.new(notifying.mqtt_port, dev["access_token"])
    send(c, now_ms(), temp=12.5)
    failed = wait_for(lambda: failures(api, rule["id"]), what="the recorded failure")
    assert failed[0]["action"] == "email" and "550" in failed[0]["error"], failed
    assert "550" in api.get(f"/api/v1/rules/{rule['id']}").json()["last_error"]


@pytest.mark.parametrize("action,fragment", [
    ({"type": "sms", "to": "017012345678"}, "E.164"),
    ({"type": "sms", "to": "+49 170 1234567"}, "E.164"),
    ({"type": "sms", "to": "+123"}, "E.164"),
    ({"type": "email", "to": []}, "recipients"),
    ({"type": "email", "to": ["not-an-address"]}, "not a mail address"),
])
def test_bad_numbers_and_addresses_are_refused_at_save(notifying, action, fragment):
    r = notifying.api.post("/api/v1/rules", json={
        "name": uid("bad"), "scope": {"tenant": True}, "condition": "stock_pct < 10.0",
        "actions": [action],
    })
    body = assert_error_body(r, 400)
    assert fragment in body["message"], body


def test_without_configuration_the_failures_are_recorded(platform, api, clients):
    # `platform` (conftest) runs without a [notify] section.
    dev = api.create_device(uid("vending"))
    rule = create_rule(api, vending_rule(uid("low-stock"), dev["name"]))
    c = clients.new(platform.mqtt_port, dev["access_token"])
    send(c, now_ms(), stock_pct=3.0)
    got = wait_for(lambda: len(failures(api, rule["id"])) >= 2 and failures(api, rule["id"]),
                   what="two recorded failures")
    errors = {f["action"]: f["error"] for f in got}
    assert errors == {"email": "no [notify.smtp] configured", "sms": "no [notify.sms] configured"}
    assert all(f["device"] == dev["id"] for f in got), got
    last = api.get(f"/api/v1/rules/{rule['id']}").json()["last_error"]
    assert "no [notify." in last and "configured" in last, last
