"""The fault-injecting TCP proxy (tests/tools/faultproxy.c, driven by faultproxy.py).

Each mode is shown doing what it says against real peers: a Python TCP server of
our own (echo or sink, recording every byte and how its connection ended) and a
real perch-hub with paho clients connecting through the proxy. Observations that
something does NOT happen (stall, halfopen) are bounded windows; nothing asserts
a duration: slow's rate is measured and printed, its effect is checked through
the proxy's own "held" counter and the completeness of the data.
"""
import hashlib
import os
import select
import socket
import subprocess
import threading
import time
import types

import pytest

import hubtest
from faultproxy import FAULTPROXY_BIN, FaultProxy, FaultProxyError
from hubtest import HOST, wait_until

QUIET = 1.0  # seconds of observing that nothing arrives


# ---------------------------------------------------------------- a server of our own
class Conn:
    """One accepted connection: what arrived, and how it ended."""

    def __init__(self, sock, echo, reading):
        self.sock = sock
        self.echo = echo
        self.reading = reading  # threading.Event: clear it to stop reading
        self.data = bytearray()
        self.end = None  # None (open), "eof", "reset" or "error: ..."
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            while True:
                self.reading.wait()
                r, _, _ = select.select([self.sock], [], [], 0.1)
                if not r:
                    continue
                d = self.sock.recv(65536)
                if not d:
                    self.end = "eof"
                    if self.echo:  # an echo ends its side too
                        self.sock.shutdown(socket.SHUT_WR)
                    return
                with self.lock:
                    self.data += d
                if self.echo:
                    self.sock.sendall(d)
        except ConnectionResetError:
            self.end = "reset"
        except OSError as e:
            self.end = f"error: {e}"

    def received(self):
        with self.lock:
            return bytes(self.data)

    def send(self, data):
        self.sock.sendall(data)


class Server:
    """A loopback TCP server: accepts every connection, records each as a Conn."""

    def __init__(self, echo=False):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.echo = echo
        self.reading = threading.Event()
        self.reading.set()
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if r and not self.closed:
                s, _ = self.sock.accept()
                self.conns.append(Conn(s, self.echo, self.reading))

    def wait_conns(self, n, timeout=5):
        wait_until(lambda: len(self.conns) >= n, timeout, what=f"{n} connections at the server")
        return self.conns[n - 1]

    def close(self):
        self.closed = True
        for c in self.conns:
            try:
                c.sock.close()
            except OSError:
                pass
        self.sock.close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def echo_server():
    s = Server(echo=True)
    yield s
    s.close()


def client(fp, timeout=5):
    return socket.create_connection((HOST, fp.port), timeout=timeout)


def recv_exact(sock, n, timeout=10):
    out, end = bytearray(), time.monotonic() + timeout
    while len(out) < n:
        sock.settimeout(max(0.01, end - time.monotonic()))
        d = sock.recv(min(65536, n - len(out)))
        if not d:
            raise AssertionError(f"EOF after {len(out)} of {n} bytes")
        out += d
    return bytes(out)


def recv_end(sock, timeout=5):
    """Read until the connection ends; returns (bytes read, "eof" or "reset")."""
    out, end = bytearray(), time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"connection still open after {timeout}s ({len(out)} bytes)")
        sock.settimeout(left)
        try:
            d = sock.recv(65536)
        except ConnectionResetError:
            return bytes(out), "reset"
        if not d:
            return bytes(out), "eof"
        out += d


def nothing_arrives(sock, window=QUIET):
    """True when sock yields no byte and no EOF/RST during window seconds."""
    r, _, _ = select.select([sock], [], [], window)
    return not r


def fake_broker(fp):
    return types.SimpleNamespace(ports={"mqtt": fp.port})


