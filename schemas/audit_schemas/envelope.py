"""CloudEvents 1.0 envelopes in structured mode, and their Kafka protocol binding."""

import json
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from audit_schemas.actions import Action
from audit_schemas.events import ActionOutcome, ActionStarted, ExecutionLog
from audit_schemas.storable import StorableDatetime, Text, explain
from audit_schemas.topics import (
    ACTION_EVENT_TYPE,
    CONTENT_TYPE,
    EXECUTION_LOG_EVENT_TYPE,
    OUTCOME_EVENT_TYPE,
    TYPE_PREFIX,
)
from audit_schemas.upcasting import CURRENT, UpcastError, upcast

Source = Annotated[Text, StringConstraints(min_length=1, max_length=512)]
Subject = Annotated[Text, StringConstraints(min_length=1, max_length=512)]
WIRE_REQUIRED: Final = ("specversion", "type", "datacontenttype")
"""Attributes a record read off the wire must carry, although Python callers may leave them to their defaults."""


def _wire_required(schema: dict[str, Any]) -> None:
    """JSON Schema: what the wire requires, although Python callers may leave these to their defaults."""
    schema["required"] = sorted({*schema.get("required", ()), *WIRE_REQUIRED})


class _CloudEvent(BaseModel):
    # Extension attributes other producers add are kept, not rejected (CloudEvents allows them).
    model_config = ConfigDict(
        frozen=True, extra="allow", json_schema_extra=_wire_required, ser_json_inf_nan="constants"
    )

    specversion: Literal["1.0"] = "1.0"
    id: UUID
    source: Source
    subject: Subject | None = None
    time: StorableDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: Text | None = None
    traceparent: Text | None = None
    """Distributed-tracing extension: the action's W3C traceparent."""
    tracestate: Text | None = None
    """Distributed-tracing extension: W3C tracestate; ours carries the tenant (`audittrail=t:<tenant>`)."""
    partitionkey: Text | None = None
    """Kafka binding partitioning extension: the record key."""


class ActionEvent(_CloudEvent):
    """`…audit.action.v1`: an action started."""

    type: Literal["dev.audittrail.audit.action.v1"] = "dev.audittrail.audit.action.v1"
    data: ActionStarted

    @model_validator(mode="after")
    def _id_is_the_audit_id(self) -> "ActionEvent":
        if self.id != self.data.audit_id:
            raise ValueError("an action event's id must equal its data.audit_id")
        return self


class OutcomeEvent(_CloudEvent):
    """`…audit.outcome.v1`: an action ended."""

    type: Literal["dev.audittrail.audit.outcome.v1"] = "dev.audittrail.audit.outcome.v1"
    data: ActionOutcome


class ExecutionLogEvent(_CloudEvent):
    """`…execution.log.v1`: a log line written during an action."""

    type: Literal["dev.audittrail.execution.log.v1"] = "dev.audittrail.execution.log.v1"
    data: ExecutionLog


AnyEvent = Annotated[ActionEvent | OutcomeEvent | ExecutionLogEvent, Field(discriminator="type")]
_ANY_EVENT: Final = TypeAdapter[ActionEvent | OutcomeEvent | ExecutionLogEvent](AnyEvent)
_ACTIONS: Final = frozenset(a.value for a in Action)
KNOWN_TYPES: Final = frozenset({ACTION_EVENT_TYPE, OUTCOME_EVENT_TYPE, EXECUTION_LOG_EVENT_TYPE})
SUPPORTED_VERSIONS: Final = CURRENT
"""Newest payload `schema_version` understood per type; a higher one is not poison, it needs an upgrade."""


class EnvelopeError(ValueError):
    """A record that is not a valid event; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NewerSchemaError(Exception):
    """A well-formed event of a version newer than this code understands: upgrade, don't drop."""

    def __init__(self, event_type: str, schema_version: object) -> None:
        super().__init__(f"event type {event_type} schema_version {schema_version} is newer than supported")
        self.event_type = event_type
        self.schema_version = schema_version


def encode(event: ActionEvent | OutcomeEvent | ExecutionLogEvent) -> bytes:
    """Serialise an envelope for the Kafka record value (structured mode), by pydantic-core in one pass per part.

    Unset optional attributes are left out of the envelope; inside `data`, null is a value and stays.
    """
    head = event.model_dump_json(exclude_none=True, exclude={"data"})
    data = event.data.model_dump_json()
    return f'{head[:-1]}{"," if len(head) > 2 else ""}"data":{data}}}'.encode()


