-- Archives: which leaves of which partition were written out of PostgreSQL, where, and the tree after them. A
-- rebuild of the read model must not lose this: replay and verify skip archived ranges but check the tree across
-- them, and may start past history the broker deleted only when an archive covers it.
CREATE TABLE archives (
    topic         text        NOT NULL,
    partition     integer     NOT NULL,
    first_leaf    bigint      NOT NULL CHECK (first_leaf >= 0),
    end_leaf      bigint      NOT NULL,
    first_offset  bigint      NOT NULL,
    end_offset    bigint      NOT NULL,   -- the offset after the last archived record
    root_hash     bytea       NOT NULL CHECK (length(root_hash) = 32),
    end_frontier  bytea[]     NOT NULL,
    checkpoint    text        NOT NULL,   -- the signed note at end_leaf
    file_name     text        NOT NULL,
    file_sha256   bytea       NOT NULL CHECK (length(file_sha256) = 32),
    file_bytes    bigint      NOT NULL,
    rows_deleted  bigint      NOT NULL,
    archived_by   text        NOT NULL DEFAULT current_user,
    archived_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, first_leaf),
    CHECK (end_leaf > first_leaf AND end_offset > first_offset)
);
GRANT SELECT ON archives TO audit_writer, audit_reader;
