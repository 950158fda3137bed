"""Response and filter models of the HTTP API."""

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from audit_query.search import SearchTerm
from audit_schemas import Action, ActorType
from audit_schemas.storable import check_utc

_ISO_8601: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_text(value: object) -> object:
    """Only ISO 8601 text is a timestamp here: `until=0` is not read as Unix seconds."""
    if isinstance(value, str) and _ISO_8601.match(value):
        return value
    if isinstance(value, datetime):
        return value
    raise ValueError("must be an ISO 8601 date-time with an offset, e.g. 2026-01-31T00:00:00Z")


Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(check_utc)]
"""A query-string timestamp: ISO 8601 with an offset, within years 1-9999 once converted to UTC."""


class Problem(BaseModel):
    """Every error answer: a JSON object with a human-readable `detail`."""

    detail: Any


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class SortField(StrEnum):
    """What the global audit log can be sorted by; ties are always broken by time, then audit id."""

    TIME = "time"
    USER = "user"
    EVENT = "event"


class SortOrder(StrEnum):
    """Direction of the sort."""

    ASC = "asc"
    DESC = "desc"


class AuditFilter(_Public):
    """Filters of the global audit log; all optional and combined with AND."""

    tenant: str | None = None
    actions: tuple[Action, ...] = ()
    user_id: str | None = None
    actor_type: ActorType | None = None
    model: str | None = None
    entity_id: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    terms: tuple[SearchTerm, ...] = ()
    """Terms of the search language (`q=`), combined with the filters above."""
    aliases: dict[str, tuple[str, ...]] = {}
    """Set by the service, never by a caller: the pseudonyms of the user and entity ids above (sealed people)."""


Erased = dict[str, bool]
"""`{"$erased": true}`: a personal value whose subject's key was destroyed (lawful erasure)."""


class UserPublic(_Public):
    """Who acted; `id` and `display_name` are null for system actions without a component name, and
    `{"$erased": true}` once the person's data was erased."""

    type: ActorType
    id: str | Erased | None
    display_name: str | Erased | None


class EntityPublic(_Public):
    """The entity acted upon (a person's id reads `{"$erased": true}` once erased)."""

    id: str | Erased
    model: str


class RequestPublic(_Public):
    """Request context, when the caller supplied it (address and agent erased with the person's data)."""

    request_id: str | None
    client_ip: str | Erased | None
    user_agent: str | Erased | None


class ErrorPublic(_Public):
    """Why a failed action failed."""

    type: str
    message: str


class OutcomePublic(_Public):
    """How the action ended; `in_progress` until its outcome event arrives, `unknown` after a while.

    `aborted`: the start event was not acknowledged in time, so the action's body never ran.
    """

    status: Literal["succeeded", "failed", "aborted", "in_progress", "unknown"]
    error: ErrorPublic | None = None
    revision: int | None = None
    changes: dict[str, Any] | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    unrecorded: dict[str, str] | None = None
    """Values the body set that could not be recorded (name → why); they appear as markers in `changes`."""


class AuditEntryPublic(_Public):
    """One audit log entry: the seed's six fields (time, user, event, entity id, model, audit id) and more."""

    audit_id: UUID
    trace_id: str = Field(description="The audit id as 32 hex digits; tags this action's execution logs.")
    time: datetime
    tenant_id: str
    event: Action
    user: UserPublic
    entity: EntityPublic
    request: RequestPublic | None
    correlation_id: str | None
    otel_trace_id: str | None
    source: str
    outcome: OutcomePublic


COUNT_CAP: Final = 10_000


class EntryCount(_Public):
    """Entries in a view: exact up to 10,000, otherwise `count` is 10,000 and `exact` is false."""

    count: int
    exact: bool


class AuditPage(_Public):
    """A page of entries; pass `next_cursor` back unchanged (with the same query) for the next one."""

    data: list[AuditEntryPublic]
    count: int
    next_cursor: str | None
    prev_cursor: str | None = None
    """The page before this one (null on the first page); pages never skip or repeat a row."""


class ExecutionLogPublic(_Public):
    """One execution-log line of an action."""

    log_id: UUID
    time: datetime
    level: str
    logger: str | None
    message: str
    fields: dict[str, Any]
    process: str | None
    source: str


class EntityLogLine(ExecutionLogPublic):
    """An execution-log line of one of an entity's actions, with the action it was written under."""

    trace_id: str
    event: str
    tenant_id: str


class EntityLogPage(_Public):
    """A page of an entity's execution-log lines, newest first; pass `next_cursor` back as `cursor`."""

    data: list[EntityLogLine]
    next_cursor: str | None


class AuditEntryDetail(_Public):
    """An audit entry with its correlated execution logs, in time order."""

    entry: AuditEntryPublic
    logs: list[ExecutionLogPublic]
    logs_truncated: bool


class TraceView(_Public):
    """Everything recorded under one trace id: the entry (once projected), its outcome and its log lines, a page
    at a time."""

    trace_id: str
    entry: AuditEntryPublic | None
    logs: list[ExecutionLogPublic]
    logs_truncated: bool = Field(description="More lines follow this page.")
    logs_next: str | None = Field(None, description="Pass as `logs_after` for the next page of lines.")


class Health(_Public):
    """Liveness or readiness with per-dependency detail."""

    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, Any]
    problems: list[str] = []
