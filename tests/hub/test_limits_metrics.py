"""Configured limits (hub: section of --config; mapped onto mosquitto's options where
it has one) and the Prometheus metrics endpoint."""
import re
import time

import pytest

import hubtest as h


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_max_packet_size(make_broker, transport):
    """max_packet_size 1024: a 2 kB PUBLISH closes that connection; 500 B is fine; others unaffected."""
    b = make_broker(limits={"max_packet_size": 1024})
    w = h.Witness(b)
    c = h.raw_client(b, transport, client_id="mps")
    c.publish("mps/ok", b"x" * 500, qos=1)
    mark = b.log_mark()
    c.send(h.publish_packet("mps/big", b"x" * 2048, 1, pid=9))
    assert c.is_closed_within(5), "an oversized packet did not close the connection"
    if h.is_perch():
        assert b.wait_log(r"closed.*(size|large|big|limit|max)", mark), b.log_since(mark)[-1500:]
    w.check()


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_max_connections(make_broker, transport):
    """max_connections 5 (3 over TCP, 2 over WebSocket): the 6th connection, over
    either, is refused (closed or CONNACK 3); after one leaves, a new one is
    accepted."""
    b = make_broker(limits={"max_connections": 5}, listeners=("mqtt", "ws"))
    cs = [h.raw_client(b, "tcp" if i < 3 else "ws", client_id=f"mc{i}") for i in range(5)]
    refused = False
    try:
        extra = h.Raw(b.ports["mqtt" if transport == "tcp" else "ws"], transport)
        extra.send(h.connect_packet("mc-extra"))
        p = extra.recv(5)
        refused = p is None or (p.type == h.CONNACK and p.rc != 0) or extra.is_closed_within(3)
    except (h.Closed, OSError):
        refused = True
    assert refused, "a 6th connection was accepted with max_connections 5"
    cs[0].disconnect()
    time.sleep(0.3)
    ok = h.raw_client(b, "tcp", client_id="mc-late")
    ok.publish("mc/t", b"x", qos=1)


def test_max_inflight(make_broker):
    """max_inflight 5: a QoS 1 subscriber that does not ack has exactly 5 in flight;
    each PUBACK releases one more; all arrive in order."""
    b = make_broker(limits={"max_inflight": 5})
    s = h.raw_client(b, "tcp", client_id="mi-sub")
    s.subscribe([("mi/t", 1)])
    p = h.raw_client(b, "tcp", client_id="mi-pub")
    for i in range(12):
        p.publish("mi/t", f"{i}".encode(), qos=1)
    first = s.messages(12, timeout=1.5, ack=False)
    assert len(first) == 5, f"{len(first)} in flight with max_inflight 5"
    got = list(first)
    for m in first:
        s.send(h.puback_packet(m.pid))
    got += s.messages(7, timeout=5)
    assert [int(m.payload) for m in got] == list(range(12))


def test_max_queued_messages(make_broker):
    """max_queued_messages 10: an offline persistent session gets at most 10 (+ the
    inflight window) of 30 queued messages; the publisher is still acknowledged; Perch
    counts the drops in perch_hub_dropped_total."""
    b = make_broker(limits={"max_queued_messages": 10, "max_inflight": 5})
    s = h.raw_client(b, "tcp", client_id="mq-sub", clean=False)
    s.subscribe([("mq/t", 1)])
    s.disconnect()
    p = h.raw_client(b, "tcp", client_id="mq-pub")
    for i in range(30):
        p.publish("mq/t", f"{i}".encode(), qos=1)
    s = h.raw_client(b, "tcp", client_id="mq-sub", clean=False)
    got = s.messages(30, timeout=3)
    assert 1 <= len(got) <= 15, f"got {len(got)} of 30 with max_queued_messages 10"
    nums = [int(m.payload) for m in got]
    assert nums == sorted(nums)
    if h.is_perch():
        d = h.metric_sum(b.metrics(), "perch_hub_dropped_total", reason="queue_full")
        assert d and d >= 30 - len(got), f"dropped_total{{reason=queue_full}} {d}, want >= {30 - len(got)}"


