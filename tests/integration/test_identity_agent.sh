#!/usr/bin/env bash
# tests/integration/test_identity_agent.sh — the agent's side of module
# identity (docs/identity.md) against the real Docker engine and a private
# registry (deploy/perch-env.sh: own state dir and port). A FROM scratch test
# image holds one static binary, /wl: without arguments it waits (exit 0 on
# SIGTERM); `/wl METHOD PATH [BODY]` sends one HTTP request to the workload
# socket perch-agent mounts at /var/run/iotedge/workload.sock and prints the
# answer. Two modules, A and B, run it. Checks:
#   - first start: the device key (0600), the device CA and the hub's server
#     certificate are made; hub.pem verifies against ca.pem (openssl) for the
#     gateway name, the device id, localhost and 127.0.0.1
#   - each container has IOTEDGE_WORKLOADURI, _DEVICEID, _MODULEID,
#     _MODULEGENERATIONID, _IOTHUBHOSTNAME, _GATEWAYHOSTNAME, _AUTHSCHEME
#     (sasToken), _APIVERSION, its own socket directory mounted read-only,
#     the gateway name in ExtraHosts; no key (device or module) anywhere in
#     `docker inspect`
#   - inside A (docker exec): a signature equals HMAC-SHA256(module key of A,
#     data) computed on the host from the device key file (sastool derive);
#     a signature for B -> 403; a stale generation id -> 403; the trust
#     bundle is ca.pem
#   - the Azure IoT Node SDK's IotEdgeAuthenticationProvider (run, as
#     `docker exec` would run it, in A's cgroups and by nsenter in A's pid
#     namespace) gets the trust bundle and a SAS token that sastool verifies
#     with A's key
#   - a process on the host connecting to A's socket -> 403; a client that
#     sends nothing holds no one up and gets 408; a too large head -> 431
#   - the hub deployment file (0640): deviceId, both modules with the
#     generation ids their containers have, the $edgeHub routes, A's twin
#   - the refusals are counted in `perch-agent status --json`
#   - B removed: its socket directory goes, A is untouched; B deployed
#     again: a new generation id, a new socket; the agent restarted as root
#     without capabilities (like the systemd unit): the same generation ids,
#     nothing recreated, A signs again, the host is still refused
# Removes only what it created (label perch.instance=ident-$$).
#
# Run by tests/run.sh (PERCH_ROOT = repo root, O = build dir);
# alone: bash tests/integration/test_identity_agent.sh (after make O=build test)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

test_setup agent_bin sastool
command -v node >/dev/null || { echo "FAIL - node is not installed" >&2; exit 1; }
[ -d tests/node_modules/azure-iot-device ] ||
	{ echo "FAIL - tests/node_modules/azure-iot-device is missing (npm ci --prefix tests)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perch-test-ident.XXXXXX")
start=$SECONDS
inst=ident-$$
net=perch-test-ident-$$
tag=i$$
dev=ident-dev-$$
ma=mod-a-$$
mb=mod-b-$$
agent_pid=
slow_pid=
images=()

unset PERCH_DOCKER_SOCK PERCH_REGISTRY_USER DOCKER_HOST DOCKER_CONFIG
PERCH_REGISTRY_PORT=$(free_port)
export PERCH_ENV_DIR=$tmp/env PERCH_REGISTRY_PORT PERCH_ENV_TIMEOUT=60

cleanup_extra() { [ -n "$slow_pid" ] && kill "$slow_pid" 2>/dev/null; }
trap 'agent_test_cleanup test_identity_agent' EXIT
trap 'exit 1' INT TERM

perch_env_up
password=$(cat "$PERCH_REGISTRY_PASSWORD_FILE")
reg=$PERCH_REGISTRY

