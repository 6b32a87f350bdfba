"""The store limit during an upstream outage (docs/hub.md "Upstream",
hub.upstream.full_policy): a child hub with a small hub.max_store_bytes whose
parent is stopped; a producer module publishes numbered QoS 1 messages at two
priorities (routes into $upstream at priorities 0 and 5) beyond the limit.

  refuse       the publisher stops getting PUBACKs (disconnected), the log
               says why, the metric counts, the hub stays up; when the link
               returns and drains the producer publishes again; the parent
               gets every message the child acknowledged and none it did not.
  drop_oldest  every publish is acknowledged; the oldest low-priority
               messages are dropped, counted exactly (acknowledged - delivered
               = perch_hub_dropped_total{reason="upstream_dropped_oldest"}),
               every high-priority one arrives, nothing else is lost after the
               link returns, and the store passes PRAGMA integrity_check;
               with the link up but stalled, messages in flight are never
               dropped and the link's window accounting survives."""
import json
import os
import re
import sqlite3
import time

import pytest

import hubtest as h
from test_upstream import DEV, Pair, collect

pytestmark = pytest.mark.perch_only("the upstream link is Perch's")

ROUTES = {"hi": {"route": "FROM /messages/* WHERE prio = 'high' INTO $upstream", "priority": 0},
          "lo": {"route": "FROM /messages/* WHERE prio = 'low' INTO $upstream", "priority": 5}}
LIMIT = 65536  # the smallest hub.max_store_bytes
PAD = "x" * 1500  # ~1.7 kB a message: ~38 fit


def publish(p, n, prio):
    """One numbered QoS 1 publish; True when acknowledged, False when the hub
    closed the connection instead (bounded: 10 s)."""
    topic = f"devices/{DEV}/modules/producer/messages/events/%24.on=o1&n={n}&prio={prio}"
    try:
        p.send(h.publish_packet(topic, json.dumps({"n": n, "pad": PAD}).encode(), 1,
                                pid=p.pid()))
        while True:
            pkt = p.recv(10)
            if pkt is None:
                return False
            if pkt.type == h.PUBACK:
                return True
    except (h.Closed, OSError):
        return False


def full_pair(make_broker, workdir, policy):
    pair = Pair(make_broker, workdir, child_routes=ROUTES,
                child_args=["--set", f"hub.max_store_bytes={LIMIT}",
                            "--set", f"hub.upstream.full_policy={policy}"])
    pair.wait_up()
    pair.parent.stop()
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(), "perch_hub_upstream_connected") == 0,
                 15, what="link down")
    return pair


def drained(pair):
    """The $upstream queues are empty and their deletes written (space frees
    when they are committed, a moment after the parent's PUBACKs)."""
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(),
                                      "perch_hub_upstream_queue_messages") == 0, 30,
                 what="the child's $upstream queues drained\n" + pair.child.log_tail(10))
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(), "perch_hub_store_bytes") == 0, 10,
                 what="the store empty\n" + pair.child.log_tail(10))


def integrity(broker):
    """PRAGMA integrity_check of the store of a stopped hub."""
    dbs = [f for f in os.listdir(broker.data_dir) if f.endswith(".db")]
    assert dbs, os.listdir(broker.data_dir)
    for f in dbs:
        con = sqlite3.connect(os.path.join(broker.data_dir, f))
        try:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f
        finally:
            con.close()
    return dbs


def test_refuse_at_the_limit_then_recover(make_broker, workdir):
    pair = full_pair(make_broker, workdir, "refuse")
    mark = pair.child.log_mark()
    prod = pair.producer()
    acked, refused = [], None
    for i in range(200):  # 200 x 1.7 kB >> 64 KiB
        n, prio = (1000 + i, "high") if i % 4 == 0 else (i, "low")
        if not publish(prod, n, prio):
            refused = n
            break
        acked.append(n)
    print(f"\n[refuse] {len(acked)} acknowledged, refused at {refused}")
    assert refused is not None, "the hub acknowledged 340 kB into a 64 KiB store"
    assert len(acked) > 10
    assert prod.closed or prod.is_closed_within(10), "the publisher was not disconnected"
    assert pair.child.alive(), pair.child.log_tail(20)
    line = pair.child.wait_log(r"store full .* upstream link is down or draining: queue u/\d "
                               r"refused a message; the publisher is not acknowledged "
                               r"\(hub.upstream.full_policy refuse\)", mark, timeout=5)
    assert line, pair.child.log_since(mark)[-2000:]
    print("[refuse] log:", line)
    m = pair.child.metrics()
    assert h.metric_sum(m, "perch_hub_dropped_total", reason="store_full") >= 1
    assert h.metric_sum(m, "perch_hub_dropped_total", reason="upstream_dropped_oldest") == 0
    assert h.metric_sum(m, "perch_hub_upstream_queue_messages") == len(acked)
    # Still full: a new connection is refused the same way.
    prod = pair.producer()
    assert not publish(prod, 5000, "low")
    # The link returns and drains; then the producer publishes again.
    pair.parent.start()
    cons = pair.consumer()
    got, _ = collect(cons, set(acked), timeout=60)
    drained(pair)
    prod = pair.producer()
    more = list(range(2000, 2020))
    for n in more:
        assert publish(prod, n, "low"), pair.child.log_tail(10)
    got2, _ = collect(cons, set(more), timeout=30)
    got += got2 + [json.loads(p.payload)["n"] for p in cons.quiet(0.5)]
    # Every acknowledged message, none that was not.
    assert set(got) == set(acked) | set(more), (sorted(set(acked) | set(more) - set(got)),
                                                sorted(set(got) - set(acked) - set(more)))
    pair.child.stop()
    integrity(pair.child)


