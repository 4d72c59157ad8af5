#!/usr/bin/env bash
# The compose stack end to end, as a user runs it: README.md's quick start word for word, then the
# checks of issue 24's five findings, in a private Docker engine that is gone afterwards.
#
#   bash scripts/compose-e2e.sh          # as root; .ci/run runs it after the test suite
#
# What it does, in order (each step is timed; the table closes the run):
#   tools       Debian's docker.io if missing; Compose v2 (trixie's docker-compose package, unpacked
#               into the engine's private cli-plugins directory, kept in the cache)
#   engine      scripts/private-dockerd.sh: its own data root, socket, bridge and address pool
#   images      the base images the Dockerfile and docker-compose.yml name: pulled when a registry
#               answers, else the stand-ins of deploy/standins/ (loaded from the cache, or built)
#   quickstart  README.md's quick start block, line by line, in a copy of the checkout, with only
#               the documented variables set: the ports (5672 is this machine's own RabbitMQ) and,
#               where this machine trusts extra CA certificates (a proxy that intercepts TLS),
#               REQREP_BUILD_CA_BUNDLE; a `# prints X` comment is checked against the output
#   then one step per finding of issue 24 (see each step's `step` line below), a draining `down`
#   with calls in flight, and the cluster profile with its queue's leader stopped under load.
#
# Variables: REQREP_E2E_CACHE (default /var/cache/reqrep-compose-e2e: the Compose package and the
# stand-in images, reused by later runs; delete it to start cold); REQREP_E2E_LOGS (default
# /tmp/reqrep-compose-e2e-logs: the steps' output, kept there after a failure).
# REQREP_BUILD_CA_BUNDLE and REQREP_BUILD_PIP_INDEX_URL, when set, reach the builds as documented.
#
# Exit status 0 when every check passed; otherwise 1, after a line `FAIL [finding]: why` and the
# stack's state and last log lines. Everything it started is stopped by its pid, and the engine's
# containers, volumes, iptables rules, bridge and mounts are removed, whatever happened. The
# machine's RabbitMQ on 127.0.0.1:5672 is only ever probed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${REQREP_E2E_CACHE:-/var/cache/reqrep-compose-e2e}

# The stack sees only what this script sets: none of the caller's Compose or stack variables.
for name in $(compgen -e); do
    case $name in
    COMPOSE_* | RABBITMQ_* | RABBIT[0-9]_* | DOCKER_* | BUILDKIT_*) unset "$name" ;;
    REQREP_BUILD_CA_BUNDLE | REQREP_BUILD_PIP_INDEX_URL | REQREP_E2E_*) ;;
    REQREP_*) unset "$name" ;;
    esac
done

state=$(mktemp -d /tmp/reqrep-e2e.XXXXXX)
kept_logs=${REQREP_E2E_LOGS:-/tmp/reqrep-compose-e2e-logs}   # the steps' output, after a failure
engine=$state/engine
copy=$state/reqrep    # the project's name is the folder's: containers are reqrep-worker-1, ...
logs=$state/logs
mkdir -p "$logs" "$state/bin"
background=()         # pids of this script's own background jobs
failed=""
timings=()

say() { echo "compose-e2e: $*"; }
passed=0
ok() {
    passed=$((passed + 1))
    echo "  ok  $*"
}
fail() {
    failed="$1: $2"
    echo "FAIL [$1]: $2" >&2
    exit 1
}

step_name=""
step_started=0
run_started=$SECONDS
step() {
    step_end
    step_name=$1
    step_started=$SECONDS
    echo
    echo "== $1${2:+: $2}"
}
step_end() {
    if [ -n "$step_name" ]; then timings+=("$(printf '%-12s %4d s' "$step_name" $((SECONDS - step_started)))"); fi
    step_name=""
}

# dc ARGS: `docker compose` in the copy of the checkout; no call may hang the run.
dc() { (cd "$copy" && timeout 600 docker compose "$@"); }
dcc() { dc --profile cluster "$@"; }

# until_true SECONDS WHAT COMMAND...: poll COMMAND (every 0.5 s) until it succeeds.
until_true() {
    local limit=$1 what=$2 deadline=$((SECONDS + $1))
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { echo "  waited ${limit} s for: $what" >&2; return 1; }
        sleep 0.5
    done
}

# amqp_answers HOST PORT: something there speaks AMQP 0-9-1 (answers the protocol header with a
# Connection.Start frame).
amqp_answers() {
    python3 - "$1" "$2" <<'PY'
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        sys.exit(0 if s.recv(7)[:1] == b"\x01" else 1)
except OSError:
    sys.exit(1)
PY
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local port=$1
    while ! port_free "$port"; do port=$((port + 1)); [ "$port" -lt $(($1 + 100)) ] || return 1; done
    echo "$port"
}

