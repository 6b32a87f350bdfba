#!/usr/bin/env bash
# tests/integration/test_agent_twin.sh — perch-agent keeps its report in the
# `$edgeAgent` module twin at the perch-hub it starts (agent/src/hublink.c,
# docs/agent.md "The $edgeAgent twin"), on the Docker engine
# (perch-env.sh, with a state dir of its own) with a FROM scratch image built here (imagePullPolicy never: no registry).
#
# The twin is read two ways. twins.db (the hub's store, sqlite3 read-only)
# can be polled without disturbing anybody. A real MQTT client (paho, via
# /usr/bin/python3) reads it as the hub serves it: only an identity reads its
# own twin, so it logs in as `{device}/$edgeAgent` with a token signed here
# (sastool, from the device key file) — which takes the agent's session over;
# the agent must then come back by itself and stay in sync. Checks:
#   - the twin's modules (runtimeStatus, restartCount, exitCode) and the
#     hub's restartCount equal `perch-agent status --json`, in twins.db and
#     through the hub (GET as $edgeAgent); `perch-agent status` says in sync
#   - after the takeover the agent reconnects (a second "link ... up" line)
#   - a module's process killed (-9): restartCount 1 reaches the twin
#   - a module removed from the deployment: it is deleted from the twin
#   - perch-hub killed (-9): the agent restarts it, reconnects, and the
#     twin shows the hub's restartCount 1
#   - the agent's log holds neither the token, the device key nor the
#     derived key
# Removes only what it created (label perch.instance=twin-$$, its image).
#
# Run by tests/run.sh (PERCH_ROOT = repo root, O = build dir);
# alone: O=build bash tests/integration/test_agent_twin.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

test_setup agent_bin hub_bin sastool
command -v sqlite3 >/dev/null || { echo "FAIL - sqlite3 is not installed" >&2; exit 1; }
/usr/bin/python3 -c 'import paho.mqtt.client' 2>/dev/null ||
	{ echo "FAIL - python3-paho-mqtt is not installed" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-twin.XXXXXX")
start=$SECONDS
inst=twin-$$
net=perch-test-twin-$$
dev=twin-dev-$$
ma=twin-a-$$
mb=twin-b-$$
img=perch-test/twin-sleeper:t$$
agent_pid=

images=("$img")
trap 'agent_test_cleanup test_agent_twin' EXIT
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
cat >"$tmp/config.yaml" <<YAML
device:
  id: $dev
  iothub_hostname: twin-hub.example.net
  key_file: $tmp/device/device.key
  certs_dir: $tmp/device/certs
  hub_deployment: $tmp/device/hub-deployment.json
agent:
  instance: $inst
  network: $net
  stop_grace: 2s
  poll: 200ms
  restart:
    base: 500ms
  hub:
    port: $hub_port
    args: [--listen, "mqtt://127.0.0.1:$hub_port", --data-dir, "$tmp/hub", --set, hub.sync=off]
YAML

# manifest MODULE...: a deployment of the named modules.
manifest() {
	local body="" m
	for m in "$@"; do
		[ -n "$body" ] && body+=","
		body+=$(printf '"%s": {"version": "1.0", "type": "docker", "status": "running",
		  "restartPolicy": "always", "imagePullPolicy": "never",
		  "settings": {"image": "%s", "createOptions": ""}}' "$m" "$img")
	done
	cat >"$tmp/dep.json.new" <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "x"}},
                      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                  "settings": {"image": "x"}}},
    "modules": {$body}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}
}}
JSON
	mv "$tmp/dep.json.new" "$tmp/dep.json"
}

status_json() { timeout 15 "$agent_bin" status --config "$tmp/config.yaml" --data-dir "$tmp/agent" --json; }
mod_field() {
	status_json | /usr/bin/python3 -c 'import json,sys; m=json.load(sys.stdin)["modules"].get(sys.argv[1]); print("" if m is None else m[sys.argv[2]])' "$1" "$2"
}
is_running() { [ "$(mod_field "$1" runtimeStatus)" = running ]; }
link_ups() { grep -c "link to perch-hub up" "$tmp/agent1.log" || true; }

# twin_db: the $edgeAgent twin's reported section in twins.db (read-only),
# with "$version" added.
twin_db() {
	local row
	row=$(sqlite3 -readonly "$tmp/hub/twins.db" \
		"SELECT reported_version, reported FROM twin WHERE name = '$dev/\$edgeAgent'" 2>/dev/null) || return 1
	[ -n "$row" ] || return 1
	/usr/bin/python3 -c 'import json,sys; v,_,r=sys.argv[1].partition("|"); d=json.loads(r); d["$version"]=int(v); print(json.dumps(d))' "$row"
}

