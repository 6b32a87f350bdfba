#!/usr/bin/env bash
# tests/integration/test_offline_boot.sh — "offline for real" (issue 6): a
# device whose parent never answers boots with no link and no manifest and
# still does its job from what it stored, on the Docker engine
# (perch-env.sh, with a state dir of its own) with a FROM scratch image
# built here (imagePullPolicy never: no registry).
#
# The device's hub has hub.upstream.url pointing at a closed local port. It is
# deployed once (two modules, a route INTO $upstream, a desired property of
# module A); module A reports a property. Then the agent is stopped, the
# modules' containers are removed and the manifest file is deleted, and the
# agent is started again — a boot with no link. Checks:
#   - every module runs again, from the agent's stored deployment
#   - module A authenticates from the stored identities (a paho client with a
#     token signed by its derived key, as its SDK would get from the workload
#     API) and publishes; its messages queue for $upstream
#   - its twin GET is answered from the hub's store (desired and reported)
#   - `perch-agent status --json`: systemModules.edgeHub.upstream says down,
#     with the queued count growing as A publishes; `perch-agent status`
#     prints the "upstream:   down since ..." line
#   - the $edgeAgent twin in twins.db carries only the slow upstream fields,
#     and is not patched while the queue grows
# Then a parent perch-hub comes up on that port (the device registered there
# as an edge device): the link comes up, the queue drains, status says up.
# Removes only what it created (label perch.instance=offline-$$, its image,
# its processes by pid).
#
# Run by tests/run.sh (PERCH_ROOT = repo root, O = build dir);
# alone: O=build bash tests/integration/test_offline_boot.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

test_setup agent_bin hub_bin sastool
command -v sqlite3 >/dev/null || { echo "FAIL - sqlite3 is not installed" >&2; exit 1; }
/usr/bin/python3 -c 'import paho.mqtt.client' 2>/dev/null ||
	{ echo "FAIL - python3-paho-mqtt is not installed" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-offline.XXXXXX")
start=$SECONDS
inst=offline-$$
net=perch-test-offline-$$
dev=offline-dev-$$
ma=offline-a-$$
mb=offline-b-$$
img=perch-test/offline-sleeper:t$$
agent_pid=
parent_pid=

images=("$img")
# the parent hub this test may start, and its log on failure
cleanup_extra() {
	if [ -n "$parent_pid" ]; then
		kill "$parent_pid" 2>/dev/null
		wait "$parent_pid" 2>/dev/null
	fi
	[ "$rc" -ne 0 ] && [ -f "$tmp/parent.log" ] && { echo "--- parent.log"; tail -n 30 "$tmp/parent.log"; }
	return 0
}
trap 'agent_test_cleanup test_offline_boot' EXIT
trap 'exit 1' INT TERM

# An engine and registry of the test's own state dir (perch-env.sh leaves an
# engine that already answers alone, and stops only what it started).
unset PERCH_DOCKER_SOCK PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60
perch_env_up

# --- a module that sleeps until it is told to stop --------------------------------------------
sleeper_image "$img"
ok "test image $img built"

hub_port=$(free_port)
up_port=$(free_port) # nothing listens there: the parent does not answer
[ "$up_port" != "$hub_port" ] || up_port=$(free_port)
host=offline-hub.example.net
parent_host=parent.example.net
cat >"$tmp/config.yaml" <<YAML
device:
  id: $dev
  iothub_hostname: $host
  key_file: $tmp/device/device.key
  certs_dir: $tmp/device/certs
  hub_deployment: $tmp/device/hub-deployment.json
agent:
  instance: $inst
  network: $net
  stop_grace: 2s
  poll: 200ms
  hub:
    port: $hub_port
    args: [--listen, "mqtt://127.0.0.1:$hub_port", --data-dir, "$tmp/hub", --set, hub.sync=off,
           --set, "hub.upstream.url=mqtt://127.0.0.1:$up_port",
           --set, "hub.upstream.hostname=$parent_host", --set, hub.upstream.backoff_max=1s]
YAML

mods=""
for m in "$ma" "$mb"; do
	[ -n "$mods" ] && mods+=","
	mods+=$(printf '"%s": {"version": "1.0", "type": "docker", "status": "running",
	  "restartPolicy": "always", "imagePullPolicy": "never",
	  "settings": {"image": "%s", "createOptions": ""}}' "$m" "$img")
done
cat >"$tmp/dep.json" <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "x"}},
                      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                  "settings": {"image": "x"}}},
    "modules": {$mods}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1",
    "routes": {"up": "FROM /messages/modules/$ma/* INTO \$upstream"}}},
  "$ma": {"properties.desired": {"threshold": 25}}
}}
JSON

