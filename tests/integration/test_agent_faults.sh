#!/usr/bin/env bash
# tests/integration/test_agent_faults.sh — perch-agent when things go wrong,
# against the real Docker engine and a private registry with credentials
# (deploy/perch-env.sh, own state dir and port). One FROM scratch test image
# (/t: runs until TM_EXIT_AFTER_MS, exits TM_EXIT_CODE, exits 0 on SIGTERM;
# `/t health` exits TM_HEALTH) plays every module. In every case the status
# the agent reports (`perch-agent status --json`) is checked, not only the
# containers:
#   - restart policies: never (exit 3: failed, not restarted), on-failure
#     (exit 0: stopped; exit 3: restarted with backoff, status says when the
#     next try is), always (exit 0 and `docker kill`: restarted at once),
#     on-unhealthy (a failing Docker healthcheck: killed and restarted)
#   - pulls: a wrong registry password, a registry that is down, an image
#     that does not exist -> each module in backoff with the reason, the
#     others untouched, no password in the log; imagePullPolicy never with
#     the image absent -> failed, never pulled
#   - a hostile createOptions (Privileged, a host bind mount) -> the manifest
#     refused with the path, lastDesiredStatus 400, nothing touched
#   - one module's settings changed -> only it replaced, the old container
#     stopped gracefully (SIGTERM, exit 0, not SIGKILL)
#   - the agent killed (SIGKILL, PERCH_AGENT_CRASHPOINT) after a pull, after
#     a create, after the old container's stop and after its removal -> the
#     restarted agent converges: every module running, one container each
#   - the agent's device_id changed -> the modules recreated with it
#   - a private dockerd (own socket and data root) stopped and started again
#     -> status says the engine is gone, then the same containers run again
#     (not recreated, unless the engine refuses one for stale task state and
#     the agent says it replaced it)
# Removes only what it created (label perch.instance=faults-$$).
#
# Run by tests/run.sh (PERCH_ROOT = repo root, O = build dir);
# alone: bash tests/integration/test_agent_faults.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

test_setup agent_bin
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-faults.XXXXXX")
start=$SECONDS
inst=faults-$$
net=perch-test-faults-$$
tag=f$$
agent_pid=
images=()
env_dirs=()
docker_socks=()

unset PERCH_DOCKER_SOCK PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60
env_dirs+=("$PERCH_ENV_DIR")

trap 'agent_test_cleanup test_agent_faults' EXIT
trap 'exit 1' INT TERM

perch_env_up
password=$(cat "$PERCH_REGISTRY_PASSWORD_FILE")
reg=$PERCH_REGISTRY
regport=${reg##*:}

# --- the test image -----------------------------------------------------------------------
mkdir -p "$tmp/ctx"
cat >"$tmp/ctx/t.c" <<'EOF'
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static long env_long(const char *k, long dflt)
{
	const char *v = getenv(k);
	return v != NULL && *v != '\0' ? atol(v) : dflt;
}
static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}
int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "health") == 0)
		return (int)env_long("TM_HEALTH", 0);
	signal(SIGTERM, on_term);
	long ms = env_long("TM_EXIT_AFTER_MS", -1);
	if (ms < 0)
		for (;;)
			pause();
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
	return (int)env_long("TM_EXIT_CODE", 0);
}
EOF
gcc -static -O2 -o "$tmp/ctx/t" "$tmp/ctx/t.c" || fail "gcc -static failed"
printf 'FROM scratch\nCOPY t /t\nENTRYPOINT ["/t"]\n' >"$tmp/ctx/Dockerfile"
img=$reg/perch-test/faults:$tag
img2=$reg/perch-test/faults:$tag-b
images=("$img" "$img2")
DOCKER_BUILDKIT=0 timeout 120 docker build -q -t "$img" "$tmp/ctx" >/dev/null 2>"$tmp/build.err" ||
	fail "docker build: $(tail -3 "$tmp/build.err")"
docker tag "$img" "$img2"
timeout 120 docker push "$img" >"$tmp/push.out" 2>&1 || fail "docker push: $(tail -3 "$tmp/push.out")"
timeout 120 docker push "$img2" >>"$tmp/push.out" 2>&1 || fail "docker push: $(tail -3 "$tmp/push.out")"
timeout 60 docker rmi "$img2" >/dev/null || fail "docker rmi"
ok "test image built and pushed: $img (and $img2, removed locally)"

