"""Retention with verifiable archives: cut at signed checkpoints, verified offline, rows deleted, the tree still
checked across the archived range."""

import asyncio
import gzip
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from pydantic import SecretStr

from audit_producer import AuditProducer
from audit_projector.compare import compare
from audit_schemas.checkpoint import NoteSigner
from tests.conftest import Isolated, projector_running
from tests.factories import publish_events, read_topic
from tests.history import record_history
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _run(command: str, *args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / command),
        *args,
        env={**env, "COLUMNS": "300"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, (out + err).decode()


async def _records(isolated: Isolated) -> int:
    """Records in the test's projected topics now."""
    return sum([len(await read_topic(isolated.stack.bootstrap, t)) for t in isolated.projector.topics])


_ROWS = "SELECT (SELECT count(*) FROM audit_entries) + (SELECT count(*) FROM audit_outcomes) + (SELECT count(*) FROM execution_logs) + (SELECT count(*) FROM dead_letters)"  # noqa: E501


async def archived_log(isolated: Isolated, tmp_path: Path) -> tuple[NoteSigner, dict[str, str], list[Path], int]:
    """The realistic mix projected with signed checkpoints, archived up to them, then 30 more actions; the signer,
    the environment, the files and the read-model rows there were before the archive."""
    signer, key = NoteSigner.generate("audit-trail")
    settings = isolated.projector.model_copy(
        update={
            "checkpoint_key": SecretStr(key),
            "checkpoint_every_leaves": 10,
            "checkpoint_every_s": 0.5,
            "probe_interval_s": 0.2,
        }
    )
    async with AuditProducer("test-service", isolated.producer) as audit, projector_running(settings):
        await record_history(audit, isolated.stack.bootstrap)
        consumed = await _records(isolated)

        async def signed() -> bool:
            # Every tree's newest checkpoint covers all its leaves, so the archive cuts at the end of each
            # partition. (A cut between a record and its identical re-send is a known open defect: the re-send
            # beyond the cut has no row of its own, and a replay then projects it. See docs/operations.md.)
            async with isolated.owner() as conn:
                leaves = await conn.fetchval("SELECT coalesce(sum(size), 0) FROM merkle_trees")
                behind = await conn.fetchval(
                    f"""SELECT count(*) FROM merkle_trees t
                         WHERE t.size > coalesce((SELECT max(c.tree_size) FROM {settings.control_schema}.checkpoints c
                                                   WHERE c.origin = $1 || '/' || t.topic || '/' || t.partition), 0)""",
                    settings.log_name,
                )
            return bool(leaves == consumed and behind == 0)

        await eventually(signed, within=30)
    async with isolated.owner() as conn:
        rows_before = int(await conn.fetchval(_ROWS))
    env = {
        **isolated.projector_env(),
        "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn,
        "AUDIT_PROJECTOR_CHECKPOINT_KEY": key,
    }
    code, report = await _run("audit-projector", "archive", "--dir", str(tmp_path), "--older-than", "0s", env=env)
    assert code == 0, report
    files = await asyncio.to_thread(lambda: sorted(tmp_path.rglob("*.ndjson.gz")))
    async with projector_running(settings):  # the log goes on after the archives
        await publish_events(isolated.stack.bootstrap, settings.audit_topic, 30, entities=12)

        async def projected() -> bool:
            async with isolated.owner() as conn:
                return bool(await conn.fetchval("SELECT coalesce(sum(size), 0) FROM merkle_trees") == consumed + 30)

        await eventually(projected, within=30)
    return signer, env, files, rows_before


async def test_an_archive_verifies_offline_and_its_rows_leave_postgres(isolated: Isolated, tmp_path: Path) -> None:
    signer, env, files, rows_before = await archived_log(isolated, tmp_path)
    assert files, "nothing was archived"
    async with isolated.owner() as conn:
        registry = await conn.fetch(
            f"SELECT topic, partition, end_leaf, end_offset, rows_deleted, file_bytes "
            f"FROM {isolated.projector.control_schema}.archives"
        )
        left = int(await conn.fetchval(_ROWS))
        archived = (
            f"JOIN {isolated.projector.control_schema}.archives a ON a.topic = e.kafka_topic"
            " AND a.partition = e.kafka_partition AND e.kafka_offset < a.end_offset"
        )
        below = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table} e {archived}")
            for table in ("audit_entries", "audit_outcomes", "execution_logs", "dead_letters")
        }
        logs_archived = await conn.fetchval(
            f"SELECT count(*) FROM {isolated.projector.control_schema}.archives WHERE topic = $1",
            isolated.projector.execution_log_topic,
        )
    assert len(registry) == len(files)
    assert sum(r["rows_deleted"] for r in registry) == rows_before + 30 - left  # the 30 after it are entries
    assert set(below.values()) == {0}, below  # nothing archived is left in the read model, in any table
    assert logs_archived > 0  # the execution-log partitions were archived too
    assert 30 <= left < rows_before

    code, report = await _run("audit-schemas", "verify-archive", *map(str, files), "--key", signer.verifier_key,
                              env=env)  # fmt: skip
    assert code == 0, report
    assert report.count("verified:") == len(files)

    # The read model still verifies: the tree is checked on from each archive's signed frontier.
    code, report = await _run("audit-projector", "verify", "--integrity", env=env)
    assert code == 0, report

    # A second run finds nothing old enough to archive (the newer checkpoints are minutes old, not a day).
    code, report = await _run("audit-projector", "archive", "--dir", str(tmp_path), "--older-than", "1d", env=env)
    assert code == 0, report
    assert "nothing to archive" in report

    # A truncated download, or another key, does not verify.
    whole = files[0].read_bytes()
    files[0].write_bytes(gzip.compress(gzip.decompress(whole).rsplit(b"\n", 3)[0] + b"\n"))
    code, report = await _run("audit-schemas", "verify-archive", str(files[0]), "--key", signer.verifier_key,
                              env=env)  # fmt: skip
    assert code == 1
    assert "NOT VERIFIED" in report
    files[0].write_bytes(whole)
    other, _ = NoteSigner.generate("audit-trail")
    code, report = await _run("audit-schemas", "verify-archive", str(files[0]), "--key", other.verifier_key, env=env)
    assert code == 1


