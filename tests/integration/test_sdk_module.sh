#!/usr/bin/env bash
# tests/integration/test_sdk_module.sh — the Azure IoT device SDK for Node
# (azure-iot-device + azure-iot-device-mqtt) as a module in a container that
# perch-agent deploys, against the perch-hub the agent starts, over TLS with
# the agent's certificate; no anonymous clients. Real engine, a private
# registry (deploy/perch-env.sh: own state dir, free port), the image of
# deploy/modules/node-sdk (deploy/images.sh --node-sdk: FROM scratch, node
# and the SDK), a real MQTT client (paho) and curl.
#
# The module uses ModuleClient.fromEnvironment(Mqtt): the IOTEDGE_* variables,
# tokens and the trust bundle from its workload socket, mqtts to
# perch-hub:8883 (the name resolves to the engine's host-gateway address,
# where the hub listens with mqtts:// and wss://...:443). The deployment is
# IoT Edge-style (modulesContent with $edgeAgent, $edgeHub routes, the
# module's desired properties). A second module, "observer", deployed with
# status stopped, is an identity for a paho client on the host (a SAS token
# from the module key derived from the device key): it sends to the SDK
# module through a route and receives the SDK module's outputs through
# another. Checks:
#   - the hub was started with the agent's hub.pem/hub.key, and serves them on
#     8883 and 443 (openssl verifies against the device CA for perch-hub)
#   - output events: `telemetry` messages arrive at the observer's input
#   - input through a route: the observer's message reaches input1 of the SDK
#     module, which echoes it on output `echo` back to the observer
#   - the twin read at start has the deployment's desired properties
#   - the same image with Transport=MqttWs (module sdkws) logs in over wss on
#     perch-hub:443 and reports
#   - a desired change (the deployment file edited, the agent applies it)
#     reaches the module as a desired update; the container is not recreated
#   - a direct method POSTed to https://perch-hub:443/twins/D/modules/M/methods
#     with the device's SAS token gets the module's answer
#   - hub.pem touched (as a renewal would change it): the agent restarts the
#     hub at once, the module reconnects and answers a method again
#   - the reported properties land in the hub's twin: the module stopped (by
#     the deployment), its identity reads its twin with a twin GET over MQTT
#   - hub.tls.cert/key set in the hub: section: the agent leaves them alone
# Removes only what it created (label perch.instance=sdk-$$). Needs ports
# 8883 and 443 free on the host-gateway address.
#
# Run by tests/run.sh (PERCH_ROOT = repo root, O = build dir);
# alone: bash tests/integration/test_sdk_module.sh (after make O=build test)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

test_setup agent_bin hub_bin
command -v node >/dev/null || { echo "FAIL - node is not installed" >&2; exit 1; }
[ -d tests/node_modules/azure-iot-device-mqtt ] ||
	{ echo "FAIL - tests/node_modules lacks the Azure IoT SDK (npm ci --prefix tests)" >&2; exit 1; }
