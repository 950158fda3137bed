"""Faults on the three-broker cluster, each while actions with execution logs stream: the partition leaders' broker
killed (SIGKILL) and started again, the active controller killed, a projector killed and another joining, and two
brokers down at once. Afterwards every acknowledged action is in the read model exactly once, `verify --integrity`
and `verify --read-model` pass, and callers saw exactly what fail-closed promises: nothing while two brokers
stood; `PublishError` (the action recorded `aborted`) while only one did."""

import asyncio
import collections
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import structlog
from pydantic import SecretStr

from audit_producer import Actor, AuditProducer, Entity, add_trace_context
from audit_producer.errors import PublishError
from audit_projector.integrity import verify_integrity
from audit_projector.published import from_topic
from audit_schemas.checkpoint import NoteSigner
from tests.cluster.conftest import Cluster
from tests.conftest import Isolated, projector_cli, projector_process, projector_running
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


@dataclass
class Stream:
    """What callers saw while actions streamed."""

    acknowledged: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(audit id, error) of actions whose start Kafka did not acknowledge (PublishError: the body did not run)."""
    other: list[str] = field(default_factory=list)
    """Anything else a caller saw: must stay empty."""
    slowest_s: float = 0.0
    """The longest an acknowledged action took (its start's acknowledgement included)."""


@contextlib.asynccontextmanager
async def streaming(audit: AuditProducer, pace_s: float = 0.02) -> AsyncIterator[Stream]:
    """Actions (each with two execution-log lines) in the background until the block ends; bounded."""
    seen = Stream()
    stop = asyncio.Event()
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])

    async def run() -> None:
        for i in range(20_000):  # bounded
            if stop.is_set():
                return
            audit_id = "?"
            began = time.monotonic()
            try:
                async with audit.action(
                    "update", entity=Entity(id=f"r-{i % 25}", model="resource"), actor=Actor.user("u-ops", "Ops"),
                    tenant=("acme", "globex")[i % 2],
                ) as act:  # fmt: skip
                    audit_id = str(act.audit_id)
                    log.info("resizing", step=i)
                    act.change("size", i, i + 1)
                    log.info("resized", step=i)
                seen.acknowledged.append(audit_id)
                seen.slowest_s = max(seen.slowest_s, time.monotonic() - began)
            except PublishError as e:
                seen.refused.append((audit_id, str(e)))
            except Exception as e:
                seen.other.append(repr(e))
            await asyncio.sleep(pace_s)

    task = asyncio.create_task(run())
    try:
        yield seen
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def _projector(isolated: Isolated) -> tuple[Any, str]:
    _, key = NoteSigner.generate("audit-trail")
    return isolated.projector.model_copy(
        update={"checkpoint_key": SecretStr(key), "checkpoint_every_leaves": 50, "probe_interval_s": 0.3}
    ), key


async def _settled(isolated: Isolated, seen: Stream) -> None:
    """Every acknowledged action has its entry and a final outcome; each entry once."""
    wanted = set(seen.acknowledged)

    async def done() -> bool:
        async with isolated.owner() as conn:
            rows = await conn.fetch(
                "SELECT e.audit_id::text AS id, o.status FROM audit_entries e "
                "LEFT JOIN audit_outcomes o USING (audit_id)"
            )
        ids = collections.Counter(r["id"] for r in rows)
        finished = {r["id"] for r in rows if r["status"] is not None}
        return wanted <= finished and all(n == 1 for n in ids.values())

    await eventually(done, within=120, interval=0.5)


async def _verified(isolated: Isolated, settings: Any, key: str) -> None:
    """verify --integrity (against the checkpoint topic too) and verify --read-model, as an auditor runs them."""
    published = await from_topic(settings.bootstrap_servers, settings.checkpoint_topic)

    conn = await asyncpg.connect(isolated.stack.owner_dsn, server_settings={"search_path": isolated.name})
    try:
        report = await verify_integrity(
            conn, settings.control_schema, [NoteSigner.parse(key).verifier_key], settings.log_name, published=published
        )
    finally:
        await conn.close()
    assert report.found == 0, [str(f) for f in report.findings[:10]]
    assert report.checkpoints > 0
    code, out = await projector_cli(isolated, "verify", "--read-model", within_s=300)
    assert code == 0, out[-3000:]


