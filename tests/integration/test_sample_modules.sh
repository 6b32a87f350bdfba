#!/usr/bin/env bash
# tests/integration/test_sample_modules.sh — the sample modules end to end:
# deploy/images.sh builds both FROM scratch images and pushes them to a
# private registry (twice: the second run pushes the same digests); the
# containers are started on a user-defined bridge network BEFORE the hub
# exists (they must retry), then perch-hub starts on the host; mosquitto_sub
# on the host sees the sensor's readings (well-formed JSON, IoT Hub output
# topic with $.on=temperatureOutput) and the filter's alerts (machine
# temperature above the threshold, MessageType=Alert, $.on=alerts); `docker
# stop` ends each module at once with exit code 0. Removes all it created.
#
# Run by tests/run.sh (PERCH_ROOT = repo root, O = build dir);
# alone: bash tests/integration/test_sample_modules.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

root=${PERCH_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root"
O=${O:-build}
export O
hub_bin=$O/bin/perch-hub
[ -x "$hub_bin" ] || { echo "FAIL - $hub_bin is missing: build first (make O=$O)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-modules.XXXXXX")
start=$SECONDS
py=/usr/bin/python3
threshold=22
tag=test-$$





unset PERCH_DOCKER_SOCK PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG PERCH_IMAGE_TAG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60 PERCH_IMAGE_TAG=$tag
net=perch-test-modules-$$
sensor=perch-test-sensor-$$
filter=perch-test-filter-$$
device=test-device-$$
hub_pid=
sub_pids=()
images=()

cleanup() {
	local rc=$?
	set +e
	for p in "${sub_pids[@]}"; do kill "$p" 2>/dev/null; done
	if [ -n "$hub_pid" ]; then
		kill "$hub_pid" 2>/dev/null
		for ((i = 0; i < 40; i++)); do running "$hub_pid" || break; sleep 0.25; done
		running "$hub_pid" && kill -KILL "$hub_pid" 2>/dev/null
	fi
	if [ $rc -ne 0 ]; then
		for c in "$sensor" "$filter"; do
			echo "--- docker logs $c (last 15 lines)"
			timeout 20 docker logs "$c" 2>&1 | tail -n 15 | cut -c1-200
		done
		[ -f "$tmp/hub.log" ] && { echo "--- hub log"; tail -n 20 "$tmp/hub.log"; }
	fi
	timeout 60 docker rm -f "$sensor" "$filter" >/dev/null 2>&1
	timeout 60 docker network rm "$net" >/dev/null 2>&1
	for i in "${images[@]}"; do timeout 60 docker rmi -f "$i" >/dev/null 2>&1; done
	timeout 120 bash deploy/perch-env.sh down >/dev/null 2>&1
	rm -rf "$tmp"
	if [ $rc -eq 0 ]; then
		echo "test_sample_modules: passed in $((SECONDS - start))s"
	else
		echo "test_sample_modules: FAILED (exit $rc)"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

echo "# state dir $PERCH_ENV_DIR, registry port $PERCH_REGISTRY_PORT, tag $tag"

# --- images -------------------------------------------------------------------
timeout 180 bash deploy/perch-env.sh up >"$tmp/env-up.log" 2>&1 ||
	{ tail "$tmp/env-up.log"; fail "perch-env.sh up failed"; }
eval "$(bash deploy/perch-env.sh env)"
sensor_img=$PERCH_REGISTRY/perch/simulated-temperature-sensor:$tag
filter_img=$PERCH_REGISTRY/perch/filter:$tag
images=("$sensor_img" "$filter_img")

timeout 300 bash deploy/images.sh >"$tmp/images1.out" 2>"$tmp/images1.err" ||
	{ tail -n 20 "$tmp/images1.err"; fail "deploy/images.sh failed"; }
for i in "$sensor_img" "$filter_img"; do
	grep -q "^pushed $i sha256:[0-9a-f]\{64\}$" "$tmp/images1.out" ||
		fail "images.sh did not report pushing $i: $(cat "$tmp/images1.out")"
done
ok "images.sh built and pushed both images: $(tr '\n' ';' <"$tmp/images1.out")"
if grep -i -e warning -e error "$tmp/images1.err"; then fail "images.sh printed warnings or errors"; fi
ok "images.sh compiled without warnings (strict flags, -static)"

timeout 300 bash deploy/images.sh >"$tmp/images2.out" 2>"$tmp/images2.err" ||
	{ tail -n 20 "$tmp/images2.err"; fail "second deploy/images.sh failed"; }
cmp -s "$tmp/images1.out" "$tmp/images2.out" ||
	fail "second run pushed other digests: $(cat "$tmp/images2.out")"
ok "images.sh again: same digests pushed (idempotent)"

for i in "$sensor_img" "$filter_img"; do
	info=$(docker image inspect -f '{{len .RootFS.Layers}} {{.Size}} {{.Config.User}} {{json .Config.Entrypoint}}' "$i")
	read -r layers size user entry <<<"$info"
	[ "$layers" = 1 ] || fail "$i has $layers layers, not 1 (FROM scratch + one binary)"
	[ "$user" = 65534:65534 ] || fail "$i runs as '$user', not 65534:65534"
	[ "$size" -lt 4000000 ] || fail "$i is $size bytes"
	ok "$i: one layer, $size bytes, user $user, entrypoint $entry"
done
# Run what the registry holds, not the local build.
timeout 60 docker rmi "$sensor_img" "$filter_img" >/dev/null || fail "docker rmi failed"
for i in "$sensor_img" "$filter_img"; do
	timeout 120 docker pull -q "$i" >/dev/null || fail "docker pull $i from the registry failed"
done
ok "both images pulled back from the registry with the login"

# --- containers first, hub later -------------------------------------------------
hub_port=$(free_port)
# host-gateway is the default bridge's gateway (docker0's address unless the
# engine says otherwise): listen there, and on loopback for mosquitto_sub,
# rather than on every interface, when it is known.
gw=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' 2>/dev/null || true)
if [ -z "$gw" ]; then
	gw=$(ip -4 -o addr show docker0 2>/dev/null | sed -n 's|.* inet \([0-9.]*\)/.*|\1|p' | head -1)
fi
if [[ $gw =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
	# (Two ports: perch-hub cannot yet listen on one port at two addresses.)
	local_port=$(free_port)
	listen=(--listen "mqtt://127.0.0.1:$local_port" --listen "mqtt://$gw:$hub_port")
else
	local_port=$hub_port
	listen=(--listen "mqtt://0.0.0.0:$hub_port")
fi

timeout 60 docker network create "$net" >/dev/null || fail "docker network create failed"
common=(--network "$net" --add-host perch-hub:host-gateway -e "PERCH_HUB_PORT=$hub_port"
	-e "IOTEDGE_DEVICEID=$device")
timeout 60 docker run -d --name "$filter" "${common[@]}" -e IOTEDGE_MODULEID=filter \
	-e "TemperatureThreshold=$threshold" \
	-e "PERCH_FILTER_SOURCE_TOPIC=devices/$device/modules/tempSensor/messages/events/#" \
	"$filter_img" >/dev/null || fail "docker run filter failed"
timeout 60 docker run -d --name "$sensor" "${common[@]}" -e IOTEDGE_MODULEID=tempSensor \
	-e SendInterval=0.2 -e MessageCount=-1 "$sensor_img" >/dev/null || fail "docker run sensor failed"
ok "containers started on network $net (no hub yet)"

for ((i = 0; i < 40; i++)); do
	grep -q "retrying in" <<<"$(docker logs "$sensor" 2>&1)" && grep -q "retrying in" <<<"$(docker logs "$filter" 2>&1)" && break
	sleep 0.25
done
for c in "$sensor" "$filter"; do
	grep -q "retrying in" <<<"$(docker logs "$c" 2>&1)" || fail "$c did not report retrying without a hub"
	[ "$(docker inspect -f '{{.State.Running}}' "$c")" = true ] || fail "$c exited without a hub"
done
ok "without a hub both modules keep running and retry: $(grep -m1 'retrying in' <<<"$(docker logs "$sensor" 2>&1)" | cut -d' ' -f3-)"

"$hub_bin" --allow-anonymous "${listen[@]}" --data-dir "$tmp/hub" --set hub.sync=off \
	>"$tmp/hub.log" 2>&1 &
hub_pid=$!
for ((i = 0; i < 40; i++)); do grep -q "perch-hub ready" "$tmp/hub.log" && break; sleep 0.25; done
grep -q "perch-hub ready" "$tmp/hub.log" || fail "perch-hub did not start: $(tail -3 "$tmp/hub.log")"
ok "$(grep -o 'perch-hub ready.*' "$tmp/hub.log")"

timeout 40 mosquitto_sub -h 127.0.0.1 -p "$local_port" -q 1 -v -C 5 -W 35 \
	-t "devices/$device/modules/tempSensor/messages/events/#" >"$tmp/readings" 2>&1 &
sub_pids+=($!)
timeout 40 mosquitto_sub -h 127.0.0.1 -p "$local_port" -q 1 -v -C 3 -W 35 \
	-t "devices/$device/modules/filter/messages/events/#" >"$tmp/alerts" 2>&1 &
sub_pids+=($!)
wait "${sub_pids[0]}" || fail "no 5 readings within 35s: $(cat "$tmp/readings")"
wait "${sub_pids[1]}" || fail "no 3 alerts within 35s: $(cat "$tmp/alerts")"
sub_pids=()

for c in "$sensor" "$filter"; do
	grep -q "connected to hub perch-hub:$hub_port" <<<"$(docker logs "$c" 2>&1)" ||
		fail "$c did not log its connection to perch-hub:$hub_port"
done
ok "both modules connected to perch-hub:$hub_port once it was up"

# check_messages FILE KIND: each line is "TOPIC BODY"; KIND is reading or alert.
check_messages() {
	"$py" - "$1" "$2" "$device" "$threshold" <<'EOF'
import json, re, sys
from urllib.parse import unquote
path, kind, device, threshold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
module, output = ("tempSensor", "temperatureOutput") if kind == "reading" else ("filter", "alerts")
lines = [l for l in open(path).read().splitlines() if l.strip()]
assert lines, "no messages"
for line in lines:
    topic, body = line.split(" ", 1)
    prefix = f"devices/{device}/modules/{module}/messages/events/"
    assert topic.startswith(prefix), f"topic {topic!r} is not a {module} output"
    props = dict(p.split("=", 1) for p in topic[len(prefix):].split("&") if p)
    props = {unquote(k): unquote(v) for k, v in props.items()}
    assert props.get("$.on") == output, f"$.on is {props.get('$.on')!r} in {topic!r}"
    assert props.get("$.ct") == "application/json" and props.get("$.ce") == "utf-8", topic
    m = json.loads(body)
    assert set(m) == {"machine", "ambient", "timeCreated"}, f"keys {sorted(m)}"
    assert set(m["machine"]) == {"temperature", "pressure"}, m
    assert set(m["ambient"]) == {"temperature", "humidity"}, m
    for v in (m["machine"]["temperature"], m["machine"]["pressure"], m["ambient"]["temperature"]):
        assert isinstance(v, (int, float)), m
    assert isinstance(m["ambient"]["humidity"], int) and 24 <= m["ambient"]["humidity"] < 27, m
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", m["timeCreated"]), m
    if kind == "alert":
        assert props.get("MessageType") == "Alert", f"no MessageType=Alert in {topic!r}"
        assert m["machine"]["temperature"] > threshold, f"{m['machine']['temperature']} <= {threshold}"
print(f"{len(lines)} {kind}s, machine temperatures "
      + ", ".join("%.2f" % json.loads(l.split(' ', 1)[1])['machine']['temperature'] for l in lines))
EOF
}
out=$(check_messages "$tmp/readings" reading) || fail "readings: $out; $(head -2 "$tmp/readings")"
ok "sensor readings are well-formed JSON on its output topic: $out"
out=$(check_messages "$tmp/alerts" alert) || fail "alerts: $out; $(head -2 "$tmp/alerts")"
ok "filter alerts are above $threshold with MessageType=Alert on output alerts: $out"

# --- stopping ---------------------------------------------------------------------------
for c in "$sensor" "$filter"; do
	t0=$(date +%s%N)
	timeout 30 docker stop -t 10 "$c" >/dev/null || fail "docker stop $c failed"
	ms=$((($(date +%s%N) - t0) / 1000000))
	code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
	[ "$code" = 0 ] || fail "$c exited with $code after docker stop"
	[ "$ms" -lt 5000 ] || fail "$c took ${ms} ms to stop (SIGTERM ignored?)"
	grep -q "stopping:" <<<"$(docker logs "$c" 2>&1)" || fail "$c did not log its stop"
	ok "docker stop $c: exit 0 in ${ms} ms ($(grep -o 'stopping:.*' <<<"$(docker logs "$c" 2>&1)"))"
done
