#!/bin/sh
# One-shot set-up of a container stack (the compose `setup` service): its secrets, made once and kept in the
# secrets volume (the query API's cursor key, the projector's checkpoint signing key), then migrations and
# topics (both idempotent), then a read-only token for the demo tenant (once).
set -eu
secrets=${AUDIT_SECRETS_DIR:-/var/lib/audit-trail/secrets}
umask 077
once() {  # once <file> <command...>: write the command's output to the file unless it already holds something
  file=$1; shift
  if [ ! -s "$file" ]; then "$@" >"$file.new" && mv "$file.new" "$file" && echo "setup: wrote $file"; fi
}
once "$secrets/cursor-secret" python3 -c 'import secrets; print(secrets.token_urlsafe(48))'
once "$secrets/checkpoint.key" audit-projector key --generate
audit-projector migrate
audit-projector topics
AUDIT_QUERY_CURSOR_SECRET=$(cat "$secrets/cursor-secret")
export AUDIT_QUERY_CURSOR_SECRET
# A database made anew (its volume deleted) no longer knows the kept token: make another.
if [ -s "$secrets/demo-token" ] && ! audit-query tokens check <"$secrets/demo-token" >/dev/null 2>&1; then
  echo "setup: the kept demo token is not live in this database; creating another"
  rm -f "$secrets/demo-token"
fi
once "$secrets/demo-token" audit-query tokens create --name demo-reader --scope audit:read --tenant demo --by setup
echo "setup: done"
