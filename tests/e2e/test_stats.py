"""`GET /v1/audit/stats`: exact counts from the rollups (and the entries at the edges), checked by brute force."""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from audit_producer import AuditProducer
from audit_projector.replay import replay
from audit_projector.service import compact_once
from audit_schemas import ActionEvent, encode
from tests.conftest import Isolated, projector_running
from tests.e2e.test_search import all_entries, seed_history
from tests.factories import action_event, key_of, outcome_event, send_keyed, send_raw
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

BRUTE_FORCE = """
SELECT date_trunc('hour', e.occurred_at, 'UTC') AS bucket, e.tenant_id, e.action, e.entity_model, e.actor_type,
       coalesce(o.status, 'none') AS status, e.kafka_partition, count(*) AS entries
  FROM {schema}.audit_entries e LEFT JOIN {schema}.audit_outcomes o ON o.audit_id = e.audit_id
 GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
"""
ROLLUPS = """
SELECT bucket, tenant_id, action, entity_model, actor_type, status, kafka_partition, entries
  FROM {schema}.audit_rollups WHERE entries > 0 ORDER BY 1, 2, 3, 4, 5, 6, 7
"""


def _outcome(entry: dict[str, Any]) -> str:
    status = entry["outcome"]["status"]
    return "in_progress" if status == "unknown" else str(status)


async def _stats(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await api.get("/v1/audit/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_stats_match_a_brute_force_count_and_survive_a_rebuild(
    isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient
) -> None:
    async with projector_running(isolated.projector):
        await seed_history(isolated, audit)
        # A re-delivered start (the same record again) and a second copy of an outcome are not counted twice.
        again = action_event("res-9", action="retry", tenant="acme")
        await send_raw(isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(again), 0)] * 2)

        async def everything() -> list[dict[str, Any]] | None:
            found = await all_entries(api)
            return found if len(found) == 12 and sum(_outcome(e) != "in_progress" for e in found) == 10 else None

        history = await eventually(everything, within=30)
    async with isolated.owner() as conn:
        brute = [tuple(r) for r in await conn.fetch(BRUTE_FORCE.format(schema=isolated.name))]
        rollups = [tuple(r) for r in await conn.fetch(ROLLUPS.format(schema=isolated.name))]
    assert rollups == brute  # the rollups are exact

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    aligned = {"since": (hour - timedelta(hours=2)).isoformat(), "until": (hour + timedelta(hours=1)).isoformat()}
    cases: list[tuple[dict[str, Any], str, Counter[tuple[Any, ...]]]] = [
        ({"group_by": "event", **aligned}, "rollups", Counter((e["event"],) for e in history)),
        ({"group_by": "outcome", "q": "tenant:acme", **aligned}, "rollups",
         Counter((_outcome(e),) for e in history if e["tenant_id"] == "acme")),
        ({"group_by": ["tenant", "outcome"], "q": "-action:sync outcome:failed outcome:in_progress"}, "rollups+entries",
         Counter((e["tenant_id"], _outcome(e)) for e in history
                 if e["event"] != "sync" and _outcome(e) in ("failed", "in_progress"))),
        ({"group_by": "model", "q": "user:alice"}, "entries",
         Counter((e["entity"]["model"],) for e in history if e["user"]["id"] == "alice")),
        ({"group_by": "actor_type", "q": "entity:inv-*", **aligned}, "entries",
         Counter((e["user"]["type"],) for e in history if e["entity"]["id"].startswith("inv-"))),
    ]  # fmt: skip
    for params, source, expected in cases:
        body = await _stats(api, **params)
        names = body["group_by"]
        got = Counter({tuple(r[n] for n in names): r["count"] for r in body["rows"]})
        assert got == expected, params
        assert body["source"] == source, params
        assert body["total"] == sum(expected.values())

    body = await _stats(api, group_by=["bucket", "event"], bucket="hour", **aligned)
    assert body["bucket"] == "hour"
    assert {r["bucket"] for r in body["rows"]} == {hour.isoformat()}
    assert sum(r["count"] for r in body["rows"]) == len(history)

    ungrouped = await _stats(api, **aligned)  # no dimension: one total
    assert ungrouped["rows"] == [{"count": len(history)}]
    empty = await _stats(api, since="2001-01-01T00:00:00Z", until="2001-01-02T00:00:00Z")
    assert empty["rows"] == []
    assert empty["total"] == 0
    top = await _stats(api, group_by="user", limit=2)
    by_user = Counter(e["user"]["id"] for e in history)
    assert [(r["user"], r["count"]) for r in top["rows"]] == sorted(
        by_user.items(), key=lambda kv: (-kv[1], str(kv[0]))
    )[:2]
    assert top["total"] is None

    # A caller limited to one tenant counts only that tenant's entries, whichever way the counts are made.
    acme = {"authorization": f"Bearer {await isolated.token(('audit:read',), tenants=('acme',))}"}
    in_acme = sum(e["tenant_id"] == "acme" for e in history)
    for params in ({"group_by": "tenant", **aligned}, {"group_by": "tenant"}, {"group_by": "tenant", "q": "user:bob"}):
        body = (await api.get("/v1/audit/stats", params=params, headers=acme)).json()
        bob = sum(e["tenant_id"] == "acme" and e["user"]["id"] == "bob" for e in history)
        assert [(r["tenant"], r["count"]) for r in body["rows"]] == [("acme", in_acme if "q" not in params else bob)]
    counted = (await api.get("/v1/audit/count", headers=acme)).json()
    assert counted == {"count": in_acme, "exact": True}

    # A rebuild from the log produces the same rollups.
    target = f"{isolated.name}_r"
    await replay(
        isolated.projector.model_copy(update={"db_schema": target, "group_id": f"{isolated.name}-replay"}),
        isolated.stack.owner_dsn,
        timeout_s=60,
    )
    async with isolated.owner() as conn:
        rebuilt = [tuple(r) for r in await conn.fetch(ROLLUPS.format(schema=target))]
    assert rebuilt == rollups


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": ["event", "outcome", "model"]}, "at most 2 dimensions"),
        ({"group_by": ["user", "event"]}, "grouped alone"),
        ({"since": "2020-01-01T00:00:00Z", "until": "2022-01-01T00:00:00Z"}, "at most 400 days"),
        ({"group_by": "bucket", "bucket": "hour", "q": "after:2026-01-01 before:2026-06-01"}, "choose a wider bucket"),
        ({"q": "after:2026-02-01 before:2026-01-01"}, "the range is empty"),
        ({"group_by": "colour"}, "group_by"),
        ({"group_by": "user", "limit": 1000}, "limit"),
    ],
)
async def test_stats_refuse_what_would_be_too_costly(
    isolated: Isolated, api: httpx.AsyncClient, params: dict[str, Any], message: str
) -> None:
    response = await api.get("/v1/audit/stats", params=params)
    assert response.status_code in (400, 422), response.text
    assert message in response.text


