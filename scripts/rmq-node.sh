#!/usr/bin/env bash
# A private RabbitMQ node beside the machine's own (Debian's rabbitmq-server), on its own ports,
# for tests that must not touch the shared broker (resource alarms, a TLS listener). Needs root
# (the node's files are handed to the rabbitmq user, as the server drops to it).
#   rmq-node.sh start NAME PORT [extra rabbitmq.conf lines...]   -> AMQP on 127.0.0.1:PORT
#   rmq-node.sh stop NAME
#   rmq-node.sh ctl NAME ARGS...   (rabbitmqctl against that node)
# State lives in /tmp/rmq-NAME (removed by stop). The distribution port is PORT+20000.
set -eu
cmd=$1; name=$2; dir=/tmp/rmq-$name
case $cmd in
start)
  port=$3; shift 3
  rm -rf "$dir"; mkdir -p "$dir"
  { echo "listeners.tcp.local = 127.0.0.1:$port"; for l in "$@"; do echo "$l"; done; } > "$dir/rabbitmq.conf"
  echo '[].' > "$dir/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$dir"
  RABBITMQ_NODENAME=$name@localhost RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf RABBITMQ_DIST_PORT=$((port+20000)) \
  RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins \
  RABBITMQ_PID_FILE=$dir/pid rabbitmq-server -detached
  for _ in $(seq 60); do rabbitmqctl -q -n "$name@localhost" await_startup >/dev/null 2>&1 && break; sleep 1; done
  rabbitmqctl -q -n "$name@localhost" await_startup
  echo "node $name@localhost: amqp://guest:guest@127.0.0.1:$port/%2F" ;;
stop)
  rabbitmqctl -q -n "$name@localhost" stop >/dev/null 2>&1 || true
  rm -rf "$dir" ;;
ctl)
  shift 2; exec rabbitmqctl -n "$name@localhost" "$@" ;;
esac
