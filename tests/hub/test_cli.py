"""The `perch` command line (docs/cli.md) against a real perch-hub: `perch
method` invokes direct methods that raw MQTT modules and a leaf device answer
(hubtest.Raw, subscribed to $iothub/methods/POST/#), `perch c2d` sends
cloud-to-device messages that a leaf device receives with their properties,
`perch twin` shows twins and patches desired properties that a raw MQTT
module receives on $iothub/twin/PATCH/properties/desired/.
The CLI reads its own config file (device: and hub: sections, the other
daemons' keys left alone), signs its token with the device key, finds the hub
in hub.listen (ws:// on any address, else wss:// verified with
certs_dir/ca.pem). Exit codes 0/1/2/64, one clear stderr line per failure,
and never a key or token in what it prints."""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.parse

import pytest

import hubtest as h
from test_c2d import bag
from test_twins import (DEV, DEVKEY, HOSTNAME, LEAFKEY, TWINS, Mod,  # noqa: F401
                        method_request, parse_query, sas, twhub, write_private)
from test_upstream import PARENT, PARENT_HOST
from test_upstream_twin import make_pair

pytestmark = pytest.mark.perch_only("the perch CLI talks to perch-hub's REST endpoints")

PERCH_BIN = (h.O if os.path.isabs(h.O) else os.path.join(h.ROOT, h.O)) + "/bin/perch"
WRONGKEY = base64.b64encode(b"not-the-device-key-not-the-dev-key").decode()


def write_config(b, listen, key=None, certs_dir=None, extra=""):
    """A config file for the CLI: device: and hub: sections like the ones
    perch-agent and perch-hub share (with keys that are theirs, not the CLI's)."""
    d = tempfile.mkdtemp(prefix="cli-", dir=b.workdir)
    key_file = b.paths["key"]
    if key is not None:
        key_file = os.path.join(d, "device.key")
        write_private(key_file, key + "\n")
    if certs_dir is None:
        certs_dir = os.path.join(d, "certs")
        os.makedirs(certs_dir)
        shutil.copy(b.tls_files[0], os.path.join(certs_dir, "ca.pem"))
    path = os.path.join(d, "config.yaml")
    with open(path, "w") as f:
        f.write(f"""device:
  id: {DEV}
  iothub_hostname: {HOSTNAME}
  key_file: {key_file}
  certs_dir: {certs_dir}
hub:
  data_dir: /nonexistent/hub-data
  max_inflight: 10
  listen:
""" + "".join(f"    - {u}\n" for u in listen) + """agent:
  docker_socket: /var/run/docker.sock
""" + extra)
    return path


def perch(config, *args, stdin=None, timeout=60):
    r = subprocess.run([PERCH_BIN, "--config", config, *args], input=stdin,
                       capture_output=True, timeout=timeout)
    out, err = r.stdout.decode(), r.stderr.decode()
    for secret in (DEVKEY, WRONGKEY, "sig=", "SharedAccessSignature", "se="):
        assert secret not in out and secret not in err, f"{secret!r} printed:\n{out}\n{err}"
    return r.returncode, out, err


class Run:
    """perch(...) in a thread, for calls the test answers as the target."""

    def __init__(self, *a, **kw):
        self.result = None
        self.th = threading.Thread(target=self._run, args=a, kwargs=kw, daemon=True)
        self.th.start()

    def _run(self, *a, **kw):
        self.result = perch(*a, **kw)

    def wait(self, timeout=60):
        self.th.join(timeout)
        assert not self.th.is_alive(), "perch did not end"
        return self.result


def ws_config(b, **kw):
    # an any-address listener: the CLI dials it at 127.0.0.1; the mqtt one is not HTTP
    return write_config(b, [f"mqtt://0.0.0.0:{b.ports['mqtt']}",
                            f"ws://0.0.0.0:{b.ports['ws']}"], **kw)


def one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr:\n{err}"
    return lines[0]


