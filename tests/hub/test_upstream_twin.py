"""Twins and direct methods over the upstream link (docs/hub.md "Twins over
the link"): two real perch-hubs, the child (device gw1) linked to the parent
(device site, gw1 registered there with "edge": true). The parent's REST API
(GET/PATCH /twins/..., POST .../methods, as the parent device) is the
operator; a module and a leaf device of the child are raw MQTT clients with
IoT Hub's twin and method topics. Checked: a module's reported patches reach
the parent's twin with the child's versions; desired properties PATCHed at
the parent reach the module (and its leaf device) as patches, over the
deployment's; a direct method called at the parent is answered by the module
behind the child; with the link down the child still serves the twin from
its cache and takes reported patches, and when the link returns the parent
gets their combined effect (deletes too) and the module the desired change
made meanwhile; a kill -9 of the child keeps the parent's desired
properties; the parent refuses identities the child does not speak for."""
import http.client
import json
import os
import signal
import time
import urllib.parse

import pytest

import hubtest as h
from test_identity import DEV, DEVKEY, HOSTNAME, sas
from test_twins import Invoke, Mod, invoke, method_request, parse_query
from test_upstream import PARENT, PARENT_HOST, PARENT_KEY, Pair, write_json

pytestmark = pytest.mark.perch_only("the upstream link is Perch's")

LEAFKEY = "bGVhZi1rZXktbGVhZi1rZXktbGVhZi1rZXktMTIzNA=="


def parent_token():
    return sas(f"{PARENT_HOST}/devices/{PARENT}", PARENT_KEY)


def twin_rest(b, target, patch=None, token=None):
    """GET (or PATCH with {"properties":{"desired":patch}}) /twins/{target} at
    hub b as its edge device; (status, parsed body)."""
    conn = http.client.HTTPConnection(h.HOST, b.ports["ws"], timeout=10)
    dev, _, mod = target.partition("/")
    path = f"/twins/{urllib.parse.quote(dev, safe='')}"
    if mod:
        path += f"/modules/{urllib.parse.quote(mod, safe='')}"
    hdrs = {"Authorization": token or parent_token(), "Content-Type": "application/json"}
    body = None if patch is None else json.dumps({"properties": {"desired": patch}}).encode()
    conn.request("GET" if patch is None else "PATCH", path + "?api-version=2021-04-12",
                 body=body, headers=hdrs)
    r = conn.getresponse()
    text = r.read()
    conn.close()
    return r.status, json.loads(text) if text else None


def make_pair(make_broker, workdir, **kw):
    pair = Pair(make_broker, workdir, parent_listeners=("mqtt", "ws"),
                child_leaves={"leafA": {"primaryKey": LEAFKEY}},
                leaves={DEV: {"primaryKey": DEVKEY, "edge": True},
                        "leafA": {"primaryKey": LEAFKEY, "parent": DEV},
                        "stranger": {"primaryKey": LEAFKEY}}, **kw)
    pair.wait_up()
    assert pair.child.wait_log(r"syncing \d+ twins with the parent", timeout=10), \
        pair.child.log_tail(20)
    return pair


def desired_patch(m, timeout=10):
    p = m.next_publish(lambda p: p.topic.startswith("$iothub/twin/PATCH/properties/desired/"),
                       timeout)
    assert p is not None, "no desired patch arrived"
    return json.loads(p.payload), parse_query(p.topic)


def wait_parent_reported(pair, target, pred, what, timeout=15):
    last = {}

    def check():
        status, doc = twin_rest(pair.parent, target)
        last["doc"] = (status, doc)
        return status == 200 and pred(doc["properties"]["reported"])
    h.wait_until(check, timeout, interval=0.1,
                 what=f"{what}: {last.get('doc')}\n{pair.child.log_tail(15)}")
    return last["doc"][1]["properties"]["reported"]


