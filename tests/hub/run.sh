#!/usr/bin/env bash
# tests/hub/run.sh [--against mosquitto|perch] [pytest args...]
#
# perch-hub's integration suite: conformance with real clients (paho, MQTT.js,
# mosquitto_pub/sub) over TCP and WebSocket, hostile input, limits, metrics,
# restart persistence, a kill -9 crash test and a disk-full test. One line per
# test (PASSED / FAILED / SKIPPED with "n/a for mosquitto: ..."), pytest's closing
# summary line, exit code non-zero on any failure.
#
# --against mosquitto validates the tests themselves against Debian's mosquitto;
# tests of Perch-only behaviour are reported as "n/a for mosquitto".
# Environment: O (build dir, default build), PERCH_CRASH_ROUNDS (default 10),
# PERCH_HUB_LOG_LEVEL (default info), PERCH_HUB_TEST_TMP (where work dirs go).
set -u
cd "$(dirname "$0")/../.."
export PERCH_ROOT=$PWD O=${O:-build}
against=perch
if [ "${1:-}" = --against ]; then against=${2:?--against needs mosquitto or perch}; shift 2; fi
case $against in perch|mosquitto) ;; *) echo "unknown --against $against" >&2; exit 2 ;; esac
export PERCH_HUB_AGAINST=$against

PY=/usr/bin/python3
need_apt=()
$PY -c 'import paho.mqtt' 2>/dev/null || need_apt+=(python3-paho-mqtt)
$PY -c 'import pytest' 2>/dev/null || need_apt+=(python3-pytest)
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
[ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
if [ ${#need_apt[@]} -gt 0 ]; then
	echo "installing ${need_apt[*]} (deploy/install-deps.sh should have)"
	apt-get install -y "${need_apt[@]}" >/dev/null 2>&1 ||
		{ apt-get update >/dev/null 2>&1 && apt-get install -y "${need_apt[@]}" >/dev/null 2>&1; } ||
		{ echo "cannot install ${need_apt[*]}" >&2; exit 1; }
fi
if [ ! -d tests/node_modules/mqtt ]; then
	echo "tests/node_modules/mqtt missing: npm ci --prefix tests"
	npm ci --prefix tests >/dev/null 2>&1 || npm install --prefix tests >/dev/null 2>&1 ||
		echo "warning: could not install MQTT.js; its tests will fail" >&2
fi
if [ "$against" = perch ] && [ ! -x "$O/bin/perch-hub" ]; then
	echo "$O/bin/perch-hub is not built: run 'make O=$O' first" >&2
	exit 1
fi
echo "== perch-hub integration tests against $against"
exec $PY -m pytest tests/hub -v -rfEs -p no:cacheprovider -W ignore::DeprecationWarning --tb=short "$@"
