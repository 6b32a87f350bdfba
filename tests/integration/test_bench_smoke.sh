#!/usr/bin/env bash
# test_bench_smoke.sh — proves the benchmark harness works (make bench runs
# the full comparisons): tests/bench/run.sh --smoke, that is one short QoS 1
# run per transport against perch-hub and mosquitto and the memory probe with
# 100 clients, then tests/bench/agent_bench.sh --smoke against the real Docker
# engine and a private registry (deploy/perch-env.sh with its own state dir and
# a free port): one container a side (perch-agent, docker --restart always)
# crashed three times, a 2-module deployment by both, the agent's memory.
#
# It checks that the runs complete without lost messages and that the agent's
# rows are well formed: every planned crash measured, every time and memory
# figure a positive number, every table row complete. It asserts no timing
# (speed is reported by make bench, never tested).
#
# Run by tests/run.sh (PERCH_ROOT = repo root, O = build dir);
# alone: bash tests/integration/test_bench_smoke.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

test_setup
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-bench.XXXXXX")
start=$SECONDS

unset PERCH_DOCKER_SOCK PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60

cleanup() {
	local rc=$?
	set +e
	timeout 120 bash deploy/perch-env.sh down >/dev/null 2>&1
	rm -rf "$tmp"
	if [ $rc -eq 0 ]; then
		echo "test_bench_smoke: passed in $((SECONDS - start))s"
	else
		echo "test_bench_smoke: FAILED (exit $rc)"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

timeout 180 bash deploy/perch-env.sh up >"$tmp/env-up.log" 2>&1 ||
	{ tail "$tmp/env-up.log"; fail "perch-env.sh up failed"; }
ok "private registry on port $PERCH_REGISTRY_PORT"

rc=0
timeout 900 tests/bench/run.sh --smoke >"$tmp/bench.out" 2>&1 || rc=$?
cat "$tmp/bench.out"
[ $rc = 0 ] || fail "tests/bench/run.sh --smoke exited $rc"
grep -q '^bench smoke: ok' "$tmp/bench.out" || fail "the broker smoke did not report ok"
grep -q '^agent bench smoke: ok' "$tmp/bench.out" || fail "the agent smoke did not report ok"
ok "run.sh --smoke: broker runs and agent runs completed"
smd=$O/bench/smoke/results.md
for r in plain routed; do
	grep -Eq "^\| $r \| [0-9]+ \| [0-9.]+ (µs|ms) \| [0-9.]+ (µs|ms) \| (—|[0-9.]+x) \|$" "$smd" ||
		fail "no well-formed routed-throughput row ($r) in $smd: $(grep -F "| $r |" "$smd")"
done
ok "routed throughput (module -> route WHERE \$body -> module input) next to plain pub/sub"

# --- the agent's raw results: complete and sane ------------------------------------
R=$O/bench/smoke/raw/agent.json
[ -s "$R" ] || fail "$R missing"
K=$(jq -r .crashes "$R") D=$(jq -r .deploy_modules "$R") N=$(jq -r .modules "$R")
for side in docker agent; do
	jq -e --arg s "$side" --argjson p $((N * K)) '
		.crash[] | select(.side == $s)
		| .planned == $p and .dies == $p and .missing == 0 and .all.n == $p
		  and (.samples_ms | length) == $p and all(.samples_ms[]; type == "number" and . > 0)
		  and .all.min_ms <= .all.median_ms and .all.median_ms <= .all.p99_ms
		  and .all.p99_ms <= .all.max_ms and .first.n == $N' --argjson N "$N" "$R" >/dev/null ||
		fail "crash results of '$side' incomplete or malformed: $(jq -c --arg s "$side" '.crash[] | select(.side == $s) | del(.samples_ms)' "$R")"
	ok "$side: $((N * K)) crashes measured, die to start, min <= median <= p99 <= max"
done
for who in agent docker; do
	for c in present pulled; do
		jq -e --arg w "$who" --arg c "$c" --argjson d "$D" '
			[.deploy[] | select(.who == $w and .images == $c)] | length == 1 and
			(.[0] | .modules == $d and (.ms | type == "number" and . > 0)
			        and (.last_start_ms | type == "number" and . > 0)
			        and (if $w == "agent" then .rss_kb > 0 and .hwm_kb >= .rss_kb else true end))' "$R" >/dev/null ||
			fail "deployment result of $who ($c) missing or malformed: $(jq -c .deploy "$R")"
	done
done
ok "deployment of $D modules: perch-agent and docker run, images present and pulled"
jq -e '(.memory | length) >= 1 and all(.memory[]; .rss_kb > 0 and .hwm_kb >= .rss_kb)' "$R" >/dev/null ||
	fail "agent memory rows malformed: $(jq -c .memory "$R")"
[ "$(jq '.notes | length' "$R")" = 0 ] || fail "notes: $(jq -c .notes "$R")"
ok "agent memory measured (VmRSS, VmHWM); no notes"

# --- the report: every table row complete ------------------------------------------
md=$O/bench/smoke/agent.md
[ -s "$md" ] || fail "$md missing"
# Each row has as many cells as its table's header, and no empty cell.
awk -F'|' '/^\|/ { if (!hdr) { hdr = NF; next } if (NF != hdr) { print "cells: " $0; bad = 1 }
		for (i = 2; i < NF; i++) if ($i ~ /^ *$/) { print "empty cell: " $0; bad = 1 } }
	!/^\|/ { hdr = 0 } END { exit bad }' "$md" || fail "malformed table rows in $md"
t='[0-9]+(\.[0-9])? (ms|s)'
grep -Eq "^\| Docker \`--restart always\` \| [^|]+ \| $((N * K)) of $((N * K)) \| $t \| $t \| — \| — \| — \|$" "$md" ||
	fail "no well-formed Docker crash row in $md"
grep -Eq "^\| perch-agent \| [^|]+ \| $((N * K)) of $((N * K)) \| $t \| $t \| [0-9.]+x \| [0-9.]+x \| < 1x \|$" "$md" ||
	fail "no well-formed perch-agent crash row in $md"
for c in present pulled; do
	grep -Eq "^\| $c \| $D \| $t \| $t \| $t \| [0-9.]+x \|$" "$md" || fail "no well-formed deployment row ($c) in $md"
done
[ "$(grep -Ec '^\| [^|]+ \| [0-9]+\.[0-9] MB \| [0-9]+\.[0-9] MB \| < 6 MB \|$' "$md")" -ge 3 ] ||
	fail "fewer than 3 well-formed memory rows in $md"
ok "$md: crash, deployment and memory rows well formed"
