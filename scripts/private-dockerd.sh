#!/usr/bin/env bash
# A private Docker engine for the compose check (scripts/compose-e2e.sh), or for poking at the
# compose stack by hand, on a machine that must not be disturbed: its own data root, exec root,
# socket and bridge under DIR, and afterwards nothing left behind.
#
#   scripts/private-dockerd.sh start DIR   # prints the variables that point a shell at it
#   scripts/private-dockerd.sh stop DIR    # idempotent; also after a crash or a kill -9
#
#   eval "$(scripts/private-dockerd.sh start /tmp/e2e)"; docker info; ...
#   scripts/private-dockerd.sh stop /tmp/e2e
#
# Needs root and Debian's docker.io (dockerd 20.10 and its client). The engine uses the vfs
# storage driver, which works on any file system and copies every layer in full (budget several
# GB under DIR). Its default bridge is one this script makes (reqrep-e2e0), its networks come from
# an address pool that overlaps no route and no name server of this machine, and published ports
# go through docker-proxy on 127.0.0.1.
#
# `stop` ends the engine by its pid, then undoes what it left on the machine: containers' shims
# (found by DIR in their command lines), mounts under DIR, the iptables rules and chains it added
# (the difference from a snapshot taken at `start`, limited to Docker's chains, its bridges and its
# address pool, so that rules anyone else added meanwhile stay), the bridges it made, the
# net.ipv4.ip_forward it turned on, and DIR itself.
set -euo pipefail

BRIDGE=reqrep-e2e0
# Candidate pools: the first that overlaps no route and no name server is used. The default
# bridge takes the pool's first /24, compose networks the following ones.
POOLS=(10.231.0.0/16 172.29.0.0/16 10.199.0.0/16 192.168.231.0/24)
here=$(cd "$(dirname "$0")" && pwd)

say() { echo "private-dockerd: $*" >&2; }
die() { say "$*"; exit 1; }

usage() { sed -n '2,10p' "$0" >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac

docker_cli() { DOCKER_HOST=unix://$dir/docker.sock /usr/bin/docker "$@"; }

choose_pool() {
    python3 - "${POOLS[@]}" <<'PY'
import ipaddress, re, subprocess, sys
taken = []
for line in subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                           text=True, check=True).stdout.splitlines():
    word = line.split()[0] if line.split() else ""
    if word in ("broadcast", "local", "unicast") and len(line.split()) > 1:
        word = line.split()[1]
    if word != "default" and re.fullmatch(r"[0-9.]+(/\d+)?", word):
        taken.append(ipaddress.ip_network(word, strict=False))
for line in open("/etc/resolv.conf", encoding="utf-8"):
    parts = line.split()
    if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
        taken.append(ipaddress.ip_network(parts[1]))
for candidate in map(ipaddress.ip_network, sys.argv[1:]):
    if not any(candidate.overlaps(net) for net in taken):
        print(candidate)
        break
else:
    sys.exit("every candidate address pool overlaps a route or a name server")
PY
}

start() {
    [ "$(id -u)" = 0 ] || die "needs root"
    command -v dockerd >/dev/null && [ -x /usr/bin/docker ] || die "needs Debian's docker.io (apt-get install docker.io)"
    if [ -e "$dir/dockerd.pid" ] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
        die "an engine already runs from $dir (pid $(cat "$dir/dockerd.pid"))"
    fi
    ip link show "$BRIDGE" >/dev/null 2>&1 && die "bridge $BRIDGE exists: another private engine runs (or stop it: $0 stop DIR)"
    mkdir -p "$dir/data" "$dir/exec" "$dir/config"
    # The state stop needs in order to undo what the engine adds to the machine.
    if command -v iptables-save >/dev/null; then iptables-save >"$dir/iptables.before"; fi
    cat /proc/sys/net/ipv4/ip_forward >"$dir/ip_forward.before"
    ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' >"$dir/links.before"

    local pool gateway
    pool=$(choose_pool)
    echo "$pool" >"$dir/pool"
    gateway=$(python3 -c 'import ipaddress, sys; n = ipaddress.ip_network(sys.argv[1]); print(f"{next(n.hosts())}/24")' "$pool")
    ip link add "$BRIDGE" type bridge
    ip addr add "$gateway" dev "$BRIDGE"
    ip link set "$BRIDGE" up

    # setsid: the engine is not in the caller's process group, so a Ctrl-C there reaches the
    # caller's trap (which stops it in order) rather than the engine directly.
    setsid dockerd \
        --data-root "$dir/data" \
        --exec-root "$dir/exec" \
        --pidfile "$dir/exec/dockerd.pid" \
        -H "unix://$dir/docker.sock" \
        --storage-driver vfs \
        --bridge "$BRIDGE" \
        --default-address-pool "base=$pool,size=24" \
        --ip6tables=false \
        --log-level warn \
        </dev/null >"$dir/dockerd.log" 2>&1 &
    echo $! >"$dir/dockerd.pid"
    local deadline=$((SECONDS + 60))
    until docker_cli version >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            tail -n 20 "$dir/dockerd.log" >&2 || true
            say "dockerd did not answer on $dir/docker.sock within 60 s"
            stop
            exit 1
        fi
        sleep 0.5
    done
    say "dockerd $(docker_cli version -f '{{.Server.Version}}') (pid $(cat "$dir/dockerd.pid")), pool $pool, bridge $BRIDGE, state in $dir"
    echo "export DOCKER_HOST=unix://$dir/docker.sock DOCKER_CONFIG=$dir/config"
}

# Processes of this engine that outlived it: containerd and its shims name DIR on their command line.
leftover_pids() {
    local proc pid cmdline
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$pid" = $$ ] && continue
        cmdline=$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline") || continue
        case $cmdline in *"$dir/"*) echo "$pid" ;; esac
    done
}

