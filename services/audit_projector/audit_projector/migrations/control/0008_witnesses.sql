-- Witnessed checkpoints (C2SP tlog-witness): the cosignatures witnesses returned, what each witness last cosigned
-- for each origin, and what witnesses refused — evidence of a rollback or a split view, kept apart from the
-- read model like the checkpoints themselves.
CREATE TABLE cosignatures (
    origin      text        NOT NULL,
    tree_size   bigint      NOT NULL,
    witness     text        NOT NULL,
    key_hash    bigint      NOT NULL,
    cosigned_at timestamptz NOT NULL,
    line        text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, tree_size, witness),
    FOREIGN KEY (origin, tree_size) REFERENCES checkpoints (origin, tree_size)
);
COMMENT ON TABLE cosignatures IS 'verified tlog-cosignature/v1 lines, one per witness and checkpoint';

CREATE TABLE witness_state (
    witness    text        NOT NULL,
    origin     text        NOT NULL,
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (witness, origin)
);
COMMENT ON TABLE witness_state IS 'the size each witness last cosigned for each origin, as far as the log knows';

CREATE TABLE witness_refusals (
    witness      text        NOT NULL,
    origin       text        NOT NULL,
    tree_size    bigint      NOT NULL,
    status       integer     NOT NULL,
    witness_size bigint,
    detail       text        NOT NULL,
    refused_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX witness_refusals_recent ON witness_refusals (refused_at);
COMMENT ON TABLE witness_refusals IS 'a witness that cosigned a larger tree, saw another root or refused a proof';

CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON cosignatures FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON cosignatures FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON witness_refusals FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON witness_refusals
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

GRANT SELECT, INSERT ON cosignatures, witness_refusals TO audit_writer;
GRANT SELECT, INSERT, UPDATE ON witness_state TO audit_writer;
GRANT SELECT ON cosignatures TO audit_reader;
