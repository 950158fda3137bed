-- Cluster-level bootstrap, run once by a superuser before any migration.
-- audit_owner owns the schema and runs migrations; the services log in as roles that
-- only inherit the privileges the migrations grant to audit_writer / audit_reader.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_owner') THEN
    CREATE ROLE audit_owner LOGIN PASSWORD 'audit_owner';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_writer') THEN
    CREATE ROLE audit_writer NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_reader') THEN
    CREATE ROLE audit_reader NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_projector') THEN
    CREATE ROLE audit_projector LOGIN PASSWORD 'audit_projector' IN ROLE audit_writer;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_query') THEN
    CREATE ROLE audit_query LOGIN PASSWORD 'audit_query' IN ROLE audit_reader;
  END IF;
  -- The key store's own role: it owns schema audit_keys (created in the database by key-store.sql) and is in no
  -- other role; no read-model role is granted anything there.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_keys') THEN
    CREATE ROLE audit_keys LOGIN PASSWORD 'audit_keys';
  END IF;
END
$$;
