"""No action without its record: hostile inputs, the outcome spool, aborted starts and fail-open, on a real broker."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from audit_producer import (
    Actor,
    AuditProducer,
    Entity,
    InvalidActionError,
    OutcomeNotRecordedError,
    PublishError,
)
from audit_producer.config import Settings
from tests.conftest import Isolated, broker_frozen
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ENTITY = Entity(id="r-1", model="resource")
ACTOR = Actor.user("u-1", "Ada")


class BodyError(Exception):
    """The caller's own exception."""


def _settings(isolated: Isolated, spool: Path, **overrides: Any) -> Settings:
    return isolated.producer.model_copy(update={"spool_dir": spool, "publish_timeout_s": 1.5, **overrides})


@contextlib.asynccontextmanager
async def _producer(settings: Settings, source: str = "durable-service") -> AsyncIterator[AuditProducer]:
    async with AuditProducer(source, settings) as audit:
        yield audit


async def _entry(api: httpx.AsyncClient, audit_id: UUID, status: str, within: float = 45) -> dict[str, Any]:
    async def recorded() -> dict[str, Any] | None:
        response = await api.get(f"/v1/audit/{audit_id}")
        if response.status_code != 200:
            return None
        entry: dict[str, Any] = response.json()["entry"]
        return entry if entry["outcome"]["status"] == status else None

    return await eventually(recorded, within=within, interval=0.2)


