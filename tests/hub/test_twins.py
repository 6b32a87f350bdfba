"""Twins and direct methods at perch-hub (docs/hub.md "Twins and direct
methods"), against the real binary with identities (device key file, hub
deployment file with "twins", SIGHUP) and real clients: raw MQTT packets
(hubtest.Raw) for topic-level checks, Python's http.client for the
direct-method REST endpoint, and the Azure IoT Node SDK (azure-iot-device +
azure-iot-device-mqtt, js/sdk_twin.js) as a module."""
import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.parse

import pytest

import hubtest as h

pytestmark = pytest.mark.perch_only("twins and direct methods are Perch's (IoT Hub's)")

HOSTNAME = "perch.local"
DEV = "gw1"
DEVKEY = base64.b64encode(bytes(range(32))).decode()
LEAFKEY = base64.b64encode(b"leaf-key-leaf-key-leaf-key-1234").decode()
MODULES = ["filter", "sensor", "caller"]
TWINS = {"filter": {"threshold": 25, "nested": {"a": 1, "keep": "x"}}}
SDK_JS = os.path.join(os.path.dirname(__file__), "js", "sdk_twin.js")
SDK_DIR = os.path.join(h.ROOT, "tests", "node_modules", "azure-iot-device-mqtt")


# ---------------------------------------------------------------- identities
def module_key(mod):
    return base64.b64encode(hmac.new(base64.b64decode(DEVKEY), mod.encode(),
                                     hashlib.sha256).digest()).decode()


