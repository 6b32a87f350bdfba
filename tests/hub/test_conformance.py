"""MQTT 3.1.1 conformance over TCP and WebSocket: paho (Debian's python3-paho-mqtt)
for the ordinary flows, the raw client where the test needs every byte (DUP flags,
session-present, frame splitting, keepalive)."""
import time

import pytest

import hubtest as h

TRANSPORTS = ["tcp", "ws"]


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


def uniq(prefix):
    return f"{prefix}-{time.monotonic_ns() % 10**9}"


@pytest.mark.parametrize("qos", [0, 1])
def test_paho_pubsub(broker, transport, qos):
    """paho publishes 100 messages (sizes 0 B .. 200 kB) at QoS q; a paho subscriber
    gets all of them, in order, with the right QoS and payloads."""
    sub = h.paho_client(broker, transport, client_id=uniq("sub"))
    pub = h.paho_client(broker, transport, client_id=uniq("pub"))
    try:
        assert h.paho_sub(sub, "conf/+/data", qos) == (qos,)
        sizes = [0, 1, 127, 128, 16383, 16384, 65535, 65536, 200_000] + [100] * 91
        infos = []
        for i, n in enumerate(sizes):
            body = (f"{i:04d}".encode() + bytes([i % 256]) * n)[:max(n, 4)] if n else b""
            infos.append((body, pub.publish(f"conf/{i % 3}/data", body, qos=qos)))
        for _, info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
        got = h.paho_msgs(sub, len(sizes), timeout=15)
        assert len(got) == len(sizes), f"got {len(got)} of {len(sizes)}"
        assert [m.payload for m in got] == [b for b, _ in infos], "payloads or order differ"
        assert all(m.qos == qos for m in got)
    finally:
        h.paho_stop(sub)
        h.paho_stop(pub)


def test_cross_transport(broker):
    """A WebSocket publisher reaches a TCP subscriber and the other way round."""
    a = h.paho_client(broker, "tcp", client_id=uniq("a"))
    b = h.paho_client(broker, "ws", client_id=uniq("b"))
    try:
        h.paho_sub(a, "x/to-a", 1)
        h.paho_sub(b, "x/to-b", 1)
        b.publish("x/to-a", b"from ws", qos=1).wait_for_publish(5)
        a.publish("x/to-b", b"from tcp", qos=1).wait_for_publish(5)
        assert [m.payload for m in h.paho_msgs(a, 1)] == [b"from ws"]
        assert [m.payload for m in h.paho_msgs(b, 1)] == [b"from tcp"]
    finally:
        h.paho_stop(a)
        h.paho_stop(b)


def test_qos2_subscription_granted_1(broker, transport):
    """SUBSCRIBE at QoS 2: Perch grants 1 (SUBACK shows 1) and delivers at QoS 1.
    (mosquitto supports QoS 2 and grants 2: checked as such to validate the test.)"""
    c = h.raw_client(broker, transport, client_id=uniq("q2"))
    granted = c.subscribe([("q2/t", 2)])
    want = 1 if h.is_perch() else 2
    assert granted == [want], f"SUBACK granted {granted}, want [{want}]"
    p = h.raw_client(broker, "tcp", client_id=uniq("q2p"))
    p.publish("q2/t", b"m", qos=1)
    got = c.messages(1)
    assert got and got[0].qos == 1 and got[0].payload == b"m"
    # mixed grants in one SUBSCRIBE
    granted = c.subscribe([("q2/a", 0), ("q2/b", 1), ("q2/c", 2)])
    assert granted == [0, 1, want]


