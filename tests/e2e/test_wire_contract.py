"""A publisher that knows only schemas/README.md (no audit_schemas) produces events we project."""

import json
import re
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.conftest import Isolated
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

README = Path(__file__).resolve().parents[2] / "schemas" / "README.md"


def _documented_example() -> dict[str, Any]:
    match = re.search(r"## Example \(action started\)\s+```json\n(.*?)```", README.read_text(), re.S)
    assert match, "schemas/README.md lost its example"
    example: dict[str, Any] = json.loads(match.group(1))
    return example


async def test_the_documented_example_is_accepted(isolated: Isolated, projector: Any) -> None:
    event = _documented_example()
    audit_id = str(uuid4())
    event["id"] = event["data"]["audit_id"] = audit_id
    event["traceparent"] = f"00-{audit_id.replace('-', '')}-5b8efff798038103-01"
    data = event["data"]
    key = f"{data['tenant_id']}/{data['entity']['model']}/{data['entity']['id']}"
    assert event["partitionkey"] == key, "the README's key rule and its example agree"
    producer = AIOKafkaProducer(bootstrap_servers=isolated.stack.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(
            isolated.projector.audit_topic,
            json.dumps(event).encode(),
            key=key.encode(),
            headers=[("content-type", b"application/cloudevents+json; charset=UTF-8")],
        )
    finally:
        await producer.stop()
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:

        async def projected() -> asyncpg.Record | None:
            row: asyncpg.Record | None = await conn.fetchrow(
                f"SELECT * FROM {isolated.name}.audit_entries WHERE audit_id = $1", UUID(audit_id)
            )
            return row

        row = await eventually(projected)
        dead = await conn.fetchval(f"SELECT count(*) FROM {isolated.name}.dead_letters")
    finally:
        await conn.close()
    assert dead == 0
    assert (row["action"], row["entity_id"], row["actor_display_name"]) == ("execute", "res-42", "Ada Lovelace")
    assert str(row["client_ip"]) == "203.0.113.9"
