"""Tampering as a superuser is detected, with its position: altered, inserted, deleted and truncated rows, leaves,
and a checkpoint re-signed with another key. The guard rails refuse the services' roles and casual changes."""

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from audit_producer import AuditProducer
from audit_projector.integrity import Report, verify_integrity
from audit_schemas.checkpoint import Checkpoint, NoteSigner
from tests.conftest import Isolated, projector_running
from tests.factories import read_topic
from tests.history import record_history
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

Tamper = Callable[[asyncpg.Connection, str], Awaitable[Any]]


@pytest.fixture
async def projected(isolated: Isolated, audit: AuditProducer) -> tuple[Isolated, NoteSigner]:
    """The realistic mix (the demo's actions with execution logs in two tenants, generated history, an aborted
    action, a dead letter, an identical re-send), its trees and signed checkpoints."""
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser DSN to tamper with")
    signer, key = NoteSigner.generate("audit-trail")
    settings = isolated.projector.model_copy(
        update={"checkpoint_key": SecretStr(key), "checkpoint_every_leaves": 5, "probe_interval_s": 0.2}
    )
    async with projector_running(settings):
        await record_history(audit, isolated.stack.bootstrap)

        async def settled() -> bool:
            consumed = sum(
                [len(await read_topic(isolated.stack.bootstrap, t)) for t in settings.topics]
            )  # every record of both topics has its leaf
            async with isolated.owner() as conn:
                leaves = await conn.fetchval("SELECT count(*) FROM merkle_leaves")
                signed = await conn.fetchval(f"SELECT count(*) FROM {isolated.query.control_schema}.checkpoints")
            return bool(leaves == consumed and signed >= 10)

        await eventually(settled, within=60, interval=0.5)
    return isolated, signer


async def _verify_with(isolated: Isolated, signer: NoteSigner, tamper: Tamper | None) -> Report:
    """Tamper as a superuser inside a transaction, verify on that same connection, then roll it all back."""
    assert isolated.stack.admin_dsn is not None
    conn = await asyncpg.connect(isolated.stack.admin_dsn, server_settings={"search_path": isolated.name})
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            if tamper is not None:
                await conn.execute("SET LOCAL audit.maintenance = 'on'")  # an insider who knows the guard rails
                await tamper(conn, isolated.query.control_schema)
            return await verify_integrity(conn, isolated.query.control_schema, [signer.verifier_key], "audit-trail")
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def _pick(conn: asyncpg.Connection, sql: str) -> asyncpg.Record:
    row = await conn.fetchrow(sql)
    assert row is not None
    return row


async def _alter_entry(conn: asyncpg.Connection, control: str) -> None:
    await conn.execute(
        "UPDATE audit_entries SET actor_display_name = 'Mallory' WHERE (kafka_partition, kafka_offset) ="
        " (SELECT kafka_partition, kafka_offset FROM audit_entries ORDER BY kafka_partition, kafka_offset LIMIT 1)"
    )


async def _insert_entry(conn: asyncpg.Connection, control: str) -> None:
    await conn.execute(
        "INSERT INTO audit_entries SELECT occurred_at, gen_random_uuid(), tenant_id, action, entity_model, entity_id,"
        " actor_type, actor_id, actor_display_name, user_sort, request_id, client_ip, user_agent, correlation_id,"
        " otel_trace_id, otel_span_id, source, gen_random_uuid(), schema_version, kafka_topic, kafka_partition,"
        " 99999, projected_at, content_digest FROM audit_entries LIMIT 1"
    )


async def _delete_newest(conn: asyncpg.Connection, control: str) -> None:
    newest = await _pick(conn, "SELECT topic, partition, max(leaf_index) AS i FROM merkle_leaves GROUP BY 1, 2 LIMIT 1")
    await conn.execute("DELETE FROM merkle_leaves WHERE topic = $1 AND partition = $2 AND leaf_index = $3", *newest)


async def _delete_newest_row(conn: asyncpg.Connection, control: str) -> None:
    await conn.execute(
        "DELETE FROM audit_outcomes WHERE audit_id = (SELECT audit_id FROM audit_outcomes"
        " ORDER BY kafka_offset DESC LIMIT 1)"
    )


async def _truncate_month(conn: asyncpg.Connection, control: str) -> None:
    month = await conn.fetchval("SELECT tableoid::regclass::text FROM audit_entries ORDER BY occurred_at DESC LIMIT 1")
    await conn.execute(f"TRUNCATE {month}")


