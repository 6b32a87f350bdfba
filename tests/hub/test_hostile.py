"""Malformed and hostile input over raw sockets. For each: the offending connection is
closed, the hub logs one line with `closed` and the reason (Perch only: not checked
against mosquitto), and a well-behaved client connected throughout still gets its
messages. Memory stays flat under big size claims and a client that never reads."""
import os
import re
import socket
import struct
import time

import pytest

import hubtest as h

CLOSE_WAIT = 5

# Verified by running this suite against Debian's mosquitto 2.0.11: it does not close
# the connection in these cases. Perch must; against mosquitto they are reported n/a.
MOSQUITTO_LENIENT = {
    "suback-from-client", "unsuback-from-client", "pingresp-from-client",
    "connect-268MB-default-limits", "text-frame", "unmasked-frame", "never-connect",
}


def lenient_in_mosquitto(case):
    if not h.is_perch() and case in MOSQUITTO_LENIENT:
        pytest.skip(f"n/a for mosquitto: mosquitto 2.0.11 keeps the connection open ({case}); Perch must close it")


def assert_close_logged(b, mark, reason_rx):
    """Perch: a log line after mark containing 'closed' and matching reason_rx."""
    if not h.is_perch():
        return  # log reasons: n/a for mosquitto
    line = b.wait_log(r"closed.*(" + reason_rx + r")|(" + reason_rx + r").*closed", mark, timeout=5)
    assert line, (f"no log line with 'closed' and a reason matching /{reason_rx}/ after the violation; "
                  f"log since:\n{b.log_since(mark)[-2000:]}")


def hostile_conn(b, transport="tcp", connect=False):
    c = h.Raw(b.ports["mqtt" if transport == "tcp" else "ws"], transport)
    if connect:
        ack = c.connect(f"hostile-{time.monotonic_ns()}")
        assert ack.rc == 0
    return c


def assert_one_close_line(b, mark, c, reason_rx):
    """Perch: exactly one log line about c's close (found by its port), giving
    a reason matching reason_rx."""
    if not h.is_perch():
        return
    port = c.sock.getsockname()[1]
    rx = re.compile(r"closed %s:%d\b" % (re.escape(h.HOST), port))
    h.wait_until(lambda: any(rx.search(x) for x in b.log_since(mark).splitlines()), 5,
                 what=f"the close line of port {port}")
    lines = [x for x in b.log_since(mark).splitlines() if rx.search(x)]
    assert len(lines) == 1, f"want one close line for port {port}, got {lines}"
    assert re.search(reason_rx, lines[0], re.I), f"close line gives no reason matching /{reason_rx}/: {lines[0]}"


def run_case(b, transport, payload, reason_rx, connect=False, closes_within=CLOSE_WAIT):
    w = h.Witness(b)
    mark = b.log_mark()
    c = hostile_conn(b, transport, connect)
    try:
        c.send_raw(payload if transport == "tcp" else c.ws_frame(payload))
    except OSError:
        pass
    assert c.is_closed_within(closes_within), "the hub did not close the offending connection"
    assert_close_logged(b, mark, reason_rx)
    assert_one_close_line(b, mark, c, reason_rx)
    assert b.alive(), "the hub died"
    w.check()


TRANSPORTS = ["tcp", "ws"]

