"""A key service for the benches: the query API in its own process (its CPU is not the bench's) with a key store of
its own (a fresh schema owned by the key-store role), and a producer signing key registered for it; all removed
afterwards."""

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import asyncpg
import httpx
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit_projector.migrations import migrate
from audit_schemas import signing
from audit_schemas.checkpoint import NoteSigner, NoteVerifier
from bench.projector_vs_copy import BOOTSTRAP, OWNER

ADMIN = os.environ.get("AUDIT_POSTGRES_ADMIN_DSN")
QUERY = os.environ.get("AUDIT_QUERY_DSN", "postgresql://audit_query:audit_query@127.0.0.1:15432/audit")


@dataclass(frozen=True)
class KeyService:
    url: str
    signing_key: str
    """The producer's signer key, registered for every tenant."""


def _as(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{user}:{user}@{parts.netloc.rpartition('@')[2]}"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _sql(dsn: str, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def key_service(source: str) -> AsyncIterator[KeyService | None]:
    """A running key service and a producer key for `source`; None without the stack's superuser DSN."""
    if ADMIN is None:
        yield None
        return
    name = f"bench_ks_{uuid4().hex[:8]}"
    schema, control = f"{name}_keys", f"{name}_control"
    await migrate(OWNER, name, control_schema=control)
    signer, signing_key = NoteSigner.generate(source)
    public = NoteVerifier.parse(signer.verifier_key).public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = signing.key_id(source, public)
    await _sql(ADMIN, f"CREATE SCHEMA {schema} AUTHORIZATION audit_keys")
    await _sql(
        OWNER,
        f"INSERT INTO {control}.producer_keys (key_id, name, public_key, sources) VALUES ($1, $2, $3, $4)",
        key_id,
        source,
        public,
        [source],
    )
    port = _port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUDIT_QUERY_")},
        "AUDIT_QUERY_ENVIRONMENT": "development",
        "AUDIT_QUERY_DATABASE_URL": QUERY,
        "AUDIT_QUERY_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "AUDIT_QUERY_DB_SCHEMA": name,
        "AUDIT_QUERY_CONTROL_SCHEMA": control,
        "AUDIT_QUERY_KEYSTORE_URL": _as(QUERY, "audit_keys"),
        "AUDIT_QUERY_KEYSTORE_SCHEMA": schema,
        "AUDIT_QUERY_KEYSTORE_KEK": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",  # a bench's own, thrown away
        "AUDIT_QUERY_LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-query"),
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            for _ in range(300):  # bounded: 30 s
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/healthz")).status_code == 200:
                        break
                if proc.returncode is not None:
                    raise RuntimeError("the key service did not start")
                await asyncio.sleep(0.1)
        yield KeyService(url, signing_key)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        await _sql(ADMIN, f"DROP SCHEMA {schema} CASCADE; DROP SCHEMA {name} CASCADE; DROP SCHEMA {control} CASCADE")
