"""A data subject's entries: how many an erasure reaches, what right of access returns, and the erasures the
audit log itself records (the tombstones kept apart from the key store)."""

from datetime import datetime

from audit_query.models import AuditEntryPublic
from audit_query.repository.reader import ENTRY_SELECT, Reader
from audit_query.repository.sql import limit_sql

ERASURE_SOURCE = "audit-query"
"""Only the query service records erasures; an erasure record from any other source is not a tombstone."""


class SubjectQueries(Reader):
    """Entries naming a subject by its pseudonym, as actor or as entity."""

    async def subject_entries(self, tenant: str, pseudonym: str) -> int:
        """How many entries of `tenant` name the subject (their sealed fields read as erased once it is)."""
        rows = await self._fetch(
            "SELECT count(*) FROM audit_entries e WHERE e.tenant_id = $1 AND (e.actor_id = $2 OR e.entity_id = $2)",
            tenant,
            pseudonym,
            tenants=tenant,
        )
        return int(rows[0][0])

    async def subject_data(self, tenant: str, pseudonym: str, limit: int) -> list[AuditEntryPublic]:
        """The subject's entries, opened (right of access), oldest first."""
        rows = await self._fetch(
            f"{ENTRY_SELECT} WHERE e.tenant_id = $1 AND (e.actor_id = $2 OR e.entity_id = $2)"
            f" ORDER BY e.occurred_at, e.audit_id LIMIT {limit_sql(limit)}",
            tenant,
            pseudonym,
            tenants=tenant,
        )
        return [await self._opened_entry(r) for r in rows]

    async def recorded_erasures(self) -> list[tuple[str, str, datetime]]:
        """(tenant, pseudonym, when) of every erasure the audit log records as done by the query service."""
        rows = await self._fetch(
            "SELECT e.tenant_id, e.entity_id, e.occurred_at FROM audit_entries e"
            " JOIN audit_outcomes o ON o.audit_id = e.audit_id AND o.status = 'succeeded'"
            " WHERE e.entity_model = 'data_subject' AND e.action = 'delete' AND e.source = $1",
            ERASURE_SOURCE,
            tenants="*",
        )
        return [(r["tenant_id"], r["entity_id"], r["occurred_at"]) for r in rows]