start_agent() { # LOG
	"$agent_bin" --config "$tmp/config.yaml" --data-dir "$tmp/agent" --hub "$hub_bin" \
		--manifest "$tmp/dep.json" >"$1" 2>&1 &
	agent_pid=$!
}
status_json() { timeout 15 "$agent_bin" status --config "$tmp/config.yaml" --data-dir "$tmp/agent" --json; }
mod_field() {
	status_json | /usr/bin/python3 -c 'import json,sys; m=json.load(sys.stdin)["modules"].get(sys.argv[1]); print("" if m is None else m[sys.argv[2]])' "$1" "$2"
}
is_running() { [ "$(mod_field "$1" runtimeStatus)" = running ]; }
# up_field KEY[.KEY...]: a field of systemModules.edgeHub.upstream in status --json.
up_field() {
	status_json | /usr/bin/python3 -c '
import json, sys
v = json.load(sys.stdin)["systemModules"]["edgeHub"].get("upstream", {})
for k in sys.argv[1].split("."):
    v = v.get(k, "") if isinstance(v, dict) else ""
print(v)' "$1"
}

# mod.py PORT DEV MODULE USER TOKEN_FILE ACTION...: module MODULE as its SDK
# would be: one MQTT connection (clean session), then each action in turn:
# "pub:N" (N QoS 1 events, each PUBACKed), "report:JSON" (a reported
# properties PATCH, answered 204), "get" (the twin, printed). Exits non-zero
# on a refused CONNECT or a missing answer (10 s each).
cat >"$tmp/mod.py" <<'EOF'
import json, sys, threading, paho.mqtt.client as mqtt
port, dev, mod, user, token_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
token = open(token_file).read().strip()
c = mqtt.Client(client_id=dev + "/" + mod, clean_session=True)
c.username_pw_set(user, token)
ev, got = threading.Event(), {}
def on_connect(c, u, f, rc):
    got["connack"] = rc
    ev.set()
def on_message(c, u, m):
    got.setdefault("res", []).append((m.topic, m.payload))
    ev.set()
c.on_connect, c.on_message = on_connect, on_message
c.connect("127.0.0.1", port, 60)
c.loop_start()
if not ev.wait(10) or got["connack"] != 0:
    sys.exit("CONNACK %r" % got.get("connack"))
r, mid = c.subscribe("$iothub/twin/res/#", 0)
rid = 0
def request(topic, body):
    global rid
    rid += 1
    want = "$rid=%d" % rid
    c.publish(topic + "?$rid=%d" % rid, body, 0)
    for _ in range(100):
        for t, p in got.get("res", []):
            if t.endswith(want) or ("&" + want) in t or ("?" + want) in t:
                return t, p
        ev.clear(); ev.wait(0.1)
    sys.exit("no answer to " + topic)
import time
time.sleep(0.2)  # the SUBACK (a QoS 0 request needs the subscription first)
for a in sys.argv[6:]:
    kind, _, arg = a.partition(":")
    if kind == "pub":
        for n in range(int(arg)):
            info = c.publish("devices/%s/modules/%s/messages/events/n=%d" % (dev, mod, n),
                             json.dumps({"n": n}), 1)
            info.wait_for_publish()
            if info.rc != 0:
                sys.exit("publish rc %d" % info.rc)
    elif kind == "report":
        t, p = request("$iothub/twin/PATCH/properties/reported/", arg)
        if not t.startswith("$iothub/twin/res/204/"):
            sys.exit("report answered " + t)
    elif kind == "get":
        t, p = request("$iothub/twin/GET/", b"")
        if not t.startswith("$iothub/twin/res/200/"):
            sys.exit("GET answered " + t)
        print(p.decode())
