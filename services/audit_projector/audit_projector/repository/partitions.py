"""Month partitions of the partitioned read-model tables: which exist, and creating the missing ones."""

from datetime import UTC, date, datetime

import asyncpg

from audit_projector.repository.read_model import PARTITIONED


async def stored_months(conn: asyncpg.Connection, schema: str) -> set[tuple[str, date]]:
    """(parent table, first day of the month) of every month partition in `schema`."""
    rows = await conn.fetch(
        """SELECT p.relname AS parent, c.relname AS child
             FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             JOIN pg_namespace n ON n.oid = p.relnamespace
            WHERE n.nspname = $1 AND p.relname = ANY($2::text[])""",
        schema,
        list(PARTITIONED),
    )
    months = set()
    for r in rows:
        suffix = r["child"].removeprefix(f"{r['parent']}_y")
        if len(suffix) == 7 and suffix[4] == "m":
            months.add((r["parent"], date(int(suffix[:4]), int(suffix[5:]), 1)))
    return months


async def ensure_month(conn: asyncpg.Connection, control: str, schema: str, parent: str, month: date) -> bool:
    """Create `parent`'s partition of `month` unless it exists (the control schema's function); whether it did."""
    return bool(await conn.fetchval(f"SELECT {control}.ensure_month_partition($1, $2, $3)", schema, parent, month))


def month_of(value: datetime) -> date:
    """The first day of `value`'s month, in UTC."""
    utc = value.astimezone(UTC)
    return date(utc.year, utc.month, 1)
