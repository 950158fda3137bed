"""Resume exactly where it stopped: restarts, failed assignments, lost history, and SIGTERM in an outage."""

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from audit_projector.errors import ProjectorError
from audit_projector.service import serve
from audit_schemas import encode
from tests.conftest import LOG_DIR, Isolated, broker_frozen, free_port, projector_process, projector_running
from tests.factories import action_event, key_of, publish_events, read_topic, send_keyed
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


async def _offsets(isolated: Isolated) -> dict[tuple[str, int], int]:
    async with isolated.owner() as conn:
        rows = await conn.fetch("SELECT topic, partition, next_offset FROM projector_offsets")
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


def _terminate(proc: subprocess.Popen[bytes], within: float = 30) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=within)


async def test_restart_loop_over_a_poisoned_history(isolated: Isolated) -> None:
    """Six SIGTERM restarts mid-stream: no dead letter published twice, no stored offset ever moves back."""
    topic = isolated.projector.audit_topic
    ids = await publish_events(isolated.stack.bootstrap, topic, 1200, entities=60)
    poison: list[tuple[bytes, bytes | None]] = []
    for i in range(12):
        bad = json.loads(encode(action_event(f"bad-{i}")))
        bad["data"]["action"] = "teleport"
        poison.append((json.dumps(bad).encode(), f"acme/resource/bad-{i}".encode()))
    await send_keyed(isolated.stack.bootstrap, topic, poison)
    ids += await publish_events(isolated.stack.bootstrap, topic, 300, entities=60)
    small = isolated.projector.model_copy(update={"batch_max_records": 40})
    env_isolated = Isolated(isolated.stack, isolated.name, isolated.producer, small, isolated.query)
    seen: dict[tuple[str, int], int] = {}
    for round_ in range(6):
        proc = projector_process(env_isolated)
        try:
            before = await isolated.count("audit_entries")
            await eventually(lambda b=before: _grew(isolated, b + 60), within=60, interval=0.02)  # type: ignore[misc]
        finally:
            code = _terminate(proc)
        assert code == 0, f"round {round_}: SIGTERM exits 0"
        now = await _offsets(isolated)
        for key, offset in seen.items():
            assert now.get(key, 0) >= offset, f"round {round_}: the stored offset of {key} moved back"
        seen = now
    async with projector_running(small):
        await eventually(lambda: _has(isolated, "audit_entries", len(ids)), within=90)
        await eventually(lambda: _has(isolated, "dead_letters", len(poison)), within=30)
    letters = await read_topic(isolated.stack.bootstrap, isolated.projector.dead_letter_topic)
    sources = [(dict(r.headers)["dlq.source.partition"], dict(r.headers)["dlq.source.offset"]) for r in letters]
    assert len(letters) == len(poison), f"{len(letters)} dead-letter records for {len(poison)} poison records"
    assert len(set(sources)) == len(sources)


async def _grew(isolated: Isolated, at_least: int) -> bool:
    return await isolated.count("audit_entries") >= at_least


async def _has(isolated: Isolated, table: str, count: int) -> bool:
    return await isolated.count(table) == count


async def _readyz(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        try:
            response = await client.get(f"http://127.0.0.1:{port}/readyz")
        except httpx.TransportError:
            return {"ready": False, "problems": ["down"], "pipelines": {}}
    body: dict[str, Any] = response.json()
    body["status_code"] = response.status_code
    return body


async def test_a_failed_assignment_restarts_the_pipeline_and_is_reported(isolated: Isolated) -> None:
    """Loading positions in the rebalance listener fails: the pipeline is rebuilt instead of silently idling."""
    async with isolated.owner() as conn:
        await conn.execute("REVOKE SELECT ON projector_offsets FROM audit_writer")
    await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 30)
    port = free_port()
    settings = isolated.projector.model_copy(update={"health_port": port})
    async with projector_running(settings):

        async def restarting() -> dict[str, Any] | None:
            body = await _readyz(port)
            audit = body["pipelines"].get(settings.audit_topic, {})
            return body if audit.get("restarts", 0) >= 1 and body["status_code"] == 503 else None

        body = await eventually(restarting, within=30)
        assert "permission denied" in (body["pipelines"][settings.audit_topic]["last_error"] or "")
        assert await isolated.count("audit_entries") == 0
        async with isolated.owner() as conn:
            await conn.execute("GRANT SELECT ON projector_offsets TO audit_writer")
        await eventually(lambda: _has(isolated, "audit_entries", 30), within=60)

        async def ready() -> bool:
            return bool((await _readyz(port))["status_code"] == 200)

        await eventually(ready, within=30)