# healthy_count SERVICE [COMPOSE OPTIONS]: how many containers of SERVICE run and are healthy.
healthy_count() {
    local service=$1
    shift
    dc "$@" ps --format json "$service" | python3 -c '
import json, sys
rows = [json.loads(line) for line in sys.stdin if line.strip()]
print(sum(r["State"] == "running" and r.get("Health") == "healthy" for r in rows))'
}
is_healthy() {  # SERVICE COUNT [COMPOSE OPTIONS]
    local service=$1 count=$2
    shift 2
    [ "$(healthy_count "$service" "$@")" = "$count" ]
}
expect_healthy() {  # SERVICE COUNT FINDING [COMPOSE OPTIONS]
    local service=$1 count=$2 finding=$3 got
    shift 3
    got=$(healthy_count "$service" "$@")
    [ "$got" = "$count" ] || fail "$finding" "$count healthy $service container(s) expected, $got found"
    ok "$service: $count healthy"
}

# has_marker: the broker has the vhost made before `down` (its data survived).
# (Read whole first: with pipefail, `| grep -q` fails when grep's early exit cuts the writer off.)
has_marker() {
    local vhosts
    vhosts=$(dc exec -T rabbitmq rabbitmqctl -q list_vhosts) && grep -qx reqrep-e2e-marker <<<"$vhosts"
}

diagnose() {
    echo "---- state of the stack at the failure" >&2
    dc --profile cluster --profile tools ps -a >&2 2>&1 || true
    dc --profile cluster --profile tools logs --no-color --tail 25 >&2 2>&1 || true
}

cleanup() {
    local status=$?
    set +e
    step_end
    for pid in "${background[@]}"; do kill "$pid" 2>/dev/null; done
    if [ -S "$engine/docker.sock" ]; then
        [ "$status" -eq 0 ] || diagnose
        dc --profile cluster --profile tools down -v --remove-orphans --timeout 5 >/dev/null 2>&1
        docker rm -f reqrep-e2e-drain >/dev/null 2>&1
    fi
    bash "$repo/scripts/private-dockerd.sh" stop "$engine"
    if [ "$status" -ne 0 ]; then
        rm -rf "$kept_logs"
        cp -r "$logs" "$kept_logs" 2>/dev/null && say "the steps' output is kept in $kept_logs"
    fi
    if awk -v d="$state/" 'index($5, d) == 1 {found = 1} END {exit !found}' /proc/self/mountinfo; then
        say "mounts remain under $state: left as it is"
    else
        rm -rf "$state"
    fi
    echo
    echo "compose-e2e timings:"
    printf '  %s\n' "${timings[@]}"
    printf '  %-12s %4d s\n' total $((SECONDS - run_started))
    if [ "$status" -eq 0 ]; then
        echo "compose-e2e: $passed passed, 0 failed"
    else
        say "failed (exit $status)${failed:+: $failed}"
        echo "compose-e2e: $passed passed, 1 failed"
    fi
    exit "$status"
}

# -- the cluster step's helpers

