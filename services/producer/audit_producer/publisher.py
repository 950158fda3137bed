"""The Kafka side: an idempotent, acks=all producer with a deadline on every audit publish."""

import asyncio
import contextlib
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import Counter

from audit_producer.errors import PublishError
from audit_schemas.kafka_logs import quiet_kafka_outages
from audit_schemas.kafka_security import KafkaSecurity
from audit_schemas.signing import EventSigner

_CONNECTION_ERRORS = frozenset(
    {"KafkaConnectionError", "NodeNotReadyError", "RequestTimedOutError", "KafkaTimeoutError"}
)


KAFKA_LINES_HELD: Final = Counter(
    "audit_producer_kafka_client_lines_held", "Kafka client warnings and errors held back during outages."
)


class EventPublisher(Protocol):
    """Port for sending records; the Kafka implementation is below."""

    async def start(self) -> None: ...

    async def stop(self, timeout_s: float | None = None) -> None: ...

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Send and wait for the acknowledgement, or raise PublishError."""

    async def enqueue(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> "asyncio.Future[Any]":
        """Hand a record to the client's buffer; the returned future settles with its acknowledgement."""


class KafkaPublisher:
    """aiokafka producer configured for an audit log: no duplicates, no loss, bounded waits."""

    def __init__(
        self,
        bootstrap_servers: str,
        timeout_s: float,
        linger_ms: int,
        signer: EventSigner | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._signer = signer
        self._security = security or KafkaSecurity()
        self._bootstrap = bootstrap_servers
        self._timeout = timeout_s
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._outages = quiet_kafka_outages(lambda n: KAFKA_LINES_HELD.inc(n))
        self._wanted = False
        self._connecting = asyncio.Lock()

    async def start(self) -> None:
        """Connect; idempotent. The client is created here, so an unstarted publisher holds nothing open."""
        self._wanted = True
        async with self._connecting:
            await self._connect()

    async def _connect(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            # A third of the publish deadline per request: a request to a leader that hangs (a frozen broker keeps
            # its sockets open) times out and is retried on the new leader within the deadline; the idempotent
            # producer retries with the same sequence numbers, so a retry is never a duplicate.
            request_timeout_ms=max(1000, int(self._timeout * 1000 / 3)),
            client_id="audit-producer",
            **self._security.client_options(),
        )
        try:
            async with asyncio.timeout(self._timeout * 3):
                await producer.start()
        except BaseException as e:  # also on cancellation: a half-started client must be closed
            with contextlib.suppress(Exception):
                await asyncio.shield(producer.stop())
            if isinstance(e, KafkaError | TimeoutError | OSError):
                refusal = (
                    await self._security.explain_refusal(self._bootstrap)
                    if isinstance(e, KafkaConnectionError)
                    else None
                )
                reason = f"{e!r}" if refusal is None else f"{e!r}: {refusal.reason}"
                raise PublishError(f"cannot connect to Kafka: {reason}") from e
            raise
        self._producer = producer

    async def stop(self, timeout_s: float | None = None) -> None:
        """Flush and disconnect within a deadline (an unreachable broker must not hold the caller); idempotent."""
        self._wanted = False
        producer, self._producer = self._producer, None
        if producer is not None:
            # Past the deadline what was buffered is given up (audit events waiting for it are in the spool) and
            # the sockets are closed outright: aiokafka's client.close() closes them before it waits for anything.
            try:
                await asyncio.wait_for(producer.stop(), timeout_s or self._timeout * 2)
            except (TimeoutError, KafkaError, OSError):
                # aiokafka has no public way to abandon a flush: cancel its sender task (else it is left pending
                # and destroyed later), then close the sockets.
                sender = getattr(producer, "_sender", None)
                if sender is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(sender.close(), 1)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.client.close(), 1)

    def _signed(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> list[tuple[str, bytes]]:
        """The headers with this service's signature over topic, key and value (when it signs)."""
        return headers if self._signer is None else self._signer.sign_into(topic, key, value, headers)

    async def _connected(self) -> AIOKafkaProducer:
        """The started client; after a failed start (fail-open), connect now."""
        if self._producer is None:
            if not self._wanted:
                raise PublishError("the Kafka publisher is not started")
            async with self._connecting:
                await self._connect()
        assert self._producer is not None
        return self._producer

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Send and wait for acks=all within the deadline."""
        headers = self._signed(topic, key, value, headers)
        try:
            async with asyncio.timeout(self._timeout):
                ack = await (await self._connected()).send(topic, value=value, key=key, headers=headers)
                await ack
            if self._outages.in_outage:
                self._outages.recovered()
        except TimeoutError as e:
            raise PublishError(f"publish to {topic} not acknowledged within {self._timeout}s") from e
        except KafkaError as e:
            retriable = bool(e.retriable) or type(e).__name__ in _CONNECTION_ERRORS
            raise PublishError(f"publish to {topic} failed: {e!r}", retriable=retriable) from e

    async def enqueue(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> "asyncio.Future[Any]":
        """Buffer a record (execution logs); its delivery result is on the returned future for the caller to observe."""
        headers = self._signed(topic, key, value, headers)
        try:
            async with asyncio.timeout(self._timeout):
                future: asyncio.Future[Any] = await (await self._connected()).send(
                    topic, value=value, key=key, headers=headers
                )
                return future
        except (KafkaError, TimeoutError) as e:
            raise PublishError(f"enqueue to {topic} failed: {e!r}") from e
