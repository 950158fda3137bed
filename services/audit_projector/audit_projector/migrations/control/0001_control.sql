-- State that cannot be rebuilt from Kafka lives here, apart from the read model a rebuild replaces.

CREATE TABLE api_tokens (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL CHECK (name <> '' AND length(name) <= 200),
    secret_hash  bytea       NOT NULL UNIQUE,
    scopes       text[]      NOT NULL CHECK (scopes <@ ARRAY['audit:read', 'audit:export', 'audit:admin']),
    tenants      text[],
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    revoked_by   text
);
COMMENT ON COLUMN api_tokens.tenants IS 'NULL: every tenant (platform administrators)';
COMMENT ON COLUMN api_tokens.secret_hash IS 'sha256 of the 256-bit secret; the secret itself is shown once';

CREATE TABLE sessions (
    id_hash      bytea       PRIMARY KEY,
    principal    jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz
);

DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO audit_reader', current_schema());
END
$$;
GRANT SELECT ON api_tokens TO audit_reader;
GRANT UPDATE (last_used_at) ON api_tokens TO audit_reader;
GRANT SELECT, INSERT ON sessions TO audit_reader;
GRANT UPDATE (ended_at) ON sessions TO audit_reader;
