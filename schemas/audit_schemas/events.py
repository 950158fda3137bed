"""Event payloads (CloudEvents `data`) for the audit and execution-log topics; older versions are upcast on read
(see `audit_schemas.upcasting`)."""

from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, StringConstraints, model_validator

from audit_schemas.actions import Action, ActorType, LogLevel, OutcomeStatus
from audit_schemas.sealing import Sealed, is_pseudonym
from audit_schemas.storable import Bigint, FiniteFloat, StorableDatetime, StorableJson, Text

SCHEMA_VERSION: Literal[1] = 1
"""Payload version of execution-log events."""

ACTION_SCHEMA_VERSION: Literal[3] = 3
"""Payload version of action-started events: 3 adds `sealed` (personal fields sealed under the subject's key); 2
grouped the caller's OpenTelemetry ids under `otel`; version 1 (`otel_trace_id`, `otel_span_id` at the top) is
upcast when read, version 2 is read as it is."""

SealedPath = Literal["actor.id", "actor.display_name", "request.client_ip", "request.user_agent", "entity.id"]
"""The fields of an action-started event that may travel sealed; each one sealed is null (or, for the ids, the
subject's pseudonym) in clear."""

OUTCOME_SCHEMA_VERSION: Literal[2] = 2
"""Payload version of outcome events: 2 adds status `aborted` and `unrecorded`; version 1 is still read."""

TenantId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
ModelName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
EntityId = Annotated[Text, StringConstraints(min_length=1, max_length=256)]
TraceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
SpanId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
ShortText = Annotated[Text, StringConstraints(min_length=1, max_length=256)]


class _Payload(BaseModel):
    # A NaN or infinity written by a model built past validation must fail the check of the encoded bytes, not
    # travel as null.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class Entity(_Payload):
    """The thing acted upon: its id and its model (resource, template, integration…)."""

    id: EntityId
    model: ModelName


class Actor(_Payload):
    """Who acted. Users and service accounts have an id; system actions may name a component."""

    type: ActorType
    id: ShortText | None = None
    display_name: ShortText | None = None

    @model_validator(mode="after")
    def _needs_id(self) -> Self:
        if self.type is not ActorType.SYSTEM and self.id is None:
            raise ValueError(f"an actor of type {self.type.value} needs an id")
        return self

    @classmethod
    def user(cls, id: str, display_name: str | None = None) -> "Actor":
        """A human user."""
        return cls(type=ActorType.USER, id=id, display_name=display_name)

    @classmethod
    def service_account(cls, id: str, display_name: str | None = None) -> "Actor":
        """A non-human caller with credentials of its own."""
        return cls(type=ActorType.SERVICE_ACCOUNT, id=id, display_name=display_name)

    @classmethod
    def system(cls, component: str | None = None) -> "Actor":
        """A scheduled or system action: no human user."""
        return cls(type=ActorType.SYSTEM, id=component, display_name=None)


class RequestContext(_Payload):
    """Where a user-initiated action came from, when the caller knows it."""

    request_id: ShortText | None = None
    client_ip: IPvAnyAddress | None = None
    user_agent: Annotated[Text, StringConstraints(max_length=1024)] | None = None


class ErrorSummary(_Payload):
    """Why an action failed: the exception type and its message, never a traceback."""

    type: ShortText
    message: Annotated[Text, StringConstraints(max_length=4096)]


class FieldChange(_Payload):
    """One field's value before and after an update."""

    before: StorableJson
    after: StorableJson


class OtelSpan(_Payload):
    """The OpenTelemetry span the caller was in when it started the action."""

    trace_id: TraceId | None = None
    span_id: SpanId | None = None


class ActionStarted(_Payload):
    """Published before the action's body runs: who is doing what to which entity."""

    schema_version: Literal[2, 3] = ACTION_SCHEMA_VERSION
    audit_id: UUID
    tenant_id: TenantId
    action: Action
    entity: Entity
    actor: Actor
    request: RequestContext | None = None
    correlation_id: ShortText | None = None
    otel: OtelSpan | None = None
    started_at: StorableDatetime
    sealed: dict[SealedPath, Sealed] | None = None
    """Personal fields sealed under their subject's key (version 3): the clear field is null, or the pseudonym."""

    @model_validator(mode="after")
    def _sealed_fields_are_not_in_clear(self) -> Self:
        if not self.sealed:
            return self
        if self.schema_version < 3:
            raise ValueError("sealed fields need action schema_version 3")
        request = self.request or RequestContext()
        clear: dict[str, object] = {
            "actor.display_name": self.actor.display_name,
            "request.client_ip": request.client_ip,
            "request.user_agent": request.user_agent,
        }
        for path in self.sealed:
            if path == "actor.id" and not is_pseudonym(self.actor.id):
                raise ValueError("a sealed actor.id leaves the actor's pseudonym in clear, not its id")
            if path == "entity.id" and not is_pseudonym(self.entity.id):
                raise ValueError("a sealed entity.id leaves the entity's pseudonym in clear, not its id")
            if clear.get(path) is not None:
                raise ValueError(f"{path} is sealed, so it must be null in clear")
        return self

    @property
    def otel_trace_id(self) -> str | None:
        """The caller's OpenTelemetry trace id, if it had a span."""
        return None if self.otel is None else self.otel.trace_id

    @property
    def otel_span_id(self) -> str | None:
        """The caller's OpenTelemetry span id, if it had a span."""
        return None if self.otel is None else self.otel.span_id

    @property
    def trace_id(self) -> str:
        """The action's trace id: its audit id as 32 hex digits (a valid W3C trace-id)."""
        return self.audit_id.hex


class ActionOutcome(_Payload):
    """Published when the action's body ends: how it ended and what only the end knows.

    `aborted`: the start event was not acknowledged in time, so the body never ran (the start may still
    reach Kafka from the client's buffer; this outcome closes it either way).
    """

    schema_version: Literal[1, 2] = OUTCOME_SCHEMA_VERSION
    audit_id: UUID
    tenant_id: TenantId
    action: Action
    entity: Entity
    status: OutcomeStatus
    error: ErrorSummary | None = None
    revision: Bigint | None = None
    changes: dict[Text, FieldChange] | None = None
    finished_at: StorableDatetime
    duration_ms: FiniteFloat
    unrecorded: dict[Text, Annotated[Text, StringConstraints(max_length=1024)]] | None = None
    """Values set by the body that could not be recorded (name → why); each is a marker in the outcome."""

    @model_validator(mode="after")
    def _error_iff_failed(self) -> Self:
        if (self.status is OutcomeStatus.FAILED) != (self.error is not None):
            raise ValueError("a failed outcome needs an error and a succeeded or aborted one must not have one")
        if self.schema_version < 2 and (self.status is OutcomeStatus.ABORTED or self.unrecorded is not None):
            raise ValueError("status aborted and unrecorded need outcome schema_version 2")
        return self


class ExecutionLog(_Payload):
    """One execution-log line written while an action ran, tagged with that action's trace id."""

    schema_version: Literal[1] = SCHEMA_VERSION
    log_id: UUID
    trace_id: TraceId
    tenant_id: TenantId | None = None
    level: LogLevel
    logger: Annotated[Text, StringConstraints(max_length=256)] | None = None
    message: Annotated[Text, StringConstraints(max_length=16384)]
    fields: dict[Text, StorableJson] = Field(default_factory=dict)
    process: Annotated[Text, StringConstraints(max_length=256)] | None = None
    logged_at: StorableDatetime
