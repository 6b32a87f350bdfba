#!/usr/bin/env bash
# tests/bench/run.sh — perch-hub and Debian's mosquitto side by side, same load
# generator (tests/tools/mqtt_load.c), same transport, one run on this machine.
#
#   tests/bench/run.sh            the full benchmark (make bench), a few minutes
#   tests/bench/run.sh --smoke    one short scenario per transport, ~a second each:
#                                 proves the harness works (CI); fails on any error;
#                                 writes $O/bench/smoke/results.md
#   PERCH_SOAK=1 tests/bench/run.sh   the same scenarios, longer (make soak)
#
# For every scenario — QoS 0 and 1 x (1 to 1, 10 to 10, 100 to 1) x (TCP, WebSocket),
# 256-byte payloads — both brokers are started fresh, paced runs for latency
# alternate between them (PERCH_BENCH_LAT_ROUNDS each), then a saturating
# closed-loop run for throughput against each, and both are stopped. Then each
# broker's resident memory,
# idle and with 1,000 connected clients. It prints a table with both results and
# the ratio hub/mosquitto and writes it as Markdown to $O/bench/results.md (raw
# JSON lines beside it in $O/bench/raw/). It reports; it does not judge: the
# exit status is non-zero only when the harness itself could not run (or, with
# --smoke, when any run had an error).
#
# If $O/bin/perch-hub does not exist, the mosquitto column is still measured and
# the hub's is marked missing.
#
# Environment (all optional):
#   O                       build directory (build)
#   PERCH_SOAK=1            longer runs (30 s throughput, 10 s x 9 rounds latency)
#   PERCH_BENCH_SECONDS     seconds of each throughput run (3)
#   PERCH_BENCH_LAT_SECONDS seconds of each paced latency run (5)
#   PERCH_BENCH_LAT_ROUNDS  paced runs per broker and scenario, alternating between the
#                           brokers; the report gives the median of their p50s and p99s (5; 9 with PERCH_SOAK)
#   PERCH_BENCH_RATE        total messages/s of the paced latency runs (1000)
#   PERCH_BENCH_CLIENTS     idle clients for the memory measurement (1000)
#   PERCH_BENCH_ONLY        regex over scenario names (e.g. 'tcp-q1'), others skipped
#   PERCH_BENCH_BROKERS     brokers to run ("mosquitto hub")
#   PERCH_BENCH_AGENT=0     skip the perch-agent benchmark below
#   PERCH_BENCH_UPSTREAM=0  skip the upstream link benchmark (tests/bench/upstream_bench.py:
#                           a backlog of 100,000 messages drained hub to hub; 2,000 with --smoke)
#
# Then, unless PERCH_BENCH_AGENT=0, tests/bench/agent_bench.sh (with --smoke
# when given): perch-agent against Docker's own restart policy, a deployment
# from nothing, the agent's memory (needs the Docker engine and the registry of
# deploy/perch-env.sh); its tables go to $O/bench/agent.md.
#
# Only loopback; only processes this script started are signalled, by PID.
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
O=${O:-build}
case $O in /*) ;; *) O=$ROOT/$O ;; esac
LOAD=$O/test/tools/mqtt_load
HUB=$O/bin/perch-hub
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
OUT=$O/bench
RAW=$OUT/raw

SMOKE=0
for a in "$@"; do
	case $a in
	--smoke) SMOKE=1 ;;
	-h | --help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//; /^set -u/d'; exit 0 ;;
	*) echo "run.sh: unknown argument $a" >&2; exit 2 ;;
	esac
done

SECS=${PERCH_BENCH_SECONDS:-3}
LAT_SECS=${PERCH_BENCH_LAT_SECONDS:-5}
LAT_ROUNDS=${PERCH_BENCH_LAT_ROUNDS:-5}
RATE=${PERCH_BENCH_RATE:-1000}
CLIENTS=${PERCH_BENCH_CLIENTS:-1000}
ONLY=${PERCH_BENCH_ONLY:-.}
BROKERS=${PERCH_BENCH_BROKERS:-mosquitto hub}
if [ "${PERCH_SOAK:-0}" = 1 ]; then
	SECS=${PERCH_BENCH_SECONDS:-30}
	LAT_SECS=${PERCH_BENCH_LAT_SECONDS:-10}
	LAT_ROUNDS=${PERCH_BENCH_LAT_ROUNDS:-9}
fi
if [ $SMOKE = 1 ]; then
	SECS=1 LAT_SECS=0 CLIENTS=${PERCH_BENCH_CLIENTS:-100}
	OUT=$O/bench/smoke RAW=$OUT/raw # never overwrite a full run's results
fi

for tool in jq ss awk; do
	command -v $tool >/dev/null || { echo "run.sh: needs $tool" >&2; exit 2; }
done
[ -x "$LOAD" ] || { echo "run.sh: $LOAD missing (make O=$O $LOAD)" >&2; exit 2; }

# 1,000 clients need fds in the brokers (they inherit this) and the generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 8192 2>/dev/null || true

mkdir -p "$OUT" "$RAW"
rm -f "$RAW"/*.json "$RAW"/*.log
TMP=$(mktemp -d /tmp/perch-bench.XXXXXX)
STARTED=() # PIDs of brokers this script started and has not yet stopped

cleanup() {
	local p
	for p in "${STARTED[@]}"; do stop_pid "$p"; done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# free_port prints a TCP port nobody listens on (random in 20000-59999).
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		if [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then
			echo $p
			return 0
		fi
	done
	return 1
}

# wait_port PORT PID SECS: until PORT accepts on 127.0.0.1 (or PID died).
wait_port() {
	local i
	for i in $(seq 1 $(($3 * 20))); do
		kill -0 "$2" 2>/dev/null || return 1
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

stop_pid() { # PID: TERM, then KILL after 5 s; forget it
	local p=$1 i n=()
	if kill -0 "$p" 2>/dev/null; then
		kill -TERM "$p" 2>/dev/null
		for i in $(seq 1 100); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.05
		done
		kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	fi
	for i in "${STARTED[@]}"; do [ "$i" = "$p" ] || n+=("$i"); done
	STARTED=("${n[@]}")
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo -1; }

# start_mosquitto TRANSPORT NAME: sets BPID and BPORT (or returns 1).
# One instance per transport, so that a listener we do not measure costs nothing.
# Config choices (the report repeats them): persistence on (mosquitto's own
# kind: a snapshot every autosave_interval, not per message); max_queued_messages 0
# (no limit) because the default 1000 drops silently — the generator bounds
# the backlog itself; max_inflight_messages 64, the generator's window;
# set_tcp_nodelay true, its best case for small messages.
start_mosquitto() {
	local transport=$1 name=$2 dir=$TMP/$2 conf
	mkdir -p "$dir"
	BPORT=$(free_port) || return 1
	conf=$dir/mosquitto.conf
	{
		echo "user root"
		echo "allow_anonymous true"
		echo "persistence true"
		echo "persistence_location $dir/"
		echo "max_queued_messages 0"
		echo "max_inflight_messages 64"
		echo "set_tcp_nodelay true"
		echo "log_dest stderr"
		if [ "$transport" = ws ]; then
			# mosquitto 2.0.11 refuses to start with only websockets listeners
			# ("Unable to start any listening sockets"): an unused TCP one first.
			echo "listener $(free_port) 127.0.0.1"
			echo "listener $BPORT lo" # 127.0.0.1 would bind every interface here
			echo "protocol websockets"
		else
			echo "listener $BPORT 127.0.0.1"
		fi
	} >"$conf"
	(cd "$dir" && exec "$MOSQUITTO" -c "$conf") >"$RAW/$name.log" 2>&1 &
	BPID=$!
	STARTED+=("$BPID")
	if ! wait_port "$BPORT" "$BPID" 10; then
		log "mosquitto ($transport) did not start: $(tail -n 3 "$RAW/$name.log" | tr '\n' ' ')"
		stop_pid "$BPID"
		return 1
	fi
}

# start_hub NAME: sets BPID, BPORT_TCP, BPORT_WS (or returns 1).
start_hub() { # NAME [HUB ARGS...]
	local name=$1 dir=$TMP/$1 i
	shift
	mkdir -p "$dir/data"
	BPORT_TCP=$(free_port) || return 1
	BPORT_WS=$(free_port) || return 1
	"$HUB" --allow-anonymous --listen "mqtt://127.0.0.1:$BPORT_TCP" \
		--listen "ws://127.0.0.1:$BPORT_WS" --data-dir "$dir/data" "$@" >"$RAW/$name.log" 2>&1 &
	BPID=$!
	STARTED+=("$BPID")
	for i in $(seq 1 200); do
		grep -q 'perch-hub ready' "$RAW/$name.log" 2>/dev/null && return 0
		kill -0 "$BPID" 2>/dev/null || break
		sleep 0.05
	done
	log "perch-hub did not become ready: $(tail -n 3 "$RAW/$name.log" | tr '\n' ' ')"
	stop_pid "$BPID"
	return 1
}

# start_broker BROKER TRANSPORT NAME: sets BPID and BPORT.
start_broker() {
	if [ "$1" = hub ]; then
		start_hub "$3" || return 1
		if [ "$2" = ws ]; then BPORT=$BPORT_WS; else BPORT=$BPORT_TCP; fi
	else
		start_mosquitto "$2" "$3"
	fi
}

# run_load NAME PORT TRANSPORT ARGS...: one generator run; its JSON line into
# $RAW/NAME.json (an error object when it produced none).
run_load() {
	local name=$1 port=$2 transport=$3
	shift 3
	timeout 300 "$LOAD" --port "$port" --transport "$transport" --label "$name" "$@" \
		>"$RAW/$name.json.tmp" 2>>"$RAW/$name.gen.log"
	local rc=$?
	if ! grep -q '^{' "$RAW/$name.json.tmp"; then
		echo "{\"label\":\"$name\",\"errors\":1,\"first_error\":\"generator exit $rc, no report\"}" \
			>"$RAW/$name.json.tmp"
	fi
	grep '^{' "$RAW/$name.json.tmp" | head -1 >"$RAW/$name.json"
	rm -f "$RAW/$name.json.tmp"
	tail -n 1 "$RAW/$name.gen.log" >&2
}

layout_args() { # LAYOUT: sets LARGS (generator flags) and PUBS
	case $1 in
	1to1) PUBS=1 LARGS="--layout 1to1" ;;
	pairs) PUBS=10 LARGS="--layout pairs --publishers 10" ;;
	fanin) PUBS=100 LARGS="--layout fanin --publishers 100 --subscribers 1" ;;
	esac
}

have_broker() { # BROKER: is it to be run and runnable?
	case " $BROKERS " in *" $1 "*) ;; *) return 1 ;; esac
	if [ "$1" = hub ]; then [ -x "$HUB" ]; else [ -x "$MOSQUITTO" ]; fi
}

# ---- the scenarios ---------------------------------------------------------
if [ $SMOKE = 1 ]; then
	SCENARIOS="tcp-q1-1to1 ws-q1-1to1"
else
	SCENARIOS=""
	for t in tcp ws; do for q in 0 1 d; do for l in 1to1 pairs fanin; do
		SCENARIOS="$SCENARIOS $t-q$q-$l"
	done; done; done
fi

have_broker hub || log "note: $HUB not built (or not selected): hub column marked missing"
have_broker mosquitto || log "note: mosquitto not found (or not selected): its column marked missing"
MOSQ_WS=1
started_at=$SECONDS
n=0
for s in $SCENARIOS; do
	[[ $s =~ $ONLY ]] || continue
	IFS=- read -r transport qos layout <<<"$s"
	q=${qos#q}
	PERSIST= QL=$q
	[ "$q" = d ] && q=1 PERSIST=--persistent QL="1 durable"
	layout_args "$layout"
	lat_rate=$(awk -v r="$RATE" -v p="$PUBS" 'BEGIN { printf "%g", r / p }')
	order="mosquitto hub"
	[ $((n % 2)) = 1 ] && order="hub mosquitto" # alternate, so drift hurts neither
	n=$((n + 1))
	# Both brokers run through the whole scenario (the idle one costs nothing),
	# so that the paced rounds can alternate between them: a burst of noise from
	# the rest of the machine then falls on both sides alike.
	up=()
	declare -A PID_OF=() PORT_OF=()
	for b in $order; do
		have_broker $b || continue
		[ $b = mosquitto ] && [ $transport = ws ] && [ $MOSQ_WS = 0 ] && continue
		log "== $b $s"
		if ! start_broker $b "$transport" "$b-$s"; then
			if [ $b = mosquitto ] && [ $transport = ws ]; then
				MOSQ_WS=0
				log "mosquitto: no websockets in this build; its WebSocket column is n/a"
			fi
			echo "{\"label\":\"$b-$s\",\"errors\":1,\"first_error\":\"broker did not start\"}" \
				>"$RAW/$b-$s.json"
			continue
		fi
		up+=("$b")
		PID_OF[$b]=$BPID PORT_OF[$b]=$BPORT
	done
	if [ "$LAT_SECS" != 0 ]; then
		for ((r = 1; r <= LAT_ROUNDS; r++)); do
			for b in "${up[@]}"; do
				# shellcheck disable=SC2086
				run_load "$b-$s-lat$r" "${PORT_OF[$b]}" "$transport" --qos "$q" $PERSIST $LARGS \
					--duration "$LAT_SECS" --rate "$lat_rate" --drain 2
			done
		done
	fi
	for b in "${up[@]}"; do
		# shellcheck disable=SC2086
		run_load "$b-$s" "${PORT_OF[$b]}" "$transport" --qos "$q" $PERSIST $LARGS --duration "$SECS" --drain 3
		stop_pid "${PID_OF[$b]}"
	done
done

# ---- memory: idle, then with N connected clients -----------------------------
for b in mosquitto hub; do
	have_broker $b || continue
	[ $SMOKE = 1 ] && [ $b = mosquitto ] && [ -x "$HUB" ] && continue
	log "== $b memory, idle and with $CLIENTS clients"
	start_broker $b tcp "$b-mem" || continue
	sleep 1
	echo "$(rss_kb "$BPID")" >"$RAW/$b-rss-idle.txt"
	run_load "$b-mem" "$BPORT" tcp --layout idle --clients "$CLIENTS" --hold 1 \
		--rss-pid "$BPID" --connect-timeout 60
	stop_pid "$BPID"
done

# ---- routes: module -> route with a WHERE on $body -> module input ----------
# Both runs: perch-hub, TCP, QoS 1, durable (the route's sink queue / the
# persistent subscriber's queue), the same JSON payloads. "plain": anonymous
# pub/sub to persistent subscribers; "routed": publishers and subscribers are
# modules p<i>/s<i> of device "bench" with SAS tokens, and the hub's routes
# carry p<i>'s output to s<i>'s input WHERE $body.machine.temperature > 25.
if have_broker hub && [[ routes =~ $ONLY ]]; then
	RLAYOUT="--layout pairs --publishers 10" RPUBS=10
	[ $SMOKE = 1 ] && RLAYOUT="--layout 1to1" RPUBS=1
	rdir=$TMP/routes
	mkdir -p "$rdir"
	(umask 077 && head -c 32 /dev/urandom | base64 >"$rdir/device.key")
	{
		printf '{"version": 1, "deviceId": "bench", "modules": {'
		for ((i = 0; i < RPUBS; i++)); do
			[ $i -gt 0 ] && printf ', '
			printf '"p%d": {}, "s%d": {}' $i $i
		done
		printf '}, "edgeHub": {"schemaVersion": "1.1", "routes": {'
		for ((i = 0; i < RPUBS; i++)); do
			[ $i -gt 0 ] && printf ', '
			printf '"r%d": "FROM /messages/modules/p%d/outputs/out WHERE $body.machine.temperature > 25 INTO BrokeredEndpoint(\\"/modules/s%d/inputs/in\\")"' $i $i $i
		done
		printf '}}}\n'
	} >"$rdir/hub-deployment.json"
	log "== hub routes: plain durable pub/sub, then routed"
	if start_hub hub-routes-plain; then
		# shellcheck disable=SC2086
		run_load hub-routes-plain "$BPORT_TCP" tcp --qos 1 --persistent --json $RLAYOUT \
			--duration "$SECS" --drain 3
		stop_pid "$BPID"
	fi
	if start_hub hub-routes-routed --set device.id=bench --set "device.key_file=$rdir/device.key" \
		--set "device.hub_deployment=$rdir/hub-deployment.json"; then
		# shellcheck disable=SC2086
		run_load hub-routes-routed "$BPORT_TCP" tcp --qos 1 --json $RLAYOUT --device bench \
			--device-key "$rdir/device.key" --duration "$SECS" --drain 3
		stop_pid "$BPID"
	fi
fi
elapsed=$((SECONDS - started_at))

# ---- the report ------------------------------------------------------------
J() { # FILE FIELD: a field of a raw JSON line, empty if absent
	[ -s "$1" ] && jq -r --arg f "$2" '.[$f] // empty' "$1" 2>/dev/null
}
lat_median() { # PREFIX FIELD: the median of FIELD over the paced rounds PREFIX-lat1..N
	local r v=()
	for ((r = 1; r <= LAT_ROUNDS; r++)); do v+=("$(J "$RAW/$1-lat$r.json" "$2")"); done
	printf '%s\n' "${v[@]}" | grep . | sort -g | awk '{ a[n++] = $1 } END {
		if (n == 0) exit
		if (n % 2) print a[(n - 1) / 2]; else print (a[n / 2 - 1] + a[n / 2]) / 2 }'
}
lat_wins() { # SCENARIO: "k of n" rounds whose hub p99 <= the adjacent mosquitto round's
	local r h m k=0 n=0
	for ((r = 1; r <= LAT_ROUNDS; r++)); do
		h=$(J "$RAW/hub-$1-lat$r.json" lat_p99_us) m=$(J "$RAW/mosquitto-$1-lat$r.json" lat_p99_us)
		[ -n "$h" ] && [ -n "$m" ] || continue
		n=$((n + 1))
		awk -v h="$h" -v m="$m" 'BEGIN { exit !(h <= m) }' && k=$((k + 1))
	done
	if [ $n = 0 ]; then echo "—"; else echo "$k of $n"; fi
}
fmt_rate() { awk -v v="$1" 'BEGIN { if (v == "") print "—"; else printf "%.0f", v }'; }
fmt_us() { awk -v v="$1" 'BEGIN { if (v == "" || v + 0 == 0) print "—"; else if (v >= 10000) printf "%.1f ms", v / 1000; else printf "%.0f µs", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a + 0 == 0 || b + 0 == 0) print "—"; else printf "%.2fx", a / b }'; }
mb() { awk -v v="$1" 'BEGIN { if (v == "" || v < 0) print "—"; else printf "%.1f MB", v / 1024 }'; }

# cell FILE: a throughput cell ("123456", or what went wrong)
cell_missing() { # BROKER TRANSPORT
	if ! have_broker "$1"; then echo "missing"
	elif [ "$1" = mosquitto ] && [ "$2" = ws ] && [ $MOSQ_WS = 0 ]; then echo "n/a"
	else echo "—"; fi
}
issues=() # lines for the "errors and losses" section
bound=()  # throughput runs where the generator itself was busy
note_run() { # FILE
	local f=$1 e l d c
	[ -s "$f" ] || return 0
	e=$(J "$f" errors) l=$(J "$f" lost) d=$(J "$f" duplicates) c=$(J "$f" gen_cpu_pct)
	if [ "${e:-0}" != 0 ] || [ "${l:-0}" != 0 ] || [ "${d:-0}" != 0 ]; then
		issues+=("$(basename "$f" .json): errors ${e:-0} (first: $(J "$f" first_error)), lost ${l:-0}, duplicates ${d:-0}")
	fi
	case $f in *-lat[0-9]*.json | *-mem.json) ;; *)
		[ "${c:-0}" -ge 85 ] 2>/dev/null && bound+=("$(basename "$f" .json) (generator at $c% CPU)") ;;
	esac
}

md=$OUT/results.md
{
	echo "# perch-hub and mosquitto, side by side"
	echo
	echo "Measured by \`make bench\` (tests/bench/run.sh) on $(date -u +%Y-%m-%d), $(nproc) cores"
	echo "($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -r)."
	echo "Broker and load generator share the machine. mosquitto: $("$MOSQUITTO" -h 2>/dev/null | awk '/version/ {print $3; exit}') (Debian)."
	echo "Load generator: tests/tools/mqtt_load, one thread, epoll, closed loop."
	[ $SMOKE = 1 ] && echo && echo "**Smoke run** (--smoke): one short scenario per transport; not a measurement."
	echo
	echo "## Throughput (messages delivered to subscribers per second)"
	echo
	echo "$SECS s per run, 256-byte payloads. QoS \"1 durable\": the subscribers hold persistent"
	echo "sessions, so every message goes through the hub's SQLite store (committed before its PUBACK"
	echo "unless its subscriber acknowledged it first); mosquitto keeps them in memory either way."
	echo "Other rows use clean sessions. Each publisher keeps at most 64"
	echo "QoS 1 messages unacknowledged and at most 256 messages sent but not yet delivered, so"
	echo "a run measures what the broker sustains, not what it can buffer. Target: QoS 1 >= 1.5x"
	echo "mosquitto's, QoS 0 >= 1x."
	echo
	echo "| scenario | transport | QoS | mosquitto msg/s | hub msg/s | hub/mosquitto | target | mosquitto p99 under load | hub p99 under load |"
	echo "|---|---|---|---:|---:|---:|---|---:|---:|"
	for s in $SCENARIOS; do
		[[ $s =~ $ONLY ]] || continue
		IFS=- read -r transport qos layout <<<"$s"
		q=${qos#q}
		PERSIST= QL=$q
		[ "$q" = d ] && q=1 PERSIST=--persistent QL="1 durable"
		case $layout in 1to1) what="1 to 1" ;; pairs) what="10 to 10" ;; fanin) what="100 to 1" ;; esac
		fm=$RAW/mosquitto-$s.json fh=$RAW/hub-$s.json
		note_run "$fm"
		note_run "$fh"
		rm_=$(J "$fm" deliver_rate) rh=$(J "$fh" deliver_rate)
		cm=$(if [ -n "$rm_" ]; then fmt_rate "$rm_"; else cell_missing mosquitto "$transport"; fi)
		ch=$(if [ -n "$rh" ]; then fmt_rate "$rh"; else cell_missing hub "$transport"; fi)
		target=">= 1x"
		[ "$q" = 1 ] && target=">= 1.5x"
		echo "| $what | $transport | $QL | $cm | $ch | $(ratio "$rh" "$rm_") | $target | $(fmt_us "$(J "$fm" lat_p99_us)") | $(fmt_us "$(J "$fh" lat_p99_us)") |"
	done
	if [ "$LAT_SECS" != 0 ]; then
		echo
		echo "## Latency (publish to delivery, same host, CLOCK_MONOTONIC)"
		echo
		echo "Paced runs: $RATE messages/s in all, spread over the publishers, $LAT_SECS s each,"
		echo "$LAT_ROUNDS per broker and scenario, alternating between the brokers (both run"
		echo "throughout). Each cell is the median over the rounds; \"rounds\" counts the rounds"
		echo "in which the hub's p99 was no worse than the mosquitto round just before or after it."
		echo "Target: hub p99 no worse than mosquitto's (ratio <= 1)."
		echo
		echo "| scenario | transport | QoS | mosquitto p50 | mosquitto p99 | hub p50 | hub p99 | p99 hub/mosquitto | rounds hub p99 <= mosquitto p99 |"
		echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
		for s in $SCENARIOS; do
			[[ $s =~ $ONLY ]] || continue
			IFS=- read -r transport qos layout <<<"$s"
			case $layout in 1to1) what="1 to 1" ;; pairs) what="10 to 10" ;; fanin) what="100 to 1" ;; esac
			for ((r = 1; r <= LAT_ROUNDS; r++)); do
				note_run "$RAW/mosquitto-$s-lat$r.json"
				note_run "$RAW/hub-$s-lat$r.json"
			done
			m99=$(lat_median "mosquitto-$s" lat_p99_us) h99=$(lat_median "hub-$s" lat_p99_us)
			ql=${qos#q}; [ "$ql" = d ] && ql="1 durable"; echo "| $what | $transport | $ql | $(fmt_us "$(lat_median "mosquitto-$s" lat_p50_us)") | $(fmt_us "$m99") | $(fmt_us "$(lat_median "hub-$s" lat_p50_us)") | $(fmt_us "$h99") | $(ratio "$h99" "$m99") | $(lat_wins "$s") |"
		done
	fi
	echo
	echo "## Resident memory (VmRSS)"
	echo
	echo "| broker | idle | with $CLIENTS clients | target |"
	echo "|---|---:|---:|---|"
	for b in mosquitto hub; do
		idle=$(cat "$RAW/$b-rss-idle.txt" 2>/dev/null) loaded=$(J "$RAW/$b-mem.json" rss_kb)
		up=$(J "$RAW/$b-mem.json" clients_connected)
		note_run "$RAW/$b-mem.json"
		cl=$(mb "$loaded")
		[ -n "$up" ] && [ "$up" != "$CLIENTS" ] && cl="$cl ($up connected)"
		t="—"
		[ $b = hub ] && t="idle < 8 MB, < 40 MB with 1,000 clients"
		if ! have_broker $b; then idle="" cl="missing"; fi
		echo "| $b | $(mb "$idle") | $cl | $t |"
	done
	if [ -s "$RAW/hub-routes-routed.json" ] || [ -s "$RAW/hub-routes-plain.json" ]; then
		echo
		echo "## Routed throughput (perch-hub)"
		echo
		echo "QoS 1, TCP, durable, JSON payloads of 256 bytes, ${RPUBS:-10} publisher(s) each to its own"
		echo "subscriber. plain: topic subscriptions (persistent sessions); routed: modules with SAS"
		echo "tokens, each message matched against the \$edgeHub routes (a WHERE on \$body: the body is"
		echo "parsed) and put in the target module's input queue."
		echo
		echo "| run | delivered/s | latency p50 | latency p99 | routed/plain |"
		echo "|---|---:|---:|---:|---:|"
		pr=$(J "$RAW/hub-routes-plain.json" deliver_rate) rr=$(J "$RAW/hub-routes-routed.json" deliver_rate)
		for r in plain routed; do
			f=$RAW/hub-routes-$r.json
			note_run "$f"
			x="—"
			[ $r = routed ] && x=$(ratio "$rr" "$pr")
			echo "| $r | $(fmt_rate "$(J "$f" deliver_rate)") | $(fmt_us "$(J "$f" lat_p50_us)") | $(fmt_us "$(J "$f" lat_p99_us)") | $x |"
		done
	fi
	echo
	echo "## How the brokers ran"
	echo
	echo "- perch-hub: \`perch-hub --allow-anonymous --listen mqtt://127.0.0.1:P --listen ws://127.0.0.1:Q --data-dir TMP\`"
	echo "  (both listeners in every run); QoS 1 messages for persistent sessions committed to SQLite before PUBACK unless every subscriber acknowledged them within hub.commit_delay_us (1 ms)."
	echo "- mosquitto: a fresh instance per scenario with one listener for the transport measured,"
	echo "  \`persistence true\` (a snapshot every 30 minutes, not per message: a \`kill -9\` loses the"
	echo "  queue), \`max_queued_messages 0\` (no limit: the default 1000 drops silently; the generator"
	echo "  bounds the backlog), \`max_inflight_messages 64\` (the generator's window),"
	echo "  \`set_tcp_nodelay true\` (its best case for small messages), \`user root\`, anonymous."
	echo "- Both brokers are started fresh per scenario and run side by side through it; the paced rounds alternate between them, and which one goes first alternates between scenarios."
	echo
	echo "## Errors and losses"
	echo
	if [ ${#issues[@]} = 0 ]; then
		echo "None: every run delivered every message exactly once."
	else
		for i in "${issues[@]}"; do echo "- $i"; done
	fi
	echo
	if [ ${#bound[@]} != 0 ]; then
		echo "Runs where the load generator was near one full core, so the broker's number is"
		echo "a lower bound (the generator, not the broker, may have been the limit):"
		echo
		for i in "${bound[@]}"; do echo "- $i"; done
		echo
	fi
	echo "Raw results: one JSON line per run in \`bench/raw/\` (${elapsed} s in all)."
} >"$md"

# The same tables on the terminal, without the Markdown furniture.
while IFS= read -r title; do
	table=$(awk -v t="## $title" '$0 == t { on = 1; next } /^## / { on = 0 }
		on && /^\|/ && !/^\|---/' "$md" | sed 's/^| //; s/ |$//; s/ | /\t/g')
	[ -n "$table" ] || continue
	printf '\n%s\n' "$title"
	column -t -s $'\t' <<<"$table"
done < <(sed -n 's/^## //p' "$md")
echo
[ ${#issues[@]} = 0 ] || printf 'note: %s\n' "${issues[@]}"
echo "results: $md"

rc=0
if [ $SMOKE = 1 ]; then
	runs=$(ls "$RAW"/*.json 2>/dev/null | wc -l)
	if [ "$runs" = 0 ] || [ ${#issues[@]} != 0 ]; then
		echo "bench smoke: FAILED" >&2
		rc=1
	else
		echo "bench smoke: ok ($runs runs)"
	fi
fi

# ---- the upstream link, hub to hub: drain rate and time to first forward --------
if [ "${PERCH_BENCH_UPSTREAM:-1}" != 0 ]; then
	up_args=()
	[ $SMOKE = 1 ] && up_args=(--smoke)
	O=$O /usr/bin/python3 tests/bench/upstream_bench.py "${up_args[@]}" || rc=1
fi

# ---- perch-agent and Docker's restart policy: a script of its own -------------
if [ "${PERCH_BENCH_AGENT:-1}" != 0 ]; then
	agent_args=()
	[ $SMOKE = 1 ] && agent_args=(--smoke)
	O=$O bash tests/bench/agent_bench.sh "${agent_args[@]}" || rc=1
fi
exit $rc
