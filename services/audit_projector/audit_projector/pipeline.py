"""One topic's projection loop: Kafka batches into Postgres, offsets fenced in the same transaction.

Each projected topic runs its own pipeline (consumer, connection, transactions), so a slow or failing
execution-log stream never holds up the audit stream.
"""

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Final, NamedTuple

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from audit_projector import metrics
from audit_projector.checkpoints import Checkpointer
from audit_projector.deadletter import DeadLetter, DeadLetterSink, safe_detail
from audit_projector.errors import (
    DatabaseError,
    DependencyUnavailableError,
    FencedError,
    ProjectorError,
    RecordDataError,
    RecordsRejectedError,
    classify_kafka_error,
    kafka_errors,
)
from audit_projector.repository import (
    Batch,
    Block,
    OffsetFence,
    ProducerKey,
    ProjectionRepository,
    Skip,
    TreeAppend,
    TreeState,
)
from audit_projector.rows import Coordinates, Row, Table, row_for
from audit_projector.scope import Selector
from audit_projector.state import BlockedPartition, Key, PipelineState
from audit_schemas import (
    ActionEvent,
    EnvelopeError,
    ExecutionLogEvent,
    NewerSchemaError,
    OutcomeEvent,
    decode,
    merkle,
    signing,
)

log = structlog.get_logger(__name__)

_DB_RETRY_START_S: Final = 2.0
_DB_RETRY_MAX_S: Final = 60.0
_SYSTEMIC_SHARE: Final = 0.5
"""Above this share of a batch (of 10+ records) refused by the database, the fault is the database's."""


