"""`AuditProducer`: record every action around the code that performs it."""

import asyncio
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

from audit_producer.config import Settings, event_signer
from audit_producer.context import TraceContext, bind_trace
from audit_producer.delivery import Delivery
from audit_producer.encoding import marker, safe_text
from audit_producer.errors import (
    InvalidActionError,
    KeyServiceError,
    NotStartedError,
    OutcomeNotRecordedError,
    PublishError,
    SpoolError,
)
from audit_producer.escrow import resolve
from audit_producer.ids import uuid7
from audit_producer.keys import KeyClient
from audit_producer.logship import ExecutionLogShipper
from audit_producer.otel import current_otel_ids
from audit_producer.publisher import EventPublisher, KafkaPublisher
from audit_producer.redaction import Redactor
from audit_producer.scope import ActionScope
from audit_producer.sealing import (
    ActionKeys,
    PersonalData,
    Withheld,
    field_sealer,
    seal_changes,
    seal_start,
    withhold_changes,
    withhold_start,
    withholding_fields,
)
from audit_schemas import (
    Action,
    ActionEvent,
    ActionOutcome,
    ActionStarted,
    Actor,
    Entity,
    EnvelopeError,
    ErrorSummary,
    FieldChange,
    NewerSchemaError,
    OtelSpan,
    OutcomeEvent,
    OutcomeStatus,
    RequestContext,
    decode,
    encode,
    kafka_headers,
)
from audit_schemas.escrow import ESCROW_HEADER, parse_public_key
from audit_schemas.storable import explain
from audit_schemas.topics import audit_key
from audit_schemas.tracecontext import Traceparent, new_span_id, tracestate_for

