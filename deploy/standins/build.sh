#!/usr/bin/env bash
# Build the stand-in base images (README.md beside this file) into the Docker engine that
# DOCKER_HOST names, under the tags the project's Dockerfile and docker-compose.yml use, for a
# machine that reaches Debian's archive but no image registry.
#
#   deploy/standins/build.sh [--cache DIR] TAG...
#   deploy/standins/build.sh --cache /var/cache/reqrep-compose-e2e python:3.12-slim rabbitmq:4.1-management
#
# A TAG python:* gets the Python stand-in, rabbitmq:*-management the RabbitMQ one. With --cache,
# the images are kept there as one `docker save` tarball named by a hash of these recipes and the
# tags, and loaded from it next time (a changed recipe builds anew and replaces the tarball).
# Steps: debootstrap a minimal Debian trixie (trixie's debootstrap, unpacked, not installed), import
# it as reqrep-standin/debian:trixie, build the stand-ins on it. Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
BASE=reqrep-standin/debian:trixie

say() { echo "standins: $*" >&2; }
die() { say "$*"; exit 1; }

cache=""
if [ "${1:-}" = --cache ]; then cache=$2; shift 2; fi
[ $# -gt 0 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
tags=("$@")
for tag in "${tags[@]}"; do
    case $tag in python:* | rabbitmq:*-management) ;; *) die "no stand-in for $tag" ;; esac
done
docker=${DOCKER:-docker}

key=$(cd "$here" && { find . -type f ! -name '*.md' -print0 | sort -z | xargs -0 sha256sum; printf '%s\n' "${tags[@]}"; } | sha256sum | cut -c1-16)
tarball=${cache:+$cache/standins-$key.tar}

if [ -n "$tarball" ] && [ -s "$tarball" ]; then
    if "$docker" load -q -i "$tarball" >&2; then
        say "loaded ${tags[*]} from $tarball"
        exit 0
    fi
    say "$tarball does not load: building anew"
    rm -f "$tarball"
fi

work=$(mktemp -d)
cleanup() {
    # debootstrap mounts /proc and /sys inside the root while it runs; a failure can leave them.
    awk -v d="$work/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r \
        | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

started=$SECONDS
deb=$(bash "$repo/scripts/trixie-deb.sh" debootstrap "$work")
dpkg-deb -x "$deb" "$work/debootstrap"
mirror=${MIRROR:-$(apt-cache policy 2>/dev/null \
    | awk '$2 ~ /^https?:\/\/.*\/debian\/?$/ && $3 !~ /-(security|updates|backports)\// {print $2; exit}')}
mirror=${mirror:-http://deb.debian.org/debian}
say "debootstrap --variant=minbase trixie from $mirror"
DEBOOTSTRAP_DIR=$work/debootstrap/usr/share/debootstrap \
    "$work/debootstrap/usr/sbin/debootstrap" --variant=minbase \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    trixie "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
root=$work/root
# As Debian's official images: no package lists or downloaded packages, no service may start
# during a build, and the engine provides hostname and resolv.conf.
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"
tar -C "$root" --numeric-owner -c . | "$docker" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$BASE" >/dev/null
say "base image $BASE in $((SECONDS - started)) s"

for tag in "${tags[@]}"; do
    case $tag in python:*) recipe=python ;; *) recipe=rabbitmq ;; esac
    DOCKER_BUILDKIT=1 "$docker" build -q --build-arg "BASE=$BASE" -t "$tag" "$here/$recipe" >/dev/null
    say "$tag built from $recipe/ ($((SECONDS - started)) s so far)"
done

if [ -n "$tarball" ]; then
    mkdir -p "$cache"
    "$docker" save -o "$tarball.partial" "${tags[@]}"
    mv "$tarball.partial" "$tarball"
    find "$cache" -maxdepth 1 -name 'standins-*.tar' ! -name "standins-$key.tar" -delete
    say "saved to $tarball ($(du -h "$tarball" | cut -f1))"
fi
