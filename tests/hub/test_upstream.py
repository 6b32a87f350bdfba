"""The upstream link, hub to hub (docs/hub.md "Upstream", docs/identity.md
"Child edge hubs"): two real perch-hubs. The child (device gw1) routes
FROM /messages/* INTO $upstream; a producer module publishes numbered QoS 1
messages there. The parent (device site) has gw1 registered as a leaf device
with "edge": true and routes what gw1 forwards to the input of a consumer
module, a raw MQTT client that records what arrives. Checked: every number
the producer had acknowledged arrives, in order per priority, across a
parent that is stopped and started, a kill -9 of the child while it drains,
priorities, TLS verified against hub.upstream.ca (and a wrong CA refused),
a parent given by host name (looked up off the loop; certificates checked
against the name, not the address; a name that does not resolve retried),
a wrong device key refused with backoff, refusals backing off long and
an outage logged once (not per attempt), a child that publishes for a
device it does not speak for refused, the link flapping through faultproxy
(cut, reset, a PUBLISH cut in half, a dead path, a stall), token renewal, and
expired messages dropped, never sent. Duplicates are counted and printed."""
import json
import os
import re
import subprocess
import time

import pytest

import hubtest as h
from faultproxy import FaultProxy
from test_identity import DEV, DEVKEY, HOSTNAME, module_key, sas, write_private

pytestmark = pytest.mark.perch_only("the upstream link is Perch's")

PARENT = "site"
PARENT_HOST = "site.example"
PARENT_KEY = "c2l0ZS1rZXktc2l0ZS1rZXktc2l0ZS1rZXktMTIzNDU="


def write_json(path, doc, private=False):
    tmp = path + ".new"
    if private:
        write_private(tmp, json.dumps(doc))
    else:
        with open(tmp, "w") as f:
            json.dump(doc, f)
    os.replace(tmp, path)


