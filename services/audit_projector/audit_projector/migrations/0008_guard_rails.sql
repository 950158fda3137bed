-- Guard rails, not proof: triggers refuse to change or remove audit rows, leaves and nodes unless a maintenance
-- session says so (SET LOCAL audit.maintenance = 'on', as the owner). An owner can drop a trigger, and TRUNCATE of
-- one partition bypasses its parent's trigger: detection is `audit-projector verify --integrity`'s job.

CREATE FUNCTION refuse_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF coalesce(current_setting('audit.maintenance', true), '') = 'on' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'audit trail rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_entries', 'audit_outcomes', 'execution_logs', 'audit_ids', 'dead_letters',
                              'merkle_leaves', 'merkle_nodes'] LOOP
        EXECUTE format('CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON %I FOR EACH ROW '
                       'EXECUTE FUNCTION refuse_change()', t);
        EXECUTE format('CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON %I FOR EACH STATEMENT '
                       'EXECUTE FUNCTION refuse_change()', t);
    END LOOP;
END
$$;

-- Month creation moves default-partition rows into the new month: the one sanctioned DELETE, under maintenance.
CREATE OR REPLACE FUNCTION ensure_month_partition(target_schema text, parent text, month date)
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
    was   text := coalesce(current_setting('audit.maintenance', true), '');
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
    -- Rows of this month already in the default partition move into the new one (ATTACH would refuse): the
    -- one sanctioned DELETE of audit rows, under the maintenance setting for this statement only.
    PERFORM set_config('audit.maintenance', 'on', true);
    EXECUTE format('WITH moved AS (DELETE FROM %I.%I WHERE %I >= $1 AND %I < $2 RETURNING *) '
                   'INSERT INTO %I.%I SELECT * FROM moved',
                   target_schema, parent || '_default', col, col, target_schema, child) USING lo, hi;
    PERFORM set_config('audit.maintenance', was, true);
    EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                   target_schema, parent, target_schema, child, lo, hi);
    RETURN true;
END;
$$;

