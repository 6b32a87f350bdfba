#!/usr/bin/env bash
# tests/integration/test_docker_api.sh — perch-agent's Docker client
# (agent/src/docker*.c) against the real engine and a real local registry
# with htpasswd credentials, through tests/tools/docker_probe:
#   - ping/version; a socket with no daemon -> ECLOSED
#   - pulls: right credentials (progress seen, digest), wrong password (EPERM
#     with the engine's message), a missing image (ENOENT), a stopped registry
#     (EIO, "connection refused")
#   - a pull stalled by a registry that never answers does not delay
#     create/start/inspect/remove on the same client
#   - create/start/list-by-label/inspect; the die event (exit code 3) within a
#     second of the container's exit; kill -9 of its process from the host
#     (die, exit 137); remove; ENOENT/EEXIST/EBUSY translations
#   - the perch network created if absent (and a private one created and
#     removed)
#   - events stream: DISCONNECTED when a private dockerd stops, CONNECTED again
#     when it is back (skipped with PERCH_TEST_PRIVATE_DOCKERD=0)
# Only what this test created is removed. Bounded: every wait has a limit.
#
# Run by tests/run.sh (O, PERCH_ROOT set); alone: bash tests/integration/test_docker_api.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

root=${PERCH_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
O=${O:-build}
case $O in /*) ;; *) O=$root/$O ;; esac
probe=$O/test/tools/docker_probe
perch_env=$root/deploy/perch-env.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-dapi.XXXXXX")
start=$SECONDS
tag=$$
containers=() bg_pids=() nets=() env_dirs=()



cleanup() {
	local rc=$? c p n dir
	set +e
	for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
	for c in "${containers[@]}"; do timeout 30 "$probe" remove "$c" force >/dev/null 2>&1; done
	for n in "${nets[@]}"; do timeout 30 "$probe" network-rm "$n" >/dev/null 2>&1; done
	if [ -n "${image:-}" ]; then timeout 30 "$probe" image-rm "$image:1" >/dev/null 2>&1; fi
	for dir in "${env_dirs[@]}"; do PERCH_ENV_DIR=$dir timeout 120 bash "$perch_env" down >/dev/null 2>&1; done
	rm -rf "$tmp"
	if [ $rc -eq 0 ]; then echo "test_docker_api: passed in $((SECONDS - start))s"; else echo "test_docker_api: FAILED (exit $rc)"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ -x "$probe" ] || fail "$probe not built (make O=... $probe)"
unset PERCH_DOCKER_SOCK PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60
env_dirs+=("$PERCH_ENV_DIR")
timeout 180 bash "$perch_env" up >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; fail "perch-env up failed"; }
eval "$(bash "$perch_env" env)"
image=$PERCH_REGISTRY/perch-test/dapi
pwfile=$PERCH_REGISTRY_PASSWORD_FILE
ok "engine and registry up (registry $PERCH_REGISTRY)"

# --- basic calls -------------------------------------------------------------------
out=$("$probe" ping) || fail "ping: $out"
out=$("$probe" version) || fail "version: $out"
[[ $out == *"api=1.41"* ]] || fail "version: $out"
ok "ping, version: $out"
out=$("$probe" -s "$tmp/no-daemon.sock" ping) && fail "ping of a missing socket succeeded"
[[ $out == "error ECLOSED: Docker daemon not answering at $tmp/no-daemon.sock" ]] || fail "missing socket: $out"
ok "missing socket: $out"

# --- a FROM scratch image: /t MS CODE sleeps MS ms (forever if MS < 0), exits CODE ---
mkdir -p "$tmp/ctx"
cat >"$tmp/ctx/t.c" <<'EOF'
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	long ms = argc > 1 ? atol(argv[1]) : -1;
	int code = argc > 2 ? atoi(argv[2]) : 0;
	if (ms < 0)
		for (;;)
			pause();
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
	return code;
}
EOF
gcc -static -O2 -o "$tmp/ctx/t" "$tmp/ctx/t.c" || fail "gcc -static failed"
printf 'FROM scratch\nCOPY t /t\nENTRYPOINT ["/t"]\nCMD ["-1"]\n' >"$tmp/ctx/Dockerfile"
DOCKER_BUILDKIT=0 timeout 120 docker build -q -t "$image:1" "$tmp/ctx" >/dev/null 2>"$tmp/build.err" ||
	fail "docker build: $(tail -3 "$tmp/build.err")"
timeout 120 docker push "$image:1" >"$tmp/push.out" 2>&1 || fail "docker push: $(tail -3 "$tmp/push.out")"
timeout 60 docker rmi "$image:1" >/dev/null || fail "docker rmi"
ok "built and pushed $image:1, removed locally"

# --- pulls ---------------------------------------------------------------------------
printf 'wrong-%s\n' "$(cat "$pwfile")" >"$tmp/bad.pw"
chmod 600 "$tmp/bad.pw"
out=$("$probe" pull "$image" 1 -u "$PERCH_REGISTRY_USER" -p "$tmp/bad.pw" -r "$PERCH_REGISTRY") &&
	fail "pull with a wrong password succeeded: $out"
last=$(tail -1 <<<"$out")
[[ $last == "error EPERM: "* ]] || fail "wrong password: $out"
[[ $last == *unauthorized* || $last == *"authentication required"* ]] || fail "wrong password, message: $last"
[[ $out != *"$(cat "$pwfile")"* ]] || fail "the password appears in the output"
ok "wrong password: $last"

out=$("$probe" pull "$image" 1 -u "$PERCH_REGISTRY_USER" -p "$pwfile" -r "$PERCH_REGISTRY") ||
	fail "pull with the right password: $out"
[[ $(tail -1 <<<"$out") == "pull ok" ]] || fail "pull: $out"
grep -q '^progress layer=[0-9a-f]\{12\} status="Pull complete"' <<<"$out" || fail "no layer progress: $out"
grep -q 'status="Downloading" current=[0-9]* total=[0-9]*' <<<"$out" ||
	grep -q 'status="Download complete"' <<<"$out" || fail "no download progress: $out"
ok "pull with credentials: $(grep '^pull ms' <<<"$out"), $(grep -c '^progress' <<<"$out") progress lines"
out=$("$probe" image "$image:1") || fail "image inspect: $out"
grep -q "^digest=$image@sha256:[0-9a-f]\{64\}$" <<<"$out" || fail "image digest: $out"
ok "image inspect: $(grep digest= <<<"$out")"

out=$("$probe" pull "$PERCH_REGISTRY/perch-test/does-not-exist" 1 -u "$PERCH_REGISTRY_USER" -p "$pwfile" \
	-r "$PERCH_REGISTRY") && fail "pull of a missing image succeeded"
[[ $(tail -1 <<<"$out") == "error ENOENT: "* ]] || fail "missing image: $out"
ok "missing image: $(tail -1 <<<"$out")"
out=$("$probe" pull "$image" 404 -u "$PERCH_REGISTRY_USER" -p "$pwfile" -r "$PERCH_REGISTRY") &&
	fail "pull of a missing tag succeeded"
[[ $(tail -1 <<<"$out") == "error ENOENT: "* ]] || fail "missing tag: $out"
ok "missing tag: $(tail -1 <<<"$out")"
out=$("$probe" image "$image:404") && fail "inspect of a missing image succeeded"
[[ $out == "error ENOENT: "* ]] || fail "image inspect of a missing image: $out"

# --- a stalled pull does not block short calls ------------------------------------------
out=$(timeout 60 "$probe" stall-pull "$image:1") || fail "stall-pull: $out"
line=$(grep '^short_calls' <<<"$out") || fail "stall-pull: $out"
ms=$(sed 's/.*ms=\([0-9]*\).*/\1/' <<<"$line")
[[ $line == *"pull_pending=1"* ]] || fail "the stalled pull ended early: $out"
[[ $line == *"running=1"* ]] || fail "container not running during the stalled pull: $out"
[ "$ms" -lt 2000 ] || fail "create+start+inspect took ${ms} ms during a stalled pull"
grep -q 'accepted=[1-9]' <<<"$out" || fail "the engine never reached the stalled registry: $out"
ok "stalled pull pending while create+start+inspect took ${ms} ms ($(grep '^stall' <<<"$out"))"

# --- networks ------------------------------------------------------------------------------
had_perch=0
if docker network inspect perch >/dev/null 2>&1; then had_perch=1; fi
out=$("$probe" network perch) || fail "network perch: $out"
[ "$had_perch" = 1 ] || { nets+=(perch); [[ $out == *"created=1"* ]] || fail "perch not created: $out"; }
out=$("$probe" network perch) || fail "network perch (again): $out"
[[ $out == *"created=0"* ]] || fail "network perch (again): $out"
docker network inspect perch >/dev/null 2>&1 || fail "network perch absent after ensure"
ok "network perch ensured (existed before: $had_perch; second call creates nothing)"
net=perch-test-net-$tag
nets+=("$net")
out=$("$probe" network "$net") || fail "network $net: $out"
[[ $out == *"created=1"* ]] || fail "network $net: $out"
[ "$(docker network inspect -f '{{.Driver}} {{index .Labels "perch.owner"}}' "$net")" = "bridge test" ] ||
	fail "network $net: wrong driver or labels"
"$probe" network-rm "$net" >/dev/null || fail "network-rm $net"
out=$("$probe" network-rm "$net") && fail "second network-rm succeeded"
[[ $out == "error ENOENT: "* ]] || fail "second network-rm: $out"
ok "network $net created (bridge, labelled), removed; removing again: ENOENT"

# --- containers and events ---------------------------------------------------------------------
"$probe" events 30 2 test >"$tmp/events.log" 2>"$tmp/events.err" &
bg_pids+=($!)
ev_pid=$!
for ((i = 0; i < 50; i++)); do grep -q '^connected' "$tmp/events.log" && break; sleep 0.1; done
grep -q '^connected' "$tmp/events.log" || fail "events stream did not connect: $(cat "$tmp/events.log" "$tmp/events.err")"
ok "events stream connected"

# It lives 2.5 s: long enough for the start, list and inspect calls below
# even from a sanitizer build (~250 ms a probe run), then exits 3.
body='{"Image":"'"$image:1"'","Cmd":["2500","3"],"Labels":{"perch.owner":"test","perch.module":"exit3"},
      "HostConfig":{"NetworkMode":"perch","ExtraHosts":["perch-hub:host-gateway"]}}'