def test_drop_oldest_low_priority_first(make_broker, workdir):
    pair = full_pair(make_broker, workdir, "drop_oldest")
    mark = pair.child.log_mark()
    prod = pair.producer()
    low, high = [], []
    t0 = time.monotonic()
    for i in range(200):  # 200 x 1.7 kB >> 64 KiB: every one acknowledged
        if i % 10 == 0:
            n, prio, into = 1000 + i, "high", high
        else:
            n, prio, into = i, "low", low
        assert publish(prod, n, prio), f"{n} not acknowledged\n" + pair.child.log_tail(10)
        into.append(n)
    assert pair.child.alive()
    m = pair.child.metrics()
    dropped = h.metric_sum(m, "perch_hub_dropped_total", reason="upstream_dropped_oldest")
    queued = h.metric_sum(m, "perch_hub_upstream_queue_messages")
    print(f"\n[drop_oldest] {len(low) + len(high)} acknowledged ({len(high)} high), "
          f"{dropped:.0f} dropped, {queued:.0f} queued")
    assert dropped > 0
    assert queued + dropped == len(low) + len(high)
    assert h.metric_sum(m, "perch_hub_upstream_queue_messages", priority="0") == len(high)
    assert h.metric_sum(m, "perch_hub_dropped_total", reason="store_full") in (None, 0)
    line = pair.child.wait_log(r"store full .* dropped the \d+ oldest queued \$upstream "
                               r"messages", mark, timeout=5)
    assert line, pair.child.log_since(mark)[-2000:]
    print("[drop_oldest] log:", line)
    # Logged at most once a second, not once per drop.
    lines = len(re.findall(r"dropped the \d+ oldest", pair.child.log_since(mark)))
    elapsed = time.monotonic() - t0
    print(f"[drop_oldest] {lines} log lines for {dropped:.0f} drops in {elapsed:.1f} s")
    assert lines <= int(elapsed) + 2
    # The oldest low-priority ones went: the survivors are the newest lows.
    d = int(dropped)
    want = set(low[d:]) | set(high)
    pair.parent.start()
    cons = pair.consumer()
    got, _ = collect(cons, want, timeout=60)
    drained(pair)
    got += [json.loads(p.payload)["n"] for p in cons.quiet(0.5)]
    assert set(got) == want, (sorted(want - set(got)), sorted(set(got) - want))
    assert len(set(low) | set(high)) - len(set(got)) == d  # acknowledged - delivered
    # After the link returned nothing else is lost: one at a time (a burst
    # could fill the 64 KiB store with messages in flight, which are never
    # dropped: then it is refused), each delivered before the next.
    prod = pair.producer()
    for n in range(3000, 3050):
        assert publish(prod, n, "low"), pair.child.log_tail(10)
        got2, _ = collect(cons, {n}, timeout=30)
        assert n in got2, pair.child.log_tail(10)
    assert h.metric_sum(pair.child.metrics(), "perch_hub_dropped_total",
                        reason="upstream_dropped_oldest") == dropped
    pair.child.stop()
    integrity(pair.child)


def test_drop_oldest_never_drops_higher_priority(make_broker, workdir):
    """When only higher-priority messages fill the store, a low-priority one
    is refused (no PUBACK), never makes room by dropping them."""
    pair = full_pair(make_broker, workdir, "drop_oldest")
    mark = pair.child.log_mark()
    prod = pair.producer()
    high = []
    for i in range(200):
        n = 1000 + i
        if not publish(prod, n, "high"):
            break  # nothing of priority 0 or lower that is older... only its own queue
        high.append(n)
    # Priority 0 drops its own oldest: every high publish was acknowledged.
    assert len(high) == 200
    prod = pair.producer()
    assert not publish(prod, 1, "low"), "a low-priority message made room among high ones"
    line = pair.child.wait_log(r"store full .* queue u/5 refused a message; the publisher is "
                               r"not acknowledged \(hub.upstream.full_policy drop_oldest: "
                               r"nothing of this priority or lower left to drop\)", mark,
                               timeout=5)
    assert line, pair.child.log_since(mark)[-2000:]
    m = pair.child.metrics()
    assert h.metric_sum(m, "perch_hub_upstream_queue_messages", priority="5") in (None, 0)
    dropped = h.metric_sum(m, "perch_hub_dropped_total", reason="upstream_dropped_oldest")
    assert dropped + h.metric_sum(m, "perch_hub_upstream_queue_messages") == 200
    assert pair.child.alive()