log = structlog.get_logger(__name__, logger_name=__name__)  # named, so the log shipper never ships its lines

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
            self.settings.bootstrap_servers,
            self.settings.publish_timeout_s,
            self.settings.linger_ms,
            event_signer(self.settings),
            self.settings.kafka,
        )
        self._delivery = Delivery(self._publisher, self.settings, source)
        hmac_key = self.settings.redact_hmac_key
        self.redactor = Redactor(
            self.settings.redact_keys, hmac_key.get_secret_value().encode() if hmac_key is not None else None
        )
        self.logs = ExecutionLogShipper(self._publisher, self.settings, source, self.redactor)
        self.personal = PersonalData.of(self.settings.personal_fields, self.settings.personal_models)
        self.key_client = _key_client(self.settings)
        self._escrow_key = (
            None
            if self.settings.key_escrow_public_key is None
            else parse_public_key(self.settings.key_escrow_public_key)
        )
        if self.key_client is not None:
            self._delivery.resolver = functools.partial(resolve, self.key_client)
        self._started = False

    async def start(self) -> None:
        """Open the spool, connect to Kafka and start shipping execution logs; idempotent.

        In fail-open mode an unreachable broker does not stop the start: events are spooled until it answers.
        """
        if self._started:
            return
        await self._delivery.start()
        try:
            await self._publisher.start()
        except PublishError as e:
            if self.settings.failure_mode != "open":
                await self._delivery.stop(0)
                raise
            log.warning("audit_broker_unreachable_at_start", error=str(e), failure_mode="open")
        self.logs.start()
        self._started = True

    async def stop(self) -> None:
        """Ship queued logs and drain the spool within `stop_timeout_s`, then disconnect; idempotent."""
        if not self._started:
            return
        self._started = False
        budget = self.settings.stop_timeout_s
        await self.logs.stop(budget / 2)
        await self._delivery.stop(budget / 2)
        await self._publisher.stop(budget / 2)
        if self.key_client is not None:
            await self.key_client.close()

    async def __aenter__(self) -> "AuditProducer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __del__(self) -> None:
        if getattr(self, "_started", False):
            warnings.warn(f"unclosed AuditProducer {self.source!r}", ResourceWarning, stacklevel=1)

    async def import_event(self, event: ActionEvent | OutcomeEvent) -> None:
        """Publish a complete event as given, with its own times: history brought over from another system (or
        generated for a demo). Acknowledged like any audit event, signed when the service signs; no spool."""
        if not self._started:
            raise NotStartedError("AuditProducer.start() was not called (use `async with`)")
        _conforms(event)
        key = (event.partitionkey or "").encode()
        await self._publisher.publish(self.settings.audit_topic, key, encode(event), kafka_headers(event))

    def health(self) -> dict[str, Any]:
        """Spool depth and age, failure mode and time since Kafka last acknowledged: for the service's readiness."""
        return {"started": self._started, **self._delivery.health(), "logs": self.logs.stats()}

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

        Everything knowable is validated before the body runs (InvalidActionError; the body does not run).
        Fail-closed (default): the body runs only once Kafka acknowledged the start (else PublishError, and the
        action is recorded as `aborted`). The outcome is published, or spooled and re-sent later; the body's own
        exception is re-raised unchanged. Only an outcome that can be neither published nor spooled raises
        OutcomeNotRecordedError (or, when the body raised, is noted on the body's exception).
        """
        if not self._started:
            raise NotStartedError("AuditProducer.start() was not called (use `async with`)")
        keys = await self._keys_or_withheld(tenant, actor, entity)
        started, value, scope, trace = self._begin(action, entity, actor, tenant, request, correlation_id, keys)
        if scope.start_escrow is not None:
            await self._spool_escrowed("start", started, value, scope.start_escrow)
        else:
            await self._record_start(started, value)
        clock = time.perf_counter()
        with bind_trace(trace):
            try:
                yield scope
            except GeneratorExit:
                raise
            except BaseException as e:
                outcome, encoded = self._outcome_record(started, scope, clock, e)
                problem = await asyncio.shield(self._record_outcome(outcome, encoded, scope.outcome_escrow))
                if problem is not None:
                    e.add_note(
                        f"audit trail: the outcome of action {started.data.audit_id} was not recorded: {problem}"
                    )
                raise
        outcome, encoded = self._outcome_record(started, scope, clock, None)
        problem = await asyncio.shield(self._record_outcome(outcome, encoded, scope.outcome_escrow))
        if problem is not None:
            raise OutcomeNotRecordedError(started.data.audit_id, problem)

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

    async def begin(
        self,
        action: Action | str,
        entity: Entity,
        actor: Actor,
        tenant: str,
        request: RequestContext | None,
        correlation_id: str | None,
    ) -> tuple[ActionEvent, ActionScope, TraceContext]:
        """A validated (and sealed) start event, the scope its body fills in, and its trace (nothing is sent)."""
        keys = await self.action_keys(tenant, actor, entity)
        started, _, scope, trace = self._begin(action, entity, actor, tenant, request, correlation_id, keys)
        return started, scope, trace

    async def _keys_or_withheld(self, tenant: str, actor: Actor, entity: Entity) -> ActionKeys | Withheld | None:
        """The action's keys; in fail-open mode with an escrow key, when the key service does not answer, what
        withholds its personal fields instead (its records then wait in the spool)."""
        try:
            return await self.action_keys(tenant, actor, entity)
        except KeyServiceError as e:
            if self.settings.failure_mode != "open" or self._escrow_key is None or not self.settings.spool_enabled:
                raise
            person, subject = self.personal.subjects(actor, entity)
            log.warning("audit_personal_fields_escrowed", tenant=tenant, error=str(e))
            return Withheld(tenant, self._escrow_key, person, subject)

    async def action_keys(self, tenant: str, actor: Actor, entity: Entity) -> ActionKeys | None:
        """The keys that seal this action's personal fields (None when sealing is off); KeyServiceError when the
        key service does not grant them, before anything is built or sent."""
        if self.key_client is None:
            return None
        person, subject = self.personal.subjects(actor, entity)
        wanted = [s for s in (person, subject) if s is not None]
        if not wanted:
            return None
        try:
            granted = await self.key_client.keys(tenant, wanted)
        except KeyServiceError as e:
            log.warning("audit_keys_unavailable", tenant=tenant, error=str(e))
            raise
        return ActionKeys(
            tenant,
            None if person is None else granted[person],
            None if subject is None else granted[subject],
        )

    def _begin(
        self,
        action: Action | str,
        entity: Entity,
        actor: Actor,
        tenant: str,
        request: RequestContext | None,
        correlation_id: str | None,
        keys: ActionKeys | Withheld | None = None,
    ) -> tuple[ActionEvent, bytes, ActionScope, TraceContext]:
        """`begin()`, with the start's bytes as checked (encoded once: what is checked is what is sent)."""
        span_id = new_span_id()
        started, value, escrow = self._started_event(
            action, entity, actor, tenant, request, correlation_id, span_id, keys
        )
        sealer = None
        if isinstance(keys, ActionKeys):
            sealer = field_sealer(self.personal, keys)
        elif isinstance(keys, Withheld):
            sealer = withholding_fields(self.personal, keys)
        trace = TraceContext(audit_id=started.data.audit_id, span_id=span_id, tenant_id=tenant, seal_fields=sealer)
        scope = ActionScope(
            started.data.audit_id,
            started.data.action,
            started.data.entity,
            tenant,
            trace.traceparent,
            trace.tracestate,
            max_value_bytes=self.settings.max_value_bytes,
            redactor=self.redactor,
            sealing=keys,
            start_escrow=escrow,
        )
        return started, value, scope, trace

    def _redacted(self, request: RequestContext | None) -> RequestContext | None:
        """The request context with credentials inside its text masked (a token pasted into a user agent…)."""
        if request is None:
            return None
        return request.model_copy(
            update={
                "request_id": None if request.request_id is None else self.redactor.text(request.request_id),
                "user_agent": None if request.user_agent is None else self.redactor.text(request.user_agent),
            }
        )

    def _started_event(
        self,
        action: Action | str,
        entity: Entity,
        actor: Actor,
        tenant: str,
        request: RequestContext | None,
        correlation_id: str | None,
        span_id: str,
        keys: ActionKeys | Withheld | None = None,
    ) -> tuple[ActionEvent, bytes, str | None]:
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
                request=self._redacted(request),
                correlation_id=None if correlation_id is None else self.redactor.text(correlation_id),
                otel=OtelSpan(trace_id=otel[0], span_id=otel[1]) if otel else None,
                started_at=now,
            )
        except ValueError as e:  # pydantic's ValidationError and Action(...) both are ValueErrors
            raise InvalidActionError(_explain(e)) from e
        escrow = None
        if isinstance(keys, ActionKeys):
            data = seal_start(data, keys)  # limits were checked on the clear values above
            entity = data.entity  # a person's entity is named by its pseudonym, in the key too
        elif isinstance(keys, Withheld):
            data, escrow = withhold_start(data, keys)
            entity = data.entity
        try:
            event = ActionEvent(
                id=audit_id,
                source=self.source,
                subject=f"{entity.model}/{entity.id}",
                time=now,
                traceparent=str(Traceparent(trace_id=audit_id.hex, span_id=span_id)),
                tracestate=tracestate_for(data.tenant_id),
                partitionkey=audit_key(tenant, entity.model, entity.id),
                data=data,
            )
        except ValueError as e:  # an entity built without validation (model_construct) fails here, if not before
            raise InvalidActionError(_explain(e)) from e
        return event, _conforms(event), escrow

    def _outcome_event(
        self,
        started: ActionEvent,
        scope: ActionScope,
        clock: float,
        error: BaseException | None,
        status: OutcomeStatus | None = None,
    ) -> OutcomeEvent:
        """The outcome, built so that it cannot fail: every value was encoded when it was set."""
        return self._outcome_record(started, scope, clock, error, status)[0]

    def _outcome_record(
        self,
        started: ActionEvent,
        scope: ActionScope,
        clock: float,
        error: BaseException | None,
        status: OutcomeStatus | None = None,
    ) -> tuple[OutcomeEvent, bytes]:
        """The outcome and its bytes (encoded once, to fit the size limit and to send)."""
        now = datetime.now(UTC)
        summary = None
        if error is not None:
            summary = ErrorSummary(
                type=safe_text(type(error).__name__, 256) or "BaseException",
                message=self.redactor.text(safe_text(error, 4096))[:4096],
            )
        data = ActionOutcome(
            audit_id=started.data.audit_id,
            tenant_id=started.data.tenant_id,
            action=started.data.action,
            entity=started.data.entity,
            status=status or (OutcomeStatus.SUCCEEDED if error is None else OutcomeStatus.FAILED),
            error=summary,
            revision=scope.revision,
            changes=self._sealed_changes(scope) or None,
            unrecorded=dict(scope.unrecorded) or None,
            finished_at=now,
            duration_ms=max(0.0, (time.perf_counter() - clock) * 1000),
        )
        event = OutcomeEvent(
            id=uuid7(),
            source=self.source,
            subject=started.subject,
            time=now,
            traceparent=started.traceparent,
            tracestate=started.tracestate,
            partitionkey=started.partitionkey,
            data=data,
        )
        return _within(event, self.settings.max_event_bytes)

    def _sealed_changes(self, scope: ActionScope) -> dict[str, FieldChange]:
        if isinstance(scope.sealing, Withheld):
            changes, scope.outcome_escrow = withhold_changes(
                scope.changes, self.personal, scope.sealing, scope.audit_id
            )
            return changes
        if scope.sealing is None or not scope.changes:
            return scope.changes
        return seal_changes(scope.changes, self.personal, scope.sealing, scope.tenant_id, scope.audit_id)

    async def _spool_escrowed(
        self, kind: str, event: ActionEvent | OutcomeEvent, value: bytes | None, escrow: str
    ) -> None:
        """Spool a record whose personal fields wait in their escrow (never in clear on disk); it is completed and
        sent once the key service answers. PublishError when the spool cannot take it."""
        key, value, headers = _record(event, value)
        try:
            await self._delivery.spool_event(kind, key, value, [*headers, (ESCROW_HEADER, escrow.encode())])
        except SpoolError as e:
            raise PublishError(
                f"the key service did not answer and the escrowed {kind} could not be spooled: {e}"
            ) from e

    async def _record_start(self, started: ActionEvent, value: bytes) -> None:
        """Publish the start (fail-closed), or spool it and let the body run (fail-open)."""
        key, value, headers = _record(started, value)
        open_mode = self.settings.failure_mode == "open"
        if open_mode and self._delivery.queued:
            # Events already wait in the spool: this one goes behind them, so one entity's order holds.
            await self._spool_or_raise("start", started, PublishError("events are waiting in the spool"))
            return
        try:
            await self._delivery.publish(key, value, headers)
        except PublishError as e:
            if open_mode and e.retriable:
                await self._spool_or_raise("start", started, e)
                log.warning("audit_start_spooled", audit_id=str(started.data.audit_id), error=str(e))
                return
            if e.retriable:
                # The start may still reach Kafka from the client's buffer: close it as not run.
                await self._abort(started, e)
            raise

    async def _spool_or_raise(self, kind: str, event: ActionEvent, cause: PublishError) -> None:
        key, value, headers = _record(event)
        try:
            await self._delivery.spool_event(kind, key, value, headers)
        except SpoolError as e:
            raise PublishError(f"{cause}; and it could not be spooled: {e}") from e

    async def _abort(self, started: ActionEvent, cause: PublishError) -> None:
        """Spool the start again and an `aborted` outcome after it: the action is recorded as not run."""
        scope = ActionScope(started.data.audit_id, started.data.action, started.data.entity, started.data.tenant_id, "")
        aborted = self._outcome_event(started, scope, time.perf_counter(), None, OutcomeStatus.ABORTED)
        try:
            await self._delivery.spool_event("start", *_record(started))
            await self._delivery.spool_event("aborted", *_record(aborted))
        except SpoolError as e:
            log.error("audit_abort_not_spooled", audit_id=str(started.data.audit_id), error=str(e))
            return
        log.warning("audit_start_not_acknowledged", audit_id=str(started.data.audit_id), error=str(cause))

    async def _record_outcome(
        self, outcome: OutcomeEvent, value: bytes | None = None, escrow: str | None = None
    ) -> str | None:
        """Publish the outcome, else spool it; return why it could be neither (None once it is safe). The library's
        own success is not logged: a service that ships its logs would ship that line as the action's."""
        if escrow is not None:
            try:
                await self._spool_escrowed("outcome", outcome, value, escrow)
            except PublishError as e:
                return str(e)
            return None
        if self.settings.failure_mode == "open" and self._delivery.queued:
            return await self._spool_outcome(outcome, "events are waiting in the spool")
        key, value, headers = _record(outcome, value)
        try:
            await self._delivery.publish(key, value, headers)
        except PublishError as e:
            if not e.retriable:
                return await self._spool_outcome(outcome, str(e)) if _too_large(e) else str(e)
            return await self._spool_outcome(outcome, str(e))
        return None

    async def _spool_outcome(self, outcome: OutcomeEvent, why: str) -> str | None:
        try:
            await self._delivery.spool_event("outcome", *_record(outcome))
        except SpoolError as e:
            log.error("audit_outcome_lost", audit_id=str(outcome.data.audit_id), publish=why, spool=str(e))
            return f"{why}; spool: {e}"
        log.warning("audit_outcome_spooled", audit_id=str(outcome.data.audit_id), reason=why)
        return None


