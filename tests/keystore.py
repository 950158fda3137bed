"""A key store of one test's own (schema `<test>_keys`, owned by the key-store role) and a producer that seals
through it: its signing key registered for the tenants, its key service the query API under test."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr

from audit_producer import Settings as ProducerSettings
from audit_query.config import Settings as QuerySettings
from audit_query.keystore.wrapping import Kek
from audit_schemas import signing
from audit_schemas.checkpoint import NoteSigner, NoteVerifier

KEY_ROLE = ("audit_keys", "audit_keys")


@dataclass(frozen=True)
class KeyStoreFixture:
    schema: str
    url: str
    kek: str

    def query(self, settings: QuerySettings, **changes: object) -> QuerySettings:
        """The query API's settings with this key store."""
        return settings.model_copy(
            update={
                "keystore_url": self.url,
                "keystore_schema": self.schema,
                "keystore_kek": SecretStr(self.kek),
                **changes,
            }
        )


def role_dsn(dsn: str, user: str, password: str) -> str:
    """`dsn` logging in as another role."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@contextlib.asynccontextmanager
async def key_store(admin_dsn: str, query_dsn: str, name: str) -> AsyncIterator[KeyStoreFixture]:
    """A fresh key-store schema for this test (made by the superuser, owned by the key-store role), dropped after."""
    schema = f"{name}_keys"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(
            f"CREATE SCHEMA {schema} AUTHORIZATION audit_keys; REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"
        )
    finally:
        await conn.close()
    try:
        yield KeyStoreFixture(schema, role_dsn(query_dsn, *KEY_ROLE), Kek.generate().text())
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


async def register_producer(
    owner_dsn: str,
    control: str,
    source: str,
    tenants: list[str] | None,
    also: tuple[str, ...] = ("demo-history", "tests"),
) -> str:
    """A new signing key for `source` (and the sources the shared history imports under), registered in the
    producer-key registry for `tenants`; its signer key."""
    signer, key = NoteSigner.generate(source)
    verifier = NoteVerifier.parse(signer.verifier_key)
    public = verifier.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute(
            f"INSERT INTO {control}.producer_keys (key_id, name, public_key, sources, tenants)"
            " VALUES ($1, $2, $3, $4, $5)",
            signing.key_id(source, public),
            source,
            public,
            [source, *also],
            tenants,
        )
    finally:
        await conn.close()
    return key


def sealing_producer(settings: ProducerSettings, signing_key: str, key_service: str, spool: Path) -> ProducerSettings:
    """Producer settings that sign with `signing_key` and seal through the key service at `key_service`."""
    return settings.model_copy(
        update={"signing_key": SecretStr(signing_key), "key_service_url": key_service, "spool_dir": spool}
    )