async def _leading_most(cluster: Cluster, topic: str) -> int:
    leaders = collections.Counter((await cluster.leaders(topic)).values())
    return leaders.most_common(1)[0][0]


async def test_the_leaders_broker_killed_and_restarted_loses_nothing(replicated: Isolated, cluster: Cluster) -> None:
    settings, key = _projector(replicated)
    async with projector_running(settings), AuditProducer("ops-service", replicated.producer) as audit:
        async with streaming(audit) as seen:
            await _leader_killed(cluster, settings.audit_topic, seen)
        await _settled(replicated, seen)  # the projector still runs: what was acknowledged last is projected
    assert seen.other == []
    assert seen.refused == [], seen.refused[:3]  # two brokers stood throughout: callers saw nothing
    await _verified(replicated, settings, key)


async def _leader_killed(cluster: Cluster, topic: str, seen: Stream) -> None:
    """Kill the broker leading most of `topic` mid-stream, see every partition led elsewhere, start it again."""
    await eventually(lambda: _at_least(seen, 50), within=60)
    victim = await _leading_most(cluster, topic)
    killed_at = time.monotonic()
    cluster.kill(victim)
    before = len(seen.acknowledged)
    await eventually(lambda: _at_least(seen, before + 100), within=60)
    moved = await cluster.leaders(topic)
    assert victim not in moved.values(), moved  # every partition is led elsewhere
    await cluster.start(victim)
    after = len(seen.acknowledged)
    await eventually(lambda: _at_least(seen, after + 50), within=60)
    print(f"leader {victim} killed: {before} acknowledged before, {after - before} while it was down "
          f"({time.monotonic() - killed_at:.1f} s), {len(seen.acknowledged)} in all; the slowest action took "
          f"{seen.slowest_s:.1f} s")  # fmt: skip


async def test_a_frozen_leader_is_fenced_and_loses_nothing(replicated: Isolated, cluster: Cluster) -> None:
    """SIGSTOP of the broker leading most partitions: it keeps its connections open and answers nothing until it
    is fenced; woken after its partitions moved, it is a follower with a stale epoch and takes nothing. A hung
    leader costs a caller more than a dead one (requests to it wait out their timeout before the client looks
    for the new leader): the deadline is raised above that, as docs/production.md says to."""
    settings, key = _projector(replicated)
    producer = replicated.producer.model_copy(update={"publish_timeout_s": 10.0})
    async with projector_running(settings), AuditProducer("ops-service", producer) as audit:
        async with streaming(audit) as seen:
            await eventually(lambda: _at_least(seen, 50), within=60)
            victim = await _leading_most(cluster, settings.audit_topic)
            frozen_at = time.monotonic()
            cluster.freeze(victim)
            try:
                before = len(seen.acknowledged)
                await eventually(lambda: _at_least(seen, before + 100), within=60)
                moved = await cluster.leaders(settings.audit_topic)
                assert victim not in moved.values(), moved
            finally:
                cluster.thaw(victim)
            woke = len(seen.acknowledged)
            await eventually(lambda: _at_least(seen, woke + 100), within=60)
            print(f"leader {victim} frozen for {time.monotonic() - frozen_at:.1f} s: {woke - before} acknowledged "
                  f"meanwhile, {len(seen.refused)} refused, {len(seen.acknowledged)} in all; the slowest action "
                  f"took {seen.slowest_s:.1f} s")  # fmt: skip
        await _settled(replicated, seen)
    assert seen.other == []
    assert seen.refused == [], seen.refused[:3]
    await _verified(replicated, settings, key)


