# PostgreSQL 15 from Debian, bootstrapped for Audit Trail on first start (roles from deploy/sql/bootstrap.sql, the
# `audit` database owned by audit_owner). Built FROM a Debian base given as a build argument, like the services.
#
#   docker build --build-arg BASE=debian:bookworm-slim -f deploy/postgres.Dockerfile -t audit-trail/postgres .
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
COPY deploy/sql/bootstrap.sql /usr/local/share/audit-trail/bootstrap.sql
COPY deploy/containers/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    PGPORT=5432 \
    PG_LISTEN=*
VOLUME /var/lib/postgresql/data
USER postgres
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s CMD pg_isready -q -h 127.0.0.1 -p "$PGPORT"
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
