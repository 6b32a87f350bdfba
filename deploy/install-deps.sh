#!/usr/bin/env bash
# deploy/install-deps.sh — install every Debian package Perch needs to build,
# lint, fuzz and test, and the npm packages of the JavaScript test clients.
#
# Usage: deploy/install-deps.sh [--check]
#
#   (no flag)  Install what is missing, as root (or through sudo), with
#              DEBIAN_FRONTEND=noninteractive. Idempotent: when everything is
#              present it prints nothing and exits 0 at once (dpkg-query only;
#              `apt-get update` runs only when a package is missing). Then, if
#              tests/package-lock.json exists and tests/node_modules is missing
#              or older than it, runs `npm ci` in tests/ (quietly).
#   --check    Install nothing: list what is missing, one line each, and exit 1
#              if anything is (0 when all is present).
#
# Node.js: Debian's nodejs and npm are installed only when no `node` is on PATH,
# so a newer Node.js installed by other means is never replaced.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }

check_only=0
case "${1:-}" in
	"") ;;
	--check) check_only=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "install-deps: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
	# build and lint
	build-essential pkg-config clang clang-tidy clang-format cppcheck
	# libraries
	libwebsockets-dev libjansson-dev libmbedtls-dev libyaml-dev libsqlite3-dev
	sqlite3 libcmocka-dev
	
	# containers: engine, private registry, htpasswd
	docker.io docker-registry apache2-utils
	# MQTT peers and clients
	mosquitto mosquitto-clients python3-paho-mqtt python3-websockets
	# test tools (systemd: systemd-analyze checks the installed units)
	faketime curl iproute2 python3-pytest openssl systemd
	# the cloud's PostgreSQL backend
	postgresql
)
if ! command -v node >/dev/null 2>&1; then
	packages+=(nodejs npm)
fi

# Packages whose dpkg status is not "installed" (one dpkg-query for them all).
installed=" $(dpkg-query -W -f='${db:Status-Abbrev}|${Package}\n' "${packages[@]}" 2>/dev/null |
	awk -F'|' '$1 ~ /^.i/ { printf "%s ", $2 }' || true) "
missing=()
for p in "${packages[@]}"; do
	[[ $installed == *" $p "* ]] || missing+=("$p")
done

# Do tests/node_modules need (re)creating from the lock file?
lock=$root/tests/package-lock.json
modules=$root/tests/node_modules
need_npm=0
if [ -f "$lock" ] && { [ ! -d "$modules" ] || [ "$lock" -nt "$modules" ]; }; then
	need_npm=1
fi

if [ "$check_only" = 1 ]; then
	for p in "${missing[@]}"; do echo "missing package: $p"; done
	if [ "$need_npm" = 1 ]; then echo "missing or stale: tests/node_modules (npm ci)"; fi
	[ "${#missing[@]}" -eq 0 ] && [ "$need_npm" = 0 ]
	exit
fi

log=$(mktemp "${TMPDIR:-/tmp}/perch-install-deps.XXXXXX")
trap 'rm -f "$log"' EXIT

# Run "$@", its output kept in $log; on failure show the log's tail and stop.
quietly() {
	if ! "$@" >"$log" 2>&1; then
		echo "install-deps: failed: $*" >&2
		tail -n 20 "$log" | sed 's/^/  | /' >&2
		exit 1
	fi
}

if [ "${#missing[@]}" -gt 0 ]; then
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null 2>&1; then
			sudo=(sudo)
		else
			echo "install-deps: missing ${missing[*]}; run as root to install them" >&2
			exit 1
		fi
	fi
	echo "install-deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	quietly "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	quietly "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}"
fi

if [ "$need_npm" = 1 ]; then
	if ! command -v npm >/dev/null 2>&1; then
		echo "install-deps: npm not found on PATH; cannot install tests/node_modules" >&2
		exit 1
	fi
	echo "install-deps: npm ci in tests/" >&2
	quietly npm ci --prefix "$root/tests" --no-audit --no-fund --loglevel=error
	mkdir -p "$modules" && touch "$modules" # newer than the lock file from now on
fi
