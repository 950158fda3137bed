"""Migrations: concurrent starts apply each file once; an edited applied file is refused."""

import asyncio
from uuid import uuid4

import asyncpg
import pytest

from audit_projector.errors import MigrationError
from audit_projector.migrations import Migration, bundled, migrate
from tests.conftest import Stack

pytestmark = [pytest.mark.postgres]


async def test_concurrent_migrations_apply_each_file_once(stack: Stack) -> None:
    schema = f"m{uuid4().hex[:12]}"
    control = f"{schema}_control"
    results = await asyncio.gather(*(migrate(stack.owner_dsn, schema, control_schema=control) for _ in range(4)))
    applied = sorted(v for versions in results for v in versions)
    everything = [f"control/{m.version}" for m in bundled("control")] + [m.version for m in bundled()]
    assert applied == sorted(everything), "each file applied by exactly one runner"
    conn = await asyncpg.connect(stack.owner_dsn)
    try:
        rows = await conn.fetch(f"SELECT version FROM {schema}.schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == [m.version for m in bundled()]
    assert await migrate(stack.owner_dsn, schema, control_schema=control) == []


async def test_edited_migration_is_refused(stack: Stack) -> None:
    schema = f"m{uuid4().hex[:12]}"
    await migrate(stack.owner_dsn, schema)
    first = bundled()[0]
    edited = [Migration(first.version, first.name, first.sql + "\n-- edited"), *bundled()[1:]]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(stack.owner_dsn, schema, edited)


async def test_service_role_cannot_migrate(stack: Stack) -> None:
    with pytest.raises(MigrationError):
        await migrate(stack.projector_dsn, f"m{uuid4().hex[:12]}")
