#!/usr/bin/env bash
# test_install.sh — `make install` under a DESTDIR: programs that exist go to
# PREFIX/bin, the default config to /etc/perch (kept if already there).
set -euo pipefail
cd "$PERCH_ROOT"
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
make -s O="$O" install DESTDIR="$dest" PREFIX=/usr >/dev/null
test -f "$dest/etc/perch/config.yaml" || { echo "config.yaml not installed"; exit 1; }
for b in "$O"/bin/*; do
	[ -e "$b" ] || continue
	test -x "$dest/usr/bin/$(basename "$b")" || { echo "$(basename "$b") not installed"; exit 1; }
done
echo "# operator's edit" >>"$dest/etc/perch/config.yaml"
make -s O="$O" install DESTDIR="$dest" PREFIX=/usr >/dev/null
grep -q "operator's edit" "$dest/etc/perch/config.yaml" || { echo "existing config overwritten"; exit 1; }
echo "install: ok"
