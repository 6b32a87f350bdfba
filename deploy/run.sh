#!/usr/bin/env bash
# deploy/run.sh — the one command that brings up Perch on this machine.
#
#   ./deploy/run.sh        install what is missing, start the environment
#                          (Docker engine, local registry), build Perch,
#                          and start it with the sample deployment
#   ./deploy/run.sh stop   stop what `run.sh` started
#   ./deploy/run.sh status show what is running
#
# State lives in PERCH_ENV_DIR (default /var/lib/perch-env). Running it again is
# harmless. It says plainly what exists and what does not yet: as of today
# the daemons (perch-hub, perch-agent) are not written, so it stops after the
# environment and the build.
set -euo pipefail
cd "$(dirname "$0")/.."
export PERCH_ENV_DIR=${PERCH_ENV_DIR:-/var/lib/perch-env}
cmd=${1:-up}

case "$cmd" in
stop | down)
	./deploy/perch-env.sh down
	exit 0
	;;
status)
	./deploy/perch-env.sh status
	exit 0
	;;
up) ;;
*)
	echo "usage: $0 [up|stop|status]" >&2
	exit 2
	;;
esac

./deploy/install-deps.sh
./deploy/perch-env.sh up
eval "$(./deploy/perch-env.sh env)"
make -j"$(nproc)" all >/dev/null

echo
echo "Perch environment is up:"
echo "  Docker engine:   ${DOCKER_HOST:-unix:///var/run/docker.sock}"
echo "  local registry:  $PERCH_REGISTRY (user $PERCH_REGISTRY_USER, password in $PERCH_REGISTRY_PASSWORD_FILE)"
echo "  built:           $(ls build/bin 2>/dev/null | tr '\n' ' ')(in build/bin), libraries in build/lib"
missing=()
for d in perch-hub perch-agent; do [ -x "build/bin/$d" ] || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
	echo
	echo "Not started: ${missing[*]} do(es) not exist yet in this version of Perch,"
	echo "so no device runs and no sample deployment is applied. See README.md, 'Status'."
	exit 0
fi
