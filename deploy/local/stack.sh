#!/usr/bin/env bash
# Local Audit Trail stack without Docker: Apache Kafka (KRaft, single node) from Maven Central
# jars and a private PostgreSQL cluster, both on loopback.
#
#   stack.sh up [plain|secure|cluster]
#                                install what is missing, fetch jars (cached), start Postgres and Kafka:
#                                plain (default): one PLAINTEXT listener, no authentication (demo and most tests);
#                                secure: a second broker with SASL_SSL (SCRAM-SHA-512, the stack's CA) beside a
#                                PLAINTEXT listener, deny-by-default ACLs, one principal per service;
#                                cluster: three combined broker+controller KRaft nodes (replication 3, min ISR 2)
#   stack.sh down [plain|secure|cluster]
#                                stop everything, or only that profile's brokers (data is kept until `stack.sh clean`)
#   stack.sh node-start|node-kill N   (cluster) start node N again / kill -9 it, for fault tests
#   stack.sh node-freeze|node-thaw N  (cluster) SIGSTOP node N / SIGCONT it: a broker that hangs, then wakes
#   stack.sh quorum-leader       (cluster) the node id of the active controller
#   stack.sh up ha               PostgreSQL with a synchronous hot standby and automatic failover by Debian's
#                                pg_auto_failover (a monitor and two data nodes on loopback)
#   stack.sh ha-kill|ha-start N  (ha) kill -9 data node N (its keeper and its postgres) / run it again
#   stack.sh ha-freeze|ha-thaw N (ha) SIGSTOP data node N whole (keeper, postgres, backends) / SIGCONT it: a zombie
#   stack.sh ha-primary          (ha) the number of the data node that is primary now
#   stack.sh ha-wait             (ha) until a primary and a standby serve again
#   stack.sh fetch               only fetch the Kafka jars into the cache (image builds copy them)
#   stack.sh status              say what runs
#   stack.sh env [plain|secure|cluster]  print the environment that points the services at this stack
#   stack.sh clean               stop and delete all data
#
# Tunables (environment): AUDIT_STACK_DIR, AUDIT_STACK_CACHE, AUDIT_STACK_KAFKA_PORT,
# AUDIT_STACK_CONTROLLER_PORT, AUDIT_STACK_PG_PORT, AUDIT_STACK_PG_SHARED_BUFFERS (e.g. 4GB for the
# 10 M-entry bench), AUDIT_STACK_KAFKA_HEAP; for the secure broker
# AUDIT_STACK_SASL_PORT, AUDIT_STACK_SECURE_PLAIN_PORT, AUDIT_STACK_SECURE_CONTROLLER_PORT and
# AUDIT_STACK_EMITTERS (the emitting services' principals, space-separated); for the cluster
# AUDIT_STACK_CLUSTER_PORT (node N listens on PORT+10*(N-1), its controller on the next port; 19110) and
# AUDIT_STACK_CLUSTER_HEAP (per node; 512m: three nodes and Postgres on a 2-core, 24 GiB machine).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${AUDIT_STACK_DIR:-${TMPDIR:-/tmp}/audit-trail-stack}
cache=${AUDIT_STACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/audit-trail}
kafka_port=${AUDIT_STACK_KAFKA_PORT:-19092}
controller_port=${AUDIT_STACK_CONTROLLER_PORT:-19093}
pg_port=${AUDIT_STACK_PG_PORT:-15432}
pg_shared_buffers=${AUDIT_STACK_PG_SHARED_BUFFERS:-128MB}
kafka_heap=${AUDIT_STACK_KAFKA_HEAP:-1g}
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
libs="$cache/kafka-$kafka_version/libs"
sasl_port=${AUDIT_STACK_SASL_PORT:-19094}
secure_plain_port=${AUDIT_STACK_SECURE_PLAIN_PORT:-19095}
secure_controller_port=${AUDIT_STACK_SECURE_CONTROLLER_PORT:-19096}
emitters=${AUDIT_STACK_EMITTERS:-billing inventory}
cluster_port=${AUDIT_STACK_CLUSTER_PORT:-19110}
ha_port=${AUDIT_STACK_HA_PORT:-15440}  # the monitor; data node N on ha_port + N
ha="$state/ha"
cluster_heap=${AUDIT_STACK_CLUSTER_HEAP:-512m}
pg_data="$state/postgres"
secure="$state/secure"
# Service principals of the secure profile (emitters come from AUDIT_STACK_EMITTERS).
service_principals="audit-projector audit-replay audit-redrive audit-query"

