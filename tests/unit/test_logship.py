"""Execution-log shipping: tagging, what is ignored, and never blocking the caller."""

import asyncio
import json
import logging
import time
from typing import Any
from uuid import uuid4

import structlog

from audit_producer import add_trace_context, resume_trace
from audit_producer.config import Settings
from audit_producer.logship import ExecutionLogShipper
from audit_schemas import ExecutionLogEvent, Traceparent, decode


class RecordingPublisher:
    """An EventPublisher that keeps what it is given, for checking the shipper's logic.

    `fail` makes every delivery future fail (as a broker outage does); `hold` leaves them pending.
    """

    def __init__(self, *, fail: bool = False, hold: bool = False) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []
        self.fail = fail
        self.hold = hold

    async def start(self) -> None:
        return None

    async def stop(self, timeout_s: float | None = None) -> None:
        return None

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.records.append((topic, key, value))

    async def enqueue(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> "asyncio.Future[Any]":
        self.records.append((topic, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(ConnectionError("broker unreachable"))
        elif not self.hold:
            future.set_result(None)
        return future


async def test_only_lines_inside_a_trace_are_shipped_and_kafka_logs_never() -> None:
    publisher = RecordingPublisher()
    shipper = ExecutionLogShipper(publisher, Settings(), "svc")
    shipper.start()
    logger = logging.getLogger("app.component")
    kafka_logger = logging.getLogger("aiokafka.conn")
    handler = shipper.handler()
    logger.addHandler(handler)
    kafka_logger.addHandler(handler)
    audit_id = uuid4()
    try:
        logger.warning("outside")
        with resume_trace(str(Traceparent.for_audit(audit_id)), tenant_id="acme"):
            logger.warning("inside %s", "trace", extra={"attempt": 2})
            kafka_logger.warning("broker chatter")
            tagged = add_trace_context(None, "info", {"event": "tagged"})
            assert tagged["trace_id"] == audit_id.hex
        assert add_trace_context(None, "info", {"event": "plain"}) == {"event": "plain"}
    finally:
        logger.removeHandler(handler)
        kafka_logger.removeHandler(handler)
        await shipper.stop()
    assert len(publisher.records) == 1
    topic, key, value = publisher.records[0]
    assert topic == Settings().execution_log_topic
    assert key == audit_id.hex.encode()
    event = decode(value)
    assert isinstance(event, ExecutionLogEvent)
    line = event.data
    assert json.loads(value)["type"] == "dev.audittrail.execution.log.v1"
    assert (line.message, line.level.value, line.tenant_id) == ("inside trace", "warning", "acme")
    assert line.fields == {"attempt": 2}


async def test_structlog_processor_ships_and_returns_the_event_unchanged() -> None:
    publisher = RecordingPublisher()
    shipper = ExecutionLogShipper(publisher, Settings(), "svc")
    shipper.start()
    log = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[add_trace_context, shipper, structlog.processors.JSONRenderer()]
    )
    with resume_trace(str(Traceparent.for_audit(uuid4())), tenant_id="acme"):
        rendered = log.info("applied", object={"not": "json-native", "set": {1}})
    await shipper.stop()
    assert "applied" in rendered
    [(_, _, value)] = publisher.records
    event = decode(value)
    assert isinstance(event, ExecutionLogEvent)
    assert event.data.fields["object"] == {"not": "json-native", "set": [1]}


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    publisher = RecordingPublisher()
    shipper = ExecutionLogShipper(publisher, Settings(log_queue_size=2), "svc")
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[shipper])
    with resume_trace(str(Traceparent.for_audit(uuid4())), tenant_id="acme"):
        for i in range(5):
            log.info("line", n=i)  # the drain task is not running: nothing can empty the queue
    assert shipper.dropped == 3
    await shipper.stop()
    assert len(publisher.records) == 2


class _Cyclic:
    def __repr__(self) -> str:
        raise RuntimeError("repr fails too")


async def test_hostile_values_never_raise_into_the_caller_and_are_made_safe() -> None:
    publisher = RecordingPublisher()
    shipper = ExecutionLogShipper(publisher, Settings(), "svc")
    shipper.start()
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[shipper])
    stdlib = logging.getLogger("app.hostile")
    stdlib.propagate = False  # only our handler: the point is that it never raises
    stdlib.addHandler(shipper.handler())
    circular: dict[str, Any] = {"name": "loop"}
    circular["self"] = circular
    try:
        with resume_trace(str(Traceparent.for_audit(uuid4())), tenant_id="acme"):
            log.info("lone \ud800 surrogate", value="\udcff", nul="a\x00b")
            log.info("circular", data=circular)
            log.info("tuple keys", mapping={(1, 2): "pair", None: 1})
            log.info("unserialisable", handle=object(), broken=_Cyclic(), ratio=float("nan"))
            stdlib.warning("bad format %d %s", "only-one")
            stdlib.warning("\ud800 in stdlib", extra={"payload": b"\xff\x00"})
    finally:
        stdlib.handlers.clear()
    await shipper.stop()
    assert shipper.dropped == 0
    assert len(publisher.records) == 6, "every line shipped, made safe"
    lines = [decode(v).data for _, _, v in publisher.records]
    assert all(isinstance(line, type(lines[0])) for line in lines)
    assert shipper.sanitised >= 5
    first = lines[0]
    assert "\\ud800" in first.message  # type: ignore[union-attr]