# ================================================================ perch method
def test_method_answered(twhub):
    b = twhub()
    cfg = ws_config(b)
    f = Mod(b, "filter")
    call = Run(cfg, "method", "filter", "reboot", "--payload", '{"delay": 3}')
    name, rid, p = method_request(f)
    assert name == "reboot" and json.loads(p.payload) == {"delay": 3}, (name, p.payload)
    f.c.publish(f"$iothub/methods/res/200/?$rid={rid}", json.dumps({"ok": [1, 2]}), qos=1)
    rc, out, err = call.wait()
    assert rc == 0, (rc, out, err)
    assert json.loads(out) == {"status": 200, "payload": {"ok": [1, 2]}}, out
    assert err == "", err
    # DEVICE/MODULE names the same module; a 2xx other than 200 is success too
    call = Run(cfg, "method", f"{DEV}/filter", "status")
    name, rid, p = method_request(f)
    assert name == "status" and p.payload == b"null", (name, p.payload)
    f.c.publish(f"$iothub/methods/res/201/?$rid={rid}", b'"fine"', qos=1)
    assert call.wait()[:2] == (0, '{"status":201,"payload":"fine"}\n')


def test_method_error_status_exits_1(twhub):
    b = twhub()
    cfg = ws_config(b)
    f = Mod(b, "filter")
    call = Run(cfg, "method", "filter", "explode")
    _, rid, _ = method_request(f)
    f.c.publish(f"$iothub/methods/res/500/?$rid={rid}", json.dumps({"why": "boom"}), qos=1)
    rc, out, err = call.wait()
    assert rc == 1, (rc, out, err)
    assert json.loads(out) == {"status": 500, "payload": {"why": "boom"}}, out
    assert "500" in one_line(err), err


def test_method_hub_errors_exit_2(twhub):
    b = twhub()
    cfg = ws_config(b)
    # a module of the deployment that is not connected: 404 (404103)
    rc, out, err = perch(cfg, "method", "sensor", "m")
    assert rc == 2 and out == "", (rc, out, err)
    line = one_line(err)
    assert "404" in line and "404103" in line and f"{DEV}/sensor" in line, line
    # no module by that name and no device either: the device's answer (404001)
    rc, _, err = perch(cfg, "method", "ghost", "m")
    assert rc == 2 and "404001" in one_line(err), err
    rc, _, err = perch(cfg, "method", f"{DEV}/ghost", "m")
    assert rc == 2 and "404010" in one_line(err), err
    # no answer within --timeout: 504 (504101)
    f = Mod(b, "filter")
    call = Run(cfg, "method", "filter", "slow", "--timeout", "5")
    method_request(f)
    rc, out, err = call.wait()
    assert rc == 2 and out == "", (rc, out, err)
    line = one_line(err)
    assert "504" in line and "504101" in line, line


def test_method_on_a_leaf_device(twhub):
    b = twhub()
    cfg = ws_config(b)
    leaf = h.Raw(b.ports["mqtt"])
    assert leaf.connect("leaf1", user=f"{HOSTNAME}/leaf1/?api-version=2019-01-30",
                        password=sas(f"{HOSTNAME}/devices/leaf1", LEAFKEY)).rc == 0
    assert leaf.subscribe([("$iothub/methods/POST/#", 1)]) == [1]
    for target in ("leaf1", "leaf1/"):  # no module is called leaf1: the device is
        call = Run(cfg, "method", target, "blink", "--payload", "[1]")
        p = None
        for _ in range(20):
            p = leaf.recv(5)
            if p is not None and p.type == h.PUBLISH:
                break
        assert p is not None and p.topic.startswith("$iothub/methods/POST/blink/"), p
        rid = urllib.parse.parse_qs(p.topic.split("?", 1)[1])["$rid"][0]
        leaf.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"on":true}', qos=0)
        rc, out, err = call.wait()
        assert rc == 0 and json.loads(out) == {"status": 200, "payload": {"on": True}}, \
            (target, rc, out, err)


