#!/usr/bin/env bash
# The container suite (`make test-containers`, the second half of .ci/run): install and start a loopback-only
# Docker engine, build the images FROM a locally bootstrapped Debian base, run the end-to-end tests against Kafka
# and Postgres started by testcontainers from those images, then the compose smoke test. Always stops the engine
# it started (images and the debootstrap cache are kept for the next run on this machine). Prints each part's time.
#
# Tunables: AUDIT_CONTAINER_E2E (the end-to-end test files to run; a core set by default), PYTEST_ADDOPTS.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# The guarantees (end to end, read model, durability under a frozen broker, crash and rebalance, poison), the
# verifiable log (Merkle log, proofs, tampering, rebuilds), health, migrations and the published wheels.
default_e2e="tests/e2e/test_end_to_end.py tests/e2e/test_read_model.py tests/e2e/test_durability.py
  tests/e2e/test_crash_and_rebalance.py tests/e2e/test_poison.py tests/e2e/test_merkle_log.py
  tests/e2e/test_proofs.py tests/e2e/test_tamper.py tests/e2e/test_integrity.py tests/e2e/test_rebuild.py
  tests/e2e/test_health.py
  tests/e2e/test_migrations.py tests/e2e/test_wheels.py"
read -r -a e2e <<<"$(echo ${AUDIT_CONTAINER_E2E:-$default_e2e})"

timings=()
step() {  # step <label> <command...>: run it and remember how long it took
  local label=$1 start=$SECONDS; shift
  printf '\n[suite] == %s\n' "$label" >&2
  "$@"
  timings+=("$(printf '%-34s %5d s' "$label" $((SECONDS - start)))")
}
report() {
  local rc=$?
  "$here/engine.sh" down || rc=1
  printf '\n[suite] %s\n' "time per part:" >&2
  printf '[suite]   %s\n' "${timings[@]}" >&2
  [ $rc = 0 ] && printf '[suite] container suite passed\n' >&2 || printf '[suite] container suite FAILED (%s)\n' "$rc" >&2
  exit $rc
}

step "engine install (apt, compose)" "$here/engine.sh" install
step "preflight" "$here/engine.sh" preflight
trap report EXIT
step "engine up" "$here/engine.sh" up
eval "$("$here/engine.sh" env)"
step "images (base, prefetch, builds)" "$here/build-images.sh"
for image in debian postgres kafka services; do
  docker image ls "audit-trail/$image" --format '[suite]   {{.Repository}}:{{.Tag}} {{.Size}}' | head -n 1 >&2
done
step "e2e on testcontainers (${#e2e[@]} files)" env AUDIT_TEST_STACK=containers .venv/bin/pytest -p no:cacheprovider "${e2e[@]}"
step "compose smoke test" env AUDIT_TEST_STACK=containers .venv/bin/pytest -p no:cacheprovider tests/containers
leftover=$(docker ps -aq | wc -l)
[ "$leftover" = 0 ] || { docker ps -a >&2; echo "[suite] $leftover containers left behind" >&2; exit 1; }
