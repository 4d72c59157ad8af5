#!/usr/bin/env bash
# Download one package from Debian trixie on a machine of another release, without touching the
# machine's apt: a private sources list, package lists and cache in a temporary directory.
#
#   scripts/trixie-deb.sh PACKAGE DEST_DIR      # prints the path of the .deb in DEST_DIR
#
# The compose check (scripts/compose-e2e.sh) uses it for what bookworm lacks: Compose v2
# (trixie's docker-compose is 2.x) and a debootstrap that knows trixie. The mirror is the one the
# machine's apt uses (MIRROR=... overrides it); bookworm's keyring verifies trixie's archive.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
package=$1
dest=$2

mirror=${MIRROR:-$(apt-cache policy 2>/dev/null \
    | awk '$2 ~ /^https?:\/\/.*\/debian\/?$/ && $3 !~ /-(security|updates|backports)\// {print $2; exit}')}
mirror=${mirror:-http://deb.debian.org/debian}

state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$dest"
echo "deb $mirror trixie main" >"$state/sources.list"
: >"$state/status"
opts=(
    -o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$state/lists" -o "Dir::State::Status=$state/status"
    -o "Dir::Cache=$state/cache" -o APT::Sandbox::User=root -qq
)
apt-get "${opts[@]}" update >&2
(cd "$dest" && apt-get "${opts[@]}" download "$package" >&2)
ls -t "$dest/${package}_"*.deb | head -n 1