def deployment(device, modules, routes):
    return {"version": 1, "deviceId": device, "deployment": 1,
            "modules": {m: {"generationId": f"gen-{m}"} for m in modules}, "twins": {},
            "edgeHub": {"schemaVersion": "1.1", "routes": routes,
                        "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}


class Pair:
    """A parent hub and a child hub linked by hub.upstream.url."""

    def __init__(self, make_broker, workdir, child_key=DEVKEY, child_routes=None,
                 parent_listeners=("mqtt",), scheme="mqtt", tls=None, ca=None,
                 leaves=None, start_child=True, proxy=False, child_args=(),
                 parent_routes=None, child_leaves=None, parent_anonymous=False,
                 host="127.0.0.1"):
        d = os.path.join(workdir, "ids")
        os.makedirs(d, exist_ok=True)
        self.dir = d
        pk, pd, pl = (os.path.join(d, n) for n in ("parent.key", "parent-dep.json",
                                                   "parent-leaves.json"))
        write_private(pk, PARENT_KEY + "\n")
        write_json(pd, deployment(PARENT, ["consumer"], parent_routes or {
            "fromChild": "FROM /messages/* INTO BrokeredEndpoint(\"/modules/consumer/inputs/in\")"}))
        write_json(pl, leaves or {DEV: {"primaryKey": DEVKEY, "edge": True}}, private=True)
        self.parent = make_broker(start=False, anonymous=parent_anonymous,
                                  listeners=parent_listeners,
                                  tls=tls, extra_args=[
            "--set", f"device.id={PARENT}", "--set", f"device.iothub_hostname={PARENT_HOST}",
            "--set", f"device.key_file={pk}", "--set", f"device.hub_deployment={pd}",
            "--set", f"hub.leaf_devices={pl}", "--set", "hub.sync=normal"])
        self.parent.start()
        ck, cd = os.path.join(d, "child.key"), os.path.join(d, "child-dep.json")
        write_private(ck, child_key + "\n")
        cl = os.path.join(d, "child-leaves.json")
        write_json(cl, child_leaves or {}, private=True)
        write_json(cd, deployment(DEV, ["producer"], child_routes or {
            "up": "FROM /messages/* INTO $upstream"}))
        port = self.parent.ports[scheme]
        self.proxy = None
        if proxy:  # the link goes through a fault-injecting proxy
            self.proxy = FaultProxy("127.0.0.1", port)
            port = self.proxy.port
        url = f"{scheme}://{host}:{port}" + ("/$iothub/websocket" if "ws" in scheme else "")
        args = ["--set", f"device.id={DEV}", "--set", f"device.iothub_hostname={HOSTNAME}",
                "--set", f"device.key_file={ck}", "--set", f"device.hub_deployment={cd}",
                "--upstream", url, "--set", f"hub.upstream.hostname={PARENT_HOST}",
                "--set", "hub.upstream.backoff_max=1s", "--set", "hub.upstream.keepalive=10s",
                "--set", "hub.sync=normal", "--set", f"hub.leaf_devices={cl}"]
        if ca:
            args += ["--set", f"hub.upstream.ca={ca}"]
        args += list(child_args)
        self.child = make_broker(start=start_child, anonymous=False, listeners=("mqtt",),
                                 extra_args=args)

    def consumer(self):
        c = h.Raw(self.parent.ports["mqtt"] if "mqtt" in self.parent.ports
                  else self.parent.ports["mqtts"], tls="mqtt" not in self.parent.ports)
        cid = f"{PARENT}/consumer"
        ack = c.connect(cid, clean=False,
                        user=f"{PARENT_HOST}/{PARENT}/consumer/?api-version=2018-06-30",
                        password=sas(f"{PARENT_HOST}/devices/{PARENT}/modules/consumer",
                                     module_key("consumer", PARENT_KEY)))
        assert ack.rc == 0, self.parent.log_tail(10)
        assert c.subscribe([(f"devices/{PARENT}/modules/consumer/#", 1)]) == [1]
        return c

    def producer(self):
        c = h.Raw(self.child.ports["mqtt"])
        ack = c.connect(f"{DEV}/producer", clean=True,
                        user=f"{HOSTNAME}/{DEV}/producer/?api-version=2018-06-30",
                        password=sas(f"{HOSTNAME}/devices/{DEV}/modules/producer",
                                     module_key("producer")))
        assert ack.rc == 0, self.child.log_tail(10)
        return c

    def wait_up(self, timeout=20):
        h.wait_until(lambda: h.metric_sum(self.child.metrics(), "perch_hub_upstream_connected") == 1,
                     timeout, interval=0.05, what="upstream link up\n" + self.child.log_tail(15))


def produce(p, numbers, out="o1", prio=None):
    for n in numbers:
        props = f"%24.on={out}&n={n}" + (f"&prio={prio}" if prio else "")
        p.publish(f"devices/{DEV}/modules/producer/messages/events/{props}",
                  json.dumps({"n": n}).encode(), qos=1)


def collect(c, want, timeout=30):
    """Messages until every number in want arrived (or timeout); returns
    (numbers in arrival order, the PUBLISH packets)."""
    got, pkts = [], []
    end = time.monotonic() + timeout
    while not want.issubset(got) and time.monotonic() < end:
        for m in c.messages(1, timeout=min(1.0, max(0.05, end - time.monotonic()))):
            pkts.append(m)
            got.append(json.loads(m.payload)["n"])
    return got, pkts


def check_all(got, want, label):
    missing = sorted(want - set(got))
    dups = len(got) - len(set(got))
    print(f"\n[{label}] received {len(got)} for {len(want)} sent: {len(missing)} missing, "
          f"{dups} duplicates")
    assert not missing, f"{label}: missing {missing[:20]}"
    first = {}
    for i, n in enumerate(got):
        first.setdefault(n, i)
    order = sorted(first, key=first.get)
    assert order == sorted(order), f"{label}: first arrivals out of order: {order[:40]}"
    return dups


def test_forward_in_order_with_origin(make_broker, workdir):
    pair = Pair(make_broker, workdir)
    pair.wait_up()
    cons = pair.consumer()
    prod = pair.producer()
    produce(prod, range(300))
    got, pkts = collect(cons, set(range(300)))
    check_all(got, set(range(300)), "link up")
    # the origin is the child's module, stamped at the parent from the topic
    t = pkts[0].topic
    assert f"devices/{PARENT}/modules/consumer/inputs/in/" in t, t
    assert f"%24.cdid={DEV}" in t and "%24.cmid=producer" in t, t
    assert "n=0" in t, t
    # the consumer can see a message before the child has its PUBACK
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(),
                                      "perch_hub_upstream_queue_messages") == 0, 10,
                 what="the child's queue empty")
    assert h.metric_sum(pair.child.metrics(), "perch_hub_upstream_forwarded_total") >= 300
    assert re.search(r"link to 127\.0\.0\.1:\d+ up as gw1", pair.child.log())