def sas(resource, key, expiry=None):
    expiry = int(time.time()) + 3600 if expiry is None else expiry
    sr = urllib.parse.quote(resource, safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode(),
                                    hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={expiry}"


def mod_token(mod):
    return sas(f"{HOSTNAME}/devices/{DEV}/modules/{mod}", module_key(mod))


def mod_creds(mod):
    return (f"{DEV}/{mod}", f"{HOSTNAME}/{DEV}/{mod}/?api-version=2019-01-30", mod_token(mod))


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_deployment(path, modules=MODULES, twins=TWINS, n=1):
    doc = {"version": 1, "deviceId": DEV, "deployment": n,
           "modules": {m: {"generationId": f"gen-{m}"} for m in modules},
           "edgeHub": {"schemaVersion": "1.1", "routes": {}}, "twins": twins}
    tmp = path + ".new"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


@pytest.fixture
def twhub(make_broker, workdir, tls_files):
    """A hub with identities (device gw1; modules filter, sensor, caller; leaf1),
    desired properties for filter, listeners mqtt, ws, mqtts and wss."""
    d = os.path.join(workdir, "ids")
    os.makedirs(d, exist_ok=True)
    paths = {"key": os.path.join(d, "device.key"), "dep": os.path.join(d, "hub-deployment.json"),
             "leaves": os.path.join(d, "leaves.json")}
    write_private(paths["key"], DEVKEY + "\n")
    write_deployment(paths["dep"])
    write_private(paths["leaves"], json.dumps({"leaf1": {"primaryKey": LEAFKEY}}))

    def make(anonymous=False, data_dir=None):
        b = make_broker(anonymous=anonymous, listeners=("mqtt", "ws", "mqtts", "wss"),
                        tls=tls_files, data_dir=data_dir, extra_args=[
                            "--set", f"device.id={DEV}",
                            "--set", f"device.iothub_hostname={HOSTNAME}",
                            "--set", f"device.key_file={paths['key']}",
                            "--set", f"device.hub_deployment={paths['dep']}",
                            "--set", f"hub.leaf_devices={paths['leaves']}"])
        b.paths = paths
        b.tls_files = tls_files
        return b
    return make


def sighup_deployment(b, **kw):
    mark = b.log_mark()
    write_deployment(b.paths["dep"], **kw)
    os.kill(b.proc.pid, signal.SIGHUP)
    assert b.wait_log(r"hub deployment \d+ from", mark), "the deployment was not read again"


# ---------------------------------------------------------------- MQTT side
class Mod:
    """A module connected with raw MQTT, subscribed to its twin and method topics."""

    def __init__(self, b, mod, subs=("$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#",
                                     "$iothub/methods/POST/#"), transport="tcp"):
        self.c = h.Raw(b.ports["mqtt" if transport == "tcp" else "ws"], transport)
        cid, user, pw = mod_creds(mod)
        rc = self.c.connect(cid, user=user, password=pw).rc
        assert rc == 0, f"{mod} refused: CONNACK {rc}\n{b.log_tail(10)}"
        if subs:
            granted = self.c.subscribe([(s, 1) for s in subs])
            assert 0x80 not in granted, granted
        self.rid = 0
        self.pending = []

    def next_publish(self, pred, timeout=5):
        for i, p in enumerate(self.pending):
            if pred(p):
                return self.pending.pop(i)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            p = self.c.recv(max(0.01, end - time.monotonic()))
            if p is None:
                break
            if p.type != h.PUBLISH:
                continue
            if pred(p):
                return p
            self.pending.append(p)
        return None

    def request(self, topic, payload=b""):
        self.rid += 1
        rid = f"r{self.rid}"
        self.c.publish(topic + rid, payload, qos=0)
        p = self.next_publish(lambda p: p.topic.startswith("$iothub/twin/res/")
                              and parse_query(p.topic).get("$rid") == rid)
        assert p is not None, f"no answer to {topic}{rid}"
        status = int(p.topic.split("/")[3])
        return status, parse_query(p.topic), p

    def get(self):
        status, _, p = self.request("$iothub/twin/GET/?$rid=")
        assert status == 200, (status, p.payload)
        assert p.qos == 0
        return json.loads(p.payload)

    def report(self, patch):
        body = patch if isinstance(patch, (bytes, str)) else json.dumps(patch)
        status, q, p = self.request("$iothub/twin/PATCH/properties/reported/?$rid=", body)
        return status, q, p.payload

    def close(self):
        self.c.disconnect()


def parse_query(topic):
    q = topic.partition("?")[2]
    return dict(kv.partition("=")[::2] for kv in q.split("&") if kv)


# ---------------------------------------------------------------- HTTP side
def invoke(b, target, body, token=None, caller="caller", tls=False, headers=None,
           method="POST", raw_body=None, timeout=30):
    """POST /twins/gw1[/modules/{m}]/methods; returns (status, parsed body)."""
    port = b.ports["wss" if tls else "ws"]
    if tls:
        ctx = ssl.create_default_context(cafile=b.tls_files[0])
        conn = http.client.HTTPSConnection("localhost", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(h.HOST, port, timeout=timeout)
    dev, _, mod = target.partition("/")
    path = f"/twins/{urllib.parse.quote(dev, safe='')}"
    if mod:
        path += f"/modules/{urllib.parse.quote(mod, safe='')}"
    path += "/methods?api-version=2018-06-28"
    hdrs = {"Content-Type": "application/json"}
    if token is None and caller:
        token = mod_token(caller)
    if token:
        hdrs["Authorization"] = token
    hdrs.update(headers or {})
    data = raw_body if raw_body is not None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=hdrs)
    r = conn.getresponse()
    text = r.read()
    conn.close()
    try:
        return r.status, json.loads(text) if text else None
    except ValueError:
        return r.status, text


class Invoke(threading.Thread):
    """invoke() in a thread, for calls the test answers as the target."""

    def __init__(self, *a, **kw):
        super().__init__(daemon=True)
        self.a, self.kw, self.result, self.took = a, kw, None, None

    def run(self):
        t0 = time.monotonic()
        self.result = invoke(*self.a, **self.kw)
        self.took = time.monotonic() - t0

    def wait(self, timeout=40):
        self.join(timeout)
        assert not self.is_alive(), "the method call did not end"
        return self.result


def method_request(m, timeout=5):
    p = m.next_publish(lambda p: p.topic.startswith("$iothub/methods/POST/"), timeout)
    assert p is not None, "no method request arrived"
    return p.topic.split("/")[3], parse_query(p.topic)["$rid"], p


# ================================================================ twins
def test_twin_get_has_the_deployments_desired(twhub):
    b = twhub()
    f = Mod(b, "filter")
    t = f.get()
    assert set(t) == {"desired", "reported"}, t
    d = dict(t["desired"])
    v = d.pop("$version")
    assert isinstance(v, int) and v >= 1
    assert d == TWINS["filter"], t
    assert t["reported"] == {"$version": 1}, t
    # a module without desired properties, and the device itself
    s = Mod(b, "sensor")
    assert s.get() == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    dev = h.Raw(b.ports["mqtt"])
    assert dev.connect(DEV, user=f"{HOSTNAME}/{DEV}/?api-version=2019-01-30",
                       password=sas(f"{HOSTNAME}/devices/{DEV}", DEVKEY)).rc == 0
    dev.subscribe("$iothub/twin/res/#")
    dev.publish("$iothub/twin/GET/?$rid=dev1", b"", qos=1)
    got = dev.messages(1)
    assert got and got[0].topic == "$iothub/twin/res/200/?$rid=dev1", got
    assert json.loads(got[0].payload)["desired"] == {"$version": 1}


def test_reported_patch_merges_and_bumps_the_version(twhub):
    b = twhub()
    f = Mod(b, "filter")
    status, q, body = f.report({"temp": 21.5, "cfg": {"a": 1, "b": [1, 2]}, "s": "x"})
    assert status == 204 and body == b"", (status, body)
    assert q["$version"] == "2", q
    t = f.get()
    assert t["reported"] == {"temp": 21.5, "cfg": {"a": 1, "b": [1, 2]}, "s": "x",
                             "$version": 2}, t
    # JSON merge patch: null deletes, objects merge, the rest replaces
    status, q, _ = f.report({"temp": None, "cfg": {"a": None, "c": True}, "s": {"now": "obj"}})
    assert status == 204 and q["$version"] == "3"
    assert f.get()["reported"] == {"cfg": {"b": [1, 2], "c": True}, "s": {"now": "obj"},
                                   "$version": 3}
    # desired did not move
    assert f.get()["desired"]["threshold"] == 25
    m = b.metrics()
    assert h.metric_sum(m, "perch_hub_twin_requests_total", op="reported", status="204") == 2
    assert h.metric_sum(m, "perch_hub_twin_requests_total", op="get", status="200") >= 3


def test_bad_and_oversize_patches_get_400(twhub):
    b = twhub()
    f = Mod(b, "filter")
    assert f.report({"ok": 1})[0] == 204
    deep = {}
    cur = deep
    for _ in range(10):
        cur["d"] = {}
        cur = cur["d"]
    cur["x"] = 1  # 11 levels of objects
    cases = [
        ("oversize", {"big": "y" * 4000, **{f"k{i}": "z" * 3000 for i in range(11)}}),
        ("string over 4 KiB", {"s": "q" * 4097}),
        ("not JSON", b"{nope"),
        ("not an object", b"[1,2]"),
        ("a $ name", {"$version": 5}),
        ("a dot in a name", {"a.b": 1}),
        ("too deep", deep),
        ("empty", b""),
        ("patch over 64 KiB", b'{"a":"' + b"x" * 70000 + b'"}'),
    ]
    for what, patch in cases:
        mark = b.log_mark()
        status, q, body = f.report(patch)
        assert status == 400, f"{what}: {status}"
        err = json.loads(body)
        assert err["errorCode"] == 400004 and err["message"], (what, err)
        assert "$version" not in q
        assert b.wait_log(r"hub\.twin.*filter: reported patch refused \(400\)", mark), what
    # nothing changed
    assert f.get()["reported"] == {"ok": 1, "$version": 2}
    # the result may reach 32 KiB in steps of smaller patches, but not pass it
    for i in range(10):
        assert f.report({f"p{i}": "w" * 3000})[0] == 204
    status, _, body = f.report({"p10": "w" * 3000})
    assert status == 400 and "32768" in json.loads(body)["message"], body
    assert h.metric_sum(b.metrics(), "perch_hub_twin_requests_total", op="reported",
                        status="400") == len(cases) + 1


def test_desired_change_in_the_deployment_is_pushed(twhub):
    b = twhub()
    f = Mod(b, "filter")
    s = Mod(b, "sensor")
    v0 = f.get()["desired"]["$version"]
    sighup_deployment(b, twins={"filter": {"threshold": 30, "nested": {"a": 1, "b": 2}}}, n=2)
    p = f.next_publish(lambda p: p.topic.startswith("$iothub/twin/PATCH/properties/desired/"))
    assert p is not None, "no desired patch\n" + b.log_tail(20)
    assert p.qos == 0
    assert p.topic == f"$iothub/twin/PATCH/properties/desired/?$version={v0 + 1}", p.topic
    assert json.loads(p.payload) == {"threshold": 30, "nested": {"keep": None, "b": 2},
                                     "$version": v0 + 1}, p.payload
    assert f.get()["desired"] == {"threshold": 30, "nested": {"a": 1, "b": 2}, "$version": v0 + 1}
    # sensor's twin did not change, and it got nothing
    assert s.next_publish(lambda p: True, timeout=0.5) is None
    # the same deployment again: no new version, no patch
    sighup_deployment(b, twins={"filter": {"threshold": 30, "nested": {"a": 1, "b": 2}}}, n=3)
    assert f.next_publish(lambda p: True, timeout=0.7) is None
    # sensor gets desired properties; filter's go away
    sighup_deployment(b, twins={"sensor": {"rate": 5}}, n=4)
    p = s.next_publish(lambda p: "desired" in p.topic)
    assert p is not None and json.loads(p.payload) == {"rate": 5, "$version": 2}, p
    p = f.next_publish(lambda p: "desired" in p.topic)
    assert json.loads(p.payload) == {"threshold": None, "nested": None, "$version": v0 + 2}
    m = b.metrics()
    assert h.metric_sum(m, "perch_hub_twin_desired_patches_total", result="sent") == 3


def test_the_twin_of_a_module_that_leaves_is_deleted(twhub):
    b = twhub()
    s = Mod(b, "sensor")
    assert s.report({"mine": 1})[0] == 204
    s.close()
    sighup_deployment(b, modules=["filter", "caller"], n=2)
    assert b.wait_log("gw1/sensor: left the identities: its twin is deleted")
    sighup_deployment(b, modules=MODULES, n=3)
    s = Mod(b, "sensor")
    assert s.get() == {"desired": {"$version": 1}, "reported": {"$version": 1}}


def test_twins_persist_across_restarts_and_crashes(twhub):
    b = twhub()
    f = Mod(b, "filter")
    assert f.report({"boots": 1, "deep": {"x": [1, {"y": 2}]}})[0] == 204
    before = f.get()
    f.close()
    b.restart()
    f = Mod(b, "filter")
    assert f.get() == before
    # kill -9 right after the 204: the patch was on disk before the answer
    status, q, _ = f.report({"boots": 2})
    assert status == 204
    b.restart(graceful=False)
    f = Mod(b, "filter")
    t = f.get()
    assert t["reported"]["boots"] == 2 and t["reported"]["$version"] == int(q["$version"]), t
    assert t["desired"] == before["desired"]
    # a desired change made while the hub was down is applied at start
    f.close()
    b.stop()
    write_deployment(b.paths["dep"], twins={"filter": {"threshold": 99}}, n=5)
    b.start()
    f = Mod(b, "filter")
    d = f.get()["desired"]
    assert d == {"threshold": 99, "$version": before["desired"]["$version"] + 1}, d
    assert os.path.exists(os.path.join(b.data_dir, "twins.db"))


def test_each_identity_gets_only_its_own_twin(twhub):
    b = twhub(anonymous=True)
    spy = h.Raw(b.ports["mqtt"])
    assert spy.connect("spy").rc == 0
    spy.subscribe([("$iothub/#", 1), ("#", 1)])
    f = Mod(b, "filter")
    assert f.report({"secret": "filter's"})[0] == 204
    s = Mod(b, "sensor")
    t = s.get()
    assert t == {"desired": {"$version": 1}, "reported": {"$version": 1}}, t
    # a leaf device too
    leaf = h.Raw(b.ports["mqtt"])
    assert leaf.connect("leaf1", user=f"{HOSTNAME}/leaf1/?api-version=2019-01-30",
                        password=sas(f"{HOSTNAME}/devices/leaf1", LEAFKEY)).rc == 0
    leaf.subscribe("$iothub/twin/res/#")
    leaf.publish("$iothub/twin/GET/?$rid=l1", b"", qos=1)
    got = leaf.messages(1)
    assert json.loads(got[0].payload)["reported"] == {"$version": 1}
    # nothing of it went through the router
    assert spy.quiet(0.5) == [], "a twin request or answer was routed"
    # no answer to a connection that did not subscribe to $iothub/twin/res/#
    n = Mod(b, "caller", subs=())
    n.c.publish("$iothub/twin/GET/?$rid=x", b"", qos=1)
    assert n.c.quiet(0.5) == []


def test_twin_requests_are_rate_limited(twhub):
    b = twhub()
    f = Mod(b, "filter")
    # 140 requests in one write: far more than the 100 allowed at once (the
    # 20 a second that come back meanwhile cannot make up the difference)
    f.c.send(b"".join(h.publish_packet(f"$iothub/twin/GET/?$rid=q{i}") for i in range(140)))
    got = f.c.messages(140, timeout=10)
    statuses = [int(p.topic.split("/")[3]) for p in got]
    assert len(statuses) == 140
    assert statuses.count(200) >= 100 and 429 in statuses, statuses
    time.sleep(0.3)
    assert f.get()  # allowed again after a while


# ================================================================ direct methods
def test_method_invoked_over_http_is_answered(twhub):
    b = twhub()
    f = Mod(b, "filter")
    for tls in (False, True):
        call = Invoke(b, f"{DEV}/filter", {"methodName": "reboot", "payload": {"delay": 3},
                                           "responseTimeoutInSeconds": 10}, tls=tls)
        call.start()
        name, rid, p = method_request(f)
        assert name == "reboot" and p.qos == 0
        assert json.loads(p.payload) == {"delay": 3}
        f.c.publish(f"$iothub/methods/res/201/?$rid={rid}", json.dumps({"done": True}), qos=1)
        status, body = call.wait()
        assert status == 200 and body == {"status": 201, "payload": {"done": True}}, body
    # a payload that is not an object, an empty answer, the device as caller
    call = Invoke(b, f"{DEV}/filter", {"methodName": "n", "payload": 42}, caller=None,
                  token=sas(f"{HOSTNAME}/devices/{DEV}", DEVKEY))
    call.start()
    _, rid, p = method_request(f)
    assert p.payload == b"42"
    f.c.publish(f"$iothub/methods/res/500/?$rid={rid}", b"", qos=0)
    assert call.wait() == (200, {"status": 500, "payload": None})
    m = b.metrics()
    assert h.metric_sum(m, "perch_hub_method_calls_total", status="200") == 3
    assert h.metric_sum(m, "perch_hub_method_calls_pending") == 0


def test_method_timeout_gives_504(twhub):
    b = twhub()
    f = Mod(b, "filter")
    call = Invoke(b, f"{DEV}/filter", {"methodName": "slow", "responseTimeoutInSeconds": 5})
    call.start()
    _, rid, _ = method_request(f)
    status, body = call.wait()
    assert status == 504 and body["errorCode"] == 504101, (status, body)
    assert call.took >= 4.5, f"answered 504 after {call.took:.1f} s, before the timeout"
    # a late answer matches nothing and harms nothing
    mark = b.log_mark()
    f.c.publish(f"$iothub/methods/res/200/?$rid={rid}", b"{}", qos=1)
    assert b.wait_log("matches no call", mark)
    assert h.metric_sum(b.metrics(), "perch_hub_method_calls_total", status="504") == 1


def test_method_target_offline_or_unknown_gives_404(twhub):
    b = twhub()
    status, body = invoke(b, f"{DEV}/sensor", {"methodName": "m"})
    assert status == 404 and body["errorCode"] == 404103, body
    # connected but not subscribed to $iothub/methods/POST/#: the same
    s = Mod(b, "sensor", subs=("$iothub/twin/res/#",))
    status, body = invoke(b, f"{DEV}/sensor", {"methodName": "m"})
    assert status == 404 and body["errorCode"] == 404103, body
    s.close()
    assert invoke(b, f"{DEV}/ghost", {"methodName": "m"})[1]["errorCode"] == 404010
    assert invoke(b, f"{DEV}/$edgeAgent", {"methodName": "m"})[1]["errorCode"] == 404103
    assert invoke(b, "leaf1", {"methodName": "m"})[1]["errorCode"] == 404103
    assert invoke(b, "gw2/filter", {"methodName": "m"})[1]["errorCode"] == 404001
    assert invoke(b, "nodevice", {"methodName": "m"})[1]["errorCode"] == 404001
    # connectTimeoutInSeconds: the call waits for the target to come
    call = Invoke(b, f"{DEV}/sensor", {"methodName": "hello", "connectTimeoutInSeconds": 10,
                                       "responseTimeoutInSeconds": 10})
    call.start()
    time.sleep(0.5)
    s = Mod(b, "sensor")
    _, rid, _ = method_request(s)
    s.c.publish(f"$iothub/methods/res/200/?$rid={rid}", b'"hi"', qos=0)
    assert call.wait() == (200, {"status": 200, "payload": "hi"})
    # a target that goes away before it answers: 404 at once
    call = Invoke(b, f"{DEV}/sensor", {"methodName": "bye", "responseTimeoutInSeconds": 60})
    call.start()
    method_request(s)
    s.c.close()
    status, body = call.wait(timeout=30)  # not the 60 s of its timeout
    assert status == 404 and body["errorCode"] == 404103, (status, body)


def test_invoker_that_goes_away_cancels_its_call(twhub):
    b = twhub()
    f = Mod(b, "filter")
    body = json.dumps({"methodName": "wait", "responseTimeoutInSeconds": 60}).encode()
    conn = http.client.HTTPConnection(h.HOST, b.ports["ws"], timeout=10)
    conn.request("POST", f"/twins/{DEV}/modules/filter/methods", body=body,
                 headers={"Authorization": mod_token("caller"),
                          "Content-Type": "application/json"})
    _, rid, _ = method_request(f)
    assert h.metric_sum(b.metrics(), "perch_hub_method_calls_pending") == 1
    mark = b.log_mark()
    conn.sock.close()
    assert b.wait_log("cancelled: the invoker went away", mark), b.log_tail(10)
    assert h.metric_sum(b.metrics(), "perch_hub_method_calls_pending") == 0
    assert h.metric_sum(b.metrics(), "perch_hub_method_calls_total", status="cancelled") == 1
    f.c.publish(f"$iothub/methods/res/200/?$rid={rid}", b"{}", qos=1)
    assert f.get()  # the module is fine
    # a call that takes longer than HTTP servers usually wait is still answered
    call = Invoke(b, f"{DEV}/filter", {"methodName": "long", "responseTimeoutInSeconds": 30})
    call.start()
    _, rid, _ = method_request(f)
    time.sleep(12)
    f.c.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"late":"but fine"}', qos=0)
    assert call.wait() == (200, {"status": 200, "payload": {"late": "but fine"}})


