#!/usr/bin/env bash
# deploy/run.sh — the one command that brings up Perch on this machine.
#
#   ./deploy/run.sh        install what is missing, start the environment
#                          (Docker engine, local registry), build Perch, and
#                          start what exists of it
#   ./deploy/run.sh stop   stop what `run.sh` started
#   ./deploy/run.sh status show what is running
#
# State lives in PERCH_ENV_DIR (default /var/lib/perch-env). Running it again is
# harmless. It says plainly what exists and what does not yet: perch-hub runs
# (on loopback, anonymous clients accepted, since device identities are not
# written yet); perch-agent and the sample deployment come with the agent.
#
# Ports (override with PERCH_HUB_MQTT_PORT, PERCH_HUB_WS_PORT,
# PERCH_HUB_METRICS_PORT): MQTT 1884, WebSocket 8080, metrics 9600 — all on
# 127.0.0.1, out of the way of a system mosquitto on 1883.
set -euo pipefail
cd "$(dirname "$0")/.."
export PERCH_ENV_DIR=${PERCH_ENV_DIR:-/var/lib/perch-env}
MQTT_PORT=${PERCH_HUB_MQTT_PORT:-1884}
WS_PORT=${PERCH_HUB_WS_PORT:-8080}
METRICS_PORT=${PERCH_HUB_METRICS_PORT:-9600}
hub_dir=$PERCH_ENV_DIR/hub
hub_pid=$hub_dir/perch-hub.pid
cmd=${1:-up}

hub_alive() {
	[ -f "$hub_pid" ] || return 1
	local pid
	pid=$(cat "$hub_pid")
	# A zombie is not alive (its /proc/PID/stat says Z).
	[ -r "/proc/$pid/stat" ] && ! awk '{exit $3 != "Z"}' "/proc/$pid/stat" &&
		grep -q perch-hub "/proc/$pid/cmdline" 2>/dev/null
}

hub_stop() {
	hub_alive || { rm -f "$hub_pid"; return 0; }
	local pid i
	pid=$(cat "$hub_pid")
	kill -TERM "$pid"
	for i in $(seq 1 100); do
		hub_alive || break
		sleep 0.1
	done
	hub_alive && { echo "perch-hub (pid $pid) did not stop in 10 s" >&2; return 1; }
	rm -f "$hub_pid"
	echo "perch-hub stopped"
}

case "$cmd" in
stop | down)
	hub_stop
	./deploy/perch-env.sh down
	exit 0
	;;
status)
	if hub_alive; then echo "perch-hub: running (pid $(cat "$hub_pid"))"; else echo "perch-hub: not running"; fi
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
make -j"$(nproc)" all >/dev/null

mkdir -p "$hub_dir/data"
if hub_alive; then
	echo "perch-hub already running (pid $(cat "$hub_pid"))"
else
	setsid build/bin/perch-hub --allow-anonymous \
		--listen "mqtt://127.0.0.1:$MQTT_PORT" --listen "ws://127.0.0.1:$WS_PORT" \
		--metrics "127.0.0.1:$METRICS_PORT" --data-dir "$hub_dir/data" \
		</dev/null >>"$hub_dir/perch-hub.log" 2>&1 &
	echo $! >"$hub_pid"
	for _ in $(seq 1 50); do
		grep -q "perch-hub ready" "$hub_dir/perch-hub.log" 2>/dev/null && break
		hub_alive || break
		sleep 0.1
	done
	if ! hub_alive; then
		echo "perch-hub did not start; the end of its log:" >&2
		tail -n 5 "$hub_dir/perch-hub.log" >&2
		exit 1
	fi
fi

cat <<EOF

Perch is up:
  perch-hub        mqtt://127.0.0.1:$MQTT_PORT and ws://127.0.0.1:$WS_PORT (anonymous, loopback only)
  metrics          curl -s http://127.0.0.1:$METRICS_PORT/metrics
  hub log          $hub_dir/perch-hub.log
  store            $hub_dir/data/hub.db
  Docker engine    ${DOCKER_HOST:-unix:///var/run/docker.sock}
  local registry   $PERCH_REGISTRY (user $PERCH_REGISTRY_USER, password in $PERCH_REGISTRY_PASSWORD_FILE)

Try it:
  mosquitto_sub -p $MQTT_PORT -t 'demo/#' -q 1 -v &
  mosquitto_pub -p $MQTT_PORT -t demo/hello -m 'hello, perch' -q 1

Not yet: perch-agent (modules from a deployment manifest) is not written in this
version, so no sample deployment runs. Stop everything with: ./deploy/run.sh stop
EOF
