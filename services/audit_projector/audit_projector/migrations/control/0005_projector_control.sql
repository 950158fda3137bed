-- Operators' hold on the projectors of one read model (by schema name): a swap pauses them here, lets a shadow
-- catch up to their exact stored offsets, renames the schemas and resumes. Projectors read the row inside every
-- batch transaction, after a shared advisory lock the swap takes exclusively once to wait out batches in flight,
-- so no batch commits into a read model after it was paused. It lives here because a rebuild replaces the read
-- model's schema and must not replace this.
CREATE TABLE projector_control (
    read_model text        PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    reason     text,
    changed_by text        NOT NULL DEFAULT current_user,
    changed_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON projector_control TO audit_writer, audit_reader;
