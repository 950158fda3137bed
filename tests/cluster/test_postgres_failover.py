"""PostgreSQL failover under load: the primary's host killed (its pg_auto_failover keeper and postgres, SIGKILL)
while actions with execution logs stream and the query API is read. The synchronous standby is promoted, the
projector reconnects through its multi-host DSN and resumes at its stored offsets, queries recover; nothing is
lost or doubled and the trees verify. Prints the time from the kill to the first projected batch and to the first
successful query."""

import asyncio
import dataclasses
import time
from uuid import uuid4

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from audit_producer import AuditProducer
from audit_projector.integrity import verify_integrity
from audit_query.auth import new_secret, secret_hash
from audit_query.repository import TokenAdmin
from audit_schemas.checkpoint import NoteSigner
from tests.cluster.conftest import HighlyAvailable
from tests.cluster.test_faults import Stream, _at_least, _settled, streaming
from tests.conftest import Stack, isolated_on, projector_running, query_server
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


async def _entries(dsn: str) -> int | None:
    """Entries on whichever node is the read-write primary now (None: none answers as one)."""
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn, timeout=2), 3)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    try:
        if await conn.fetchval("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool"):
            return None
        return int(await conn.fetchval("SELECT count(*) FROM audit_entries"))
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


async def test_the_primary_killed_fails_over_and_loses_nothing(stack: Stack, highly_available: HighlyAvailable) -> None:
    ha = highly_available
    on_ha = dataclasses.replace(
        stack, owner_dsn=ha.owner_dsn, projector_dsn=ha.projector_dsn, query_dsn=ha.query_dsn, admin_dsn=None
    )
    async with isolated_on(on_ha) as isolated:
        signer, key = NoteSigner.generate("audit-trail")
        settings = isolated.projector.model_copy(
            update={"checkpoint_key": SecretStr(key), "checkpoint_every_leaves": 50, "probe_interval_s": 0.3}
        )
        secret = new_secret()
        conn = await asyncpg.connect(ha.owner_dsn)
        try:
            await TokenAdmin(conn, isolated.query.control_schema).create(
                uuid4(), "failover", secret_hash(secret), ("audit:read",), None, "tests", None
            )
        finally:
            await conn.close()
        owner_on_schema = f"{ha.owner_dsn}&options=-csearch_path%3D{isolated.name}"
        answered: list[tuple[float, int]] = []
        stop = asyncio.Event()

        async def read(base: str) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=5, headers={"authorization": f"Bearer {secret}"}) as c:
                for _ in range(10_000):  # bounded
                    if stop.is_set():
                        return
                    try:
                        status = (await c.get("/v1/audit/count")).status_code
                    except httpx.HTTPError:
                        status = 0
                    answered.append((time.monotonic(), status))
                    await asyncio.sleep(0.1)

        async with (
            projector_running(settings),
            query_server(isolated.query) as base,
            AuditProducer("ops-service", isolated.producer) as audit,
        ):
            async with streaming(audit) as seen:
                reader = asyncio.create_task(read(base))
                promoted, first_batch, first_query, killed, victim = await _fail_over(
                    ha, seen, answered, owner_on_schema
                )
                stop.set()
                await reader
            await _settled(isolated, seen)  # the projector still runs: what was acknowledged last is projected
        assert seen.other == []
        assert seen.refused == []  # Kafka stood throughout: producers never noticed the database's failover
        conn = await asyncpg.connect(ha.owner_dsn, server_settings={"search_path": isolated.name})
        try:
            report = await verify_integrity(conn, settings.control_schema, [signer.verifier_key], settings.log_name)
        finally:
            await conn.close()
        assert report.found == 0, [str(f) for f in report.findings[:10]]
        failed = sum(1 for t, s in answered if t > killed and s != 200)
        print(
            f"primary node {victim} killed, node {promoted} promoted: first projected batch after {first_batch:.1f} s, "
            f"first successful query after {first_query:.1f} s ({failed} requests failed meanwhile); "
            f"{len(seen.acknowledged)} actions streamed, 0 lost, 0 doubled"
        )


async def _fail_over(
    ha: HighlyAvailable, seen: Stream, answered: list[tuple[float, int]], owner_dsn: str
) -> tuple[int, float, float, float, int]:
    """Kill the primary mid-stream; (promoted node, seconds to the first projected batch and to the first
    successful query, when it was killed, the node killed)."""
    await eventually(lambda: _at_least(seen, 50), within=60)
    victim = await ha.primary()
    assert victim is not None
    before = await _entries(owner_dsn) or 0
    killed = time.monotonic()
    ha.kill(victim)

    async def projected_again() -> bool:
        n = await _entries(owner_dsn)
        return n is not None and n > before

    await eventually(projected_again, within=120, interval=0.2)
    first_batch = time.monotonic() - killed

    async def promoted_node() -> int | None:
        node = await ha.primary()
        return node if node not in (None, victim) else None

    promoted = await eventually(promoted_node, within=60, interval=0.5)
    await eventually(lambda: _answered_since(answered, killed), within=120, interval=0.2)
    first_query = next(t for t, s in answered if t > killed and s == 200) - killed
    ha.start(victim)  # it rejoins as the new primary's standby
    now = len(seen.acknowledged)
    await eventually(lambda: _at_least(seen, now + 50), within=60)
    return promoted, first_batch, first_query, killed, victim


async def _answered_since(answered: list[tuple[float, int]], since: float) -> bool:
    return any(t > since and s == 200 for t, s in answered)
