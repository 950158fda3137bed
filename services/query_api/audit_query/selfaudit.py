"""The query API records its own actions (token changes, exports) through the audit trail itself."""

import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from audit_query.config import AdminSettings
from audit_query.errors import QueryError, kafka_refusal
from audit_schemas import (
    Action,
    ActionEvent,
    ActionOutcome,
    ActionStarted,
    Actor,
    Entity,
    OutcomeEvent,
    OutcomeStatus,
    encode,
    kafka_headers,
)
from audit_schemas.checkpoint import CheckpointError
from audit_schemas.topics import audit_key

SOURCE = "audit-query"


class SelfAuditError(QueryError):
    """An action of the API itself could not be recorded."""

    status_code = 503


def _uuid7() -> uuid.UUID:
    """Time-ordered id (as the producer library's), so audit ids sort by time."""
    ms = int(datetime.now(UTC).timestamp() * 1000)
    rand = int.from_bytes(uuid.uuid4().bytes[6:], "big") & ((1 << 74) - 1)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def events(
    action: Action, model: str, entity_id: str, actor: Actor, tenant: str, changes: dict[str, object] | None = None
) -> tuple[ActionEvent, OutcomeEvent]:
    """A completed action as its start and succeeded outcome events."""
    audit_id = _uuid7()
    now = datetime.now(UTC)
    entity = Entity(id=entity_id, model=model)
    key = audit_key(tenant, model, entity_id)
    start = ActionEvent(
        id=audit_id,
        source=SOURCE,
        subject=f"{model}/{entity_id}",
        time=now,
        partitionkey=key,
        data=ActionStarted(
            audit_id=audit_id, tenant_id=tenant, action=action, entity=entity, actor=actor, started_at=now
        ),
    )
    outcome = OutcomeEvent(
        id=_uuid7(),
        source=SOURCE,
        subject=start.subject,
        time=now,
        partitionkey=key,
        data=ActionOutcome.model_validate(
            {
                "audit_id": audit_id,
                "tenant_id": tenant,
                "action": action,
                "entity": entity,
                "status": OutcomeStatus.SUCCEEDED,
                "changes": {k: {"before": None, "after": v} for k, v in (changes or {}).items()} or None,
                "finished_at": now,
                "duration_ms": 0.0,
            }
        ),
    )
    return start, outcome


async def record(settings: AdminSettings, start: ActionEvent, outcome: OutcomeEvent, timeout_s: float = 10) -> None:
    """Publish both events (signed with the API's key, when it has one) with acks=all; SelfAuditError when Kafka
    does not acknowledge them."""
    topic = settings.topics[0]
    try:
        signer = settings.event_signer()
    except (OSError, CheckpointError) as e:
        raise SelfAuditError(f"cannot load the API's signing key: {e}") from e
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=int(timeout_s * 1000),
        **settings.kafka.client_options(),
    )
    try:
        await producer.start()
        for event in (start, outcome):
            key, value = (event.partitionkey or "").encode(), encode(event)
            headers = kafka_headers(event)
            if signer is not None:
                headers = signer.sign_into(topic, key, value, headers)
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    except (KafkaError, OSError) as e:
        reason = await kafka_refusal(e, settings.kafka, settings.bootstrap_servers)
        raise SelfAuditError(f"the audit record of this change could not be published: {reason}") from e
    finally:
        await producer.stop()