def test_max_queued_bytes(make_broker):
    """max_queued_bytes 8 KiB: an offline persistent session keeps about 8 KiB
    of 40 x 1 KiB messages (+ the inflight window); the publisher is still
    acknowledged; what is kept is in order; Perch counts the rest as
    queue_full drops."""
    b = make_broker(limits={"max_queued_bytes": 8192, "max_inflight": 2})
    s = h.raw_client(b, "tcp", client_id="mqb-sub", clean=False)
    s.subscribe([("mqb/t", 1)])
    s.disconnect()
    p = h.raw_client(b, "tcp", client_id="mqb-pub")
    for i in range(40):
        p.publish("mqb/t", b"%04d" % i + b"q" * 1020, qos=1)  # acknowledged: publish() waits for PUBACK
    s = h.raw_client(b, "tcp", client_id="mqb-sub", clean=False)
    got = s.messages(40, timeout=3)
    assert 4 <= len(got) <= 12, f"got {len(got)} x 1 KiB of 40 with max_queued_bytes 8 KiB"
    nums = [int(m.payload[:4]) for m in got]
    assert nums == sorted(nums)
    if h.is_perch():
        d = h.metric_sum(b.metrics(), "perch_hub_dropped_total", reason="queue_full")
        assert d and d >= 40 - len(got), f"dropped_total{{reason=queue_full}} {d}, want >= {40 - len(got)}"


@pytest.mark.perch_only("mosquitto has no per-client subscription limit")
def test_max_subscriptions(make_broker):
    """max_subscriptions 3: a 4th filter is refused (SUBACK 0x80) or the client closed."""
    b = make_broker(limits={"max_subscriptions": 3})
    c = h.raw_client(b, "tcp", client_id="ms")
    assert c.subscribe([("a", 1), ("b", 1), ("c", 1)]) == [1, 1, 1]
    try:
        g = c.subscribe([("d", 1)])
        assert g == [0x80], f"4th subscription granted {g}"
    except (h.Closed, AssertionError) as e:
        if not c.closed:
            raise
    w = h.Witness(b)
    w.check()


REQUIRED = ["perch_hub_clients_connected", "perch_hub_messages_received_total",
            "perch_hub_messages_sent_total", "perch_hub_bytes_received_total",
            "perch_hub_bytes_sent_total", "perch_hub_queue_messages", "perch_hub_queue_bytes",
            "perch_hub_store_bytes", "perch_hub_commit_seconds", "perch_hub_dropped_total",
            "perch_hub_protocol_errors_total"]


@pytest.mark.perch_only("Perch's /metrics")
def test_metrics(broker):
    """/metrics is Prometheus text with every required family, and the counters move."""
    text = broker.metrics_text()
    for name in REQUIRED:
        assert re.search(r"^(# (TYPE|HELP) )?%s[\s{_]" % name, text, re.M), f"{name} missing"
    assert re.search(r"^# TYPE perch_hub_commit_seconds histogram", text, re.M)
    m0 = h.parse_metrics(text)
    off = h.raw_client(broker, "tcp", client_id="met-offline", clean=False)  # forces commits
    off.subscribe([("met/#", 1)])
    off.disconnect()
    s = h.raw_client(broker, "tcp", client_id="met-sub")
    s.subscribe([("met/#", 1)])
    p = h.raw_client(broker, "ws", client_id="met-pub")
    for i in range(5):
        p.publish("met/0", b"zero", qos=0)
        p.publish("met/1", b"one", qos=1)
    assert len(s.messages(10)) == 10
    p.sync()
    m1 = broker.metrics()
    g = lambda m, n, **l: h.metric_sum(m, n, **l) or 0  # noqa: E731
    assert g(m1, "perch_hub_clients_connected") >= 2
    assert g(m1, "perch_hub_messages_received_total", qos="0") - g(m0, "perch_hub_messages_received_total", qos="0") >= 5
    assert g(m1, "perch_hub_messages_received_total", qos="1") - g(m0, "perch_hub_messages_received_total", qos="1") >= 5
    for q in ("0", "1"):
        assert g(m1, "perch_hub_messages_sent_total", qos=q) - g(m0, "perch_hub_messages_sent_total", qos=q) >= 5, \
            f"messages_sent_total{{qos={q}}} did not count the deliveries"
    assert g(m1, "perch_hub_bytes_received_total") > g(m0, "perch_hub_bytes_received_total")
    assert g(m1, "perch_hub_bytes_sent_total") > g(m0, "perch_hub_bytes_sent_total")
    assert g(m1, "perch_hub_queue_messages") >= 5, "the offline session's queue is not counted"
    assert g(m1, "perch_hub_queue_bytes") > 0
    assert g(m1, "perch_hub_store_bytes") > 0
    cnt = g(m1, "perch_hub_commit_seconds_count")
    assert cnt >= 1, "no commit counted for QoS 1 messages queued for an offline session"
    assert "perch_hub_commit_seconds_sum" in m1
    buckets = sorted(((float(re.search(r'le="([^"]+)"', k).group(1)), v) for k, v in m1.items()
                      if k.startswith("perch_hub_commit_seconds_bucket")), key=lambda x: x[0])
    assert buckets and buckets[-1][0] == float("inf") and buckets[-1][1] == cnt, buckets
    assert all(a[1] <= b_[1] for a, b_ in zip(buckets, buckets[1:])), "histogram buckets not cumulative"