# --- helpers ---------------------------------------------------------------------------------
cat >"$tmp/config.yaml" <<YAML
device:
  key_file: $tmp/device/device.key
  certs_dir: $tmp/device/certs
  hub_deployment: $tmp/device/hub-deployment.json
agent:
  instance: $inst
  network: $net
  device_id: faults-$$
  stop_grace: 5s
  restart:
    base: 300ms
    max: 2s
    healthy: 4s
YAML

# mod NAME POLICY [ENV_JSON] [CREATE_OPTIONS_JSON_STRING] [IMAGE] [ORDER]: one module.
mod() {
	local name=$1 policy=$2 envj=${3:-"{}"} co=${4:-'""'} image=${5:-$img} order=${6:-1}
	printf '"%s": {"version": "1.0", "type": "docker", "status": "running", "restartPolicy": "%s",
	  "startupOrder": %s, "env": %s, "settings": {"image": "%s", "createOptions": %s}}' \
		"$name" "$policy" "$order" "$envj" "$image" "$co"
}

# manifest FILE MODULE_JSON...: a deployment with the registry credentials
# (right ones for 127.0.0.1:PORT, wrong ones for localhost:PORT).
manifest() {
	local file=$1 body
	shift
	body=$(IFS=,; echo "$*")
	cat >"$file.new" <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"registryCredentials": {
      "good": {"username": "$PERCH_REGISTRY_USER", "password": "$password", "address": "$reg"},
      "bad": {"username": "$PERCH_REGISTRY_USER", "password": "wrong-$password", "address": "localhost:$regport"}}}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "x"}},
                      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                  "settings": {"image": "x"}}},
    "modules": {$body}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}
}}
JSON
	mv "$file.new" "$file"
}

start_agent() { # LOG [ARGS...]
	local log=$1
	shift
	"$agent_bin" --config "$tmp/config.yaml" --data-dir "$tmp/agent" --no-hub "$@" >"$log" 2>&1 &
	agent_pid=$!
}

status_json() { timeout 15 "$agent_bin" status --config "$tmp/config.yaml" --data-dir "${sdir:-$tmp/agent}" --json; }

# field MODULE KEY: a field of the module's report ("" when absent).
field() {
	status_json | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
m = r["modules"].get(sys.argv[1]) if len(sys.argv) > 2 else r
key = sys.argv[-1]
print("" if m is None else m.get(key, ""))' "$@"
}

is() { [ "$(field "$1" "$2")" = "$3" ]; }
ge() { local v; v=$(field "$1" "$2"); [ -n "$v" ] && [ "$v" -ge "$3" ]; }
desc_has() { [[ $(field "$1" statusDescription) == *"$2"* ]]; }
# backoff_desc MODULE: its description says it waits to restart (kept in $d:
# read once, as the module may be running again a moment later)
backoff_desc() {
	d=$(field "$1" statusDescription)
	[[ $d =~ exited\ with\ code\ 3\;\ restart\ [0-9]+\ in\ [0-9.]+\ s ]]
}
cid() { docker inspect -f '{{.Id}}' "$1" 2>/dev/null; }
count_of() { docker ps -aq --filter "label=perch.instance=$inst" --filter "label=perch.module=$1" | wc -l; }

# --- restart policies ---------------------------------------------------------------------------
never=never-$$ of0=onfail0-$$ of3=onfail3-$$ al0=always0-$$ kil=kill-$$ unh=unhealthy-$$
exit3='{"TM_EXIT_AFTER_MS": {"value": "1500"}, "TM_EXIT_CODE": {"value": "3"}}'
exit0='{"TM_EXIT_AFTER_MS": {"value": "1500"}, "TM_EXIT_CODE": {"value": "0"}}'
hc='"{\"Healthcheck\":{\"Test\":[\"CMD\",\"/t\",\"health\"],\"Interval\":500000000,\"Timeout\":2000000000,\"Retries\":1}}"'
policies=("$(mod "$never" never "$exit3")" "$(mod "$of0" on-failure "$exit0")"
	"$(mod "$of3" on-failure "$exit3")" "$(mod "$al0" always "$exit0")" "$(mod "$kil" always)"
	"$(mod "$unh" on-unhealthy '{"TM_HEALTH": {"value": "1"}}' "$hc")")
