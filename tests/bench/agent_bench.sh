#!/usr/bin/env bash
# tests/bench/agent_bench.sh — perch-agent and Docker's own restart policy side
# by side, on the same images, in one run, on the same engine (make bench runs
# it after the broker benchmarks of run.sh).
#
#   tests/bench/agent_bench.sh           the full benchmark, ~5 minutes
#   tests/bench/agent_bench.sh --smoke   1 container a side crashed 3 times and
#                                        a 2-module deployment: proves the
#                                        harness works (the test suite); fails
#                                        on any error; writes $O/bench/smoke/agent.md
#
# What it measures:
#   crash to running  N containers a side (10), each crashed K times (5) by a
#       kill -9 of its main process from the host (a real crash, not `docker
#       kill`), each only after it has run UPTIME seconds (10.5: over Docker's
#       10 s backoff reset), crashes SPACING seconds apart (1.1), round robin;
#       the time is from the container's `die` event to its next `start`
#       event (`docker events`, timeNano). Sides, one after the other:
#         docker         `docker run -d --restart always`
#         agent          perch-agent with its default settings (restart.healthy
#                        10 s: Docker's own reset rule)
#         agent-default  (PERCH_BENCH_DEFAULTS=1) the same again, a second run
#       Median and p99 (nearest rank: with 50 samples, the largest) a side, and
#       agent/Docker ratios.
#   deployment from nothing  perch-agent started (empty data dir, no containers)
#       with a manifest of D modules (10), each its own image, until
#       `perch-agent status --json` says all D running (polled every 100 ms),
#       and until the last container's StartedAt; images present locally, and
#       removed first (pulled from the registry with the manifest's
#       credentials). Peer: `docker run -d` x D from a shell loop, both cases.
#   resident memory  VmRSS and VmHWM (/proc/PID/status) of the agent idle
#       with the D modules deployed, and after its crash run.
#
# Writes $O/bench/agent.md and raw files ($O/bench/raw/agent*); prints the
# tables. Reports, never judges: exits non-zero only when the harness could not
# run (or, with --smoke, when any measurement is missing).
#
# Needs the Docker engine and the registry of deploy/perch-env.sh (its settings:
# PERCH_ENV_DIR, ...; `perch-env.sh up` is run when they do not answer), gcc
# with a static libc, jq. Its containers, network and images are named
# perch-bench-PID-* / carry the label perch.bench=RUN, and are removed at the
# end; nothing else on the engine is touched.
#
# Environment (all optional):
#   O                       build directory (build)
#   PERCH_BENCH_MODULES     containers a side in the crash runs (10; smoke 1)
#   PERCH_BENCH_CRASHES     crashes per container (5; smoke 3)
#   PERCH_BENCH_UPTIME      seconds a container runs before it is crashed (10.5; smoke 1)
#   PERCH_BENCH_SPACING     seconds between two crashes (1.1; smoke 0.2)
#   PERCH_BENCH_DEPLOY      modules of the deployment (10; smoke 2)
#   PERCH_BENCH_DEFAULTS=1  a second perch-agent crash run (default: none)
#   PERCH_BENCH_PARTS       what to run ("deploy crash"; the memory rows come
#                           with both)
#   PERCH_BENCH_BUILD       what the report says perch-agent was built from
#                           (default: this tree's git commit, and the files of
#                           common/ proto/ agent/ Makefile changed since)
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
O=${O:-build}
case $O in /*) ;; *) O=$ROOT/$O ;; esac
AGENT=$O/bin/perch-agent
OUT=$O/bench
export LC_NUMERIC=C # a decimal point in EPOCHREALTIME and awk

SMOKE=0
for a in "$@"; do
	case $a in
	--smoke) SMOKE=1 ;;
	-h | --help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//; /^set -u/d'; exit 0 ;;
	*) echo "agent_bench.sh: unknown argument $a" >&2; exit 2 ;;
	esac
done

N=${PERCH_BENCH_MODULES:-10}
K=${PERCH_BENCH_CRASHES:-5}
UPTIME=${PERCH_BENCH_UPTIME:-10.5}
SPACING=${PERCH_BENCH_SPACING:-1.1}
D=${PERCH_BENCH_DEPLOY:-10}
DEFAULTS=${PERCH_BENCH_DEFAULTS:-0}
IDLE=5 # seconds the agent sits idle before its memory is read
if [ $SMOKE = 1 ]; then
	N=${PERCH_BENCH_MODULES:-1} K=${PERCH_BENCH_CRASHES:-3} UPTIME=${PERCH_BENCH_UPTIME:-1}
	SPACING=${PERCH_BENCH_SPACING:-0.2} D=${PERCH_BENCH_DEPLOY:-2} DEFAULTS=0 IDLE=1
	OUT=$O/bench/smoke # never overwrite a full run's results
fi
RAW=$OUT/raw
for v in N K D; do
	[[ ${!v} =~ ^[1-9][0-9]?$ ]] || { echo "agent_bench.sh: $v=${!v}: 1..99" >&2; exit 2; }
done
for v in UPTIME SPACING; do
	[[ ${!v} =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "agent_bench.sh: $v=${!v}: seconds" >&2; exit 2; }
done

log() { printf 'agent_bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in jq gcc docker timeout; do
	command -v $tool >/dev/null || die "needs $tool"
done
[ -x "$AGENT" ] || die "$AGENT missing (make O=$O)"

mkdir -p "$OUT" "$RAW"
rm -f "$RAW"/agent*
TMP=$(mktemp -d /tmp/perch-agent-bench.XXXXXX)
PFX=perch-bench-$$      # container, network and agent instance names
RUNID=$$-$RANDOM        # value of the perch.bench label on every container
NET=$PFX
IMGDIR=$O/bench/agent-images # build contexts, kept: an unchanged binary keeps Docker's cache
NIMG=$((N > D ? N : D))
PIDS=()   # agents and `docker events` this script started and has not stopped
IMAGES=() # local image references this script built or pulled
NOTES=()  # what went wrong, for the report
started_at=$SECONDS
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- helpers -------------------------------------------------------------------
now_ns() { local t=$EPOCHREALTIME; echo "${t/./}000"; }
ms_since() { echo $((($(now_ns) - $1) / 1000000)); }
note() { NOTES+=("$*"); log "note: $*"; }

running() { # PID: a live process, not a zombie
	local st
	st=$(sed -n 's/^.*) \(.\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

stop_pid() { # PID: TERM, then KILL after 10 s; forget it
	local p=$1 i n=()
	if running "$p"; then
		kill -TERM "$p" 2>/dev/null
		for ((i = 0; i < 100; i++)); do running "$p" || break; sleep 0.1; done
		running "$p" && kill -KILL "$p" 2>/dev/null
	fi
	wait "$p" 2>/dev/null
	for i in "${PIDS[@]}"; do [ "$i" = "$p" ] || n+=("$i"); done
	PIDS=("${n[@]}")
}

# wait_until SECS COMMAND...: poll COMMAND every 0.1 s until it succeeds (0)
# or SECS have passed (1).
wait_until() {
	local end=$((SECONDS + $1))
	shift
	while ((SECONDS < end)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	"$@" >/dev/null 2>&1
}

dk() { timeout 120 docker "$@"; } # every docker call bounded

remove_containers() {
	local ids
	ids=$(dk ps -aq --filter "label=perch.bench=$RUNID")
	[ -z "$ids" ] || dk rm -f $ids >/dev/null 2>&1
}

remove_images() { # the benchmark's images, so that they must be pulled
	local i
	for ((i = 1; i <= NIMG; i++)); do dk rmi "$(image "$i")" >/dev/null 2>&1; done
}

cleanup() {
	local p
	set +e
	for p in "${PIDS[@]}"; do stop_pid "$p"; done
	remove_containers
	dk network rm "$NET" >/dev/null 2>&1
	for p in "${IMAGES[@]}"; do dk rmi "$p" >/dev/null 2>&1; done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the engine, the registry, the images ---------------------------------------
if ! bash deploy/perch-env.sh status >/dev/null 2>&1; then
	log "registry or engine not answering: running deploy/perch-env.sh up"
	bash deploy/perch-env.sh up >&2 || die "deploy/perch-env.sh up failed"
fi
eval "$(bash deploy/perch-env.sh env)"
[ -n "${PERCH_REGISTRY:-}" ] && [ -r "${PERCH_REGISTRY_PASSWORD_FILE:-}" ] ||
	die "deploy/perch-env.sh env gave no registry"
SOCK=$PERCH_DOCKER_SOCK
PASSWORD=$(cat "$PERCH_REGISTRY_PASSWORD_FILE")
DOCKER_VERSION=$(dk version --format '{{.Server.Version}}' 2>/dev/null) || die "docker does not answer on $SOCK"

image() { echo "$PERCH_REGISTRY/perch-bench/idle-$1:1"; }

log "building $NIMG images of tests/bench/idle_module.c (FROM scratch, static) and pushing them to $PERCH_REGISTRY"
for ((i = 1; i <= NIMG; i++)); do
	ctx=$IMGDIR/idle-$i
	mkdir -p "$ctx"
	gcc -std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -static -s -DBENCH_ID="\"$i\"" \
		-o "$ctx/idle.tmp" tests/bench/idle_module.c 2>"$TMP/cc.log" ||
		{ cat "$TMP/cc.log" >&2; die "compiling tests/bench/idle_module.c failed"; }
	# Replace only when it changed, so that Docker's build cache holds.
	if cmp -s "$ctx/idle.tmp" "$ctx/idle"; then rm -f "$ctx/idle.tmp"; else mv -f "$ctx/idle.tmp" "$ctx/idle"; fi
	printf '%s\n' "FROM scratch" "COPY idle /idle" "USER 65534:65534" 'ENTRYPOINT ["/idle"]' >"$ctx/Dockerfile"
	IMAGES+=("$(image "$i")")
	DOCKER_BUILDKIT=0 dk build -q -t "$(image "$i")" "$ctx" >"$TMP/build.log" 2>&1 ||
		{ tail -n 5 "$TMP/build.log" >&2; die "docker build of $(image "$i") failed"; }
	dk push "$(image "$i")" >"$TMP/push.log" 2>&1 ||
		{ tail -n 5 "$TMP/push.log" >&2; die "docker push of $(image "$i") failed"; }
done
IMG_KB=$(($(stat -c %s "$IMGDIR/idle-1/idle") / 1024))

dk network create --label "perch.bench=$RUNID" "$NET" >/dev/null || die "cannot create network $NET"

# ---- perch-agent ---------------------------------------------------------------------
cat >"$TMP/config.yaml" <<YAML
agent:
  instance: $PFX
  network: $NET
  device_id: perch-bench
YAML

# manifest FILE COUNT NAME_PREFIX: COUNT modules NAME_PREFIX1.., image i each,
# restartPolicy always, with the registry's credentials.
manifest() {
	local file=$1 count=$2 prefix=$3 i sep=""
	{
		cat <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"registryCredentials": {
      "bench": {"username": "$PERCH_REGISTRY_USER", "password": "$PASSWORD", "address": "$PERCH_REGISTRY"}}}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "x"}},
                      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                  "settings": {"image": "x"}}},
    "modules": {
JSON
		for ((i = 1; i <= count; i++)); do
			printf '%s      "%s%d": {"version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",\n' "$sep" "$prefix" "$i"
			printf '        "settings": {"image": "%s", "createOptions": "{\\"Labels\\":{\\"perch.bench\\":\\"%s\\"}}"}}' "$(image "$i")" "$RUNID"
			sep=$',\n'
		done
		printf '\n    }}},\n  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}\n}}\n'
	} >"$file"
}

APID='' ADIR=''
# agent_start NAME MANIFEST [--set K=V]...: a fresh agent (own data dir), no hub.
agent_start() {
	local name=$1 m=$2
	shift 2
	ADIR=$TMP/agent-$name
	mkdir -p "$ADIR"
	"$AGENT" --config "$TMP/config.yaml" --manifest "$m" --data-dir "$ADIR" \
		--docker-socket "$SOCK" --no-hub "$@" >"$RAW/agent-$name.log" 2>&1 &
	APID=$!
	PIDS+=("$APID")
}
agent_status() { timeout 10 "$AGENT" status --config "$TMP/config.yaml" --data-dir "$ADIR" --json; }
all_running() { # COUNT: does the agent report COUNT modules, all running?
	local st
	st=$(agent_status) && [ -n "$st" ] || return 1 # (jq -e says yes to no input)
	jq -e --argjson n "$1" '[.modules[] | select(.runtimeStatus == "running")] | length == $n' \
		<<<"$st" >/dev/null
}
mem_kb() { # PID VmRSS|VmHWM: in kB, 0 when unknown
	local v
	v=$(awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null)
	echo "${v:-0}"
}

# last_start_ms T0 NAME...: ms from T0 (ns) to the latest State.StartedAt of
# the containers ("null" when unknown).
last_start_ms() {
	local t0=$1 t max=0 n
	shift
	for t in $(dk inspect -f '{{.State.StartedAt}}' "$@" 2>/dev/null); do
		n=$(date -d "$t" +%s%N 2>/dev/null) || continue
		((n > max)) && max=$n
	done
	if ((max > 0)); then echo $(((max - t0) / 1000000)); else echo null; fi
}

# ---- deployment from nothing ---------------------------------------------------------------
DEPLOY_JSON=()
deploy_names() { local i; for ((i = 1; i <= D; i++)); do echo "$PFX-$1-$i"; done; }

# deploy_agent CASE (present|pulled)
deploy_agent() {
	local c=$1 t0 ms last names rss hwm
	remove_containers
	[ "$c" = pulled ] && remove_images
	manifest "$TMP/deploy.json" "$D" "$PFX-d$c-"
	log "deployment of $D modules by perch-agent, images $c"
	t0=$(now_ns)
	agent_start "deploy-$c" "$TMP/deploy.json"
	if ! wait_until 180 all_running "$D"; then
		note "perch-agent ($c): $D modules not all running within 180 s"
		agent_status >"$RAW/agent-deploy-$c.status.json" 2>&1
		stop_pid "$APID"
		return
	fi
	ms=$(ms_since "$t0")
	mapfile -t names <<<"$(deploy_names "d$c")"
	last=$(last_start_ms "$t0" "${names[@]}")
	sleep "$IDLE"
	rss=$(mem_kb "$APID" VmRSS) hwm=$(mem_kb "$APID" VmHWM)
	stop_pid "$APID"
	DEPLOY_JSON+=("$(jq -cn --arg who agent --arg c "$c" --argjson n "$D" --argjson ms "$ms" \
		--argjson last "$last" --argjson rss "$rss" --argjson hwm "$hwm" \
		'{who: $who, images: $c, modules: $n, ms: $ms, last_start_ms: $last, rss_kb: $rss, hwm_kb: $hwm}')")
}

# deploy_docker CASE: the peer, `docker run -d` in a shell loop.
deploy_docker() {
	local c=$1 t0 ms last i ok=1 names
	remove_containers
	[ "$c" = pulled ] && remove_images
	log "deployment of $D containers by docker run -d in a loop, images $c"
	mapfile -t names <<<"$(deploy_names "k$c")"
	t0=$(now_ns)
	for ((i = 1; i <= D; i++)); do
		dk run -d --name "${names[i - 1]}" --label "perch.bench=$RUNID" --network "$NET" \
			--add-host perch-hub:host-gateway --log-opt max-size=10m --log-opt max-file=3 \
			"$(image "$i")" >/dev/null 2>>"$RAW/agent-deploy-docker-$c.log" || ok=0
	done
	ms=$(ms_since "$t0")
	last=$(last_start_ms "$t0" "${names[@]}")
	if [ $ok = 0 ]; then note "docker run ($c) failed: $(tail -n 1 "$RAW/agent-deploy-docker-$c.log")"; return; fi
	DEPLOY_JSON+=("$(jq -cn --arg who docker --arg c "$c" --argjson n "$D" --argjson ms "$ms" \
		--argjson last "$last" \
		'{who: $who, images: $c, modules: $n, ms: $ms, last_start_ms: $last}')")
}

PARTS=" ${PERCH_BENCH_PARTS:-deploy crash} "
if [[ $PARTS == *" deploy "* ]]; then
	deploy_agent pulled
	deploy_agent present
	deploy_docker present
	deploy_docker pulled
	remove_containers
fi

# ---- crash to running ------------------------------------------------------------------------
CRASH_JSON=()
MEM_JSON=()

# crashable NAME LASTPID: running, not the process crashed last, up >= UPTIME s.
crashable() {
	local r p s up
	s=$(dk inspect -f '{{.State.Running}} {{.State.Pid}} {{.State.StartedAt}}' "$1" 2>/dev/null) || return 1
	read -r r p s <<<"$s"
	[ "$r" = true ] && [ "$p" != 0 ] && [ "$p" != "$2" ] || return 1
	up=$(($(now_ns) - $(date -d "$s" +%s%N)))
	awk -v u="$up" -v t="$UPTIME" 'BEGIN { exit !(u >= t * 1e9) }'
}
back_up() { # NAME LASTPID: running again as another process
	local r p
	r=$(dk inspect -f '{{.State.Running}} {{.State.Pid}}' "$1" 2>/dev/null) || return 1
	read -r r p <<<"$r"
	[ "$r" = true ] && [ "$p" != 0 ] && [ "$p" != "$2" ]
}

# crash_run SIDE SETTINGS: start N containers (docker: --restart always; agent*:
# through perch-agent with SETTINGS as --set flags), crash each K times, and
# measure die -> start from the engine's events.
crash_run() {
	local side=$1 settings=$2 i r pid evpid name names=() last=() sets=() s
	local ev=$RAW/agent-crash-$side.events
	for s in $settings; do sets+=(--set "$s"); done
	remove_containers
	for ((i = 1; i <= N; i++)); do names+=("$PFX-$side-$i"); last+=(0); done
	log "crash run '$side': $N container(s), $K crashes each, each after >= ${UPTIME}s up, ${SPACING}s apart"
	if [ "$side" = docker ]; then
		for ((i = 1; i <= N; i++)); do
			dk run -d --name "${names[i - 1]}" --label "perch.bench=$RUNID" --restart always \
				--network "$NET" --add-host perch-hub:host-gateway \
				--log-opt max-size=10m --log-opt max-file=3 "$(image "$i")" >/dev/null ||
				{ note "crash run $side: docker run failed"; return; }
		done
	else
		manifest "$TMP/crash-$side.json" "$N" "$PFX-$side-"
		agent_start "crash-$side" "$TMP/crash-$side.json" "${sets[@]}"
		wait_until 120 all_running "$N" || { note "crash run $side: $N modules not running within 120 s"; stop_pid "$APID"; return; }
	fi
	timeout $(((${UPTIME%.*} + 61) * K * N + 300)) docker events --filter "label=perch.bench=$RUNID" \
		--filter type=container --filter event=die --filter event=start --format '{{json .}}' >"$ev" 2>/dev/null &
	evpid=$!
	PIDS+=("$evpid")
	sleep 0.5
	for ((r = 1; r <= K; r++)); do
		for ((i = 0; i < N; i++)); do
			name=${names[i]}
			if ! wait_until $((${UPTIME%.*} + 90)) crashable "$name" "${last[i]}"; then
				note "crash run $side: $name not running (again) for ${UPTIME}s within the wait; crash $r skipped"
				continue
			fi
			pid=$(dk inspect -f '{{.State.Pid}}' "$name")
			kill -KILL "$pid" 2>/dev/null || { note "crash run $side: kill -9 $pid ($name) failed"; continue; }
			echo "$name $r $pid $(now_ns)" >>"$RAW/agent-crash-$side.kills"
			last[i]=$pid
			sleep "$SPACING"
		done
	done
	for ((i = 0; i < N; i++)); do
		wait_until 120 back_up "${names[i]}" "${last[i]}" || note "crash run $side: ${names[i]} not running again within 120 s"
	done
	sleep 1 # the last start event reaches the events stream
	stop_pid "$evpid"
	if [ "$side" != docker ]; then
		MEM_JSON+=("$(jq -cn --arg what "after the crash run $side ($N modules, $((N * K)) crashes)" \
			--argjson rss "$(mem_kb "$APID" VmRSS)" --argjson hwm "$(mem_kb "$APID" VmHWM)" \
			'{what: $what, rss_kb: $rss, hwm_kb: $hwm}')")
		agent_status >"$RAW/agent-crash-$side.status.json" 2>/dev/null
		stop_pid "$APID"
	fi
	remove_containers
	# Each die (of a crash: exit code 137) paired with the same container's next
	# start; the k-th crash of a container is its index k.
	CRASH_JSON+=("$(jq -sc --arg side "$side" --arg settings "$settings" --argjson planned $((N * K)) '
		def stats: sort as $s | ($s | length) as $n
			| if $n == 0 then {n: 0}
			  else {n: $n, min_ms: $s[0], max_ms: $s[$n - 1],
			        median_ms: (if $n % 2 == 1 then $s[($n - 1) / 2] else ($s[$n / 2 - 1] + $s[$n / 2]) / 2 end),
			        p99_ms: $s[((99 * $n + 99) / 100 | floor) - 1]} end;
		[group_by(.Actor.Attributes.name)[] | sort_by(.timeNano) as $e
		 | [range(0; $e | length) as $i | select($e[$i].Action == "die" and $e[$i].Actor.Attributes.exitCode == "137")
		    | {die: $e[$i].timeNano,
		       start: ([$e[$i + 1:][] | select(.Action == "start")] | first | .timeNano)}]
		 | to_entries[] | {k: .key, ms: (if .value.start == null then null else (.value.start - .value.die) / 1e6 end)}]
		| . as $all
		| {side: $side, settings: $settings, planned: $planned,
		   dies: ($all | length), missing: ([$all[] | select(.ms == null)] | length),
		   all: ([$all[] | .ms // empty] | stats),
		   first: ([$all[] | select(.k == 0) | .ms // empty] | stats),
		   samples_ms: [$all[] | .ms]}' "$ev")")
}

if [[ $PARTS == *" crash "* ]]; then
	crash_run docker ""
	crash_run agent ""
	[ "$DEFAULTS" = 1 ] && crash_run agent-default ""
fi

# ---- results -----------------------------------------------------------------------------
if [ -n "${PERCH_BENCH_BUILD:-}" ]; then
	agent_build=$PERCH_BENCH_BUILD
elif rev=$(git rev-parse --short HEAD 2>/dev/null); then
	dirty=$(git status --porcelain -- common proto agent Makefile 2>/dev/null | awk '{print $2}' | xargs)
	agent_build="commit $rev${dirty:+ plus uncommitted changes to $dirty}"
else
	agent_build="a tree that is not a git checkout"
fi
elapsed=$((SECONDS - started_at))
printf '%s\n' "${CRASH_JSON[@]}" | jq -s '.' >"$TMP/crash.json"
printf '%s\n' "${DEPLOY_JSON[@]}" | jq -s '.' >"$TMP/deploy.json"
printf '%s\n' "${MEM_JSON[@]}" | jq -s '.' >"$TMP/mem.json"
printf '%s\n' "${NOTES[@]}" | jq -R . | jq -s '.' >"$TMP/notes.json"
jq -n --slurpfile c "$TMP/crash.json" --slurpfile d "$TMP/deploy.json" --slurpfile m "$TMP/mem.json" \
	--slurpfile n "$TMP/notes.json" --argjson smoke $SMOKE --arg docker "$DOCKER_VERSION" \
	--arg build "$agent_build" --argjson modules "$N" --argjson crashes "$K" --argjson uptime "$UPTIME" \
	--argjson spacing "$SPACING" --argjson deploy "$D" --argjson idle "$IDLE" --argjson secs "$elapsed" \
	'{smoke: ($smoke == 1), docker: $docker, agent_build: $build, modules: $modules, crashes: $crashes,
	  uptime_s: $uptime, spacing_s: $spacing, deploy_modules: $deploy, idle_s: $idle, seconds: $secs,
	  crash: $c[0], deploy: $d[0], memory: $m[0], notes: ($n[0] | map(select(. != "")))}' >"$RAW/agent.json" ||
	die "cannot write $RAW/agent.json"
R=$RAW/agent.json

fmt_ms() { awk -v v="$1" 'BEGIN { if (v == "" || v == "null") print "—"; else if (v < 10) printf "%.1f ms", v; else if (v < 10000) printf "%.0f ms", v; else printf "%.1f s", v / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "null" || b == "null" || a + 0 == 0 || b + 0 == 0) print "—"; else printf "%.2fx", a / b }'; }
mb() { awk -v v="$1" 'BEGIN { if (v == "" || v == "null" || v <= 0) print "—"; else printf "%.1f MB", v / 1024 }'; }
q() { jq -r "$1 // empty" "$R"; } # a field of the summary, empty if absent
crash_field() { q "(.crash[] | select(.side == \"$1\") | .$2)"; }

side_label() { # SIDE: "runtime | settings" cells
	case $1 in
	docker) echo "Docker \`--restart always\` | Docker's: 100 ms delay, doubled after a run < 10 s" ;;
	agent) echo "perch-agent | defaults (\`restart.healthy\` 10 s)" ;;
	agent-default) echo "perch-agent | defaults, second run" ;;
	esac
}

md_crash() {
	local side n med p99 r1 r2 t dmed d99 dfirst
	echo "## Crash to running (die event to start event)"
	echo
	echo "$N container$([ "$N" = 1 ] || echo s) a side, each crashed $K times by \`kill -9\` of its main process from the host,"
	echo "each after at least ${UPTIME} s up, ${SPACING} s between crashes; time from the container's"
	echo "\`die\` event to its next \`start\` event (\`docker events\` timeNano). p99 is the nearest rank:"
	echo "rank $(((99 * N * K + 99) / 100)) of $((N * K)). Target: perch-agent faster than Docker's own restart policy (ratio < 1)."
	echo
	echo "| runtime | settings | crashes | median | p99 | median agent/Docker | p99 agent/Docker | target |"
	echo "|---|---|---:|---:|---:|---:|---:|---|"
	dmed=$(crash_field docker all.median_ms) d99=$(crash_field docker all.p99_ms)
	for side in docker agent agent-default; do
		[ -n "$(crash_field "$side" side)" ] || continue
		n=$(crash_field "$side" all.n) med=$(crash_field "$side" all.median_ms) p99=$(crash_field "$side" all.p99_ms)
		r1="—" r2="—" t="—"
		[ "$side" != docker ] && r1=$(ratio "$med" "$dmed") r2=$(ratio "$p99" "$d99") t="< 1x"
		echo "| $(side_label "$side") | ${n:-0} of $((N * K)) | $(fmt_ms "$med") | $(fmt_ms "$p99") | $r1 | $r2 | $t |"
	done
	echo
	echo "## Crash to running, the first crash of each container"
	echo
	echo "A crash after a healthy run: no backoff on either side."
	echo
	echo "| runtime | settings | crashes | median | p99 | median agent/Docker |"
	echo "|---|---|---:|---:|---:|---:|"
	dfirst=$(crash_field docker first.median_ms)
	for side in docker agent agent-default; do
		[ -n "$(crash_field "$side" side)" ] || continue
		med=$(crash_field "$side" first.median_ms) r1="—"
		[ "$side" != docker ] && r1=$(ratio "$med" "$dfirst")
		echo "| $(side_label "$side") | $(crash_field "$side" first.n) | $(fmt_ms "$med") | $(fmt_ms "$(crash_field "$side" first.p99_ms)") | $r1 |"
	done
	echo
}

deploy_field() { q "(.deploy[] | select(.who == \"$1\" and .images == \"$2\") | .$3)"; } # WHO CASE FIELD

md_deploy() {
	local c a
	echo "## Deployment from nothing"
	echo
	echo "$D modules, each its own image (one static ${IMG_KB} KB binary, FROM scratch) in the local registry."
	echo "perch-agent: from its start (empty data dir, no containers) to \`perch-agent status --json\`"
	echo "reporting all $D running (polled every 100 ms), and to the last container's StartedAt. Peer:"
	echo "\`docker run -d\` x $D in a shell loop (each returns once its container started). \"pulled\": the"
	echo "images were removed from the engine first; \"present\": they were there."
	echo
	echo "| images | modules | perch-agent, to status all running | perch-agent, to last start | docker run x $D | agent/docker |"
	echo "|---|---:|---:|---:|---:|---:|"
	for c in present pulled; do
		a=$(deploy_field agent "$c" ms)
		echo "| $c | $D | $(fmt_ms "$a") | $(fmt_ms "$(deploy_field agent "$c" last_start_ms)") | $(fmt_ms "$(deploy_field docker "$c" ms)") | $(ratio "$a" "$(deploy_field docker "$c" ms)") |"
	done
	echo
}

md_memory() {
	local c w r h
	echo "## perch-agent resident memory"
	echo
	echo "| when | VmRSS | VmHWM | target |"
	echo "|---|---:|---:|---|"
	if [[ $PARTS == *" deploy "* ]]; then
		for c in present pulled; do
			echo "| idle ${IDLE} s after deploying $D modules (images $c) | $(mb "$(deploy_field agent "$c" rss_kb)") | $(mb "$(deploy_field agent "$c" hwm_kb)") | < 6 MB |"
		done
	fi
	jq -r '.memory[] | [.what, .rss_kb, .hwm_kb] | @tsv' "$R" | while IFS=$'\t' read -r w r h; do
		echo "| $w | $(mb "$r") | $(mb "$h") | < 6 MB |"
	done
	echo
}

md_how() {
	echo "## How they ran"
	echo
	echo "- One engine, one run, one side after the other: Docker's crash run, then perch-agent's."
	echo "  Every container: the same images, the bridge network \`$NET\`, \`perch-hub:host-gateway\`,"
	echo "  json-file logs of 10m x 3 (what perch-agent gives its modules). The network is created by"
	echo "  the benchmark before anything is measured (perch-agent finds it there)."
	echo "- Docker: \`docker run -d --restart always\`; Docker waits 100 ms before restarting a crashed"
	echo "  container, doubles the wait when it ran < 10 s, and resets it after a run of 10 s."
	echo "- perch-agent: \`perch-agent --no-hub --manifest FILE --data-dir DIR --docker-socket SOCK\`,"
	echo "  restartPolicy \`always\`, log level info. Its first restart after a healthy run is at once;"
	echo "  each further one in a row waits \`restart.base\` (1 s) doubling up to \`restart.max\` (60 s);"
	echo "  a run of \`restart.healthy\` (10 s by default, as Docker's reset) resets that. The first"
	echo "  restart goes out from the \`die\` event itself (an asynchronous POST /start)."
	echo
	echo "## Notes"
	echo
	if [ "$(q '.notes | length')" = 0 ]; then
		echo "None: every planned crash and deployment was measured."
	else
		jq -r '.notes[] | "- " + .' "$R"
	fi
	echo
	echo "Raw results: \`bench/raw/agent.json\` (every sample), the event streams and agent logs beside it (${elapsed} s in all)."
}

md=$OUT/agent.md
{
	echo "# perch-agent and Docker's restart policy, side by side"
	echo
	echo "Measured by \`make bench\` (tests/bench/agent_bench.sh) on $(date -u +%Y-%m-%d), $(nproc) cores,"
	echo "$(uname -r); Docker Engine $DOCKER_VERSION; perch-agent built from $agent_build."
	echo "Load average (1, 5, 15 min) at the start: $LOAD_BEFORE; at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
	[ $SMOKE = 1 ] && echo && echo "**Smoke run** (--smoke): $N container a side, $K crashes, $D modules; not a measurement."
	echo
	[[ $PARTS == *" crash "* ]] && md_crash
	[[ $PARTS == *" deploy "* ]] && md_deploy
	md_memory
	md_how
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
[ "$(q '.notes | length')" = 0 ] || jq -r '.notes[] | "note: " + .' "$R"
echo "results: $md"

if [ $SMOKE = 1 ]; then
	if [ "$(q '.notes | length')" != 0 ] ||
		! jq -e --argjson p $((N * K)) --argjson d "$D" '
			([.crash[] | select(.all.n == $p and .missing == 0)] | length) == (.crash | length) and (.crash | length) >= 2
			and ([.deploy[] | select(.modules == $d)] | length) == 4' "$R" >/dev/null; then
		echo "agent bench smoke: FAILED" >&2
		exit 1
	fi
	echo "agent bench smoke: ok"
fi
exit 0
