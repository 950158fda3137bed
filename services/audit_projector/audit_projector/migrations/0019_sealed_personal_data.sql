-- Personal fields sealed under their subject's key (action schema_version 3): the AEAD output as it came, by field
-- path. The clear columns then hold null, or the subject's pseudonym (actor_id, entity_id), so filters and
-- rollups by user still work and group by person. The key lives in the key store, never here.
ALTER TABLE audit_entries ADD COLUMN sealed jsonb;
COMMENT ON COLUMN audit_entries.sealed IS 'field path -> sealed value (schemas/README.md, "Personal data")';
