-- Which key may write for which sources and tenants, and when: Kafka never says who produced a record, signatures do.
CREATE TABLE producer_keys (
    key_id      text        PRIMARY KEY,
    name        text        NOT NULL,
    public_key  bytea       NOT NULL CHECK (length(public_key) = 32),
    sources     text[]      NOT NULL CHECK (cardinality(sources) > 0),
    tenants     text[],
    valid_from  timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz,
    added_by    text        NOT NULL DEFAULT current_user,
    added_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
COMMENT ON COLUMN producer_keys.tenants IS 'NULL: every tenant';
GRANT SELECT ON producer_keys TO audit_writer, audit_reader;
