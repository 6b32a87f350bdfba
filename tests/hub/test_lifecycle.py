"""Start, stop, refuse to start; refuse-by-default; TLS listeners."""
import os
import socket
import subprocess
import time

import pytest

import hubtest as h
from hubtest import HOST


def test_ready_and_sigterm_exit_0(make_broker):
    """The ready line comes (bounded wait) with every listener accepting; SIGTERM exits 0."""
    b = make_broker(listeners=("mqtt", "ws"))
    c = h.raw_client(b, "tcp", client_id="alive")
    c.disconnect()
    assert b.stop() == 0, b.log_tail()


def _start_fail(cmd, timeout=10):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr.decode(errors="replace"), time.monotonic() - t0


@pytest.mark.perch_only("perch-hub's command line")
def test_bad_flag_refused(workdir):
    rc, err, dt = _start_fail([h.HUB_BIN, "--data-dir", workdir, "--no-such-flag"])
    assert rc != 0, "a bad flag must exit non-zero"
    assert err.strip(), "a bad flag must say why on stderr"
    assert "no-such-flag" in err or "unknown" in err.lower() or "unrecognized" in err.lower(), err
    assert len(err.strip().splitlines()) <= 3, f"want one clear line, got:\n{err}"


@pytest.mark.perch_only("perch-hub's command line")
@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "ws://127.0.0.1:notaport", "mqtt://"])
def test_bad_listen_url_refused(workdir, url):
    rc, err, _ = _start_fail([h.HUB_BIN, "--data-dir", workdir, "--allow-anonymous", "--listen", url])
    assert rc != 0 and err.strip(), f"bad URL {url} must be refused (rc {rc}): {err}"