# same TWIN_JSON_FILE: does the twin's reported section (in the file) say
# what `perch-agent status --json` says? Prints the difference otherwise.
cat >"$tmp/same.py" <<'EOF'
import json, sys
twin = json.load(open(sys.argv[1]))
st = json.load(open(sys.argv[2]))
bad = []
tm, sm = twin.get("modules", {}), st["modules"]
if sorted(tm) != sorted(sm):
    bad.append("modules %s in the twin, %s in status" % (sorted(tm), sorted(sm)))
for name, m in sm.items():
    for k in ("runtimeStatus", "restartCount", "exitCode", "lastStartTimeUtc"):
        if tm.get(name, {}).get(k) != m.get(k):
            bad.append("%s.%s: twin %r, status %r" % (name, k, tm.get(name, {}).get(k), m.get(k)))
th = twin.get("systemModules", {}).get("edgeHub", {})
sh = st["systemModules"]["edgeHub"]
for k in ("runtimeStatus", "restartCount"):
    if th.get(k) != sh.get(k):
        bad.append("edgeHub.%s: twin %r, status %r" % (k, th.get(k), sh.get(k)))
for k in ("lastDesiredVersion", "lastDesiredStatus", "schemaVersion"):
    if twin.get(k) != st.get(k):
        bad.append("%s: twin %r, status %r" % (k, twin.get(k), st.get(k)))
if "twin" in twin:
    bad.append("the link's own state is in the twin")
if bad:
    print("; ".join(bad))
    sys.exit(1)
EOF
same() { # TWIN_FILE
	status_json >"$tmp/status.json" || return 1
	/usr/bin/python3 "$tmp/same.py" "$1" "$tmp/status.json" >"$tmp/same.out"
}
db_same() { twin_db >"$tmp/twin-db.json" && same "$tmp/twin-db.json"; }
wait_db_same() { # SECONDS WHAT
	local end=$((SECONDS + $1))
	while ((SECONDS < end)); do
		db_same && return 0
		sleep 0.3
	done
	fail "$2: twins.db does not match perch-agent status: $(cat "$tmp/same.out" 2>/dev/null)"
}

# twin_get: the whole twin as the hub serves it to $edgeAgent (paho). Taking
# the session over, it may itself be taken over by the agent coming back
# before the answer: then it tries again (5 times at most).
cat >"$tmp/get.py" <<'EOF'
import json, sys, threading, paho.mqtt.client as mqtt
port, dev, user, token_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
token = open(token_file).read().strip()
for attempt in range(5):
    got, done = {}, threading.Event()
    c = mqtt.Client(client_id=dev + "/$edgeAgent", clean_session=True)
    c.username_pw_set(user, token)
    def on_connect(c, u, f, rc):
        got["connack"] = rc
        if rc != 0:
            done.set(); return
        c.subscribe("$iothub/twin/res/#", 0)
    def on_subscribe(c, u, mid, q):
        c.publish("$iothub/twin/GET/?$rid=t1", b"", 0)
    def on_message(c, u, m):
        if "$rid=t1" in m.topic:
            got["topic"], got["body"] = m.topic, m.payload
            done.set()
    def on_disconnect(c, u, rc):
        done.set()
    c.on_connect, c.on_subscribe, c.on_message, c.on_disconnect = on_connect, on_subscribe, on_message, on_disconnect
    c.connect("127.0.0.1", port, 60)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()
    if got.get("connack", 0) != 0:
        sys.exit("CONNACK %d" % got["connack"])
    if "body" in got:
        if not got["topic"].startswith("$iothub/twin/res/200/"):
            sys.exit("answer " + got["topic"])
        print(got["body"].decode())
        sys.exit(0)
sys.exit("no twin answer in 5 attempts")
EOF
twin_get() {
	local exp=$(($(date +%s) + 600))
	"$sastool" sign --resource "twin-hub.example.net/devices/$dev/modules/\$edgeAgent" --expiry "$exp" \
		--key-file "$tmp/agent.key" >"$tmp/token" || fail "sastool sign"
	timeout 60 /usr/bin/python3 "$tmp/get.py" "$hub_port" "$dev" \
		"twin-hub.example.net/$dev/\$edgeAgent/?api-version=2018-06-30" "$tmp/token" >"$tmp/twin-get.json" ||
		fail "twin GET as \$edgeAgent: $(cat "$tmp/twin-get.json")"
	/usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["reported"]))' \
		"$tmp/twin-get.json" >"$tmp/twin-mqtt.json"
}

# --- deploy ----------------------------------------------------------------------------------
manifest "$ma" "$mb"
"$agent_bin" --config "$tmp/config.yaml" --data-dir "$tmp/agent" --hub "$hub_bin" \
	--manifest "$tmp/dep.json" >"$tmp/agent1.log" 2>&1 &
agent_pid=$!
wait_for 60 "$ma running" is_running "$ma"
wait_for 30 "$mb running" is_running "$mb"
ok "agent deployed $ma and $mb with its hub on port $hub_port"
"$sastool" derive --module '$edgeAgent' --key-file "$tmp/device/device.key" >"$tmp/agent.key" ||
	fail "sastool derive"