def _key_client(settings: Settings) -> KeyClient | None:
    """The key service's client when sealing is on (the settings made sure the service signs)."""
    signer = event_signer(settings)
    if settings.key_service_url is None or signer is None:
        return None
    return KeyClient(settings.key_service_url, signer, timeout_s=settings.key_timeout_s, cache_s=settings.key_cache_s)


def _conforms(event: ActionEvent | OutcomeEvent) -> bytes:
    """The exact bytes that will be published, through the projector's own check (the contracts' `decode`): a
    model built without validation (`model_construct`) or changed after it (redaction) cannot slip through."""
    try:
        value = encode(event)
    except (ValueError, TypeError) as e:  # e.g. a lone surrogate: not UTF-8, so no bytes at all
        raise InvalidActionError(f"this {event.type} event cannot be encoded: {e}") from e
    try:
        decode(value)
    except (EnvelopeError, NewerSchemaError) as e:
        raise InvalidActionError(f"the projector would refuse this {event.type} event ({e})") from e
    return value


def _record(
    event: ActionEvent | OutcomeEvent, value: bytes | None = None
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value (`value` when already encoded) and headers of the event's record."""
    return (event.partitionkey or "").encode(), encode(event) if value is None else value, kafka_headers(event)


def _too_large(error: PublishError) -> bool:
    return "TooLarge" in str(error)


def _within(event: OutcomeEvent, limit: int) -> tuple[OutcomeEvent, bytes]:
    """The outcome with its largest change values replaced by markers until it fits `limit` bytes; its bytes."""
    value = encode(event)
    size = len(value)
    changes = dict(event.data.changes or {})
    unrecorded = dict(event.data.unrecorded or {})
    by_size = sorted(changes, key=lambda name: len(changes[name].model_dump_json()), reverse=True)
    for name in by_size:
        if size <= limit:
            break
        why = f"the outcome was {size} bytes, over the {limit}-byte limit"
        changes[name] = FieldChange(before=marker(why), after=marker(why))
        unrecorded[f"changes.{name}"] = why
        event = event.model_copy(
            update={"data": event.data.model_copy(update={"changes": changes, "unrecorded": unrecorded})}
        )
        value = encode(event)
        size = len(value)
    return event, value


def _resolve(value: Any, arguments: Mapping[str, Any]) -> Any:
    return value(arguments) if callable(value) and not isinstance(value, type) else value


def _explain(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        return explain(error)
    return str(error)