async def _alter_leaf(conn: asyncpg.Connection, control: str) -> None:
    await conn.execute(
        "UPDATE merkle_leaves SET leaf_data = leaf_data || '\\x00'::bytea WHERE leaf_index = 2"
        " AND (topic, partition) = (SELECT topic, partition FROM merkle_leaves WHERE leaf_index = 2 LIMIT 1)"
    )


async def _resign_checkpoint(conn: asyncpg.Connection, control: str) -> None:
    impostor, _ = NoteSigner.generate("audit-trail")
    row = await _pick(conn, f"SELECT origin, tree_size, root_hash FROM {control}.checkpoints LIMIT 1")
    note = impostor.sign(Checkpoint(row["origin"], row["tree_size"], row["root_hash"]).body())
    await conn.execute(
        f"UPDATE {control}.checkpoints SET note = $3 WHERE origin = $1 AND tree_size = $2",
        row["origin"],
        row["tree_size"],
        note,
    )


async def _alter_log_line(conn: asyncpg.Connection, control: str) -> None:
    await conn.execute(
        "UPDATE execution_logs SET message = 'nothing to see' WHERE log_id ="
        " (SELECT log_id FROM execution_logs ORDER BY kafka_partition, kafka_offset LIMIT 1)"
    )


TAMPERINGS: list[tuple[Tamper, str]] = [
    (_alter_log_line, "execution_logs.message differs"),
    (_alter_entry, "audit_entries.actor_display_name differs"),
    (_insert_entry, "no leaf records (inserted)"),
    (_delete_newest, "deleted"),
    (_delete_newest_row, "audit_outcomes row is missing"),
    (_truncate_month, "audit_entries row is missing (deleted or truncated)"),
    (_alter_leaf, "record was altered"),
    (_resign_checkpoint, "does not verify with the trusted keys"),
]


async def test_each_kind_of_tampering_is_found_with_its_position(projected: tuple[Isolated, NoteSigner]) -> None:
    """One log, seven tamperings, each in a transaction rolled back after `verify --integrity` looked at it."""
    isolated, signer = projected
    clean = await _verify_with(isolated, signer, None)
    assert clean.findings == [], clean.findings
    assert clean.leaves >= 150
    assert clean.checkpoints >= 10
    for tamper, words in TAMPERINGS:
        report = await _verify_with(isolated, signer, tamper)
        assert report.findings, f"{tamper.__name__} was not noticed"
        first = report.findings[0]
        assert words in first.problem, f"{tamper.__name__}: {first}"
        assert first.topic.startswith(isolated.name)
        assert first.leaf_index is not None or first.offset is not None, "named with its position"


async def test_guard_rails_refuse_the_services_and_casual_changes(projected: tuple[Isolated, NoteSigner]) -> None:
    isolated, _ = projected
    writer = await asyncpg.connect(str(isolated.projector.database_url), server_settings={"search_path": isolated.name})
    try:
        for sql in (
            "UPDATE merkle_leaves SET leaf_hash = leaf_hash",
            "DELETE FROM merkle_nodes",
            "TRUNCATE merkle_leaves",
            f"DELETE FROM {isolated.query.control_schema}.checkpoints",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await writer.execute(sql)
    finally:
        await writer.close()
    assert isolated.stack.admin_dsn is not None
    admin = await asyncpg.connect(isolated.stack.admin_dsn, server_settings={"search_path": isolated.name})
    try:
        for sql in (
            "UPDATE audit_entries SET actor_id = 'x'",
            "DELETE FROM merkle_leaves",
            "TRUNCATE audit_outcomes",
            f"UPDATE {isolated.query.control_schema}.checkpoints SET note = note",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await admin.execute(sql)
    finally:
        await admin.close()


async def test_the_cli_exits_non_zero_naming_the_first_problem(projected: tuple[Isolated, NoteSigner]) -> None:
    isolated, signer = projected
    env = {
        **os.environ,
        **isolated.projector_env(),
        "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn,
    }

    async def run() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "audit-projector"), "verify", "--integrity", "--key", signer.verifier_key,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode or 0, out.decode()

    code, out = await run()
    assert code == 0, out
    async with isolated.owner() as owner, owner.transaction():
        await owner.execute("SET LOCAL audit.maintenance = 'on'")
        await _alter_entry(owner, isolated.query.control_schema)
    code, out = await run()
    assert code == 1, out
    assert "altered" in out
    assert "leaf" in out
