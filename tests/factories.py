"""Valid events built directly (not through the producer library), for load and poison tests."""

import json
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from audit_producer.ids import uuid7
from audit_schemas import (
    ActionEvent,
    ActionOutcome,
    ActionStarted,
    Actor,
    Entity,
    ErrorSummary,
    ExecutionLog,
    ExecutionLogEvent,
    OutcomeEvent,
    encode,
    kafka_headers,
)
from audit_schemas.topics import audit_key


def action_event(entity_id: str, action: str = "sync", tenant: str = "acme") -> ActionEvent:
    """A valid action-started event for a resource."""
    audit_id = uuid7()
    now = datetime.now(UTC)
    entity = Entity(id=entity_id, model="resource")
    data = ActionStarted(
        audit_id=audit_id, tenant_id=tenant, action=action, entity=entity, actor=Actor.system("load"), started_at=now
    )
    return ActionEvent(
        id=audit_id,
        source="tests",
        subject=f"resource/{entity_id}",
        time=now,
        partitionkey=audit_key(tenant, "resource", entity_id),
        data=data,
    )


async def publish_events(bootstrap: str, topic: str, count: int, entities: int = 50) -> list[str]:
    """Publish `count` action events over `entities` keys as fast as the broker acknowledges; return audit ids."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        ids = []
        futures = []
        for i in range(count):
            event = action_event(f"e-{i % entities}")
            ids.append(str(event.data.audit_id))
            key = (event.partitionkey or "").encode()
            futures.append(await producer.send(topic, encode(event), key=key, headers=kafka_headers(event)))
        for future in futures:
            await future
        return ids
    finally:
        await producer.stop()


async def send_raw(bootstrap: str, topic: str, records: list[tuple[bytes, int]]) -> None:
    """Send raw values (valid or not) to explicit partitions, in order, waiting for each ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value, partition in records:
            await producer.send_and_wait(topic, value, key=b"acme/resource/x", partition=partition)
    finally:
        await producer.stop()


def outcome_event(start: ActionEvent, status: str = "succeeded", **data: object) -> OutcomeEvent:
    """A valid outcome for `start` (same audit id, tenant, action and entity)."""
    s = start.data
    now = datetime.now(UTC)
    error = ErrorSummary(type="RuntimeError", message="boom") if status == "failed" else None
    outcome = ActionOutcome.model_validate(
        {
            "audit_id": s.audit_id,
            "tenant_id": s.tenant_id,
            "action": s.action,
            "entity": s.entity,
            "status": status,
            "error": error,
            "finished_at": now,
            "duration_ms": 1.5,
            **data,
        }
    )
    return OutcomeEvent(
        id=uuid7(), source="tests", subject=start.subject, time=now, partitionkey=start.partitionkey, data=outcome
    )


def log_event(start: ActionEvent, message: str = "working", **fields: object) -> ExecutionLogEvent:
    """A valid execution-log line of `start`'s action."""
    now = datetime.now(UTC)
    line = ExecutionLog(
        log_id=uuid7(),
        trace_id=start.data.trace_id,
        tenant_id=start.data.tenant_id,
        level="info",
        logger="tests",
        message=message,
        fields=fields,
        logged_at=now,
    )
    return ExecutionLogEvent(id=line.log_id, source="tests", time=now, data=line)


def _mutated(event: ActionEvent | OutcomeEvent | ExecutionLogEvent, path: str, value: object) -> bytes:
    """The event's JSON with the field at dotted `path` set to `value` (NaN/Infinity written as JS literals)."""
    raw = json.loads(encode(event))
    *parents, last = path.split(".")
    node = raw
    for name in parents:
        node = node[name]
    node[last] = value
    return json.dumps(raw, ensure_ascii=True, allow_nan=True).encode()


def poison_records() -> dict[str, tuple[str, bytes]]:
    """Name → (kind, raw record value) for inputs PostgreSQL cannot store; kind is `audit` or `log`."""
    start = action_event("poison-host")
    failed = outcome_event(start, "failed")
    done = outcome_event(start, changes={"replicas": {"before": 1, "after": 2}})
    line = log_event(start, ratio=0.5)
    return {
        "nul_entity_id": ("audit", _mutated(start, "data.entity.id", "a\x00b")),
        "nul_display_name": ("audit", _mutated(start, "data.actor.display_name", "Ada\x00")),
        "nul_correlation_id": ("audit", _mutated(start, "data.correlation_id", "c-\x00")),
        "nul_error_message": ("audit", _mutated(failed, "data.error.message", "boom\x00")),
        "nul_log_message": ("log", _mutated(line, "data.message", "x\x00y")),
        "nul_in_change_set": ("audit", _mutated(done, "data.changes", {"k": {"before": "a\x00", "after": 1}})),
        "nan_in_change_set": ("audit", _mutated(done, "data.changes", {"k": {"before": float("nan"), "after": 1}})),
        "nan_log_field": ("log", _mutated(line, "data.fields", {"ratio": float("nan")})),
        "infinity_log_field": ("log", _mutated(line, "data.fields", {"ratio": float("inf")})),
        "nul_log_field_key": ("log", _mutated(line, "data.fields", {"k\x00": 1})),
        "revision_over_bigint": ("audit", _mutated(done, "data.revision", 2**63)),
        "lone_surrogate_entity_id": ("audit", _mutated(start, "data.entity.id", "\ud800")),
        "time_out_of_utc_range": ("audit", _mutated(start, "time", "0001-01-01T00:00:00+01:00")),
    }


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record of `topic` up to its end offsets now, in partition then offset order."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(partitions)
        found: list[ConsumerRecord] = []
        for _ in range(1000):  # bounded: each round returns what the broker has ready
            positions = [await consumer.position(tp) for tp in partitions]
            if all(at >= ends[tp] for at, tp in zip(positions, partitions, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend(r for r in records if r.offset < ends[TopicPartition(r.topic, r.partition)])
        return sorted(found, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def send_keyed(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> list[tuple[int, int]]:
    """Send raw values with their keys (the default partitioner places them); return (partition, offset) each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        placed = []
        for value, key in records:
            sent = await producer.send_and_wait(topic, value, key=key)
            placed.append((sent.partition, sent.offset))
        return placed
    finally:
        await producer.stop()


def key_of(event: ActionEvent | OutcomeEvent | ExecutionLogEvent) -> bytes:
    """The record key the producer library would use."""
    if isinstance(event, ExecutionLogEvent):
        return event.data.trace_id.encode()
    return (event.partitionkey or "").encode()
