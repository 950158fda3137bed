-- The services never own tables: the projector appends, the query API reads.
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO audit_writer, audit_reader', current_schema());
END
$$;

GRANT SELECT, INSERT ON audit_entries, audit_outcomes, execution_logs, dead_letters TO audit_writer;
GRANT SELECT, INSERT, UPDATE ON projector_offsets TO audit_writer;
GRANT SELECT, INSERT, DELETE ON projector_blocks TO audit_writer;
GRANT EXECUTE ON FUNCTION ensure_month_partitions(integer, integer) TO audit_writer;

GRANT SELECT ON audit_entries, audit_outcomes, execution_logs, dead_letters,
                projector_offsets, projector_blocks TO audit_reader;
