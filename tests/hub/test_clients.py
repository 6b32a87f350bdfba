"""Other people's clients: MQTT.js (npm `mqtt`, TCP and WebSocket) and Debian's
mosquitto_pub / mosquitto_sub (TCP)."""
import os
import shutil
import subprocess
import time

import pytest

import hubtest as h
from hubtest import HOST

JS = os.path.join(os.path.dirname(__file__), "js", "mqttjs_check.js")
NODE_MQTT = os.path.join(h.ROOT, "tests", "node_modules", "mqtt")


@pytest.mark.parametrize("transport", ["mqtt", "ws"])
def test_mqttjs(broker, transport):
    """MQTT.js: QoS 0/1 with 100 kB payloads, retained+clear, persistent session, will."""
    assert shutil.which("node"), "node is not installed"
    assert os.path.isdir(NODE_MQTT), "tests/node_modules/mqtt missing: npm ci --prefix tests"
    url = broker.url(transport, "/$iothub/websocket" if transport == "ws" else "/mqtt")
    p = subprocess.run(["node", JS, url], capture_output=True, timeout=90)
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 0 and "ALL OK" in out, out


def _sub(broker, *args, count=1, wait=10):
    return subprocess.Popen(["mosquitto_sub", "-h", HOST, "-p", str(broker.ports["mqtt"]), "-V", "mqttv311",
                             "-C", str(count), "-W", str(wait), "-v"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _pub(broker, *args):
    subprocess.run(["mosquitto_pub", "-h", HOST, "-p", str(broker.ports["mqtt"]), "-V", "mqttv311"] + list(args),
                   check=True, timeout=15, capture_output=True)


def test_mosquitto_clients_pubsub(broker):
    """mosquitto_sub gets QoS 0 and 1 messages (incl. a 64 kB one from a file) from mosquitto_pub."""
    big = os.path.join(broker.workdir, "big.bin")
    with open(big, "w") as f:
        f.write("Z" * 65536)
    sub = _sub(broker, "-t", "cli/#", "-q", "1", count=4)
    try:
        # wait until subscribed: a retained ready-marker on another topic comes back first
        _pub(broker, "-t", "cli/ready", "-m", "r", "-r", "-q", "1")
        first = sub.stdout.readline().decode().strip()
        assert first == "cli/ready r", first
        _pub(broker, "-t", "cli/a", "-m", "hello0", "-q", "0")
        _pub(broker, "-t", "cli/b", "-m", "hello1", "-q", "1")
        _pub(broker, "-t", "cli/big", "-f", big, "-q", "1")
        out, err = sub.communicate(timeout=15)
        lines = out.decode().splitlines()
        assert lines[:2] == ["cli/a hello0", "cli/b hello1"], (lines[:2], err)
        assert lines[2] == "cli/big " + "Z" * 65536
        assert sub.returncode == 0
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)
        _pub(broker, "-t", "cli/ready", "-n", "-r", "-q", "1")


def test_mosquitto_clients_retained(broker):
    _pub(broker, "-t", "cli/ret", "-m", "stays", "-r", "-q", "1")
    s = _sub(broker, "-t", "cli/ret", "-q", "1", wait=5)
    out, _ = s.communicate(timeout=10)
    assert out.decode().splitlines() == ["cli/ret stays"]
    _pub(broker, "-t", "cli/ret", "-n", "-r", "-q", "1")
    s = _sub(broker, "-t", "cli/ret", "-q", "1", wait=2)
    out, _ = s.communicate(timeout=10)
    assert out.decode() == "", "retained message not cleared by an empty retained publish"


def test_mosquitto_clients_persistent_session(broker):
    """mosquitto_sub -c (clean_session=0): QoS 1 messages published while it is away arrive."""
    s = _sub(broker, "-t", "cli/persist", "-t", "cli/pready", "-q", "1", "-c", "-i", "cli-persist",
             count=1, wait=10)
    _pub(broker, "-t", "cli/pready", "-m", "marker", "-r", "-q", "1")  # retained: arrives once subscribed
    out, _ = s.communicate(timeout=15)
    assert out.decode().strip() == "cli/pready marker", out
    _pub(broker, "-t", "cli/pready", "-n", "-r", "-q", "1")
    for i in range(5):
        _pub(broker, "-t", "cli/persist", "-m", f"away{i}", "-q", "1")
    s = _sub(broker, "-t", "cli/persist", "-q", "1", "-c", "-i", "cli-persist", count=6, wait=5)
    out, _ = s.communicate(timeout=15)
    lines = [x for x in out.decode().splitlines() if not x.startswith("cli/pready")]  # the clearing publish
    assert lines == [f"cli/persist away{i}" for i in range(5)]
