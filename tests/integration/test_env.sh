#!/usr/bin/env bash
# tests/integration/test_env.sh — deploy/perch-env.sh against the real Docker
# engine and Debian's docker-registry: `up` (twice: the second starts nothing),
# a FROM scratch image pushed with the client's login, the registry's 401
# without credentials, a pull through the Engine API with X-Registry-Auth (and
# an auth error with a wrong password), the pulled image run, and `down`
# stopping the registry while a pre-existing engine keeps answering.
#
# Run by tests/run.sh (PERCH_ROOT = repo root); alone: bash tests/integration/test_env.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

root=${PERCH_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
perch_env=$root/deploy/perch-env.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-env.XXXXXX")
start=$SECONDS




unset PERCH_DOCKER_SOCK PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60
sock=/var/run/docker.sock
image=127.0.0.1:$PERCH_REGISTRY_PORT/perch-test/hello
api() { curl -s --max-time 60 --unix-socket "$sock" "$@"; }
engine_answers() { [ "$(curl -s --max-time 3 --unix-socket "$sock" http://localhost/_ping 2>/dev/null)" = OK ]; }

cleanup() {
	local rc=$?
	set +e
	if [ -n "${DOCKER_CONFIG:-}" ]; then
		timeout 60 docker rmi -f "$image:1" >/dev/null 2>&1
	fi
	timeout 120 bash "$perch_env" down >/dev/null 2>&1
	rm -rf "$tmp"
	if [ $rc -eq 0 ]; then echo "test_env: passed in $((SECONDS - start))s"; else echo "test_env: FAILED (exit $rc)"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

engine_before=0
if engine_answers; then engine_before=1; fi
echo "# state dir $PERCH_ENV_DIR, registry port $PERCH_REGISTRY_PORT, engine answered before: $engine_before"

# --- up, twice ---------------------------------------------------------------
timeout 180 bash "$perch_env" up || fail "first up failed"
engine_answers || fail "no engine answers on $sock after up"
[ -f "$PERCH_ENV_DIR/registry.pid" ] || fail "up recorded no registry pid"
reg_pid=$(cat "$PERCH_ENV_DIR/registry.pid")
running "$reg_pid" || fail "registry pid $reg_pid is not running"
ok "up: engine answers, registry runs (pid $reg_pid)"
if [ "$engine_before" = 1 ] && [ -f "$PERCH_ENV_DIR/dockerd.pid" ]; then
	fail "up recorded a dockerd pid although an engine was already running"
fi
[ "$(stat -c %a "$PERCH_ENV_DIR/registry.password")" = 600 ] || fail "registry.password is not mode 0600"
ok "password file is mode 0600"
if grep -q "$(cat "$PERCH_ENV_DIR/registry.password")" "$PERCH_ENV_DIR/registry/htpasswd"; then
	fail "the password is in clear in htpasswd"
fi
grep -q '^perch:[$]2y[$]' "$PERCH_ENV_DIR/registry/htpasswd" || fail "htpasswd entry is not bcrypt"
ok "htpasswd holds a bcrypt hash"

dockerd_before=$(cat "$PERCH_ENV_DIR/dockerd.pid" 2>/dev/null || echo none)
out=$(timeout 120 bash "$perch_env" up 2>&1) || fail "second up failed: $out"
[ "$(cat "$PERCH_ENV_DIR/registry.pid")" = "$reg_pid" ] || fail "second up started another registry"
[ "$(cat "$PERCH_ENV_DIR/dockerd.pid" 2>/dev/null || echo none)" = "$dockerd_before" ] ||
	fail "second up started another dockerd"
[[ $out == *"already runs"* ]] || fail "second up did not say the registry already runs: $out"
ok "second up is a no-op (same registry pid $reg_pid)"

bash "$perch_env" status || fail "status says something is down"
ok "status exits 0"

eval "$(bash "$perch_env" env)"
[ "$PERCH_REGISTRY" = "127.0.0.1:$PERCH_REGISTRY_PORT" ] || fail "env: PERCH_REGISTRY=$PERCH_REGISTRY"
[ "$PERCH_REGISTRY_USER" = perch ] || fail "env: PERCH_REGISTRY_USER=$PERCH_REGISTRY_USER"
[ "$DOCKER_HOST" = "unix://$sock" ] || fail "env: DOCKER_HOST=$DOCKER_HOST"
[ -f "$DOCKER_CONFIG/config.json" ] || fail "env: no docker login config in $DOCKER_CONFIG"
grep -q "\"$PERCH_REGISTRY\"" "$DOCKER_CONFIG/config.json" || fail "docker config has no login for $PERCH_REGISTRY"
ok "env exports registry, user, password file, socket, DOCKER_HOST, DOCKER_CONFIG (logged in)"
password=$(cat "$PERCH_REGISTRY_PASSWORD_FILE")

# --- build and push a FROM scratch image ---------------------------------------
mkdir -p "$tmp/ctx"
printf '#include <stdio.h>\nint main(void) { puts("hello from perch"); return 0; }\n' >"$tmp/ctx/hello.c"
gcc -static -O2 -o "$tmp/ctx/hello" "$tmp/ctx/hello.c" || fail "gcc -static failed"
printf 'FROM scratch\nCOPY hello /hello\nENTRYPOINT ["/hello"]\n' >"$tmp/ctx/Dockerfile"
DOCKER_BUILDKIT=0 timeout 120 docker build -q -t "$image:1" "$tmp/ctx" >/dev/null 2>"$tmp/build.err" ||
	fail "docker build failed: $(tail -3 "$tmp/build.err")"
ok "built $image:1 FROM scratch (classic builder)"
timeout 120 docker push "$image:1" >"$tmp/push.out" 2>&1 || fail "docker push failed: $(tail -3 "$tmp/push.out")"
ok "pushed $image:1 with the login of up"

# --- registry auth -------------------------------------------------------------
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$PERCH_REGISTRY/v2/_catalog")
[ "$code" = 401 ] || fail "registry without credentials answered $code, not 401"
ok "registry without credentials: 401"
# Credentials through curl's config on stdin: never on a command line.
catalog=$(printf 'user = "%s:%s"\n' "$PERCH_REGISTRY_USER" "$password" |
	curl -s --max-time 10 -K - "http://$PERCH_REGISTRY/v2/_catalog")
[[ $catalog == *'"perch-test/hello"'* ]] || fail "catalog with credentials: $catalog"
ok "registry with credentials lists perch-test/hello: $catalog"

# --- pull through the Engine API --------------------------------------------------
timeout 60 docker rmi "$image:1" >/dev/null || fail "docker rmi failed"
if docker image inspect "$image:1" >/dev/null 2>&1; then fail "image still present after rmi"; fi
ok "removed the local image"

# pull PASSWORD: POST /images/create with X-Registry-Auth; prints the response
# (a JSON progress stream, or an error object) and then its HTTP status alone
# on the last line.
pull() {
	local auth
	auth=$(printf '{"username":"%s","password":"%s","serveraddress":"%s"}' \
		"$PERCH_REGISTRY_USER" "$1" "$PERCH_REGISTRY" | base64 -w0 | tr '+/' '-_')
	(umask 077 && printf 'X-Registry-Auth: %s\n' "$auth" >"$tmp/auth.header")
	api -X POST -H @"$tmp/auth.header" -w '\n%{http_code}' \
		"http://localhost/v1.41/images/create?fromImage=$PERCH_REGISTRY/perch-test/hello&tag=1"
	rm -f "$tmp/auth.header"
}

# The engine answers a failed auth before the stream starts (HTTP 500 with
# {"message": ...}) or, once it has started, with an "error" in the stream.
stream=$(pull "wrong-$password")
status=${stream##*$'\n'}
[[ $stream == *'"error'* || $status != 200 ]] || fail "pull with a wrong password reported no error: $stream"
[[ $stream == *unauthorized* || $stream == *"authentication required"* ]] ||
	fail "pull with a wrong password: error is not about auth: $stream"
if docker image inspect "$image:1" >/dev/null 2>&1; then fail "wrong password still pulled the image"; fi
ok "Engine API pull with a wrong password: HTTP $status, $(printf '%s' "$stream" | head -1)"

t0=$(date +%s%N)
stream=$(pull "$password")
t1=$(date +%s%N)
[ "${stream##*$'\n'}" = 200 ] || fail "pull with the right password: HTTP ${stream##*$'\n'}: $stream"
[[ $stream != *'"error'* ]] || fail "pull with the right password failed: $stream"
[[ $stream == *"Downloaded newer image"* ]] || fail "pull stream has no 'Downloaded newer image': $stream"
docker image inspect "$image:1" >/dev/null 2>&1 || fail "image not present after the pull"
ok "Engine API pull with X-Registry-Auth succeeded in $(((t1 - t0) / 1000000)) ms"

out=$(timeout 60 docker run --rm "$image:1") || fail "docker run failed"
[ "$out" = "hello from perch" ] || fail "container printed '$out'"
ok "the pulled image runs: '$out'"

# --- down ------------------------------------------------------------------------
timeout 120 docker rmi "$image:1" >/dev/null
timeout 120 bash "$perch_env" down || fail "down failed"
for ((i = 0; i < 40; i++)); do running "$reg_pid" || break; sleep 0.25; done
if running "$reg_pid"; then fail "registry pid $reg_pid still runs after down"; fi
[ ! -f "$PERCH_ENV_DIR/registry.pid" ] || fail "registry.pid left after down"
if curl -s -o /dev/null --max-time 3 "http://$PERCH_REGISTRY/v2/"; then fail "port $PERCH_REGISTRY_PORT still answers after down"; fi
[ -z "$(ss -Hltn "sport = :$PERCH_REGISTRY_PORT")" ] || fail "something still listens on $PERCH_REGISTRY_PORT"
ok "down stopped the registry (pid gone, port closed)"
if [ "$engine_before" = 1 ]; then
	engine_answers || fail "the pre-existing engine no longer answers after down"
	ok "the pre-existing engine still answers"
else
	if engine_answers; then fail "down left running the engine that up started"; fi
	ok "down stopped the engine that up started"
fi
bash "$perch_env" status >/dev/null && fail "status exits 0 with the registry down"
ok "status exits non-zero after down"
