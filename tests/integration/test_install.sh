#!/usr/bin/env bash
# test_install.sh — `make install` under a DESTDIR and a PREFIX that is not
# /usr: programs that exist go to PREFIX/bin, their systemd units to
# PREFIX/lib/systemd/system with PREFIX's paths written in (nothing of the
# templates left), the README and docs/ to PREFIX/share/doc/perch (the units'
# Documentation=), the default config to /etc/perch (0640, kept if already
# there). Then the same without DESTDIR into a scratch PREFIX, where
# `systemd-analyze verify` must accept every unit (it checks that ExecStart's
# program is there).
set -euo pipefail
cd "$PERCH_ROOT"
. tests/integration/lib.sh
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
prefix=/opt/perch
make -s O="$O" install DESTDIR="$dest" PREFIX=$prefix >/dev/null

conf=$dest/etc/perch/config.yaml
test -f "$conf" || fail "config.yaml not installed"
[ "$(stat -c %a "$conf")" = 640 ] || fail "config.yaml mode $(stat -c %a "$conf"), want 640"
ok "default config in /etc/perch, mode 0640"

for b in "$O"/bin/*; do
	[ -e "$b" ] || continue
	test -x "$dest$prefix/bin/$(basename "$b")" || fail "$(basename "$b") not installed"
done
ok "programs in $prefix/bin"

units=$dest$prefix/lib/systemd/system
n=0
for u in deploy/systemd/*.service; do
	name=$(basename "$u" .service)
	[ -x "$O/bin/$name" ] || continue
	n=$((n + 1))
	f=$units/$name.service
	test -f "$f" || fail "$name.service not installed in $prefix/lib/systemd/system"
	! grep -n '@[A-Z]*@' "$f" || fail "$name.service: template variables left"
	grep -q "^ExecStart=$prefix/bin/$name " "$f" || fail "$name.service: ExecStart is not $prefix/bin/$name: $(grep ^ExecStart= "$f")"
	grep -q "/etc/perch/config.yaml" "$f" || fail "$name.service does not name /etc/perch/config.yaml"
	doc=$(sed -n 's|^Documentation=file://||p' "$f")
	[ -n "$doc" ] && [ -f "$dest$doc" ] || fail "$name.service: Documentation=file://$doc is not installed"
done
[ "$n" -ge 1 ] || fail "no unit installed"
test -f "$dest$prefix/share/doc/perch/README.md" || fail "README.md not in $prefix/share/doc/perch"
ok "$n systemd units name $prefix/bin, /etc/perch and installed docs"

echo "# operator's edit" >>"$conf"
make -s O="$O" install DESTDIR="$dest" PREFIX=$prefix >/dev/null
grep -q "operator's edit" "$conf" || fail "existing config overwritten"
ok "an existing config is kept"

# Without DESTDIR the paths in the units are real: systemd checks them.
command -v systemd-analyze >/dev/null || fail "systemd-analyze is not installed (Debian's systemd)"
real=$dest/real
make -s O="$O" install PREFIX="$real" SYSCONFDIR="$real/etc" >/dev/null
for f in "$real"/lib/systemd/system/*.service; do
	out=$(systemd-analyze verify "$f" 2>&1) || fail "systemd-analyze verify $(basename "$f"): $out"
	[ -z "$out" ] || fail "systemd-analyze verify $(basename "$f") warns: $out"
done
ok "systemd-analyze verify accepts the installed units"
echo "install: ok"
