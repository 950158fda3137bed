-- Signed checkpoints and the keys that signed them: evidence, never rebuilt from the read model.

CREATE TABLE signing_keys (
    name          text        NOT NULL,
    key_hash      bigint      NOT NULL,
    verifier_key  text        NOT NULL UNIQUE,
    first_used_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, key_hash)
);
COMMENT ON TABLE signing_keys IS 'every key that ever signed a checkpoint stays listed, so old checkpoints still verify';

CREATE TABLE checkpoints (
    origin     text        NOT NULL,
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash  bytea       NOT NULL CHECK (length(root_hash) = 32),
    key_name   text        NOT NULL,
    key_hash   bigint      NOT NULL,
    note       text        NOT NULL,
    signed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, tree_size),
    FOREIGN KEY (key_name, key_hash) REFERENCES signing_keys (name, key_hash)
);

DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO audit_writer', current_schema());
END
$$;
GRANT SELECT, INSERT ON signing_keys, checkpoints TO audit_writer;
GRANT SELECT ON signing_keys, checkpoints TO audit_reader;
