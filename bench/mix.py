"""The realistic mix for the ingest benches, generated from a fixed seed: each action a start, an outcome (about 5 %
failed) and three execution-log lines, over a few tenants, actors and entities; plus one poison record and one
identical re-send, as real topics hold."""

import asyncio
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from aiokafka import AIOKafkaProducer

from audit_schemas import (
    Action,
    ActionEvent,
    ActionOutcome,
    ActionStarted,
    Actor,
    Entity,
    ErrorSummary,
    ExecutionLog,
    ExecutionLogEvent,
    LogLevel,
    OutcomeEvent,
    OutcomeStatus,
    encode,
    kafka_headers,
)
from audit_schemas.topics import audit_key

SEED = 7
TENANTS = ("acme", "globex", "initech", "umbrella")
LINES_PER_ACTION = 3


@dataclass(frozen=True)
class Published:
    """How many records went to each topic."""

    actions: int
    audit_records: int
    log_records: int

    @property
    def records(self) -> int:
        return self.audit_records + self.log_records


def _uuid7(rng: random.Random, ms: int) -> UUID:
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)
    return UUID(int=value)


Record = tuple[bytes, bytes, list[tuple[str, bytes]]]
"""A Kafka record as (key, value, headers)."""


@dataclass(frozen=True)
class ActionRecords:
    """One action of the mix, encoded: its audit records (start, outcome) and its log records."""

    audit_id: UUID
    audit: list[Record]
    lines: list[Record]


def action_records(
    rng: random.Random, start_ms: int, *, actor: Actor | None = None, took_ms: int | None = None
) -> ActionRecords:
    """One action of the mix started at `start_ms`; `actor` and `took_ms` (its duration) instead of drawn ones."""
    tenant = rng.choice(TENANTS)
    entity = Entity(id=f"res-{rng.randrange(2000):04d}", model=rng.choice(("resource", "template", "integration")))
    who = rng.randrange(20)
    if actor is None:
        actor = Actor.user(f"u-{who}", f"User {who}") if who < 16 else Actor.service_account(f"sa-{who}", "CI")
    action = rng.choice(list(Action))
    at = datetime.fromtimestamp(start_ms / 1000, UTC)
    audit_id = _uuid7(rng, start_ms)
    key = audit_key(tenant, entity.model, entity.id)
    start = ActionEvent(
        id=audit_id, source="bench", subject=f"{entity.model}/{entity.id}", time=at, partitionkey=key,
        data=ActionStarted(audit_id=audit_id, tenant_id=tenant, action=action, entity=entity, actor=actor,
                           started_at=at),
    )  # fmt: skip
    failed = rng.random() < 0.05
    drawn = rng.randrange(5, 900)
    done = at + timedelta(milliseconds=drawn if took_ms is None else took_ms)
    outcome = OutcomeEvent(
        id=_uuid7(rng, int(done.timestamp() * 1000)), source="bench", subject=start.subject, time=done,
        partitionkey=key,
        data=ActionOutcome(
            audit_id=audit_id, tenant_id=tenant, action=action, entity=entity,
            status=OutcomeStatus.FAILED if failed else OutcomeStatus.SUCCEEDED,
            error=ErrorSummary(type="Timeout", message="upstream did not answer") if failed else None,
            finished_at=done, duration_ms=(done - at).total_seconds() * 1000,
        ),
    )  # fmt: skip
    lines = []
    for n in range(LINES_PER_ACTION):
        logged = at + timedelta(milliseconds=n + 1)
        line = ExecutionLog(
            log_id=_uuid7(rng, int(logged.timestamp() * 1000)), trace_id=audit_id.hex, tenant_id=tenant,
            level=LogLevel.WARNING if failed and n == 2 else LogLevel.INFO, logger="bench.worker",
            message=f"step {n}", fields={"step": n, "entity": entity.id}, logged_at=logged,
        )  # fmt: skip
        event = ExecutionLogEvent(id=line.log_id, source="bench", time=logged, data=line)
        lines.append((audit_id.hex.encode(), encode(event), kafka_headers(event)))
    audit = [((key or "").encode(), encode(e), kafka_headers(e)) for e in (start, outcome)]
    return ActionRecords(audit_id, audit, lines)


async def publish_mix(bootstrap: str, audit_topic: str, log_topic: str, actions: int) -> Published:
    """Publish `actions` actions of the mix (times spread over the last hour), a poison record and one re-send."""
    rng = random.Random(SEED)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    audit_count = log_count = 0
    try:
        now_ms = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
        pending: list[asyncio.Future[object]] = []
        first: Record | None = None
        for i in range(actions):
            made = action_records(rng, now_ms + i * 3_600_000 // max(1, actions))
            audit, lines = made.audit, made.lines
            first = first or audit[0]
            for k, v, h in audit:
                pending.append(await producer.send(audit_topic, v, key=k, headers=h))
            for k, v, h in lines:
                pending.append(await producer.send(log_topic, v, key=k, headers=h))
            audit_count, log_count = audit_count + 2, log_count + len(lines)
            if len(pending) > 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        assert first is not None
        poison = json.dumps({"specversion": "1.0", "type": "io.audittrail.action.started.v1"}).encode()
        pending.append(await producer.send(audit_topic, poison, key=b"acme/resource/poison"))
        pending.append(await producer.send(audit_topic, first[1], key=first[0], headers=first[2]))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return Published(actions, audit_count + 2, log_count)


__all__ = ["LINES_PER_ACTION", "SEED", "ActionRecords", "Published", "Record", "action_records", "publish_mix"]
