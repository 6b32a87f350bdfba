"""Routes at perch-hub (docs/routes.md) against the real binary: the $edgeHub
routes of the hub deployment file wire module outputs to module inputs
through durable sink queues. The IoT Edge quickstart pipeline (sensor ->
filter with a WHERE on $body.machine.temperature); delivery when the
target connects later and across a kill -9; messages that arrive before the
routes; a route that does not parse (refused with its name and column, the
old routes stay); TTL; no echo of a module's own output; $upstream counted.
Clients are raw MQTT packets and paho, authenticated with SAS tokens made the
way the Azure IoT SDKs make them."""
import json
import os
import signal
import time
import urllib.parse

import pytest

import hubtest as h
from test_identity import DEV, DEVKEY, HOSTNAME, mod_creds, write_private

pytestmark = pytest.mark.perch_only("routes are IoT Edge's, served by perch-hub")

QUICKSTART = {
    "sensorToFilter": "FROM /messages/modules/sensor/outputs/temperatureOutput "
                      "INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")",
    "filterToUpstream": {"route": "FROM /messages/modules/filter/outputs/* "
                                  "WHERE $body.machine.temperature > 25 INTO $upstream",
                         "priority": 1, "timeToLiveSecs": 60},
}

JSON_PROPS = "%24.ct=application%2Fjson&%24.ce=utf-8"


def write_deployment(path, routes, modules=("sensor", "filter"), n=1, ttl=7200):
    doc = {"version": 1, "deviceId": DEV, "deployment": n,
           "modules": {m: {"generationId": f"gen-{m}"} for m in modules}, "twins": {}}
    if routes is not None:
        doc["edgeHub"] = {"schemaVersion": "1.1", "routes": routes,
                          "storeAndForwardConfiguration": {"timeToLiveSecs": ttl}}
    tmp = path + ".new"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


@pytest.fixture
def routed(make_broker, workdir):
    d = os.path.join(workdir, "ids")
    os.makedirs(d, exist_ok=True)
    key, dep = os.path.join(d, "device.key"), os.path.join(d, "hub-deployment.json")
    write_private(key, DEVKEY + "\n")

    def make(routes=QUICKSTART, **kw):
        write_deployment(dep, routes, **kw)
        b = make_broker(anonymous=False, listeners=("mqtt",), extra_args=[
            "--set", f"device.id={DEV}", "--set", f"device.iothub_hostname={HOSTNAME}",
            "--set", f"device.key_file={key}", "--set", f"device.hub_deployment={dep}"])
        b.dep = dep
        return b
    return make


def module(b, name, clean=True, subscribe=True):
    c = h.Raw(b.ports["mqtt"])
    cid, user, pw = mod_creds(name)
    ack = c.connect(cid, clean=clean, user=user, password=pw)
    assert ack.rc == 0, f"{name}: CONNACK {ack.rc}\n{b.log_tail(10)}"
    if subscribe:
        assert c.subscribe([(f"devices/{DEV}/modules/{name}/#", 1)]) == [1]
    return c


def output(c, name, out, body, props=JSON_PROPS):
    c.publish(f"devices/{DEV}/modules/{name}/messages/events/%24.on={out}&{props}",
              json.dumps(body).encode(), qos=1)


def temps(msgs):
    return [json.loads(m.payload)["machine"]["temperature"] for m in msgs]


