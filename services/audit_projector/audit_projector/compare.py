"""Compare two read models built from the same log: Merkle trees per partition, and content checksums per
partition and day over the columns projected from the records (never the projection's own timestamps)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncpg

from audit_projector.errors import db_errors
from audit_projector.repository import quoted
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


def _row_text(columns: tuple[str, ...]) -> str:
    return "md5(row(" + ", ".join(f"t.{c}" for c in columns) + ")::text)"


Bounds = dict[tuple[str, int], int]
"""Per topic partition, the offset before which both models are compared (records both have projected)."""


def _bounded(bounds: Bounds | None, first: int, since: Bounds | None = None) -> tuple[str, list[Any]]:
    """A condition keeping rows in [since, bound) of their partition, with arguments numbered from `first`.

    A tail comparison (`since`) says each partition's range on its own, OR'ed: every range is one scan of the
    position's B-tree (migration 0021), so only the rows at those offsets are read — however far one topic's offsets
    run ahead of another's, and whatever the model's size."""
    if bounds is None:
        return "true", []
    keys = sorted(bounds)
    if since is not None:
        if not keys:
            return "false", []
        arms, args = [], []
        for i, k in enumerate(keys):
            n = first + 4 * i
            arms.append(
                f"(t.kafka_topic = ${n} AND t.kafka_partition = ${n + 1} "
                f"AND t.kafka_offset >= ${n + 2}::bigint AND t.kafka_offset < ${n + 3}::bigint)"
            )
            args += [k[0], k[1], since.get(k, 0), bounds[k]]
        return "(" + " OR ".join(arms) + ")", args
    return (
        f"""EXISTS (SELECT 1 FROM unnest(${first}::text[], ${first + 1}::int[], ${first + 2}::bigint[],
                                         ${first + 3}::bigint[]) AS b(tp, p, lo, n)
                    WHERE b.tp = t.kafka_topic AND b.p = t.kafka_partition
                      AND t.kafka_offset >= b.lo AND t.kafka_offset < b.n)""",
        [[k[0] for k in keys], [k[1] for k in keys], [0] * len(keys), [bounds[k] for k in keys]],
    )


async def _tail_only(conn: asyncpg.Connection, since: Bounds | None) -> None:
    """In a tail comparison, read by the position's index even when the statistics are stale (a model just rebuilt
    has none yet, and the planner would scan it all), and never JIT-compile: the planner's estimates for a tail grow
    with the table, and past its JIT thresholds each statement was compiled (~10 ms at 1 M records, more at 5 M,
    with inlining and optimisation) to read a few rows — the part of the pause that grew with the model."""
    if since is not None:
        await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL jit = off")


async def checksums(
    conn: asyncpg.Connection, schema: str, bounds: Bounds | None = None, since: Bounds | None = None
) -> dict[Bucket, Checksum]:
    """Per table, partition and UTC day: row count and checksum (deterministic: UTC text, offset order)."""
    out: dict[Bucket, Checksum] = {}
    below, args = _bounded(bounds, 1, since)
    with db_errors(f"cannot checksum schema {schema}"):
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            await conn.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'")
            await _tail_only(conn, since)
            for table, (columns, time) in _TABLES.items():
                day = f"date_trunc('day', t.{time}, 'UTC')" if time else "NULL::timestamptz"
                for r in await conn.fetch(
                    f"""SELECT t.kafka_topic, t.kafka_partition, {day} AS day, count(*) AS n,
                               md5(string_agg({_row_text(columns)}, '' ORDER BY t.kafka_offset)) AS sum
                          FROM {quoted(schema)}.{table} t WHERE {below} GROUP BY 1, 2, 3""",
                    *args,
                ):
                    out[(table, r["kafka_topic"], r["kafka_partition"], r["day"])] = Checksum(r["n"], r["sum"])
    return out


async def leaves(
    conn: asyncpg.Connection, schema: str, bounds: Bounds | None = None, since: Bounds | None = None
) -> dict[tuple[str, int], Checksum]:
    """Each partition's Merkle leaves below the bounds: how many, and the md5 of their hashes in leaf order
    (equal leaves in equal order make equal trees; leaves are computed over the raw records). A tail (`since`) is
    read as one range of the leaves' unique (topic, partition, offset) index per partition."""
    if bounds is not None and since is not None:
        return await _tail_leaves(conn, schema, bounds, since)
    below, args = _bounded(bounds, 1)
    with db_errors(f"cannot read the leaves of schema {schema}"):
        rows = await conn.fetch(
            f"""SELECT t.kafka_topic, t.kafka_partition, count(*) AS n,
                       md5(string_agg(t.leaf_hash, ''::bytea ORDER BY t.leaf_index)) AS sum
                  FROM (SELECT topic AS kafka_topic, partition AS kafka_partition, leaf_index, leaf_hash, kafka_offset
                          FROM {quoted(schema)}.merkle_leaves) t
                 WHERE {below} GROUP BY 1, 2""",
            *args,
        )
    return {(r[0], r[1]): Checksum(r[2], r[3]) for r in rows}


