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
    moved: set[tuple[str, int]] = set()
    claims = [a for a in appends if a.before.size == 0]
    moves = [a for a in appends if a.before.size != 0]
    # One statement for all of a batch's partitions: a frontier's hashes travel flattened, each tree taking its
    # slice (a PostgreSQL array of arrays must be rectangular, and frontiers differ in length).
    if claims:
        rows = await conn.fetch(
            """INSERT INTO merkle_trees AS t (topic, partition, size, frontier)
               SELECT f.topic, f.partition, f.size, ($5::bytea[])[f.first:f.first + f.count - 1]
                 FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $6::int[])
                      AS f(topic, partition, size, count, first)
               ON CONFLICT (topic, partition) DO UPDATE
                  SET size = excluded.size, frontier = excluded.frontier, updated_at = now()
                WHERE t.size = 0
               RETURNING t.topic, t.partition""",
            *_columns(claims),
        )
        moved |= {(r["topic"], r["partition"]) for r in rows}
    if moves:
        # Fenced on the tree's size: a tree another member grew meanwhile matches no row.
        rows = await conn.fetch(
            """UPDATE merkle_trees t
                  SET size = f.size, frontier = ($5::bytea[])[f.first:f.first + f.count - 1], updated_at = now()
                 FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $6::int[], $7::bigint[])
                      AS f(topic, partition, size, count, first, expected)
                WHERE t.topic = f.topic AND t.partition = f.partition AND t.size = f.expected
               RETURNING t.topic, t.partition""",
            *_columns(moves),
            [a.before.size for a in moves],
        )
        moved |= {(r["topic"], r["partition"]) for r in rows}
    lost = [(a.topic, a.partition) for a in appends if (a.topic, a.partition) not in moved]
    if lost:
        raise FencedError(lost)


def _columns(
    appends: Sequence[TreeAppend],
) -> tuple[list[str], list[int], list[int], list[int], list[bytes], list[int]]:
    """Topics, partitions, new sizes, frontier lengths, every frontier's hashes in a row, and where each begins."""
    hashes: list[bytes] = []
    first: list[int] = []
    for a in appends:
        first.append(len(hashes) + 1)
        hashes.extend(a.after.frontier)
    return (
        [a.topic for a in appends],
        [a.partition for a in appends],
        [a.after.size for a in appends],
        [len(a.after.frontier) for a in appends],
        hashes,
        first,
    )
