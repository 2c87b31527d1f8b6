#!/usr/bin/env bash
# Side-by-side benchmark of Ironbridge and Debian's Mosquitto with the team's neutral yardstick
# (../shared/bench/mqttload), interleaved (ironbridge, mosquitto, ironbridge, ...) so both see the
# same machine conditions. Writes JSON lines to OUT and prints the median table.
#
#   scripts/bench/vs-mosquitto.sh OUT.jsonl   (env: REPS=3 DUR=10 VERSIONS="3 5" S5=1 S5_REPS=1 SCENARIOS=...
#                                              IB_PERSISTENCE=true)
#
# Both brokers run with the same limits: 100 in-flight, 100000 queued; Ironbridge with persistence
# on (its default) unless IB_PERSISTENCE=false, Mosquitto with persistence off (its default).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT=${1:-target/bench/vs-mosquitto.jsonl}
REPS=${REPS:-3}; DUR=${DUR:-10}; VERSIONS=${VERSIONS:-"3 5"}; S5=${S5:-1}
# SCENARIOS="s1;s2 --inflight 64" picks a subset.
IFS=';' read -r -a SCENARIOS <<< "${SCENARIOS:-s1;s2 --inflight 64;s3 --subscribers 500;s4 --rate 5000;s4 --rate 5000 --qos 1}"
mkdir -p "$(dirname "$OUT")"
ulimit -n 200000 2>/dev/null || ulimit -n 20000

cargo build --release -q
cargo build --release -q --manifest-path ../shared/bench/mqttload/Cargo.toml --target-dir target/mqttload
B=target/mqttload/release/mqttload

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TMP=$(mktemp -d)
IB_PID=; MQ_PID=
trap 'kill $IB_PID $MQ_PID 2>/dev/null || true; rm -rf "$TMP"' EXIT

start_brokers() {
cat > "$TMP/ib.toml" <<TOML
[mqtt]
allow_anonymous = true
max_inflight_messages = 100
max_queued_messages = 100000
persistence = ${IB_PERSISTENCE:-true}
TOML
target/release/ironbridge serve --config "$TMP/ib.toml" --data-dir "$TMP/data" \
  --mqtt 127.0.0.1:0 --http 127.0.0.1:0 --coap 127.0.0.1:0 > "$TMP/ib.out" 2> "$TMP/ib.err" &
IB_PID=$!
for _ in $(seq 100); do grep -q "listening mqtt" "$TMP/ib.out" 2>/dev/null && break; sleep 0.1; done
IB_PORT=$(sed -n 's/^listening mqtt .*:\([0-9]*\)$/\1/p' "$TMP/ib.out")

MQ_PORT=$(free_port)
cat > "$TMP/mosq.conf" <<CONF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 100000
max_inflight_messages 100
persistence false
log_type error
log_type warning
CONF
/usr/sbin/mosquitto -c "$TMP/mosq.conf" > "$TMP/mosq.log" 2>&1 &
MQ_PID=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$MQ_PORT) 2>/dev/null && break; sleep 0.1; done
echo "ironbridge pid $IB_PID port $IB_PORT; mosquitto pid $MQ_PID port $MQ_PORT" >&2

}
stop_brokers() { kill $IB_PID $MQ_PID 2>/dev/null || true; wait $IB_PID $MQ_PID 2>/dev/null || true; rm -rf "$TMP/data"; }
run() { # label port pid args...
  local l=$1 p=$2 pid=$3; shift 3
  timeout 180 "$B" --port "$p" --broker-pid "$pid" --duration "$DUR" --label "$l" "$@" 2>>"$OUT.log" | tee -a "$OUT" | cut -c1-160
}
start_brokers
for v in $VERSIONS; do
  for rep in $(seq 1 "$REPS"); do
    for s in "${SCENARIOS[@]}"; do
      # shellcheck disable=SC2086
      run ironbridge "$IB_PORT" "$IB_PID" --mqtt-version "$v" $s
      # shellcheck disable=SC2086
      run mosquitto "$MQ_PORT" "$MQ_PID" --mqtt-version "$v" $s
    done
  done
done
# A run of 10,000 connections leaves ~20,000 sockets in TIME_WAIT for a minute. While they are
# there the generator's own connect() spends its time looking for a free ephemeral port
# (__inet_hash_connect, __inet_check_established: its CPU triples) and the connect rate halves for
# whichever broker comes next. So every S5 run starts once they are gone.
no_time_wait() {
  for _ in $(seq 90); do [ "$(ss -tan state time-wait | wc -l)" -le 100 ] && return; sleep 1; done
  echo "warning: sockets still in TIME_WAIT; the connect rate below is pessimistic" >&2
}
# Idle connections on freshly started brokers, so RSS growth is the connections' own.
if [ "$S5" = 1 ]; then
  for v in $VERSIONS; do
    for rep in $(seq 1 "${S5_REPS:-1}"); do
      stop_brokers
      start_brokers
      no_time_wait
      run ironbridge "$IB_PORT" "$IB_PID" --mqtt-version "$v" s5 --connections 10000 --keepalive 600
      no_time_wait
      run mosquitto "$MQ_PORT" "$MQ_PID" --mqtt-version "$v" s5 --connections 10000 --keepalive 600
    done
  done
fi
python3 scripts/bench/summarize.py "$OUT"
