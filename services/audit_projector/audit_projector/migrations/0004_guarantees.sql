-- One audit id, one entry; months made on demand; operator requests and redrives kept as history.

-- The first event (start or outcome) that names an audit id claims it for its tenant, entity and action.
-- Unpartitioned, so its primary key holds across months (a unique index on a partitioned table must
-- include the partition key); written in the same transaction as the batch's rows.
CREATE TABLE audit_ids (
    audit_id        uuid        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    entity_model    text        NOT NULL,
    entity_id       text        NOT NULL,
    action          text        NOT NULL,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    claimed_at      timestamptz NOT NULL DEFAULT now()
);

-- sha256 of the event's data without its timestamps: tells an identical re-send from a conflicting one.
ALTER TABLE audit_entries ADD COLUMN content_digest bytea;
ALTER TABLE audit_outcomes ADD COLUMN content_digest bytea;

-- Entity history reads in log order: one tenant's entity shares a partition, so offsets order its events.
CREATE INDEX audit_entries_entity_log
    ON audit_entries (entity_model, entity_id, tenant_id, kafka_partition, kafka_offset);

-- Dead letters keep the original headers, so a redrive re-publishes the record as it was.
ALTER TABLE dead_letters ADD COLUMN record_headers jsonb NOT NULL DEFAULT '[]';

-- A partition stops for a newer schema, an out-of-range offset or a repeated database failure.
ALTER TABLE projector_blocks ALTER COLUMN event_type DROP NOT NULL;
ALTER TABLE projector_blocks ADD COLUMN reason text NOT NULL DEFAULT 'newer_schema'
    CHECK (reason IN ('newer_schema', 'offset_out_of_range', 'database_error'));
ALTER TABLE projector_blocks ADD COLUMN detail text;

-- Operator requests that unblock a partition: dead-letter the record at an offset, or move past a gap.
CREATE TABLE projector_skips (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    kafka_offset    bigint      NOT NULL CHECK (kafka_offset >= 0),
    kind            text        NOT NULL CHECK (kind IN ('dead_letter', 'move_to')),
    reason          text        NOT NULL CHECK (reason <> ''),
    requested_by    text        NOT NULL DEFAULT current_user,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition, kafka_offset)
);

-- Dead letters re-published to their source topic by `audit-projector redrive`: each at most once.
CREATE TABLE redrives (
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    fixed           boolean     NOT NULL,
    new_partition   integer     NOT NULL,
    new_offset      bigint      NOT NULL,
    requested_by    text        NOT NULL DEFAULT current_user,
    note            text,
    redriven_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);

-- One month's partition of `parent` in `target_schema`, made if missing. The schema is an argument (not
-- captured from a search path), and the check happens after the lock, so projectors racing for the
-- same month take turns and the second finds it made.
CREATE FUNCTION ensure_month_partition(target_schema text, parent text, month date)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col   text;
    first date := date_trunc('month', month)::date;
    lo    timestamptz;
    hi    timestamptz;
    child text;
BEGIN
    IF parent NOT IN ('audit_entries', 'execution_logs') THEN
        RAISE EXCEPTION 'ensure_month_partition: % is not a partitioned read-model table', parent;
    END IF;
    col := CASE parent WHEN 'audit_entries' THEN 'occurred_at' ELSE 'logged_at' END;
    lo := first::timestamp AT TIME ZONE 'UTC';
    hi := (first + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    child := format('%s_y%sm%s', parent, to_char(first, 'YYYY'), to_char(first, 'MM'));
    EXECUTE format('LOCK TABLE %I.%I IN SHARE ROW EXCLUSIVE MODE', target_schema, parent);
    IF to_regclass(format('%I.%I', target_schema, child)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   target_schema, child, target_schema, parent);
    -- Rows of this month already in the default partition move into the new one (ATTACH would refuse).
    EXECUTE format('WITH moved AS (DELETE FROM %I.%I WHERE %I >= $1 AND %I < $2 RETURNING *) '
                   'INSERT INTO %I.%I SELECT * FROM moved',
                   target_schema, parent || '_default', col, col, target_schema, child) USING lo, hi;
    EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                   target_schema, parent, target_schema, child, lo, hi);
    RETURN true;
END;
$$;

REVOKE ALL ON FUNCTION ensure_month_partition(text, text, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ensure_month_partition(text, text, date) TO audit_writer;

-- The old helper captured its schema from the search path at creation; nothing calls it any more.
DROP FUNCTION ensure_month_partitions(integer, integer);

GRANT SELECT, INSERT ON audit_ids, projector_skips, redrives TO audit_writer;
GRANT SELECT ON audit_ids, projector_skips, redrives TO audit_reader;
