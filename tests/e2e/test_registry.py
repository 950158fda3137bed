"""One audit id, one entry; an outcome belongs to its start; entity history in the log's order."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from audit_schemas import ActionEvent, Actor, encode
from tests.conftest import Isolated
from tests.factories import action_event, key_of, outcome_event, read_topic, send_keyed
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _consumed(isolated: Isolated, total: int) -> bool:
    async with isolated.owner() as conn:
        stored = await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM projector_offsets WHERE topic = $1",
            isolated.projector.audit_topic,
        )
    return bool(stored == total)


def _resent(event: ActionEvent, **changes: Any) -> bytes:
    """The same start rebuilt by a publisher retrying: new envelope time and started_at, maybe other fields."""
    raw = json.loads(encode(event))
    later = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    raw["time"] = later
    raw["data"]["started_at"] = later
    for path, value in changes.items():
        node = raw["data"]
        *parents, last = path.split("__")
        for name in parents:
            node = node[name]
        node[last] = value
    return json.dumps(raw).encode()


async def test_resends_are_dropped_and_conflicting_duplicates_dead_lettered(
    isolated: Isolated, projector: Any, api: httpx.AsyncClient
) -> None:
    start = action_event("r-1", action="update", tenant="acme")
    key = key_of(start)
    done = outcome_event(start, revision=4)
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(start), key)])
    await eventually(lambda: _consumed(isolated, 1))
    records: list[tuple[bytes, bytes | None]] = [
        (_resent(start), key),  # identical but for its timestamps: dropped
        (_resent(start, actor={"type": "user", "id": "mallory"}), key),  # same id, another actor: conflict
        (_resent(start, tenant_id="globex"), b"globex/resource/r-1"),  # same id, another tenant: conflict
        (encode(done), key),
        (encode(done), key),  # the same outcome again: dropped
        (encode(outcome_event(start, status="failed")), key),  # a different outcome for the same id
    ]
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, records)
    await eventually(lambda: _consumed(isolated, 1 + len(records)))

    async with isolated.owner() as conn:
        entries = await conn.fetch("SELECT audit_id, tenant_id, actor_id FROM audit_entries")
        outcomes = await conn.fetch("SELECT status, revision FROM audit_outcomes")
        letters = await conn.fetch("SELECT reason, detail FROM dead_letters ORDER BY kafka_partition, kafka_offset")
        verdicts = await conn.fetchval("SELECT count(*) FROM record_verdicts WHERE verdict = 'duplicate'")
    assert [(r["audit_id"], r["tenant_id"]) for r in entries] == [(start.data.audit_id, "acme")]
    assert [(r["status"], r["revision"]) for r in outcomes] == [("succeeded", 4)]
    assert verdicts == 2, "each dropped re-send keeps its verdict apart from its leaf"
    assert sorted(r["reason"] for r in letters) == ["audit_id_conflict", "duplicate_audit_id", "duplicate_outcome"]
    conflict = next(r["detail"] for r in letters if r["reason"] == "audit_id_conflict")
    assert "acme/resource/r-1" in conflict
    assert "globex/resource/r-1" in conflict
    published = await read_topic(isolated.stack.bootstrap, isolated.projector.dead_letter_topic)
    assert len(published) == 3

    entry = (await api.get(f"/v1/audit/{start.data.audit_id}")).json()["entry"]
    assert entry["tenant_id"] == "acme"
    assert entry["outcome"]["revision"] == 4


async def test_an_outcome_from_another_tenant_cannot_close_an_action(isolated: Isolated, projector: Any) -> None:
    start = action_event("shared-id", tenant="acme")
    forged = json.loads(encode(outcome_event(start)))
    forged["data"]["tenant_id"] = "globex"
    wrong_entity = json.loads(encode(outcome_event(start)))
    wrong_entity["data"]["entity"]["id"] = "another"
    records: list[tuple[bytes, bytes | None]] = [
        (encode(start), key_of(start)),
        (json.dumps(forged).encode(), b"globex/resource/shared-id"),
        (json.dumps(wrong_entity).encode(), b"acme/resource/another"),
    ]
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, records)
    await eventually(lambda: _consumed(isolated, len(records)))
    async with isolated.owner() as conn:
        outcomes = await conn.fetchval("SELECT count(*) FROM audit_outcomes")
        reasons = [r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters")]
    assert outcomes == 0, "the action stays open: nobody else closed it"
    assert reasons == ["outcome_mismatch", "outcome_mismatch"]


async def test_an_outcome_before_its_start_is_kept_and_the_start_checked_against_it(
    isolated: Isolated, projector: Any, api: httpx.AsyncClient
) -> None:
    """A start that never reached Kafka (or arrives late) leaves its outcome standing; a later start must match."""
    start = action_event("late-start")
    other_tenant = json.loads(encode(start))
    other_tenant["data"]["tenant_id"] = "globex"
    await send_keyed(
        isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(outcome_event(start)), key_of(start))]
    )
    await eventually(lambda: _consumed(isolated, 1))
    records: list[tuple[bytes, bytes | None]] = [
        (json.dumps(other_tenant).encode(), b"globex/resource/late-start"),
        (encode(start), key_of(start)),
    ]
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, records)
    await eventually(lambda: _consumed(isolated, 3))
    async with isolated.owner() as conn:
        reasons = [r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters")]
    assert reasons == ["audit_id_conflict"]
    entry = (await api.get(f"/v1/audit/{start.data.audit_id}")).json()["entry"]
    assert entry["outcome"]["status"] == "succeeded"


async def test_entity_history_follows_the_log_not_the_clocks(
    isolated: Isolated, projector: Any, api: httpx.AsyncClient
) -> None:
    """Publishers' clocks disagree (the second event claims an earlier time): history keeps the log's order."""
    now = datetime.now(UTC)
    events = []
    for i, action in enumerate(["create", "update", "update", "enable"]):
        e = action_event("clocked", action=action)
        skew = timedelta(seconds=[0, -30, 5, -60][i])
        data = e.data.model_copy(update={"started_at": now + skew, "actor": Actor.user(f"u{i}")})
        events.append(e.model_copy(update={"time": now + skew, "data": data}))
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(e), key_of(e)) for e in events])
    await eventually(lambda: _consumed(isolated, len(events)))
    pages: list[str] = []
    cursor = None
    for _ in range(4):
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        body = (await api.get("/v1/entities/resource/clocked/audit", params=params)).json()
        pages += [row["audit_id"] for row in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == [str(e.data.audit_id) for e in events]