manifest "$tmp/dep.json" "${policies[@]}"
start_agent "$tmp/agent1.log" --manifest "$tmp/dep.json"
wait_for 60 "$kil running" is "$kil" runtimeStatus running
wait_for 30 "$never failed after its exit 3" is "$never" runtimeStatus failed
[ "$(field "$never" exitCode)" = 3 ] && [ "$(field "$never" restartCount)" = 0 ] ||
	fail "$never: $(status_json)"
[ "$(docker inspect -f '{{.State.Status}}' "$never")" = exited ] || fail "$never was restarted"
ok "never: exit 3 -> failed, exitCode 3, restartCount 0, container left exited"
wait_for 30 "$of0 stopped after its exit 0" is "$of0" runtimeStatus stopped
[ "$(field "$of0" restartCount)" = 0 ] || fail "$of0 restarted: $(status_json)"
ok "on-failure: exit 0 -> stopped, not restarted"
wait_for 30 "$al0 restarted after exit 0" ge "$al0" restartCount 1
ok "always: exit 0 -> restarted"
wait_for 40 "$of3 restarted 3 times" ge "$of3" restartCount 3
d=
end=$((SECONDS + 30))
until backoff_desc "$of3"; do
	((SECONDS < end)) || fail "$of3 not reported in backoff with its next try (last: $d)"
	sleep 0.2
done
ok "on-failure: exit 3 -> restarted again and again with backoff ('$d')"
old=$(cid "$kil")
timeout 30 docker kill "$kil" >/dev/null || fail "docker kill"
wait_for 20 "$kil restarted after docker kill" ge "$kil" restartCount 1
wait_for 20 "$kil running again" is "$kil" runtimeStatus running
[ "$(field "$kil" exitCode)" = 137 ] || fail "$kil exitCode $(field "$kil" exitCode)"
[ "$(cid "$kil")" = "$old" ] || fail "$kil was recreated instead of restarted"
ok "always: docker kill -> the same container running again, exitCode 137, restartCount 1"
if wait_for_unhealthy=$(timeout 40 bash -c "until docker inspect -f '{{.State.Health.Status}}' $unh 2>/dev/null | grep -qx unhealthy || grep -q 'module $unh: unhealthy' '$tmp/agent1.log'; do sleep 0.2; done; echo yes") &&
	[ "$wait_for_unhealthy" = yes ]; then
	wait_for 40 "$unh restarted for being unhealthy" ge "$unh" restartCount 1
	grep -q "module $unh: unhealthy, killing it to restart" "$tmp/agent1.log" || fail "no unhealthy kill logged"
	ok "on-unhealthy: a failing healthcheck -> killed and restarted (restartCount $(field "$unh" restartCount))"
else
	fail "$unh never became unhealthy: $(docker inspect -f '{{json .State.Health}}' "$unh" 2>&1 | head -c 400)"
fi

# --- pulls that fail ---------------------------------------------------------------------------
badpw=badpw-$$ missing=missing-$$ down=down-$$ nopull=nopull-$$
down_port=$(free_port)
kil_id=$(cid "$kil")
manifest "$tmp/dep.json" "$(mod "$kil" always)" \
	"$(mod "$badpw" always '{}' '""' "localhost:$regport/perch-test/faults:$tag-b")" \
	"$(mod "$missing" always '{}' '""' "$reg/perch-test/does-not-exist:1")" \
	"$(mod "$down" always '{}' '""' "127.0.0.1:$down_port/perch-test/faults:1")" \
	"$(mod "$nopull" always '{}' '""' "$img2" | sed 's/"restartPolicy"/"imagePullPolicy": "never", &/')"
kill -HUP "$agent_pid"
wait_for 60 "$badpw in backoff" is "$badpw" runtimeStatus backoff
wait_for 60 "$missing in backoff" is "$missing" runtimeStatus backoff
wait_for 60 "$down in backoff" is "$down" runtimeStatus backoff
d=$(field "$badpw" statusDescription)
[[ $d == *"(not authorized)"* && ($d == *unauthorized* || $d == *authentication*) && $d =~ retrying\ in\ [0-9.]+\ s ]] ||
	fail "wrong password: $d"
