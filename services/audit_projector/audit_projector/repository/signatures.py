"""The control schema's tables of signatures: publishers' keys (`producer_keys`), the checkpoint signing keys
(`signing_keys`) and the signed checkpoints (`checkpoints`)."""

from collections.abc import Sequence

import asyncpg

from audit_projector.repository.records import ProducerKey


async def producer_keys(conn: asyncpg.Connection, control: str) -> dict[str, ProducerKey]:
    """The registry of publishers' keys."""
    rows = await conn.fetch(
        f"SELECT key_id, public_key, sources, tenants, valid_from, valid_until FROM {control}.producer_keys"
    )
    return {
        r["key_id"]: ProducerKey(
            r["key_id"],
            bytes(r["public_key"]),
            frozenset(r["sources"]),
            None if r["tenants"] is None else frozenset(r["tenants"]),
            r["valid_from"],
            r["valid_until"],
        )
        for r in rows
    }


async def register_key(conn: asyncpg.Connection, control: str, name: str, key_hash: int, verifier_key: str) -> None:
    """List a signing key (idempotent): every key that ever signed stays listed for verification."""
    await conn.execute(
        f"""INSERT INTO {control}.signing_keys (name, key_hash, verifier_key) VALUES ($1, $2, $3)
            ON CONFLICT DO NOTHING""",
        name,
        key_hash,
        verifier_key,
    )


async def store_checkpoint(
    conn: asyncpg.Connection, control: str, origin: str, size: int, root_hash: bytes, key: tuple[str, int], note: str
) -> None:
    """Keep a signed checkpoint (the same one signed again is the same note: kept once); `key` is (name, hash)."""
    await conn.execute(
        f"""INSERT INTO {control}.checkpoints (origin, tree_size, root_hash, key_name, key_hash, note)
            VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        origin,
        size,
        root_hash,
        *key,
        note,
    )


async def last_checkpoints(conn: asyncpg.Connection, control: str, origins: Sequence[str]) -> dict[str, int]:
    """The largest signed tree size of each origin."""
    rows = await conn.fetch(
        f"""SELECT origin, max(tree_size) AS size FROM {control}.checkpoints
             WHERE origin = ANY($1::text[]) GROUP BY origin""",
        list(origins),
    )
    return {r["origin"]: r["size"] for r in rows}
