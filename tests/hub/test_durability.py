"""Durability: sessions, subscriptions, retained and queued messages across restarts;
the kill -9 crash test (PERCH_CRASH_ROUNDS rounds, default 20); the disk-full test."""
import os
import random
import shutil
import subprocess
import threading
import time

import pytest

import hubtest as h


def test_restart_keeps_sessions_retained_queued(make_broker):
    """After SIGTERM (exit 0) and a restart on the same data dir: the persistent session
    is present with its subscription, offline-queued QoS 1 messages arrive in order,
    an unacknowledged in-flight message is redelivered, retained messages are kept."""
    b = make_broker()
    sub = h.raw_client(b, "tcp", client_id="rs-sub", clean=False)
    sub.subscribe([("rs/#", 1)])
    pub = h.raw_client(b, "tcp", client_id="rs-pub")
    pub.publish("rs/inflight", b"unacked", qos=1)
    got = sub.messages(1, ack=False)
    assert [m.payload for m in got] == [b"unacked"]
    sub.close()
    for i in range(10):
        pub.publish("rs/q", f"q{i}".encode(), qos=1)
    pub.publish("rs/ret", b"retained", qos=1, retain=True)
    pub.disconnect()
    b.restart(graceful=True)
    sub = h.raw_client(b, "tcp", client_id="rs-sub", clean=False)
    assert sub.session_present, "persistent session lost over a restart"
    got = sub.messages(12, timeout=10)
    pays = [m.payload for m in got]
    assert pays == [b"unacked"] + [f"q{i}".encode() for i in range(10)] + [b"retained"], pays
    assert got[0].dup, "the redelivered in-flight message must carry DUP"
    pub = h.raw_client(b, "tcp", client_id="rs-pub2")
    pub.publish("rs/after", b"live", qos=1)
    assert [m.payload for m in sub.messages(1)] == [b"live"], "subscription lost over a restart"
    late = h.raw_client(b, "ws", client_id="rs-late")
    late.subscribe([("rs/ret", 1)])
    m = late.messages(1)
    assert m and m[0].payload == b"retained" and m[0].retain


@pytest.mark.perch_only("mosquitto keeps its state in memory: kill -9 loses it")
def test_kill9_redelivers_with_dup(make_broker):
    """kill -9 with acknowledged-to-publisher messages queued and in flight: all of them
    arrive after the restart; those already sent carry DUP."""
    b = make_broker()
    sub = h.raw_client(b, "tcp", client_id="k9-sub", clean=False)
    sub.subscribe([("k9/#", 1)])
    pub = h.raw_client(b, "tcp", client_id="k9-pub")
    for i in range(3):
        pub.publish("k9/t", f"a{i}".encode(), qos=1)
    first = sub.messages(3, ack=False)
    assert len(first) == 3
    sub.close()
    for i in range(5):
        pub.publish("k9/t", f"b{i}".encode(), qos=1)
    # retained: set, replaced, and another set then cleared, all acknowledged
    pub.publish("k9ret/a", b"old", qos=1, retain=True)
    pub.publish("k9ret/a", b"new", qos=1, retain=True)
    pub.publish("k9ret/b", b"gone", qos=1, retain=True)
    pub.publish("k9ret/b", b"", qos=1, retain=True)
    b.kill9()
    b.start()
    sub = h.raw_client(b, "tcp", client_id="k9-sub", clean=False)
    assert sub.session_present
    got = sub.messages(8, timeout=10)
    pays = [m.payload for m in got]
    assert pays == [f"a{i}".encode() for i in range(3)] + [f"b{i}".encode() for i in range(5)], pays
    assert all(m.dup for m in got[:3]), "messages sent before the crash must come back with DUP"
    late = h.raw_client(b, "ws", client_id="k9-late")
    late.subscribe([("k9ret/#", 1)])
    ret = late.messages(2, timeout=2)
    assert [(m.topic, m.payload, m.retain) for m in ret] == [("k9ret/a", b"new", True)], \
        f"retained messages after kill -9: {ret}"


