"""A publisher that knows only schemas/README.md (no audit_schemas) produces events we project."""

import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from audit_schemas.topics import CONTENT_TYPE
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


def _kcat_produce(bootstrap: str, topic: str, key: str, value: str, *extra: str) -> None:
    """Publish one record with kcat (librdkafka), as a team without our libraries would."""
    subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-H", f"content-type={CONTENT_TYPE}", *extra],
        input=f"{key}\t{value}\n".encode(),
        check=True,
        timeout=60,
    )


def _example_for(entity_id: str) -> tuple[str, str, str]:
    """The README's example for another entity: (audit id, key, one-line JSON)."""
    event = _documented_example()
    audit_id = str(uuid4())
    event["id"] = event["data"]["audit_id"] = audit_id
    event["traceparent"] = f"00-{audit_id.replace('-', '')}-5b8efff798038103-01"
    event["data"]["entity"]["id"] = entity_id
    key = f"{event['data']['tenant_id']}/resource/{entity_id}"
    event["partitionkey"] = key
    event["subject"] = f"resource/{entity_id}"
    return audit_id, key, json.dumps(event)


async def test_kcat_with_the_documented_partitioner_lands_where_our_producer_would(
    isolated: Isolated, projector: Any
) -> None:
    if shutil.which("kcat") is None:
        pytest.fail("kcat is missing: deploy/local/stack.sh up installs Debian's kcat package")
    partitions = list(range(isolated.projector.partitions))
    # A key for which librdkafka's default partitioner (CRC32) and Java's murmur2 disagree.
    entity = next(
        f"kc-{i}"
        for i in range(1000)
        if zlib.crc32(f"acme/resource/kc-{i}".encode()) % len(partitions)
        != DefaultPartitioner()(f"acme/resource/kc-{i}".encode(), partitions, partitions)
    )
    documented_id, key, value = _example_for(entity)
    _kcat_produce(
        isolated.stack.bootstrap, isolated.projector.audit_topic, key, value, "-X", "partitioner=murmur2_random"
    )
    default_id, _, default_value = _example_for(entity)
    _kcat_produce(isolated.stack.bootstrap, isolated.projector.audit_topic, key, default_value)
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:

        async def both() -> list[asyncpg.Record] | None:
            rows: list[asyncpg.Record] = await conn.fetch(
                f"SELECT audit_id::text AS id, kafka_partition FROM {isolated.name}.audit_entries"
            )
            return rows if len(rows) == 2 else None

        rows = {r["id"]: r["kafka_partition"] for r in await eventually(both)}
        dead = await conn.fetchval(f"SELECT count(*) FROM {isolated.name}.dead_letters")
    finally:
        await conn.close()
    assert dead == 0
    ours = DefaultPartitioner()(key.encode(), partitions, partitions)
    assert rows[documented_id] == ours, "partitioner=murmur2_random puts the key where Java and aiokafka do"
    assert rows[default_id] != ours, "librdkafka's default partitioner would split an entity's history"


@pytest.mark.parametrize("attribute", ["specversion", "type", "datacontenttype"])
def test_the_exported_schemas_require_what_the_projector_requires(attribute: str) -> None:
    for name in ("audit.action.v1", "audit.outcome.v1", "execution.log.v1"):
        schema = json.loads((README.parent / "json" / f"{name}.schema.json").read_text())
        assert attribute in schema["required"], name
