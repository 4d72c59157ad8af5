#!/bin/sh
# The official image's entrypoint, in short: started as root, the server gets its data directory
# and then runs as the rabbitmq user; anything else runs as it is.
set -e
if [ "$1" = rabbitmq-server ] && [ "$(id -u)" = 0 ]; then
    find /var/lib/rabbitmq ! -user rabbitmq -exec chown rabbitmq:rabbitmq '{}' +
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$@"
fi
exec "$@"