def test_method_endpoint_refusals(twhub):
    b = twhub()
    f = Mod(b, "filter")  # noqa: F841 (connected throughout)
    ok = {"methodName": "m", "responseTimeoutInSeconds": 5}
    tgt = f"{DEV}/filter"
    cases = [
        ("no token", dict(token="", caller=None), 401),
        ("not a token", dict(token="Bearer abc"), 401),
        ("expired", dict(token=sas(f"{HOSTNAME}/devices/{DEV}/modules/caller",
                                   module_key("caller"), int(time.time()) - 3600)), 401),
        ("another module's identity claimed",
         dict(headers={"x-ms-edge-moduleId": f"{DEV}/sensor"}), 401),
        ("a leaf device", dict(caller=None, token=sas(f"{HOSTNAME}/devices/leaf1", LEAFKEY)),
         403),
        ("GET", dict(method="GET", raw_body=b""), 405),
        ("not JSON", dict(raw_body=b"{"), 400),
        ("no methodName", dict(raw_body=b'{"payload":1}'), 400),
        ("a / in methodName", dict(raw_body=b'{"methodName":"a/b"}'), 400),
        ("responseTimeout 1", dict(raw_body=b'{"methodName":"a","responseTimeoutInSeconds":1}'),
         400),
        ("connectTimeout 301", dict(raw_body=b'{"methodName":"a","connectTimeoutInSeconds":301}'),
         400),
        ("responseTimeout 1e300",
         dict(raw_body=b'{"methodName":"a","responseTimeoutInSeconds":1e300}'), 400),
        ("connectTimeout -1e300",
         dict(raw_body=b'{"methodName":"a","connectTimeoutInSeconds":-1e300}'), 400),
        ("responseTimeout 5.5", dict(raw_body=b'{"methodName":"a","responseTimeoutInSeconds":5.5}'),
         400),
        ("body over 132 KiB", dict(raw_body=json.dumps({"methodName": "a",
                                                        "payload": "x" * 140000}).encode()),
         413),
    ]
    for what, kw, want in cases:
        status, body = invoke(b, tgt, ok, **kw)
        assert status == want, f"{what}: {status} {body}"
        if want != 405 or body:
            assert isinstance(body, dict) and body.get("errorCode") and body.get("message"), \
                (what, body)
    # the right x-ms-edge-moduleId is fine; other paths are still 404
    call = Invoke(b, tgt, {"methodName": "m", "responseTimeoutInSeconds": 5},
                  headers={"x-ms-edge-moduleId": f"{DEV}/caller"})
    call.start()
    call.wait()
    assert call.result[0] == 504
    conn = http.client.HTTPConnection(h.HOST, b.ports["ws"], timeout=5)
    conn.request("GET", "/twins/gw1/nothing")
    assert conn.getresponse().status == 404
    conn.close()
    # reading a twin over REST needs the edge device's token
    conn = http.client.HTTPConnection(h.HOST, b.ports["ws"], timeout=5)
    conn.request("GET", "/twins/gw1")
    assert conn.getresponse().status == 401
    conn.close()
    # MQTT over WebSocket still works on the same listener
    w = Mod(b, "sensor", transport="ws")
    assert w.get()["reported"] == {"$version": 1}
    assert "sig=" not in b.log()


