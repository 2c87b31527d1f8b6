#!/usr/bin/env bash
# The project's test command: Rust checks, then the differential MQTT conformance
# suite against Ironbridge and against Debian's mosquitto, then the device API suites.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

cargo fmt --check
cargo clippy --all-targets -- -D warnings
# A throwaway PostgreSQL cluster for the telemetry store's shared suite (crates/store/tests).
PG_DIR=$(mktemp -d /tmp/ib-pg.XXXXXX)
chmod 755 "$PG_DIR"
trap 'bash scripts/pg-cluster.sh stop "$PG_DIR/cluster" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
IRONBRIDGE_TEST_PG_URL=$(bash scripts/pg-cluster.sh start "$PG_DIR/cluster" --no-fsync | tail -1)
export IRONBRIDGE_TEST_PG_URL
cargo test --workspace
cargo build

export IRONBRIDGE_BIN="${IRONBRIDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/ironbridge}"

# Run both suites even if the first fails, so one CI run shows both results.
status=0
.venv/bin/python -m pytest tests/python --broker=ironbridge -q || status=$?
.venv/bin/python -m pytest tests/python --broker=mosquitto -q || status=$?
# The device API end to end (paho-mqtt, requests, aiocoap, coap-client, tb-mqtt-client).
bash scripts/test-platform.sh || status=$?
# The web UI in Debian's Chromium (playwright-core from npm; no downloaded browser).
bash scripts/test-ui.sh || status=$?
exit "$status"