async def test_an_offset_the_broker_lost_blocks_until_an_operator_moves_past(isolated: Isolated) -> None:
    """History deleted under a stored offset is reported and stops the partition; it is never reset silently."""
    topic = isolated.projector.audit_topic
    first = [action_event(f"p0-{i}") for i in range(5)]
    await _send_to_partition(isolated, topic, first, 0)
    async with projector_running(isolated.projector):
        await eventually(lambda: _has(isolated, "audit_entries", 5))
    later = [action_event(f"p0-late-{i}") for i in range(6)]
    await _send_to_partition(isolated, topic, later, 0)  # offsets 5..10
    admin = AIOKafkaAdminClient(bootstrap_servers=isolated.stack.bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=8)})
    finally:
        await admin.close()
    port = free_port()
    settings = isolated.projector.model_copy(update={"health_port": port, "probe_interval_s": 0.5})
    async with projector_running(settings):

        async def blocked() -> dict[str, Any] | None:
            body = await _readyz(port)
            block = body.get("blocked", {}).get(f"{topic}/0")
            return block if block else None

        block = await eventually(blocked, within=30)
        assert block["reason"] == "offset_out_of_range"
        assert block["offset"] == 5
        assert "log starts at 8" in block["detail"]
        assert await isolated.count("audit_entries") == 5, "nothing skipped silently"
        code, out, err = await _cli(
            isolated, "skip", "--topic", topic, "--partition", "0", "--offset", "8", "--move-to",
            "--reason", "records 5-7 deleted by retention misconfiguration", "--by", "ops",
        )  # fmt: skip
        assert code == 0, err
        assert "move from offset 5 to 8" in out + err
        await eventually(lambda: _has(isolated, "audit_entries", 8), within=30)
    assert (await _offsets(isolated))[(topic, 0)] == 11
    assert await isolated.count("projector_blocks") == 0


async def _send_to_partition(isolated: Isolated, topic: str, events: list[Any], partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=isolated.stack.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(topic, encode(e), key=key_of(e), partition=partition)
    finally:
        await producer.stop()


async def _cli(isolated: Isolated, *args: str) -> tuple[int, str, str]:
    env = isolated.projector_env()
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_sigterm_while_the_broker_is_unreachable_exits_zero_within_the_bound(isolated: Isolated) -> None:
    """The broker stops answering: readiness says so (alive all along), and SIGTERM still exits 0 in time."""
    await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 50)
    port = free_port()
    stall = {"AUDIT_PROJECTOR_STALL_AFTER_S": "3", "AUDIT_PROJECTOR_PROBE_INTERVAL_S": "0.5"}
    proc = projector_process(isolated, health_port=port, extra_env=stall)
    try:
        await eventually(lambda: _has(isolated, "audit_entries", 50), within=60)
        await eventually(lambda: _is_ready(port), within=20)
        with broker_frozen(isolated.stack):

            async def stuck() -> dict[str, Any] | None:
                body = await _readyz(port)
                return body if body["status_code"] == 503 else None

            body = await eventually(stuck, within=30)
            assert any("broker has not answered" in p for p in body["problems"]), body["problems"]
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 40)
            took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    log = _projector_log(isolated)
    assert code == 0, log[-3000:]
    assert took < 35, f"shutdown took {took:.1f}s"
    assert "Traceback" not in log
    assert "CancelledError" not in log
    assert "projector_stopped" in log


async def _is_ready(port: int) -> bool:
    return bool((await _readyz(port))["status_code"] == 200)


def _projector_log(isolated: Isolated) -> str:
    return "\n".join(p.read_text() for p in sorted(LOG_DIR.glob(f"{isolated.name}-projector-*.log")))


async def test_liveness_stays_up_through_a_database_outage(isolated: Isolated) -> None:
    """Postgres unreachable: the projector keeps retrying, alive (no needless restart) but not ready."""
    port = free_port()
    settings = isolated.projector.model_copy(
        update={"health_port": port, "database_url": "postgresql://audit_projector:x@127.0.0.1:1/audit"}
    )
    async with projector_running(settings), httpx.AsyncClient() as client:

        async def retried() -> bool:
            body = await _readyz(port)
            return any(p["restarts"] >= 1 for p in body["pipelines"].values())

        await eventually(retried, within=20)
        assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        assert (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 503


@pytest.mark.parametrize(
    ("config", "words", "signed"),
    [
        ({"retention.ms": "86400000"}, "retention.ms=86400000", False),
        ({"cleanup.policy": "compact"}, "cleanup.policy=compact", False),
        # With signatures required, a publisher-chosen timestamp could backdate a record into a retired key's window.
        ({"message.timestamp.type": "CreateTime"}, "message.timestamp.type=CreateTime", True),
    ],
)
async def test_a_topic_that_could_lose_history_is_refused(
    isolated: Isolated, config: dict[str, str], words: str, signed: bool
) -> None:
    topic = f"{isolated.name}.expiring"
    config = {"retention.ms": "-1", "retention.bytes": "-1", **config}
    admin = AIOKafkaAdminClient(bootstrap_servers=isolated.stack.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=1, topic_configs=config)])
    finally:
        await admin.close()
    settings = isolated.projector.model_copy(update={"audit_topic": topic, "require_signatures": signed})
    with pytest.raises(ProjectorError, match="refusing to project") as caught:
        await asyncio.wait_for(serve(settings), 60)
    assert words in str(caught.value)
    assert topic in str(caught.value)


async def test_outside_development_unreplicated_topics_are_refused(isolated: Isolated) -> None:
    """In production a topic one lost broker could take acknowledged records with is refused, named with why: the
    single-broker stack's topics have one replica and min.insync.replicas 1."""
    settings = isolated.projector.model_copy(update={"environment": "production"})
    with pytest.raises(ProjectorError, match="refusing to project") as caught:
        await asyncio.wait_for(serve(settings), 60)
    text = str(caught.value)
    assert f"{settings.audit_topic}: replication factor 1 (must be at least 3)" in text
    assert "min.insync.replicas=1 (must be at least 2" in text
    assert settings.execution_log_topic in text
