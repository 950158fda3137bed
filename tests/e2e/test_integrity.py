"""The compliance checks on the realistic mix (`make demo`'s own actions and more): silent on an untampered stack —
also while actions arrive and checkpoints are signed — and then naming every planted fault, including a rollback
that deleted the checkpoints covering it (the checkpoint topic and an auditor's copy still hold them)."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from pydantic import SecretStr

from audit_producer import Actor, AuditProducer, Entity
from audit_projector.config import Settings as ProjectorSettings
from audit_projector.integrity import verify_integrity
from audit_projector.published import from_topic
from audit_projector.replay import replay
from audit_projector.swap import swap
from audit_schemas import merkle
from audit_schemas.checkpoint import NoteSigner
from tests.conftest import Isolated, projector_cli, projector_running
from tests.history import History, record_history, shipping
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _signing(isolated: Isolated) -> tuple[ProjectorSettings, NoteSigner]:
    signer, key = NoteSigner.generate("audit-trail")
    settings = isolated.projector.model_copy(
        update={
            "checkpoint_key": SecretStr(key),
            "checkpoint_every_leaves": 5,
            "checkpoint_every_s": 0.5,
            "probe_interval_s": 0.2,
        }
    )
    return settings, signer


async def _settled(isolated: Isolated, schema: str, history: History) -> bool:
    """Every action has its entry and a final outcome, the re-sent log line and the dead letter are in."""
    async with isolated.owner() as conn:
        entries = await conn.fetchval(f"SELECT count(DISTINCT audit_id) FROM {schema}.audit_entries")
        outcomes = await conn.fetchval(f"SELECT count(*) FROM {schema}.audit_outcomes")
        logs = await conn.fetchval(f"SELECT count(*) FROM {schema}.execution_logs")
        dead = await conn.fetchval(f"SELECT count(*) FROM {schema}.dead_letters")
    wanted = len(history.audit_ids)
    return bool(entries == wanted and outcomes == wanted and logs >= history.min_log_lines and dead >= 1)


async def _cli(isolated: Isolated, *args: str) -> tuple[int, str]:
    return await projector_cli(isolated, "verify", *args)


async def _as_superuser(isolated: Isolated, *statements: str | tuple[str, Any]) -> None:
    """Change the model past its guard rails, committed (an insider who knows them); a statement with its
    arguments is a tuple."""
    assert isolated.stack.admin_dsn is not None
    conn = await asyncpg.connect(isolated.stack.admin_dsn, server_settings={"search_path": isolated.name})
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL audit.maintenance = 'on'")
            for statement in statements:
                sql, *args = (statement,) if isinstance(statement, str) else statement
                await conn.execute(sql, *args)
    finally:
        await conn.close()


async def roll_back(isolated: Isolated, topic: str, partition: int, keep: int, *also: str) -> None:
    """The insider's rollback of one partition to its first `keep` leaves: rows, leaves, verdicts and nodes past
    them deleted, the tree's frontier recomputed, and checkpoints (with `also`, more cover-up) gone, committed."""
    async with isolated.owner() as conn:
        hashes = [
            r[0]
            for r in await conn.fetch(
                "SELECT leaf_hash FROM merkle_leaves WHERE topic = $1 AND partition = $2 AND leaf_index < $3 "
                "ORDER BY leaf_index",
                topic,
                partition,
                keep,
            )
        ]
        cut = await conn.fetchval(
            "SELECT kafka_offset FROM merkle_leaves WHERE topic = $1 AND partition = $2 AND leaf_index = $3",
            topic,
            partition,
            keep,
        )
    frontier, count, _ = merkle.append_leaves([], 0, hashes)
    assert count == keep
    control = isolated.query.control_schema
    where = f"kafka_topic = '{topic}' AND kafka_partition = {partition} AND kafka_offset >= {cut}"
    await _as_superuser(
        isolated,
        *(f"DELETE FROM {t} WHERE {where}" for t in ("audit_entries", "audit_outcomes", "dead_letters")),
        f"DELETE FROM merkle_leaves WHERE topic = '{topic}' AND partition = {partition} AND leaf_index >= {keep}",
        f"DELETE FROM record_verdicts WHERE topic = '{topic}' AND partition = {partition} AND kafka_offset >= {cut}",
        f"DELETE FROM merkle_nodes WHERE topic = '{topic}' AND partition = {partition} "
        f"AND (node_index + 1) * (1::bigint << level) > {keep}",
        (
            f"UPDATE merkle_trees SET size = {keep}, frontier = $1 WHERE topic = '{topic}' AND partition = {partition}",
            frontier,
        ),
        *also,
        f"DELETE FROM {control}.checkpoints WHERE origin = 'audit-trail/{topic}/{partition}' AND tree_size > {keep}",
    )