def test_qos2_publish_answered_and_delivered_at_1(broker, transport):
    """paho publishes at QoS 2: the hub answers PUBREC, then PUBCOMP to its PUBREL
    (paho's flow completes), and a subscriber granted 1 gets the messages at QoS 1."""
    sub = h.raw_client(broker, transport, client_id=uniq("q2s"))
    want = 1 if h.is_perch() else 2
    assert sub.subscribe([("q2p/t", 2)]) == [want]
    pub = h.paho_client(broker, transport, client_id=uniq("q2pub"))
    try:
        infos = [pub.publish("q2p/t", b"m%d" % i, qos=2) for i in range(5)]
        for info in infos:
            info.wait_for_publish(5)
            assert info.is_published(), "QoS 2 flow (PUBREC/PUBREL/PUBCOMP) did not complete"
        got = sub.messages(5)
        assert [m.payload for m in got] == [b"m%d" % i for i in range(5)]
        assert all(m.qos == want for m in got), [m.qos for m in got]
    finally:
        h.paho_stop(pub)


def test_delivery_at_the_lower_qos(broker, transport):
    """A message goes out at the lower of its QoS and the subscription's: QoS 1
    to a QoS 0 subscription arrives at QoS 0, QoS 0 to a QoS 1 one at QoS 0."""
    s0 = h.raw_client(broker, transport, client_id=uniq("lq0"))
    s1 = h.raw_client(broker, transport, client_id=uniq("lq1"))
    assert s0.subscribe([("lq/t", 0)]) == [0]
    assert s1.subscribe([("lq/t", 1)]) == [1]
    p = h.raw_client(broker, "tcp", client_id=uniq("lqp"))
    p.publish("lq/t", b"one", qos=1)
    p.publish("lq/t", b"zero", qos=0)
    assert [(m.payload, m.qos) for m in s0.messages(2)] == [(b"one", 0), (b"zero", 0)]
    assert [(m.payload, m.qos) for m in s1.messages(2)] == [(b"one", 1), (b"zero", 0)]


def test_wildcards(broker, transport):
    """'+' matches one level, '#' any number including the parent; each filter on its own client."""
    filters = {"w/+/c": None, "w/#": None, "w/b/+": None, "+/b/c": None, "#": None}
    clients = {}
    for f in filters:
        c = h.raw_client(broker, transport, client_id=uniq("wc"))
        assert c.subscribe([(f, 1)]) == [1]
        clients[f] = c
    pub = h.raw_client(broker, "tcp", client_id=uniq("wp"))
    topics = ["w/b/c", "w/b/d", "w", "w/b/c/d", "w//c", "v/b/c"]
    for t in topics:
        pub.publish(t, t.encode(), qos=1)
    expect = {
        "w/+/c": {"w/b/c", "w//c"},
        "w/#": {"w/b/c", "w/b/d", "w", "w/b/c/d", "w//c"},
        "w/b/+": {"w/b/c", "w/b/d"},
        "+/b/c": {"w/b/c", "v/b/c"},
        "#": set(topics),
    }
    for f, c in clients.items():
        got = c.messages(len(expect[f]), timeout=5)
        got += c.quiet(0.3)
        assert {m.topic for m in got} == expect[f], f"filter {f}"
        assert len(got) == len(expect[f]), f"filter {f}: duplicates {got}"


def test_dollar_topics(broker, transport):
    """'#' and '+/...' do not match topics starting with '$'; '$iothub/#' does."""
    all_ = h.raw_client(broker, transport, client_id=uniq("d1"))
    plus = h.raw_client(broker, transport, client_id=uniq("d2"))
    dol = h.raw_client(broker, transport, client_id=uniq("d3"))
    all_.subscribe([("#", 1)])
    plus.subscribe([("+/twin/x", 1)])
    dol.subscribe([("$iothub/#", 1)])
    pub = h.raw_client(broker, "tcp", client_id=uniq("dp"))
    pub.publish("$iothub/twin/x", b"dollar", qos=1)
    pub.publish("plain/twin/x", b"plain", qos=1)
    assert [m.payload for m in dol.messages(1)] == [b"dollar"]
    assert [m.payload for m in all_.messages(2, timeout=2)] == [b"plain"]
    assert [m.payload for m in plus.messages(2, timeout=1)] == [b"plain"]


