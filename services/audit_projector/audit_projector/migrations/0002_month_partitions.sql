-- Monthly partitions, created ahead of time by a function the projector may call but not alter.

CREATE FUNCTION ensure_month_partitions(months_ahead integer DEFAULT 3, months_behind integer DEFAULT 1)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    parent  text;
    month   date;
    lo      timestamptz;
    hi      timestamptz;
    child   text;
    col     text;
    created integer := 0;
BEGIN
    FOREACH parent IN ARRAY ARRAY['audit_entries', 'execution_logs'] LOOP
        col := CASE parent WHEN 'audit_entries' THEN 'occurred_at' ELSE 'logged_at' END;
        FOR i IN -months_behind .. months_ahead LOOP
            month := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
            lo := month::timestamp AT TIME ZONE 'UTC';
            hi := (month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
            child := format('%s_y%sm%s', parent, to_char(month, 'YYYY'), to_char(month, 'MM'));
            CONTINUE WHEN to_regclass(format('%I.%I', current_schema(), child)) IS NOT NULL;
            -- Rows that already landed in the default partition for this month move into the new one,
            -- otherwise ATTACH would refuse; done under a lock so no batch sees them twice or not at all.
            EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', parent);
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', child, parent);
            EXECUTE format(
                'WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved',
                parent || '_default', col, col, child) USING lo, hi;
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, child, lo, hi);
            created := created + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END;
$$;

REVOKE ALL ON FUNCTION ensure_month_partitions(integer, integer) FROM PUBLIC;

SELECT ensure_month_partitions(3, 1);