DAILY_BRUTE_FORCE = """
SELECT date_trunc('day', e.occurred_at, 'UTC') AS bucket, e.tenant_id, e.action, e.entity_model, e.actor_type,
       coalesce(o.status, 'none') AS status, count(*) AS entries
  FROM {schema}.audit_entries e LEFT JOIN {schema}.audit_outcomes o ON o.audit_id = e.audit_id
 WHERE e.occurred_at < date_trunc('day', now(), 'UTC')
 GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
"""
DAILY = """
SELECT bucket, tenant_id, action, entity_model, actor_type, status, entries
  FROM {schema}.audit_rollups_daily ORDER BY 1, 2, 3, 4, 5, 6
"""


def _past(start: ActionEvent, at: datetime) -> ActionEvent:
    return start.model_copy(update={"time": at, "data": start.data.model_copy(update={"started_at": at})})


async def test_closed_days_are_counted_from_the_daily_tier_and_stay_exact_through_late_outcomes(
    isolated: Isolated, api: httpx.AsyncClient
) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    starts: list[ActionEvent] = []
    records: list[tuple[bytes, bytes | None]] = []
    plan = [  # days ago, hour, tenant, action, outcome (None: still running)
        (3, 1, "acme", "create", "succeeded"), (3, 1, "acme", "create", "failed"),
        (3, 23, "globex", "delete", None), (2, 0, "acme", "approve", "succeeded"),
        (2, 12, "globex", "approve", "succeeded"), (2, 12, "acme", "sync", None),
        (1, 5, "acme", "create", "succeeded"), (1, 5, "globex", "reject", "failed"),
        (0, 0, "acme", "create", None),
    ]  # fmt: skip
    for days, hour, tenant, action, status in plan:
        start = _past(
            action_event(f"res-{len(starts)}", action=action, tenant=tenant), today - timedelta(days=days, hours=-hour)
        )
        starts.append(start)
        records.append((encode(start), key_of(start)))
        if status is not None:
            records.append((encode(outcome_event(start, status)), key_of(start)))
    late = starts[5]  # 2 days ago, running: its outcome arrives after the day was folded
    async with projector_running(isolated.projector):
        await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, records)
        await eventually(lambda: _counted(isolated, len(plan), 6), within=30)
        # three closed days, and today's closed hours — none while the clock is still in today's first hour
        hours = [datetime.now(UTC).hour]
        touched = await compact_once(isolated.projector)
        hours.append(datetime.now(UTC).hour)
        assert touched in {3 + (hour > 0) for hour in hours}, (touched, hours)
        async with isolated.owner() as conn:
            assert await conn.fetchval("SELECT count(*) FROM audit_rollup_changes WHERE day < $1", today) == 0
            daily = [tuple(r) for r in await conn.fetch(DAILY.format(schema=isolated.name))]
            assert daily == [tuple(r) for r in await conn.fetch(DAILY_BRUTE_FORCE.format(schema=isolated.name))]

        window = {"since": (today - timedelta(days=4)).isoformat(), "until": (today + timedelta(hours=1)).isoformat()}

        async def check(expect_in_progress: int) -> None:
            history = await all_entries(api, since=window["since"], until=window["until"])
            assert len(history) == len(plan)
            cases: list[tuple[dict[str, Any], Counter[tuple[Any, ...]]]] = [
                ({"group_by": ["bucket", "event"], "bucket": "day"},
                 Counter((e["time"][:10] + "T00:00:00+00:00", e["event"]) for e in history)),
                ({"group_by": "outcome"}, Counter((_outcome(e),) for e in history)),
                ({"group_by": ["model", "outcome"]}, Counter(("resource", _outcome(e)) for e in history)),
                ({"group_by": "tenant", "q": "outcome:in_progress"},
                 Counter((e["tenant_id"],) for e in history if _outcome(e) == "in_progress")),
            ]  # fmt: skip
            for params, expected in cases:
                body = await _stats(api, **params, **window)
                names = body["group_by"]
                got = Counter({tuple(r[n] for n in names): r["count"] for r in body["rows"]})
                assert got == expected, params
                assert body["source"] == "rollups", params
            assert sum(_outcome(e) == "in_progress" for e in history) == expect_in_progress

        await check(expect_in_progress=3)
        # A late outcome changes a folded day: until the next compaction that day is summed from its hourly rows.
        await send_keyed(
            isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(outcome_event(late)), key_of(late))]
        )
        await eventually(lambda: _counted(isolated, len(plan), 7), within=30)
        async with isolated.owner() as conn:
            assert await conn.fetchval("SELECT count(*) FROM audit_rollup_changes WHERE day < $1", today) == 1
        await check(expect_in_progress=2)
        assert await compact_once(isolated.projector) == 1
        await check(expect_in_progress=2)
        async with isolated.owner() as conn:
            daily = [tuple(r) for r in await conn.fetch(DAILY.format(schema=isolated.name))]
            assert daily == [tuple(r) for r in await conn.fetch(DAILY_BRUTE_FORCE.format(schema=isolated.name))]

    # A caller limited to one tenant gets that tenant's counts from the daily tier too.
    globex = {"authorization": f"Bearer {await isolated.token(('audit:read',), tenants=('globex',))}"}
    body = (await api.get("/v1/audit/stats", params={"group_by": "tenant", **window}, headers=globex)).json()
    assert body["rows"] == [{"tenant": "globex", "count": 3}]
    models = (await api.get("/v1/entities/models", headers=globex)).json()  # the entity browser's, over all time
    assert models == [{"model": "resource", "entries": 3}]
    assert (await api.get("/v1/entities/models")).json() == [{"model": "resource", "entries": len(plan)}]
    body = (await api.get("/v1/audit/stats", params={"group_by": "model", **window}, headers=globex)).json()
    assert (body["rows"], body["source"]) == ([{"model": "resource", "count": 3}], "rollups")
    async with isolated.owner() as conn:  # the all-tenants table folds the same counts without the tenant
        everyone = await conn.fetch(
            "SELECT bucket, action, status, entries FROM audit_rollups_daily_all ORDER BY 1, 2, 3"
        )
        folded: Counter[tuple[Any, ...]] = Counter()
        for r in daily:
            folded[(r[0], r[2], r[5])] += r[6]
        assert {(r[0], r[1], r[2]): r[3] for r in everyone} == dict(folded)
        narrow = await conn.fetch("SELECT bucket, action, status, entries FROM audit_rollups_daily_all_actions")
        assert {(r[0], r[1], r[2]): r[3] for r in narrow} == dict(folded)  # the narrow table folds the same
        models = await conn.fetch(
            "SELECT bucket, entity_model, status, sum(entries) FROM audit_rollups_daily_all_models GROUP BY 1, 2, 3"
        )
        by_model: Counter[tuple[Any, ...]] = Counter()
        for r in daily:
            by_model[(r[0], r[3], r[5])] += r[6]
        assert {(r[0], r[1], r[2]): r[3] for r in models} == dict(by_model)

    # A rebuild folds the same daily rows.
    target = f"{isolated.name}_r"
    await replay(
        isolated.projector.model_copy(update={"db_schema": target, "group_id": f"{isolated.name}-replay"}),
        isolated.stack.owner_dsn,
        timeout_s=60,
    )
    async with isolated.owner() as conn:
        assert [tuple(r) for r in await conn.fetch(DAILY.format(schema=target))] == daily


