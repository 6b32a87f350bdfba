#!/usr/bin/env bash
# deploy/perch-env.sh — bring up (and down) what Perch's tests and a development
# machine need around Perch: a Docker engine that answers, and a private image
# registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1 with
# htpasswd (bcrypt) credentials.
#
# Usage: deploy/perch-env.sh up|down|registry-down|status|env
#
#   up      Make sure a Docker engine answers on PERCH_DOCKER_SOCK (start dockerd
#           when nothing answers; install docker.io through install-deps.sh when
#           dockerd is missing) and that the registry runs on 127.0.0.1:PORT; log
#           the Docker client in to it (DOCKER_CONFIG inside the state dir, so
#           ~/.docker is untouched). Idempotent: a second `up` starts nothing.
#           Records what it started (pid files) in the state dir.
#   down    Stop only what `up` started: the registry, and dockerd only if `up`
#           started it (by pid, waiting for exit). An engine that was already
#           running is never stopped. State (password, images) is kept.
#   registry-down  Stop only the registry `up` started; the engine stays (tests
#           use it to see what a pull from a registry that is down does).
#   status  One line per service; exit 0 when both answer, 1 otherwise.
#   env     Print `export` lines for callers:  eval "$(deploy/perch-env.sh env)"
#           PERCH_REGISTRY=127.0.0.1:PORT PERCH_REGISTRY_USER
#           PERCH_REGISTRY_PASSWORD_FILE PERCH_DOCKER_SOCK DOCKER_HOST DOCKER_CONFIG
#
# Settings (environment; `up` records them, so later commands reuse them):
#   PERCH_ENV_DIR        state dir: registry config, htpasswd, data, logs, pid
#                        files (default /var/lib/perch-env as root, else
#                        ~/.local/state/perch-env)
#   PERCH_REGISTRY_PORT  registry port on 127.0.0.1 (default 5000)
#   PERCH_REGISTRY_USER  registry user (default perch); the password is made on
#                        the first `up` from /dev/urandom and kept, mode 0600, in
#                        $PERCH_ENV_DIR/registry.password
#   PERCH_DOCKER_SOCK    engine socket (default /var/run/docker.sock). When it is
#                        not the default and nothing answers there, `up` starts a
#                        PRIVATE dockerd: own socket, --data-root, --exec-root,
#                        --pidfile under the state dir, its own default bridge
#                        interface (pe-XXXXXXXX, 10.N.255.1/24) and
#                        --iptables=false, so it never touches docker0 or the
#                        main engine's iptables rules. (Its user-defined networks
#                        come from Docker's usual pools; dockerd skips subnets
#                        that already have a route, so the two engines do not
#                        collide.)
#   PERCH_ENV_TIMEOUT    seconds to wait for dockerd / the registry (default 60)
set -euo pipefail

prog=perch-env
here=$(cd "$(dirname "$0")" && pwd)
default_sock=/var/run/docker.sock

die() { echo "$prog: error: $*" >&2; exit 1; }
say() { echo "$prog: $*" >&2; }

# Show the last lines of a log file, indented, on stderr.
log_tail() { [ -f "$1" ] && tail -n "${2:-15}" "$1" | sed 's/^/  | /' >&2; return 0; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }

# --- settings -------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
	dir=${PERCH_ENV_DIR:-/var/lib/perch-env}
else
	dir=${PERCH_ENV_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/perch-env}
fi
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
settings=$dir/settings

# recorded KEY: the value `up` recorded in $settings, or nothing.
recorded() { [ -f "$settings" ] && sed -n "s/^$1=//p" "$settings" | tail -1; return 0; }

port=${PERCH_REGISTRY_PORT:-$(recorded port)}; port=${port:-5000}
user=${PERCH_REGISTRY_USER:-$(recorded user)}; user=${user:-perch}
sock=${PERCH_DOCKER_SOCK:-$(recorded sock)}; sock=${sock:-$default_sock}
timeout=${PERCH_ENV_TIMEOUT:-60}
if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
	die "PERCH_REGISTRY_PORT '$port' is not a port number"
