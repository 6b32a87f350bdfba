#!/usr/bin/env bash
# tests/integration/test_agent.sh — perch-agent end to end against the real
# Docker engine and a private registry with credentials (deploy/perch-env.sh:
# own state dir, free port). The sample images are built and pushed by
# deploy/images.sh and removed locally, so the agent must pull them with the
# manifest's credentials. The agent starts its own perch-hub on a free port.
#
# Checks: deploy -> both modules running, labelled, no password anywhere in
# `docker inspect`, `perch-agent status --json` says running; kill -9 of a
# module's process -> running again, restartCount 1; one module's env changed
# (SIGHUP) -> only it recreated; a module removed (file change only) -> its
# container removed; a bad manifest -> refused with the JSON path in the log,
# containers untouched, lastDesiredStatus 400; the agent stopped (modules keep
# running), containers removed, agent started without a manifest -> the
# stored deployment comes back. Removes only what it created (its containers
# carry perch.instance=test-$$).
#
# Run by tests/run.sh (PERCH_ROOT = repo root, O = build dir);
# alone: bash tests/integration/test_agent.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

test_setup agent_bin hub_bin
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-agent.XXXXXX")
start=$SECONDS
tag=test-$$
inst=test-$$
sensor=sensor-$$
filter=filter-$$
net=perch-test-agent-$$
stalled=stalled-$$
stall_pid=




unset PERCH_DOCKER_SOCK PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG PERCH_IMAGE_TAG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60 PERCH_IMAGE_TAG=$tag
agent_pid=
images=()

cleanup_extra() { [ -n "$stall_pid" ] && kill "$stall_pid" 2>/dev/null; }
trap 'agent_test_cleanup test_agent' EXIT
trap 'exit 1' INT TERM

echo "# state dir $PERCH_ENV_DIR, registry port $PERCH_REGISTRY_PORT, tag $tag"
perch_env_up
password=$(cat "$PERCH_REGISTRY_PASSWORD_FILE")
sensor_img=$PERCH_REGISTRY/perch/simulated-temperature-sensor:$tag
filter_img=$PERCH_REGISTRY/perch/filter:$tag
images=("$sensor_img" "$filter_img")
timeout 300 bash deploy/images.sh >"$tmp/images.out" 2>"$tmp/images.err" ||
	{ tail -n 20 "$tmp/images.err"; fail "deploy/images.sh failed"; }
timeout 60 docker rmi "$sensor_img" "$filter_img" >/dev/null || fail "docker rmi failed"
ok "images pushed to $PERCH_REGISTRY and removed locally (the agent must pull them)"

# A "registry" that accepts connections and never answers: its module's pull
# hangs, and must delay nothing else.
stall_port=$(free_port)
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64); held = []
while True:
    c, _ = s.accept(); held.append(c)
' "$stall_port" &
stall_pid=$!

hub_port=$(free_port)
metrics_port=$(free_port)
cat >"$tmp/config.yaml" <<YAML
device:
  id: agent-test-$$
  key_file: $tmp/device/device.key
  certs_dir: $tmp/device/certs
  hub_deployment: $tmp/device/hub-deployment.json
agent:
  instance: $inst
  network: $net
  restart:
    base: 500ms
    max: 4s
  hub:
    port: $hub_port
    args: [--listen, "mqtt://0.0.0.0:$hub_port", --data-dir, "$tmp/hub", --set, hub.sync=off,
           --metrics, "127.0.0.1:$metrics_port"]
YAML

