#!/usr/bin/env bash
# test_bench_smoke.sh — proves the benchmark harness works (make bench runs
# the full comparison with mosquitto): one short QoS 1 run per transport
# against perch-hub and mosquitto, and the memory probe with 100 clients.
# It checks that the runs complete without lost messages; it asserts no
# timing (speed is reported by make bench, never tested).
set -euo pipefail
cd "$PERCH_ROOT"
exec tests/bench/run.sh --smoke
