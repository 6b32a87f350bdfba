#!/usr/bin/env bash
# tests/run.sh — Perch's test runner: unit tests (cmocka), fuzz replays, then
# integration tests (tests/integration/test_*.sh), and a closing summary line
# "N passed, N failed". Exits non-zero when anything failed.
#
# Environment: O (build dir, default build), PERCH_TEST_ONLY=unit|integration,
# PERCH_TEST_FILTER=REGEX (run only tests whose name matches).
set -u
cd "$(dirname "$0")/.."
O=${O:-build}
export O PERCH_ROOT=$PWD
logdir=$O/test-logs
mkdir -p "$logdir"
passed=0 failed=0 failures=()
filter=${PERCH_TEST_FILTER:-.}

note_cmocka() { # $1 name, $2 log, $3 exit code
	local p f
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$2" | tail -1)
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$2" | tail -1)
	passed=$((passed + ${p:-0}))
	if [ "$3" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then f=1; fi
	failed=$((failed + ${f:-0}))
	if [ "${f:-0}" -ne 0 ]; then failures+=("$1"); fi
}

# pytest_count LOG WORD: the N of "N WORD" in a pytest summary line ("== 3
# failed, 97 passed, 2 skipped in 9.1s =="), or nothing.
pytest_count() {
	tail -n 3 "$1" | grep -E '^=+ .* in [0-9.]+s' | grep -oE "[0-9]+ $2" | grep -oE '^[0-9]+' | tail -1
}

run_one() { # $1 name, $2... command; one pass or fail (or pytest's counts)
	local name=$1; shift
	local log="$logdir/$name.log" start=$SECONDS p f
	if "$@" >"$log" 2>&1; then
		# A suite that ends with pytest's summary counts its cases.
		p=$(pytest_count "$log" passed)
		passed=$((passed + ${p:-1})); printf 'PASS %-40s %3ss%s\n' "$name" $((SECONDS - start)) "${p:+  ($p cases)}"
	else
		f=$(pytest_count "$log" failed)
		p=$(pytest_count "$log" passed)
		passed=$((passed + ${p:-0})); failed=$((failed + ${f:-1})); failures+=("$name")
		printf 'FAIL %-40s %3ss  (log: %s)\n' "$name" $((SECONDS - start)) "$log"
		tail -n 25 "$log" | sed 's/^/     | /'
	fi
}

if [ "${PERCH_TEST_ONLY:-unit}" = unit ] || [ -z "${PERCH_TEST_ONLY:-}" ]; then
	echo "== unit tests"
	for t in "$O"/test/*_test; do
		[ -x "$t" ] || continue
		name=$(basename "$t")
		[[ $name =~ $filter ]] || continue
		log="$logdir/$name.log"
		"$t" >"$log" 2>&1; rc=$?
		before=$failed
		note_cmocka "$name" "$log" $rc
		if [ $failed -ne $before ]; then
			echo "FAIL $name (log: $log)"; grep -E '^\[  (FAILED|ERROR)|Assert|error' "$log" | head -20 | sed 's/^/     | /'
		else
			echo "PASS $name ($(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1) cases)"
		fi
	done
	echo "== fuzz corpus and regression replays"
	for r in "$O"/test/replay_*; do
		[ -x "$r" ] || continue
		n=${r##*/replay_}
		[[ replay_$n =~ $filter ]] || continue
		run_one "replay_$n" "$r" "tests/fuzz/corpus/$n" "tests/fuzz/regress/$n"
	done
fi

if [ "${PERCH_TEST_ONLY:-integration}" = integration ] || [ -z "${PERCH_TEST_ONLY:-}" ]; then
	echo "== integration tests"
	for t in tests/integration/test_*.sh; do
		[ -e "$t" ] || continue
		name=$(basename "$t" .sh)
		[[ $name =~ $filter ]] || continue
		run_one "$name" bash "$t"
	done
fi

echo
if [ ${#failures[@]} -gt 0 ]; then echo "failed: ${failures[*]}"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
