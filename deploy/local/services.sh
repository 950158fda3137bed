#!/usr/bin/env bash
# Start or stop the projector and query API in the background against the local stack.
#   services.sh start | stop
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${AUDIT_STACK_DIR:-${TMPDIR:-/tmp}/audit-trail-stack}
bin="$root/.venv/bin"
query_port=${AUDIT_QUERY_PORT:-8080}
health_port=${AUDIT_PROJECTOR_HEALTH_PORT:-8081}

stop_one() {
  local pidfile="$state/$1.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -f "$pidfile"
}

wait_http() {
  local url=$1 deadline=$((SECONDS + 60))
  until "$bin/python" -c "import sys, httpx; sys.exit(httpx.get('$url', timeout=2).status_code != 200)" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "[services] $url not ready after 60 s" >&2; return 1; }
    sleep 0.5
  done
}

case "${1:-}" in
  start)
    # shellcheck disable=SC1091
    source "$state/env"
    stop_one projector; stop_one query
    # The query API refuses the built-in cursor key outside development: one random key per local stack.
    [ -s "$state/cursor-secret" ] || "$bin/python" -c 'import secrets; print(secrets.token_urlsafe(48))' > "$state/cursor-secret"
    export AUDIT_QUERY_CURSOR_SECRET="${AUDIT_QUERY_CURSOR_SECRET:-$(cat "$state/cursor-secret")}"
    # One checkpoint signing key per local stack (kept outside the database, as in production).
    [ -s "$state/checkpoint.key" ] || "$bin/audit-projector" key --generate > "$state/checkpoint.key" 2>/dev/null
    export AUDIT_PROJECTOR_CHECKPOINT_KEY_FILE="$state/checkpoint.key"
    export AUDIT_PROJECTOR_CHECKPOINT_EVERY_S="${AUDIT_PROJECTOR_CHECKPOINT_EVERY_S:-5}"  # proofs show up quickly
    "$bin/audit-projector" migrate
    "$bin/audit-projector" topics
    # The key store's KEK (kept outside the database, as in production) and the demo service's signing key: the
    # demo signs its events and seals its people's data through the key service (the query API's /v1/subject-keys).
    [ -s "$state/keystore.kek" ] || (umask 077; "$bin/audit-query" keystore kek > "$state/keystore.kek")
    export AUDIT_QUERY_KEYSTORE_KEK_FILE="$state/keystore.kek"
    if [ ! -s "$state/demo-producer.key" ]; then
      (umask 077; "$bin/python" -c 'from audit_schemas.checkpoint import NoteSigner
print(NoteSigner.generate("demo-resource-service")[1])' > "$state/demo-producer.key.new")
      verifier=$("$bin/python" -c 'import sys; from audit_schemas.checkpoint import NoteSigner
print(NoteSigner.parse(open(sys.argv[1]).read()).verifier_key)' "$state/demo-producer.key.new")
      "$bin/audit-projector" producer-key --verifier-key "$verifier" \
        --source demo-resource-service --source demo-history >/dev/null
      mv "$state/demo-producer.key.new" "$state/demo-producer.key"
    fi
    printf 'export %s\n' "AUDIT_PRODUCER_SIGNING_KEY_FILE=$state/demo-producer.key" \
      "AUDIT_PRODUCER_KEY_SERVICE_URL=http://127.0.0.1:$query_port" > "$state/demo.env"
    nohup "$bin/audit-projector" run --health-port "$health_port" >"$state/projector.log" 2>&1 &
    echo $! > "$state/projector.pid"
    AUDIT_QUERY_PORT=$query_port nohup "$bin/audit-query" serve >"$state/query.log" 2>&1 &
    echo $! > "$state/query.pid"
    # Alive is enough to go on: a blocked partition keeps the projector unready but must not stop the demo.
    wait_http "http://127.0.0.1:$health_port/healthz"
    wait_http "http://127.0.0.1:$query_port/readyz"
    # A read-only token for the demo tenant, created once per local stack and printed by the demo.
    if [ ! -s "$state/demo-token" ]; then
      AUDIT_QUERY_ADMIN_DATABASE_URL="$AUDIT_OWNER_DSN" "$bin/audit-query" tokens create \
        --name demo-reader --scope audit:read --tenant demo --by demo > "$state/demo-token.new" \
        && mv "$state/demo-token.new" "$state/demo-token"
    fi
    "$bin/python" - "$health_port" <<'PY' || true
import sys, time, httpx
url = f"http://127.0.0.1:{sys.argv[1]}/readyz"
for _ in range(20):
    body = httpx.get(url, timeout=2).json()
    if body["ready"]:
        sys.exit(0)
    time.sleep(0.5)
print("[services] warning: the projector is running but not ready:", "; ".join(body["problems"]), file=sys.stderr)
print("[services] see docs/operations.md (blocked partitions) for the way out", file=sys.stderr)
PY
    echo "[services] projector (health :$health_port) and query API (:$query_port) running; logs in $state" >&2
    ;;
  stop) stop_one projector; stop_one query ;;
  *) echo "usage: services.sh start|stop" >&2; exit 2 ;;
esac
