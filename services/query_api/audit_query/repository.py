"""All of the query API's SQL: keyset-paginated audit log, entity history, entries and traces."""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

import asyncpg

from audit_query.errors import BadRequestError, store_errors
from audit_query.models import (
    AuditEntryPublic,
    AuditFilter,
    EntityPublic,
    ErrorPublic,
    ExecutionLogPublic,
    OutcomePublic,
    RequestPublic,
    SortField,
    SortOrder,
    UserPublic,
)

SESSION_SETTINGS: Final = {
    "statement_timeout": "20s",
    "lock_timeout": "5s",
    "idle_in_transaction_session_timeout": "30s",
}
"""Every session's limits: no read holds a lock or a transaction open for long."""

LOG_ORDER: Final = "log"
"""Entity history's order: the order the log guarantees for one entity (its partition's offsets)."""

# Sort columns per field, with (SQL cast of the cursor value) — ties end on time, then audit id.
SORT_KEYS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    SortField.TIME: (("e.occurred_at", "timestamptz"), ("e.audit_id", "uuid")),
    SortField.USER: (("e.user_sort", "text"), ("e.occurred_at", "timestamptz"), ("e.audit_id", "uuid")),
    SortField.EVENT: (("e.action", "text"), ("e.occurred_at", "timestamptz"), ("e.audit_id", "uuid")),
    LOG_ORDER: (("e.tenant_id", "text"), ("e.kafka_partition", "int"), ("e.kafka_offset", "bigint")),
}

_ENTRY_SELECT: Final = """
SELECT e.audit_id, e.occurred_at, e.tenant_id, e.action, e.entity_model, e.entity_id, e.actor_type,
       e.actor_id, e.actor_display_name, e.user_sort, e.request_id, host(e.client_ip) AS client_ip, e.user_agent,
       e.correlation_id, e.otel_trace_id, e.source, e.kafka_partition, e.kafka_offset,
       o.status, o.error_type, o.error_message, o.revision, o.changes, o.finished_at, o.duration_ms, o.unrecorded
  FROM audit_entries e
  LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id
"""


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


@dataclass(slots=True)
class _Where:
    """Conditions and their positional arguments, built up one filter at a time."""

    clauses: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, template: str, *values: Any) -> None:
        """`template` uses {} for each value's placeholder."""
        placeholders = []
        for value in values:
            self.args.append(value)
            placeholders.append(f"${len(self.args)}")
        self.clauses.append(template.format(*placeholders))

    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""


@dataclass(frozen=True, slots=True)
class Row:
    """An entry row and the sort key values a cursor would need to continue after it."""

    entry: AuditEntryPublic
    sort_values: tuple[str, ...]