class Decoded(NamedTuple):
    """A polled record, where it sits, and the row it becomes (or why it cannot)."""

    record: ConsumerRecord
    at: Coordinates
    item: "tuple[Table, Row] | EnvelopeError | NewerSchemaError | None"
    """None: outside an investigation rebuild's scope (the offset moves on, nothing is written)."""


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
        self._skips: dict[Coordinates, Skip] = {}
        self._merkle = merkle
        self._checkpoints = checkpointer
        self._require_signatures = require_signatures
        self._selector = selector
        self._producer_keys: dict[str, ProducerKey] = {}
        self._trees: dict[Key, TreeState] = {}
        self._listener_error: BaseException | None = None
        self._db_retry_s = _DB_RETRY_START_S
        # Held for a whole batch, so a revocation waits for the batch in flight to commit or roll back.
        self._batch_lock = asyncio.Lock()

    @property
    def _positions(self) -> dict[Key, int | None]:
        return self.state.positions

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
                fetched = await self._poll()
                decoded = await self._decode(fetched) if fetched else None
                if pending is not None:
                    task, pending = pending, None
                    await task
                if decoded:
                    pending = asyncio.create_task(self._project_locked(decoded))
                now = time.monotonic()
                if now - probed >= self._probe_interval and (probe is None or probe.done()):
                    probed = now
                    probe = asyncio.create_task(self._probe())
                    await self.refresh_keys()
                    await self._unblock()
                    await self._checkpoint_by_time()
                if now - maintained >= 3600:
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

    async def _checkpoint_by_time(self) -> None:
        """Sign what grew since the last checkpoint once `checkpoint_every_s` has passed, even in a quiet log."""
        if self._checkpoints is None:
            return
        async with self._batch_lock:
            for (topic, partition), tree in list(self._trees.items()):
                if (topic, partition) in self._positions:
                    await self._checkpoints.maybe_sign(topic, partition, tree, due_by_time=True)

    async def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        try:
            fetched: dict[TopicPartition, list[ConsumerRecord]] = await self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms, max_records=self._max_records
            )
        except OffsetOutOfRangeError as e:
            await self._out_of_range(e.args[0] if e.args and isinstance(e.args[0], dict) else {})
            return {}
        except NoOffsetForPartitionError as e:
            # The fetcher looked for a Kafka-committed offset (we keep none) before our seek applied.
            self._reseek(e.args[0] if e.args else None)
            return {}
        except KafkaError as e:
            raise classify_kafka_error("poll failed", e) from e
        return fetched

    async def _decode(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, list[Decoded]]:
        """Decode records and build their rows: the CPU half of a batch, independent of stored positions."""
        out: dict[TopicPartition, list[Decoded]] = {}
        done = 0
        for tp, polled in fetched.items():
            items: list[Decoded] = []
            for record in polled:
                at = Coordinates(tp.topic, tp.partition, int(record.offset))
                item: tuple[Table, Row] | EnvelopeError | NewerSchemaError | None
                try:
                    event = decode(record.value)
                    self._check_provenance(record, event)
                    keep = self._selector is None or self._selector.keep(event)
                    item = row_for(event, at) if keep else None
                except (EnvelopeError, NewerSchemaError) as e:
                    item = None if self._selector is not None else e
                items.append(Decoded(record, at, item))
                done += 1
                if done % 64 == 0:
                    await asyncio.sleep(0)  # let the commit in flight make progress
            out[tp] = items
        return out

    def _check_provenance(self, record: ConsumerRecord, event: ActionEvent | OutcomeEvent | ExecutionLogEvent) -> None:
        """The record's signature, by a registered key allowed this source and tenant at this time, or poison."""
        try:
            found = signing.signature_of(list(record.headers or ()))
        except ValueError as e:
            raise EnvelopeError("bad_signature", str(e)) from e
        if found is None:
            if self._require_signatures:
                raise EnvelopeError("unsigned", "signatures are required and this record carries none")
            return
        kid, signature = found
        key = self._producer_keys.get(kid)
        if key is None:
            raise EnvelopeError("unknown_signing_key", f"key {kid} is not in the producer key registry")
        if not signing.verify(key.public_key, signature, record.topic, record.key, record.value):
            raise EnvelopeError("bad_signature", f"the signature by {kid} does not cover this record")
        when = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        if when < key.valid_from or (key.valid_until is not None and when >= key.valid_until):
            raise EnvelopeError("key_not_valid", f"key {kid} is not valid at {when.isoformat()}")
        if event.source not in key.sources:
            raise EnvelopeError("source_not_allowed", f"key {kid} may not write for source {event.source!r}")
        tenant = event.data.tenant_id
        if key.tenants is not None and tenant not in key.tenants:
            raise EnvelopeError("tenant_not_allowed", f"key {kid} may not write for tenant {tenant!r}")

    async def refresh_keys(self) -> None:
        """Reload the producer key registry (at start and with each probe), between batches on the connection."""
        async with self._batch_lock:
            self._producer_keys = await self._repo.producer_keys()

    async def _project_locked(self, decoded: dict[TopicPartition, list[Decoded]]) -> None:
        async with self._batch_lock:
            await self._project(decoded)

    async def end_offsets(self) -> dict[Key, int]:
        """Current end offset of every partition of the topic."""
        with kafka_errors("cannot read end offsets"):
            await self._consumer.topics()  # refreshes metadata so partitions_for_topic knows the topic
            partitions = [
                TopicPartition(self.topic, p) for p in sorted(self._consumer.partitions_for_topic(self.topic) or ())
            ]
            ends = await self._consumer.end_offsets(partitions)
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

    def caught_up(self, targets: dict[Key, int]) -> bool:
        """True once every partition's stored position has reached its target (or the partition is blocked)."""
        return all(
            target == 0 or (self._positions.get(key) or 0) >= target or key in self.state.blocked
            for key, target in targets.items()
        )

    def _reseek(self, tp: object) -> None:
        """Put a partition back on its stored position.

        A partition whose position is not loaded yet is left to the rebalance listener, still running; if the
        listener failed, its error restarts the pipeline at the top of the loop.
        """
        if isinstance(tp, TopicPartition) and (tp.topic, tp.partition) in self._positions:
            self._consumer.seek(tp, self._positions[(tp.topic, tp.partition)] or 0)

    def _raise_listener_failure(self) -> None:
        # aiokafka logs and swallows exceptions raised in a rebalance listener; ours are re-raised here.
        if self._listener_error is not None:
            error, self._listener_error = self._listener_error, None
            raise DependencyUnavailableError(f"loading positions on assignment failed: {error}") from error

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Seek each new partition to its offset in Postgres, or to offset 0 when none is stored."""
        async with self._batch_lock:
            self.state.assigned |= {(tp.topic, tp.partition) for tp in assigned}
            try:
                keys = [(tp.topic, tp.partition) for tp in assigned]
                stored = await self._repo.load_offsets(keys)
                await self._load_skips(keys)
                if self._merkle:
                    self._trees.update(await self._repo.load_trees(keys))
                if self._checkpoints is not None:
                    await self._checkpoints.start(keys)
            except Exception as e:
                self._listener_error = e
                log.error("assignment_failed", topic=self.topic, error=str(e))
                return
            for tp in assigned:
                key = (tp.topic, tp.partition)
                self._positions[key] = stored.get(key)
                self._consumer.seek(tp, stored.get(key, 0))
        log.info("partitions_assigned", topic=self.topic, count=len(assigned), resumed_from_postgres=len(stored))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Forget revoked partitions once the batch in flight is done."""
        async with self._batch_lock:
            for tp in revoked:
                key = (tp.topic, tp.partition)
                self._positions.pop(key, None)
                self._trees.pop(key, None)
                self.state.blocked.pop(key, None)
                self.state.lag.pop(key, None)
                self.state.assigned.discard(key)
        log.info("partitions_revoked", topic=self.topic, count=len(revoked))

    async def _project(self, fetched: dict[TopicPartition, list[Decoded]]) -> None:
        started = time.perf_counter()
        batch = Batch()
        records: dict[Coordinates, ConsumerRecord] = {}
        letters: list[DeadLetter] = []
        for tp, polled in fetched.items():
            key = (tp.topic, tp.partition)
            if key not in self._positions or key in self.state.blocked:
                continue  # fetched before a revocation, or stopped
            position = self._positions[key]
            # Records fetched before the seek to the stored offset applied are not ours to project again.
            fresh = [d for d in polled if position is None or d.at.offset >= position]
            if len(fresh) < len(polled):
                self.state.discarded += len(polled) - len(fresh)
                metrics.EVENTS.labels(self.topic, "discarded").inc(len(polled) - len(fresh))
            if not fresh:
                continue
            next_offset = self._plan(batch, letters, records, tp, fresh)
            if next_offset is not None:
                batch.fences.append(OffsetFence(tp.topic, tp.partition, position, next_offset))
                if self._merkle:
                    batch.trees.append(self._tree_append(key, [d.record for d in fresh if d.at.offset < next_offset]))
        if not batch.fences:
            return
        result = await self._write(batch, letters, records)
        if result is None:
            return
        duplicates, letters = result
        for f in batch.fences:
            self._positions[(f.topic, f.partition)] = f.next_offset
        for t in batch.trees:
            self._trees[(t.topic, t.partition)] = t.after
            if self._checkpoints is not None:
                await self._checkpoints.maybe_sign(t.topic, t.partition, t.after)
        for b in batch.blocks:
            self._block(b)
        projected = len(batch.rows.entries) + len(batch.rows.outcomes) + len(batch.rows.logs) - duplicates
        self.state.batch_done(projected, len(letters), duplicates)
        metrics.EVENTS.labels(self.topic, "projected").inc(projected)
        metrics.EVENTS.labels(self.topic, "duplicate").inc(duplicates)
        metrics.EVENTS.labels(self.topic, "dead_lettered").inc(len(letters))
        for letter in letters:
            metrics.DEAD_LETTERS.labels(self.topic, letter.reason).inc()
        metrics.BATCH_RECORDS.labels(self.topic).observe(len(records))
        metrics.BATCH_SECONDS.labels(self.topic).observe(time.perf_counter() - started)
        log.debug("batch_projected", topic=self.topic, rows=projected, dead_letters=len(letters))

    def _tree_append(self, key: Key, consumed: list[ConsumerRecord]) -> TreeAppend:
        """The leaves `consumed` adds to the partition's tree: every record, whatever becomes of it."""
        before = self._trees.get(key, TreeState(0))
        data = [
            merkle.leaf_data(key[0], key[1], int(r.offset), r.key, list(r.headers or ()), r.value) for r in consumed
        ]
        hashes = [merkle.leaf_hash(d) for d in data]
        frontier, size, nodes = merkle.append_leaves(before.frontier, before.size, hashes)
        leaves = tuple(
            (before.size + i, int(r.offset), h, d)
            for i, (r, h, d) in enumerate(zip(consumed, hashes, data, strict=True))
        )
        return TreeAppend(key[0], key[1], before, TreeState(size, tuple(frontier)), leaves, tuple(nodes))

    def _plan(
        self,
        batch: Batch,
        letters: list[DeadLetter],
        records: dict[Coordinates, ConsumerRecord],
        tp: TopicPartition,
        polled: list[Decoded],
    ) -> int | None:
        """Add a partition's decoded records to the batch; return the offset to store after them."""
        next_offset: int | None = None
        for record, at, item in polled:
            records[at] = record
            skip = self._skips.get(at)
            if skip is not None and skip.kind == "dead_letter":
                detail = f"skipped by {skip.requested_by}: {skip.reason}"
                self._letter(batch, letters, record, at, "operator_skip", detail)
            elif isinstance(item, NewerSchemaError):
                version = None if item.schema_version is None else str(item.schema_version)
                batch.blocks.append(
                    Block(at.topic, at.partition, at.offset, "newer_schema", str(item), item.event_type, version)
                )
                # Stop before it: the offset stays on the newer event until an upgraded projector reads it.
                return at.offset
            elif isinstance(item, EnvelopeError):
                self._letter(batch, letters, record, at, item.reason, item.detail)
            elif item is not None:
                batch.rows.put(*item)
            next_offset = at.offset + 1
        return next_offset

    def _letter(
        self,
        batch: Batch,
        letters: list[DeadLetter],
        record: ConsumerRecord,
        at: Coordinates,
        reason: str,
        detail: str,
    ) -> None:
        letter = DeadLetter(
            at.topic,
            at.partition,
            at.offset,
            reason,
            safe_detail(detail),
            record.key,
            record.value,
            tuple(record.headers or ()),
        )
        letters.append(letter)
        batch.rows.dead_letters.append(letter.row())
        log.warning(
            "record_dead_lettered",
            topic=at.topic,
            partition=at.partition,
            offset=at.offset,
            reason=reason,
            detail=letter.detail[:300],
        )

    async def _write(
        self, batch: Batch, letters: list[DeadLetter], records: dict[Coordinates, ConsumerRecord]
    ) -> tuple[int, list[DeadLetter]] | None:
        """Publish dead letters, then commit; isolate refused records and retry without them.

        Returns (duplicates dropped, dead letters) once committed, or None when the batch was abandoned
        (fenced, or its partitions blocked by a database failure) and its partitions were re-read.
        """
        published = 0
        isolate = False
        refused_by_db = 0
        for _ in range(len(records) + 2):  # each retry refuses at least one record, or isolates once
            await self._dead_letters.publish(letters[published:])
            published = len(letters)
            try:
                result = await self._repo.write_batch(batch, isolate=isolate)
            except FencedError as e:
                await self._recover(batch.fences, e)
                return None
            except RecordDataError as e:
                if isolate:
                    await self._database_failed(batch.fences, DatabaseError(str(e)))
                    return None
                log.warning("batch_refused_isolating", topic=self.topic, error=str(e)[:300])
                isolate = True
                continue
            except RecordsRejectedError as e:
                refused_by_db += sum(r.reason == "database_refused" for r in e.rejections)
                if len(records) >= 10 and refused_by_db > _SYSTEMIC_SHARE * len(records):
                    await self._database_failed(
                        batch.fences, DatabaseError(f"the database refused most of a batch: {e.rejections[0].detail}")
                    )
                    return None
                refused = set()
                for r in e.rejections:
                    at = Coordinates(r.topic, r.partition, r.offset)
                    refused.add(at)
                    self._letter(batch, letters, records[at], at, r.reason, r.detail)
                batch.rows.without(refused)
                continue
            except DatabaseError as e:
                await self._database_failed(batch.fences, e)
                return None
            self._db_retry_s = _DB_RETRY_START_S
            if result.duplicates:
                log.info("duplicates_dropped", topic=self.topic, records=[str(c) for c in result.duplicates][:10])
            return len(result.duplicates), letters
        raise ProjectorError("batch could not be written after refusing every record")  # unreachable in practice

    async def _recover(self, fences: Sequence[OffsetFence], error: FencedError) -> None:
        """Another member moved a partition on: reload what Postgres holds and seek every batch partition back."""
        self.state.fenced_batches += 1
        metrics.FENCED.labels(self.topic).inc()
        log.warning("batch_fenced", topic=self.topic, partitions=[f"{t}/{p}" for t, p in error.partitions])
        await self._reposition(fences)

    async def _reposition(self, fences: Sequence[OffsetFence]) -> None:
        stored = await self._repo.load_offsets((f.topic, f.partition) for f in fences)
        if self._merkle:
            self._trees.update(await self._repo.load_trees((f.topic, f.partition) for f in fences))
        for f in fences:
            key = (f.topic, f.partition)
            if key not in self._positions:
                continue
            self._positions[key] = stored.get(key)
            self._consumer.seek(TopicPartition(f.topic, f.partition), stored.get(key, 0))

    async def _database_failed(self, fences: Sequence[OffsetFence], error: DatabaseError) -> None:
        """Not a record's fault: stop the batch's partitions, report, and try them again later by themselves."""
        retry_in = self._db_retry_s
        self._db_retry_s = min(self._db_retry_s * 2, _DB_RETRY_MAX_S)
        log.error("partitions_blocked_database_error", topic=self.topic, error=str(error)[:500], retry_in_s=retry_in)
        await self._reposition(fences)
        for f in fences:
            offset = self._positions.get((f.topic, f.partition)) or 0
            block = Block(f.topic, f.partition, offset, "database_error", str(error)[:2000])
            self._block(block, retry_at=time.monotonic() + retry_in)
            try:
                await self._repo.record_block(block)
            except ProjectorError as e:
                log.warning("block_not_recorded", topic=f.topic, partition=f.partition, error=str(e)[:300])

    def _block(self, b: Block, retry_at: float | None = None) -> None:
        self._consumer.pause(TopicPartition(b.topic, b.partition))
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

    async def _out_of_range(self, offsets: dict[TopicPartition, int]) -> None:
        """The broker no longer holds a stored offset: report and stop the partition, never reset it silently."""
        async with self._batch_lock:
            starts = await self._beginning_offsets(list(offsets))
            for tp, offset in offsets.items():
                if (tp.topic, tp.partition) not in self._positions:
                    continue
                detail = (
                    f"offset {offset} is not on the broker (log starts at {starts.get(tp, '?')}); "
                    "restore the missing range or move past it with `audit-projector skip --move-to`"
                )
                block = Block(tp.topic, tp.partition, int(offset), "offset_out_of_range", detail)
                self._block(block)
                await self._repo.record_block(block)

    async def _beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        try:
            async with asyncio.timeout(5):
                found: dict[TopicPartition, int] = await self._consumer.beginning_offsets(partitions)
                return found
        except Exception:
            return {}

    async def _probe(self) -> None:
        """End offsets of the owned partitions: lag, and proof the broker answers."""
        owned = [TopicPartition(t, p) for t, p in self._positions]
        if not owned:
            self.state.last_probe_ok = time.monotonic()
            return
        try:
            async with asyncio.timeout(5):
                ends = await self._consumer.end_offsets(owned)
        except Exception as e:
            log.warning("broker_probe_failed", topic=self.topic, error=repr(e)[:300])
            return
        self.state.last_probe_ok = time.monotonic()
        for tp, end in ends.items():
            key = (tp.topic, tp.partition)
            if key in self._positions:
                self.state.lag[key] = max(0, int(end) - (self._positions[key] or 0))
        if sum(self.state.lag.values()) == 0:
            self.state.last_progress = time.monotonic()

    async def _load_skips(self, keys: list[Key]) -> None:
        for skip in await self._repo.load_skips(keys):
            self._skips[Coordinates(skip.topic, skip.partition, skip.offset)] = skip

    async def _unblock(self) -> None:
        """Resume blocked partitions an operator skipped past, or whose database failure may have passed."""
        if not self.state.blocked:
            return
        async with self._batch_lock:
            await self._load_skips(list(self.state.blocked))
            now = time.monotonic()
            for key, b in list(self.state.blocked.items()):
                if b.reason == "offset_out_of_range":
                    moves = [s for c, s in self._skips.items() if (c.topic, c.partition) == key and s.kind == "move_to"]
                    if moves:
                        await self._move(key, moves[0])
                    continue
                skipped = self._skips.get(Coordinates(key[0], key[1], b.offset))
                due = b.reason == "database_error" and b.retry_at is not None and now >= b.retry_at
                if (skipped is not None and skipped.kind == "dead_letter") or due:
                    log.info("partition_resumed", topic=key[0], partition=key[1], offset=b.offset, reason=b.reason)
                    del self.state.blocked[key]
                    tp = TopicPartition(*key)
                    self._consumer.seek(tp, self._positions.get(key) or 0)
                    self._consumer.resume(tp)

    async def _move(self, key: Key, skip: Skip) -> None:
        """Move a partition's stored offset forward past a range the broker lost, as an operator asked."""
        position = self._positions.get(key)
        if position is not None and skip.offset < position:
            return
        try:
            await self._repo.write_batch(Batch(fences=[OffsetFence(key[0], key[1], position, skip.offset)]))
        except FencedError:
            await self._reposition([OffsetFence(key[0], key[1], position, skip.offset)])
            return
        log.warning(
            "partition_moved", topic=key[0], partition=key[1], to=skip.offset, by=skip.requested_by, reason=skip.reason
        )
        self._positions[key] = skip.offset
        del self.state.blocked[key]
        tp = TopicPartition(*key)
        self._consumer.seek(tp, skip.offset)
        self._consumer.resume(tp)


def months_ahead(count: int) -> set[tuple[str, date]]:
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
