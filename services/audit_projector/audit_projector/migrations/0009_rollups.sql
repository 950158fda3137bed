-- Per-hour counts of entries for the dashboard API, written by the projector in the same transaction as the rows.
-- Exact by construction: a start counts once when its row is actually inserted (not a conflicting re-delivery),
-- under the status of its outcome ('none' until the outcome arrives; an outcome moves its start from 'none' to its
-- status). Keyed by partition, so projectors of different partitions never contend for a row; and as it is
-- derived from the rows only, a rebuild from the log produces the same counts.
CREATE TABLE audit_rollups (
    bucket          timestamptz NOT NULL,  -- the start's hour (UTC)
    tenant_id       text        NOT NULL,
    action          text        NOT NULL,
    entity_model    text        NOT NULL,
    actor_type      text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('none', 'succeeded', 'failed', 'aborted')),
    kafka_partition integer     NOT NULL,
    entries         bigint      NOT NULL CHECK (entries >= 0),
    PRIMARY KEY (bucket, tenant_id, action, entity_model, actor_type, status, kafka_partition)
);

CREATE INDEX audit_rollups_tenant_bucket ON audit_rollups (tenant_id, bucket);

INSERT INTO audit_rollups (bucket, tenant_id, action, entity_model, actor_type, status, kafka_partition, entries)
SELECT date_trunc('hour', e.occurred_at, 'UTC'), e.tenant_id, e.action, e.entity_model, e.actor_type,
       coalesce(o.status, 'none'), e.kafka_partition, count(*)
  FROM audit_entries e
  LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id
 GROUP BY 1, 2, 3, 4, 5, 6, 7;

ALTER TABLE audit_rollups ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_tenants ON audit_rollups FOR SELECT TO audit_reader USING (tenant_visible(tenant_id));
CREATE POLICY writer_all ON audit_rollups TO audit_writer USING (true) WITH CHECK (true);

GRANT SELECT, INSERT, UPDATE ON audit_rollups TO audit_writer;
GRANT SELECT ON audit_rollups TO audit_reader;