def test_retained(broker, transport):
    """A retained message reaches later subscribers with RETAIN=1 (live copies carry 0);
    a newer one replaces it; an empty retained payload clears it."""
    pub = h.paho_client(broker, transport, client_id=uniq("rp"))
    live = h.raw_client(broker, transport, client_id=uniq("rl"))
    live.subscribe([("ret/#", 1)])
    try:
        pub.publish("ret/a", b"v1", qos=1, retain=True).wait_for_publish(5)
        pub.publish("ret/a", b"v2", qos=1, retain=True).wait_for_publish(5)
        pub.publish("ret/b", b"b1", qos=0, retain=True).wait_for_publish(5)
        lm = live.messages(3)
        assert [m.payload for m in lm] == [b"v1", b"v2", b"b1"]
        assert not any(m.retain for m in lm), "live deliveries must carry RETAIN=0"
        late = h.raw_client(broker, transport, client_id=uniq("rs"))
        late.subscribe([("ret/+", 1)])
        got = sorted(late.messages(2) + late.quiet(0.3), key=lambda m: m.topic)
        assert [(m.topic, m.payload, m.retain) for m in got] == [("ret/a", b"v2", True), ("ret/b", b"b1", True)]
        pub.publish("ret/a", b"", qos=1, retain=True).wait_for_publish(5)
        time.sleep(0.2)
        later = h.raw_client(broker, transport, client_id=uniq("rs2"))
        later.subscribe([("ret/+", 1)])
        got = later.messages(2, timeout=1.5)
        assert [(m.topic, m.payload) for m in got] == [("ret/b", b"b1")], "empty retained payload must clear"
    finally:
        h.paho_stop(pub)


def test_clean_session_discards(broker, transport):
    """clean_session=1: no session-present, nothing queued while away, subscriptions gone."""
    c = h.raw_client(broker, transport, client_id="clean-1", clean=True)
    assert not c.session_present
    c.subscribe([("cs/t", 1)])
    c.disconnect()
    p = h.raw_client(broker, "tcp", client_id=uniq("csp"))
    p.publish("cs/t", b"while away", qos=1)
    c = h.raw_client(broker, transport, client_id="clean-1", clean=True)
    assert not c.session_present
    assert c.quiet(1.0) == []
    p.publish("cs/t", b"after", qos=1)
    assert c.quiet(0.7) == [], "a clean session must not keep the old subscription"


def test_persistent_session_offline_queue(broker, transport):
    """clean_session=0: session-present on return, QoS 1 messages sent while offline are
    delivered in order; the subscription persists; a clean connect then discards it all."""
    cid = uniq("persist")
    c = h.raw_client(broker, transport, client_id=cid, clean=False)
    assert not c.session_present
    assert c.subscribe([("ps/#", 1)]) == [1]
    c.disconnect()
    p = h.raw_client(broker, "tcp", client_id=uniq("psp"))
    for i in range(50):
        p.publish(f"ps/{i % 2}", f"m{i}".encode(), qos=1)
    c = h.raw_client(broker, transport, client_id=cid, clean=False)
    assert c.session_present, "CONNACK must show session present"
    got = c.messages(50, timeout=10)
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(50)]
    p.publish("ps/live", b"live", qos=1)
    assert [m.payload for m in c.messages(1)] == [b"live"]
    c.disconnect()
    p.publish("ps/x", b"dropped by clean connect", qos=1)
    c = h.raw_client(broker, transport, client_id=cid, clean=True)
    assert not c.session_present
    assert c.quiet(0.7) == []


