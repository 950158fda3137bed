-- One user's entries sorted by event: the actor index gives the user's rows but not in action order, so every
-- page sorted thousands of them (137 ms at 10 M entries); this one yields them in order.
CREATE INDEX audit_entries_actor_action ON audit_entries (actor_id, action, occurred_at, audit_id);