c.disconnect()
c.loop_stop()
EOF
as_a() { # ACTION...: module A, with a token signed by its derived key
	local exp=$(($(date +%s) + 600))
	"$sastool" sign --resource "$host/devices/$dev/modules/$ma" --expiry "$exp" \
		--key-file "$tmp/key-a" >"$tmp/token-a" || fail "sastool sign"
	timeout 60 /usr/bin/python3 "$tmp/mod.py" "$hub_port" "$dev" "$ma" \
		"$host/$dev/$ma/?api-version=2018-06-30" "$tmp/token-a" "$@"
}

# --- first boot: deployed while the parent does not answer ----------------------------------
start_agent "$tmp/agent1.log"
wait_for 60 "$ma running" is_running "$ma"
wait_for 30 "$mb running" is_running "$mb"
ok "first boot: $ma and $mb deployed; the hub's parent (port $up_port) does not answer"
"$sastool" derive --module "$ma" --key-file "$tmp/device/device.key" >"$tmp/key-a" ||
	fail "sastool derive"
as_a 'report:{"boot": 1}' pub:2 >"$tmp/a1.out" 2>&1 || fail "module A on the first boot: $(cat "$tmp/a1.out")"
queued_at_least() { local n; n=$(up_field queued.messages) && [ -n "$n" ] && [ "$n" -ge "$1" ]; }
wait_for 15 "2 messages queued for \$upstream in status --json" queued_at_least 2
[ "$(up_field state)" = down ] || fail "upstream state $(up_field state), want down"
ok "module A reported {boot: 1} and published 2 events: queued for \$upstream, link down"

stop_agent || fail "the agent did not stop cleanly"
timeout 30 docker ps -aq --filter "label=perch.instance=$inst" | xargs -r timeout 60 docker rm -f >/dev/null
[ -z "$(timeout 30 docker ps -aq --filter "label=perch.instance=$inst")" ] || fail "containers left"
rm -f "$tmp/dep.json"
ok "agent stopped, its containers removed, the manifest file deleted"

# --- second boot: no link, no manifest --------------------------------------------------------
start_agent "$tmp/agent2.log"
wait_for 60 "$ma running again" is_running "$ma"
wait_for 30 "$mb running again" is_running "$mb"
ok "boot with no link and no manifest: $ma and $mb run again from the stored deployment"

down_known() { [ "$(up_field state)" = down ]; }
wait_for 15 "status --json: upstream down" down_known
q0=$(up_field queued.messages)
[ "$q0" -ge 2 ] || fail "queued after the reboot: $q0, want >= 2 (the store keeps them)"
as_a pub:3 get >"$tmp/a2.out" 2>"$tmp/a2.err" || fail "module A on the offline boot: $(cat "$tmp/a2.err")"
/usr/bin/python3 - "$tmp/a2.out" <<'EOF' || fail "twin of A from the store: $(cat "$tmp/a2.out")"
import json, sys
t = json.load(open(sys.argv[1]))
assert t["desired"].get("threshold") == 25, t
assert t["reported"].get("boot") == 1, t
EOF
ok "module A authenticated from the stored identities, published 3 events, its twin GET answered from the store (threshold 25, boot 1)"
grown() { [ "$(up_field queued.messages)" -ge $((q0 + 3)) ]; }
wait_for 15 "queued count grows by 3 (from $q0)" grown
json=$(status_json)
/usr/bin/python3 - "$json" <<'EOF' || fail "status --json upstream: $json"
import json, sys
up = json.loads(sys.argv[1])["systemModules"]["edgeHub"]["upstream"]
assert up["configured"] is True and up["state"] == "down", up
assert up["offlineSeconds"] > 0 and up["since"].endswith("Z"), up
assert sum(q["messages"] for q in up["queues"].values()) == up["queued"]["messages"], up
assert up["queued"]["bytes"] > 0 and up["forwarded"] == 0, up
EOF
ok "status --json: upstream down since $(up_field since), $(up_field queued.messages) queued"
timeout 15 "$agent_bin" status --config "$tmp/config.yaml" --data-dir "$tmp/agent" >"$tmp/table"
grep -Eq '^upstream: +down since [0-9T:.-]+Z \(offline [0-9]+[smhd].*\), [0-9]+ queued \(oldest [0-9]+[smhd]' "$tmp/table" ||
	fail "perch-agent status has no upstream line: $(cat "$tmp/table")"