def test_paho_persistent_session(broker, transport):
    """The same with paho's own session handling (clean_session=False)."""
    cid = uniq("paho-persist")
    c = h.paho_client(broker, transport, client_id=cid, clean=False)
    h.paho_sub(c, "pps/t", 1)
    h.paho_stop(c)
    p = h.paho_client(broker, transport, client_id=uniq("ppp"))
    for i in range(20):
        p.publish("pps/t", f"{i}".encode(), qos=1).wait_for_publish(5)
    h.paho_stop(p)
    c = h.paho_client(broker, transport, client_id=cid, clean=False)
    try:
        assert c.session_present
        got = h.paho_msgs(c, 20, timeout=10)
        assert [m.payload for m in got] == [f"{i}".encode() for i in range(20)]
    finally:
        h.paho_stop(c)


def test_redelivery_with_dup(broker, transport):
    """Unacknowledged QoS 1 deliveries are resent on reconnect with DUP=1 and the same
    packet ids, in order; once acknowledged they are not sent again."""
    cid = uniq("dup")
    c = h.raw_client(broker, transport, client_id=cid, clean=False)
    c.subscribe([("dup/t", 1)])
    p = h.raw_client(broker, "tcp", client_id=uniq("dupp"))
    for i in range(3):
        p.publish("dup/t", f"d{i}".encode(), qos=1)
    first = c.messages(3, ack=False)
    assert [m.payload for m in first] == [b"d0", b"d1", b"d2"]
    assert not any(m.dup for m in first)
    c.close()  # no PUBACK, no DISCONNECT
    time.sleep(0.2)
    c = h.raw_client(broker, transport, client_id=cid, clean=False)
    assert c.session_present
    again = c.messages(3, ack=True)
    assert [m.payload for m in again] == [b"d0", b"d1", b"d2"]
    assert all(m.dup for m in again), f"redelivered messages must carry DUP: {again}"
    assert [m.pid for m in again] == [m.pid for m in first], "redelivery must reuse the packet ids"
    c.disconnect()
    c = h.raw_client(broker, transport, client_id=cid, clean=False)
    assert c.quiet(1.0) == [], "acknowledged messages were sent again"


def test_takeover_resends_what_was_in_flight(broker, transport):
    """A takeover while QoS 1 deliveries are unacknowledged (the old socket not
    yet gone): the new connection gets them again, DUP set, same packet ids,
    and delivery goes on (the window is not left full of stale entries)."""
    cid = uniq("takeinfl")
    old = h.raw_client(broker, transport, client_id=cid, clean=False)
    old.subscribe([("ti/t", 1)])
    p = h.raw_client(broker, "tcp", client_id=uniq("tip"))
    for i in range(3):
        p.publish("ti/t", f"t{i}".encode(), qos=1)
    first = old.messages(3, ack=False)
    assert [m.payload for m in first] == [b"t0", b"t1", b"t2"]
    new = h.raw_client(broker, transport, client_id=cid, clean=False)  # old still open
    assert new.session_present
    again = new.messages(3, ack=True)
    assert [m.payload for m in again] == [b"t0", b"t1", b"t2"]
    assert all(m.dup for m in again), f"resent messages must carry DUP: {again}"
    assert [m.pid for m in again] == [m.pid for m in first], "resend must reuse the packet ids"
    for i in range(3, 6):
        p.publish("ti/t", f"t{i}".encode(), qos=1)
    later = new.messages(3, ack=True)
    assert [m.payload for m in later] == [b"t3", b"t4", b"t5"]


def test_session_takeover(broker, transport):
    """A second connection with the same client id closes the first; the session
    (subscriptions) carries over; the new connection works."""
    cid = uniq("take")
    a = h.raw_client(broker, transport, client_id=cid, clean=False)
    a.subscribe([("take/t", 1)])
    b = h.raw_client(broker, transport, client_id=cid, clean=False)
    assert b.session_present
    assert a.is_closed_within(5), "the first connection must be closed on takeover"
    p = h.raw_client(broker, "tcp", client_id=uniq("takep"))
    p.publish("take/t", b"to b", qos=1)
    assert [m.payload for m in b.messages(1)] == [b"to b"]