@dataclass(frozen=True)
class Recorded:
    isolated: Isolated
    settings: ProjectorSettings
    signer: NoteSigner
    history: History


@pytest.fixture
async def recorded(isolated: Isolated, audit: AuditProducer) -> Recorded:
    """The mix projected with the tree and checkpoints on, as deployed."""
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser DSN to tamper with")
    settings, signer = _signing(isolated)
    async with projector_running(settings):
        history = await record_history(audit, isolated.stack.bootstrap)
        await eventually(lambda: _settled(isolated, isolated.name, history), within=60)
        await eventually(lambda: _all_signed(isolated), within=30)  # the quiet log's last checkpoints, by time
    return Recorded(isolated, settings, signer, history)


async def _all_signed(isolated: Isolated) -> bool:
    """Every tree has a signed checkpoint at its current size."""
    async with isolated.owner() as conn:
        unsigned = await conn.fetchval(
            f"""SELECT count(*) FROM merkle_trees t WHERE NOT EXISTS (
                    SELECT 1 FROM {isolated.query.control_schema}.checkpoints c
                     WHERE c.origin = 'audit-trail/' || t.topic || '/' || t.partition AND c.tree_size = t.size)"""
        )
    return bool(unsigned == 0)


async def test_silent_on_the_demo_history_then_every_altered_place_is_named(recorded: Recorded) -> None:
    isolated, signer, history = recorded.isolated, recorded.signer, recorded.history
    code, out = await _cli(isolated, "--integrity", "--key", signer.verifier_key)
    assert code == 0, out
    assert "finding" not in out
    code, out = await _cli(isolated, "--read-model")
    assert code == 0, out
    assert "the read model matches the log" in out

    async with isolated.owner() as conn:
        line = await conn.fetchrow(
            "SELECT log_id, kafka_partition, kafka_offset FROM execution_logs WHERE message = 'execution_step' LIMIT 1"
        )
        entry = await conn.fetchrow(
            "SELECT audit_id, kafka_partition, kafka_offset FROM audit_entries WHERE actor_id = 'u-bob' LIMIT 1"
        )
    assert line is not None
    assert entry is not None
    await _as_superuser(
        isolated,
        f"UPDATE execution_logs SET message = 'nothing happened' WHERE log_id = '{line['log_id']}'",
        f"UPDATE audit_entries SET actor_display_name = 'Mallory' WHERE audit_id = '{entry['audit_id']}'",
    )
    code, out = await _cli(isolated, "--integrity", "--key", signer.verifier_key)
    assert code == 1, out
    assert "execution_logs.message differs from the record (altered)" in out
    assert f"(offset {line['kafka_offset']})" in out
    assert "audit_entries.actor_display_name differs from the record (altered)" in out  # checking went on
    assert "2 finding(s)" in out
    assert len(history.demo_ids) == 26