async def test_archive_refuses_bad_input(isolated: Isolated, tmp_path: Path) -> None:
    env: dict[str, Any] = {
        **isolated.projector_env(),
        "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn,
    }
    code, report = await _run("audit-projector", "archive", "--dir", str(tmp_path), "--older-than", "soon", env=env)
    assert code == 2
    assert "not a duration" in report
    code, report = await _run("audit-projector", "archive", "--dir", str(tmp_path), "--older-than", "1d", env=env)
    assert code == 2
    assert "no trusted key" in report


async def test_a_replay_skips_archived_ranges_but_checks_the_tree_across_them(
    isolated: Isolated, tmp_path: Path
) -> None:
    _, env, _, _ = await archived_log(isolated, tmp_path)
    control = isolated.projector.control_schema

    async def rebuild(schema: str, extra: dict[str, str] | None = None) -> tuple[int, str]:
        return await _run("audit-projector", "replay", "--schema", schema, env={**env, **(extra or {})})

    first = f"{isolated.name}_r1"
    code, report = await rebuild(first)
    assert code == 0, report
    assert "re-read from Kafka and matched); skipped" in report
    async with isolated.owner() as conn:
        assert (await compare(conn, isolated.name, first)).differences == []
        registry = await conn.fetch(f"SELECT topic, partition, end_offset FROM {control}.archives ORDER BY 1, 2")
    code, report = await _run("audit-projector", "verify", "--read-model", "--against", first, env=env)
    assert code == 0, report

    # Without the log's key, archived history cannot be trusted: refused.
    code, report = await rebuild(f"{isolated.name}_nokey", {"AUDIT_PROJECTOR_CHECKPOINT_KEY": ""})
    assert code == 1
    assert "needs the log's verifier key" in report

    # The broker deletes history an archive covers: the replay starts from the archive's signed frontier.
    topic, partition, end = registry[0]["topic"], registry[0]["partition"], registry[0]["end_offset"]
    await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 60, entities=12)
    admin = AIOKafkaAdminClient(bootstrap_servers=isolated.stack.bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(end)})
        second = f"{isolated.name}_r2"
        code, report = await rebuild(second)
        assert code == 0, report
        assert f"{topic}/{partition}: offsets before {end} are archived" in report
        assert "deleted by the broker; signed" in report

        # Only the archive holds that history now: without its file the replay refuses.
        async with isolated.owner() as conn:
            held = Path(
                await conn.fetchval(
                    f"SELECT file_name FROM {control}.archives WHERE topic = $1 AND partition = $2", topic, partition
                )
            )
        await asyncio.to_thread(held.rename, held.with_suffix(".moved"))
        code, report = await rebuild(f"{isolated.name}_r2b")
        assert code == 1
        assert "make the archive directory available" in report
        await asyncio.to_thread(held.with_suffix(".moved").rename, held)

        # ... but history no archive covers is never silently lost.
        await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(end + 1)})
        code, report = await rebuild(f"{isolated.name}_r3")
        assert code == 1
        assert f"{topic}/{partition}: the broker's log starts at offset {end + 1}" in report
    finally:
        await admin.close()
    async with isolated.owner() as conn:
        for schema in (first, second, f"{isolated.name}_r2b", f"{isolated.name}_r3", f"{isolated.name}_nokey"):
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
