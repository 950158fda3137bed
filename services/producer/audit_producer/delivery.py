"""Getting audit events to Kafka: publish and wait for the acknowledgement, or spool and re-send in order."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import structlog
from prometheus_client import Counter, Gauge

from audit_producer.config import Settings
from audit_producer.errors import PublishError, SpoolError
from audit_producer.publisher import EventPublisher
from audit_producer.spool import Spool, SpooledRecord
from audit_schemas.escrow import ESCROW_HEADER

Resolver = Callable[[SpooledRecord], Awaitable[tuple[bytes, bytes, list[tuple[str, bytes]]]]]
"""Turns an escrowed record into the record to send (key, value, headers); PublishError when it cannot yet."""

log = structlog.get_logger(__name__, logger_name=__name__)  # named, so the log shipper never ships its lines

SPOOLED: Final = Counter(
    "audit_producer_events_spooled", "Audit events written to the local spool, by kind.", ["source", "kind"]
)
RESENT: Final = Counter("audit_producer_spool_resent", "Spooled events Kafka acknowledged later.", ["source"])
REJECTED: Final = Counter(
    "audit_producer_spool_rejected", "Spooled events Kafka refused for good (set aside as .rejected).", ["source"]
)
SPOOL_RECORDS: Final = Gauge("audit_producer_spool_records", "Audit events waiting in the spool.", ["source"])
SPOOL_AGE: Final = Gauge(
    "audit_producer_spool_oldest_age_seconds", "Age of the oldest spooled audit event.", ["source"]
)
_BACKOFF_START_S: Final = 0.5
_BACKOFF_MAX_S: Final = 10.0
_WARN_EVERY_S: Final = 60.0


class Delivery:
    """The audit topic's publisher plus an optional durable spool drained by one background task."""

    def __init__(self, publisher: EventPublisher, settings: Settings, source: str) -> None:
        self._publisher = publisher
        self._settings = settings
        self._source = source
        self._topic = settings.audit_topic
        self.spool: Spool | None = None
        if settings.spool_enabled:
            root = Path(settings.spool_dir) / _directory_name(source)
            self.spool = Spool(root, settings.spool_max_records, settings.spool_max_bytes)
        self._wakeup = asyncio.Event()
        self._emptied = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._warned = 0.0
        self.last_ack: float | None = None
        """Monotonic time of the last acknowledged audit event."""
        self.resolver: Resolver | None = None
        """Set by the producer when it seals: resolves escrowed records before they are sent."""

    async def start(self) -> None:
        """Open the spool (picking up what a previous process left) and start draining it."""
        if self.spool is not None:
            await asyncio.to_thread(self.spool.open)
            self._gauge()
            if len(self.spool):
                log.warning("audit_spool_found", records=len(self.spool), directory=str(self.spool.directory))
            self._wakeup = asyncio.Event()
            self._emptied = asyncio.Event()
            self._drainer = asyncio.create_task(self._drain(), name="audit-spool-drainer")

    async def stop(self, timeout_s: float) -> None:
        """Give the drainer up to `timeout_s` to empty the spool; what is left stays on disk for the next start."""
        if self._drainer is not None and self.spool is not None:
            if len(self.spool):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._emptied.wait(), timeout_s)
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drainer
            self._drainer = None
            if len(self.spool):
                log.warning("audit_spool_left_on_disk", records=len(self.spool), directory=str(self.spool.directory))
        if self.spool is not None:
            self.spool.close()

    @property
    def queued(self) -> int:
        """Events waiting in the spool."""
        return len(self.spool) if self.spool is not None else 0

    async def publish(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Send and wait for acks=all within the deadline, or raise PublishError."""
        await self._publisher.publish(self._topic, key, value, headers)
        self.last_ack = time.monotonic()

    async def spool_event(self, kind: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Write an event durably to the spool (fsync'd before this returns), or raise SpoolError."""
        if self.spool is None:
            raise SpoolError("the spool is disabled (AUDIT_PRODUCER_SPOOL_ENABLED=false)")
        await asyncio.to_thread(self.spool.append, self._topic, key, value, headers)
        SPOOLED.labels(self._source, kind).inc()
        self._gauge()
        self._emptied.clear()
        self._wakeup.set()

    def health(self) -> dict[str, Any]:
        """A readiness detail for the service that embeds the library."""
        spool = self.spool
        return {
            "failure_mode": self._settings.failure_mode,
            "spool_records": len(spool) if spool else 0,
            "spool_oldest_age_s": round(spool.oldest_age(), 1) if spool else 0.0,
            "spool_directory": str(spool.directory) if spool and spool.directory else None,
            "seconds_since_last_ack": None if self.last_ack is None else round(time.monotonic() - self.last_ack, 1),
        }

    async def _drain(self) -> None:
        """Re-send spooled events oldest first; each is removed only after Kafka acknowledged it."""
        assert self.spool is not None
        spool = self.spool
        backoff = _BACKOFF_START_S
        while True:
            record = await asyncio.to_thread(spool.head)
            if record is None:
                self._gauge()
                self._emptied.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                if any(name == ESCROW_HEADER for name, _ in record.headers):
                    await self._resolve(record)
                    continue  # the head again, now complete
                await self._publisher.publish(record.topic, record.key, record.value, list(record.headers))
            except PublishError as e:
                if not e.retriable:
                    log.error("audit_spool_record_rejected", seq=record.seq, error=str(e))
                    await asyncio.to_thread(spool.set_aside, record.seq)
                    REJECTED.labels(self._source).inc()
                    continue
                self._warn(e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            self.last_ack = time.monotonic()
            await asyncio.to_thread(spool.remove, record.seq)
            RESENT.labels(self._source).inc()
            backoff = _BACKOFF_START_S
            self._gauge()
            if not len(spool):
                log.info("audit_spool_drained")

    async def _resolve(self, record: SpooledRecord) -> None:
        """Complete an escrowed record (its personal fields sealed by the key service) and rewrite it in place."""
        assert self.spool is not None
        if self.resolver is None:
            raise PublishError("an escrowed record waits for the key service, which is not configured", retriable=True)
        key, value, headers = await self.resolver(record)
        await asyncio.to_thread(self.spool.replace, record, key, value, headers)
        log.info("audit_escrow_resolved", seq=record.seq)

    def _warn(self, error: Exception) -> None:
        """One warning per minute while the spool cannot drain, not one per attempt."""
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY_S and self.spool is not None:
            self._warned = now
            log.warning(
                "audit_spool_waiting_for_kafka",
                records=len(self.spool),
                oldest_age_s=round(self.spool.oldest_age(), 1),
                error=str(error),
            )

    def _gauge(self) -> None:
        if self.spool is not None:
            SPOOL_RECORDS.labels(self._source).set(len(self.spool))
            SPOOL_AGE.labels(self._source).set(self.spool.oldest_age())


def _directory_name(source: str) -> str:
    """A service name as a safe directory name."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in source).strip(".")
    return cleaned or "service"