def test_quickstart_pipeline(routed):
    b = routed()
    filt = module(b, "filter")
    sensor = module(b, "sensor")
    for t in (20, 30):
        output(sensor, "sensor", "temperatureOutput", {"machine": {"temperature": t}})
    output(sensor, "sensor", "otherOutput", {"machine": {"temperature": 99}})  # no route
    got = filt.messages(2)
    assert temps(got) == [20, 30], got
    topic = urllib.parse.unquote(got[0].topic)
    assert topic.startswith(f"devices/{DEV}/modules/filter/inputs/input1/"), topic
    assert "$.cdid=gw1" in topic and "$.cmid=sensor" in topic and "$.on=temperatureOutput" in topic
    assert got[0].qos == 1
    assert filt.quiet(0.5) == [], "a message without a route was delivered"
    assert sensor.quiet(0.3) == [], "a module got its own output back"
    # the filter forwards hot readings: WHERE on the JSON body, into $upstream
    output(filt, "filter", "output1", {"machine": {"temperature": 30}})
    output(filt, "filter", "output1", {"machine": {"temperature": 10}})
    output(filt, "filter", "output1", {"machine": {"temperature": 40}}, props="")  # not JSON-typed
    h.wait_until(lambda: h.metric_sum(b.metrics(), "perch_hub_routed_total",
                                      reason="upstream") == 1, 5, what="one message upstream")
    assert h.metric_sum(b.metrics(), "perch_hub_routed_total", reason="module_input") == 2


def test_delivered_later_and_after_kill9(routed):
    b = routed()
    filt = module(b, "filter", clean=False)
    filt.disconnect()
    sensor = module(b, "sensor", subscribe=False)
    for t in range(5):
        output(sensor, "sensor", "temperatureOutput", {"machine": {"temperature": t}})
    sensor.disconnect()
    b.kill9()  # every PUBACK the sensor got means the message is in the store
    b.start()
    filt = module(b, "filter", clean=True)  # a clean session: the inputs are the hub's
    got = filt.messages(5)
    assert temps(got) == [0, 1, 2, 3, 4], got


def test_messages_before_routes(routed):
    b = routed(routes=None)
    sensor = module(b, "sensor", subscribe=False)
    output(sensor, "sensor", "temperatureOutput", {"machine": {"temperature": 7}})
    assert h.metric_sum(b.metrics(), "perch_hub_routed_total", reason="waiting_for_routes") == 1
    filt = module(b, "filter")
    assert filt.quiet(0.3) == []
    write_deployment(b.dep, QUICKSTART, n=2)
    os.kill(b.proc.pid, signal.SIGHUP)
    got = filt.messages(1)
    assert temps(got) == [7], "a message sent before the routes existed was lost"


def test_bad_route_refused_old_routes_stay(routed):
    b = routed()
    mark = b.log_mark()
    bad = dict(QUICKSTART, broken="FROM /messages/* WHERE $body.x > INTO $upstream")
    write_deployment(b.dep, bad, n=2)
    os.kill(b.proc.pid, signal.SIGHUP)
    line = b.wait_log(r"route broken: .*column \d+", mark)
    assert line, b.log_tail(10)
    b.wait_log("routes refused", mark)
    filt = module(b, "filter")
    sensor = module(b, "sensor", subscribe=False)
    output(sensor, "sensor", "temperatureOutput", {"machine": {"temperature": 1}})
    assert temps(filt.messages(1)) == [1], "the previous routes did not stay"


def test_ttl_and_non_json_body(routed):
    routes = {"r": {"route": "FROM /messages/modules/sensor/* "
                             "INTO BrokeredEndpoint(\"/modules/filter/inputs/in\")",
                    "timeToLiveSecs": 1},
              "hot": "FROM /messages/modules/sensor/* WHERE $body.machine.temperature > 25 "
                     "INTO BrokeredEndpoint(\"/modules/filter/inputs/hot\")"}
    b = routed(routes=routes)
    sensor = module(b, "sensor", subscribe=False)
    output(sensor, "sensor", "o", {"machine": {"temperature": 1}})
    time.sleep(2.2)
    sensor.publish(f"devices/{DEV}/modules/sensor/messages/events/%24.on=o&{JSON_PROPS}",
                   b"{not json", qos=1)
    filt = module(b, "filter")
    got = filt.messages(1)
    assert len(got) == 1 and got[0].payload == b"{not json", got
    assert "/inputs/in/" in got[0].topic, "a non-JSON body took a $body route"
    assert filt.quiet(0.5) == [], "an expired message was delivered"
    h.wait_until(lambda: h.metric_sum(b.metrics(), "perch_hub_dropped_total",
                                      reason="expired") >= 1, 5, what="expired counted")
