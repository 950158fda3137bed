"""The witnessing tables of the control schema (cosignatures, witness_state, witness_refusals) and the tree nodes a
consistency proof is built from, over the cosigner's own connection."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from audit_projector.repository import quoted
from audit_schemas.cosignature import Cosignature


def cosigned_note(control: str, alias: str = "c") -> str:
    """SQL: checkpoint row `alias`'s note followed by its stored cosignature lines (by witness name)."""
    return (
        f"{alias}.note || coalesce((SELECT string_agg(k.line, '' ORDER BY k.witness) FROM {control}.cosignatures k"
        f" WHERE k.origin = {alias}.origin AND k.tree_size = {alias}.tree_size), '')"
    )


@dataclass(frozen=True, slots=True)
class Pending:
    """An origin's newest checkpoint that a witness has not cosigned, and the size the log believes it holds."""

    origin: str
    size: int
    note: str
    witness_size: int | None


@dataclass(frozen=True, slots=True)
class Unwitnessed:
    """An origin whose newest checkpoint has fewer cosignatures than the quorum."""

    origin: str
    size: int
    signed_at: datetime
    cosignatures: int


class WitnessStore:
    """SQL of the witnessing tables; `control` is the control schema, the connection's search path the read model."""

    def __init__(self, conn: asyncpg.Connection, control: str) -> None:
        self._conn = conn
        self._control = quoted(control)

    async def lock(self, name: str) -> bool:
        """One cosigner per control schema at a time (a session advisory lock, released with `unlock`)."""
        return bool(await self._conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"cosigner:{name}"))

    async def unlock(self, name: str) -> None:
        await self._conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"cosigner:{name}")

    async def pending(self, witness: str, prefix: str) -> list[Pending]:
        """For each origin of this log, its newest checkpoint when the witness is not known to hold it."""
        rows = await self._conn.fetch(
            f"""SELECT c.origin, c.tree_size, c.note, s.tree_size AS witness_size
                  FROM (SELECT DISTINCT ON (origin) origin, tree_size, note FROM {self._control}.checkpoints
                         WHERE starts_with(origin, $2) ORDER BY origin, tree_size DESC) c
                  LEFT JOIN {self._control}.witness_state s ON s.witness = $1 AND s.origin = c.origin
                 WHERE s.tree_size IS NULL OR s.tree_size <> c.tree_size
                 ORDER BY c.origin""",
            witness,
            prefix,
        )
        return [Pending(r["origin"], r["tree_size"], r["note"], r["witness_size"]) for r in rows]

    async def nodes(
        self, topic: str, partition: int, wanted: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """Hashes of complete subtrees (level 0: leaves) of the partition's tree, at the coordinates asked."""
        levels = [level for level, _ in wanted]
        indexes = [index for _, index in wanted]
        rows = await self._conn.fetch(
            """SELECT 0 AS level, h.leaf_index AS node_index, h.leaf_hash AS hash FROM merkle_leaves h
                 JOIN unnest($3::smallint[], $4::bigint[]) AS w(level, node_index)
                   ON w.level = 0 AND h.leaf_index = w.node_index
                WHERE h.topic = $1 AND h.partition = $2
               UNION ALL
               SELECT n.level, n.node_index, n.hash FROM merkle_nodes n
                 JOIN unnest($3::smallint[], $4::bigint[]) AS w(level, node_index)
                   ON n.level = w.level AND n.node_index = w.node_index
                WHERE n.topic = $1 AND n.partition = $2""",
            topic,
            partition,
            levels,
            indexes,
        )
        return {(r["level"], r["node_index"]): bytes(r["hash"]) for r in rows}

    async def cosigned(self, results: list[tuple[str, int, str, list[Cosignature]]]) -> None:
        """Store a round's verified cosignatures — (origin, size, witness, cosignatures) each — and move each witness's
        known size to its checkpoint's, in one transaction (one commit a round, not one per answer)."""
        if not results:
            return
        async with self._conn.transaction():
            await self._conn.executemany(
                f"""INSERT INTO {self._control}.cosignatures (origin, tree_size, witness, key_hash, cosigned_at, line)
                    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
                [
                    (origin, size, c.witness, c.key_hash, datetime.fromtimestamp(c.timestamp, UTC), c.line)
                    for origin, size, _, cosignatures in results
                    for c in cosignatures
                ],
            )
            await self._conn.executemany(
                f"""INSERT INTO {self._control}.witness_state (witness, origin, tree_size) VALUES ($1, $2, $3)
                    ON CONFLICT (witness, origin) DO UPDATE SET tree_size = EXCLUDED.tree_size, updated_at = now()""",
                [(witness, origin, size) for origin, size, witness, _ in results],
            )

    async def set_size(self, witness: str, origin: str, size: int) -> None:
        """What the witness holds for the origin, as it said (a 200 or a 409)."""
        await self._conn.execute(
            f"""INSERT INTO {self._control}.witness_state (witness, origin, tree_size) VALUES ($1, $2, $3)
                ON CONFLICT (witness, origin) DO UPDATE SET tree_size = EXCLUDED.tree_size, updated_at = now()""",
            witness,
            origin,
            size,
        )

    async def refused(
        self, witness: str, origin: str, size: int, status: int | None, witness_size: int | None, detail: str
    ) -> None:
        """Keep a refusal that may be evidence (append-only)."""
        await self._conn.execute(
            f"""INSERT INTO {self._control}.witness_refusals (witness, origin, tree_size, status, witness_size, detail)
                VALUES ($1, $2, $3, $4, $5, $6)""",
            witness,
            origin,
            size,
            status or 0,
            witness_size,
            detail[:2000],
        )

    async def cosigned_note(self, origin: str, size: int) -> str:
        """The checkpoint's note with every stored cosignature line."""
        note = await self._conn.fetchval(
            f"SELECT {cosigned_note(self._control)} FROM {self._control}.checkpoints c"
            " WHERE c.origin = $1 AND c.tree_size = $2",
            origin,
            size,
        )
        return str(note)

    async def unwitnessed(self, prefix: str, quorum: int) -> list[Unwitnessed]:
        """This log's origins whose newest checkpoint has fewer than `quorum` cosignatures."""
        rows = await self._conn.fetch(
            f"""SELECT c.origin, c.tree_size, c.signed_at,
                       (SELECT count(*) FROM {self._control}.cosignatures k
                         WHERE k.origin = c.origin AND k.tree_size = c.tree_size) AS cosigned
                  FROM (SELECT DISTINCT ON (origin) origin, tree_size, signed_at FROM {self._control}.checkpoints
                         WHERE starts_with(origin, $1) ORDER BY origin, tree_size DESC) c""",
            prefix,
        )
        return [
            Unwitnessed(r["origin"], r["tree_size"], r["signed_at"], r["cosigned"])
            for r in rows
            if r["cosigned"] < quorum
        ]
