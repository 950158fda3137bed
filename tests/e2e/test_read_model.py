"""The read model's guarantees: roles, month partitions, and a rebuild from offset 0."""

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from audit_producer import Actor, AuditProducer, Entity
from audit_projector.replay import replay
from audit_projector.repository import read_model
from audit_projector.repository.session import open_session
from audit_schemas import encode
from tests.conftest import Isolated
from tests.factories import action_event, publish_events, send_raw
from tests.history import record_history
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_service_roles_cannot_rewrite_history(isolated: Isolated, stack: Any) -> None:
    projector = await asyncpg.connect(isolated.stack.projector_dsn, server_settings={"search_path": isolated.name})
    query = await asyncpg.connect(isolated.stack.query_dsn, server_settings={"search_path": isolated.name})
    try:
        for sql in (
            "UPDATE audit_entries SET tenant_id = 'x'",
            "DELETE FROM audit_entries",
            "DROP TABLE audit_outcomes",
            "TRUNCATE execution_logs",
            "ALTER TABLE audit_entries ADD COLUMN x int",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await projector.execute(sql)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await query.execute(
                "INSERT INTO dead_letters (kafka_topic, kafka_partition, kafka_offset, reason, detail) "
                "VALUES ('t', 0, 0, 'r', 'd')"
            )
        owner = await projector.fetchval(
            "SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = 'audit_entries'", isolated.name
        )
        assert owner == "audit_owner"
    finally:
        await projector.close()
        await query.close()


async def test_old_history_creates_the_months_it_needs(isolated: Isolated, projector: Any) -> None:
    """A late or replayed event from 2019 gets its own month partition instead of filling the default one."""
    old = action_event("from-2019")
    old = old.model_copy(update={"time": datetime(2019, 5, 1, tzinfo=UTC)})
    await send_raw(
        isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(old), 0), (encode(action_event("now")), 0)]
    )
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:

        async def both() -> bool:
            return bool(await conn.fetchval(f"SELECT count(*) FROM {isolated.name}.audit_entries") == 2)

        await eventually(both)
        where = await conn.fetch(
            f"SELECT entity_id, tableoid::regclass::text AS part FROM {isolated.name}.audit_entries ORDER BY 1"
        )
        months = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits JOIN pg_class c ON c.oid = inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname LIKE 'audit_entries_y%'",
            isolated.name,
        )
    finally:
        await conn.close()
    parts = {r["entity_id"]: r["part"] for r in where}
    assert parts["from-2019"].endswith("audit_entries_y2019m05")
    assert "audit_entries_y" in parts["now"]
    assert months >= 5, "2019-05, this month and three ahead exist"


async def test_month_creation_is_race_free_and_moves_default_rows(isolated: Isolated) -> None:
    """Projectors creating the same month at once take turns; rows already in the default partition move."""
    schema = isolated.name
    owner = await asyncpg.connect(isolated.stack.owner_dsn)
    writers = [await asyncpg.connect(str(isolated.projector.database_url)) for _ in range(4)]
    try:
        await owner.execute(
            f"INSERT INTO {schema}.execution_logs (logged_at, log_id, trace_id, level, message, source, schema_version,"
            " kafka_topic, kafka_partition, kafka_offset) VALUES ('2011-03-04T05:06:07Z', gen_random_uuid(),"
            " gen_random_uuid(), 'info', 'early', 's', 1, 't', 0, 0)"
        )
        made = await asyncio.gather(
            *(
                w.fetchval(
                    f"SELECT {schema}_control.ensure_month_partition($1, 'execution_logs', '2011-03-20')", schema
                )
                for w in writers
            )
        )
        assert sorted(made) == [False, False, False, True], "exactly one call made the month"
        where = await owner.fetchval(f"SELECT tableoid::regclass::text FROM {schema}.execution_logs")
        assert where.endswith("execution_logs_y2011m03")
        with pytest.raises(asyncpg.RaiseError, match="not a partitioned"):
            await writers[0].fetchval(
                f"SELECT {schema}_control.ensure_month_partition($1, 'dead_letters', '2011-03-01')", schema
            )
    finally:
        await owner.close()
        for w in writers:
            await w.close()


async def test_replay_rebuilds_the_read_model_from_offset_zero(isolated: Isolated, projector: Any) -> None:
    ids = await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 500)
    owner = await asyncpg.connect(isolated.stack.owner_dsn)
    try:

        async def projected() -> bool:
            return bool(await owner.fetchval(f"SELECT count(*) FROM {isolated.name}.audit_entries") == 500)

        await eventually(projected)
        target = f"{isolated.name}_rebuild"
        settings = isolated.projector.model_copy(update={"db_schema": target, "group_id": f"{target}-replay"})
        result = await replay(settings, isolated.stack.owner_dsn, timeout_s=120)
        assert result.projected == 500
        fingerprint = (
            "SELECT md5(string_agg(audit_id::text || tenant_id || action || entity_id || occurred_at::text, ',' "
            "ORDER BY audit_id)) FROM {}.audit_entries"
        )
        live = await owner.fetchval(fingerprint.format(isolated.name))
        rebuilt = await owner.fetchval(fingerprint.format(target))
        count = await owner.fetchval(f"SELECT count(*) FROM {target}.audit_entries")
    finally:
        await owner.close()
    assert count == len(ids)
    assert rebuilt == live, "the rebuilt read model is identical to the live one"


async def test_open_telemetry_span_is_recorded_beside_the_trace(
    audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("handle-request") as span:
        async with audit.action(
            "enable", entity=Entity(id="i-1", model="integration"), actor=Actor.user("u"), tenant="a"
        ):
            pass
        otel_trace = f"{span.get_span_context().trace_id:032x}"

    async def recorded() -> dict[str, Any] | None:
        body = (await api.get("/v1/audit")).json()
        return body["data"][0] if body["count"] else None

    entry = await eventually(recorded)
    assert entry["otel_trace_id"] == otel_trace
    assert entry["trace_id"] != otel_trace, "the audit trace id stays the audit id"


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _plan_nodes(child))]


async def test_a_batch_reads_the_model_by_key_only(isolated: Isolated, audit: AuditProducer, projector: Any) -> None:
    """Each table's batch statement, planned in the projector's own session on the realistic mix with fresh
    statistics, reads the model through its indexes only: a join to a scan of a whole table (what the planner picks
    for small tables) made every batch cost more as the history grew. And no statement is compiled (JIT)."""
    history = await record_history(audit, isolated.stack.bootstrap)

    async def projected() -> bool:
        return await isolated.count("audit_entries") >= len(history.audit_ids)

    await eventually(projected, within=60)
    async with isolated.owner() as owner:
        await owner.execute("ANALYZE")  # the tables as small as they are: a scan is the cheapest plan for each
    conn = await open_session(isolated.stack.projector_dsn, isolated.name, "audit", "plans")
    try:
        assert await conn.fetchval("SHOW jit") == "off"
        await read_model.create_stages(conn)
        async with conn.transaction():
            await conn.execute(read_model.BY_KEY)
            for target in read_model.TARGETS:
                columns = ", ".join(target.columns)
                await conn.execute(
                    f"INSERT INTO {target.stage} ({columns}) SELECT {columns} FROM {target.table} LIMIT 5"
                )
                plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + read_model.insert_statement(target)))
                scanned = {n["Relation Name"] for n in _plan_nodes(plan[0]["Plan"]) if n["Node Type"] == "Seq Scan"}
                assert scanned <= {target.stage}, (target.table, scanned)
            assert await conn.fetchval("SELECT count(*) FROM stage_audit_entries") > 0
    finally:
        await conn.close()
