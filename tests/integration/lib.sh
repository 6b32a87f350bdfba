# tests/integration/lib.sh — helpers the integration tests share (sourced,
# not run): one line per check, free ports, live-process checks, bounded
# waits, stopping the perch-agent a test started.

# ok TEXT / fail TEXT: a passed check, or the failure that ends the test.
ok() { echo "ok   - $*"; }
fail() { echo "FAIL - $*" >&2; exit 1; }

# free_port: a TCP port nothing listens on.
free_port() {
	local p i lo
	# Below the kernel's ephemeral range (ip_local_port_range, 32768 up by
	# default): a port picked there can be taken by any outgoing connection
	# before the test's server binds it (seen: the registry's "address
	# already in use" right after dockerd started).
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
	[ "$lo" -gt 21000 ] 2>/dev/null || lo=32768
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % (lo - 20000)))
		[ -z "$(ss -Hltn "sport = :$p")" ] && { echo "$p"; return; }
	done
	fail "no free port found"
}

# running PID: is PID a live process? (A zombie is not: this machine's init
# reaps exited orphans late.)
running() {
	local st
	st=$(sed -n 's/^.*) \(.\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll (every 0.2 s) until COMMAND
# succeeds; fail with DESCRIPTION when it has not within SECONDS.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local end=$((SECONDS + secs))
	while ((SECONDS < end)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	fail "$what (not within ${secs}s)"
}

# stop_agent [SIGNAL]: stop the process whose pid is in $agent_pid (a
# perch-agent the test started) with SIGNAL (TERM), SIGKILL after 15 s;
# returns its exit status and clears agent_pid.
stop_agent() {
	[ -n "${agent_pid:-}" ] || return 0
	kill "-${1:-TERM}" "$agent_pid" 2>/dev/null || true
	for ((i = 0; i < 60; i++)); do running "$agent_pid" || break; sleep 0.25; done
	running "$agent_pid" && kill -KILL "$agent_pid" 2>/dev/null
	local rc=0
	wait "$agent_pid" 2>/dev/null || rc=$?
	agent_pid=
	return $rc
}

# agent_test_cleanup NAME: the EXIT trap of a test that runs perch-agent with
# the Docker engine and a perch-env of its own:
#   trap 'agent_test_cleanup test_x' EXIT
# With the test's exit status rc: stops the agent (stop_agent); runs the
# test's cleanup_extra function, if it defines one (it may read rc); on
# failure prints the last 40 lines of each $tmp/agent*.log; removes the
# containers labelled perch.instance=$inst (on the default engine and on each
# engine socket in the array docker_socks, if set), the network $net and the
# images in the array images; runs `perch-env.sh down` for each state
# directory in the array env_dirs (default: $PERCH_ENV_DIR); removes $tmp;
# prints "NAME: passed in Ns" (from $start) or "NAME: FAILED (exit rc)" and
# exits with rc.
agent_test_cleanup() {
	local rc=$? name=$1 f sock dir i
	set +eu
	stop_agent
	declare -F cleanup_extra >/dev/null && cleanup_extra
	if [ $rc -ne 0 ]; then
		for f in "$tmp"/agent*.log; do
			[ -f "$f" ] && { echo "--- $f (last 40 lines)"; tail -n 40 "$f"; }
		done
	fi
	# The test's network goes on every engine it used: a private engine
	# stopped with it still defined leaves its bridge on the host for good,
	# and enough of those exhaust Docker's address pools ("could not find an
	# available, non-overlapping IPv4 address pool").
	for sock in /var/run/docker.sock "${docker_socks[@]}"; do
		[ -S "$sock" ] || continue
		timeout 30 docker -H "unix://$sock" ps -aq --filter "label=perch.instance=$inst" |
			xargs -r timeout 60 docker -H "unix://$sock" rm -f >/dev/null 2>&1
		[ -n "$net" ] && timeout 60 docker -H "unix://$sock" network rm "$net" >/dev/null 2>&1
	done
	for i in "${images[@]}"; do timeout 60 docker rmi -f "$i" >/dev/null 2>&1; done
	[ ${#env_dirs[@]} -gt 0 ] || env_dirs=("$PERCH_ENV_DIR")
	for dir in "${env_dirs[@]}"; do
		PERCH_ENV_DIR=$dir timeout 120 bash deploy/perch-env.sh down >/dev/null 2>&1
	done
	[ -n "$tmp" ] && rm -rf "$tmp"
	if [ $rc -eq 0 ]; then echo "$name: passed in $((SECONDS - start))s"; else echo "$name: FAILED (exit $rc)"; fi
	exit $rc
}

# test_setup [VAR...]: what every integration test does first — cd to the
# repo root (PERCH_ROOT, else two levels above the test script), make O
# absolute and export it, and name the built programs agent_bin, hub_bin
# and sastool; each VAR named (e.g. agent_bin) must be an executable, or the
# test fails saying how to build it.
test_setup() {
	root=${PERCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[1]}")/../.." && pwd)}
	cd "$root"
	O=${O:-build}
	case $O in /*) ;; *) O=$root/$O ;; esac
	export O
	agent_bin=$O/bin/perch-agent
	hub_bin=$O/bin/perch-hub
	sastool=$O/test/tools/sastool
	local v
	for v in "$@"; do
		[ -x "${!v}" ] || fail "${!v} is not built (make O=$O all test)"
	done
}

# perch_env_up: a Docker engine and a private registry for $PERCH_ENV_DIR
# (deploy/perch-env.sh up; its log in $tmp/env-up.log), then its variables
# (PERCH_REGISTRY, PERCH_REGISTRY_PASSWORD_FILE, ...) in this shell.
perch_env_up() {
	timeout 180 bash deploy/perch-env.sh up >"$tmp/env-up.log" 2>&1 ||
		{ tail "$tmp/env-up.log"; fail "perch-env.sh up failed"; }
	eval "$(bash deploy/perch-env.sh env)"
}

# sleeper_image IMAGE: build IMAGE (FROM scratch, in $tmp/ctx) around a
# static program that sleeps until SIGTERM, then exits 0.
sleeper_image() {
	mkdir -p "$tmp/ctx"
	cat >"$tmp/ctx/sleeper.c" <<'C'
#include <signal.h>
#include <unistd.h>
static void on_term(int sig) { (void)sig; _exit(0); }
int main(void) { signal(SIGTERM, on_term); for (;;) pause(); }
C
	gcc -static -O2 -o "$tmp/ctx/sleeper" "$tmp/ctx/sleeper.c" || fail "gcc -static failed"
	printf 'FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT ["/sleeper"]\n' >"$tmp/ctx/Dockerfile"
	DOCKER_BUILDKIT=0 timeout 120 docker build -q -t "$1" "$tmp/ctx" >/dev/null 2>"$tmp/build.err" ||
		fail "docker build: $(tail -3 "$tmp/build.err")"
}
