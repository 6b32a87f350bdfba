"""Identities at perch-hub (docs/identity.md), against the real binary with
raw MQTT packets and paho: SAS tokens of modules (keys derived from the
device key), of the device and of leaf devices (also under a clock shifted
with libfaketime); X.509 client certificates; every refusal with its
CONNACK code and a log line that names the reason without the token; the
per-identity topic rules; $.cdid/$.cmid stamped from the identity; a module
that leaves the deployment (hub deployment file + SIGHUP) or a device key
that changes ends the sessions. Tokens are made here with Python's hmac, the
way the Azure IoT SDKs make them."""
import base64
import glob
import hashlib
import subprocess
import hmac
import json
import os
import signal
import time
import urllib.parse

import pytest

import hubtest as h

pytestmark = pytest.mark.perch_only("identities are Perch's (IoT Hub's) rules")

HOSTNAME = "perch.local"
DEV = "gw1"
DEVKEY = base64.b64encode(bytes(range(32))).decode()
LEAFKEY = base64.b64encode(b"leaf-key-leaf-key-leaf-key-1234").decode()


def module_key(mod, devkey=DEVKEY):
    return base64.b64encode(hmac.new(base64.b64decode(devkey), mod.encode(),
                                     hashlib.sha256).digest()).decode()


def sas(resource, key, expiry=None):
    expiry = int(time.time()) + 3600 if expiry is None else expiry
    sr = urllib.parse.quote(resource, safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode(),
                                    hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={expiry}"


def mod_creds(mod, key=None, expiry=None, devkey=DEVKEY):
    key = key or module_key(mod, devkey)
    return (f"{DEV}/{mod}", f"{HOSTNAME}/{DEV}/{mod}/?api-version=2019-01-30",
            sas(f"{HOSTNAME}/devices/{DEV}/modules/{mod}", key, expiry))


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_deployment(path, modules, n=1):
    doc = {"version": 1, "deviceId": DEV, "deployment": n,
           "modules": {m: {"generationId": f"gen-{m}"} for m in modules},
           "edgeHub": {"schemaVersion": "1.1", "routes": {}}, "twins": {}}
    tmp = path + ".new"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


@pytest.fixture
def idhub(make_broker, workdir):
    """A hub with identities: device gw1, modules filter and sensor, leaf1; no
    anonymous clients unless a test asks."""
    d = os.path.join(workdir, "ids")
    os.makedirs(d, exist_ok=True)
    paths = {"key": os.path.join(d, "device.key"), "dep": os.path.join(d, "hub-deployment.json"),
             "leaves": os.path.join(d, "leaves.json")}
    write_private(paths["key"], DEVKEY + "\n")
    write_deployment(paths["dep"], ["filter", "sensor"])
    write_private(paths["leaves"], json.dumps({"leaf1": {"primaryKey": LEAFKEY}}))

    def make(anonymous=False, wrap=None):
        b = make_broker(anonymous=anonymous, wrap=wrap, extra_args=[
            "--set", f"device.id={DEV}", "--set", f"device.iothub_hostname={HOSTNAME}",
            "--set", f"device.key_file={paths['key']}",
            "--set", f"device.hub_deployment={paths['dep']}",
            "--set", f"hub.leaf_devices={paths['leaves']}"])
        b.paths = paths
        return b
    return make


def connect(b, cid, user, pw, transport="tcp"):
    c = h.Raw(b.ports["mqtt" if transport == "tcp" else "ws"], transport)
    return c, c.connect(cid, user=user, password=pw).rc


def test_module_connects_and_is_stamped(idhub):
    b = idhub(anonymous=True)
    watch = h.Raw(b.ports["mqtt"])
    assert watch.connect("observer").rc == 0  # anonymous: sees everything
    watch.subscribe("devices/#")
    for transport in ("tcp", "ws"):
        c, rc = connect(b, *mod_creds("filter"), transport=transport)
        assert rc == 0, f"module filter refused over {transport}: rc {rc}\n{b.log_tail(10)}"
        # A module cannot pretend to be another: $.cdid/$.cmid come from its identity.
        c.publish(f"devices/{DEV}/modules/filter/messages/events/"
                  "%24.cdid=evil&%24.cmid=evil&%24.on=out1&a=1", b"x", qos=1)
        got = watch.messages(1)
        assert len(got) == 1, "no message from the module"
        topic = urllib.parse.unquote(got[0].topic)
        assert "$.cdid=gw1" in topic and "$.cmid=filter" in topic, topic
        assert "evil" not in topic and "$.on=out1" in topic and "a=1" in topic, topic
        c.disconnect()
    # a leaf device: stamped with its own id and no module
    c, rc = connect(b, "leaf1", f"{HOSTNAME}/leaf1/?api-version=2019-01-30",
                    sas(f"{HOSTNAME}/devices/leaf1", LEAFKEY))
    assert rc == 0, b.log_tail(5)
    c.publish("devices/leaf1/messages/events/", b"t", qos=1)
    topic = urllib.parse.unquote(watch.messages(1)[0].topic)
    assert topic.endswith("/messages/events/$.cdid=leaf1"), topic
    # the device itself and $edgeAgent
    _, rc = connect(b, DEV, f"{HOSTNAME}/{DEV}/?api-version=2019-01-30",
                    sas(f"{HOSTNAME}/devices/{DEV}", DEVKEY))
    assert rc == 0
    _, rc = connect(b, *mod_creds("$edgeAgent"))
    assert rc == 0
    # anonymous clients may not use a known identity's client id
    c = h.Raw(b.ports["mqtt"])
    assert c.connect(f"{DEV}/filter").rc == 5


def test_refusals(idhub):
    b = idhub()
    now = int(time.time())
    cid, user, pw = mod_creds("filter")
    cases = [
        ("expired token", (cid, user, mod_creds("filter", expiry=now - 3600)[2]), 4,
         "token_expired"),
        ("token too far ahead", (cid, user, mod_creds("filter", expiry=now + 10 * 86400)[2]), 4,
         "token_lifetime_too_long"),
        ("signed with the device key", (cid, user, mod_creds("filter", key=DEVKEY)[2]), 4,
         "token_signature"),
        ("not a token", (cid, user, "hunter2"), 4, "token_malformed"),
        ("another module's token", (cid, user, mod_creds("sensor")[2]), 5,
         "token_for_another_identity"),
        ("user name of another module", (cid, mod_creds("sensor")[1], pw), 5, "bad_username"),
        ("a module not deployed", mod_creds("ghost"), 5, "unknown_identity"),
        ("another device's module", (f"gw2/filter", f"{HOSTNAME}/gw2/filter/?api-version=1",
                                     pw), 5, "unknown_identity"),
        ("a client id that is no identity", ("gw1/filter/x", user, pw), 2, "bad_client_id"),
        ("no credentials", ("gw1/filter", None, None), 5, "no_credentials"),
    ]
    for what, (c_id, c_user, c_pw), code, reason in cases:
        mark = b.log_mark()
        c = h.Raw(b.ports["mqtt"])
        rc = c.connect(c_id, user=c_user, password=c_pw).rc
        assert rc == code, f"{what}: CONNACK {rc}, want {code}"
        assert c.is_closed_within(5), f"{what}: not closed"
        line = b.wait_log("connection refused", mark)
        if c_pw:
            sig = urllib.parse.parse_qs(c_pw.partition(" ")[2]).get("sig", [c_pw])[0]
            assert sig not in b.log_since(mark), f"{what}: the token is in the log"
        assert line, f"{what}: no log line"
    m = b.metrics()
    for _, _, _, reason in cases:
        assert h.metric_sum(m, "perch_hub_auth_refused_total", reason=reason) >= 1, reason


def test_topic_rules(idhub):
    b = idhub(anonymous=True)
    watch = h.Raw(b.ports["mqtt"])
    assert watch.connect("observer").rc == 0
    watch.subscribe("#")
    c, rc = connect(b, *mod_creds("filter"))
    assert rc == 0
    granted = c.subscribe([(f"devices/{DEV}/modules/filter/#", 1),
                           (f"devices/{DEV}/modules/sensor/#", 1), ("#", 1),
                           ("$iothub/twin/res/#", 1), ("$iothub/methods/POST/#", 1),
                           (f"devices/{DEV}/messages/devicebound/#", 1)])
    assert granted == [1, 0x80, 0x80, 1, 1, 0x80], granted
    # denied publishes are acknowledged and dropped
    for topic in (f"devices/{DEV}/modules/sensor/messages/events/", f"devices/{DEV}/messages/events/",
                  f"devices/{DEV}/modules/sensor/inputs/in1/", "generic/topic"):
        c.publish(topic, b"no", qos=1)
    assert watch.quiet(0.5) == [], "a denied publish was delivered"
    assert h.metric_sum(b.metrics(), "perch_hub_denied_total", reason="publish") >= 4
    assert h.metric_sum(b.metrics(), "perch_hub_denied_total", reason="subscribe") >= 3


def test_identities_end_with_the_deployment_and_the_key(idhub):
    b = idhub()
    f, rc = connect(b, *mod_creds("filter"))
    assert rc == 0
    s, rc = connect(b, *mod_creds("sensor"))
    assert rc == 0
    # filter leaves the deployment (the agent rewrites the file and SIGHUPs)
    mark = b.log_mark()
    write_deployment(b.paths["dep"], ["sensor"], n=2)
    os.kill(b.proc.pid, signal.SIGHUP)
    assert f.is_closed_within(5), "filter's connection survived its removal"
    b.wait_log("identity no longer accepted", mark)
    s.sync()  # sensor is still there
    _, rc = connect(b, *mod_creds("filter"))
    assert rc == 5
    # noticed without SIGHUP too (mtime): filter comes back
    write_deployment(b.paths["dep"], ["sensor", "filter"], n=3)
    h.wait_until(lambda: connect(b, *mod_creds("filter"))[1] == 0, 5, what="filter accepted again")
    # the device key changes: every module token changes
    newkey = base64.b64encode(bytes(range(100, 132))).decode()
    write_private(b.paths["key"], newkey + "\n")
    os.kill(b.proc.pid, signal.SIGHUP)
    assert s.is_closed_within(5), "sensor's connection survived a device key change"
    assert connect(b, *mod_creds("sensor"))[1] == 4  # old key: wrong signature
    assert connect(b, *mod_creds("sensor", devkey=newkey))[1] == 0


def test_key_file_must_be_private(idhub):
    b = idhub(anonymous=False)
    os.chmod(b.paths["key"], 0o644)
    mark = b.log_mark()
    os.kill(b.proc.pid, signal.SIGHUP)
    b.wait_log("readable by others", mark)
    assert connect(b, *mod_creds("filter"))[1] == 3  # no key: server unavailable


def test_x509_leaf_device(idhub, make_broker, tls_files, workdir):
    """A leaf device authenticates with a client certificate whose CN is its id
    (signed by hub.tls.client_ca), no password; a certificate naming another
    identity is refused."""
    from test_lifecycle import _client_ca
    ca, certs = _client_ca(workdir)  # CN=good, signed by ca; CN=rogue, self-signed
    b = idhub(anonymous=True)
    write_private(b.paths["leaves"], json.dumps({"good": {"x509": True},
                                                 "leaf1": {"primaryKey": LEAFKEY}}))
    b.stop()
    b.tls = tls_files
    b.ports["mqtts"] = h.free_port()
    b.extra_args += ["--tls-client-ca", ca]
    b.start()
    watch = h.Raw(b.ports["mqtt"])
    assert watch.connect("observer").rc == 0
    watch.subscribe("devices/#")
    base = ["mosquitto_pub", "-h", h.HOST, "-p", str(b.ports["mqtts"]), "--cafile", tls_files[0],
            "--cert", certs["good"][0], "--key", certs["good"][1], "-q", "1", "-m", "x509"]
    ok = subprocess.run(base + ["-i", "good", "-u", f"{HOSTNAME}/good/?api-version=2019-01-30",
                                "-t", "devices/good/messages/events/"],
                        capture_output=True, timeout=15)
    assert ok.returncode == 0, ok.stderr.decode() + b.log_tail(5)
    got = watch.messages(1)
    assert got and urllib.parse.unquote(got[0].topic).endswith("$.cdid=good"), got
    mark = b.log_mark()
    bad = subprocess.run(base + ["-i", "leaf1", "-u", f"{HOSTNAME}/leaf1/?api-version=2019-01-30",
                                 "-t", "devices/leaf1/messages/events/"],
                         capture_output=True, timeout=15)
    assert bad.returncode != 0, "a certificate for another identity was accepted"
    assert b.wait_log("certificate names another identity", mark)
    # a certificates-only leaf cannot log in with a password
    c = h.Raw(b.ports["mqtt"])
    assert c.connect("good", user=f"{HOSTNAME}/good/?api-version=1",
                     password=sas(f"{HOSTNAME}/devices/good", LEAFKEY)).rc == 4


@pytest.mark.parametrize("shift,expiry,code,reason", [
    ("+2d", 3600, 4, "token_expired"),            # the hub's clock is ahead: expired
    ("-2d", 3600, 4, "token_lifetime_too_long"),  # behind: expires too far ahead
    ("+3m", 60, 0, None),                         # within the clock skew (5 min)
    ("-3m", 86400 - 60, 0, None),                 # the longest lifetime, skew allowed
])
def test_tokens_under_a_shifted_clock(idhub, shift, expiry, code, reason):
    """The hub runs under faketime with its clock shifted; tokens are made
    with this machine's clock, as a device with a wrong clock would."""
    # env execs the hub itself (the faketime wrapper would not pass SIGTERM on)
    libs = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
    assert libs, "libfaketime missing (deploy/install-deps.sh installs faketime)"
    lib = libs[0]
    # (an ASan build wants its runtime first: let it accept the preload)
    asan = os.environ.get("ASAN_OPTIONS", "")
    asan = f"{asan}:verify_asan_link_order=0" if asan else "verify_asan_link_order=0"
    b = idhub(wrap=lambda cmd: ["env", f"LD_PRELOAD={lib}", f"FAKETIME={shift}",
                                f"ASAN_OPTIONS={asan}"] + cmd)
    cid, user, pw = mod_creds("filter", expiry=int(time.time()) + expiry)
    _, rc = connect(b, cid, user, pw)
    assert rc == code, f"faketime {shift}, token for {expiry} s: CONNACK {rc}\n{b.log_tail(5)}"
    if reason:
        assert h.metric_sum(b.metrics(), "perch_hub_auth_refused_total", reason=reason) == 1