async def _counted(isolated: Isolated, entries: int, outcomes: int) -> bool:
    return (await isolated.count("audit_entries"), await isolated.count("audit_outcomes")) == (entries, outcomes)


async def test_a_change_racing_the_compaction_keeps_its_day_counted_from_the_hourly_rows(
    isolated: Isolated, api: httpx.AsyncClient
) -> None:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    start = _past(action_event("res-1", action="create"), day + timedelta(hours=3))
    async with projector_running(isolated.projector):
        await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(start), key_of(start))])
        await eventually(lambda: _counted(isolated, 1, 0), within=30)
    window = {"since": (day - timedelta(days=1)).isoformat(), "until": (day + timedelta(days=2)).isoformat()}
    assert (await _stats(api, **window))["rows"] == [{"count": 1}]

    # A writer holds the markers, bumped, with one more hourly count, uncommitted, while the compaction reads the
    # markers and sums the hours; it commits while the compaction waits to delete a marker.
    async with isolated.owner() as writer:
        change = writer.transaction()
        await change.start()
        await writer.execute("UPDATE audit_rollups SET entries = entries + 1")
        await writer.execute("UPDATE audit_rollup_changes SET changes = changes + 1")
        await writer.execute("UPDATE audit_rollup_hour_changes SET changes = changes + 1")
        compaction = asyncio.create_task(compact_once(isolated.projector))
        await asyncio.sleep(1)
        assert not compaction.done()  # waiting for the marker's row lock
        await change.commit()
        assert await compaction == 1
        # The hour fold summed before the commit, so the hour's marker stays; the day fold ran after it and
        # counted the change, so it may delete the day's marker. Either way no fold is trusted without the change.
        assert await writer.fetchval("SELECT sum(entries) FROM audit_rollups_hourly_all") == 1
        assert await writer.fetchval("SELECT count(*) FROM audit_rollup_hour_changes") == 1
        daily = await writer.fetchval("SELECT sum(entries) FROM audit_rollups_daily_all")
        day_marked = await writer.fetchval("SELECT count(*) FROM audit_rollup_changes")
        assert daily == 2 or day_marked == 1
    assert (await _stats(api, **window))["rows"] == [{"count": 2}]  # that day from its hourly rows
    assert await compact_once(isolated.projector) == 1
    async with isolated.owner() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_rollup_changes") == 0
        assert await conn.fetchval("SELECT count(*) FROM audit_rollup_hour_changes") == 0
    assert (await _stats(api, **window))["rows"] == [{"count": 2}]  # now from the daily tier
