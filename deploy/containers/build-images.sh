#!/usr/bin/env bash
# Build the images from the local Debian base: wheels of the project and its pinned dependencies on the host (the
# host's package index and certificates), then the services image installing them offline, with host networking.
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
log "services image FROM $base"
docker build --network host --quiet --build-arg "BASE=$base" -f "$root/deploy/Dockerfile" \
  -t audit-trail/services:dev "$root" >&2
log "audit-trail/services:dev: $(docker image inspect audit-trail/services:dev --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"
echo audit-trail/services:dev
