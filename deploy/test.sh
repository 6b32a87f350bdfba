#!/usr/bin/env bash
# deploy/test.sh — the one command that runs Perch's tests on a fresh Debian 12
# machine: installs what is missing (deploy/install-deps.sh, quiet when all is
# present), builds, and runs `make test` (unit tests, fuzz-corpus replays and
# integration tests against the real Docker engine, registry and MQTT/Azure
# clients). Ends with the runner's "N passed, N failed" line; exits non-zero
# when any test failed.
#
# Usage: ./deploy/test.sh [make variables, e.g. PERCH_TEST_FILTER=config]
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
make -j"$(nproc)" all
make test "$@"
