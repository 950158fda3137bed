"""The projection loop: Kafka batches into Postgres, with offsets fenced in the same transaction."""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from audit_projector.deadletter import DeadLetter, DeadLetterSink
from audit_projector.errors import FencedError
from audit_projector.repository import Block, OffsetFence, ProjectionRepository
from audit_projector.rows import BatchRows, Coordinates
from audit_projector.state import BlockedPartition, ProjectorState
from audit_schemas import EnvelopeError, NewerSchemaError, decode

log = structlog.get_logger(__name__)

Key = tuple[str, int]


@dataclass(slots=True)
class _Plan:
    """What one polled batch turns into before it is written."""

    rows: BatchRows = field(default_factory=BatchRows)
    letters: list[DeadLetter] = field(default_factory=list)
    fences: list[OffsetFence] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)


class Projector:
    """Consumes the audit and execution-log topics as one member of a consumer group."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        repository: ProjectionRepository,
        dead_letters: DeadLetterSink,
        state: ProjectorState,
        *,
        topics: Sequence[str],
        max_records: int,
        poll_timeout_ms: int,
        months_ahead: int = 3,
        maintenance_interval_s: float = 3600.0,
    ) -> None:
        self._consumer = consumer
        self._repo = repository
        self._dead_letters = dead_letters
        self.state = state
        self._topics = list(topics)
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._months_ahead = months_ahead
        self._maintenance_interval = maintenance_interval_s
        # Stored offset each owned partition's next batch must start from (None: no row yet).
        self._positions: dict[Key, int | None] = {}
        # Held for a whole batch, so a revocation waits for the batch in flight to commit or roll back.
        self._batch_lock = asyncio.Lock()

    def subscribe(self) -> None:
        """Join the group; positions come from Postgres on every assignment."""
        self._consumer.subscribe(self._topics, listener=_Rebalance(self))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and project until `stop` is set."""
        self.state.running = True
        maintained = time.monotonic()
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._max_records)
                if batch:
                    async with self._batch_lock:
                        await self._project(batch)
                if time.monotonic() - maintained >= self._maintenance_interval:
                    # A projector that runs for months keeps creating next months' partitions.
                    async with self._batch_lock:
                        await self._repo.ensure_partitions(self._months_ahead)
                    maintained = time.monotonic()
        finally:
            self.state.running = False

    async def end_offsets(self) -> dict[Key, int]:
        """Current end offset of every partition of the projected topics."""
        await self._consumer.topics()  # refreshes metadata so partitions_for_topic knows every topic
        partitions = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        ends = await self._consumer.end_offsets(partitions)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    def caught_up(self, targets: dict[Key, int]) -> bool:
        """True once every partition's stored position has reached its target offset."""
        return all(
            target == 0 or (self._positions.get(key) or 0) >= target or key in self.state.blocked
            for key, target in targets.items()
        )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Seek each new partition to its offset in Postgres, or to the beginning when none is stored."""
        async with self._batch_lock:
            stored = await self._repo.load_offsets((tp.topic, tp.partition) for tp in assigned)
            for tp in assigned:
                key = (tp.topic, tp.partition)
                offset = stored.get(key)
                self._positions[key] = offset
                self._seek(tp, offset)
            self.state.assigned = set(self._positions)
        log.info("partitions_assigned", count=len(assigned), resumed_from_postgres=len(stored))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Forget revoked partitions once the batch in flight is done."""
        async with self._batch_lock:
            for tp in revoked:
                key = (tp.topic, tp.partition)
                self._positions.pop(key, None)
                self.state.blocked.pop(key, None)
            self.state.assigned = set(self._positions)
        log.info("partitions_revoked", count=len(revoked))

    async def _project(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        plan = _Plan()
        for tp, records in batch.items():
            key = (tp.topic, tp.partition)
            if key not in self._positions or key in self.state.blocked or not records:
                continue  # fetched before a revocation, or stopped at a newer schema
            next_offset = self._plan_partition(plan, tp, records)
            if next_offset is not None:
                plan.fences.append(OffsetFence(tp.topic, tp.partition, self._positions[key], next_offset))
        if not plan.fences:
            return
        await self._dead_letters.publish(plan.letters)
        try:
            await self._repo.write_batch(plan.rows, plan.fences, plan.blocks)
        except FencedError as e:
            await self._recover_fence(e, plan.fences)
            return
        for f in plan.fences:
            self._positions[(f.topic, f.partition)] = f.next_offset
        for b in plan.blocks:
            tp = TopicPartition(b.topic, b.partition)
            self._consumer.pause(tp)
            self.state.blocked[(b.topic, b.partition)] = BlockedPartition(b.offset, b.event_type, b.schema_version)
            log.error(
                "partition_blocked_newer_schema",
                topic=b.topic,
                partition=b.partition,
                offset=b.offset,
                event_type=b.event_type,
                schema_version=b.schema_version,
            )
        self.state.batch_done(len(plan.rows) - len(plan.letters), len(plan.letters))
        log.debug(
            "batch_projected",
            rows=len(plan.rows),
            dead_letters=len(plan.letters),
            partitions=len(plan.fences),
        )

    def _plan_partition(self, plan: _Plan, tp: TopicPartition, records: list[ConsumerRecord]) -> int | None:
        """Add a partition's records to the plan; return the offset to store after them."""
        next_offset: int | None = None
        for record in records:
            at = Coordinates(tp.topic, tp.partition, record.offset)
            try:
                plan.rows.add(decode(record.value), at)
            except NewerSchemaError as e:
                plan.blocks.append(Block(tp.topic, tp.partition, record.offset, e.event_type, _str(e.schema_version)))
                # Stop before it: the offset stays on the newer event until an upgraded projector reads it.
                return int(record.offset)
            except EnvelopeError as e:
                letter = DeadLetter(
                    tp.topic,
                    tp.partition,
                    record.offset,
                    e.reason,
                    e.detail,
                    record.key,
                    record.value,
                    tuple(record.headers or ()),
                )
                plan.letters.append(letter)
                plan.rows.dead_letters.append(letter.row())
                log.warning(
                    "record_dead_lettered",
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=record.offset,
                    reason=e.reason,
                    detail=e.detail[:300],
                )
            next_offset = int(record.offset) + 1
        return next_offset

    async def _recover_fence(self, error: FencedError, fences: list[OffsetFence]) -> None:
        """Another member moved a partition on: reload what Postgres holds and seek every batch partition back."""
        self.state.fenced_batches += 1
        log.warning("batch_fenced", partitions=[f"{t}/{p}" for t, p in error.partitions])
        stored = await self._repo.load_offsets((f.topic, f.partition) for f in fences)
        for f in fences:
            key = (f.topic, f.partition)
            if key not in self._positions:
                continue
            offset = stored.get(key)
            self._positions[key] = offset
            self._seek(TopicPartition(f.topic, f.partition), offset)

    def _seek(self, tp: TopicPartition, stored: int | None) -> None:
        """Position a partition at its stored offset, or at the beginning when nothing is stored.

        Offset 0 rather than an awaited seek_to_beginning: the rebalance callback must not wait on a
        ListOffsets round trip (it stalls the group), and with retention.ms=-1 the log starts at 0; if
        it ever does not, auto_offset_reset="earliest" turns the out-of-range 0 into the first offset.
        """
        self._consumer.seek(tp, 0 if stored is None else stored)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Routes aiokafka's rebalance callbacks to the projector."""

    def __init__(self, projector: Projector) -> None:
        self._projector = projector

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._projector.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._projector.on_assigned(assigned)
