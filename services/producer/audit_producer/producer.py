"""`AuditProducer`: record every action around the code that performs it."""

import contextlib
import functools
import inspect
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import structlog
from pydantic import ValidationError

from audit_producer.config import Settings
from audit_producer.context import TraceContext, bind_trace
from audit_producer.errors import InvalidActionError, NotStartedError
from audit_producer.ids import uuid7
from audit_producer.logship import ExecutionLogShipper
from audit_producer.otel import current_otel_ids
from audit_producer.publisher import EventPublisher, KafkaPublisher
from audit_producer.scope import ActionScope
from audit_schemas import (
    Action,
    ActionEvent,
    ActionOutcome,
    ActionStarted,
    Actor,
    Entity,
    ErrorSummary,
    OutcomeEvent,
    OutcomeStatus,
    RequestContext,
    encode,
    kafka_headers,
)
from audit_schemas.topics import audit_key
from audit_schemas.tracecontext import Traceparent, new_span_id

log = structlog.get_logger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
Resolver = Callable[[Mapping[str, Any]], Any]


class AuditProducer:
    """Publishes start and outcome events for actions, and ships their execution logs.

    Use as `async with AuditProducer("resource-service") as audit:`; one instance per process.
    """

    def __init__(
        self, source: str, settings: Settings | None = None, *, publisher: EventPublisher | None = None
    ) -> None:
        if not source:
            raise InvalidActionError("source (the emitting service's name) must not be empty")
        self.source = source
        self.settings = settings or Settings()
        self._publisher = publisher or KafkaPublisher(
            self.settings.bootstrap_servers, self.settings.publish_timeout_s, self.settings.linger_ms
        )
        self.logs = ExecutionLogShipper(self._publisher, self.settings, source)
        self._started = False

    async def start(self) -> None:
        """Connect to Kafka and start shipping execution logs; idempotent."""
        if self._started:
            return
        await self._publisher.start()
        self.logs.start()
        self._started = True

    async def stop(self) -> None:
        """Flush execution logs and disconnect; idempotent."""
        if not self._started:
            return
        self._started = False
        await self.logs.stop()
        await self._publisher.stop()

    async def __aenter__(self) -> "AuditProducer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __del__(self) -> None:
        if getattr(self, "_started", False):
            warnings.warn(f"unclosed AuditProducer {self.source!r}", ResourceWarning, stacklevel=1)

    @contextlib.asynccontextmanager
    async def action(
        self,
        action: Action | str,
        *,
        entity: Entity,
        actor: Actor,
        tenant: str,
        request: RequestContext | None = None,
        correlation_id: str | None = None,
    ) -> AsyncIterator[ActionScope]:
        """Record one action: the start event before the body, the outcome event after it.

        The body runs with the action's trace bound, so its logs carry the trace_id. A failed publish
        raises PublishError; the body's own exception is re-raised after its failed outcome is recorded.
        """
        if not self._started:
            raise NotStartedError("AuditProducer.start() was not called (use `async with`)")
        span_id = new_span_id()
        started = self._started_event(action, entity, actor, tenant, request, correlation_id, span_id)
        trace = TraceContext(audit_id=started.data.audit_id, span_id=span_id, tenant_id=tenant)
        scope = ActionScope(started.data.audit_id, started.data.action, entity, tenant, trace.traceparent)
        await self._publish(started)
        clock = time.perf_counter()
        with bind_trace(trace):
            try:
                yield scope
            except BaseException as e:
                await self._publish(self._outcome_event(started, scope, clock, e))
                raise
        await self._publish(self._outcome_event(started, scope, clock, None))

    def audited(
        self,
        action: Action | str,
        *,
        entity: Entity | Resolver,
        actor: Actor | Resolver,
        tenant: str | Resolver,
        correlation_id: str | Resolver | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Decorator form of `action()`; each argument may be a value or a function of the call's arguments."""

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            signature = inspect.signature(fn)

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                arguments = bound.arguments
                async with self.action(
                    action,
                    entity=_resolve(entity, arguments),
                    actor=_resolve(actor, arguments),
                    tenant=_resolve(tenant, arguments),
                    correlation_id=_resolve(correlation_id, arguments),
                ):
                    return await fn(*args, **kwargs)

            return wrapper

        return decorate

    def _started_event(
        self,
        action: Action | str,
        entity: Entity,
        actor: Actor,
        tenant: str,
        request: RequestContext | None,
        correlation_id: str | None,
        span_id: str,
    ) -> ActionEvent:
        audit_id = uuid7()
        now = datetime.now(UTC)
        otel = current_otel_ids()
        try:
            data = ActionStarted(
                audit_id=audit_id,
                tenant_id=tenant,
                action=Action(action),
                entity=entity,
                actor=actor,
                request=request,
                correlation_id=correlation_id,
                otel_trace_id=otel[0] if otel else None,
                otel_span_id=otel[1] if otel else None,
                started_at=now,
            )
        except ValueError as e:  # pydantic's ValidationError and Action(...) both are ValueErrors
            raise InvalidActionError(_explain(e)) from e
        return ActionEvent(
            id=audit_id,
            source=self.source,
            subject=f"{entity.model}/{entity.id}",
            time=now,
            traceparent=str(Traceparent(trace_id=audit_id.hex, span_id=span_id)),
            partitionkey=audit_key(tenant, entity.model, entity.id),
            data=data,
        )

    def _outcome_event(
        self, started: ActionEvent, scope: ActionScope, clock: float, error: BaseException | None
    ) -> OutcomeEvent:
        now = datetime.now(UTC)
        summary = None if error is None else ErrorSummary(type=type(error).__name__, message=str(error)[:4096])
        data = ActionOutcome(
            audit_id=started.data.audit_id,
            tenant_id=started.data.tenant_id,
            action=started.data.action,
            entity=started.data.entity,
            status=OutcomeStatus.SUCCEEDED if error is None else OutcomeStatus.FAILED,
            error=summary,
            revision=scope.revision,
            changes=scope.changes or None,
            finished_at=now,
            duration_ms=(time.perf_counter() - clock) * 1000,
        )
        return OutcomeEvent(
            id=uuid7(),
            source=self.source,
            subject=started.subject,
            time=now,
            traceparent=started.traceparent,
            partitionkey=started.partitionkey,
            data=data,
        )

    async def _publish(self, event: ActionEvent | OutcomeEvent) -> None:
        key = (event.partitionkey or "").encode()
        await self._publisher.publish(self.settings.audit_topic, key, encode(event), kafka_headers(event))
        log.debug("audit_event_published", type=event.type, audit_id=str(event.data.audit_id))


def _resolve(value: Any, arguments: Mapping[str, Any]) -> Any:
    return value(arguments) if callable(value) and not isinstance(value, type) else value


def _explain(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return str(error)
