-- The daily tier once more without the tenant, for callers who see every tenant: a platform administrator's
-- 30-day chart then sums a few hundred rows a day instead of a few thousand. Only such callers may read it.
CREATE TABLE audit_rollups_daily_all (
    bucket       timestamptz NOT NULL,
    action       text        NOT NULL,
    entity_model text        NOT NULL,
    actor_type   text        NOT NULL,
    status       text        NOT NULL,
    entries      bigint      NOT NULL CHECK (entries >= 0),
    PRIMARY KEY (bucket, action, entity_model, actor_type, status)
);

-- Filled by the next compaction: mark every day the daily tier already holds.
INSERT INTO audit_rollup_changes (day, tenant_id, kafka_partition, changes)
SELECT DISTINCT date_trunc('day', bucket, 'UTC'), tenant_id, kafka_partition, 1 FROM audit_rollups
ON CONFLICT (day, tenant_id, kafka_partition) DO UPDATE SET changes = audit_rollup_changes.changes + 1;

ALTER TABLE audit_rollups_daily_all ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_admin ON audit_rollups_daily_all FOR SELECT TO audit_reader USING (all_tenants_visible());
CREATE POLICY writer_all ON audit_rollups_daily_all TO audit_writer USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON audit_rollups_daily_all TO audit_writer;
GRANT SELECT ON audit_rollups_daily_all TO audit_reader;
