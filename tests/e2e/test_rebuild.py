"""Compliance rebuilds: a shadow replay that survives being killed halfway and resumes without doubling a row."""

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Isolated
from tests.factories import publish_events
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
    assert f"{EVENTS} records read (" in report and "by an earlier run)" in report, report
    assert "dead-lettered" in report and "records/s" in report, report

    async with isolated.owner() as conn:
        live = await conn.fetchrow(FINGERPRINT.format(isolated.name))
        rebuilt = await conn.fetchrow(FINGERPRINT.format(shadow))
        # Offsets are stored under the live group's name, so live projectors would find their place after a swap.
        groups = await conn.fetch(f"SELECT DISTINCT consumer_group FROM {shadow}.projector_offsets")
        stored = await conn.fetchval(f"SELECT sum(next_offset) FROM {shadow}.projector_offsets WHERE topic = $1",
                                     isolated.projector.audit_topic)  # fmt: skip
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