@pytest.mark.perch_only("mosquitto 2.0.11 drops the old connection's will on a takeover")
def test_takeover_publishes_the_old_connections_will(broker, transport):
    """A takeover ends the old connection without its DISCONNECT: its will is
    published once (MQTT 3.1.1 3.1.2.5 lists situations 'not limited to';
    Perch counts a takeover as an abnormal end, as MQTT 5 does); the new
    connection's will is kept for its own end."""
    w = h.raw_client(broker, "tcp", client_id=uniq("tw"))
    w.subscribe([("twill/#", 1)])
    cid = uniq("twc")
    old = h.raw_client(broker, transport, client_id=cid, clean=False,
                       will=("twill/old", b"old gone", 1, False))
    new = h.raw_client(broker, transport, client_id=cid, clean=False,
                       will=("twill/new", b"new gone", 1, False))
    assert old.is_closed_within(5)
    got = w.messages(1, timeout=5) + w.quiet(0.5)
    assert [(m.topic, m.payload) for m in got] == [("twill/old", b"old gone")], got
    new.disconnect()
    assert w.quiet(1.0) == [], "a will after a clean DISCONNECT"


def test_will_on_abnormal_disconnect(broker, transport):
    """A will is published when the connection drops without DISCONNECT ..."""
    w = h.raw_client(broker, "tcp", client_id=uniq("watch"))
    w.subscribe([("will/#", 1)])
    c = h.raw_client(broker, transport, client_id=uniq("will"),
                     will=("will/gone", b"last words", 1, False))
    c.close()
    got = w.messages(1, timeout=5)
    assert [(m.topic, m.payload) for m in got] == [("will/gone", b"last words")]


def test_no_will_on_disconnect(broker, transport):
    """... and not after a clean DISCONNECT."""
    w = h.raw_client(broker, "tcp", client_id=uniq("watch"))
    w.subscribe([("will/#", 1)])
    c = h.raw_client(broker, transport, client_id=uniq("will"),
                     will=("will/gone", b"must not appear", 1, False))
    c.disconnect()
    assert w.quiet(1.5) == []


def test_paho_will(broker, transport):
    """paho's will_set, with a retained will, on a dropped socket."""
    w = h.paho_client(broker, "tcp", client_id=uniq("pw"))
    c = h.paho_client(broker, transport, client_id=uniq("pwc"), will=("pwill/x", b"bye", 1, True))
    try:
        h.paho_sub(w, "pwill/#", 1)
        c.loop_stop()
        c.socket().close()
        got = h.paho_msgs(w, 1, timeout=5)
        assert got and got[0].payload == b"bye"
        late = h.raw_client(broker, "tcp", client_id=uniq("pwl"))
        late.subscribe([("pwill/x", 1)])
        m = late.messages(1)
        assert m and m[0].retain and m[0].payload == b"bye", "a retained will must be retained"
    finally:
        h.paho_stop(w)


def test_keepalive_timeout(broker, transport):
    """A silent client with keepalive 2 s is closed after 1.5x (3 s; accepted 2.5-6 s)
    and its will is published; a client that pings stays connected."""
    w = h.raw_client(broker, "tcp", client_id=uniq("kw"))
    w.subscribe([("ka/#", 1)])
    pinger = h.raw_client(broker, transport, client_id=uniq("kp"), keepalive=2)
    silent = h.raw_client(broker, transport, client_id=uniq("ks"), keepalive=2,
                          will=("ka/will", b"timed out", 1, False))
    t0 = time.monotonic()
    pongs = 0
    closed_at = None
    while time.monotonic() - t0 < 7:
        pinger.send(h.PINGREQ_PACKET)
        p = pinger.recv(1.0)
        if p is not None and p.type == h.PINGRESP:
            pongs += 1
        if closed_at is None:
            try:
                silent.recv(0.01)
            except h.Closed:
                closed_at = time.monotonic() - t0
        time.sleep(max(0, 0.9 - (time.monotonic() - t0) % 1))
    assert closed_at is not None, "silent client was not disconnected within 7 s (keepalive 2 s)"
    assert 2.5 <= closed_at <= 6.0, f"silent client closed after {closed_at:.1f}s, want about 3 s"
    assert pongs >= 5, f"pinger got {pongs} PINGRESPs"
    assert not pinger.closed
    assert [m.payload for m in w.messages(1)] == [b"timed out"]


