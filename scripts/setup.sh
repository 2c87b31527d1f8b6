#!/usr/bin/env bash
# Prepare this machine for ./scripts/test.sh (idempotent, safe to re-run):
#   - Debian packages: mosquitto + mosquitto-clients (reference broker for the
#     differential MQTT suite), openssl (test certificates, TLS version checks),
#     libcoap3-bin (libcoap's coap-client for the CoAP device API tests),
#     postgresql (the telemetry store's PostgreSQL backend; tests start a throwaway cluster),
#     socat (pseudo-terminal pairs: Modbus RTU between the edge and a pymodbus simulator),
#     python3-venv if `python3 -m venv` is unusable
#   - Python virtualenv .venv with tests/python/requirements.txt
# `apt-get update` runs only when a package is actually missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

PYTHON="${PYTHON:-python3}"

missing=()
for pkg in mosquitto mosquitto-clients openssl libcoap3-bin postgresql socat; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
  PYTHON=/usr/bin/python3
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's package may start a system mosquitto on :1883; the suite never uses it
# (every test starts its own broker on a free port), so it is left alone.
test -x /usr/sbin/mosquitto || { echo "setup: /usr/sbin/mosquitto missing" >&2; exit 1; }

REQ=tests/python/requirements.txt
STAMP=.venv/.requirements.sha256
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
  echo "setup: creating .venv with $("$PYTHON" --version 2>&1)"
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing $REQ into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$REQ"
  echo "$want" > "$STAMP"
fi
