-- The one sanctioned removal of audit rows besides month creation: after a partition's leaves up to a signed
-- checkpoint are in a verified archive, their rows go. Takes the schema explicitly; the guard rails are lifted
-- for this transaction only, then restored.
CREATE FUNCTION archive_rows(target_schema text, archived_topic text, archived_partition integer, end_offset bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    was     text := coalesce(current_setting('audit.maintenance', true), '');
    removed bigint := 0;
    n       bigint;
    t       text;
BEGIN
    PERFORM set_config('audit.maintenance', 'on', true);
    FOREACH t IN ARRAY ARRAY['audit_entries', 'audit_outcomes', 'execution_logs', 'dead_letters'] LOOP
        EXECUTE format('DELETE FROM %I.%I WHERE kafka_topic = $1 AND kafka_partition = $2 AND kafka_offset < $3',
                       target_schema, t)
            USING archived_topic, archived_partition, end_offset;
        GET DIAGNOSTICS n = ROW_COUNT;
        removed := removed + n;
    END LOOP;
    FOREACH t IN ARRAY ARRAY['record_verdicts', 'merkle_leaves'] LOOP
        EXECUTE format('DELETE FROM %I.%I WHERE topic = $1 AND partition = $2 AND kafka_offset < $3', target_schema, t)
            USING archived_topic, archived_partition, end_offset;
    END LOOP;
    PERFORM set_config('audit.maintenance', was, true);
    RETURN removed;
END;
$$;
REVOKE ALL ON FUNCTION archive_rows(text, text, integer, bigint) FROM PUBLIC;
