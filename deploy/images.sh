#!/usr/bin/env bash
# deploy/images.sh — build the sample modules (deploy/modules/: the simulated
# temperature sensor and the filter) as static binaries, wrap each in a
# FROM scratch image, and push both to the local registry.
#
# Usage: deploy/images.sh [--no-push] [--node-sdk]
#
#   Binaries and build contexts go to $O/modules/<module>/ (O: the build dir,
#   default build); the project's libraries come from `make O=$O`. Images:
#     $PERCH_REGISTRY/perch/simulated-temperature-sensor:$PERCH_IMAGE_TAG
#     $PERCH_REGISTRY/perch/filter:$PERCH_IMAGE_TAG
#   with PERCH_REGISTRY and the Docker login taken from `deploy/perch-env.sh
#   env`; when the registry or engine does not answer, `perch-env.sh up` is
#   run first (same settings: PERCH_ENV_DIR, PERCH_REGISTRY_PORT, ...).
#   --no-push builds the images (tagged for the registry) without pushing.
#   --node-sdk builds, instead of the samples, the example module written
#   with the Azure IoT Node SDK (deploy/modules/node-sdk/module.js):
#     $PERCH_REGISTRY/perch/node-sdk-module:$PERCH_IMAGE_TAG
#   FROM scratch too: this machine's node (command -v node) with the shared
#   libraries ldd lists and the dynamic loader, and azure-iot-device,
#   azure-iot-device-mqtt and their dependencies from tests/node_modules
#   (npm ci --prefix tests). It is not part of the sample deployment.
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
mods=(temp-sensor filter)
for arg in "$@"; do
	case $arg in
	--no-push) push=0 ;;
	--node-sdk) mods=(node-sdk) ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "usage: deploy/images.sh [--no-push] [--node-sdk]" >&2; exit 2 ;;
	esac
done

die() { echo "$prog: error: $*" >&2; exit 1; }
say() { echo "$prog: $*" >&2; }

# module directory -> image name (as in the sample deployment manifest)
declare -A image_of=(
	[temp-sensor]=perch/simulated-temperature-sensor
	[filter]=perch/filter
	[node-sdk]=perch/node-sdk-module
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

# --- the Node SDK module: node, its libraries, the SDK -------------------------------
# node_sdk_context: fill $O/modules/node-sdk/ (Dockerfile, rootfs/). Files are
# replaced only when they changed, so that Docker's build cache holds.
node_sdk_context() {
	local out=$O/modules/node-sdk node lib
	local rootfs=$out/rootfs
	node=$(command -v node) || die "node is not installed"
	node=$(readlink -f "$node")
	[ -d tests/node_modules/azure-iot-device-mqtt ] ||
		die "tests/node_modules lacks the Azure IoT SDK: run npm ci --prefix tests"
	mkdir -p "$rootfs/usr/bin" "$rootfs/app"
	copy() { # SRC DEST
		mkdir -p "$(dirname "$2")"
		cmp -s "$1" "$2" || cp -fL "$1" "$2"
	}
	copy "$node" "$rootfs/usr/bin/node"
	# Every library ldd lists (by the path it resolved) and the loader.
	while read -r lib; do
		copy "$lib" "$rootfs$lib"
	done < <(ldd "$node" | sed -n -e 's/.*=> \(\/[^ ]*\) .*/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) .*/\1/p')
	[ -e "$rootfs/lib64/ld-linux-x86-64.so.2" ] || [ -e "$rootfs/lib/ld-linux-aarch64.so.1" ] ||
		die "ldd $node named no dynamic loader"
	# The SDK and what it needs, nothing else of tests/node_modules.
	local list
	list=$(node deploy/modules/node-sdk/deps.js tests/node_modules azure-iot-device \
		azure-iot-device-mqtt) || die "resolving the SDK's dependencies failed"
	rm -rf "$out/node_modules.new"
	mkdir -p "$out/node_modules.new"
	# shellcheck disable=SC2086 # one package directory per word
	tar -C tests/node_modules -cf - $list | tar -C "$out/node_modules.new" -xf -
	if diff -rq "$out/node_modules.new" "$rootfs/app/node_modules" >/dev/null 2>&1; then
		rm -rf "$out/node_modules.new"
	else
		rm -rf "$rootfs/app/node_modules"
		mv "$out/node_modules.new" "$rootfs/app/node_modules"
	fi
	copy deploy/modules/node-sdk/module.js "$rootfs/app/module.js"
	cp deploy/modules/node-sdk/Dockerfile "$out/Dockerfile"
	say "prepared $out: node $("$node" --version), $(wc -w <<<"$list") packages, $(du -sm "$rootfs" | cut -f1) MB"
}

# --- static binaries ---------------------------------------------------------------
# The project's libraries, built by the main Makefile — always the plain
# release build, in a folder of their own: under `make asan` the parent's
# SAN=1 reaches us through MAKEFLAGS, and sanitizer objects cannot be linked
# into a static binary.
libs=$O/modules/libs
[ "${mods[*]}" = node-sdk ] || env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s O="$libs" SAN= \
	"$libs/lib/libperch_common.a" "$libs/lib/libperch_proto.a" >&2 ||
	die "building the project's libraries failed"

# The project's strict flags; no PIE: a static binary that runs FROM scratch.
cflags=(-std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Wconversion -Wshadow -Wvla
	-Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition -Wformat=2 -Wundef
	-Wcast-align -Wimplicit-fallthrough -Wpointer-arith -Wwrite-strings
	-Wmissing-declarations -Wredundant-decls -fstack-protector-strong -D_FORTIFY_SOURCE=2
	-Icommon/include -Iproto/include)

for mod in "${mods[@]}"; do
	if [ "$mod" = node-sdk ]; then
		node_sdk_context
		continue
	fi
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
for mod in "${mods[@]}"; do
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