ok "wrong registry password: $badpw in backoff: '$d'"
d=$(field "$missing" statusDescription)
[[ $d == *"(not found)"* && $d == *"manifest unknown"* ]] || fail "missing image: $d"
ok "image that does not exist: '$d'"
# the module goes between backoff and another pull ("pulling ..."): wait for
# the refusal to be what it says, rather than read the description once
wait_for 30 "$down says the registry refused the connection" desc_has "$down" "connection refused"
d=$(field "$down" statusDescription)
ok "registry down: '$d'"
wait_for 30 "$nopull failed" is "$nopull" runtimeStatus failed
d=$(field "$nopull" statusDescription)
[[ $d == *"not on the device and imagePullPolicy is never"* ]] || fail "imagePullPolicy never: $d"
grep -q "module $nopull: pulling" "$tmp/agent1.log" && fail "$nopull was pulled despite imagePullPolicy never"
ok "imagePullPolicy never with the image absent: failed, not pulled: '$d'"
[ "$(cid "$kil")" = "$kil_id" ] && is "$kil" runtimeStatus running || fail "$kil disturbed by the failing pulls"
for m in "$never" "$of0" "$of3" "$al0" "$unh"; do [ "$(count_of "$m")" = 0 ] || fail "$m (dropped) still has a container"; done
grep -qF -- "$password" "$tmp"/agent1.log && fail "a registry password appears in the agent's log"
ok "$kil untouched; the modules dropped from the deployment removed; no password in the log"

# --- a hostile createOptions -------------------------------------------------------------------
evil=evil-$$
good_manifest=$(cat "$tmp/dep.json")
manifest "$tmp/dep.json" "$(mod "$kil" always)" \
	"$(mod "$evil" always '{}' '"{\"HostConfig\":{\"Privileged\":true,\"Binds\":[\"/etc:/host-etc\"]}}"')"
kill -HUP "$agent_pid"
path="modules.$evil.settings.createOptions.HostConfig.Privileged"
wait_for 20 "the hostile manifest refused in the log" grep -q "$path: refused by local policy" "$tmp/agent1.log"
grep -q "modules.$evil.settings.createOptions.HostConfig.Binds\[0\]: .*refused by local policy (agent.policy.bind_sources)" "$tmp/agent1.log" ||
	fail "bind mount refusal not logged: $(grep -m3 "$evil" "$tmp/agent1.log")"
refused_400() {
	status_json | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)["lastDesiredStatus"]
sys.exit(0 if s["code"] == 400 and "Privileged" in s["description"] else 1)'
}
wait_for 10 "lastDesiredStatus 400 naming Privileged" refused_400
[ "$(count_of "$evil")" = 0 ] || fail "a container was made for $evil"
[ "$(cid "$kil")" = "$kil_id" ] || fail "$kil touched by a refused manifest"
# (still the module whose pulls fail: in backoff, or pulling again just now)
[ "$(count_of "$badpw")" = 0 ] && [[ $(field "$badpw" statusDescription) == pull* ]] ||
	fail "the applied deployment changed: $badpw: $(field "$badpw" statusDescription)"
ok "hostile createOptions (Privileged, /etc bind) refused: path in the log, lastDesiredStatus 400, the applied deployment stays"
printf '%s\n' "$good_manifest" >"$tmp/dep.json"

# --- settings changed: graceful replacement ---------------------------------------------------
keep=keep-$$
manifest "$tmp/dep.json" "$(mod "$kil" always)" "$(mod "$keep" always)"
kill -HUP "$agent_pid"
wait_for 60 "$keep running" is "$keep" runtimeStatus running
keep_id=$(cid "$keep") old=$(cid "$kil")
t_change=$(date +%s)
manifest "$tmp/dep.json" "$(mod "$kil" always '{"CHANGED": {"value": "1"}}')" "$(mod "$keep" always)"
kill -HUP "$agent_pid"
wait_for 60 "$kil replaced" bash -c "[ -n \"\$(docker inspect -f '{{.Id}}' $kil 2>/dev/null)\" ] && [ \"\$(docker inspect -f '{{.Id}}' $kil)\" != $old ]"
wait_for 30 "$kil running after the change" is "$kil" runtimeStatus running
[ "$(cid "$keep")" = "$keep_id" ] || fail "$keep was recreated too"
ev=$(timeout 20 docker events --since "$t_change" --until "$(($(date +%s) + 1))" --filter "container=$old" \
	--format '{{.Action}} signal={{index .Actor.Attributes "signal"}} exit={{index .Actor.Attributes "exitCode"}}')
