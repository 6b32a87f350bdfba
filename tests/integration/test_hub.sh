#!/usr/bin/env bash
# test_hub.sh — perch-hub's integration suite (tests/hub/, pytest): real
# clients (paho, MQTT.js, mosquitto_pub/sub) over TCP and WebSocket, hostile
# input, limits, metrics, restarts, a kill -9 crash test and a disk-full test.
# CI runs 10 crash rounds; `make soak` runs more (PERCH_CRASH_ROUNDS).
set -euo pipefail
cd "$PERCH_ROOT"
export PERCH_CRASH_ROUNDS=${PERCH_CRASH_ROUNDS:-10}
exec tests/hub/run.sh --against perch
