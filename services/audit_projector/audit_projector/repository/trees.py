"""Each partition's Merkle tree: its leaves (`merkle_leaves`), completed nodes (`merkle_nodes`) and frontier
(`merkle_trees`), appended in the batch's transaction and fenced on the tree's size."""

from collections.abc import Iterable, Sequence

import asyncpg

from audit_projector.errors import FencedError
from audit_projector.repository.records import TreeAppend, TreeState


async def load_trees(
    conn: asyncpg.Connection, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], TreeState]:
    """Stored Merkle tree states of the given partitions (absent: the empty tree)."""
    wanted = list(partitions)
    rows = await conn.fetch(
        """SELECT t.topic, t.partition, t.size, t.frontier
             FROM merkle_trees t
             JOIN unnest($1::text[], $2::int[]) AS w(topic, partition)
               ON t.topic = w.topic AND t.partition = w.partition""",
        [t for t, _ in wanted],
        [p for _, p in wanted],
    )
    found = {(r["topic"], r["partition"]): TreeState(r["size"], tuple(r["frontier"])) for r in rows}
    return {key: found.get(key, TreeState(0)) for key in wanted}


async def append_trees(conn: asyncpg.Connection, appends: Sequence[TreeAppend]) -> None:
    """Leaves, completed nodes and the new frontier; fenced on the tree's size like the offsets."""
    if not appends:
        return
    leaves = [(a.topic, a.partition, *leaf) for a in appends for leaf in a.leaves]
    nodes = [(a.topic, a.partition, *node) for a in appends for node in a.nodes]
    if leaves:
        await conn.copy_records_to_table(
            "merkle_leaves",
            records=leaves,
            columns=["topic", "partition", "leaf_index", "kafka_offset", "leaf_hash", "leaf_data"],
        )
    if nodes:
        await conn.copy_records_to_table(
            "merkle_nodes", records=nodes, columns=["topic", "partition", "level", "node_index", "hash"]
        )
    lost = []
    for a in appends:
        if a.before.size == 0:
            moved = await conn.fetchval(
                """INSERT INTO merkle_trees AS t (topic, partition, size, frontier) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (topic, partition) DO UPDATE
                      SET size = excluded.size, frontier = excluded.frontier, updated_at = now()
                    WHERE t.size = 0
                   RETURNING 1""",
                a.topic,
                a.partition,
                a.after.size,
                list(a.after.frontier),
            )
        else:
            moved = await conn.fetchval(
                """UPDATE merkle_trees SET size = $3, frontier = $4, updated_at = now()
                    WHERE topic = $1 AND partition = $2 AND size = $5
                   RETURNING 1""",
                a.topic,
                a.partition,
                a.after.size,
                list(a.after.frontier),
                a.before.size,
            )
        if moved is None:
            lost.append((a.topic, a.partition))
    if lost:
        raise FencedError(lost)
