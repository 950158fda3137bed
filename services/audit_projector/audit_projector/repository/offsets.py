"""Where each partition stands (`projector_offsets`), moved only forward and only from where a batch began, and
the pause fence of the read model (`projector_control`): a batch commits both or neither."""

from collections.abc import Iterable, Sequence
from typing import Final

import asyncpg

from audit_projector.errors import FencedError, PausedError, db_errors
from audit_projector.repository.records import OffsetFence
from audit_projector.repository.session import quoted

PAUSE_LOCK: Final = 0x41555053
"""Advisory lock namespace of the pause fence (the key is the read model's schema name, hashed)."""


async def load_offsets(
    conn: asyncpg.Connection, group: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Stored next offsets of the given partitions (absent: never projected)."""
    wanted = list(partitions)
    rows = await conn.fetch(
        """SELECT o.topic, o.partition, o.next_offset
             FROM projector_offsets o
             JOIN unnest($2::text[], $3::int[]) AS w(topic, partition)
               ON o.topic = w.topic AND o.partition = w.partition
            WHERE o.consumer_group = $1""",
        group,
        [t for t, _ in wanted],
        [p for _, p in wanted],
    )
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def fence(conn: asyncpg.Connection, group: str, fences: Sequence[OffsetFence]) -> None:
    """Move every partition's stored offset in one statement, or raise FencedError for those that moved."""
    claims = [f for f in fences if f.expected is None]
    moves = [f for f in fences if f.expected is not None]
    moved: set[tuple[str, int]] = set()
    if claims:
        rows = await conn.fetch(
            """INSERT INTO projector_offsets (consumer_group, topic, partition, next_offset)
               SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[])
               ON CONFLICT DO NOTHING RETURNING topic, partition""",
            group,
            [f.topic for f in claims],
            [f.partition for f in claims],
            [f.next_offset for f in claims],
        )
        moved |= {(r["topic"], r["partition"]) for r in rows}
    if moves:
        # Only forward: a batch that would move the offset back matches no row and is fenced.
        rows = await conn.fetch(
            """UPDATE projector_offsets o SET next_offset = f.next_offset, updated_at = now()
                 FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])
                      AS f(topic, partition, expected, next_offset)
                WHERE o.consumer_group = $1 AND o.topic = f.topic AND o.partition = f.partition
                  AND o.next_offset = f.expected AND f.next_offset >= f.expected
               RETURNING o.topic, o.partition""",
            group,
            [f.topic for f in moves],
            [f.partition for f in moves],
            [f.expected for f in moves],
            [f.next_offset for f in moves],
        )
        moved |= {(r["topic"], r["partition"]) for r in rows}
    lost = [(f.topic, f.partition) for f in fences if (f.topic, f.partition) not in moved]
    if lost:
        raise FencedError(lost)


async def pause_fence(conn: asyncpg.Connection, control: str, schema: str) -> None:
    """Inside the batch transaction: refuse to commit into a paused read model. The shared lock makes a swap's
    exclusive lock wait for this batch; the row is read after it, so a pause committed before is seen."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1, hashtext($2))", PAUSE_LOCK, schema)
    row = await conn.fetchrow(f"SELECT paused, reason FROM {control}.projector_control WHERE read_model = $1", schema)
    if row is not None and row["paused"]:
        raise PausedError(schema, row["reason"])


async def pause_state(conn: asyncpg.Connection, control_schema: str, read_model: str) -> tuple[bool, str | None]:
    """Whether the projectors of `read_model` are paused, and why."""
    control = quoted(control_schema)
    with db_errors("cannot read the projector control row"):
        row = await conn.fetchrow(
            f"SELECT paused, reason FROM {control}.projector_control WHERE read_model = $1", read_model
        )
    return (bool(row["paused"]), row["reason"]) if row is not None else (False, None)
