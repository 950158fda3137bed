"""The audit log and an entity's history: keyset pages, counts, the export stream, the entity browser."""

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import asyncpg

from audit_query.errors import BadRequestError, store_errors
from audit_query.models import (
    AuditEntryPublic,
    AuditFilter,
    SortField,
    SortOrder,
)
from audit_query.repository.filters import apply_filters
from audit_query.repository.reader import ENTRY_SELECT, Reader, entry_json
from audit_query.repository.sql import PREFIX_END, Where, limit_sql, tenant_scope

EXPORT_IDLE: Final = "5min"
"""How long an export's transaction may wait on a slow reader before the server ends it."""

LOG_ORDER: Final = "log"
"""Entity history's order: the order the log guarantees for one entity (its partition's offsets)."""

# Sort columns per field, with (SQL cast of the cursor value) — ties end on time, then audit id.
SORT_KEYS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    SortField.TIME: (("e.occurred_at", "timestamptz"), ("e.audit_id", "uuid")),
    SortField.USER: (("e.user_sort", "text"), ("e.occurred_at", "timestamptz"), ("e.audit_id", "uuid")),
    SortField.EVENT: (("e.action", "text"), ("e.occurred_at", "timestamptz"), ("e.audit_id", "uuid")),
    LOG_ORDER: (("e.tenant_id", "text"), ("e.kafka_partition", "int"), ("e.kafka_offset", "bigint")),
}


_PARSERS: Final[dict[str, Callable[[str], object]]] = {
    "timestamptz": lambda v: datetime.fromisoformat(v).astimezone(UTC),
    "uuid": UUID,
    "text": lambda v: v if "\x00" not in v else _refuse(),
    "int": lambda v: _bounded(int(v), 2**31),
    "bigint": lambda v: _bounded(int(v), 2**63),
}


def _refuse() -> str:
    raise ValueError("NUL")


def _bounded(value: int, limit: int) -> int:
    if not -limit <= value < limit:
        raise ValueError("out of range")
    return value


def check_sort_values(sort: str, values: Sequence[Any]) -> None:
    """A cursor's sort values must have the shape of its sort's keys (a signed cursor can still be malformed)."""
    keys = SORT_KEYS[sort]
    if len(values) != len(keys) or not all(isinstance(v, str) for v in values):
        raise BadRequestError("malformed cursor: its values do not match the sort")
    for (_, cast), value in zip(keys, values, strict=True):
        try:
            _PARSERS[cast](value)
        except (ValueError, TypeError, OverflowError) as e:
            raise BadRequestError("malformed cursor: a value of the wrong shape") from e


@dataclass(frozen=True, slots=True)
class Row:
    """An entry as the API's JSON, and what a cursor would need to continue after it (computed only for the rows
    that get one)."""

    entry_json: str
    record: asyncpg.Record
    sort: str

    @property
    def sort_values(self) -> tuple[str, ...]:
        return _sort_values(self.record, self.sort)


