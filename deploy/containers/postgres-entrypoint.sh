#!/bin/sh
# First start: initdb, the roles and the `audit` database over the local socket only (and, if POSTGRES_PASSWORD is
# set, that password for the postgres superuser); then serve on PG_LISTEN:PGPORT
# (arguments, e.g. `-c fsync=off`, go to the server).
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
  psql -q -h /tmp -U postgres -d postgres -v ON_ERROR_STOP=1 -f /usr/local/share/audit-trail/bootstrap.sql
  psql -q -h /tmp -U postgres -d postgres -c "CREATE DATABASE audit OWNER audit_owner"
  psql -q -h /tmp -U postgres -d audit -c "REVOKE CREATE ON SCHEMA public FROM PUBLIC"
  psql -q -h /tmp -U postgres -d audit -c "CREATE SCHEMA audit_keys AUTHORIZATION audit_keys; REVOKE ALL ON SCHEMA audit_keys FROM PUBLIC"
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then  # a superuser over TCP only when asked for (test suites, operators)
    echo "ALTER ROLE postgres PASSWORD :'pw'" | psql -q -h /tmp -U postgres -d postgres -v ON_ERROR_STOP=1 -v pw="$POSTGRES_PASSWORD"
  fi
  pg_ctl -D "$PGDATA" -w stop >/dev/null
  echo "postgres-entrypoint: initialised $PGDATA"
fi
exec postgres -D "$PGDATA" -c listen_addresses="$PG_LISTEN" -p "$PGPORT" -k /tmp -c max_connections=200 "$@"