# (name, bytes, reason regex) sent as the first packet
FIRST_PACKET = [
    ("remaining-length-5-bytes", b"\x10\xff\xff\xff\xff\x7f" + b"\x00" * 10, r"remaining|length|malformed|varint|protocol"),
    ("publish-first-claims-256MB", b"\x30\xff\xff\xff\x7f" + b"\x00\x03a/b" + b"x" * 100,
     r"connect|first|size|large|big|limit|protocol|unexpected"),
    ("subscribe-first-claims-2MB", b"\x82\x80\x80\x80\x01" + b"\x00\x01" * 50, r"connect|first|size|large|big|limit|protocol|unexpected"),
    ("pingreq-first", b"\xc0\x00", r"connect|first|protocol|unexpected"),
    ("reserved-type-0", b"\x00\x00", r"type|reserved|invalid|connect|protocol|unexpected"),
    ("reserved-type-15", b"\xf0\x00", r"type|reserved|invalid|connect|protocol|unexpected"),
    ("connect-bad-protocol-name", h.connect_packet("x", proto_name="MQIsdpX"), r"protocol|name|version|invalid"),
    ("connect-reserved-flag", bytes([0x10]) + h.varint(13) + h.mstr("MQTT") + bytes([4, 0x03]) + b"\x00\x3c" + h.mstr("x"),
     r"reserved|flag|invalid|protocol|malformed"),
    ("connect-invalid-utf8-client-id", h.connect_packet(b"\xff\xfe\xc3\x28"), r"utf|invalid|client|identifier|malformed|protocol"),
    ("connect-truncated", bytes([0x10, 30]) + h.mstr("MQTT") + bytes([4, 2]) + b"\x00\x3c" + h.mstr("truncated-but-too-long-x"),
     r"malformed|length|invalid|truncat|protocol"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name,data,reason", FIRST_PACKET, ids=[c[0] for c in FIRST_PACKET])
def test_bad_first_packet(broker, transport, name, data, reason):
    run_case(broker, transport, data, reason)


# after a valid CONNECT
AFTER_CONNECT = [
    ("remaining-length-5-bytes", b"\x30\xff\xff\xff\xff\x01", r"remaining|length|malformed|varint|protocol"),
    ("publish-invalid-utf8-topic", h.publish_packet(b"bad/\xc3\x28", b"x", 0), r"utf|invalid|topic|malformed|protocol"),
    ("publish-nul-in-topic", h.publish_packet(b"bad/\x00/x", b"x", 0), r"utf|invalid|topic|null|nul|malformed|protocol"),
    ("publish-wildcard-plus", h.publish_packet("a/+/b", b"x", 1, pid=1), r"wildcard|topic|invalid|protocol"),
    ("publish-wildcard-hash", h.publish_packet("a/#", b"x", 0), r"wildcard|topic|invalid|protocol"),
    ("publish-empty-topic", h.publish_packet("", b"x", 0), r"topic|empty|invalid|protocol"),
    ("publish-qos3", bytes([0x36]) + h.varint(6) + h.mstr("a/b") + b"\x00\x01"[:1], r"qos|invalid|malformed|protocol|flag"),
    ("publish-qos1-pid-0", h.publish_packet("a/b", b"x", 1, pid=0), r"packet.?id|pid|identifier|invalid|zero|protocol"),
    ("subscribe-invalid-utf8", h.subscribe_packet(1, [(b"a/\xed\xa0\x80", 1)]), r"utf|invalid|topic|filter|malformed|protocol"),
    ("subscribe-bad-filter", h.subscribe_packet(1, [("a/#/b", 1)]), r"filter|wildcard|invalid|topic|protocol"),
    ("subscribe-no-topics", h.packet(h.SUBSCRIBE, 2, b"\x00\x01"), r"empty|no topic|filter|invalid|malformed|protocol"),
    ("subscribe-wrong-flags", h.packet(h.SUBSCRIBE, 0, b"\x00\x01" + h.mstr("a") + b"\x01"), r"flag|reserved|invalid|malformed|protocol"),
    ("subscribe-qos3", h.packet(h.SUBSCRIBE, 2, b"\x00\x01" + h.mstr("a") + b"\x03"), r"qos|invalid|malformed|protocol"),
    ("connack-from-client", b"\x20\x02\x00\x00", r"connack|unexpected|server|not allowed|invalid|type|protocol"),
    ("suback-from-client", b"\x90\x03\x00\x01\x00", r"suback|unexpected|server|not allowed|invalid|type|protocol"),
    ("unsuback-from-client", b"\xb0\x02\x00\x01", r"unsuback|unexpected|server|not allowed|invalid|type|protocol"),
    ("pingresp-from-client", b"\xd0\x00", r"pingresp|unexpected|server|not allowed|invalid|type|protocol"),
    ("second-connect", h.connect_packet("again"), r"second|duplicate|again|connect|protocol"),
    ("disconnect-with-flags", b"\xe1\x00", r"flag|reserved|invalid|malformed|protocol"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name,data,reason", AFTER_CONNECT, ids=[c[0] for c in AFTER_CONNECT])
def test_bad_packet_after_connect(broker, transport, name, data, reason):
    lenient_in_mosquitto(name)
    run_case(broker, transport, data, reason, connect=True)


@pytest.mark.parametrize("limits", ["default-limits", "max_packet_size-1MB"])
def test_connect_claiming_268MB(make_broker, limits):
    """A CONNECT claiming 268,435,455 bytes is refused at once (with the default limits
    and with max_packet_size 1 MB), memory stays flat."""
    lenient_in_mosquitto("connect-268MB-" + limits)
    broker = make_broker(limits={} if limits == "default-limits" else {"max_packet_size": 1 << 20})
    w = h.Witness(broker)
    rss0 = broker.rss_kb()
    mark = broker.log_mark()
    conns = []
    for _ in range(10):
        c = hostile_conn(broker)
        c.send_raw(b"\x10\xff\xff\xff\x7f" + h.mstr("MQTT") + bytes([4, 2, 0, 60]) + b"\x00\x01x" + b"A" * 4000)
        conns.append(c)
    for c in conns:
        assert c.is_closed_within(CLOSE_WAIT), "a CONNECT claiming 268 MB was not closed"
    assert broker.rss_kb() - rss0 < 50_000, f"RSS grew {broker.rss_kb() - rss0} kB"
    assert_close_logged(broker, mark, r"size|large|big|limit|max|exceed|protocol")
    w.check()


def test_text_websocket_frame(broker):
    """A text frame carrying CONNECT, and a text frame after a good binary CONNECT."""
    lenient_in_mosquitto("text-frame")
    w = h.Witness(broker)
    mark = broker.log_mark()
    c = h.Raw(broker.ports["ws"], "ws")
    c.send_raw(c.ws_frame(h.connect_packet("text-connect"), opcode=1))
    assert c.is_closed_within(CLOSE_WAIT), "text frame (CONNECT) did not close the connection"
    c = h.Raw(broker.ports["ws"], "ws")
    assert c.connect("text-after").rc == 0
    c.send_raw(c.ws_frame(h.PINGREQ_PACKET, opcode=1))
    assert c.is_closed_within(CLOSE_WAIT), "text frame did not close the connection"
    assert_close_logged(broker, mark, r"text|frame|binary|opcode|protocol")
    w.check()


# Unmasked client frames (RFC 6455 5.1) are not tested: the WebSocket layer
# is Debian's libwebsockets 4.1, whose server accepts them; see docs/hub.md,
# "Known limitations".


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_never_sends_connect(broker, transport):
    """A connection that never sends CONNECT is closed after a timeout (bounded here at 35 s)."""
    lenient_in_mosquitto("never-connect")
    w = h.Witness(broker)
    mark = broker.log_mark()
    c = hostile_conn(broker, transport)
    t0 = time.monotonic()
    assert c.is_closed_within(35), "a client that never sent CONNECT was kept open 35 s"
    print(f"closed after {time.monotonic() - t0:.1f}s")
    assert_close_logged(broker, mark, r"timeout|timed out|connect|idle")
    w.check()


def test_partial_connect_then_silence(broker):
    """Half a CONNECT, then nothing: closed after the same timeout."""
    lenient_in_mosquitto("never-connect")
    w = h.Witness(broker)
    c = hostile_conn(broker)
    c.send_raw(h.connect_packet("half")[:7])
    assert c.is_closed_within(35), "half a CONNECT kept open 35 s"
    w.check()


def _flood(port, topic, count, size, qos, seconds):
    """Publish count messages of size bytes; bounded by seconds. Returns (sent, acked)."""
    c = h.Raw(port, "tcp", timeout=2)
    c.connect(f"flood-{time.monotonic_ns()}")
    body = b"F" * size
    sent = acked = 0
    end = time.monotonic() + seconds
    c.sock.settimeout(2)
    while sent < count and time.monotonic() < end:
        try:
            c.sock.sendall(h.publish_packet(topic, body, qos, pid=(sent % 65535) + 1 if qos else None))
        except socket.timeout:
            break
        except OSError:
            break
        sent += 1
        if qos == 1 and sent - acked > 100:
            try:
                while sent - acked > 50:
                    p = c.recv(2)
                    if p is None:
                        raise TimeoutError
                    if p.type == h.PUBACK:
                        acked += 1
            except (h.Closed, TimeoutError):
                break
    c.close()
    return sent, acked


@pytest.mark.parametrize("qos", [0, 1])
def test_client_that_never_reads(broker, qos):
    """A subscriber that never reads its socket while ~100 MB is published to it:
    the hub's RSS grows < 50 MB, other clients are unaffected."""
    w = h.Witness(broker)
    lazy = h.Raw(broker.ports["mqtt"], "tcp", rcvbuf=4096)
    lazy.connect("lazy-reader")
    lazy.subscribe([("flood/#", qos)])
    time.sleep(0.2)
    rss0 = broker.rss_kb()
    sent, acked = _flood(broker.ports["mqtt"], "flood/x", 6400, 16384, qos, 40)
    time.sleep(1)
    rss1 = broker.rss_kb()
    print(f"qos {qos}: sent {sent} x 16 kB (acked {acked}); RSS {rss0} -> {rss1} kB")
    assert sent >= 1000, f"the flooding publisher itself was blocked after {sent} messages"
    assert rss1 - rss0 < 50_000, f"RSS grew {rss1 - rss0} kB with a client that never reads"
    w.check()
    lazy.close()


@pytest.mark.perch_only("protocol_errors_total metric")
def test_protocol_error_metric(broker):
    before = h.metric_sum(broker.metrics(), "perch_hub_protocol_errors_total") or 0
    run_case(broker, "tcp", b"\xd0\x00", r"pingresp|unexpected|server|invalid|type|protocol", connect=True)
    after = h.metric_sum(broker.metrics(), "perch_hub_protocol_errors_total")
    assert after is not None and after >= before + 1, f"protocol_errors_total {before} -> {after}"
    # by reason: a wildcard in a PUBLISH topic has its own label
    run_case(broker, "tcp", h.publish_packet("a/+/b", b"x", 1, pid=1), r"wildcard", connect=True)
    labels = {k for k, v in broker.metrics().items()
              if k.startswith("perch_hub_protocol_errors_total{") and v > 0}
    assert any("wildcard" in k for k in labels), f"no wildcard reason among {labels}"


@pytest.mark.perch_only("hub.send_timeout")
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("qos", [0, 1])
def test_never_reading_client_closed(make_broker, transport, qos):
    """A subscriber that never reads its socket (and keeps no keepalive that
    would end it) is closed once hub.send_timeout (3 s here) passes without it
    taking any of what it was sent: one log line with the reason, counted in
    protocol_errors_total{reason="peer_not_reading"}, memory flat, others
    unaffected. A slow reader that does read is not closed."""
    b = make_broker(limits={"send_timeout": "3s"})
    w = h.Witness(b)
    lazy = h.Raw(b.ports["mqtt" if transport == "tcp" else "ws"], transport, rcvbuf=4096)
    lazy.connect("never-reads", keepalive=0)
    lazy.subscribe([("nr/#", qos)])
    slow = h.raw_client(b, "tcp", client_id="slow-but-reads", keepalive=0)
    slow.subscribe([("nr/#", qos)])
    mark = b.log_mark()
    rss0 = b.rss_kb()
    pub = h.raw_client(b, "tcp", client_id="nr-pub")
    body = b"N" * 16384
    t0 = time.monotonic()
    got_slow = 0
    for i in range(300):  # ~5 MB over ~6 s: the hub's buffer for lazy fills, slow keeps up
        pub.publish("nr/t", body, qos=1)
        got_slow += len(slow.quiet(0.01))
    line = b.wait_log(r"closed .*never-reads.*does not read", mark, timeout=15)
    assert line, "the client that never reads was not closed with a reason:\n" + b.log_since(mark)[-2000:]
    print(f"closed after {time.monotonic() - t0:.1f}s: {line}")
    assert lazy.is_closed_within(10)
    slow.sync()  # a client that reads is still served
    assert not slow.closed
    assert b.rss_kb() - rss0 < 50_000
    errs = h.metric_sum(b.metrics(), "perch_hub_protocol_errors_total", reason="peer_not_reading")
    assert errs and errs >= 1, errs
    w.check()
