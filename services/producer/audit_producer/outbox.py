"""Transactional outbox: audit events written in the service's own PostgreSQL transaction, relayed to Kafka.

For services that keep their state in PostgreSQL: the start event is a row in the same transaction as the
entity change, so **the durability point is the caller's commit** (this replaces fail-closed-on-Kafka for
this mode: the body runs whether or not Kafka answers). `OutboxRelay` publishes committed rows in order
and deletes them only after Kafka acknowledged them.
"""

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from audit_producer.context import bind_trace
from audit_producer.errors import InvalidActionError, PublishError
from audit_producer.producer import AuditProducer
from audit_producer.publisher import EventPublisher
from audit_producer.scope import ActionScope
from audit_schemas import (
    Action,
    ActionEvent,
    Actor,
    Entity,
    OutcomeEvent,
    RequestContext,
    encode,
    kafka_headers,
    postgres,
)

log = structlog.get_logger(__name__, logger_name=__name__)  # named, so the log shipper never ships its lines

Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection, or one borrowed from a pool."""

_LOCK_NAMESPACE: Final = 0x41554454  # "AUDT", as the projector's advisory locks
_IDENTIFIER: Final = r"^[a-z_][a-z0-9_]{0,62}$"

OUTBOX_DDL: Final = """
CREATE TABLE IF NOT EXISTS {table} (
    id           bigserial   PRIMARY KEY,
    txid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    topic        text        NOT NULL,
    record_key   bytea       NOT NULL,
    record_value bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now()
)
"""
"""The outbox table: add it to the service's own migrations (or call `install_outbox`)."""


def _qualified(schema: str, table: str) -> str:
    for name in (schema, table):
        if not re.match(_IDENTIFIER, name):
            raise InvalidActionError(f"{name!r} is not a plain lower-case SQL identifier")
    return f'"{schema}"."{table}"'


async def install_outbox(conn: Conn, schema: str = "public", table: str = "audit_outbox") -> None:
    """Create the outbox table if it is missing (idempotent)."""
    await conn.execute(OUTBOX_DDL.format(table=_qualified(schema, table)))


