"""Kafka reachability and end offsets, for readiness and projector lag."""

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from audit_query.errors import StoreUnavailableError, kafka_refusal
from audit_schemas.kafka_security import KafkaSecurity


class KafkaProbe:
    """A group-less consumer used only to read metadata and end offsets; reconnects after a failure."""

    def __init__(self, bootstrap_servers: str, timeout_s: float = 3.0, security: KafkaSecurity | None = None) -> None:
        self._bootstrap = bootstrap_servers
        self._security = security or KafkaSecurity()
        self._timeout = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def end_offsets(self, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
        """End offset of every partition of `topics`; StoreUnavailableError when Kafka does not answer."""
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    consumer = await self._connected()
                    ends = await self._ends(consumer, topics)
            except (KafkaError, TimeoutError, OSError) as e:
                await self.close()
                reason = await kafka_refusal(e, self._security, self._bootstrap)
                raise StoreUnavailableError(f"kafka unreachable: {reason}") from e
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    @staticmethod
    async def _ends(consumer: AIOKafkaConsumer, topics: tuple[str, ...]) -> dict[TopicPartition, int]:
        """End offsets of every known partition; the first call learns the partitions from partition 0's metadata.

        Partitions are assigned and paused in one step, so the probe never fetches a record: the API's principal
        may describe the topics, not read them.
        """
        ends: dict[TopicPartition, int] = {}
        if any(consumer.partitions_for_topic(t) is None for t in topics):
            existing = await consumer.topics()  # a topic that does not exist (yet) is not assigned: no lag for it
            topics = tuple(t for t in topics if t in existing)
        for _ in range(2):
            known = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or {0})]
            if set(known) == set(ends):
                break
            if set(known) != consumer.assignment():
                consumer.assign(known)
                consumer.pause(*known)
            ends = await consumer.end_offsets(known)
        return ends

    async def _connected(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap, enable_auto_commit=False, **self._security.client_options()
            )
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        """Disconnect."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(TimeoutError):  # a broker that stopped answering must not hold a probe
                await asyncio.wait_for(consumer.stop(), self._timeout)
