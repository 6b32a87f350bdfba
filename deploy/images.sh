#!/usr/bin/env bash
# deploy/images.sh — build the sample modules (deploy/modules/: the simulated
# temperature sensor and the filter) as static binaries, wrap each in a
# FROM scratch image, and push both to the local registry.
#
# Usage: deploy/images.sh [--no-push]
#
#   Binaries and build contexts go to $O/modules/<module>/ (O: the build dir,
#   default build); the project's libraries come from `make O=$O`. Images:
#     $PERCH_REGISTRY/perch/simulated-temperature-sensor:$PERCH_IMAGE_TAG
#     $PERCH_REGISTRY/perch/filter:$PERCH_IMAGE_TAG
#   with PERCH_REGISTRY and the Docker login taken from `deploy/perch-env.sh
#   env`; when the registry or engine does not answer, `perch-env.sh up` is
#   run first (same settings: PERCH_ENV_DIR, PERCH_REGISTRY_PORT, ...).
#   --no-push builds the images (tagged for the registry) without pushing.
#   PERCH_IMAGE_TAG defaults to 1.0. Idempotent: building again reuses
#   Docker's cache, pushing again uploads nothing new. Prints one line per
#   image pushed: "pushed REF DIGEST".
set -euo pipefail

prog=images
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
O=${O:-build}
tag=${PERCH_IMAGE_TAG:-1.0}
push=1
case "${1:-}" in
	"") ;;
	--no-push) push=0 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "usage: deploy/images.sh [--no-push]" >&2; exit 2 ;;
esac

die() { echo "$prog: error: $*" >&2; exit 1; }
say() { echo "$prog: $*" >&2; }

# module directory -> image name (as in the sample deployment manifest)
declare -A image_of=(
	[temp-sensor]=perch/simulated-temperature-sensor
	[filter]=perch/filter
)
# extra static libraries per module
declare -A libs_of=(
	[temp-sensor]="-lm"
	[filter]="-ljansson -lm"
)

# --- the engine and registry ---------------------------------------------------
if ! bash deploy/perch-env.sh status >/dev/null 2>&1; then
	say "registry or engine not answering: running deploy/perch-env.sh up"
	bash deploy/perch-env.sh up >&2 || die "deploy/perch-env.sh up failed"
fi
eval "$(bash deploy/perch-env.sh env)"
[ -n "${PERCH_REGISTRY:-}" ] || die "deploy/perch-env.sh env gave no PERCH_REGISTRY"

# --- static binaries ---------------------------------------------------------------
# The project's libraries, built by the main Makefile — always the plain
# release build, in a folder of their own: under `make asan` the parent's
# SAN=1 reaches us through MAKEFLAGS, and sanitizer objects cannot be linked
# into a static binary.
libs=$O/modules/libs
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s O="$libs" SAN= \
	"$libs/lib/libperch_common.a" "$libs/lib/libperch_proto.a" >&2 ||
	die "building the project's libraries failed"

# The project's strict flags; no PIE: a static binary that runs FROM scratch.
cflags=(-std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Wconversion -Wshadow -Wvla
	-Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition -Wformat=2 -Wundef
	-Wcast-align -Wimplicit-fallthrough -Wpointer-arith -Wwrite-strings
	-Wmissing-declarations -Wredundant-decls -fstack-protector-strong -D_FORTIFY_SOURCE=2
	-Icommon/include -Iproto/include)

for mod in temp-sensor filter; do
	out=$O/modules/$mod
	mkdir -p "$out"
	# ld warns that a static getaddrinfo needs glibc's NSS libraries at run
	# time: not so for "files" and "dns", which are inside libc since glibc
	# 2.34 (Debian 12 has 2.36), and /etc/hosts and Docker's DNS are all a
	# module needs. That one warning is filtered out; any other is shown.
	# shellcheck disable=SC2086 # libs_of holds several words on purpose
	if ! gcc "${cflags[@]}" -static -s -o "$out/$mod.tmp" \
		"deploy/modules/$mod/main.c" deploy/modules/common/modclient.c \
		"$libs/lib/libperch_proto.a" "$libs/lib/libperch_common.a" ${libs_of[$mod]} \
		2>"$out/cc.log"; then
		cat "$out/cc.log" >&2
		die "compiling $mod failed"
	fi
	awk '/: in function .*:$/ { held = $0; next }
	     /statically linked applications requires at runtime/ { held = ""; next }
	     { if (held != "") print held; held = ""; print }
	     END { if (held != "") print held }' "$out/cc.log" >&2
	# Replace only when it changed, so that Docker's build cache holds.
	if cmp -s "$out/$mod.tmp" "$out/$mod"; then rm -f "$out/$mod.tmp"; else mv -f "$out/$mod.tmp" "$out/$mod"; fi
	cp "deploy/modules/$mod/Dockerfile" "$out/Dockerfile"
	say "built $out/$mod ($(stat -c %s "$out/$mod") bytes, static)"
done

# --- images ---------------------------------------------------------------------------
for mod in temp-sensor filter; do
	ref=$PERCH_REGISTRY/${image_of[$mod]}:$tag
	log=$O/modules/$mod/build.log
	DOCKER_BUILDKIT=0 timeout 300 docker build -t "$ref" "$O/modules/$mod" >"$log" 2>&1 ||
		{ tail -n 20 "$log" >&2; die "docker build of $ref failed"; }
	say "built image $ref"
	[ "$push" = 1 ] || continue
	log=$O/modules/$mod/push.log
	timeout 300 docker push "$ref" >"$log" 2>&1 ||
		{ tail -n 20 "$log" >&2; die "docker push of $ref failed (log: $log)"; }
	digest=$(sed -n 's/.*digest: \(sha256:[0-9a-f]*\).*/\1/p' "$log" | tail -1)
	echo "pushed $ref ${digest:-}"
done