stop() {
    [ -d "$dir" ] || return 0
    local pid deadline
    pid=$(cat "$dir/dockerd.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # Containers first, so that their processes get a SIGTERM and the engine removes their
        # network endpoints, iptables rules and mounts itself.
        ids=$(timeout 30 /usr/bin/docker -H "unix://$dir/docker.sock" ps -aq 2>/dev/null || true)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086 # one argument per id
            timeout 60 /usr/bin/docker -H "unix://$dir/docker.sock" rm -f $ids >/dev/null 2>&1 || true
        fi
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            say "dockerd (pid $pid) did not stop within 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    for pid in $(leftover_pids); do kill -KILL "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + 10))
    while [ -n "$(leftover_pids)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done

    # Mounts under DIR (network namespaces, a container's shm), deepest first.
    awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done

    if [ -f "$dir/iptables.before" ] && command -v iptables-save >/dev/null; then
        iptables-save >"$dir/iptables.after"
        python3 "$here/iptables-undo.py" "$dir/iptables.before" "$dir/iptables.after" \
            --bridge "$BRIDGE" --pool "$(cat "$dir/pool" 2>/dev/null || echo 0.0.0.0/32)" \
            >"$dir/iptables.undo"
        iptables-restore --noflush <"$dir/iptables.undo" || say "iptables-restore failed: see $dir/iptables.undo"
    fi

    # Bridges and veths the engine made (its own networks' br-<id>), and the default bridge.
    if [ -f "$dir/links.before" ]; then
        ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | while read -r link; do
            grep -qxF "$link" "$dir/links.before" && continue
            case $link in "$BRIDGE" | br-* | veth*) ip link delete "$link" 2>/dev/null || true ;; esac
        done
    fi
    if [ -f "$dir/ip_forward.before" ]; then
        cat "$dir/ip_forward.before" >/proc/sys/net/ipv4/ip_forward
    fi
    if [ -n "$(leftover_pids)" ] || awk -v d="$dir/" 'index($5, d) == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
        die "processes or mounts of the engine remain under $dir: not removing it"
    fi
    rm -rf "$dir"
}

case $cmd in
start) start ;;
stop) stop ;;
*) usage ;;
esac
