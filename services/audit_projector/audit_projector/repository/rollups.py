"""Folding the hourly per-tenant rollups (`audit_rollups`) of closed hours and days into the all-tenants hourly and
the daily tables, off the hot path, as their change markers say."""

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from audit_projector.errors import db_errors

_COMPACT_LOCK: Final = (0x41554454, 12)
"""Advisory lock taken by the rollup compaction, so one projector of a fleet compacts at a time."""

_DAILY: Final = {
    "audit_rollups_daily": "tenant_id, action, entity_model, actor_type, status",
    "audit_rollups_daily_actions": "tenant_id, action, status",
    "audit_rollups_daily_all": "action, entity_model, actor_type, status",
    "audit_rollups_daily_all_actions": "action, status",
    "audit_rollups_daily_all_models": "entity_model, actor_type, status",
}
_HOURLY: Final = {
    "audit_rollups_hourly_all": "action, entity_model, actor_type, status",
    "audit_rollups_hourly_all_actions": "action, status",
    "audit_rollups_hourly_all_models": "entity_model, actor_type, status",
}


async def compact_rollups(conn: asyncpg.Connection, now: datetime) -> int | None:
    """Fold the hourly rollups of changed closed hours (before `now`'s hour) into the all-tenants hourly table, and
    of changed closed days (before `now`'s day) into the daily tables, a transaction per day; return how many
    days were touched, or None when another process holds the compaction lock.

    A marker is read before the hours it names are summed and deleted only if unchanged since, so an hourly
    change that races the fold leaves its marker and readers keep summing those hourly rows.
    """
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    with db_errors("cannot compact the rollups"):
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *_COMPACT_LOCK):
            return None
        try:
            hour_days = await conn.fetch(
                """SELECT DISTINCT date_trunc('day', bucket, 'UTC') AS day FROM audit_rollup_hour_changes
                    WHERE bucket < $1 ORDER BY 1""",
                hour,
            )
            for r in hour_days:
                await _fold_hours(conn, r["day"], min(r["day"] + timedelta(days=1), hour))
            days = await conn.fetch("SELECT DISTINCT day FROM audit_rollup_changes WHERE day < $1 ORDER BY 1", day)
            for r in days:
                await _fold_day(conn, r["day"])
            return len({r["day"] for r in [*hour_days, *days]})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", *_COMPACT_LOCK)


async def _fold_hours(conn: asyncpg.Connection, since: datetime, until: datetime) -> None:
    """Recount the marked hours in [since, until) into the all-tenants hourly tables."""
    async with conn.transaction():
        marks = await conn.fetch(
            """SELECT bucket, tenant_id, kafka_partition, changes FROM audit_rollup_hour_changes
                WHERE bucket >= $1 AND bucket < $2""",
            since,
            until,
        )
        hours = sorted({m["bucket"] for m in marks})
        for table, columns in _HOURLY.items():
            await conn.execute(f"DELETE FROM {table} WHERE bucket = ANY($1::timestamptz[])", hours)
            await conn.execute(
                f"""INSERT INTO {table} (bucket, {columns}, entries)
                    SELECT bucket, {columns}, sum(entries) FROM audit_rollups
                     WHERE bucket = ANY($1::timestamptz[])
                     GROUP BY bucket, {columns} HAVING sum(entries) > 0""",
                hours,
            )
        await conn.execute(
            """DELETE FROM audit_rollup_hour_changes c
                USING unnest($1::timestamptz[], $2::text[], $3::int[], $4::bigint[]) AS m(bucket, tenant_id, part, n)
                WHERE c.bucket = m.bucket AND c.tenant_id = m.tenant_id AND c.kafka_partition = m.part
                  AND c.changes = m.n""",
            *_columns(marks, "bucket", "tenant_id", "kafka_partition", "changes"),
        )


async def _fold_day(conn: asyncpg.Connection, day: datetime) -> None:
    """Recount one marked day into the daily tables."""
    async with conn.transaction():
        marks = await conn.fetch(
            "SELECT tenant_id, kafka_partition, changes FROM audit_rollup_changes WHERE day = $1", day
        )
        for table, columns in _DAILY.items():
            await conn.execute(f"DELETE FROM {table} WHERE bucket = $1", day)
            await conn.execute(
                f"""INSERT INTO {table} (bucket, {columns}, entries)
                    SELECT $1::timestamptz, {columns}, sum(entries) FROM audit_rollups
                     WHERE bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '1 day'
                     GROUP BY {columns} HAVING sum(entries) > 0""",
                day,
            )
        await conn.execute(
            """DELETE FROM audit_rollup_changes c
                USING unnest($2::text[], $3::int[], $4::bigint[]) AS m(tenant_id, part, changes)
                WHERE c.day = $1 AND c.tenant_id = m.tenant_id AND c.kafka_partition = m.part
                  AND c.changes = m.changes""",
            day,
            *_columns(marks, "tenant_id", "kafka_partition", "changes"),
        )


def _columns(records: list[asyncpg.Record], *names: str) -> list[list[Any]]:
    return [[r[n] for r in records] for n in names]
