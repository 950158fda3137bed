"""Tokens and console sessions in the control schema."""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from audit_query.auth import Principal
from audit_query.errors import store_errors
from audit_query.repository.sql import quoted


class ControlRepository:
    """Tokens and sessions in the control schema (the service's role reads tokens and keeps sessions), on the
    primary: a session opened or a token revoked a moment ago counts at once, whatever a standby has replayed."""

    def __init__(
        self, pool: asyncpg.Pool, schema: str, on_error: Callable[[BaseException], None] = lambda _: None
    ) -> None:
        self._pool = pool
        self._schema = quoted(schema)
        self._on_error = on_error

    async def token(self, hashed: bytes) -> tuple[Principal, bool] | None:
        """The live token with this hash, and whether its last use is over a minute old (None: no such token)."""
        rows = await self._fetch(
            f"""SELECT id, name, scopes, tenants, expires_at,
                       last_used_at IS NULL OR last_used_at < now() - interval '1 minute' AS stale
                  FROM {self._schema}.api_tokens
                 WHERE secret_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
            hashed,
        )
        if not rows:
            return None
        r = rows[0]
        tenants = None if r["tenants"] is None else frozenset(r["tenants"])
        principal = Principal(r["name"], "token", frozenset(r["scopes"]), tenants, r["id"], r["expires_at"])
        return principal, r["stale"]

    async def touch(self, token_id: UUID) -> None:
        """Record that a token was used (at most once a minute, by the caller's choice)."""
        await self._fetch(f"UPDATE {self._schema}.api_tokens SET last_used_at = now() WHERE id = $1", token_id)

    async def open_session(self, hashed: bytes, principal: Principal, expires_at: datetime) -> None:
        """Store a console session by the hash of its id, ending at `expires_at`."""
        await self._fetch(
            f"INSERT INTO {self._schema}.sessions (id_hash, principal, expires_at) VALUES ($1, $2, $3)",
            hashed,
            json.dumps(principal.as_json()),
            expires_at,
        )

    async def session(self, hashed: bytes) -> Principal | None:
        """The principal of a live session, or None."""
        rows = await self._fetch(
            f"""SELECT s.principal FROM {self._schema}.sessions s
                 WHERE s.id_hash = $1 AND s.ended_at IS NULL AND s.expires_at > now()""",
            hashed,
        )
        if not rows:
            return None
        principal = Principal.from_json(json.loads(rows[0]["principal"]))
        if principal.token_id is not None and not await self._token_live(principal.token_id):
            return None  # the token it was opened with has since been revoked or expired
        return principal

    async def _token_live(self, token_id: UUID) -> bool:
        rows = await self._fetch(
            f"""SELECT 1 FROM {self._schema}.api_tokens
                 WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
            token_id,
        )
        return bool(rows)

    async def end_session(self, hashed: bytes) -> None:
        """Sign out: the session ends server-side, whatever the browser keeps."""
        await self._fetch(
            f"UPDATE {self._schema}.sessions SET ended_at = now() WHERE id_hash = $1 AND ended_at IS NULL", hashed
        )

    async def producer_key(self, key_id: str) -> "ProducerKey | None":
        """A registered producer key that is valid now, or None."""
        rows = await self._fetch(
            f"SELECT public_key, tenants FROM {self._schema}.producer_keys WHERE key_id = $1"
            " AND valid_from <= now() AND (valid_until IS NULL OR valid_until > now())",
            key_id,
        )
        if not rows:
            return None
        tenants = rows[0]["tenants"]
        return ProducerKey(key_id, bytes(rows[0]["public_key"]), None if tenants is None else tuple(tenants))

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            with store_errors():
                rows: list[asyncpg.Record] = await self._pool.fetch(sql, *args)
        except Exception as e:
            self._on_error(e.__cause__ or e)
            raise
        return rows


@dataclass(frozen=True, slots=True)
class ProducerKey:
    """A producer's registered signing key and the tenants it may act for (None: every tenant)."""

    key_id: str
    public_key: bytes
    tenants: tuple[str, ...] | None

    def serves(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """An API token as listed: never its secret."""

    id: UUID
    name: str
    scopes: tuple[str, ...]
    tenants: tuple[str, ...] | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenAdmin:
    """Creates, lists and revokes API tokens over the owner's connection (`audit-query tokens`)."""

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self._conn = conn
        self._schema = quoted(schema)

    async def create(
        self,
        token_id: UUID,
        name: str,
        hashed: bytes,
        scopes: Sequence[str],
        tenants: Sequence[str] | None,
        created_by: str,
        expires_at: datetime | None,
    ) -> None:
        await self._conn.execute(
            f"""INSERT INTO {self._schema}.api_tokens (id, name, secret_hash, scopes, tenants, created_by, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            token_id,
            name,
            hashed,
            list(scopes),
            None if tenants is None else list(tenants),
            created_by,
            expires_at,
        )

    async def list(self) -> list[TokenInfo]:
        rows = await self._conn.fetch(
            f"""SELECT id, name, scopes, tenants, created_by, created_at, expires_at, last_used_at, revoked_at
                  FROM {self._schema}.api_tokens ORDER BY created_at"""
        )
        return [_token_info(r) for r in rows]

    async def live(self, hashed: bytes) -> TokenInfo | None:
        """The token with this secret hash if it is neither revoked nor expired; None otherwise."""
        row = await self._conn.fetchrow(
            f"""SELECT id, name, scopes, tenants, created_by, created_at, expires_at, last_used_at, revoked_at
                  FROM {self._schema}.api_tokens
                 WHERE secret_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
            hashed,
        )
        return None if row is None else _token_info(row)

    async def revoke(self, token_id: UUID, by: str) -> TokenInfo | None:
        """Revoke a live token; None when there is no such live token."""
        row = await self._conn.fetchrow(
            f"""UPDATE {self._schema}.api_tokens SET revoked_at = now(), revoked_by = $2
                 WHERE id = $1 AND revoked_at IS NULL
             RETURNING id, name, scopes, tenants, created_by, created_at, expires_at, last_used_at, revoked_at""",
            token_id,
            by,
        )
        return None if row is None else _token_info(row)


def _token_info(r: asyncpg.Record) -> TokenInfo:
    tenants = None if r["tenants"] is None else tuple(r["tenants"])
    return TokenInfo(
        r["id"],
        r["name"],
        tuple(r["scopes"]),
        tenants,
        r["created_by"],
        r["created_at"],
        r["expires_at"],
        r["last_used_at"],
        r["revoked_at"],
    )
