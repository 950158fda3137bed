"""The key store's tables: tenant secrets, subject keys by generation, erasure tombstones and legal holds."""

import os
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Final
from uuid import UUID

import asyncpg
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from audit_query.errors import store_errors
from audit_query.keystore.wrapping import Keks, KeyStoreError, escrow_purpose, subject_purpose, tenant_purpose
from audit_schemas import postgres
from audit_schemas.sealing import KEY_BYTES, pseudonym

_LOCK: Final = 0x6B657973  # "keys": one migrating process at a time
KeyRef = tuple[str, str, int]
"""(tenant, pseudonym, generation): which key a sealed value names."""


class HeldError(KeyStoreError):
    """The subject is under a legal hold: its data must be kept."""

    status_code = 409


@dataclass(frozen=True, slots=True)
class SubjectKey:
    """A subject's current data key."""

    tenant: str
    pseudonym: str
    generation: int
    key: bytes


@dataclass(frozen=True, slots=True)
class Erasure:
    """What one erasure destroyed."""

    tenant: str
    pseudonym: str
    generations: tuple[int, ...]
    erased_at: datetime


class KeyStore:
    """Reads and writes the key store through its own pool (role and schema of its own)."""

    def __init__(self, pool: asyncpg.Pool, keks: Keks) -> None:
        self._pool = pool
        self._keks = keks
        self._secrets: dict[str, bytes] = {}
        self._escrow: X25519PrivateKey | None = None

    @classmethod
    async def open(cls, dsn: str, schema: str, keks: Keks, *, migrate: bool = True) -> "KeyStore":
        """A pool on the key store (its schema first on the path), with its tables brought up to date."""
        with store_errors():
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn,
                connect=typing.cast(Any, postgres.connect),  # each host of a multi-host DSN its own deadline
                min_size=0,
                max_size=4,
                server_settings={"search_path": schema, "application_name": "audit-query/keys"},
                command_timeout=30,
            )
        store = cls(pool, keks)
        if migrate:
            await store.migrate()
        return store

    async def close(self) -> None:
        await postgres.close_pool(self._pool)

    async def migrate(self) -> list[str]:
        """Apply the key store's migrations not yet applied (each once, under an advisory lock)."""
        scripts = sorted(
            (f.name, f.read_text())
            for f in resources.files("audit_query.keystore.migrations").iterdir()
            if f.name.endswith(".sql")
        )
        applied: list[str] = []
        with store_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS key_store_migrations"
                    " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {r["name"] for r in await conn.fetch("SELECT name FROM key_store_migrations")}
                for name, sql in scripts:
                    if name not in done:
                        await conn.execute(sql)
                        await conn.execute("INSERT INTO key_store_migrations (name) VALUES ($1)", name)
                        applied.append(name)
        return applied

    async def pseudonym(self, tenant: str, subject: str) -> str:
        """The subject's pseudonym in `tenant` (creating the tenant's secret on first use)."""
        return pseudonym(await self._secret(tenant), tenant, subject)

    async def aliases(self, subjects: set[str], tenants: list[str] | None) -> dict[str, tuple[str, ...]]:
        """Each subject id's pseudonyms in `tenants` (None: every tenant with a secret), for filters; tenants
        without a secret have sealed nothing, so they add none (and none is created here)."""
        with store_errors():
            rows = await self._pool.fetch(
                "SELECT tenant_id, kek_id, wrapped FROM tenant_secrets WHERE $1::text[] IS NULL OR tenant_id = ANY($1)",
                tenants,
            )
        secrets = []
        for r in rows:
            tenant = r["tenant_id"]
            if tenant not in self._secrets:
                wrapped = bytes(r["wrapped"])
                self._secrets[tenant] = self._keks.get(r["kek_id"]).unwrap(wrapped, tenant_purpose(tenant))
            secrets.append((tenant, self._secrets[tenant]))
        named = {(s, t, pseudonym(secret, t, s)) for s in subjects for t, secret in secrets}
        with store_errors():
            erased = await self._pool.fetch(
                "SELECT e.tenant_id, e.pseudonym FROM erasures e"
                " JOIN unnest($1::text[], $2::text[]) AS n(t, p) ON (e.tenant_id, e.pseudonym) = (n.t, n.p)"
                " WHERE NOT EXISTS (SELECT 1 FROM subject_keys k"
                "                    WHERE (k.tenant_id, k.pseudonym) = (e.tenant_id, e.pseudonym))",
                [t for _, t, _ in named],
                [p for _, _, p in named],
            )
        # An erased subject is not found by its id any more: the link from id to entries goes with the key.
        gone = {(r["tenant_id"], r["pseudonym"]) for r in erased}
        return {s: tuple(sorted({p for n, t, p in named if n == s and (t, p) not in gone})) for s in subjects}

    async def _secret(self, tenant: str) -> bytes:
        found = self._secrets.get(tenant)
        if found is not None:
            return found
        purpose = tenant_purpose(tenant)
        with store_errors():
            async with self._pool.acquire() as conn:
                fresh = os.urandom(KEY_BYTES)
                await conn.execute(
                    "INSERT INTO tenant_secrets (tenant_id, kek_id, wrapped) VALUES ($1, $2, $3)"
                    " ON CONFLICT (tenant_id) DO NOTHING",
                    tenant,
                    self._keks.current.id,
                    self._keks.current.wrap(fresh, purpose),
                )
                row = await conn.fetchrow("SELECT kek_id, wrapped FROM tenant_secrets WHERE tenant_id = $1", tenant)
        assert row is not None
        secret = self._keks.get(row["kek_id"]).unwrap(bytes(row["wrapped"]), purpose)
        self._secrets[tenant] = secret
        return secret

    async def subject_keys(self, tenant: str, subjects: Iterable[str]) -> dict[str, SubjectKey]:
        """Each subject's current key (created on first use, or after an erasure as the next generation)."""
        named = {s: await self.pseudonym(tenant, s) for s in dict.fromkeys(subjects)}
        by_pseudonym = await self._current(tenant, list(set(named.values())))
        return {s: by_pseudonym[p] for s, p in named.items()}

    async def _current(self, tenant: str, pseudonyms: list[str]) -> dict[str, SubjectKey]:
        with store_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_CURRENT, tenant, pseudonyms)
                missing = sorted(set(pseudonyms) - {r["pseudonym"] for r in rows})
                if missing:
                    # One creator per tenant at a time; the next generation follows any erased one.
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", tenant)
                    last: dict[str, int] = {r[0]: r[1] for r in await conn.fetch(_LAST_GENERATION, tenant, missing)}
                    kek = self._keks.current
                    fresh = [(p, last.get(p, 0) + 1) for p in missing]
                    await conn.executemany(
                        "INSERT INTO subject_keys (tenant_id, pseudonym, generation, kek_id, wrapped)"
                        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        [
                            (tenant, p, g, kek.id, kek.wrap(os.urandom(KEY_BYTES), subject_purpose(tenant, p, g)))
                            for p, g in fresh
                        ],
                    )
                    rows = await conn.fetch(_CURRENT, tenant, pseudonyms)
        found: dict[str, SubjectKey] = {}
        for r in rows:
            purpose = subject_purpose(tenant, r["pseudonym"], r["generation"])
            key = self._keks.get(r["kek_id"]).unwrap(bytes(r["wrapped"]), purpose)
            found[r["pseudonym"]] = SubjectKey(tenant, r["pseudonym"], r["generation"], key)
        return found

    async def escrow_key(self) -> X25519PrivateKey:
        """The service's escrow key pair (created on first use): producers seal withheld fields to its public key."""
        if self._escrow is not None:
            return self._escrow
        with store_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK + 1)
                row = await conn.fetchrow("SELECT id, kek_id, wrapped FROM escrow_keys ORDER BY created_at LIMIT 1")
                if row is None:
                    fresh = X25519PrivateKey.generate()
                    public = fresh.public_key().public_bytes_raw()
                    kek = self._keks.current
                    await conn.execute(
                        "INSERT INTO escrow_keys (id, public_key, kek_id, wrapped) VALUES ($1, $2, $3, $4)",
                        public.hex()[:16],
                        public,
                        kek.id,
                        kek.wrap(fresh.private_bytes_raw(), escrow_purpose(public.hex()[:16])),
                    )
                    row = await conn.fetchrow(
                        "SELECT id, kek_id, wrapped FROM escrow_keys WHERE id = $1", public.hex()[:16]
                    )
        assert row is not None
        raw = self._keks.get(row["kek_id"]).unwrap(bytes(row["wrapped"]), escrow_purpose(row["id"]))
        self._escrow = X25519PrivateKey.from_private_bytes(raw)
        return self._escrow

    async def keys(self, wanted: Iterable[KeyRef]) -> dict[KeyRef, bytes]:
        """The keys that still exist among `wanted`; an absent one was erased (or never issued)."""
        refs = sorted(set(wanted))
        if not refs:
            return {}
        with store_errors():
            rows = await self._pool.fetch(
                "SELECT k.tenant_id, k.pseudonym, k.generation, k.kek_id, k.wrapped FROM subject_keys k"
                " JOIN unnest($1::text[], $2::text[], $3::int[]) AS w(t, p, g)"
                "   ON (k.tenant_id, k.pseudonym, k.generation) = (w.t, w.p, w.g)",
                [t for t, _, _ in refs],
                [p for _, p, _ in refs],
                [g for _, _, g in refs],
            )
        return {
            (r["tenant_id"], r["pseudonym"], r["generation"]): self._keks.get(r["kek_id"]).unwrap(
                bytes(r["wrapped"]), subject_purpose(r["tenant_id"], r["pseudonym"], r["generation"])
            )
            for r in rows
        }

    async def erase(self, tenant: str, pseudonym: str, by: str, audit_id: UUID | None) -> Erasure:
        """Destroy every key generation of the subject (refused under a legal hold) and keep a tombstone."""
        with store_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", tenant)
                hold = await conn.fetchrow(
                    "SELECT reason, placed_by FROM legal_holds WHERE tenant_id = $1 AND pseudonym = $2",
                    tenant,
                    pseudonym,
                )
                if hold is not None:
                    raise HeldError(
                        f"subject {pseudonym} of tenant {tenant} is under a legal hold placed by "
                        f"{hold['placed_by']}: {hold['reason']}"
                    )
                gone = await conn.fetch(
                    "DELETE FROM subject_keys WHERE tenant_id = $1 AND pseudonym = $2 RETURNING generation",
                    tenant,
                    pseudonym,
                )
                generations = tuple(sorted(r["generation"] for r in gone))
                erased_at: datetime = await conn.fetchval("SELECT now()")
                for generation in generations or (0,):
                    await conn.execute(
                        "INSERT INTO erasures (tenant_id, pseudonym, erased_at, erased_by, generation, audit_id)"
                        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        tenant,
                        pseudonym,
                        erased_at,
                        by,
                        generation,
                        audit_id,
                    )
        return Erasure(tenant, pseudonym, generations, erased_at)

    async def hold(self, tenant: str, pseudonym: str, reason: str, by: str) -> None:
        """Place (or restate) a legal hold: erasure is refused until it is released."""
        with store_errors():
            await self._pool.execute(
                "INSERT INTO legal_holds (tenant_id, pseudonym, reason, placed_by) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (tenant_id, pseudonym) DO UPDATE SET reason = EXCLUDED.reason,"
                " placed_by = EXCLUDED.placed_by, placed_at = now()",
                tenant,
                pseudonym,
                reason,
                by,
            )

    async def release(self, tenant: str, pseudonym: str) -> bool:
        """Lift the hold; False when there was none."""
        with store_errors():
            status = await self._pool.execute(
                "DELETE FROM legal_holds WHERE tenant_id = $1 AND pseudonym = $2", tenant, pseudonym
            )
        return bool(status != "DELETE 0")

    async def reapply(self, tombstones: Iterable[tuple[str, str, datetime]]) -> int:
        """After a restore: destroy again every key created before an erasure recorded apart from this store.

        Returns how many keys were destroyed (0 when the store already agrees with the tombstones)."""
        stones = list(tombstones)
        if not stones:
            return 0
        with store_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                gone = await conn.fetch(
                    "DELETE FROM subject_keys k USING unnest($1::text[], $2::text[], $3::timestamptz[]) AS s(t, p, at)"
                    " WHERE (k.tenant_id, k.pseudonym) = (s.t, s.p) AND k.created_at <= s.at"
                    " RETURNING k.tenant_id, k.pseudonym, k.generation, s.at",
                    [t for t, _, _ in stones],
                    [p for _, p, _ in stones],
                    [a for _, _, a in stones],
                )
                for r in gone:
                    await conn.execute(
                        "INSERT INTO erasures (tenant_id, pseudonym, erased_at, erased_by, generation)"
                        " VALUES ($1, $2, $3, 'reapplied', $4) ON CONFLICT DO NOTHING",
                        r["tenant_id"],
                        r["pseudonym"],
                        r["at"],
                        r["generation"],
                    )
        return len(gone)

    async def rewrap(self) -> int:
        """Re-wrap every key and secret not under the current KEK (events are never re-encrypted)."""
        current = self._keks.current
        moved = 0
        with store_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                for table, columns, purpose_of in _WRAPPED:
                    where = " AND ".join(f"{c} = ${i + 3}" for i, c in enumerate(columns))
                    for r in await conn.fetch(f"SELECT * FROM {table} WHERE kek_id <> $1 FOR UPDATE", current.id):
                        purpose = purpose_of(r)
                        raw = self._keks.get(r["kek_id"]).unwrap(bytes(r["wrapped"]), purpose)
                        await conn.execute(
                            f"UPDATE {table} SET kek_id = $1, wrapped = $2 WHERE {where}",
                            current.id,
                            current.wrap(raw, purpose),
                            *(r[c] for c in columns),
                        )
                        moved += 1
        return moved