leader_of_queue() {
    local node
    for node in rabbit1 rabbit2 rabbit3; do
        dcc exec -T "$node" rabbitmqctl -q list_queues name leader --formatter json 2>/dev/null \
            | python3 -c '
import json, sys
leaders = [q["leader"] for q in json.load(sys.stdin) if q["name"] == "reqrep.demo"]
print(leaders[0].split("@")[1]) if leaders else sys.exit(1)' && return 0
    done
    return 1
}
# received: how many requests the cluster's workers have received (their ping answers' stats).
received() {
    dcc exec -T cluster-worker reqrep ping --json 2>/dev/null \
        | python3 -c 'import json, sys; print(sum(w["stats"].get("received", 0) for w in json.load(sys.stdin)))'
}
calls_flow_since() { [ "$(received)" -gt $(($1 + 100)) ]; }
running_nodes() {
    dcc exec -T rabbit1 rabbitmqctl -q cluster_status --formatter json \
        | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["running_nodes"]))'
}
cluster_whole() { [ "$(running_nodes)" = 3 ]; }
# load_with_leader_stop WAIT LABEL: bench under load, stop the queue's leader once calls flow,
# start it again; leaves the summary in $logs/LABEL.json.
load_with_leader_stop() {
    local wait=$1 label=$2 leader pid before node urls=""
    leader=$(leader_of_queue) || fail "finding 4" "no leader found for reqrep.demo"
    # The caller is given the two other nodes: a caller on the stopped node loses its calls in
    # flight with its connection (ConnectionLost, docs/reliability.md), which is not
    # what this measures.
    for node in rabbit1 rabbit2 rabbit3; do
        [ "$node" = "$leader" ] || urls="$urls${urls:+,}amqp://reqrep:reqrep@$node:5672/%2F"
    done
    before=$(received)
    (cd "$copy" && REQREP_WAIT_FOR_WORKERS=$wait timeout 300 docker compose --profile cluster run --rm -T \
        -e "AMQP_URL=$urls" cluster-cli bench --calls "$calls" --concurrency 8 --warmup 0 --json) \
        >"$logs/$label.json" 2>"$logs/$label.err" &
    pid=$!
    background+=("$pid")
    until_true 60 "calls flowing" calls_flow_since "$before" || fail "finding 4" "the load never reached the workers"
    began=$SECONDS
    dcc stop "$leader" >/dev/null 2>&1
    say "stopped $leader, the leader of reqrep.demo, in $((SECONDS - began)) s, under load from a caller on the other two"
    wait "$pid" || true   # bench exits 8 when any call failed; the summary says which
    dcc start "$leader" >/dev/null 2>&1
    until_true 180 "$leader healthy again" is_healthy "$leader" 1 --profile cluster \
        || fail "finding 4" "$leader did not come back healthy"
    until_true 120 "3 running nodes" cluster_whole || fail "finding 4" "$leader did not rejoin the cluster"
    until_true 120 "3 cluster workers healthy" is_healthy cluster-worker 3 --profile cluster \
        || fail "finding 4" "the cluster workers did not all come back healthy"
}
summary() {
    python3 - "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
errors = ", ".join(f"{kind} {n}" for kind, n in sorted(s["errors"].items())) or "none"
print(f"{s['ok']} of {s['calls']} calls ok; failures by kind: {errors}; "
      f"{s['calls_per_second']} calls/s, slowest {s['latency_ms']['max']} ms")
PY
}

trap cleanup EXIT
trap 'exit 130' INT TERM

