"""Leaf devices and cloud-to-device messages at perch-hub
(docs/leaf-devices.md), against the real binary: C2D messages sent to the
hub's REST endpoint (POST /devices/{d}/messages/devicebound, as the edge
device) reach the leaf device on devices/{d}/messages/devicebound/{props}
at least once, in order, across a reconnect and a kill -9, over mqtt and
wss, and expire with their TTL; every refusal has its status. The Azure IoT
Node SDK connects as a leaf device over mqtts (js/sdk_leaf.js): its
telemetry is routed like a module's (/messages/* without a module id), it
reads and reports its twin, and it receives C2D messages with their
properties."""
import http.client
import json
import os
import shutil
import ssl
import time
import urllib.parse

import pytest

import hubtest as h
from test_identity import DEV, DEVKEY, HOSTNAME, LEAFKEY, mod_creds, sas, write_private
from test_twins import SDK_DIR, Sdk

pytestmark = pytest.mark.perch_only("cloud-to-device messages are Perch's (IoT Hub's)")

LEAF2KEY = "bGVhZi1rZXktbnVtYmVyLXR3by0xMjM0NTY3ODkwYWI="
SDK_LEAF_JS = os.path.join(os.path.dirname(__file__), "js", "sdk_leaf.js")
ROUTES = {"leaves": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) "
                    "INTO BrokeredEndpoint(\"/modules/filter/inputs/leaves\")"}


def write_deployment(path):
    doc = {"version": 1, "deviceId": DEV, "deployment": 1,
           "modules": {"filter": {"generationId": "gen-filter"}},
           "edgeHub": {"schemaVersion": "1.1", "routes": ROUTES}, "twins": {}}
    with open(path, "w") as f:
        json.dump(doc, f)


@pytest.fixture
def c2dhub(make_broker, workdir, tls_files):
    d = os.path.join(workdir, "ids")
    os.makedirs(d, exist_ok=True)
    key, dep, leaves = (os.path.join(d, n) for n in ("device.key", "dep.json", "leaves.json"))
    write_private(key, DEVKEY + "\n")
    write_deployment(dep)
    write_private(leaves, json.dumps({"leaf1": {"primaryKey": LEAFKEY},
                                      "leaf2": {"primaryKey": LEAF2KEY}}))

    def make(**kw):
        b = make_broker(anonymous=False, listeners=("mqtt", "ws", "mqtts", "wss"),
                        tls=tls_files, extra_args=[
                            "--set", f"device.id={DEV}",
                            "--set", f"device.iothub_hostname={HOSTNAME}",
                            "--set", f"device.key_file={key}",
                            "--set", f"device.hub_deployment={dep}",
                            "--set", f"hub.leaf_devices={leaves}"], **kw)
        b.tls_files = tls_files
        return b
    return make


def device_token():
    return sas(f"{HOSTNAME}/devices/{DEV}", DEVKEY)


def send_c2d(b, device, body=b"hello", token=None, headers=None, method="POST", tls=False):
    """POST /devices/{device}/messages/devicebound; (status, headers, body)."""
    if tls:
        ctx = ssl.create_default_context(cafile=b.tls_files[0])
        conn = http.client.HTTPSConnection("localhost", b.ports["wss"], timeout=10, context=ctx)
    else:
        conn = http.client.HTTPConnection(h.HOST, b.ports["ws"], timeout=10)
    hdrs = {"Authorization": device_token() if token is None else token}
    if not hdrs["Authorization"]:
        del hdrs["Authorization"]
    hdrs.update(headers or {})
    path = f"/devices/{urllib.parse.quote(device, safe='')}/messages/devicebound"
    conn.request(method, path + "?api-version=2020-09-30", body=body, headers=hdrs)
    r = conn.getresponse()
    text = r.read()
    conn.close()
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), parsed


def leaf(b, name="leaf1", key=LEAFKEY, clean=True, subscribe=True, transport="mqtt"):
    """A leaf device over mqtt (TCP) or wss (MQTT over secure WebSocket, at
    IoT Hub's path /$iothub/websocket)."""
    if transport == "wss":
        c = h.Raw(b.ports["wss"], "ws", path="/$iothub/websocket", tls=True)
    else:
        c = h.Raw(b.ports["mqtt"])
    ack = c.connect(name, clean=clean, user=f"{HOSTNAME}/{name}/?api-version=2019-01-30",
                    password=sas(f"{HOSTNAME}/devices/{name}", key))
    assert ack.rc == 0, f"{name}: CONNACK {ack.rc}\n{b.log_tail(10)}"
    if subscribe:
        assert c.subscribe([(f"devices/{name}/messages/devicebound/#", 1)]) == [1]
    return c


