"""Crash safety and rebalancing: every event lands exactly once however projectors die."""

import asyncio
import json
import signal
import subprocess
import urllib.request
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from audit_projector.errors import FencedError
from audit_projector.repository import Batch, OffsetFence, ProjectionRepository, TreeAppend, TreeState
from audit_projector.rows import BatchRows, Coordinates
from audit_schemas import merkle
from tests.conftest import Isolated, free_port, projector_process, projector_running
from tests.factories import action_event, publish_events
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


async def _count(isolated: Isolated) -> int:
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:
        count: int = await conn.fetchval(f"SELECT count(*) FROM {isolated.name}.audit_entries")
        return count
    finally:
        await conn.close()


async def _assert_exactly_once(isolated: Isolated, ids: list[str]) -> None:
    """Every published id is there once, and the stored offsets equal the topic's end offsets."""
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:
        rows = await conn.fetch(
            f"SELECT audit_id::text AS id, kafka_topic, kafka_partition, kafka_offset "
            f"FROM {isolated.name}.audit_entries"
        )
        offsets = await conn.fetch(
            f"SELECT topic, partition, next_offset FROM {isolated.name}.projector_offsets WHERE consumer_group = $1",
            isolated.projector.group_id,
        )
    finally:
        await conn.close()
    got = [r["id"] for r in rows]
    assert len(got) == len(set(got)) == len(ids)
    assert set(got) == set(ids)
    coordinates = {(r["kafka_partition"], r["kafka_offset"]) for r in rows}
    assert len(coordinates) == len(ids), "two rows claim the same Kafka record"
    consumer = AIOKafkaConsumer(bootstrap_servers=isolated.stack.bootstrap)
    await consumer.start()
    try:
        topic = isolated.projector.audit_topic
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(isolated.projector.partitions)])
    finally:
        await consumer.stop()
    stored = {r["partition"]: r["next_offset"] for r in offsets if r["topic"] == topic}
    assert stored == {tp.partition: end for tp, end in ends.items() if end > 0}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            _kill(proc)


async def test_projector_killed_mid_stream_and_restarted(isolated: Isolated) -> None:
    ids = await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 3000)
    isolated = _small_batches(isolated)
    first = projector_process(isolated)
    try:
        await eventually(lambda: _count_between(isolated, 1, 2999), within=60, interval=0.02)
        _kill(first)
        partial = await _count(isolated)
        assert 0 < partial < 3000, "the kill must land mid-stream"
    finally:
        _stop(first)
    second = projector_process(isolated)
    try:
        await eventually(lambda: _count_between(isolated, 3000, 3000), within=90)
        await _assert_exactly_once(isolated, ids)
    finally:
        _stop(second)


async def test_two_projectors_one_killed(isolated: Isolated) -> None:
    isolated = _small_batches(isolated)
    a = projector_process(isolated, health_port=free_port())
    b = projector_process(isolated, health_port=free_port())
    try:
        await eventually(lambda: _both_assigned(a, b), within=60)
        first = await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 1500)
        await eventually(lambda: _count_between(isolated, 1, 1499), within=60, interval=0.02)
        _kill(a)
        rest = await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 1500)
        await eventually(lambda: _count_between(isolated, 3000, 3000), within=90)
        assert len(_health(b)["assigned"]) == 2 * isolated.projector.partitions, "the survivor owns every partition"
        await _assert_exactly_once(isolated, first + rest)
    finally:
        _stop(a)
        _stop(b)


def _grown(topic: str, partition: int, before: TreeState, offsets: range) -> TreeAppend:
    """What leaves for `offsets` add to a partition's tree from `before`."""
    data = [f"{topic}/{partition}@{o}".encode() for o in offsets]
    hashes = [merkle.leaf_hash(d) for d in data]
    frontier, size, nodes = merkle.append_leaves(before.frontier, before.size, hashes)
    leaves = tuple((before.size + i, o, h, d) for i, (o, h, d) in enumerate(zip(offsets, hashes, data, strict=True)))
    return TreeAppend(topic, partition, before, TreeState(size, tuple(frontier)), leaves, tuple(nodes))