@pytest.mark.perch_only("perch-hub's store")
def test_store_is_wal_and_commits_are_grouped(make_broker):
    """The store is SQLite in WAL mode under --data-dir; 20 concurrent QoS 1
    publishers (window 20 each) to a persistent subscriber: every message is
    committed before its PUBACK, and the commits are batched (far fewer
    commits than messages)."""
    b = make_broker(listeners=("mqtt",))
    sub = h.raw_client(b, "tcp", client_id="gc-sub", clean=False)
    sub.subscribe([("gc/#", 1)])
    sub.disconnect()  # offline: every message must reach the disk before its PUBACK
    m0 = b.metrics()
    n_pubs, per_pub = 20, 100
    errors = []

    def run(i):
        try:
            c = h.Raw(b.ports["mqtt"], "tcp", timeout=10)
            c.connect(f"gc-pub-{i}")
            sent = acked = 0
            while acked < per_pub:
                while sent < per_pub and sent - acked < 20:
                    c.send(h.publish_packet(f"gc/{i}", b"x" * 100, 1, pid=c.pid()))
                    sent += 1
                p = c.recv(10)
                assert p is not None, "no PUBACK in 10 s"
                if p.type == h.PUBACK:
                    acked += 1
            c.disconnect()
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_pubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    m1 = b.metrics()
    msgs = n_pubs * per_pub
    commits = h.metric_sum(m1, "perch_hub_store_commits_total") - h.metric_sum(m0, "perch_hub_store_commits_total")
    queued = h.metric_sum(m1, "perch_hub_queue_messages")
    print(f"group commit: {msgs} messages, {commits:.0f} commits")
    assert queued >= msgs, f"only {queued} of {msgs} queued for the offline subscriber"
    assert 1 <= commits <= msgs / 4, f"{commits} commits for {msgs} messages: not grouped"
    assert b.stop() == 0
    import sqlite3
    db = sqlite3.connect(os.path.join(b.data_dir, "hub.db"))
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()
    assert mode.lower() == "wal", f"journal_mode {mode}"


# ------------------------------------------------------------------ crash rounds
class CrashSubscriber(threading.Thread):
    """Persistent-session QoS 1 subscriber that reconnects (never resubscribes) and acks."""

    def __init__(self, broker, cid, topic, transport="tcp"):
        super().__init__(daemon=True)
        self.b, self.cid, self.transport = broker, cid, transport
        self.port = broker.ports["mqtt" if transport == "tcp" else "ws"]
        self.got = []  # (publisher, seq, dup)
        self.stop = threading.Event()
        self.session_lost = 0
        self.connects = 0
        c = h.raw_client(broker, transport, client_id=cid, clean=False)
        c.subscribe([(topic, 1)])
        self.c = c

    def run(self):
        while not self.stop.is_set():
            if self.c is None:
                try:
                    c = h.Raw(self.port, self.transport, timeout=2)
                    ack = c.connect(self.cid, clean=False, timeout=3)
                    if ack.rc != 0:
                        c.close()
                        raise OSError("refused")
                    self.connects += 1
                    if not ack.session_present:
                        self.session_lost += 1
                    self.c = c
                except (OSError, h.Closed, AssertionError):
                    time.sleep(0.05)
                    continue
            try:
                p = self.c.recv(0.2)
                if p is not None and p.type == h.PUBLISH:
                    who, seq = p.payload.decode().split(":")
                    self.got.append((who, int(seq), p.dup))
                    if p.qos == 1:
                        self.c.send(h.puback_packet(p.pid))
            except (h.Closed, OSError, AssertionError):
                self.c.close()
                self.c = None