def bag(topic):
    prefix, _, props = topic.rpartition("/")
    return prefix, dict((urllib.parse.unquote(k), urllib.parse.unquote(v))
                        for k, _, v in (kv.partition("=") for kv in props.split("&") if kv))


def test_c2d_reaches_a_leaf_device_in_order_at_least_once(c2dhub):
    b = c2dhub()
    mids = []
    for i in range(3):
        status, hdrs, body = send_c2d(b, "leaf1", json.dumps({"i": i}).encode(), headers={
            "Content-Type": "application/json", "Content-Encoding": "utf-8",
            "iothub-correlationid": f"corr-{i}",
            "x-perch-properties": f"kind=cmd&n={i}&%24.cdid=forged"})
        assert status == 204, (status, body)
        assert hdrs.get("iothub-messageid"), hdrs
        mids.append(hdrs["iothub-messageid"])
    assert len(set(mids)) == 3, mids
    status, hdrs, _ = send_c2d(b, "leaf1", b"mine", headers={"iothub-messageid": "m-42"})
    assert status == 204 and hdrs.get("iothub-messageid") == "m-42", hdrs
    # the leaf connects later with a persistent session and does not ack at first
    c = leaf(b, clean=False)
    got = c.messages(4, ack=False)
    assert len(got) == 4, got
    assert [p.payload for p in got] == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}', b"mine"]
    prefix, props = bag(got[0].topic)
    assert prefix == "devices/leaf1/messages/devicebound", got[0].topic
    assert props["$.mid"] == mids[0] and props["$.cid"] == "corr-0", props
    assert props["$.to"] == "/devices/leaf1/messages/devicebound", props
    assert props["$.ct"] == "application/json" and props["$.ce"] == "utf-8", props
    assert props["kind"] == "cmd", props
    assert "$.cdid" not in props, "a property only the hub sets came through"
    assert all(p.qos == 1 for p in got)
    c.close()  # no PUBACK: they come again, marked DUP, in order
    c = leaf(b, clean=False)
    again = c.messages(4)
    assert [p.payload for p in again] == [p.payload for p in got], again
    assert all(p.dup for p in again), [p.dup for p in again]
    assert c.quiet(0.5) == [], "acknowledged messages came again"
    c.disconnect()
    # the other leaf device (over wss) got nothing but its own; five queued
    c2 = leaf(b, "leaf2", LEAF2KEY, transport="wss")
    assert c2.quiet(0.3) == []
    assert send_c2d(b, "leaf2", b"over wss")[0] == 204
    assert [p.payload for p in c2.messages(1)] == [b"over wss"]
    assert h.metric_sum(b.metrics(), "perch_hub_c2d_messages_total", result="queued") == 5


def test_c2d_survives_kill9_and_expires(c2dhub):
    b = c2dhub()
    assert send_c2d(b, "leaf1", b"kept")[0] == 204
    assert send_c2d(b, "leaf1", b"short", headers={"x-perch-ttl": "1"})[0] == 204
    b.kill9()
    time.sleep(1.5)  # the second one's TTL runs out while the hub is down
    b.start()
    c = leaf(b)
    got = c.messages(2, timeout=2)
    assert [p.payload for p in got] == [b"kept"], got
    h.wait_until(lambda: h.metric_sum(b.metrics(), "perch_hub_dropped_total",
                                      reason="expired") >= 1, 5, what="the expired message counted")