_WRAPPED: Final[tuple[tuple[str, tuple[str, ...], Callable[[asyncpg.Record], bytes]], ...]] = (
    ("tenant_secrets", ("tenant_id",), lambda r: tenant_purpose(r["tenant_id"])),
    ("escrow_keys", ("id",), lambda r: escrow_purpose(r["id"])),
    ("subject_keys", ("tenant_id", "pseudonym", "generation"),
     lambda r: subject_purpose(r["tenant_id"], r["pseudonym"], r["generation"])),
)  # fmt: skip
"""Every wrapped key's table, its row key, and what its wrap is bound to."""

_CURRENT: Final = """
SELECT DISTINCT ON (pseudonym) pseudonym, generation, kek_id, wrapped
  FROM subject_keys WHERE tenant_id = $1 AND pseudonym = ANY($2::text[])
 ORDER BY pseudonym, generation DESC
"""
_LAST_GENERATION: Final = """
SELECT pseudonym, max(generation) FROM (
    SELECT pseudonym, generation FROM subject_keys WHERE tenant_id = $1 AND pseudonym = ANY($2::text[])
    UNION ALL
    SELECT pseudonym, generation FROM erasures WHERE tenant_id = $1 AND pseudonym = ANY($2::text[])
) g GROUP BY pseudonym
"""
