"""Record every action on every entity from an upstream service, and tag its execution logs.

async with AuditProducer("resource-service") as audit:
    async with audit.action("execute", entity=Entity(id="r-1", model="resource"),
                            actor=Actor.user("u-1", "Ada"), tenant="acme") as act:
        log.info("step_done")          # carries act.trace_id, shipped to the execution-log topic
"""

from audit_producer.config import Settings
from audit_producer.context import (
    TraceContext,
    current_trace,
    current_traceparent,
    current_tracestate,
    resume_trace,
    run_in_executor,
    with_current_trace,
)
from audit_producer.errors import (
    AuditError,
    InvalidActionError,
    KeyServiceError,
    NotStartedError,
    OutcomeNotRecordedError,
    PublishError,
    SpoolError,
    SpoolFullError,
)
from audit_producer.logship import ExecutionLogShipper, add_trace_context
from audit_producer.producer import AuditProducer
from audit_producer.scope import ActionScope
from audit_schemas import Action, Actor, ActorType, Entity, RequestContext

__all__ = [
    "Action",
    "ActionScope",
    "Actor",
    "ActorType",
    "AuditError",
    "AuditProducer",
    "Entity",
    "ExecutionLogShipper",
    "InvalidActionError",
    "KeyServiceError",
    "NotStartedError",
    "OutcomeNotRecordedError",
    "PublishError",
    "RequestContext",
    "Settings",
    "SpoolError",
    "SpoolFullError",
    "TraceContext",
    "add_trace_context",
    "current_trace",
    "current_traceparent",
    "current_tracestate",
    "resume_trace",
    "run_in_executor",
    "with_current_trace",
]
