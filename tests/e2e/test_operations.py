"""The operator's way out of a blocked partition, redriving dead letters, and the metrics people alert on."""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from audit_schemas import encode
from tests.conftest import Isolated, free_port, projector_running, query_client
from tests.factories import action_event, key_of, read_topic, send_keyed
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _rows(isolated: Isolated, sql: str) -> list[asyncpg.Record]:
    async with isolated.owner() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(sql)
        return rows


async def _cli(isolated: Isolated, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"),
        *args,
        env=isolated.projector_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_an_operator_dead_letters_the_record_that_blocks_a_partition(isolated: Isolated) -> None:
    topic = isolated.projector.audit_topic
    before, after = action_event("before", tenant="ops"), action_event("after", tenant="ops")
    newer = json.loads(encode(action_event("from-the-future", tenant="ops")))
    newer["data"]["schema_version"] = 9
    key = key_of(before)
    placed = await send_keyed(
        isolated.stack.bootstrap,
        topic,
        [(encode(before), key), (json.dumps(newer).encode(), key), (encode(after), key)],
    )
    partition, offset = placed[1]
    port = free_port()
    settings = isolated.projector.model_copy(update={"health_port": port, "probe_interval_s": 0.3})
    async with projector_running(settings), httpx.AsyncClient() as client:

        async def blocked() -> dict[str, Any] | None:
            try:
                body: dict[str, Any] = (await client.get(f"http://127.0.0.1:{port}/readyz")).json()
            except httpx.TransportError:
                return None
            found: dict[str, Any] | None = body["blocked"].get(f"{topic}/{partition}")
            return found

        block = await eventually(blocked)
        assert (block["reason"], block["offset"]) == ("newer_schema", offset)
        code, out = await _cli(isolated, "skip", "--topic", topic, "--partition", str(partition), "--offset", "0",
                               "--reason", "x")  # fmt: skip
        assert code == 1, "the partition is already past offset 0"
        assert "already past" in out
        # One past the block: a valid record, not the one blocking. Refused with the blocked offset, exit 2.
        code, out = await _cli(isolated, "skip", "--topic", topic, "--partition", str(partition), "--offset",
                               str(offset + 1), "--reason", "typo")  # fmt: skip
        assert code == 2, out
        assert f"is blocked at offset {offset}" in out
        assert "--force" in out
        assert await _rows(isolated, "SELECT * FROM projector_skips") == []
        code, out = await _cli(isolated, "skip", "--topic", topic, "--partition", str(partition), "--offset",
                               str(offset), "--reason", "v9 producer deployed by mistake", "--by", "ada")  # fmt: skip
        assert code == 0, out

        async def projected_behind_it() -> bool:
            rows = await _rows(isolated, "SELECT entity_id FROM audit_entries")
            return {r["entity_id"] for r in rows} == {"before", "after"}

        await eventually(projected_behind_it)
    [letter] = await _rows(isolated, "SELECT reason, detail, kafka_offset FROM dead_letters")
    assert (letter["reason"], letter["kafka_offset"]) == ("operator_skip", offset)
    assert letter["detail"] == "skipped by ada: v9 producer deployed by mistake"
    assert await _rows(isolated, "SELECT * FROM projector_blocks") == []


async def test_redrive_republishes_dead_letters_to_their_source_once(isolated: Isolated, tmp_path: Path) -> None:
    topic = isolated.projector.audit_topic
    typo = action_event("typo")
    wrong = json.loads(encode(typo))
    wrong["data"]["action"] = "updte"
    broken = json.dumps(wrong).encode()
    stale = action_event("unchanged")
    bad_json = b'{"not": "a cloudevent"}'
    await send_keyed(
        isolated.stack.bootstrap, topic, [(broken, key_of(typo)), (bad_json, b"acme/resource/x"), (encode(stale), None)]
    )
    async with projector_running(isolated.projector):

        async def two_letters() -> bool:
            return len(await _rows(isolated, "SELECT 1 FROM dead_letters")) == 2

        await eventually(two_letters)
        [letter] = await _rows(
            isolated, "SELECT kafka_partition, kafka_offset FROM dead_letters WHERE reason = 'unknown_action'"
        )
        coordinates = ["--topic", topic, "--partition", str(letter[0]), "--offset", str(letter[1])]

        still_broken, fixed = tmp_path / "broken.json", tmp_path / "fixed.json"
        await asyncio.to_thread(still_broken.write_bytes, b'{"still": "broken"}')
        await asyncio.to_thread(fixed.write_bytes, encode(typo))
        code, out = await _cli(isolated, "redrive", *coordinates, "--value-file", str(still_broken))
        assert code == 1, "a fix that would be refused again is not sent"
        assert "refused again" in out
        code, out = await _cli(isolated, "redrive", *coordinates, "--value-file", str(fixed), "--note", "typo")
        assert code == 0, out
        code, out = await _cli(isolated, "redrive", *coordinates)
        assert code == 1, "each dead letter is redriven once"

        async def fixed_projected() -> bool:
            return "typo" in {r[0] for r in await _rows(isolated, "SELECT entity_id FROM audit_entries")}

        await eventually(fixed_projected)
        code, out = await _cli(isolated, "redrive", "--reason", "invalid_envelope", "--dry-run")
        assert code == 0, out
        assert "would redrive" in out
        code, out = await _cli(isolated, "redrive", "--all")
        assert code == 0, out
        assert "1 dead letter(s): redrove" in out

        async def dead_again() -> bool:
            return len(await _rows(isolated, "SELECT 1 FROM dead_letters")) == 3

        await eventually(dead_again)
    redrives = await _rows(isolated, "SELECT fixed, note, new_offset FROM redrives ORDER BY redriven_at")
    assert [(r["fixed"], r["note"]) for r in redrives] == [(True, "typo"), (False, None)]
    published = await read_topic(isolated.stack.bootstrap, topic)
    redriven = {
        dict(r.headers)["audit.redrive.fixed"]: r for r in published if "audit.redrive.source" in dict(r.headers)
    }
    assert set(redriven) == {b"true", b"false"}
    assert redriven[b"true"].value == encode(typo)
    assert redriven[b"false"].value == bad_json


async def test_metrics_are_scraped_from_both_services(isolated: Isolated, api: httpx.AsyncClient) -> None:
    bad = b"not json"
    event = action_event("counted")
    await send_keyed(
        isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(event), key_of(event)), (bad, None)]
    )
    port = free_port()
    settings = isolated.projector.model_copy(update={"health_port": port, "probe_interval_s": 0.3})
    async with projector_running(settings), httpx.AsyncClient() as client:

        async def scraped() -> str | None:
            try:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                return None
            return text if 'reason="invalid_json"' in text and "audit_projector_lag_records{" in text else None

        text = await eventually(scraped)
    for name in (
        "audit_projector_records_total",
        "audit_projector_dead_letters_total",
        "audit_projector_batch_records_bucket",
        "audit_projector_batch_duration_seconds_bucket",
        "audit_projector_lag_records",
        "audit_projector_seconds_since_last_batch",
        "audit_projector_blocked_partitions",
        "audit_projector_ready",
    ):
        assert name in text, name
    assert (await api.get("/v1/audit")).status_code == 200
    assert (await api.get("/v1/audit/not-a-uuid")).status_code == 422
    query_metrics = (await api.get("/metrics")).text
    assert 'audit_query_request_duration_seconds_count{method="GET",route="/v1/audit",status="200"}' in query_metrics
    assert 'route="/v1/audit/{audit_id}",status="422"' in query_metrics


async def test_metrics_can_require_their_own_bearer_token(isolated: Isolated) -> None:
    settings = isolated.query.model_copy(update={"metrics_token": SecretStr("scrape-" + "s" * 32)})
    reader = await isolated.token(("audit:read", "audit:admin"))
    async with query_client(settings) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
        wrong = await anonymous.get("/metrics", headers={"authorization": "Bearer scrape-wrong"})
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        # An API credential is not the scrape token: /metrics has its own secret.
        assert (await anonymous.get("/metrics", headers={"authorization": f"Bearer {reader}"})).status_code == 401
        ok = await anonymous.get("/metrics", headers={"authorization": "Bearer scrape-" + "s" * 32})
        assert ok.status_code == 200
        assert "audit_query_request_duration_seconds" in ok.text
    closed = isolated.query.model_copy(update={"public_metrics": False})
    async with query_client(closed) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
        assert (await anonymous.get("/metrics", headers={"authorization": f"Bearer {reader}"})).status_code == 200
