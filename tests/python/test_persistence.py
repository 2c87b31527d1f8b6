"""Durability: what a client was told is stored survives the broker process dying.

Ironbridge keeps retained messages and persistent sessions (subscriptions, queued and
in-flight QoS 1/2 messages, QoS 2 packet ids received) in `data_dir/mqtt.db` and sends
PUBACK/PUBREC/SUBACK/CONNACK only after what they promise is committed, so everything
acknowledged must survive `kill -9` (`mode=sigkill`) and, of course, a graceful SIGTERM
(`mode=sigterm`).

Mosquitto: its persistence file is written only at shutdown and every `autosave_interval`
(30 min by default), so an acknowledged message does not survive SIGKILL there; the
sigkill variants are skipped on mosquitto.  The sigterm variants run on mosquitto with
`persistence true` (harness setting `persistence=True`), as the reference.

The restart keeps the port and data dir (`broker.crash_restart()`).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

import rawmqtt as R
from helpers import QUIET, V5, V311, is_mosquitto, skip_mosquitto, uid, wait_for, xfail_mosquitto

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]
MODES = [
    pytest.param(
        "sigkill", id="sigkill",
        marks=skip_mosquitto("persistence is written only at shutdown / autosave_interval, "
                             "so acknowledged messages are lost on SIGKILL (documented behaviour)"),
    ),
    pytest.param("sigterm", id="sigterm"),
]

N_PUBLISHERS = 2
N_PER_PUBLISHER = 5000
N_TOTAL = N_PUBLISHERS * N_PER_PUBLISHER

BIG = dict(persistence=True, max_queued_messages=20000, max_inflight_messages=100)


def crash(broker, mode: str) -> None:
    broker.crash_restart(graceful=(mode == "sigterm"))


def persistent(version, expiry=3600) -> dict:
    """Client kwargs for a persistent session (3.1.1 clean_session=0 / 5.0 expiry)."""
    if version == V5:
        return {"version": V5, "clean": False, "session_expiry": expiry}
    return {"version": V311, "clean": False}


def raw_persistent(version, expiry=3600) -> dict:
    kw = {"clean": False}
    if version == V5:
        kw["props"] = {R.P.SESSION_EXPIRY_INTERVAL: expiry}
    return kw


def publish_bulk(client_factory, broker, topic: str, timeout: float = 60.0) -> None:
    """N_PUBLISHERS clients (distinct ids) publish N_PER_PUBLISHER QoS 1 messages each,
    concurrently; returns once every one of the N_TOTAL PUBACKs arrived (all success)."""
    pubs = []
    for i in range(N_PUBLISHERS):
        p = client_factory.paho(broker, uid(f"bulk{i}"), version=V5 if i % 2 else V311, connect=False)
        p.c.max_inflight_messages_set(1000)  # paho allows this only before connecting
        p.c.max_queued_messages_set(0)
        p.connect()
        pubs.append(p)
    infos: list[list] = [[] for _ in pubs]
    errors: list[BaseException] = []

    def run(i, p):
        try:
            for seq in range(N_PER_PUBLISHER):
                infos[i].append(p.publish(topic, f"p{i}:{seq}".encode(), qos=1, wait=False))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(pubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors, errors

    def acked():
        return sum(len(p._pubacks) for p in pubs)

    wait_for(lambda: acked() >= N_TOTAL, timeout, interval=0.05,
             what=f"{N_TOTAL} PUBACKs (got {acked()})")
    for p in pubs:
        codes = set(p._pubacks.values())
        assert codes <= {0, None}, f"{p.client_id}: PUBACK reason codes {codes}"
        p.close()


def parse(m) -> tuple[int, int]:
    pub, seq = m.payload.decode().split(":")
    return int(pub[1:]), int(seq)


def receive_all(client, n: int, timeout: float) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        out += client.collect(min(0.5, remaining))
    return out


# ---------------------------------------------------------------------------
# the acceptance test: 10,000 acknowledged messages for an offline session


@pytest.mark.timeout(150)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_offline_queue_of_10000_survives(make_broker, client_factory, version, mode):
    broker = make_broker(**BIG)
    topic = uid("bulk")
    cid = uid("durable")
    s = client_factory.paho(broker, cid, **persistent(version))
    assert s.subscribe(topic, 1) == [1]
    s.disconnect()

    publish_bulk(client_factory, broker, topic)
    crash(broker, mode)

    s2 = client_factory.paho(broker, cid, **persistent(version))
    assert s2.session_present is True
    got = receive_all(s2, N_TOTAL, 90)
    extra = s2.collect(QUIET)  # bounded: nothing may follow the 10,000th
    got += extra
    per_pub = defaultdict(list)
    for m in got:
        assert m.topic == topic and m.qos == 1
        i, seq = parse(m)
        per_pub[i].append(seq)
    # Nothing was in flight when the broker died (the subscriber was offline), so each
    # message is delivered exactly once [MQTT-4.3.2], in publishing order per publisher
    # [MQTT-4.6.0-5/6 (3.1.1) / 4.6.0-6 (5.0)].
    for i in range(N_PUBLISHERS):
        seqs = per_pub[i]
        missing = sorted(set(range(N_PER_PUBLISHER)) - set(seqs))
        assert not missing, f"publisher {i}: {len(missing)} of {N_PER_PUBLISHER} lost, first {missing[:10]}"
        assert len(seqs) == N_PER_PUBLISHER, f"publisher {i}: {len(seqs) - N_PER_PUBLISHER} duplicates"
        assert seqs == list(range(N_PER_PUBLISHER)), f"publisher {i}: out of order"
    assert len(got) == N_TOTAL


@pytest.mark.timeout(150)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_broker_dies_while_subscriber_is_receiving(make_broker, client_factory, version, mode):
    """The subscriber drains its 10,000-message backlog; the broker dies mid-stream, with
    QoS 1 messages in flight.  After restart every message arrives at least once, in order
    per publisher, and a message seen twice was redelivered with DUP=1 [MQTT-3.3.1-1]."""
    broker = make_broker(**BIG)
    topic = uid("bulk")
    cid = uid("durable")
    s = client_factory.paho(broker, cid, **persistent(version))
    assert s.subscribe(topic, 1) == [1]
    s.disconnect()
    publish_bulk(client_factory, broker, topic)

    s = client_factory.paho(broker, cid, **persistent(version))
    wait_for(lambda: s.messages.qsize() >= N_TOTAL // 3, 60, what="a third of the backlog")
    crash(broker, mode)
    s.wait_disconnected(10)
    s.close()
    before = []
    while not s.messages.empty():
        before.append(s.messages.get_nowait())
    assert len(before) < N_TOTAL, "the whole backlog was received before the broker died"

    s2 = client_factory.paho(broker, cid, **persistent(version))
    assert s2.session_present is True
    seen = {parse(m) for m in before}
    after = []
    deadline = time.monotonic() + 90
    while len(seen) < N_TOTAL and time.monotonic() < deadline:
        for m in s2.collect(0.3):
            after.append(m)
            seen.add(parse(m))
    after += s2.collect(QUIET)
    missing = N_TOTAL - len({parse(m) for m in before + after})
    assert missing == 0, f"{missing} acknowledged messages lost ({len(before)} before the crash, {len(after)} after)"

    # Order per publisher within each connection.
    for label, batch in (("before", before), ("after", after)):
        last = defaultdict(lambda: -1)
        for m in batch:
            i, seq = parse(m)
            if not m.dup:
                assert seq > last[i], f"{label}: publisher {i} seq {seq} after {last[i]} (not a DUP)"
            last[i] = max(last[i], seq)
    # Before the crash: each message once.
    assert len({parse(m) for m in before}) == len(before), "duplicates before the crash"
    # After: a copy of a message already received must carry DUP=1.
    seen = {parse(m) for m in before}
    bad = []
    for m in after:
        key = parse(m)
        if key in seen and not m.dup:
            bad.append(key)
        seen.add(key)
    dups = sum(1 for m in after if m.dup)
    print(f"received {len(before)} before the crash, {len(after)} after ({dups} with DUP=1)")
    assert not bad, (
        f"{len(bad)} messages delivered again after the restart with DUP=0 "
        f"(first {bad[:5]}); a re-delivery MUST set DUP=1 [MQTT-3.3.1-1]"
    )


# ---------------------------------------------------------------------------
# retained messages, subscriptions, QoS 2 state, session expiry


@pytest.mark.parametrize("mode", MODES)
def test_retained_messages_survive(make_broker, client_factory, mode):
    broker = make_broker(persistence=True)
    base = uid("ret")
    p = client_factory.paho(broker, version=V5)
    props = {"UserProperty": [("k", "v")], "ContentType": "text/plain"}
    assert p.publish(f"{base}/a", b"A", qos=1, retain=True, props=props) in (0, 0x10)
    p.publish(f"{base}/b", b"B", qos=1, retain=True)
    p.publish(f"{base}/b", b"", qos=1, retain=True)  # cleared [MQTT-3.3.1-10]
    p.publish(f"{base}/c", b"C1", qos=1, retain=True)
    p.publish(f"{base}/c", b"C2", qos=2, retain=True)  # replaced [MQTT-3.3.1-5]
    p.close()
    crash(broker, mode)
    s = client_factory.paho(broker, version=V5)
    s.subscribe(f"{base}/#", 2)
    got = sorted(s.collect(1.5), key=lambda m: m.topic)
    assert [(m.topic, m.payload, m.retain) for m in got] == [
        (f"{base}/a", b"A", True), (f"{base}/c", b"C2", True)]
    assert got[0].qos == 1 and got[1].qos == 2
    assert got[0].user_props == [("k", "v")]
    assert got[0].prop("ContentType") == "text/plain"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_persistent_subscriptions_survive(make_broker, client_factory, version, mode):
    broker = make_broker(persistence=True)
    base = uid("subs")
    cid = uid("durable")
    s = client_factory.paho(broker, cid, **persistent(version))
    if version == V5:
        assert s.subscribe(f"{base}/one", 1, sub_id=7) == [1]
    else:
        assert s.subscribe(f"{base}/one", 1) == [1]
    assert s.subscribe(f"{base}/two/+", 0) == [0]
    assert s.subscribe(f"{base}/gone", 1) == [1]
    s.unsubscribe(f"{base}/gone")
    s.disconnect()
    time.sleep(0.2)  # the DISCONNECT itself promises nothing; let it be processed
    crash(broker, mode)

    p = client_factory.paho(broker, version=V5)
    p.publish(f"{base}/one", b"queued", qos=1)
    p.publish(f"{base}/gone", b"not-for-you", qos=1)
    s2 = client_factory.paho(broker, cid, **persistent(version))
    assert s2.session_present is True  # [MQTT-3.2.2-2]
    m = s2.expect_message()
    assert (m.topic, m.payload, m.qos) == (f"{base}/one", b"queued", 1)
    if version == V5:
        assert m.sub_ids == [7]  # the subscription identifier is part of the subscription
    p.publish(f"{base}/two/x", b"live", qos=1)
    m = s2.expect_message()
    assert (m.topic, m.payload, m.qos) == (f"{base}/two/x", b"live", 0)
    s2.expect_no_message(QUIET)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_incoming_qos2_state_survives(make_broker, client_factory, version, mode):
    """PUBLISH QoS 2 -> PUBREC, broker dies before PUBREL.  The client resends the PUBLISH
    (DUP=1, same id) on the resumed session: PUBREC again, no second delivery
    [MQTT-4.3.3-9/10 (5.0) / 4.3.3-2 (3.1.1)]; then PUBREL -> PUBCOMP (the id is known, so
    not 0x92)."""
    broker = make_broker(persistence=True)
    topic = uid("q2")
    cid = uid("q2pub")
    sub = client_factory.paho(broker, version=V5)
    sub.subscribe(topic, 2)
    r = client_factory.raw(broker, version)
    assert r.connect(cid, **raw_persistent(version)).rc == 0
    r.publish(topic, b"once", qos=2, pid=7)
    rec = r.expect(R.PUBREC)
    assert rec.pid == 7 and (rec.rc or 0) == 0
    # Ironbridge delivers on PUBLISH (Method B of 4.3.3); mosquitto waits for PUBREL.
    if is_mosquitto():
        early = sub.collect(0.5)
    else:
        early = [sub.expect_message()]
        assert [m.payload for m in early] == [b"once"]
    crash(broker, mode)
    r.expect_closed()

    sub2 = client_factory.paho(broker, version=V5)
    sub2.subscribe(topic, 2)
    r2 = client_factory.raw(broker, version)
    ack = r2.connect(cid, **raw_persistent(version))
    assert ack.rc == 0 and ack.session_present
    r2.publish(topic, b"once", qos=2, pid=7, dup=True)
    rec = r2.expect(R.PUBREC)
    assert rec.pid == 7 and (rec.rc or 0) == 0
    r2.send(R.pubrel(7, version=version))
    comp = r2.expect(R.PUBCOMP)
    assert comp.pid == 7
    if version == V5:
        assert comp.rc == 0, f"PUBCOMP 0x{comp.rc:02x}: the QoS 2 packet id was forgotten"
    late = sub2.collect(0.6 if early else 3.0)
    assert len(early) + len(late) == 1, f"delivered {len(early)} time(s) before, {len(late)} after the restart"
    assert [m.payload for m in early + late] == [b"once"]


@pytest.mark.parametrize("mode", MODES)
def test_outgoing_qos2_pubrel_survives(make_broker, client_factory, mode):
    """The broker sent PUBLISH QoS 2 to a subscriber, got PUBREC, sent PUBREL; it dies
    before PUBCOMP.  On resume it must resend PUBREL (not the PUBLISH) [MQTT-4.4.0-1]."""
    broker = make_broker(persistence=True)
    topic = uid("q2out")
    cid = uid("q2sub")
    r = client_factory.raw(broker, V5)
    assert r.connect(cid, **raw_persistent(V5)).rc == 0
    assert r.subscribe([(topic, 2)]).rcs == [2]
    client_factory.paho(broker, version=V5).publish(topic, b"x", qos=2)
    pub = r.expect(R.PUBLISH)
    r.send(R.pubrec(pub.pid, version=V5))
    rel = r.expect(R.PUBREL)
    assert rel.pid == pub.pid
    time.sleep(0.3)  # PUBREC promises nothing durable; give the store a moment
    crash(broker, mode)
    r.expect_closed()
    r2 = client_factory.raw(broker, V5)
    ack = r2.connect(cid, **raw_persistent(V5))
    assert ack.session_present
    p = r2.recv_packet(3.0)
    assert p.type == R.PUBREL and p.pid == pub.pid, p
    r2.send(R.pubcomp(pub.pid, version=V5))
    r2.expect_nothing(QUIET)


@pytest.mark.parametrize("mode", [
    MODES[0],
    pytest.param("sigterm", id="sigterm", marks=xfail_mosquitto(
        "mosquitto 2.0.11 restores a persisted v5 session without its expiry countdown: a session "
        "with Session Expiry Interval 2 s is still present 8 s after a restart; 3.1.2.11.2: the "
        "session ends when the interval has passed after the Network Connection was closed")),
])
def test_session_expiry_counts_across_restart(make_broker, client_factory, mode):
    """A session with expiry 2 s must be gone when its client comes back more than 2 s
    after the restart; a long-lived one is still there [MQTT-3.1.2-23]."""
    broker = make_broker(persistence=True)
    short, long_ = uid("short"), uid("long")
    for cid, exp in ((short, 2), (long_, 300)):
        c = client_factory.paho(broker, cid, version=V5, clean=False, session_expiry=exp)
        c.subscribe(uid("t"), 1)
        c.disconnect()
    time.sleep(0.2)
    crash(broker, mode)
    time.sleep(2.5)
    c = client_factory.paho(broker, short, version=V5, clean=False, session_expiry=2)
    assert c.session_present is False, "session with 2 s expiry survived restart + 2.5 s"
    c = client_factory.paho(broker, long_, version=V5, clean=False, session_expiry=300)
    assert c.session_present is True


@pytest.mark.parametrize("mode", MODES)
def test_clean_session_state_is_not_resurrected(make_broker, client_factory, mode):
    """A session that ended (3.1.1 clean session / v5 expiry 0, or discarded by clean start)
    must not come back after a restart."""
    broker = make_broker(persistence=True)
    cid = uid("ended")
    c = client_factory.paho(broker, cid, **persistent(V311))
    c.subscribe(uid("t"), 1)
    c.disconnect()
    c = client_factory.paho(broker, cid, version=V311, clean=True)  # discards the session
    c.disconnect()
    time.sleep(0.2)
    crash(broker, mode)
    c = client_factory.paho(broker, cid, **persistent(V311))
    assert c.session_present is False


@skip_mosquitto("closes the connections without DISCONNECT at SIGTERM; DISCONNECT 0x8B is "
                "optional (5.0 section 4.13: the Server MAY send DISCONNECT)")
def test_sigterm_tells_v5_clients_server_shutting_down(make_broker, client_factory):
    broker = make_broker(persistence=True)
    c = client_factory.paho(broker, version=V5)
    broker.stop()
    # 5.0 section 3.14.2.1: 0x8B Server shutting down (sent by both brokers)
    assert c.wait_disconnected(10) == 0x8B


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_unacknowledged_messages_resent_with_original_ids(make_broker, client_factory, version, mode):
    """A subscriber on a resumed session holds a full window (10) of QoS 1 messages
    unacknowledged when the broker dies.  On the next resume the broker MUST re-send
    exactly those, with their original packet identifiers [MQTT-4.4.0-1] and DUP=1
    [MQTT-3.3.1-1].  Five rounds, so that a race between sending and storing shows."""
    broker = make_broker(persistence=True, max_inflight_messages=10)
    topic, cid = uid("win"), uid("win-sub")
    rv_ = R.MQTT5 if version == V5 else R.MQTT311
    r = client_factory.raw(broker, rv_)
    assert r.connect(cid, **raw_persistent(version)).rc == 0
    assert r.subscribe([(topic, 1)]).rcs == [1]
    r.disconnect()
    pub = client_factory.paho(broker, version=V5)
    problems = []
    for rnd in range(5):
        if rnd:
            pub = client_factory.paho(broker, version=V5)
        for i in range(10):
            pub.publish(topic, f"{rnd}:{i}", qos=1)
        pub.close()
        r = client_factory.raw(broker, rv_)
        assert r.connect(cid, **raw_persistent(version)).session_present
        window = [r.recv_until(R.PUBLISH) for _ in range(10)]  # not acknowledged
        assert [p.payload for p in window] == [f"{rnd}:{i}".encode() for i in range(10)]
        crash(broker, mode)
        r.expect_closed()
        r = client_factory.raw(broker, rv_)
        assert r.connect(cid, **raw_persistent(version)).session_present
        resent = [r.recv_until(R.PUBLISH) for _ in range(10)]
        expected = [(p.pid, p.payload, True) for p in window]
        got = [(p.pid, p.payload, p.dup) for p in resent]
        if got != expected:
            problems.append(f"round {rnd}: " + ", ".join(
                f"{g[1].decode()} pid {e[0]}->{g[0]} dup={int(g[2])}" for g, e in zip(got, expected) if g != e))
        for p in resent:
            r.puback(p.pid)
        r.expect_nothing(0.2)
        r.disconnect()
    assert not problems, "re-sent with DUP=0 / another packet id: " + "; ".join(problems)
