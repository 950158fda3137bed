"""The Kafka side: an idempotent, acks=all producer with a deadline on every audit publish."""

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from audit_producer.errors import PublishError


class EventPublisher(Protocol):
    """Port for sending records; the Kafka implementation is below."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Send and wait for the acknowledgement, or raise PublishError."""

    async def enqueue(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Hand a record to the client's buffer without waiting for its acknowledgement."""


class KafkaPublisher:
    """aiokafka producer configured for an audit log: no duplicates, no loss, bounded waits."""

    def __init__(self, bootstrap_servers: str, timeout_s: float, linger_ms: int) -> None:
        self._bootstrap = bootstrap_servers
        self._timeout = timeout_s
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect; idempotent. The client is created here, so an unstarted publisher holds nothing open."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            request_timeout_ms=max(1000, int(self._timeout * 1000)),
            client_id="audit-producer",
        )
        try:
            async with asyncio.timeout(self._timeout * 3):
                await producer.start()
        except (KafkaError, TimeoutError, OSError) as e:
            await producer.stop()
            raise PublishError(f"cannot connect to Kafka: {e!r}") from e
        self._producer = producer

    async def stop(self) -> None:
        """Flush and disconnect; idempotent."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Send and wait for acks=all within the deadline."""
        try:
            async with asyncio.timeout(self._timeout):
                ack = await self._started().send(topic, value=value, key=key, headers=headers)
                await ack
        except (KafkaError, TimeoutError) as e:
            raise PublishError(f"publish to {topic} failed within {self._timeout}s: {e!r}") from e

    async def enqueue(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Buffer a record (execution logs); delivery errors surface on the returned future only."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._started().send(topic, value=value, key=key, headers=headers)
        except (KafkaError, TimeoutError) as e:
            raise PublishError(f"enqueue to {topic} failed: {e!r}") from e

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise PublishError("the Kafka publisher is not started")
        return self._producer