def test_outage_queues_then_drains(make_broker, workdir):
    pair = Pair(make_broker, workdir)
    pair.wait_up()
    cons = pair.consumer()
    prod = pair.producer()
    produce(prod, range(0, 100))
    got1, _ = collect(cons, set(range(100)))
    cons.close()
    pair.parent.stop()
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(), "perch_hub_upstream_connected") == 0,
                 15, what="link down")
    produce(prod, range(100, 600))  # acknowledged by the child while the parent is away
    m = pair.child.metrics()
    assert h.metric_sum(m, "perch_hub_upstream_queue_messages") >= 500  # plus any whose PUBACK the stop cut off
    assert h.metric_sum(m, "perch_hub_upstream_offline_seconds") > 0
    assert h.metric_sum(m, "perch_hub_upstream_oldest_message_age_seconds") > 0
    assert re.search(r"link to .* down: ", pair.child.log())
    pair.parent.start()
    cons = pair.consumer()
    got2, _ = collect(cons, set(range(100, 600)))
    dups = check_all(got1 + got2, set(range(600)), "parent stopped and started")
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(),
                                      "perch_hub_upstream_queue_messages") == 0, 10)
    assert h.metric_sum(pair.child.metrics(), "perch_hub_upstream_reconnects_total") >= 1
    print(f"[outage] duplicates: {dups}")


def test_kill9_child_while_draining(make_broker, workdir):
    pair = Pair(make_broker, workdir)
    pair.wait_up()
    pair.parent.stop()
    prod = pair.producer()
    n = 3000
    produce(prod, range(n))
    prod.close()
    pair.parent.start()
    cons = pair.consumer()
    first = cons.messages(1, timeout=20)  # draining has begun
    assert first, pair.child.log_tail(10)
    pair.child.kill9()
    got = [json.loads(m.payload)["n"] for m in first]
    got += [json.loads(m.payload)["n"] for m in cons.quiet(0.3)]
    pair.child.start()
    more, _ = collect(cons, set(range(n)) - set(got), timeout=60)
    dups = check_all(got + more, set(range(n)), "kill -9 of the child while draining")
    print(f"[kill -9] delivered before the kill: {len(set(got))}; duplicates: {dups}")


def test_high_priority_first(make_broker, workdir):
    routes = {"hi": {"route": "FROM /messages/* WHERE prio = 'high' INTO $upstream",
                     "priority": 0},
              "lo": {"route": "FROM /messages/* WHERE prio = 'low' INTO $upstream",
                     "priority": 5}}
    pair = Pair(make_broker, workdir, child_routes=routes)
    pair.wait_up()
    pair.parent.stop()
    prod = pair.producer()
    produce(prod, range(0, 200), prio="low")
    produce(prod, range(1000, 1050), prio="high")
    m = pair.child.metrics()
    assert h.metric_sum(m, "perch_hub_upstream_queue_messages", priority="5") == 200
    assert h.metric_sum(m, "perch_hub_upstream_queue_messages", priority="0") == 50
    pair.parent.start()
    cons = pair.consumer()
    want = set(range(200)) | set(range(1000, 1050))
    got, _ = collect(cons, want)
    check_all([n for n in got if n < 1000], set(range(200)), "low")
    check_all([n for n in got if n >= 1000], set(range(1000, 1050)), "high")
    first = {}
    for i, n in enumerate(got):
        first.setdefault(n, i)
    last_high = max(first[n] for n in range(1000, 1050))
    first_low = min(first[n] for n in range(200))
    assert last_high < first_low, f"high after low: {got[:80]}"


def test_tls_verified_and_wrong_ca_refused(make_broker, workdir, tls_files):
    pair = Pair(make_broker, workdir, parent_listeners=("mqtt", "mqtts"), scheme="mqtts",
                tls=tls_files, ca=tls_files[0])
    pair.wait_up()
    cons = pair.consumer()
    produce(pair.producer(), range(20))
    got, _ = collect(cons, set(range(20)))
    check_all(got, set(range(20)), "mqtts")
    # another CA: the parent's certificate is not trusted
    other = os.path.join(workdir, "other-ca")
    os.makedirs(other)
    wrong, _ = h.make_cert(other)
    pair2_dir = os.path.join(workdir, "second")
    os.makedirs(pair2_dir)
    bad = make_broker(anonymous=False, listeners=("mqtt",), extra_args=[
        "--set", f"device.id={DEV}", "--set", f"device.key_file={pair.dir}/child.key",
        "--upstream", f"mqtts://127.0.0.1:{pair.parent.ports['mqtts']}",
        "--set", f"hub.upstream.hostname={PARENT_HOST}", "--set", f"hub.upstream.ca={wrong}",
        "--set", "hub.upstream.backoff_max=1s"])
    assert bad.wait_log(r"cannot connect to 127\.0\.0\.1:\d+: ", timeout=15), bad.log_tail(10)
    line = re.search(r"cannot connect to 127\.0\.0\.1:\d+: .*", bad.log()).group(0)
    print(f"\n[wrong CA] {line}")
    assert re.search(r"certificate|verif|tls|ssl", line, re.I), line
    assert h.metric_sum(bad.metrics(), "perch_hub_upstream_connected") == 0


