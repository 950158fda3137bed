"""Compliance rebuilds: a shadow replay that survives being killed halfway and resumes without doubling a row."""

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from audit_producer import AuditProducer
from audit_projector.compare import checksums, compare, stored_offsets
from audit_projector.replay import replay
from audit_projector.swap import SwapRefusedError, swap
from audit_schemas import OtelSpan, encode
from tests.conftest import Isolated, projector_running
from tests.factories import action_event, key_of, log_event, outcome_event, publish_events, send_keyed
from tests.history import History, record_history
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

EVENTS = 6000
FINGERPRINT = """
SELECT count(*), md5(string_agg(audit_id::text || tenant_id || action || entity_id || occurred_at::text
                                || kafka_partition || '/' || kafka_offset, ',' ORDER BY audit_id))
  FROM {}.audit_entries
"""


async def _replay(isolated: Isolated, shadow: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"),
        "replay",
        "--schema",
        shadow,
        "--timeout",
        "120",
        env={
            **isolated.projector_env(),
            "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn,
            "AUDIT_PROJECTOR_BATCH_MAX_RECORDS": "50",  # many small batches: the kill lands between two of them
            "COLUMNS": "200",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_a_replay_killed_halfway_resumes_where_it_stopped(isolated: Isolated, projector: Any) -> None:
    await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, EVENTS)
    await eventually(lambda: _count(isolated, isolated.name, EVENTS), within=60)
    shadow = f"{isolated.name}_shadow"

    first = await _replay(isolated, shadow)
    try:

        async def partway() -> bool:
            return 0 < await _entries(isolated, shadow) < EVENTS

        await eventually(partway, within=60, interval=0.02)
    finally:
        os.kill(first.pid, signal.SIGKILL)  # a crash, not a clean stop
        await first.wait()
    interrupted = await _entries(isolated, shadow)
    assert interrupted < EVENTS, "the replay finished before it could be interrupted"

    second = await _replay(isolated, shadow)
    out, err = await asyncio.wait_for(second.communicate(), 180)
    report = (out + err).decode()
    assert second.returncode == 0, report
    assert f"{EVENTS} records read (" in report, report
    assert "by an earlier run)" in report
    assert "dead-lettered" in report
    assert "records/s" in report

    async with isolated.owner() as conn:
        live = await conn.fetchrow(FINGERPRINT.format(isolated.name))
        rebuilt = await conn.fetchrow(FINGERPRINT.format(shadow))
        # Offsets are stored under the live group's name, so live projectors would find their place after a swap.
        groups = await conn.fetch(f"SELECT DISTINCT consumer_group FROM {shadow}.projector_offsets")
        stored = await conn.fetchval(f"SELECT sum(next_offset) FROM {shadow}.projector_offsets WHERE topic = $1",
                                     isolated.projector.audit_topic)  # fmt: skip
    assert rebuilt is not None
    assert live is not None
    assert tuple(rebuilt) == tuple(live)  # every event once: none lost, none doubled by the resumed run
    assert [g["consumer_group"] for g in groups] == [isolated.projector.group_id]
    assert stored == EVENTS


async def test_replay_refuses_the_live_schema(isolated: Isolated) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"),
        "replay",
        "--schema",
        isolated.name,
        env={**isolated.projector_env(), "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "live read model" in (out + err).decode()


async def _entries(isolated: Isolated, schema: str) -> int:
    async with isolated.owner() as conn:
        if await conn.fetchval("SELECT to_regclass($1)", f"{schema}.audit_entries") is None:
            return 0
        return int(await conn.fetchval(f"SELECT count(*) FROM {schema}.audit_entries"))


async def _count(isolated: Isolated, schema: str, expected: int) -> bool:
    return await _entries(isolated, schema) == expected


async def _verify(isolated: Isolated, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"),
        "verify",
        "--read-model",
        *args,
        env={
            **isolated.projector_env(),
            "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn,
            "COLUMNS": "400",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode or 0, (out + err).decode()


async def _mix(isolated: Isolated, audit: AuditProducer) -> History:
    """The realistic mix recorded and projected (every action's outcome in, the dead letter too)."""
    history = await record_history(audit, isolated.stack.bootstrap)

    async def projected() -> bool:
        async with isolated.owner() as conn:
            outcomes = await conn.fetchval("SELECT count(*) FROM audit_outcomes")
            dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
        return bool(outcomes == len(history.audit_ids) and dead == history.dead_letters)

    await eventually(projected, within=60)
    return history


async def test_verify_read_model_names_the_first_difference_with_the_log(
    isolated: Isolated, audit: AuditProducer, projector: Any
) -> None:
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser DSN to tamper with")
    history = await _mix(isolated, audit)
    code, report = await _verify(isolated)
    assert code == 0, report
    assert "the read model matches the log" in report, report
    compared = re.search(r"and (\d+) rows compared", report)
    assert compared is not None, report
    assert int(compared.group(1)) >= 2 * len(history.audit_ids) + history.min_log_lines + history.dead_letters
    async with isolated.owner() as conn:
        scratch = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'audit_verify_%'")
    assert scratch == 0  # the scratch rebuild is dropped unless --keep

    # Two rebuilds of the same log have identical checksums, and compare equal.
    first, second = f"{isolated.name}_a", f"{isolated.name}_b"
    for target in (first, second):
        await replay(
            isolated.projector.model_copy(update={"db_schema": target, "kafka_group_id": f"audit-replay-{target}"}),
            isolated.stack.owner_dsn,
            timeout_s=120,
        )
    async with isolated.owner() as conn:
        assert await checksums(conn, first) == await checksums(conn, second)
        assert (await compare(conn, first, second)).differences == []

    # An insider with superuser rights alters one entry's action, in the live model only.
    altered = await _tamper(
        isolated,
        "UPDATE audit_entries SET action = 'delete' WHERE (kafka_partition, kafka_offset) = "
        "(SELECT kafka_partition, max(kafka_offset) FROM audit_entries GROUP BY 1 ORDER BY 1 LIMIT 1) "
        "RETURNING kafka_topic, kafka_partition, kafka_offset, "
        "(SELECT action FROM {first}.audit_entries f WHERE f.audit_id = audit_entries.audit_id) AS action".replace(
            "{first}", first
        ),
    )
    code, report = await _verify(isolated, "--against", first)
    assert code == 1, report
    where = f"audit_entries {altered['kafka_topic']}/{altered['kafka_partition']}"
    assert where in report, report
    assert f"first difference at offset {altered['kafka_offset']}, column action: 'delete' in {isolated.name}" in report
    assert f"'{altered['action']}' in the log (altered)" in report, report

    gone = await _tamper(  # and deletes another
        isolated,
        "DELETE FROM audit_entries WHERE (kafka_partition, kafka_offset) = "
        "(SELECT kafka_partition, min(kafka_offset) FROM audit_entries GROUP BY 1 ORDER BY 1 LIMIT 1) "
        "RETURNING kafka_partition, kafka_offset",
    )
    code, report = await _verify(isolated, "--against", first)
    assert code == 1
    assert f"first difference at offset {gone['kafka_offset']}: missing from {isolated.name} (deleted)" in report


async def _tamper(isolated: Isolated, sql: str) -> asyncpg.Record:
    """Change the live model as a superuser past its guard rails, committed; the row the statement returned."""
    assert isolated.stack.admin_dsn is not None
    conn = await asyncpg.connect(isolated.stack.admin_dsn, server_settings={"search_path": isolated.name})
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL audit.maintenance = 'on'")
            row = await conn.fetchrow(sql)
    finally:
        await conn.close()
    assert row is not None
    return row


async def test_a_verified_swap_under_ingest_and_query_load_loses_and_doubles_nothing(
    isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient
) -> None:
    live = isolated.projector.model_copy(update={"probe_interval_s": 0.2, "batch_max_records": 200})
    shadow_name = f"{isolated.name}_shadow"
    shadow = live.model_copy(update={"db_schema": shadow_name, "kafka_group_id": f"audit-replay-{shadow_name}"})
    published: list[str] = []
    failures: list[str] = []
    requests = 0
    stop = asyncio.Event()

    async def ingest() -> None:
        for _ in range(100):  # bounded: 100 bursts of 30 events
            if stop.is_set():
                return
            published.extend(await publish_events(isolated.stack.bootstrap, live.audit_topic, 30))
            await asyncio.sleep(0.03)

    async def read() -> None:
        nonlocal requests
        for i in range(5000):  # bounded
            if stop.is_set():
                return
            path = ("/v1/audit", "/v1/audit/count", "/v1/audit/stats")[i % 3]
            response = await api.get(path, params={"limit": 5} if i % 3 == 0 else {})
            requests += 1
            if response.status_code != 200:
                failures.append(f"{path}: {response.status_code} {response.text[:200]}")

    async with projector_running(live):
        published.extend((await record_history(audit, isolated.stack.bootstrap)).audit_ids)
        published.extend(await publish_events(isolated.stack.bootstrap, live.audit_topic, 1500))
        await eventually(lambda: _count(isolated, isolated.name, len(published)), within=60)
        await replay(shadow, isolated.stack.owner_dsn, timeout_s=120)  # while the live projector keeps serving

        load = [asyncio.create_task(ingest()), asyncio.create_task(read())]
        await asyncio.sleep(0.5)  # the swap starts under way: events arriving, pages being read
        result = await swap(live, shadow, isolated.stack.owner_dsn, timeout_s=60)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*load)
        await eventually(lambda: _count(isolated, isolated.name, len(published)), within=60)

    async with isolated.owner() as conn:
        ids = {str(r[0]) for r in await conn.fetch(f"SELECT audit_id FROM {isolated.name}.audit_entries")}
        rebuilt = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", shadow_name)
        retired = await conn.fetchval(f"SELECT count(*) FROM {result.retired}.audit_entries")
        control = await conn.fetchrow(
            f"SELECT paused, reason FROM {live.control_schema}.projector_control WHERE read_model = $1", isolated.name
        )
        await conn.execute(f"DROP SCHEMA {result.retired} CASCADE")
    assert failures == [], failures[:5]
    assert requests > 50
    assert ids == set(published)  # every event exactly once (audit_id is unique), none lost across the swap
    assert rebuilt == 0  # the shadow now carries the live name
    assert 0 < retired <= len(published)  # the old model, kept for inspection
    assert control is not None
    assert control["paused"] is False
    assert "swapped in" in control["reason"]
    print(f"swap: paused {result.paused_s * 1000:.0f} ms, {result.rows_verified} rows verified, {requests} requests")


async def test_a_swap_is_refused_when_the_rebuild_does_not_match(isolated: Isolated, audit: AuditProducer) -> None:
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser DSN to tamper with")
    live = isolated.projector.model_copy(update={"probe_interval_s": 0.2})
    shadow_name = f"{isolated.name}_shadow"
    shadow = live.model_copy(update={"db_schema": shadow_name, "kafka_group_id": f"audit-replay-{shadow_name}"})
    async with projector_running(live):
        history = await _mix(isolated, audit)
        await replay(shadow, isolated.stack.owner_dsn, timeout_s=120)
        await _tamper(
            isolated,
            f"UPDATE {shadow_name}.execution_logs SET message = 'forged' WHERE log_id = "
            f"(SELECT log_id FROM {shadow_name}.execution_logs ORDER BY kafka_offset LIMIT 1) RETURNING kafka_offset",
        )
        with pytest.raises(SwapRefusedError, match="message"):
            await swap(live, shadow, isolated.stack.owner_dsn, timeout_s=60)
        # Nothing was replaced, and the live projector was never paused: it keeps projecting.
        await publish_events(isolated.stack.bootstrap, live.audit_topic, 10)
        entries = len(history.audit_ids) + 10
        await eventually(lambda: _count(isolated, isolated.name, entries), within=30)
    async with isolated.owner() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", shadow_name) == 1
        await conn.execute(f"DROP SCHEMA {shadow_name} CASCADE")


_COMPARED = """SELECT coalesce(sum(seq_scan), 0) FROM {view} WHERE schemaname = ANY($1::text[])
   AND relname ~ '^(audit_entries|audit_outcomes|execution_logs|merkle_leaves|dead_letters)'"""


async def _whole_scans(conn: asyncpg.Connection, schemas: list[str]) -> int:
    """Sequential scans so far of the compared tables (this connection's own counted too)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(await conn.fetchval(_COMPARED.format(view="pg_stat_user_tables"), schemas))


async def _own_whole_scans(conn: asyncpg.Connection, schemas: list[str]) -> int:
    """Sequential scans of the compared tables by this connection's transaction so far: exact, where the counts of
    the whole server also take in other sessions' scans whenever those sessions report them (an idle one, seconds
    later)."""
    return int(await conn.fetchval(_COMPARED.format(view="pg_stat_xact_user_tables"), schemas))


_BY_POSITION = """SELECT coalesce(sum(s.idx_scan), 0) FROM pg_stat_user_indexes s
    WHERE s.schemaname = ANY($1::text[]) AND s.relname ~ '^(audit_entries|audit_outcomes|execution_logs)'
      AND pg_get_indexdef(s.indexrelid) LIKE '%(kafka_topic, kafka_partition, kafka_offset)'"""


async def _position_scans(conn: asyncpg.Connection, schemas: list[str]) -> int:
    """Scans so far of the position's B-tree (migration 0021) on entries, outcomes and log lines, every partition."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(await conn.fetchval(_BY_POSITION, schemas))


async def _jit_compiled(admin_dsn: str, work: Callable[[asyncpg.Connection], Awaitable[None]]) -> tuple[int, int]:
    """Run `work(conn)` on a superuser connection whose every statement is planned for JIT (its cost thresholds at
    0) and logged with its plan (auto_explain, sent to this client): how many plans it ran, and how many compiled."""
    conn = await asyncpg.connect(admin_dsn)
    plans: list[str] = []
    conn.add_log_listener(lambda _c, message: plans.append(message.message))
    try:
        await conn.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; "
            "SET auto_explain.log_nested_statements = on; SET client_min_messages = log; SET jit_above_cost = 0"
        )
        await work(conn)
        await conn.execute("RESET client_min_messages")
    finally:
        await conn.close()
    ran = [p for p in plans if "Query Text:" in p]
    return len(ran), sum("JIT:" in p for p in ran)


async def test_the_swaps_tail_comparison_reads_only_the_tail_and_still_finds_a_forgery_in_it(
    isolated: Isolated, audit: AuditProducer, projector: Any
) -> None:
    """What the pause compares (records since the bulk comparison) is read through the position's index:
    no compared table of either model is scanned whole, however large; a forged row in the tail is still found,
    and one below it is left to the bulk comparison that ran before the pause."""
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser DSN to tamper with")
    await _mix(isolated, audit)
    shadow_name = f"{isolated.name}_shadow"
    shadow = isolated.projector.model_copy(
        update={"db_schema": shadow_name, "kafka_group_id": f"audit-replay-{shadow_name}"}
    )
    await replay(shadow, isolated.stack.owner_dsn, timeout_s=120)
    schemas = [isolated.name, shadow_name]
    async with isolated.owner() as conn:
        ours = await stored_offsets(conn, isolated.name, isolated.projector.group_id)
        theirs = await stored_offsets(conn, shadow_name, isolated.projector.group_id)
        bounds = {k: min(n, ours.get(k, 0)) for k, n in theirs.items()}
        since = {k: max(0, n - 3) for k, n in bounds.items()}  # the last three records of every partition
        before, by_position = await _whole_scans(conn, schemas), await _position_scans(conn, schemas)
        async with conn.transaction(readonly=True, isolation="repeatable_read"):  # its scans counted on their own
            tail = await compare(conn, isolated.name, shadow_name, bounds, since=since)
            assert await _own_whole_scans(conn, schemas) == 0
        assert tail.differences == [], tail.differences
        assert 0 < tail.rows <= 3 * len(bounds), tail.rows  # the tail only: a record is at most one row
        # Through the B-tree, whose reads do not grow with the model (a block-range index is read whole).
        assert await _position_scans(conn, schemas) > by_position

    # Never JIT-compiled: the planner's estimates for a tail grow with the model, and past the JIT thresholds each
    # of its statements was compiled to read a few rows (the pause grew with the model). A bulk comparison may be.
    async def compare_tail(c: asyncpg.Connection) -> None:
        assert (await compare(c, isolated.name, shadow_name, bounds, since=since)).differences == []

    async def checksum_all(c: asyncpg.Connection) -> None:
        assert (await checksums(c, shadow_name, bounds)) != {}

    admin = isolated.stack.admin_dsn
    assert admin is not None
    ran, compiled = await _jit_compiled(admin, compare_tail)
    assert ran >= 10, ran  # every statement of the tail comparison was planned under those thresholds
    assert compiled == 0, (ran, compiled)
    assert (await _jit_compiled(admin, checksum_all))[1] > 0  # the check can fail: JIT is available here
    async with isolated.owner() as conn:
        whole = await compare(conn, isolated.name, shadow_name, bounds)
        assert whole.differences == []
        assert await _whole_scans(conn, schemas) > before  # the counter is live: a full comparison scans

        newest = await conn.fetchrow(
            f"SELECT kafka_partition, kafka_offset FROM {shadow_name}.execution_logs ORDER BY kafka_offset DESC LIMIT 1"
        )
        assert newest is not None
        oldest = await conn.fetchrow(
            f"SELECT kafka_partition, kafka_offset FROM {shadow_name}.execution_logs WHERE kafka_partition = $1 "
            "ORDER BY kafka_offset LIMIT 1",
            newest["kafka_partition"],
        )
    assert oldest is not None
    logs = isolated.projector.execution_log_topic
    assert newest["kafka_offset"] >= since[(logs, newest["kafka_partition"])]
    assert oldest["kafka_offset"] < since[(logs, oldest["kafka_partition"])]
    for row in (newest, oldest):
        await _tamper(
            isolated,
            f"UPDATE {shadow_name}.execution_logs SET message = 'forged' WHERE kafka_partition = "
            f"{row['kafka_partition']} AND kafka_offset = {row['kafka_offset']} RETURNING kafka_offset",
        )
    async with isolated.owner() as conn:
        found = await compare(conn, isolated.name, shadow_name, bounds, since=since)
        everything = await compare(conn, isolated.name, shadow_name, bounds)
    assert len(found.differences) == 1, found.differences
    assert f"offset {newest['kafka_offset']}" in found.differences[0]
    assert "message" in found.differences[0]
    # Both in one partition: one bucket (two if they fall on either side of midnight), its first difference named.
    assert 1 <= len(everything.differences) <= 2, everything.differences
    assert f"offset {oldest['kafka_offset']}," in everything.differences[0]

    leaf = await _tamper(  # a forged leaf in the tail is found by the tail's leaf range
        isolated,
        f"UPDATE {shadow_name}.merkle_leaves SET leaf_hash = sha256('forged') WHERE (topic, partition, leaf_index) = "
        f"(SELECT topic, partition, max(leaf_index) FROM {shadow_name}.merkle_leaves WHERE topic = '{logs}' "
        "GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1) RETURNING partition, leaf_index",
    )
    async with isolated.owner() as conn:
        found = await compare(conn, isolated.name, shadow_name, bounds, since=since)
        await conn.execute(f"DROP SCHEMA {shadow_name} CASCADE")
    leaves_found = [d for d in found.differences if d.startswith("Merkle leaves")]
    assert len(leaves_found) == 1, found.differences
    assert leaves_found[0].startswith(f"Merkle leaves of {logs}/{leaf['partition']}:"), leaves_found
    assert f"first difference at leaf {leaf['leaf_index']} " in leaves_found[0], leaves_found


async def test_version_1_and_version_2_actions_project_and_replay_alike(isolated: Isolated, projector: Any) -> None:
    """Events written by an older producer (action v1) before v2 was introduced, then v2 ones: the live model and
    a replay read both through the upcaster; the leaves keep the bytes as written."""
    records: list[tuple[bytes, bytes | None]] = []
    old_ids, new_ids = [], []
    for i in range(40):
        start = action_event(f"res-{i}")
        span = OtelSpan(trace_id=f"{i:032x}", span_id=f"{i + 1:016x}")
        start = start.model_copy(update={"data": start.data.model_copy(update={"otel": span})})
        raw = json.loads(encode(start))
        if i % 2 == 0:  # as a version-1 producer wrote it
            old = raw["data"]
            old.update(schema_version=1, otel_trace_id=span.trace_id, otel_span_id=span.span_id)
            del old["otel"]
            old_ids.append(str(start.data.audit_id))
        else:
            new_ids.append(str(start.data.audit_id))
        records.append((json.dumps(raw, separators=(",", ":")).encode(), key_of(start)))
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, records)
    await eventually(lambda: _count(isolated, isolated.name, 40), within=30)

    shadow = f"{isolated.name}_replayed"
    await replay(
        isolated.projector.model_copy(update={"db_schema": shadow, "kafka_group_id": f"audit-replay-{shadow}"}),
        isolated.stack.owner_dsn,
        timeout_s=120,
    )
    async with isolated.owner() as conn:
        assert (await compare(conn, isolated.name, shadow)).differences == []
        rows = await conn.fetch(
            f"SELECT audit_id::text, otel_trace_id, otel_span_id, schema_version FROM {shadow}.audit_entries"
        )
        written = await conn.fetch(
            f"SELECT l.leaf_data FROM {shadow}.merkle_leaves l JOIN {shadow}.audit_entries e "
            "ON e.kafka_partition = l.partition AND e.kafka_offset = l.kafka_offset WHERE e.audit_id = $1::uuid",
            old_ids[0],
        )
        dead = await conn.fetchval(f"SELECT count(*) FROM {shadow}.dead_letters")
    assert dead == 0
    by_id = {r["audit_id"]: r for r in rows}
    assert set(by_id) == set(old_ids) | set(new_ids)
    for audit_id in old_ids + new_ids:
        i = int(by_id[audit_id]["otel_trace_id"], 16)
        assert by_id[audit_id]["otel_span_id"] == f"{i + 1:016x}"  # the v1 ids landed where v2 puts them
        # v1 is lifted to v2, which the model reads as it is; the producer writes v3 (v2 and `sealed`)
        assert by_id[audit_id]["schema_version"] == (2 if audit_id in old_ids else 3)
    assert b'"otel_trace_id"' in bytes(written[0]["leaf_data"])  # the leaf holds the record as written (v1)