async def test_the_active_controller_killed_loses_nothing(replicated: Isolated, cluster: Cluster) -> None:
    """The active controller's node also leads partitions: they move only once a new controller is elected and
    has fenced the dead broker (the slowest action took 4.7 s of a 5 s deadline here), so the deadline is raised
    as for a hung leader."""
    settings, key = _projector(replicated)
    producer = replicated.producer.model_copy(update={"publish_timeout_s": 10.0})
    async with projector_running(settings), AuditProducer("ops-service", producer) as audit:
        async with streaming(audit) as seen:
            await eventually(lambda: _at_least(seen, 50), within=60)
            controller = await cluster.quorum_leader()
            cluster.kill(controller)
            before = len(seen.acknowledged)
            await eventually(lambda: _at_least(seen, before + 100), within=60)
            successor = await cluster.quorum_leader()
            assert successor != controller
            await cluster.start(controller)
            await eventually(lambda: _at_least(seen, before + 150), within=60)
            print(f"controller {controller} killed, {successor} took over; {len(seen.acknowledged)} acknowledged, "
                  f"the slowest in {seen.slowest_s:.1f} s")  # fmt: skip
        await _settled(replicated, seen)
    assert seen.other == []
    assert seen.refused == [], seen.refused[:3]
    await _verified(replicated, settings, key)


async def test_a_projector_killed_and_another_joining_mid_stream(replicated: Isolated, cluster: Cluster) -> None:
    settings, key = _projector(replicated)
    replicated = Isolated(replicated.stack, replicated.name, replicated.producer, settings, replicated.query)
    first = projector_process(replicated, extra_env={"AUDIT_PROJECTOR_CHECKPOINT_KEY": key})
    second = None
    try:
        async with AuditProducer("ops-service", replicated.producer) as audit, streaming(audit) as seen:
            await eventually(lambda: _at_least(seen, 100), within=60)
            second = projector_process(replicated, extra_env={"AUDIT_PROJECTOR_CHECKPOINT_KEY": key})
            await eventually(lambda: _at_least(seen, 200), within=60)
            os.kill(first.pid, signal.SIGKILL)  # mid-batch, no goodbye: the group rebalances to the second
            first.wait(30)
            await eventually(lambda: _at_least(seen, 350), within=60)
        assert seen.other == []
        assert seen.refused == []
        await _settled(replicated, seen)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    await _verified(replicated, settings, key)


async def test_two_brokers_down_refuses_actions_and_loses_nothing_acknowledged(
    replicated: Isolated, cluster: Cluster
) -> None:
    settings, key = _projector(replicated)
    async with projector_running(settings), AuditProducer("ops-service", replicated.producer) as audit:
        async with streaming(audit, pace_s=0.05) as seen:
            await eventually(lambda: _at_least(seen, 50), within=60)
            survivor = await _leading_most(cluster, settings.audit_topic)
            down = [n for n in (1, 2, 3) if n != survivor]
            for node in down:
                cluster.kill(node)
            acknowledged = len(seen.acknowledged)
            await eventually(lambda: _refused_at_least(seen, 3), within=90)
            for node in down:
                await cluster.start(node)
            await eventually(lambda: _at_least(seen, acknowledged + 50), within=120)
        assert seen.other == []
        assert all("publish to" in e for _, e in seen.refused), seen.refused[:3]
        await _settled(replicated, seen)

        async def aborted() -> bool:  # each refused action is recorded as not run, from the producer's spool
            async with replicated.owner() as conn:
                n = await conn.fetchval("SELECT count(*) FROM audit_outcomes WHERE status = 'aborted'")
                entries = await conn.fetchval("SELECT count(*) FROM audit_entries")
            return bool(n == len(seen.refused) and entries == len(seen.acknowledged) + len(seen.refused))

        await eventually(aborted, within=120, interval=0.5)
    print(
        f"two brokers down: {len(seen.refused)} actions refused (recorded aborted), "
        f"{len(seen.acknowledged)} acknowledged"
    )
    await _verified(replicated, settings, key)


async def _at_least(seen: Stream, n: int) -> bool:
    return len(seen.acknowledged) >= n


async def _refused_at_least(seen: Stream, n: int) -> bool:
    return len(seen.refused) >= n