def test_unsubscribe(broker, transport):
    c = h.raw_client(broker, transport, client_id=uniq("un"))
    c.subscribe([("un/a", 1), ("un/b", 1)])
    c.send(h.unsubscribe_packet(77, ["un/a"]))
    ack = c.expect(h.UNSUBACK)
    assert ack.pid == 77
    p = h.raw_client(broker, "tcp", client_id=uniq("unp"))
    p.publish("un/a", b"a", qos=1)
    p.publish("un/b", b"b", qos=1)
    assert [m.payload for m in c.messages(2, timeout=1.5)] == [b"b"]


def test_ws_path_and_framing(broker):
    """WebSocket on /$iothub/websocket and /; MQTT packets split across frames
    (one byte per frame, continuation frames) and several packets in one frame."""
    for path in ("/$iothub/websocket", "/", "/mqtt"):
        c = h.Raw(broker.ports["ws"], "ws", path=path)
        assert "mqtt" in c.handshake_headers.lower(), "Sec-WebSocket-Protocol: mqtt must be echoed"
        conn = h.connect_packet(uniq("frag"))
        c.send_frames([conn[i:i + 1] for i in range(len(conn))])  # one byte per frame
        assert c.expect(h.CONNACK).rc == 0
        sub = h.subscribe_packet(1, [("frag/t", 1)])
        pub1 = h.publish_packet("frag/t", b"one", 1, pid=2)
        pub2 = h.publish_packet("frag/t", b"two", 0)
        ping = h.PINGREQ_PACKET
        blob = sub + pub1 + pub2 + ping
        # SUBSCRIBE + PUBLISH + PUBLISH + PINGREQ packed, then cut at odd places
        c.send_frames([blob[:3], blob[3:17], blob[17:]])
        types = []
        msgs = []
        end = time.monotonic() + 5
        while time.monotonic() < end and (len(msgs) < 2 or h.PINGRESP not in types):
            p = c.recv(1)
            if p is None:
                continue
            types.append(p.type)
            if p.type == h.PUBLISH:
                msgs.append(p.payload)
                if p.qos == 1:
                    c.send(h.puback_packet(p.pid))
        assert h.SUBACK in types and h.PUBACK in types and h.PINGRESP in types, types
        assert msgs == [b"one", b"two"], msgs
        # a fragmented message (FIN=0 then continuation)
        big = h.publish_packet("frag/t", b"x" * 5000, 0)
        c.send_raw(c.ws_frame(big[:1000], opcode=2, fin=False) +
                   c.ws_frame(big[1000:4000], opcode=0, fin=False) +
                   c.ws_frame(big[4000:], opcode=0, fin=True))
        got = c.messages(1)
        assert got and got[0].payload == b"x" * 5000
        c.disconnect()


def test_many_clients_fanout(broker, transport):
    """20 subscribers on one topic, 5 publishers x 20 QoS 1 messages: each subscriber
    gets all 100, each publisher's in order."""
    subs = [h.raw_client(broker, transport, client_id=uniq(f"fs{i}")) for i in range(20)]
    for s in subs:
        s.subscribe([("fan/#", 1)])
    pubs = [h.raw_client(broker, "tcp", client_id=uniq(f"fp{i}")) for i in range(5)]
    for n in range(20):
        for i, p in enumerate(pubs):
            p.publish(f"fan/{i}", f"{i}:{n}".encode(), qos=1)
    for s in subs:
        got = s.messages(100, timeout=10)
        assert len(got) == 100
        for i in range(5):
            seq = [int(m.payload.split(b":")[1]) for m in got if m.topic == f"fan/{i}"]
            assert seq == list(range(20))
