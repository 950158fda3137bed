"""All 13 actions through producer → Kafka → projector → Postgres → query API, checked field by field."""

import asyncio
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import structlog

from audit_producer import Action, Actor, AuditProducer, Entity, RequestContext, add_trace_context, run_in_executor
from audit_query.config import Settings
from audit_query.main import create_app
from tests.conftest import Isolated
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ALICE = Actor.user("u-alice", "Alice Archer")
BOB = Actor.user("u-bob", "bob builder")  # lower-case on purpose: the user sort ignores case
CAROL = Actor.user("u-carol", "Carol Chen")
CI = Actor.service_account("sa-ci", "CI Deployer")
SCHEDULER = Actor.system("scheduler")
NOBODY = Actor.system()
# Ascending "user" order: people and service accounts by name, case-insensitively, then system actions.
USER_RANK = {"u-alice": 0, "u-bob": 1, "u-carol": 2, "sa-ci": 3, None: 4, "scheduler": 5}

RESOURCE = Entity(id="res-42", model="resource")
TEMPLATE = Entity(id="tmpl-7", model="template")
INTEGRATION = Entity(id="int-gh", model="integration")

PLAN: list[tuple[Action, Entity, Actor]] = [
    (Action.CREATE, RESOURCE, ALICE),
    (Action.UPDATE, RESOURCE, BOB),
    (Action.DRYRUN, RESOURCE, CI),
    (Action.APPROVE, RESOURCE, CAROL),
    (Action.EXECUTE, RESOURCE, CI),
    (Action.REJECT, TEMPLATE, CAROL),
    (Action.SYNC, INTEGRATION, SCHEDULER),
    (Action.DISABLE, INTEGRATION, ALICE),
    (Action.ENABLE, INTEGRATION, NOBODY),
    (Action.RETRY, RESOURCE, CI),
    (Action.DESTROY, RESOURCE, BOB),
    (Action.RECREATE, RESOURCE, ALICE),
    (Action.DELETE, TEMPLATE, BOB),
]


class PolicyViolation(RuntimeError):
    """Raised inside the reject action so its outcome is a failure."""


def _thread_step(logger: logging.Logger) -> str:
    logger.info("thread step done")
    return "ok"


async def _remote_step(isolated: Isolated, traceparent: str, tracestate: str | None) -> None:
    worker = Path(__file__).with_name("remote_worker.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(worker), traceparent, tracestate or "", isolated.stack.bootstrap,
        isolated.producer.audit_topic, isolated.producer.execution_log_topic,
    )  # fmt: skip
    assert await asyncio.wait_for(proc.wait(), 60) == 0


@pytest.fixture
def shipped_logging(audit: AuditProducer) -> Any:
    """structlog and a stdlib logger wired to ship execution logs; restored afterwards."""
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            add_trace_context,
            audit.logs,
            structlog.processors.KeyValueRenderer(),
        ],
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    stdlib = logging.getLogger(f"e2e.{id(audit)}")
    stdlib.setLevel(logging.INFO)
    handler = audit.logs.handler()
    stdlib.addHandler(handler)
    yield stdlib
    stdlib.removeHandler(handler)
    structlog.reset_defaults()


async def _perform(audit: AuditProducer, isolated: Isolated, stdlib: logging.Logger) -> dict[str, dict[str, Any]]:
    """Run the plan; return what each action should look like in the API, by audit id."""
    log = structlog.get_logger().bind(logger="resource_service")
    expected: dict[str, dict[str, Any]] = {}
    revision = 0
    log.info("before any action: untagged")
    for index, (action, entity, actor) in enumerate(PLAN):
        request = RequestContext(request_id=f"req-{index}", client_ip="10.1.2.3", user_agent="pytest/e2e")
        failed = action is Action.REJECT
        try:
            async with audit.action(
                action, entity=entity, actor=actor, tenant="acme", request=request, correlation_id="wf-1"
            ) as act:
                expected[str(act.audit_id)] = {"action": action, "entity": entity, "actor": actor, "index": index}
                log.info("step", n=index)
                if action is Action.UPDATE:
                    act.change("replicas", 1, 3)
                    act.change("owner", None, "team-a")
                if action is Action.EXECUTE:
                    assert await run_in_executor(None, _thread_step, stdlib) == "ok"
                    await _remote_step(isolated, act.traceparent, act.tracestate)
                if failed:
                    raise PolicyViolation("missing owner tag")
                revision += 1
                act.revision = revision
                expected[str(act.audit_id)]["revision"] = revision
        except PolicyViolation:
            assert failed
        await asyncio.sleep(0.002)  # distinct timestamps keep the expected time order unambiguous
    return expected