grep -q '^kill signal=15' <<<"$ev" || fail "the old container got no SIGTERM: $ev"
grep -q '^die .*exit=0' <<<"$ev" || fail "the old container did not exit by itself: $ev"
grep -q '^kill signal=9' <<<"$ev" && fail "the old container was SIGKILLed: $ev"
ok "env of $kil changed: the old container stopped gracefully (SIGTERM, exit 0), a new one runs; $keep kept"

# --- the agent killed at each step of a deployment --------------------------------------------
stop_agent || fail "the agent did not stop cleanly"
# crash POINT DESCRIPTION MODULES...: the agent applies MODULES with
# PERCH_AGENT_CRASHPOINT=POINT and must die there; restarted without it, it
# must converge.
crash() {
	local point=$1 what=$2 rc=0 m
	shift 2
	manifest "$tmp/dep.json" "$@"
	PERCH_AGENT_CRASHPOINT=$point start_agent "$tmp/agent-crash-$point.log" --manifest "$tmp/dep.json"
	for ((i = 0; i < 240; i++)); do running "$agent_pid" || break; sleep 0.25; done
	wait "$agent_pid" 2>/dev/null || rc=$?
	agent_pid=
	[ $rc = 137 ] || fail "crash point $point: the agent exited with $rc, not SIGKILL: $(tail -5 "$tmp/agent-crash-$point.log")"
	grep -q "crash point $point" "$tmp/agent-crash-$point.log" || fail "crash point $point not reached"
	start_agent "$tmp/agent-after-$point.log" --manifest "$tmp/dep.json"
	for m in "$kil" "$keep" "${extra[@]}"; do
		wait_for 60 "$m running after a crash at $point" is "$m" runtimeStatus running
		[ "$(count_of "$m")" = 1 ] || fail "$m has $(count_of "$m") containers after a crash at $point"
	done
	ok "agent killed $what; restarted: converged, one container per module"
	stop_agent || fail "the agent did not stop cleanly"
}
new1=new1-$$ new2=new2-$$
extra=("$new1")
crash pulled "between the pull and the create" "$(mod "$kil" always '{"CHANGED": {"value": "1"}}')" \
	"$(mod "$keep" always)" "$(mod "$new1" always '{}' '""' "$img2")"
extra=("$new1" "$new2")
crash created "between the create and the start" "$(mod "$kil" always '{"CHANGED": {"value": "1"}}')" \
	"$(mod "$keep" always)" "$(mod "$new1" always '{}' '""' "$img2")" "$(mod "$new2" always)"
crash old-stopped "between the stop of the old container and its removal" \
	"$(mod "$kil" always '{"CHANGED": {"value": "2"}}')" "$(mod "$keep" always)" \
	"$(mod "$new1" always '{}' '""' "$img2")" "$(mod "$new2" always)"
crash old-removed "between the removal of the old container and the create of the new" \
	"$(mod "$kil" always '{"CHANGED": {"value": "3"}}')" "$(mod "$keep" always)" \
	"$(mod "$new1" always '{}' '""' "$img2")" "$(mod "$new2" always)"
[ "$(docker inspect -f '{{index .Config.Labels "perch.hash"}}' "$kil")" != "" ] || fail "no hash label"
[ "$(cid "$keep")" = "$keep_id" ] || fail "$keep was recreated by the crashes"
ok "through four crashes, $keep was never recreated"

# --- the agent's own settings that modules see -----------------------------------------------
sed -i "s/device_id: faults-$$/device_id: faults-renamed-$$/" "$tmp/config.yaml"
start_agent "$tmp/agent-renamed.log" --manifest "$tmp/dep.json"
wait_for 60 "$keep recreated with the new device id" bash -c \
	"docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' $keep | grep -qx IOTEDGE_DEVICEID=faults-renamed-$$"