/usr/bin/python3 -c 'import paho.mqtt.client' 2>/dev/null ||
	{ echo "FAIL - python3-paho-mqtt is not installed" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-sdk.XXXXXX")
start=$SECONDS
inst=sdk-$$
net=perch-test-sdk-$$
tag=sdk-$$
dev=sdk-dev-$$
iothub=hub-$$.example.net
mod=sdkmod
wsmod=sdkws
obs=observer
agent_pid=
obs_pid=
images=()

unset PERCH_DOCKER_SOCK PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60 PERCH_IMAGE_TAG=$tag

cleanup_extra() {
	[ -n "$obs_pid" ] && kill "$obs_pid" 2>/dev/null
	[ -f "$tmp/sdk.log" ] || timeout 10 docker logs "$mod" >"$tmp/sdk.log" 2>&1
	if [ "$rc" -ne 0 ]; then
		echo "--- docker logs $mod (last 30 lines)"
		tail -n 30 "$tmp/sdk.log"
		[ -f "$tmp/observer.out" ] && { echo "--- observer (last 10 lines)"; tail -n 10 "$tmp/observer.out"; }
	fi
}
trap 'agent_test_cleanup test_sdk_module' EXIT
trap 'exit 1' INT TERM

perch_env_up
password=$(cat "$PERCH_REGISTRY_PASSWORD_FILE")
img=$PERCH_REGISTRY/perch/node-sdk-module:$tag
images=("$img")
timeout 300 bash deploy/images.sh --node-sdk >"$tmp/images.log" 2>&1 ||
	{ tail "$tmp/images.log"; fail "deploy/images.sh --node-sdk failed"; }
ok "image $img built FROM scratch (node, its libraries, the SDK) and pushed"

# The address `host-gateway` stands for in the modules' /etc/hosts.
gw=$(timeout 60 docker run --rm --add-host "probe:host-gateway" --entrypoint /usr/bin/node "$img" \
	-e 'process.stdout.write(require("fs").readFileSync("/etc/hosts","utf8").split("\n").filter((l)=>/\sprobe$/.test(l))[0].split(/\s/)[0])') ||
	fail "cannot learn the host-gateway address"
[[ $gw =~ ^[0-9.]+$ ]] || fail "host-gateway address: '$gw'"
for p in 8883 443; do
	[ -z "$(ss -Hltn "sport = :$p" | awk -v a="$gw:$p" '$4 == a || $4 ~ /^(0\.0\.0\.0|\*|\[::\]):/')" ] ||
		fail "port $p is taken on $gw (is the demo running? ./deploy/run.sh stop)"
done
mqtt_port=$(free_port)
ws_port=$(free_port)

# --- configuration and deployment -----------------------------------------------------------
cat >"$tmp/config.yaml" <<YAML
device:
  id: $dev
  iothub_hostname: $iothub
  key_file: $tmp/device/device.key
  certs_dir: $tmp/device/certs
  hub_deployment: $tmp/device/hub-deployment.json
agent:
  instance: $inst
  network: $net
  stop_grace: 2s
  hub:
    port: $mqtt_port
hub:
  listen:
    - mqtt://127.0.0.1:$mqtt_port
    - ws://127.0.0.1:$ws_port
    - mqtts://$gw:8883
    - wss://$gw:443
  data_dir: $tmp/hub
YAML

# manifest GREETING SDK_STATUS: the deployment, with the SDK module's desired
# properties and status.
manifest() {
	cat >"$tmp/dep.json.new" <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"registryCredentials": {
      "local": {"username": "$PERCH_REGISTRY_USER", "password": "$password", "address": "$PERCH_REGISTRY"}}}},
    "systemModules": {
      "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                  "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}}},
    "modules": {
      "$mod": {"version": "1.0", "type": "docker", "status": "$2", "restartPolicy": "always",
               "env": {"SendInterval": {"value": "2"}},
               "settings": {"image": "$img", "createOptions": "{}"}},
      "$wsmod": {"version": "1.0", "type": "docker", "status": "$2", "restartPolicy": "always",
               "env": {"SendInterval": {"value": "0"}, "Transport": {"value": "MqttWs"}},
               "settings": {"image": "$img", "createOptions": "{}"}},
      "$obs": {"version": "1.0", "type": "docker", "status": "stopped", "restartPolicy": "never",
               "settings": {"image": "$img", "createOptions": "{}"}}}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1",
    "routes": {
      "sdkToObserver": "FROM /messages/modules/$mod/outputs/* INTO BrokeredEndpoint(\"/modules/$obs/inputs/fromSdk\")",
      "observerToSdk": {"route": "FROM /messages/modules/$obs/outputs/toSdk INTO BrokeredEndpoint(\"/modules/$mod/inputs/input1\")",
                        "priority": 1, "timeToLiveSecs": 600}},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 600}}},
  "$mod": {"properties.desired": {"greeting": "$1", "threshold": 25}}
}}
JSON
	mv "$tmp/dep.json.new" "$tmp/dep.json"
}

# The host-side MQTT peer (paho) and token maker.
cat >"$tmp/peer.py" <<'EOF'
"""peer.py: MODE KEYFILE IOTHUB DEVICE [ARGS]
token                       print a SAS token of the device
observe PORT MODULE SECS    as MODULE: subscribe to its inputs, send one message on
                            output toSdk, print each message received (one JSON line)
twin PORT MODULE            as MODULE: print its twin (twin GET)"""
import base64, hashlib, hmac, json, sys, threading, time, urllib.parse
import paho.mqtt.client as mqtt

