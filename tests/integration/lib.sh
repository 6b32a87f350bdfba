# tests/integration/lib.sh — helpers the integration tests share (sourced,
# not run): one line per check, free ports, live-process checks.

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
