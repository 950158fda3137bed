"""Turn decoded events into row tuples in the column order the repository copies them in."""

import json
from dataclasses import dataclass, field
from typing import Any, Final

from audit_schemas import ActionEvent, ActorType, ExecutionLogEvent, OutcomeEvent

ENTRY_COLUMNS: Final = (
    "occurred_at",
    "audit_id",
    "tenant_id",
    "action",
    "entity_model",
    "entity_id",
    "actor_type",
    "actor_id",
    "actor_display_name",
    "user_sort",
    "request_id",
    "client_ip",
    "user_agent",
    "correlation_id",
    "otel_trace_id",
    "otel_span_id",
    "source",
    "event_id",
    "schema_version",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)
OUTCOME_COLUMNS: Final = (
    "audit_id",
    "tenant_id",
    "entity_model",
    "entity_id",
    "status",
    "error_type",
    "error_message",
    "revision",
    "changes",
    "finished_at",
    "duration_ms",
    "source",
    "event_id",
    "schema_version",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)
LOG_COLUMNS: Final = (
    "logged_at",
    "log_id",
    "trace_id",
    "tenant_id",
    "level",
    "logger",
    "message",
    "fields",
    "process",
    "source",
    "schema_version",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)
DEAD_LETTER_COLUMNS: Final = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "reason",
    "detail",
    "record_key",
    "record_value",
)


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Where a record sits in Kafka."""

    topic: str
    partition: int
    offset: int


def user_sort_key(actor_type: ActorType, actor_id: str | None, display_name: str | None) -> str:
    """People and service accounts sort by name (then id); system actions sort together after them."""
    if actor_type is ActorType.SYSTEM:
        return "1" + (actor_id or "").lower()
    return "0" + (display_name or actor_id or "").lower()


def entry_row(event: ActionEvent, at: Coordinates) -> tuple[Any, ...]:
    """An `audit_entries` row from an action-started event."""
    d = event.data
    request = d.request
    return (
        event.time,
        d.audit_id,
        d.tenant_id,
        d.action.value,
        d.entity.model,
        d.entity.id,
        d.actor.type.value,
        d.actor.id,
        d.actor.display_name,
        user_sort_key(d.actor.type, d.actor.id, d.actor.display_name),
        request.request_id if request else None,
        request.client_ip if request else None,
        request.user_agent if request else None,
        d.correlation_id,
        d.otel_trace_id,
        d.otel_span_id,
        event.source,
        event.id,
        d.schema_version,
        at.topic,
        at.partition,
        at.offset,
    )


def outcome_row(event: OutcomeEvent, at: Coordinates) -> tuple[Any, ...]:
    """An `audit_outcomes` row from an outcome event."""
    d = event.data
    changes = None
    if d.changes is not None:
        changes = json.dumps({name: change.model_dump(mode="json") for name, change in d.changes.items()})
    return (
        d.audit_id,
        d.tenant_id,
        d.entity.model,
        d.entity.id,
        d.status.value,
        d.error.type if d.error else None,
        d.error.message if d.error else None,
        d.revision,
        changes,
        event.time,
        d.duration_ms,
        event.source,
        event.id,
        d.schema_version,
        at.topic,
        at.partition,
        at.offset,
    )


def log_row(event: ExecutionLogEvent, at: Coordinates) -> tuple[Any, ...]:
    """An `execution_logs` row from an execution-log event."""
    d = event.data
    return (
        event.time,
        d.log_id,
        d.trace_id,
        d.tenant_id,
        d.level.value,
        d.logger,
        d.message,
        json.dumps(d.fields),
        d.process,
        event.source,
        d.schema_version,
        at.topic,
        at.partition,
        at.offset,
    )


@dataclass(slots=True)
class BatchRows:
    """Everything one batch writes, grouped by table."""

    entries: list[tuple[Any, ...]] = field(default_factory=list)
    outcomes: list[tuple[Any, ...]] = field(default_factory=list)
    logs: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, event: ActionEvent | OutcomeEvent | ExecutionLogEvent, at: Coordinates) -> None:
        """Route an event to its table."""
        if isinstance(event, ActionEvent):
            self.entries.append(entry_row(event, at))
        elif isinstance(event, OutcomeEvent):
            self.outcomes.append(outcome_row(event, at))
        else:
            self.logs.append(log_row(event, at))

    def __len__(self) -> int:
        return len(self.entries) + len(self.outcomes) + len(self.logs) + len(self.dead_letters)