mode, keyfile, iothub, dev = sys.argv[1:5]
devkey = base64.b64decode(open(keyfile).read().strip())

def sas(resource, key):
    se = int(time.time()) + 3600
    sr = urllib.parse.quote(resource, safe="")
    sig = base64.b64encode(hmac.new(key, f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}"

def out(o):
    print(json.dumps(o), flush=True)

def client(port, module):
    key = hmac.new(devkey, module.encode(), hashlib.sha256).digest()
    c = mqtt.Client(client_id=f"{dev}/{module}", clean_session=True, protocol=mqtt.MQTTv311)
    c.username_pw_set(f"{iothub}/{dev}/{module}/?api-version=2019-01-30",
                      sas(f"{iothub}/devices/{dev}/modules/{module}", key))
    connected = threading.Event()
    c.on_connect = lambda cl, ud, fl, rc: (out({"event": "connack", "rc": rc}), connected.set())
    c.connect("127.0.0.1", int(port), keepalive=30)
    c.loop_start()
    if not connected.wait(10):
        sys.exit("no CONNACK within 10 s")
    return c

if mode == "token":
    print(sas(f"{iothub}/devices/{dev}", devkey))
elif mode == "observe":
    port, module, secs = sys.argv[5:8]
    subscribed = threading.Event()
    c = client(port, module)
    c.on_message = lambda cl, ud, m: out({"event": "message", "topic": urllib.parse.unquote(m.topic),
                                          "body": m.payload.decode("utf-8", "replace")})
    c.on_subscribe = lambda cl, ud, mid, granted: (out({"event": "suback", "granted": list(granted)}),
                                                   subscribed.set())
    c.subscribe(f"devices/{dev}/modules/{module}/#", qos=1)
    if not subscribed.wait(10):
        sys.exit("no SUBACK within 10 s")
    body = json.dumps({"hello": "sdk", "from": module})
    info = c.publish(f"devices/{dev}/modules/{module}/messages/events/"
                     "%24.on=toSdk&%24.ct=application%2Fjson&%24.ce=utf-8", body, qos=1)
    info.wait_for_publish()
    out({"event": "published", "output": "toSdk", "body": body})
    time.sleep(float(secs))
elif mode == "twin":
    port, module = sys.argv[5:7]
    got = threading.Event()
    answer = {}
    c = client(port, module)
    def on_message(cl, ud, m):
        answer.update(topic=m.topic, body=json.loads(m.payload or b"null"))
        got.set()
    c.on_message = on_message
    sub = threading.Event()
    c.on_subscribe = lambda *a: sub.set()
    c.subscribe("$iothub/twin/res/#", qos=0)
    if not sub.wait(10):
        sys.exit("no SUBACK within 10 s")
    c.publish("$iothub/twin/GET/?$rid=1", b"", qos=0)
    if not got.wait(10):
        sys.exit("no twin within 10 s")
    out(answer)
EOF
peer() { timeout 30 /usr/bin/python3 "$tmp/peer.py" "$1" "$tmp/device/device.key" "$iothub" "$dev" "${@:2}"; }
sdk_log() { timeout 10 docker logs "$mod" 2>&1; }
# sdk_event PYTHON_CONDITION: a line of the module's log, as JSON e, matches.
sdk_event() {
	sdk_log | /usr/bin/python3 -c '
import json, sys
cond = sys.argv[1]
for line in sys.stdin:
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if eval(cond):
        sys.exit(0)
sys.exit(1)' "$1"
}
obs_event() {
	/usr/bin/python3 -c '
import json, sys
cond = sys.argv[2]
for line in open(sys.argv[1]):
    e = json.loads(line)
    if eval(cond):
        sys.exit(0)
sys.exit(1)' "$tmp/observer.out" "$1"
}
status_json() { timeout 15 "$agent_bin" status --config "$tmp/config.yaml" --data-dir "$tmp/agent" --json; }
mod_field() {
	status_json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["modules"].get(sys.argv[1], {}).get(sys.argv[2], ""))' "$1" "$2"
}
is_status() { [ "$(mod_field "$1" runtimeStatus)" = "$2" ]; }