def test_method_over_wss_verifies_the_ca(twhub, tmp_path):
    b = twhub()
    # only a wss:// listener (and a ws:// one on another interface: not for the CLI)
    listen = [f"ws://192.0.2.1:{b.ports['ws']}", f"wss://0.0.0.0:{b.ports['wss']}"]
    cfg = write_config(b, listen)
    f = Mod(b, "filter")
    call = Run(cfg, "method", "filter", "hello")
    _, rid, _ = method_request(f)
    f.c.publish(f"$iothub/methods/res/200/?$rid={rid}", b"{}", qos=1)
    rc, out, err = call.wait()
    assert rc == 0 and json.loads(out) == {"status": 200, "payload": {}}, (rc, out, err)
    # --hub wss:// too
    call = Run(cfg, "--hub", f"wss://127.0.0.1:{b.ports['wss']}", "method", "filter", "hi")
    # (--hub is a global option: given after --config it is still before the command)
    _, rid, _ = method_request(f)
    f.c.publish(f"$iothub/methods/res/200/?$rid={rid}", b"{}", qos=1)
    assert call.wait()[0] == 0
    # a CA that did not sign the hub's certificate: refused before anything is sent
    other = tmp_path / "other"
    other.mkdir()
    cert, _ = h.make_cert(str(other))
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(cert, certs / "ca.pem")
    rc, out, err = perch(write_config(b, listen, certs_dir=str(certs)), "method", "filter", "x")
    assert rc == 2 and out == "", (rc, out, err)
    line = one_line(err)
    assert "not trusted" in line and str(certs / "ca.pem") in line, line
    assert f.c.quiet(0.3) == [], "the method was called over an unverified connection"
    # no CA file at all
    rc, _, err = perch(write_config(b, listen, certs_dir=str(tmp_path / "none")),
                       "method", "filter", "x")
    assert rc == 2 and str(tmp_path / "none" / "ca.pem") in one_line(err), err


def test_wrong_or_missing_device_key(twhub, tmp_path):
    b = twhub()
    rc, out, err = perch(ws_config(b, key=WRONGKEY), "method", "filter", "m")
    assert rc == 2 and out == "", (rc, out, err)
    line = one_line(err)
    assert "401" in line and "401002" in line, line
    # a key file that is not there, or readable by everyone: named, no bytes of it
    cfg = ws_config(b)
    missing = str(tmp_path / "no.key")
    with open(cfg) as f:
        text = f.read()
    bad = str(tmp_path / "bad.yaml")
    with open(bad, "w") as f:
        f.write(text.replace(b.paths["key"], missing))
    rc, out, err = perch(bad, "c2d", "leaf1", "--body", "x")
    assert rc == 2 and out == "" and missing in one_line(err), (rc, out, err)
    loose = str(tmp_path / "loose.key")
    with open(loose, "w") as f:
        f.write(DEVKEY + "\n")
    os.chmod(loose, 0o644)
    with open(bad, "w") as f:
        f.write(text.replace(b.paths["key"], loose))
    rc, out, err = perch(bad, "method", "filter", "m")
    assert rc == 2 and loose in one_line(err) and "0600" in err, (rc, out, err)


