"""Execution logs: tag log events with the running action's trace and ship them to their own topic.

Logging code never waits for Kafka: lines go into a bounded thread-safe queue that one task drains.
"""

import asyncio
import contextlib
import contextvars
import logging
import os
import queue
import socket
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, Final

from audit_producer.config import Settings
from audit_producer.context import current_trace
from audit_producer.encoding import safe_text, to_json
from audit_producer.errors import PublishError
from audit_producer.ids import uuid7
from audit_producer.publisher import EventPublisher
from audit_producer.redaction import Redactor
from audit_producer.sealing import FieldSealer
from audit_schemas import ExecutionLog, ExecutionLogEvent, LogLevel, encode, kafka_headers
from audit_schemas.tracecontext import new_span_id, tracestate_for

# Never ship the Kafka client's own records (or ours): shipping them would feed back into itself.
IGNORED_LOGGERS: Final = ("aiokafka", "kafka", "audit_producer")
_RESERVED_KEYS: Final = frozenset(
    {"event", "level", "logger", "logger_name", "timestamp", "trace_id", "span_id", "_record"}
)
_LEVELS: Final = {
    "debug": LogLevel.DEBUG,
    "info": LogLevel.INFO,
    "msg": LogLevel.INFO,
    "warn": LogLevel.WARNING,
    "warning": LogLevel.WARNING,
    "error": LogLevel.ERROR,
    "exception": LogLevel.ERROR,
    "critical": LogLevel.CRITICAL,
    "fatal": LogLevel.CRITICAL,
}
_STD_RECORD_KEYS: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_internal = logging.getLogger("audit_producer.logship")
_MAX_FIELDS_BYTES: Final = 64 * 1024
_WARN_EVERY_S: Final = 60.0


