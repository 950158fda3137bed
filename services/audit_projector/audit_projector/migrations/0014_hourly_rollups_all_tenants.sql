-- The hourly rollups without tenant and partition, for callers who see every tenant: a few hundred rows an hour
-- instead of about one per entry when the data is varied. Folded from closed hours by the same compaction, with
-- change markers per hour kept apart from the daily tier's (each tier deletes only its own).
CREATE TABLE audit_rollup_hour_changes (
    bucket          timestamptz NOT NULL,  -- the changed hourly rows' hour
    tenant_id       text        NOT NULL,
    kafka_partition integer     NOT NULL,
    changes         bigint      NOT NULL,
    PRIMARY KEY (bucket, tenant_id, kafka_partition)
);

CREATE TABLE audit_rollups_hourly_all (
    bucket       timestamptz NOT NULL,
    action       text        NOT NULL,
    entity_model text        NOT NULL,
    actor_type   text        NOT NULL,
    status       text        NOT NULL,
    entries      bigint      NOT NULL CHECK (entries >= 0),
    PRIMARY KEY (bucket, action, entity_model, actor_type, status)
);

INSERT INTO audit_rollup_hour_changes (bucket, tenant_id, kafka_partition, changes)
SELECT DISTINCT bucket, tenant_id, kafka_partition, 1 FROM audit_rollups;

ALTER TABLE audit_rollup_hour_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_rollups_hourly_all ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_tenants ON audit_rollup_hour_changes FOR SELECT TO audit_reader
    USING (tenant_visible(tenant_id));
CREATE POLICY writer_all ON audit_rollup_hour_changes TO audit_writer USING (true) WITH CHECK (true);
CREATE POLICY reader_admin ON audit_rollups_hourly_all FOR SELECT TO audit_reader USING (all_tenants_visible());
CREATE POLICY writer_all ON audit_rollups_hourly_all TO audit_writer USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON audit_rollup_hour_changes, audit_rollups_hourly_all TO audit_writer;
GRANT SELECT ON audit_rollup_hour_changes, audit_rollups_hourly_all TO audit_reader;