def test_reported_desired_and_methods_over_the_link(make_broker, workdir):
    pair = make_pair(make_broker, workdir)
    m = Mod(pair.child, "producer")
    # reported: the module's patches reach the parent's twin of gw1/producer,
    # with the child's version
    st, q, _ = m.report({"fw": "1.0", "temp": {"max": 40, "unit": "C"}})
    assert st == 204
    v = int(q["$version"])
    rep = wait_parent_reported(pair, f"{DEV}/producer", lambda r: r.get("fw") == "1.0",
                               "reported at the parent")
    assert rep["temp"] == {"max": 40, "unit": "C"} and rep["$version"] == v, rep
    st, q, _ = m.report({"temp": {"unit": None}, "fw": "1.1"})
    assert st == 204
    rep = wait_parent_reported(pair, f"{DEV}/producer", lambda r: r.get("fw") == "1.1",
                               "second reported patch at the parent")
    assert rep["temp"] == {"max": 40} and rep["$version"] == int(q["$version"]), rep
    cm, pm = pair.child.metrics(), pair.parent.metrics()
    assert h.metric_sum(cm, "perch_hub_twin_requests_total", op="upstream_reported",
                        status="204") >= 2, cm
    assert h.metric_sum(cm, "perch_hub_twin_requests_total", op="upstream_get",
                        status="200") >= 1, cm
    assert h.metric_sum(pm, "perch_hub_twin_requests_total", op="link_reported",
                        status="204") >= 2, pm

    # desired: PATCHed at the parent, the module gets it as a patch
    before = m.get()["desired"]["$version"]
    st, doc = twin_rest(pair.parent, f"{DEV}/producer", {"interval": 5, "mode": {"a": 1}})
    assert st == 200, doc
    assert doc["deviceId"] == DEV and doc["moduleId"] == "producer", doc
    assert doc["properties"]["desired"]["interval"] == 5, doc
    patch, q = desired_patch(m)
    assert patch["interval"] == 5 and patch["mode"] == {"a": 1}, patch
    assert int(q["$version"]) > before
    st, _ = twin_rest(pair.parent, f"{DEV}/producer", {"mode": None})
    assert st == 200
    patch, _ = desired_patch(m)
    assert patch.get("mode", "absent") is None, patch
    t = m.get()
    assert t["desired"]["interval"] == 5 and "mode" not in t["desired"], t

    # the leaf device of the child: its twin and a desired patch
    leaf = h.Raw(pair.child.ports["mqtt"])
    assert leaf.connect("leafA", user=f"{HOSTNAME}/leafA/?api-version=2018-06-30",
                        password=sas(f"{HOSTNAME}/devices/leafA", LEAFKEY)).rc == 0
    assert 0x80 not in leaf.subscribe([("$iothub/twin/PATCH/properties/desired/#", 1),
                                       ("$iothub/methods/POST/#", 1)])
    st, _ = twin_rest(pair.parent, "leafA", {"color": "blue"})
    assert st == 200
    got = leaf.messages(1, timeout=10)
    assert got and json.loads(got[0].payload)["color"] == "blue", got

    # a direct method called at the parent, answered by the module behind the child
    call = Invoke(pair.parent, f"{DEV}/producer",
                  {"methodName": "reboot", "payload": {"delay": 3},
                   "responseTimeoutInSeconds": 10}, token=parent_token())
    call.start()
    name, rid, p = method_request(m, timeout=10)
    assert name == "reboot" and json.loads(p.payload) == {"delay": 3}
    m.c.publish(f"$iothub/methods/res/201/?$rid={rid}", json.dumps({"ok": True}).encode())
    status, body = call.wait()
    assert status == 200 and body == {"status": 201, "payload": {"ok": True}}, body
    # one for the leaf device
    call = Invoke(pair.parent, "leafA", {"methodName": "blink", "payload": None},
                  token=parent_token())
    call.start()
    p = None
    end = time.monotonic() + 10
    while p is None and time.monotonic() < end:
        for x in leaf.messages(1, timeout=1):
            if x.topic.startswith("$iothub/methods/POST/blink/"):
                p = x
    assert p is not None, pair.child.log_tail(15)
    leaf.publish(f"$iothub/methods/res/200/?$rid={parse_query(p.topic)['$rid']}", b'"done"')
    assert call.wait() == (200, {"status": 200, "payload": "done"})
    # a module that is not there: the child's 404 comes back
    status, body = invoke(pair.parent, f"{DEV}/nobody", {"methodName": "x"},
                          token=parent_token())
    assert status == 404, body
    # an identity the child does not speak for is not the child's to answer
    status, body = twin_rest(pair.parent, "nosuch/mod")
    assert status == 404, body


def test_offline_cache_and_sync_when_the_link_returns(make_broker, workdir):
    pair = make_pair(make_broker, workdir)
    m = Mod(pair.child, "producer")
    assert m.report({"a": 1, "b": {"c": 2, "d": 3}, "gone": True})[0] == 204
    wait_parent_reported(pair, f"{DEV}/producer", lambda r: r.get("gone") is True,
                         "first sync")
    st, _ = twin_rest(pair.parent, f"{DEV}/producer", {"threshold": 10})
    assert st == 200
    assert desired_patch(m)[0]["threshold"] == 10

    pair.parent.stop()
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(), "perch_hub_upstream_connected") == 0,
                 10, what="link down")
    # offline: the twin is served from the cache, reported patches are taken
    t = m.get()
    assert t["desired"]["threshold"] == 10 and t["reported"]["a"] == 1, t
    for patch in ({"a": 2}, {"gone": None}, {"b": {"c": None, "e": 5}}, {"a": 3}):
        assert m.report(patch)[0] == 204
    t = m.get()
    assert t["reported"]["a"] == 3 and "gone" not in t["reported"], t

    # meanwhile the operator changes desired at the parent (the parent is up
    # again, the child not yet linked: its link is cut by stopping it)
    pair.child.stop()
    pair.parent.start()
    st, _ = twin_rest(pair.parent, f"{DEV}/producer", {"threshold": 20, "new": "x"})
    assert st == 200
    # the child restarts with no link at first: still serves its twins
    pair.child.start()
    pair.wait_up()
    m = Mod(pair.child, "producer")
    rep = wait_parent_reported(pair, f"{DEV}/producer", lambda r: r.get("a") == 3,
                               "offline patches synced")
    assert "gone" not in rep and rep["b"] == {"d": 3, "e": 5}, rep
    h.wait_until(lambda: m.get()["desired"].get("threshold") == 20, 10,
                 what="desired change made while offline\n" + pair.child.log_tail(15))
    assert m.get()["desired"]["new"] == "x"

    # kill -9 of the child: the parent's desired properties are kept (twins.db)
    pair.parent.stop()
    pair.child.proc.send_signal(signal.SIGKILL)
    pair.child.proc.wait(timeout=10)
    pair.child.start()
    m = Mod(pair.child, "producer")
    t = m.get()
    assert t["desired"]["threshold"] == 20 and t["reported"]["a"] == 3, t