class EntryQueries(Reader):
    """Pages, counts and streams of entries, and the entities they name."""

    async def list_entries(
        self,
        tenants: str,
        filters: AuditFilter,
        sort: str,
        order: SortOrder,
        limit: int,
        after: Sequence[Any] | None,
        *,
        backward: bool = False,
    ) -> list[Row]:
        """One page of the global log, `limit + 1` rows so the caller knows whether more follow. `backward`: the
        rows before `after` instead, nearest first (the caller reverses them)."""
        where = Where()
        apply_filters(where, await self._unsealer.aliased(filters, tenants))
        tenant_scope(where, tenants)
        keys = SORT_KEYS[sort]
        if backward:
            order = SortOrder.DESC if order is SortOrder.ASC else SortOrder.ASC
        if after is not None:
            columns = ", ".join(c for c, _ in keys)
            op = ">" if order is SortOrder.ASC else "<"
            placeholders = []
            for (_, cast), value in zip(keys, after, strict=True):
                where.args.append(value)
                placeholders.append(f"${len(where.args)}::text::{cast}")
            where.clauses.append(f"({columns}) {op} ({', '.join(placeholders)})")
        direction = "ASC" if order is SortOrder.ASC else "DESC"
        order_by = ", ".join(f"{c} {direction}" for c, _ in keys)
        select = ", ".join([*(c for c, _ in keys), f"{entry_json(self._unknown_after)} AS entry_json"])
        sql = (
            f"SELECT {select} FROM audit_entries e LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id "
            f"{where.sql()} ORDER BY {order_by} LIMIT {limit_sql(limit + 1)}"
        )
        rows = await self._fetch(sql, *where.args, tenants=tenants)
        texts = await self._unsealer.entry_texts([r["entry_json"] for r in rows])
        return [Row(text, r, sort) for text, r in zip(texts, rows, strict=True)]

    async def entities(
        self, tenants: str, model: str | None, prefix: str, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        """Distinct (model, entity id) pairs whose id starts with `prefix`, in (id, model) order, after `after`
        (an (id, model) pair)."""
        where = Where()
        tenant_scope(where, tenants)
        if model is not None:
            where.add("e.entity_model = {}", model)
        if prefix:
            # A range rather than LIKE: it keeps the index under row-level security.
            where.add("e.entity_id >= {} AND e.entity_id < {}", prefix, prefix + PREFIX_END)
        if after is not None:
            where.add("(e.entity_id, e.entity_model) > ({}, {})", *after)
        rows = await self._fetch(
            f"SELECT DISTINCT e.entity_model, e.entity_id FROM audit_entries e {where.sql()} "
            f"ORDER BY e.entity_id, e.entity_model LIMIT {limit_sql(limit)}",
            *where.args,
            tenants=tenants,
        )
        return [(r["entity_model"], r["entity_id"]) for r in rows]

    async def count_entries(self, tenants: str, filters: AuditFilter, cap: int) -> int:
        """How many entries the view holds, counting no further than `cap` (a bounded cost on any view)."""
        where = Where()
        apply_filters(where, await self._unsealer.aliased(filters, tenants))
        tenant_scope(where, tenants)
        sql = (
            "SELECT count(*) FROM (SELECT 1 FROM audit_entries e LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id"
            f" {where.sql()} LIMIT {limit_sql(cap)}) AS capped"
        )
        rows = await self._fetch(sql, *where.args, tenants=tenants)
        return int(rows[0][0])

    async def stream_entries(
        self, tenants: str, filters: AuditFilter, sort: str, order: SortOrder, batch: int = 1000
    ) -> AsyncGenerator[AuditEntryPublic, None]:
        """Every entry of a filtered view in order, through a server-side cursor: memory stays flat however many
        rows there are. The transaction may idle while a slow client reads, for up to `EXPORT_IDLE`."""
        where = Where()
        apply_filters(where, await self._unsealer.aliased(filters, tenants))
        tenant_scope(where, tenants)
        direction = "ASC" if order is SortOrder.ASC else "DESC"
        order_by = ", ".join(f"{c} {direction}" for c, _ in SORT_KEYS[sort])
        sql = f"{ENTRY_SELECT} {where.sql()} ORDER BY {order_by}"
        with store_errors():
            async with self._pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
                await conn.execute("SELECT set_config('audit.tenants', $1, true)", tenants)
                await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{EXPORT_IDLE}'")
                async for record in conn.cursor(sql, *where.args, prefetch=batch):
                    yield await self._opened_entry(record)


def _sort_values(r: asyncpg.Record, sort: str) -> tuple[str, ...]:
    """The row's values of the sort columns, as text a cursor can carry (cast back in SQL)."""
    values = (r[column.removeprefix("e.")] for column, _ in SORT_KEYS[sort])
    return tuple(v.isoformat() if isinstance(v, datetime) else str(v) for v in values)
