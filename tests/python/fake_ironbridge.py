#!/usr/bin/env python3
"""Harness self-check only: an "ironbridge" stand-in that runs mosquitto.

It accepts Ironbridge's command line (`serve --config X.toml --data-dir D --mqtt
127.0.0.1:0 --http ... --coap ...`), parses the TOML the harness wrote, starts
mosquitto with an equivalent config, and prints the `listening mqtt/http` lines the
harness waits for.  This exercises the Ironbridge code path of conftest.py (TOML
generation, stdout protocol, log draining, restart on the same port) before the
real binary exists:

    IRONBRIDGE_BIN=tests/python/fake_ironbridge.py \
        .venv/bin/python -m pytest tests/python --broker=ironbridge -k 'harness or connect'

Tests marked xfail for mosquitto will fail (strict) this way; that is expected.
ACL rules are not translated.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tomllib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["serve"])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--mqtt", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--coap", required=True)
    a = ap.parse_args()

    with open(a.config, "rb") as f:
        cfg = tomllib.load(f)["mqtt"]
    host, port = a.mqtt.rsplit(":", 1)
    port = int(port) or free_port()
    names = {"max_keepalive": "max_keepalive", "max_packet_size": "max_packet_size",
             "receive_maximum": "max_inflight_messages", "topic_alias_maximum": "max_topic_alias",
             "max_inflight_messages": "max_inflight_messages", "max_queued_messages": "max_queued_messages",
             "max_queued_bytes": "max_queued_bytes", "sys_interval": "sys_interval"}
    lines = [f"listener {port} {host}", "user root" if os.geteuid() == 0 else "",
             "log_dest stderr", "log_type all", "persistence false",
             f"allow_anonymous {'true' if cfg.get('allow_anonymous', True) else 'false'}"]
    for k, v in cfg.items():
        if k in names:
            lines.append(f"{names[k]} {int(v)}")
        elif k == "retain_available":
            lines.append(f"retain_available {'true' if v else 'false'}")
    users = cfg.get("users", [])
    if users:
        pw = os.path.join(a.data_dir, "passwd")
        for i, u in enumerate(users):
            subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b"]
                           + (["-c"] if i == 0 else []) + [pw, u["username"], u["password"]], check=True)
        lines.append(f"password_file {pw}")
    conf = os.path.join(a.data_dir, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"listening mqtt {host}:{port}", flush=True)
    print(f"listening http 127.0.0.1:{free_port()}", flush=True)
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    os.execv(mosq, [mosq, "-c", conf])


if __name__ == "__main__":
    sys.exit(main())
