-- The read models this control schema serves, by schema OID (a swap renames schemas; OIDs stay), kept by the owner
-- alone. Functions that run with the owner's rights take a schema name from their caller; they act only on a
-- schema registered here as live or shadow and owned by the owner, so a caller's temporary schema, a schema of
-- its own or a retired model is refused before any name in it is resolved.
CREATE TABLE read_models (
    schema_oid      oid         PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('live', 'shadow', 'retired')),
    registered_name text        NOT NULL,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    changed_at      timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON read_models FROM PUBLIC;

-- The elevated functions live here, in the one schema that is never renamed or rebuilt; the registry's name is
-- written into their bodies at creation (no search path is trusted to find it).
DO $migration$
DECLARE
    control text := current_schema();
BEGIN
    EXECUTE format($f$
CREATE FUNCTION %1$I.registered_read_model(target_schema text)
RETURNS oid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    found oid;
BEGIN
    SELECT n.oid INTO found
      FROM pg_catalog.pg_namespace n
      JOIN %1$I.read_models r ON r.schema_oid OPERATOR(pg_catalog.=) n.oid
     WHERE n.nspname OPERATOR(pg_catalog.=) target_schema
       AND r.kind OPERATOR(pg_catalog.=) ANY (ARRAY['live', 'shadow'])
       AND n.nspowner OPERATOR(pg_catalog.=) (SELECT u.oid FROM pg_catalog.pg_roles u
                                              WHERE u.rolname OPERATOR(pg_catalog.=) current_user);
    IF found IS NULL THEN
        RAISE EXCEPTION '%% is not a registered read-model schema', pg_catalog.quote_ident(target_schema)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'only the live and shadow read models listed in the control schema are accepted';
    END IF;
    RETURN found;
END
$body$$f$, control);
    EXECUTE format('REVOKE ALL ON FUNCTION %I.registered_read_model(text) FROM PUBLIC', control);

    -- An entry's leaf for a reader who may see the entry's tenant, in a read model the reader may use.
    EXECUTE format($f$
CREATE FUNCTION %1$I.merkle_leaf_of(target_schema text, entry uuid)
RETURNS TABLE (topic text, partition integer, leaf_index bigint, kafka_offset bigint, leaf_data bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    model oid := %1$I.registered_read_model(target_schema);
BEGIN
    IF NOT pg_catalog.has_schema_privilege(session_user, model, 'USAGE') THEN
        RAISE EXCEPTION 'merkle_leaf_of: %% is not a read model the caller may use', target_schema
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY EXECUTE pg_catalog.format(
        'SELECT l.topic, l.partition, l.leaf_index, l.kafka_offset, l.leaf_data
           FROM %%1$I.audit_entries e
           JOIN %%1$I.merkle_leaves l
             ON l.topic OPERATOR(pg_catalog.=) e.kafka_topic
            AND l.partition OPERATOR(pg_catalog.=) e.kafka_partition
            AND l.kafka_offset OPERATOR(pg_catalog.=) e.kafka_offset
          WHERE e.audit_id OPERATOR(pg_catalog.=) $1 AND %%1$I.tenant_visible(e.tenant_id)', target_schema)
        USING entry;
END
$body$$f$, control);
    EXECUTE format('REVOKE ALL ON FUNCTION %I.merkle_leaf_of(text, uuid) FROM PUBLIC', control);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.merkle_leaf_of(text, uuid) TO audit_reader', control);

    -- One month's partition of a read-model table, made if missing (racing projectors take turns on the lock).
    EXECUTE format($f$
CREATE FUNCTION %1$I.ensure_month_partition(target_schema text, parent text, month date)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    model oid := %1$I.registered_read_model(target_schema);
    col   text;
    first date := pg_catalog.date_trunc('month', month)::date;
    lo    timestamptz;
    hi    timestamptz;
    child text;
    was   text := coalesce(pg_catalog.current_setting('audit.maintenance', true), '');
BEGIN
    IF parent NOT IN ('audit_entries', 'execution_logs') THEN
        RAISE EXCEPTION 'ensure_month_partition: %% is not a partitioned read-model table', parent;
    END IF;
    col := CASE parent WHEN 'audit_entries' THEN 'occurred_at' ELSE 'logged_at' END;
    lo := first::timestamp AT TIME ZONE 'UTC';
    hi := (first + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    child := pg_catalog.format('%%s_y%%sm%%s', parent, pg_catalog.to_char(first, 'YYYY'), pg_catalog.to_char(first, 'MM'));
    EXECUTE pg_catalog.format('LOCK TABLE %%I.%%I IN SHARE ROW EXCLUSIVE MODE', target_schema, parent);
    IF pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', target_schema, child)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE pg_catalog.format('CREATE TABLE %%I.%%I (LIKE %%I.%%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                              target_schema, child, target_schema, parent);
    -- Rows of this month already in the default partition move into the new one (ATTACH would refuse): the
    -- one sanctioned DELETE of audit rows; the trigger it fires is the registered model's own.
    PERFORM pg_catalog.set_config('audit.maintenance', 'on', true);
    EXECUTE pg_catalog.format('WITH moved AS (DELETE FROM %%I.%%I WHERE %%I >= $1 AND %%I < $2 RETURNING *) '
                              'INSERT INTO %%I.%%I SELECT * FROM moved',
                              target_schema, parent || '_default', col, col, target_schema, child) USING lo, hi;
    PERFORM pg_catalog.set_config('audit.maintenance', was, true);
    EXECUTE pg_catalog.format('ALTER TABLE %%I.%%I ATTACH PARTITION %%I.%%I FOR VALUES FROM (%%L) TO (%%L)',
                              target_schema, parent, target_schema, child, lo, hi);
    RETURN true;
END
$body$$f$, control);
    EXECUTE format('REVOKE ALL ON FUNCTION %I.ensure_month_partition(text, text, date) FROM PUBLIC', control);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.ensure_month_partition(text, text, date) TO audit_writer', control);
END
$migration$;

-- The guard-rail trigger's built-ins by a pinned path, like every function here.
ALTER FUNCTION refuse_change() SET search_path = pg_catalog, pg_temp;