# The run is one function, so bash reads it whole before it starts: an edit to this file while it
# runs does not change what runs.
main() {

[ "$(id -u)" = 0 ] || fail setup "needs root (a private dockerd)"

# --------------------------------------------------------------------------------------------
step tools "docker.io and Compose v2"
export DEBIAN_FRONTEND=noninteractive
if ! command -v dockerd >/dev/null || [ ! -x /usr/bin/docker ]; then
    # Installing must not start the machine's own Docker service: a policy-rc.d forbids it.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
    [ -z "$guard" ] || rm -f "$guard"
fi
bash "$repo/scripts/compose-v2.sh" "$engine/config/cli-plugins/docker-compose" "$cache"
# `docker` is the client of the engine's own package, whatever else PATH holds.
ln -s /usr/bin/docker "$state/bin/docker"
export PATH=$state/bin:$PATH DOCKER_CONFIG=$engine/config
version=$(docker compose version)
[[ $version =~ version\ v?2\. ]] || fail setup "Compose v2 expected: $version"
ok "$(docker compose version)"

# --------------------------------------------------------------------------------------------
step engine "a private dockerd"
local_broker=no
if amqp_answers 127.0.0.1 5672; then local_broker=yes; fi
eval "$(bash "$repo/scripts/private-dockerd.sh" start "$engine")"
ok "dockerd $(docker version -f '{{.Server.Version}}'); the machine's RabbitMQ on 5672: $local_broker"

# --------------------------------------------------------------------------------------------
step images "the base images: a registry's, else stand-ins"
mkdir -p "$copy"
git -C "$repo" ls-files -co --exclude-standard -z | (cd "$repo" && tar --null -T - -cf -) | tar -C "$copy" -xf -
base_images=$(
    {
        awk 'toupper($1) == "FROM" {print $2; exit}' "$copy/Dockerfile"
        dc --profile cluster --profile tools config --format json | python3 -c '
import json, sys
for s in json.load(sys.stdin)["services"].values():
    if "build" not in s:
        print(s["image"])'
    } | sort -u
)
missing=()
for image in $base_images; do
    if timeout 300 docker pull -q "$image" >"$logs/pull.log" 2>&1; then
        ok "$image pulled"
    else
        missing+=("$image")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "no registry gave ${missing[*]} ($(tail -n 1 "$logs/pull.log")): stand-ins"
    DOCKER=docker timeout 900 bash "$repo/deploy/standins/build.sh" --cache "$cache" "${missing[@]}"
    ok "stand-ins: ${missing[*]} (deploy/standins/README.md says how they differ)"
fi

# --------------------------------------------------------------------------------------------
# The documented variables: the broker's ports (free ones, as docs/operations.md says to choose when 5672
# is taken), and the build's CA bundle where this machine needs one.
RABBITMQ_AMQP_PORT=$(free_port 5673)
RABBITMQ_MANAGEMENT_PORT=$(free_port 15673)
export RABBITMQ_AMQP_PORT RABBITMQ_MANAGEMENT_PORT
extra_cas=$(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | sort || true)
if [ -z "${REQREP_BUILD_CA_BUNDLE:-}" ] && [ -n "$extra_cas" ]; then
    # shellcheck disable=SC2086 # one file a word
    cat $extra_cas >"$state/extra-ca.pem"
    export REQREP_BUILD_CA_BUNDLE=$state/extra-ca.pem
fi

step quickstart "README.md's quick start, word for word"
quickstart=$(awk '
    /^## / { inside = ($0 == "## Quick start") }
    inside && /^```sh$/ && !done { fence = 1; next }
    fence && /^```$/ { fence = 0; done = 1 }
    fence { print }' "$copy/README.md")
[ -n "$quickstart" ] || fail quickstart "README.md has no \`\`\`sh block under \"## Quick start\""
say "with RABBITMQ_AMQP_PORT=$RABBITMQ_AMQP_PORT RABBITMQ_MANAGEMENT_PORT=$RABBITMQ_MANAGEMENT_PORT${REQREP_BUILD_CA_BUNDLE:+ REQREP_BUILD_CA_BUNDLE=$REQREP_BUILD_CA_BUNDLE}"
n=0
while IFS= read -r line; do
    case $line in "" | "#"*) continue ;; esac
    n=$((n + 1))
    expected=""
    if [[ $line =~ [[:space:]]#[[:space:]]prints[[:space:]](.*)$ ]]; then expected=${BASH_REMATCH[1]}; fi
    echo "  \$ $line"
    began=$SECONDS
    if ! (cd "$copy" && timeout 900 bash -c "$line") </dev/null >"$logs/qs$n.out" 2>"$logs/qs$n.err"; then
        tail -n 30 "$logs/qs$n.out" "$logs/qs$n.err" >&2
        fail quickstart "\`$line\` failed"
    fi
    if [ -n "$expected" ] && [ "$(cat "$logs/qs$n.out")" != "$expected" ]; then
        echo "  stdout was:" >&2
        head -n 20 "$logs/qs$n.out" >&2
        fail quickstart "\`$line\` did not print exactly $expected"
    fi
    ok "$((SECONDS - began)) s${expected:+, printed $expected}"
done <<<"$quickstart"
expect_healthy rabbitmq 1 quickstart
expect_healthy worker 3 quickstart
ok "broker and three workers healthy"

# --------------------------------------------------------------------------------------------
step spread "--scale worker=3: calls reach all three"
hosts=$(dc run --rm -T --entrypoint sh cli -c 'for i in $(seq 12); do reqrep call whoami; done' 2>"$logs/spread.err" \
    | python3 -c 'import json, sys; print(" ".join(sorted({json.loads(l)["host"] for l in sys.stdin if l.strip()})))')
workers=$(dc ps -q worker | cut -c1-12 | sort | tr '\n' ' ')
[ "$hosts" = "${workers% }" ] || fail spread "12 calls were answered by [$hosts]; the workers are [$workers]"
ok "12 calls answered by all three workers ($hosts)"

# --------------------------------------------------------------------------------------------
step exitcodes "reqrep call's exit codes through run --rm cli"
# One container for all cases (each `run` costs seconds): "EXPECTED ACTUAL what" per line.
dc run --rm -T --entrypoint sh cli -c '
code() { "$@" >/dev/null 2>&1; echo $?; }
echo "0 $(code reqrep call echo "{\"ok\": 1}") success"
echo "2 $(code reqrep call echo "{not json") payload not JSON"
echo "3 $(code reqrep call sleep "{\"seconds\": 5}" --timeout 1) timeout"
echo "4 $(code reqrep call fail "{\"message\": \"boom\"}") remote error"
echo "5 $(code reqrep call no_such_method) method not found"
echo "6 $(code reqrep call echo 1 --service no-such-service) no such service"
echo "7 $(AMQP_URL=amqp://reqrep:reqrep@no-such-host.invalid:5672/%2F REQREP_CONNECT_TIMEOUT=3 code reqrep call echo 1) broker unreachable"
echo "9 $(AMQP_URL=amqp://reqrep:wrong-password@rabbitmq:5672/%2F code reqrep call echo 1) wrong password"
echo "9 $(AMQP_URL=amqp://guest:guest@rabbitmq:5672/%2F code reqrep call echo 1) guest (not created once a default user is set)"
echo "0 $(code python -c "import urllib.request; urllib.request.urlopen(\"http://worker:8080/healthz\", timeout=3)") a worker'"'"'s /healthz from another container (--http-host 0.0.0.0)"
' >"$logs/exitcodes.out" 2>"$logs/exitcodes.err" || true
bad=0
while read -r expected actual what; do
    if [ "$expected" = "$actual" ]; then ok "exit $actual: $what"; else echo "  BAD exit $actual, expected $expected: $what" >&2; bad=1; fi
done <"$logs/exitcodes.out"
[ "$(wc -l <"$logs/exitcodes.out")" -eq 10 ] || { cat "$logs/exitcodes.err" >&2; fail exitcodes "the cases did not all run"; }
[ "$bad" = 0 ] || fail exitcodes "exit codes differ from README.md's table (or guest, or /healthz)"
# (10, no workers, is checked with the workers stopped, below.)

# --------------------------------------------------------------------------------------------
step ports "finding 1: published ports from variables; a local RabbitMQ keeps 5672"
published=$(dc port rabbitmq 5672)
[ "$published" = "127.0.0.1:$RABBITMQ_AMQP_PORT" ] || fail "finding 1" "AMQP published on $published"
published=$(dc port rabbitmq 15672)
[ "$published" = "127.0.0.1:$RABBITMQ_MANAGEMENT_PORT" ] || fail "finding 1" "management published on $published"
ok "published on 127.0.0.1:$RABBITMQ_AMQP_PORT and 127.0.0.1:$RABBITMQ_MANAGEMENT_PORT"
# A client on the host, through the published port (a host-network container: the host's view).
got=$(docker run --rm --network host reqrep:local call echo '"through the published port"' --service demo \
    --url "amqp://reqrep:reqrep@127.0.0.1:$RABBITMQ_AMQP_PORT/%2F" 2>"$logs/hostcall.err") \
    || fail "finding 1" "a call from the host through 127.0.0.1:$RABBITMQ_AMQP_PORT failed: $(cat "$logs/hostcall.err")"
[ "$got" = '"through the published port"' ] || fail "finding 1" "the host's call printed $got"
ok "a call from the host through 127.0.0.1:$RABBITMQ_AMQP_PORT"
python3 - "$RABBITMQ_MANAGEMENT_PORT" <<'PY' || fail "finding 1" "the management API does not answer on its published port"
import base64, json, sys, urllib.request
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/overview")
request.add_header("Authorization", "Basic " + base64.b64encode(b"reqrep:reqrep").decode())
with urllib.request.urlopen(request, timeout=10) as answer:
    sys.exit(0 if "rabbitmq_version" in json.load(answer) else 1)
PY
ok "management API on 127.0.0.1:$RABBITMQ_MANAGEMENT_PORT"
if [ "$local_broker" = yes ]; then
    amqp_answers 127.0.0.1 5672 || fail "finding 1" "the machine's RabbitMQ on 5672 stopped answering"
    ok "the machine's RabbitMQ still answers on 5672"
    # Without the variables, as docs/operations.md warns: the broker cannot take 5672 (another project,
    # so that the running stack is not touched).
    if (cd "$copy" && env -u RABBITMQ_AMQP_PORT -u RABBITMQ_MANAGEMENT_PORT \
        timeout 120 docker compose -p reqrep-e2e-defaults up --wait rabbitmq) >"$logs/clash.out" 2>&1; then
        (cd "$copy" && docker compose -p reqrep-e2e-defaults down -v) >/dev/null 2>&1 || true
        fail "finding 1" "the broker started on 5672 although the machine's RabbitMQ holds it"
    fi
    (cd "$copy" && docker compose -p reqrep-e2e-defaults down -v) >/dev/null 2>&1
    grep -q 'address already in use' "$logs/clash.out" \
        || { tail -n 5 "$logs/clash.out" >&2; fail "finding 1" "no 'address already in use', which docs/operations.md names"; }
    ok "with the defaults, up stops with 'address already in use' (docs/operations.md's words)"
fi

# --------------------------------------------------------------------------------------------
step image "finding 2: one image for every reqrep service, fresh after an edit, quiet run"
tags=$(dc --profile cluster --profile tools config --format json | python3 -c '
import json, sys
print(" ".join(sorted({s["image"] for s in json.load(sys.stdin)["services"].values() if "build" in s})))')
[ "$tags" = "reqrep:local" ] || fail "finding 2" "the services that build name the images [$tags], not one"
ok "worker, cli, cluster-worker and cluster-cli all run reqrep:local"
# An edit, then the quick start's `up --build`: the next `run --rm cli` has the edit.
mark=$(python3 -c 'import secrets; print(secrets.token_hex(8))')
echo "MARK = \"$mark\"" >"$copy/reqrep/_compose_e2e_probe.py"
(cd "$copy" && timeout 600 docker compose up --build --wait) >"$logs/rebuild.out" 2>&1 \
    || { tail -n 20 "$logs/rebuild.out" >&2; fail "finding 2" "up --build after an edit failed"; }
got=$(dc run --rm -T --entrypoint python cli -c 'import reqrep._compose_e2e_probe as p; print(p.MARK)' 2>"$logs/probe.err") \
    || fail "finding 2" "run --rm cli does not have the edit: $(tail -n 1 "$logs/probe.err")"
[ "$got" = "$mark" ] || fail "finding 2" "run --rm cli printed $got"
image_id=$(docker image inspect -f '{{.Id}}' reqrep:local)
for container in $(dc ps -q worker); do
    [ "$(docker inspect -f '{{.Image}}' "$container")" = "$image_id" ] || fail "finding 2" "a worker runs another image than reqrep:local"
done
ok "after an edit and up --build, run --rm cli and the worker run the new code"
# With no image at all, `run` builds it; --progress quiet (docs/operations.md) keeps stdout to the result.
docker rmi -f reqrep:local >/dev/null
got=$(dc --progress quiet run --rm cli call echo '{"quiet": true}' 2>"$logs/quiet.err") \
    || fail "finding 2" "run with no image failed: $(tail -n 3 "$logs/quiet.err")"
[ "$got" = '{"quiet": true}' ] || fail "finding 2" "run --progress quiet printed more than the result: $(echo "$got" | head -n 3)"
docker image inspect reqrep:local >/dev/null 2>&1 || fail "finding 2" "run did not build reqrep:local"
ok "with no image, --progress quiet run built it and printed only {\"quiet\": true}"
expect_healthy worker 1 "finding 2"

# --------------------------------------------------------------------------------------------
step drain "a draining down with calls in flight"
dc exec -T rabbitmq rabbitmqctl -q add_vhost reqrep-e2e-marker >/dev/null   # for finding 3, below
has_marker || fail "finding 3" "the marker vhost was not made"
dc up --wait --scale worker=3 >"$logs/scale.out" 2>&1 || fail drain "scaling back to three workers failed"
# Six 8-second calls from the host's side (outside the project, so `down` leaves the caller be);
# it says IN-FLIGHT once the workers hold all six.
docker run -d --name reqrep-e2e-drain --network host --entrypoint sh \
    -e "AMQP_URL=amqp://reqrep:reqrep@127.0.0.1:$RABBITMQ_AMQP_PORT/%2F" -e REQREP_SERVICE=demo reqrep:local -c '
for i in 1 2 3 4 5 6; do
    (reqrep call sleep "{\"seconds\": 8}" --timeout 60 >/tmp/out.$i 2>&1; echo "call $i exit $? $(cat /tmp/out.$i)") &
done
held() { reqrep ping --json 2>/dev/null | python -c "import json, sys; print(sum(w[\"in_flight\"] for w in json.load(sys.stdin)))"; }
i=0
until [ "$(held)" = 6 ]; do i=$((i + 1)); [ $i -lt 60 ] || { echo NOT-IN-FLIGHT; break; }; sleep 0.5; done
echo IN-FLIGHT
wait' >/dev/null
until_true 60 "six calls in flight" sh -c 'docker logs reqrep-e2e-drain 2>&1 | grep -qx IN-FLIGHT' \
    || fail drain "the six calls never were in flight together: $(docker logs reqrep-e2e-drain 2>&1 | tail -n 3)"
since=$(date +%s)
began=$SECONDS
(cd "$copy" && timeout 120 docker compose down) >"$logs/down.out" 2>&1 || fail drain "down failed"
took=$((SECONDS - began))
timeout 60 docker wait reqrep-e2e-drain >/dev/null
answers=$(docker logs reqrep-e2e-drain 2>&1 | grep -c '^call [1-6] exit 0 {"slept": 8.0}$' || true)
[ "$answers" = 6 ] || { docker logs reqrep-e2e-drain >&2; fail drain "$answers of 6 calls in flight got their answer across down"; }
exits=$(docker events --since "$since" --until "$(date +%s)" --filter type=container --filter event=die \
    --filter label=com.docker.compose.service=worker --format '{{index .Actor.Attributes "exitCode"}}' | sort | uniq -c | xargs)
[ "$exits" = "3 0" ] || fail drain "the three workers' exit codes (count code): $exits"
ok "all 6 calls answered; the 3 workers drained and exited 0; down took $took s"
docker rm reqrep-e2e-drain >/dev/null

# --------------------------------------------------------------------------------------------
step volume "finding 3: the broker's data in a named volume; a password change as docs/operations.md says"
volumes=$(docker volume ls -q)
[ "$volumes" = "reqrep_rabbitmq-data" ] || fail "finding 3" "after down, the volumes are [$(echo $volumes)], not only reqrep_rabbitmq-data"
ok "after down: only the named volume reqrep_rabbitmq-data (no anonymous volume)"
dc up --wait rabbitmq >"$logs/broker.out" 2>&1 || fail "finding 3" "the broker did not start again"
until_true 30 "the marker vhost" has_marker \
    || fail "finding 3" "the broker lost its data across down/up: $(dc exec -T rabbitmq rabbitmqctl -q list_vhosts 2>&1 | xargs)"
ok "the broker kept its data across down and up"
# The queue outlived its workers: a call says so at once (exit 10), or waits with the option.
set +e
dc run --rm -T cli call echo 1 >/dev/null 2>&1
code=$?
REQREP_WAIT_FOR_WORKERS=1 dc run --rm -T cli call echo 1 --timeout 3 >/dev/null 2>&1
waited=$?
set -e
[ "$code" = 10 ] || fail exitcodes "a call with no worker exited $code, not 10 (no workers)"
[ "$waited" = 3 ] || fail exitcodes "with REQREP_WAIT_FOR_WORKERS=1 it exited $waited, not 3 (timed out waiting)"
ok "no worker: exit 10; with REQREP_WAIT_FOR_WORKERS=1, exit 3 at its timeout"
# The password change docs/operations.md describes (the new password is never printed).
new_password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
old_broker=$(dc ps -q rabbitmq)
printf '%s\n' "$new_password" | dc exec -T rabbitmq rabbitmqctl change_password reqrep >/dev/null
(cd "$copy" && RABBITMQ_PASSWORD=$new_password timeout 300 docker compose up --wait) >"$logs/password.out" 2>&1 \
    || { tail -n 10 "$logs/password.out" >&2; fail "finding 3" "up --wait with the new password failed"; }
[ "$(dc ps -q rabbitmq)" != "$old_broker" ] || fail "finding 3" "the broker was not recreated with the new variable"
until_true 30 "the marker vhost" has_marker || fail "finding 3" "the recreated broker lost its data"
expect_healthy worker 1 "finding 3"
got=$(RABBITMQ_PASSWORD=$new_password dc run --rm -T --no-deps cli call echo '"new password"' 2>/dev/null) || true
[ "$got" = '"new password"' ] || fail "finding 3" "a call with the new password failed"
set +e
dc run --rm -T --no-deps cli call echo 1 >/dev/null 2>&1   # --no-deps: leave the broker as it is
code=$?
set -e
[ "$code" = 9 ] || fail "finding 3" "the old password gave exit $code, not 9 (refused)"
ok "password changed: broker recreated with its data, worker healthy, new password works, old one refused"
dc down -v >"$logs/down-v.out" 2>&1
[ -z "$(docker volume ls -q)" ] || fail "finding 3" "down -v left volumes: $(docker volume ls -q | xargs)"
ok "down -v removed the volume"

# --------------------------------------------------------------------------------------------
step build "finding 5: the build's CA bundle and index URL, as secrets"
if [ -n "${REQREP_BUILD_CA_BUNDLE:-}" ]; then
    # This machine intercepts TLS: without the bundle, pip cannot reach PyPI.
    if (cd "$copy" && env -u REQREP_BUILD_CA_BUNDLE timeout 300 docker compose --progress plain build --no-cache worker) \
        >"$logs/no-ca.out" 2>&1; then
        say "note: the build passed without REQREP_BUILD_CA_BUNDLE (TLS is not intercepted here after all)"
    else
        grep -q CERTIFICATE_VERIFY_FAILED "$logs/no-ca.out" \
            || { tail -n 15 "$logs/no-ca.out" >&2; fail "finding 5" "the build without the CA bundle failed, not on a certificate"; }
        ok "without REQREP_BUILD_CA_BUNDLE the build fails here with CERTIFICATE_VERIFY_FAILED"
    fi
fi
index_url=${REQREP_BUILD_PIP_INDEX_URL:-https://pypi.org/simple/}
# The cluster's image, with the tools extra for `reqrep bench`, from the index given as a secret.
(cd "$copy" && REQREP_EXTRAS=tools REQREP_BUILD_PIP_INDEX_URL=$index_url \
    timeout 600 docker compose --progress plain --profile cluster build --no-cache cluster-worker) >"$logs/index.out" 2>&1 \
    || { tail -n 20 "$logs/index.out" >&2; fail "finding 5" "the build with REQREP_BUILD_PIP_INDEX_URL failed"; }
grep -q "Looking in indexes: " "$logs/index.out" || fail "finding 5" "pip did not use the index given in REQREP_BUILD_PIP_INDEX_URL"
ok "pip used the index from REQREP_BUILD_PIP_INDEX_URL ($(grep -m1 -o 'Looking in indexes: .*' "$logs/index.out"))"
history=$(docker history --no-trunc --format '{{.CreatedBy}}' reqrep:local)
env_of_image=$(docker image inspect -f '{{join .Config.Env " "}}' reqrep:local)
for secret in "$index_url" "BEGIN CERTIFICATE" PIP_INDEX_URL= PIP_CERT=; do
    case "$history $env_of_image" in *"$secret"*) fail "finding 5" "the image's history or environment holds '$secret'" ;; esac
done
docker run --rm --entrypoint sh reqrep:local -c 'test ! -e /run/secrets/ca_bundle && test ! -e /run/secrets/pip_index_url' \
    || fail "finding 5" "the secrets are files in the image"
ok "neither the index URL nor the CA bundle is in the image, its history or its environment"

# --------------------------------------------------------------------------------------------
step cluster "finding 4: the cluster profile, the queue's leader stopped under load"
for i in 1 2 3; do
    port=$(free_port $((5680 + i)))
    export "RABBIT${i}_AMQP_PORT=$port"
done
export REQREP_EXTRAS=tools
(cd "$copy" && timeout 600 docker compose --profile cluster up --build --wait --scale cluster-worker=3 cluster-worker) \
    >"$logs/cluster-up.out" 2>&1 || { tail -n 20 "$logs/cluster-up.out" >&2; fail "finding 4" "the cluster profile did not come up healthy"; }
for node in rabbit1 rabbit2 rabbit3; do expect_healthy "$node" 1 "finding 4" --profile cluster; done
expect_healthy cluster-worker 3 "finding 4" --profile cluster
running=$(running_nodes)
[ "$running" = 3 ] || fail "finding 4" "the cluster runs $running nodes, not 3"
ok "3 nodes in one cluster; 3 cluster workers healthy (their healthcheck)"

# The calls a run makes: enough for about 25 s at this machine's rate, so that the stop falls
# inside the run.
rate=$(dcc run --rm -T cluster-cli bench --calls 400 --concurrency 8 --warmup 100 --json 2>"$logs/calibrate.err" \
    | python3 -c 'import json, sys; print(int(json.load(sys.stdin)["calls_per_second"]))') \
    || fail "finding 4" "reqrep bench failed: $(tail -n 3 "$logs/calibrate.err")"
calls=$(python3 -c "print(max(1200, min(30000, $rate * 25)))")
say "bench: $rate calls/s here, so $calls calls a run"

load_with_leader_stop 1 wait-for-workers
[ -s "$logs/wait-for-workers.json" ] || fail "finding 4" "bench printed no summary: $(tail -n 3 "$logs/wait-for-workers.err")"
result=$(summary "$logs/wait-for-workers.json")
python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); sys.exit(0 if s["ok"] == s["calls"] and not s["errors"] else 1)' \
    "$logs/wait-for-workers.json" || fail "finding 4" "with REQREP_WAIT_FOR_WORKERS=1: $result"
ok "with REQREP_WAIT_FOR_WORKERS=1: $result"
load_with_leader_stop 0 plain
[ -s "$logs/plain.json" ] || fail "finding 4" "bench printed no summary: $(tail -n 3 "$logs/plain.err")"
# Without the setting too: a requestor that saw consumers rides out the election (it asks again
# instead of failing with NoWorkers), so every call succeeds.
result=$(summary "$logs/plain.json")
python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); sys.exit(0 if s["ok"] == s["calls"] and not s["errors"] else 1)' \
    "$logs/plain.json" || fail "finding 4" "without REQREP_WAIT_FOR_WORKERS: $result"
ok "without it: $result"

step cleanup "down -v"
dcc down -v --timeout 40 >"$logs/cluster-down.out" 2>&1 || fail cleanup "down -v of the cluster failed"
[ -z "$(docker ps -aq)" ] || fail cleanup "containers remain: $(docker ps -a --format '{{.Names}}' | xargs)"
if [ "$local_broker" = yes ]; then
    amqp_answers 127.0.0.1 5672 || fail "finding 1" "the machine's RabbitMQ on 5672 stopped answering"
    ok "the machine's RabbitMQ still answers on 5672"
fi
}

main "$@"; exit
