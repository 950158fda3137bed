"""Counts for the chart, the top lists and the model list: whole hours and days from the rollup tiers, the rest
from the entries, in one snapshot."""

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from audit_query.errors import store_errors
from audit_query.models import (
    AuditFilter,
)
from audit_query.repository.filters import apply_filters
from audit_query.repository.reader import Reader
from audit_query.repository.sql import Where, limit_sql, tenant_scope, tenants_transaction
from audit_query.stats import ROLLUP_DIMENSIONS, TOP_DIMENSIONS, BucketSize, Dimension, StatsQuery
from audit_query.zones import UTC_NAME, whole_hours


class StatsQueries(Reader):
    """Grouped counts over a range."""

    async def models(self, tenants: str) -> list[tuple[str, int]]:
        """Every entity model in the log with its number of entries (from the rollups, as stats over all time)."""
        where = Where()
        tenant_scope(where, tenants, "r.tenant_id")  # a small tenant's first and last hours by its index
        span = await self._fetch(
            f"SELECT min(r.bucket), max(r.bucket) FROM audit_rollups r {where.sql()}", *where.args, tenants=tenants
        )
        first, last = span[0]
        if first is None:
            return []
        until = max(floor_hour(datetime.now(UTC)), last) + timedelta(hours=1)
        query = StatsQuery(AuditFilter(), first, until, (Dimension.MODEL,), BucketSize.AUTO, 0)
        rows, _ = await self.stats(tenants, query)
        return [(r["model"], int(r["count"])) for r in rows]

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
        query = dataclasses.replace(query, filters=await self._unsealer.aliased(query.filters, tenants))
        rows_json, total = "[]", 0
        sources: list[str] = []
        parts: list[tuple[str, list[Any]]] = []
        rollup_where = _rollup_where(query.filters) if _rollups_answer(query) else None
        if rollup_where is not None:
            tenant_scope(rollup_where, tenants, "r.tenant_id")
        spans: list[tuple[datetime, datetime]] = [(query.since, query.until)]
        with store_errors():
            async with self._pool.acquire() as conn, tenants_transaction(conn, tenants, "REPEATABLE READ"):
                if rollup_where is not None:
                    first, last = _ceil_hour(query.since), floor_hour(query.until)
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


_STATS_COLUMNS: Final = {
    "rollups": {
        Dimension.BUCKET: "date_trunc({size}, r.bucket, {tz})",
        Dimension.EVENT: "r.action",
        Dimension.OUTCOME: "CASE r.status WHEN 'none' THEN 'in_progress' ELSE r.status END",
        Dimension.MODEL: "r.entity_model",
        Dimension.ACTOR_TYPE: "r.actor_type",
        Dimension.TENANT: "r.tenant_id",
    },
    "entries": {
        Dimension.BUCKET: "date_trunc({size}, e.occurred_at, {tz})",
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


def _rollup_where(f: AuditFilter) -> Where | None:
    """The filters as conditions on the rollups, or None when one needs a column they do not keep."""
    if f.user_id is not None or f.entity_id is not None or f.correlation_id is not None:
        return None
    where = Where()
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


def _dimensions(query: StatsQuery, source: str, where: Where) -> list[str]:
    columns = _STATS_COLUMNS[source]
    if Dimension.BUCKET not in query.group_by:
        return [columns[d] for d in query.group_by]
    where.args.append(query.bucket.value)
    size = f"${len(where.args)}::text"
    where.args.append(query.tz)
    tz = f"${len(where.args)}::text"
    return [columns[d].format(size=size, tz=tz) for d in query.group_by]


def _rollup_sql(
    query: StatsQuery, where: Where, table: str, first: datetime, last: datetime, skip: list[datetime] | None
) -> tuple[str, list[Any]]:
    where = Where(list(where.clauses), list(where.args))
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
        day = Where([], args)
        day.add("r.day >= {} AND r.day < {}", d0, d1)
        tenant_scope(day, tenants, "r.tenant_id")
        selects.append(f"SELECT DISTINCT true AS daily, r.day AS at FROM audit_rollup_changes r {day.sql()}")
    if _everyone(query, tenants):
        hour = Where([], args)
        hour.add("r.bucket >= {} AND r.bucket < {}", first, last)
        selects.append(f"SELECT DISTINCT false AS daily, r.bucket AS at FROM audit_rollup_hour_changes r {hour.sql()}")
    if not selects:
        return _Markers([], [])
    rows = await conn.fetch(" UNION ALL ".join(f"({s})" for s in selects), *args)
    return _Markers(sorted(r["at"] for r in rows if r["daily"]), sorted(r["at"] for r in rows if not r["daily"]))


def _days_folded(query: StatsQuery) -> bool:
    """Whether whole days may come from the daily tables: not when the buckets are hours, nor when they are days
    of another zone than UTC (the daily tables hold UTC days; such days are summed from the hourly rows)."""
    if Dimension.BUCKET not in query.group_by:
        return True
    return query.bucket is not BucketSize.HOUR and query.tz == UTC_NAME


def _rollups_answer(query: StatsQuery) -> bool:
    """Whether the rollups can answer at all: every dimension is one they keep, and when buckets are grouped in a
    zone, it is a whole number of hours from UTC over the range (else an hourly row may straddle two of its days,
    and the entries answer)."""
    if not set(query.group_by) <= ROLLUP_DIMENSIONS:
        return False
    return Dimension.BUCKET not in query.group_by or whole_hours(query.tz, query.since, query.until)


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
        grouped += f" ORDER BY n DESC, {order[0]} LIMIT {limit_sql(query.limit)}"
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
    where = Where()
    apply_filters(where, query.filters)
    tenant_scope(where, tenants)
    where.add("e.occurred_at >= {} AND e.occurred_at < {}", since, until)
    dims = _dimensions(query, "entries", where)
    group = f"GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
    top = ""
    if TOP_DIMENSIONS & set(query.group_by):
        top = f"ORDER BY n DESC, 1 LIMIT {limit_sql(query.limit)}"
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


def floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(at: datetime) -> datetime:
    floor = floor_hour(at)
    return floor if floor == at else floor + timedelta(hours=1)