# --- the test image -------------------------------------------------------------------
mkdir -p "$tmp/ctx"
cat >"$tmp/ctx/wl.c" <<'EOF'
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}
int main(int argc, char **argv)
{
	if (argc < 3) {
		signal(SIGTERM, on_term);
		for (;;)
			pause();
	}
	const char *body = argc > 3 ? argv[3] : "";
	static char req[16384], resp[65536];
	int n = snprintf(req, sizeof req,
	                 "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
	                 "Content-Length: %zu\r\n\r\n%s",
	                 argv[1], argv[2], strlen(body), body);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, "/var/run/iotedge/workload.sock");
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		perror("connect");
		return 2;
	}
	if (write(fd, req, (size_t)n) != n)
		return 2;
	size_t got = 0;
	ssize_t r;
	while ((r = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
		got += (size_t)r;
	fwrite(resp, 1, got, stdout);
	return 0;
}
EOF
gcc -static -O2 -o "$tmp/ctx/wl" "$tmp/ctx/wl.c" || fail "gcc -static failed"
printf 'FROM scratch\nCOPY wl /wl\nUSER 65534:65534\nENTRYPOINT ["/wl"]\n' >"$tmp/ctx/Dockerfile"
img=$reg/perch-test/identity:$tag
images=("$img")
DOCKER_BUILDKIT=0 timeout 120 docker build -q -t "$img" "$tmp/ctx" >/dev/null 2>"$tmp/build.err" ||
	fail "docker build: $(tail -3 "$tmp/build.err")"
timeout 120 docker push "$img" >"$tmp/push.out" 2>&1 || fail "docker push: $(tail -3 "$tmp/push.out")"
ok "test image built and pushed: $img (runs as uid 65534)"

# --- configuration and deployment -----------------------------------------------------------
cat >"$tmp/config.yaml" <<YAML
device:
  id: $dev
  iothub_hostname: hub.example.net
  gateway_hostname: gw-$$.example.net
  key_file: $tmp/device/device.key
  certs_dir: $tmp/device/certs
  hub_deployment: $tmp/device/hub-deployment.json
agent:
  instance: $inst
  network: $net
  stop_grace: 2s
YAML

# manifest FILE MODULE...: a deployment of the named modules, with routes and
# a twin for module A.
manifest() {
	local file=$1 body="" m
	shift
	for m in "$@"; do
		[ -n "$body" ] && body+=","
		body+=$(printf '"%s": {"version": "1.0", "type": "docker", "status": "running",
		  "restartPolicy": "always", "settings": {"image": "%s", "createOptions": ""}}' "$m" "$img")
	done
	cat >"$file.new" <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"registryCredentials": {
      "r": {"username": "$PERCH_REGISTRY_USER", "password": "$password", "address": "$reg"}}}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "x"}},
                      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                  "settings": {"image": "x"}}},
    "modules": {$body}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1",
    "routes": {"up": "FROM /messages/modules/$ma/* INTO \$upstream"},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 60}}},
  "$ma": {"properties.desired": {"threshold": 25}}
}}
JSON
	mv "$file.new" "$file"
}

start_agent() { # LOG [WRAPPER...]
	local log=$1
	shift
	"$@" "$agent_bin" --config "$tmp/config.yaml" --data-dir "$tmp/agent" --no-hub \
		--manifest "$tmp/dep.json" >"$log" 2>&1 &
	agent_pid=$!
}
status_json() { timeout 15 "$agent_bin" status --config "$tmp/config.yaml" --data-dir "$tmp/agent" --json; }
mod_field() {
	status_json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["modules"].get(sys.argv[1], {}).get(sys.argv[2], ""))' "$1" "$2"
}
is_running() { [ "$(mod_field "$1" runtimeStatus)" = running ]; }
envof() { docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$1" | sed -n "s/^$2=//p"; }
cid() { docker inspect -f '{{.Id}}' "$1"; }
# wl MODULE METHOD PATH [BODY]: a request from inside the module's container.
wl() { local m=$1; shift; timeout 10 docker exec "$m" /wl "$@"; }
status_of() { head -n1 | cut -d' ' -f2; }
# in_cgroups_of PID CMD...: run CMD in the cgroups of process PID, as the
# processes `docker exec` starts are (the agent checks a caller's cgroup).
in_cgroups_of() {
	local pid=$1
	shift
	bash -c 'while IFS=: read -r _ ctrl path; do
		case $ctrl in
		"") d=/sys/fs/cgroup/unified; [ -d "$d" ] || d=/sys/fs/cgroup ;;
		name=systemd) d=/sys/fs/cgroup/systemd ;;
		*) d=/sys/fs/cgroup/$ctrl ;;
		esac
		[ -w "$d$path/cgroup.procs" ] && echo $$ >"$d$path/cgroup.procs" 2>/dev/null
	done <"/proc/$0/cgroup"
	exec "$@"' "$pid" "$@"
}
body_of() { sed -n '/^\r$/,$p' | tail -n +2; }