# The broker being operated on: `use_broker plain|secure` sets its name, data, config template and ports.
use_broker() {
  case "$1" in
    plain) knode=; kname=kafka; kport=$kafka_port; kctl=$controller_port; ktemplate="$here/server.properties" ;;
    secure) knode=; kname=kafka-secure; kport=$sasl_port; kctl=$secure_controller_port; ktemplate="$here/server-secure.properties" ;;
    node1|node2|node3)
      knode=${1#node}; kname=kafka-c$knode; kport=$((cluster_port + 10 * (knode - 1))); kctl=$((kport + 1))
      ktemplate="$here/server-cluster.properties" ;;
    *) die "unknown profile $1 (plain, secure or cluster)" ;;
  esac
  kafka_data="$state/$kname"
}
use_broker plain

# `exec_or_run` replaces the subshell when KAFKA_EXEC=1 so the recorded pid is the JVM's.
exec_or_run() { if [ "${KAFKA_EXEC:-0}" = 1 ]; then exec setsid "$@"; else "$@"; fi; }

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  is_root || die "missing $* and not root: install it (Debian packages: $*)"
  if [ -z "${_apt_updated:-}" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    _apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_bin() {
  local v
  v=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$v" ] && [ -x "/usr/lib/postgresql/$v/bin/initdb" ] && echo "/usr/lib/postgresql/$v/bin"
}

ensure_prerequisites() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  [ -n "$(pg_bin)" ] || apt_install postgresql
  command -v psql >/dev/null || apt_install postgresql-client
  command -v kcat >/dev/null || apt_install kcat  # the wire-contract test publishes with librdkafka
}