manifest "hello-$$" running
"$agent_bin" --config "$tmp/config.yaml" --data-dir "$tmp/agent" --manifest "$tmp/dep.json" \
	>"$tmp/agent.log" 2>&1 &
agent_pid=$!
wait_for 90 "$mod running" is_status "$mod" running
ok "perch-agent deployed $mod (and the identity $obs, status stopped)"

# --- the hub: the agent's certificate, no anonymous clients ------------------------------------
certs=$tmp/device/certs
hub_pid=$(pgrep -P "$agent_pid" -x perch-hub) || fail "no perch-hub child of the agent"
tr '\0' ' ' <"/proc/$hub_pid/cmdline" >"$tmp/hub.cmdline"
grep -qF -- "--set hub.tls.cert=$certs/hub.pem --set hub.tls.key=$certs/hub.key" "$tmp/hub.cmdline" ||
	fail "the hub was not given the agent's certificate: $(cat "$tmp/hub.cmdline")"
grep -q -- "--allow-anonymous" "$tmp/hub.cmdline" && fail "the hub allows anonymous clients"
for p in 8883 443; do
	timeout 10 openssl s_client -connect "$gw:$p" -servername perch-hub -verify_hostname perch-hub \
		-CAfile "$certs/ca.pem" -verify_return_error </dev/null >"$tmp/s_client.$p" 2>&1 ||
		fail "TLS on $gw:$p: $(grep -i -m3 'verify\|error' "$tmp/s_client.$p")"
	openssl x509 -noout -fingerprint -sha256 -in "$certs/hub.pem" | cut -d= -f2 >"$tmp/fp.want"
	openssl x509 -noout -fingerprint -sha256 -in "$tmp/s_client.$p" 2>/dev/null | cut -d= -f2 >"$tmp/fp.got"
	cmp -s "$tmp/fp.want" "$tmp/fp.got" || fail "$gw:$p serves another certificate than $certs/hub.pem"
done
ok "perch-hub (no --allow-anonymous) got --set hub.tls.cert/key = the agent's hub.pem/hub.key and serves it on $gw:8883 and :443 (verifies for perch-hub against ca.pem)"

# --- the SDK module: connected, twin read, reported -----------------------------------------------
wait_for 60 "$mod connected (docker logs)" sdk_event 'e["event"] == "connected"'
sdk_event "e['event'] == 'connected' and e['gateway'] == 'perch-hub' and e['moduleId'] == '$mod' and e['deviceId'] == '$dev'" ||
	fail "connected as whom? $(sdk_log | grep connected)"
wait_for 30 "$mod read its twin" sdk_event 'e["event"] == "twin"'
sdk_event "e['event'] == 'twin' and e['desired'].get('greeting') == 'hello-$$' and e['desired'].get('threshold') == 25" ||
	fail "the twin the module read: $(sdk_log | grep '"twin"')"
wait_for 30 "$mod reported properties" sdk_event 'e["event"] == "reported" and e["what"] == "sdk"'
ok "ModuleClient.fromEnvironment(Mqtt) connected to perch-hub:8883 as $dev/$mod; its twin has the deployment's desired properties; it reported"

ws_event() { timeout 10 docker logs "$wsmod" 2>&1 | grep -q "$1"; }
wait_for 60 "$wsmod (MqttWs) reported properties" ws_event '"event":"reported","what":"sdk"'
ws_event '"event":"connected".*"transport":"MqttWs"' || fail "$wsmod: $(timeout 10 docker logs "$wsmod" 2>&1 | head -3)"
grep -q "connected .* ($dev/$wsmod) as $dev/$wsmod" "$tmp/agent.log" || fail "the hub did not log $wsmod's login"
ok "the same module with Transport=MqttWs connected over wss to perch-hub:443 and reported"

# --- messages: outputs to the observer, the observer's message into input1 -------------------------
/usr/bin/python3 "$tmp/peer.py" observe "$tmp/device/device.key" "$iothub" "$dev" "$mqtt_port" "$obs" 150 \
	>"$tmp/observer.out" 2>"$tmp/observer.err" &