def test_parent_refuses_identities_the_child_does_not_speak_for(make_broker, workdir):
    pair = make_pair(make_broker, workdir)
    # the child's own link identity may not touch another device's twin
    c = h.Raw(pair.parent.ports["mqtt"])
    assert c.connect("stranger", user=f"{PARENT_HOST}/stranger/?api-version=2018-06-30",
                     password=sas(f"{PARENT_HOST}/devices/stranger", LEAFKEY)).rc == 0
    # not an edge hub: $edgehub is not its to subscribe to nor publish on
    assert c.subscribe([("$edgehub/#", 1)]) == [0x80]
    mark = pair.parent.log_mark()
    c.publish(f"$edgehub/{DEV}/producer/twin/reported/?$rid=99", b'{"evil": 1}', qos=1)
    assert pair.parent.wait_log(r"publish to \$edgehub/.* denied", mark, timeout=5)
    st, doc = twin_rest(pair.parent, f"{DEV}/producer")
    assert st == 200 and "evil" not in doc["properties"]["reported"], doc
    # the REST API is the parent device's only
    st, _ = twin_rest(pair.parent, f"{DEV}/producer",
                      token=sas(f"{PARENT_HOST}/devices/stranger", LEAFKEY))
    assert st == 403


def test_an_identity_added_while_the_link_is_up_is_synced(make_broker, workdir):
    """A module that a new deployment adds while the link is up has its twin
    synced at once, not at the next link."""
    from test_upstream import deployment
    pair = make_pair(make_broker, workdir)
    mark = pair.child.log_mark()
    write_json(os.path.join(pair.dir, "child-dep.json"),
               deployment(DEV, ["producer", "late"], {"up": "FROM /messages/* INTO $upstream"}))
    pair.child.proc.send_signal(signal.SIGHUP)
    assert pair.child.wait_log(r"hub deployment \d+ from", mark, timeout=10)
    late = Mod(pair.child, "late")
    assert late.report({"arrived": True})[0] == 204
    wait_parent_reported(pair, f"{DEV}/late", lambda r: r.get("arrived") is True,
                         "the new module's reported properties at the parent")


def test_a_parent_that_does_not_take_edgehub_keeps_the_link(make_broker, workdir):
    """A parent that has the child as a plain device (no "edge": true) refuses
    $edgehub/#: the child logs it once, syncs nothing, and its own telemetry
    still goes up."""
    pair = Pair(make_broker, workdir, parent_listeners=("mqtt", "ws"),
                leaves={DEV: {"primaryKey": DEVKEY}})
    pair.wait_up()
    assert pair.child.wait_log(r"the parent refused \$edgehub/#", timeout=10), \
        pair.child.log_tail(10)
    m = Mod(pair.child, "producer")
    assert m.report({"a": 1})[0] == 204
    assert m.get()["reported"]["a"] == 1
    time.sleep(0.5)
    assert "syncing" not in pair.child.log(), pair.child.log_tail(10)
    assert "publish to $edgehub" not in pair.parent.log(), pair.parent.log_tail(10)


def test_anonymous_clients_cannot_speak_the_link_protocol(make_broker, workdir):
    """With anonymous clients allowed at the parent, none of them can reach a
    child through $edgehub/ topics: not by publishing (dropped, even
    retained), not by subscribing."""
    pair = make_pair(make_broker, workdir, parent_anonymous=True)
    m = Mod(pair.child, "producer")
    anon = h.Raw(pair.parent.ports["mqtt"])
    assert anon.connect("anon-1").rc == 0
    assert anon.subscribe([("$edgehub/#", 1)]) == [0x80]
    mark = pair.parent.log_mark()
    for retain in (False, True):
        anon.publish(f"$edgehub/{DEV}/producer/methods/post/evil/?$rid=1", b"{}", qos=1,
                     retain=retain)
        anon.publish(f"$edgehub/{DEV}/producer/twin/desired/?$version=99",
                     b'{"evil": true}', qos=1, retain=retain)
    assert pair.parent.wait_log(r"\$edgehub/ is the upstream link's", mark, timeout=5)
    assert m.next_publish(lambda p: True, timeout=1.0) is None
    assert "evil" not in json.dumps(m.get())
    # a child that connects again is not handed a retained one
    pair.child.stop()
    pair.child.start()
    pair.wait_up()
    m = Mod(pair.child, "producer")
    assert m.next_publish(lambda p: True, timeout=1.0) is None
    assert "evil" not in json.dumps(m.get())