def add_trace_context(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: add `trace_id` and `span_id` while an action runs; outside, change nothing."""
    trace = current_trace()
    if trace is not None:
        event_dict.setdefault("trace_id", trace.trace_id)
        event_dict.setdefault("span_id", trace.span_id)
    return event_dict


class ExecutionLogShipper:
    """Queues log lines written inside an action and publishes them from one background task.

    Never raises into the caller's logging call: values are made safe (and counted), a full queue drops
    (and counts), and every send's result is observed, so `failed` is true.
    """

    def __init__(
        self, publisher: EventPublisher, settings: Settings, source: str, redactor: Redactor | None = None
    ) -> None:
        self._publisher = publisher
        self._redactor = redactor or Redactor(settings.redact_keys)
        self._settings = settings
        self._source = source
        self._process = f"{socket.gethostname()}:{os.getpid()}"
        self._queue: queue.Queue[ExecutionLog] = queue.Queue(maxsize=settings.log_queue_size)
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._burst_failures = 0
        self._last_warning = 0.0
        self.shipped = 0
        self.dropped = 0
        self.failed = 0
        self.sanitised = 0
        """Lines whose fields or message had to be made safe (surrogates, cycles, unknown types, tuple keys)."""

    def stats(self) -> dict[str, int]:
        """Counters: shipped (acknowledged), dropped (queue full or stop deadline), failed, sanitised, queued."""
        return {
            "shipped": self.shipped,
            "dropped": self.dropped,
            "failed": self.failed,
            "sanitised": self.sanitised,
            "queued": self._queue.qsize() + len(self._in_flight),
        }

    def start(self) -> None:
        """Start draining on the running loop, in a fresh context so the drain itself is never traced."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task = self._loop.create_task(self._drain(), context=contextvars.Context())

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ship what is queued and wait for its acknowledgements, for at most `timeout_s`; the rest is dropped."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        task, self._task = self._task, None
        self._stopping = True
        self._wakeup.set()
        try:
            async with asyncio.timeout_at(deadline):
                if task is not None:
                    await task
                await self._ship_pending()  # lines queued while not started, or from threads during the stop
                if self._in_flight:
                    await asyncio.wait(set(self._in_flight))
        except TimeoutError:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            left = self._queue.qsize() + len(self._in_flight)
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self.dropped += left
            _internal.warning("stop deadline passed: %d execution-log line(s) not shipped", left)

    def submit(self, line: ExecutionLog) -> None:
        """Queue a line without blocking; from any thread. A full queue drops the line and counts it."""
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            if _on_loop_thread(loop):
                self._wakeup.set()
            else:
                loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:  # the loop closed in between: the line waits for the next start or stop
            return

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        """structlog processor: ship a copy of the event when it is written inside an action; never raises."""
        try:
            trace = current_trace()
            # `logger_name`: how the library's own loggers name themselves under any logger factory.
            name = event_dict.get("logger") or event_dict.get("logger_name") or getattr(logger, "name", None)
            if trace is None or _ignored(name):
                return event_dict
            fields = {k: v for k, v in event_dict.items() if k not in _RESERVED_KEYS}
            self.submit(
                self.make_line(
                    trace.trace_id,
                    trace.tenant_id,
                    _LEVELS.get(method_name, LogLevel.INFO),
                    name if isinstance(name, str) else None,
                    event_dict.get("event", ""),
                    fields,
                    trace.seal_fields,
                )
            )
        except Exception:  # a log call must never fail because of the audit trail
            self.dropped += 1
        return event_dict

    def handler(self, level: int = logging.NOTSET) -> logging.Handler:
        """A stdlib logging handler that ships records written inside an action."""
        return _ShippingHandler(self, level)

    def make_line(
        self,
        trace_id: str,
        tenant_id: str | None,
        level: LogLevel,
        logger: str | None,
        message: object,
        fields: dict[Any, Any],
        seal: FieldSealer | None = None,
    ) -> ExecutionLog:
        """An execution-log line stamped now, with message and fields made safe for the contract (and its
        personal fields sealed, after redaction, when the action seals)."""
        problems: dict[str, str] = {}
        safe = self._redactor.tree(to_json(fields, "fields", problems, max_bytes=_MAX_FIELDS_BYTES, lenient=True))
        text = self._redactor.text(safe_text(message, 16384))
        if problems or text != message:
            self.sanitised += 1
        log_id = uuid7()
        shipped = safe if isinstance(safe, dict) else {"fields": safe}
        return ExecutionLog(
            log_id=log_id,
            trace_id=trace_id,
            tenant_id=tenant_id,
            level=level,
            logger=safe_text(logger, 256) if logger else None,
            message=text,
            fields=shipped if seal is None else seal(shipped, log_id),
            process=self._process,
            logged_at=datetime.now(UTC),
        )

    async def _drain(self) -> None:
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._ship_pending()

    async def _ship_pending(self) -> None:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            event = ExecutionLogEvent(
                id=line.log_id,
                source=self._source,
                time=line.logged_at,
                traceparent=f"00-{line.trace_id}-{new_span_id()}-01",
                tracestate=tracestate_for(line.tenant_id) if line.tenant_id else None,
                partitionkey=line.trace_id,
                data=line,
            )
            try:
                future = await self._publisher.enqueue(
                    self._settings.execution_log_topic, line.trace_id.encode(), encode(event), kafka_headers(event)
                )
            except PublishError as e:
                self._failed(e)
                continue
            self._in_flight.add(future)
            future.add_done_callback(self._delivered)

    def _delivered(self, future: "asyncio.Future[Any]") -> None:
        """Every send's result is observed: acknowledged lines are shipped, the others failed."""
        self._in_flight.discard(future)
        if future.cancelled():
            self._failed(asyncio.CancelledError())
        elif (error := future.exception()) is not None:
            self._failed(error)
        else:
            self.shipped += 1
            if self._burst_failures:
                _internal.warning("execution-log shipping recovered after %d failed line(s)", self._burst_failures)
                self._burst_failures = 0

    def _failed(self, error: BaseException) -> None:
        """Count a failed line; warn once when a burst starts and then at most once a minute, not per line."""
        self.failed += 1
        self._burst_failures += 1
        now = time.monotonic()
        if self._burst_failures == 1 or now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            _internal.warning(
                "execution logs not shipped (%d in this burst, %d in all): %s", self._burst_failures, self.failed, error
            )


class _ShippingHandler(logging.Handler):
    def __init__(self, shipper: ExecutionLogShipper, level: int) -> None:
        super().__init__(level)
        self._shipper = shipper

    def emit(self, record: logging.LogRecord) -> None:
        trace = current_trace()
        # A dict message came through structlog, whose processor has shipped it already.
        if trace is None or _ignored(record.name) or isinstance(record.msg, dict):
            return
        try:
            fields = {k: v for k, v in record.__dict__.items() if k not in _STD_RECORD_KEYS}
            if record.exc_info:
                fields["exception"] = (self.formatter or logging.Formatter()).formatException(record.exc_info)
            level = _LEVELS.get(record.levelname.lower(), LogLevel.INFO)
            try:
                message: object = record.getMessage()
            except Exception:  # a bad format string: keep what was logged rather than fail
                message = f"{record.msg!r} % {record.args!r}"
            self._shipper.submit(
                self._shipper.make_line(
                    trace.trace_id, trace.tenant_id, level, record.name, message, fields, trace.seal_fields
                )
            )
        except Exception:  # never raise into the caller's logging call, nor print a traceback per line
            self._shipper.dropped += 1


def _ignored(name: object) -> bool:
    return isinstance(name, str) and name.startswith(IGNORED_LOGGERS)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