# ================================================================ perch c2d
def test_c2d_reaches_a_leaf_device_with_its_properties(twhub, tmp_path):
    b = twhub()
    cfg = ws_config(b)
    rc, out, err = perch(cfg, "c2d", "leaf1", "--body", '{"cmd":"on"}',
                         "--property", "kind=cmd", "--property", "a b=c&d=é",
                         "--content-type", "application/json", "--content-encoding", "utf-8",
                         "--message-id", "m-1", "--correlation-id", "corr-1", "--ttl", "600")
    assert rc == 0 and out == "m-1\n" and err == "", (rc, out, err)
    # a message id of its own when none is given; the body from a file and from stdin
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(b"\x00\x01binary\xff")
    rc, out, err = perch(cfg, "c2d", "leaf1", "--file", str(body_file))
    assert rc == 0 and err == "", (rc, out, err)
    mid2 = out.strip()
    assert len(mid2) == 36 and mid2.count("-") == 4, out
    rc, out, err = perch(cfg, "c2d", "leaf1", "-", stdin=b"from stdin")
    assert rc == 0 and err == "", (rc, out, err)
    mid3 = out.strip()
    assert mid3 != mid2
    c = h.Raw(b.ports["mqtt"])
    assert c.connect("leaf1", user=f"{HOSTNAME}/leaf1/?api-version=2019-01-30",
                     password=sas(f"{HOSTNAME}/devices/leaf1", LEAFKEY)).rc == 0
    assert c.subscribe([("devices/leaf1/messages/devicebound/#", 1)]) == [1]
    got = c.messages(3)
    assert [p.payload for p in got] == [b'{"cmd":"on"}', b"\x00\x01binary\xff",
                                        b"from stdin"], got
    prefix, props = bag(got[0].topic)
    assert prefix == "devices/leaf1/messages/devicebound", got[0].topic
    assert props["$.mid"] == "m-1" and props["$.cid"] == "corr-1", props
    assert props["$.ct"] == "application/json", props
    assert props["kind"] == "cmd" and props["a b"] == "c&d=é", props
    assert bag(got[1].topic)[1]["$.mid"] == mid2 and bag(got[2].topic)[1]["$.mid"] == mid3


def test_c2d_content_encoding(twhub):
    b = twhub()
    rc, out, err = perch(ws_config(b), "c2d", "leaf1", "--body", "x",
                         "--content-encoding", "utf-8")
    assert rc == 0, (rc, out, err)
    c = h.Raw(b.ports["mqtt"])
    assert c.connect("leaf1", user=f"{HOSTNAME}/leaf1/?api-version=2019-01-30",
                     password=sas(f"{HOSTNAME}/devices/leaf1", LEAFKEY)).rc == 0
    assert c.subscribe([("devices/leaf1/messages/devicebound/#", 1)]) == [1]
    got = c.messages(1)
    assert got, "the message did not come"
    assert bag(got[0].topic)[1].get("$.ce") == "utf-8", got[0].topic


def test_c2d_refused(twhub):
    b = twhub()
    cfg = ws_config(b)
    rc, out, err = perch(cfg, "c2d", "nobody", "--body", "x")
    assert rc == 2 and out == "", (rc, out, err)
    assert "404" in one_line(err), err
    rc, out, err = perch(cfg, "c2d", "leaf1", "--body", "x" * (64 * 1024 + 1))
    assert rc == 64 and "64 KiB" in err, (rc, err)
    # nothing listens: one line naming where it tried
    port = h.free_port()
    rc, out, err = perch(cfg, "--hub", f"ws://127.0.0.1:{port}", "c2d", "leaf1", "--body", "x")
    assert rc == 2 and str(port) in one_line(err), (rc, err)


# ================================================================ perch twin
def desired_patch(m, timeout=5):
    p = m.next_publish(lambda p: p.topic.startswith("$iothub/twin/PATCH/properties/desired/"),
                       timeout)
    assert p is not None, "no desired patch arrived"
    return json.loads(p.payload), int(parse_query(p.topic)["$version"])


def test_twin_shows_a_modules_and_a_devices_twin(twhub):
    b = twhub()
    cfg = ws_config(b)
    for target in ("filter", f"{DEV}/filter"):
        rc, out, err = perch(cfg, "twin", target)
        assert rc == 0 and err == "", (target, rc, out, err)
        assert out.count("\n") > 3, f"not indented:\n{out}"
        t = json.loads(out)
        assert t["deviceId"] == DEV and t["moduleId"] == "filter", t
        desired = dict(t["properties"]["desired"])
        assert isinstance(desired.pop("$version"), int) and desired == TWINS["filter"], t
        assert t["properties"]["reported"] == {"$version": 1}, t
    # one name that is no module: the device of that name (a leaf device), and
    # this device itself
    for target, dev in (("leaf1", "leaf1"), ("leaf1/", "leaf1"), (DEV, DEV)):
        rc, out, err = perch(cfg, "twin", target)
        assert rc == 0 and err == "", (target, rc, out, err)
        t = json.loads(out)
        assert t["deviceId"] == dev and "moduleId" not in t, (target, t)


