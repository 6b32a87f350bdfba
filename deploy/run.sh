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
#
# State lives in PERCH_ENV_DIR (default /var/lib/perch-env); the device's files
# are under $PERCH_ENV_DIR/device. Running it again is harmless.
#
# Until device and module identities exist, the hub accepts anonymous clients;
# so it listens on 127.0.0.1 and on the Docker bridge gateway only (reachable
# from this host and its containers, not from the network). MQTT port 1884
# (PERCH_HUB_MQTT_PORT), WebSocket 8080 (PERCH_HUB_WS_PORT), metrics 9600
# (PERCH_HUB_METRICS_PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
export PERCH_ENV_DIR=${PERCH_ENV_DIR:-/var/lib/perch-env}
MQTT_PORT=${PERCH_HUB_MQTT_PORT:-1884}
WS_PORT=${PERCH_HUB_WS_PORT:-8080}
METRICS_PORT=${PERCH_HUB_METRICS_PORT:-9600}
DEVICE=perch-demo
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
		build/bin/perch-agent status --config "$dev/config.yaml"
	else
		echo "perch-agent: not running"
	fi
	./deploy/perch-env.sh status
	exit 0
	;;
up) ;;
*)
	echo "usage: $0 [up|stop|status]" >&2
	exit 2
	;;
esac

./deploy/install-deps.sh
./deploy/perch-env.sh up
eval "$(./deploy/perch-env.sh env)"
echo "building Perch..."
make -j"$(nproc)" all >/dev/null
echo "building and pushing the sample module images..."
O=build ./deploy/images.sh >/dev/null

# The device: a config for the agent (which starts the hub) and the sample
# deployment with this registry's address and credentials (mode 0600: it holds
# the registry password, as an IoT Edge deployment does).
mkdir -p "$dev/agent" "$dev/hub"
# Modules reach the host as perch-hub through Docker's host-gateway: the
# default bridge's address (docker0's, when IPAM does not name a gateway).
gateway=$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}' 2>/dev/null || true)
[ -n "$gateway" ] || gateway=$(ip -4 -o addr show docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
listeners="\"mqtt://127.0.0.1:$MQTT_PORT\", \"ws://127.0.0.1:$WS_PORT\""
[ -n "$gateway" ] && listeners="$listeners, \"mqtt://$gateway:$MQTT_PORT\""
umask 077
cat >"$dev/config.yaml" <<YAML
# Written by deploy/run.sh for the demo device.
device:
  id: $DEVICE
  key_file: $dev/device.key
  certs_dir: $dev/certs
  hub_deployment: $dev/hub-deployment.json
agent:
  instance: $INSTANCE
  data_dir: $dev/agent
  manifest: $dev/deployment.json
  hub:
    port: $MQTT_PORT
    args: [--allow-anonymous, --data-dir, "$dev/hub", --metrics, "127.0.0.1:$METRICS_PORT",
           --listen, "mqtt://127.0.0.1:$MQTT_PORT", --listen, "ws://127.0.0.1:$WS_PORT"$([ -n "$gateway" ] && echo ", --listen, \"mqtt://$gateway:$MQTT_PORT\"")]
YAML
/usr/bin/python3 - deploy/sample-deployment.json "$PERCH_REGISTRY" "$PERCH_REGISTRY_USER" \
	"$PERCH_REGISTRY_PASSWORD_FILE" "$DEVICE" >"$dev/deployment.json" <<'PY'
import json, sys
template, registry, user, pwfile, device = sys.argv[1:6]
password = open(pwfile).read().strip()
text = open(template).read()
# Substitute inside JSON strings, escaping what JSON needs.
for key, value in (("@REGISTRY_PASSWORD@", password), ("@REGISTRY_USER@", user),
                   ("@REGISTRY@", registry), ("@DEVICE@", device)):
    text = text.replace(key, json.dumps(value)[1:-1])
json.loads(text)
sys.stdout.write(text)
PY
umask 022

if agent_alive; then
	echo "perch-agent already running (pid $(cat "$agent_pid")): reloading the deployment"
	kill -HUP "$(cat "$agent_pid")"
else
	setsid build/bin/perch-agent --config "$dev/config.yaml" --hub "$PWD/build/bin/perch-hub" \
		</dev/null >>"$dev/perch-agent.log" 2>&1 &
	echo $! >"$agent_pid"
fi

# Wait (bounded) for both modules to run.
echo "waiting for the modules..."
ok=0
for _ in $(seq 1 60); do
	agent_alive || break
	if build/bin/perch-agent status --config "$dev/config.yaml" --json 2>/dev/null |
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
build/bin/perch-agent status --config "$dev/config.yaml"

cat <<EOF

Perch is up: a device "$DEVICE" running the sample deployment.
  modules          tempSensor -> filter (readings above 25 become alerts)
  agent status     build/bin/perch-agent status --config $dev/config.yaml [--json]
  agent log        $dev/perch-agent.log
  module logs      docker logs -f tempSensor; docker logs -f filter
  watch messages   mosquitto_sub -p $MQTT_PORT -t 'devices/$DEVICE/modules/+/messages/events/#' -v
  hub metrics      curl -s http://127.0.0.1:$METRICS_PORT/metrics
  deployment       $dev/deployment.json (edit it: the agent applies changes at once)
  local registry   $PERCH_REGISTRY (user $PERCH_REGISTRY_USER, password in $PERCH_REGISTRY_PASSWORD_FILE)

Stop everything with: ./deploy/run.sh stop
EOF
