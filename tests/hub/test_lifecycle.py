"""Start, stop, refuse to start; refuse-by-default; TLS listeners."""
import os
import re
import shutil
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
    if h.is_perch():
        ready = [line for line in b.log().splitlines() if "perch-hub ready" in line]
        assert len(ready) == 1, f"want one ready line, got {ready}"
        for name, port in b.ports.items():
            assert f"{name}://{HOST}:{port}" in ready[0], f"the ready line does not name {name}: {ready[0]}"
        assert f"{HOST}:{b.metrics_port}" in ready[0], ready[0]
    assert b.stop() == 0, b.log_tail()


def _start_fail(cmd, timeout=10):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr.decode(errors="replace"), time.monotonic() - t0


def _errors(err):
    """The lines of a refusal that say why: every line but the routine ones
    logged before the hub found the problem (INFO/NOTICE, and hub.auth's view
    of this machine's identity files, which a developer's machine may have
    in any state)."""
    return [line for line in err.strip().splitlines()
            if not any(f" {lvl} " in line for lvl in ("INFO", "NOTICE", "DEBUG"))
            and " hub.auth: " not in line]


# (extra args, a word the refusal must name)
BAD_FLAGS = [
    (["--no-such-flag"], "no-such-flag"),
    (["--listen"], "listen"),
    (["--log-level", "loud"], "log level"),
    (["--metrics", "no-port-here"], "metrics"),
    (["--set", "hub.max_inflight=0"], "max_inflight"),
    (["--set", "hub.no_such_key=1"], "no_such_key"),
    (["--config", "/nonexistent/perch.yaml"], "/nonexistent/perch.yaml"),
]