def test_drop_oldest_while_draining_spares_in_flight(make_broker, workdir):
    """The link is up but stalled (faultproxy): the 10 messages the child
    handed out (hub.upstream.window 10) wait for PUBACKs while the producer
    fills the store. Drops take the oldest of the others, never one in
    flight, so the window's accounting holds: when the stall ends everything
    in flight is acknowledged, the queues drain, and acknowledged - delivered
    is exactly the drop count."""
    pair = Pair(make_broker, workdir, child_routes=ROUTES, proxy=True,
                child_args=["--set", f"hub.max_store_bytes={LIMIT}",
                            "--set", "hub.upstream.full_policy=drop_oldest",
                            "--set", "hub.upstream.window=10"])
    fp = pair.proxy
    try:
        pair.wait_up()
        cons = pair.consumer()
        fp.cmd("stall")
        prod = pair.producer()
        acked = []
        for n in range(150):
            assert publish(prod, n, "low"), f"{n} refused\n" + pair.child.log_tail(10)
            acked.append(n)
        m = pair.child.metrics()
        dropped = h.metric_sum(m, "perch_hub_dropped_total", reason="upstream_dropped_oldest")
        inflight = h.metric_sum(m, "perch_hub_upstream_inflight")
        print(f"\n[draining] {len(acked)} of 150 acknowledged, {dropped:.0f} dropped, "
              f"{inflight:.0f} in flight at the stall")
        assert pair.child.alive()
        assert inflight == 10 and dropped > 0
        fp.cmd("pass")
        got, _ = collect(cons, set(acked[-5:]), timeout=60)
        drained(pair)
        got += [json.loads(p.payload)["n"] for p in cons.quiet(0.5)]
        h.wait_until(lambda: h.metric_sum(pair.child.metrics(),
                                          "perch_hub_upstream_inflight") == 0, 10,
                     what="nothing in flight")
        assert set(got) <= set(acked), sorted(set(got) - set(acked))
        dropped = h.metric_sum(pair.child.metrics(), "perch_hub_dropped_total",
                               reason="upstream_dropped_oldest")
        assert len(acked) - len(set(got)) == dropped, (len(acked), len(set(got)), dropped)
        # The dropped ones are the oldest that were not in flight: what arrived
        # is the 10 in flight and the newest.
        assert set(got) == set(acked[:10]) | set(acked[10 + int(dropped):]), sorted(set(got))
    finally:
        fp.stop()
    pair.child.stop()
    integrity(pair.child)


@pytest.mark.parametrize("policy", ["refuse", "drop_oldest"])
def test_upstream_queue_at_its_own_limit(make_broker, workdir, policy):
    """An $upstream queue at hub.max_queued_messages (20) before the store is
    full: refuse refuses (logged), drop_oldest drops that queue's oldest."""
    pair = Pair(make_broker, workdir, child_routes=ROUTES,
                child_args=["--set", "hub.max_queued_messages=20",
                            "--set", f"hub.upstream.full_policy={policy}"])
    pair.wait_up()
    pair.parent.stop()
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(), "perch_hub_upstream_connected") == 0,
                 15, what="link down")
    mark = pair.child.log_mark()
    prod = pair.producer()
    acked = []
    for n in range(50):
        if not publish(prod, n, "low"):
            break
        acked.append(n)
    m = pair.child.metrics()
    assert h.metric_sum(m, "perch_hub_upstream_queue_messages", priority="5") == 20
    if policy == "refuse":
        assert acked == list(range(20))
        assert pair.child.wait_log(r"queue u/5 is at hub.max_queued_messages or "
                                   r"hub.max_queued_bytes .* the publisher is not acknowledged "
                                   r"\(hub.upstream.full_policy refuse\)", mark, timeout=5), \
            pair.child.log_since(mark)[-2000:]
        want = set(acked)
    else:
        assert acked == list(range(50))
        assert h.metric_sum(m, "perch_hub_dropped_total", reason="upstream_dropped_oldest") == 30
        assert pair.child.wait_log(r"dropped the \d+ oldest queued", mark, timeout=5)
        want = set(range(30, 50))
    pair.parent.start()
    cons = pair.consumer()
    got, _ = collect(cons, want, timeout=30)
    got += [json.loads(p.payload)["n"] for p in cons.quiet(0.5)]
    assert set(got) == want, sorted(set(got) ^ want)