# ---------------------------------------------------------------- pass
def test_pass_byte_exact_many_connections(echo_server):
    """4 MB on one connection and 1 MB on each of 16 more, all at once, echoed
    back through the proxy: every byte both ways, in order (sha256)."""
    sizes = [4 << 20] + [1 << 20] * 16
    with FaultProxy(HOST, echo_server.port) as fp:
        results = [None] * len(sizes)

        def one(i, n):
            payload = os.urandom(n)
            c = client(fp, timeout=30)
            t = threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(socket.SHUT_WR)))
            t.start()
            back, how = recv_end(c, timeout=60)
            t.join(10)
            c.close()
            results[i] = (hashlib.sha256(payload).digest() == hashlib.sha256(back).digest(),
                          len(back), how)

        threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(sizes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for i, r in enumerate(results):
            assert r is not None and r[0], f"connection {i}: {r} (want {sizes[i]} bytes back)"
            assert r[2] == "eof"
        total = sum(sizes)
        st = wait_until(lambda: (lambda s: s if s["open"] == 0 else None)(fp.stats()), 10,
                        what="every pair closed")
        assert st["accepted"] == len(sizes) and st["closed"] == len(sizes)
        assert st["bytes_up"] == total and st["bytes_down"] == total
        assert st["cuts"] == st["resets"] == st["refused"] == 0


def test_pass_half_close_forwarded(server):
    """A client's FIN reaches the server only after all its data; the server can
    still answer after it (half-close), and its FIN comes back as EOF."""
    with FaultProxy(HOST, server.port) as fp:
        c = client(fp)
        c.sendall(b"x" * 100000)
        c.shutdown(socket.SHUT_WR)
        s = server.wait_conns(1)
        wait_until(lambda: s.end == "eof", 5, what="EOF at the server")
        assert s.received() == b"x" * 100000
        s.send(b"after-fin")
        s.sock.shutdown(socket.SHUT_WR)
        assert recv_end(c) == (b"after-fin", "eof")


def test_backpressure_bounded_buffer(server):
    """A server that stops reading: the proxy stops reading the client too (the
    client's send blocks well before 64 MB); when the server reads again, every
    byte arrives, in order."""
    server.reading.clear()
    with FaultProxy(HOST, server.port, extra_args=["--buffer", "4096"]) as fp:
        c = client(fp)
        server.wait_conns(1)
        c.setblocking(False)
        chunk = os.urandom(65536)
        sent = bytearray()
        limit = 64 << 20
        while len(sent) < limit:
            _, w, _ = select.select([], [c], [], QUIET)
            if not w:
                break  # no progress for QUIET seconds: the proxy pushes back
            try:
                n = c.send(chunk)
            except BlockingIOError:
                continue
            sent += chunk[:n]
        assert len(sent) < limit, "the proxy kept reading a client whose server does not read"
        print(f"\nclient blocked after {len(sent)} bytes (proxy buffer 4096)")
        server.reading.set()
        s = server.conns[0]
        wait_until(lambda: len(s.data) >= len(sent), 30, what="every byte at the server")
        assert hashlib.sha256(s.received()).digest() == hashlib.sha256(bytes(sent)).digest()
        c.close()


@pytest.mark.perch_only("uses perch-hub")
def test_pass_paho_through_hub(broker):
    """paho publishes and subscribes QoS 1 through the proxy to a real perch-hub."""
    with FaultProxy(HOST, broker.ports["mqtt"]) as fp:
        c = hubtest.paho_client(fake_broker(fp), client_id="fp-pass")
        try:
            hubtest.paho_sub(c, "fp/pass", 1)
            for i in range(200):
                c.publish("fp/pass", f"m{i}".encode(), qos=1)
            got = hubtest.paho_msgs(c, 200, timeout=20)
            assert [m.payload for m in got] == [f"m{i}".encode() for i in range(200)]
        finally:
            hubtest.paho_stop(c)
        assert fp.stats()["bytes_up"] > 200 * 10


# ---------------------------------------------------------------- cut and reset
def test_cut_closes_with_fin_and_refuses_until_pass(echo_server):
    with FaultProxy(HOST, echo_server.port) as fp:
        c1 = client(fp)
        c1.sendall(b"hello")
        assert recv_exact(c1, 5) == b"hello"
        s1 = echo_server.wait_conns(1)
        assert fp.cmd("cut") == ""
        assert recv_end(c1) == (b"", "eof")  # FIN, not RST
        wait_until(lambda: s1.end == "eof", 5, what="EOF at the server")
        c2 = client(fp)  # accepted, then closed at once
        assert recv_end(c2) == (b"", "eof")
        assert len(echo_server.conns) == 1, "a connection made during cut reached the target"
        st = fp.stats()
        assert (st["mode"], st["cuts"], st["refused"], st["open"]) == ("cut", 1, 1, 0)
        fp.cmd("pass")
        c3 = client(fp)
        c3.sendall(b"again")
        assert recv_exact(c3, 5) == b"again"
        for c in (c1, c2, c3):
            c.close()


def test_reset_sends_rst_both_ways(echo_server):
    with FaultProxy(HOST, echo_server.port) as fp:
        c1 = client(fp)
        c1.sendall(b"hello")
        assert recv_exact(c1, 5) == b"hello"
        s1 = echo_server.wait_conns(1)
        fp.cmd("reset")
        assert recv_end(c1)[1] == "reset"
        wait_until(lambda: s1.end == "reset", 5, what="ECONNRESET at the server")
        try:
            c2 = client(fp)
        except ConnectionResetError:
            c2 = None  # the RST came before connect() returned: reset all the same
        else:
            assert recv_end(c2)[1] == "reset"
        wait_until(lambda: fp.stats()["refused"] == 1, 5, what="the connection refused")
        st = fp.stats()
        assert (st["mode"], st["resets"], st["refused"], st["open"]) == ("reset", 1, 1, 0)
        fp.cmd("pass")
        c3 = client(fp)
        c3.sendall(b"again")
        assert recv_exact(c3, 5) == b"again"
        for c in (c1, c2, c3):
            if c is None:
                continue
            c.close()


# ---------------------------------------------------------------- stall
def test_stall_delivers_nothing_until_pass_then_everything(server):
    with FaultProxy(HOST, server.port) as fp:
        c1 = client(fp)
        c1.sendall(b"before")
        s1 = server.wait_conns(1)
        wait_until(lambda: s1.received() == b"before", 5, what="bytes before the stall")
        fp.cmd("stall")
        up = os.urandom(300000)
        down = os.urandom(200000)
        threading.Thread(target=c1.sendall, args=(up,), daemon=True).start()
        threading.Thread(target=s1.send, args=(down,), daemon=True).start()
        c2 = client(fp)  # accepted and stalled: the target is not even dialled
        c2.sendall(b"new during stall")
        c2.shutdown(socket.SHUT_WR)
        assert nothing_arrives(c1), "the client got bytes during a stall"
        assert s1.received() == b"before" and s1.end is None
        assert len(server.conns) == 1, "a connection made during the stall reached the target"
        st = fp.stats()
        assert st["mode"] == "stall" and st["open"] == 2
        fp.cmd("pass")
        assert recv_exact(c1, len(down), timeout=30) == down
        wait_until(lambda: len(s1.data) >= 6 + len(up), 30, what="the stalled bytes")
        assert s1.received() == b"before" + up
        s2 = server.wait_conns(2)
        wait_until(lambda: s2.end == "eof", 10, what="the new connection's bytes and FIN")
        assert s2.received() == b"new during stall"
        c1.close()
        c2.close()


@pytest.mark.perch_only("uses perch-hub")
def test_stall_holds_puback_until_pass(broker):
    """A QoS 1 PUBLISH sent during a stall is acknowledged only after pass."""
    with FaultProxy(HOST, broker.ports["mqtt"]) as fp:
        c = hubtest.paho_client(fake_broker(fp), client_id="fp-stall", keepalive=60)
        try:
            fp.cmd("stall")
            info = c.publish("fp/stall", b"held", qos=1)
            time.sleep(QUIET)  # observation window: no PUBACK may arrive
            assert not info.is_published(), "PUBACK crossed a stalled proxy"
            fp.cmd("pass")
            info.wait_for_publish(10)
            assert info.is_published()
        finally:
            hubtest.paho_stop(c)


# ---------------------------------------------------------------- halfopen
def test_halfopen_black_holes_and_never_closes(server):
    with FaultProxy(HOST, server.port) as fp:
        c1 = client(fp)
        c1.sendall(b"alive")
        s1 = server.wait_conns(1)
        wait_until(lambda: s1.received() == b"alive", 5, what="bytes before halfopen")
        fp.cmd("halfopen")
        c1.sendall(b"a" * 1000)
        s1.send(b"b" * 1000)
        assert nothing_arrives(c1), "bytes (or a close) crossed a half-open path to the client"
        assert s1.received() == b"alive" and s1.end is None
        c2 = client(fp)  # new during halfopen: black-holed as well
        c2.sendall(b"c" * 10)
        assert nothing_arrives(c2)
        assert len(server.conns) == 1
        fp.cmd("pass")
        c1.sendall(b"still dead")  # existing connections stay black-holed
        c3 = client(fp)  # new ones work
        c3.sendall(b"fresh")
        s3 = server.wait_conns(2)
        wait_until(lambda: s3.received() == b"fresh", 5, what="a new connection after pass")
        assert nothing_arrives(c1)
        assert s1.received() == b"alive" and s1.end is None
        st = fp.stats()
        assert st["discarded"] >= 1000 + 1000 + 10 + len(b"still dead"), st
        c2.close()  # a client closing its end: the target is not told
        time.sleep(QUIET)  # observation window
        assert s1.end is None
        fp.cmd("cut")  # cut closes black holes too
        assert recv_end(c1) == (b"", "eof")
        wait_until(lambda: s1.end == "eof", 5, what="EOF at the server after cut")
        c1.close()
        c3.close()


@pytest.mark.perch_only("uses perch-hub")
def test_halfopen_noticed_by_keepalive(broker):
    """A paho client (keepalive 1 s) notices a half-open path only through its
    keepalive; the hub notices too (1.5x keepalive) and the proxy, seeing both
    ends go, ends with no open connection."""
    with FaultProxy(HOST, broker.ports["mqtt"]) as fp:
        c = hubtest.paho_client(fake_broker(fp), client_id="fp-halfopen", keepalive=1)
        try:
            assert not c.disconnected.is_set()
            fp.cmd("halfopen")
            c.reconnect_delay_set(60, 60)  # paho must not reconnect within the test
            assert c.disconnected.wait(20), "paho did not notice a dead path"
            wait_until(lambda: fp.stats()["open"] == 0, 20,
                       what="both ends of the black-holed connection gone")
            assert fp.stats()["discarded"] > 0  # the PINGREQs went into the hole
        finally:
            hubtest.paho_stop(c)


# ---------------------------------------------------------------- slow
def test_slow_throttles_and_delivers_everything(echo_server):
    """slow R: everything arrives in order both ways; the proxy held writes back
    (its counter), and the measured rate is printed, not asserted."""
    rate = 256 << 10
    with FaultProxy(HOST, echo_server.port) as fp:
        fp.cmd(f"slow {rate}")
        payload = os.urandom(512 << 10)
        c = client(fp, timeout=60)
        t0 = time.monotonic()
        threading.Thread(target=c.sendall, args=(payload,), daemon=True).start()
        back = recv_exact(c, len(payload), timeout=120)
        took = time.monotonic() - t0
        assert back == payload
        st = fp.stats()
        assert st["mode"] == "slow" and st["held"] > 0, st
        print(f"\nslow {rate} B/s: {len(payload)} bytes echoed in {took:.2f} s "
              f"= {len(payload) / took / 1024:.0f} KiB/s")
        fp.cmd("slow 0 200")  # latency only
        t0 = time.monotonic()
        for i in range(5):
            c.sendall(f"ping{i}".encode())
            assert recv_exact(c, 5, timeout=30) == f"ping{i}".encode()
        print(f"slow 0 200: 5 round trips in {time.monotonic() - t0:.2f} s")
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pieces = [os.urandom(100) for _ in range(300)]  # more delayed chunks than it tracks
        threading.Thread(target=lambda: [c.send(x) for x in pieces], daemon=True).start()
        assert recv_exact(c, 30000, timeout=60) == b"".join(pieces)
        fp.cmd("pass")
        c.sendall(b"fast")
        assert recv_exact(c, 4) == b"fast"
        c.close()


# ---------------------------------------------------------------- reset-after
def test_reset_after_up_cuts_after_exactly_n_bytes(server):
    with FaultProxy(HOST, server.port) as fp:
        c = client(fp)
        c.sendall(b"0123456789")
        s = server.wait_conns(1)
        wait_until(lambda: len(s.data) == 10, 5, what="first bytes")
        fp.cmd("reset-after 1000")
        payload = os.urandom(50000)
        try:
            c.sendall(payload)
        except (ConnectionResetError, BrokenPipeError):
            pass
        wait_until(lambda: s.end is not None, 10, what="the reset at the server")
        assert s.end == "reset"
        assert s.received() == b"0123456789" + payload[:1000]
        assert recv_end(c)[1] == "reset"
        st = fp.stats()
        assert (st["mode"], st["resets"], st["bytes_up"]) == ("pass", 1, 1010)
        c2 = client(fp)  # back to pass
        c2.sendall(b"after")
        s2 = server.wait_conns(2)
        wait_until(lambda: s2.received() == b"after", 5, what="a connection after the reset")
        c.close()
        c2.close()


def test_reset_after_counts_small_pieces(server):
    """991 bytes sent 10 at a time: the count is kept across many small writes."""
    with FaultProxy(HOST, server.port) as fp:
        c = client(fp)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = server.wait_conns(1)
        fp.cmd("reset-after 991 up")
        payload = os.urandom(1500)
        try:
            for i in range(0, len(payload), 10):
                c.send(payload[i:i + 10])
                if i < 980:  # wait for each piece, so that the proxy sees it alone
                    wait_until(lambda: len(s.data) >= i + 10, 5, what="one piece")
        except (ConnectionResetError, BrokenPipeError):
            pass
        wait_until(lambda: s.end is not None, 10, what="the reset at the server")
        assert (s.end, s.received()) == ("reset", payload[:991])
        c.close()


def test_reset_after_down(server):
    with FaultProxy(HOST, server.port) as fp:
        c = client(fp)
        s = server.wait_conns(1)
        fp.cmd("reset-after 777 down")
        payload = os.urandom(30000)
        try:
            s.send(payload)
        except (ConnectionResetError, BrokenPipeError):
            pass
        got, how = recv_end(c, timeout=10)
        assert (got, how) == (payload[:777], "reset")
        wait_until(lambda: s.end == "reset", 5, what="the reset at the server")
        c.close()


@pytest.mark.perch_only("uses perch-hub")
def test_reset_after_mid_publish(broker):
    """A PUBLISH cut in half: the hub sees a truncated packet and a reset; paho
    sees a reset; nothing of the cut message is delivered."""
    with FaultProxy(HOST, broker.ports["mqtt"]) as fp:
        w = hubtest.paho_client(broker, client_id="fp-witness")
        c = hubtest.paho_client(fake_broker(fp), client_id="fp-cut", keepalive=60)
        try:
            hubtest.paho_sub(w, "fp/cut", 1)
            c.reconnect_delay_set(60, 60)
            up = fp.stats()["bytes_up"]
            fp.cmd("reset-after 50")
            c.publish("fp/cut", b"z" * 1000, qos=1)
            assert c.disconnected.wait(10), "paho did not see the reset"
            assert fp.stats()["bytes_up"] == up + 50
            assert hubtest.paho_msgs(w, 1, timeout=QUIET) == []
        finally:
            hubtest.paho_stop(c)
            hubtest.paho_stop(w)


# ---------------------------------------------------------------- control channel
BAD_LINES = [
    (b"", "empty command"),
    (b"   ", "empty command"),
    (b"bogus", "unknown command 'bogus'"),
    (b"PASS", "unknown command"),
    (b"pass now", "pass takes no arguments"),
    (b"stats please", "stats takes no arguments"),
    (b"slow", "usage: slow"),
    (b"slow 1 2 3", "usage: slow"),
    (b"slow -5", "bad rate '-5'"),
    (b"slow 1e6", "bad rate"),
    (b"slow 99999999999999999999999", "bad rate"),
    (b"slow 1000000001", "bad rate"),
    (b"slow 10 abc", "bad delay 'abc'"),
    (b"slow 10 600001", "bad delay"),
    (b"reset-after", "usage: reset-after"),
    (b"reset-after x", "bad byte count"),
    (b"reset-after 18446744073709551616", "bad byte count"),
    (b"reset-after 10 sideways", "direction must be up or down"),
    (b"a b c d e f", "too many arguments"),
    (b"x" * 257, "line too long"),
    (b"y" * 100000, "line too long"),
    (b"pa\x00ss", "NUL byte"),
    (b"\xff\xfe\x01\x7f", "unknown command '????'"),
    (b"\x1b[31mred", "unknown command '?[31mred'"),
]


def test_control_rejects_hostile_lines(server):
    with FaultProxy(HOST, server.port, control_tcp=True) as fp:
        for line, why in BAD_LINES:
            reply = fp.raw(line)
            assert reply.startswith("error ") and why in reply, (line[:40], reply)
            assert len(reply) < 600
        assert fp.cmd("stats\r").startswith("mode=pass")  # CRLF is fine
        fp._ctl.sendall(b"pass\nstall\r\nstats\n")  # pipelined: answered in order
        assert [fp.reply(), fp.reply(), fp.reply().split()[:2]] == ["ok", "ok", ["ok", "mode=stall"]]
        fp.cmd("pass")
        garbage = os.urandom(50000) + b"\n"  # each newline in it ends one (error) line
        fp._ctl.sendall(garbage)
        for _ in range(garbage.count(b"\n")):
            assert fp.reply().startswith(("error ", "ok"))
        assert fp.cmd("stats").startswith("mode=pass")
        c = client(fp)
        c.sendall(b"still proxying")
        s = server.wait_conns(1)
        wait_until(lambda: s.received() == b"still proxying", 5, what="proxying after garbage")
        c.close()


def test_control_client_limits(server):
    """At most 8 control clients (the 9th is told why and closed); a client that
    never reads its replies is dropped, and the proxy serves the others."""
    with FaultProxy(HOST, server.port, control_tcp=True) as fp:
        extra = []
        for _ in range(7):  # fp holds one already
            s = socket.create_connection((HOST, fp.control_port), timeout=5)
            s.sendall(b"stats\n")
            assert s.makefile("rb").readline().startswith(b"ok mode=")
            extra.append(s)
        s9 = socket.create_connection((HOST, fp.control_port), timeout=5)
        assert s9.makefile("rb").readline() == b"error too many control clients\n"
        assert s9.recv(10) == b""
        s9.close()
        hog = extra.pop()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.setblocking(False)
        dropped = False
        end = time.monotonic() + 30
        while time.monotonic() < end and not dropped:
            try:
                hog.send(b"stats\n" * 1000)
            except BlockingIOError:
                time.sleep(0.01)
            except (ConnectionResetError, BrokenPipeError):
                dropped = True
        assert dropped, "a control client that never reads was not dropped"
        assert "does not read its replies" in fp.log()
        assert fp.cmd("stats").startswith("mode=pass")
        s = socket.create_connection((HOST, fp.control_port), timeout=5)  # its slot is free
        s.sendall(b"stats\n")
        assert s.makefile("rb").readline().startswith(b"ok mode=")
        for x in extra + [s, hog]:
            x.close()


def test_control_fd_eof_ends_the_proxy(server):
    """With --control-fd (the driver's default), the proxy exits 0 when its driver
    goes away."""
    fp = FaultProxy(HOST, server.port)
    fp._ctl.close()
    fp.proc.wait(10)  # raises if it is still running
    assert fp.stop() == 0  # already exited: only collects and checks the code


@pytest.mark.parametrize("args,rc,why", [
    ([], 2, "usage"),
    (["--listen", "127.0.0.1:0"], 2, "usage"),
    (["--listen", "127.0.0.1", "--target", "127.0.0.1:1"], 2, "want HOST:PORT"),
    (["--listen", "127.0.0.1:0", "--target", "127.0.0.1:0"], 2, "bad port"),
    (["--listen", "127.0.0.1:99999", "--target", "127.0.0.1:1"], 2, "bad port"),
    (["--listen", "localhost:0", "--target", "127.0.0.1:1"], 2, "cannot resolve"),
    (["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", "--control", "127.0.0.1:0",
      "--control-fd", "5"], 2, "usage"),
    (["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", "--buffer", "10"], 2,
     "bad value '10' for --buffer"),
    (["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", "--control-fd", "77"], 1,
     "not usable"),
])
def test_bad_command_lines(args, rc, why):
    p = subprocess.run([FAULTPROXY_BIN] + args, capture_output=True, text=True, timeout=10)
    assert p.returncode == rc, p.stderr
    assert why in p.stderr


def test_busy_port_and_unreachable_target(server):
    with FaultProxy(HOST, server.port) as fp:
        p = subprocess.run([FAULTPROXY_BIN, "--listen", f"{HOST}:{fp.port}", "--target",
                            f"{HOST}:{server.port}"], capture_output=True, text=True, timeout=10)
        assert p.returncode == 1 and "cannot listen" in p.stderr
    dead = hubtest.free_port()
    with FaultProxy(HOST, dead) as fp:
        c = client(fp)
        assert recv_end(c)[0] == b""
        wait_until(lambda: fp.stats()["refused"] == 1, 5, what="the refused count")
        c.close()


def test_max_conns(echo_server):
    """--max-conns 2: a third connection is accepted and closed; the two go on."""
    with FaultProxy(HOST, echo_server.port, extra_args=["--max-conns", "2"]) as fp:
        a, b = client(fp), client(fp)
        for x in (a, b):
            x.sendall(b"ok")
            assert recv_exact(x, 2) == b"ok"
        c = client(fp)
        assert recv_end(c) == (b"", "eof")
        st = fp.stats()
        assert (st["accepted"], st["open"], st["refused"]) == (3, 2, 1)
        a.close()
        wait_until(lambda: fp.stats()["open"] == 1, 5, what="a slot freed")
        d = client(fp)
        d.sendall(b"in")
        assert recv_exact(d, 2) == b"in"
        for x in (b, c, d):
            x.close()


def test_sigterm_with_connections_open(echo_server):
    """SIGTERM while connections are open and stalled: exit 0 (stop() asserts it)."""
    fp = FaultProxy(HOST, echo_server.port)
    conns = [client(fp) for _ in range(20)]
    for c in conns:
        c.sendall(b"x")
        assert recv_exact(c, 1) == b"x"
    fp.cmd("stall")
    for c in conns:
        c.sendall(b"y" * 1000)
    assert fp.stop() == 0
    for c in conns:
        c.close()
