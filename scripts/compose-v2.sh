#!/usr/bin/env bash
# Put Compose v2 at DEST (a docker CLI plugin, or a standalone `docker-compose`: the same binary).
#
#   scripts/compose-v2.sh DEST [CACHE_DIR]
#   scripts/compose-v2.sh /usr/local/lib/docker/cli-plugins/docker-compose   # `docker compose`
#
# Debian bookworm's docker-compose package is Compose v1 and it has no docker-compose-plugin;
# trixie's docker-compose package is Compose v2 (2.26) and runs on bookworm. Its .deb is kept in
# CACHE_DIR (default /var/cache/reqrep-compose-e2e) and only unpacked, never installed, so the
# machine's own packages stay as they are.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
dest=$1
cache=${2:-/var/cache/reqrep-compose-e2e}
here=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$cache" "$(dirname "$dest")"
deb=$(ls -t "$cache"/docker-compose_2.*.deb 2>/dev/null | head -n 1 || true)
[ -n "$deb" ] || deb=$(bash "$here/trixie-deb.sh" docker-compose "$cache")
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -x "$deb" "$unpacked"
install -m 0755 "$unpacked/usr/libexec/docker/cli-plugins/docker-compose" "$dest"
version=$("$dest" version)
[[ $version =~ version\ v?2\. ]] || { echo "compose-v2: $dest is not Compose v2: $version" >&2; exit 1; }
