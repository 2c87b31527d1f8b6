#!/usr/bin/env python3
"""Medians and Ironbridge/Mosquitto ratios from mqttload JSON lines: summarize.py FILE.jsonl

Rows are keyed by scenario, MQTT version, QoS and publisher/subscriber counts, so runs of
different versions or QoS are never mixed (the shared summarize.py keys by scenario only)."""
import json
import statistics as st
import sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if "error" in d:
        print("ERROR", d)
        continue
    key = (d["scenario"], d.get("mqtt_version"), d.get("qos"), d.get("publishers"), d.get("subscribers"))
    rows[(key, d["label"])].append(d)


def med(ds, k, sub=None):
    v = [(d.get(k) or {}).get(sub) if sub else d.get(k) for d in ds]
    v = [x for x in v if x is not None]
    return st.median(v) if v else None


def fmt(x, nd=0):
    return "-" if x is None else f"{x:,.{nd}f}"


keys = sorted({k for k, _ in rows}, key=lambda k: tuple(str(x) for x in k))
print("| scenario | mqtt | qos | metric | ironbridge | mosquitto | ratio | runs |")
print("|---|---|---|---|---|---|---|---|")
for key in keys:
    ib, mq = rows.get((key, "ironbridge"), []), rows.get((key, "mosquitto"), [])
    s, v, q = key[0], key[1], key[2]
    if s == "s5":
        metrics = [("connect rate /s", "connect_rate_per_s", None), ("bytes per idle conn", "broker_bytes_per_conn", None)]
    elif s == "s4":
        metrics = [(f"latency {p} µs", "latency_us", p) for p in ("p50", "p99", "p99_9")]
    else:
        metrics = [("msgs/s received", "recv_msgs_per_s", None), ("msgs per broker CPU-s", "msgs_per_broker_cpu_s", None),
                   ("lost", "lost", None)]
    for name, k, sub in metrics:
        a, b = med(ib, k, sub), med(mq, k, sub)
        ratio = f"{a / b:.2f}×" if a and b else "-"
        print(f"| {s} | {v} | {q} | {name} | {fmt(a)} | {fmt(b)} | {ratio} | {len(ib)}/{len(mq)} |")