fi
[[ $user =~ ^[A-Za-z0-9._-]+$ ]] || die "PERCH_REGISTRY_USER '$user' has characters other than A-Za-z0-9._-"
[[ $timeout =~ ^[0-9]+$ ]] || die "PERCH_ENV_TIMEOUT '$timeout' is not a number of seconds"

registry=127.0.0.1:$port
pwfile=$dir/registry.password
regdir=$dir/registry                  # config.yml, htpasswd, data/
reg_pid=$dir/registry.pid             # pid of the registry `up` started
reg_log=$dir/registry.log
dockerd_pid=$dir/dockerd.pid          # pid of the dockerd `up` started (only then)
dockerd_log=$dir/dockerd.log
bridge_file=$dir/private-bridge       # "NAME OCTET" of a bridge `up` created
docker_config=$dir/docker-config      # DOCKER_CONFIG for `docker login`/push

# --- small helpers ----------------------------------------------------------

# engine_answers: does GET /_ping on $sock answer OK?
engine_answers() {
	[ -S "$sock" ] && [ "$(curl -s --max-time 3 --unix-socket "$sock" http://localhost/_ping 2>/dev/null)" = OK ]
}

# running PID [NAME]: is PID a live process (zombies count as gone: this
# machine's init reaps late) whose program is NAME (when given)?
running() {
	local st exe
	[ -n "$1" ] || return 1
	st=$(sed -n 's/^.*) \(.\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
	case $st in "" | Z | X) return 1 ;; esac
	[ -z "${2:-}" ] && return 0
	exe=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | cut -d' ' -f1) || return 1
	[ "${exe##*/}" = "$2" ]
}

# alive PIDFILE NAME: is the pid in PIDFILE a live process whose program is NAME?
alive() { [ -f "$1" ] && running "$(pid_of "$1")" "$2"; }

# clear_stale PIDFILE NAME: remove a pid file (dockerd's, containerd's) whose
# process is gone, so that a new dockerd does not refuse to start over it.
clear_stale() { if [ -f "$1" ] && ! alive "$1" "$2"; then rm -f "$1"; fi; }

pid_of() { head -c 20 "$1" | tr -dc 0-9; }

# spawn LOG PIDFILE CMD...: start CMD detached (own session, stdin closed,
# output appended to LOG, every other inherited descriptor closed, so it holds
# neither our lock nor a caller's pipe) and record its pid. No job control
# here, so the subshell is no group leader and setsid(1) execs in place: $! is
# CMD's pid.
spawn() {
	local log=$1 pidfile=$2; shift 2
	(
		for fd in /proc/"$BASHPID"/fd/*; do
			fd=${fd##*/}
			if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
		done
		exec setsid "$@" >>"$log" 2>&1 </dev/null
	) &
	echo $! >"$pidfile"
}

# stop PIDFILE NAME: TERM the process `up` started, wait (bounded), then KILL.
stop() {
	local pidfile=$1 name=$2 pid i
	if ! alive "$pidfile" "$name"; then rm -f "$pidfile"; return 1; fi
	pid=$(pid_of "$pidfile")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < timeout * 4; i++)); do
		running "$pid" || break
		sleep 0.25
	done
	if running "$pid"; then
		say "$name (pid $pid) did not exit in ${timeout}s after SIGTERM; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 40; i++)); do running "$pid" || break; sleep 0.25; done
	fi
	rm -f "$pidfile"
	say "stopped $name (pid $pid)"
}

# port_busy: is something listening on TCP $port (any local address)?
port_busy() { [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]; }

# --- Docker engine -----------------------------------------------------------