async def _tail_leaves(
    conn: asyncpg.Connection, schema: str, bounds: Bounds, since: Bounds
) -> dict[tuple[str, int], Checksum]:
    """Leaves in [since, bounds) per partition, each partition a range of the (topic, partition, offset) index:
    however far one topic's offsets run ahead of another's, only the tail is read."""
    keys = sorted(bounds)
    with db_errors(f"cannot read the leaves of schema {schema}"):
        async with conn.transaction():  # for SET LOCAL; nests as a savepoint in a caller's
            await _tail_only(conn, since)
            rows = await conn.fetch(
                f"""SELECT b.tp, b.p, count(l.leaf_index) AS n,
                           md5(string_agg(l.leaf_hash, ''::bytea ORDER BY l.leaf_index)) AS sum
                      FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS b(tp, p, lo, n)
                      JOIN LATERAL (SELECT leaf_index, leaf_hash FROM {quoted(schema)}.merkle_leaves
                                     WHERE topic = b.tp AND partition = b.p AND kafka_offset >= b.lo
                                       AND kafka_offset < b.n) l ON true
                     GROUP BY 1, 2""",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [since.get(k, 0) for k in keys],
                [bounds[k] for k in keys],
            )
    return {(r[0], r[1]): Checksum(r[2], r[3]) for r in rows}


async def stored_offsets(conn: asyncpg.Connection, schema: str, group: str) -> Bounds:
    """The next offsets stored in `schema` for `group`."""
    with db_errors(f"cannot read the offsets of schema {schema}"):
        rows = await conn.fetch(
            f"SELECT topic, partition, next_offset FROM {quoted(schema)}.projector_offsets WHERE consumer_group = $1",
            group,
        )
    return {(r[0], r[1]): r[2] for r in rows}


async def compare(
    conn: asyncpg.Connection,
    live: str,
    log: str,
    bounds: Bounds | None = None,
    *,
    since: Bounds | None = None,
    limit: int = 20,
) -> Comparison:
    """Compare the read model `live` with `log`, rebuilt from the log (or another rebuild), below `bounds`: the
    Merkle leaves per partition, then the content buckets; a differing partition or bucket is narrowed down to
    its first differing leaf, or offset and column."""
    report = Comparison()
    ours, theirs = await leaves(conn, live, bounds, since), await leaves(conn, log, bounds, since)
    report.partitions = len(theirs)
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            report.differences.append(await _first_leaf(conn, live, log, key, bounds, since))
    mine, logged = await checksums(conn, live, bounds, since), await checksums(conn, log, bounds, since)
    report.buckets = len(logged)
    report.rows = sum(c.rows for c in logged.values())
    for bucket in sorted(set(mine) | set(logged), key=_order):
        a_sum, b_sum = mine.get(bucket), logged.get(bucket)
        if a_sum == b_sum:
            continue
        if len(report.differences) >= limit:
            report.differences.append("… more differences not listed")
            break
        report.differences.append(await _narrow(conn, live, log, bucket, a_sum, b_sum, bounds, since))
    return report


async def _first_leaf(
    conn: asyncpg.Connection,
    live: str,
    log: str,
    key: tuple[str, int],
    bounds: Bounds | None,
    since: Bounds | None,
) -> str:
    bound, low = (bounds or {}).get(key, 2**62), (since or {}).get(key, 0)
    sql = (
        "SELECT leaf_index, kafka_offset, leaf_hash FROM {}.merkle_leaves WHERE topic = $1 AND partition = $2 "
        "AND kafka_offset < $3 AND kafka_offset >= $4 ORDER BY leaf_index"
    )
    with db_errors("cannot read the leaves"):
        ours = await conn.fetch(sql.format(quoted(live)), key[0], key[1], bound, low)
        theirs = await conn.fetch(sql.format(quoted(log)), key[0], key[1], bound, low)
    head = f"Merkle leaves of {key[0]}/{key[1]}: {len(ours)} in {live}, {len(theirs)} in the log"
    for a, b in zip(ours, theirs, strict=False):
        if tuple(a) != tuple(b):
            return f"{head}; first difference at leaf {a[0]} (offset {a[1]} in {live}, {b[1]} in the log)"
    return f"{head}; they agree on the first {min(len(ours), len(theirs))} leaves"


def _order(bucket: Bucket) -> tuple[str, str, int, str]:
    return bucket[0], bucket[1], bucket[2], bucket[3].isoformat() if bucket[3] else ""


async def _narrow(
    conn: asyncpg.Connection,
    live: str,
    log: str,
    bucket: Bucket,
    a: Checksum | None,
    b: Checksum | None,
    bounds: Bounds | None,
    since: Bounds | None,
) -> str:
    """The first offset (and column) at which one bucket differs, within the compared range."""
    table, topic, partition, day = bucket
    columns, time = _TABLES[table]
    where = "t.kafka_topic = $1 AND t.kafka_partition = $2 AND t.kafka_offset < $3 AND t.kafka_offset >= $4"
    args: list[Any] = [
        topic,
        partition,
        (bounds or {}).get((topic, partition), 2**62),
        (since or {}).get((topic, partition), 0),
    ]
    if time is not None:
        where += f" AND date_trunc('day', t.{time}, 'UTC') = $5"
        args.append(day)
    head = f"{table} {topic}/{partition}" + (f" on {day:%Y-%m-%d}" if day else "")
    head += f": {a.rows if a else 0} rows in {live}, {b.rows if b else 0} in the log"
    select = ", ".join(f"t.{c}" for c in columns)
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        await _tail_only(conn, since)
        ours = {
            r["kafka_offset"]: r
            for r in await conn.fetch(f"SELECT {select} FROM {quoted(live)}.{table} t WHERE {where}", *args)
        }
        theirs = {
            r["kafka_offset"]: r
            for r in await conn.fetch(f"SELECT {select} FROM {quoted(log)}.{table} t WHERE {where}", *args)
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


__all__ = ["Bounds", "Bucket", "Checksum", "Comparison", "checksums", "compare", "leaves", "stored_offsets"]