@pytest.mark.perch_only("perch-hub's command line")
@pytest.mark.parametrize("args,word", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_refused(workdir, args, word):
    """A bad flag or flag value: exit non-zero at once, with a line naming it
    and no other."""
    port = h.free_port()
    rc, err, dt = _start_fail([h.HUB_BIN, "--data-dir", workdir, "--allow-anonymous",
                               "--listen", f"mqtt://{HOST}:{port}"] + args)
    assert rc != 0, f"{args} must exit non-zero"
    assert dt < 8
    why = _errors(err)
    assert why, f"{args} must say why on stderr: {err}"
    assert word.lower() in "\n".join(why).lower(), f"the refusal of {args} does not name {word!r}: {err}"
    assert len(why) == 1, f"want one clear line, got:\n{err}"
    assert not h._can_connect(port), "the hub listens after refusing to start"


ISSUE_FLAGS = ["--config FILE", "--listen URL", "--data-dir DIR", "--allow-anonymous",
               "--metrics HOST:PORT", "--log-level LEVEL"]


@pytest.mark.perch_only("perch-hub's --help")
def test_help_documents_every_flag():
    """--help exits 0 and documents every flag, the four listener schemes and
    every setting; docs/hub.md's settings table has the same keys."""
    p = subprocess.run([h.HUB_BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for flag in ISSUE_FLAGS + ["--tls-cert FILE", "--tls-key FILE", "--tls-client-ca FILE",
                               "--upstream URL", "--set KEY=VALUE"]:
        assert flag in out, f"--help does not document {flag}"
        name = flag.split()[0]
        assert re.search(r"^\s+%s\b.*\S" % re.escape(name), out, re.M), f"{name} has no help line"
    for scheme in ("ws://", "wss://", "mqtt://", "mqtts://"):
        assert scheme in out, f"--help does not mention {scheme}"
    keys = set(re.findall(r"^\s+(hub\.[a-z_.]+)\s", out, re.M))
    assert "hub.listen" in keys and "hub.max_store_bytes" in keys, keys
    with open(os.path.join(h.ROOT, "docs", "hub.md")) as f:
        doc = f.read()
    documented = set(re.findall(r"`(hub\.[a-z_.]+)`", doc))
    assert keys - documented == set(), f"settings missing from docs/hub.md: {sorted(keys - documented)}"


def _write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.mark.perch_only("perch-hub's config file")
def test_config_file_alone(workdir):
    """Every flag of the issue has its key in the config file's hub: section: a
    hub started with --config only listens where the file says (both
    transports), takes anonymous clients, serves metrics, logs at the level
    asked, keeps its store in the file's data dir."""
    ports = {"mqtt": h.free_port(), "ws": h.free_port()}
    mport = h.free_port()
    data = os.path.join(workdir, "cfg-data")
    cfg = _write_config(os.path.join(workdir, "perch.yaml"), f"""\
hub:
  listen:
    - mqtt://{HOST}:{ports["mqtt"]}
    - ws://{HOST}:{ports["ws"]}
  data_dir: {data}
  allow_anonymous: true
  metrics: {HOST}:{mport}
  log_level: notice
""")
    b = h.Broker(workdir, listeners=())
    b.ports = ports
    b.metrics_port = mport
    b.command = lambda: [h.HUB_BIN, "--config", cfg]
    b.start()
    try:
        for t in ("tcp", "ws"):
            c = h.raw_client(b, t, client_id=f"cfg-{t}")
            c.disconnect()
        assert "perch_hub_clients_connected" in b.metrics_text()
        assert os.path.exists(os.path.join(data, "hub.db")), os.listdir(workdir)
        assert not re.search(r" INFO ", b.log()), "log_level notice from the file not applied"
    finally:
        assert b.stop() == 0, b.log_tail()


@pytest.mark.perch_only("perch-hub's config file")
def test_flags_override_config_file(workdir):
    """The file says one port, refuse-by-default, log level error, a data dir
    and max_inflight 100; the flags say another port, --allow-anonymous, info,
    another data dir and (--set) max_inflight 3: the flags win, and what the
    flags do not name still comes from the file."""
    file_port, flag_port = h.free_port(), h.free_port()
    file_data, flag_data = os.path.join(workdir, "file-data"), os.path.join(workdir, "flag-data")
    cfg = _write_config(os.path.join(workdir, "perch.yaml"), f"""\
hub:
  listen: [mqtt://{HOST}:{file_port}]
  data_dir: {file_data}
  allow_anonymous: false
  log_level: error
  max_inflight: 100
  max_subscriptions: 2
""")
    b = h.Broker(workdir, listeners=("mqtt",), metrics=False)
    b.ports = {"mqtt": flag_port}
    b.command = lambda: [h.HUB_BIN, "--config", cfg, "--listen", f"mqtt://{HOST}:{flag_port}",
                         "--data-dir", flag_data, "--allow-anonymous", "--log-level", "info",
                         "--set", "hub.max_inflight=3"]
    b.start()
    try:
        assert not h._can_connect(file_port), "the file's listener was opened too: --listen must replace it"
        s = h.raw_client(b, "tcp", client_id="ovr-sub")  # anonymous accepted: the flag won
        assert s.subscribe([("ovr/t", 1)]) == [1]
        p = h.raw_client(b, "tcp", client_id="ovr-pub")
        for i in range(6):
            p.publish("ovr/t", b"%d" % i, qos=1)
        assert len(s.messages(6, timeout=1.5, ack=False)) == 3, "--set hub.max_inflight=3 not applied"
        assert s.subscribe([("ovr/a", 1), ("ovr/b", 1)]) == [1, 0x80], \
            "max_subscriptions from the file (not overridden) not applied"
        assert os.path.exists(os.path.join(flag_data, "hub.db"))
        assert not os.path.exists(os.path.join(file_data, "hub.db")), "the file's data dir was used"
        assert re.search(r" INFO hub\.conn", b.log()) or re.search(r" INFO ", b.log()), \
            "--log-level info did not override the file's error"
    finally:
        assert b.stop() == 0, b.log_tail()


@pytest.mark.perch_only("perch-hub's data dir lock")
def test_data_dir_in_use_refused(make_broker):
    """A second hub on the data dir of a running one is refused (one line
    naming the data dir and the pid holding it) and the first one's store is
    untouched; after kill -9 of the first, the data dir is free again (the
    lock dies with the process: no stale lock, no crash loop)."""
    a = make_broker(listeners=("mqtt",))
    s = h.raw_client(a, "tcp", client_id="lock-sub", clean=False)
    s.subscribe([("lock/t", 1)])
    s.disconnect()
    p = h.raw_client(a, "tcp", client_id="lock-pub")
    p.publish("lock/t", b"kept", qos=1)
    port = h.free_port()
    rc, err, dt = _start_fail([h.HUB_BIN, "--data-dir", a.data_dir, "--allow-anonymous",
                               "--listen", f"mqtt://{HOST}:{port}"])
    assert rc != 0, "a second hub started on a data dir in use"
    assert dt < 8
    why = _errors(err)
    assert any("in use" in line and a.data_dir in line and str(a.pid) in line for line in why), err
    assert len(why) == 1, f"want one clear line, got:\n{err}"
    assert not [n for n in os.listdir(a.data_dir) if ".corrupt-" in n], "the store was moved aside"
    assert a.alive()
    a.kill9()
    a.start()
    s = h.raw_client(a, "tcp", client_id="lock-sub", clean=False)
    assert [m.payload for m in s.messages(1)] == [b"kept"]


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
        if h.is_perch():
            assert len(_errors(err)) == 1, f"want one clear line, got:\n{err}"
    finally:
        busy.close()


@pytest.mark.perch_only("perch-hub's --data-dir")
@pytest.mark.parametrize("kind", ["is-a-file", "under-a-file", "read-only"])
def test_bad_data_dir_refused(workdir, kind):
    """A data dir that is a file, under a file, or on a read-only mount (a
    private one, made in a mount namespace: root ignores mode bits): exit
    non-zero at once, one line naming the data dir."""
    f = os.path.join(workdir, "file")
    with open(f, "w") as fh:
        fh.write("not a directory\n")
    d = f if kind == "is-a-file" else os.path.join(f, "sub")
    port = h.free_port()
    cmd = [h.HUB_BIN, "--data-dir", d, "--allow-anonymous", "--listen", f"mqtt://{HOST}:{port}"]
    if kind == "read-only":
        if os.geteuid() != 0 or not shutil.which("unshare"):
            pytest.skip("needs root and unshare(1) for a private read-only mount")
        d = os.path.join(workdir, "ro")
        os.makedirs(d)
        cmd[2] = d
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs -o ro,size=64k tmpfs "$0" && exec "$@"', d] + cmd
    rc, err, dt = _start_fail(cmd)
    assert rc != 0, "an unusable data dir must be refused"
    assert dt < 8
    low = err.lower()
    assert "data dir" in low or "data-dir" in low or "data_dir" in low, f"stderr does not name the data dir: {err}"
    assert len(_errors(err)) == 1, f"want one clear line, got:\n{err}"


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


@pytest.mark.perch_only("perch-hub's store")
def test_store_with_damaged_pages_moved_aside(make_broker):
    """A real store (sessions, retained, queued messages) whose pages are
    overwritten after the header: found at start, moved aside loudly, the hub
    starts clean and works; a kill -9 and restart after that is an ordinary
    start (no crash loop)."""
    b = make_broker(listeners=("mqtt",))
    s = h.raw_client(b, "tcp", client_id="dmg-sub", clean=False)
    s.subscribe([("dmg/#", 1)])
    s.disconnect()
    p = h.raw_client(b, "tcp", client_id="dmg-pub")
    for i in range(200):
        p.publish(f"dmg/{i}", os.urandom(1000), qos=1, retain=True)
    p.disconnect()
    assert b.stop() == 0
    path = os.path.join(b.data_dir, "hub.db")
    size = os.path.getsize(path)
    assert size > 64 * 1024, size
    with open(path, "r+b") as f:
        for off in range(8192, size, 8192):
            f.seek(off)
            f.write(os.urandom(1500))
    mark = b.log_mark()
    b.start()
    assert b.wait_log(r"STORE LOST|corrupt|moved aside", mark, timeout=5), b.log_tail()
    assert [n for n in os.listdir(b.data_dir) if n.startswith("hub.db.corrupt-")]
    sub = h.raw_client(b, "tcp", client_id="dmg-after", clean=False)
    sub.subscribe([("after/#", 1)])
    pub = h.raw_client(b, "tcp", client_id="dmg-pub2")
    pub.publish("after/t", b"works", qos=1)
    assert [m.payload for m in sub.messages(1)] == [b"works"]
    b.kill9()
    mark = b.log_mark()
    b.start()
    assert not b.wait_log(r"STORE LOST", mark, timeout=0.5), "the new store was moved aside too"


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
