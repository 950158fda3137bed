"""Bad records go to the dead-letter topic and the projector keeps going; newer schemas stop a partition."""

import json
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from audit_schemas import encode, kafka_headers
from tests.conftest import Isolated, free_port, projector_running
from tests.factories import action_event, key_of, log_event, send_keyed, send_raw
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:

        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            return len(records) >= expected

        await eventually(enough, within=30)
    finally:
        await consumer.stop()
    return records


async def _entity_ids(isolated: Isolated) -> set[str]:
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:
        rows = await conn.fetch(f"SELECT entity_id FROM {isolated.name}.audit_entries")
    finally:
        await conn.close()
    return {r["entity_id"] for r in rows}


async def test_poison_is_dead_lettered_and_valid_events_behind_it_are_projected(
    isolated: Isolated, projector: Any, api: httpx.AsyncClient
) -> None:
    wrong_schema = json.loads(encode(action_event("bad-schema")))
    del wrong_schema["data"]["actor"]
    unknown_action = json.loads(encode(action_event("bad-action")))
    unknown_action["data"]["action"] = "teleport"
    topic = isolated.projector.audit_topic
    await send_raw(
        isolated.stack.bootstrap,
        topic,
        [
            (b"{this is not json", 0),
            (encode(action_event("ok-1")), 0),
            (json.dumps(wrong_schema).encode(), 0),
            (json.dumps(unknown_action).encode(), 0),
            (encode(action_event("ok-2")), 0),
        ],
    )

    async def both_projected() -> bool:
        return {"ok-1", "ok-2"} <= await _entity_ids(isolated)

    await eventually(both_projected)
    assert await _entity_ids(isolated) == {"ok-1", "ok-2"}

    letters = await _read_all(isolated.stack.bootstrap, isolated.projector.dead_letter_topic, 3)
    assert len(letters) == 3
    headers = [dict(r.headers) for r in letters]
    assert [h["dlq.reason"] for h in headers] == [b"invalid_json", b"schema_validation", b"unknown_action"]
    assert [h["dlq.source.offset"] for h in headers] == [b"0", b"2", b"3"]
    assert all(h["dlq.source.topic"] == topic.encode() and h["dlq.source.partition"] == b"0" for h in headers)
    assert b"actor" in headers[1]["dlq.detail"]
    assert letters[0].value == b"{this is not json", "the original bytes are kept"
    assert letters[0].key == b"acme/resource/x"

    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:
        stored = await conn.fetch(f"SELECT reason, kafka_offset FROM {isolated.name}.dead_letters ORDER BY 2")
    finally:
        await conn.close()
    assert [(r["reason"], r["kafka_offset"]) for r in stored] == [
        ("invalid_json", 0),
        ("schema_validation", 2),
        ("unknown_action", 3),
    ]
    assert (await api.get("/readyz")).status_code == 200


async def test_newer_schema_stops_its_partition_and_flips_readiness(isolated: Isolated, api: httpx.AsyncClient) -> None:
    port = free_port()
    settings = isolated.projector.model_copy(update={"health_port": port})
    async with projector_running(settings):
        await _block_on_newer_schema(isolated, api, port)
    # A restart without an upgrade stops at the same event again: nothing is skipped.
    async with projector_running(settings):
        await eventually(lambda: _projector_blocked(port))
        assert await _entity_ids(isolated) == {"before", "other-partition"}


async def _projector_blocked(port: int) -> bool:
    async with httpx.AsyncClient() as client:
        try:
            response = await client.get(f"http://127.0.0.1:{port}/readyz")
        except httpx.TransportError:
            return False
    return response.status_code == 503 and bool(response.json()["blocked"])