def test_c2d_refusals(c2dhub):
    b = c2dhub()
    leaf_tok = sas(f"{HOSTNAME}/devices/leaf1", LEAFKEY)
    mod_tok = mod_creds("filter")[2]
    bad_tok = sas(f"{HOSTNAME}/devices/{DEV}", LEAFKEY)
    cases = [
        ("no token", dict(token=""), 401),
        ("a token signed with the wrong key", dict(token=bad_tok), 401),
        ("a leaf device sends", dict(token=leaf_tok), 403),
        ("a module sends", dict(token=mod_tok), 403),
        ("GET", dict(method="GET", body=None), 405),
        ("over 64 KiB", dict(body=b"x" * (64 * 1024 + 1)), 413),
        ("TTL 0", dict(headers={"x-perch-ttl": "0"}), 400),
        ("TTL over 2 days", dict(headers={"x-perch-ttl": "172801"}), 400),
        ("a bad property bag", dict(headers={"x-perch-properties": "a=%zz"}), 400),
    ]
    for what, kw, want in cases:
        status, _, body = send_c2d(b, "leaf1", **kw)
        assert status == want, f"{what}: {status} {body}"
        assert isinstance(body, dict) and body.get("errorCode") and body.get("message"), \
            (what, body)
    for device in ("nobody", f"{DEV}/filter"):
        status, _, body = send_c2d(b, device)
        assert status == 404, (device, status, body)
    # IoT Hub's limit: 50 messages wait per device; the 51st is refused
    for i in range(50):
        assert send_c2d(b, "leaf2", str(i).encode())[0] == 204, i
    status, _, body = send_c2d(b, "leaf2", b"one too many")
    assert status == 403 and body["errorCode"] == 403004, (status, body)
    c = leaf(b, "leaf2", LEAF2KEY)
    assert [p.payload for p in c.messages(50)] == [str(i).encode() for i in range(50)]
    assert send_c2d(b, "leaf2", b"room again")[0] == 204, "the queue did not free up"
    assert [p.payload for p in c.messages(1)] == [b"room again"]
    # a leaf device subscribes only to its own messages
    assert leaf(b, "leaf1", subscribe=False).subscribe(
        [("devices/leaf2/messages/devicebound/#", 1)]) == [0x80]
    m = b.metrics()
    assert h.metric_sum(m, "perch_hub_c2d_messages_total", result="queue_full") == 1
    # ("gw1/filter" is no C2D path at all: 404 before c2d.c sees it)
    assert h.metric_sum(m, "perch_hub_c2d_messages_total", result="unknown_device") == 1
    log = b.log()
    assert "refused (401)" in log and "refused (403)" in log
    assert "sig=" not in log


def test_azure_iot_node_sdk_leaf_device(c2dhub):
    assert shutil.which("node"), "node is not installed"
    assert os.path.isdir(SDK_DIR), "tests/node_modules/azure-iot-device-mqtt missing"
    b = c2dhub()
    filt = h.Raw(b.ports["mqtt"])
    cid, user, pw = mod_creds("filter")
    assert filt.connect(cid, user=user, password=pw).rc == 0
    assert filt.subscribe([(f"devices/{DEV}/modules/filter/#", 1)]) == [1]
    cs = (f"HostName={HOSTNAME};DeviceId=leaf1;SharedAccessKey={LEAFKEY};"
          f"GatewayHostName=localhost:{b.ports['mqtts']}")
    env = dict(os.environ, PERCH_CS=cs, PERCH_CA=b.tls_files[0],
               NODE_PATH=os.path.join(h.ROOT, "tests", "node_modules"))
    sdk = Sdk(b, script=SDK_LEAF_JS, env=env)
    try:
        sdk.wait("ready")
        # its twin (the device twin of a leaf device) holds what it reported
        sdk.send("get")
        assert sdk.wait("twin")["reported"]["leaf"] == {"sdk": "node"}
        # its telemetry is routed like a module's: /messages/* without a module id
        sdk.send("send 7")
        sdk.wait("sent")
        got = filt.messages(1)
        assert len(got) == 1 and json.loads(got[0].payload) == {"n": 7}, got
        prefix, props = bag(got[0].topic)
        assert prefix == f"devices/{DEV}/modules/filter/inputs/leaves", prefix
        assert props["$.cdid"] == "leaf1" and "$.cmid" not in props, props
        assert props["kind"] == "leaf-telemetry", props
        # cloud-to-device messages, over TLS to the REST endpoint too
        status, hdrs, _ = send_c2d(b, "leaf1", b'{"cmd":"blink"}', tls=True, headers={
            "Content-Type": "application/json", "iothub-correlationid": "c-1",
            "x-perch-properties": "color=red"})
        assert status == 204
        e = sdk.wait("c2d")
        assert e["body"] == '{"cmd":"blink"}', e
        assert e["messageId"] == hdrs["iothub-messageid"] and e["correlationId"] == "c-1", e
        assert e["props"].get("color") == "red", e
    finally:
        rc = sdk.close()
    assert rc == 0, sdk.stderr()