ok "perch-agent status: $(grep '^upstream:' "$tmp/table")"

# The $edgeAgent twin (twins.db): the upstream object with its slow fields only.
twin_up() {
	local row
	row=$(sqlite3 -readonly "$tmp/hub/twins.db" \
		"SELECT reported FROM twin WHERE name = '$dev/\$edgeAgent'" 2>/dev/null) || return 1
	/usr/bin/python3 -c 'import json,sys; u=json.loads(sys.argv[1])["systemModules"]["edgeHub"]["upstream"]; assert sorted(u)==["configured","reconnects","since","state"] and u["state"]==sys.argv[2], u' "$row" "$1"
}
wait_for 20 "the \$edgeAgent twin has upstream {configured, state: down, since, reconnects}" twin_up down
ok "\$edgeAgent twin: upstream with configured, state, since, reconnects only"

# Queue counters move, the twin does not: 4 more events, seen in status --json,
# then longer than the hub's 5 s between writes plus the agent's 1 s between
# patches (a negative check needs a wait; it cannot pass by being slow).
twin_version() { sqlite3 -readonly "$tmp/hub/twins.db" "SELECT reported_version FROM twin WHERE name = '$dev/\$edgeAgent'"; }
v1=$(twin_version)
q1=$(up_field queued.messages)
as_a pub:4 >"$tmp/a3.out" 2>&1 || fail "module A: $(cat "$tmp/a3.out")"
grown4() { [ "$(up_field queued.messages)" -ge $((q1 + 4)) ]; }
wait_for 15 "queued count grows by 4 (from $q1)" grown4
sleep 7
[ "$(twin_version)" = "$v1" ] || fail "the \$edgeAgent twin was patched for queue counters (version $v1 -> $(twin_version))"
ok "\$edgeAgent twin not patched while the queue grew ($q1 -> $(up_field queued.messages), reported version $v1)"

# --- the parent comes back --------------------------------------------------------------------
mkdir -p "$tmp/parent"
head -c 32 /dev/urandom | base64 >"$tmp/parent/device.key"
chmod 600 "$tmp/parent/device.key"
/usr/bin/python3 -c 'import json,sys; print(json.dumps({sys.argv[1]: {"primaryKey": open(sys.argv[2]).read().strip(), "edge": True}}))' \
	"$dev" "$tmp/device/device.key" >"$tmp/parent/leaves.json"
chmod 600 "$tmp/parent/leaves.json"
"$hub_bin" --listen "mqtt://127.0.0.1:$up_port" --data-dir "$tmp/parent/data" \
	--set "device.id=parent-$$" --set "device.iothub_hostname=$parent_host" \
	--set "device.key_file=$tmp/parent/device.key" \
	--set "device.hub_deployment=$tmp/parent/none.json" \
	--set "hub.leaf_devices=$tmp/parent/leaves.json" --set hub.sync=off >"$tmp/parent.log" 2>&1 &
parent_pid=$!
link_up() { [ "$(up_field state)" = up ]; }
wait_for 30 "the link comes up once the parent answers" link_up
drained() { [ "$(up_field queued.messages)" = 0 ] && [ "$(up_field forwarded)" -ge $((q0 + 7)) ]; }
wait_for 30 "the queue drains to the parent" drained
timeout 15 "$agent_bin" status --config "$tmp/config.yaml" --data-dir "$tmp/agent" >"$tmp/table"
grep -Eq '^upstream: +up since [0-9T:.-]+Z, 0 queued$' "$tmp/table" ||
	fail "perch-agent status after the parent came: $(grep '^upstream' "$tmp/table")"
wait_for 20 "the \$edgeAgent twin says up" twin_up up
ok "parent up: link up, $(up_field forwarded) forwarded, queue empty; $(grep '^upstream:' "$tmp/table")"

stop_agent || fail "the agent did not stop cleanly"
ok "agent stopped"