def kafka_headers(event: ActionEvent | OutcomeEvent | ExecutionLogEvent) -> list[tuple[str, bytes]]:
    """Headers that let routers and tracing tools see the content type, kind and trace without parsing."""
    headers = [("content-type", CONTENT_TYPE.encode()), ("ce_type", event.type.encode())]
    if event.traceparent:
        headers.append(("traceparent", event.traceparent.encode()))
    if event.tracestate:
        headers.append(("tracestate", event.tracestate.encode()))
    return headers


def _newer_version(event_type: str, data: Any) -> bool:
    """True when the type is ours with a higher `.vN`, or its data claims a newer schema_version than its type's."""
    if event_type.startswith(f"{TYPE_PREFIX}.") and event_type not in KNOWN_TYPES:
        stem, _, version = event_type.rpartition(".v")
        known_stems = {t.rpartition(".v")[0]: int(t.rpartition(".v")[2]) for t in KNOWN_TYPES}
        if version.isdigit() and stem in known_stems and int(version) > known_stems[stem]:
            return True
    if isinstance(data, dict):
        version_value = data.get("schema_version")
        newest = SUPPORTED_VERSIONS.get(event_type, 1)
        if isinstance(version_value, int) and not isinstance(version_value, bool) and version_value > newest:
            return True
    return False


def decode(value: bytes | None) -> ActionEvent | OutcomeEvent | ExecutionLogEvent:
    """Parse a record value; raise EnvelopeError for poison and NewerSchemaError for the future.

    This is the one check of what the projector accepts: the producer runs it on the bytes it publishes too.
    """
    event = _parse(value)
    if isinstance(event, ExecutionLogEvent) and event.data.tenant_id is None:
        # Stored, no reader could ever see it (every read names tenants): refused where an operator sees it.
        raise EnvelopeError("no_tenant", "an execution-log line names no tenant, so no reader could see it")
    return event


def _parse(value: bytes | None) -> ActionEvent | OutcomeEvent | ExecutionLogEvent:
    if value is None:
        raise EnvelopeError("empty_value", "record has no value")
    try:
        # Fast path for the common case: pydantic-core parses and validates in one pass.
        return _on_the_wire(_ANY_EVENT.validate_json(value))
    except ValidationError:
        pass  # classify the failure below: poison, or a newer schema
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EnvelopeError("invalid_json", str(e)) from e
    if not isinstance(raw, dict):
        raise EnvelopeError("invalid_envelope", "a CloudEvent must be a JSON object")
    event_type = raw.get("type")
    if not isinstance(event_type, str):
        raise EnvelopeError("invalid_envelope", "missing CloudEvents attribute 'type'")
    if _newer_version(event_type, raw.get("data")):
        raise NewerSchemaError(event_type, (raw.get("data") or {}).get("schema_version"))
    if event_type not in KNOWN_TYPES:
        raise EnvelopeError("unknown_type", f"unknown event type {event_type!r}")
    data = raw.get("data")
    if isinstance(data, dict) and "action" in data and data["action"] not in _ACTIONS:
        raise EnvelopeError("unknown_action", f"action {data['action']!r} is not one of the 13 actions")
    if isinstance(data, dict):
        try:
            raw["data"] = upcast(event_type, data)
        except UpcastError as e:
            raise EnvelopeError("no_upcaster", str(e)) from e
    try:
        event = _ANY_EVENT.validate_python(raw)
    except ValidationError as e:
        raise EnvelopeError("schema_validation", explain(e)) from e
    return _on_the_wire(event)


def _on_the_wire(
    event: ActionEvent | OutcomeEvent | ExecutionLogEvent,
) -> ActionEvent | OutcomeEvent | ExecutionLogEvent:
    """The event, if the record named every attribute the wire requires (checked after validation: no Python runs
    inside pydantic-core's pass for it)."""
    if not event.model_fields_set.issuperset(WIRE_REQUIRED):
        missing = [name for name in WIRE_REQUIRED if name not in event.model_fields_set]
        raise EnvelopeError("schema_validation", f"missing CloudEvents attributes {missing}")
    return event
