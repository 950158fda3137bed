"""Partitions stopped before a record (`projector_blocks`) and operators' requests to skip one (`projector_skips`)."""

from collections.abc import Iterable, Sequence

import asyncpg

from audit_projector.repository.records import Block, OffsetFence, Skip


async def load_skips(conn: asyncpg.Connection, group: str, partitions: Iterable[tuple[str, int]]) -> list[Skip]:
    """Operator skip requests at or after the stored offset of the given partitions."""
    wanted = list(partitions)
    if not wanted:
        return []
    rows = await conn.fetch(
        """SELECT s.topic, s.partition, s.kafka_offset, s.kind, s.reason, s.requested_by
             FROM projector_skips s
             JOIN unnest($2::text[], $3::int[]) AS w(topic, partition)
               ON s.topic = w.topic AND s.partition = w.partition
             LEFT JOIN projector_offsets o
               ON o.consumer_group = s.consumer_group AND o.topic = s.topic AND o.partition = s.partition
            WHERE s.consumer_group = $1 AND s.kafka_offset >= coalesce(o.next_offset, 0)
            ORDER BY s.topic, s.partition, s.kafka_offset""",
        group,
        [t for t, _ in wanted],
        [p for _, p in wanted],
    )
    return [Skip(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def record_blocks(
    conn: asyncpg.Connection, group: str, fences: Sequence[OffsetFence], blocks: Sequence[Block]
) -> None:
    """Record the batch's blocks; unblock a partition that moved past its block (after an upgrade or a skip)."""
    if fences:
        await conn.execute(
            """DELETE FROM projector_blocks b
                USING unnest($2::text[], $3::int[], $4::bigint[]) AS f(topic, partition, next_offset)
                WHERE b.consumer_group = $1 AND b.topic = f.topic AND b.partition = f.partition
                  AND b.kafka_offset < f.next_offset""",
            group,
            [f.topic for f in fences],
            [f.partition for f in fences],
            [f.next_offset for f in fences],
        )
    for b in blocks:
        await upsert_block(conn, group, b)


async def upsert_block(conn: asyncpg.Connection, group: str, b: Block) -> None:
    """The partition's block, replacing an older one."""
    await conn.execute(
        "DELETE FROM projector_blocks WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
        group,
        b.topic,
        b.partition,
    )
    await conn.execute(
        """INSERT INTO projector_blocks (consumer_group, topic, partition, kafka_offset, event_type,
                                         schema_version, reason, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        group,
        b.topic,
        b.partition,
        b.offset,
        b.event_type,
        b.schema_version,
        b.reason,
        b.detail,
    )