class CrashPublisher(threading.Thread):
    """Publishes numbered QoS 1 messages with a window of 20; records the PUBACKed ones."""

    def __init__(self, broker, name, acked, start_seq, seconds_cap=30):
        super().__init__(daemon=True)
        self.b, self.name, self.acked = broker, name, acked
        self.seq = start_seq
        self.stop = threading.Event()
        self.cap = seconds_cap

    def run(self):
        try:
            c = h.Raw(self.b.ports["mqtt"], "tcp", timeout=2)
            c.connect(f"crash-pub-{self.name}")
        except (OSError, h.Closed, AssertionError):
            return
        inflight = {}
        end = time.monotonic() + self.cap
        try:
            while not self.stop.is_set() and time.monotonic() < end:
                while len(inflight) < 20:
                    pid = c.pid()
                    c.send(h.publish_packet(f"crash/{self.name}", f"{self.name}:{self.seq}".encode(), 1, pid=pid))
                    inflight[pid] = self.seq
                    self.seq += 1
                p = c.recv(0.5)
                if p is not None and p.type == h.PUBACK and p.pid in inflight:
                    self.acked.append(inflight.pop(p.pid))
        except (h.Closed, OSError, AssertionError):
            pass
        c.close()


# Queue limits far above what the rounds publish, so that a loss is a durability
# failure and not a (legitimate, counted) drop at a per-session queue limit.
# (mosquitto's default max_queued_messages 1000 drops silently: seen here.)
BIG_QUEUES = {"max_queued_messages": 1000000, "max_queued_bytes": 1 << 30}


def crash_rounds(b, rounds, kill):
    """rounds x (publish for a random 0.3-1.5 s, then kill -9 or SIGTERM, restart).
    Two persistent QoS 1 subscribers, over TCP ('crash/#') and, when the broker
    has a WebSocket listener, over WebSocket ('crash/+'). Returns one report
    per subscriber: [(report, sub)]."""
    names = ["p0", "p1"]
    acked = {n: [] for n in names}
    next_seq = {n: 0 for n in names}
    subs = [CrashSubscriber(b, "crash-sub", "crash/#")]
    if "ws" in b.ports:
        subs.append(CrashSubscriber(b, "crash-sub-ws", "crash/+", "ws"))
    for sub in subs:
        sub.start()
    rng = random.Random(int(os.environ.get("PERCH_CRASH_SEED", time.time())))
    t_start = time.monotonic()
    try:
        for r in range(rounds):
            pubs = [CrashPublisher(b, n, acked[n], next_seq[n]) for n in names]
            for p in pubs:
                p.start()
            time.sleep(rng.uniform(0.3, 1.5))
            if kill:
                b.kill9()
            else:
                rc = b.stop()
                assert rc == 0, f"SIGTERM exit {rc}"
            for p in pubs:
                p.stop.set()
                p.join(10)
                assert not p.is_alive(), "publisher thread stuck"
                next_seq[p.name] = p.seq
            if kill and rng.random() < 0.25:
                # a crash during recovery too: kill -9 within 50 ms of the start
                b.start(wait=False)
                time.sleep(rng.uniform(0, 0.05))
                b.kill9()
            b.start()
            assert time.monotonic() - t_start < 60 + rounds * 15, "crash test over its time budget"
        # drain: every acked number arrives, or 60 s
        want = {n: set(acked[n]) for n in names}
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if all(want[n] <= {s for (w, s, _) in list(sub.got) if w == n}
                   for n in names for sub in subs):
                break
            time.sleep(0.2)
        time.sleep(1.0)  # let stragglers (duplicates) arrive
    finally:
        for sub in subs:
            sub.stop.set()
        for sub in subs:
            sub.join(5)
    return [(_report(names, acked, sub), sub) for sub in subs]


def _report(names, acked, sub):
    got = list(sub.got)
    report = []
    for n in names:
        seqs = [s for (w, s, _) in got if w == n]
        have = set(seqs)
        lost = sorted(set(acked[n]) - have)
        dups = len(seqs) - len(have)
        dup_flagged = sum(1 for (w, s, d) in got if w == n and d)
        extra = len(have - set(acked[n]))
        # order: the first arrival of each number is increasing
        seen, firsts = set(), []
        for s in seqs:
            if s not in seen:
                seen.add(s)
                firsts.append(s)
        out_of_order = sum(1 for a, c in zip(firsts, firsts[1:]) if c < a)
        # a second arrival of a number must say it may be one (DUP)
        seen, dup_unflagged = set(), 0
        for (w, s, d) in got:
            if w != n:
                continue
            if s in seen and not d:
                dup_unflagged += 1
            seen.add(s)
        report.append(dict(publisher=n, acked=len(acked[n]), received_distinct=len(have), lost=len(lost),
                           lost_sample=lost[:10], duplicates=dups, dup_flagged=dup_flagged,
                           dup_unflagged=dup_unflagged, delivered_unacked=extra, out_of_order=out_of_order))
    return report