def test_wss_link(make_broker, workdir, tls_files):
    pair = Pair(make_broker, workdir, parent_listeners=("mqtt", "wss"), scheme="wss",
                tls=tls_files, ca=tls_files[0])
    pair.wait_up()
    cons = pair.consumer()
    produce(pair.producer(), range(50))
    got, _ = collect(cons, set(range(50)))
    check_all(got, set(range(50)), "wss")


def test_wrong_key_refused_with_backoff(make_broker, workdir):
    wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMTI="
    pair = Pair(make_broker, workdir, child_key=wrong)
    assert pair.child.wait_log(r"refused by the parent: CONNACK 4", timeout=15), \
        pair.child.log_tail(10)
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(), "perch_hub_upstream_refused_total",
                                      code="4") >= 3, 20, what="three refusals")
    m = pair.child.metrics()
    assert h.metric_sum(m, "perch_hub_upstream_connected") == 0
    assert h.metric_sum(pair.parent.metrics(), "perch_hub_auth_refused_total") >= 3
    # unregistered at the parent: CONNACK 5
    write_json(os.path.join(pair.dir, "parent-leaves.json"), {}, private=True)
    os.kill(pair.parent.pid, 1)
    assert pair.child.wait_log(r"refused by the parent: CONNACK 5", timeout=15), \
        pair.child.log_tail(10)


def test_refusals_back_off_long(make_broker, workdir):
    """A parent that answers and refuses (CONNACK 5: this device is not registered
    there; then 4: a wrong key) is not hammered: each refusal is classified as one
    and retried after hub.upstream.backoff_max at the least, backing off to
    hub.upstream.refused_backoff_max; a new refusal code is logged at once."""
    pair = Pair(make_broker, workdir, leaves={"someone": {"primaryKey": DEVKEY}},
                child_args=["--set", "hub.upstream.backoff_max=500ms"])
    child = pair.child
    line = child.wait_log(r"refused by the parent: CONNACK 5", timeout=15)
    assert line, child.log_tail(10)
    print(f"\n[CONNACK 5] {line}")
    m = re.search(r"\(attempt 1; the parent refused: next attempt in ([\d.]+) s, "
                  r"backing off up to 60 s\)", line)
    assert m, line
    assert float(m.group(1)) >= 0.5, line  # never sooner than hub.upstream.backoff_max
    h.wait_until(lambda: h.metric_sum(child.metrics(), "perch_hub_upstream_refused_total",
                                      code="5") >= 3, 30, what="three refusals")
    m = child.metrics()
    assert h.metric_sum(m, "perch_hub_upstream_connected") == 0
    # every attempt so far was refused (one may be under way); none taken for unreachable
    refused = h.metric_sum(m, "perch_hub_upstream_refused_total", code="5")
    assert h.metric_sum(m, "perch_hub_upstream_connects_total") - refused <= 1
    assert "then at least every" not in child.log(), child.log_tail(10)
    # registered now, with another key: CONNACK 4, logged at once (a new refusal)
    mark = child.log_mark()
    write_json(os.path.join(pair.dir, "parent-leaves.json"),
               {DEV: {"primaryKey": "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMTI=",
                      "edge": True}}, private=True)
    os.kill(pair.parent.pid, 1)
    line = child.wait_log(r"refused by the parent: CONNACK 4", mark=mark, timeout=30)
    assert line, child.log_tail(10)
    m = re.search(r"\(attempt (\d+); the parent refused: next attempt in ([\d.]+) s", line)
    assert m, line
    # the k-th refusal waits 2 x backoff_max doubled k - 1 times, jittered into [d/2, d]
    k, wait = int(m.group(1)), float(m.group(2))
    assert k >= 4 and wait >= 0.5 * 2 ** (k - 1), line
    assert h.metric_sum(pair.parent.metrics(), "perch_hub_auth_refused_total") >= 4


def test_outage_not_logged_per_attempt(make_broker, workdir):
    """While the parent is away the child tries at least every hub.upstream.backoff_max
    (500 ms by default) but logs the first failure only (then a line a minute);
    the line saying the link is back says how many attempts it took."""
    pair = Pair(make_broker, workdir, child_args=["--set", "hub.upstream.backoff_max=500ms"])
    child = pair.child
    pair.wait_up()

    def attempts():
        return h.metric_sum(child.metrics(), "perch_hub_upstream_connects_total")

    before = attempts()
    mark = child.log_mark()
    pair.parent.stop()
    h.wait_until(lambda: attempts() - before >= 12, 60, interval=0.2,
                 what="a dozen attempts while the parent is away\n" + child.log_tail(10))
    lines = [x for x in child.log_since(mark).splitlines() if "cannot connect to" in x]
    print(f"\n[outage] {attempts() - before:.0f} attempts, {len(lines)} lines: {lines}")
    assert 1 <= len(lines) <= 2, lines
    assert re.search(r"cannot connect to 127\.0\.0\.1:\d+: .*\(attempt 1; next attempt in "
                     r"[\d.]+ s, then at least every 0\.50 s", lines[0]), lines[0]
    pair.parent.start()
    pair.wait_up()
    line = child.wait_log(r"link to .* up as gw1 .* after .* down, \d+ attempts", mark=mark,
                          timeout=10)
    assert line, child.log_tail(10)
    assert int(re.search(r"down, (\d+) attempts", line).group(1)) >= 12, line


