#!/usr/bin/env bash
# tests/integration/test_env_private_dockerd.sh — deploy/perch-env.sh with a
# PERCH_DOCKER_SOCK of its own: `up` starts a private dockerd (own socket,
# data-root, exec-root, bridge), a second `up` starts nothing, a FROM scratch
# container runs there (also on a user-defined network with
# perch-hub:host-gateway, as modules will), an image goes through the registry,
# and `down` stops that dockerd while the main engine keeps answering.
#
# Run by tests/run.sh (PERCH_ROOT = repo root); alone:
#   bash tests/integration/test_env_private_dockerd.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

root=${PERCH_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
perch_env=$root/deploy/perch-env.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-penv.XXXXXX")
start=$SECONDS




main_sock=/var/run/docker.sock
main_answers() { [ "$(curl -s --max-time 3 --unix-socket "$main_sock" http://localhost/_ping 2>/dev/null)" = OK ]; }

unset PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_DOCKER_SOCK=$tmp/docker.sock PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60
sock=$PERCH_DOCKER_SOCK
api() { curl -s --max-time 30 --unix-socket "$sock" "$@"; }
answers() { [ "$(api --max-time 3 http://localhost/_ping 2>/dev/null)" = OK ]; }

cleanup() {
	local rc=$?
	set +e
	timeout 120 bash "$perch_env" down >/dev/null 2>&1
	# A dockerd killed hard may leave mounts under its data root.
	grep -o " $tmp/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf "$tmp"
	if [ $rc -eq 0 ]; then echo "test_env_private_dockerd: passed in $((SECONDS - start))s"; else echo "test_env_private_dockerd: FAILED (exit $rc)"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

main_before=0
docker0_before=0
if ip link show docker0 >/dev/null 2>&1; then docker0_before=1; fi
if main_answers; then main_before=1; fi
main_pid_before=$(curl -s --max-time 3 --unix-socket "$main_sock" http://localhost/info 2>/dev/null | grep -o '"ID":"[^"]*"' | head -1 || true)
echo "# private socket $sock, registry port $PERCH_REGISTRY_PORT, main engine answered before: $main_before"
if answers; then fail "something answers on $sock before up"; fi

# --- up starts a private engine ---------------------------------------------------
t0=$SECONDS
timeout 180 bash "$perch_env" up || fail "up failed"
answers || fail "no engine answers on $sock after up"
[ -f "$PERCH_ENV_DIR/dockerd.pid" ] || fail "up recorded no dockerd pid"
dpid=$(cat "$PERCH_ENV_DIR/dockerd.pid")
running "$dpid" || fail "dockerd pid $dpid is not running"
grep -q -- "-H unix://$sock" <(tr '\0' ' ' <"/proc/$dpid/cmdline") || fail "pid $dpid is not our private dockerd"
ok "up started a private dockerd (pid $dpid) in $((SECONDS - t0))s"
info=$(api http://localhost/info)
[[ $info == *"\"DockerRootDir\":\"$PERCH_ENV_DIR/"* ]] || fail "private engine's data root is not under the state dir: $info"
ok "its data root is under the state dir"
if [ "$main_before" = 1 ]; then
	main_answers || fail "main engine stopped answering"
	[ "$(curl -s --max-time 3 --unix-socket "$main_sock" http://localhost/info | grep -o '"ID":"[^"]*"' | head -1)" = "$main_pid_before" ] ||
		fail "the main engine's identity changed"
	ok "the main engine still answers, unchanged"
fi

reg_pid=$(cat "$PERCH_ENV_DIR/registry.pid")
timeout 120 bash "$perch_env" up 2>/dev/null || fail "second up failed"
[ "$(cat "$PERCH_ENV_DIR/dockerd.pid")" = "$dpid" ] || fail "second up started another dockerd"
[ "$(cat "$PERCH_ENV_DIR/registry.pid")" = "$reg_pid" ] || fail "second up started another registry"
ok "second up is a no-op (dockerd $dpid, registry $reg_pid)"

eval "$(bash "$perch_env" env)"
[ "$DOCKER_HOST" = "unix://$sock" ] || fail "env: DOCKER_HOST=$DOCKER_HOST"
ok "env points DOCKER_HOST at the private engine"

# --- a FROM scratch container on the private engine ---------------------------------
mkdir -p "$tmp/ctx"
printf '#include <stdio.h>\nint main(void) { puts("hello from a private engine"); return 0; }\n' >"$tmp/ctx/hello.c"
gcc -static -O2 -o "$tmp/ctx/hello" "$tmp/ctx/hello.c" || fail "gcc -static failed"
printf 'FROM scratch\nCOPY hello /hello\nENTRYPOINT ["/hello"]\n' >"$tmp/ctx/Dockerfile"
image=$PERCH_REGISTRY/perch-test/private-hello:1
DOCKER_BUILDKIT=0 timeout 120 docker build -q -t "$image" "$tmp/ctx" >/dev/null 2>"$tmp/build.err" ||
	fail "docker build failed: $(tail -3 "$tmp/build.err")"
out=$(timeout 60 docker run --rm "$image") || fail "docker run on the private engine failed"
[ "$out" = "hello from a private engine" ] || fail "container printed '$out'"
ok "a FROM scratch container runs on the private engine's default bridge"
timeout 30 docker network create perch-test-net >/dev/null || fail "network create failed"
out=$(timeout 60 docker run --rm --network perch-test-net --add-host perch-hub:host-gateway "$image") ||
	fail "docker run on a user-defined network with host-gateway failed"
[ "$out" = "hello from a private engine" ] || fail "container printed '$out'"
timeout 30 docker network rm perch-test-net >/dev/null
ok "and on a user-defined network with perch-hub:host-gateway"
if [ "$main_before" = 1 ]; then
	if DOCKER_HOST=unix://$main_sock docker image inspect "$image" >/dev/null 2>&1; then
		fail "the image built on the private engine shows up in the main engine"
	fi
	ok "the main engine does not see the private engine's image"
fi
timeout 120 docker push "$image" >"$tmp/push.out" 2>&1 || fail "push from the private engine failed: $(tail -3 "$tmp/push.out")"
ok "the private engine pushes to the registry with the login of up"

# --- a crashed private engine comes back with up (as agent tests will do) ----------
kill -9 "$dpid"
for ((i = 0; i < 40; i++)); do answers || break; sleep 0.25; done
if answers; then fail "the private engine still answers after kill -9"; fi
timeout 180 bash "$perch_env" up 2>/dev/null || fail "up after kill -9 of the private dockerd failed"
answers || fail "no engine answers on $sock after the second start"
new_dpid=$(cat "$PERCH_ENV_DIR/dockerd.pid")
if [ "$new_dpid" = "$dpid" ] || ! running "$new_dpid"; then fail "up did not start a new private dockerd"; fi
timeout 60 docker image inspect "$image" >/dev/null || fail "the image is gone after the restart"
ok "after kill -9, up starts a new private dockerd (pid $new_dpid) that keeps its images"
if [ "$docker0_before" = 1 ]; then
	ip link show docker0 >/dev/null 2>&1 || fail "the host's docker0 is gone after the private engine restarted"
	ok "the host's docker0 survives the private engine's restart"
fi
dpid=$new_dpid

# --- down ------------------------------------------------------------------------
bridge=$(cut -d' ' -f1 "$PERCH_ENV_DIR/private-bridge")
timeout 120 bash "$perch_env" down || fail "down failed"
for ((i = 0; i < 120; i++)); do running "$dpid" || break; sleep 0.25; done
if running "$dpid"; then fail "private dockerd $dpid still runs after down"; fi
if answers; then fail "the private socket still answers after down"; fi
[ ! -f "$PERCH_ENV_DIR/dockerd.pid" ] || fail "dockerd.pid left after down"
if ip link show "$bridge" >/dev/null 2>&1; then fail "bridge $bridge left after down"; fi
if grep -q " $tmp/" /proc/mounts; then fail "mounts left under $tmp after down: $(grep " $tmp/" /proc/mounts)"; fi
ok "down stopped the private dockerd (pid gone, socket silent, bridge $bridge removed, no mounts left)"
if running "$reg_pid"; then fail "registry $reg_pid still runs after down"; fi
ok "down stopped the registry"
if [ "$main_before" = 1 ]; then
	main_answers || fail "the main engine no longer answers after down"
	ok "the main engine still answers"
fi
