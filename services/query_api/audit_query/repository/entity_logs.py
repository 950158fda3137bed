"""Every execution-log line of one entity's actions, newest first: the entity's Logs tab."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from audit_query.errors import BadRequestError
from audit_query.models import EntityLogLine
from audit_query.repository.reader import Reader, log_public
from audit_query.repository.sql import Where, limit_sql, tenant_scope


class EntityLogQueries(Reader):
    """Log lines joined to their entries by trace id (only lines whose tenant is their entry's)."""

    async def entity_logs(
        self,
        tenants: str,
        model: str,
        entity_id: str,
        tenant: str | None,
        levels: Sequence[str],
        limit: int,
        before: Sequence[Any] | None,
    ) -> list[EntityLogLine]:
        """Up to `limit` lines, newest first, older than `before` (a (time, log id) key) when given."""
        where = Where()
        where.add("e.entity_model = {}", model)
        where.add("e.entity_id = {}", entity_id)
        if tenant is not None:
            where.add("e.tenant_id = {}", tenant)
        tenant_scope(where, tenants)
        if levels:
            where.add("l.level = ANY({}::text[])", list(levels))
        if before is not None:
            at, log_id = check_entity_log_key(before)
            where.add("(l.logged_at, l.log_id) < ({}::timestamptz, {}::uuid)", at, log_id)
        rows = await self._fetch(
            f"""SELECT l.log_id, l.logged_at, l.level, l.logger, l.message, l.fields, l.process, l.source,
                       e.audit_id, e.action, e.tenant_id
                  FROM audit_entries e
                  JOIN execution_logs l ON l.trace_id = e.audit_id AND l.tenant_id = e.tenant_id
                 {where.sql()}
                 ORDER BY l.logged_at DESC, l.log_id DESC LIMIT {limit_sql(limit)}""",
            *where.args,
            tenants=tenants,
        )
        lines = [
            EntityLogLine(
                **log_public(r).model_dump(), trace_id=r["audit_id"].hex, event=r["action"], tenant_id=r["tenant_id"]
            )
            for r in rows
        ]
        for tenant in {line.tenant_id for line in lines}:
            mine = [i for i, line in enumerate(lines) if line.tenant_id == tenant]
            opened = await self._opened_logs([lines[i] for i in mine], [rows[i]["fields"] for i in mine], tenant)
            for i, line in zip(mine, opened, strict=True):
                lines[i] = line
        return lines


def check_entity_log_key(key: Sequence[Any]) -> tuple[datetime, UUID]:
    """A Logs-tab cursor's key, (time, log id) as text; anything else is a 400 (a cursor from elsewhere)."""
    try:
        if len(key) != 2:
            raise ValueError("two values expected")
        return datetime.fromisoformat(str(key[0])), UUID(str(key[1]))
    except (TypeError, ValueError) as e:
        raise BadRequestError("cursor is not one of this entity's log pages") from e