def _check_report(reports, rounds, dup_marked=True):
    for report, sub in reports:
        for line in report:
            print(f"crash ({sub.cid}, {sub.transport}):", line)
        print(f"crash ({sub.cid}): subscriber reconnects {sub.connects}, sessions lost {sub.session_lost}")
    for report, sub in reports:
        assert sum(r["acked"] for r in report) > 0, "no message was acknowledged at all"
        for r in report:
            assert r["lost"] == 0, (f"{sub.cid}/{r['publisher']}: {r['lost']} acknowledged messages lost, "
                                    f"e.g. {r['lost_sample']}")
            assert r["out_of_order"] == 0, f"{sub.cid}/{r['publisher']}: {r['out_of_order']} out-of-order first deliveries"
            if dup_marked:
                assert r["dup_unflagged"] == 0, \
                    f"{sub.cid}/{r['publisher']}: {r['dup_unflagged']} duplicates arrived without DUP"
        assert sub.session_lost == 0, f"{sub.cid}: the persistent session was lost over a restart"


@pytest.mark.perch_only("mosquitto loses its queue on kill -9 (snapshot persistence)")
def test_crash_kill9_rounds(make_broker):
    """PERCH_CRASH_ROUNDS (default 20) rounds of 2 QoS 1 publishers + two persistent
    QoS 1 subscribers (TCP and WebSocket), kill -9 at a random moment (and in a
    quarter of the rounds once more within 50 ms of the restart, during
    recovery), restart: zero acknowledged messages lost, first deliveries in
    order per publisher, every duplicate marked DUP; duplicates counted and
    reported."""
    rounds = int(os.environ.get("PERCH_CRASH_ROUNDS", "20"))
    b = make_broker(listeners=("mqtt", "ws"), limits=BIG_QUEUES)
    _check_report(crash_rounds(b, rounds, kill=True), rounds)


def test_restart_rounds_sigterm(make_broker):
    """The crash test's harness with SIGTERM instead of kill -9 (3 rounds): nothing lost.
    Runs against mosquitto too, which validates the harness."""
    b = make_broker(listeners=("mqtt", "ws"), limits=BIG_QUEUES)
    _check_report(crash_rounds(b, 3, kill=False), 3, dup_marked=h.is_perch())


# ------------------------------------------------------------------ disk full
def _unshare_tmpfs(datadir):
    def wrap(cmd):
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o size=512k tmpfs "$0" && exec "$@"', datadir] + cmd
    return wrap


