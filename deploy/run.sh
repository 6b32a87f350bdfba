#!/usr/bin/env bash
# deploy/run.sh — the one command that brings up a Perch device on this machine.
#
#   ./deploy/run.sh        install what is missing, start the Docker engine and
#                          a local registry, build Perch and the sample module
#                          images, and start perch-agent with the sample
#                          deployment (it starts perch-hub, then the modules)
#   ./deploy/run.sh stop   stop the agent, its hub and the sample modules, and
#                          what perch-env.sh started
#   ./deploy/run.sh status show what is running
#   ./deploy/run.sh watch  print every message the modules send (mosquitto_sub
#                          as the demo's module identity `watch`, which a
#                          route gives a copy of every message; Ctrl-C ends)
#
# State lives in PERCH_ENV_DIR (default /var/lib/perch-env); the device's files
# are under $PERCH_ENV_DIR/device. Perch is built in O (default build).
# Running it again is harmless.
#
# The hub accepts only identities: the device and the deployed modules, with
# SAS tokens (the modules get theirs from the agent's workload socket). It
# listens on 127.0.0.1 and on the Docker bridge gateway only (reachable from
# this host and its containers, not from the network): MQTT port 1884
# (PERCH_HUB_MQTT_PORT), WebSocket 8080 (PERCH_HUB_WS_PORT), metrics 9600
# (PERCH_HUB_METRICS_PORT); and, for modules written with the Azure IoT SDKs
# (ModuleClient.fromEnvironment: mqtts to perch-hub:8883, HTTPS and wss to
# perch-hub:443), mqtts 8883 and wss 443 on the gateway, with the server
# certificate the agent makes. PERCH_DEMO_TLS=0 leaves those two out (when
# the ports are taken on this host).
set -euo pipefail
cd "$(dirname "$0")/.."
export PERCH_ENV_DIR=${PERCH_ENV_DIR:-/var/lib/perch-env}
O=${O:-build}
case $O in /*) ;; *) O=$PWD/$O ;; esac
bin=$O/bin
MQTT_PORT=${PERCH_HUB_MQTT_PORT:-1884}
WS_PORT=${PERCH_HUB_WS_PORT:-8080}
METRICS_PORT=${PERCH_HUB_METRICS_PORT:-9600}
DEMO_TLS=${PERCH_DEMO_TLS:-1}
DEVICE=perch-demo
IOTHUB=perch.local
WATCH=watch
INSTANCE=demo
dev=$PERCH_ENV_DIR/device
agent_pid=$dev/perch-agent.pid
cmd=${1:-up}

agent_alive() {
	[ -f "$agent_pid" ] || return 1
	local pid
	pid=$(cat "$agent_pid")
	# A zombie is not alive (its /proc/PID/stat says Z).
	[ -r "/proc/$pid/stat" ] && ! awk '{exit $3 != "Z"}' "/proc/$pid/stat" &&
		grep -q perch-agent "/proc/$pid/cmdline" 2>/dev/null
}

agent_stop() {
	if agent_alive; then
		local pid i
		pid=$(cat "$agent_pid")
		kill -TERM "$pid"
		for i in $(seq 1 100); do
			agent_alive || break
			sleep 0.1
		done
		agent_alive && { echo "perch-agent (pid $pid) did not stop in 10 s" >&2; return 1; }
		echo "perch-agent and its perch-hub stopped"
	fi
	rm -f "$agent_pid"
	# The agent leaves modules running when it stops (as on a device); here
	# `stop` means the whole demo, so remove the containers it owned.
	if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
		local ids
		ids=$(docker ps -aq --filter label=perch.owner=perch-agent --filter "label=perch.instance=$INSTANCE")
		[ -z "$ids" ] || { docker rm -f $ids >/dev/null && echo "sample modules removed"; }
	fi
}

case "$cmd" in
stop | down)
	agent_stop
	./deploy/perch-env.sh down
	exit 0
	;;
status)
	if agent_alive; then
		"$bin/perch-agent" status --config "$dev/config.yaml"
	else
		echo "perch-agent: not running"
	fi
	./deploy/perch-env.sh status
	exit 0
	;;
watch)
	agent_alive || { echo "perch-agent is not running: ./deploy/run.sh first" >&2; exit 1; }
	# A SAS token of the module identity $WATCH, signed with its key: derived
	# from the device key (HMAC-SHA256(device key, module id)), valid 1 h.
	token=$(/usr/bin/python3 - "$dev/device.key" "$IOTHUB/devices/$DEVICE/modules/$WATCH" "$WATCH" <<'PY'
import base64, hashlib, hmac, sys, time, urllib.parse
keyfile, resource, module = sys.argv[1:4]
key = hmac.new(base64.b64decode(open(keyfile).read().strip()), module.encode(), hashlib.sha256).digest()
se = int(time.time()) + 3600
sr = urllib.parse.quote(resource, safe="")
sig = base64.b64encode(hmac.new(key, f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
print(f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}")
PY
	)
	echo "messages routed to $DEVICE/$WATCH (input 'all'); Ctrl-C ends" >&2
	exec mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -V mqttv311 -i "$DEVICE/$WATCH" \
		-u "$IOTHUB/$DEVICE/$WATCH/?api-version=2019-01-30" -P "$token" \
		-t "devices/$DEVICE/modules/$WATCH/#" -q 1 -v
	;;
up) ;;
*)
	echo "usage: $0 [up|stop|status|watch]" >&2
	exit 2
	;;
esac

./deploy/install-deps.sh
./deploy/perch-env.sh up
eval "$(./deploy/perch-env.sh env)"
echo "building Perch..."
make -j"$(nproc)" O="$O" all >/dev/null
echo "building and pushing the sample module images..."
O=$O ./deploy/images.sh >/dev/null

# The device: a config for the agent (which starts the hub) and the sample
# deployment with this registry's address and credentials (mode 0600: it holds
# the registry password, as an IoT Edge deployment does).
mkdir -p "$dev/agent" "$dev/hub"
# Modules reach the host as perch-hub through Docker's host-gateway: the
# default bridge's address (docker0's, when IPAM does not name a gateway).
gateway=$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}' 2>/dev/null || true)
[ -n "$gateway" ] || gateway=$(ip -4 -o addr show docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
# No allow_anonymous: every client is an identity. The agent gives the hub
# its server certificate (hub.tls.cert/key) for the TLS listeners. The hub
# reads the hub: section of the same file (the agent passes --config on),
# and so does the perch CLI, to find the hub.
listen=("mqtt://127.0.0.1:$MQTT_PORT" "ws://127.0.0.1:$WS_PORT")
if [ -n "$gateway" ]; then
	listen+=("mqtt://$gateway:$MQTT_PORT")
	[ "$DEMO_TLS" = 0 ] || listen+=("mqtts://$gateway:8883" "wss://$gateway:443")
fi
hub_listen=$(printf '"%s", ' "${listen[@]}")
hub_listen=${hub_listen%, }
umask 077
cat >"$dev/config.yaml" <<YAML
# Written by deploy/run.sh for the demo device.
device:
  id: $DEVICE
  iothub_hostname: $IOTHUB
  key_file: $dev/device.key
  certs_dir: $dev/certs
  hub_deployment: $dev/hub-deployment.json
hub:
  listen: [$hub_listen]
  data_dir: $dev/hub
  metrics: 127.0.0.1:$METRICS_PORT
agent:
  instance: $INSTANCE
  data_dir: $dev/agent
  manifest: $dev/deployment.json
  hub:
    port: $MQTT_PORT
YAML
# Besides the sample: the module identity `watch` (status stopped: nothing
# runs; `./deploy/run.sh watch` logs in as it) and a route that gives it a
# copy of every message, kept at most 60 s while nobody watches.
/usr/bin/python3 - deploy/sample-deployment.json "$PERCH_REGISTRY" "$PERCH_REGISTRY_USER" \
	"$PERCH_REGISTRY_PASSWORD_FILE" "$DEVICE" "$WATCH" >"$dev/deployment.json" <<'PY'
import json, sys
template, registry, user, pwfile, device, watch = sys.argv[1:7]
password = open(pwfile).read().strip()
text = open(template).read()
# Substitute inside JSON strings, escaping what JSON needs.
for key, value in (("@REGISTRY_PASSWORD@", password), ("@REGISTRY_USER@", user),
                   ("@REGISTRY@", registry), ("@DEVICE@", device)):
    text = text.replace(key, json.dumps(value)[1:-1])
doc = json.loads(text)
agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
agent["modules"][watch] = {
    "version": "1.0", "type": "docker", "status": "stopped", "restartPolicy": "never",
    "settings": {"image": agent["modules"]["filter"]["settings"]["image"], "createOptions": "{}"}}
doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["toWatch"] = {
    "route": 'FROM /messages/* INTO BrokeredEndpoint("/modules/%s/inputs/all")' % watch,
    "priority": 9, "timeToLiveSecs": 60}
json.dump(doc, sys.stdout, indent=2)
sys.stdout.write("\n")
PY
umask 022

if agent_alive; then
	echo "perch-agent already running (pid $(cat "$agent_pid")): reloading the deployment"
	kill -HUP "$(cat "$agent_pid")"
else
	setsid "$bin/perch-agent" --config "$dev/config.yaml" --hub "$bin/perch-hub" \
		</dev/null >>"$dev/perch-agent.log" 2>&1 &
	echo $! >"$agent_pid"
fi

# Wait (bounded) for both modules to run.
echo "waiting for the modules..."
ok=0
for _ in $(seq 1 60); do
	agent_alive || break
	if "$bin/perch-agent" status --config "$dev/config.yaml" --json 2>/dev/null |
		/usr/bin/python3 -c 'import json,sys
r = json.load(sys.stdin)
m = r.get("modules", {})
sys.exit(0 if all(m.get(n, {}).get("runtimeStatus") == "running" for n in ("tempSensor", "filter")) else 1)'; then
		ok=1
		break
	fi
	sleep 1
done
if ! agent_alive || [ $ok = 0 ]; then
	echo "the device did not come up; the end of the agent's log:" >&2
	tail -n 15 "$dev/perch-agent.log" >&2
	exit 1
fi
"$bin/perch-agent" status --config "$dev/config.yaml"

watch_cmd=./deploy/run.sh
[ "$PERCH_ENV_DIR" = /var/lib/perch-env ] || watch_cmd="PERCH_ENV_DIR=$PERCH_ENV_DIR $watch_cmd"
[ "$MQTT_PORT" = 1884 ] || watch_cmd="PERCH_HUB_MQTT_PORT=$MQTT_PORT $watch_cmd"
watch_cmd="$watch_cmd watch"
cat <<EOF

Perch is up: a device "$DEVICE" running the sample deployment.
  modules          tempSensor -> filter (readings above 25 become alerts)
  agent status     $bin/perch-agent status --config $dev/config.yaml [--json]
  agent log        $dev/perch-agent.log
  watch messages   $watch_cmd
                   (MQTT as the module identity $WATCH, which a route copies every
                   message to; or docker logs -f tempSensor / filter)
  hub metrics      curl -s http://127.0.0.1:$METRICS_PORT/metrics
  deployment       $dev/deployment.json (edit it: the agent applies changes at once)
  local registry   $PERCH_REGISTRY (user $PERCH_REGISTRY_USER, password in $PERCH_REGISTRY_PASSWORD_FILE)

Stop everything with: ./deploy/run.sh stop
EOF