class AuditRepository:
    """Reads the projector's tables through a pool whose sessions use the read-model schema."""

    def __init__(self, pool: asyncpg.Pool, unknown_after: timedelta) -> None:
        self._pool = pool
        self._unknown_after = unknown_after

    @classmethod
    async def open(cls, dsn: str, schema: str, unknown_after: timedelta) -> "AuditRepository":
        """Create the pool lazily (min_size=0) so the API starts, and reports, while Postgres is down."""
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=10,
            server_settings={"search_path": schema, "application_name": "audit-query", **SESSION_SETTINGS},
            command_timeout=30,
        )
        return cls(pool, unknown_after)

    async def close(self) -> None:
        """Close every connection."""
        await self._pool.close()

    async def list_entries(
        self, filters: AuditFilter, sort: str, order: SortOrder, limit: int, after: Sequence[Any] | None
    ) -> list[Row]:
        """One page of the global log, `limit + 1` rows so the caller knows whether more follow."""
        where = _Where()
        _apply_filters(where, filters)
        keys = SORT_KEYS[sort]
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
        where.args.append(limit + 1)
        sql = f"{_ENTRY_SELECT} {where.sql()} ORDER BY {order_by} LIMIT ${len(where.args)}"
        rows = await self._fetch(sql, *where.args)
        return [Row(self._entry(r), _sort_values(r, sort)) for r in rows]

    async def entry(self, audit_id: UUID) -> AuditEntryPublic | None:
        """One entry with its outcome, or None."""
        rows = await self._fetch(f"{_ENTRY_SELECT} WHERE e.audit_id = $1 LIMIT 1", audit_id)
        return self._entry(rows[0]) if rows else None

    async def logs(self, trace_id: UUID, limit: int) -> tuple[list[ExecutionLogPublic], bool]:
        """Execution-log lines of a trace in time order, and whether more than `limit` exist."""
        rows = await self._fetch(
            """SELECT log_id, logged_at, level, logger, message, fields, process, source
                 FROM execution_logs WHERE trace_id = $1 ORDER BY logged_at, log_id LIMIT $2""",
            trace_id,
            limit + 1,
        )
        logs = [
            ExecutionLogPublic(
                log_id=r["log_id"],
                time=r["logged_at"],
                level=r["level"],
                logger=r["logger"],
                message=r["message"],
                fields=json.loads(r["fields"]),
                process=r["process"],
                source=r["source"],
            )
            for r in rows[:limit]
        ]
        return logs, len(rows) > limit

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless Postgres answers."""
        await self._fetch("SELECT 1")

    async def projector_positions(self, group: str) -> tuple[dict[tuple[str, int], int], list[dict[str, Any]]]:
        """Stored offsets of the projector group, and any partitions it has stopped."""
        offsets = await self._fetch(
            "SELECT topic, partition, next_offset FROM projector_offsets WHERE consumer_group = $1", group
        )
        blocks = await self._fetch(
            """SELECT topic, partition, kafka_offset, event_type, schema_version, blocked_at
                 FROM projector_blocks WHERE consumer_group = $1 ORDER BY topic, partition""",
            group,
        )
        return (
            {(r["topic"], r["partition"]): r["next_offset"] for r in offsets},
            [
                {
                    "topic": r["topic"],
                    "partition": r["partition"],
                    "offset": r["kafka_offset"],
                    "event_type": r["event_type"],
                    "schema_version": r["schema_version"],
                    "since": r["blocked_at"].isoformat(),
                }
                for r in blocks
            ],
        )

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with store_errors():
            rows: list[asyncpg.Record] = await self._pool.fetch(sql, *args)
        return rows

    def _entry(self, r: asyncpg.Record) -> AuditEntryPublic:
        has_request = any(r[k] is not None for k in ("request_id", "client_ip", "user_agent"))
        return AuditEntryPublic(
            audit_id=r["audit_id"],
            trace_id=r["audit_id"].hex,
            time=r["occurred_at"],
            tenant_id=r["tenant_id"],
            event=r["action"],
            user=UserPublic(type=r["actor_type"], id=r["actor_id"], display_name=r["actor_display_name"]),
            entity=EntityPublic(id=r["entity_id"], model=r["entity_model"]),
            request=RequestPublic(request_id=r["request_id"], client_ip=r["client_ip"], user_agent=r["user_agent"])
            if has_request
            else None,
            correlation_id=r["correlation_id"],
            otel_trace_id=r["otel_trace_id"],
            source=r["source"],
            outcome=self._outcome(r),
        )

    def _outcome(self, r: asyncpg.Record) -> OutcomePublic:
        if r["status"] is None:
            late = datetime.now(UTC) - r["occurred_at"] > self._unknown_after
            return OutcomePublic(status="unknown" if late else "in_progress")
        error = ErrorPublic(type=r["error_type"], message=r["error_message"] or "") if r["error_type"] else None
        return OutcomePublic(
            status=r["status"],
            error=error,
            revision=r["revision"],
            changes=json.loads(r["changes"]) if r["changes"] is not None else None,
            finished_at=r["finished_at"],
            duration_ms=r["duration_ms"],
            unrecorded=json.loads(r["unrecorded"]) if r["unrecorded"] is not None else None,
        )


def _apply_filters(where: _Where, f: AuditFilter) -> None:
    if f.tenant is not None:
        where.add("e.tenant_id = {}", f.tenant)
    if f.actions:
        where.add("e.action = ANY({}::text[])", [a.value for a in f.actions])
    if f.user_id is not None:
        where.add("e.actor_id = {}", f.user_id)
    if f.actor_type is not None:
        where.add("e.actor_type = {}", f.actor_type.value)
    if f.model is not None:
        where.add("e.entity_model = {}", f.model)
    if f.entity_id is not None:
        where.add("e.entity_id = {}", f.entity_id)
    if f.correlation_id is not None:
        where.add("e.correlation_id = {}", f.correlation_id)
    if f.since is not None:
        where.add("e.occurred_at >= {}", f.since)
    if f.until is not None:
        where.add("e.occurred_at < {}", f.until)


def _sort_values(r: asyncpg.Record, sort: str) -> tuple[str, ...]:
    """The row's values of the sort columns, as text a cursor can carry (cast back in SQL)."""
    values = (r[column.removeprefix("e.")] for column, _ in SORT_KEYS[sort])
    return tuple(v.isoformat() if isinstance(v, datetime) else str(v) for v in values)
