"""Execution-log shipping: tagging, what is ignored, and never blocking the caller."""

import json
import logging
from uuid import uuid4

import structlog

from audit_producer import add_trace_context, resume_trace
from audit_producer.config import Settings
from audit_producer.logship import ExecutionLogShipper
from audit_schemas import ExecutionLogEvent, Traceparent, decode


class RecordingPublisher:
    """An EventPublisher that keeps what it is given, for checking the shipper's logic."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.records.append((topic, key, value))

    async def enqueue(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.records.append((topic, key, value))


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
    with resume_trace(str(Traceparent.for_audit(uuid4()))):
        rendered = log.info("applied", object={"not": "json-native", "set": {1}})
    await shipper.stop()
    assert "applied" in rendered
    [(_, _, value)] = publisher.records
    event = decode(value)
    assert isinstance(event, ExecutionLogEvent)
    assert event.data.fields["object"] == {"not": "json-native", "set": "{1}"}


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    publisher = RecordingPublisher()
    shipper = ExecutionLogShipper(publisher, Settings(log_queue_size=2), "svc")
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[shipper])
    with resume_trace(str(Traceparent.for_audit(uuid4()))):
        for i in range(5):
            log.info("line", n=i)  # the drain task is not running: nothing can empty the queue
    assert shipper.dropped == 3
    await shipper.stop()
    assert len(publisher.records) == 2