async def test_a_rollback_that_deleted_its_checkpoints_is_named(recorded: Recorded, tmp_path: Path) -> None:
    isolated, signer = recorded.isolated, recorded.signer
    control = isolated.query.control_schema
    async with isolated.owner() as conn:
        # The auditor's copy, as GET /v1/checkpoints serves it, taken before the attack.
        kept = [{"note": r["note"]} for r in await conn.fetch(f"SELECT note FROM {control}.checkpoints")]
        tree = await conn.fetchrow(
            "SELECT topic, partition, size FROM merkle_trees WHERE topic = $1 ORDER BY size DESC LIMIT 1",
            isolated.projector.audit_topic,
        )
        assert tree is not None
        topic, partition, size = tree["topic"], tree["partition"], tree["size"]
        sizes = sorted(
            r[0]
            for r in await conn.fetch(
                f"SELECT tree_size FROM {control}.checkpoints WHERE origin = $1",
                f"audit-trail/{topic}/{partition}",
            )
        )
        assert sizes, "the fixture waits for the quiet log's checkpoints"
        # Roll back to an older checkpoint (every newer one covered the dropped leaves), or below the only one.
        keep = sizes[-2] if len(sizes) >= 2 else max(1, sizes[-1] // 2)
    assert keep < size
    auditor_file = tmp_path / "checkpoints.json"
    auditor_file.write_text(json.dumps(kept))
    await roll_back(isolated, topic, partition, keep)
    # The database alone is consistent again: without outside evidence this rollback is invisible.
    code, out = await _cli(isolated, "--integrity", "--key", signer.verifier_key, "--no-topic")
    assert code == 0, out
    code, out = await _cli(isolated, "--integrity", "--key", signer.verifier_key)
    assert code == 1, out
    assert f"{topic}/{partition}" in out
    assert f"the tree holds {keep} leaves but a checkpoint published on {isolated.projector.checkpoint_topic}/" in out
    assert f"covers {size} (rolled back)" in out or "(rolled back)" in out
    code, out = await _cli(
        isolated, "--integrity", "--key", signer.verifier_key, "--no-topic", "--checkpoints", str(auditor_file)
    )
    assert code == 1, out
    assert f"published on {auditor_file}#" in out
    assert "(rolled back)" in out
    bad = tmp_path / "bad.json"
    bad.write_text('{"checkpoints": 3}')
    code, out = await _cli(isolated, "--integrity", "--key", signer.verifier_key, "--checkpoints", str(bad))
    assert code == 1, out
    assert "expected a list of objects with a 'note'" in out


@contextlib.asynccontextmanager
async def _ingesting(audit: AuditProducer, seconds: float) -> AsyncIterator[list[str]]:
    """Actions with execution-log lines arriving for a bounded time, in the background; yields their ids."""
    done: list[str] = []
    stop = asyncio.Event()

    async def run() -> None:
        log = structlog.get_logger().bind(logger="ingest")
        for i in range(int(seconds * 40)):  # bounded
            if stop.is_set():
                return
            async with audit.action(
                "update", entity=Entity(id=f"r-{i % 7}", model="resource"), actor=Actor.user("u-ivy", "Ivy"),
                tenant=("acme", "globex")[i % 2],
            ) as act:  # fmt: skip
                log.info("resizing", step=i)
                act.change("size", i, i + 1)
            done.append(str(act.audit_id))
            await asyncio.sleep(0.02)

    with shipping(audit):
        task = asyncio.create_task(run())
        try:
            yield done
        finally:
            stop.set()
            await task


async def test_verify_during_ingest_and_signing_reports_nothing(recorded: Recorded, audit: AuditProducer) -> None:
    isolated, settings, signer = recorded.isolated, recorded.settings, recorded.signer
    checks: list[Any] = []
    async with projector_running(settings), _ingesting(audit, 8) as ingested:
        await eventually(lambda: _grown(ingested, 20), within=30)
        for _ in range(3):
            published = await from_topic(isolated.stack.bootstrap, settings.checkpoint_topic)
            conn = await asyncpg.connect(isolated.stack.owner_dsn, server_settings={"search_path": isolated.name})
            try:
                report = await verify_integrity(
                    conn, settings.control_schema, [signer.verifier_key], settings.log_name, published=published
                )
            finally:
                await conn.close()
            checks.append(report)
            assert report.findings == [], [str(f) for f in report.findings]
    assert all(r.checkpoints > 0 and r.published > 0 for r in checks)
    assert checks[-1].leaves > checks[0].leaves  # the log grew while it was being verified


async def _grown(ids: list[str], n: int) -> bool:
    return len(ids) >= n


async def test_a_swap_under_ingest_while_checkpoints_are_signed_succeeds_and_loses_nothing(
    isolated: Isolated, audit: AuditProducer
) -> None:
    signer, key = NoteSigner.generate("audit-trail")
    live = isolated.projector.model_copy(
        update={
            "checkpoint_key": SecretStr(key),
            "checkpoint_every_leaves": 5,
            "checkpoint_every_s": 0.3,
            "probe_interval_s": 0.2,
        }
    )
    shadow_name = f"{isolated.name}_shadow"
    shadow = live.model_copy(
        update={"db_schema": shadow_name, "kafka_group_id": f"audit-replay-{shadow_name}", "checkpoint_key": None}
    )
    async with projector_running(live):
        history = await record_history(audit, isolated.stack.bootstrap)
        await eventually(lambda: _settled(isolated, isolated.name, history), within=60)
        await replay(shadow, isolated.stack.owner_dsn, timeout_s=120)
        async with _ingesting(audit, 6) as ingested:
            await eventually(lambda: _grown(ingested, 20), within=30)  # the live log is ahead of the shadow now
            result = await swap(live, shadow, isolated.stack.owner_dsn, timeout_s=60)
        expected = set(history.audit_ids) | set(ingested)

        async def all_there() -> bool:
            async with isolated.owner() as conn:
                n = await conn.fetchval(f"SELECT count(*) FROM {isolated.name}.audit_outcomes")
            return bool(n == len(expected))

        await eventually(all_there, within=60)
    async with isolated.owner() as conn:
        rows = [str(r[0]) for r in await conn.fetch(f"SELECT audit_id FROM {isolated.name}.audit_entries")]
        await conn.execute(f"DROP SCHEMA {result.retired} CASCADE")
    assert sorted(rows) == sorted(expected)  # every action exactly once
    code, out = await _cli(isolated, "--integrity", "--key", signer.verifier_key)
    assert code == 0, out
    print(f"swap under ingest: paused {result.paused_s * 1000:.0f} ms, {result.rows_verified} rows verified")
