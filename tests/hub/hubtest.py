"""hubtest — helpers for perch-hub's integration tests.

Broker: start perch-hub (or, with PERCH_HUB_AGAINST=mosquitto, Debian's mosquitto
with a generated config) on free loopback ports with a private data dir, wait for
its ready line (bounded), stop it by PID with SIGTERM (exit code checked), kill -9,
restart on the same ports and data dir, read its log, its RSS and its metrics.

Raw: a hand-written MQTT 3.1.1 client over TCP or WebSocket (RFC 6455 framing of
our own), so tests control every byte: split or packed frames, text frames,
malformed packets, PUBACK or no PUBACK, the DUP flag.

Every wait here is bounded; every address is loopback.
"""
import base64
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request

AGAINST = os.environ.get("PERCH_HUB_AGAINST", "perch")
ROOT = os.environ.get("PERCH_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
O = os.environ.get("O", "build")
HUB_BIN = os.environ.get("PERCH_HUB_BIN") or (
    O if os.path.isabs(O) else os.path.join(ROOT, O)) + "/bin/perch-hub"
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
READY_TIMEOUT = float(os.environ.get("PERCH_HUB_READY_TIMEOUT", "15"))
HOST = "127.0.0.1"


def is_perch():
    return AGAINST == "perch"


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
        return lo if lo > 21000 else 32768
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A port nothing listens on, below the kernel's ephemeral range: one
    picked there (bind to port 0) can be taken by any outgoing connection
    before the server under test binds it."""
    lo = _ephemeral_low()
    for _ in range(200):
        p = random.randrange(20000, lo)
        s = socket.socket()
        try:
            s.bind((HOST, p))
        except OSError:
            continue
        finally:
            s.close()
        return p
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_until(pred, timeout, interval=0.02, what="condition"):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- TLS material
def make_cert(dirpath):
    """Self-signed cert for 127.0.0.1/localhost; returns (cert, key) paths."""
    cert, key = os.path.join(dirpath, "hub.crt"), os.path.join(dirpath, "hub.key")
    if not os.path.exists(cert):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", key, "-out", cert],
            check=True, capture_output=True, timeout=60)
    return cert, key


# ---------------------------------------------------------------- brokers
class Broker:
    """One broker process. kind: 'perch' or 'mosquitto'.

    listeners: subset of ('mqtt', 'ws', 'mqtts', 'wss'); ports are chosen once and
    kept across restarts. limits: dict of hub config keys (max_packet_size, ...),
    written to a --config YAML for perch and mapped onto mosquitto's options.
    """

    def __init__(self, workdir, kind=AGAINST, listeners=("mqtt", "ws"), anonymous=True,
                 limits=None, metrics=True, tls=None, extra_args=(), wrap=None, data_dir=None):
        self.kind = kind
        self.workdir = workdir
        self.data_dir = data_dir or os.path.join(workdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.ports = {name: free_port() for name in listeners}
        self.metrics_port = free_port() if (metrics and kind == "perch") else None
        self.anonymous = anonymous
        self.limits = dict(limits or {})
        self.tls = tls
        self.extra_args = list(extra_args)
        self.wrap = wrap  # callable(cmd) -> cmd, e.g. an unshare wrapper
        self.proc = None
        self.log_path = os.path.join(workdir, f"{kind}.log")
        self.starts = 0
        self._log_mark = 0

    # -- command lines
    def command(self):
        if self.kind == "perch":
            cmd = [HUB_BIN, "--data-dir", self.data_dir, "--log-level",
                   os.environ.get("PERCH_HUB_LOG_LEVEL", "info")]
            for name, port in self.ports.items():
                cmd += ["--listen", f"{name}://{HOST}:{port}"]
            if self.anonymous:
                cmd.append("--allow-anonymous")
            if self.metrics_port:
                cmd += ["--metrics", f"{HOST}:{self.metrics_port}"]
            if self.tls:
                cmd += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
            if self.limits:
                cfg = os.path.join(self.workdir, "hub.yaml")
                with open(cfg, "w") as f:
                    f.write("hub:\n")
                    for k, v in self.limits.items():
                        f.write(f"  {k}: {v}\n")
                cmd += ["--config", cfg]
            cmd += self.extra_args
        else:
            cfg = os.path.join(self.workdir, "mosquitto.conf")
            lines = ["user root", "per_listener_settings false",
                     f"allow_anonymous {'true' if self.anonymous else 'false'}",
                     "persistence true", f"persistence_location {self.data_dir}/",
                     "autosave_interval 1800", "log_dest stderr", "log_type all",
                     "connection_messages true", "max_keepalive 65535"]
            lim = self.limits
            simple = {"max_packet_size": "max_packet_size", "max_inflight": "max_inflight_messages",
                      "max_queued_messages": "max_queued_messages",
                      "max_queued_bytes": "max_queued_bytes"}
            for k, opt in simple.items():
                if k in lim:
                    lines.append(f"{opt} {lim[k]}")
            for name, port in self.ports.items():
                if name in ("ws", "wss"):
                    lines += [f"listener {port} lo", "protocol websockets"]
                else:
                    lines += [f"listener {port} {HOST}", "protocol mqtt"]
                if name in ("mqtts", "wss"):
                    lines += [f"certfile {self.tls[0]}", f"keyfile {self.tls[1]}"]
                if "max_connections" in lim:  # mosquitto 2.0.11 admits max_connections + 1
                    lines.append(f"max_connections {max(1, lim['max_connections'] - 1)}")
            with open(cfg, "w") as f:
                f.write("\n".join(lines) + "\n")
            cmd = [MOSQUITTO_BIN, "-c", cfg] + self.extra_args
        return self.wrap(cmd) if self.wrap else cmd

    # -- lifecycle
    def start(self, wait=True):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self.kind == "perch" and not os.access(HUB_BIN, os.X_OK):
            raise AssertionError(f"{HUB_BIN} is not built (make O={O})")
        self._log_mark = self._log_size()
        logf = open(self.log_path, "ab")
        logf.write(f"===== start #{self.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
        logf.flush()
        self._log_mark = self._log_size()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=logf, start_new_session=True)
        logf.close()
        self.starts += 1
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=READY_TIMEOUT):
        pat = "perch-hub ready" if self.kind == "perch" else r"mosquitto version \S+ running"
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.kind} exited with {self.proc.returncode} before ready:\n"
                                     + self.log_tail(30))
            if re.search(pat, self.log_since_start()):
                break
            if time.monotonic() > end:
                raise AssertionError(f"{self.kind} not ready after {timeout}s:\n" + self.log_tail(30))
            time.sleep(0.02)
        for name, port in self.ports.items():  # and the sockets really accept
            wait_until(lambda: _can_connect(port), 5, what=f"{name} port {port}")
        return self

    def stop(self, timeout=20):
        """SIGTERM by PID; returns the exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, graceful=True):
        if graceful:
            rc = self.stop()
            assert rc == 0, f"{self.kind} exited {rc} on SIGTERM:\n" + self.log_tail(20)
        else:
            self.kill9()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    # -- observation
    def _log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_since_start(self):
        with open(self.log_path, "rb") as f:
            f.seek(self._log_mark)
            return f.read().decode("utf-8", "replace")

    def log_mark(self):
        return self._log_size()

    def log_since(self, mark):
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_log(self, regex, mark=0, timeout=5):
        """Wait for a log line (after byte offset mark) matching regex; returns it."""
        rx = re.compile(regex, re.I)
        end = time.monotonic() + timeout
        while True:
            for line in self.log_since(mark).splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > end:
                return None
            time.sleep(0.05)

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def metrics_text(self):
        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5) as r:
            assert r.status == 200
            return r.read().decode()

    def metrics(self):
        return parse_metrics(self.metrics_text())

    def url(self, name, path="/mqtt"):
        scheme = {"mqtt": "mqtt", "ws": "ws", "mqtts": "mqtts", "wss": "wss"}[name]
        return f"{scheme}://{HOST}:{self.ports[name]}" + (path if name in ("ws", "wss") else "")


