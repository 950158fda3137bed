#!/usr/bin/env bash
# Build the images from the local Debian base: PostgreSQL and Kafka (the local stack's Maven jars), and the
# services from wheels of the project and its pinned dependencies built on the host (its package index and
# certificates) and installed offline; every build with host networking.
#
#   build-images.sh          prints the image tags it built
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${AUDIT_PYTHON:-$root/.venv/bin/python}
log() { printf '[images] %s\n' "$*" >&2; }

base=$("$here/base-image.sh")
log "wheels of the project and its dependencies -> build/wheelhouse"
rm -rf "$root/build/wheelhouse"
"$python" -m pip wheel --quiet --wheel-dir "$root/build/wheelhouse" "$root" >&2
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/deploy/local/pom.xml")
libs=${AUDIT_STACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/audit-trail}/kafka-$kafka_version/libs
[ -f "$libs/.complete" ] || { log "no Kafka jars in $libs: run deploy/local/stack.sh up once"; exit 1; }
rm -rf "$root/build/kafka-libs" && cp -r "$libs" "$root/build/kafka-libs"
for image in postgres kafka; do
  log "$image image FROM $base"
  docker build --network host --quiet --build-arg "BASE=$base" -f "$root/deploy/$image.Dockerfile" \
    -t "audit-trail/$image:dev" "$root" >&2
  echo "audit-trail/$image:dev"
done
log "services image FROM $base"
docker build --network host --quiet --build-arg "BASE=$base" -f "$root/deploy/Dockerfile" \
  -t audit-trail/services:dev "$root" >&2
log "audit-trail/services:dev: $(docker image inspect audit-trail/services:dev --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"
echo audit-trail/services:dev
