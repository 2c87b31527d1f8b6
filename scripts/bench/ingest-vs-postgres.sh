#!/usr/bin/env bash
# End-to-end telemetry ingest, SQLite (default) and PostgreSQL backends side by side, same
# binary, same generator (`ironbridge bench ingest`), interleaved runs:
#
#   scripts/bench/ingest-vs-postgres.sh [REPS]      (env DEVICES=1000 KEYS=10 DUR=10)
#
# PostgreSQL is a throwaway cluster from scripts/pg-cluster.sh with the server's default
# durability (fsync at commit). SQLite runs twice: its default (synchronous = NORMAL in WAL mode:
# survives process crashes, not power loss) and `fsync = true` (power-loss safe, as PostgreSQL).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
REPS=${1:-2}; DEVICES=${DEVICES:-1000}; KEYS=${KEYS:-10}; DUR=${DUR:-10}
cargo build --release -q
BIN=target/release/ironbridge
TMP=$(mktemp -d /tmp/ingest-vs-pg.XXXXXX)
chmod 755 "$TMP"
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; bash scripts/pg-cluster.sh stop "$TMP/pg" >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT
PG_URL=$(bash scripts/pg-cluster.sh start "$TMP/pg" | tail -1)

run() { # NAME CONFIG
  local name=$1 config=$2 dir="$TMP/$1-$RANDOM"
  mkdir -p "$dir"; printf '%s\n' "$config" > "$dir/ib.toml"
  IRONBRIDGE_ADMIN_PASSWORD=bench $BIN serve --config "$dir/ib.toml" --data-dir "$dir/data" \
    --mqtt 127.0.0.1:0 --http 127.0.0.1:0 --coap 127.0.0.1:0 > "$dir/out" 2> "$dir/err" &
  PID=$!
  for _ in $(seq 100); do grep -q "listening mqtt" "$dir/out" 2>/dev/null && break; sleep 0.1; done
  local http mqtt
  http=$(awk '/listening http/ {print $3}' "$dir/out"); mqtt=$(awk '/listening mqtt/ {print $3}' "$dir/out")
  printf '%-10s ' "$name"
  IRONBRIDGE_ADMIN_PASSWORD=bench $BIN bench ingest --http "$http" --mqtt "$mqtt" \
    --devices "$DEVICES" --keys "$KEYS" --inflight 16 --warmup 3 --duration "$DUR"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

for _ in $(seq "$REPS"); do
  run sqlite ""
  run sqlite-fsync "[storage]
fsync = true"
  run postgres "[storage]
url = \"$PG_URL\""
done
