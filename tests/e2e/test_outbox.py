"""Transactional outbox: the caller's commit is the durability point; the relay publishes only what committed."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from audit_producer import Actor, AuditProducer, Entity, InvalidActionError, PublishError
from audit_producer.outbox import Outbox, OutboxRelay, install_outbox
from audit_producer.publisher import KafkaPublisher
from tests.conftest import Isolated
from tests.factories import read_topic
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ACTOR = Actor.user("u-1", "Ada")


@dataclass
class Service:
    """An entity service with its own PostgreSQL schema: a resources table and the audit outbox."""

    isolated: Isolated
    schema: str
    pool: asyncpg.Pool
    audit: AuditProducer
    outbox: Outbox

    def relay(self, publisher: Any = None) -> OutboxRelay:
        return OutboxRelay(
            self.isolated.stack.owner_dsn,
            publisher or self.publisher(),
            schema=self.schema,
            poll_interval_s=0.05,
        )

    def publisher(self) -> KafkaPublisher:
        p = self.isolated.producer
        return KafkaPublisher(p.bootstrap_servers, p.publish_timeout_s, 0)

    async def outbox_ids(self) -> list[int]:
        async with self.pool.acquire() as conn:
            return [r["id"] for r in await conn.fetch(f"SELECT id FROM {self.schema}.audit_outbox ORDER BY id")]


@pytest.fixture
async def service(isolated: Isolated, tmp_path: Path) -> AsyncIterator[Service]:
    schema = f"{isolated.name}_svc"
    pool = await asyncpg.create_pool(isolated.stack.owner_dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.resources (id text PRIMARY KEY, size int NOT NULL)")
        await install_outbox(conn, schema)
    settings = isolated.producer.model_copy(update={"spool_dir": tmp_path})
    async with AuditProducer("outbox-service", settings) as audit:
        yield Service(isolated, schema, pool, audit, Outbox(audit, pool, schema=schema))
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    await pool.close()


@contextlib.asynccontextmanager
async def _relaying(svc: Service) -> AsyncIterator[OutboxRelay]:
    publisher = svc.publisher()
    await publisher.start()
    stop = asyncio.Event()
    try:
        async with svc.relay(publisher) as relay:
            task = asyncio.create_task(relay.run(stop))
            try:
                yield relay
            finally:
                stop.set()
                await task
    finally:
        await publisher.stop()


async def _status(api: httpx.AsyncClient, audit_id: UUID, status: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        response = await api.get(f"/v1/audit/{audit_id}")
        entry: dict[str, Any] | None = response.json()["entry"] if response.status_code == 200 else None
        return entry if entry and entry["outcome"]["status"] == status else None

    return await eventually(done, within=30)


async def test_the_action_commits_with_the_entity_change_and_the_relay_publishes_it(
    service: Service, projector: Any, api: httpx.AsyncClient
) -> None:
    async with service.pool.acquire() as conn:
        async with service.outbox.transaction(
            conn, "create", entity=Entity(id="r-1", model="resource"), actor=ACTOR, tenant="acme"
        ) as act:
            await conn.execute(f"INSERT INTO {service.schema}.resources VALUES ('r-1', 3)")
            act.change("size", None, 3)
        # A crash now (before any relay ran) loses nothing: both events are committed rows.
        assert len(await service.outbox_ids()) == 2
    async with _relaying(service):
        entry = await _status(api, act.audit_id, "succeeded")
        await eventually(lambda: _empty(service))
    assert entry["outcome"]["changes"] == {"size": {"before": None, "after": 3}}


async def _empty(service: Service) -> bool:
    return not await service.outbox_ids()


async def test_a_body_that_fails_rolls_back_its_work_but_its_failure_is_recorded(
    service: Service, projector: Any, api: httpx.AsyncClient
) -> None:
    seen: list[UUID] = []

    async def update(conn: Any) -> None:
        async with service.outbox.transaction(
            conn, "update", entity=Entity(id="r-2", model="resource"), actor=ACTOR, tenant="acme"
        ) as act:
            seen.append(act.audit_id)
            await conn.execute(f"INSERT INTO {service.schema}.resources VALUES ('r-2', 1)")
            raise RuntimeError("quota exceeded")

    async with service.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="quota"):
            await update(conn)
        assert await conn.fetchval(f"SELECT count(*) FROM {service.schema}.resources") == 0
    async with _relaying(service):
        error = (await _status(api, seen[0], "failed"))["outcome"]["error"]
    assert error == {"type": "RuntimeError", "message": "quota exceeded"}


async def test_a_commit_that_fails_after_the_body_is_recorded_as_failed(
    service: Service, projector: Any, api: httpx.AsyncClient
) -> None:
    async with service.pool.acquire() as conn:
        await conn.execute(
            f"""CREATE TABLE {service.schema}.quotas (
                    id text PRIMARY KEY,
                    resource text REFERENCES {service.schema}.resources DEFERRABLE INITIALLY DEFERRED)"""
        )
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with service.outbox.transaction(
                conn, "create", entity=Entity(id="q-1", model="quota"), actor=ACTOR, tenant="acme"
            ) as act:
                await conn.execute(f"INSERT INTO {service.schema}.quotas VALUES ('q-1', 'no-such-resource')")
    async with _relaying(service):
        error = (await _status(api, act.audit_id, "failed"))["outcome"]["error"]
    assert error["type"] == "ForeignKeyViolationError"


async def test_a_rolled_back_transaction_publishes_nothing_of_its_own(service: Service) -> None:
    async def update_then_fail(conn: Any) -> None:
        async with conn.transaction():
            async with service.outbox.action(
                conn, "update", entity=Entity(id="r-3", model="resource"), actor=ACTOR, tenant="acme"
            ):
                await conn.execute(f"INSERT INTO {service.schema}.resources VALUES ('r-3', 1)")
            _ = 1 / 0  # the caller's own failure after the action: everything rolls back

    async with service.pool.acquire() as conn:
        with pytest.raises(ZeroDivisionError):
            await update_then_fail(conn)
        with pytest.raises(InvalidActionError, match="inside your transaction"):
            async with service.outbox.action(
                conn, "update", entity=Entity(id="r-3", model="resource"), actor=ACTOR, tenant="acme"
            ):
                pass
    assert await service.outbox_ids() == []
    async with service.relay() as relay:
        await relay._publisher.start()
        try:
            assert await relay.relay_once() == 0
        finally:
            await relay._publisher.stop()


async def test_transactions_committing_out_of_id_order_are_published_in_id_order_and_none_skipped(
    service: Service,
) -> None:
    """T1 writes first (smaller ids) but commits last: the relay publishes nothing of T2 while T1 runs,
    then both, in id order. Polling `id > last_sent` would have skipped T1's rows for ever."""
    entity = Entity(id="r-ord", model="resource")
    t1 = await service.pool.acquire()
    t2 = await service.pool.acquire()
    publisher = service.publisher()
    await publisher.start()
    try:
        tx1 = t1.transaction()
        await tx1.start()
        async with service.outbox.action(t1, "create", entity=entity, actor=ACTOR, tenant="acme") as first:
            pass
        async with service.outbox.transaction(t2, "update", entity=entity, actor=ACTOR, tenant="acme") as second:
            pass  # commits now, with larger ids
        async with service.relay(publisher) as relay:
            assert await relay.relay_once() == 0, "T2 committed, but T1 (older) still runs: wait"
            await tx1.commit()
            assert await relay.relay_once() == 4
            assert await relay.relay_once() == 0
    finally:
        await publisher.stop()
        await service.pool.release(t1)
        await service.pool.release(t2)
    records = await read_topic(service.isolated.stack.bootstrap, service.isolated.producer.audit_topic)
    ids = [_audit_id(r.value) for r in records]
    assert ids == [first.audit_id, first.audit_id, second.audit_id, second.audit_id]