@pytest.mark.parametrize("scheme", ["mqtt", "ws"])
def test_busy_port_refused(make_broker, scheme):
    """A port already in use: exit non-zero at once, one line naming the cause."""
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind((HOST, 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        b = make_broker(start=False, listeners=(scheme,))
        b.ports[scheme] = port
        if h.is_perch():
            rc, err, dt = _start_fail(b.command())
        else:
            if scheme == "ws":
                pytest.skip("n/a for mosquitto: its websockets listener does not report a busy port at start")
            rc, err, dt = _start_fail(b.command())
        assert rc != 0, f"started on a busy port: {err}"
        assert dt < 8, f"took {dt:.1f}s to give up"
        assert any(w in err.lower() for w in ("in use", "busy")), f"stderr does not name the cause: {err}"
    finally:
        busy.close()


@pytest.mark.perch_only("perch-hub's --data-dir")
@pytest.mark.parametrize("kind", ["is-a-file", "under-a-file"])
def test_bad_data_dir_refused(workdir, kind):
    f = os.path.join(workdir, "file")
    with open(f, "w") as fh:
        fh.write("not a directory\n")
    d = f if kind == "is-a-file" else os.path.join(f, "sub")
    port = h.free_port()
    rc, err, dt = _start_fail([h.HUB_BIN, "--data-dir", d, "--allow-anonymous",
                               "--listen", f"mqtt://{HOST}:{port}"])
    assert rc != 0, "an unusable data dir must be refused"
    assert dt < 8
    low = err.lower()
    assert "data dir" in low or "data-dir" in low or "data_dir" in low, f"stderr does not name the data dir: {err}"


@pytest.mark.perch_only("Perch's refuse-by-default (mosquitto 2 does too, but the contract is Perch's)")
@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_refuses_everyone_by_default(make_broker, transport):
    """Without --allow-anonymous every CONNECT gets CONNACK 5 and nothing is delivered."""
    b = make_broker(anonymous=False)
    c = h.Raw(b.ports["mqtt" if transport == "tcp" else "ws"], transport)
    ack = c.connect("anyone", user="someone", password="guess")
    assert ack.rc == 5, f"CONNACK rc {ack.rc}, want 5 (not authorized)"
    assert c.is_closed_within(5), "refused connection must be closed"
    c2 = h.Raw(b.ports["mqtt"], "tcp")
    assert c2.connect("anon").rc == 5


def test_mosquitto_refuses_by_default_too(make_broker):
    """Validates the refuse-by-default test's mechanics against mosquitto 2."""
    if h.is_perch():
        pytest.skip("mechanics check, run against mosquitto only")
    b = make_broker(anonymous=False)
    c = h.Raw(b.ports["mqtt"], "tcp")
    assert c.connect("anyone").rc == 5


@pytest.mark.parametrize("transport", ["mqtts", "wss"])
def test_tls_listeners_paho(make_broker, tls_files, transport):
    """paho over mqtts:// and wss:// with the test CA: publish and receive."""
    b = make_broker(listeners=("mqtt", transport), tls=tls_files)
    sub = h.paho_client(b, transport, client_id="tls-sub", tls_ca=tls_files[0])
    pub = h.paho_client(b, transport, client_id="tls-pub", tls_ca=tls_files[0])
    try:
        assert h.paho_sub(sub, "tls/t", 1) == (1,)
        pub.publish("tls/t", b"secret", qos=1).wait_for_publish(5)
        got = h.paho_msgs(sub, 1)
        assert got and got[0].payload == b"secret"
    finally:
        h.paho_stop(sub)
        h.paho_stop(pub)


def test_tls_mosquitto_clients(make_broker, tls_files):
    """mosquitto_pub/mosquitto_sub over mqtts with --cafile."""
    b = make_broker(listeners=("mqtt", "mqtts"), tls=tls_files)
    port = str(b.ports["mqtts"])
    sub = subprocess.Popen(["mosquitto_sub", "-h", HOST, "-p", port, "--cafile", tls_files[0],
                            "-t", "tls/cli", "-C", "1", "-W", "10", "-q", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # mosquitto_sub has no ready signal; retried below
        for _ in range(20):
            subprocess.run(["mosquitto_pub", "-h", HOST, "-p", port, "--cafile", tls_files[0],
                            "-t", "tls/cli", "-m", "over-tls", "-q", "1"], check=True, timeout=10)
            try:
                out, err = sub.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise AssertionError("mosquitto_sub got nothing over TLS")
        assert out.decode().strip() == "over-tls", err
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)


def _client_ca(dirpath):
    """A CA, a client certificate it signed, and one signed by nobody it trusts."""
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, timeout=60)
    ca_key, ca = os.path.join(dirpath, "ca.key"), os.path.join(dirpath, "ca.crt")
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=perch-test-ca", "-keyout", ca_key, "-out", ca)
    out = {}
    for name, signer in (("good", (ca, ca_key)), ("rogue", None)):
        key, csr, crt = (os.path.join(dirpath, f"{name}.{x}") for x in ("key", "csr", "crt"))
        if signer:
            run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", key, "-out", csr)
            run("openssl", "x509", "-req", "-in", csr, "-CA", signer[0], "-CAkey", signer[1],
                "-CAcreateserial", "-days", "2", "-out", crt)
        else:
            run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN={name}", "-keyout", key, "-out", crt)
        out[name] = (crt, key)
    return ca, out


def test_tls_client_certificates_optional(make_broker, tls_files, workdir):
    """--tls-client-ca: a client with a certificate from that CA and a client with
    none both connect; a certificate from an unknown CA fails the handshake."""
    if h.AGAINST != "perch":
        pytest.skip("n/a for mosquitto: perch-hub's --tls-client-ca flag")
    ca, certs = _client_ca(workdir)
    b = make_broker(listeners=("mqtt", "mqtts"), tls=tls_files,
                    extra_args=("--tls-client-ca", ca))
    port = str(b.ports["mqtts"])
    base = ["mosquitto_pub", "-h", HOST, "-p", port, "--cafile", tls_files[0],
            "-t", "tls/cc", "-m", "x", "-q", "1"]
    with_cert = subprocess.run(base + ["--cert", certs["good"][0], "--key", certs["good"][1]],
                               capture_output=True, timeout=15)
    assert with_cert.returncode == 0, with_cert.stderr.decode()
    without = subprocess.run(base, capture_output=True, timeout=15)
    assert without.returncode == 0, without.stderr.decode()
    rogue = subprocess.run(base + ["--cert", certs["rogue"][0], "--key", certs["rogue"][1]],
                           capture_output=True, timeout=15)
    assert rogue.returncode != 0, "a certificate from an unknown CA was accepted"
    assert b.alive()


@pytest.mark.perch_only("perch-hub's store")
def test_corrupt_store_moved_aside(make_broker, workdir):
    """A store that is not a database is moved aside with a loud log line; the
    hub starts clean and works (no crash loop), and the evidence is kept."""
    data = os.path.join(workdir, "data")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, "hub.db"), "wb") as f:
        f.write(b"this is not an SQLite database " * 200)
    b = make_broker(listeners=("mqtt",), data_dir=data)
    assert b.wait_log(r"corrupt|moved aside|unreadable", 0, timeout=5), b.log_tail()
    moved = [n for n in os.listdir(data) if n.startswith("hub.db.corrupt-")]
    assert moved, f"damaged store not kept: {os.listdir(data)}"
    sub = h.raw_client(b, "tcp", client_id="after-corrupt", clean=False)
    sub.subscribe([("c/#", 1)])
    pub = h.raw_client(b, "tcp", client_id="after-corrupt-pub")
    pub.publish("c/t", b"works", qos=1, timeout=5)
    got = sub.messages(1, timeout=5)
    assert got and got[0].payload == b"works"
    assert b.stop() == 0, b.log_tail()


@pytest.mark.perch_only("perch-hub's listeners")
def test_listeners_bind_only_the_given_address(make_broker):
    """A listener on 127.0.0.1 binds 127.0.0.1, not every interface (lws, left
    to itself, bound '*' here); the same port on two addresses works."""
    b = make_broker(listeners=("mqtt", "ws"))
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, timeout=10).stdout
    for name, port in b.ports.items():
        local = [line.split()[3] for line in out.splitlines()
                 if line.split()[3].endswith(f":{port}")]
        assert local == [f"{HOST}:{port}"], f"{name} listener bound {local}, want {HOST}:{port} only"
    if b.metrics_port:
        local = [line.split()[3] for line in out.splitlines()
                 if line.split()[3].endswith(f":{b.metrics_port}")]
        assert local == [f"{HOST}:{b.metrics_port}"], f"metrics bound {local}"
    # The same port on another loopback address is free to take.
    port = b.ports["mqtt"]
    with socket.socket() as s:
        s.bind(("127.0.0.2", port))
