"""Merkle hashes, checkpoints and signing keys for inclusion and consistency proofs."""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from audit_query.repository.reader import Reader
from audit_query.repository.sql import quoted


class ProofRepository:
    """Merkle hashes, checkpoints and signing keys for proofs (hashes only; a leaf's data only for a visible entry)."""

    def __init__(self, repo: Reader, control_schema: str) -> None:
        self._repo = repo
        self._control = quoted(control_schema)

    async def keys(self) -> list[dict[str, Any]]:
        rows = await self._repo._fetch(
            f"""SELECT name, key_hash, verifier_key, first_used_at
                  FROM {self._control}.signing_keys ORDER BY first_used_at"""
        )
        return [dict(r) for r in rows]

    def _cosigned_note(self) -> str:
        """A checkpoint's note `c` with the witnesses' cosignature lines after its own signatures."""
        return (
            f"c.note || coalesce((SELECT string_agg(k.line, '' ORDER BY k.witness) FROM {self._control}.cosignatures k"
            " WHERE k.origin = c.origin AND k.tree_size = c.tree_size), '') AS note,"
            f" (SELECT coalesce(array_agg(k.witness ORDER BY k.witness), '{{}}') FROM {self._control}.cosignatures k"
            " WHERE k.origin = c.origin AND k.tree_size = c.tree_size) AS cosigned_by"
        )

    async def checkpoints(self, origin: str, limit: int) -> list[dict[str, Any]]:
        """Newest first, each note with its cosignatures."""
        rows = await self._repo._fetch(
            f"""SELECT c.origin, c.tree_size, c.root_hash, c.key_name, c.key_hash, c.signed_at, {self._cosigned_note()}
                  FROM {self._control}.checkpoints c WHERE c.origin = $1 ORDER BY c.tree_size DESC LIMIT $2""",
            origin,
            limit,
        )
        return [dict(r) for r in rows]

    async def latest_checkpoint(self, origin: str, covering: int) -> dict[str, Any] | None:
        """The newest checkpoint of `origin` whose tree holds leaf `covering`, its note with its cosignatures."""
        rows = await self._repo._fetch(
            f"""SELECT c.origin, c.tree_size, c.root_hash, {self._cosigned_note()} FROM {self._control}.checkpoints c
                 WHERE c.origin = $1 AND c.tree_size > $2 ORDER BY c.tree_size DESC LIMIT 1""",
            origin,
            covering,
        )
        return dict(rows[0]) if rows else None

    async def tree_size(self, topic: str, partition: int) -> int:
        rows = await self._repo._fetch(
            "SELECT size FROM merkle_trees WHERE topic = $1 AND partition = $2", topic, partition
        )
        return int(rows[0]["size"]) if rows else 0

    async def leaf_of(self, tenants: str, audit_id: UUID) -> dict[str, Any] | None:
        """The leaf of an entry the caller's tenants may see (its raw record included), or None."""
        rows = await self._repo._fetch(
            f"SELECT * FROM {self._control}.merkle_leaf_of(current_schema(), $1)", audit_id, tenants=tenants
        )
        return dict(rows[0]) if rows else None

    async def nodes(
        self, topic: str, partition: int, wanted: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """The hashes of complete subtrees (level 0: leaves) at the given coordinates, in one round trip each kind."""
        leaves = [i for level, i in wanted if level == 0]
        inner = [(level, i) for level, i in wanted if level > 0]
        found: dict[tuple[int, int], bytes] = {}
        if leaves:
            for r in await self._repo._fetch(
                """SELECT leaf_index, leaf_hash FROM merkle_leaf_hashes
                    WHERE topic = $1 AND partition = $2 AND leaf_index = ANY($3::bigint[])""",
                topic,
                partition,
                leaves,
            ):
                found[(0, r["leaf_index"])] = r["leaf_hash"]
        if inner:
            for r in await self._repo._fetch(
                """SELECT n.level, n.node_index, n.hash FROM merkle_nodes n
                     JOIN unnest($3::smallint[], $4::bigint[]) AS w(level, node_index)
                       ON n.level = w.level AND n.node_index = w.node_index
                    WHERE n.topic = $1 AND n.partition = $2""",
                topic,
                partition,
                [level for level, _ in inner],
                [i for _, i in inner],
            ):
                found[(r["level"], r["node_index"])] = r["hash"]
        return found
