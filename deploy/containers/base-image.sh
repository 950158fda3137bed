#!/usr/bin/env bash
# The Debian base every image is built FROM, made here since no registry is reachable: debootstrap a minimal
# bookworm from the machine's own Debian mirror and `docker import` it. Cached by its inputs (suite, variant,
# mirror, this script): the rootfs tarball under the cache directory, the image in the engine. Prints the tag.
#
#   base-image.sh            build (or reuse) and print the image tag
#
# Tunables: AUDIT_CONTAINERS_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/audit-trail/containers),
# AUDIT_DEBIAN_MIRROR (default: the first deb.debian.org-style URI in /etc/apt/sources.list*).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${AUDIT_CONTAINERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/audit-trail/containers}
suite=bookworm
variant=minbase

log() { printf '[base-image] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

apt_mirror() {  # the first non-security URI of an active apt source (one-line or deb822 format)
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
    | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+' | grep -v security | head -n 1 || true
}
mirror=${AUDIT_DEBIAN_MIRROR:-$(apt_mirror)}
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*; set AUDIT_DEBIAN_MIRROR"
command -v debootstrap >/dev/null || die "no debootstrap: apt-get install debootstrap"
docker info >/dev/null 2>&1 || die "no Docker engine answers (deploy/containers/engine.sh up; export DOCKER_HOST)"

key=$(printf '%s\n' "$suite" "$variant" "$mirror" "$(sha256sum <"$here/base-image.sh" | cut -d" " -f1)" | sha256sum | cut -c1-12)
tag="audit-trail/debian:$suite-$key"
if docker image inspect "$tag" >/dev/null 2>&1; then log "reusing $tag"; echo "$tag"; exit 0; fi

tarball="$cache/debian-$suite-$key.tar"
if [ ! -f "$tarball" ]; then
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  log "debootstrap --variant=$variant $suite from $mirror (about a minute)"
  debootstrap --variant="$variant" "$suite" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed"; }
  # The apt sources the images' builds will use: the same mirror, no recommends, no caches kept.
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" >"$root/etc/apt/sources.list"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90audit-trail"
  tar -C "$root" --exclude=./var/cache/apt/archives/'*.deb' --exclude=./var/lib/apt/lists/'*' \
    --exclude=./proc/'*' --exclude=./sys/'*' --exclude=./dev/'*' -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
fi
log "importing $tag"
docker import "$tarball" "$tag" >/dev/null
log "$tag: $(docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"
echo "$tag"
