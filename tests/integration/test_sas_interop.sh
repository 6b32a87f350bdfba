#!/usr/bin/env bash
# test_sas_interop.sh — SAS tokens against the Azure IoT SDK's own code.
#
# Node with azure-iot-common (tests/node_modules, installed by `npm ci --prefix
# tests`) makes tokens for several resource URIs, keys, key names and expiries
# (URIs with spaces, `*!'()`, `%2F`); `sastool verify` must accept each and
# refuse tampered ones with the right reason; `sastool sign` must produce
# byte-identical tokens, which the SDK's code must check as valid; module keys
# derived by sastool must equal Node's HMAC. Keys travel in files and on stdin,
# never on command lines. Fails (does not skip) when node or the packages are
# missing.
set -euo pipefail
cd "${PERCH_ROOT:-$(dirname "$0")/../..}"
O=${O:-build}
T=$O/test/tools/sastool
JS=tests/integration/js/sas_vectors.js
fail() { echo "FAIL: $*" >&2; exit 1; }

command -v node >/dev/null || fail "node is not installed"
[ -d tests/node_modules/azure-iot-common ] ||
	fail "tests/node_modules/azure-iot-common is missing: run 'npm ci --prefix tests' (deploy/install-deps.sh does)"
[ -x "$T" ] || fail "$T is not built (make O=$O test builds it)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

K1=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
K2=c2VjcmV0LWtleS1mb3ItcGVyY2gtdGVzdHMtMDAwMDA=
K3=$(head -c 64 /dev/urandom | base64 -w0)
NOW=1700000000
cat >"$work/vectors.json" <<JSON
[
 {"resource": "myhub.azure-devices.net/devices/dev1", "key": "$K1", "expiry": 1700003600},
 {"resource": "myhub.azure-devices.net/devices/dev 1", "key": "$K2", "expiry": 1700000100},
 {"resource": "myhub.azure-devices.net/devices/d*x!(y)'z/modules/m%2Fa", "key": "$K1", "expiry": 1700086400},
 {"resource": "myhub.azure-devices.net/devices/caf\u00e9+\u00fcnicode/modules/\$edgeHub", "key": "$K3", "expiry": 1700000001},
 {"resource": "myhub.azure-devices.net", "keyName": "iothubowner", "key": "$K1", "expiry": 1700001000},
 {"resource": "perch-hub/devices/leaf~1.a_b-c", "keyName": "device policy", "key": "$K3", "expiry": 1999999999}
]
JSON
count=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).length)' <"$work/vectors.json")
node "$JS" make <"$work/vectors.json" >"$work/node_tokens"
[ "$(wc -l <"$work/node_tokens")" -eq "$count" ] || fail "node made $(wc -l <"$work/node_tokens") tokens, want $count"

field() { # $1 index, $2 name
	node -e 'const v=JSON.parse(require("fs").readFileSync(0))[+process.argv[1]]; const x=v[process.argv[2]]; process.stdout.write(x === undefined ? "" : String(x))' "$1" "$2" <"$work/vectors.json"
}

expect_refused() { # $1 token file, $2 resource, $3 key file, $4 reason text, $5... extra args
	local tok=$1 res=$2 key=$3 want=$4 out rc
	shift 4
	set +e
	out=$("$T" verify --resource "$res" --key-file "$key" --now $NOW "$@" <"$tok")
	rc=$?
	set -e
	[ $rc -eq 1 ] || fail "verify of a bad token exited $rc ($out), want 1 [$want]"
	[ "$out" = "invalid: $want" ] || fail "verify said '$out', want 'invalid: $want'"
}

for i in $(seq 0 $((count - 1))); do
	res=$(field "$i" resource)
	field "$i" key >"$work/key"
	kn=$(field "$i" keyName)
	exp=$(field "$i" expiry)
	sed -n "$((i + 1))p" "$work/node_tokens" >"$work/token"

	# 1. The SDK's token verifies with Perch.
	out=$("$T" verify --resource "$res" --key-file "$work/key" --now $NOW --max-lifetime 31536000000 <"$work/token") ||
		fail "vector $i: SDK token refused: $out ($(cat "$work/token"))"
	[ "$out" = valid ] || fail "vector $i: verify printed '$out'"

	# 2. Perch's token is byte for byte the SDK's.
	args=(--resource "$res" --expiry "$exp" --key-file "$work/key")
	[ -n "$kn" ] && args+=(--key-name "$kn")
	"$T" sign "${args[@]}" >"$work/mine"
	cmp -s "$work/mine" "$work/token" ||
		fail "vector $i: sastool sign differs from the SDK:"$'\n'"  perch: $(cat "$work/mine")"$'\n'"  sdk:   $(cat "$work/token")"

	# 3. Tampered tokens are refused, each for its own reason.
	# (the last base64 digit before the padding changed, canonical still)
	sed 's/A%3D&/E%3D\&/; t; s/[EIMQUYcgkosw048]%3D&/A%3D\&/' "$work/token" >"$work/bad_sig"
	if cmp -s "$work/bad_sig" "$work/token"; then fail "vector $i: tampering did nothing"; fi
	expect_refused "$work/bad_sig" "$res" "$work/key" "wrong signature"
	sed "s/se=$exp/se=$((exp + 1))/" "$work/token" >"$work/bad_se"
	expect_refused "$work/bad_se" "$res" "$work/key" "wrong signature"
	expect_refused "$work/token" "$res/x" "$work/key" "resource mismatch"
	expect_refused "$work/token" "$res" "$work/key" "expired" --now $((exp + 301)) --skew 300
	expect_refused "$work/token" "$res" "$work/key" "lifetime too long" --max-lifetime 1 --now 1
	printf '%s' "$K2" >"$work/other_key"
	[ "$(cat "$work/key")" = "$K2" ] || expect_refused "$work/token" "$res" "$work/other_key" "wrong signature"
	sed 's/sig=[^&]*/sig=%%%/' "$work/token" >"$work/bad_b64"
	expect_refused "$work/bad_b64" "$res" "$work/key" "signature is not base64 of a SHA-256 MAC"
	sed 's/SharedAccessSignature /SharedAccessSignature  /' "$work/token" >"$work/bad_form"
	expect_refused "$work/bad_form" "$res" "$work/key" "malformed token"