# ================================================================ the Azure IoT Node SDK
def sdk_env(b):
    cs = (f"HostName={HOSTNAME};DeviceId={DEV};ModuleId={{m}};SharedAccessKey={{k}};"
          f"GatewayHostName=localhost:{b.ports['mqtts']}")
    return dict(os.environ, PERCH_CA=b.tls_files[0], PERCH_HTTPS_PORT=str(b.ports["wss"]),
                PERCH_CS_TARGET=cs.format(m="filter", k=module_key("filter")),
                PERCH_CS_CALLER=cs.format(m="caller", k=module_key("caller")),
                PERCH_DEVICE=DEV, NODE_PATH=os.path.join(h.ROOT, "tests", "node_modules"))


class Sdk:
    """A js/ script of the SDK (sdk_twin.js by default): one JSON event per line
    out, one command per line in."""

    def __init__(self, b, script=SDK_JS, env=None):
        self.script = os.path.basename(script)
        self.p = subprocess.Popen(["node", script], env=env or sdk_env(b), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  bufsize=1)
        self.events = []
        self.lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "text", "line": line}
            with self.lock:
                self.events.append(ev)
                self.lock.notify_all()

    def wait(self, event, pred=lambda e: True, timeout=20):
        end = time.monotonic() + timeout
        with self.lock:
            while True:
                for e in self.events:
                    if e.get("event") == event and pred(e):
                        self.events.remove(e)
                        return e
                    if e.get("event") == "error":
                        raise AssertionError(f"{self.script}: {e}\n{self.stderr()}")
                left = end - time.monotonic()
                if left <= 0 or self.p.poll() is not None:
                    raise AssertionError(f"no '{event}' from {self.script}; got {self.events}\n"
                                         + self.stderr())
                self.lock.wait(min(left, 0.2))

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def stderr(self):
        if self.p.poll() is None:
            return ""
        return self.p.stderr.read()[-3000:]

    def close(self):
        if self.p.poll() is None:
            try:
                self.send("quit")
                self.p.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait(5)
        return self.p.returncode