# private_bridge: create (or reuse) the bridge interface of a private engine;
# prints "NAME OCTET": bridge NAME at 10.OCTET.255.1/24.
private_bridge() {
	local name octet h i
	if [ -f "$bridge_file" ]; then
		read -r name octet <"$bridge_file"
		if ip link show "$name" >/dev/null 2>&1; then echo "$name $octet"; return; fi
	fi
	h=$(printf '%s' "$dir" | cksum | cut -d' ' -f1)
	name=pe-$(printf '%08x' "$h" | tail -c 8)
	# Pick 10.N.0.0/16 (N in 200..249, from the state dir) that no route uses yet.
	for ((i = 0; i < 50; i++)); do
		octet=$((200 + (h + i) % 50))
		ip -4 route show | grep -q "^10\.$octet\." || break
	done
	[ "$i" -lt 50 ] || die "no free 10.N.0.0/16 (N in 200..249) for a private engine's bridge"
	ip link add "$name" type bridge 2>/dev/null || ip link show "$name" >/dev/null 2>&1 ||
		die "cannot create bridge interface $name (ip link add; are you root?)"
	ip addr replace "10.$octet.255.1/24" dev "$name"
	ip link set "$name" up
	echo "$name $octet" >"$bridge_file"
	echo "$name $octet"
}

engine_up() {
	local pid i bridge octet
	if engine_answers; then
		if alive "$dockerd_pid" dockerd; then
			say "dockerd (pid $(pid_of "$dockerd_pid"), started by $prog) answers on $sock"
		else
			rm -f "$dockerd_pid"
			say "Docker engine already answers on $sock (not started by $prog; left alone)"
		fi
		return
	fi
	if ! command -v dockerd >/dev/null 2>&1; then
		say "dockerd not found; installing packages with install-deps.sh"
		"$here/install-deps.sh"
		command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after install-deps.sh"
	fi
	# A dockerd of ours that is alive but not answering: stop it and start anew.
	if alive "$dockerd_pid" dockerd; then stop "$dockerd_pid" dockerd || true; fi

	local args=()
	if [ "$sock" != "$default_sock" ]; then
		mkdir -p "$(dirname "$sock")" "$dir/docker"
		clear_stale "$dir/docker/docker.pid" dockerd
		clear_stale "$dir/docker/exec/containerd/containerd.pid" containerd
		read -r bridge octet <<<"$(private_bridge)"
		[ -n "${octet:-}" ] || exit 1 # private_bridge said why
		args=(-H "unix://$sock" --data-root "$dir/docker/data" --exec-root "$dir/docker/exec"
			--pidfile "$dir/docker/docker.pid" --bridge "$bridge" --iptables=false)
		# No --default-address-pool and never --bridge=none: with either, dockerd
		# deletes the host's docker0 (moby removeDefaultBridgeInterface: always
		# for --bridge=none; on every restart when default pools are set), which
		# breaks the main engine's default network.
		say "starting a private dockerd on $sock (bridge $bridge 10.$octet.255.1/24; log $dockerd_log)"
	else
		clear_stale /var/run/docker.pid dockerd
		clear_stale /var/run/docker/containerd/containerd.pid containerd
		say "no Docker engine answers on $sock; starting dockerd (log $dockerd_log)"
	fi
	echo "--- $(date -u +%FT%TZ) $prog up: dockerd ${args[*]}" >>"$dockerd_log"
	spawn "$dockerd_log" "$dockerd_pid" dockerd "${args[@]}"
	pid=$(pid_of "$dockerd_pid")
	for ((i = 0; i < timeout * 4; i++)); do
		engine_answers && break
		if ! running "$pid"; then
			rm -f "$dockerd_pid"
			echo "$prog: error: dockerd exited before answering on $sock; last lines of $dockerd_log:" >&2
			log_tail "$dockerd_log"
			exit 1
		fi
		sleep 0.25
	done
	if ! engine_answers; then
		echo "$prog: error: dockerd (pid $pid) does not answer on $sock after ${timeout}s; last lines of $dockerd_log:" >&2
		log_tail "$dockerd_log"
		stop "$dockerd_pid" dockerd || true
		exit 1
	fi
	say "dockerd (pid $pid) answers on $sock"
}

