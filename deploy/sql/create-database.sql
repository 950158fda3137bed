-- For docker compose: the image creates the `audit` database; hand it to the owner role.
ALTER DATABASE audit OWNER TO audit_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