# manifest FILTER_THRESHOLD [with-filter] [bad|ok] [SENSOR_STATUS]: write the
# deployment (always with a first module whose registry never answers).
manifest() {
	local threshold=$1 with_filter=${2:-yes} image=$sensor_img sstatus=${4:-running}
	local filter_mod=""
	[ "${3:-}" = bad ] && image=""
	if [ "$with_filter" = yes ]; then
		filter_mod=$(printf ',"%s": {"version": "1.0", "type": "docker", "status": "running",
          "restartPolicy": "on-failure", "startupOrder": 2,
          "env": {"TemperatureThreshold": {"value": "%s"}},
          "settings": {"image": "%s", "createOptions": "{\\"HostConfig\\":{\\"Memory\\":33554432}}"}}' \
			"$filter" "$threshold" "$filter_img")
	fi
	local settings="\"image\": \"$image\", "
	[ "${3:-}" = bad ] && settings=""
	cat >"$tmp/deployment.json.new" <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"registryCredentials": {
      "test": {"username": "$PERCH_REGISTRY_USER", "password": "$password", "address": "$PERCH_REGISTRY"}}}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "x"}},
                      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                  "settings": {"image": "x"}}},
    "modules": {
      "$stalled": {"version": "1.0", "type": "docker", "restartPolicy": "always", "startupOrder": 0,
        "settings": {"image": "127.0.0.1:$stall_port/perch/never:1"}},
      "$sensor": {"version": "1.0", "type": "docker", "status": "$sstatus", "restartPolicy": "always",
        "startupOrder": 1, "env": {"SendInterval": {"value": "1"}, "MessageCount": {"value": "-1"}},
        "settings": {${settings}"createOptions": ""}}$filter_mod
    }}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {
    "sensorToFilter": "FROM /messages/modules/$sensor/outputs/temperatureOutput INTO BrokeredEndpoint(\\"/modules/$filter/inputs/input1\\")",
    "alertsUpstream": "FROM /messages/modules/$filter/outputs/alerts INTO \$upstream"}}}
}}
JSON
	mv "$tmp/deployment.json.new" "$tmp/deployment.json"
}

status_json() { timeout 15 "$agent_bin" status --config "$tmp/config.yaml" --data-dir "$tmp/agent" --json; }

# mod_field MODULE KEY: a field of the module's report.
mod_field() {
	status_json | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); m=r["modules"].get(sys.argv[1]); print("" if m is None else m[sys.argv[2]])' "$1" "$2"
}

both_running() {
	[ "$(mod_field "$sensor" runtimeStatus)" = running ] && [ "$(mod_field "$filter" runtimeStatus)" = running ]
}
cid() { docker inspect -f '{{.Id}}' "$1" 2>/dev/null; }

start_agent() { # LOG [ARGS...]
	local log=$1
	shift
	"$agent_bin" --config "$tmp/config.yaml" --data-dir "$tmp/agent" --hub "$hub_bin" "$@" >"$log" 2>&1 &
	agent_pid=$!
}

# --- deploy -----------------------------------------------------------------------
manifest 25
t0=$SECONDS
start_agent "$tmp/agent1.log" --manifest "$tmp/deployment.json"
wait_for 90 "both modules running per perch-agent status" both_running
ok "deployed: both modules running per 'perch-agent status --json' after $((SECONDS - t0))s (pulled with credentials)"
d=$(mod_field "$stalled" statusDescription)
[[ $d == pulling* ]] || fail "$stalled is not reported pulling: $d"
ok "$stalled (startupOrder 0) still pulling from a registry that never answers: '$d'; it delayed nothing"
grep -q "perch-hub accepts connections on port $hub_port" "$tmp/agent1.log" || fail "the agent did not wait for its hub"
[ "$(status_json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["systemModules"]["edgeHub"]["runtimeStatus"])')" = running ] ||
	fail "edgeHub is not reported running"
ok "perch-hub started by the agent and accepting on port $hub_port before the modules"

for m in "$sensor" "$filter"; do
	lab=$(docker inspect -f '{{index .Config.Labels "perch.owner"}} {{index .Config.Labels "perch.module"}} {{index .Config.Labels "perch.hash"}}' "$m")
	read -r owner module hash <<<"$lab"
	[ "$owner" = perch-agent ] && [ "$module" = "$m" ] && [[ $hash =~ ^[0-9a-f]{64}$ ]] || fail "$m labels: $lab"
	docker inspect "$m" | grep -qF -e "$password" && fail "the registry password is in docker inspect $m"
	hc=$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config "max-size"}} {{index .HostConfig.LogConfig.Config "max-file"}} {{json .HostConfig.ExtraHosts}} {{.HostConfig.NetworkMode}}' "$m")
	[ "$hc" = "no json-file 10m 3 [\"perch-hub:host-gateway\"] $net" ] || fail "$m host config: $hc"
	env=$(docker inspect -f '{{json .Config.Env}}' "$m")
	for e in "IOTEDGE_DEVICEID=agent-test-$$" "IOTEDGE_MODULEID=$m" PERCH_HUB_HOST=perch-hub "PERCH_HUB_PORT=$hub_port"; do
		grep -qF "\"$e\"" <<<"$env" || fail "$m env lacks $e: $env"
	done
	ok "$m: labels owner/module/hash, no Docker restart policy, json-file 10m x3, perch-hub:host-gateway, network $net, identity env, no password"