engine_down() {
	local m
	if [ -f "$dockerd_pid" ]; then
		stop "$dockerd_pid" dockerd || say "dockerd recorded in $dockerd_pid was not running"
		# A private dockerd bind-mounts its data root onto itself, and one that
		# was killed (-9) leaves that and overlay mounts behind: undo them.
		if [ "$sock" != "$default_sock" ] && [ -d "$dir/docker" ]; then
			{ awk '{print $2}' /proc/mounts | grep "^$dir/docker/" || true; } | sort -r |
				while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
		fi
	elif engine_answers; then
		say "Docker engine on $sock was not started by $prog; left running"
	fi
	if [ -f "$bridge_file" ] && ! [ -f "$dockerd_pid" ]; then
		local name octet
		read -r name octet <"$bridge_file"
		if ip link show "$name" >/dev/null 2>&1; then ip link del "$name" || true; fi
		rm -f "$bridge_file"
	fi
}

# --- registry ------------------------------------------------------------------

registry_files() {
	mkdir -p "$regdir/data"
	if [ ! -s "$pwfile" ]; then
		(umask 077 && head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$pwfile.tmp")
		mv "$pwfile.tmp" "$pwfile"
		say "generated a registry password in $pwfile"
	fi
	chmod 600 "$pwfile"
	command -v htpasswd >/dev/null 2>&1 || die "htpasswd missing (apache2-utils); run deploy/install-deps.sh"
	command -v docker-registry >/dev/null 2>&1 || die "docker-registry missing; run deploy/install-deps.sh"
	# (Re)write htpasswd only when it does not verify user + password already.
	if ! htpasswd -v -i "$regdir/htpasswd" "$user" <"$pwfile" >/dev/null 2>&1; then
		(umask 077 && htpasswd -c -B -i "$regdir/htpasswd" "$user" <"$pwfile" >/dev/null 2>&1) ||
			die "htpasswd -B failed writing $regdir/htpasswd"
	fi
	[ -s "$regdir/secret" ] || (umask 077 && head -c 24 /dev/urandom | base64 >"$regdir/secret")
	cat >"$regdir/config.yml.new" <<-EOF
		# Written by deploy/perch-env.sh up; rewritten on each up.
		version: 0.1
		log:
		  level: info
		  formatter: text
		storage:
		  filesystem:
		    rootdirectory: $regdir/data
		  delete:
		    enabled: true
		  cache:
		    blobdescriptor: inmemory
		http:
		  addr: $registry
		  secret: $(cat "$regdir/secret")
		  headers:
		    X-Content-Type-Options: [nosniff]
		auth:
		  htpasswd:
		    realm: perch-registry
		    path: $regdir/htpasswd
	EOF
	mv "$regdir/config.yml.new" "$regdir/config.yml"
}

# registry_fingerprint: changes whenever the running registry would need a restart.
registry_fingerprint() { cat "$regdir/config.yml" "$regdir/htpasswd" | cksum; }

registry_answers() {
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$registry/v2/" 2>/dev/null) || true
	[ "$code" = 401 ] || [ "$code" = 200 ]
}

registry_up() {
	local pid i
	registry_files
	if alive "$reg_pid" docker-registry; then
		if [ "$(cat "$dir/registry.fingerprint" 2>/dev/null)" = "$(registry_fingerprint)" ] && registry_answers; then
			say "registry (pid $(pid_of "$reg_pid")) already runs on $registry"
			return
		fi
		say "registry settings changed; restarting it"
		stop "$reg_pid" docker-registry || true
	fi
	rm -f "$reg_pid"
	if port_busy; then
		die "port $port is busy on this machine ($(ss -Hltnp "sport = :$port" | awk '{print $4, $6}' | head -1)); stop that or set PERCH_REGISTRY_PORT"
	fi
	echo "--- $(date -u +%FT%TZ) $prog up: docker-registry serve $regdir/config.yml" >>"$reg_log"
	spawn "$reg_log" "$reg_pid" docker-registry serve "$regdir/config.yml"
	pid=$(pid_of "$reg_pid")
	for ((i = 0; i < timeout * 10; i++)); do
		registry_answers && break
		if ! running "$pid"; then
			rm -f "$reg_pid"
			echo "$prog: error: registry exited before answering on $registry; last lines of $reg_log:" >&2
			log_tail "$reg_log"
			exit 1
		fi
		sleep 0.1
	done
	if ! registry_answers; then
		echo "$prog: error: registry (pid $pid) does not answer on $registry after ${timeout}s; last lines of $reg_log:" >&2
		log_tail "$reg_log"
		stop "$reg_pid" docker-registry || true
		exit 1
	fi
	registry_fingerprint >"$dir/registry.fingerprint"
	say "registry (pid $pid) runs on $registry (user $user, data $regdir/data)"
}

registry_down() {
	if [ -f "$reg_pid" ]; then
		stop "$reg_pid" docker-registry || say "registry recorded in $reg_pid was not running"
	fi
}

# docker_login: log the client in to the registry, credentials in $docker_config.
docker_login() {
	mkdir -p "$docker_config"
	chmod 700 "$docker_config"
	local out
	if ! out=$(DOCKER_CONFIG=$docker_config DOCKER_HOST=unix://$sock \
		docker login -u "$user" --password-stdin "$registry" <"$pwfile" 2>&1); then
		echo "$prog: error: docker login to $registry failed:" >&2
		printf '%s\n' "$out" | tail -n 5 | sed 's/^/  | /' >&2
		exit 1
	fi
}

# --- subcommands ---------------------------------------------------------------

cmd_up() {
	mkdir -p "$dir"
	chmod 700 "$dir"
	exec 9>"$dir/lock"
	flock -w "$timeout" 9 || die "another $prog holds $dir/lock for over ${timeout}s"
	printf 'port=%s\nuser=%s\nsock=%s\n' "$port" "$user" "$sock" >"$settings"
	command -v curl >/dev/null 2>&1 || die "curl missing; run deploy/install-deps.sh"
	engine_up
	registry_up
	docker_login
}

cmd_down() {
	[ -d "$dir" ] || { say "nothing to stop ($dir does not exist)"; return; }
	exec 9>"$dir/lock"
	flock -w "$timeout" 9 || die "another $prog holds $dir/lock for over ${timeout}s"
	registry_down
	engine_down
}

cmd_status() {
	local ok=0 who
	if engine_answers; then
		who="not started by $prog"
		alive "$dockerd_pid" dockerd && who="started by $prog, pid $(pid_of "$dockerd_pid")"
		echo "engine:   answers on $sock ($who)"
	else
		echo "engine:   NOT answering on $sock"
		ok=1
	fi
	if alive "$reg_pid" docker-registry && registry_answers; then
		echo "registry: runs on $registry (pid $(pid_of "$reg_pid"), user $user, data $regdir/data)"
	elif registry_answers; then
		echo "registry: something answers on $registry, not started by $prog"
		ok=1
	else
		echo "registry: NOT running on $registry"
		ok=1
	fi
	return $ok
}

cmd_env() {
	printf 'export PERCH_ENV_DIR=%q\n' "$dir"
	printf 'export PERCH_REGISTRY=%q\n' "$registry"
	printf 'export PERCH_REGISTRY_USER=%q\n' "$user"
	printf 'export PERCH_REGISTRY_PASSWORD_FILE=%q\n' "$pwfile"
	printf 'export PERCH_DOCKER_SOCK=%q\n' "$sock"
	printf 'export DOCKER_HOST=%q\n' "unix://$sock"
	printf 'export DOCKER_CONFIG=%q\n' "$docker_config"
}

case "${1:-}" in
	up) cmd_up ;;
	down) cmd_down ;;
	registry-down) registry_down ;;
	status) cmd_status ;;
	env) cmd_env ;;
	-h | --help | help) usage ;;
	*) usage >&2; exit 2 ;;
esac