out=$("$probe" create "perch-test-exit3-$tag" "$body") || fail "create: $out"
id3=${out#id=}
containers+=("$id3")
out=$("$probe" create "perch-test-exit3-$tag" "$body") && fail "second create with the same name succeeded"
[[ $out == "error EEXIST: "* ]] || fail "second create: $out"
out=$("$probe" create "perch-test-noimage-$tag" '{"Image":"perch-test/none:0"}') && fail "create with no image succeeded"
[[ $out == "error ENOENT: "* ]] || fail "create with a missing image: $out"
ok "create: id ${id3:0:12}; same name again: EEXIST; missing image: ENOENT"
"$probe" start "$id3" >/dev/null || fail "start"
"$probe" start "$id3" >/dev/null || fail "second start (already running) is not OK"
out=$("$probe" list perch.owner=test) || fail "list: $out"
grep -q "id=$id3 name=/perch-test-exit3-$tag state=running" <<<"$out" || fail "list by label: $out"
out=$("$probe" list perch.owner=nobody-$tag) || fail "list: $out"
[[ $out == "count=0" ]] || fail "list by another label: $out"
ok "started; listed by label perch.owner=test; other label lists nothing"
out=$("$probe" inspect "$id3") || fail "inspect: $out"
grep -q '^running=1$' <<<"$out" && grep -q '^pid=[1-9]' <<<"$out" && grep -q '^owner=test$' <<<"$out" ||
	fail "inspect while running: $out"
for ((i = 0; i < 50; i++)); do grep -q "action=die id=$id3" "$tmp/events.log" && break; sleep 0.1; done
line=$(grep "action=die id=$id3" "$tmp/events.log") || fail "no die event: $(cat "$tmp/events.log")"
[[ $line == *" exit=3 "* && $line == *"name=perch-test-exit3-$tag"* && $line == *"owner=test"* ]] ||
	fail "die event: $line"
out=$("$probe" inspect "$id3") || fail "inspect after exit: $out"
grep -q '^running=0$' <<<"$out" && grep -q '^exit=3$' <<<"$out" && grep -q '^status=exited$' <<<"$out" ||
	fail "inspect after exit: $out"
finished=$(date -d "$(sed -n 's/^finished=//p' <<<"$out")" +%s%3N)
got=$(sed 's/.*wall_ms=\([0-9]*\).*/\1/' <<<"$line")
lat=$((got - finished))
[ "$lat" -lt 1000 ] || fail "die event arrived ${lat} ms after the exit"
ok "die event: exit=3 ${lat} ms after the container's FinishedAt; inspect: exited, exit 3"
out=$("$probe" kill "$id3") && fail "kill of a stopped container succeeded"
[[ $out == "error EBUSY: "* ]] || fail "kill of a stopped container: $out"
ok "kill of a stopped container: EBUSY"

out=$("$probe" create "perch-test-sleep-$tag" '{"Image":"'"$image:1"'","Cmd":["-1"],"Labels":{"perch.owner":"test"}}') ||
	fail "create sleeper: $out"
ids=${out#id=}
containers+=("$ids")
"$probe" start "$ids" >/dev/null || fail "start sleeper"
out=$("$probe" remove "$ids") && fail "remove of a running container without force succeeded"
[[ $out == "error EBUSY: "* ]] || fail "remove running without force: $out"
pid=$("$probe" inspect "$ids" | sed -n 's/^pid=//p')
[ "${pid:-0}" -gt 1 ] || fail "no pid for the sleeper"
kill -9 "$pid"
for ((i = 0; i < 50; i++)); do grep -q "action=die id=$ids" "$tmp/events.log" && break; sleep 0.1; done
line=$(grep "action=die id=$ids" "$tmp/events.log") || fail "no die event after kill -9: $(cat "$tmp/events.log")"
[[ $line == *" exit=137 "* ]] || fail "die after kill -9: $line"
ok "kill -9 of pid $pid from the host: die event, exit=137; remove while running: EBUSY"
for ((i = 0; i < 50; i++)); do running=0; kill -0 "$ev_pid" 2>/dev/null && running=1; [ $running = 0 ] && break; sleep 0.1; done
"$probe" remove "$id3" >/dev/null || fail "remove $id3"
"$probe" remove "$ids" force >/dev/null || fail "remove $ids"
out=$("$probe" inspect "$id3") && fail "inspect after remove succeeded"
[[ $out == "error ENOENT: "* ]] || fail "inspect after remove: $out"
containers=()
grep -q '^events end dies=2' "$tmp/events.log" || fail "events probe did not end after 2 dies: $(tail -3 "$tmp/events.log")"
ok "removed both containers; inspect after remove: ENOENT"

# --- the registry down ---------------------------------------------------------------------------
"$probe" image-rm "$image:1" >/dev/null || fail "image-rm"
# Only the registry: a plain `down` would also stop a dockerd this test's `up`
# started (as on a fresh CI machine), and the pull would then fail for the
# wrong reason.
timeout 120 bash "$perch_env" registry-down >/dev/null 2>&1 || fail "perch-env registry-down"
out=$(timeout 60 "$probe" pull "$image" 1 -u "$PERCH_REGISTRY_USER" -p "$pwfile" -r "$PERCH_REGISTRY") &&
	fail "pull from a stopped registry succeeded"
last=$(tail -1 <<<"$out")
[[ $last == "error EIO: "* && $last == *"connection refused"* ]] || fail "registry down: $out"
ok "registry down: $last"
image=

# --- the events stream across a daemon restart (private dockerd) --------------------------------------
if [ "${PERCH_TEST_PRIVATE_DOCKERD:-1}" = 1 ]; then
	pdir=$tmp/penv
	env_dirs+=("$pdir")
	psock=$tmp/pd/docker.sock
	penv() { PERCH_ENV_DIR=$pdir PERCH_DOCKER_SOCK=$psock PERCH_REGISTRY_PORT=$pport timeout 180 bash "$perch_env" "$@"; }
	pport=$(free_port)
	penv up >"$tmp/pup.log" 2>&1 || { tail -20 "$tmp/pup.log"; fail "private engine up"; }
	"$probe" -s "$psock" events 90 >"$tmp/pevents.log" 2>&1 &
	bg_pids+=($!)
	for ((i = 0; i < 50; i++)); do grep -q '^connected' "$tmp/pevents.log" && break; sleep 0.1; done
	grep -q '^connected' "$tmp/pevents.log" || fail "private events: no connect: $(cat "$tmp/pevents.log")"
	penv down >"$tmp/pdown.log" 2>&1 || fail "private engine down"
	for ((i = 0; i < 50; i++)); do grep -q '^disconnected' "$tmp/pevents.log" && break; sleep 0.1; done
	line=$(grep '^disconnected' "$tmp/pevents.log" | head -1) || fail "no disconnected: $(cat "$tmp/pevents.log")"
	[[ $line == *"err=ECLOSED"* ]] || fail "disconnected: $line"
	ok "private dockerd stopped: $line"
	penv up >"$tmp/pup2.log" 2>&1 || { tail -20 "$tmp/pup2.log"; fail "private engine up again"; }
	for ((i = 0; i < 100; i++)); do [ "$(grep -c '^connected' "$tmp/pevents.log")" -ge 2 ] && break; sleep 0.1; done
	[ "$(grep -c '^connected' "$tmp/pevents.log")" -ge 2 ] || fail "no reconnect: $(cat "$tmp/pevents.log")"
	[ "$(grep -c '^disconnected' "$tmp/pevents.log")" = 1 ] || fail "more than one disconnected per outage: $(cat "$tmp/pevents.log")"
	ok "private dockerd back: events stream reconnected (one DISCONNECTED, then CONNECTED)"
fi