done
[ "$(docker inspect -f '{{.HostConfig.Memory}}' "$filter")" = 33554432 ] || fail "createOptions not applied to $filter"
ok "createOptions merged (filter Memory 32 MiB)"
status_json | grep -qF -e "$password" && fail "password in status"
wait_for 30 "$sensor connected to the agent's hub" bash -c "docker logs $sensor 2>&1 | grep -q 'connected to hub perch-hub:$hub_port'"
ok "$sensor connected to perch-hub:$hub_port"
# The quickstart pipeline through the hub's routes: sensor -> filter input1,
# filter alerts -> $upstream; both modules logged in with tokens signed by
# their workload sockets (the hub has no --allow-anonymous).
routed() { curl -s "http://127.0.0.1:$metrics_port/metrics" | awk -v r="reason=\"$1\"" 'index($0, "perch_hub_routed_total{" r "}") == 1 {print $2}'; }
wait_for 60 "readings routed to $filter's input" bash -c "$(declare -f routed); metrics_port=$metrics_port; [ \"\$(routed module_input)\" -ge 3 ] 2>/dev/null"
wait_for 60 "$filter forwarded alerts upstream" bash -c "$(declare -f routed); metrics_port=$metrics_port; [ \"\$(routed upstream)\" -ge 1 ] 2>/dev/null"
ok "pipeline: $sensor -> route -> $filter input1 ($(routed module_input) readings) -> alerts -> \$upstream ($(routed upstream)), authenticated with workload-signed tokens"

# --- crash ----------------------------------------------------------------------------
old_pid=$(docker inspect -f '{{.State.Pid}}' "$sensor")
t0=$(date +%s%N)
kill -9 "$old_pid"
restarted() {
	[ "$(mod_field "$sensor" restartCount)" = 1 ] && [ "$(mod_field "$sensor" runtimeStatus)" = running ] &&
		[ "$(docker inspect -f '{{.State.Running}} {{.State.Pid}}' "$sensor" | cut -d' ' -f1)" = true ] &&
		[ "$(docker inspect -f '{{.State.Pid}}' "$sensor")" != "$old_pid" ]
}
wait_for 20 "$sensor running again with restartCount 1 after kill -9" restarted
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$(mod_field "$sensor" exitCode)" = 137 ] || fail "exitCode is $(mod_field "$sensor" exitCode), not 137"
ok "kill -9 of $sensor's process: running again, restartCount 1, exitCode 137 (seen by status in ${ms} ms)"

d=$(mod_field "$stalled" statusDescription)
[[ $d == pulling* ]] || fail "$stalled is not reported pulling: $d"
ok "the restart happened while $stalled's pull was still hanging"

# --- the hub dies -------------------------------------------------------------------------
hub_pid=$(pgrep -P "$agent_pid" -x perch-hub) || fail "no perch-hub child of the agent"
kill -9 "$hub_pid"
hub_back() {
	local p
	p=$(pgrep -P "$agent_pid" -x perch-hub) && [ "$p" != "$hub_pid" ] &&
		[ "$(status_json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["systemModules"]["edgeHub"]["runtimeStatus"])')" = running ]
}
wait_for 15 "perch-hub restarted by the agent after kill -9" hub_back
ok "perch-hub killed with -9: restarted by the agent and accepting again"

# --- status: stopped and back -----------------------------------------------------------
sensor_id=$(cid "$sensor")
manifest 25 yes ok stopped
kill -HUP "$agent_pid"
stopped() { [ "$(mod_field "$sensor" runtimeStatus)" = stopped ] && [ "$(docker inspect -f '{{.State.Running}}' "$sensor")" = false ]; }
wait_for 30 "$sensor stopped by status: stopped" stopped
[ "$(cid "$sensor")" = "$sensor_id" ] || fail "$sensor was removed, not stopped"
manifest 25 yes ok running
kill -HUP "$agent_pid"
wait_for 30 "$sensor running again after status: running" both_running
[ "$(cid "$sensor")" = "$sensor_id" ] || fail "$sensor was recreated"
ok "status: stopped stopped $sensor (container kept); status: running started the same container"