async def test_failed_sends_are_counted_from_their_futures_with_one_warning_per_burst(caplog: Any) -> None:
    publisher = RecordingPublisher(fail=True)
    shipper = ExecutionLogShipper(publisher, Settings(), "svc")
    shipper.start()
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[shipper])
    with caplog.at_level(logging.WARNING, logger="audit_producer.logship"):
        with resume_trace(str(Traceparent.for_audit(uuid4())), tenant_id="acme"):
            for i in range(50):
                log.info("line", n=i)
        await shipper.stop()
    assert (shipper.shipped, shipper.failed) == (0, 50)
    warnings = [r for r in caplog.records if "not shipped" in r.getMessage()]
    assert len(warnings) == 1, "one warning for the burst, not one per line"


async def test_stop_has_a_deadline_even_when_no_acknowledgement_comes() -> None:
    publisher = RecordingPublisher(hold=True)
    shipper = ExecutionLogShipper(publisher, Settings(), "svc")
    shipper.start()
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[shipper])
    with resume_trace(str(Traceparent.for_audit(uuid4())), tenant_id="acme"):
        for i in range(20):
            log.info("line", n=i)
    started = time.monotonic()
    await shipper.stop(0.3)
    assert time.monotonic() - started < 2
    assert shipper.dropped == 20, "lines never acknowledged by the deadline are counted as dropped"


async def test_the_librarys_own_lines_are_never_shipped_as_an_actions_logs() -> None:
    """With a logger factory that carries no names (the demo's PrintLogger), the library's module loggers still
    name themselves, so their lines (spooling, aborts) never land in the action's execution log."""
    from audit_producer import delivery, outbox, producer

    publisher = RecordingPublisher()
    shipper = ExecutionLogShipper(publisher, Settings(), "svc")
    shipper.start()
    structlog.configure(
        processors=[add_trace_context, shipper, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    try:
        with resume_trace(str(Traceparent(trace_id=uuid4().hex, span_id="1" * 16)), "audittrail=t:acme"):
            for module in (producer, delivery, outbox):
                module.log.warning("audit_outcome_spooled", reason="test")
            structlog.get_logger().info("the service's own line")
        await shipper.stop()
    finally:
        structlog.reset_defaults()
    shipped = [decode(value) for _, _, value in publisher.records]
    assert [e.data.message for e in shipped if isinstance(e, ExecutionLogEvent)] == ["the service's own line"]