def test_child_cannot_speak_for_another_device(make_broker, workdir):
    leaves = {DEV: {"primaryKey": DEVKEY, "edge": True},
              "leafA": {"primaryKey": DEVKEY, "parent": DEV},
              "other": {"primaryKey": DEVKEY}}
    pair = Pair(make_broker, workdir, leaves=leaves, start_child=False)
    cons = pair.consumer()
    c = h.Raw(pair.parent.ports["mqtt"])
    ack = c.connect(DEV, clean=True, user=f"{PARENT_HOST}/{DEV}/?api-version=2018-06-30",
                    password=sas(f"{PARENT_HOST}/devices/{DEV}", DEVKEY))
    assert ack.rc == 0
    # another device's module, another device's telemetry, a forged $.cdid: refused or restamped
    c.publish("devices/other/modules/m/messages/events/n=1", b'{"n": 1}', qos=1)
    c.publish("devices/other/messages/events/n=2", b'{"n": 2}', qos=1)
    c.publish(f"devices/{PARENT}/modules/consumer/messages/events/n=3", b'{"n": 3}', qos=1)
    # allowed: its own module, its own leaf device; $.cdid from the topic, not the bag
    c.publish(f"devices/{DEV}/modules/m2/messages/events/%24.cdid=other&n=4", b'{"n": 4}', qos=1)
    c.publish("devices/leafA/messages/events/n=5", b'{"n": 5}', qos=1)
    got = cons.messages(2, timeout=10)
    got += cons.quiet(0.5)
    ns = sorted(json.loads(m.payload)["n"] for m in got)
    assert ns == [4, 5], ns
    by_n = {json.loads(m.payload)["n"]: m.topic for m in got}
    assert f"%24.cdid={DEV}" in by_n[4] and "%24.cmid=m2" in by_n[4], by_n[4]
    assert "%24.cdid=leafA" in by_n[5] and "cmid" not in by_n[5], by_n[5]
    assert h.metric_sum(pair.parent.metrics(), "perch_hub_denied_total") >= 3


def test_link_flaps_through_faultproxy(make_broker, workdir):
    """cut, reset, a reset in the middle of a packet, a dead path noticed only by
    keepalive, a stall: every acknowledged number arrives, duplicates counted."""
    pair = Pair(make_broker, workdir, proxy=True,
                child_args=["--set", "hub.upstream.keepalive=2s"])
    fp = pair.proxy
    try:
        pair.wait_up()
        cons = pair.consumer()
        prod = pair.producer()
        child = pair.child

        def connected():
            return h.metric_sum(child.metrics(), "perch_hub_upstream_connected")

        produce(prod, range(0, 300))
        fp.cmd("cut")
        produce(prod, range(300, 600))
        h.wait_until(lambda: connected() == 0, 10, what="link down after cut")
        fp.cmd("pass")
        pair.wait_up()
        fp.cmd("reset-after 5000 up")  # a PUBLISH cut in half
        produce(prod, range(600, 900))
        h.wait_until(lambda: fp.stats()["resets"] >= 1, 10, what="reset-after fired")
        pair.wait_up()
        fp.cmd("halfopen")  # nothing tells either end: keepalive must
        mark = child.log_mark()
        produce(prod, range(900, 1200))
        assert child.wait_log(r"link to .* down: keepalive timeout", mark=mark, timeout=15), \
            child.log_tail(10)
        fp.cmd("pass")
        pair.wait_up()
        fp.cmd("stall")
        produce(prod, range(1200, 1500))
        time.sleep(0.5)
        fp.cmd("pass")
        fp.cmd("reset")
        produce(prod, range(1500, 1800))
        fp.cmd("pass")
        got, _ = collect(cons, set(range(1800)), timeout=60)
        dups = check_all(got, set(range(1800)), "link flapping through faultproxy")
        m = child.metrics()
        print(f"[flaps] reconnects {h.metric_sum(m, 'perch_hub_upstream_reconnects_total'):.0f}, "
              f"resent {h.metric_sum(m, 'perch_hub_upstream_resent_total'):.0f}, "
              f"duplicates at the consumer {dups}; proxy {fp.stats()}")
        assert h.metric_sum(m, "perch_hub_upstream_reconnects_total") >= 3
    finally:
        fp.stop()


