"""The telemetry store's acceptance test for durability: publishers send 100,000 QoS 1 telemetry
messages, the platform is killed with SIGKILL at a random point, restarted, and every point whose
PUBACK was received is present exactly once."""

from __future__ import annotations

import random
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ib_platform import now_ms, uid, wait_for

DEVICES = 4
PER_DEVICE = 25_000  # 100,000 messages in all


class Publisher:
    """One device publishing `{"ts": base+i, "values": {"seq": i}}` at QoS 1. A message counts as
    acknowledged once paho has its PUBACK (`MessageInfo.is_published()`); no lock is shared with
    paho's callbacks (paho holds its own locks while calling them)."""

    def __init__(self, port: int, token: str, base: int):
        self.base = base
        self.sent: list[tuple[int, mqtt.MQTTMessageInfo]] = []
        self.gone = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uid("ing"), protocol=mqtt.MQTTv311)
        self.c.username_pw_set(token)
        self.c.max_inflight_messages_set(200)
        self.c.max_queued_messages_set(0)
        self.c.on_disconnect = lambda *a: self.gone.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def acked(self) -> set[int]:
        return {i for i, info in list(self.sent) if info.is_published()}

    def acked_count(self) -> int:
        return sum(1 for _, info in list(self.sent) if info.is_published())

    def _run(self):
        oldest = 0
        for i in range(PER_DEVICE):
            if self.gone.is_set():
                return
            payload = '{"ts":%d,"values":{"seq":%d}}' % (self.base + i, i)
            info = self.c.publish("v1/devices/me/telemetry", payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return
            self.sent.append((i, info))
            # paho queues without bound: keep about 400 unacknowledged.
            while i - oldest > 400 and not self.gone.is_set():
                if self.sent[oldest][1].is_published():
                    oldest += 1
                else:
                    time.sleep(0.001)

    def stop(self):
        self.c.loop_stop()
        try:
            self.c.disconnect()
        except Exception:
            pass


@pytest.mark.timeout(300)
def test_acknowledged_points_survive_sigkill_exactly_once(own_platform):
    p = own_platform
    base = now_ms() - 3_600_000
    devices = [p.api.create_device(uid("ingest")) for _ in range(DEVICES)]
    pubs = [Publisher(p.mqtt_port, d["access_token"], base) for d in devices]
    for pub in pubs:
        pub.thread.start()
    # Kill somewhere between 10% and 90% of the run (by acknowledged messages).
    target = random.randint(PER_DEVICE * DEVICES // 10, PER_DEVICE * DEVICES * 9 // 10)
    # Sweeping `is_published` over every message is O(n): poll every half second.
    wait_for(lambda: sum(x.acked_count() for x in pubs) >= target or not any(x.thread.is_alive() for x in pubs),
             timeout=300, interval=0.5, what=f"{target} acknowledged messages")
    p.kill9()
    for pub in pubs:
        pub.gone.set()
        pub.thread.join(10)
        pub.stop()
    acked_total = sum(x.acked_count() for x in pubs)
    assert acked_total >= target
    p.start()
    for d, pub in zip(devices, pubs):
        series = p.api.get(f"/api/v1/devices/{d['id']}/telemetry",
                           params={"keys": "seq", "from": base, "to": base + PER_DEVICE, "limit": 1_000_000})
        assert series.status_code == 200, series.text
        stored = [pt["ts"] - base for pt in series.json().get("seq", [])]
        assert len(stored) == len(set(stored)), "a point is stored twice"
        missing = pub.acked() - set(stored)
        assert not missing, f"{len(missing)} acknowledged points lost, e.g. {sorted(missing)[:5]}"
        for pt in series.json()["seq"]:
            assert pt["value"] == pt["ts"] - base
