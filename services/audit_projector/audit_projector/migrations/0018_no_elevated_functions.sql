-- Repair: the functions that ran with the owner's rights took any schema the caller could use, its own pg_temp
-- included, and resolved names in it. They moved to the control schema (checked against its read-model
-- registry); the copies here go. Every function a policy or a trigger runs names its built-ins by schema.
DROP FUNCTION IF EXISTS merkle_leaf_of(text, uuid);
DROP FUNCTION IF EXISTS ensure_month_partition(text, text, date);

CREATE OR REPLACE FUNCTION tenant_visible(tenant text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(pg_catalog.current_setting('audit.tenants', true) OPERATOR(pg_catalog.=) '*', false)
        OR tenant OPERATOR(pg_catalog.=) ANY (pg_catalog.string_to_array(
               nullif(pg_catalog.current_setting('audit.tenants', true), ''), ','))
$$;

CREATE OR REPLACE FUNCTION all_tenants_visible() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(pg_catalog.current_setting('audit.tenants', true) OPERATOR(pg_catalog.=) '*', false) $$;

-- The guard-rail trigger resolves its built-ins through a pinned path (it also fires under the owner's functions).
ALTER FUNCTION refuse_change() SET search_path = pg_catalog, pg_temp;