def test_token_renewal_keeps_the_session(make_broker, workdir):
    pair = Pair(make_broker, workdir,
                child_args=["--set", "hub.upstream.token_lifetime=10s"])
    pair.wait_up()
    cons = pair.consumer()
    prod = pair.producer()
    mark = pair.child.log_mark()
    n, i = 0, 0
    end = time.monotonic() + 20
    while time.monotonic() < end and not re.search("reconnecting with a new token",
                                                   pair.child.log_since(mark)):
        produce(prod, range(n, n + 20))
        n += 20
        time.sleep(0.2)
        i += 1
    assert re.search("reconnecting with a new token", pair.child.log_since(mark)), \
        pair.child.log_tail(10)
    produce(prod, range(n, n + 20))
    n += 20
    got, _ = collect(cons, set(range(n)))
    check_all(got, set(range(n)), "token renewal")
    pair.wait_up()
    assert h.metric_sum(pair.child.metrics(), "perch_hub_upstream_refused_total") == 0


def test_expired_messages_never_sent(make_broker, workdir):
    routes = {"short": {"route": "FROM /messages/* WHERE prio = 'low' INTO $upstream",
                        "priority": 3, "timeToLiveSecs": 1},
              "long": {"route": "FROM /messages/* WHERE prio = 'high' INTO $upstream",
                       "priority": 3}}
    pair = Pair(make_broker, workdir, child_routes=routes)
    pair.wait_up()
    pair.parent.stop()
    prod = pair.producer()
    produce(prod, range(0, 40), prio="low")     # expire after 1 s
    produce(prod, range(100, 110), prio="high")
    time.sleep(1.5)
    pair.parent.start()
    cons = pair.consumer()
    got, _ = collect(cons, set(range(100, 110)))
    got += [json.loads(m.payload)["n"] for m in cons.quiet(0.5)]
    assert sorted(set(got)) == list(range(100, 110)), got
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(), "perch_hub_upstream_dropped_total",
                                      reason="expired") == 40, 10, what="40 expired")
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(),
                                      "perch_hub_upstream_queue_messages") == 0, 10)


@pytest.mark.parametrize("scheme", ["mqtts", "wss"])
def test_certificate_for_another_host_refused(make_broker, workdir, scheme):
    """The parent's certificate verifies against the CA but names another host."""
    d = os.path.join(workdir, "other-host")
    os.makedirs(d)
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=other.example", "-addext", "subjectAltName=DNS:other.example",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    pair = Pair(make_broker, workdir, parent_listeners=("mqtt", scheme), scheme=scheme,
                tls=(cert, key), ca=cert)
    line = pair.child.wait_log(r"cannot connect to 127\.0\.0\.1:\d+: ", timeout=15)
    assert line, pair.child.log_tail(10)
    print(f"\n[{scheme}, certificate for other.example] {line}")
    time.sleep(0.5)
    assert h.metric_sum(pair.child.metrics(), "perch_hub_upstream_connected") == 0
    assert not re.search(r"link to .* up", pair.child.log())


def cert_naming(d, san):
    """A self-signed certificate naming only san (e.g. DNS:localhost); (cert, key)."""
    os.makedirs(d)
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=perch-test", "-addext", f"subjectAltName={san}",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize("scheme", ["mqtt", "mqtts", "wss"])
def test_parent_by_host_name(make_broker, workdir, scheme):
    """The parent given by a host name ("localhost"): it is looked up off the
    loop thread and connected to by address, and the TLS schemes check the
    certificate against the name (this one names DNS:localhost only, not
    127.0.0.1, so a check against the address would refuse it)."""
    tls = cert_naming(os.path.join(workdir, "by-name"), "DNS:localhost")
    plain = scheme == "mqtt"
    pair = Pair(make_broker, workdir, parent_listeners=("mqtt",) if plain else ("mqtt", scheme),
                scheme=scheme, tls=None if plain else tls, ca=None if plain else tls[0],
                host="localhost")
    pair.wait_up()
    cons = pair.consumer()
    produce(pair.producer(), range(20))
    got, _ = collect(cons, set(range(20)))
    check_all(got, set(range(20)), f"{scheme} by name")


