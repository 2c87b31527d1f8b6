#!/usr/bin/env bash
# End-to-end tests of the device API (docs/DEVICES.md) against a built binary:
#   tests/platform     with .venv    (paho-mqtt, requests, aiocoap, schemathesis)
#   tests/platform/tb  with .venv-tb (ThingsBoard's tb-mqtt-client; it replaces the `paho`
#                                     package with a fork, hence its own venv)
# Both venvs are created/refreshed idempotently (hash of the requirements file stamped in the
# venv, as scripts/setup.sh does). Nothing is built here: set IRONBRIDGE_BIN or run
# `cargo build` first. Extra arguments are passed to both pytest runs (e.g. -k, -x, -v).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
export IRONBRIDGE_BIN="${IRONBRIDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/ironbridge}"
if [ ! -x "$IRONBRIDGE_BIN" ]; then
  echo "test-platform: $IRONBRIDGE_BIN is not an executable (cargo build, or set IRONBRIDGE_BIN)" >&2
  exit 2
fi

# ensure_venv DIR REQUIREMENTS STAMP
ensure_venv() {
  local venv="$1" req="$2" stamp="$1/$3" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "test-platform: creating $venv with $("$PYTHON" --version 2>&1)"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
  fi
  # like Python >= 3.13's venv: keep the venv out of git even without a .gitignore entry
  [ -f "$venv/.gitignore" ] || echo '*' > "$venv/.gitignore"
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "test-platform: installing $req into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
  fi
}

# .venv is shared with scripts/setup.sh (tests/python/requirements.txt, stamp
# .requirements.sha256); this suite keeps its own stamp there.
ensure_venv .venv tests/platform/requirements.txt .platform-requirements.sha256
ensure_venv .venv-tb tests/platform/tb/requirements.txt .requirements.sha256

# Never let paho-mqtt and the SDK's fork share a venv.
if .venv/bin/python -m pip show -q tb-paho-mqtt-client >/dev/null 2>&1; then
  echo "test-platform: .venv contains tb-paho-mqtt-client (it overwrites paho); recreate .venv" >&2
  exit 2
fi

status=0
.venv/bin/python -m pytest tests/platform --ignore=tests/platform/tb -q "$@" || status=$?
.venv-tb/bin/python -m pytest tests/platform/tb -q "$@" || status=$?
exit "$status"
