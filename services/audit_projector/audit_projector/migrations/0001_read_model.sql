-- The read model: audit entries, their outcomes and execution logs, all append-only.
-- Runs with search_path set to the target schema, as the owner role.

CREATE TABLE audit_entries (
    occurred_at        timestamptz NOT NULL,
    audit_id           uuid        NOT NULL,
    tenant_id          text        NOT NULL,
    action             text        NOT NULL CHECK (action IN (
                           'create', 'update', 'delete', 'execute', 'approve', 'reject', 'destroy',
                           'recreate', 'retry', 'sync', 'enable', 'disable', 'dryrun')),
    entity_model       text        NOT NULL,
    entity_id          text        NOT NULL,
    actor_type         text        NOT NULL CHECK (actor_type IN ('user', 'service_account', 'system')),
    actor_id           text,
    actor_display_name text,
    -- Sort key for "by user": people and service accounts by name, then system actions, in C order.
    user_sort          text COLLATE "C" NOT NULL,
    request_id         text,
    client_ip          inet,
    user_agent         text,
    correlation_id     text,
    otel_trace_id      text,
    otel_span_id       text,
    source             text        NOT NULL,
    event_id           uuid        NOT NULL,
    schema_version     integer     NOT NULL,
    kafka_topic        text        NOT NULL,
    kafka_partition    integer     NOT NULL,
    kafka_offset       bigint      NOT NULL,
    projected_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (occurred_at, audit_id)
) PARTITION BY RANGE (occurred_at);

CREATE TABLE audit_entries_default PARTITION OF audit_entries DEFAULT;

CREATE INDEX audit_entries_audit_id ON audit_entries (audit_id);
CREATE INDEX audit_entries_tenant_time ON audit_entries (tenant_id, occurred_at, audit_id);
CREATE INDEX audit_entries_entity ON audit_entries (entity_model, entity_id, occurred_at, audit_id);
CREATE INDEX audit_entries_actor ON audit_entries (actor_id, occurred_at, audit_id);
CREATE INDEX audit_entries_action ON audit_entries (action, occurred_at, audit_id);
CREATE INDEX audit_entries_user_sort ON audit_entries (user_sort, occurred_at, audit_id);
CREATE INDEX audit_entries_correlation ON audit_entries (correlation_id) WHERE correlation_id IS NOT NULL;

-- One outcome per action, written once from the outcome event; never UPDATEd.
CREATE TABLE audit_outcomes (
    audit_id        uuid        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    entity_model    text        NOT NULL,
    entity_id       text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('succeeded', 'failed')),
    error_type      text,
    error_message   text,
    revision        bigint,
    changes         jsonb,
    finished_at     timestamptz NOT NULL,
    duration_ms     double precision NOT NULL,
    source          text        NOT NULL,
    event_id        uuid        NOT NULL,
    schema_version  integer     NOT NULL,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    projected_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_outcomes_entity ON audit_outcomes (entity_model, entity_id, revision);

CREATE TABLE execution_logs (
    logged_at       timestamptz NOT NULL,
    log_id          uuid        NOT NULL,
    trace_id        uuid        NOT NULL,
    tenant_id       text,
    level           text        NOT NULL,
    logger          text,
    message         text        NOT NULL,
    fields          jsonb       NOT NULL DEFAULT '{}',
    process         text,
    source          text        NOT NULL,
    schema_version  integer     NOT NULL,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    projected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (logged_at, log_id)
) PARTITION BY RANGE (logged_at);

CREATE TABLE execution_logs_default PARTITION OF execution_logs DEFAULT;

CREATE INDEX execution_logs_trace ON execution_logs (trace_id, logged_at, log_id);

-- Records the projector refused, kept beside the dead-letter topic so they can be counted and queried.
CREATE TABLE dead_letters (
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    reason           text        NOT NULL,
    detail           text        NOT NULL,
    record_key       bytea,
    record_value     bytea,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);

-- The projector's position lives with its data: written in the same transaction as each batch.
CREATE TABLE projector_offsets (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Partitions stopped at an event newer than the projector understands, until it is upgraded.
CREATE TABLE projector_blocks (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    event_type      text        NOT NULL,
    schema_version  text,
    blocked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