@pytest.mark.parametrize("scheme", ["mqtts", "wss"])
def test_certificate_for_the_address_not_the_name_refused(make_broker, workdir, scheme):
    """The URL names localhost; the certificate names only IP:127.0.0.1, the
    address localhost resolves to. The check is against the URL's host, so
    this is refused: the resolved address never stands in for the name."""
    tls = cert_naming(os.path.join(workdir, "ip-only"), "IP:127.0.0.1")
    pair = Pair(make_broker, workdir, parent_listeners=("mqtt", scheme), scheme=scheme,
                tls=tls, ca=tls[0], host="localhost")
    line = pair.child.wait_log(r"cannot connect to localhost:\d+: ", timeout=15)
    assert line, pair.child.log_tail(10)
    print(f"\n[{scheme}, localhost, certificate for 127.0.0.1 only] {line}")
    time.sleep(0.5)
    assert h.metric_sum(pair.child.metrics(), "perch_hub_upstream_connected") == 0
    assert not re.search(r"link to .* up", pair.child.log())


def test_unresolvable_parent_retried(make_broker, workdir):
    """A parent name that does not resolve is an unreachable parent: logged
    once with the resolver's reason, retried with the usual backoff, and the
    hub serves its own clients meanwhile."""
    pair = Pair(make_broker, workdir, host="nonexistent.invalid")
    line = pair.child.wait_log(r"cannot connect to nonexistent\.invalid:\d+: connection failed: "
                               r"cannot resolve nonexistent\.invalid: ", timeout=15)
    assert line, pair.child.log_tail(10)
    print(f"\n[unresolvable] {line}")
    assert re.search(r"next attempt in [\d.]+ s, then at least every 1\.00 s", line), line
    h.wait_until(lambda: h.metric_sum(pair.child.metrics(),
                                      "perch_hub_upstream_connects_total") >= 3, 10,
                 what="three attempts")
    produce(pair.producer(), range(3))  # the loop is not held up by the lookups
    assert h.metric_sum(pair.child.metrics(), "perch_hub_upstream_connected") == 0


def test_parent_routes_filter_and_forward_onward(make_broker, workdir):
    """The parent's routes see the child's messages with their origin: a WHERE on
    $connectionModuleId picks one module's, a source naming a module
    (FROM /messages/modules/{m}/outputs/{o}) the same, and everything goes on
    INTO the parent's own $upstream (a grandparent's queue)."""
    routes = {"pick": "FROM /messages/* WHERE $connectionModuleId = 'producer' "
                      "INTO BrokeredEndpoint(\"/modules/consumer/inputs/in\")",
              "byName": "FROM /messages/modules/other/outputs/o1 "
                        "INTO BrokeredEndpoint(\"/modules/consumer/inputs/named\")",
              "onward": {"route": "FROM /messages/* INTO $upstream", "priority": 1}}
    pair = Pair(make_broker, workdir, parent_routes=routes, start_child=False)
    cons = pair.consumer()
    c = h.Raw(pair.parent.ports["mqtt"])
    ack = c.connect(DEV, clean=True, user=f"{PARENT_HOST}/{DEV}/?api-version=2018-06-30",
                    password=sas(f"{PARENT_HOST}/devices/{DEV}", DEVKEY))
    assert ack.rc == 0
    for n in range(10):
        mod = "producer" if n % 2 == 0 else "other"
        c.publish(f"devices/{DEV}/modules/{mod}/messages/events/%24.on=o1&n={n}",
                  json.dumps({"n": n}).encode(), qos=1)
    got = cons.messages(10, timeout=10) + cons.quiet(0.5)
    by_input = {}
    for m in got:
        by_input.setdefault(m.topic.split("/")[5], []).append(json.loads(m.payload)["n"])
    assert sorted(by_input.get("in", [])) == [0, 2, 4, 6, 8], by_input
    assert sorted(by_input.get("named", [])) == [1, 3, 5, 7, 9], by_input
    m = pair.parent.metrics()
    assert h.metric_sum(m, "perch_hub_routed_total", reason="upstream") == 10


