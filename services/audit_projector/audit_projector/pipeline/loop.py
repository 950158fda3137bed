"""One topic's projection loop, wiring the stages: fetch → decode and verify → plan → write (with isolation) →
tree and checkpoint; offsets are fenced in the batch's own transaction.

Each projected topic runs its own pipeline (consumer, connection, transactions), so a slow or failing
execution-log stream never holds up the audit stream.
"""

import asyncio
import contextlib
import time
from datetime import date

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from audit_projector import metrics
from audit_projector.checkpoints import Checkpointer
from audit_projector.deadletter import DeadLetterSink
from audit_projector.errors import DependencyUnavailableError
from audit_projector.pipeline import fetching
from audit_projector.pipeline.decoding import Decoded, Provenance, decode_batch
from audit_projector.pipeline.planning import Plan
from audit_projector.pipeline.positions import Positions
from audit_projector.pipeline.trees import tree_append
from audit_projector.pipeline.writing import Committed, Fenced, write
from audit_projector.repository import OffsetFence, ProjectionRepository, TreeState
from audit_projector.scope import Selector
from audit_projector.state import Key, PipelineState

log = structlog.get_logger(__name__)

_MAINTAIN_EVERY_S: float = 3600.0
"""How often the months ahead are made sure to have their partitions."""