def _audit_id(value: bytes) -> UUID:
    return UUID(json.loads(value)["data"]["audit_id"])


class _CrashAfterPublishing:
    """A publisher port over the real one that dies after its Nth acknowledged record (before the delete)."""

    def __init__(self, real: KafkaPublisher, after: int) -> None:
        self._real = real
        self._left = after

    async def start(self) -> None:
        await self._real.start()

    async def stop(self, timeout_s: float | None = None) -> None:
        await self._real.stop(timeout_s)

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        await self._real.publish(topic, key, value, headers)
        self._left -= 1
        if self._left == 0:
            raise asyncio.CancelledError  # the process is killed right after Kafka acknowledged

    async def enqueue(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        return await self._real.enqueue(topic, key, value, headers)


async def test_a_relay_killed_between_publish_and_delete_loses_nothing_and_doubles_nothing(
    service: Service, projector: Any, api: httpx.AsyncClient
) -> None:
    async with (
        service.pool.acquire() as conn,
        service.outbox.transaction(
            conn, "sync", entity=Entity(id="i-1", model="integration"), actor=ACTOR, tenant="acme"
        ) as act,
    ):
        pass
    crashing = _CrashAfterPublishing(service.publisher(), after=2)
    await crashing.start()
    try:
        async with service.relay(crashing) as relay:
            with pytest.raises(asyncio.CancelledError):
                await relay.relay_once()
    finally:
        await crashing.stop()
    assert len(await service.outbox_ids()) == 2, "published but not deleted: sent again by the next relay"
    async with _relaying(service):
        await eventually(lambda: _empty(service))
        await _status(api, act.audit_id, "succeeded")
    body = (await api.get("/v1/audit", params={"entity_id": "i-1"})).json()
    assert body["count"] == 1, "the re-sent start is an identical duplicate: one entry"


async def test_only_one_relay_publishes_at_a_time(service: Service) -> None:
    for i in range(5):
        async with (
            service.pool.acquire() as conn,
            service.outbox.transaction(
                conn, "sync", entity=Entity(id=f"i-{i}", model="integration"), actor=ACTOR, tenant="acme"
            ),
        ):
            pass
    publisher = service.publisher()
    await publisher.start()
    try:
        async with service.relay(publisher) as a, service.relay(publisher) as b:
            sent_a = await a.relay_once()
            sent_b = await b.relay_once()
            assert (a.leader, b.leader) == (True, False)
            assert (sent_a, sent_b) == (10, 0)
    finally:
        await publisher.stop()
    records = await read_topic(service.isolated.stack.bootstrap, service.isolated.producer.audit_topic)
    assert len(records) == 10


async def test_the_relay_reports_a_broker_it_cannot_reach(service: Service) -> None:
    async with (
        service.pool.acquire() as conn,
        service.outbox.transaction(
            conn, "sync", entity=Entity(id="i-x", model="integration"), actor=ACTOR, tenant="acme"
        ),
    ):
        pass
    unreachable = KafkaPublisher("127.0.0.1:1", 0.5, 0)
    with pytest.raises(PublishError):
        await unreachable.start()
    async with service.relay(unreachable) as relay:
        assert await relay.relay_once() == 0
    assert len(await service.outbox_ids()) == 2, "nothing deleted that Kafka did not acknowledge"