async def test_a_batch_grows_each_partition_s_tree_or_none(isolated: Isolated) -> None:
    """Several partitions' trees are stored by one statement, each frontier whole whatever its length; a tree
    another member grew meanwhile fences the batch, and nothing of it is written."""
    settings = isolated.projector
    repo = await ProjectionRepository.connect(
        str(settings.database_url), settings.db_schema, settings.group_id, "trees", settings.control_schema
    )
    topic = settings.audit_topic
    try:
        empty = TreeState(0)
        first = [
            _grown(topic, 0, empty, range(3)),
            _grown(topic, 1, empty, range(1)),
            _grown(topic, 2, empty, range(0)),
        ]
        fences = [OffsetFence(topic, p, None, n) for p, n in ((0, 3), (1, 1), (2, 0))]
        await repo.write_batch(Batch(fences=fences, trees=first))
        wanted = [(topic, p) for p in range(3)]
        assert await repo.load_trees(wanted) == {(topic, a.partition): a.after for a in first}
        assert [len(a.after.frontier) for a in first] == [2, 1, 0]
        second = [_grown(topic, 0, first[0].after, range(3, 4)), _grown(topic, 1, first[1].after, range(1, 7))]
        fences = [OffsetFence(topic, 0, 3, 4), OffsetFence(topic, 1, 1, 7)]
        await repo.write_batch(Batch(fences=fences, trees=second))
        stored = await repo.load_trees(wanted)
        assert [stored[(topic, p)] for p in (0, 1)] == [a.after for a in second]
        # The offsets agree, but partition 1's tree is not the size this batch thinks: fenced, nothing of it kept.
        ghost = _grown(topic, 1, empty, range(9)).after
        stale = [_grown(topic, 0, second[0].after, range(4, 5)), _grown(topic, 1, ghost, range(7, 8))]
        with pytest.raises(FencedError) as fenced:
            await repo.write_batch(
                Batch(fences=[OffsetFence(topic, 0, 4, 5), OffsetFence(topic, 1, 7, 8)], trees=stale)
            )
        assert fenced.value.partitions == [(topic, 1)]
        assert await repo.load_trees(wanted) == stored
    finally:
        await repo.close()
    async with isolated.owner() as conn:
        assert await conn.fetchval("SELECT count(*) FROM merkle_leaves") == 3 + 1 + 1 + 6


async def test_stale_offset_fence_rolls_the_batch_back(isolated: Isolated) -> None:
    """A projector that lost its partition cannot commit a late batch: rows and offset both stay put."""
    settings = isolated.projector
    old = await ProjectionRepository.connect(
        str(settings.database_url), settings.db_schema, settings.group_id, "old", settings.control_schema
    )
    new = await ProjectionRepository.connect(
        str(settings.database_url), settings.db_schema, settings.group_id, "new", settings.control_schema
    )
    topic = settings.audit_topic
    try:
        first = BatchRows()
        first.add(action_event("a"), Coordinates(topic, 0, 0))
        await old.write_batch(Batch(first, [OffsetFence(topic, 0, None, 1)]))
        # The new owner resumes from 1 and moves on to 3.
        moved = BatchRows()
        moved.add(action_event("b"), Coordinates(topic, 0, 1))
        moved.add(action_event("c"), Coordinates(topic, 0, 2))
        await new.write_batch(Batch(moved, [OffsetFence(topic, 0, 1, 3)]))
        # The old owner's late batch still starts from 1: fenced, nothing of it is written.
        late = BatchRows()
        late.add(action_event("zombie"), Coordinates(topic, 0, 1))
        with pytest.raises(FencedError):
            await old.write_batch(Batch(late, [OffsetFence(topic, 0, 1, 2)]))
        # A second first-claim of the same partition is fenced too.
        with pytest.raises(FencedError):
            await new.write_batch(Batch(BatchRows(), [OffsetFence(topic, 0, None, 5)]))
    finally:
        await old.close()
        await new.close()
    assert await _count(isolated) == 3
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:
        assert await conn.fetchval(f"SELECT next_offset FROM {isolated.name}.projector_offsets") == 3
        assert (
            await conn.fetchval(f"SELECT count(*) FROM {isolated.name}.audit_entries WHERE entity_id = 'zombie'") == 0
        )
    finally:
        await conn.close()


def _small_batches(isolated: Isolated) -> Isolated:
    projector = isolated.projector.model_copy(update={"batch_max_records": 50})
    return Isolated(isolated.stack, isolated.name, isolated.producer, projector, isolated.query)


async def _count_between(isolated: Isolated, low: int, high: int) -> bool:
    return low <= await _count(isolated) <= high


def _health(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    port = proc.health_port  # type: ignore[attr-defined]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
    except OSError:
        return {"assigned": []}
    return {"assigned": [p for pipeline in body["pipelines"].values() for p in pipeline["assigned"]]}


async def _both_assigned(a: subprocess.Popen[bytes], b: subprocess.Popen[bytes]) -> bool:
    health = await asyncio.gather(asyncio.to_thread(_health, a), asyncio.to_thread(_health, b))
    return all(h["assigned"] for h in health)


async def test_projector_survives_losing_its_database_connection(isolated: Isolated) -> None:
    """Postgres drops the projector's session mid-stream; it reconnects, resumes from stored offsets."""
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser DSN (AUDIT_TEST_ADMIN_DSN) to terminate sessions")
    settings = _small_batches(isolated).projector
    ids = await publish_events(isolated.stack.bootstrap, settings.audit_topic, 3000)
    admin = await asyncpg.connect(isolated.stack.admin_dsn)
    try:
        async with projector_running(settings) as task:
            await eventually(lambda: _count_between(isolated, 1, 2999), within=60, interval=0.02)
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                f"audit-projector/audit/{settings.group_id}",
            )
            assert killed == 1
            await eventually(lambda: _count_between(isolated, 3000, 3000), within=90)
            assert not task.done(), "the projector kept running"
    finally:
        await admin.close()
    await _assert_exactly_once(isolated, ids)