async def _all_pages(api: httpx.AsyncClient, path: str, params: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        response = await api.get(path, params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["data"]) <= limit
        rows.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pagination did not end")


async def test_all_actions_end_to_end(
    isolated: Isolated, audit: AuditProducer, projector: Any, api: httpx.AsyncClient, shipped_logging: logging.Logger
) -> None:
    expected = await _perform(audit, isolated, shipped_logging)
    assert len(expected) == 13

    async def all_finished() -> list[dict[str, Any]] | None:
        body = (await api.get("/v1/audit", params={"limit": 50})).json()
        done = [e for e in body["data"] if e["outcome"]["status"] != "in_progress"]
        return body["data"] if len(done) == 13 else None

    entries = await eventually(all_finished, within=60)
    by_id = {e["audit_id"]: e for e in entries}
    assert set(by_id) == set(expected)

    # Every field of every entry.
    for audit_id, want in expected.items():
        got = by_id[audit_id]
        actor: Actor = want["actor"]
        assert got["trace_id"] == audit_id.replace("-", "")
        assert got["event"] == want["action"].value
        assert got["tenant_id"] == "acme"
        assert got["entity"] == {"id": want["entity"].id, "model": want["entity"].model}
        assert got["user"] == {"type": actor.type.value, "id": actor.id, "display_name": actor.display_name}
        assert got["request"] == {
            "request_id": f"req-{want['index']}",
            "client_ip": "10.1.2.3",
            "user_agent": "pytest/e2e",
        }
        assert got["correlation_id"] == "wf-1"
        assert got["source"] == "test-service"
        datetime.fromisoformat(got["time"])
        outcome = got["outcome"]
        if want["action"] is Action.REJECT:
            assert outcome["status"] == "failed"
            assert outcome["error"] == {"type": "PolicyViolation", "message": "missing owner tag"}
            assert outcome["revision"] is None
        else:
            assert outcome["status"] == "succeeded"
            assert outcome["error"] is None
            assert outcome["revision"] == want["revision"]
        assert outcome["duration_ms"] >= 0
        if want["action"] is Action.UPDATE:
            assert outcome["changes"] == {
                "owner": {"before": None, "after": "team-a"},
                "replicas": {"before": 1, "after": 3},
            }
        else:
            assert outcome["changes"] is None

    order_by_time = sorted(expected, key=lambda a: expected[a]["index"])

    # Each filter.
    for action in Action:
        body = (await api.get("/v1/audit", params={"event": action.value})).json()
        assert [e["event"] for e in body["data"]] == [action.value]
    body = (await api.get("/v1/audit", params=[("event", "create"), ("event", "delete")])).json()
    assert sorted(e["event"] for e in body["data"]) == ["create", "delete"]
    body = (await api.get("/v1/audit", params={"user_id": "u-bob"})).json()
    assert sorted(e["event"] for e in body["data"]) == ["delete", "destroy", "update"]
    body = (await api.get("/v1/audit", params={"model": "integration"})).json()
    assert sorted(e["event"] for e in body["data"]) == ["disable", "enable", "sync"]
    body = (await api.get("/v1/audit", params={"entity_id": "tmpl-7"})).json()
    assert sorted(e["event"] for e in body["data"]) == ["delete", "reject"]
    body = (await api.get("/v1/audit", params={"actor_type": "system"})).json()
    assert sorted(e["event"] for e in body["data"]) == ["enable", "sync"]
    assert (await api.get("/v1/audit", params={"tenant": "other"})).json()["count"] == 0
    times = [by_id[a]["time"] for a in order_by_time]
    since, until = times[3], times[8]
    body = (await api.get("/v1/audit", params={"since": since, "until": until, "order": "asc"})).json()
    assert [e["audit_id"] for e in body["data"]] == order_by_time[3:8]
    body = (await api.get("/v1/audit", params={"model": "resource", "user_id": "sa-ci", "event": "retry"})).json()
    assert [e["event"] for e in body["data"]] == ["retry"]

    # Each sort, both ways, across pages of 4 with no gaps or repeats.
    def time_key(a: str) -> tuple[Any, ...]:
        return (datetime.fromisoformat(by_id[a]["time"]), a)

    sort_keys = {
        "time": time_key,
        "user": lambda a: (USER_RANK[by_id[a]["user"]["id"]], *time_key(a)),
        "event": lambda a: (by_id[a]["event"], *time_key(a)),
    }
    for sort, key in sort_keys.items():
        for order in ("asc", "desc"):
            rows = await _all_pages(api, "/v1/audit", {"sort": sort, "order": order}, limit=4)
            ids = [r["audit_id"] for r in rows]
            assert len(ids) == len(set(ids)) == 13, (sort, order)
            assert ids == sorted(expected, key=key, reverse=order == "desc"), (sort, order)

    # Entity view: every action on the resource, oldest first, revisions increasing.
    history = await _all_pages(api, "/v1/entities/resource/res-42/audit", {"tenant": "acme"}, limit=3)
    assert [h["audit_id"] for h in history] == [a for a in order_by_time if expected[a]["entity"] == RESOURCE]
    revisions = [h["outcome"]["revision"] for h in history]
    assert revisions == sorted(revisions)

    # Entry detail and trace view: the execute action's logs from this task, a thread and another process.
    execute_id = next(a for a in expected if expected[a]["action"] is Action.EXECUTE)

    async def execute_logs() -> dict[str, Any] | None:
        detail = (await api.get(f"/v1/audit/{execute_id}")).json()
        return detail if len(detail["logs"]) >= 3 else None

    detail = await eventually(execute_logs, within=30)
    messages = [line["message"] for line in detail["logs"]]
    assert messages == ["step", "thread step done", "remote step ran"]
    assert detail["logs"][0]["fields"]["n"] == 4
    assert detail["logs"][2]["fields"]["step"] == "provision"
    assert detail["logs"][2]["source"] == "remote-worker"
    assert detail["logs"][2]["process"] != detail["logs"][0]["process"]
    assert [line["time"] for line in detail["logs"]] == sorted(line["time"] for line in detail["logs"])
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:
        tenants = await conn.fetch(
            f"SELECT DISTINCT tenant_id FROM {isolated.name}.execution_logs WHERE trace_id = $1", UUID(execute_id)
        )
    finally:
        await conn.close()
    assert [r["tenant_id"] for r in tenants] == ["acme"], "lines from the task, a thread and a process carry the tenant"
    trace = (await api.get(f"/v1/traces/{execute_id.replace('-', '')}")).json()
    assert trace["entry"] == detail["entry"]
    assert [line["log_id"] for line in trace["logs"]] == [line["log_id"] for line in detail["logs"]]
    # Lines written outside any action were neither tagged nor shipped.
    for audit_id in expected:
        lines = (await api.get(f"/v1/audit/{audit_id}")).json()["logs"]
        assert all("untagged" not in line["message"] and "not shipped" not in line["message"] for line in lines)


async def test_pagination_is_stable_while_new_events_arrive(
    audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    entity = Entity(id="busy", model="resource")
    original = []
    for _ in range(30):
        async with audit.action("sync", entity=entity, actor=SCHEDULER, tenant="acme") as act:
            original.append(str(act.audit_id))

    async def projected() -> bool:
        return bool((await api.get("/v1/audit", params={"limit": 100})).json()["count"] == 30)

    await eventually(projected)
    for order in ("asc", "desc"):
        snapshot_body = (await api.get("/v1/audit", params={"order": order, "limit": 500})).json()
        snapshot = [e["audit_id"] for e in snapshot_body["data"]]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"order": order, "limit": 7, "sort": "time"}
            if cursor:
                params["cursor"] = cursor
            body = (await api.get("/v1/audit", params=params)).json()
            seen.extend(e["audit_id"] for e in body["data"])
            cursor = body["next_cursor"]
            # Three new actions land (and are projected) between every two pages.
            before = (await api.get("/v1/audit", params={"limit": 500})).json()["count"]
            for _ in range(3):
                async with audit.action("sync", entity=entity, actor=SCHEDULER, tenant="acme"):
                    pass

            async def landed(before: int = before) -> bool:
                return bool((await api.get("/v1/audit", params={"limit": 500})).json()["count"] == before + 3)

            await eventually(landed)
            if cursor is None:
                break
        assert len(seen) == len(set(seen)), "a row was served twice"
        if order == "desc":
            assert seen == snapshot, "desc pages hold exactly the rows at or before page one"
        else:
            assert seen[: len(snapshot)] == snapshot, "asc pages keep every earlier row, in order, before new ones"
            assert len(seen) > len(snapshot), "rows that arrive while paging forward are reached"
    assert set(original) <= set(snapshot)


async def test_unknown_after_configured_time(
    isolated: Isolated, audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    """An action with no outcome yet is in progress; past the configured time it shows as unknown."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def long_action() -> str:
        async with audit.action("execute", entity=RESOURCE, actor=CI, tenant="acme") as act:
            entered.set()
            await release.wait()
            return str(act.audit_id)

    task = asyncio.create_task(long_action())
    await entered.wait()

    async def in_progress() -> dict[str, Any] | None:
        body = (await api.get("/v1/audit")).json()
        return body["data"][0] if body["count"] else None

    entry = await eventually(in_progress)
    assert entry["outcome"] == {
        "status": "in_progress", "error": None, "revision": None, "changes": None, "finished_at": None,
        "duration_ms": None, "unrecorded": None,
    }  # fmt: skip
    # The query API of a deployment whose cut-off has passed reports it as unknown.
    short = Settings(**{**isolated.query.model_dump(), "unknown_after_s": 0.001})
    app = create_app(short)
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": f"Bearer {await isolated.token()}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c,
    ):
        await asyncio.sleep(0.01)
        body = (await c.get("/v1/audit")).json()
        assert body["data"][0]["outcome"]["status"] == "unknown"
    release.set()
    audit_id = await task

    async def finished() -> bool:
        return bool((await api.get(f"/v1/audit/{audit_id}")).json()["entry"]["outcome"]["status"] == "succeeded")

    await eventually(finished)