obs_pid=$!
wait_for 20 "the observer connected and subscribed" obs_event 'e["event"] == "suback"'
obs_event 'e["event"] == "connack" and e["rc"] == 0' || fail "observer: $(head -3 "$tmp/observer.out")"
obs_event 'e["event"] == "suback" and e["granted"] == [1]' || fail "observer's subscription: $(grep suback "$tmp/observer.out")"
wait_for 30 "a telemetry output of $mod at the observer's input" obs_event \
	"e['event'] == 'message' and e['topic'].startswith('devices/$dev/modules/$obs/inputs/fromSdk/') and '\$.on=telemetry' in e['topic'] and '\$.cmid=$mod' in e['topic'] and '\"seq\"' in e['body']"
ok "$mod's output events (telemetry) arrive at $obs's input fromSdk through the route, stamped \$.cdid/\$.cmid"

wait_for 30 "the observer's message at $mod's input1" sdk_event \
	'e["event"] == "input" and e["input"] == "input1" and "\"from\": \"observer\"" in e["body"]'
wait_for 30 "$mod's echo at the observer" obs_event \
	"e['event'] == 'message' and '\$.on=echo' in e['topic'] and 'echoedFrom=input1' in e['topic'] and '\"from\": \"observer\"' in e['body']"
ok "$obs's message went through the route to $mod's input1; $mod echoed it on output echo back to $obs"

# --- a desired change through the deployment ---------------------------------------------------------
cid=$(docker inspect -f '{{.Id}}' "$mod")
manifest "changed-$$" running
wait_for 30 "the desired update at $mod" sdk_event "e['event'] == 'desired' and e['delta'].get('greeting') == 'changed-$$'"
wait_for 20 "$mod reported lastDesired" sdk_event 'e["event"] == "reported" and e["what"] == "lastDesired"'
[ "$(docker inspect -f '{{.Id}}' "$mod")" = "$cid" ] || fail "$mod was recreated for a twin change"
ok "the deployment's desired change reached $mod as a desired update (same container)"

# --- a direct method over HTTPS on the gateway's port 443 ---------------------------------------------
token=$(peer token) || fail "no device token"
timeout 30 curl -sS --cacert "$certs/ca.pem" --resolve "perch-hub:443:$gw" \
	-H "Authorization: $token" -H 'Content-Type: application/json' \
	-d "{\"methodName\": \"ping\", \"payload\": {\"n\": $$}, \"responseTimeoutInSeconds\": 10}" \
	-o "$tmp/method.out" -w '%{http_code}' "https://perch-hub:443/twins/$dev/modules/$mod/methods" \
	>"$tmp/method.code" || fail "curl: method call failed"
[ "$(cat "$tmp/method.code")" = 200 ] || fail "method call: HTTP $(cat "$tmp/method.code") $(cat "$tmp/method.out")"
/usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r == {"status": 200, "payload": {"pong": {"n": int(sys.argv[2])}, "module": sys.argv[3]}}, r' \
	"$tmp/method.out" "$$" "$mod" || fail "method answer: $(cat "$tmp/method.out")"
sdk_event "e['event'] == 'method' and e['name'] == 'ping' and e['payload'] == {'n': $$}" ||
	fail "the module did not log the call"
ok "direct method ping via https://perch-hub:443 (device token) -> $mod's answer {status 200, pong}"

# --- a new hub.pem: the agent restarts the hub, the module comes back ------------------------------------
# (The agent renews hub.pem when a third of its life is left; the hub reads
# it only at start. A new modification time stands for a renewal here.)
readies=$(grep -c "perch-hub ready:" "$tmp/agent.log" || true)
touch "$certs/hub.pem"
new_hub() { local p; p=$(pgrep -P "$agent_pid" -x perch-hub) && [ "$p" != "$hub_pid" ]; }
wait_for 30 "a new perch-hub after hub.pem changed" new_hub
# Every listener of the new hub is open once it says ready (the agent's probe
# of its MQTT port may succeed before the TLS listeners are).
new_ready() { [ "$(grep -c "perch-hub ready:" "$tmp/agent.log")" -gt "$readies" ]; }
wait_for 30 "the new perch-hub ready" new_ready
grep -q "hub.pem changed: restarting perch-hub (pid $hub_pid)" "$tmp/agent.log" || fail "no log of the restart"
grep -q "perch-hub (pid $hub_pid) exited\|perch-hub (pid $hub_pid) killed" "$tmp/agent.log" &&
	fail "the planned restart was logged as a failure"