wait_for 30 "$keep running after the device id change" is "$keep" runtimeStatus running
[ "$(cid "$keep")" != "$keep_id" ] || fail "$keep not recreated"
ok "agent.device_id changed: the modules recreated with IOTEDGE_DEVICEID=faults-renamed-$$"
stop_agent || fail "the agent did not stop cleanly"

# --- the Docker daemon goes away and comes back (private dockerd) -----------------------------
if [ "${PERCH_TEST_PRIVATE_DOCKERD:-1}" = 1 ]; then
	pdir=$tmp/penv
	env_dirs+=("$pdir")
	psock=$tmp/pd/docker.sock
	docker_socks+=("$psock")
	pport=$(free_port)
	penv() { PERCH_ENV_DIR=$pdir PERCH_DOCKER_SOCK=$psock PERCH_REGISTRY_PORT=$pport timeout 180 bash deploy/perch-env.sh "$@"; }
	penv up >"$tmp/pup.log" 2>&1 || { tail -20 "$tmp/pup.log"; fail "private engine up"; }
	sdir=$tmp/agent-p
	manifest "$tmp/dep-p.json" "$(mod "$kil" always)" "$(mod "$keep" on-failure)"
	"$agent_bin" --config "$tmp/config.yaml" --data-dir "$sdir" --no-hub --docker-socket "$psock" \
		--manifest "$tmp/dep-p.json" >"$tmp/agent-private.log" 2>&1 &
	agent_pid=$!
	wait_for 90 "$kil running on the private engine" is "$kil" runtimeStatus running
	wait_for 30 "$keep running on the private engine" is "$keep" runtimeStatus running
	pd() { docker -H "unix://$psock" "$@"; }
	pk=$(pd inspect -f '{{.Id}}' "$kil") pkeep=$(pd inspect -f '{{.Id}}' "$keep")
	penv down >"$tmp/pdown.log" 2>&1 || fail "private engine down"
	wait_for 30 "status says the engine is gone" desc_has "$kil" "Docker engine not answering"
	[ "$(field "$kil" runtimeStatus)" = unknown ] || fail "runtimeStatus with the engine gone: $(field "$kil" runtimeStatus)"
	ok "private dockerd stopped: status unknown, '$(field "$kil" statusDescription)'"
	penv up >"$tmp/pup2.log" 2>&1 || { tail -20 "$tmp/pup2.log"; fail "private engine up again"; }
	# kept MODULE ID: the module runs its old container again, or the engine
	# refused to start that one for stale state of its last run (containerd's
	# shim directory survives a dockerd restart now and then) and the agent
	# said so and replaced it: the one case where a new container is right.
	replaced=()
	kept() {
		[ "$(pd inspect -f '{{.Id}}' "$1")" = "$2" ] && return 0
		grep -q "module $1: the engine kept a stale task for container ${2:0:12}: replaced" \
			"$tmp/agent-private.log" || fail "$1 was recreated after the engine restart"
		replaced+=("$1")
	}
	wait_for 60 "$kil running after the engine came back" is "$kil" runtimeStatus running
	kept "$kil" "$pk"
	[ "$(pd ps -aq --filter "label=perch.module=$kil" | wc -l)" = 1 ] || fail "duplicate containers"
	wait_for 60 "$keep (on-failure) running after the engine came back" is "$keep" runtimeStatus running
	kept "$keep" "$pkeep"
	ok "private dockerd back: both modules run again, $keep (on-failure) too; in their own containers${replaced[*]:+, except ${replaced[*]} (the engine kept a stale task: replaced)}"
	stop_agent || fail "the agent did not stop cleanly"
	timeout 60 docker -H "unix://$psock" ps -aq --filter "label=perch.instance=$inst" |
		xargs -r timeout 60 docker -H "unix://$psock" rm -f >/dev/null 2>&1
	# the agent's network too: an engine stopped with it leaves its bridge
	# on the host for good (enough of them exhaust Docker's address pools)
	timeout 60 docker -H "unix://$psock" network rm "$net" >/dev/null 2>&1
	penv down >/dev/null 2>&1
	unset sdir
fi
