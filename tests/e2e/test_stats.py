"""`GET /v1/audit/stats`: exact counts from the rollups (and the entries at the edges), checked by brute force."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from audit_producer import AuditProducer
from audit_projector.replay import replay
from audit_schemas import encode
from tests.conftest import Isolated, projector_running
from tests.e2e.test_search import all_entries, seed_history
from tests.factories import action_event, send_raw
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
