-- Tenancy enforced by PostgreSQL: the query role sees only rows of the tenants its transaction names.
-- The query API sets them per transaction: set_config('audit.tenants', 'acme,globex', true), or '*' for a
-- platform administrator. After a transaction the setting reads as '' (not NULL): nullif covers both, so a
-- statement that reaches SQL without tenants set sees nothing.

CREATE FUNCTION tenant_visible(tenant text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(current_setting('audit.tenants', true) = '*', false)
        OR tenant = ANY (string_to_array(nullif(current_setting('audit.tenants', true), ''), ','))
$$;

CREATE FUNCTION all_tenants_visible() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(current_setting('audit.tenants', true) = '*', false) $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_entries', 'audit_outcomes', 'execution_logs', 'audit_ids'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY reader_tenants ON %I FOR SELECT TO audit_reader USING (tenant_visible(tenant_id))', t);
        EXECUTE format('CREATE POLICY writer_all ON %I TO audit_writer USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;

-- Dead letters carry no tenant: only a platform administrator ('*') reads them.
ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_admin ON dead_letters FOR SELECT TO audit_reader USING (all_tenants_visible());
CREATE POLICY writer_all ON dead_letters TO audit_writer USING (true) WITH CHECK (true);

GRANT EXECUTE ON FUNCTION tenant_visible(text), all_tenants_visible() TO audit_reader, audit_writer;