def test_leaf_device_of_the_child_reaches_the_parent(make_broker, workdir):
    """leaf device -> child hub -> parent hub: the leaf's telemetry keeps its
    own device id all the way, authorized at the parent by "parent": gw1."""
    leafkey = "bGVhZi1rZXktbGVhZi1rZXktbGVhZi1rZXktMTIzNA=="
    routes = {"leaves": "FROM /messages/* WHERE $connectionDeviceId = 'leafA' "
                        "AND NOT IS_DEFINED($connectionModuleId) "
                        "INTO BrokeredEndpoint(\"/modules/consumer/inputs/in\")"}
    pair = Pair(make_broker, workdir, child_leaves={"leafA": {"primaryKey": leafkey}},
                leaves={DEV: {"primaryKey": DEVKEY, "edge": True},
                        "leafA": {"primaryKey": leafkey, "parent": DEV}},
                parent_routes=routes)
    pair.wait_up()
    cons = pair.consumer()
    leaf = h.Raw(pair.child.ports["mqtt"])
    ack = leaf.connect("leafA", clean=True, user=f"{HOSTNAME}/leafA/?api-version=2018-06-30",
                       password=sas(f"{HOSTNAME}/devices/leafA", leafkey))
    assert ack.rc == 0, pair.child.log_tail(10)
    for n in range(20):
        leaf.publish(f"devices/leafA/messages/events/n={n}", json.dumps({"n": n}).encode(), qos=1)
    got, pkts = collect(cons, set(range(20)))
    check_all(got, set(range(20)), "leaf -> child -> parent")
    assert all("%24.cdid=leafA" in p.topic and "cmid" not in p.topic for p in pkts), pkts[0].topic
    assert h.metric_sum(pair.parent.metrics(), "perch_hub_denied_total") in (None, 0)


def test_c2d_from_the_parent_reaches_the_child_and_its_leaf_device(make_broker, workdir):
    """Cloud-to-device messages sent at the parent (its REST endpoint, as the
    parent device) for the child hub's leaf device and for the child device
    itself come down the link into the child's C2D queues and reach them
    there, in order; sent while the link is down, they wait at the parent.
    A leaf device the parent does not have under the child is refused at the
    SUBSCRIBE (logged), never delivered to the child."""
    from test_c2d import bag, send_c2d
    leafkey = "bGVhZi1rZXktbGVhZi1rZXktbGVhZi1rZXktMTIzNA=="
    pair = Pair(make_broker, workdir, parent_listeners=("mqtt", "ws"),
                child_leaves={"leafA": {"primaryKey": leafkey},
                              "leafB": {"primaryKey": leafkey}},
                leaves={DEV: {"primaryKey": DEVKEY, "edge": True},
                        "leafA": {"primaryKey": leafkey, "parent": DEV},
                        "leafB": {"primaryKey": leafkey}})
    pair.wait_up()
    assert pair.child.wait_log(r"refused cloud-to-device messages for 1 of 3 devices", timeout=5)
    parent_tok = sas(f"{PARENT_HOST}/devices/{PARENT}", PARENT_KEY)

    def send(device, body, **headers):
        status, hdrs, resp = send_c2d(pair.parent, device, body, token=parent_tok,
                                      headers=headers)
        assert status == 204, (device, status, resp)
        return hdrs["iothub-messageid"]

    def receiver(name, key):
        c = h.Raw(pair.child.ports["mqtt"])
        ack = c.connect(name, clean=True, user=f"{HOSTNAME}/{name}/?api-version=2018-06-30",
                        password=sas(f"{HOSTNAME}/devices/{name}", key))
        assert ack.rc == 0, pair.child.log_tail(10)
        assert c.subscribe([(f"devices/{name}/messages/devicebound/#", 1)]) == [1]
        return c

    leaf = receiver("leafA", leafkey)
    mid = send("leafA", b"one", **{"x-perch-properties": "color=red"})
    send("leafA", b"two")
    got = leaf.messages(2, timeout=10)
    assert [m.payload for m in got] == [b"one", b"two"], got
    prefix, props = bag(got[0].topic)
    assert prefix == "devices/leafA/messages/devicebound", prefix
    assert props["$.mid"] == mid and props["color"] == "red", props
    dev = receiver(DEV, DEVKEY)
    send(DEV, b"for the child itself")
    assert [m.payload for m in dev.messages(1, timeout=10)] == [b"for the child itself"]
    assert h.metric_sum(pair.child.metrics(), "perch_hub_c2d_messages_total",
                        result="queued") == 3
    # with the link down, they wait at the parent, then come down in order
    pair.child.stop()
    send("leafA", b"three")
    send("leafA", b"four")
    pair.child.start()
    pair.wait_up()
    leaf = receiver("leafA", leafkey)
    # at least once: a message whose PUBACK to the parent the child's stop cut
    # off ("two", say) may come again before the new ones
    got = []
    end = time.monotonic() + 15
    while b"four" not in got and time.monotonic() < end:
        got += [m.payload for m in leaf.messages(1, timeout=1)]
    fresh = [p for p in got if p not in (b"one", b"two")]
    assert fresh == [b"three", b"four"], got
    # leafB is the parent's own leaf device, not the child's: it stays at the parent
    send("leafB", b"not for the child")
    assert receiver("leafB", leafkey).quiet(1.0) == []
    # at least once: a message whose PUBACK the link lost comes again
    assert h.metric_sum(pair.child.metrics(), "perch_hub_c2d_messages_total",
                        result="queued") >= 2
