"""Topic names, partitioning and the CloudEvents types carried on them."""

from typing import Final

AUDIT_TOPIC: Final = "audit.events.v1"
"""Action and outcome events; key `tenant/entity_model/entity_id` keeps one entity's history in order."""

EXECUTION_LOG_TOPIC: Final = "audit.execution-logs.v1"
"""Execution-log lines; key is the trace_id so one action's lines stay in order."""

DEAD_LETTER_TOPIC: Final = "audit.dead-letter.v1"
"""Messages the projector could not accept, with the reason and their source coordinates in headers."""

CHECKPOINT_TOPIC: Final = "audit.checkpoints.v1"
"""Signed checkpoints of every partition's Merkle tree (C2SP signed notes), key `<origin>`."""

DEFAULT_PARTITIONS: Final = 6
"""Fixed partition count: changing it later would move entities between partitions and break order."""

TOPIC_CONFIG: Final[dict[str, str]] = {
    # The log is the source of truth: the read model is rebuilt from offset 0, so nothing may expire.
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "min.insync.replicas": "1",
    # The broker stamps each record: a signing key's validity window is judged by its clock, not the publisher's.
    "message.timestamp.type": "LogAppendTime",
}

TYPE_PREFIX: Final = "dev.audittrail"
ACTION_EVENT_TYPE: Final = f"{TYPE_PREFIX}.audit.action.v1"
OUTCOME_EVENT_TYPE: Final = f"{TYPE_PREFIX}.audit.outcome.v1"
EXECUTION_LOG_EVENT_TYPE: Final = f"{TYPE_PREFIX}.execution.log.v1"

CONTENT_TYPE: Final = "application/cloudevents+json; charset=UTF-8"
"""Kafka `content-type` header for CloudEvents structured mode."""


def audit_key(tenant_id: str, entity_model: str, entity_id: str) -> str:
    """Kafka key for an audit event: one entity's events share a partition, hence an order."""
    return f"{tenant_id}/{entity_model}/{entity_id}"
