"""The action running now, carried in a contextvar, and how to carry it across threads and processes."""

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar
from uuid import UUID

from audit_producer.sealing import FieldSealer
from audit_schemas import Traceparent, TraceparentError
from audit_schemas.tracecontext import new_span_id, tenant_from_tracestate, tracestate_for

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace of the action whose code is running: its audit id is the trace id."""

    audit_id: UUID
    span_id: str
    tenant_id: str | None
    seal_fields: "FieldSealer | None" = None
    """Seals the personal fields of the action's log lines (set when the producer seals)."""

    @property
    def trace_id(self) -> str:
        """32 hex digits: a valid W3C trace-id."""
        return self.audit_id.hex

    @property
    def traceparent(self) -> str:
        """A W3C `traceparent` to hand to another thread, process or service."""
        return str(Traceparent(trace_id=self.trace_id, span_id=self.span_id))

    @property
    def tracestate(self) -> str | None:
        """A W3C `tracestate` carrying the tenant: hand it on beside `traceparent`."""
        return tracestate_for(self.tenant_id) if self.tenant_id else None


_current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar("audit_trace", default=None)


def current_trace() -> TraceContext | None:
    """The running action's trace, or None outside any action."""
    return _current.get()


def current_traceparent() -> str | None:
    """The running action's `traceparent`, to put in a task message or header."""
    trace = _current.get()
    return trace.traceparent if trace else None


def current_tracestate() -> str | None:
    """The running action's `tracestate` (its tenant), to hand on beside `traceparent`."""
    trace = _current.get()
    return trace.tracestate if trace else None


@contextlib.contextmanager
def bind_trace(trace: TraceContext) -> Iterator[TraceContext]:
    """Make `trace` current for the block."""
    token = _current.set(trace)
    try:
        yield trace
    finally:
        # An abandoned action's generator is closed by the garbage collector in another context.
        with contextlib.suppress(ValueError):
            _current.reset(token)


@contextlib.contextmanager
def resume_trace(
    traceparent: str, tracestate: str | None = None, *, tenant_id: str | None = None
) -> Iterator[TraceContext]:
    """Continue an action's trace in another process or thread: logs in the block are tagged and shipped.

    The tenant comes from `tracestate` (`act.tracestate`), or `tenant_id`; execution-log lines always carry
    it, so a trace handed on without one is refused (TraceparentError).
    """
    parsed = Traceparent.parse(traceparent)
    tenant = tenant_id or tenant_from_tracestate(tracestate)
    if tenant is None:
        raise TraceparentError("no tenant: hand on the action's tracestate (act.tracestate) beside its traceparent")
    with bind_trace(TraceContext(audit_id=parsed.audit_id, span_id=new_span_id(), tenant_id=tenant)) as trace:
        yield trace


def with_current_trace(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind `fn` to a copy of the current context, for threads and executors (they do not copy it)."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.run(fn, *args, **kwargs)

    return run


async def run_in_executor(executor: Executor | None, fn: Callable[..., R], *args: object) -> R:
    """`loop.run_in_executor` that keeps the current trace (and every other contextvar)."""
    return await asyncio.get_running_loop().run_in_executor(executor, with_current_trace(fn), *args)