async def test_an_investigation_rebuilds_one_tenant_or_one_entity_with_outcomes_and_logs(
    isolated: Isolated, projector: Any
) -> None:
    audit_records: list[tuple[bytes, bytes | None]] = []
    log_records: list[tuple[bytes, bytes | None]] = []
    plan = [("acme", "res-1"), ("acme", "res-2"), ("globex", "res-1"), ("acme", "res-1")]
    starts = []
    for tenant, entity in plan:
        start = action_event(entity, tenant=tenant)
        starts.append(start)
        audit_records += [(encode(start), key_of(start)), (encode(outcome_event(start)), key_of(start))]
        line = log_event(start, f"working on {entity}")
        log_records.append((encode(line), key_of(line)))
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, audit_records)
    await send_keyed(isolated.stack.bootstrap, isolated.projector.execution_log_topic, log_records)
    await eventually(lambda: _count(isolated, isolated.name, 4), within=30)

    async def investigate(schema: str, *scope: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "audit-projector"),
            "replay",
            "--schema",
            schema,
            *scope,
            env={**isolated.projector_env(), "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, (out + err).decode()
        return (out + err).decode()

    by_tenant, by_entity = f"{isolated.name}_acme", f"{isolated.name}_res1"
    assert "investigation rebuild of tenant acme" in await investigate(by_tenant, "--tenant", "acme")
    await investigate(by_entity, "--entity", "resource/res-1", "--tenant", "acme")
    later, earlier = f"{isolated.name}_later", f"{isolated.name}_earlier"
    cut = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    await investigate(later, "--since", cut)  # a window after every action: nothing in it
    await investigate(earlier, "--until", cut, "--tenant", "globex")  # a window before the cut, one tenant
    async with isolated.owner() as conn:
        assert await conn.fetchval(f"SELECT count(*) FROM {later}.audit_entries") == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {earlier}.audit_entries") == 1
        await conn.execute(f"DROP SCHEMA {later} CASCADE; DROP SCHEMA {earlier} CASCADE")
    async with isolated.owner() as conn:
        for schema, wanted in ((by_tenant, [0, 1, 3]), (by_entity, [0, 3])):
            ids = {s.data.audit_id for i, s in enumerate(starts) if i in wanted}
            entries = {r[0] for r in await conn.fetch(f"SELECT audit_id FROM {schema}.audit_entries")}
            outcomes = {r[0] for r in await conn.fetch(f"SELECT audit_id FROM {schema}.audit_outcomes")}
            traces = {r[0] for r in await conn.fetch(f"SELECT trace_id FROM {schema}.execution_logs")}
            leaves = await conn.fetchval(f"SELECT count(*) FROM {schema}.merkle_leaves")
            assert entries == ids, schema
            assert outcomes == ids, schema
            assert {t.hex if hasattr(t, "hex") else t for t in traces} == {i.hex for i in ids}, schema
            assert leaves == 0  # no tree: its leaves would carry the records left out
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--entity", "res-1"], "MODEL/ID"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "the window is empty"),
        (["--tenant", "acme", "--swap"], "never swapped in"),
    ],
)
async def test_a_bad_investigation_scope_exits_2(isolated: Isolated, args: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"),
        "replay",
        "--schema",
        f"{isolated.name}_x",
        *args,
        env={
            **isolated.projector_env(),
            "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn,
            "COLUMNS": "200",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert message in (out + err).decode()