timeout 60 curl -sS --cacert "$certs/ca.pem" --resolve "perch-hub:443:$gw" \
	-H "Authorization: $token" -H 'Content-Type: application/json' \
	-d '{"methodName": "ping", "payload": "again", "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 45}' \
	-o "$tmp/method2.out" -w '%{http_code}' "https://perch-hub:443/twins/$dev/modules/$mod/methods" \
	>"$tmp/method2.code" || fail "curl: method call after the hub's restart failed"
[ "$(cat "$tmp/method2.code")" = 200 ] && /usr/bin/python3 -c '
import json, sys
assert json.load(open(sys.argv[1]))["payload"]["pong"] == "again"' "$tmp/method2.out" ||
	fail "method call after the hub's restart: HTTP $(cat "$tmp/method2.code") $(cat "$tmp/method2.out")"
ok "hub.pem changed: the agent restarted perch-hub (not counted as a failure); $mod reconnected by itself and answers methods again"

# --- the reported properties, as the hub keeps them ---------------------------------------------------
sdk_log >"$tmp/sdk.log"
manifest "changed-$$" stopped
wait_for 30 "$mod stopped by the deployment" is_status "$mod" stopped
peer twin "$mqtt_port" "$mod" >"$tmp/twin.out" || fail "twin GET as $mod: $(cat "$tmp/twin.out")"
/usr/bin/python3 -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert lines[0] == {"event": "connack", "rc": 0}, lines
t = lines[-1]
assert t["topic"].startswith("$iothub/twin/res/200/"), t
rep, des = t["body"]["reported"], t["body"]["desired"]
assert rep["sdk"]["lang"] == "node" and rep["sdk"]["transport"] == "mqtt", rep
assert rep["lastDesired"]["greeting"] == "changed-" + sys.argv[2], rep
assert des["greeting"] == "changed-" + sys.argv[2] and des["threshold"] == 25, des' \
	"$tmp/twin.out" "$$" || fail "the hub's twin of $mod: $(cat "$tmp/twin.out")"
ok "the hub's twin of $mod (twin GET as $mod once it stopped) has what the SDK reported and the new desired properties"

# --- a certificate the user chose is left alone ---------------------------------------------------------
stop_agent || fail "agent exit status"
cp "$certs/hub.pem" "$tmp/own.pem"
cp "$certs/hub.key" "$tmp/own.key"
sed -e "s|^  data_dir: $tmp/hub\$|&\n  tls:\n    cert: $tmp/own.pem\n    key: $tmp/own.key|" "$tmp/config.yaml" >"$tmp/config2.yaml"
grep -q "cert: $tmp/own.pem" "$tmp/config2.yaml" || fail "config2.yaml: $(cat "$tmp/config2.yaml")"
"$agent_bin" --config "$tmp/config2.yaml" --data-dir "$tmp/agent" --manifest "$tmp/dep.json" \
	>"$tmp/agent2.log" 2>&1 &
agent_pid=$!
hub_child() { pgrep -P "$agent_pid" -x perch-hub >/dev/null && ss -Hltn "sport = :8883" | grep -q .; }
wait_for 30 "perch-hub started with config2.yaml and listening" hub_child
hub_pid=$(pgrep -P "$agent_pid" -x perch-hub)
tr '\0' ' ' <"/proc/$hub_pid/cmdline" >"$tmp/hub2.cmdline"
grep -q -- "hub.tls" "$tmp/hub2.cmdline" && fail "the agent overrode hub.tls.* of the hub: section: $(cat "$tmp/hub2.cmdline")"
ok "hub.tls.cert/key set in the hub: section: the agent adds no --set hub.tls.* (the hub uses the user's files)"
