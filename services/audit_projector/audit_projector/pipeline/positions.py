"""Where each owned partition stands — its stored offset, Merkle tree, operator skips and block — kept in step with
PostgreSQL and the consumer: loaded on assignment, reloaded after a fence or a database failure, and blocked or
resumed as records, operators and the database say."""

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from audit_projector import metrics
from audit_projector.checkpoints import Checkpointer
from audit_projector.errors import DatabaseError, FencedError, ProjectorError
from audit_projector.pipeline.fetching import beginning_offsets
from audit_projector.repository import Batch, Block, OffsetFence, ProjectionRepository, Skip, TreeState
from audit_projector.rows import Coordinates
from audit_projector.state import BlockedPartition, Key, PipelineState

log = structlog.get_logger(__name__)

_DB_RETRY_START_S: Final = 2.0
_DB_RETRY_MAX_S: Final = 60.0


@dataclass
class Positions:
    """The owned partitions' positions (in `state`), trees and skips, and the consumer's seeks that follow them."""

    consumer: AIOKafkaConsumer
    repository: ProjectionRepository
    state: PipelineState
    merkle: bool = True
    checkpointer: Checkpointer | None = None
    trees: dict[Key, TreeState] = field(default_factory=dict)
    skips: dict[Coordinates, Skip] = field(default_factory=dict)
    _db_retry_s: float = _DB_RETRY_START_S

    async def assign(self, assigned: set[TopicPartition]) -> int:
        """Load the stored offsets (trees, skips, checkpoints) of new partitions and seek each to its offset, or to
        0 when none is stored; return how many resumed from PostgreSQL."""
        self.state.assigned |= {(tp.topic, tp.partition) for tp in assigned}
        keys = [(tp.topic, tp.partition) for tp in assigned]
        stored = await self.repository.load_offsets(keys)
        await self.load_skips(keys)
        if self.merkle:
            self.trees.update(await self.repository.load_trees(keys))
        if self.checkpointer is not None:
            await self.checkpointer.start(keys)
        for tp in assigned:
            key = (tp.topic, tp.partition)
            self.state.positions[key] = stored.get(key)
            self.consumer.seek(tp, stored.get(key, 0))
        return len(stored)

    def revoke(self, revoked: set[TopicPartition]) -> None:
        """Forget revoked partitions."""
        for tp in revoked:
            key = (tp.topic, tp.partition)
            self.state.positions.pop(key, None)
            self.trees.pop(key, None)
            self.state.blocked.pop(key, None)
            self.state.lag.pop(key, None)
            self.state.assigned.discard(key)

    def reseek(self, tp: object) -> None:
        """Put a partition back on its stored position.

        A partition whose position is not loaded yet is left to the rebalance listener, still running; if the
        listener failed, its error restarts the pipeline at the top of the loop.
        """
        if isinstance(tp, TopicPartition) and (tp.topic, tp.partition) in self.state.positions:
            self.consumer.seek(tp, self.state.positions[(tp.topic, tp.partition)] or 0)

    def committed(self, batch: Batch) -> None:
        """A batch is in: its partitions stand after it, and its blocks stop them."""
        self._db_retry_s = _DB_RETRY_START_S
        for f in batch.fences:
            self.state.positions[(f.topic, f.partition)] = f.next_offset
        for t in batch.trees:
            self.trees[(t.topic, t.partition)] = t.after
        for b in batch.blocks:
            self.block(b)

    async def fenced(self, fences: Sequence[OffsetFence], error: FencedError) -> None:
        """Another member moved a partition on: reload what PostgreSQL holds and seek every batch partition back."""
        self.state.fenced_batches += 1
        metrics.FENCED.labels(self.state.topic).inc()
        log.warning("batch_fenced", topic=self.state.topic, partitions=[f"{t}/{p}" for t, p in error.partitions])
        await self.reposition(fences)

    async def reposition(self, fences: Sequence[OffsetFence]) -> None:
        """Reload the stored offsets (and trees) of the fenced partitions and seek the consumer back to them."""
        stored = await self.repository.load_offsets((f.topic, f.partition) for f in fences)
        if self.merkle:
            self.trees.update(await self.repository.load_trees((f.topic, f.partition) for f in fences))
        for f in fences:
            key = (f.topic, f.partition)
            if key not in self.state.positions:
                continue
            self.state.positions[key] = stored.get(key)
            self.consumer.seek(TopicPartition(f.topic, f.partition), stored.get(key, 0))

    async def database_failed(self, fences: Sequence[OffsetFence], error: DatabaseError) -> None:
        """Not a record's fault: stop the batch's partitions, report, and try them again later by themselves."""
        retry_in = self._db_retry_s
        self._db_retry_s = min(self._db_retry_s * 2, _DB_RETRY_MAX_S)
        log.error(
            "partitions_blocked_database_error", topic=self.state.topic, error=str(error)[:500], retry_in_s=retry_in
        )
        await self.reposition(fences)
        for f in fences:
            offset = self.state.positions.get((f.topic, f.partition)) or 0
            block = Block(f.topic, f.partition, offset, "database_error", str(error)[:2000])
            self.block(block, retry_at=time.monotonic() + retry_in)
            try:
                await self.repository.record_block(block)
            except ProjectorError as e:
                log.warning("block_not_recorded", topic=f.topic, partition=f.partition, error=str(e)[:300])

    def block(self, b: Block, retry_at: float | None = None) -> None:
        """Stop a partition before a record: the consumer pauses it until it is resumed."""
        self.consumer.pause(TopicPartition(b.topic, b.partition))
        self.state.blocked[(b.topic, b.partition)] = BlockedPartition(
            b.offset, b.reason, b.detail, b.event_type, b.schema_version, retry_at
        )
        log.error(
            "partition_blocked",
            topic=b.topic,
            partition=b.partition,
            offset=b.offset,
            reason=b.reason,
            detail=(b.detail or "")[:300],
        )

    async def out_of_range(self, offsets: dict[TopicPartition, int]) -> None:
        """The broker no longer holds a stored offset: report and stop the partition, never reset it silently."""
        starts = await beginning_offsets(self.consumer, list(offsets))
        for tp, offset in offsets.items():
            if (tp.topic, tp.partition) not in self.state.positions:
                continue
            detail = (
                f"offset {offset} is not on the broker (log starts at {starts.get(tp, '?')}); "
                "restore the missing range or move past it with `audit-projector skip --move-to`"
            )
            block = Block(tp.topic, tp.partition, int(offset), "offset_out_of_range", detail)
            self.block(block)
            await self.repository.record_block(block)

    async def load_skips(self, keys: Iterable[Key]) -> None:
        """Operators' skip requests for these partitions, at or after their stored offsets."""
        for skip in await self.repository.load_skips(keys):
            self.skips[Coordinates(skip.topic, skip.partition, skip.offset)] = skip

    async def unblock(self) -> None:
        """Resume blocked partitions an operator skipped past, or whose database failure may have passed."""
        if not self.state.blocked:
            return
        await self.load_skips(list(self.state.blocked))
        now = time.monotonic()
        for key, b in list(self.state.blocked.items()):
            if b.reason == "offset_out_of_range":
                moves = [s for c, s in self.skips.items() if (c.topic, c.partition) == key and s.kind == "move_to"]
                if moves:
                    await self._move(key, moves[0])
                continue
            skipped = self.skips.get(Coordinates(key[0], key[1], b.offset))
            due = b.reason == "database_error" and b.retry_at is not None and now >= b.retry_at
            if (skipped is not None and skipped.kind == "dead_letter") or due:
                log.info("partition_resumed", topic=key[0], partition=key[1], offset=b.offset, reason=b.reason)
                del self.state.blocked[key]
                tp = TopicPartition(*key)
                self.consumer.seek(tp, self.state.positions.get(key) or 0)
                self.consumer.resume(tp)

    async def _move(self, key: Key, skip: Skip) -> None:
        """Move a partition's stored offset forward past a range the broker lost, as an operator asked."""
        position = self.state.positions.get(key)
        if position is not None and skip.offset < position:
            return
        fence = OffsetFence(key[0], key[1], position, skip.offset)
        try:
            await self.repository.write_batch(Batch(fences=[fence]))
        except FencedError:
            await self.reposition([fence])
            return
        log.warning(
            "partition_moved", topic=key[0], partition=key[1], to=skip.offset, by=skip.requested_by, reason=skip.reason
        )
        self.state.positions[key] = skip.offset
        del self.state.blocked[key]
        tp = TopicPartition(*key)
        self.consumer.seek(tp, skip.offset)
        self.consumer.resume(tp)