# --- change one module -------------------------------------------------------------------
sensor_id=$(cid "$sensor")
filter_id=$(cid "$filter")
manifest 30
kill -HUP "$agent_pid"
changed() { [ "$(cid "$filter")" != "$filter_id" ] && [ "$(mod_field "$filter" runtimeStatus)" = running ]; }
wait_for 30 "$filter recreated after its env changed" changed
[ "$(cid "$sensor")" = "$sensor_id" ] || fail "$sensor was recreated too"
docker inspect -f '{{json .Config.Env}}' "$filter" | grep -qF '"TemperatureThreshold=30"' || fail "new env not applied"
ok "env of $filter changed (SIGHUP): only $filter recreated, $sensor kept (id ${sensor_id:0:12})"

# --- remove a module (file change, no signal) ------------------------------------------------
sleep 1.1 # a new mtime second for file systems with coarse stamps
manifest 30 no
gone() { ! docker inspect "$filter" >/dev/null 2>&1; }
wait_for 30 "$filter removed after it left the manifest" gone
[ "$(cid "$sensor")" = "$sensor_id" ] || fail "$sensor was recreated"
ok "$filter removed from the manifest (noticed by mtime): container removed, $sensor untouched"

# --- bad manifest ---------------------------------------------------------------------------
cp "$tmp/deployment.json" "$tmp/good.json"
manifest 30 no bad
kill -HUP "$agent_pid"
refused() { [ "$(status_json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["lastDesiredStatus"]["code"])')" = 400 ]; }
wait_for 20 "bad manifest reported as lastDesiredStatus 400" refused
path="modulesContent.\$edgeAgent.properties.desired.modules.$sensor.settings.image"
grep -qF "$path: missing" "$tmp/agent1.log" || fail "the log does not name $path"
sleep 1
[ "$(cid "$sensor")" = "$sensor_id" ] && [ "$(docker inspect -f '{{.State.Running}}' "$sensor")" = true ] ||
	fail "$sensor touched by a bad manifest"
ok "bad manifest refused: log names $path, status 400, $sensor untouched"

# --- kill -9 of the agent ----------------------------------------------------------------------
cp "$tmp/good.json" "$tmp/deployment.json"
hub_pid=$(pgrep -P "$agent_pid" -x perch-hub) || fail "no perch-hub child of the agent"
kill -9 "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
agent_pid=
hub_gone() { ! running "$hub_pid"; }
wait_for 10 "perch-hub exits when the agent is killed" hub_gone
start_agent "$tmp/agent1b.log" --manifest "$tmp/deployment.json"
sensor_running() { [ "$(mod_field "$sensor" runtimeStatus)" = running ]; }
wait_for 30 "$sensor running per the restarted agent" sensor_running
sleep 1
[ "$(cid "$sensor")" = "$sensor_id" ] || fail "$sensor recreated after the agent's kill -9"
n=$(docker ps -aq --filter "label=perch.instance=$inst" --filter "label=perch.module=$sensor" | wc -l)
[ "$n" = 1 ] || fail "$n containers for $sensor"
[ "$(mod_field "$sensor" restartCount)" = 1 ] || fail "restartCount lost by kill -9"
ok "agent killed with -9: its hub went with it; restarted, it converged with nothing recreated, restartCount kept"

# --- reboot: agent stopped, containers gone, no manifest ----------------------------------------
stop_agent || fail "the agent did not exit 0 on SIGTERM"
[ "$(docker inspect -f '{{.State.Running}}' "$sensor")" = true ] || fail "modules stopped with the agent"
ok "agent stopped by SIGTERM with exit 0; $sensor keeps running"
docker rm -f "$sensor" >/dev/null
start_agent "$tmp/agent2.log"
back() { [ "$(mod_field "$sensor" runtimeStatus)" = running ] && docker inspect "$sensor" >/dev/null; }
wait_for 60 "stored deployment applied with no manifest" back
[ "$(mod_field "$filter" runtimeStatus)" = "" ] || fail "$filter came back although removed"
[ "$(mod_field "$sensor" restartCount)" = 1 ] || fail "restartCount not kept across agent restarts"
ok "agent restarted with no manifest: stored deployment back ($sensor running, restartCount 1 kept)"
