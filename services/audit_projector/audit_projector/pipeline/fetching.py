"""Fetch: poll the consumer for the next records, and probe the broker's end offsets (lag, and proof it answers)."""

import asyncio
import time
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from audit_projector.errors import classify_kafka_error, kafka_errors
from audit_projector.state import Key, PipelineState

log = structlog.get_logger(__name__)

_PROBE_TIMEOUT_S: float = 5.0


@dataclass(frozen=True, slots=True)
class Polled:
    """What a poll brought: records, or stored offsets the broker no longer holds, or a partition to seek again."""

    records: dict[TopicPartition, list[ConsumerRecord]] = field(default_factory=dict)
    out_of_range: dict[TopicPartition, int] | None = None
    reseek: object = None
    """A partition the fetcher looked up a Kafka-committed offset for (we keep none) before our seek applied."""


async def poll(consumer: AIOKafkaConsumer, timeout_ms: int, max_records: int) -> Polled:
    """The next records, up to `max_records` within `timeout_ms`; Kafka errors classified."""
    try:
        fetched: dict[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(
            timeout_ms=timeout_ms, max_records=max_records
        )
    except OffsetOutOfRangeError as e:
        return Polled(out_of_range=e.args[0] if e.args and isinstance(e.args[0], dict) else {})
    except NoOffsetForPartitionError as e:
        return Polled(reseek=e.args[0] if e.args else None)
    except KafkaError as e:
        raise classify_kafka_error("poll failed", e) from e
    return Polled(fetched)


async def probe(consumer: AIOKafkaConsumer, state: PipelineState) -> None:
    """End offsets of the owned partitions into `state`: lag, and proof the broker answers."""
    owned = [TopicPartition(t, p) for t, p in state.positions]
    if not owned:
        state.last_probe_ok = time.monotonic()
        return
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            ends = await consumer.end_offsets(owned)
    except Exception as e:
        log.warning("broker_probe_failed", topic=state.topic, error=repr(e)[:300])
        return
    state.last_probe_ok = time.monotonic()
    for tp, end in ends.items():
        key = (tp.topic, tp.partition)
        if key in state.positions:
            state.lag[key] = max(0, int(end) - (state.positions[key] or 0))
    if sum(state.lag.values()) == 0:
        state.last_progress = time.monotonic()


async def end_offsets(consumer: AIOKafkaConsumer, topic: str) -> dict[Key, int]:
    """Current end offset of every partition of `topic`."""
    with kafka_errors("cannot read end offsets"):
        await consumer.topics()  # refreshes metadata so partitions_for_topic knows the topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(partitions)
    return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}


async def beginning_offsets(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Where the broker's log of each partition starts now (empty when it does not say within the probe's time)."""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            found: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
            return found
    except Exception:
        return {}