def test_twin_desired_patch_reaches_the_module(twhub, tmp_path):
    b = twhub()
    cfg = ws_config(b)
    f = Mod(b, "filter")
    v0 = f.get()["desired"]["$version"]
    rc, out, err = perch(cfg, "twin", f"{DEV}/filter", "--desired",
                         '{"interval": 5, "nested": {"b": 2}}')
    assert rc == 0 and err == "", (rc, out, err)
    # merged over the deployment's desired properties
    desired = json.loads(out)["properties"]["desired"]
    assert desired["interval"] == 5 and desired["threshold"] == 25, desired
    assert desired["nested"] == {"a": 1, "keep": "x", "b": 2}, desired
    assert desired["$version"] > v0, desired
    patch, v = desired_patch(f)
    assert patch["interval"] == 5 and patch["nested"] == {"b": 2}, patch
    assert v == desired["$version"], (v, desired)
    assert f.get()["desired"] == desired
    # from a file, and from standard input; null deletes
    pfile = tmp_path / "desired.json"
    pfile.write_text('{\n  "interval": 10\n}\n')
    rc, out, err = perch(cfg, "twin", "filter", "--file", str(pfile))
    assert rc == 0 and json.loads(out)["properties"]["desired"]["interval"] == 10, (rc, err)
    assert desired_patch(f)[0]["interval"] == 10
    rc, out, err = perch(cfg, "twin", "filter", "-", stdin=b'{"interval": null}')
    assert rc == 0 and "interval" not in json.loads(out)["properties"]["desired"], (rc, out, err)
    assert desired_patch(f)[0] == {"interval": None, "$version": v + 2}
    # a GET changes nothing and sends nothing
    assert perch(cfg, "twin", "filter")[0] == 0
    assert f.next_publish(lambda p: "desired" in p.topic, timeout=0.5) is None


def test_twin_bad_desired_and_unknown_targets(twhub):
    b = twhub()
    cfg = ws_config(b)
    f = Mod(b, "filter")
    # refused before anything is sent: not JSON, not an object (64)
    for desired, why in (("{not json", "not JSON"), ('{"a": 1, "a": 2}', "not JSON"),
                         ("", "not JSON"), ("[1, 2]", "not a JSON object"),
                         ("5", "not a JSON object"), ('"text"', "not a JSON object"),
                         ("null", "not a JSON object")):
        rc, out, err = perch(cfg, "twin", "filter", "--desired", desired)
        assert rc == 64 and out == "" and "usage: perch twin" in err, (desired, rc, out, err)
        assert f"--desired: {why}" in err.splitlines()[0], (desired, err)
    rc, out, err = perch(cfg, "twin", "filter", "-", stdin=b"[]")
    assert rc == 64 and err.startswith("perch: standard input: not a JSON object"), (rc, err)
    # a patch the hub does not take: its 400 and message (2)
    rc, out, err = perch(cfg, "twin", "filter", "--desired", '{"$version": 7}')
    assert rc == 2 and out == "", (rc, out, err)
    line = one_line(err)
    assert "400" in line and "400004" in line and f"{DEV}/filter" in line, line
    assert f.next_publish(lambda p: "desired" in p.topic, timeout=0.5) is None
    # no such module, no such device: the hub's 404 (2)
    rc, out, err = perch(cfg, "twin", "ghost")
    assert rc == 2 and out == "", (rc, out, err)
    line = one_line(err)
    assert "404" in line and "404001" in line and "ghost" in line, line
    rc, out, err = perch(cfg, "twin", f"{DEV}/ghost", "--desired", '{"a": 1}')
    assert rc == 2 and out == "", (rc, out, err)
    line = one_line(err)
    assert "404" in line and "404010" in line and f"{DEV}/ghost" in line, line


