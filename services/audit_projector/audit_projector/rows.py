"""Turn decoded events into row tuples in the column order the repository copies them in."""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from uuid import UUID

from pydantic import TypeAdapter

from audit_schemas import ActionEvent, ActionOutcome, ActionStarted, ActorType, ExecutionLogEvent, OutcomeEvent

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
    "sealed",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "content_digest",
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
    "unrecorded",
    "source",
    "event_id",
    "schema_version",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "content_digest",
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
_LOG_FIELDS: Final = TypeAdapter(dict[str, Any])
"""Log fields as JSON text, serialised by pydantic-core (a third of `json.dumps`' cost; no digest covers them, so
their spelling is free: `jsonb` keeps the value, not the text)."""
_ENTRY_TIME: Final = ENTRY_COLUMNS.index("occurred_at")
_ENTRY_EVENT_ID: Final = ENTRY_COLUMNS.index("event_id")
_OUTCOME_FINISHED: Final = OUTCOME_COLUMNS.index("finished_at")
_OUTCOME_DURATION: Final = OUTCOME_COLUMNS.index("duration_ms")
_OUTCOME_EVENT_ID: Final = OUTCOME_COLUMNS.index("event_id")
DEAD_LETTER_COLUMNS: Final = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "reason",
    "detail",
    "record_key",
    "record_value",
    "record_headers",
)


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Where a record sits in Kafka."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


@dataclass(frozen=True, slots=True)
class Claim:
    """What an action or outcome event says about its audit id; the first event to name an id claims it."""

    audit_id: UUID
    tenant_id: str
    entity_model: str
    entity_id: str
    action: str
    kind: Literal["start", "outcome"]
    digest: bytes
    """sha256 of the event's data without its timestamps: equal for an identical re-send."""

    def same_subject(self, other: "Claim") -> bool:
        """True when both name the same tenant, entity and action."""
        return (self.tenant_id, self.entity_model, self.entity_id, self.action) == (
            other.tenant_id,
            other.entity_model,
            other.entity_id,
            other.action,
        )


@dataclass(frozen=True, slots=True)
class Row:
    """One row to write, where its record sits, and (for audit events) what it claims."""

    at: Coordinates
    values: tuple[Any, ...]
    claim: Claim | None = None


def content_digest(values: tuple[Any, ...], *skip: int) -> bytes:
    """sha256 over a row's projected values, leaving out the columns a re-send may legitimately change
    (its timestamps, its envelope id) and where the record sits. Equal digests project to the same row."""
    kept: tuple[Any, ...] = ()
    start = 0
    for index in sorted(skip):
        kept += values[start:index]
        start = index + 1
    kept += values[start:]
    return hashlib.sha256(repr(kept).encode()).digest()


def _claim(data: ActionStarted | ActionOutcome, kind: Literal["start", "outcome"], digest: bytes) -> Claim:
    return Claim(data.audit_id, data.tenant_id, data.entity.model, data.entity.id, data.action.value, kind, digest)


def user_sort_key(actor_type: ActorType, actor_id: str | None, display_name: str | None) -> str:
    """People and service accounts sort by name (then id); system actions sort together after them."""
    if actor_type is ActorType.SYSTEM:
        return "1" + (actor_id or "").lower()
    return "0" + (display_name or actor_id or "").lower()


def entry_row(event: ActionEvent, at: Coordinates) -> Row:
    """An `audit_entries` row from an action-started event."""
    d = event.data
    request = d.request
    values = (
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
        None if d.sealed is None else json.dumps({path: v.model_dump() for path, v in d.sealed.items()}),
    )
    digest = content_digest(values, _ENTRY_TIME, _ENTRY_EVENT_ID)
    return Row(at, (*values, at.topic, at.partition, at.offset, digest), _claim(d, "start", digest))


def outcome_row(event: OutcomeEvent, at: Coordinates) -> Row:
    """An `audit_outcomes` row from an outcome event."""
    d = event.data
    changes = None
    if d.changes is not None:
        changes = json.dumps({name: change.model_dump(mode="json") for name, change in d.changes.items()})
    values = (
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
        json.dumps(d.unrecorded) if d.unrecorded is not None else None,
        event.source,
        event.id,
        d.schema_version,
    )
    digest = content_digest(values, _OUTCOME_FINISHED, _OUTCOME_DURATION, _OUTCOME_EVENT_ID)
    return Row(at, (*values, at.topic, at.partition, at.offset, digest), _claim(d, "outcome", digest))


def log_row(event: ExecutionLogEvent, at: Coordinates) -> Row:
    """An `execution_logs` row from an execution-log event."""
    d = event.data
    values = (
        event.time,
        d.log_id,
        d.trace_id,
        d.tenant_id,
        d.level.value,
        d.logger,
        d.message,
        _LOG_FIELDS.dump_json(d.fields).decode(),
        d.process,
        event.source,
        d.schema_version,
        at.topic,
        at.partition,
        at.offset,
    )
    return Row(at, values)


Table = Literal["entries", "outcomes", "logs"]


def row_for(event: ActionEvent | OutcomeEvent | ExecutionLogEvent, at: Coordinates) -> tuple[Table, Row]:
    """The row an event becomes, and which table it goes to."""
    if isinstance(event, ActionEvent):
        return "entries", entry_row(event, at)
    if isinstance(event, OutcomeEvent):
        return "outcomes", outcome_row(event, at)
    return "logs", log_row(event, at)


@dataclass(slots=True)
class BatchRows:
    """Everything one batch writes, grouped by table."""

    entries: list[Row] = field(default_factory=list)
    outcomes: list[Row] = field(default_factory=list)
    logs: list[Row] = field(default_factory=list)
    dead_letters: list[Row] = field(default_factory=list)

    def add(self, event: ActionEvent | OutcomeEvent | ExecutionLogEvent, at: Coordinates) -> None:
        """Route an event to its table."""
        self.put(*row_for(event, at))

    def put(self, table: Table, row: Row) -> None:
        """Add a row built by `row_for`."""
        {"entries": self.entries, "outcomes": self.outcomes, "logs": self.logs}[table].append(row)

    def without(self, refused: set[Coordinates]) -> None:
        """Drop the rows of records that will be dead-lettered or skipped instead."""
        self.entries = [r for r in self.entries if r.at not in refused]
        self.outcomes = [r for r in self.outcomes if r.at not in refused]
        self.logs = [r for r in self.logs if r.at not in refused]

    def __len__(self) -> int:
        return len(self.entries) + len(self.outcomes) + len(self.logs) + len(self.dead_letters)
