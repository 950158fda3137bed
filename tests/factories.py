"""Valid events built directly (not through the producer library), for load and poison tests."""

from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from audit_producer.ids import uuid7
from audit_schemas import ActionEvent, ActionStarted, Actor, Entity, encode, kafka_headers
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