def test_twin_of_a_module_behind_a_child_hub(make_broker, workdir):
    """At the parent (device site): `perch twin gw1/producer --desired ...`
    reaches the module producer of the child hub gw1, down the link."""
    pair = make_pair(make_broker, workdir)
    m = Mod(pair.child, "producer")
    before = m.get()["desired"]["$version"]
    cfg = os.path.join(pair.dir, "parent-cli.yaml")
    with open(cfg, "w") as f:
        f.write(f"""device:
  id: {PARENT}
  iothub_hostname: {PARENT_HOST}
  key_file: {os.path.join(pair.dir, "parent.key")}
hub:
  listen:
    - ws://127.0.0.1:{pair.parent.ports["ws"]}
""")
    rc, out, err = perch(cfg, "twin", f"{DEV}/producer", "--desired", '{"interval": 5}')
    assert rc == 0 and err == "", (rc, out, err)
    t = json.loads(out)
    assert t["deviceId"] == DEV and t["moduleId"] == "producer", t
    assert t["properties"]["desired"]["interval"] == 5, t
    patch, v = desired_patch(m, timeout=10)
    assert patch["interval"] == 5 and v > before, (patch, v)
    rc, out, err = perch(cfg, "twin", f"{DEV}/producer")
    assert rc == 0 and json.loads(out)["properties"]["desired"]["interval"] == 5, (rc, err)
    # an identity that is neither the parent's nor behind its child hubs
    rc, out, err = perch(cfg, "twin", "elsewhere/producer")
    assert rc == 2 and "404" in one_line(err), (rc, out, err)


# ================================================================ command line
def test_usage_and_help(twhub):
    b = twhub()
    cfg = ws_config(b)
    for args in (["--help"], ["method", "--help"], ["c2d", "--help"], ["twin", "--help"]):
        rc, out, err = perch(cfg, *args)
        assert rc == 0 and out.startswith("usage: perch") and err == "", (args, rc, out, err)
    bad = [[], ["nope"], ["--bogus", "method", "filter", "m"], ["method"], ["method", "filter"],
           ["method", "filter", "m", "extra"], ["method", "filter", "m", "--timeout", "4"],
           ["method", "filter", "m", "--timeout", "x"], ["method", "filter", "m", "--payload",
                                                         "{not json"],
           ["method", "filter", "a/b"], ["method", "a/b/c", "m"], ["c2d"],
           ["c2d", "leaf1", "--ttl", "0"], ["c2d", "leaf1", "--property", "novalue"],
           ["c2d", "leaf1", "--body", "x", "--file", "/etc/hostname"], ["c2d", "leaf1", "--x"],
           ["twin"], ["twin", "a/b/c"], ["twin", "/m"], ["twin", "filter", "extra"],
           ["twin", "filter", "--desired"], ["twin", "filter", "--desired", "{}", "-"],
           ["twin", "filter", "--x"]]
    for args in bad:
        rc, out, err = perch(cfg, *args)
        assert rc == 64 and out == "" and "usage: perch" in err, (args, rc, out, err)
    # a config the shared loader refuses (the device: section is checked)
    with open(cfg) as f:
        text = f.read()
    broken = cfg + ".broken.yaml"
    with open(broken, "w") as f:
        f.write(text.replace("device:\n", "device:\n  colour: blue\n"))
    rc, out, err = perch(broken, "method", "filter", "m")
    assert rc == 2 and "device.colour" in err, (rc, err)
    # a config file that is not there: one line naming it
    rc, out, err = perch(cfg + ".missing", "c2d", "leaf1")
    assert rc == 2 and out == "" and cfg + ".missing" in one_line(err), (rc, err)
