"""Compare two read models built from the same log: Merkle trees per partition, and content checksums per
partition and day over the columns projected from the records (never the projection's own timestamps)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncpg

from audit_projector.errors import db_errors
from audit_projector.rows import DEAD_LETTER_COLUMNS, ENTRY_COLUMNS, LOG_COLUMNS, OUTCOME_COLUMNS

_TABLES: Final = {
    # table: (projected columns, the record time that picks its day bucket, or None)
    "audit_entries": (ENTRY_COLUMNS, "occurred_at"),
    "audit_outcomes": (OUTCOME_COLUMNS, "finished_at"),
    "execution_logs": (LOG_COLUMNS, "logged_at"),
    "dead_letters": (DEAD_LETTER_COLUMNS, None),
}

Bucket = tuple[str, str, int, datetime | None]
"""A table, topic, partition and UTC day."""


@dataclass(frozen=True, slots=True)
class Checksum:
    """Rows in a bucket and the md5 of their projected columns in offset order."""

    rows: int
    md5: str


@dataclass
class Comparison:
    """What two read models hold, and where they first differ."""

    buckets: int = 0
    rows: int = 0
    partitions: int = 0
    differences: list[str] = field(default_factory=list)
    """Human-readable, the most precise first: table, partition, day, offset and column."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _row_text(columns: tuple[str, ...]) -> str:
    return "md5(row(" + ", ".join(f"t.{c}" for c in columns) + ")::text)"


async def checksums(conn: asyncpg.Connection, schema: str) -> dict[Bucket, Checksum]:
    """Per table, partition and UTC day: row count and checksum (deterministic: UTC text, offset order)."""
    out: dict[Bucket, Checksum] = {}
    with db_errors(f"cannot checksum schema {schema}"):
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            await conn.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'")
            for table, (columns, time) in _TABLES.items():
                day = f"date_trunc('day', t.{time}, 'UTC')" if time else "NULL::timestamptz"
                for r in await conn.fetch(
                    f"""SELECT t.kafka_topic, t.kafka_partition, {day} AS day, count(*) AS n,
                               md5(string_agg({_row_text(columns)}, '' ORDER BY t.kafka_offset)) AS sum
                          FROM {_quote(schema)}.{table} t GROUP BY 1, 2, 3"""
                ):
                    out[(table, r["kafka_topic"], r["kafka_partition"], r["day"])] = Checksum(r["n"], r["sum"])
    return out


async def trees(conn: asyncpg.Connection, schema: str) -> dict[tuple[str, int], tuple[int, list[bytes]]]:
    """Each partition's Merkle tree: its size and frontier (which fix its root)."""
    with db_errors(f"cannot read the trees of schema {schema}"):
        rows = await conn.fetch(f"SELECT topic, partition, size, frontier FROM {_quote(schema)}.merkle_trees")
    return {(r["topic"], r["partition"]): (r["size"], list(r["frontier"])) for r in rows}


async def compare(conn: asyncpg.Connection, live: str, log: str, *, limit: int = 20) -> Comparison:
    """Compare the read model `live` with `log`, rebuilt from the log (or another rebuild): trees, then content
    buckets; each differing bucket is narrowed down to its first differing offset and column."""
    report = Comparison()
    ours, theirs = await trees(conn, live), await trees(conn, log)
    report.partitions = len(theirs)
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if a != b:
            report.differences.append(
                f"Merkle tree of {key[0]}/{key[1]}: {_size(a)} leaves in {live}, {_size(b)} in the log"
                + ("" if a is None or b is None or a[0] != b[0] else " (same size, different root)")
            )
    mine, logged = await checksums(conn, live), await checksums(conn, log)
    report.buckets = len(logged)
    report.rows = sum(c.rows for c in logged.values())
    for bucket in sorted(set(mine) | set(logged), key=_order):
        a_sum, b_sum = mine.get(bucket), logged.get(bucket)
        if a_sum == b_sum:
            continue
        if len(report.differences) >= limit:
            report.differences.append("… more differences not listed")
            break
        report.differences.append(await _narrow(conn, live, log, bucket, a_sum, b_sum))
    return report


def _size(tree: tuple[int, list[bytes]] | None) -> str:
    return "no tree" if tree is None else str(tree[0])


def _order(bucket: Bucket) -> tuple[str, str, int, str]:
    return bucket[0], bucket[1], bucket[2], bucket[3].isoformat() if bucket[3] else ""


async def _narrow(
    conn: asyncpg.Connection, live: str, log: str, bucket: Bucket, a: Checksum | None, b: Checksum | None
) -> str:
    """The first offset (and column) at which one bucket differs."""
    table, topic, partition, day = bucket
    columns, time = _TABLES[table]
    where = "t.kafka_topic = $1 AND t.kafka_partition = $2"
    args: list[Any] = [topic, partition]
    if time is not None:
        where += f" AND date_trunc('day', t.{time}, 'UTC') = $3"
        args.append(day)
    head = f"{table} {topic}/{partition}" + (f" on {day:%Y-%m-%d}" if day else "")
    head += f": {a.rows if a else 0} rows in {live}, {b.rows if b else 0} in the log"
    select = ", ".join(f"t.{c}" for c in columns)
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        ours = {
            r["kafka_offset"]: r
            for r in await conn.fetch(f"SELECT {select} FROM {_quote(live)}.{table} t WHERE {where}", *args)
        }
        theirs = {
            r["kafka_offset"]: r
            for r in await conn.fetch(f"SELECT {select} FROM {_quote(log)}.{table} t WHERE {where}", *args)
        }
    for offset in sorted(set(ours) | set(theirs)):
        mine, logged = ours.get(offset), theirs.get(offset)
        if mine is None:
            return f"{head}; first difference at offset {offset}: missing from {live} (deleted)"
        if logged is None:
            return f"{head}; first difference at offset {offset}: in {live} but not in the log (inserted)"
        for column in columns:
            if mine[column] != logged[column]:
                return (
                    f"{head}; first difference at offset {offset}, column {column}: "
                    f"{_show(mine[column])} in {live}, {_show(logged[column])} in the log (altered)"
                )
    return f"{head}; rows equal one by one, order or text form differs"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["Bucket", "Checksum", "Comparison", "checksums", "compare", "trees"]