manifest "$tmp/dep.json" "$ma" "$mb"
start_agent "$tmp/agent1.log"
wait_for 60 "$ma running" is_running "$ma"
wait_for 30 "$mb running" is_running "$mb"
ok "agent deployed $ma and $mb"

# --- key and certificates ---------------------------------------------------------------------
[ "$(stat -c %a "$tmp/device/device.key")" = 600 ] || fail "device key mode $(stat -c %a "$tmp/device/device.key")"
grep -q "made a new device key" "$tmp/agent1.log" || fail "no log of the new device key"
certs=$tmp/device/certs
for f in ca.pem ca.key hub.pem hub.key; do [ -s "$certs/$f" ] || fail "$certs/$f missing"; done
[ "$(stat -c %a "$certs/ca.key") $(stat -c %a "$certs/hub.key")" = "600 600" ] || fail "key modes"
for name in "gw-$$.example.net" "$dev" localhost; do
	openssl verify -CAfile "$certs/ca.pem" -verify_hostname "$name" "$certs/hub.pem" >/dev/null 2>&1 ||
		fail "hub.pem does not verify for $name"
done
openssl verify -CAfile "$certs/ca.pem" -verify_ip 127.0.0.1 "$certs/hub.pem" >/dev/null 2>&1 ||
	fail "hub.pem does not verify for 127.0.0.1"
openssl verify -CAfile "$certs/ca.pem" -verify_hostname evil.example "$certs/hub.pem" >/dev/null 2>&1 &&
	fail "hub.pem verifies for evil.example"
ok "device key 0600; device CA and hub.pem made; hub.pem verifies (openssl) for the gateway name, $dev, localhost, 127.0.0.1, not others"

