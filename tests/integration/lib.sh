# tests/integration/lib.sh — helpers the integration tests share (sourced,
# not run): one line per check, free ports, live-process checks, bounded
# waits, stopping the perch-agent a test started.

# ok TEXT / fail TEXT: a passed check, or the failure that ends the test.
ok() { echo "ok   - $*"; }
fail() { echo "FAIL - $*" >&2; exit 1; }

# free_port: a TCP port nothing listens on.
free_port() {
	local p i
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % 40000))
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
