"""A PostgreSQL host that hangs (accepts TCP, answers nothing: a frozen former primary) costs the services a bounded
wait, never a stuck process: a multi-host DSN skips it within its per-host deadline, a connection to it closes
within the close deadline, and the query API shuts down while its database is frozen."""

import asyncio
import time

import pytest

from audit_projector.errors import ProjectorError
from audit_projector.repository import ProjectionRepository
from audit_schemas import postgres
from tests.conftest import Isolated, Stack, query_client
from tests.polling import eventually
from tests.relay import frozen_relay

pytestmark = [pytest.mark.postgres]


async def test_a_frozen_first_host_is_skipped_within_its_deadline(stack: Stack) -> None:
    async with frozen_relay(stack.owner_dsn) as relay:
        relay.freeze()
        frozen = relay.dsn(stack.owner_dsn)
        real = stack.owner_dsn.split("@", 1)[1].split("/", 1)[0]
        dsn = frozen.replace(f"127.0.0.1:{relay.port}", f"127.0.0.1:{relay.port},{real}") + "?connect_timeout=1"
        began = time.monotonic()
        conn = await asyncio.wait_for(postgres.connect(dsn), 10)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await postgres.close(conn)
        assert relay.accepted == 1
        assert time.monotonic() - began < 5  # one second on the frozen host, not asyncpg's whole deadline


async def test_closing_a_connection_to_a_frozen_server_is_bounded(stack: Stack) -> None:
    async with frozen_relay(stack.owner_dsn) as relay:
        conn = await postgres.connect(relay.dsn(stack.owner_dsn))
        assert await conn.fetchval("SELECT 1") == 1
        relay.freeze()
        with pytest.raises(TimeoutError):  # a statement to it gets no answer...
            await conn.fetchval("SELECT 2", timeout=0.5)
        began = time.monotonic()
        await asyncio.wait_for(postgres.close(conn, timeout_s=1), 10)  # ...and the goodbye none either
        assert conn.is_closed()
        assert time.monotonic() - began < 5


async def test_the_query_api_shuts_down_while_its_database_is_frozen(isolated: Isolated) -> None:
    async with frozen_relay(isolated.stack.query_dsn) as relay:
        settings = isolated.query.model_copy(update={"database_url": relay.dsn(isolated.stack.query_dsn)})
        token = await isolated.token()
        began = 0.0
        async with asyncio.timeout(60):
            async with query_client(settings, token) as client:
                assert (await client.get("/v1/audit/count")).status_code == 200  # a pooled connection, idle now

                async def listening() -> bool:
                    return relay.accepted >= 2  # the pool's connection and the rebuild-swap listener

                await eventually(listening, within=20)
                relay.freeze()
                began = time.monotonic()
            stopped_after = time.monotonic() - began
        assert stopped_after < 20, stopped_after  # watchers get 2 s, each pool 5 s to close, then dropped


async def test_a_projector_write_to_a_frozen_server_fails_within_its_statement_timeout(isolated: Isolated) -> None:
    settings = isolated.projector
    async with frozen_relay(isolated.stack.projector_dsn) as relay:
        repo = await ProjectionRepository.connect(
            relay.dsn(isolated.stack.projector_dsn), isolated.name, settings.group_id, "test", settings.control_schema,
            statement_timeout_s=2,
        )  # fmt: skip
        relay.freeze()
        began = time.monotonic()
        with pytest.raises(ProjectorError) as refused:
            await repo.register_key("k", 1, "v")
        failed_after = time.monotonic() - began
        await asyncio.wait_for(repo.close(), 10)
    assert refused.value.retriable  # the pipeline starts over, on whichever server answers as the primary now
    assert failed_after < 3.5, failed_after  # the statement's 2 s, not as long again for a rollback nobody answers