# --- the containers ----------------------------------------------------------------------------
"$sastool" derive --module "$ma" --key-file "$tmp/device/device.key" >"$tmp/key-a"
"$sastool" derive --module "$mb" --key-file "$tmp/device/device.key" >"$tmp/key-b"
devkey=$(cat "$tmp/device/device.key")
for m in "$ma" "$mb"; do
	[ "$(envof "$m" IOTEDGE_WORKLOADURI)" = unix:///var/run/iotedge/workload.sock ] || fail "$m IOTEDGE_WORKLOADURI"
	[ "$(envof "$m" IOTEDGE_DEVICEID)" = "$dev" ] || fail "$m IOTEDGE_DEVICEID"
	[ "$(envof "$m" IOTEDGE_MODULEID)" = "$m" ] || fail "$m IOTEDGE_MODULEID"
	[[ $(envof "$m" IOTEDGE_MODULEGENERATIONID) =~ ^[0-9a-f]{32}$ ]] || fail "$m IOTEDGE_MODULEGENERATIONID"
	[ "$(envof "$m" IOTEDGE_IOTHUBHOSTNAME)" = hub.example.net ] || fail "$m IOTEDGE_IOTHUBHOSTNAME"
	[ "$(envof "$m" IOTEDGE_GATEWAYHOSTNAME)" = "gw-$$.example.net" ] || fail "$m IOTEDGE_GATEWAYHOSTNAME"
	[ "$(envof "$m" IOTEDGE_AUTHSCHEME)" = sasToken ] || fail "$m IOTEDGE_AUTHSCHEME"
	[ "$(envof "$m" IOTEDGE_APIVERSION)" = 2019-01-30 ] || fail "$m IOTEDGE_APIVERSION"
	binds=$(docker inspect -f '{{json .HostConfig.Binds}}' "$m")
	[ "$binds" = "[\"$(realpath "$tmp/agent")/workload/$m:/var/run/iotedge:ro\"]" ] || fail "$m binds: $binds"
	hosts=$(docker inspect -f '{{json .HostConfig.ExtraHosts}}' "$m")
	[ "$hosts" = "[\"perch-hub:host-gateway\",\"gw-$$.example.net:host-gateway\"]" ] || fail "$m hosts: $hosts"
	docker inspect "$m" >"$tmp/inspect"
	for k in "$devkey" "$(cat "$tmp/key-a")" "$(cat "$tmp/key-b")" "$password"; do
		grep -qF "$k" "$tmp/inspect" && fail "a key or password is in docker inspect $m"
	done
done
ga=$(envof "$ma" IOTEDGE_MODULEGENERATIONID)
gb=$(envof "$mb" IOTEDGE_MODULEGENERATIONID)
[ "$ga" != "$gb" ] || fail "both modules have generation id $ga"
ok "IOTEDGE_* env, the module's own socket dir mounted read-only, gateway in ExtraHosts; no key in docker inspect"

# --- signing from inside A ---------------------------------------------------------------------
data=$(printf 'hub.example.net%%2Fdevices%%2F%s%%2Fmodules%%2F%s\n1900000000' "$dev" "$ma" | base64 -w0)
sign_body="{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":\"$data\"}"
wl "$ma" POST "/modules/$ma/genid/$ga/sign?api-version=2019-01-30" "$sign_body" >"$tmp/r1" || fail "docker exec $ma /wl"
[ "$(status_of <"$tmp/r1")" = 200 ] || fail "sign from $ma: $(cat "$tmp/r1")"
digest=$(body_of <"$tmp/r1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
want=$(/usr/bin/python3 -c '
import base64, hmac, hashlib, sys
key = base64.b64decode(open(sys.argv[1]).read().strip())
print(base64.b64encode(hmac.new(key, base64.b64decode(sys.argv[2]), hashlib.sha256).digest()).decode())' "$tmp/key-a" "$data")
[ "$digest" = "$want" ] || fail "digest $digest, HMAC with $ma's derived key is $want"
ok "$ma (uid 65534) got a signature over its socket = HMAC-SHA256(derived key of $ma, data)"

wl "$ma" POST "/modules/$mb/genid/$gb/sign?api-version=2019-01-30" "$sign_body" >"$tmp/r2"
[ "$(status_of <"$tmp/r2")" = 403 ] || fail "sign for $mb from $ma: $(cat "$tmp/r2")"
body_of <"$tmp/r2" | grep -q '"message"' || fail "no JSON message in the 403"
wl "$ma" POST "/modules/$ma/genid/0000/sign?api-version=2019-01-30" "$sign_body" >"$tmp/r3"
[ "$(status_of <"$tmp/r3")" = 403 ] || fail "stale generation id: $(cat "$tmp/r3")"
grep -q "module $ma: refused a signature for module $mb from pid" "$tmp/agent1.log" || fail "refusal not logged"
ok "from $ma: a signature for $mb -> 403 (logged), a stale generation id -> 403"

wl "$ma" GET "/trust-bundle?api-version=2019-01-30" >"$tmp/r4"
[ "$(status_of <"$tmp/r4")" = 200 ] || fail "trust bundle: $(cat "$tmp/r4")"
body_of <"$tmp/r4" | /usr/bin/python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["certificate"])' >"$tmp/bundle.pem"
cmp -s "$tmp/bundle.pem" "$certs/ca.pem" || fail "the trust bundle is not ca.pem"
openssl verify -CAfile "$tmp/bundle.pem" "$certs/hub.pem" >/dev/null || fail "hub.pem does not verify with the trust bundle"
ok "trust bundle = ca.pem, and hub.pem verifies with it"

# --- the Node SDK, in A's pid namespace ------------------------------------------------------
sock_a=$(realpath "$tmp/agent")/workload/$ma/workload.sock
pid_a=$(docker inspect -f '{{.State.Pid}}' "$ma")
cat >"$tmp/sdk.js" <<'EOF'
const { IotEdgeAuthenticationProvider } = require('azure-iot-device/dist/iotedge_authentication_provider');
const [workloadUri, deviceId, moduleId, generationId] = process.argv.slice(2);
const p = new IotEdgeAuthenticationProvider({ workloadUri, deviceId, moduleId, generationId,
	iothubHostName: 'hub.example.net', gatewayHostName: 'gw', authScheme: 'sasToken' }, 3600);
p.getTrustBundle((err, ca) => {
	if (err) { console.error('trust bundle:', err.message); process.exit(1); }
	process.stdout.write(ca);
	p.getDeviceCredentials((err2, creds) => {
		if (err2) { console.error('credentials:', err2.message); process.exit(1); }
		process.stderr.write(creds.sharedAccessSignature);
		p.stop();
		process.exit(0);
	});
});
EOF
NODE_PATH=$root/tests/node_modules in_cgroups_of "$pid_a" timeout 30 nsenter -t "$pid_a" -p -- node "$tmp/sdk.js" \
	"unix://$sock_a" "$dev" "$ma" "$ga" >"$tmp/sdk-ca.pem" 2>"$tmp/sdk-token" ||
	fail "the Node SDK in $ma's pid namespace: $(cat "$tmp/sdk-token")"
cmp -s "$tmp/sdk-ca.pem" "$certs/ca.pem" || fail "the SDK's trust bundle is not ca.pem"
"$sastool" verify --resource "hub.example.net/devices/$dev/modules/$ma" --key-file "$tmp/key-a" \
	<"$tmp/sdk-token" >"$tmp/verify.out" || fail "sastool refuses the SDK's token: $(cat "$tmp/verify.out")"
ok "azure-iot-device's IotEdgeAuthenticationProvider (in $ma's cgroups and pid namespace) got the trust bundle and a SAS token that verifies with $ma's key"

# --- callers outside the container -----------------------------------------------------------
# host_sign SOCKET: a sign request for A from this (host) process.
host_sign() {
	/usr/bin/python3 -c '
import socket, sys
path, mod, gen, body = sys.argv[1:]
s = socket.socket(socket.AF_UNIX); s.connect(path)
s.sendall(("POST /modules/%s/genid/%s/sign?api-version=2019-01-30 HTTP/1.1\r\nHost: x\r\n"
           "Content-Length: %d\r\n\r\n%s" % (mod, gen, len(body), body)).encode())
print(s.recv(65536).decode())' "$1" "$ma" "$ga" "$sign_body"
}
host_sign "$sock_a" >"$tmp/r5"
[ "$(status_of <"$tmp/r5")" = 403 ] || fail "a host process got: $(cat "$tmp/r5")"
grep -q "not in the module's container" "$tmp/r5" || fail "403 without the reason: $(cat "$tmp/r5")"
ok "a process on the host connecting to $ma's socket -> 403 (not in the module's container)"

# A client that connects and says nothing: the others are served meanwhile.
sock_b=$(realpath "$tmp/agent")/workload/$mb/workload.sock
/usr/bin/python3 - "$sock_b" >"$tmp/slow" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
t = time.time(); data = s.recv(65536)
print("%.1f %s" % (time.time() - t, data.decode().split("\r\n")[0]))
EOF
slow_pid=$!
sleep 0.3
wl "$ma" POST "/modules/$ma/genid/$ga/sign?api-version=2019-01-30" "$sign_body" >"$tmp/r6"
[ "$(status_of <"$tmp/r6")" = 200 ] || fail "sign while a slow client waits: $(cat "$tmp/r6")"
wait "$slow_pid" || true
slow_pid=
read -r secs line <"$tmp/slow"
[[ $line == *408* ]] || fail "the silent client got: $(cat "$tmp/slow")"
head -c 9000 /dev/zero | tr '\0' 'a' | /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read())
print(s.recv(65536).decode().split("\r\n")[0])' "$sock_b" >"$tmp/big"
grep -q " 431 " "$tmp/big" || fail "a 9000-byte head got: $(cat "$tmp/big")"
ok "a silent client held no one up and got 408 after ${secs}s; a 9000-byte head -> 431"

# --- the hub deployment file -----------------------------------------------------------------
hubfile=$tmp/device/hub-deployment.json
[ "$(stat -c %a "$hubfile")" = 640 ] || fail "hub deployment file mode $(stat -c %a "$hubfile")"
/usr/bin/python3 - "$hubfile" "$dev" "$ma" "$ga" "$mb" "$gb" <<'EOF' || fail "hub deployment file: $(cat "$hubfile")"
import json, sys
f, dev, ma, ga, mb, gb = sys.argv[1:]
d = json.load(open(f))
assert d["version"] == 1 and d["deviceId"] == dev, d
assert d["modules"] == {ma: {"generationId": ga}, mb: {"generationId": gb}}, d["modules"]
assert d["edgeHub"]["routes"]["up"].startswith("FROM /messages/modules/" + ma), d["edgeHub"]
assert d["edgeHub"]["storeAndForwardConfiguration"] == {"timeToLiveSecs": 60}, d["edgeHub"]
assert d["twins"][ma] == {"threshold": 25}, d["twins"]
assert isinstance(d["deployment"], int) and d["deployment"] >= 1
EOF
ok "hub deployment file (0640): deviceId, modules with their generation ids, routes, store and forward, twins"

status_json | /usr/bin/python3 -c '
import json, sys
w = json.load(sys.stdin)["workload"]
r = w["refusedBy"]
assert w["signed"] >= 3 and w["trustBundles"] >= 2, w
assert r["otherModule"] >= 1 and r["staleGenerationId"] >= 1 and r["notInContainer"] >= 1, w
assert r["timeout"] >= 1 and r["badRequest"] >= 1, w
assert w["refused"] == sum(r.values()), w' || fail "workload counters: $(status_json)"
ok "status --json counts signatures, trust bundles and refusals by reason"

# --- generation ids across removal, re-deployment and restarts -------------------------------------
id_a=$(cid "$ma")
manifest "$tmp/dep.json" "$ma"
gone() { [ ! -e "$(realpath "$tmp/agent")/workload/$mb" ] && ! docker inspect "$mb" >/dev/null 2>&1; }
wait_for 30 "$mb removed with its socket directory" gone
[ "$(cid "$ma")" = "$id_a" ] || fail "$ma was recreated when $mb was removed"
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert list(d["modules"])==[sys.argv[2]], d' \
	"$hubfile" "$ma" || fail "hub deployment file still lists $mb"
manifest "$tmp/dep.json" "$ma" "$mb"
wait_for 30 "$mb deployed again" is_running "$mb"
gb2=$(envof "$mb" IOTEDGE_MODULEGENERATIONID)
[[ $gb2 =~ ^[0-9a-f]{32}$ ]] && [ "$gb2" != "$gb" ] || fail "$mb generation id after re-deployment: $gb2 (was $gb)"
[ "$(envof "$ma" IOTEDGE_MODULEGENERATIONID)" = "$ga" ] && [ "$(cid "$ma")" = "$id_a" ] || fail "$ma changed"
[ -S "$sock_b" ] || fail "no socket for $mb after re-deployment"
grep -q "\"$gb2\"" "$hubfile" || fail "hub deployment file lacks $mb's new generation id"
ok "$mb removed (socket dir gone, $ma untouched) and deployed again: new generation id, new socket"

id_b=$(cid "$mb")
stop_agent || fail "agent exit status"
[ ! -S "$sock_a" ] || fail "the socket stays after the agent stopped"
# Restarted as the hardened systemd unit runs it: root without capabilities
# (it may not read other users' /proc/PID/ns: the cgroup check decides).
start_agent "$tmp/agent2.log" setpriv --bounding-set=-all --inh-caps=-all
wait_for 30 "$ma's socket back" test -S "$sock_a"
[ "$(sed -n 's/^CapEff:\t*//p' "/proc/$agent_pid/status")" = 0000000000000000 ] ||
	fail "the agent kept capabilities: $(grep Cap "/proc/$agent_pid/status")"
wait_for 30 "$ma running after the restart" is_running "$ma"
[ "$(cid "$ma")" = "$id_a" ] && [ "$(cid "$mb")" = "$id_b" ] || fail "a container was recreated by the restart"
wl "$ma" POST "/modules/$ma/genid/$ga/sign?api-version=2019-01-30" "$sign_body" >"$tmp/r7"
[ "$(status_of <"$tmp/r7")" = 200 ] || fail "sign after the agent's restart: $(cat "$tmp/r7")"
host_sign "$sock_a" >"$tmp/r8"
[ "$(status_of <"$tmp/r8")" = 403 ] || fail "without capabilities, a host process got: $(cat "$tmp/r8")"
grep -q "made a new device key\|made a new device CA" "$tmp/agent2.log" && fail "key or CA made again on restart"
ok "agent restarted without capabilities: same generation ids, nothing recreated, key and CA kept; $ma signs again through its mount, a host process is still refused"
