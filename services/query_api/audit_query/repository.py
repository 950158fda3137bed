"""All of the query API's SQL: keyset-paginated audit log, entity history, entries and traces."""

import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from uuid import UUID

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from audit_query.auth import Principal
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
from audit_query.search import SearchTerm
from audit_query.stats import ROLLUP_DIMENSIONS, TOP_DIMENSIONS, BucketSize, Dimension, StatsQuery

EXPORT_IDLE: Final = "5min"

log = structlog.get_logger(__name__)
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

_ENTRY_SELECT: Final = """
SELECT e.audit_id, e.occurred_at, e.tenant_id, e.action, e.entity_model, e.entity_id, e.actor_type,
       e.actor_id, e.actor_display_name, e.user_sort, e.request_id, host(e.client_ip) AS client_ip, e.user_agent,
       e.correlation_id, e.otel_trace_id, e.source, e.kafka_partition, e.kafka_offset,
       o.status, o.error_type, o.error_message, o.revision, o.changes, o.finished_at, o.duration_ms, o.unrecorded,
       e.kafka_topic, o.kafka_topic AS outcome_topic, o.kafka_partition AS outcome_partition,
       o.kafka_offset AS outcome_offset
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
class TraceRecord:
    """Something recorded under a trace, at its place in the log (stable across rebuilds)."""

    kind: Literal["entry", "outcome", "log"]
    topic: str
    partition: int
    offset: int
    item: AuditEntryPublic | ExecutionLogPublic


@dataclass(frozen=True, slots=True)
class TraceJson:
    """An entry and a page of its execution-log lines as JSON text, whether more lines follow, and the (time,
    log id) key of the page's last line (where the next page starts)."""

    entry: str
    logs: str
    truncated: bool
    last: tuple[str, str] | None


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