def _can_connect(port):
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return True
    except OSError:
        return False


def parse_metrics(text):
    """{'name{label="v",...}': float} plus {'name': float} for unlabelled samples."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})?)\s+(\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(3))
    return out


def metric_sum(metrics, name, **labels):
    """Sum of samples of a metric whose labels include the given ones."""
    total, found = 0.0, False
    for key, v in metrics.items():
        base = key.split("{", 1)[0]
        if base != name:
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', key))
        if all(lab.get(k) == str(val) for k, val in labels.items()):
            total += v
            found = True
    return total if found else None


# ---------------------------------------------------------------- MQTT codec
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mstr(s):
    b = s if isinstance(s, (bytes, bytearray)) else s.encode()
    return struct.pack("!H", len(b)) + b


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect_packet(client_id="", clean=True, keepalive=60, will=None, user=None, password=None,
                   proto_name="MQTT", level=4):
    flags = 0x02 if clean else 0
    payload = mstr(client_id)
    if will:  # (topic, payload, qos, retain)
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
        payload += mstr(will[0]) + mstr(will[1])
    if user is not None:
        flags |= 0x80
        payload += mstr(user)
    if password is not None:
        flags |= 0x40
        payload += mstr(password)
    body = mstr(proto_name) + bytes([level, flags]) + struct.pack("!H", keepalive) + payload
    return packet(CONNECT, 0, body)


def publish_packet(topic, payload=b"", qos=0, retain=False, pid=None, dup=False):
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = mstr(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(PUBLISH, flags, body)


def subscribe_packet(pid, topics):
    body = struct.pack("!H", pid) + b"".join(mstr(t) + bytes([q]) for t, q in topics)
    return packet(SUBSCRIBE, 2, body)


def unsubscribe_packet(pid, topics):
    return packet(UNSUBSCRIBE, 2, struct.pack("!H", pid) + b"".join(mstr(t) for t in topics))


def puback_packet(pid):
    return packet(PUBACK, 0, struct.pack("!H", pid))


PINGREQ_PACKET = bytes([0xC0, 0])
DISCONNECT_PACKET = bytes([0xE0, 0])


class Closed(Exception):
    pass


class Packet:
    def __init__(self, first, body):
        self.type = first >> 4
        self.flags = first & 0x0F
        self.body = body
        if self.type == PUBLISH:
            self.dup = bool(self.flags & 8)
            self.qos = (self.flags >> 1) & 3
            self.retain = bool(self.flags & 1)
            n = struct.unpack("!H", body[:2])[0]
            self.topic = body[2:2 + n].decode("utf-8", "replace")
            pos = 2 + n
            self.pid = None
            if self.qos:
                self.pid = struct.unpack("!H", body[pos:pos + 2])[0]
                pos += 2
            self.payload = bytes(body[pos:])
        elif self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
            self.pid = struct.unpack("!H", body[:2])[0]
        elif self.type == SUBACK:
            self.pid = struct.unpack("!H", body[:2])[0]
            self.granted = list(body[2:])
        elif self.type == CONNACK:
            self.session_present = bool(body[0] & 1)
            self.rc = body[1]

    def __repr__(self):
        if self.type == PUBLISH:
            return f"<PUBLISH {self.topic} q{self.qos} pid={self.pid} dup={self.dup} r={self.retain} {self.payload[:40]!r}>"
        return f"<packet type {self.type} flags {self.flags} {bytes(self.body[:20])!r}>"


class Raw:
    """A raw MQTT connection over 'tcp' or 'ws' (optionally TLS with tls=True)."""

    def __init__(self, port, transport="tcp", path="/mqtt", tls=False, timeout=5,
                 subprotocol="mqtt", rcvbuf=None):
        self.transport = transport
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        self.sock = sock
        self.buf = bytearray()  # MQTT byte stream received
        self.raw = bytearray()  # undecoded socket bytes (ws)
        self.closed = False
        self.ws_close = None
        self.next_pid = 1
        if transport == "ws":
            self._ws_handshake(path, port, subprotocol)

    # -- websocket
    def _ws_handshake(self, path, port, subprotocol):
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if subprotocol:
            req += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        end = time.monotonic() + 5
        while b"\r\n\r\n" not in self.raw:
            if time.monotonic() > end:
                raise AssertionError("websocket handshake timed out")
            d = self.sock.recv(4096)
            if not d:
                raise Closed("closed during websocket handshake")
            self.raw += d
        head, _, rest = bytes(self.raw).partition(b"\r\n\r\n")
        self.raw = bytearray(rest)
        status = head.split(b"\r\n")[0]
        if b" 101" not in status:
            raise Closed(f"websocket upgrade refused: {status!r}")
        self.handshake_headers = head.decode("latin-1")

    @staticmethod
    def ws_frame(payload, opcode=2, fin=True, mask=True):
        hdr = bytearray([(0x80 if fin else 0) | opcode])
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            hdr.append(mbit | n)
        elif n < 65536:
            hdr.append(mbit | 126)
            hdr += struct.pack("!H", n)
        else:
            hdr.append(mbit | 127)
            hdr += struct.pack("!Q", n)
        if not mask:
            return bytes(hdr) + payload
        key = os.urandom(4)
        # fast XOR via int arithmetic
        k = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big") if n else b""
        return bytes(hdr) + key + masked

    def _ws_parse(self):
        while True:
            r = self.raw
            if len(r) < 2:
                return
            op = r[0] & 0x0F
            n = r[1] & 0x7F
            pos = 2
            if n == 126:
                if len(r) < 4:
                    return
                n = struct.unpack("!H", r[2:4])[0]
                pos = 4
            elif n == 127:
                if len(r) < 10:
                    return
                n = struct.unpack("!Q", r[2:10])[0]
                pos = 10
            if r[1] & 0x80:
                pos += 4  # server must not mask; tolerate
            if len(r) < pos + n:
                return
            data = bytes(r[pos:pos + n])
            del r[:pos + n]
            if op in (0, 2):
                self.buf += data
            elif op == 1:
                self.buf += data  # a text frame from the server is its own bug; keep bytes
            elif op == 8:
                self.ws_close = data
                self.closed = True
            elif op == 9:
                try:
                    self.sock.sendall(self.ws_frame(data, opcode=10))
                except OSError:
                    pass

    # -- sending
    def send(self, data):
        """Send MQTT bytes: over ws, as one binary frame."""
        if self.transport == "ws":
            data = self.ws_frame(data)
        self.sock.sendall(data)

    def send_frames(self, chunks, opcode=2):
        assert self.transport == "ws"
        self.sock.sendall(b"".join(self.ws_frame(c, opcode=opcode) for c in chunks))

    def send_raw(self, data):
        self.sock.sendall(data)

    def pid(self):
        p = self.next_pid
        self.next_pid = p % 65535 + 1
        return p

    # -- receiving
    def _fill(self, timeout):
        if self.closed:
            raise Closed("closed")
        self.sock.settimeout(max(timeout, 0.001))
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError) as e:
            self.closed = True
            raise Closed(str(e))
        if not d:
            self.closed = True
            raise Closed("eof")
        if self.transport == "ws":
            self.raw += d
            self._ws_parse()
        else:
            self.buf += d
        return True

    def _take(self):
        b = self.buf
        if len(b) < 2:
            return None
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(b):
                return None
            n += (b[i] & 0x7F) * mult
            mult *= 128
            i += 1
            if not b[i - 1] & 0x80:
                break
            if i > 4:
                raise AssertionError("server sent a malformed remaining length")
        if len(b) < i + n:
            return None
        p = Packet(b[0], bytes(b[i:i + n]))
        del b[:i + n]
        return p

    def recv(self, timeout=5):
        """Next packet; None on timeout; raises Closed on EOF."""
        end = time.monotonic() + timeout
        while True:
            p = self._take()
            if p:
                return p
            if self.closed and self.transport == "ws":
                raise Closed("websocket close")
            left = end - time.monotonic()
            if left <= 0:
                return None
            self._fill(left)

    def expect(self, ptype, timeout=5):
        p = self.recv(timeout)
        assert p is not None, f"timed out waiting for packet type {ptype}"
        assert p.type == ptype, f"expected packet type {ptype}, got {p!r}"
        return p

    def is_closed_within(self, timeout):
        """True if the peer closes the connection within timeout (packets ignored)."""
        end = time.monotonic() + timeout
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                if self._take() is None:
                    self._fill(min(left, 0.5))
        except Closed:
            return True
        except AssertionError:
            self.buf.clear()
            return self.is_closed_within(max(0, end - time.monotonic()))

    # -- conveniences
    def connect(self, client_id="", clean=True, keepalive=60, will=None, user=None,
                password=None, timeout=5):
        self.send(connect_packet(client_id, clean, keepalive, will, user, password))
        p = self.expect(CONNACK, timeout)
        return p

    def subscribe(self, topics, timeout=5):
        if isinstance(topics, str):
            topics = [(topics, 1)]
        pid = self.pid()
        self.send(subscribe_packet(pid, topics))
        while True:
            p = self.recv(timeout)
            assert p is not None, "no SUBACK"
            if p.type == SUBACK:
                assert p.pid == pid
                return p.granted
            self._stash(p)

    def publish(self, topic, payload=b"", qos=0, retain=False, timeout=5, dup=False):
        pid = self.pid() if qos else None
        self.send(publish_packet(topic, payload, qos, retain, pid, dup))
        if qos == 1:
            while True:
                p = self.recv(timeout)
                assert p is not None, f"no PUBACK for pid {pid}"
                if p.type == PUBACK and p.pid == pid:
                    return pid
                self._stash(p)
        return pid

    def _stash(self, p):
        self.__dict__.setdefault("stash", []).append(p)

    def messages(self, count, timeout=5, ack=True):
        """Collect count PUBLISH packets (acking QoS 1 unless ack=False)."""
        out = [p for p in self.__dict__.pop("stash", []) if p.type == PUBLISH]
        for p in out:
            if ack and p.qos == 1:
                self.send(puback_packet(p.pid))
        end = time.monotonic() + timeout
        while len(out) < count:
            left = end - time.monotonic()
            if left <= 0:
                break
            p = self.recv(left)
            if p is None:
                break
            if p.type == PUBLISH:
                out.append(p)
                if ack and p.qos == 1:
                    self.send(puback_packet(p.pid))
        return out

    def quiet(self, duration=1.0, ack=True):
        """Messages that arrive within duration (expecting none, usually)."""
        return self.messages(10 ** 9, timeout=duration, ack=ack)

    def sync(self, timeout=5):
        """PINGREQ/PINGRESP round trip: everything sent before has been processed."""
        self.send(PINGREQ_PACKET)
        while True:
            p = self.recv(timeout)
            assert p is not None, "no PINGRESP"
            if p.type == PINGRESP:
                return
            self._stash(p)

    def disconnect(self, sync=True):
        try:
            if sync and not self.closed:
                self.sync()
            self.send(DISCONNECT_PACKET)
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


def raw_client(broker, transport="tcp", client_id="", clean=True, keepalive=60, will=None,
               path="/mqtt", expect_rc=0, **kw):
    port = broker.ports["mqtt" if transport == "tcp" else "ws"]
    c = Raw(port, transport, path=path, **kw)
    ack = c.connect(client_id, clean, keepalive, will)
    assert ack.rc == expect_rc, f"CONNACK rc {ack.rc}, want {expect_rc}"
    c.session_present = ack.session_present
    return c


class Witness:
    """A well-behaved client connected throughout a hostile test."""

    def __init__(self, broker, transport="tcp"):
        self.broker = broker
        self.topic = f"witness/{os.getpid()}/{time.monotonic_ns()}"
        self.sub = raw_client(broker, transport, client_id=f"w-sub-{time.monotonic_ns()}")
        assert self.sub.subscribe([(self.topic, 1)]) == [1]
        self.n = 0

    def check(self):
        self.n += 1
        pub = raw_client(self.broker, "tcp", client_id=f"w-pub-{time.monotonic_ns()}")
        body = f"still here {self.n}".encode()
        pub.publish(self.topic, body, qos=1)
        pub.disconnect()
        got = self.sub.messages(1, timeout=5)
        assert got and got[0].payload == body, \
            f"witness client did not get its message (got {got!r}); other clients were disturbed"
        return True


# ---------------------------------------------------------------- paho
def paho_client(broker, transport="tcp", client_id="", clean=True, keepalive=60, will=None,
                path="/mqtt", tls_ca=None, timeout=5, connect=True):
    import paho.mqtt.client as mqtt
    import queue
    tname = "websockets" if transport in ("ws", "wss") else "tcp"
    c = mqtt.Client(client_id=client_id, clean_session=clean, transport=tname,
                    protocol=mqtt.MQTTv311)
    c.q = queue.Queue()
    c.connack = threading.Event()
    c.subacks = {}
    c.rc = None
    c.disconnected = threading.Event()

    def on_connect(cl, ud, flags, rc):
        c.rc = rc
        c.session_present = flags.get("session present", 0)
        c.connack.set()

    def on_message(cl, ud, msg):
        c.q.put(msg)

    def on_subscribe(cl, ud, mid, granted):
        c.subacks[mid] = granted

    def on_disconnect(cl, ud, rc):
        c.disconnected.set()

    c.on_connect, c.on_message, c.on_subscribe, c.on_disconnect = (
        on_connect, on_message, on_subscribe, on_disconnect)
    if tname == "websockets":
        c.ws_set_options(path=path)
    if transport in ("mqtts", "wss"):
        c.tls_set(ca_certs=tls_ca)
    if will:
        c.will_set(will[0], will[1], will[2], will[3])
    port = broker.ports[{"tcp": "mqtt"}.get(transport, transport)]
    if connect:
        c.connect(HOST, port, keepalive)
        c.loop_start()
        assert c.connack.wait(timeout), "paho: no CONNACK"
    return c


def paho_sub(c, topic, qos=1, timeout=5):
    rc, mid = c.subscribe(topic, qos)
    wait_until(lambda: mid in c.subacks, timeout, what="paho SUBACK")
    return c.subacks[mid]


def paho_msgs(c, count, timeout=5):
    import queue
    out, end = [], time.monotonic() + timeout
    while len(out) < count:
        left = end - time.monotonic()
        if left <= 0:
            break
        try:
            out.append(c.q.get(timeout=left))
        except queue.Empty:
            break
    return out


def paho_stop(c):
    try:
        c.disconnect()
    except Exception:
        pass
    c.loop_stop()
