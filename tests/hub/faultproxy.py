"""faultproxy — drive tests/tools/faultproxy.c (a fault-injecting TCP proxy) from Python.

    from faultproxy import FaultProxy
    with FaultProxy("127.0.0.1", hub_port) as fp:
        connect a client to ("127.0.0.1", fp.port)
        fp.cmd("stall"); ...; fp.cmd("pass")
        fp.cmd("slow 100000 50"); fp.cmd("reset-after 1000 up")
        fp.stats()["bytes_up"]

The binary is $FAULTPROXY_BIN, else $O/test/tools/faultproxy (O defaults to build,
relative to the repository, as hubtest.py finds perch-hub). By default the control
channel is a socketpair passed with --control-fd, so no port is needed and the proxy
exits by itself if the test process dies; control_tcp=True uses --control
127.0.0.1:0 instead (exposed as .control_port, for shell scripts and extra clients).

Every wait is bounded. stop() sends SIGTERM to the PID and checks the exit code is 0.
"""
import os
import select
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.environ.get("PERCH_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
O = os.environ.get("O", "build")
FAULTPROXY_BIN = os.environ.get("FAULTPROXY_BIN") or (
    O if os.path.isabs(O) else os.path.join(ROOT, O)) + "/test/tools/faultproxy"
HOST = "127.0.0.1"


class FaultProxyError(Exception):
    """The proxy answered "error ..." (the text is the message)."""


def _addr_port(text):
    return int(text.rsplit(":", 1)[1])


class FaultProxy:
    """A running faultproxy in front of target_host:target_port.

    .port: where clients connect; .pid; .control_port (control_tcp only);
    .log_path: its stderr. cmd(line) -> the reply after "ok" (raises FaultProxyError
    on "error ..."); stats() -> dict (ints, and "mode"); stop() -> exit code (0
    asserted). A context manager: stops on exit.
    """

    def __init__(self, target_host, target_port, listen_host=HOST, listen_port=0,
                 control_tcp=False, log_path=None, extra_args=(), ready_timeout=10):
        if not os.access(FAULTPROXY_BIN, os.X_OK):
            raise AssertionError(f"{FAULTPROXY_BIN} is not built (make O={O} "
                                 f"{O}/test/tools/faultproxy)")
        self.target = (target_host, target_port)
        self._own_log = log_path is None  # removed after a clean stop
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="faultproxy-", suffix=".log")
            os.close(fd)
        self.log_path = log_path
        cmd = [FAULTPROXY_BIN, "--listen", f"{listen_host}:{listen_port}",
               "--target", f"{target_host}:{target_port}"]
        child = None
        if control_tcp:
            cmd += ["--control", f"{HOST}:0"]
        else:
            self._ctl, child = socket.socketpair()
            cmd += ["--control-fd", str(child.fileno())]
        cmd += list(extra_args)
        logf = open(log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=logf, pass_fds=(child.fileno(),) if child else (),
                                         start_new_session=True)
        finally:
            logf.close()
            if child is not None:
                child.close()
        self.pid = self.proc.pid
        line = self._read_ready(ready_timeout)
        fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
        self.port = _addr_port(fields["listen"])
        self.control_port = None
        if control_tcp:
            self.control_port = _addr_port(fields["control"])
            self._ctl = socket.create_connection((HOST, self.control_port), timeout=5)
        self._ctl.settimeout(None)
        self._buf = b""

    def _read_ready(self, timeout):
        out = self.proc.stdout
        end = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            left = end - time.monotonic()
            if left <= 0:
                self.proc.kill()
                raise AssertionError(f"faultproxy not ready after {timeout}s: {self.log()}")
            r, _, _ = select.select([out], [], [], left)
            if r:
                chunk = os.read(out.fileno(), 4096)
                if not chunk:
                    rc = self.proc.wait(5)
                    raise AssertionError(f"faultproxy exited {rc} before ready: {self.log()}")
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        if not line.startswith("faultproxy ready "):
            raise AssertionError(f"unexpected first line from faultproxy: {line!r}")
        return line

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def raw(self, line, timeout=10):
        """Send one line (str or bytes, without the newline); return the reply line."""
        data = line.encode() if isinstance(line, str) else line
        self._ctl.sendall(data + b"\n")
        return self.reply(timeout, line)

    def reply(self, timeout=10, line=None):
        """Read the next reply line (for lines sent with raw() or sendall)."""
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply from faultproxy to {line!r} in {timeout}s")
            r, _, _ = select.select([self._ctl], [], [], left)
            if r:
                chunk = self._ctl.recv(4096)
                if not chunk:
                    raise AssertionError(f"faultproxy closed its control channel: {self.log()}")
                self._buf += chunk
        reply, self._buf = self._buf.split(b"\n", 1)
        return reply.decode()

    def cmd(self, line, timeout=10):
        """Run one command; returns what follows "ok" (stripped), raises
        FaultProxyError with the reason on "error ..."."""
        reply = self.raw(line, timeout)
        if reply == "ok" or reply.startswith("ok "):
            return reply[2:].strip()
        if reply.startswith("error "):
            raise FaultProxyError(reply[6:])
        raise AssertionError(f"malformed reply from faultproxy: {reply!r}")

    def stats(self):
        """The counters: mode (str), accepted, open, refused, closed, bytes_up,
        bytes_down, discarded, cuts, resets, held (ints)."""
        out = {}
        for f in self.cmd("stats").split():
            k, v = f.split("=", 1)
            out[k] = v if k == "mode" else int(v)
        return out

    def stop(self, timeout=10):
        """SIGTERM by PID; asserts exit code 0 and returns it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                raise AssertionError(f"faultproxy ignored SIGTERM for {timeout}s")
        try:
            self._ctl.close()
        except OSError:
            pass
        if self.proc.stdout:
            self.proc.stdout.close()
        rc = self.proc.returncode
        assert rc == 0, f"faultproxy exited {rc}: {self.log()}"
        if self._own_log:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.stop()
        else:  # the test failed already: stop without masking its error
            try:
                self.stop()
            except AssertionError:
                pass
        return False
