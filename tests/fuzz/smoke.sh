#!/usr/bin/env bash
# tests/fuzz/smoke.sh — runs each named libFuzzer target for FUZZ_SECONDS
# (default 20) over a scratch copy of its seed corpus, so CI exercises every
# target without growing the repository. A crash fails the run and leaves the
# input in $O/fuzz/artifacts/: fix it, then add it to tests/fuzz/regress/NAME/.
set -u
cd "$(dirname "$0")/../.."
O=${O:-build}
secs=${FUZZ_SECONDS:-20}
status=0
for name in "$@"; do
	bin=$O/fuzz/fuzz_$name
	work=$O/fuzz/work/$name
	art=$O/fuzz/artifacts/$name/
	rm -rf "$work"; mkdir -p "$work" "$art"
	cp tests/fuzz/corpus/"$name"/* "$work"/ 2>/dev/null || true
	[ -d tests/fuzz/regress/"$name" ] && cp tests/fuzz/regress/"$name"/* "$work"/ 2>/dev/null
	if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$art" "$work" >"$O/fuzz/$name.log" 2>&1; then
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$O/fuzz/$name.log")
		echo "fuzz $name: ${secs}s, ${execs:-?} inputs, no crash"
	else
		echo "fuzz $name: FAILED (log: $O/fuzz/$name.log, input in $art)"
		grep -E 'ERROR|SUMMARY|==[0-9]+==' "$O/fuzz/$name.log" | head -5
		status=1
	fi
done
exit $status