class Pipeline:
    """Consumes one topic as a member of a consumer group and projects it into the read model."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        repository: ProjectionRepository,
        dead_letters: DeadLetterSink,
        state: PipelineState,
        *,
        max_records: int,
        poll_timeout_ms: int,
        probe_interval_s: float = 5.0,
        months_ahead: int = 3,
        merkle: bool = True,
        checkpointer: Checkpointer | None = None,
        require_signatures: bool = False,
        selector: Selector | None = None,
    ) -> None:
        self._consumer = consumer
        self._repo = repository
        self._dead_letters = dead_letters
        self.state = state
        self.topic = state.topic
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._probe_interval = probe_interval_s
        self._months_ahead = months_ahead
        self._merkle = merkle
        self._checkpoints = checkpointer
        self._selector = selector
        self._provenance = Provenance(require_signatures)
        self._partitions = Positions(consumer, repository, state, merkle, checkpointer)
        self._listener_error: BaseException | None = None
        # Held for a whole batch, so a revocation waits for the batch in flight to commit or roll back.
        self._batch_lock = asyncio.Lock()

    def subscribe(self) -> None:
        """Join the group; positions come from Postgres on every assignment."""
        self._consumer.subscribe([self.topic], listener=_Rebalance(self))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and project until `stop` is set; raise what needs the pipeline rebuilt.

        Two batches overlap: the next one is decoded (CPU) while the previous one commits (database), and
        is assembled against the stored positions only once that commit is known.
        """
        self.state.running = True
        probed = maintained = 0.0
        pending: asyncio.Task[None] | None = None
        probe: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                self._raise_listener_failure()
                fetched = await self._fetch()
                decoded = await decode_batch(fetched, self._provenance, self._selector) if fetched else None
                if pending is not None:
                    task, pending = pending, None
                    await task
                if decoded:
                    pending = asyncio.create_task(self._project_locked(decoded))
                now = time.monotonic()
                if now - probed >= self._probe_interval and (probe is None or probe.done()):
                    probed = now
                    probe = asyncio.create_task(fetching.probe(self._consumer, self.state))
                    await self.refresh_keys()
                    await self._unblock()
                    await self._checkpoint_by_time()
                if now - maintained >= _MAINTAIN_EVERY_S:
                    maintained = now
                    await self._repo.ensure_months(months_ahead(self._months_ahead))
            if pending is not None:
                task, pending = pending, None
                await task
        finally:
            for leftover in (pending, probe):
                if leftover is not None and not leftover.done():
                    leftover.cancel()
                    with contextlib.suppress(BaseException):
                        await leftover
            self.state.running = False

    async def _fetch(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        polled = await fetching.poll(self._consumer, self._poll_timeout_ms, self._max_records)
        if polled.out_of_range is not None:
            async with self._batch_lock:
                await self._partitions.out_of_range(polled.out_of_range)
        elif polled.reseek is not None:
            self._partitions.reseek(polled.reseek)
        return polled.records

    async def _checkpoint_by_time(self) -> None:
        """Sign what grew since the last checkpoint once `checkpoint_every_s` has passed, even in a quiet log."""
        if self._checkpoints is None:
            return
        async with self._batch_lock:
            for (topic, partition), tree in list(self._partitions.trees.items()):
                if (topic, partition) in self.state.positions:
                    await self._checkpoints.maybe_sign(topic, partition, tree, due_by_time=True)

    async def refresh_keys(self) -> None:
        """Reload the producer key registry (at start and with each probe), between batches on the connection."""
        async with self._batch_lock:
            self._provenance.keys = await self._repo.producer_keys()

    async def _unblock(self) -> None:
        if self.state.blocked:
            async with self._batch_lock:
                await self._partitions.unblock()

    async def _project_locked(self, decoded: dict[TopicPartition, list[Decoded]]) -> None:
        async with self._batch_lock:
            await self._project(decoded)

    async def end_offsets(self) -> dict[Key, int]:
        """Current end offset of every partition of the topic."""
        return await fetching.end_offsets(self._consumer, self.topic)

    def caught_up(self, targets: dict[Key, int]) -> bool:
        """True once every partition's stored position has reached its target (or the partition is blocked)."""
        return all(
            target == 0 or (self.state.positions.get(key) or 0) >= target or key in self.state.blocked
            for key, target in targets.items()
        )

    def _raise_listener_failure(self) -> None:
        # aiokafka logs and swallows exceptions raised in a rebalance listener; ours are re-raised here.
        if self._listener_error is not None:
            error, self._listener_error = self._listener_error, None
            raise DependencyUnavailableError(f"loading positions on assignment failed: {error}") from error

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Seek each new partition to its offset in Postgres, or to offset 0 when none is stored."""
        async with self._batch_lock:
            try:
                resumed = await self._partitions.assign(assigned)
            except Exception as e:
                self._listener_error = e
                log.error("assignment_failed", topic=self.topic, error=str(e))
                return
        log.info("partitions_assigned", topic=self.topic, count=len(assigned), resumed_from_postgres=resumed)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Forget revoked partitions once the batch in flight is done."""
        async with self._batch_lock:
            self._partitions.revoke(revoked)
        log.info("partitions_revoked", topic=self.topic, count=len(revoked))

    async def _project(self, fetched: dict[TopicPartition, list[Decoded]]) -> None:
        started = time.perf_counter()
        plan = Plan()
        positions = self.state.positions
        for tp, polled in fetched.items():
            key = (tp.topic, tp.partition)
            if key not in positions or key in self.state.blocked:
                continue  # fetched before a revocation, or stopped
            position = positions[key]
            # Records fetched before the seek to the stored offset applied are not ours to project again.
            fresh = [d for d in polled if position is None or d.at.offset >= position]
            if len(fresh) < len(polled):
                self.state.discarded += len(polled) - len(fresh)
                metrics.EVENTS.labels(self.topic, "discarded").inc(len(polled) - len(fresh))
            if not fresh:
                continue
            next_offset = plan.add(fresh, self._partitions.skips)
            if next_offset is not None:
                plan.batch.fences.append(OffsetFence(tp.topic, tp.partition, position, next_offset))
                if self._merkle:
                    before = self._partitions.trees.get(key, TreeState(0))
                    consumed = [d.record for d in fresh if d.at.offset < next_offset]
                    plan.batch.trees.append(tree_append(key, before, consumed))
        if not plan.batch.fences:
            return
        outcome = await write(plan, self._repo, self._dead_letters, self.topic)
        if isinstance(outcome, Fenced):
            await self._partitions.fenced(plan.batch.fences, outcome.error)
            return
        if not isinstance(outcome, Committed):
            await self._partitions.database_failed(plan.batch.fences, outcome.error)
            return
        self._partitions.committed(plan.batch)
        if self._checkpoints is not None:
            for t in plan.batch.trees:
                await self._checkpoints.maybe_sign(t.topic, t.partition, t.after)
        self._count(plan, outcome.duplicates, time.perf_counter() - started)

    def _count(self, plan: Plan, duplicates: int, seconds: float) -> None:
        projected = plan.projected - duplicates
        letters = plan.letters
        self.state.batch_done(projected, len(letters), duplicates)
        metrics.EVENTS.labels(self.topic, "projected").inc(projected)
        metrics.EVENTS.labels(self.topic, "duplicate").inc(duplicates)
        metrics.EVENTS.labels(self.topic, "dead_lettered").inc(len(letters))
        for letter in letters:
            metrics.DEAD_LETTERS.labels(self.topic, letter.reason).inc()
        metrics.BATCH_RECORDS.labels(self.topic).observe(len(plan.records))
        metrics.BATCH_SECONDS.labels(self.topic).observe(seconds)
        log.debug("batch_projected", topic=self.topic, rows=projected, dead_letters=len(letters))


def months_ahead(count: int) -> set[tuple[str, date]]:
    """The partitioned tables' months from this one to `count` ahead."""
    today = date.today()
    months = set()
    for i in range(count + 1):
        y, m = divmod(today.month - 1 + i, 12)
        first = date(today.year + y, m + 1, 1)
        months |= {("audit_entries", first), ("execution_logs", first)}
    return months


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Routes aiokafka's rebalance callbacks to the pipeline."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._pipeline.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._pipeline.on_assigned(assigned)
