-- Access paths the console's list shapes need (see docs/search.md, "Query shapes"):
--   an entity id alone (and the entity browser's id-prefix ranges), without its model;
--   one tenant and one action, newest first (a small tenant's events would otherwise be found by walking the
--   action index through every tenant's rows).
CREATE INDEX audit_entries_entity_id ON audit_entries (entity_id, occurred_at, audit_id);
CREATE INDEX audit_entries_tenant_action ON audit_entries (tenant_id, action, occurred_at, audit_id);