done

# Skew: a token expired 100 s ago passes with 300 s of skew, fails without.
sed -n 1p "$work/node_tokens" >"$work/token"
field 0 key >"$work/key"
res=$(field 0 resource)
"$T" verify --resource "$res" --key-file "$work/key" --now 1700003700 --skew 300 <"$work/token" >/dev/null ||
	fail "skew not honoured"
expect_refused "$work/token" "$res" "$work/key" "expired" --now 1700003700
expect_refused "$work/token" "$res" "$work/key" "lifetime too long" --max-lifetime 3000
# Host names compare without case.
"$T" verify --resource "MyHub.Azure-Devices.NET/devices/dev1" --key-file "$work/key" --now $NOW <"$work/token" >/dev/null ||
	fail "host name compared with case"
expect_refused "$work/token" "myhub.azure-devices.net/devices/DEV1" "$work/key" "resource mismatch"

# 4. Perch's tokens check out with the SDK's own parse/stringToSign/hmacHash.
node -e '
const fs = require("fs");
const v = JSON.parse(fs.readFileSync(process.argv[1]));
const toks = fs.readFileSync(process.argv[2], "utf8").trim().split("\n");
console.log(JSON.stringify(v.map((x, i) => ({resource: x.resource, key: x.key, token: toks[i]}))));
' "$work/vectors.json" <(for i in $(seq 0 $((count - 1))); do
	field "$i" key >"$work/key"
	args=(--resource "$(field "$i" resource)" --expiry "$(field "$i" expiry)" --key-file "$work/key")
	kn=$(field "$i" keyName)
	[ -n "$kn" ] && args+=(--key-name "$kn")
	"$T" sign "${args[@]}"
done) >"$work/check.json"
node "$JS" check <"$work/check.json" >"$work/checked"
[ "$(grep -c '^ok$' "$work/checked")" -eq "$count" ] || fail "SDK refused Perch tokens: $(grep -v '^ok$' "$work/checked")"

# 5. Module keys: sastool derive equals Node's HMAC.
for m in '$edgeHub' '$edgeAgent' filter 'module with space' 'ünï'; do
	for k in "$K1" "$K3"; do
		printf '%s' "$k" >"$work/key"
		mine=$("$T" derive --module "$m" --key-file "$work/key")
		theirs=$(node -e 'const [k,m]=JSON.parse(require("fs").readFileSync(0)); console.log(JSON.stringify([{key:k,moduleId:m}]))' \
			<<<"[\"$k\", \"$m\"]" | node "$JS" derive)
		[ "$mine" = "$theirs" ] || fail "derived key for '$m' differs: $mine vs $theirs"
	done
done

# 6. Connection strings: Perch's canonical form parses the same in the SDK.
printf 'HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=$edgeHub;SharedAccessKey=%s;GatewayHostName=perch-hub;' "$K1" >"$work/cs"
"$T" connstr <"$work/cs" >"$work/cs_out"
node -e '
const { ConnectionString } = require(process.argv[1]);
const fs = require("fs");
const a = ConnectionString.parse(fs.readFileSync(process.argv[2], "utf8").trim());
const b = ConnectionString.parse(fs.readFileSync(process.argv[3], "utf8").trim());
if (JSON.stringify(a) !== JSON.stringify(Object.fromEntries(Object.keys(a).map(k => [k, b[k]]))) ||
    Object.keys(a).length !== Object.keys(b).length) { console.error(a, b); process.exit(1); }
' "$PWD/tests/node_modules/azure-iot-common" "$work/cs" "$work/cs_out" || fail "connection string round trip differs"
[ "$("$T" connstr --field SharedAccessKey <"$work/cs")" = "$K1" ] || fail "connstr key field"
set +e
out=$(printf 'HostName=h;DeviceId=d;SharedAccessKey=%s;Foo=1' "$K1" | "$T" connstr)
rc=$?
set -e
[ $rc -eq 1 ] && [ "$out" = "invalid: unknown key (Foo) at 83" ] || fail "unknown key: rc=$rc '$out'"

echo "sas interop: $count SDK vectors verified both ways, byte-identical signing, tampering refused"
