#!/usr/bin/env bash
# Build the three images FROM the local Debian base, every build with host networking and offline: the pinned
# Python dependencies' wheels and Kafka's Maven jars are fetched on the host first (its package index, Maven cache
# and certificates) into deploy/prefetched, which the Dockerfiles use instead of the internet when it is filled.
#
#   build-images.sh          prints the image tags it built
#
# Tunables: AUDIT_IMAGE_TAG (default dev), AUDIT_PYTHON (the host Python that builds wheels; .venv's by default).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${AUDIT_PYTHON:-$root/.venv/bin/python}
tag=${AUDIT_IMAGE_TAG:-dev}
prefetched="$root/deploy/prefetched"
log() { printf '[images] %s\n' "$*" >&2; }
projects=(schemas services/producer services/audit_projector services/query_api)
hatchling=$(sed -n 's/^requires = \["\(hatchling==[^"]*\)"\]/\1/p' "$root/schemas/pyproject.toml")

prefetch_wheels() {  # keyed by the pyprojects: a stamp in the directory says which inputs filled it
  local key; key=$(cd "$root" && cat "${projects[@]/%//pyproject.toml}" | sha256sum | cut -c1-16)
  if [ -f "$prefetched/wheels/.key-$key" ]; then log "reusing deploy/prefetched/wheels ($key)"; return; fi
  log "wheels of the pinned dependencies and $hatchling -> deploy/prefetched/wheels"
  rm -rf "$prefetched/wheels" && mkdir -p "$prefetched/wheels"
  "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$prefetched/wheels" \
    "${projects[@]/#/$root/}" "$root/services/producer[cli,outbox,keys]" >&2
  "$python" -m pip download --quiet --disable-pip-version-check --dest "$prefetched/wheels" "$hatchling" >&2
  rm -f "$prefetched"/wheels/audit_trail_*.whl  # the image builds its own from the sources in the context
  touch "$prefetched/wheels/.key-$key"
}

prefetch_kafka() {
  local version libs
  version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/deploy/local/pom.xml")
  libs=${AUDIT_STACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/audit-trail}/kafka-$version/libs
  if [ ! -f "$libs/.complete" ]; then log "fetching Kafka $version jars (deploy/local/stack.sh fetch)"; "$root/deploy/local/stack.sh" fetch; fi
  if cmp -s "$libs/.complete" "$prefetched/kafka-libs/.complete" 2>/dev/null \
     && [ "$(ls "$libs" | wc -l)" = "$(ls "$prefetched/kafka-libs" | wc -l)" ]; then return; fi
  rm -rf "$prefetched/kafka-libs" && cp -r "$libs" "$prefetched/kafka-libs"
}

build() {  # build <image name> <Dockerfile>
  local start=$SECONDS
  docker build --network host --quiet --build-arg "BASE=$base" -f "$root/deploy/$2" -t "audit-trail/$1:$tag" "$root" >/dev/null
  log "audit-trail/$1:$tag in $((SECONDS - start)) s, $(docker image inspect "audit-trail/$1:$tag" --format '{{.Size}}' \
    | awk '{printf "%.0f MB", $1 / 1e6}')"
  echo "audit-trail/$1:$tag"
}

base=$("$here/base-image.sh")
prefetch_wheels
prefetch_kafka
build postgres postgres.Dockerfile
build kafka kafka.Dockerfile
build services Dockerfile
# Untagged images older than a day (superseded builds and their stages); recent ones stay as the build cache.
docker image prune --force --filter until=24h >/dev/null