class AuditRepository:
    """Reads the projector's tables through the read pool (its sessions use the read-model schema)."""

    def __init__(self, pool: asyncpg.Pool, unknown_after: timedelta) -> None:
        self._pool = pool
        self._unknown_after = unknown_after

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
        where = _Where()
        _apply_filters(where, filters)
        _tenant_scope(where, tenants)
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
        select = ", ".join([*(c for c, _ in keys), f"{_entry_json(self._unknown_after)} AS entry_json"])
        sql = (
            f"SELECT {select} FROM audit_entries e LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id "
            f"{where.sql()} ORDER BY {order_by} LIMIT {_limit(limit + 1)}"
        )
        rows = await self._fetch(sql, *where.args, tenants=tenants)
        return [Row(r["entry_json"], r, sort) for r in rows]

    async def models(self, tenants: str) -> list[tuple[str, int]]:
        """Every entity model in the log with its number of entries (from the rollups, as stats over all time)."""
        where = _Where()
        _tenant_scope(where, tenants, "r.tenant_id")  # a small tenant's first and last hours by its index
        span = await self._fetch(
            f"SELECT min(r.bucket), max(r.bucket) FROM audit_rollups r {where.sql()}", *where.args, tenants=tenants
        )
        first, last = span[0]
        if first is None:
            return []
        until = max(_floor_hour(datetime.now(UTC)), last) + timedelta(hours=1)
        query = StatsQuery(AuditFilter(), first, until, (Dimension.MODEL,), BucketSize.AUTO, 0)
        rows, _ = await self.stats(tenants, query)
        return [(r["model"], int(r["count"])) for r in rows]

    async def entities(
        self, tenants: str, model: str | None, prefix: str, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        """Distinct (model, entity id) pairs whose id starts with `prefix`, in (id, model) order, after `after`
        (an (id, model) pair)."""
        where = _Where()
        _tenant_scope(where, tenants)
        if model is not None:
            where.add("e.entity_model = {}", model)
        if prefix:
            # A range rather than LIKE: it keeps the index under row-level security.
            where.add("e.entity_id >= {} AND e.entity_id < {}", prefix, prefix + _PREFIX_END)
        if after is not None:
            where.add("(e.entity_id, e.entity_model) > ({}, {})", *after)
        rows = await self._fetch(
            f"SELECT DISTINCT e.entity_model, e.entity_id FROM audit_entries e {where.sql()} "
            f"ORDER BY e.entity_id, e.entity_model LIMIT {_limit(limit)}",
            *where.args,
            tenants=tenants,
        )
        return [(r["entity_model"], r["entity_id"]) for r in rows]

    async def count_entries(self, tenants: str, filters: AuditFilter, cap: int) -> int:
        """How many entries the view holds, counting no further than `cap` (a bounded cost on any view)."""
        where = _Where()
        _apply_filters(where, filters)
        _tenant_scope(where, tenants)
        sql = (
            "SELECT count(*) FROM (SELECT 1 FROM audit_entries e LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id"
            f" {where.sql()} LIMIT {_limit(cap)}) AS capped"
        )
        rows = await self._fetch(sql, *where.args, tenants=tenants)
        return int(rows[0][0])

    async def stream_entries(
        self, tenants: str, filters: AuditFilter, sort: str, order: SortOrder, batch: int = 1000
    ) -> AsyncGenerator[AuditEntryPublic, None]:
        """Every entry of a filtered view in order, through a server-side cursor: memory stays flat however many
        rows there are. The transaction may idle while a slow client reads, for up to `EXPORT_IDLE`."""
        where = _Where()
        _apply_filters(where, filters)
        _tenant_scope(where, tenants)
        direction = "ASC" if order is SortOrder.ASC else "DESC"
        order_by = ", ".join(f"{c} {direction}" for c, _ in SORT_KEYS[sort])
        sql = f"{_ENTRY_SELECT} {where.sql()} ORDER BY {order_by}"
        with store_errors():
            async with self._pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
                await conn.execute("SELECT set_config('audit.tenants', $1, true)", tenants)
                await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{EXPORT_IDLE}'")
                async for record in conn.cursor(sql, *where.args, prefetch=batch):
                    yield self._entry(record)

    async def stats(self, tenants: str, query: StatsQuery) -> tuple[list[dict[str, Any]], str]:
        """`stats_json` with its rows decoded (the chart and the model list)."""
        rows, _, source = await self.stats_json(tenants, query)
        decoded: list[dict[str, Any]] = json.loads(rows)
        return decoded, source

    async def stats_json(self, tenants: str, query: StatsQuery) -> tuple[str, int, str]:
        """Counts per group as a JSON array of rows (each group's values and `count`, sorted by group, or by count
        for a top-N), their total, and where they came from: whole hours from the rollups when the filters allow,
        the rest from the entries, all in one snapshot; user and entity groups are a top-N from the entries.

        Four round trips whatever the range: the transaction opened with the tenants named, the change markers,
        one statement adding up every part (UNION ALL) into the finished JSON, the commit."""
        rows_json, total = "[]", 0
        sources: list[str] = []
        parts: list[tuple[str, list[Any]]] = []
        rollup_where = _rollup_where(query.filters) if set(query.group_by) <= ROLLUP_DIMENSIONS else None
        if rollup_where is not None:
            _tenant_scope(rollup_where, tenants, "r.tenant_id")
        spans: list[tuple[datetime, datetime]] = [(query.since, query.until)]
        with store_errors():
            async with self._pool.acquire() as conn, _tenants_transaction(conn, tenants, "REPEATABLE READ"):
                if rollup_where is not None:
                    first, last = _ceil_hour(query.since), _floor_hour(query.until)
                    if first < last:
                        markers = await _markers(conn, query, tenants, first, last)
                        for table, since, until, skip in _rollup_plan(query, tenants, first, last, markers):
                            parts.append(_rollup_sql(query, rollup_where, table, since, until, skip))
                        sources.append("rollups")
                        spans = [(query.since, first), (last, query.until)]
                for since, until in spans:
                    if since < until:
                        parts.append(_entries_sql(query, since, until, tenants))
                        if "entries" not in sources:
                            sources.append("entries")
                if parts:
                    sql, args = _finished(query, _union(parts))
                    record = (await conn.fetch(sql, *args))[0]  # aggregates without GROUP BY: always one row
                    rows_json, total = record[0], int(record[1])
        return rows_json, total, "+".join(sources) or "entries"

    async def trace_since(
        self, tenants: str, audit_id: UUID, positions: dict[tuple[str, int], int], limit: int
    ) -> tuple[list[TraceRecord], bool]:
        """The trace's entry, outcome and log lines stored after `positions` (per topic partition, the last offset
        already delivered), in log order: what a live view has not shown yet; and whether the action has ended.
        Lines appear with their entry."""
        entry_rows = await self._fetch(f"{_ENTRY_SELECT} WHERE e.audit_id = $1 LIMIT 1", audit_id, tenants=tenants)
        keys = list(positions)
        rows = await self._fetch(
            f"""SELECT l.log_id, l.logged_at, l.level, l.logger, l.message, l.fields, l.process, l.source,
                      l.kafka_topic, l.kafka_partition, l.kafka_offset
                 FROM execution_logs l
                 JOIN audit_entries e ON e.audit_id = $1 AND e.tenant_id = l.tenant_id
                 LEFT JOIN unnest($2::text[], $3::int[], $4::bigint[]) AS p(topic, part, off)
                   ON p.topic = l.kafka_topic AND p.part = l.kafka_partition
                WHERE l.trace_id = $1 AND l.kafka_offset > coalesce(p.off, -1)
                ORDER BY l.kafka_topic, l.kafka_partition, l.kafka_offset LIMIT {_limit(limit)}""",
            audit_id,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [positions[k] for k in keys],
            tenants=tenants,
        )
        if not entry_rows:
            return [], False
        out: list[TraceRecord] = []
        r = entry_rows[0]
        entry = self._entry(r)
        if r["kafka_offset"] > positions.get((r["kafka_topic"], r["kafka_partition"]), -1):
            out.append(TraceRecord("entry", r["kafka_topic"], r["kafka_partition"], r["kafka_offset"], entry))
        if r["status"] is not None:
            at = (r["outcome_topic"], r["outcome_partition"], r["outcome_offset"])
            if at[2] > positions.get((at[0], at[1]), -1):
                out.append(TraceRecord("outcome", at[0], at[1], at[2], entry))
        out.extend(
            TraceRecord("log", row["kafka_topic"], row["kafka_partition"], row["kafka_offset"], _log(row))
            for row in rows
        )
        return out, r["status"] is not None

    async def trace_json(
        self, tenants: str, audit_id: UUID, limit: int, after: Sequence[Any] | None = None
    ) -> TraceJson | None:
        """An entry (as AuditEntryPublic's JSON) and a page of its trace's execution-log lines in time order, in
        one statement built by PostgreSQL; None when there is no such entry among `tenants`. `after`: the (time,
        log id) key of the previous page's last line. Only lines whose tenant is their entry's: a guessed trace id
        never shows another tenant's lines."""
        page, args = _logs_page(audit_id, limit, after)
        rows = await self._fetch(
            f"""SELECT (SELECT {_entry_json(self._unknown_after)}
                          FROM audit_entries e LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id
                         WHERE e.audit_id = $1 LIMIT 1) AS entry, p.*
                  FROM ({page}) AS p""",
            *args,
            tenants=tenants,
        )
        r = rows[0]
        if r["entry"] is None:
            return None
        last = (r["last_time"], r["last_id"]) if r["last_time"] is not None else None
        return TraceJson(str(r["entry"]), str(r["logs"]), bool(r["truncated"]), last)

    async def dead_letters(self, tenants: str, reason: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest dead letters (visible only when `tenants` is `*`)."""
        rows = await self._fetch(
            """SELECT kafka_topic AS topic, kafka_partition AS partition, kafka_offset AS offset, reason, detail,
                      dead_lettered_at
                 FROM dead_letters WHERE $1::text IS NULL OR reason = $1
                ORDER BY dead_lettered_at DESC, kafka_topic, kafka_partition, kafka_offset LIMIT $2""",
            reason,
            limit,
            tenants=tenants,
        )
        return [dict(r) for r in rows]

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

    async def _fetch(self, sql: str, *args: Any, tenants: str | None = None) -> list[asyncpg.Record]:
        """Run one statement; with `tenants`, inside a transaction whose `audit.tenants` names them.

        The setting is transaction-local (`set_config(..., true)`), never a session-wide SET on a pooled
        connection; row-level security in PostgreSQL then admits only those tenants' rows.
        """
        with store_errors():
            if tenants is None:
                rows: list[asyncpg.Record] = await self._pool.fetch(sql, *args)
                return rows
            async with self._pool.acquire() as conn, _tenants_transaction(conn, tenants):
                rows = await conn.fetch(sql, *args)
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


@contextlib.asynccontextmanager
async def _tenants_transaction(
    conn: "PoolConnectionProxy[asyncpg.Record]", tenants: str, isolation: str = "READ COMMITTED"
) -> AsyncIterator[None]:
    """A read-only transaction whose `audit.tenants` names `tenants`, opened in one round trip (the setting as a
    literal: tenant ids match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ and are quoted anyway); committed after the block,
    rolled back if it raises."""
    await conn.execute(
        f"BEGIN ISOLATION LEVEL {isolation} READ ONLY; SELECT set_config('audit.tenants', {_literal(tenants)}, true)"
    )
    try:
        yield
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


def _iso(column: str) -> str:
    """A timestamptz as the API writes times everywhere (pydantic's form): ISO 8601 in UTC ending in `Z`, with
    six digits of microseconds only when there are any."""
    utc = f"{column} AT TIME ZONE 'UTC'"
    return (
        f"""to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS') || CASE WHEN date_part('microseconds', {column})::bigint """
        f"""% 1000000 = 0 THEN '' ELSE to_char({utc}, '.US') END || 'Z'"""
    )


def _entry_json(unknown_after: timedelta) -> str:
    """An entry and its outcome as AuditEntryPublic's JSON, built by PostgreSQL: a page of rows then costs the
    API no model per row (the same fields, in the same order, as `AuditRepository._entry` builds)."""
    late = f"interval '{int(unknown_after.total_seconds() * 1_000_000)} microseconds'"
    pending = (
        f"json_build_object('status', CASE WHEN now() - e.occurred_at > {late} THEN 'unknown' ELSE 'in_progress' END,"
        " 'error', NULL, 'revision', NULL, 'changes', NULL, 'finished_at', NULL, 'duration_ms', NULL,"
        " 'unrecorded', NULL)"
    )
    ended = (
        "json_build_object('status', o.status, 'error', CASE WHEN coalesce(o.error_type, '') = '' THEN NULL"
        " ELSE json_build_object('type', o.error_type, 'message', coalesce(o.error_message, '')) END,"
        f" 'revision', o.revision, 'changes', o.changes, 'finished_at', {_iso('o.finished_at')},"
        " 'duration_ms', o.duration_ms, 'unrecorded', o.unrecorded)"
    )
    return (
        "json_build_object('audit_id', e.audit_id, 'trace_id', replace(e.audit_id::text, '-', ''),"
        f" 'time', {_iso('e.occurred_at')}, 'tenant_id', e.tenant_id, 'event', e.action,"
        " 'user', json_build_object('type', e.actor_type, 'id', e.actor_id, 'display_name', e.actor_display_name),"
        " 'entity', json_build_object('id', e.entity_id, 'model', e.entity_model),"
        " 'request', CASE WHEN e.request_id IS NULL AND e.client_ip IS NULL AND e.user_agent IS NULL THEN NULL"
        " ELSE json_build_object('request_id', e.request_id, 'client_ip', host(e.client_ip),"
        " 'user_agent', e.user_agent) END,"
        " 'correlation_id', e.correlation_id, 'otel_trace_id', e.otel_trace_id, 'source', e.source,"
        f" 'outcome', CASE WHEN o.status IS NULL THEN {pending} ELSE {ended} END)::text"
    )


def _logs_page(audit_id: UUID, limit: int, after: Sequence[Any] | None) -> tuple[str, list[Any]]:
    """The statement for one page of a trace's log lines (`$1` the audit id): the page as a JSON array, whether
    more follow, and the last line's key. A first page and a following one are different statements, each with
    one plan (an optional cursor written as `$2 IS NULL OR …` would be planned again for every call)."""
    n = int(_limit(limit))
    args: list[Any] = [audit_id]
    cursor = ""
    if after is not None:
        args += [datetime.fromisoformat(str(after[0]).replace(" ", "T")), UUID(str(after[1]))]
        cursor = "AND (l.logged_at, l.log_id) > ($2::timestamptz, $3::uuid)"
    return (
        f"""SELECT coalesce(json_agg(json_build_object(
                       'log_id', l.log_id, 'time', l.logged_at, 'level', l.level, 'logger', l.logger,
                       'message', l.message, 'fields', l.fields, 'process', l.process, 'source', l.source)
                     ORDER BY l.logged_at, l.log_id) FILTER (WHERE l.n <= {n}), '[]')::text AS logs,
                   count(*) > {n} AS truncated,
                   (array_agg(l.logged_at::text ORDER BY l.logged_at DESC, l.log_id DESC)
                      FILTER (WHERE l.n <= {n}))[1] AS last_time,
                   (array_agg(l.log_id::text ORDER BY l.logged_at DESC, l.log_id DESC)
                      FILTER (WHERE l.n <= {n}))[1] AS last_id
              FROM (SELECT l.*, row_number() OVER (ORDER BY l.logged_at, l.log_id) AS n
                      FROM execution_logs l
                      JOIN audit_entries e ON e.audit_id = $1 AND e.tenant_id = l.tenant_id
                     WHERE l.trace_id = $1 {cursor}
                     ORDER BY l.logged_at, l.log_id LIMIT {n + 1}) AS l""",
        args,
    )


def _tenant_scope(where: _Where, tenants: str, column: str = "e.tenant_id") -> None:
    """The caller's tenants as a plain condition as well: row-level security alone admits the same rows, but its
    function hides them from the planner, which then walks a time index through every tenant to find a small
    tenant's rows. This lets it use the tenant indexes."""
    if tenants == "*":
        return
    names = [t for t in tenants.split(",") if t]
    if len(names) == 1:  # equality, not ANY: an index scan then also yields the sort order (newest first)
        where.add(column + " = {}", names[0])
    else:
        where.add(column + " = ANY({}::text[])", names)


def _log(r: asyncpg.Record) -> ExecutionLogPublic:
    return ExecutionLogPublic(
        log_id=r["log_id"],
        time=r["logged_at"],
        level=r["level"],
        logger=r["logger"],
        message=r["message"],
        fields=json.loads(r["fields"]),
        process=r["process"],
        source=r["source"],
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
    for term in f.terms:
        _apply_term(where, term)


_TERM_COLUMNS: Final = {
    "action": "e.action",
    "user": "e.actor_id",
    "actor": "e.actor_type",
    "model": "e.entity_model",
    "entity": "e.entity_id",
    "tenant": "e.tenant_id",
    "correlation": "e.correlation_id",
    "source": "e.source",
}
_TEXT_COLUMNS: Final = ("e.actor_id", "e.actor_display_name", "e.entity_id", "e.entity_model", "e.source")
_PREFIX_END: Final = "\U0010ffff"
"""Appended to a prefix, the exclusive upper bound of every string that starts with it (code-point order)."""


def _apply_term(where: _Where, term: SearchTerm) -> None:
    """One search-language term as SQL; a negation also keeps rows where the column is null."""
    parts: list[str] = []

    def arg(value: Any) -> str:
        where.args.append(value)
        return f"${len(where.args)}"

    values = term.values
    if term.field == "after":
        parts.append(f"e.occurred_at >= {arg(datetime.fromisoformat(values[0]))}")
    elif term.field == "before":
        parts.append(f"e.occurred_at < {arg(datetime.fromisoformat(values[0]))}")
    elif term.field == "id":
        parts.append(f"e.audit_id = ANY({arg([UUID(v) for v in values])}::uuid[])")
    elif term.field == "outcome":
        statuses = [v for v in values if v != "in_progress"]
        if statuses:
            parts.append(f"o.status = ANY({arg(statuses)}::text[])")
        if len(statuses) < len(values):
            parts.append("o.audit_id IS NULL")
    elif term.field == "text":
        pattern = arg("%" + _like_escaped(values[0]) + "%")
        parts.extend(f"{column} ILIKE {pattern}" for column in _TEXT_COLUMNS)
    else:
        column = _TERM_COLUMNS[term.field]
        exact = [v for v in values if not v.endswith("*")]
        if exact:
            parts.append(f"{column} = ANY({arg(exact)}::text[])")
        for prefix in (v[:-1] for v in values if v.endswith("*")):
            # A range, not LIKE: it keeps the index under row-level security (LIKE is not leakproof).
            parts.append(f"({column} >= {arg(prefix)} AND {column} < {arg(prefix + _PREFIX_END)})")
    condition = " OR ".join(parts)
    where.clauses.append(f"NOT coalesce(({condition}), false)" if term.negated else f"({condition})")


_STATS_COLUMNS: Final = {
    "rollups": {
        Dimension.BUCKET: "date_trunc({size}, r.bucket, 'UTC')",
        Dimension.EVENT: "r.action",
        Dimension.OUTCOME: "CASE r.status WHEN 'none' THEN 'in_progress' ELSE r.status END",
        Dimension.MODEL: "r.entity_model",
        Dimension.ACTOR_TYPE: "r.actor_type",
        Dimension.TENANT: "r.tenant_id",
    },
    "entries": {
        Dimension.BUCKET: "date_trunc({size}, e.occurred_at, 'UTC')",
        Dimension.EVENT: "e.action",
        Dimension.OUTCOME: "coalesce(o.status, 'in_progress')",
        Dimension.MODEL: "e.entity_model",
        Dimension.ACTOR_TYPE: "e.actor_type",
        Dimension.TENANT: "e.tenant_id",
        Dimension.USER: "e.actor_id",
        Dimension.ENTITY: "e.entity_model || '/' || e.entity_id",
    },
}
_ROLLUP_TERM_COLUMNS: Final = {
    "action": "r.action",
    "actor": "r.actor_type",
    "model": "r.entity_model",
    "tenant": "r.tenant_id",
    "outcome": "r.status",
}


def _rollup_where(f: AuditFilter) -> _Where | None:
    """The filters as conditions on the rollups, or None when one needs a column they do not keep."""
    if f.user_id is not None or f.entity_id is not None or f.correlation_id is not None:
        return None
    where = _Where()
    if f.tenant is not None:
        where.add("r.tenant_id = {}", f.tenant)
    if f.actions:
        where.add("r.action = ANY({}::text[])", [a.value for a in f.actions])
    if f.actor_type is not None:
        where.add("r.actor_type = {}", f.actor_type.value)
    if f.model is not None:
        where.add("r.entity_model = {}", f.model)
    for term in f.terms:
        if term.field in ("after", "before"):
            continue  # part of the range
        column = _ROLLUP_TERM_COLUMNS.get(term.field)
        if column is None:
            return None
        values = ["none" if v == "in_progress" else v for v in term.values]
        condition = column + " = ANY({}::text[])"
        where.add(f"NOT coalesce({condition}, false)" if term.negated else condition, values)
    return where


def _dimensions(query: StatsQuery, source: str, where: _Where) -> list[str]:
    columns = _STATS_COLUMNS[source]
    if Dimension.BUCKET not in query.group_by:
        return [columns[d] for d in query.group_by]
    where.args.append(query.bucket.value)
    size = f"${len(where.args)}::text"
    return [columns[d].format(size=size) for d in query.group_by]


def _rollup_sql(
    query: StatsQuery, where: _Where, table: str, first: datetime, last: datetime, skip: list[datetime] | None
) -> tuple[str, list[Any]]:
    where = _Where(list(where.clauses), list(where.args))
    where.add("r.bucket >= {} AND r.bucket < {}", first, last)
    if skip:
        where.add("r.bucket <> ALL({}::timestamptz[])", skip)
    dims = _dimensions(query, "rollups", where)
    group = f"GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
    select = ", ".join([*dims, "sum(r.entries) AS n"])
    return f"SELECT {select} FROM {table} r {where.sql()} {group}", where.args


@dataclass(frozen=True, slots=True)
class _Markers:
    """Buckets whose hourly rows changed since they were folded: days (daily tables) and hours (hourly ones)."""

    days: list[datetime]
    hours: list[datetime]


async def _markers(
    conn: "PoolConnectionProxy[asyncpg.Record]", query: StatsQuery, tenants: str, first: datetime, last: datetime
) -> _Markers:
    """The change markers that decide which folded rows are current for the whole hours [first, last), in one
    statement: day markers when days are read from the daily tables, hour markers when the all-tenants hourly
    tables are read."""
    d0, d1 = _ceil_day(first), _floor_day(last)
    args: list[Any] = []
    selects: list[str] = []
    if _days_folded(query) and d0 < d1:
        day = _Where([], args)
        day.add("r.day >= {} AND r.day < {}", d0, d1)
        _tenant_scope(day, tenants, "r.tenant_id")
        selects.append(f"SELECT DISTINCT true AS daily, r.day AS at FROM audit_rollup_changes r {day.sql()}")
    if _everyone(query, tenants):
        hour = _Where([], args)
        hour.add("r.bucket >= {} AND r.bucket < {}", first, last)
        selects.append(f"SELECT DISTINCT false AS daily, r.bucket AS at FROM audit_rollup_hour_changes r {hour.sql()}")
    if not selects:
        return _Markers([], [])
    rows = await conn.fetch(" UNION ALL ".join(f"({s})" for s in selects), *args)
    return _Markers(sorted(r["at"] for r in rows if r["daily"]), sorted(r["at"] for r in rows if not r["daily"]))


def _days_folded(query: StatsQuery) -> bool:
    """Whether whole days may come from the daily tables (not when the buckets are hours)."""
    return not (Dimension.BUCKET in query.group_by and query.bucket is BucketSize.HOUR)


def _everyone(query: StatsQuery, tenants: str) -> bool:
    """Whether the all-tenants tables answer: a caller who sees every tenant, no tenant filter or grouping."""
    return tenants == "*" and Dimension.TENANT not in query.group_by and _tenantless_filters(query.filters)


def _rollup_plan(
    query: StatsQuery, tenants: str, first: datetime, last: datetime, markers: _Markers
) -> list[tuple[str, datetime, datetime, list[datetime] | None]]:
    """Which rollup table answers which part of the whole hours [first, last), each item a table, a range and
    the buckets to leave out of it. Folded tables answer the days and hours whose fold is current (no change
    marker in this snapshot); the hourly rows answer the rest. Callers who see every tenant, without a tenant
    filter or grouping, read the all-tenants tables."""
    everyone = _everyone(query, tenants)
    plan: list[tuple[str, datetime, datetime, list[datetime] | None]] = []
    hours = [(first, last)]
    if _days_folded(query):
        d0, d1 = _ceil_day(first), _floor_day(last)
        if d0 < d1:
            daily = _narrowest("daily_all" if everyone else "daily", _needed_columns(query))
            plan.append((daily, d0, d1, markers.days))
            hours = [(first, d0), *_runs(markers.days, timedelta(days=1)), (d1, last)]
    hours = [(since, until) for since, until in hours if since < until]
    if not everyone or not hours:
        return plan + [("audit_rollups", since, until, None) for since, until in hours]
    hourly = _narrowest("hourly_all", _needed_columns(query))
    for since, until in hours:
        inside = [h for h in markers.hours if since <= h < until]
        plan.append((hourly, since, until, inside))
        plan += [("audit_rollups", a, b, None) for a, b in _runs(inside, timedelta(hours=1))]
    return plan


_PLACEHOLDER: Final = re.compile(r"\$(\d+)")


def _union(parts: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """Several counting statements as one (UNION ALL), each one's placeholders renumbered after the previous."""
    if len(parts) == 1:
        return parts[0]
    statements: list[str] = []
    args: list[Any] = []
    for sql, part_args in parts:
        offset = len(args)

        def shifted(m: re.Match[str], offset: int = offset) -> str:
            return f"${int(m.group(1)) + offset}"

        statements.append(f"({_PLACEHOLDER.sub(shifted, sql)})")
        args.extend(part_args)
    return " UNION ALL ".join(statements), args


def _finished(query: StatsQuery, union: tuple[str, list[Any]]) -> tuple[str, list[Any]]:
    """The parts' counts added up per group and returned as the response's JSON rows and their total, built by
    PostgreSQL: a month of day-and-event buckets is hundreds of rows, which cost more to decode, merge, sort and
    encode in Python than to count. Buckets as ISO 8601 in UTC; groups in code-point order (as Python sorts
    strings), a top-N by count."""
    sql, args = union
    dims = [d.value for d in query.group_by]
    keys = [f"k{i}" for i in range(len(dims))]
    columns = ", ".join([*keys, "n"])
    grouped = f"SELECT {', '.join([*keys, 'sum(n) AS n'])} FROM ({sql}) AS u({columns})"
    grouped += f" GROUP BY {', '.join(keys)}" if keys else ""
    grouped += " HAVING sum(n) > 0"

    def value(dim: str, key: str) -> str:
        if dim == Dimension.BUCKET.value:
            return f"""to_char({key} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00'"""
        return key

    fields = ", ".join([*(f"'{d}', {value(d, k)}" for d, k in zip(dims, keys, strict=True)), "'count', n::bigint"])
    order = [k if d == Dimension.BUCKET.value else f'{k} COLLATE "C"' for d, k in zip(dims, keys, strict=True)]
    if TOP_DIMENSIONS & set(query.group_by):
        grouped += f" ORDER BY n DESC, {order[0]} LIMIT {_limit(query.limit)}"
        order = ["n DESC", order[0]]
    by = f" ORDER BY {', '.join(order)}" if order else ""
    return (
        f"SELECT coalesce(json_agg(json_build_object({fields}){by}), '[]')::text, coalesce(sum(n), 0)"
        f" FROM ({grouped}) AS g",
        args,
    )


def _runs(buckets: list[datetime], width: timedelta) -> list[tuple[datetime, datetime]]:
    """Sorted buckets of one width as ranges, consecutive ones merged."""
    runs: list[tuple[datetime, datetime]] = []
    for b in buckets:
        if runs and runs[-1][1] == b:
            runs[-1] = (runs[-1][0], b + width)
        else:
            runs.append((b, b + width))
    return runs


_ACTIONS: Final = frozenset({"action", "status"})
_MODELS: Final = frozenset({"entity_model", "actor_type", "status"})
_EVERY: Final = _ACTIONS | _MODELS
_FOLDED: Final = {
    # the folded rollup tables, narrowest first, with the columns each keeps besides the bucket (and the tenant,
    # for the per-tenant daily tables)
    "daily": [("audit_rollups_daily_actions", _ACTIONS), ("audit_rollups_daily", _EVERY)],
    **{
        f"{grain}_all": [
            (f"audit_rollups_{grain}_all_actions", _ACTIONS),
            (f"audit_rollups_{grain}_all_models", _MODELS),
            (f"audit_rollups_{grain}_all", _EVERY),
        ]
        for grain in ("daily", "hourly")
    },
}
_DIMENSION_COLUMNS: Final = {
    Dimension.EVENT: "action",
    Dimension.OUTCOME: "status",
    Dimension.MODEL: "entity_model",
    Dimension.ACTOR_TYPE: "actor_type",
}
_ROLLUP_TERMS: Final = {k: v.removeprefix("r.") for k, v in _ROLLUP_TERM_COLUMNS.items() if k != "tenant"}


def _needed_columns(query: StatsQuery) -> frozenset[str]:
    """The rollup columns a stats query groups or filters on (tenant aside)."""
    f = query.filters
    needed = {_DIMENSION_COLUMNS[d] for d in query.group_by if d in _DIMENSION_COLUMNS}
    needed |= {"action"} if f.actions else set()
    needed |= {"actor_type"} if f.actor_type is not None else set()
    needed |= {"entity_model"} if f.model is not None else set()
    needed |= {_ROLLUP_TERMS[t.field] for t in f.terms if t.field in _ROLLUP_TERMS}
    return frozenset(needed)


def _narrowest(kind: str, needed: frozenset[str]) -> str:
    """The smallest folded table of that kind keeping every needed column."""
    return next(table for table, columns in _FOLDED[kind] if needed <= columns)


def _tenantless_filters(f: AuditFilter) -> bool:
    """Whether the filters leave the tenant open (the all-tenants daily table can answer them)."""
    return f.tenant is None and not any(t.field == "tenant" for t in f.terms)


def _entries_sql(query: StatsQuery, since: datetime, until: datetime, tenants: str) -> tuple[str, list[Any]]:
    where = _Where()
    _apply_filters(where, query.filters)
    _tenant_scope(where, tenants)
    where.add("e.occurred_at >= {} AND e.occurred_at < {}", since, until)
    dims = _dimensions(query, "entries", where)
    group = f"GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
    top = ""
    if TOP_DIMENSIONS & set(query.group_by):
        top = f"ORDER BY n DESC, 1 LIMIT {_limit(query.limit)}"
    select = ", ".join([*dims, "count(*) AS n"])
    return (
        f"SELECT {select} FROM audit_entries e LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id "
        f"{where.sql()} {group} {top}",
        where.args,
    )


def _floor_day(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil_day(at: datetime) -> datetime:
    floor = _floor_day(at)
    return floor if floor == at else floor + timedelta(days=1)


def _floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(at: datetime) -> datetime:
    floor = _floor_hour(at)
    return floor if floor == at else floor + timedelta(hours=1)


def check_log_key(key: Sequence[Any]) -> None:
    """A trace page cursor's key is (time, log id) as text; anything else is a 400 (a cursor from elsewhere)."""
    try:
        if len(key) != 2:
            raise ValueError("two values expected")
        datetime.fromisoformat(str(key[0]).replace(" ", "T"))
        UUID(str(key[1]))
    except (TypeError, ValueError) as e:
        raise BadRequestError("logs_after is not a cursor of this trace's log lines") from e


def _literal(text: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings: only the quote needs doubling); no NUL."""
    if "\x00" in text:
        raise BadRequestError("a tenant id cannot contain NUL")
    return "'" + text.replace("'", "''") + "'"


def _limit(n: int) -> str:
    """A row limit written into the SQL rather than bound: with `LIMIT $n` the planner cannot cost a generic plan
    (it assumes a tenth of the rows), so every execution is planned again, which on the partitioned tables with
    row-level security costs as much as running the query; a literal lets the prepared statement keep one plan."""
    value = int(n)
    if not 0 <= value <= 1_000_000:
        raise ValueError(f"row limit out of range: {value}")
    return str(value)


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sort_values(r: asyncpg.Record, sort: str) -> tuple[str, ...]:
    """The row's values of the sort columns, as text a cursor can carry (cast back in SQL)."""
    values = (r[column.removeprefix("e.")] for column, _ in SORT_KEYS[sort])
    return tuple(v.isoformat() if isinstance(v, datetime) else str(v) for v in values)


class ControlRepository:
    """Tokens and sessions in the control schema (the service's role reads tokens and keeps sessions), on the
    primary: a session opened or a token revoked a moment ago counts at once, whatever a standby has replayed."""

    def __init__(
        self, pool: asyncpg.Pool, schema: str, on_error: Callable[[BaseException], None] = lambda _: None
    ) -> None:
        self._pool = pool
        self._schema = _quoted(schema)
        self._on_error = on_error

    async def token(self, hashed: bytes) -> tuple[Principal, bool] | None:
        """The live token with this hash, and whether its last use is over a minute old (None: no such token)."""
        rows = await self._fetch(
            f"""SELECT id, name, scopes, tenants, expires_at,
                       last_used_at IS NULL OR last_used_at < now() - interval '1 minute' AS stale
                  FROM {self._schema}.api_tokens
                 WHERE secret_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
            hashed,
        )
        if not rows:
            return None
        r = rows[0]
        tenants = None if r["tenants"] is None else frozenset(r["tenants"])
        principal = Principal(r["name"], "token", frozenset(r["scopes"]), tenants, r["id"], r["expires_at"])
        return principal, r["stale"]

    async def touch(self, token_id: UUID) -> None:
        """Record that a token was used (at most once a minute, by the caller's choice)."""
        await self._fetch(f"UPDATE {self._schema}.api_tokens SET last_used_at = now() WHERE id = $1", token_id)

    async def open_session(self, hashed: bytes, principal: Principal, expires_at: datetime) -> None:
        """Store a console session by the hash of its id, ending at `expires_at`."""
        await self._fetch(
            f"INSERT INTO {self._schema}.sessions (id_hash, principal, expires_at) VALUES ($1, $2, $3)",
            hashed,
            json.dumps(principal.as_json()),
            expires_at,
        )

    async def session(self, hashed: bytes) -> Principal | None:
        """The principal of a live session, or None."""
        rows = await self._fetch(
            f"""SELECT s.principal FROM {self._schema}.sessions s
                 WHERE s.id_hash = $1 AND s.ended_at IS NULL AND s.expires_at > now()""",
            hashed,
        )
        if not rows:
            return None
        principal = Principal.from_json(json.loads(rows[0]["principal"]))
        if principal.token_id is not None and not await self._token_live(principal.token_id):
            return None  # the token it was opened with has since been revoked or expired
        return principal

    async def _token_live(self, token_id: UUID) -> bool:
        rows = await self._fetch(
            f"""SELECT 1 FROM {self._schema}.api_tokens
                 WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
            token_id,
        )
        return bool(rows)

    async def end_session(self, hashed: bytes) -> None:
        """Sign out: the session ends server-side, whatever the browser keeps."""
        await self._fetch(
            f"UPDATE {self._schema}.sessions SET ended_at = now() WHERE id_hash = $1 AND ended_at IS NULL", hashed
        )

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            with store_errors():
                rows: list[asyncpg.Record] = await self._pool.fetch(sql, *args)
        except Exception as e:
            self._on_error(e.__cause__ or e)
            raise
        return rows


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """An API token as listed: never its secret."""

    id: UUID
    name: str
    scopes: tuple[str, ...]
    tenants: tuple[str, ...] | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenAdmin:
    """Creates, lists and revokes API tokens over the owner's connection (`audit-query tokens`)."""

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self._conn = conn
        self._schema = _quoted(schema)

    async def create(
        self,
        token_id: UUID,
        name: str,
        hashed: bytes,
        scopes: Sequence[str],
        tenants: Sequence[str] | None,
        created_by: str,
        expires_at: datetime | None,
    ) -> None:
        await self._conn.execute(
            f"""INSERT INTO {self._schema}.api_tokens (id, name, secret_hash, scopes, tenants, created_by, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            token_id,
            name,
            hashed,
            list(scopes),
            None if tenants is None else list(tenants),
            created_by,
            expires_at,
        )

    async def list(self) -> list[TokenInfo]:
        rows = await self._conn.fetch(
            f"""SELECT id, name, scopes, tenants, created_by, created_at, expires_at, last_used_at, revoked_at
                  FROM {self._schema}.api_tokens ORDER BY created_at"""
        )
        return [_token_info(r) for r in rows]

    async def live(self, hashed: bytes) -> TokenInfo | None:
        """The token with this secret hash if it is neither revoked nor expired; None otherwise."""
        row = await self._conn.fetchrow(
            f"""SELECT id, name, scopes, tenants, created_by, created_at, expires_at, last_used_at, revoked_at
                  FROM {self._schema}.api_tokens
                 WHERE secret_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
            hashed,
        )
        return None if row is None else _token_info(row)

    async def revoke(self, token_id: UUID, by: str) -> TokenInfo | None:
        """Revoke a live token; None when there is no such live token."""
        row = await self._conn.fetchrow(
            f"""UPDATE {self._schema}.api_tokens SET revoked_at = now(), revoked_by = $2
                 WHERE id = $1 AND revoked_at IS NULL
             RETURNING id, name, scopes, tenants, created_by, created_at, expires_at, last_used_at, revoked_at""",
            token_id,
            by,
        )
        return None if row is None else _token_info(row)


def _token_info(r: asyncpg.Record) -> TokenInfo:
    tenants = None if r["tenants"] is None else tuple(r["tenants"])
    return TokenInfo(
        r["id"],
        r["name"],
        tuple(r["scopes"]),
        tenants,
        r["created_by"],
        r["created_at"],
        r["expires_at"],
        r["last_used_at"],
        r["revoked_at"],
    )


def _quoted(schema: str) -> str:
    if not schema.replace("_", "a").isalnum() or (not schema[0].isalpha() and schema[0] != "_"):
        raise ValueError(f"not a plain schema name: {schema!r}")
    return f'"{schema}"'


class ProofRepository:
    """Merkle hashes, checkpoints and signing keys for proofs (hashes only; a leaf's data only for a visible entry)."""

    def __init__(self, repo: AuditRepository, control_schema: str) -> None:
        self._repo = repo
        self._control = _quoted(control_schema)

    async def keys(self) -> list[dict[str, Any]]:
        rows = await self._repo._fetch(
            f"""SELECT name, key_hash, verifier_key, first_used_at
                  FROM {self._control}.signing_keys ORDER BY first_used_at"""
        )
        return [dict(r) for r in rows]

    async def checkpoints(self, origin: str, limit: int) -> list[dict[str, Any]]:
        rows = await self._repo._fetch(
            f"""SELECT origin, tree_size, root_hash, key_name, key_hash, note, signed_at
                  FROM {self._control}.checkpoints WHERE origin = $1 ORDER BY tree_size DESC LIMIT $2""",
            origin,
            limit,
        )
        return [dict(r) for r in rows]

    async def latest_checkpoint(self, origin: str, covering: int) -> dict[str, Any] | None:
        """The newest checkpoint of `origin` whose tree holds leaf `covering`."""
        rows = await self._repo._fetch(
            f"""SELECT origin, tree_size, root_hash, note FROM {self._control}.checkpoints
                 WHERE origin = $1 AND tree_size > $2 ORDER BY tree_size DESC LIMIT 1""",
            origin,
            covering,
        )
        return dict(rows[0]) if rows else None

    async def tree_size(self, topic: str, partition: int) -> int:
        rows = await self._repo._fetch(
            "SELECT size FROM merkle_trees WHERE topic = $1 AND partition = $2", topic, partition
        )
        return int(rows[0]["size"]) if rows else 0

    async def leaf_of(self, tenants: str, audit_id: UUID) -> dict[str, Any] | None:
        """The leaf of an entry the caller's tenants may see (its raw record included), or None."""
        rows = await self._repo._fetch(
            f"SELECT * FROM {self._control}.merkle_leaf_of(current_schema(), $1)", audit_id, tenants=tenants
        )
        return dict(rows[0]) if rows else None

    async def nodes(
        self, topic: str, partition: int, wanted: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """The hashes of complete subtrees (level 0: leaves) at the given coordinates, in one round trip each kind."""
        leaves = [i for level, i in wanted if level == 0]
        inner = [(level, i) for level, i in wanted if level > 0]
        found: dict[tuple[int, int], bytes] = {}
        if leaves:
            for r in await self._repo._fetch(
                """SELECT leaf_index, leaf_hash FROM merkle_leaf_hashes
                    WHERE topic = $1 AND partition = $2 AND leaf_index = ANY($3::bigint[])""",
                topic,
                partition,
                leaves,
            ):
                found[(0, r["leaf_index"])] = r["leaf_hash"]
        if inner:
            for r in await self._repo._fetch(
                """SELECT n.level, n.node_index, n.hash FROM merkle_nodes n
                     JOIN unnest($3::smallint[], $4::bigint[]) AS w(level, node_index)
                       ON n.level = w.level AND n.node_index = w.node_index
                    WHERE n.topic = $1 AND n.partition = $2""",
                topic,
                partition,
                [level for level, _ in inner],
                [i for _, i in inner],
            ):
                found[(r["level"], r["node_index"])] = r["hash"]
        return found