async def _block_on_newer_schema(isolated: Isolated, api: httpx.AsyncClient, port: int) -> None:
    newer = json.loads(encode(action_event("from-the-future")))
    newer["data"]["schema_version"] = 4
    newer["data"]["new_field"] = "unknown to this projector"
    topic = isolated.projector.audit_topic
    await send_raw(
        isolated.stack.bootstrap,
        topic,
        [
            (encode(action_event("before")), 1),
            (json.dumps(newer).encode(), 1),
            (encode(action_event("behind-the-block")), 1),
            (encode(action_event("other-partition")), 2),
        ],
    )

    async def degraded() -> dict[str, Any] | None:
        response = await api.get("/readyz")
        assert response.status_code == 200, "a blocked partition does not take the read API out of service"
        return response.json() if response.json()["status"] == "degraded" else None

    body = await eventually(degraded)
    [block] = body["checks"]["blocked_partitions"]
    assert (block["topic"], block["partition"], block["offset"]) == (topic, 1, 1)
    assert block["schema_version"] == "4"
    await eventually(lambda: _has(isolated, {"before", "other-partition"}))
    assert await _entity_ids(isolated) == {"before", "other-partition"}, "nothing behind the newer event"

    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:
        offset = await conn.fetchval(
            f"SELECT next_offset FROM {isolated.name}.projector_offsets WHERE topic = $1 AND partition = 1", topic
        )
        dead = await conn.fetchval(f"SELECT count(*) FROM {isolated.name}.dead_letters")
    finally:
        await conn.close()
    assert offset == 1, "the stored offset waits on the newer event for an upgraded projector"
    assert dead == 0, "a newer schema is not poison"
    async with httpx.AsyncClient() as client:
        own = (await client.get(f"http://127.0.0.1:{port}/readyz")).json()
    assert own["ready"] is False
    assert own["blocked"][f"{topic}/1"]["offset"] == 1
    assert own["blocked"][f"{topic}/1"]["reason"] == "newer_schema"


async def _has(isolated: Isolated, wanted: set[str]) -> bool:
    return wanted <= await _entity_ids(isolated)


def test_headers_name_the_content_type() -> None:
    event = action_event("x")
    assert dict(kafka_headers(event))["content-type"] == b"application/cloudevents+json; charset=UTF-8"


async def test_redelivered_events_are_a_no_op(isolated: Isolated, projector: Any) -> None:
    """The same event published three times (a producer retry, a replayed batch) is one row."""
    event = encode(action_event("once"))
    await send_raw(isolated.stack.bootstrap, isolated.projector.audit_topic, [(event, 0), (event, 3), (event, 0)])
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:

        async def consumed() -> bool:
            stored = await conn.fetchval(
                f"SELECT coalesce(sum(next_offset), 0) FROM {isolated.name}.projector_offsets WHERE topic = $1",
                isolated.projector.audit_topic,
            )
            return bool(stored == 3)

        await eventually(consumed)
        count = await conn.fetchval(f"SELECT count(*) FROM {isolated.name}.audit_entries")
    finally:
        await conn.close()
    assert count == 1


async def test_a_log_line_without_a_tenant_is_dead_lettered_not_stored_unseen(
    isolated: Isolated, projector: Any
) -> None:
    start = action_event("tenantless")
    orphan = log_event(start, "no tenant in the trace context")
    orphan = orphan.model_copy(update={"data": orphan.data.model_copy(update={"tenant_id": None})})
    tagged = log_event(start, "with its tenant")
    await send_keyed(
        isolated.stack.bootstrap,
        isolated.projector.execution_log_topic,
        [(encode(orphan), key_of(orphan)), (encode(tagged), key_of(tagged))],
    )

    async def letters() -> list[asyncpg.Record] | None:
        async with isolated.owner() as conn:
            found = await conn.fetch("SELECT reason, detail FROM dead_letters")
            stored = await conn.fetch("SELECT message FROM execution_logs")
        return found if found and stored else None

    [letter] = await eventually(letters)
    assert letter["reason"] == "no_tenant"
    assert "no reader could see it" in letter["detail"]
    async with isolated.owner() as conn:
        assert [r["message"] for r in await conn.fetch("SELECT message FROM execution_logs")] == ["with its tenant"]