# Run a command as the unprivileged database user (initdb and postgres refuse root).
as_pg() {
  if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

fetch_kafka() {
  if [ -f "$libs/.complete" ]; then return; fi
  log "fetching Apache Kafka $kafka_version jars from Maven Central into $libs"
  rm -rf "$libs"
  mkdir -p "$libs"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime >&2
  touch "$libs/.complete"
}

cluster_bootstrap() { echo "127.0.0.1:$cluster_port,127.0.0.1:$((cluster_port + 10)),127.0.0.1:$((cluster_port + 20))"; }
cluster_voters() {
  echo "1@127.0.0.1:$((cluster_port + 1)),2@127.0.0.1:$((cluster_port + 11)),3@127.0.0.1:$((cluster_port + 21))"
}

kafka_java() {
  local heap=$kafka_heap
  case "$kname" in kafka-c*) heap=$cluster_heap ;; esac
  exec_or_run java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/log4j2.xml" \
    -cp "$libs/*" "$@"
}

kafka_pid() { [ -f "$state/$kname.pid" ] && kill -0 "$(cat "$state/$kname.pid")" 2>/dev/null && cat "$state/$kname.pid"; }

kafka_ready() { (exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null && grep -q "Kafka Server started" "$state/$kname.log"; }

start_kafka() {
  launch_kafka && wait_kafka
}

# Start the broker being operated on without waiting for it (a cluster node waits for a quorum of its peers).
launch_kafka() {
  local props="$state/$kname.properties" format_args=() p port=$kafka_port
  if kafka_pid >/dev/null; then log "$kname already running on 127.0.0.1:$kport"; return; fi
  mkdir -p "$kafka_data"
  case "$kname" in kafka-c*) port=$kport ;; esac
  sed -e "s#@DATA_DIR@#$kafka_data#" -e "s#@KAFKA_PORT@#$port#" -e "s#@CONTROLLER_PORT@#$kctl#" \
      -e "s#@SASL_PORT@#$sasl_port#" -e "s#@PLAIN_PORT@#$secure_plain_port#" -e "s#@TLS_DIR@#$state/tls#" \
      -e "s#@NODE_ID@#${knode:-1}#" -e "s#@VOTERS@#$(cluster_voters)#" \
      "$ktemplate" > "$props"
  if [ "$kname" = kafka-secure ]; then
    sed -i -e "s#@ADMIN_PASSWORD@#$(password_of admin)#" -e "s#@CONTROLLER_PASSWORD@#$(password_of controller)#g" "$props"
    chmod 600 "$props"
    for p in admin $service_principals $emitters; do
      format_args+=(--add-scram "SCRAM-SHA-512=[name=$p,password=$(password_of "$p")]")
    done
  fi
  if [ ! -f "$kafka_data/meta.properties" ]; then
    local cluster_id
    case "$kname" in
      kafka-c*)  # the three nodes share one cluster id
        [ -s "$state/cluster-id" ] || kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 > "$state/cluster-id"
        cluster_id=$(cat "$state/cluster-id") ;;
      *) cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1) ;;
    esac
    log "formatting KRaft storage of $kname (cluster $cluster_id)"
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$props" "${format_args[@]}" \
      >"$state/$kname-format.log" 2>&1 || { cat "$state/$kname-format.log" >&2; die "kafka storage format failed"; }
  fi
  log "starting $kname on 127.0.0.1:$kport"
  : > "$state/$kname.log"
  (KAFKA_EXEC=1 kafka_java kafka.Kafka "$props" </dev/null >>"$state/$kname.log" 2>&1) &
  echo $! > "$state/$kname.pid"
}

wait_kafka() {
  local deadline=$((SECONDS + 90))
  until kafka_ready; do
    kafka_pid >/dev/null || { tail -n 40 "$state/$kname.log" >&2; die "$kname exited during start"; }
    [ $SECONDS -lt $deadline ] || { tail -n 40 "$state/$kname.log" >&2; die "$kname not ready after 90 s"; }
    sleep 0.5
  done
  log "$kname ready"
}

# One random password per principal, kept in $secure/credentials/<name> (mode 600) and registered at format time.
password_of() {
  local file="$secure/credentials/$1"
  if [ ! -s "$file" ]; then
    mkdir -p "$secure/credentials"
    chmod 700 "$secure" "$secure/credentials"
    (umask 077; openssl rand -hex 24 > "$file")
  fi
  cat "$file"
}

# Client configuration of the Java tools as admin (the only principal that may create topics or grant ACLs).
write_admin_client_config() {
  (umask 077; printf '%s\n' "security.protocol=SASL_SSL" "sasl.mechanism=SCRAM-SHA-512" \
    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$(password_of admin)\";" \
    "ssl.truststore.type=PEM" "ssl.truststore.location=$state/tls/ca.crt" > "$secure/admin.properties")
}

acl() {
  kafka_java org.apache.kafka.tools.AclCommand --bootstrap-server "127.0.0.1:$sasl_port" \
    --command-config "$secure/admin.properties" --add --resource-pattern-type prefixed "$@" >>"$secure/acls.log" 2>&1 \
    || { tail -n 20 "$secure/acls.log" >&2; die "granting ACLs failed: $*"; }
}

# The ACLs of the secure profile (deny by default; admin is a super user). Topic and group names are prefixes,
# so a deployment may suffix them (per environment, or per test) and keep the same grants.
grant_acls() {
  [ -f "$secure/acls.done" ] && return
  log "granting ACLs (topics and groups by prefix)"
  write_admin_client_config
  local audit=audit.events.v1 logs=audit.execution-logs.v1 dlq=audit.dead-letter.v1 ckpt=audit.checkpoints.v1 e
  local writers=()
  for e in $emitters; do writers+=(--allow-principal "User:$e"); done
  # Emitting services (and redrive, under its own identity) write the audit and execution-log topics, nothing else.
  acl "${writers[@]}" --allow-principal User:audit-redrive --operation Write --operation Describe \
    --topic "$audit" --topic "$logs"
  # The projector and replay read them (and their configs, to refuse compaction or expiry) in their own groups,
  # and write the dead-letter and checkpoint topics.
  acl --allow-principal User:audit-projector --allow-principal User:audit-replay \
    --operation Read --operation Describe --operation DescribeConfigs --topic "$audit" --topic "$logs"
  acl --allow-principal User:audit-projector --allow-principal User:audit-replay \
    --operation Write --operation Describe --topic "$dlq" --topic "$ckpt"
  acl --allow-principal User:audit-projector --operation Read --group audit-projector
  acl --allow-principal User:audit-replay --operation Read --group audit-replay
  # The query API reads end offsets (lag) and records its own actions on the audit topic.
  acl --allow-principal User:audit-query --operation Describe --topic "$audit" --topic "$logs"
  acl --allow-principal User:audit-query --operation Write --topic "$audit"
  touch "$secure/acls.done"
}

# A local CA and a server certificate for 127.0.0.1/localhost, so clients can use sslmode=verify-full.
ensure_tls() {
  local dir="$state/tls"
  command -v openssl >/dev/null || apt_install openssl
  if [ ! -s "$dir/server.crt" ]; then
    log "creating a local CA and server certificate in $dir"
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=Audit Trail local CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
      -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 825 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
    rm -f "$dir/server.csr" "$dir/server.ext"
    chmod 600 "$dir/ca.key" "$dir/server.key"
  fi
  if [ ! -s "$dir/kafka.pem" ]; then
    # The secure broker's own key and certificate, one PEM file (PKCS#8 key, then the chain) as Kafka reads it.
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
      -keyout "$dir/kafka.key" -out "$dir/kafka.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" >"$dir/kafka.ext"
    openssl x509 -req -in "$dir/kafka.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 825 -extfile "$dir/kafka.ext" -out "$dir/kafka.crt" 2>/dev/null
    (umask 077; cat "$dir/kafka.key" "$dir/kafka.crt" "$dir/ca.crt" > "$dir/kafka.pem")
    rm -f "$dir/kafka.csr" "$dir/kafka.ext" "$dir/kafka.key"
  fi
  chmod 755 "$dir"
  if is_root; then chown postgres:postgres "$dir/server.key" "$dir/server.crt"; fi
}

# The key store's schema, owned by its own role (deploy/sql/bootstrap.sql); its tables come from the query service.
key_store_schema="CREATE SCHEMA IF NOT EXISTS audit_keys AUTHORIZATION audit_keys; REVOKE ALL ON SCHEMA audit_keys FROM PUBLIC"

pg_running() { [ -f "$pg_data/postmaster.pid" ] && as_pg "$(pg_bin)/pg_ctl" -D "$pg_data" status >/dev/null 2>&1; }

start_postgres() {
  local bin
  bin=$(pg_bin)
  mkdir -p "$state"
  if is_root; then chmod 755 "$state"; fi
  if [ ! -f "$pg_data/PG_VERSION" ]; then
    log "initialising a private PostgreSQL cluster in $pg_data"
    mkdir -p "$pg_data"
    if is_root; then chown postgres:postgres "$pg_data"; fi
    chmod 700 "$pg_data"
    as_pg "$bin/initdb" -D "$pg_data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1 || { cat "$state/initdb.log" >&2; die "initdb failed"; }
  fi
  ensure_tls
  if pg_running; then log "postgres already running on 127.0.0.1:$pg_port"; else
    log "starting postgres on 127.0.0.1:$pg_port (TLS offered: sslmode=verify-full with $state/tls/ca.crt)"
    as_pg "$bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -t 60 \
      -o "-p $pg_port -k $pg_data -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=$pg_shared_buffers -c fsync=on -c ssl=on -c ssl_cert_file=$state/tls/server.crt -c ssl_key_file=$state/tls/server.key" start >/dev/null \
      || { tail -n 30 "$pg_data/server.log" >&2; die "postgres failed to start"; }
  fi
  log "bootstrapping roles and database"
  as_pg psql -q -h "$pg_data" -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -f "$here/../sql/bootstrap.sql" >/dev/null
  as_pg psql -q -h "$pg_data" -p "$pg_port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'audit'" | grep -q 1 \
    || as_pg psql -q -h "$pg_data" -p "$pg_port" -U postgres -d postgres -c "CREATE DATABASE audit OWNER audit_owner" >/dev/null
  as_pg psql -q -h "$pg_data" -p "$pg_port" -U postgres -d audit -c "REVOKE CREATE ON SCHEMA public FROM PUBLIC" >/dev/null
  as_pg psql -q -h "$pg_data" -p "$pg_port" -U postgres -d audit -c "$key_store_schema" >/dev/null
  log "postgres ready"
}

print_env() {
  local pg="127.0.0.1:$pg_port/audit"
  cat <<EOF
export AUDIT_KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port
export AUDIT_POSTGRES_ADMIN_DSN="postgresql://postgres@/audit?host=$pg_data&port=$pg_port"
export AUDIT_OWNER_DSN=postgresql://audit_owner:audit_owner@$pg
export AUDIT_PRODUCER_BOOTSTRAP_SERVERS=127.0.0.1:$kafka_port
export AUDIT_PROJECTOR_ENVIRONMENT=development
export AUDIT_PROJECTOR_BOOTSTRAP_SERVERS=127.0.0.1:$kafka_port
export AUDIT_PROJECTOR_DATABASE_URL=postgresql://audit_projector:audit_projector@$pg
export AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL=postgresql://audit_owner:audit_owner@$pg
export AUDIT_QUERY_BOOTSTRAP_SERVERS=127.0.0.1:$kafka_port
export AUDIT_QUERY_DATABASE_URL=postgresql://audit_query:audit_query@$pg
export AUDIT_QUERY_KEYSTORE_URL=postgresql://audit_keys:audit_keys@$pg
export AUDIT_STACK_CA_FILE=$state/tls/ca.crt
EOF
}

# The secure profile: where its broker listens, and each service's principal (passwords stay in files).
print_secure_env() {
  local creds="$secure/credentials" svc prefix user
  print_env | grep -v -e BOOTSTRAP
  printf 'export %s\n' "AUDIT_KAFKA_BOOTSTRAP=127.0.0.1:$sasl_port" \
    "AUDIT_SECURE_PLAINTEXT_BOOTSTRAP=127.0.0.1:$secure_plain_port" "AUDIT_SECURE_CREDENTIALS_DIR=$creds" \
    "AUDIT_SECURE_EMITTERS=\"$emitters\""
  for svc in PRODUCER:${emitters%% *} PROJECTOR:audit-projector QUERY:audit-query; do
    prefix="AUDIT_${svc%%:*}" user="${svc#*:}"
    printf 'export %s\n' "${prefix}_BOOTSTRAP_SERVERS=127.0.0.1:$sasl_port" "${prefix}_KAFKA__SECURITY_PROTOCOL=SASL_SSL" \
      "${prefix}_KAFKA__SASL_USERNAME=$user" "${prefix}_KAFKA__SASL_PASSWORD_FILE=$creds/$user" \
      "${prefix}_KAFKA__CA_FILE=$state/tls/ca.crt"
  done
}

stop_kafka() {
  local pid
  use_broker "$1"
  if pid=$(kafka_pid); then
    log "stopping $kname (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$state/$kname.pid"
}

stop_cluster() { stop_kafka node1; stop_kafka node2; stop_kafka node3; }

# --- PostgreSQL HA: pg_auto_failover's monitor and two data nodes, each run by its keeper (`pg_autoctl run`).
as_autoctl() { as_pg env XDG_CONFIG_HOME="$ha/config" XDG_DATA_HOME="$ha/data" "$@"; }
ha_dir() { if [ "$1" = monitor ]; then echo "$ha/monitor"; else echo "$ha/node$1"; fi; }
ha_port_of() { if [ "$1" = monitor ]; then echo "$ha_port"; else echo $((ha_port + $1)); fi; }
ha_keeper_pid() { local f="$ha/$1.keeper.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }
ha_sql() { as_pg psql -q -h 127.0.0.1 -p "$1" -U postgres -d "${3:-postgres}" -v ON_ERROR_STOP=1 -Atc "$2"; }

ha_run() {  # start the keeper of `monitor` or data node N (it starts and watches its postgres) in a process
  local who=$1 dir       # group of its own: a kill takes the keeper, its helpers, postgres and the backends
  ha_keeper_pid "$who" >/dev/null && return
  dir=$(ha_dir "$who")
  as_autoctl setsid bash -c "exec pg_autoctl run --pgdata '$dir'" </dev/null >>"$ha/$who.log" 2>&1 &
  local deadline=$((SECONDS + 20)) pid=""
  until pid=$(pgrep -f -x "pg_autoctl run --pgdata $dir"); do
    [ $SECONDS -lt $deadline ] || die "the keeper of $who did not start"; sleep 0.2
  done
  echo "$pid" > "$ha/$who.keeper.pid"
}

ha_settled() {  # one primary and one secondary as assigned, and both serving as such (the monitor's table may
  local states primary standby  # still say so from before a restart while the nodes come up)
  states=$(ha_sql "$ha_port" "SELECT string_agg(reportedstate || '/' || goalstate, ' ' ORDER BY nodeid)
             FROM pgautofailover.node" pg_auto_failover 2>/dev/null) || return 1
  [ "$states" = "primary/primary secondary/secondary" ] || [ "$states" = "secondary/secondary primary/primary" ] || return 1
  primary=$(ha_primary) || return 1
  standby=$((3 - primary))
  [ "$(ha_sql "$(ha_port_of "$primary")" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] || return 1
  [ "$(ha_sql "$(ha_port_of "$standby")" "SELECT pg_is_in_recovery()" 2>/dev/null)" = t ] || return 1
}

ha_wait_states() {
  local deadline=$((SECONDS + 120))
  until ha_settled; do
    [ $SECONDS -lt $deadline ] || die "pg_auto_failover did not settle with a primary and a standby serving"
    sleep 1
  done
}

ha_primary() {
  ha_sql "$ha_port" "SELECT nodename FROM pgautofailover.node WHERE reportedstate IN ('primary', 'wait_primary', 'single') AND goalstate = reportedstate" pg_auto_failover | sed 's/^node//'
}

start_ha() {
  local bin n pgctl
  bin=$(pg_bin); pgctl="$bin/pg_ctl"
  command -v pg_autoctl >/dev/null && [ -f "$(dirname "$bin")/lib/pgautofailover.so" ] \
    || apt_install pg-auto-failover-cli "postgresql-$(basename "$(dirname "$bin")")-auto-failover"
  mkdir -p "$ha/config" "$ha/data"
  if is_root; then chown -R postgres:postgres "$ha"; fi
  if [ ! -f "$ha/monitor/PG_VERSION" ]; then
    log "creating the pg_auto_failover monitor on 127.0.0.1:$ha_port"
    as_autoctl pg_autoctl create monitor --pgctl "$pgctl" --pgdata "$ha/monitor" --pgport "$ha_port" \
      --hostname 127.0.0.1 --auth trust --no-ssl >"$ha/monitor-create.log" 2>&1 \
      || { tail -n 20 "$ha/monitor-create.log" >&2; die "pg_autoctl create monitor failed"; }
  fi
  ha_run monitor
  local deadline=$((SECONDS + 60))
  until ha_sql "$ha_port" "SELECT 1" pg_auto_failover >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "the monitor did not start"; sleep 0.5
  done
  # Fail over in seconds, not the defaults' half minute: health checks every second, a node unhealthy after
  # three, the old primary given five to demote itself before the standby takes over.
  for setting in health_check_period=1000 health_check_timeout=1000 health_check_max_retries=1 \
                 health_check_retry_delay=500 node_considered_unhealthy_timeout=3000 primary_demote_timeout=5000; do
    ha_sql "$ha_port" "ALTER SYSTEM SET pgautofailover.${setting%%=*} = ${setting#*=}" >/dev/null
  done
  ha_sql "$ha_port" "SELECT pg_reload_conf()" >/dev/null
  for n in 1 2; do
    if [ ! -f "$ha/node$n/PG_VERSION" ]; then
      log "creating data node $n on 127.0.0.1:$(ha_port_of "$n")"
      as_autoctl pg_autoctl create postgres --pgctl "$pgctl" --pgdata "$ha/node$n" --pgport "$(ha_port_of "$n")" \
        --hostname 127.0.0.1 --name "node$n" --auth trust --no-ssl --replication-quorum true \
        --monitor "postgres://autoctl_node@127.0.0.1:$ha_port/pg_auto_failover?sslmode=disable" \
        >"$ha/node$n-create.log" 2>&1 || { tail -n 20 "$ha/node$n-create.log" >&2; die "pg_autoctl create postgres failed"; }
    fi
    ha_run "$n"
    [ "$n" = 1 ] && sleep 3  # the first node becomes primary before the second registers as its standby
  done
  local primary="" deadline=$((SECONDS + 120))
  until [[ "$primary" =~ ^[12]$ ]]; do  # settled, and the monitor names the primary (it may be busy or between states)
    [ $SECONDS -lt $deadline ] || die "pg_auto_failover names no primary"
    ha_wait_states
    primary=$(ha_primary 2>/dev/null) || primary=""
    [[ "$primary" =~ ^[12]$ ]] || sleep 1
  done
  primary=$(ha_port_of "$primary")
  log "bootstrapping roles and database on the primary (127.0.0.1:$primary)"
  as_pg psql -q -h 127.0.0.1 -p "$primary" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -f "$here/../sql/bootstrap.sql" >/dev/null
  ha_sql "$primary" "SELECT 1 FROM pg_database WHERE datname = 'audit'" | grep -q 1 \
    || ha_sql "$primary" "CREATE DATABASE audit OWNER audit_owner" >/dev/null
  ha_sql "$primary" "REVOKE CREATE ON SCHEMA public FROM PUBLIC" audit >/dev/null
  ha_sql "$primary" "$key_store_schema" audit >/dev/null
}

ha_kill() {  # the node's host dies: its postmaster and every backend, its keeper and helpers, at once
  local pid postmaster
  if [ -f "$ha/node$1/postmaster.pid" ]; then
    postmaster=$(head -n 1 "$ha/node$1/postmaster.pid")
    kill -STOP "$postmaster" 2>/dev/null || true  # frozen first, so no backend outlives it by a commit
    pkill -9 -P "$postmaster" 2>/dev/null || true  # backends lead process groups of their own
    kill -9 "$postmaster" 2>/dev/null || true
  fi
  if pid=$(ha_keeper_pid "$1"); then kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$ha/$1.keeper.pid"
  log "killed data node $1"
}

ha_signal() {  # send STOP or CONT to data node N's whole host: postmaster, every backend, the keeper's group
  local pid postmaster
  if [ -f "$ha/node$1/postmaster.pid" ]; then
    postmaster=$(head -n 1 "$ha/node$1/postmaster.pid")
    kill "-$2" "$postmaster" 2>/dev/null || true
    pkill "-$2" -P "$postmaster" 2>/dev/null || true
  fi
  if pid=$(ha_keeper_pid "$1"); then
    kill "-$2" -- "-$pid" 2>/dev/null || true
    # and the runuser that waits on the keeper: it stops itself when its child stops, and a stopped runuser
    # never reaps the keeper, whose pid file then blocks every later start
    kill "-$2" "$(ps -o ppid= -p "$pid" | tr -d ' ')" 2>/dev/null || true
  fi
  log "sent SIG$2 to data node $1"
}

stop_ha() {
  local who pid
  for who in 2 1 monitor; do
    if pid=$(ha_keeper_pid "$who"); then
      as_autoctl pg_autoctl stop --pgdata "$(ha_dir "$who")" >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$ha/$who.keeper.pid"
  done
}

print_ha_env() {
  local hosts="127.0.0.1:$((ha_port + 1)),127.0.0.1:$((ha_port + 2))" rw="target_session_attrs=read-write"
  printf 'export %s\n' \
    "AUDIT_OWNER_DSN=\"postgresql://audit_owner:audit_owner@$hosts/audit?$rw\"" \
    "AUDIT_PROJECTOR_DATABASE_URL=\"postgresql://audit_projector:audit_projector@$hosts/audit?$rw\"" \
    "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL=\"postgresql://audit_owner:audit_owner@$hosts/audit?$rw\"" \
    "AUDIT_QUERY_DATABASE_URL=\"postgresql://audit_query:audit_query@$hosts/audit?$rw\"" \
    "AUDIT_HA_MONITOR_DSN=\"postgresql://postgres@127.0.0.1:$ha_port/pg_auto_failover\""
}

start_cluster() {
  local n
  for n in 1 2 3; do use_broker "node$n"; launch_kafka; done
  for n in 1 2 3; do use_broker "node$n"; wait_kafka; done
}

print_cluster_env() {
  local b
  b=$(cluster_bootstrap)
  print_env | grep -v -e BOOTSTRAP -e AUDIT_PROJECTOR_ENVIRONMENT
  printf 'export %s\n' "AUDIT_KAFKA_BOOTSTRAP=$b" "AUDIT_PRODUCER_BOOTSTRAP_SERVERS=$b" \
    "AUDIT_PROJECTOR_BOOTSTRAP_SERVERS=$b" "AUDIT_QUERY_BOOTSTRAP_SERVERS=$b" "AUDIT_PROJECTOR_ENVIRONMENT=production" \
    "AUDIT_CLUSTER_PID_DIR=$state"
}

stop_all() {
  stop_kafka plain
  stop_kafka secure
  stop_cluster
  stop_ha
  if [ -n "$(pg_bin)" ] && pg_running; then
    log "stopping postgres"
    as_pg "$(pg_bin)/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null || true
  fi
}

case "${1:-}" in
  up)
    profile=${2:-plain}
    case "$profile" in cluster|ha) use_broker node1 ;; *) use_broker "$profile" ;; esac
    ensure_prerequisites
    mkdir -p "$state" "$cache"
    fetch_kafka
    start_postgres
    case "$profile" in cluster|ha) ;; *) start_kafka ;; esac
    if [ "$profile" = ha ]; then
      start_ha
      print_ha_env > "$state/ha.env"
      log "PostgreSQL HA is up (primary: node $(ha_primary)); environment in $state/ha.env"
    elif [ "$profile" = cluster ]; then
      start_cluster
      print_cluster_env > "$state/cluster.env"
      log "cluster is up on $(cluster_bootstrap); environment in $state/cluster.env"
    elif [ "$profile" = secure ]; then
      grant_acls
      print_secure_env > "$secure/env"
      log "secure broker is up on 127.0.0.1:$sasl_port (SASL_SSL); environment in $secure/env"
    else
      print_env > "$state/env"
      log "stack is up; environment in $state/env"
    fi
    ;;
  fetch) command -v mvn >/dev/null || apt_install maven; mkdir -p "$cache"; fetch_kafka ;;
  down)
    case "${2:-}" in
      "") stop_all ;;
      cluster) stop_cluster ;;
      ha) stop_ha ;;
      *) stop_kafka "$2" ;;
    esac ;;
  node-start) use_broker "node${2:?node number}"; launch_kafka; wait_kafka ;;
  node-kill)
    use_broker "node${2:?node number}"
    if pid=$(kafka_pid); then kill -9 "$pid"; log "killed $kname (pid $pid)"; fi
    rm -f "$state/$kname.pid" ;;
  ha-kill) ha_kill "${2:?node number}" ;;
  ha-freeze) ha_signal "${2:?node number}" STOP ;;
  ha-thaw) ha_signal "${2:?node number}" CONT ;;
  node-freeze|node-thaw)
    use_broker "node${2:?node number}"
    if pid=$(kafka_pid); then
      if [ "$1" = node-freeze ]; then kill -STOP "$pid"; else kill -CONT "$pid"; fi
      log "${1#node-} $kname (pid $pid)"
    fi ;;
  ha-start) ha_run "${2:?node number}" ;;
  ha-wait) ha_wait_states ;;
  ha-primary) ha_primary ;;
  quorum-leader)
    use_broker node1
    kafka_java org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-controller \
      "127.0.0.1:$((cluster_port + 1)),127.0.0.1:$((cluster_port + 11)),127.0.0.1:$((cluster_port + 21))" \
      describe --status 2>/dev/null | sed -n 's/^LeaderId:[[:space:]]*//p' ;;
  clean) stop_all; rm -rf "$state"; log "removed $state" ;;
  status)
    if kafka_pid >/dev/null; then echo "kafka: running on 127.0.0.1:$kafka_port"; else echo "kafka: stopped"; fi
    use_broker secure
    if kafka_pid >/dev/null; then echo "kafka-secure: running on 127.0.0.1:$sasl_port"; else echo "kafka-secure: stopped"; fi
    for n in 1 2 3; do
      use_broker "node$n"
      if kafka_pid >/dev/null; then echo "$kname: running on 127.0.0.1:$kport"; else echo "$kname: stopped"; fi
    done
    if [ -n "$(pg_bin)" ] && pg_running; then echo "postgres: running on 127.0.0.1:$pg_port"; else echo "postgres: stopped"; fi
    ;;
  env)
    case "${2:-plain}" in
      secure) print_secure_env ;;
      cluster) print_cluster_env ;;
      ha) print_ha_env ;;
      *) print_env ;;
    esac ;;
  *) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
