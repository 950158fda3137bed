"""Audit Trail contracts: event payloads, CloudEvents envelopes, topics and trace context.

The only package every service imports; services never import each other.
"""

from audit_schemas.actions import Action, ActorType, LogLevel, OutcomeStatus
from audit_schemas.envelope import (
    ActionEvent,
    EnvelopeError,
    ExecutionLogEvent,
    NewerSchemaError,
    OutcomeEvent,
    decode,
    encode,
    kafka_headers,
)
from audit_schemas.events import (
    ACTION_SCHEMA_VERSION,
    OUTCOME_SCHEMA_VERSION,
    SCHEMA_VERSION,
    ActionOutcome,
    ActionStarted,
    Actor,
    Entity,
    ErrorSummary,
    ExecutionLog,
    FieldChange,
    OtelSpan,
    RequestContext,
)
from audit_schemas.tracecontext import Traceparent, TraceparentError

__all__ = [
    "ACTION_SCHEMA_VERSION",
    "OUTCOME_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "Action",
    "ActionEvent",
    "ActionOutcome",
    "ActionStarted",
    "Actor",
    "ActorType",
    "Entity",
    "EnvelopeError",
    "ErrorSummary",
    "ExecutionLog",
    "ExecutionLogEvent",
    "FieldChange",
    "LogLevel",
    "NewerSchemaError",
    "OtelSpan",
    "OutcomeEvent",
    "OutcomeStatus",
    "RequestContext",
    "Traceparent",
    "TraceparentError",
    "decode",
    "encode",
    "kafka_headers",
]