async def test_hostile_values_are_recorded_with_markers_and_the_callers_exception_is_kept(
    isolated: Isolated, projector: Any, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    async with _producer(_settings(isolated, tmp_path)) as audit:
        for bad in ({"tenant": "ac\x00me"}, {"tenant": "acme", "correlation_id": "c\ud800"}):
            with pytest.raises(InvalidActionError):
                async with audit.action("update", entity=ENTITY, actor=ACTOR, **bad):  # type: ignore[arg-type]
                    pytest.fail("the body must not run when the action itself is invalid")

        async with audit.action("update", entity=ENTITY, actor=ACTOR, tenant="acme") as ok:
            ok.change("blob", None, "x" * 2_000_000)  # over the broker's message size on its own
            ok.change("huge", 0, 1 << 20_000)  # an integer over Python's 4,300-digit printing limit
            ok.change(("tuple", "key"), 1, 2)  # a non-string key
            ok.change("surrogate", "\ud800", "fine")
            ok.change("when", datetime(2026, 1, 2, tzinfo=UTC), Decimal("19.99"))
            ok.revision = 2**63

        raised = BodyError("boom \ud800 with a lone surrogate")
        with pytest.raises(BodyError) as caught:
            async with audit.action("delete", entity=ENTITY, actor=ACTOR, tenant="acme") as failing:
                raise raised
        assert caught.value is raised, "the caller's own exception, unchanged"

        long_name = type("E" * 300, (Exception,), {})
        with pytest.raises(long_name):
            async with audit.action("execute", entity=ENTITY, actor=ACTOR, tenant="acme") as odd:
                raise long_name("odd")

        async def cancelled_body() -> None:
            async with audit.action("sync", entity=ENTITY, actor=ACTOR, tenant="acme") as c:
                holder.append(c.audit_id)
                await asyncio.sleep(60)

        holder: list[UUID] = []
        task = asyncio.create_task(cancelled_body())
        await eventually(lambda: _true(bool(holder)))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    entry = await _entry(api, ok.audit_id, "succeeded")
    outcome = entry["outcome"]
    assert outcome["changes"]["when"] == {"before": "2026-01-02T00:00:00+00:00", "after": "19.99"}
    assert outcome["changes"]["('tuple', 'key')"] == {"before": 1, "after": 2}
    assert "over the 65536-byte limit" in outcome["changes"]["blob"]["after"]["$unrecorded"]
    assert "too large" in outcome["changes"]["huge"]["after"]["$unrecorded"]
    assert "surrogate" in outcome["changes"]["surrogate"]["before"]["$unrecorded"]
    assert outcome["revision"] is None
    assert set(outcome["unrecorded"]) >= {"revision", "changes.blob.after", "changes.huge.after"}
    failed = (await _entry(api, failing.audit_id, "failed"))["outcome"]["error"]
    assert failed["type"] == "BodyError"
    assert "\\ud800" in failed["message"]
    assert (await _entry(api, odd.audit_id, "failed"))["outcome"]["error"]["type"] == "E" * 256
    assert (await _entry(api, holder[0], "failed"))["outcome"]["error"]["type"] == "CancelledError"


async def _true(value: bool) -> bool:
    return value


async def test_outcomes_during_an_outage_are_spooled_and_delivered_also_after_a_restart(
    isolated: Isolated, projector: Any, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The broker stops answering while bodies run: their outcomes wait in the spool, the callers get no error,
    and a process stopped before the broker came back leaves them for the next process to deliver."""
    settings = _settings(isolated, tmp_path, stop_timeout_s=1)
    ids: list[UUID] = []
    first = AuditProducer("durable-service", settings)
    await first.start()
    with contextlib.ExitStack() as outage:
        for i in range(2):
            async with first.action(
                "update", entity=Entity(id=f"s-{i}", model="resource"), actor=ACTOR, tenant="acme"
            ) as act:
                ids.append(act.audit_id)
                if i == 0:
                    outage.enter_context(broker_frozen(isolated.stack))  # the start was acknowledged just before
            if i == 0:
                assert first.health()["spool_records"] == 1, "the outcome waits in the spool; the caller got no error"
                break
        await first.stop()  # still frozen: the record stays on disk
    assert first.health()["spool_records"] == 1
    async with _producer(settings) as second:
        await eventually(lambda: _true(second.health()["spool_records"] == 0), within=45)
        async with second.action("enable", entity=ENTITY, actor=ACTOR, tenant="acme") as later:
            pass
    assert (await _entry(api, ids[0], "succeeded"))["outcome"]["status"] == "succeeded"
    assert (await _entry(api, later.audit_id, "succeeded"))["outcome"]["status"] == "succeeded"


async def test_a_start_that_was_not_acknowledged_is_recorded_as_aborted(
    isolated: Isolated, projector: Any, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ran = False
    async with _producer(_settings(isolated, tmp_path)) as audit:
        with broker_frozen(isolated.stack), pytest.raises(PublishError):
            async with audit.action("destroy", entity=ENTITY, actor=ACTOR, tenant="acme"):
                ran = True
        assert not ran, "fail-closed: no body without its acknowledged start"
        await eventually(lambda: _true(audit.health()["spool_records"] == 0), within=45)
    body = (await api.get("/v1/audit", params={"event": "destroy"})).json()

    async def aborted() -> dict[str, Any] | None:
        page = (await api.get("/v1/audit", params={"event": "destroy"})).json()
        return page if page["count"] == 1 and page["data"][0]["outcome"]["status"] == "aborted" else None

    body = await eventually(aborted, within=30)
    assert body["data"][0]["entity"]["id"] == "r-1"


async def test_fail_open_runs_bodies_during_an_outage_and_keeps_each_entitys_order(
    isolated: Isolated, projector: Any, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    settings = _settings(isolated, tmp_path, failure_mode="open")
    actions = ["create", "update", "enable", "disable", "delete"]
    ids: list[UUID] = []
    async with _producer(settings) as audit:
        with broker_frozen(isolated.stack):
            for action in actions:
                async with audit.action(
                    action, entity=Entity(id="open-1", model="resource"), actor=ACTOR, tenant="acme"
                ) as act:
                    ids.append(act.audit_id)
            health = audit.health()
            assert health["spool_records"] >= len(actions), "starts and outcomes waited in the spool"
            assert health["failure_mode"] == "open"
        await eventually(lambda: _true(audit.health()["spool_records"] == 0), within=45)

    async def all_done() -> list[dict[str, Any]] | None:
        page = (await api.get("/v1/entities/resource/open-1/audit")).json()
        rows: list[dict[str, Any]] = page.get("data", [])
        return rows if len(rows) == len(actions) and all(r["outcome"]["status"] == "succeeded" for r in rows) else None

    rows = await eventually(all_done, within=30)
    assert [r["event"] for r in rows] == actions, "the log holds them in the order they ran"
    assert [UUID(r["audit_id"]) for r in rows] == ids


async def test_callers_told_recorded_equal_actions_recorded_across_an_outage(
    isolated: Isolated, projector: Any, tmp_path: Path
) -> None:
    """Actions run before, during and after a broker outage: every action a caller was told is recorded has
    a start and an outcome in the read model, and no action is left looking in progress (no ghosts)."""
    settings = _settings(isolated, tmp_path, publish_timeout_s=1)
    told: list[UUID] = []
    refused = 0
    async with _producer(settings) as audit:

        async def one(i: int) -> None:
            nonlocal refused
            try:
                async with audit.action(
                    "execute", entity=Entity(id=f"o-{i}", model="resource"), actor=ACTOR, tenant="acme"
                ) as act:
                    await asyncio.sleep(0.05)
                told.append(act.audit_id)
            except PublishError:
                refused += 1

        await asyncio.gather(*(one(i) for i in range(10)))
        with broker_frozen(isolated.stack):
            await asyncio.gather(*(one(i) for i in range(10, 20)))
        await asyncio.gather(*(one(i) for i in range(20, 30)))
        await eventually(lambda: _true(audit.health()["spool_records"] == 0), within=60)
    conn = await asyncpg.connect(isolated.stack.owner_dsn, server_settings={"search_path": isolated.name})
    try:

        async def settled() -> list[asyncpg.Record] | None:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT e.audit_id, o.status FROM audit_entries e LEFT JOIN audit_outcomes o USING (audit_id)"
            )
            return rows if len(rows) == 30 and all(r["status"] for r in rows) else None

        rows = await eventually(settled, within=45)
    finally:
        await conn.close()
    recorded = {r["audit_id"] for r in rows if r["status"] == "succeeded"}
    aborted = {r["audit_id"] for r in rows if r["status"] == "aborted"}
    assert recorded == set(told), "recorded == told recorded"
    assert len(aborted) == refused
    assert len(told) + refused == 30, "every caller got an answer"
    assert 0 < refused <= 10, "only actions started during the outage were refused"


async def test_an_outcome_neither_published_nor_spooled_is_a_named_error_with_the_audit_id(
    isolated: Isolated, tmp_path: Path
) -> None:
    settings = _settings(isolated, tmp_path, spool_enabled=False, publish_timeout_s=1)
    async with _producer(settings) as audit:
        with contextlib.ExitStack() as outage, pytest.raises(OutcomeNotRecordedError) as caught:
            async with audit.action("update", entity=ENTITY, actor=ACTOR, tenant="acme") as act:
                outage.enter_context(broker_frozen(isolated.stack))
        assert caught.value.audit_id == act.audit_id
        assert "its body did run" in str(caught.value)
        raised = BodyError("the caller's")
        seen: list[UUID] = []

        async def failing_during_an_outage() -> None:
            with contextlib.ExitStack() as outage:
                async with audit.action("update", entity=ENTITY, actor=ACTOR, tenant="acme") as act2:
                    seen.append(act2.audit_id)
                    outage.enter_context(broker_frozen(isolated.stack))
                    raise raised

        with pytest.raises(BodyError) as failed:
            await failing_during_an_outage()
        assert failed.value is raised, "the caller's exception, with the audit problem as a note"
        assert any(str(seen[0]) in note for note in failed.value.__notes__)