@pytest.mark.perch_only("store limit behaviour is Perch's")
@pytest.mark.parametrize("how", ["tmpfs-512k", "max_store_bytes"])
def test_disk_full(make_broker, workdir, how):
    """Fill the store (a 512 kB tmpfs in a private mount namespace, or max_store_bytes
    256 kB) with QoS 1 messages for an offline persistent subscriber: the hub stops
    acknowledging and disconnects the publisher with a logged reason, does not crash,
    delivers every acknowledged message when the subscriber drains, and accepts
    messages again once space is free."""
    if how == "tmpfs-512k":
        if not shutil.which("unshare") or os.geteuid() != 0:
            pytest.fail("needs root and unshare(1) for a private tmpfs")
        data = os.path.join(workdir, "tmpfs-data")
        os.makedirs(data)
        b = make_broker(listeners=("mqtt",), data_dir=data, wrap=_unshare_tmpfs(data))
    else:
        b = make_broker(listeners=("mqtt",), limits={"max_store_bytes": 262144})
    sub = h.raw_client(b, "tcp", client_id="df-sub", clean=False)
    sub.subscribe([("df/#", 1)])
    sub.disconnect()
    mark = b.log_mark()
    pub = h.Raw(b.ports["mqtt"], "tcp", timeout=5)
    pub.connect("df-pub")
    body = os.urandom(512).hex().encode()  # 1 kB, incompressible
    acked, refused_at = [], None
    t0 = time.monotonic()
    for i in range(3000):  # 3 MB >> 512 kB
        if time.monotonic() - t0 > 90:
            break
        try:
            pub.send(h.publish_packet("df/t", b"%06d:" % i + body, 1, pid=pub.pid()))
            p = pub.recv(10)
        except (h.Closed, OSError):
            refused_at = i
            break
        if p is None:
            refused_at = i
            break
        if p.type == h.PUBACK:
            acked.append(i)
    print(f"disk-full ({how}): {len(acked)} acked, refused at {refused_at}")
    assert refused_at is not None, "the hub acknowledged 3 MB into a 512 kB store"
    assert b.alive(), "the hub crashed at the store limit:\n" + b.log_tail(20)
    assert pub.closed or pub.is_closed_within(10), "the publisher was not disconnected at the store limit"
    line = b.wait_log(r"closed .*df-pub.*(store full|disk full)", mark, timeout=5)
    assert line, "no log line giving the reason:\n" + b.log_since(mark)[-2000:]
    print("log:", line)
    # drain
    sub = h.raw_client(b, "tcp", client_id="df-sub", clean=False)
    got = sub.messages(len(acked), timeout=30)
    got += sub.quiet(1.0)
    nums = {int(m.payload.split(b":")[0]) for m in got}
    lost = sorted(set(acked) - nums)
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:10]}"
    # space frees: publishing works again (bounded retries)
    end = time.monotonic() + 30
    ok = 0
    while time.monotonic() < end and ok < 20:
        try:
            p2 = h.raw_client(b, "tcp", client_id=f"df-pub2")
            for j in range(20):
                p2.publish("df/t", b"%06d:again" % (100000 + j), qos=1, timeout=5)
                ok += 1
            p2.disconnect()
        except (h.Closed, OSError, AssertionError):
            time.sleep(0.5)
    assert ok >= 20, "the hub did not accept messages again after the store drained"
    again = sub.messages(20, timeout=10)
    assert len(again) >= 20
    assert b.alive()


@pytest.mark.perch_only("perch-hub's store")
def test_body_stored_once_per_message(make_broker):
    """One store, one mechanism: 10 messages for 3 offline persistent
    subscribers are 10 message rows referenced by 30 queue entries (one
    queue per session); a subscriber draining its queue leaves the others'
    entries and the shared bodies in place."""
    import sqlite3
    b = make_broker(listeners=("mqtt",))
    for i in range(3):
        s = h.raw_client(b, "tcp", client_id=f"once-{i}", clean=False)
        s.subscribe([("once/#", 1)])
        s.disconnect()
    p = h.raw_client(b, "tcp", client_id="once-pub")
    for i in range(10):
        p.publish("once/t", b"body-%d" % i, qos=1)
    p.disconnect()

    def counts():
        db = sqlite3.connect(os.path.join(b.data_dir, "hub.db"))
        try:
            return (db.execute("SELECT count(*) FROM msg WHERE topic = 'once/t'").fetchone()[0],
                    db.execute("SELECT count(*) FROM entry e JOIN msg m ON m.id = e.msg "
                               "WHERE m.topic = 'once/t'").fetchone()[0],
                    db.execute("SELECT count(DISTINCT e.queue) FROM entry e JOIN msg m ON m.id = e.msg "
                               "WHERE m.topic = 'once/t'").fetchone()[0])
        finally:
            db.close()

    assert b.stop() == 0
    assert counts() == (10, 30, 3), counts()
    b.start()
    s = h.raw_client(b, "tcp", client_id="once-0", clean=False)
    assert len(s.messages(10)) == 10
    s.disconnect()
    assert b.stop() == 0
    assert counts() == (10, 20, 2), counts()
