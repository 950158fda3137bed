-- Outcome schema version 2: status `aborted` (the start was not acknowledged, the body never ran) and the
-- names of values the body set that could not be recorded. Version 1 outcomes keep projecting as before.
ALTER TABLE audit_outcomes DROP CONSTRAINT audit_outcomes_status_check;
ALTER TABLE audit_outcomes ADD CONSTRAINT audit_outcomes_status_check
    CHECK (status IN ('succeeded', 'failed', 'aborted'));
ALTER TABLE audit_outcomes ADD COLUMN unrecorded jsonb;