def test_azure_iot_node_sdk_module(twhub):
    assert shutil.which("node"), "node is not installed"
    assert os.path.isdir(SDK_DIR), "tests/node_modules/azure-iot-device-mqtt missing"
    b = twhub()
    sdk = Sdk(b)
    try:
        # connects as filter over mqtts, reads its twin, reports, answers methods
        twin = sdk.wait("twin")
        desired = dict(twin["desired"])
        v = desired.pop("$version")
        assert desired == TWINS["filter"], twin
        sdk.wait("reported")
        sdk.wait("ready")
        # the report is in the hub's twin (read back by the SDK itself)
        sdk.send("get")
        t = sdk.wait("twin")
        assert t["reported"]["sdk"] == {"lang": "node", "ok": True}, t
        # a desired change reaches the SDK's twin as a patch
        sighup_deployment(b, twins={"filter": {"threshold": 31, "nested": {"a": 1, "keep": "x"}}},
                          n=2)
        e = sdk.wait("desired", lambda e: e["delta"].get("$version") == v + 1)
        assert e["delta"]["threshold"] == 31, e
        # another module's SDK invokes a method on it over HTTPS
        sdk.send("invoke")
        e = sdk.wait("invoked")
        assert e["result"] == {"status": 200, "payload": {"echo": {"x": 1}, "by": "filter"}}, e
        # and a method of a module that is not there: 404 from the hub
        sdk.send("invoke-missing")
        e = sdk.wait("invoke-failed")
        assert e["status"] == 404, e
    finally:
        rc = sdk.close()
    assert rc == 0, sdk.stderr()