wait_db_same 30 "first report"
grep -q "link to perch-hub up (127.0.0.1:$hub_port, as $dev/\$edgeAgent)" "$tmp/agent1.log" ||
	fail "no 'link to perch-hub up' line"
v1=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["$version"])' "$tmp/twin-db.json")
ok "twins.db: the \$edgeAgent twin says what perch-agent status says (reported version $v1)"
in_sync() { status_json | /usr/bin/python3 -c 'import json,sys; t=json.load(sys.stdin)["twin"]; sys.exit(0 if t["connected"] and t["inSync"] else 1)'; }
wait_for 15 "perch-agent status says the twin is in sync" in_sync
timeout 15 "$agent_bin" status --config "$tmp/config.yaml" --data-dir "$tmp/agent" | grep -q "^twin: *in sync (reported version" ||
	fail "the status table does not say the twin is in sync"
ok "perch-agent status: twin in sync"

# --- through the hub, as $edgeAgent ------------------------------------------------------------
ups=$(link_ups)
twin_get
same "$tmp/twin-mqtt.json" || fail "the twin served by the hub differs from status: $(cat "$tmp/same.out")"
ok "twin GET as $dev/\$edgeAgent (paho): reported properties match perch-agent status"
more_ups() { [ "$(link_ups)" -gt "$ups" ]; }
wait_for 30 "the agent reconnects after its session was taken over" more_ups
wait_for 15 "in sync again after the takeover" in_sync
ok "the agent came back after the takeover (link up lines: $ups -> $(link_ups)) and is in sync"

# --- a module crashes --------------------------------------------------------------------------
pid_a=$(docker inspect -f '{{.State.Pid}}' "$ma")
[ "$pid_a" -gt 0 ] || fail "no pid for $ma"
kill -9 "$pid_a"
restarted() { [ "$(mod_field "$ma" restartCount)" = 1 ] && is_running "$ma"; }
wait_for 30 "$ma restarted by the agent" restarted
wait_db_same 30 "after $ma's crash"
rc=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["modules"][sys.argv[2]]["restartCount"])' "$tmp/twin-db.json" "$ma")
[ "$rc" = 1 ] || fail "twin restartCount of $ma: $rc"
ok "$ma killed (-9) and restarted: the twin has restartCount 1 and the status of perch-agent"

# --- a module leaves the deployment ------------------------------------------------------------
manifest "$ma"
gone_b() { [ -z "$(mod_field "$mb" runtimeStatus)" ]; }
wait_for 30 "$mb removed from the report" gone_b
wait_db_same 30 "after $mb left"
grep -q "\"$mb\"" "$tmp/twin-db.json" && fail "$mb is still in the twin"
ok "$mb left the deployment: deleted from the twin (merge patch null)"

# --- the hub dies ------------------------------------------------------------------------------
hub_pid=$(pgrep -P "$agent_pid" -x perch-hub) || fail "no perch-hub child of the agent"
ups=$(link_ups)
kill -9 "$hub_pid"
hub_back() { local p; p=$(pgrep -P "$agent_pid" -x perch-hub) && [ "$p" != "$hub_pid" ]; }
wait_for 30 "perch-hub restarted by the agent" hub_back
wait_for 30 "the agent reconnects to the restarted hub" more_ups
hub_restarts() { [ "$(status_json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["systemModules"]["edgeHub"]["restartCount"])')" = 1 ]; }
wait_for 15 "status: edgeHub restartCount 1" hub_restarts
wait_db_same 30 "after the hub's restart"
v2=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["$version"])' "$tmp/twin-db.json")
[ "$v2" -gt "$v1" ] || fail "reported version $v2 after the hub restart, $v1 before"
ups=$(link_ups)
twin_get
same "$tmp/twin-mqtt.json" || fail "after the hub restart, the twin served differs from status: $(cat "$tmp/same.out")"
grep -q '"restartCount": 1' <(/usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["systemModules"]["edgeHub"]))' "$tmp/twin-mqtt.json") ||
	fail "the twin does not show the hub's restart"
wait_for 30 "the agent reconnects after the second takeover" more_ups
ok "perch-hub killed (-9): restarted, the agent reconnected and re-reported (edgeHub restartCount 1, reported version $v1 -> $v2)"

# --- no secrets in the log ---------------------------------------------------------------------
for s in "$(cat "$tmp/device/device.key")" "$(cat "$tmp/agent.key")" "sig=" "SharedAccessSignature sr"; do
	grep -qF -e "$s" "$tmp/agent1.log" && fail "the agent's log holds a key or token ($s)"
done
ok "no key or token in the agent's log"
stop_agent || fail "the agent did not stop cleanly"
ok "agent stopped"
