-- A daily tier for the dashboard counts. The hourly rollups are keyed by partition (no contention between
-- projectors), so on varied data they hold nearly one row per entry and a 30-day sum reads millions of rows. A
-- compaction folds closed days into per-day rows without the partition: a full table and a narrower one for the
-- console's charts (event and outcome per tenant).
--
-- Exactness: every statement that changes an hourly row also bumps a change marker for its (day, tenant,
-- partition) in the same transaction. A reader trusts a day's daily rows only when, in its snapshot, no marker
-- of that day is left for its tenants; otherwise it sums that day's hourly rows. The compaction deletes a marker
-- only if it still holds the count it read before summing, so a change racing the compaction keeps its marker.
CREATE TABLE audit_rollup_changes (
    day             timestamptz NOT NULL,  -- start of the UTC day of the changed hourly rows
    tenant_id       text        NOT NULL,
    kafka_partition integer     NOT NULL,
    changes         bigint      NOT NULL,
    PRIMARY KEY (day, tenant_id, kafka_partition)
);

CREATE TABLE audit_rollups_daily (
    bucket       timestamptz NOT NULL,  -- start of the UTC day
    tenant_id    text        NOT NULL,
    action       text        NOT NULL,
    entity_model text        NOT NULL,
    actor_type   text        NOT NULL,
    status       text        NOT NULL,
    entries      bigint      NOT NULL CHECK (entries >= 0),
    PRIMARY KEY (bucket, tenant_id, action, entity_model, actor_type, status)
);
CREATE INDEX audit_rollups_daily_tenant ON audit_rollups_daily (tenant_id, bucket);

CREATE TABLE audit_rollups_daily_actions (
    bucket    timestamptz NOT NULL,
    tenant_id text        NOT NULL,
    action    text        NOT NULL,
    status    text        NOT NULL,
    entries   bigint      NOT NULL CHECK (entries >= 0),
    PRIMARY KEY (bucket, tenant_id, action, status)
);
CREATE INDEX audit_rollups_daily_actions_tenant ON audit_rollups_daily_actions (tenant_id, bucket);

-- What is already counted is marked, so the first compaction folds it.
INSERT INTO audit_rollup_changes (day, tenant_id, kafka_partition, changes)
SELECT DISTINCT date_trunc('day', bucket, 'UTC'), tenant_id, kafka_partition, 1 FROM audit_rollups;

ALTER TABLE audit_rollup_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_rollups_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_rollups_daily_actions ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_tenants ON audit_rollup_changes FOR SELECT TO audit_reader USING (tenant_visible(tenant_id));
CREATE POLICY writer_all ON audit_rollup_changes TO audit_writer USING (true) WITH CHECK (true);
CREATE POLICY reader_tenants ON audit_rollups_daily FOR SELECT TO audit_reader USING (tenant_visible(tenant_id));
CREATE POLICY writer_all ON audit_rollups_daily TO audit_writer USING (true) WITH CHECK (true);
CREATE POLICY reader_tenants ON audit_rollups_daily_actions FOR SELECT TO audit_reader
    USING (tenant_visible(tenant_id));
CREATE POLICY writer_all ON audit_rollups_daily_actions TO audit_writer USING (true) WITH CHECK (true);

GRANT SELECT, INSERT, UPDATE, DELETE ON audit_rollup_changes, audit_rollups_daily, audit_rollups_daily_actions
    TO audit_writer;
GRANT SELECT ON audit_rollup_changes, audit_rollups_daily, audit_rollups_daily_actions TO audit_reader;