class Outbox:
    """Writes an action's events into the outbox table over the caller's connection and transaction."""

    def __init__(
        self, producer: AuditProducer, pool: asyncpg.Pool, *, schema: str = "public", table: str = "audit_outbox"
    ) -> None:
        self._producer = producer
        self._pool = pool
        self._table = _qualified(schema, table)
        self._topic = producer.settings.audit_topic

    @contextlib.asynccontextmanager
    async def transaction(
        self,
        conn: Conn,
        action: Action | str,
        *,
        entity: Entity,
        actor: Actor,
        tenant: str,
        request: RequestContext | None = None,
        correlation_id: str | None = None,
    ) -> AsyncIterator[ActionScope]:
        """Open a transaction on `conn` holding the start event, the body's writes and the outcome.

        If the body raises or the commit fails, the transaction rolls back and the start and a failed outcome
        are written in a new transaction, so the failure is still recorded.
        """
        if conn.is_in_transaction():
            raise InvalidActionError("outbox.transaction() opens the transaction itself: call it outside one")
        started, scope, trace = await self._producer.begin(action, entity, actor, tenant, request, correlation_id)
        clock = time.perf_counter()
        try:
            with bind_trace(trace):
                async with conn.transaction():
                    await self._write(conn, started)
                    yield scope
                    await self._write(conn, self._producer._outcome_event(started, scope, clock, None))
        except GeneratorExit:
            raise
        except BaseException as e:
            await self._record_failure(started, scope, clock, e)
            raise

    @contextlib.asynccontextmanager
    async def action(
        self,
        conn: Conn,
        action: Action | str,
        *,
        entity: Entity,
        actor: Actor,
        tenant: str,
        request: RequestContext | None = None,
        correlation_id: str | None = None,
    ) -> AsyncIterator[ActionScope]:
        """Record an action inside a transaction the caller already opened on `conn`.

        A body that raises is recorded as failed in a separate transaction (the caller's will roll back). A
        rollback *after* this block (the caller's own later failure) takes the action's rows with it, body
        writes included; use `transaction()` when the action's non-database effects must be recorded even then.
        """
        if not conn.is_in_transaction():
            raise InvalidActionError("outbox.action() runs inside your transaction: open one first")
        started, scope, trace = await self._producer.begin(action, entity, actor, tenant, request, correlation_id)
        clock = time.perf_counter()
        await self._write(conn, started)
        with bind_trace(trace):
            try:
                yield scope
            except GeneratorExit:
                raise
            except BaseException as e:
                await self._record_failure(started, scope, clock, e)
                raise
        await self._write(conn, self._producer._outcome_event(started, scope, clock, None))

    async def _record_failure(
        self, started: ActionEvent, scope: ActionScope, clock: float, error: BaseException
    ) -> None:
        """The caller's transaction is gone: write the start and a failed outcome in a transaction of our own."""
        outcome = self._producer._outcome_event(started, scope, clock, error)
        try:
            async with self._pool.acquire() as own, own.transaction():
                await self._write(own, started)
                await self._write(own, outcome)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as e:
            error.add_note(f"audit trail: the failure of action {started.data.audit_id} was not recorded: {e}")
            log.error("audit_outbox_failure_not_recorded", audit_id=str(started.data.audit_id), error=str(e))

    async def _write(self, conn: Conn, event: ActionEvent | OutcomeEvent) -> None:
        headers = json.dumps([[k, base64.b64encode(v).decode()] for k, v in kafka_headers(event)])
        await conn.execute(
            f"INSERT INTO {self._table} (topic, record_key, record_value, headers) VALUES ($1, $2, $3, $4)",
            self._topic,
            (event.partitionkey or "").encode(),
            encode(event),
            headers,
        )


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class OutboxRelay:
    """Publishes committed outbox rows to Kafka in id order and deletes them once acknowledged.

    Only rows of transactions that committed before every still-running transaction began are read
    (`txid < pg_snapshot_xmin(pg_current_snapshot())`): a transaction that commits later with a smaller id
    can never be skipped. Exactly one relay publishes at a time (a session advisory lock); others wait.
    """

    def __init__(
        self,
        dsn: str,
        publisher: EventPublisher,
        *,
        schema: str = "public",
        table: str = "audit_outbox",
        batch: int = 500,
        poll_interval_s: float = 0.2,
    ) -> None:
        self._dsn = dsn
        self._publisher = publisher
        self._table = _qualified(schema, table)
        self._lock_key = f"{schema}.{table}"
        self._batch = batch
        self._poll = poll_interval_s
        self._conn: asyncpg.Connection | None = None
        self.leader = False
        self.published = 0

    async def __aenter__(self) -> "OutboxRelay":
        self._conn = await postgres.connect(self._dsn, server_settings={"application_name": "audit-outbox-relay"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        self.leader = False
        if conn is not None:
            await conn.close()  # also releases the advisory lock

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; a lost connection is the caller's to restart."""
        while not stop.is_set():
            sent = await self.relay_once()
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll)

    async def relay_once(self) -> int:
        """Take the lead if free, publish one batch of committed rows, delete them; return how many."""
        conn = self._connection()
        if not self.leader:
            self.leader = bool(
                await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _LOCK_NAMESPACE, self._lock_key)
            )
            if not self.leader:
                return 0
        rows = [
            _Row(r["id"], r["topic"], r["record_key"], r["record_value"], _headers(r["headers"]))
            for r in await conn.fetch(
                f"""SELECT id, topic, record_key, record_value, headers FROM {self._table}
                     WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
                     ORDER BY id LIMIT $1""",
                self._batch,
            )
        ]
        done: list[int] = []
        try:
            for row in rows:  # one at a time: acks=all per record keeps the order on any retry
                await self._publisher.publish(row.topic, row.key, row.value, row.headers)
                done.append(row.id)
        except PublishError as e:
            log.warning("audit_outbox_publish_failed", published=len(done), waiting=len(rows) - len(done), error=str(e))
        if done:
            await conn.execute(f"DELETE FROM {self._table} WHERE id = ANY($1::bigint[])", done)
            self.published += len(done)
        return len(done)

    def _connection(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("use `async with OutboxRelay(...)`")
        return self._conn


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    return [(k, base64.b64decode(v)) for k, v in json.loads(raw)]
